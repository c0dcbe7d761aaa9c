//! `owltrack probe`: what a source holds.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{DecodeError, Result};
use crate::folder;
use crate::input::{Flow, OpenSettings, PumpEnd, StreamInfo, VideoInput, Watchdog};
use crate::reader::ReadOptions;
use crate::source::Source;
use crate::stats::Counters;

#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub source: String,
    #[serde(flatten)]
    pub stream: StreamInfo,
    /// Frames in the source: counted by decoding when `frame_count_exact`,
    /// else from the container's index or duration × fps.
    pub frame_count: Option<u64>,
    pub frame_count_exact: bool,
    /// Packets or pictures the decoder rejected (only known when counting).
    pub decode_errors: u64,
    pub read_errors: u64,
}

/// Describes a source; with `count_frames`, decodes it whole to count frames
/// and errors exactly (live sources are read until they end or drop), telling
/// `on_progress` the number of frames decoded so far.
pub fn probe(
    source: &Source,
    count_frames: bool,
    options: &ReadOptions,
    mut on_progress: impl FnMut(u64),
) -> Result<ProbeReport> {
    crate::init();
    let counters = Counters::default();
    let watchdog = Watchdog::new(Arc::new(AtomicBool::new(false)));
    let stream = match source {
        Source::FrameFolder { dir, fps } => {
            let files = folder::list_frames(dir)?;
            let info = folder::stream_info(&files, *fps)?;
            if count_frames {
                folder::for_each_frame(&files, &counters, |index, _| {
                    on_progress(index + 1);
                    Flow::Continue
                });
            }
            info
        }
        _ => {
            let settings = OpenSettings {
                open_timeout: options.open_timeout,
                read_timeout: options.read_timeout,
                threads: options.threads,
                low_latency: false,
            };
            let mut input = VideoInput::open(source, &settings, &watchdog)?;
            if count_frames {
                let mut decoded = 0;
                let end = input.pump(
                    &watchdog,
                    options.read_timeout,
                    source.is_live(),
                    &counters,
                    |_, _| {
                        decoded += 1;
                        on_progress(decoded);
                        Flow::Continue
                    },
                );
                if let PumpEnd::Failed(error) = end {
                    tracing::warn!(%error, "the source failed before its end; counts are partial");
                }
                let stats = counters.snapshot();
                if stats.frames_decoded == 0 {
                    return Err(DecodeError::NoDecodableFrames {
                        input: source.to_string(),
                        packets: stats.packets,
                        errors: stats.decode_errors,
                    });
                }
            }
            input.info.clone()
        }
    };
    let stats = counters.snapshot();
    let (frame_count, frame_count_exact) = if count_frames {
        (Some(stats.frames_decoded), true)
    } else {
        let estimate = stream
            .frames
            .or_else(|| Some((stream.duration? * stream.fps?).round() as u64).filter(|n| *n > 0));
        (estimate, false)
    };
    Ok(ProbeReport {
        source: source.to_string(),
        stream,
        frame_count,
        frame_count_exact,
        decode_errors: stats.decode_errors,
        read_errors: stats.read_errors,
    })
}
