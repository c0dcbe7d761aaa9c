//! Reading a long stream keeps memory flat. On its own in this binary, so
//! that no other test's allocations move the process's resident size.

mod common;

use owltrack_decoder::{Event, ReadOptions, Resize, Source, VideoReader};

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn packets_are_released_as_they_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("large-packets.avi");
    // Motion JPEG at high quality: every packet is a whole picture of about
    // 150 kB, so a leaked packet per frame would show as ~90 MB.
    common::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-t",
        "20",
        "-c:v",
        "mjpeg",
        "-q:v",
        "2",
        video.to_str().unwrap(),
    ]);
    let size = std::fs::metadata(&video).unwrap().len();
    let read = |frames: &mut u64| {
        let options = ReadOptions {
            resize: Resize::Exact {
                width: 64,
                height: 36,
            },
            ..ReadOptions::default()
        };
        let mut reader = VideoReader::open(
            Source::File {
                path: video.clone(),
            },
            options,
        )
        .unwrap();
        while let Some(event) = reader.recv() {
            if let Event::Frame(_) = event {
                *frames += 1;
            }
        }
        reader.finish().unwrap();
    };
    // A first pass grows the allocator's pools to their working size.
    let mut frames = 0;
    read(&mut frames);
    let before = resident_kib();
    for _ in 0..3 {
        read(&mut frames);
    }
    let grown_mib = resident_kib().saturating_sub(before) as f64 / 1024.0;
    let read_mib = 3.0 * size as f64 / (1024.0 * 1024.0);
    assert_eq!(frames, 4 * 600);
    assert!(
        grown_mib < read_mib / 10.0,
        "memory grew {grown_mib:.1} MiB while reading {read_mib:.0} MiB of packets"
    );
}
