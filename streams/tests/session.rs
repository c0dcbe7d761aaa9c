//! A live session on a synthetic video read at its own pace (a stand-in for
//! a camera), with the built-in model: updates in order, a query change
//! taking effect mid-stream, and the end of the stream reported.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use owltrack_decoder::Source;
use owltrack_models::{DType, Detector, Device};
use owltrack_streams::{Delivery, Session, SessionConfig, SessionState};
use owltrack_tracker::synth::{write_dataset, Outputs, SynthConfig};
use owltrack_tracker::tbd::TrackerConfig;
use serde_json::Value;

fn builtin() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/builtin/owltrack-tiny")
        .display()
        .to_string()
}

#[test]
fn live_session_publishes_updates_and_takes_new_queries() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig {
        frames: 50,
        seed: 808,
        ..SynthConfig::default()
    };
    let outputs = Outputs {
        video: true,
        frames: false,
    };
    write_dataset(dir.path(), 1, &config, outputs, || {}).unwrap();
    let video = std::fs::read_dir(dir.path().join("videos"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();

    let detector = Detector::load(&builtin(), &Device::Cpu, DType::F32).unwrap();
    let queries: Vec<String> = ["red circle", "green square", "blue triangle", "yellow star"]
        .map(String::from)
        .to_vec();
    let session = Session::start(
        Arc::new(Mutex::new(detector)),
        SessionConfig {
            source: Source::File { path: video },
            queries: queries.clone(),
            tracker: TrackerConfig::default(),
            nms_iou: 0.5,
            native_rate: true,
            subscriber_buffer: 64,
        },
    )
    .unwrap();
    let mut subscription = session.subscribe();

    let mut messages: Vec<Value> = Vec::new();
    let mut changed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the stream did not end");
        match subscription.try_recv() {
            Some(Delivery::Message(text)) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                let ended = message["event"] == "ended" || message["event"] == "failed";
                messages.push(message);
                if ended {
                    break;
                }
            }
            Some(Delivery::Lagged(n)) => panic!("a 64-message buffer lagged by {n}"),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
        let updates = messages.iter().filter(|m| m["type"] == "update").count();
        if !changed && updates >= 10 {
            // Drop "red circle"; the others keep their tracks.
            session.set_queries(queries[1..].to_vec()).unwrap();
            changed = true;
        }
    }
    assert_eq!(
        messages.last().unwrap()["event"],
        "ended",
        "{:?}",
        messages.last()
    );
    let updates: Vec<&Value> = messages.iter().filter(|m| m["type"] == "update").collect();
    assert!(updates.len() >= 15, "only {} updates", updates.len());
    let frames: Vec<u64> = updates
        .iter()
        .map(|u| u["frame"].as_u64().unwrap())
        .collect();
    assert!(
        frames.windows(2).all(|w| w[0] < w[1]),
        "frames out of order: {frames:?}"
    );
    let versions: Vec<u64> = updates
        .iter()
        .map(|u| u["query_version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions.first(), Some(&1));
    assert_eq!(versions.last(), Some(&2));
    assert!(versions.windows(2).all(|w| w[0] <= w[1]));
    assert!(messages
        .iter()
        .any(|m| m["event"] == "queries_changed" && m["query_version"] == 2));
    for update in updates.iter().filter(|u| u["query_version"] == 2) {
        for track in update["tracks"].as_array().unwrap() {
            assert_ne!(
                track["label"], "red circle",
                "a removed query still labels a track"
            );
            assert!(track["latency_ms"].is_null());
        }
        assert!(update["latency_ms"].as_f64().unwrap() >= 0.0);
    }
    let status = session.status();
    assert_eq!(status.state, SessionState::Ended);
    assert_eq!(status.query_version, 2);
    assert_eq!(status.frames as usize, updates.len());
    session.stop();
}
