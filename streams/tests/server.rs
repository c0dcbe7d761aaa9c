//! `owltrack serve` end to end: the server on 127.0.0.1 with the built-in
//! model, streams from a synthetic video file and from a live MJPEG camera
//! over HTTP, WebSocket clients (tokio-tungstenite) and REST calls.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use futures_util::{SinkExt, StreamExt};
use owltrack_decoder::{image, Source};
use owltrack_models::Query;
use owltrack_streams::camera::CameraFeed;
use owltrack_streams::server::{serve, AppState, ServerConfig, SourcePolicy};
use owltrack_streams::Inference;
use owltrack_tracker::formats::{TaoIds, TrackFormat};
use owltrack_tracker::pipeline::{track_video, TrackJob};
use owltrack_tracker::synth::SynthConfig;
use owltrack_tracker::tbd::TrackerConfig;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

const QUERIES: [&str; 4] = ["red circle", "green square", "blue triangle", "yellow star"];

use common::{detector, synthetic_video};

struct Server {
    base: String,
    ws_base: String,
    stop: Option<oneshot::Sender<()>>,
    finished: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: ServerConfig) -> Server {
        let inference = Inference::start(detector(), 4).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let state = AppState::new(inference, config);
        let finished = tokio::spawn(serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Server {
            base: format!("http://{address}"),
            ws_base: format!("ws://{address}"),
            stop: Some(stop),
            finished,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn shut_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.finished)
            .await
            .expect("the server did not shut down")
            .unwrap()
            .unwrap();
    }
}

fn files_config(root: &Path) -> ServerConfig {
    ServerConfig {
        sources: SourcePolicy::default().with_files_root(root).unwrap(),
        ..ServerConfig::default()
    }
}

async fn create(client: &reqwest::Client, server: &Server, body: Value) -> String {
    let response = client
        .post(server.url("/v1/streams"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(server: &Server, id: &str, query: &str) -> Socket {
    let url = format!("{}/v1/streams/{id}/ws{query}", server.ws_base);
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// The next text message as JSON (binary frames are skipped), or None when
/// the socket closed.
async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("no message within a minute")?;
        match message {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Every text message until the stream's end (or the socket closes).
async fn until_end(socket: &mut Socket) -> Vec<Value> {
    let mut messages = Vec::new();
    while let Some(message) = next_json(socket).await {
        let end = message["event"] == "ended" || message["event"] == "failed";
        messages.push(message);
        if end {
            break;
        }
    }
    messages
}

fn updates(messages: &[Value]) -> Vec<&Value> {
    messages.iter().filter(|m| m["type"] == "update").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_errors_auth_and_limits() {
    let (dir, video) = synthetic_video(20, 3);
    let token_config = ServerConfig {
        token: Some("s3cret-token".into()),
        max_streams: 1,
        max_queries: 3,
        max_query_chars: 20,
        ..files_config(dir.path())
    };
    let server = Server::start(token_config).await;
    let client = reqwest::Client::new();
    let authed = |request: reqwest::RequestBuilder| request.bearer_auth("s3cret-token");

    // Probes need no token; everything else does.
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    for path in ["/v1/streams", "/metrics", "/v1/openapi.json", "/"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
    }
    let wrong = client
        .get(server.url("/v1/streams"))
        .bearer_auth("s3cret-tokem")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let by_query = client
        .get(server.url("/v1/streams?token=s3cret-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let unauthorised_ws =
        tokio_tungstenite::connect_async(format!("{}/v1/streams/s1/ws", server.ws_base)).await;
    assert!(unauthorised_ws.is_err());

    // Bad requests get a 4xx with a clear body, and the server goes on.
    let file = video.file_name().unwrap().to_str().unwrap().to_owned();
    let file = format!("videos/{file}");
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!("not an object"), 400, "bad request body"),
        (
            json!({"source": file, "queries": []}),
            400,
            "at least one query",
        ),
        (
            json!({"source": file, "queries": ["a", "b", "c", "d"]}),
            400,
            "at most 3",
        ),
        (
            json!({"source": file, "queries": ["x".repeat(21)]}),
            400,
            "longer than 20",
        ),
        (json!({"source": file, "queries": ["a", "a"]}), 400, "twice"),
        (
            json!({"source": file, "queries": ["a"], "colour": 1}),
            400,
            "unknown field",
        ),
        (
            json!({"source": file, "queries": ["a"], "tracker": {"speed": 1}}),
            400,
            "unknown tracker setting",
        ),
        (
            json!({"source": file, "queries": ["a"], "tracker": {"low_score": 0.9}}),
            400,
            "tracker",
        ),
        (
            json!({"source": file, "queries": ["a"], "options": {"tracker": "magic"}}),
            400,
            "unknown tracker",
        ),
        (
            json!({"source": "concat:/etc/passwd|/etc/hosts", "queries": ["a"]}),
            403,
            "not allowed",
        ),
        (
            json!({"source": "subfile:,start,0,end,9,:/etc/passwd", "queries": ["a"]}),
            403,
            "not allowed",
        ),
        (
            json!({"source": "/etc/passwd", "queries": ["a"]}),
            403,
            "outside",
        ),
        (
            json!({"source": "../etc/passwd", "queries": ["a"]}),
            403,
            "..",
        ),
        (
            json!({"source": "gopher://example.com/x", "queries": ["a"]}),
            403,
            "not allowed",
        ),
        (
            json!({"source": "missing.mp4", "queries": ["a"]}),
            403,
            "no such",
        ),
        (
            json!({"source": "annotations.json", "queries": ["a"]}),
            422,
            "cannot open",
        ),
    ];
    for (body, status, needle) in cases {
        let response = authed(client.post(server.url("/v1/streams")))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(needle), "{body}: {error}");
    }
    for (method, path) in [
        (reqwest::Method::GET, "/v1/streams/s99"),
        (reqwest::Method::DELETE, "/v1/streams/s99"),
        (reqwest::Method::GET, "/v1/nothing"),
    ] {
        let response = authed(client.request(method, server.url(path)))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"].is_string());
    }
    let patch_unknown = authed(client.patch(server.url("/v1/streams/s99")))
        .json(&json!({"queries": ["a"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch_unknown.status(), 404);

    // The stream limit: one runs, a second is refused until it is deleted.
    let body = json!({"source": file, "queries": ["red circle"], "options": {"native_rate": true}});
    let first = authed(client.post(server.url("/v1/streams")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let id = first.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = authed(client.post(server.url("/v1/streams")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 429);
    let bad_patch = authed(client.patch(server.url(&format!("/v1/streams/{id}"))))
        .body("{\"queries\": 5}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_patch.status(), 400);
    let deleted = authed(client.delete(server.url(&format!("/v1/streams/{id}"))))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let third = authed(client.post(server.url("/v1/streams")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 201);
    let third_id = third.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let third_url = server.url(&format!("/v1/streams/{third_id}"));

    // Example-image queries travel base64-encoded; a bad one is refused.
    use base64::Engine as _;
    let example = image::encode_jpeg(&vec![200u8; 32 * 32 * 3], 32, 32, 90).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&example);
    let with_image = authed(client.patch(&third_url))
        .json(&json!({"queries": ["red circle"], "image_queries": [{"name": "that grey thing", "image": encoded}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_image.status(), 200);
    let status: Value = with_image.json().await.unwrap();
    assert_eq!(
        status["queries"],
        json!(["red circle", "that grey thing"]),
        "{status}"
    );
    for (image, needle) in [("***", "not base64"), ("aGVsbG8=", "image query")] {
        let refused = authed(client.patch(&third_url))
            .json(&json!({"queries": [], "image_queries": [{"name": "x", "image": image}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400);
        let body: Value = refused.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
    }

    // Still serving, and documented.
    let list: Value = authed(client.get(server.url("/v1/streams")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["streams"].as_array().unwrap().len(), 1);
    let openapi: Value = authed(client.get(server.url("/v1/openapi.json")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in ["/v1/streams", "/v1/streams/{id}", "/healthz", "/metrics"] {
        assert!(openapi["paths"][path].is_object(), "{path} undocumented");
    }
    assert!(openapi["components"]["schemas"]["CreateStream"].is_object());
    let metrics = authed(client.get(server.url("/metrics")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("# TYPE owltrack_stream_latency_ms histogram"));
    assert!(metrics.contains("owltrack_inference_queue_depth"));
    let viewer = authed(client.get(server.url("/"))).send().await.unwrap();
    assert_eq!(viewer.status(), 200);
    assert!(viewer.text().await.unwrap().contains("<canvas"));
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_arrive_in_order_and_equal_owltrack_track() {
    let (dir, video) = synthetic_video(40, 808);
    let server = Server::start(files_config(dir.path())).await;
    let client = reqwest::Client::new();
    let file = video.file_name().unwrap().to_str().unwrap().to_owned();
    let id = create(
        &client,
        &server,
        json!({"source": format!("videos/{file}"), "queries": QUERIES, "options": {"every_frame": true}}),
    )
    .await;
    let mut socket = connect(&server, &id, "").await;
    let messages = until_end(&mut socket).await;
    assert_eq!(messages.last().unwrap()["event"], "ended", "{messages:?}");
    let updates = updates(&messages);
    // Every frame, in order (the client connected before the first one was
    // published or, at worst, after a few).
    let frames: Vec<u64> = updates
        .iter()
        .map(|u| u["frame"].as_u64().unwrap())
        .collect();
    assert!(frames.len() >= 35, "{frames:?}");
    assert!(frames.windows(2).all(|w| w[1] == w[0] + 1), "{frames:?}");
    assert_eq!(*frames.last().unwrap(), 39);
    for update in &updates {
        assert!(
            update["captured_at_ms"].as_u64().unwrap() <= update["sent_at_ms"].as_u64().unwrap()
        );
        assert!(update["latency_ms"].as_f64().unwrap() >= 0.0);
        assert_eq!(update["query_version"], 1);
    }

    // The same file through `owltrack track`'s pipeline.
    let out = dir.path().join("tracks.jsonl");
    let job = TrackJob {
        queries: QUERIES.iter().map(|q| Query::Text((*q).into())).collect(),
        tracker: TrackerConfig::default(),
        stride: 1,
        nms_iou: ServerConfig::default().nms_iou,
        label_score: ServerConfig::default().label_score,
        output: Some((out.clone(), TrackFormat::JsonLines, TaoIds::default())),
        annotate: None,
        include_tentative: false,
        recurrent: None,
    };
    let mut offline = detector();
    let video_source = Source::File {
        path: video.clone(),
    };
    tokio::task::block_in_place(|| track_video(&mut offline, video_source, &job, |_, _| {}))
        .unwrap();
    let expected: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut compared = 0;
    for update in &updates {
        let frame = update["frame"].as_u64().unwrap();
        let Some(line) = expected.iter().find(|l| l["frame"].as_u64() == Some(frame)) else {
            continue;
        };
        assert_eq!(update["tracks"], line["tracks"], "frame {frame}");
        compared += 1;
    }
    assert!(compared >= 35);
    let boxes: usize = updates
        .iter()
        .map(|u| u["tracks"].as_array().unwrap().len())
        .sum();
    assert!(boxes > 0, "the stream found nothing to track");
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_changes_take_effect_and_other_tracks_keep_their_ids() {
    let (dir, video) = synthetic_video(90, 808);
    let server = Server::start(files_config(dir.path())).await;
    let client = reqwest::Client::new();
    let file = video.file_name().unwrap().to_str().unwrap().to_owned();
    let id = create(
        &client,
        &server,
        json!({"source": format!("videos/{file}"), "queries": QUERIES, "options": {"every_frame": true, "native_rate": true}}),
    )
    .await;
    let mut socket = connect(&server, &id, "").await;

    // A bad message gets an error and the connection stays.
    socket
        .send(Message::text("{\"type\":\"dance\"}"))
        .await
        .unwrap();
    socket.send(Message::text("not json")).await.unwrap();
    socket
        .send(Message::text("{\"type\":\"ping\"}"))
        .await
        .unwrap();
    let mut before = Vec::new();
    let mut errors = 0;
    let mut pong = false;
    while before.len() < 12 {
        let message = next_json(&mut socket).await.expect("the socket closed");
        match message["type"].as_str() {
            Some("error") => errors += 1,
            Some("pong") => pong = true,
            Some("update") => before.push(message),
            _ => {}
        }
    }
    assert_eq!(errors, 2);
    assert!(pong);

    // Drop "red circle" by PATCH; the rest keep their tracks.
    let kept = &QUERIES[1..];
    let response = client
        .patch(server.url(&format!("/v1/streams/{id}")))
        .json(&json!({"queries": kept}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["query_version"], 2, "{status}");
    assert_eq!(status["queries"], json!(kept));

    // Over the socket too: after ten updates of version 2, keep only
    // "green square"; the answer is an ack, the change a new version.
    let mut after = Vec::new();
    let mut version_two = 0;
    while version_two < 10 {
        let message = next_json(&mut socket).await.expect("the socket closed");
        if message["type"] == "update" && message["query_version"] == 2 {
            version_two += 1;
        }
        after.push(message);
    }
    socket
        .send(Message::text(
            json!({"type": "set_queries", "queries": ["green square"]}).to_string(),
        ))
        .await
        .unwrap();
    let rest = until_end(&mut socket).await;
    assert!(rest.iter().any(|m| m["type"] == "ack"), "{rest:?}");
    let third = rest
        .iter()
        .position(|m| m["event"] == "queries_changed" && m["query_version"] == 3)
        .expect("set_queries over the socket did not take effect");
    for update in updates(&rest[third..]) {
        assert_eq!(update["query_version"], 3);
        for track in update["tracks"].as_array().unwrap() {
            assert_eq!(track["label"], "green square");
        }
    }
    let changed_at = after
        .iter()
        .position(|m| m["event"] == "queries_changed")
        .expect("no queries_changed event");
    let later = updates(&after[changed_at..]);
    let early = updates(&after[..changed_at]);
    assert!(early.len() <= 3, "the change took {} frames", early.len());
    assert!(later.len() >= 10);
    for update in &later {
        assert!(update["query_version"] == 2 || update["query_version"] == 3);
        for track in update["tracks"].as_array().unwrap() {
            assert_ne!(track["label"], "red circle");
        }
    }
    // Ids of tracks whose query stayed go on under the same id and label.
    let last_before: &Value = early.last().map_or(before.last().unwrap(), |u| u);
    let continuing: Vec<(u64, String)> = last_before["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["label"] != "red circle" && t["state"] == "confirmed")
        .map(|t| {
            (
                t["id"].as_u64().unwrap(),
                t["label"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let first_after = later[0]["tracks"].as_array().unwrap();
    for (id, label) in &continuing {
        if let Some(track) = first_after.iter().find(|t| t["id"].as_u64() == Some(*id)) {
            assert_eq!(track["label"].as_str().unwrap_or(""), label);
        }
    }
    let kept_ids = continuing
        .iter()
        .filter(|(id, _)| first_after.iter().any(|t| t["id"].as_u64() == Some(*id)))
        .count();
    assert!(
        continuing.is_empty() || kept_ids > 0,
        "no track survived the query change: {continuing:?} vs {first_after:?}"
    );

    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_lags_while_another_keeps_the_full_rate() {
    let (dir, video) = synthetic_video(150, 99);
    let config = ServerConfig {
        client_buffer: 4,
        ..files_config(dir.path())
    };
    let server = Server::start(config).await;
    let client = reqwest::Client::new();
    let file = video.file_name().unwrap().to_str().unwrap().to_owned();
    let id = create(
        &client,
        &server,
        json!({"source": format!("videos/{file}"), "queries": QUERIES, "options": {"every_frame": true}}),
    )
    .await;
    // The stalled client asks for frames (tens of kB each) and reads through
    // a tiny receive buffer: the server's writes to it block at once.
    let address = server.base.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address).await.unwrap();
    let url = format!("{}/v1/streams/{id}/ws?frames=jpeg", server.ws_base);
    let (mut stalled, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let mut fast = connect(&server, &id, "").await;

    let fast_messages = until_end(&mut fast).await;
    let fast_frames: Vec<u64> = updates(&fast_messages)
        .iter()
        .map(|u| u["frame"].as_u64().unwrap())
        .collect();
    assert!(
        !fast_messages.iter().any(|m| m["event"] == "lagged"),
        "the fast client lagged"
    );
    assert!(fast_frames.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(fast_frames.len() >= 140, "{}", fast_frames.len());

    let mut lagged = 0;
    let mut stalled_updates = 0;
    let mut jpegs = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stalled.next())
            .await
            .expect("the stalled client got nothing");
        match message {
            Some(Ok(Message::Text(text))) => {
                let message: Value = serde_json::from_str(&text).unwrap();
                if message["event"] == "lagged" {
                    lagged += message["count"].as_u64().unwrap();
                } else if message["type"] == "update" {
                    stalled_updates += 1;
                }
                if message["event"] == "ended" {
                    break;
                }
            }
            Some(Ok(Message::Binary(jpeg))) => {
                let (_, width, height) = image::decode_image(&jpeg).unwrap();
                assert_eq!((width, height), (640, 360));
                jpegs += 1;
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => break,
        }
    }
    assert!(
        lagged > 0,
        "the stalled client was never told it lagged ({stalled_updates} updates, {jpegs} frames)"
    );
    assert!(jpegs > 0);
    assert!(stalled_updates < fast_frames.len());
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_http_camera_that_drops_is_reconnected_and_resumes() {
    let feed = CameraFeed::synthetic(
        &SynthConfig {
            frames: 300,
            seed: 808,
            ..SynthConfig::default()
        },
        0,
        10.0,
    )
    .unwrap();
    let camera_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let camera_address = camera_listener.local_addr().unwrap();
    let camera_task = tokio::spawn(feed.clone().serve(camera_listener));

    let server = Server::start(ServerConfig::default()).await;
    let client = reqwest::Client::new();
    let id = create(
        &client,
        &server,
        json!({"source": format!("http://{camera_address}/stream.mjpg"), "queries": QUERIES}),
    )
    .await;
    let mut socket = connect(&server, &id, "").await;
    let mut before = Vec::new();
    while before.len() < 8 {
        let message = next_json(&mut socket).await.expect("socket closed");
        if message["type"] == "update" {
            before.push(message);
        }
    }
    // The camera goes away (connections cut), and comes back on the same
    // port a second later.
    camera_task.abort();
    let _ = camera_task.await;
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !events.iter().any(|e| e == "source_disconnected") {
        assert!(
            Instant::now() < deadline,
            "the drop was not noticed: {events:?}"
        );
        let message = next_json(&mut socket).await.expect("socket closed");
        if let Some(event) = message["event"].as_str() {
            events.push(event.to_owned());
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let camera_listener = TcpListener::bind(camera_address).await.unwrap();
    let camera_task = tokio::spawn(feed.serve(camera_listener));
    let mut after = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while after.len() < 8 {
        assert!(
            Instant::now() < deadline,
            "no updates after the camera came back"
        );
        let message = next_json(&mut socket).await.expect("socket closed");
        if let Some(event) = message["event"].as_str() {
            events.push(event.to_owned());
        }
        if message["type"] == "update" {
            after.push(message);
        }
    }
    assert!(
        events.iter().any(|e| e == "source_reconnected"),
        "{events:?}"
    );
    let last_frame = before.last().unwrap()["frame"].as_u64().unwrap();
    assert!(after[0]["frame"].as_u64().unwrap() > last_frame);
    let status: Value = client
        .get(server.url(&format!("/v1/streams/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "running", "{status}");
    assert!(status["reconnects"].as_u64().unwrap() >= 1);
    camera_task.abort();
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_clients() {
    let (dir, video) = synthetic_video(200, 5);
    let server = Server::start(files_config(dir.path())).await;
    let client = reqwest::Client::new();
    let file = video.file_name().unwrap().to_str().unwrap().to_owned();
    let id = create(
        &client,
        &server,
        json!({"source": format!("videos/{file}"), "queries": ["red circle"], "options": {"native_rate": true}}),
    )
    .await;
    let mut socket = connect(&server, &id, "").await;
    let first = next_json(&mut socket).await.unwrap();
    assert!(first["type"] == "update" || first["type"] == "event");
    let stopping = tokio::spawn(server.shut_down());
    let mut told = false;
    while let Some(message) = next_json(&mut socket).await {
        if message["event"] == "shutdown" {
            told = true;
        }
    }
    assert!(told, "the client was not told of the shutdown");
    stopping.await.unwrap();
}

/// A WebDriver session on headless Chromium (Debian's chromium and
/// chromium-driver packages, which `scripts/setup.sh` installs).
struct Browser {
    driver: std::process::Child,
    base: String,
    session: String,
    client: reqwest::Client,
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is missing: run scripts/setup.sh (Debian's chromium and chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,720"]
            }
        }}});
        let deadline = Instant::now() + Duration::from_secs(20);
        let session = loop {
            let answer = client
                .post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await;
            if let Ok(answer) = answer {
                let body: Value = answer.json().await.unwrap();
                break body["value"]["sessionId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no browser session: {body}"))
                    .to_owned();
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Browser {
            driver,
            base,
            session,
            client,
        }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.client.request(method, url);
        if !body.is_null() {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn script(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
        .await
    }
}

impl Drop for Browser {
    /// Ends the WebDriver session first, which makes chromedriver quit
    /// Chromium: killing chromedriver alone leaves the browser running,
    /// orphaned, after every test run. Blocking and plain HTTP, since a drop
    /// cannot await (and also runs when a test panics).
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let address = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_viewer_page_draws_boxes_over_the_video() {
    let (dir, video) = synthetic_video(250, 808);
    let config = ServerConfig {
        token: Some("viewer-token".into()),
        ..files_config(dir.path())
    };
    let server = Server::start(config).await;
    let client = reqwest::Client::new();
    let file = video.file_name().unwrap().to_str().unwrap().to_owned();
    let response = client
        .post(server.url("/v1/streams"))
        .bearer_auth("viewer-token")
        .json(&json!({"source": format!("videos/{file}"), "queries": QUERIES, "options": {"native_rate": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let browser = Browser::start().await;
    let page = server.url(&format!("/?token=viewer-token&watch={id}"));
    browser
        .command(reqwest::Method::POST, "/url", json!({"url": page}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (frames, boxes) = loop {
        let seen = browser
            .script("return [Number(document.body.dataset.frames || 0), Number(document.body.dataset.boxes || 0)]")
            .await;
        let frames = seen[0].as_u64().unwrap_or(0);
        let boxes = seen[1].as_u64().unwrap_or(0);
        if frames >= 10 && boxes > 0 {
            break (frames, boxes);
        }
        assert!(
            Instant::now() < deadline,
            "the viewer drew {frames} frames, {boxes} boxes on the last"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let screenshot = browser
        .command(reqwest::Method::GET, "/screenshot", Value::Null)
        .await;
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(
            screenshot
                .as_str()
                .unwrap_or_else(|| panic!("no screenshot: {screenshot}")),
        )
        .unwrap();
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("viewer.png");
    std::fs::write(&out, &png).unwrap();
    let (rgb, width, height) = image::decode_image(&png).unwrap();
    assert_eq!(width, 1100);
    assert!(height > 400, "{height}");
    // The canvas shows the video: the screenshot is far from one flat colour.
    let distinct: std::collections::HashSet<[u8; 3]> = rgb
        .chunks_exact(3)
        .map(|p| [p[0] & 0xf0, p[1] & 0xf0, p[2] & 0xf0])
        .collect();
    assert!(
        distinct.len() > 50,
        "{} colours in {}",
        distinct.len(),
        out.display()
    );
    println!(
        "viewer: {frames} frames drawn, {boxes} boxes on the last; screenshot {}",
        out.display()
    );
    drop(browser);
    server.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recurrent_stream_tracks_with_the_decoders_slots() {
    let (dir, video) = synthetic_video(30, 808);
    let server = Server::start(files_config(dir.path())).await;
    let client = reqwest::Client::new();
    let file = video.file_name().unwrap().to_str().unwrap().to_owned();
    let id = create(
        &client,
        &server,
        // Class-agnostic: slots are scored by objectness, which the small
        // built-in decoder gives with more confidence than names.
        json!({"source": format!("videos/{file}"), "queries": QUERIES,
               "tracker": {"class_agnostic": true},
               "options": {"every_frame": true, "tracker": "recurrent"}}),
    )
    .await;
    let mut socket = connect(&server, &id, "").await;
    let messages = until_end(&mut socket).await;
    assert_eq!(messages.last().unwrap()["event"], "ended", "{messages:?}");
    let updates = updates(&messages);
    assert!(updates.len() >= 25, "{} updates", updates.len());
    // Slots are tracks, and a track's id persists over frames.
    let mut seen: std::collections::HashMap<u64, usize> = Default::default();
    for update in &updates {
        for track in update["tracks"].as_array().unwrap() {
            *seen.entry(track["id"].as_u64().unwrap()).or_default() += 1;
        }
    }
    assert!(!seen.is_empty(), "the recurrent tracker reported nothing");
    assert!(seen.values().any(|frames| *frames >= 10), "{seen:?}");
    server.shut_down().await;
}
