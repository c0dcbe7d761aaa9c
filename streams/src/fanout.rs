//! One stream's updates to many subscribers, none of whom can slow the stream
//! or each other: every subscriber has a bounded queue; when a subscriber
//! falls behind by a whole queue, its backlog is dropped, it skips to the
//! newest update, and it is told how many it missed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery<T> {
    Message(T),
    /// This many messages were dropped because the subscriber fell behind.
    Lagged(u64),
}

struct Queue<T> {
    items: VecDeque<T>,
    lagged: u64,
    wake: Arc<Notify>,
}

struct State<T> {
    queues: HashMap<u64, Queue<T>>,
    next_id: u64,
    closed: bool,
    /// Messages dropped for slow subscribers, over the stream's life.
    dropped: u64,
}

/// The publishing side; clone it freely.
pub struct Fanout<T> {
    state: Arc<Mutex<State<T>>>,
    capacity: usize,
}

impl<T> Clone for Fanout<T> {
    fn clone(&self) -> Self {
        Fanout {
            state: Arc::clone(&self.state),
            capacity: self.capacity,
        }
    }
}

fn lock<T>(state: &Mutex<State<T>>) -> MutexGuard<'_, State<T>> {
    // A panic elsewhere while holding the lock leaves the queues usable:
    // they hold plain data with no invariant a half-done push could break.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<T: Clone> Fanout<T> {
    /// Each subscriber may fall `capacity` messages behind (at least 1).
    pub fn new(capacity: usize) -> Self {
        Fanout {
            state: Arc::new(Mutex::new(State {
                queues: HashMap::new(),
                next_id: 0,
                closed: false,
                dropped: 0,
            })),
            capacity: capacity.max(1),
        }
    }

    pub fn subscribe(&self) -> Subscription<T> {
        let wake = Arc::new(Notify::new());
        let mut state = lock(&self.state);
        let id = state.next_id;
        state.next_id += 1;
        state.queues.insert(
            id,
            Queue {
                items: VecDeque::with_capacity(self.capacity),
                lagged: 0,
                wake: Arc::clone(&wake),
            },
        );
        Subscription {
            state: Arc::clone(&self.state),
            id,
            wake,
        }
    }

    /// Hands `message` to every subscriber without ever waiting on one.
    pub fn publish(&self, message: T) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        let mut dropped = 0;
        for queue in state.queues.values_mut() {
            if queue.items.len() >= self.capacity {
                let skipped = queue.items.len() as u64;
                queue.lagged += skipped;
                dropped += skipped;
                queue.items.clear();
            }
            queue.items.push_back(message.clone());
            queue.wake.notify_one();
        }
        state.dropped += dropped;
    }

    pub fn subscribers(&self) -> usize {
        lock(&self.state).queues.len()
    }

    /// Messages dropped for slow subscribers so far.
    pub fn dropped(&self) -> u64 {
        lock(&self.state).dropped
    }

    /// Ends the stream: subscribers get what is queued, then None.
    pub fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        for queue in state.queues.values() {
            queue.wake.notify_one();
        }
    }
}

/// The receiving side of one subscriber; dropping it unsubscribes.
pub struct Subscription<T> {
    state: Arc<Mutex<State<T>>>,
    id: u64,
    wake: Arc<Notify>,
}

impl<T> Subscription<T> {
    /// The next delivery without waiting: None when nothing is queued (or
    /// the stream has ended and everything was delivered).
    pub fn try_recv(&mut self) -> Option<Delivery<T>> {
        let mut state = lock(&self.state);
        let queue = state.queues.get_mut(&self.id)?;
        if queue.lagged > 0 {
            let lagged = queue.lagged;
            queue.lagged = 0;
            return Some(Delivery::Lagged(lagged));
        }
        queue.items.pop_front().map(Delivery::Message)
    }

    /// The next delivery; None once the stream has ended and everything
    /// queued was delivered.
    pub async fn recv(&mut self) -> Option<Delivery<T>> {
        loop {
            if let Some(delivery) = self.try_recv() {
                return Some(delivery);
            }
            if lock(&self.state).closed {
                return None;
            }
            self.wake.notified().await;
        }
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        lock(&self.state).queues.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(subscription: &mut Subscription<u32>) -> Vec<Delivery<u32>> {
        std::iter::from_fn(|| subscription.try_recv()).collect()
    }

    #[test]
    fn a_slow_subscriber_skips_to_the_newest_and_is_told() {
        let fanout = Fanout::new(4);
        let mut fast = fanout.subscribe();
        let mut slow = fanout.subscribe();
        let mut seen = Vec::new();
        for n in 0..10 {
            fanout.publish(n);
            seen.extend(drain(&mut fast));
        }
        // The fast one saw every message, in order.
        assert_eq!(seen, (0..10).map(Delivery::Message).collect::<Vec<_>>());
        // The slow one lost two full queues (0–3, 4–7) and holds 8, 9.
        assert_eq!(
            drain(&mut slow),
            vec![
                Delivery::Lagged(8),
                Delivery::Message(8),
                Delivery::Message(9)
            ]
        );
        assert_eq!(fanout.dropped(), 8);
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let fanout = Fanout::new(2);
        let first = fanout.subscribe();
        let _second = fanout.subscribe();
        assert_eq!(fanout.subscribers(), 2);
        drop(first);
        assert_eq!(fanout.subscribers(), 1);
        fanout.publish(1u32);
    }

    #[test]
    fn closing_delivers_the_rest_then_ends() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let fanout = Fanout::new(8);
            let mut subscription = fanout.subscribe();
            let publisher = fanout.clone();
            let producer = std::thread::spawn(move || {
                for n in 0..5u32 {
                    publisher.publish(n);
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                publisher.close();
            });
            let mut got = Vec::new();
            while let Some(delivery) = subscription.recv().await {
                got.push(delivery);
            }
            producer.join().expect("producer");
            assert_eq!(got, (0..5).map(Delivery::Message).collect::<Vec<_>>());
        });
    }
}
