//! Live pacing, network sources, disconnects and reconnects, all on 127.0.0.1.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use owltrack_decoder::*;

#[test]
fn live_pacing_bounds_latency_under_a_slow_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cam.mp4");
    write_indexed_video(&path, 64, 48, 50, 25.0);
    let options = ReadOptions {
        native_rate: true,
        pacing: Pacing::Live { capacity: 2 },
        ..ReadOptions::default()
    };
    let mut reader = VideoReader::open(Source::File { path: path.clone() }, options).unwrap();
    let consumer_cost = Duration::from_millis(120);
    let mut worst_latency = Duration::ZERO;
    let mut delivered = 0u64;
    let mut last_index = None;
    while let Some(event) = reader.recv() {
        let Event::Frame(frame) = event else {
            panic!("files do not disconnect")
        };
        worst_latency = worst_latency.max(frame.decoded_at.elapsed());
        assert!(last_index < Some(frame.index), "frames stay in order");
        last_index = Some(frame.index);
        delivered += 1;
        thread::sleep(consumer_cost);
    }
    let stats = reader.finish().unwrap();
    assert_eq!(stats.frames_decoded, 50);
    assert_eq!(stats.frames_delivered, delivered);
    assert_eq!(delivered + stats.frames_dropped, 50, "{stats:?}");
    assert!(
        stats.frames_dropped > 20,
        "a consumer at ~8 fps on a 25 fps source drops most: {stats:?}"
    );
    // Two queued frames plus the one being handled: latency never piles up.
    assert!(
        worst_latency < consumer_cost * 4,
        "worst latency {worst_latency:?}"
    );
}

#[test]
fn offline_pacing_delivers_every_frame_to_a_slow_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.mp4");
    write_indexed_video(&path, 64, 48, 20, 25.0);
    let options = ReadOptions {
        pacing: Pacing::Offline { capacity: 2 },
        ..ReadOptions::default()
    };
    let mut reader = VideoReader::open(Source::File { path }, options).unwrap();
    let mut indices = Vec::new();
    while let Some(Event::Frame(frame)) = reader.recv() {
        assert!(reader.queue_len() <= 2);
        indices.push(frame.index);
        thread::sleep(Duration::from_millis(10));
    }
    let stats = reader.finish().unwrap();
    assert_eq!(indices, (0..20).collect::<Vec<u64>>());
    assert_eq!(stats.frames_dropped, 0);
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[test]
fn unreachable_sources_get_distinct_errors() {
    let short = ReadOptions {
        open_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        ..ReadOptions::default()
    };
    let open = |url: &str| {
        VideoReader::open(Source::parse(url, 30.0).unwrap(), short.clone())
            .err()
            .unwrap()
    };

    let refused = free_port();
    let error = open(&format!("http://{refused}/stream.ts"));
    assert!(matches!(error, DecodeError::Refused { .. }), "{error}");
    let error = open(&format!("rtsp://{refused}/live"));
    assert!(matches!(error, DecodeError::Refused { .. }), "{error}");

    // A server that answers 404.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            read_request(&mut stream);
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let error = open(&format!("http://{addr}/missing.mp4"));
    assert!(
        matches!(&error, DecodeError::Unreachable { reason, .. } if reason.contains("404")),
        "{error}"
    );
    server.join().unwrap();

    // A server that accepts and never answers: the open times out, no hang.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let started = Instant::now();
    let error = open(&format!("http://{addr}/silent.ts"));
    assert!(matches!(error, DecodeError::Timeout { .. }), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(listener);

    let error = Source::parse("gopher://example/x", 30.0).err().unwrap();
    assert!(
        matches!(error, DecodeError::UnsupportedScheme { .. }),
        "{error}"
    );
}

/// Serves `body` as an endless-looking MPEG-TS stream (no length), paced at
/// about `bytes_per_second`, closing the connection after `cut_at` bytes.
fn serve_ts(stream: &mut TcpStream, body: &[u8], cut_at: usize, bytes_per_second: usize) {
    read_request(stream);
    if stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return;
    }
    let chunk = 188 * 8;
    for piece in body[..cut_at.min(body.len())].chunks(chunk) {
        if stream.write_all(piece).is_err() {
            return;
        }
        thread::sleep(Duration::from_secs_f64(
            piece.len() as f64 / bytes_per_second as f64,
        ));
    }
}

#[test]
fn http_stream_cut_and_restarted_reconnects_and_keeps_delivering() {
    let dir = tempfile::tempdir().unwrap();
    let ts_path = dir.path().join("live.ts");
    // 6 s of video; served at about twice real time.
    write_indexed_video(&ts_path, 96, 64, 150, 25.0);
    let body = Arc::new(std::fs::read(&ts_path).unwrap());
    let rate = body.len() / 3;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let server = {
        let body = Arc::clone(&body);
        let done = Arc::clone(&done);
        thread::spawn(move || {
            // First connection: half the stream, then the connection is cut.
            let (mut first, _) = listener.accept().unwrap();
            serve_ts(&mut first, &body, body.len() / 2, rate);
            drop(first);
            // The server is down for a while: reconnect attempts are refused.
            drop(listener);
            thread::sleep(Duration::from_millis(1500));
            // Back up on the same port, joined mid-stream as a camera would be:
            // from a transport packet between two keyframes.
            let rejoin_at = (body.len() / 3) / 188 * 188 + 188 * 5;
            let listener = TcpListener::bind(addr).unwrap();
            listener.set_nonblocking(true).unwrap();
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        serve_ts(&mut stream, &body[rejoin_at..], body.len(), rate);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };

    let options = ReadOptions {
        pacing: Pacing::Live { capacity: 4 },
        open_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(3),
        reconnect: ReconnectPolicy {
            initial_delay: Duration::from_millis(200),
            max_delay: Duration::from_millis(800),
            ..ReconnectPolicy::default()
        },
        ..ReadOptions::default()
    };
    let source = Source::parse(&format!("http://{addr}/live.ts"), 30.0).unwrap();
    let mut reader = VideoReader::open(source, options).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut before = 0;
    let mut after = 0;
    let mut events = Vec::new();
    let mut last_pts = f64::NEG_INFINITY;
    while after < 20 && Instant::now() < deadline {
        match reader.recv_timeout(Duration::from_secs(1)) {
            Received::Event(Event::Frame(frame)) => {
                assert!(
                    frame.pts > last_pts,
                    "pts must keep increasing across reconnects"
                );
                last_pts = frame.pts;
                // Frames well before the cut are whole; the one at the cut may not be.
                if events.is_empty() && frame.index < 50 {
                    assert!(
                        close(frame.pixel(5, 5), index_colour(frame.index), 12),
                        "{frame:?}"
                    );
                }
                if events.contains(&"reconnected") {
                    // Pictures predicted from frames never received are not delivered.
                    assert!(
                        is_some_index_colour(frame.pixel(5, 5), 150, 12),
                        "{frame:?}: {:?}",
                        frame.pixel(5, 5)
                    );
                    after += 1;
                } else {
                    before += 1;
                }
            }
            Received::Event(Event::Disconnected { .. }) => events.push("disconnected"),
            Received::Event(Event::Reconnected { attempts, downtime }) => {
                assert!(attempts >= 1);
                assert!(downtime >= Duration::from_millis(500), "{downtime:?}");
                events.push("reconnected");
            }
            Received::TimedOut => {}
            Received::Ended => panic!("a live network source must not end when cut: {events:?}"),
        }
    }
    let stats = reader.stats();
    drop(reader);
    done.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(before > 10, "frames before the cut: {before}");
    assert_eq!(&events[..2], ["disconnected", "reconnected"], "{events:?}");
    assert!(
        after >= 20,
        "frames after reconnecting: {after}, events {events:?}"
    );
    assert!(stats.reconnects >= 1 && stats.disconnects >= 1, "{stats:?}");
}

#[test]
fn a_source_that_goes_silent_times_out_into_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let ts_path = dir.path().join("s.ts");
    write_indexed_video(&ts_path, 64, 48, 50, 25.0);
    let body = std::fs::read(&ts_path).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = Arc::new(AtomicBool::new(true));
    let server = {
        let hold = Arc::clone(&hold);
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            serve_ts(&mut stream, &body, body.len(), body.len() * 4);
            // Keep the connection open but send nothing more.
            while hold.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let options = ReadOptions {
        read_timeout: Duration::from_millis(700),
        reconnect: ReconnectPolicy {
            max_attempts: Some(1),
            initial_delay: Duration::from_millis(50),
            ..ReconnectPolicy::default()
        },
        ..ReadOptions::default()
    };
    let source = Source::parse(&format!("http://{addr}/s.ts"), 30.0).unwrap();
    let mut reader = VideoReader::open(source, options).unwrap();
    let started = Instant::now();
    let mut frames = 0;
    let mut disconnected = false;
    while let Some(event) = reader.recv() {
        match event {
            Event::Frame(_) => frames += 1,
            Event::Disconnected { error, .. } => {
                assert!(error.contains("timed out"), "{error}");
                disconnected = true;
            }
            Event::Reconnected { .. } => panic!("the server accepts only once"),
        }
    }
    let error = reader.finish().err().unwrap();
    hold.store(false, Ordering::Relaxed);
    server.join().unwrap();
    assert!(frames >= 40, "{frames}");
    assert!(disconnected);
    assert!(
        matches!(error, DecodeError::ReconnectsExhausted { attempts: 1, .. }),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// Reads a finite network source to its end, asserting it ends cleanly.
fn read_to_end(url: &str) -> (Vec<Frame>, DecodeStats) {
    let source = Source::parse(url, 30.0).unwrap();
    let options = ReadOptions {
        open_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        ..ReadOptions::default()
    };
    let mut reader = VideoReader::open(source, options).unwrap();
    let mut frames = Vec::new();
    for event in reader.by_ref() {
        match event {
            Event::Frame(frame) => frames.push(frame),
            other => panic!("a finished recording must end, not {other:?}"),
        }
    }
    (frames, reader.finish().unwrap())
}

#[test]
fn progressive_mp4_over_http_plays_to_a_clean_end() {
    let dir = tempfile::tempdir().unwrap();
    // Index at the end of the file: FFmpeg must seek with Range requests.
    write_indexed_video(&dir.path().join("clip.mp4"), 64, 48, 30, 25.0);
    let server = FileServer::start(dir.path(), content_type_by_extension);
    let (frames, stats) = read_to_end(&server.url("clip.mp4"));
    assert_eq!(frames.len(), 30);
    assert_eq!(stats.disconnects, 0);
    for frame in &frames {
        assert!(
            close(frame.pixel(5, 5), index_colour(frame.index), 12),
            "{frame:?}"
        );
    }
}

/// Frames a source delivers within ten seconds, reconnects off: an open
/// that fails delivers none.
fn frames_within_ten_seconds(input: &str) -> usize {
    let options = ReadOptions {
        open_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        reconnect: ReconnectPolicy {
            enabled: false,
            ..ReconnectPolicy::default()
        },
        ..ReadOptions::default()
    };
    let Ok(mut reader) = VideoReader::open(Source::parse(input, 30.0).unwrap(), options) else {
        return 0;
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut frames = 0;
    while Instant::now() < deadline {
        match reader.recv_timeout(Duration::from_millis(200)) {
            Received::Event(Event::Frame(_)) => frames += 1,
            Received::Ended => break,
            _ => {}
        }
    }
    frames
}

#[test]
fn playlists_cannot_reach_other_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("src.mp4");
    write_indexed_video(&mp4, 64, 48, 50, 25.0);
    let segment = dir.path().join("segment.ts");
    ffmpeg(&[
        "-i",
        mp4.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "mpegts",
        segment.to_str().unwrap(),
    ]);
    let playlist = |uri: &str| {
        format!("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{uri}\n#EXT-X-ENDLIST\n")
    };

    // A playlist served over HTTP that names a local file.
    let served = tempfile::tempdir().unwrap();
    let local_uri = format!("file:{}", segment.display());
    std::fs::write(served.path().join("index.m3u8"), playlist(&local_uri)).unwrap();
    let server = FileServer::start(served.path(), content_type_by_extension);
    assert_eq!(frames_within_ten_seconds(&server.url("index.m3u8")), 0);

    // A local playlist that names a host: nothing connects to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let remote_uri = format!("http://{}/segment.ts", listener.local_addr().unwrap());
    let local = dir.path().join("index.m3u8");
    std::fs::write(&local, playlist(&remote_uri)).unwrap();
    assert_eq!(frames_within_ten_seconds(local.to_str().unwrap()), 0);
    assert!(
        listener.accept().is_err(),
        "a local playlist made FFmpeg connect to a host"
    );

    // The same local playlist naming the segment beside it plays.
    std::fs::write(&local, playlist("segment.ts")).unwrap();
    assert!(frames_within_ten_seconds(local.to_str().unwrap()) > 0);
}

#[test]
fn hls_playlist_plays_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("src.mp4");
    write_indexed_video(&mp4, 64, 48, 75, 25.0); // keyframes every second
    ffmpeg(&[
        "-i",
        mp4.to_str().unwrap(),
        "-c",
        "copy",
        "-f",
        "hls",
        "-hls_time",
        "1",
        "-hls_playlist_type",
        "vod",
        dir.path().join("index.m3u8").to_str().unwrap(),
    ]);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "ts")
        })
        .count();
    assert!(segments >= 3, "{segments} segments");
    let server = FileServer::start(dir.path(), content_type_by_extension);
    let (frames, _) = read_to_end(&server.url("index.m3u8"));
    assert_eq!(frames.len(), 75);
    for pair in frames.windows(2) {
        assert!(pair[1].pts > pair[0].pts);
    }
    for frame in &frames {
        assert!(
            close(frame.pixel(5, 5), index_colour(frame.index), 12),
            "{frame:?}"
        );
    }
}

#[test]
fn mjpeg_over_http_streams_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("src.mp4");
    write_indexed_video(&mp4, 64, 48, 20, 25.0);
    let mjpeg = dir.path().join("cam.mjpeg");
    ffmpeg(&[
        "-i",
        mp4.to_str().unwrap(),
        "-c:v",
        "mjpeg",
        "-q:v",
        "2",
        "-f",
        "mpjpeg",
        mjpeg.to_str().unwrap(),
    ]);
    fn multipart(_: &str) -> &'static str {
        "multipart/x-mixed-replace;boundary=ffmpeg"
    }
    let server = FileServer::start(dir.path(), multipart);
    let options = ReadOptions {
        reconnect: ReconnectPolicy {
            enabled: false,
            ..ReconnectPolicy::default()
        },
        ..ReadOptions::default()
    };
    let mut reader = VideoReader::open(
        Source::parse(&server.url("cam.mjpeg"), 30.0).unwrap(),
        options,
    )
    .unwrap();
    assert_eq!(reader.info().codec, "mjpeg");
    let mut frames = Vec::new();
    while let Some(Event::Frame(frame)) = reader.recv() {
        frames.push(frame);
    }
    // A multipart stream has no length: its end is a dropped camera, which
    // with reconnection turned off is reported as such.
    let error = reader.finish().err().unwrap();
    assert!(
        matches!(error, DecodeError::ReconnectsExhausted { .. }),
        "{error}"
    );
    assert_eq!(frames.len(), 20);
    for frame in &frames {
        assert!(
            close(frame.pixel(5, 5), index_colour(frame.index), 12),
            "{frame:?}"
        );
    }
}
