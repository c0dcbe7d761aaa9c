//! The bounded hand-over between the decoding thread and its consumer.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::reader::{Event, Received};

/// What happens when the consumer is slower than the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Pacing {
    /// Every frame is delivered; decoding waits while `capacity` frames are queued.
    Offline { capacity: usize },
    /// At most `capacity` frames wait; a new frame pushes out the oldest, which
    /// is counted as dropped. Latency stays bounded however slow the consumer.
    Live { capacity: usize },
}

impl Pacing {
    pub const fn offline() -> Self {
        Pacing::Offline { capacity: 8 }
    }

    /// Newest frame wins: the consumer always works on the freshest picture.
    pub const fn live() -> Self {
        Pacing::Live { capacity: 1 }
    }

    pub fn capacity(&self) -> usize {
        match *self {
            Pacing::Offline { capacity } | Pacing::Live { capacity } => capacity.max(1),
        }
    }
}

/// Why a push did not go through.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    ConsumerGone,
}

struct State {
    items: VecDeque<Event>,
    frames_queued: usize,
    producer_done: bool,
    consumer_gone: bool,
}

/// A bounded queue of events with a drop-oldest-frame or block policy.
///
/// Not a plain channel because the live policy must evict the oldest *frame*
/// while keeping connection events, which are rare and must never be lost.
pub(crate) struct EventQueue {
    pacing: Pacing,
    state: Mutex<State>,
    changed: Condvar,
}

impl EventQueue {
    pub(crate) fn new(pacing: Pacing) -> Self {
        EventQueue {
            pacing,
            state: Mutex::new(State {
                items: VecDeque::new(),
                frames_queued: 0,
                producer_done: false,
                consumer_gone: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent
        // (every mutation is a single push or pop), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an event. Returns how many frames were evicted to make room
    /// (live pacing), or `Closed` when nobody will read it any more.
    pub(crate) fn push(&self, event: Event) -> Result<u64, Closed> {
        let capacity = self.pacing.capacity();
        let is_frame = matches!(event, Event::Frame(_));
        let mut state = self.lock();
        let mut evicted = 0;
        if is_frame {
            loop {
                if state.consumer_gone {
                    return Err(Closed::ConsumerGone);
                }
                if state.frames_queued < capacity {
                    break;
                }
                match self.pacing {
                    Pacing::Offline { .. } => {
                        state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                    }
                    Pacing::Live { .. } => {
                        if let Some(oldest) = state
                            .items
                            .iter()
                            .position(|e| matches!(e, Event::Frame(_)))
                        {
                            state.items.remove(oldest);
                            state.frames_queued -= 1;
                            evicted += 1;
                        }
                    }
                }
            }
            state.frames_queued += 1;
        } else if state.consumer_gone {
            return Err(Closed::ConsumerGone);
        }
        state.items.push_back(event);
        drop(state);
        self.changed.notify_all();
        Ok(evicted)
    }

    /// The next event; None once the producer is done and the queue is drained.
    pub(crate) fn pop(&self, timeout: Option<Duration>) -> Received {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.lock();
        loop {
            if let Some(event) = state.items.pop_front() {
                if matches!(event, Event::Frame(_)) {
                    state.frames_queued -= 1;
                }
                drop(state);
                self.changed.notify_all();
                return Received::Event(event);
            }
            if state.producer_done {
                return Received::Ended;
            }
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Received::TimedOut;
                    }
                    self.changed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub(crate) fn finish_producing(&self) {
        self.lock().producer_done = true;
        self.changed.notify_all();
    }

    pub(crate) fn close_consumer(&self) {
        let mut state = self.lock();
        state.consumer_gone = true;
        state.items.clear();
        state.frames_queued = 0;
        drop(state);
        self.changed.notify_all();
    }
}
