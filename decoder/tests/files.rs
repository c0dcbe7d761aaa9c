//! Decoding local files and frame folders: colours, sizes, timing, bad input.

mod common;

use std::time::Duration;

use common::*;
use owltrack_decoder::*;

fn read_all(source: Source, options: ReadOptions) -> (Vec<Frame>, DecodeStats) {
    let mut reader = VideoReader::open(source, options).unwrap();
    let mut frames = Vec::new();
    for event in reader.by_ref() {
        match event {
            Event::Frame(frame) => frames.push(frame),
            other => panic!("unexpected event from a file: {other:?}"),
        }
    }
    let stats = reader.finish().unwrap();
    (frames, stats)
}

fn file(path: &std::path::Path) -> Source {
    Source::File { path: path.into() }
}

fn assert_quadrants(frame: &Frame, tolerance: u8) {
    let (w, h) = (frame.content_width, frame.content_height);
    let centres = [
        (w / 4, h / 4),
        (3 * w / 4, h / 4),
        (w / 4, 3 * h / 4),
        (3 * w / 4, 3 * h / 4),
    ];
    for ((x, y), want) in centres.into_iter().zip(QUADRANTS) {
        let got = frame.pixel(x, y);
        assert!(
            close(got, want, tolerance),
            "pixel ({x},{y}) of {frame:?} is {got:?}, want {want:?}"
        );
    }
}

#[test]
fn odd_sized_420_video_decodes_to_its_colours_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.mp4");
    write_quadrant_video(&path, 322, 242, 12, 24.0, Chroma::Yuv420);
    let (frames, stats) = read_all(file(&path), ReadOptions::default());
    assert_eq!(frames.len(), 12);
    assert_eq!(stats.frames_decoded, 12);
    assert_eq!(stats.frames_delivered, 12);
    assert_eq!(stats.decode_errors, 0);
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.index, i as u64);
        assert_eq!((frame.width, frame.height), (322, 242));
        assert_eq!((frame.source_width, frame.source_height), (322, 242));
        assert_eq!(frame.rgb.len(), 322 * 242 * 3);
        assert!(
            (frame.pts - i as f64 / 24.0).abs() < 1e-3,
            "frame {i} at {}",
            frame.pts
        );
        assert_quadrants(frame, 12);
    }
}

#[test]
fn full_chroma_444_video_decodes_to_its_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q444.mp4");
    write_quadrant_video(&path, 96, 64, 5, 25.0, Chroma::Yuv444);
    let info = probe(&file(&path), false, &ReadOptions::default(), |_| {}).unwrap();
    assert_eq!(info.stream.pixel_format, "yuv444p");
    let (frames, _) = read_all(file(&path), ReadOptions::default());
    assert_eq!(frames.len(), 5);
    for frame in &frames {
        assert_quadrants(frame, 8);
    }
}

#[test]
fn odd_frame_sizes_are_written_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.mp4");
    write_quadrant_video(&path, 321, 243, 3, 25.0, Chroma::Yuv420);
    let (frames, _) = read_all(file(&path), ReadOptions::default());
    assert_eq!(frames.len(), 3);
    assert_eq!((frames[0].width, frames[0].height), (321, 243));
    assert_quadrants(&frames[0], 12);
}

#[test]
fn scaling_gives_the_requested_size_and_aspect() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.mp4");
    write_quadrant_video(&path, 322, 242, 3, 25.0, Chroma::Yuv420);

    let exact = ReadOptions {
        resize: Resize::Exact {
            width: 100,
            height: 60,
        },
        ..ReadOptions::default()
    };
    let (frames, _) = read_all(file(&path), exact);
    assert_eq!((frames[0].width, frames[0].height), (100, 60));
    assert_eq!(frames[0].rgb.len(), 100 * 60 * 3);
    assert_eq!(
        (frames[0].source_width, frames[0].source_height),
        (322, 242)
    );
    assert_quadrants(&frames[0], 12);

    let square = ReadOptions {
        resize: Resize::FitSquare {
            side: 128,
            pad: [1, 2, 3],
        },
        ..ReadOptions::default()
    };
    let (frames, _) = read_all(file(&path), square);
    let frame = &frames[0];
    assert_eq!((frame.width, frame.height), (128, 128));
    // 322×242 fitted to a long side of 128 keeps its 4:3-ish aspect.
    assert_eq!((frame.content_width, frame.content_height), (128, 96));
    assert_quadrants(frame, 12);
    assert_eq!(frame.pixel(5, 100), [1, 2, 3]);
    assert_eq!(frame.pixel(127, 127), [1, 2, 3]);
}

#[test]
fn variable_frame_rate_times_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vfr.mkv");
    let times = [0.0, 0.04, 0.2, 0.22, 0.5, 0.9, 0.933, 1.5];
    let mut writer = VideoWriter::create(&path, 64, 48, &WriterOptions::default()).unwrap();
    for (i, t) in times.iter().enumerate() {
        writer
            .write_at(&solid_frame(64, 48, index_colour(i as u64)), *t)
            .unwrap();
    }
    assert!(
        writer.write_at(&solid_frame(64, 48, [0; 3]), 1.0).is_err(),
        "time going back is refused"
    );
    writer.finish().unwrap();
    let (frames, _) = read_all(file(&path), ReadOptions::default());
    assert_eq!(frames.len(), times.len());
    for (frame, t) in frames.iter().zip(times) {
        assert!((frame.pts - t).abs() < 2e-3, "pts {} vs {t}", frame.pts);
        assert!(close(frame.pixel(10, 10), index_colour(frame.index), 10));
    }
}

#[test]
fn stream_without_timestamps_gets_a_monotonic_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("src.mp4");
    write_indexed_video(&mp4, 64, 48, 20, 25.0);
    // A raw H.264 elementary stream carries no timestamps at all.
    let raw = dir.path().join("raw.h264");
    ffmpeg(&[
        "-i",
        mp4.to_str().unwrap(),
        "-c",
        "copy",
        "-bsf:v",
        "h264_mp4toannexb",
        raw.to_str().unwrap(),
    ]);
    let (frames, _) = read_all(file(&raw), ReadOptions::default());
    assert_eq!(frames.len(), 20);
    for pair in frames.windows(2) {
        assert!(
            pair[1].pts > pair[0].pts,
            "{:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    assert!(frames[0].pts.abs() < 1e-9);
}

/// Splits an H.264 Annex B stream into NAL units (without start codes).
fn nal_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::new();
    for (k, &start) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(stream.len(), |next| next - 3);
        while end > start && stream[end - 1] == 0 {
            end -= 1; // the zero byte of a four-byte start code
        }
        units.push(&stream[start..end]);
    }
    units
}

#[test]
fn joining_between_keyframes_delivers_only_whole_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("src.mp4");
    write_indexed_video(&mp4, 64, 48, 60, 25.0); // keyframes at 0, 25, 50
    let raw = dir.path().join("raw.h264");
    ffmpeg(&[
        "-i",
        mp4.to_str().unwrap(),
        "-c",
        "copy",
        "-bsf:v",
        "h264_mp4toannexb",
        raw.to_str().unwrap(),
    ]);
    let stream = std::fs::read(&raw).unwrap();
    let units = nal_units(&stream);
    let kind = |unit: &[u8]| unit[0] & 0x1f;
    let first_idr = units.iter().position(|u| kind(u) == 5).unwrap();
    // Parameter sets, then everything after the first keyframe: the decoder
    // can parse the P-frames but has none of their references.
    let mut joined = Vec::new();
    for unit in units
        .iter()
        .filter(|u| matches!(kind(u), 7 | 8))
        .take(2)
        .chain(&units[first_idr + 1..])
    {
        joined.extend_from_slice(&[0, 0, 0, 1]);
        joined.extend_from_slice(unit);
    }
    let cut = dir.path().join("joined.h264");
    std::fs::write(&cut, joined).unwrap();
    let (frames, _) = read_all(file(&cut), ReadOptions::default());
    // Decoding resumes at the next picture that needs no missing reference;
    // every picture delivered is a whole frame of the source, in order.
    assert!(frames.len() >= 10, "{} frames", frames.len());
    let first = (0..60)
        .find(|&i| close(frames[0].pixel(5, 5), index_colour(i), 12))
        .unwrap_or_else(|| panic!("a damaged first picture: {:?}", frames[0].pixel(5, 5)));
    assert!(
        first > 0 && first + frames.len() as u64 <= 60,
        "starts at {first}"
    );
    for (k, frame) in frames.iter().enumerate() {
        assert!(
            close(frame.pixel(5, 5), index_colour(first + k as u64), 12),
            "{frame:?}"
        );
    }
}

#[test]
fn stride_and_target_fps_choose_frames() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.mp4");
    write_indexed_video(&path, 64, 48, 30, 30.0);
    let strided = ReadOptions {
        stride: 4,
        ..ReadOptions::default()
    };
    let (frames, stats) = read_all(file(&path), strided);
    let indices: Vec<u64> = frames.iter().map(|f| f.index).collect();
    assert_eq!(indices, [0, 4, 8, 12, 16, 20, 24, 28]);
    assert_eq!(stats.frames_skipped, 22);
    for frame in &frames {
        assert!(
            close(frame.pixel(3, 3), index_colour(frame.index), 10),
            "{frame:?}"
        );
    }

    let ten_fps = ReadOptions {
        target_fps: Some(10.0),
        pacing: Pacing::live(),
        ..ReadOptions::default()
    };
    let mut reader = VideoReader::open(file(&path), ten_fps).unwrap();
    let mut kept = Vec::new();
    // A consumer that keeps up: nothing is dropped even under live pacing.
    while let Some(event) = reader.recv() {
        if let Event::Frame(frame) = event {
            kept.push(frame.index);
        }
    }
    let stats = reader.finish().unwrap();
    assert_eq!(kept.len() as u64 + stats.frames_dropped, 10);
    assert!(kept.iter().all(|i| i % 3 == 0), "{kept:?}");
}

#[test]
fn truncated_files_end_cleanly_or_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("full.mp4");
    write_noisy_video(&mp4, 64, 48, 40, 25.0);
    let bytes = std::fs::read(&mp4).unwrap();

    // MP4 writes its index at the end: cut it off and the file is unreadable.
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let error = VideoReader::open(file(&cut), ReadOptions::default())
        .err()
        .unwrap();
    assert!(matches!(error, DecodeError::NotMedia { .. }), "{error}");

    // With the index first (faststart), the frames before the cut survive.
    let fast = dir.path().join("fast.mp4");
    ffmpeg(&[
        "-i",
        mp4.to_str().unwrap(),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        fast.to_str().unwrap(),
    ]);
    let fast_bytes = std::fs::read(&fast).unwrap();
    let fast_cut = dir.path().join("fast_cut.mp4");
    std::fs::write(&fast_cut, &fast_bytes[..fast_bytes.len() * 2 / 3]).unwrap();
    let (frames, _) = read_all(file(&fast_cut), ReadOptions::default());
    assert!(
        frames.len() > 5 && frames.len() < 40,
        "{} frames",
        frames.len()
    );

    // MPEG-TS cut mid-packet: the frames before the cut decode, then a clean end.
    let ts = dir.path().join("full.ts");
    write_noisy_video(&ts, 64, 48, 40, 25.0);
    let ts_bytes = std::fs::read(&ts).unwrap();
    let ts_cut = dir.path().join("cut.ts");
    std::fs::write(&ts_cut, &ts_bytes[..ts_bytes.len() / 2 + 77]).unwrap();
    let (frames, _) = read_all(file(&ts_cut), ReadOptions::default());
    assert!(
        frames.len() > 5 && frames.len() < 40,
        "{} frames",
        frames.len()
    );
    for frame in &frames {
        assert!(
            close(frame.pixel(3, 3), index_colour(frame.index), 12),
            "{frame:?}"
        );
    }
}

#[test]
fn bad_inputs_get_distinct_errors() {
    let dir = tempfile::tempdir().unwrap();
    let open = |path: &std::path::Path| {
        VideoReader::open(file(path), ReadOptions::default())
            .err()
            .unwrap()
    };

    let missing = dir.path().join("missing.mp4");
    assert!(matches!(open(&missing), DecodeError::NotFound(p) if p == missing));

    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(open(&empty), DecodeError::EmptyFile(_)));

    let random = dir.path().join("random.mp4");
    let noise: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, noise).unwrap();
    let error = open(&random);
    assert!(matches!(error, DecodeError::NotMedia { .. }), "{error}");

    let audio = dir.path().join("tone.wav");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:duration=0.5",
        audio.to_str().unwrap(),
    ]);
    let error = open(&audio);
    assert!(
        matches!(&error, DecodeError::NoVideoStream { found, .. } if found == "audio"),
        "{error}"
    );

    // A codec FFmpeg does not know: an AVI whose fourcc is made up.
    let avi = dir.path().join("mjpeg.avi");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=64x48:rate=5",
        "-frames:v",
        "3",
        "-c:v",
        "mjpeg",
        avi.to_str().unwrap(),
    ]);
    let patched = std::fs::read(&avi).unwrap();
    let at = patched
        .windows(4)
        .position(|w| w == b"MJPG")
        .expect("the fourcc");
    let mut patched = patched.clone();
    for start in [at].into_iter().chain(
        patched[at + 4..]
            .windows(4)
            .position(|w| w == b"MJPG")
            .map(|p| p + at + 4),
    ) {
        patched[start..start + 4].copy_from_slice(b"QQQQ");
    }
    let unknown = dir.path().join("unknown.avi");
    std::fs::write(&unknown, patched).unwrap();
    let error = open(&unknown);
    assert!(
        matches!(&error, DecodeError::UnsupportedCodec { codec, .. } if codec.contains("QQQQ")),
        "{error}"
    );

    // A container whose every video packet is garbage: opens, decodes nothing.
    let good = dir.path().join("good.mp4");
    write_noisy_video(&good, 64, 48, 10, 25.0);
    let mut bytes = std::fs::read(&good).unwrap();
    scramble_mp4_samples(&mut bytes);
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, bytes).unwrap();
    let mut reader = VideoReader::open(file(&junk), ReadOptions::default()).unwrap();
    assert_eq!(reader.by_ref().count(), 0);
    let error = reader.finish().err().unwrap();
    assert!(
        matches!(error, DecodeError::NoDecodableFrames { packets: 1.., .. }),
        "{error}"
    );

    // And the same through probe.
    let error = probe(&file(&junk), true, &ReadOptions::default(), |_| {})
        .err()
        .unwrap();
    assert!(
        matches!(error, DecodeError::NoDecodableFrames { .. }),
        "{error}"
    );
}

#[test]
fn frame_folders_play_in_natural_order_and_skip_damaged_frames() {
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (40, 30);
    for i in 0..12u64 {
        let ext = if i % 2 == 0 { "png" } else { "jpg" };
        let path = dir.path().join(format!("frame_{}.{ext}", i + 1));
        image::write_image(&path, &solid_frame(w, h, index_colour(i)), w, h).unwrap();
    }
    // A damaged JPEG in the middle and files that are not frames.
    std::fs::write(dir.path().join("frame_6.jpg"), b"\xff\xd8garbage").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a frame").unwrap();
    std::fs::create_dir(dir.path().join("sub.png")).unwrap();

    let source = Source::parse(dir.path().to_str().unwrap(), 6.0).unwrap();
    let report = probe(&source, true, &ReadOptions::default(), |_| {}).unwrap();
    assert_eq!(report.stream.frames, Some(12));
    assert_eq!(report.frame_count, Some(11));
    assert_eq!(report.decode_errors, 1);
    assert_eq!((report.stream.width, report.stream.height), (w, h));

    let options = ReadOptions {
        resize: Resize::Exact {
            width: 20,
            height: 16,
        },
        ..ReadOptions::default()
    };
    let (frames, stats) = read_all(source, options);
    assert_eq!(stats.decode_errors, 1);
    let indices: Vec<u64> = frames.iter().map(|f| f.index).collect();
    assert_eq!(indices, [0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11]);
    for frame in &frames {
        assert_eq!((frame.width, frame.height), (20, 16));
        assert!((frame.pts - frame.index as f64 / 6.0).abs() < 1e-9);
        let tolerance = if frame.index % 2 == 0 { 2 } else { 8 };
        assert!(
            close(frame.pixel(10, 8), index_colour(frame.index), tolerance),
            "{frame:?}: {:?}",
            frame.pixel(10, 8)
        );
    }

    let empty = tempfile::tempdir().unwrap();
    let error = VideoReader::open(
        Source::FrameFolder {
            dir: empty.path().into(),
            fps: 5.0,
        },
        ReadOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(error, DecodeError::EmptyFolder(_)));
}

#[test]
fn probe_reports_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.mp4");
    write_quadrant_video(&path, 160, 90, 50, 25.0, Chroma::Yuv420);
    let report = probe(&file(&path), false, &ReadOptions::default(), |_| {}).unwrap();
    assert!(report.stream.container.contains("mp4"));
    assert_eq!(
        report.stream.codec,
        if has_h264_encoder() { "h264" } else { "mpeg4" }
    );
    assert_eq!((report.stream.width, report.stream.height), (160, 90));
    assert!((report.stream.fps.unwrap() - 25.0).abs() < 1e-6);
    assert!((report.stream.duration.unwrap() - 2.0).abs() < 0.05);
    assert_eq!(report.frame_count, Some(50));
    assert!(!report.frame_count_exact);
    let exact = probe(&file(&path), true, &ReadOptions::default(), |_| {}).unwrap();
    assert_eq!(exact.frame_count, Some(50));
    assert!(exact.frame_count_exact);
    assert_eq!(exact.decode_errors, 0);
}

#[test]
fn dropping_a_reader_midway_stops_it_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.mp4");
    write_indexed_video(&path, 64, 48, 100, 25.0);
    let options = ReadOptions {
        native_rate: true,
        ..ReadOptions::default()
    };
    let mut reader = VideoReader::open(file(&path), options).unwrap();
    assert!(matches!(reader.recv(), Some(Event::Frame(_))));
    let started = std::time::Instant::now();
    drop(reader);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn file_names_that_look_like_ffmpeg_protocols_are_just_files() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real.mp4");
    write_indexed_video(&real, 64, 48, 3, 25.0);
    // A file literally named like FFmpeg's concat protocol plays as itself.
    let tricky = dir
        .path()
        .join(format!("concat:{}|{}", real.display(), real.display()));
    std::fs::create_dir_all(tricky.parent().unwrap()).unwrap();
    std::fs::copy(&real, &tricky).unwrap();
    let (frames, _) = read_all(file(&tricky), ReadOptions::default());
    assert_eq!(frames.len(), 3, "the concat protocol would have given 6");
}
