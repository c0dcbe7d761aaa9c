//! A live session on a synthetic video read at its own pace (a stand-in for
//! a camera), with the built-in model: updates in order, a query change
//! taking effect mid-stream, and the end of the stream reported.

use std::time::{Duration, Instant};

mod common;

use owltrack_decoder::Source;
use owltrack_models::Query;
use owltrack_streams::{Delivery, Inference, Session, SessionConfig, SessionState};
use serde_json::Value;

#[test]
fn live_session_publishes_updates_and_takes_new_queries() {
    let (_dir, video) = common::synthetic_video(50, 808);
    let detector = common::detector();
    let queries: Vec<String> = ["red circle", "green square", "blue triangle", "yellow star"]
        .map(String::from)
        .to_vec();
    let as_queries = |texts: &[String]| texts.iter().cloned().map(Query::Text).collect::<Vec<_>>();
    let session = Session::start(
        Inference::start(detector, 1).unwrap(),
        SessionConfig {
            native_rate: true,
            ..SessionConfig::new(Source::File { path: video }, as_queries(&queries))
        },
    )
    .unwrap();
    let mut subscription = session.subscribe(false);

    let mut messages: Vec<Value> = Vec::new();
    let mut changed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the stream did not end");
        match subscription.try_recv() {
            Some(Delivery::Message(text)) => {
                let message: Value = serde_json::from_str(&text.json).unwrap();
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
            session.set_queries(as_queries(&queries[1..])).unwrap();
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
