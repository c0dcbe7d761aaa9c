//! Turning whatever timestamps a source has into a clean timeline, and
//! choosing which frames to keep.

/// Makes presentation times strictly increasing and starting near zero.
///
/// Sources lie: live cameras start at arbitrary clocks, reconnects restart
/// them, broken muxers repeat or omit timestamps. The clock follows the
/// source's own times while they move forward and bridges every gap where
/// they do not with one nominal frame duration, so downstream code (trackers
/// and their motion models) can rely on time moving forward.
#[derive(Debug, Clone)]
pub struct PtsClock {
    frame_duration: f64,
    offset: Option<f64>,
    last: Option<f64>,
}

impl PtsClock {
    /// `frame_duration` is the nominal seconds per frame used to bridge gaps.
    pub fn new(frame_duration: f64) -> Self {
        let frame_duration = if frame_duration.is_finite() && frame_duration > 0.0 {
            frame_duration
        } else {
            1.0 / 25.0
        };
        PtsClock {
            frame_duration,
            offset: None,
            last: None,
        }
    }

    /// Starts the timeline at `origin` seconds of source time (a stream's
    /// start time), instead of at its first frame.
    pub fn with_origin(mut self, origin: Option<f64>) -> Self {
        self.offset = origin.filter(|o| o.is_finite()).map(|o| -o);
        self
    }

    pub fn frame_duration(&self) -> f64 {
        self.frame_duration
    }

    /// The timeline position of the next frame, whose source time is `raw`
    /// seconds (None when the source gave none).
    pub fn next(&mut self, raw: Option<f64>) -> f64 {
        let raw = raw.filter(|r| r.is_finite());
        let bridged = self.last.map_or(0.0, |last| last + self.frame_duration);
        let pts = match (raw, self.offset) {
            (None, _) => bridged,
            (Some(raw), None) => {
                self.offset = Some(bridged - raw);
                bridged
            }
            (Some(raw), Some(offset)) => {
                let candidate = raw + offset;
                match self.last {
                    Some(last) if candidate <= last => {
                        self.offset = Some(bridged - raw);
                        bridged
                    }
                    _ => candidate.max(0.0),
                }
            }
        };
        self.last = Some(pts);
        pts
    }

    /// After a reconnect the source's clock means nothing relative to the old
    /// one: the next frame continues one frame after the last.
    pub fn rebase(&mut self) {
        self.offset = None;
    }

    pub fn set_frame_duration(&mut self, frame_duration: f64) {
        if frame_duration.is_finite() && frame_duration > 0.0 {
            self.frame_duration = frame_duration;
        }
    }
}

/// Decides which decoded frames are delivered: every `stride`-th one, and at
/// most `target_fps` per second of presentation time.
#[derive(Debug, Clone)]
pub struct FrameSelector {
    stride: u64,
    target_interval: Option<f64>,
    next_due: Option<f64>,
}

impl FrameSelector {
    pub fn new(stride: u32, target_fps: Option<f64>) -> Self {
        FrameSelector {
            stride: u64::from(stride.max(1)),
            target_interval: target_fps.filter(|f| *f > 0.0).map(|f| 1.0 / f),
            next_due: None,
        }
    }

    /// `tolerance` (half a source frame) lets the frame nearest each due time
    /// through despite rounding in the source's timestamps.
    pub fn keep(&mut self, index: u64, pts: f64, tolerance: f64) -> bool {
        if !index.is_multiple_of(self.stride) {
            return false;
        }
        let Some(interval) = self.target_interval else {
            return true;
        };
        match self.next_due {
            Some(due) if pts + tolerance < due => false,
            Some(due) => {
                // After a long gap, restart the schedule rather than bursting.
                let next = due + interval;
                self.next_due = Some(if next <= pts { pts + interval } else { next });
                true
            }
            None => {
                self.next_due = Some(pts + interval);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_good_timestamps() {
        let mut clock = PtsClock::new(0.04).with_origin(Some(10.0));
        let times: Vec<f64> = [10.0, 10.04, 10.2, 10.24]
            .into_iter()
            .map(|t| clock.next(Some(t)))
            .collect();
        for (got, want) in times.iter().zip([0.0, 0.04, 0.2, 0.24]) {
            assert!((got - want).abs() < 1e-9, "{times:?}");
        }
    }

    #[test]
    fn bridges_missing_repeated_and_backward_timestamps() {
        let mut clock = PtsClock::new(0.1);
        let raw = [
            Some(5.0),
            None,
            Some(5.2),
            Some(5.2),
            Some(1.0),
            Some(1.1),
            Some(f64::NAN),
        ];
        let times: Vec<f64> = raw.into_iter().map(|t| clock.next(t)).collect();
        let want = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        for (got, want) in times.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{times:?}");
        }
    }

    #[test]
    fn rebase_continues_after_the_last_frame() {
        let mut clock = PtsClock::new(0.5);
        clock.next(Some(100.0));
        clock.next(Some(100.5));
        clock.rebase();
        assert!((clock.next(Some(3.0)) - 1.0).abs() < 1e-9);
        assert!((clock.next(Some(3.5)) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn stride_and_target_fps() {
        let mut every_third = FrameSelector::new(3, None);
        let kept: Vec<u64> = (0..10)
            .filter(|&i| every_third.keep(i, i as f64, 0.0))
            .collect();
        assert_eq!(kept, [0, 3, 6, 9]);

        // 30 fps down to 10 fps keeps every third frame despite float rounding.
        let mut ten_fps = FrameSelector::new(1, Some(10.0));
        let kept: Vec<u64> = (0..30)
            .filter(|&i| ten_fps.keep(i, i as f64 / 30.0, 0.5 / 30.0))
            .collect();
        assert_eq!(kept, [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]);

        // A gap in time restarts the schedule instead of emitting a burst.
        let mut selector = FrameSelector::new(1, Some(1.0));
        assert!(selector.keep(0, 0.0, 0.0));
        assert!(selector.keep(1, 10.0, 0.0));
        assert!(!selector.keep(2, 10.5, 0.0));
        assert!(selector.keep(3, 11.0, 0.0));
    }
}
