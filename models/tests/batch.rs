//! Frames detected together in one backbone pass give what each gives
//! alone, each with its own queries and post-processing.

use std::path::Path;

use owltrack_models::{
    random_model, BatchItem, ClipTokenizer, DType, Detector, Device, OwlConfig, PostProcess, Query,
};

#[test]
fn a_batch_equals_its_frames_one_by_one() {
    let config = OwlConfig::tiny();
    let model = random_model(&config, &Device::Cpu, DType::F32).unwrap();
    let vocabulary = Path::new(env!("CARGO_MANIFEST_DIR")).join("builtin/clip-bpe");
    let tokenizer = ClipTokenizer::from_dir(&vocabulary).unwrap();
    let mut detector = Detector::from_model(model, tokenizer).unwrap();
    let first_queries = detector
        .embed_queries(&[Query::Text("a red circle".into())])
        .unwrap();
    let second_queries = detector
        .embed_queries(&[Query::Text("a cat".into()), Query::Text("a dog".into())])
        .unwrap();
    let (w, h) = (96u32, 64u32);
    let frame = |seed: u32| -> Vec<u8> {
        (0..w * h * 3)
            .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) >> 7) as u8)
            .collect()
    };
    let (a, b) = (frame(1), frame(99));
    let loose = PostProcess {
        threshold: 0.0,
        ..PostProcess::default()
    };
    let strict = PostProcess::default();
    let items = [
        BatchItem {
            rgb: &a,
            width: w,
            height: h,
            queries: &first_queries,
            post: &loose,
        },
        BatchItem {
            rgb: &b,
            width: w,
            height: h,
            queries: &second_queries,
            post: &strict,
        },
    ];
    let together = detector.detect_batch(&items).unwrap();
    assert_eq!(together.len(), 2);
    for (item, batched) in items.iter().zip(&together) {
        let alone = detector
            .detect(item.rgb, item.width, item.height, item.queries, item.post)
            .unwrap();
        let (x, y): (Vec<f32>, Vec<f32>) = (
            alone.logits.flatten_all().unwrap().to_vec1().unwrap(),
            batched.logits.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(x.len(), y.len());
        let worst = x
            .iter()
            .zip(&y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "logits differ by {worst}");
        assert_eq!(alone.detections.len(), batched.detections.len());
        for (p, q) in alone.detections.iter().zip(&batched.detections) {
            assert_eq!((p.label, p.patch), (q.label, q.patch));
            assert!((p.score - q.score).abs() < 1e-4);
        }
    }
    assert!(
        !together[0].detections.is_empty(),
        "threshold 0 keeps detections"
    );
}
