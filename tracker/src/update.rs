//! What a tracker says about one frame: the type written to files (JSON
//! lines) and, later, streamed to WebSocket clients.

use serde::{Deserialize, Serialize};

use crate::tbd::{TrackReport, TrackState};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackUpdate {
    /// Index of the frame among all the source decoded (from 0).
    pub frame: u64,
    /// Presentation time in seconds.
    pub pts: f64,
    pub tracks: Vec<TrackedObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrackedObject {
    /// Stable within one video.
    pub id: u64,
    /// The text of the query it answers; None for an object found by
    /// objectness that no query describes.
    pub label: Option<String>,
    /// Index of that query in the query list.
    pub query: Option<usize>,
    pub score: f64,
    /// `[x0, y0, x1, y1]` in source pixels.
    #[serde(rename = "box")]
    pub corners: [f64; 4],
    pub state: TrackState,
}

impl TrackedObject {
    /// The tracker's reports for one frame, labelled with the query texts.
    pub fn from_reports(reports: &[TrackReport], names: &[String]) -> Vec<Self> {
        reports
            .iter()
            .map(|r| TrackedObject {
                id: r.id,
                label: r.label.and_then(|l| names.get(l).cloned()),
                query: r.label,
                score: r.score,
                corners: r.corners,
                state: r.state,
            })
            .collect()
    }
}
