//! Preprocessing against transformers' own image processors.
//!
//! `fixtures/preprocess_cases.safetensors` comes from
//! `fixtures/fixtures_preprocess.py`: seeded RGB8 images and the
//! `pixel_values` OwlViTImageProcessor / Owlv2ImageProcessor made of them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use owltrack_models::preprocess::{box_scale, OwlVersion, Preprocessor, OWLV2_PAD_VALUE};
use owltrack_models::ModelError;

fn fixtures() -> HashMap<String, Tensor> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess_cases.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu).expect("preprocess fixture")
}

/// `(case, size, expected)` for every `<case>.<kind>.<size>` tensor.
fn cases<'a>(t: &'a HashMap<String, Tensor>, kind: &str) -> Vec<(String, usize, &'a Tensor)> {
    let mut out: Vec<_> = t
        .iter()
        .filter_map(|(key, v)| {
            let mut parts = key.split('.');
            let (case, k, s) = (parts.next()?, parts.next()?, parts.next()?);
            if k != kind || parts.next().is_some() {
                return None;
            }
            Some((case.to_string(), s.parse().ok()?, v))
        })
        .collect();
    out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    out
}

fn input(t: &HashMap<String, Tensor>, case: &str) -> (Vec<u8>, u32, u32) {
    let img = &t[&format!("{case}.input")];
    assert_eq!(img.dtype(), DType::U8);
    let (h, w, c) = img.dims3().unwrap();
    assert_eq!(c, 3);
    (
        img.flatten_all().unwrap().to_vec1::<u8>().unwrap(),
        w as u32,
        h as u32,
    )
}

/// Runs every case of `kind`, prints its max abs difference, returns the
/// worst one.
fn compare(kind: &str, version: OwlVersion, pad: f32) -> f32 {
    let t = fixtures();
    let all = cases(&t, kind);
    assert!(all.len() >= 6, "{kind}: only {} cases", all.len());
    let mut worst = 0f32;
    for (case, size, expected) in all {
        let (rgb, w, h) = input(&t, &case);
        let pre = Preprocessor::new(version, size)
            .unwrap()
            .with_pad_value(pad);
        let got = pre.pixels(&rgb, w, h).unwrap();
        assert_eq!(expected.dims(), &[3, size, size]);
        let want = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        let mut max = 0f32;
        let mut differing = 0;
        for (a, b) in got.iter().zip(&want) {
            let d = (a - b).abs();
            if a.to_bits() != b.to_bits() {
                differing += 1;
            }
            max = max.max(d);
        }
        eprintln!("{kind} {case} {w}x{h} -> {size}: max |diff| {max:e}, {differing}/{} values not bit-equal", want.len());
        worst = worst.max(max);
    }
    eprintln!("{kind}: worst max |diff| {worst:e}");
    worst
}

#[test]
fn owlvit_matches_transformers() {
    let worst = compare("v1", OwlVersion::V1, OWLV2_PAD_VALUE);
    assert!(worst <= 1e-5, "v1 max |diff| {worst}");
}

#[test]
fn owlv2_matches_transformers() {
    let worst = compare("v2", OwlVersion::V2, OWLV2_PAD_VALUE);
    assert!(worst <= 1e-5, "v2 max |diff| {worst}");
}

#[test]
fn owlv2_zero_padding_matches_transformers() {
    let worst = compare("v2pad0", OwlVersion::V2, 0.0);
    assert!(worst <= 1e-5, "v2 (pad 0) max |diff| {worst}");
}

#[test]
fn cached_weights_follow_the_frame_size() {
    let t = fixtures();
    let pre = Preprocessor::new(OwlVersion::V2, 32).unwrap();
    let a = input(&t, "grad_61x37");
    let b = input(&t, "noise_37x61");
    let first = pre.pixels(&a.0, a.1, a.2).unwrap();
    let other = pre.pixels(&b.0, b.1, b.2).unwrap();
    let again = pre.pixels(&a.0, a.1, a.2).unwrap();
    assert_eq!(first, again);
    assert_ne!(first, other);
    let fresh = Preprocessor::new(OwlVersion::V2, 32).unwrap();
    assert_eq!(fresh.pixels(&b.0, b.1, b.2).unwrap(), other);
}

#[test]
fn tensor_shape_and_values() {
    let t = fixtures();
    let (rgb, w, h) = input(&t, "mixed_130x50");
    for version in [OwlVersion::V1, OwlVersion::V2] {
        let pre = Preprocessor::new(version, 48).unwrap();
        let x = pre.tensor(&rgb, w, h, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), &[1, 3, 48, 48]);
        assert_eq!(x.dtype(), DType::F32);
        let flat = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat, pre.pixels(&rgb, w, h).unwrap());
    }
}

#[test]
fn box_scales() {
    assert_eq!(
        box_scale(OwlVersion::V1, 1920, 1080),
        [1920.0, 1080.0, 1920.0, 1080.0]
    );
    assert_eq!(box_scale(OwlVersion::V2, 1920, 1080), [1920.0; 4]);
    assert_eq!(box_scale(OwlVersion::V2, 480, 640), [640.0; 4]);
    assert_eq!(
        box_scale(OwlVersion::V1, 480, 640),
        [480.0, 640.0, 480.0, 640.0]
    );
    assert_eq!(box_scale(OwlVersion::V2, 7, 7), [7.0; 4]);
}

#[test]
fn rejects_bad_input() {
    assert!(matches!(
        Preprocessor::new(OwlVersion::V1, 0),
        Err(ModelError::InvalidInput(_))
    ));
    for version in [OwlVersion::V1, OwlVersion::V2] {
        let pre = Preprocessor::new(version, 16).unwrap();
        let img = vec![0u8; 4 * 5 * 3];
        assert!(pre.pixels(&img, 4, 5).is_ok());
        for (len, w, h) in [
            (0, 0, 0),
            (0, 0, 5),
            (0, 4, 0),
            (3, 0, 1),
            (4 * 5 * 3 - 1, 4, 5),
            (4 * 5 * 3 + 3, 4, 5),
            (4 * 5 * 4, 4, 5),
        ] {
            let r = pre.pixels(&vec![7u8; len], w, h);
            assert!(
                matches!(r, Err(ModelError::Image(_))),
                "{version:?} {len} bytes as {w}x{h}: {r:?}"
            );
        }
        assert!(pre.pixels(&[], u32::MAX, u32::MAX).is_err());
        assert!(pre.tensor(&img, 5, 5, &Device::Cpu).is_err());
    }
    let nan = Preprocessor::new(OwlVersion::V2, 16)
        .unwrap()
        .with_pad_value(f32::NAN);
    assert!(matches!(
        nan.pixels(&[0u8; 4 * 5 * 3], 4, 5),
        Err(ModelError::InvalidInput(_))
    ));
}

#[test]
fn tiny_and_extreme_shapes() {
    // Single pixels and lines: every code path must stay in bounds.
    for version in [OwlVersion::V1, OwlVersion::V2] {
        for size in [1, 2, 7, 32] {
            let pre = Preprocessor::new(version, size).unwrap();
            for (w, h) in [(1, 1), (1, 9), (9, 1), (2, 2), (300, 2), (2, 300)] {
                let img: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 256) as u8).collect();
                let px = pre.pixels(&img, w as u32, h as u32).unwrap();
                assert_eq!(px.len(), 3 * size * size);
                assert!(
                    px.iter().all(|v| v.is_finite()),
                    "{version:?} {w}x{h} -> {size}"
                );
            }
        }
    }
}

/// A uniform image comes out uniform: (v/255 - mean) / std per channel (for
/// OWLv2 only when nothing is padded).
#[test]
fn uniform_images() {
    let img = vec![200u8; 64 * 64 * 3];
    for version in [OwlVersion::V1, OwlVersion::V2] {
        for size in [16, 64, 100] {
            let px = Preprocessor::new(version, size)
                .unwrap()
                .pixels(&img, 64, 64)
                .unwrap();
            let mean = [0.48145466f64, 0.4578275, 0.40821073];
            let std = [0.26862954f64, 0.26130258, 0.27577711];
            for c in 0..3 {
                let want = ((200.0 / 255.0 - mean[c]) / std[c]) as f32;
                for &v in &px[c * size * size..(c + 1) * size * size] {
                    assert!((v - want).abs() < 1e-6, "{version:?} {size}: {v} vs {want}");
                }
            }
        }
    }
}

/// Per-frame cost at video sizes; run with `--ignored --nocapture` in release.
#[test]
#[ignore]
fn timing_1080p() {
    let (w, h) = (1920usize, 1080usize);
    let img: Vec<u8> = (0..w * h * 3)
        .map(|i| ((i * 2654435761usize) >> 13) as u8)
        .collect();
    for (version, size) in [(OwlVersion::V1, 768), (OwlVersion::V2, 960)] {
        let pre = Preprocessor::new(version, size).unwrap();
        pre.pixels(&img, w as u32, h as u32).unwrap();
        // The fastest of several runs: other work on the machine only adds.
        let mut ms = f64::INFINITY;
        for _ in 0..15 {
            let start = Instant::now();
            std::hint::black_box(pre.pixels(&img, w as u32, h as u32).unwrap());
            ms = ms.min(start.elapsed().as_secs_f64() * 1e3);
        }
        eprintln!("{version:?} {w}x{h} -> {size}: {ms:.1} ms per frame");
    }
}
