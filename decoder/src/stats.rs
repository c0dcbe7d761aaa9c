use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one reader, shared between its decoding thread and its owner.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub packets: AtomicU64,
    pub frames_decoded: AtomicU64,
    pub frames_delivered: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub frames_skipped: AtomicU64,
    pub decode_errors: AtomicU64,
    pub read_errors: AtomicU64,
    pub disconnects: AtomicU64,
    pub reconnects: AtomicU64,
}

impl Counters {
    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> DecodeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DecodeStats {
            packets: get(&self.packets),
            frames_decoded: get(&self.frames_decoded),
            frames_delivered: get(&self.frames_delivered),
            frames_dropped: get(&self.frames_dropped),
            frames_skipped: get(&self.frames_skipped),
            decode_errors: get(&self.decode_errors),
            read_errors: get(&self.read_errors),
            disconnects: get(&self.disconnects),
            reconnects: get(&self.reconnects),
        }
    }
}

/// What a reader has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DecodeStats {
    /// Video packets read from the source.
    pub packets: u64,
    /// Pictures the decoder produced (every one, kept or not).
    pub frames_decoded: u64,
    /// Frames the consumer received.
    pub frames_delivered: u64,
    /// Frames pushed out of the live queue by newer ones before anyone read them.
    pub frames_dropped: u64,
    /// Frames left out on purpose by the stride or target frame rate.
    pub frames_skipped: u64,
    /// Packets or pictures the decoder rejected or flagged as corrupt.
    pub decode_errors: u64,
    /// Failed reads from the source (damaged data, broken connections).
    pub read_errors: u64,
    pub disconnects: u64,
    pub reconnects: u64,
}
