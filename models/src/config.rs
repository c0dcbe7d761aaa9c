//! `config.json` of OWL-ViT / OWLv2 checkpoints, with transformers' defaults
//! for every field a hub config may leave out.

use std::path::Path;

use serde::Deserialize;

use crate::error::{ModelError, Result};
use crate::preprocess::OwlVersion;

fn default_text_vocab() -> usize {
    49408
}
fn default_text_hidden() -> usize {
    512
}
fn default_text_intermediate() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_text_heads() -> usize {
    8
}
fn default_text_positions() -> usize {
    16
}
fn default_act() -> String {
    "quick_gelu".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_vision_hidden() -> usize {
    768
}
fn default_vision_intermediate() -> usize {
    3072
}
fn default_vision_heads() -> usize {
    12
}
fn default_channels() -> usize {
    3
}
fn default_image_size() -> usize {
    768
}
fn default_patch_size() -> usize {
    32
}
fn default_projection() -> usize {
    512
}
fn default_pad() -> u32 {
    0
}
fn default_bos() -> u32 {
    49406
}
fn default_eos() -> u32 {
    49407
}

/// `OwlViTTextConfig` / `Owlv2TextConfig` (the two share every default).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TextConfig {
    #[serde(default = "default_text_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_text_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_text_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_text_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_pad")]
    pub pad_token_id: u32,
    #[serde(default = "default_bos")]
    pub bos_token_id: u32,
    #[serde(default = "default_eos")]
    pub eos_token_id: u32,
}

/// `OwlViTVisionConfig` / `Owlv2VisionConfig` (again the same defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VisionConfig {
    #[serde(default = "default_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// An owltrack extension (absent from hub checkpoints): output channels
    /// of 3×3 stride-2 convolutions that take the pixels down to the patch
    /// grid before the patch embedding, which then is a 1×1 projection
    /// (Xiao et al., "Early Convolutions Help Transformers See Better",
    /// 2021). Empty: the hub's one linear map per patch.
    #[serde(default)]
    pub stem_channels: Vec<usize>,
}

impl VisionConfig {
    /// Channels the patch embedding reads at each patch: the pixels of a
    /// whole patch, or the stem's last feature map at one position.
    pub fn patch_inputs(&self) -> usize {
        match self.stem_channels.last() {
            Some(&channels) => channels,
            None => self.num_channels * self.patch_size * self.patch_size,
        }
    }
}

impl Default for TextConfig {
    fn default() -> Self {
        // serde's field defaults are the single source of the values.
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

impl Default for VisionConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

#[derive(Debug, Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    text_config: Option<TextConfig>,
    /// Read after the version is known: the default patch size differs.
    vision_config: Option<serde_json::Value>,
    #[serde(default = "default_projection")]
    projection_dim: usize,
}

/// A parsed and checked OWL config.
#[derive(Debug, Clone, PartialEq)]
pub struct OwlConfig {
    pub version: OwlVersion,
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
}

/// Activations a hub config may name, as transformers' ACT2FN computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    QuickGelu,
    /// Exact, with erf.
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
}

impl Activation {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "quick_gelu" => Some(Activation::QuickGelu),
            "gelu" => Some(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
            "relu" => Some(Activation::Relu),
            _ => None,
        }
    }
}

impl OwlConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_json(&text).map_err(|reason| ModelError::Config {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses config.json text; the error says what is wrong.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let version = match raw.model_type.as_deref() {
            Some("owlvit") => OwlVersion::V1,
            Some("owlv2") => OwlVersion::V2,
            Some(other) => {
                return Err(format!(
                    "model_type {other:?} is not an OWL detector (expected \"owlvit\" or \"owlv2\")"
                ))
            }
            None => match raw.architectures.first().map(String::as_str) {
                Some("OwlViTForObjectDetection") => OwlVersion::V1,
                Some("Owlv2ForObjectDetection") => OwlVersion::V2,
                _ => {
                    return Err("neither model_type nor architectures names an OWL detector".into())
                }
            },
        };
        let mut vision = raw.vision_config.unwrap_or_else(|| serde_json::json!({}));
        if let Some(fields) = vision.as_object_mut() {
            // Owlv2VisionConfig defaults to 16-pixel patches, OwlViT's to 32.
            let patch = match version {
                OwlVersion::V1 => 32,
                OwlVersion::V2 => 16,
            };
            fields.entry("patch_size").or_insert(patch.into());
        }
        let vision: VisionConfig =
            serde_json::from_value(vision).map_err(|e| format!("vision_config: {e}"))?;
        let config = OwlConfig {
            version,
            text: raw.text_config.unwrap_or_default(),
            vision,
            projection_dim: raw.projection_dim,
        };
        config.check()?;
        Ok(config)
    }

    /// Refuses what the networks cannot run, saying why.
    pub fn check(&self) -> std::result::Result<(), String> {
        let (t, v) = (&self.text, &self.vision);
        for (what, hidden, heads) in [
            ("text", t.hidden_size, t.num_attention_heads),
            ("vision", v.hidden_size, v.num_attention_heads),
        ] {
            if hidden == 0 || heads == 0 || hidden % heads != 0 {
                return Err(format!(
                    "{what} hidden_size {hidden} must be a positive multiple of num_attention_heads {heads}"
                ));
            }
        }
        for act in [&t.hidden_act, &v.hidden_act] {
            if Activation::parse(act).is_none() {
                return Err(format!(
                    "hidden_act {act:?} is not supported (quick_gelu, gelu, gelu_new, gelu_pytorch_tanh, relu)"
                ));
            }
        }
        if v.patch_size == 0 || v.image_size < v.patch_size {
            return Err(format!(
                "image_size {} must be at least patch_size {} (> 0)",
                v.image_size, v.patch_size
            ));
        }
        if !v.stem_channels.is_empty() {
            let stride = 1usize.checked_shl(v.stem_channels.len() as u32);
            if stride != Some(v.patch_size) || v.stem_channels.contains(&0) {
                return Err(format!(
                    "stem_channels {:?}: a stem of stride-2 convolutions needs log2(patch_size {}) layers of at least one channel",
                    v.stem_channels, v.patch_size
                ));
            }
        }
        if v.num_channels != 3 {
            return Err(format!(
                "num_channels is {}, only RGB (3) is supported",
                v.num_channels
            ));
        }
        if self.projection_dim != t.hidden_size {
            return Err(format!(
                "projection_dim {} must equal the text hidden_size {}: the class head compares the two",
                self.projection_dim, t.hidden_size
            ));
        }
        if t.max_position_embeddings < 2
            || t.vocab_size <= t.eos_token_id.max(t.bos_token_id) as usize
        {
            return Err(format!(
                "text tower too small: {} positions, vocabulary of {} with BOS {} and EOS {}",
                t.max_position_embeddings, t.vocab_size, t.bos_token_id, t.eos_token_id
            ));
        }
        if !(t.layer_norm_eps > 0.0 && v.layer_norm_eps > 0.0) {
            return Err("layer_norm_eps must be positive".into());
        }
        Ok(())
    }

    /// Patches per side of the image grid.
    pub fn grid_size(&self) -> usize {
        self.vision.image_size / self.vision.patch_size
    }

    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// The weight-name prefix of the CLIP towers in hub checkpoints.
    pub fn prefix(&self) -> &'static str {
        match self.version {
            OwlVersion::V1 => "owlvit",
            OwlVersion::V2 => "owlv2",
        }
    }
}

/// The published architectures, by hub name (without `google/`).
pub const ARCHITECTURES: [&str; 6] = [
    "owlvit-base-patch32",
    "owlvit-base-patch16",
    "owlvit-large-patch14",
    "owlv2-base-patch16",
    "owlv2-base-patch16-ensemble",
    "owlv2-large-patch14-ensemble",
];

impl OwlConfig {
    /// config.json as transformers writes it for this model.
    pub fn to_hub_json(&self) -> serde_json::Value {
        let (model_type, architecture) = match self.version {
            OwlVersion::V1 => ("owlvit", "OwlViTForObjectDetection"),
            OwlVersion::V2 => ("owlv2", "Owlv2ForObjectDetection"),
        };
        let (t, v) = (&self.text, &self.vision);
        let mut config = serde_json::json!({
            "architectures": [architecture],
            "model_type": model_type,
            "projection_dim": self.projection_dim,
            "text_config": {
                "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_hidden_layers,
                "num_attention_heads": t.num_attention_heads,
                "max_position_embeddings": t.max_position_embeddings, "hidden_act": t.hidden_act,
                "layer_norm_eps": t.layer_norm_eps, "pad_token_id": t.pad_token_id,
                "bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id,
            },
            "vision_config": {
                "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
                "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
                "num_channels": v.num_channels, "image_size": v.image_size, "patch_size": v.patch_size,
                "hidden_act": v.hidden_act, "layer_norm_eps": v.layer_norm_eps,
            },
        });
        if !v.stem_channels.is_empty() {
            config["vision_config"]["stem_channels"] = serde_json::json!(v.stem_channels);
        }
        config
    }

    /// The small OWLv2-style architecture owltrack trains from scratch on its
    /// synthetic world: a 4-layer, 96-wide ViT on 384-pixel inputs and a
    /// 2-layer, 64-wide text tower.
    pub fn tiny() -> Self {
        let text = TextConfig {
            hidden_size: 64,
            intermediate_size: 128,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            ..TextConfig::default()
        };
        let vision = VisionConfig {
            hidden_size: 96,
            intermediate_size: 192,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            image_size: 384,
            patch_size: 16,
            ..VisionConfig::default()
        };
        OwlConfig {
            version: OwlVersion::V2,
            projection_dim: text.hidden_size,
            text,
            vision,
        }
    }

    /// The config of a published checkpoint, for building it with random
    /// weights (benchmarks) without downloading anything.
    pub fn architecture(name: &str) -> Option<Self> {
        let name = name.strip_prefix("google/").unwrap_or(name);
        let version = if name.starts_with("owlv2") {
            OwlVersion::V2
        } else {
            OwlVersion::V1
        };
        let large = name.contains("large");
        let (image_size, patch_size) = match (version, name) {
            (_, n) if n.ends_with("patch32") => (768, 32),
            (OwlVersion::V1, n) if n.contains("patch16") => (768, 16),
            (OwlVersion::V1, n) if n.contains("patch14") => (840, 14),
            (OwlVersion::V2, n) if n.contains("patch16") => (960, 16),
            (OwlVersion::V2, n) if n.contains("patch14") => (1008, 14),
            _ => return None,
        };
        if !ARCHITECTURES.contains(&name) {
            return None;
        }
        let mut text = TextConfig::default();
        let mut vision = VisionConfig {
            image_size,
            patch_size,
            ..VisionConfig::default()
        };
        if large {
            text.hidden_size = 768;
            text.intermediate_size = 3072;
            text.num_attention_heads = 12;
            vision.hidden_size = 1024;
            vision.intermediate_size = 4096;
            vision.num_hidden_layers = 24;
            vision.num_attention_heads = 16;
        }
        Some(OwlConfig {
            version,
            projection_dim: text.hidden_size,
            text,
            vision,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_cannot_run() {
        let bad = [
            (r#"{"model_type":"clip"}"#, "not an OWL detector"),
            (r#"{}"#, "neither model_type"),
            (
                r#"{"model_type":"owlvit","vision_config":{"hidden_size":30,"num_attention_heads":4}}"#,
                "multiple",
            ),
            (
                r#"{"model_type":"owlvit","text_config":{"hidden_act":"swish"}}"#,
                "swish",
            ),
            (
                r#"{"model_type":"owlv2","projection_dim":256}"#,
                "projection_dim",
            ),
            (
                r#"{"model_type":"owlv2","vision_config":{"num_channels":1}}"#,
                "RGB",
            ),
            (
                r#"{"model_type":"owlv2","vision_config":{"patch_size":0}}"#,
                "patch_size",
            ),
            (r#"{"model_type": 3}"#, "invalid type"),
            (
                r#"{"model_type":"owlv2","vision_config":{"stem_channels":[8,16,32]}}"#,
                "log2(patch_size 16)",
            ),
            (
                r#"{"model_type":"owlv2","vision_config":{"patch_size":12,"image_size":48,"stem_channels":[8,8]}}"#,
                "stem_channels",
            ),
        ];
        for (json, message) in bad {
            let error = OwlConfig::from_json(json).unwrap_err();
            assert!(error.contains(message), "{json}: {error}");
        }
    }

    #[test]
    fn hub_json_round_trips() {
        let mut with_stem = OwlConfig::tiny();
        with_stem.vision.stem_channels = vec![8, 16, 24, 32];
        assert_eq!(with_stem.vision.patch_inputs(), 32);
        assert_eq!(OwlConfig::tiny().vision.patch_inputs(), 3 * 16 * 16);
        for config in [
            OwlConfig::tiny(),
            OwlConfig::architecture("owlvit-base-patch32").unwrap(),
            with_stem,
        ] {
            let parsed = OwlConfig::from_json(&config.to_hub_json().to_string()).unwrap();
            assert_eq!(parsed, config);
        }
    }

    #[test]
    fn published_architectures() {
        for name in ARCHITECTURES {
            let config = OwlConfig::architecture(name).unwrap();
            assert!(config.check().is_ok(), "{name}");
        }
        let b32 = OwlConfig::architecture("google/owlvit-base-patch32").unwrap();
        assert_eq!(
            (
                b32.grid_size(),
                b32.vision.hidden_size,
                b32.text.hidden_size
            ),
            (24, 768, 512)
        );
        let l14 = OwlConfig::architecture("owlv2-large-patch14-ensemble").unwrap();
        assert_eq!(
            (
                l14.grid_size(),
                l14.vision.num_hidden_layers,
                l14.projection_dim
            ),
            (72, 24, 768)
        );
        assert!(OwlConfig::architecture("owlv3-huge").is_none());
    }

    #[test]
    fn architectures_alone_name_the_version() {
        let config =
            OwlConfig::from_json(r#"{"architectures":["Owlv2ForObjectDetection"]}"#).unwrap();
        assert_eq!(config.version, OwlVersion::V2);
        assert_eq!(config.grid_size(), 48);
    }
}
