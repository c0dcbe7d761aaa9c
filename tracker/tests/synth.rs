//! The synthetic world: deterministic, and its ground truth matches its pixels.

use std::collections::{BTreeMap, HashSet};

use owltrack_tracker::synth::{
    categories, write_dataset, Challenge, Outputs, SynthConfig, VideoWorld,
};
use owltrack_tracker::tao::TaoDataset;

fn small(seed: u64, frames: u32) -> SynthConfig {
    SynthConfig {
        width: 320,
        height: 180,
        frames,
        fps: 25.0,
        seed,
        ..SynthConfig::default()
    }
}

#[test]
fn same_seed_same_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let outputs = Outputs {
        video: true,
        frames: true,
    };
    let summary = write_dataset(a.path(), 2, &small(11, 20), outputs, || {}).unwrap();
    write_dataset(b.path(), 2, &small(11, 20), outputs, || {}).unwrap();
    write_dataset(c.path(), 2, &small(12, 20), outputs, || {}).unwrap();
    assert_eq!(summary.videos, 2);
    assert_eq!(summary.frames, 40);
    let read = |dir: &std::path::Path, file: &str| std::fs::read(dir.join(file)).unwrap();
    assert_eq!(
        read(a.path(), "annotations.json"),
        read(b.path(), "annotations.json")
    );
    assert_ne!(
        read(a.path(), "annotations.json"),
        read(c.path(), "annotations.json")
    );
    let name = "synth_s11_0001";
    assert_eq!(
        read(a.path(), &format!("videos/{name}.mp4")),
        read(b.path(), &format!("videos/{name}.mp4"))
    );
    assert_eq!(
        read(a.path(), &format!("frames/{name}/000013.jpg")),
        read(b.path(), &format!("frames/{name}/000013.jpg"))
    );
    // The frames and the video hold the same pictures.
    let probe = owltrack_decoder::probe(
        &owltrack_decoder::Source::File {
            path: a.path().join(format!("videos/{name}.mp4")),
        },
        true,
        &Default::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(probe.frame_count, Some(20));
    let dataset = TaoDataset::read(&a.path().join("annotations.json")).unwrap();
    assert_eq!(dataset.categories, categories());
    assert_eq!(dataset.images.len(), 40);
    assert!(dataset
        .images
        .iter()
        .all(|i| a.path().join(&i.file_name).is_file()));
    // Rendering a frame twice, or out of order, gives the same pixels.
    let world = VideoWorld::new(&small(11, 20), 1).unwrap();
    assert_eq!(world.render(13), world.render(13));
}

#[test]
fn ground_truth_boxes_fit_the_rendered_pixels() {
    let config = small(3, 60);
    let (w, h) = (config.width as usize, config.height as usize);
    let mut checked = 0;
    for video in 0..4 {
        let world = VideoWorld::new(&config, video).unwrap();
        let background = world.background();
        for frame in (0..60).step_by(7) {
            let (rgb, truths) = world.render(frame);
            // How far each pixel is from the empty scene: objects, and noise.
            let change = |x: usize, y: usize| {
                let at = (y * w + x) * 3;
                (0..3)
                    .map(|c| (i32::from(rgb[at + c]) - i32::from(background[at + c])).abs())
                    .max()
                    .unwrap_or(0)
            };
            for truth in &truths {
                let [x, y, bw, bh] = truth.bbox.map(|v| v as usize);
                let margin = 3;
                let alone = truths.iter().filter(|o| o.track != truth.track).all(|o| {
                    let [ox, oy, ow, oh] = o.bbox.map(|v| v as usize);
                    ox > x + bw + 2 * margin
                        || x > ox + ow + 2 * margin
                        || oy > y + bh + 2 * margin
                        || y > oy + oh + 2 * margin
                });
                let inside_frame =
                    x >= margin && y >= margin && x + bw + margin <= w && y + bh + margin <= h;
                if truth.visibility < 0.99 || !alone || !inside_frame {
                    continue;
                }
                let region = || {
                    (y - margin..y + bh + margin)
                        .flat_map(|py| (x - margin..x + bw + margin).map(move |px| (px, py)))
                };
                let contrast = region().map(|(px, py)| change(px, py)).max().unwrap_or(0);
                if contrast < 40 {
                    continue; // paint too close to the background here to see by colour
                }
                // Pixels at least half covered changed by at least half the
                // contrast; those a quarter covered or less, by a quarter. The
                // background's texture moves that line by a pixel or two.
                let threshold = contrast * 3 / 8;
                let mask: Vec<(usize, usize)> = region()
                    .filter(|&(px, py)| change(px, py) > threshold)
                    .collect();
                let x0 = mask.iter().map(|p| p.0).min().unwrap();
                let x1 = mask.iter().map(|p| p.0).max().unwrap();
                let y0 = mask.iter().map(|p| p.1).min().unwrap();
                let y1 = mask.iter().map(|p| p.1).max().unwrap();
                let seen = [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
                let diff = seen
                    .iter()
                    .zip([x, y, bw, bh])
                    .map(|(a, b)| a.abs_diff(b))
                    .max()
                    .unwrap();
                assert!(
                    diff <= 2,
                    "colour mask box {seen:?} vs ground truth {truth:?}"
                );
                let claimed = truth.visible_pixels as f64;
                assert!(
                    (mask.len() as f64 - claimed).abs() <= 0.25 * claimed + 4.0,
                    "{} pixels vs {truth:?}",
                    mask.len()
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} isolated objects checked");
}

#[test]
fn the_world_has_what_trackers_must_face() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig {
        frames: 90,
        ..small(5, 90)
    };
    write_dataset(
        dir.path(),
        10,
        &config,
        Outputs {
            video: false,
            frames: false,
        },
        || {},
    )
    .unwrap();
    let dataset = TaoDataset::read(&dir.path().join("annotations.json")).unwrap();
    let (frame_of, frames_of_track) = track_frames(&dataset);
    // Full occlusion: a track that vanishes for several frames and comes back.
    let occluded = frames_of_track
        .values()
        .filter(|f| f.windows(2).any(|p| p[1] - p[0] >= 4))
        .count();
    assert!(occluded >= 3, "{occluded} tracks with a gap");
    // Entering: tracks that start after the first frame at the border.
    let (w, h) = (f64::from(config.width), f64::from(config.height));
    let entering = dataset
        .annotations
        .iter()
        .filter(|a| {
            let first = frames_of_track[&a.track_id][0];
            frame_of[&a.image_id] == first && first > 0
        })
        .filter(|a| {
            a.bbox[0] <= 0.0
                || a.bbox[1] <= 0.0
                || a.bbox[0] + a.bbox[2] >= w
                || a.bbox[1] + a.bbox[3] >= h
        })
        .count();
    assert!(entering >= 3, "{entering} tracks enter through a border");
    // Leaving: tracks that end before the last frame.
    let leaving = frames_of_track
        .values()
        .filter(|f| *f.last().unwrap() < 80)
        .count();
    assert!(leaving >= 3, "{leaving} tracks leave");
    // Look-alikes side by side: two objects of one category in one frame.
    let mut twins = 0;
    let mut per_image: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for a in &dataset.annotations {
        per_image.entry(a.image_id).or_default().push(a.category_id);
    }
    for cats in per_image.values() {
        let unique: HashSet<&u64> = cats.iter().collect();
        twins += usize::from(unique.len() < cats.len());
    }
    assert!(twins >= 20, "{twins} frames with two objects of one kind");
    // The whole vocabulary shows up.
    let colours: HashSet<u64> = dataset
        .annotations
        .iter()
        .map(|a| (a.category_id - 1) / 4)
        .collect();
    let shapes: HashSet<u64> = dataset
        .annotations
        .iter()
        .map(|a| (a.category_id - 1) % 4)
        .collect();
    assert_eq!((colours.len(), shapes.len()), (6, 4));
    // Varied sizes.
    let areas: Vec<f64> = dataset
        .annotations
        .iter()
        .filter(|a| a.visibility == Some(1.0))
        .map(|a| a.area)
        .collect();
    let (min, max) = areas
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &a| (lo.min(a), hi.max(a)));
    assert!(max > 6.0 * min, "areas {min}..{max}");
}

/// Each image's frame index, and each track's frame indices in order.
fn track_frames(dataset: &TaoDataset) -> (BTreeMap<u64, u64>, BTreeMap<u64, Vec<u64>>) {
    let frame_of: BTreeMap<u64, u64> = dataset
        .images
        .iter()
        .map(|i| (i.id, i.frame_index))
        .collect();
    let mut frames_of_track: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for a in &dataset.annotations {
        frames_of_track
            .entry(a.track_id)
            .or_default()
            .push(frame_of[&a.image_id]);
    }
    (frame_of, frames_of_track)
}

/// Per video: tracks with a gap of 4+ frames, and pairs of one category
/// whose boxes overlap by IoU ≥ 0.3 in some frame.
fn gaps_and_overlapping_lookalikes(config: &SynthConfig, videos: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let outputs = Outputs {
        video: false,
        frames: false,
    };
    write_dataset(dir.path(), videos, config, outputs, || {}).unwrap();
    let dataset = TaoDataset::read(&dir.path().join("annotations.json")).unwrap();
    let (_, frames_of_track) = track_frames(&dataset);
    let mut per_image: BTreeMap<u64, Vec<(u64, u64, [f64; 4])>> = BTreeMap::new();
    for a in &dataset.annotations {
        per_image
            .entry(a.image_id)
            .or_default()
            .push((a.track_id, a.category_id, a.bbox));
    }
    let gaps = frames_of_track
        .values()
        .filter(|f| f.windows(2).any(|p| p[1] - p[0] >= 4))
        .count();
    let iou = |a: [f64; 4], b: [f64; 4]| {
        let w = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
        let h = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
        let inter = w.max(0.0) * h.max(0.0);
        inter / (a[2] * a[3] + b[2] * b[3] - inter)
    };
    let mut pairs = HashSet::new();
    for boxes in per_image.values() {
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                if a.1 == b.1 && iou(a.2, b.2) >= 0.3 {
                    pairs.insert((a.0.min(b.0), a.0.max(b.0)));
                }
            }
        }
    }
    (gaps, pairs.len())
}

#[test]
fn a_harder_world_has_more_occlusions_and_crossing_lookalikes() {
    let videos = 6;
    let usual = small(21, 80);
    let hard = SynthConfig {
        challenge: Challenge {
            occlusions: Some(3),
            twin_chance: 0.35,
            crossings: 2,
        },
        ..usual
    };
    let (usual_gaps, usual_pairs) = gaps_and_overlapping_lookalikes(&usual, videos);
    let (hard_gaps, hard_pairs) = gaps_and_overlapping_lookalikes(&hard, videos);
    // Occluders sometimes leave the frame before they cover, and crossing
    // look-alikes may cross outside it: most events, not all, show.
    assert!(
        hard_gaps >= 2 * videos && hard_gaps > 2 * usual_gaps,
        "gaps: usual {usual_gaps}, hard {hard_gaps}"
    );
    assert!(
        hard_pairs >= videos + usual_pairs,
        "overlapping look-alikes: usual {usual_pairs}, hard {hard_pairs}"
    );
}

#[test]
fn bad_sizes_are_refused() {
    let config = SynthConfig {
        width: 10,
        ..small(1, 5)
    };
    assert!(VideoWorld::new(&config, 0).is_err());
    let config = SynthConfig {
        frames: 0,
        ..small(1, 5)
    };
    assert!(VideoWorld::new(&config, 0).is_err());
    let config = SynthConfig {
        challenge: Challenge {
            twin_chance: 1.5,
            ..Challenge::default()
        },
        ..small(1, 5)
    };
    assert!(VideoWorld::new(&config, 0).is_err());
}
