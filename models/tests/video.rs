//! The recurrent video decoder: its outputs read as an image's, its slots
//! carry over from frame to frame, and a tiny decoder overfits a clip with
//! clip-consistent matching — one slot per track, kept through an
//! occlusion.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use owltrack_models::train::{detection_losses, ClipMatcher, Focal, FrameTruth, MatchWeights};
use owltrack_models::video::{DecoderConfig, VideoDecoder};

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
    let tokens = Tensor::randn(0f32, 1.0, (2, 36, 24), &device).unwrap();
    let first = decoder.initial_state(2).unwrap();
    let (outputs, second) = decoder.step(&tokens, &first).unwrap();
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
    let queries = Tensor::randn(0f32, 1.0, (3, 16), &device).unwrap();
    let logits = outputs.class_logits(&queries, None).unwrap();
    assert_eq!(logits.dims(), [2, 6, 3]);
    // Boxes stay in the unit square.
    let boxes: Vec<f32> = outputs.boxes.flatten_all().unwrap().to_vec1().unwrap();
    assert!(boxes.iter().all(|b| (0.0..=1.0).contains(b)));
    // Wrong widths are refused with a reason.
    let wrong = Tensor::zeros((2, 36, 25), DType::F32, &device).unwrap();
    assert!(decoder.step(&wrong, &second).is_err());
}

#[test]
fn a_tiny_decoder_overfits_a_clip_with_consistent_slots() {
    let device = Device::Cpu;
    let weights = VarMap::new();
    let decoder = VideoDecoder::new(
        config(),
        VarBuilder::from_varmap(&weights, DType::F32, &device),
    )
    .unwrap();
    // Four frames: track 1 moves right, track 2 moves down and is hidden on
    // frame 2. Image tokens are fixed random features per frame.
    let frames = 4;
    let tokens: Vec<Tensor> = (0..frames)
        .map(|_| Tensor::randn(0f32, 1.0, (1, 36, 24), &device).unwrap())
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
    let queries = Tensor::randn(0f32, 1.0, (2, 16), &device).unwrap();
    let mut optimiser = candle_nn::AdamW::new(
        weights.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let (weights_, focal) = (MatchWeights::default(), Focal::default());
    let mut first_loss = None;
    let mut last_loss = 0.0;
    let mut last_slots = Vec::new();
    for _ in 0..150 {
        let mut matcher = ClipMatcher::new(6, weights_, focal);
        let mut state = decoder.initial_state(1).unwrap();
        let mut total: Option<Tensor> = None;
        for (frame, truth) in tokens.iter().zip(&truths) {
            let (outputs, next) = decoder.step(frame, &state).unwrap();
            let logits = outputs.class_logits(&queries, None).unwrap();
            let host_logits: Vec<f32> = logits.detach().flatten_all().unwrap().to_vec1().unwrap();
            let host_boxes: Vec<[f32; 4]> = outputs
                .boxes
                .detach()
                .get(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap()
                .into_iter()
                .map(|b| [b[0], b[1], b[2], b[3]])
                .collect();
            let targets = matcher.assign(truth, &host_logits, 2, &host_boxes).unwrap();
            let matches: Vec<(usize, [f32; 4], usize)> = targets
                .iter()
                .enumerate()
                .filter_map(|(slot, t)| t.map(|j| (slot, truth.boxes[j], truth.labels[j])))
                .collect();
            let losses =
                detection_losses(&outputs, &logits, &[matches], weights_, focal, 1.0).unwrap();
            total = Some(match total {
                None => losses.total,
                Some(sum) => (sum + losses.total).unwrap(),
            });
            state = next;
        }
        let total = total.unwrap();
        let value = total.to_scalar::<f32>().unwrap();
        first_loss.get_or_insert(value);
        last_loss = value;
        last_slots = matcher.slot_tracks().to_vec();
        optimiser.backward_step(&total).unwrap();
    }
    let first_loss = first_loss.unwrap();
    assert!(
        last_loss < first_loss / 4.0,
        "the clip loss fell only from {first_loss} to {last_loss}"
    );
    // Two slots, one per track, held for the whole clip.
    let held: Vec<u64> = last_slots.iter().flatten().copied().collect();
    assert_eq!(held.len(), 2, "{last_slots:?}");
    assert!(held.contains(&1) && held.contains(&2));
}
