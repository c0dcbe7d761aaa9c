//! The recurrent video decoder: its outputs read as an image's, its slots
//! carry over from frame to frame, and a tiny decoder overfits a clip with
//! clip-consistent matching — one slot per track, kept through an
//! occlusion.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use owltrack_models::rng::Pcg;
use owltrack_models::train::{
    Clip, ClipMatcher, DecoderTrainer, Focal, FrameTruth, MatchWeights, TrainOptions,
};
use owltrack_models::video::{BoxEncoding, DecoderConfig, Positions, Reseed, VideoDecoder};
use owltrack_models::ImageOutputs;

fn config() -> DecoderConfig {
    DecoderConfig {
        layers: 2,
        width: 32,
        heads: 4,
        queries: 6,
        mlp_ratio: 2,
        image_width: 24,
        embed_dim: 16,
        layer_norm_eps: 1e-5,
        seed_from_patches: true,
        positions: Positions::PatchBoxes,
        reseed: None,
        box_encoding: BoxEncoding::Linear,
        persistent_queries: false,
        anchor_iou: None,
    }
}

/// Standard normal values from the project's seeded generator: the same on
/// every run, where candle's CPU generator cannot be seeded.
fn normal(shape: &[usize], seed: u64) -> Tensor {
    let mut rng = Pcg::new(seed, 0);
    let count = shape.iter().product();
    let values: Vec<f32> = (0..count).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// A frame's backbone outputs as the decoder reads them: tokens (B, N, D)
/// with patch boxes and objectness (the class head's outputs are unused).
fn frame_outputs(tokens: Tensor, seed: u64) -> ImageOutputs {
    let (batch, patches, _) = tokens.dims3().unwrap();
    let device = tokens.device().clone();
    ImageOutputs {
        boxes: candle_nn::ops::sigmoid(&normal(&[batch, patches, 4], seed)).unwrap(),
        class_embeds: normal(&[batch, patches, 16], seed + 1),
        logit_shift: Tensor::zeros((batch, patches, 1), DType::F32, &device).unwrap(),
        logit_scale: Tensor::ones((batch, patches, 1), DType::F32, &device).unwrap(),
        objectness: Some(normal(&[batch, patches], seed + 2)),
        grid: (6, 6),
        tokens,
    }
}

#[test]
fn outputs_have_an_images_shape_and_slots_recur() {
    let device = Device::Cpu;
    let weights = VarMap::new();
    let decoder = VideoDecoder::new(
        config(),
        VarBuilder::from_varmap(&weights, DType::F32, &device),
    )
    .unwrap();
    let image = frame_outputs(normal(&[2, 36, 24], 10), 20);
    let first = decoder.initial_state(&image).unwrap();
    // Seeded from the six most object-like patches: their boxes.
    let objectness = image
        .objectness
        .as_ref()
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let best = (0..36)
        .max_by(|&i, &j| objectness[i].total_cmp(&objectness[j]))
        .unwrap();
    let seeded = candle_nn::ops::sigmoid(&first.box_logits)
        .unwrap()
        .get(0)
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let patch = image
        .boxes
        .get(0)
        .unwrap()
        .get(best)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (a, b) in seeded.iter().zip(&patch) {
        assert!((a - b).abs() < 1e-4, "{seeded:?} vs {patch:?}");
    }
    let (outputs, second) = decoder.step(&image, &first).unwrap();
    assert_eq!(outputs.boxes.dims(), [2, 6, 4]);
    assert_eq!(outputs.class_embeds.dims(), [2, 6, 16]);
    assert_eq!(outputs.logit_shift.dims(), [2, 6, 1]);
    assert_eq!(outputs.objectness.as_ref().unwrap().dims(), [2, 6]);
    assert_eq!(second.tokens.dims(), [2, 6, 32]);
    // The next frame's queries are this frame's output tokens.
    let diff = (&second.tokens - &outputs.tokens)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);
    let queries = normal(&[3, 16], 30);
    let logits = outputs.class_logits(&queries, None).unwrap();
    assert_eq!(logits.dims(), [2, 6, 3]);
    // Boxes stay in the unit square.
    let boxes: Vec<f32> = outputs.boxes.flatten_all().unwrap().to_vec1().unwrap();
    assert!(boxes.iter().all(|b| (0.0..=1.0).contains(b)));
    // Unseeded, with grid positions: learned first slots, same shapes.
    let plain = VideoDecoder::new(
        DecoderConfig {
            seed_from_patches: false,
            positions: Positions::Grid,
            ..config()
        },
        VarBuilder::from_varmap(&VarMap::new(), DType::F32, &device),
    )
    .unwrap();
    let start = plain.initial_state(&image).unwrap();
    let (plain_outputs, _) = plain.step(&image, &start).unwrap();
    assert_eq!(plain_outputs.boxes.dims(), [2, 6, 4]);
    let learned = start.box_logits.get(0).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(
        learned,
        start.box_logits.get(1).unwrap().to_vec2::<f32>().unwrap()
    );
    // Sine box embeddings: same shapes.
    let sine = VideoDecoder::new(
        DecoderConfig {
            box_encoding: BoxEncoding::Sine,
            ..config()
        },
        VarBuilder::from_varmap(&VarMap::new(), DType::F32, &device),
    )
    .unwrap();
    let start = sine.initial_state(&image).unwrap();
    let (sine_outputs, _) = sine.step(&image, &start).unwrap();
    assert_eq!(sine_outputs.boxes.dims(), [2, 6, 4]);
    // Persistent queries: the state starts empty beside the seeds, which
    // are carried unchanged to every later frame.
    let persistent = VideoDecoder::new(
        DecoderConfig {
            persistent_queries: true,
            ..config()
        },
        VarBuilder::from_varmap(&VarMap::new(), DType::F32, &device),
    )
    .unwrap();
    let start = persistent.initial_state(&image).unwrap();
    let anchors = start
        .anchors
        .clone()
        .expect("persistent queries have anchors");
    assert_eq!(anchors.dims(), [2, 6, 32]);
    let sum = |t: &Tensor| {
        t.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(sum(&start.tokens), 0.0);
    let (_, next) = persistent.step(&image, &start).unwrap();
    assert_eq!(sum(&(next.anchors.unwrap() - &anchors).unwrap()), 0.0);
    assert!(sum(&next.tokens) > 0.0);
    assert!(second.anchors.is_none());
    // Wrong widths are refused with a reason.
    let wrong = frame_outputs(Tensor::zeros((2, 36, 25), DType::F32, &device).unwrap(), 50);
    assert!(decoder.step(&wrong, &second).is_err());
}

/// Four frames: track 1 moves right, track 2 moves down and is hidden on
/// frame 2; image tokens are fixed random features per frame.
fn clip() -> Clip {
    let frames = 4;
    let tokens: Vec<ImageOutputs> = (0..frames)
        .map(|f: u64| frame_outputs(normal(&[1, 36, 24], 100 + f), 200 + 10 * f))
        .collect();
    let truths: Vec<FrameTruth> = (0..frames)
        .map(|f| {
            let x = 0.2 + 0.1 * f as f32;
            let y = 0.3 + 0.1 * f as f32;
            let mut truth = FrameTruth {
                tracks: vec![1],
                boxes: vec![[x, 0.5, 0.1, 0.1]],
                labels: vec![0],
            };
            if f != 2 {
                truth.tracks.push(2);
                truth.boxes.push([0.7, y, 0.15, 0.1]);
                truth.labels.push(1);
            }
            truth
        })
        .collect();
    Clip {
        frames: tokens,
        truths,
    }
}

fn options(steps: usize) -> TrainOptions {
    TrainOptions {
        learning_rate: 1e-2,
        warmup_steps: 5,
        total_steps: steps,
        weight_decay: 0.0,
        ..TrainOptions::default()
    }
}

#[test]
fn a_tiny_decoder_overfits_a_clip_with_consistent_slots() {
    assert_eq!(overfits_with_consistent_slots(config()), 0);
}

/// Reseeding idle slots (after two idle frames) leaves a slot whose object
/// is hidden for one frame on it.
#[test]
fn a_reseeding_decoder_keeps_slots_through_a_short_occlusion() {
    let reseeded = overfits_with_consistent_slots(DecoderConfig {
        reseed: Some(Reseed {
            below: 0.1,
            after: 2,
        }),
        ..config()
    });
    // The four empty slots were idle from the first frame on.
    assert!(reseeded >= 4, "{reseeded} slots reseeded");
}

/// Slots that keep their starting queries beside their recurrent state.
#[test]
fn a_decoder_with_persistent_queries_overfits_with_consistent_slots() {
    assert_eq!(
        overfits_with_consistent_slots(DecoderConfig {
            persistent_queries: true,
            ..config()
        }),
        0
    );
}

/// Overfits the clip, checks that each track keeps one slot on the replay,
/// and returns how many times slots were reseeded there.
fn overfits_with_consistent_slots(config: DecoderConfig) -> usize {
    let device = Device::Cpu;
    let clip = clip();
    let queries = normal(&[2, 16], 40);
    let steps = 300;
    let mut trainer = DecoderTrainer::new(config, None, options(steps), &device).unwrap();
    let first = trainer.step(std::slice::from_ref(&clip), &queries).unwrap();
    let mut last = first;
    for _ in 1..steps {
        last = trainer.step(std::slice::from_ref(&clip), &queries).unwrap();
    }
    assert!(
        last.total < first.total / 4.0,
        "the clip loss fell only from {} to {}",
        first.total,
        last.total
    );
    // Replayed, the trained decoder keeps one slot per track for the whole
    // clip, and the slots sit on their tracks.
    let decoder = trainer.decoder();
    let mut matcher = ClipMatcher::new(6, MatchWeights::default(), Focal::default());
    let mut state = decoder.initial_state(&clip.frames[0]).unwrap();
    let mut slot_of: std::collections::HashMap<u64, usize> = Default::default();
    let mut errors = Vec::new();
    let mut reseeded = 0;
    for (frame, truth) in clip.frames.iter().zip(&clip.truths) {
        let (outputs, next) = decoder.step(frame, &state).unwrap();
        for (slot, _) in next.reseeded[0].iter().enumerate().filter(|(_, &r)| r) {
            matcher.release(slot);
            reseeded += 1;
        }
        let logits: Vec<f32> = outputs
            .class_logits(&queries, None)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let boxes: Vec<[f32; 4]> = outputs
            .boxes
            .get(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .into_iter()
            .map(|b| [b[0], b[1], b[2], b[3]])
            .collect();
        let targets = matcher.assign(truth, &logits, 2, &boxes).unwrap();
        for (slot, target) in targets.iter().enumerate() {
            let Some(j) = target else { continue };
            let track = truth.tracks[*j];
            assert_eq!(
                *slot_of.entry(track).or_insert(slot),
                slot,
                "track {track} changed slots"
            );
            let error: f32 = boxes[slot]
                .iter()
                .zip(&truth.boxes[*j])
                .map(|(a, b)| (a - b).abs())
                .sum();
            errors.push(error);
        }
        state = next;
    }
    assert_eq!(slot_of.len(), 2);
    // Seven visible boxes; their slots sit on them (the median L1 error of
    // the four coordinates is small).
    assert_eq!(errors.len(), 7);
    errors.sort_by(f32::total_cmp);
    assert!(errors[3] < 0.05, "box errors {errors:?}");
    reseeded
}

#[test]
fn a_resumed_run_takes_the_same_next_step() {
    let device = Device::Cpu;
    let clip = clip();
    let queries = normal(&[2, 16], 40);
    let dir = tempfile::tempdir().unwrap();
    let (weights, state) = (
        dir.path().join("decoder.safetensors"),
        dir.path().join("state.safetensors"),
    );
    let mut straight = DecoderTrainer::new(config(), None, options(10), &device).unwrap();
    for _ in 0..3 {
        straight
            .step(std::slice::from_ref(&clip), &queries)
            .unwrap();
    }
    straight.save_weights(&weights).unwrap();
    straight.save_state(&state).unwrap();
    let expected = straight
        .step(std::slice::from_ref(&clip), &queries)
        .unwrap();
    let mut resumed = DecoderTrainer::new(config(), None, options(10), &device).unwrap();
    resumed.resume(&weights, &state).unwrap();
    assert_eq!(resumed.step_count(), 3);
    let got = resumed.step(std::slice::from_ref(&clip), &queries).unwrap();
    assert_eq!(got, expected);
}

#[test]
fn training_refuses_anchoring_on_patches() {
    let anchored = DecoderConfig {
        anchor_iou: Some(0.3),
        ..config()
    };
    let refused = DecoderTrainer::new(anchored, None, options(10), &Device::Cpu);
    match refused {
        Err(e) => assert!(e.to_string().contains("tracking setting"), "{e}"),
        Ok(_) => panic!("a decoder anchored on patches was trained"),
    }
}
