//! CLIP's tokenizer, built from the hub's vocab.json and merges.txt.
//!
//! Reproduces transformers' slow `CLIPTokenizer` as it runs without ftfy,
//! which is how OWL-ViT queries are tokenized by the Python reference:
//!
//! 1. `<|startoftext|>`, `<|endoftext|>` and `!` split the raw text. OWL-ViT's
//!    tokenizer config makes `!` (id 0) its pad token, and every special
//!    token is cut out before anything else runs, so `"wow?!"` ends in a
//!    lone `!` rather than a `?!` symbol.
//! 2. Each remaining piece goes through BERT's `BasicTokenizer`
//!    (lowercase, no accent stripping, no punctuation split): control and
//!    format characters are dropped, whitespace becomes a space, CJK
//!    ideographs are spaced out, NFC, whitespace runs collapse, then
//!    Python's `str.lower()`.
//! 3. CLIP's regex splits words, contractions, single digits and
//!    punctuation runs; each is byte-level encoded and merged with BPE
//!    (`</w>` marks a word's end).
//!
//! A `tokenizer.json` (the fast tokenizer's pipeline) is honoured as-is when
//! a checkpoint ships one.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::{
    AddedToken, Model, NormalizedString, Normalizer, SplitDelimiterBehavior, Token, Tokenizer,
    TokenizerBuilder, TokenizerImpl,
};

use crate::{ModelError, Result};

/// `<|startoftext|>`.
pub const BOS: u32 = 49406;
/// `<|endoftext|>`.
pub const EOS: u32 = 49407;
/// `!`, OWL-ViT's pad token.
pub const PAD: u32 = 0;
/// OWL-ViT's text length (its position embedding table has 16 rows).
pub const MAX_TOKENS: usize = 16;

const BOS_TOKEN: &str = "<|startoftext|>";
const EOS_TOKEN: &str = "<|endoftext|>";
const PAD_TOKEN: &str = "!";

/// CLIP's vocabulary holds exactly this many merges (49152 symbols less 256
/// bytes and 2 specials); the original BPE table is longer, and merges past
/// this point build symbols that vocab.json lacks. transformers cuts there.
const MAX_MERGES: usize = 49152 - 256 - 2;

/// transformers compiles this with `re.IGNORECASE`; it matters after
/// lowercasing only through case folding, e.g. `'ſ` still counts as `'s`.
const CLIP_PATTERN: &str = r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// A query as the text tower takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// BOS, the text's tokens, EOS, then PAD up to [`MAX_TOKENS`].
    pub ids: [u32; MAX_TOKENS],
    /// How many leading ids are real tokens, BOS and EOS included.
    pub len: usize,
    /// The text had more than `MAX_TOKENS - 2` tokens and lost its tail.
    pub truncated: bool,
}

impl Encoded {
    /// 1 over the real tokens, 0 over padding. Derived from `len`, not from
    /// the ids: a `!` in the text has the pad id too.
    pub fn attention_mask(&self) -> [u32; MAX_TOKENS] {
        let mut mask = [0; MAX_TOKENS];
        mask[..self.len.min(MAX_TOKENS)].fill(1);
        mask
    }
}

type ClipPipeline = TokenizerImpl<
    ClipBpe,
    ClipNormalizer,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

enum Backend {
    Clip(Box<ClipPipeline>),
    Json(Box<Tokenizer>),
}

/// CLIP's BPE tokenizer with OWL-ViT's framing (BOS, EOS, pad to 16).
pub struct ClipTokenizer {
    backend: Backend,
}

impl fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.backend {
            Backend::Clip(_) => "vocab.json + merges.txt",
            Backend::Json(_) => "tokenizer.json",
        };
        f.debug_struct("ClipTokenizer")
            .field("source", &source)
            .finish()
    }
}

impl ClipTokenizer {
    /// Builds the slow-tokenizer pipeline from the hub's two BPE files.
    pub fn from_vocab_merges(vocab: &Path, merges: &Path) -> Result<Self> {
        let vocab_map = read_vocab(vocab)?;
        let merge_list = read_merges(merges)?;
        for (token, id) in [(BOS_TOKEN, BOS), (EOS_TOKEN, EOS), (PAD_TOKEN, PAD)] {
            check_special(vocab, token, vocab_map.get(token).copied(), id)?;
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab_map, merge_list)
            .end_of_word_suffix("</w>".to_owned())
            .unk_token(EOS_TOKEN.to_owned())
            .build()
            .map_err(|e| {
                ModelError::Tokenizer(format!(
                    "{} does not fit {}: {e}",
                    merges.display(),
                    vocab.display()
                ))
            })?;

        let split = Split::new(
            SplitPattern::Regex(CLIP_PATTERN.to_owned()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| ModelError::Tokenizer(format!("CLIP's split pattern: {e}")))?;
        let pre_tokenizer = Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, false, false).into(),
        ]);

        let mut pipeline: ClipPipeline = TokenizerBuilder::new()
            .with_model(ClipBpe { bpe })
            .with_normalizer(Some(ClipNormalizer::new()?))
            .with_pre_tokenizer(Some(pre_tokenizer.into()))
            .build()
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        // Special tokens match the raw text, before normalization, as in
        // transformers' added-tokens trie.
        pipeline
            .add_special_tokens(
                [BOS_TOKEN, EOS_TOKEN, PAD_TOKEN].map(|t| AddedToken::from(t, true)),
            )
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Self {
            backend: Backend::Clip(Box::new(pipeline)),
        })
    }

    /// Loads a fast-tokenizer file and uses its pipeline unchanged; only the
    /// framing (BOS, EOS, padding, truncation) is ours.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        let mut tokenizer = Tokenizer::from_bytes(bytes)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        // The file may carry its own padding or truncation; ours replaces them.
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        tokenizer.with_padding(None);
        for (token, id) in [(BOS_TOKEN, BOS), (EOS_TOKEN, EOS), (PAD_TOKEN, PAD)] {
            check_special(path, token, tokenizer.token_to_id(token), id)?;
        }
        Ok(Self {
            backend: Backend::Json(Box::new(tokenizer)),
        })
    }

    /// Picks tokenizer.json when present, else vocab.json + merges.txt.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            return Self::from_tokenizer_json(&json);
        }
        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        let missing: Vec<&str> = [(&vocab, "vocab.json"), (&merges, "merges.txt")]
            .into_iter()
            .filter(|(path, _)| !path.is_file())
            .map(|(_, name)| name)
            .collect();
        if !missing.is_empty() {
            return Err(ModelError::Tokenizer(format!(
                "{}: no tokenizer.json, and no complete vocab.json + merges.txt pair (missing: {})",
                dir.display(),
                missing.join(", ")
            )));
        }
        Self::from_vocab_merges(&vocab, &merges)
    }

    /// Exactly [`MAX_TOKENS`] ids: BOS, the text's tokens, EOS, then PAD.
    /// Text beyond `MAX_TOKENS - 2` tokens is cut (EOS kept) with a warning.
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let tokens = self.tokenize(text)?;
        let room = MAX_TOKENS - 2;
        let truncated = tokens.len() > room;
        if truncated {
            tracing::warn!(
                query = text,
                tokens = tokens.len(),
                kept = room,
                "text query is too long for the text encoder; its tail is dropped"
            );
        }
        let kept = &tokens[..tokens.len().min(room)];
        let mut ids = [PAD; MAX_TOKENS];
        ids[0] = BOS;
        ids[1..=kept.len()].copy_from_slice(kept);
        ids[kept.len() + 1] = EOS;
        Ok(Encoded {
            ids,
            len: kept.len() + 2,
            truncated,
        })
    }

    /// [`encode`](Self::encode) for each text, in order.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        texts.iter().map(|text| self.encode(text)).collect()
    }

    /// The text's token ids, without BOS, EOS, padding or truncation.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = match &self.backend {
            Backend::Clip(pipeline) => pipeline.encode_fast(text, false),
            Backend::Json(tokenizer) => tokenizer.encode_fast(text, false),
        }
        .map_err(|e| ModelError::Tokenizer(format!("cannot tokenize {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}

fn check_special(source: &Path, token: &str, found: Option<u32>, expected: u32) -> Result<()> {
    match found {
        Some(id) if id == expected => Ok(()),
        Some(id) => Err(ModelError::Tokenizer(format!(
            "{}: {token} has id {id}, but CLIP's text encoder expects {expected}",
            source.display()
        ))),
        None => Err(ModelError::Tokenizer(format!(
            "{}: no {token} token (CLIP's text encoder expects it at id {expected})",
            source.display()
        ))),
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))
}

fn read_vocab(path: &Path) -> Result<Vocab> {
    let text = read_text(path)?;
    let map: HashMap<String, u32> = serde_json::from_str(&text).map_err(|e| {
        ModelError::Tokenizer(format!(
            "{}: not a JSON object of token to id: {e}",
            path.display()
        ))
    })?;
    Ok(map.into_iter().collect())
}

fn read_merges(path: &Path) -> Result<Vec<(String, String)>> {
    let text = read_text(path)?;
    let mut lines = text.trim_end().lines().enumerate().peekable();
    if lines
        .peek()
        .is_some_and(|(_, line)| line.starts_with("#version"))
    {
        lines.next();
    }
    let mut merges = Vec::new();
    for (index, line) in lines.take(MAX_MERGES) {
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) => merges.push((a.to_owned(), b.to_owned())),
            _ => {
                return Err(ModelError::Tokenizer(format!(
                    "{} line {}: expected two symbols separated by a space, found {line:?}",
                    path.display(),
                    index + 1
                )))
            }
        }
    }
    if merges.is_empty() {
        return Err(ModelError::Tokenizer(format!(
            "{}: no merges",
            path.display()
        )));
    }
    Ok(merges)
}

/// BPE that, like transformers' cache seeded with the two specials, maps a
/// regex piece spelling `<|startoftext|>` or `<|endoftext|>` straight to its
/// id. That piece appears when the text writes a special token in another
/// case: lowercasing happens after the special-token split.
struct ClipBpe {
    bpe: BPE,
}

impl Model for ClipBpe {
    type Trainer = <BPE as Model>::Trainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        let special = match sequence {
            BOS_TOKEN => Some(BOS),
            EOS_TOKEN => Some(EOS),
            _ => None,
        };
        match special {
            Some(id) => Ok(vec![Token::new(
                id,
                sequence.to_owned(),
                (0, sequence.len()),
            )]),
            None => self.bpe.tokenize(sequence),
        }
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.bpe.token_to_id(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        self.bpe.id_to_token(id)
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        self.bpe.get_vocab()
    }

    fn get_vocab_size(&self) -> usize {
        self.bpe.get_vocab_size()
    }

    fn save(
        &self,
        folder: &Path,
        prefix: Option<&str>,
    ) -> tokenizers::Result<Vec<std::path::PathBuf>> {
        self.bpe.save(folder, prefix)
    }

    fn get_trainer(&self) -> Self::Trainer {
        self.bpe.get_trainer()
    }
}

/// BERT's `BasicTokenizer(do_lower_case=True, strip_accents=False,
/// do_split_on_punc=False)` followed by `" ".join`, step for step.
///
/// The tokenizers crate's `BertNormalizer` is close but not exact: its
/// control test misses unassigned code points, its CJK table skips
/// U+2B820..U+2B91F, and its lowercasing is per character, whereas
/// Python's `str.lower()` turns a word-final capital sigma into `ς`.
///
/// Category tests use the regex crate's Unicode tables. Those are newer
/// than Python 3.11's (Unicode 14), so a code point assigned since, such
/// as a recent emoji, is kept here where Python 3.11 drops it as unassigned.
struct ClipNormalizer {
    /// NUL, U+FFFD and Unicode category C, except tab, LF and CR.
    control: Replace,
    /// Tab, LF, CR and category Zs.
    whitespace: Replace,
}

impl ClipNormalizer {
    fn new() -> Result<Self> {
        let control = Replace::new(
            ReplacePattern::Regex(
                r"[\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F\p{Cf}\p{Cn}\p{Co}\x{FFFD}]".to_owned(),
            ),
            "",
        )
        .map_err(|e| ModelError::Tokenizer(format!("control-character pattern: {e}")))?;
        let whitespace = Replace::new(ReplacePattern::Regex(r"[\t\n\r\p{Zs}]".to_owned()), " ")
            .map_err(|e| ModelError::Tokenizer(format!("whitespace pattern: {e}")))?;
        Ok(Self {
            control,
            whitespace,
        })
    }
}

impl Normalizer for ClipNormalizer {
    fn normalize(&self, normalized: &mut NormalizedString) -> tokenizers::Result<()> {
        self.control.normalize(normalized)?;
        self.whitespace.normalize(normalized)?;
        space_out_cjk(normalized);
        normalized.nfc();
        collapse_whitespace(normalized);
        python_lowercase(normalized);
        Ok(())
    }
}

/// BERT's `_is_chinese_char` ranges, as transformers has them.
fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B820..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

fn space_out_cjk(normalized: &mut NormalizedString) {
    if !normalized.get().chars().any(is_cjk_ideograph) {
        return;
    }
    let mut changes = Vec::with_capacity(normalized.get().len() + 8);
    normalized.for_each(|c| {
        if is_cjk_ideograph(c) {
            changes.extend([(' ', 0), (c, 1), (' ', 1)]);
        } else {
            changes.push((c, 0));
        }
    });
    normalized.transform(changes, 0);
}

/// `" ".join(text.split())`: whitespace runs become one space, and the ends
/// are trimmed. After cleaning, the only whitespace left is the space and
/// U+2028/U+2029, where Python's `split()` breaks as well.
fn collapse_whitespace(normalized: &mut NormalizedString) {
    let mut changes: Vec<(char, isize)> = Vec::with_capacity(normalized.get().len());
    let mut leading = 0usize;
    let mut gap = 0isize;
    normalized.for_each(|c| {
        if c.is_whitespace() {
            gap += 1;
            return;
        }
        if changes.is_empty() {
            leading += gap as usize;
        } else if gap > 0 {
            // The space takes the run's first character and drops the rest.
            changes.push((' ', 1 - gap));
        }
        changes.push((c, 0));
        gap = 0;
    });
    match changes.last_mut() {
        Some(last) => last.1 -= gap,
        None => leading += gap as usize,
    }
    normalized.transform(changes, leading);
}

/// Python's `str.lower()`: full case mapping, with a capital sigma at the
/// end of a word becoming `ς`. Rust's `str::to_lowercase` implements the
/// same Final_Sigma rule; every other character lowercases on its own, so
/// walking it alongside the per-character mapping lines the two up.
fn python_lowercase(normalized: &mut NormalizedString) {
    let source = normalized.get();
    let lowered = source.to_lowercase();
    if lowered == source {
        return;
    }
    let mut lowered_chars = lowered.chars();
    let mut changes: Vec<(char, isize)> = Vec::with_capacity(lowered.len());
    for c in source.chars() {
        for (i, _) in c.to_lowercase().enumerate() {
            if let Some(l) = lowered_chars.next() {
                changes.push((l, isize::from(i > 0)));
            }
        }
    }
    normalized.transform(changes, 0);
}
