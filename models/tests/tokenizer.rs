//! The tokenizer against transformers' slow CLIPTokenizer
//! (tests/fixtures/tokenizer_cases.json, made by fixtures_tokenizer.py).

use std::path::{Path, PathBuf};

use owltrack_models::tokenizer::{ClipTokenizer, Encoded, BOS, EOS, MAX_TOKENS, PAD};
use owltrack_models::ModelError;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn clip_bpe() -> PathBuf {
    fixtures().join("clip-bpe")
}

fn tokenizer() -> ClipTokenizer {
    ClipTokenizer::from_dir(&clip_bpe()).unwrap()
}

struct Case {
    text: String,
    ids: Vec<u32>,
    truncated: bool,
    fast_ids: Vec<u32>,
    known_difference: Option<String>,
}

fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|id| u32::try_from(id.as_u64().unwrap()).unwrap())
        .collect()
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(fixtures().join("tokenizer_cases.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|case| Case {
            text: case["text"].as_str().unwrap().to_owned(),
            ids: ids(&case["ids"]),
            truncated: case["truncated"].as_bool().unwrap(),
            fast_ids: ids(&case["fast_ids"]),
            known_difference: case
                .get("known_difference")
                .map(|reason| reason.as_str().unwrap().to_owned()),
        })
        .collect()
}

/// Cases whose reference depends on the generating Python's Unicode
/// database: Python 3.11 (Unicode 14) drops code points assigned later as
/// unassigned, while the Rust side's newer tables keep them.
const KNOWN_DIFFERENCES: &[&str] = &["a\u{1FAE8}b"];

#[test]
fn matches_transformers_slow_tokenizer() {
    let tokenizer = tokenizer();
    let cases = cases();
    assert!(cases.len() >= 60, "only {} cases", cases.len());
    let marked: Vec<&str> = cases
        .iter()
        .filter(|case| case.known_difference.is_some())
        .map(|case| case.text.as_str())
        .collect();
    assert!(
        marked.iter().all(|text| KNOWN_DIFFERENCES.contains(text)),
        "unexpected known_difference cases: {marked:?}"
    );

    let mut failures = Vec::new();
    for case in &cases {
        assert_eq!(case.ids.len(), MAX_TOKENS, "{:?}", case.text);
        let encoded = tokenizer.encode(&case.text).unwrap();
        let same = encoded.ids[..] == case.ids[..] && encoded.truncated == case.truncated;
        if same || case.known_difference.is_some() {
            continue;
        }
        failures.push(format!(
            "{:?}\n   want {:?} truncated={}\n    got {:?} truncated={}",
            case.text, case.ids, case.truncated, encoded.ids, encoded.truncated
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The unassigned-code-point cases still hold where both sides agree on
/// what is unassigned, and the newer emoji is kept, not dropped.
#[test]
fn code_points_unassigned_everywhere_are_dropped() {
    let tokenizer = tokenizer();
    let ab = tokenizer.encode("ab").unwrap();
    assert_eq!(tokenizer.encode("a\u{378}b").unwrap(), ab);
    assert_ne!(tokenizer.encode("a\u{1FAE8}b").unwrap(), ab);
}

#[test]
fn shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClipTokenizer>();
}

#[test]
fn batch_equals_single() {
    let tokenizer = tokenizer();
    let cases = cases();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batch = tokenizer.encode_batch(&texts).unwrap();
    assert_eq!(batch.len(), texts.len());
    for (text, encoded) in texts.iter().zip(&batch) {
        assert_eq!(*encoded, tokenizer.encode(text).unwrap(), "{text:?}");
    }
}

#[test]
fn framing() {
    let tokenizer = tokenizer();

    let empty = tokenizer.encode("").unwrap();
    let mut want = [PAD; MAX_TOKENS];
    want[0] = BOS;
    want[1] = EOS;
    assert_eq!(empty.ids, want);
    assert_eq!(empty.len, 2);
    assert!(!empty.truncated);
    assert_eq!(tokenizer.encode(" \t\n ").unwrap(), empty);

    // "!" has the pad id; the mask follows the length, not the ids.
    let bang = tokenizer.encode("hello!").unwrap();
    assert_eq!(bang.len, 4);
    assert_eq!(&bang.ids[..4], &[BOS, 3306, PAD, EOS]);
    let mut mask = [0; MAX_TOKENS];
    mask[..4].fill(1);
    assert_eq!(bang.attention_mask(), mask);
}

/// Counts `tracing` events at WARN or above.
struct WarnCounter(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn warnings_while(f: impl FnOnce()) -> usize {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tracing::subscriber::with_default(WarnCounter(count.clone()), f);
    count.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn truncation_keeps_eos_and_warns() {
    let tokenizer = tokenizer();

    let fourteen =
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen";
    let mut fits = None;
    assert_eq!(
        warnings_while(|| fits = Some(tokenizer.encode(fourteen).unwrap())),
        0
    );
    let fits: Encoded = fits.unwrap();
    assert!(!fits.truncated);
    assert_eq!(fits.len, MAX_TOKENS);
    assert_eq!(fits.ids[MAX_TOKENS - 1], EOS);

    let long = format!("{fourteen} fifteen sixteen");
    let mut cut = None;
    assert_eq!(
        warnings_while(|| cut = Some(tokenizer.encode(&long).unwrap())),
        1
    );
    let cut: Encoded = cut.unwrap();
    assert!(cut.truncated);
    assert_eq!(cut.len, MAX_TOKENS);
    assert_eq!(cut.ids[0], BOS);
    assert_eq!(cut.ids[MAX_TOKENS - 1], EOS);
    assert_eq!(cut.ids[..MAX_TOKENS - 1], fits.ids[..MAX_TOKENS - 1]);

    let digits = tokenizer.encode(&"7".repeat(40)).unwrap();
    assert!(digits.truncated);
    assert_eq!(digits.ids[MAX_TOKENS - 1], EOS);

    let short = ["a photo of a red car", "person with an umbrella", "", "dog"];
    let mut encoded = Vec::new();
    assert_eq!(
        warnings_while(|| encoded = tokenizer.encode_batch(&short).unwrap()),
        0
    );
    assert!(encoded.iter().all(|e| !e.truncated));
}

#[test]
fn empty_dir_names_the_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("vocab.json"), "{message}");
    assert!(message.contains("merges.txt"), "{message}");

    std::fs::copy(clip_bpe().join("vocab.json"), dir.path().join("vocab.json")).unwrap();
    let message = ClipTokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(message.contains("merges.txt"), "{message}");
    assert!(message.contains("missing: merges.txt)"), "{message}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let vocab = dir.path().join("vocab.json");
    let err = ClipTokenizer::from_vocab_merges(&vocab, &clip_bpe().join("merges.txt")).unwrap_err();
    assert!(
        matches!(&err, ModelError::Io { path, .. } if *path == vocab),
        "{err}"
    );
    assert!(err.to_string().contains("vocab.json"), "{err}");

    let json = dir.path().join("tokenizer.json");
    let err = ClipTokenizer::from_tokenizer_json(&json).unwrap_err();
    assert!(
        matches!(&err, ModelError::Io { path, .. } if *path == json),
        "{err}"
    );
}

fn with_files(vocab: &str, merges: &str) -> ModelError {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vocab.json"), vocab).unwrap();
    std::fs::write(dir.path().join("merges.txt"), merges).unwrap();
    ClipTokenizer::from_dir(dir.path()).unwrap_err()
}

#[test]
fn corrupt_files_are_errors() {
    let vocab = std::fs::read_to_string(clip_bpe().join("vocab.json")).unwrap();
    let merges = std::fs::read_to_string(clip_bpe().join("merges.txt")).unwrap();

    // A line that is not a pair.
    let mut lines: Vec<&str> = merges.lines().collect();
    lines[100] = "abc";
    let err = with_files(&vocab, &lines.join("\n"));
    assert!(matches!(err, ModelError::Tokenizer(_)), "{err}");
    assert!(err.to_string().contains("line"), "{err}");

    // A pair whose symbols are not in the vocabulary.
    lines[100] = "qqq zzz";
    let err = with_files(&vocab, &lines.join("\n"));
    assert!(matches!(err, ModelError::Tokenizer(_)), "{err}");

    // Binary garbage.
    let err = with_files(&vocab, "#version: 0.2\n\u{0}\u{1}\u{2} \u{3}\u{4}\n");
    assert!(matches!(err, ModelError::Tokenizer(_)), "{err}");

    // Empty merges.
    let err = with_files(&vocab, "");
    assert!(matches!(err, ModelError::Tokenizer(_)), "{err}");

    // Truncated JSON, JSON of the wrong shape, special tokens missing.
    let err = with_files(&vocab[..vocab.len() / 2], &merges);
    assert!(matches!(err, ModelError::Tokenizer(_)), "{err}");
    let err = with_files("[1, 2, 3]", &merges);
    assert!(matches!(err, ModelError::Tokenizer(_)), "{err}");
    let err = with_files(r#"{"a": 0, "b": 1}"#, "#version: 0.2\na b\n");
    assert!(err.to_string().contains("<|startoftext|>"), "{err}");

    // Not UTF-8.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vocab.json"), &vocab).unwrap();
    std::fs::write(dir.path().join("merges.txt"), [0xff, 0xfe, 0x00, 0x80]).unwrap();
    assert!(ClipTokenizer::from_dir(dir.path()).is_err());

    // A broken tokenizer.json wins over good BPE files and is reported.
    std::fs::write(dir.path().join("merges.txt"), &merges).unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    let err = ClipTokenizer::from_dir(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::Tokenizer(_)), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

/// A checkpoint's tokenizer.json is used with its own pipeline: here
/// CLIPTokenizerFast's, checked against its ids.
#[test]
fn tokenizer_json_pipeline_is_used_as_is() {
    let text = std::fs::read_to_string(fixtures().join("tokenizer_fast_pipeline.json")).unwrap();
    let mut pipeline: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vocab = std::fs::read_to_string(clip_bpe().join("vocab.json")).unwrap();
    pipeline["model"]["vocab"] = serde_json::from_str(&vocab).unwrap();
    let merges = std::fs::read_to_string(clip_bpe().join("merges.txt")).unwrap();
    pipeline["model"]["merges"] = merges
        .lines()
        .skip(1)
        .map(|line| line.split(' ').collect::<Vec<_>>().into())
        .collect::<Vec<serde_json::Value>>()
        .into();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), pipeline.to_string()).unwrap();
    // Present but unused: tokenizer.json takes precedence.
    std::fs::write(dir.path().join("vocab.json"), "not json").unwrap();
    let tokenizer = ClipTokenizer::from_dir(dir.path()).unwrap();
    assert!(format!("{tokenizer:?}").contains("tokenizer.json"));

    let cases = cases();
    let mut failures = Vec::new();
    let mut slow_differs = 0;
    for case in &cases {
        let encoded = tokenizer.encode(&case.text).unwrap();
        if encoded.ids[..] != case.fast_ids[..] {
            failures.push(format!(
                "{:?}\n   want {:?}\n    got {:?}",
                case.text, case.fast_ids, encoded.ids
            ));
        }
        slow_differs += usize::from(case.fast_ids != case.ids);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Otherwise the test could not tell the two pipelines apart.
    assert!(slow_differs > 0);
}
