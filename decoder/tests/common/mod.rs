//! Helpers for tests that make their own videos.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use owltrack_decoder::{Chroma, VideoWriter, WriterOptions};

/// Four solid quadrants: red top-left, green top-right, blue bottom-left,
/// white bottom-right.
pub const QUADRANTS: [[u8; 3]; 4] = [[220, 30, 30], [30, 200, 40], [30, 40, 210], [240, 240, 240]];

pub fn quadrant_frame(width: u32, height: u32) -> Vec<u8> {
    let mut rgb = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            let q = usize::from(y >= height / 2) * 2 + usize::from(x >= width / 2);
            rgb.extend_from_slice(&QUADRANTS[q]);
        }
    }
    rgb
}

/// A frame whose whole picture is one colour derived from `index`, so the
/// order of decoded frames can be read back from their pixels.
pub fn index_colour(index: u64) -> [u8; 3] {
    [
        ((index * 37) % 256) as u8,
        ((index * 11 + 60) % 256) as u8,
        128,
    ]
}

pub fn solid_frame(width: u32, height: u32, colour: [u8; 3]) -> Vec<u8> {
    colour.repeat((width * height) as usize)
}

pub fn write_quadrant_video(
    path: &Path,
    width: u32,
    height: u32,
    frames: u32,
    fps: f64,
    chroma: Chroma,
) {
    let options = WriterOptions {
        fps,
        chroma,
        ..WriterOptions::default()
    };
    let mut writer = VideoWriter::create(path, width, height, &options).unwrap();
    let rgb = quadrant_frame(width, height);
    for _ in 0..frames {
        writer.write(&rgb).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), u64::from(frames));
}

/// Frame `i`: `index_colour(i)` on the top half, noise below, so every frame
/// costs about the same number of bytes once encoded.
pub fn noisy_indexed_frame(width: u32, height: u32, index: u64) -> Vec<u8> {
    let mut rgb = solid_frame(width, height, index_colour(index));
    let mut state = index
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let start = (height / 2 * width * 3) as usize;
    for byte in &mut rgb[start..] {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *byte = (state >> 56) as u8;
    }
    rgb
}

pub fn write_noisy_video(path: &Path, width: u32, height: u32, frames: u32, fps: f64) {
    let options = WriterOptions {
        fps,
        ..WriterOptions::default()
    };
    let mut writer = VideoWriter::create(path, width, height, &options).unwrap();
    for i in 0..frames {
        writer
            .write(&noisy_indexed_frame(width, height, u64::from(i)))
            .unwrap();
    }
    writer.finish().unwrap();
}

/// Overwrites every sample of an MP4 (the payload of its `mdat` box) while
/// keeping the index and codec headers in `moov`: the file opens and
/// describes its stream, but no packet decodes.
pub fn scramble_mp4_samples(mp4: &mut [u8]) {
    let tag = mp4
        .windows(4)
        .position(|w| w == b"mdat")
        .expect("an mdat box");
    let size = u32::from_be_bytes(mp4[tag - 4..tag].try_into().unwrap()) as usize;
    for (i, byte) in mp4[tag + 4..tag - 4 + size].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(29).wrapping_add(3);
    }
}

/// A video whose frame `i` is `index_colour(i)` all over.
pub fn write_indexed_video(path: &Path, width: u32, height: u32, frames: u32, fps: f64) {
    let options = WriterOptions {
        fps,
        keyframe_interval: Some(25),
        ..WriterOptions::default()
    };
    let mut writer = VideoWriter::create(path, width, height, &options).unwrap();
    for i in 0..frames {
        writer
            .write(&solid_frame(width, height, index_colour(u64::from(i))))
            .unwrap();
    }
    writer.finish().unwrap();
}

/// Whether `colour` is the colour of some frame of an indexed video.
pub fn is_some_index_colour(colour: [u8; 3], frames: u64, tolerance: u8) -> bool {
    (0..frames).any(|i| close(colour, index_colour(i), tolerance))
}

pub fn close(a: [u8; 3], b: [u8; 3], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

/// Runs the `ffmpeg` CLI quietly and asserts it succeeded.
pub fn ffmpeg(args: &[&str]) {
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output()
        .expect("the ffmpeg CLI is installed (scripts/setup.sh)");
    assert!(
        output.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads an HTTP request's head (up to the blank line).
pub fn read_request(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut request = Vec::new();
    let mut byte = [0u8; 1];
    while !request.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => request.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&request).into_owned()
}

/// A tiny static HTTP/1.1 file server on 127.0.0.1 for network-source tests:
/// GET with optional `Range: bytes=N-`, one thread per connection, closes
/// after each response. `content_type` picks the type from the file name.
pub struct FileServer {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    pub fn start(root: &Path, content_type: fn(&str) -> &'static str) -> Self {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let root = root.to_owned();
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                };
                let root = root.clone();
                std::thread::spawn(move || {
                    stream.set_nonblocking(false).unwrap();
                    let request = read_request(&mut stream);
                    let name = request
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_owned();
                    let Ok(body) = std::fs::read(root.join(&name)) else {
                        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    };
                    let from = request
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("range: bytes=")
                                .map(str::to_owned)
                        })
                        .and_then(|r| r.split('-').next().and_then(|n| n.parse::<usize>().ok()))
                        .unwrap_or(0)
                        .min(body.len());
                    let head = if from > 0 {
                        format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{}\r\n",
                            body.len().saturating_sub(1),
                            body.len()
                        )
                    } else {
                        "HTTP/1.1 200 OK\r\nAccept-Ranges: bytes\r\n".to_owned()
                    };
                    let head = format!(
                        "{head}Content-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        content_type(&name),
                        body.len() - from
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body[from..]);
                });
            }
        });
        FileServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}", self.addr)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub fn content_type_by_extension(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("mp4") => "video/mp4",
        Some("ts") => "video/mp2t",
        Some("m3u8") => "application/vnd.apple.mpegurl",
        _ => "application/octet-stream",
    }
}
