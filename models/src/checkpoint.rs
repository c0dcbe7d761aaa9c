//! Finding and loading checkpoints: a local folder in the hub layout, or a
//! hub id resolved through the Hugging Face cache (downloading when online).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::config::OwlConfig;
use crate::error::{ModelError, Result};
use crate::owl::OwlModel;
use crate::video::{DecoderConfig, VideoDecoder, DECODER_CONFIG, DECODER_WEIGHTS};

/// The files of one checkpoint, all in one folder.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: OwlConfig,
    weights: Weights,
}

#[derive(Debug, Clone)]
enum Weights {
    /// One or more safetensors files (sharded checkpoints list theirs in
    /// model.safetensors.index.json); memory-mapped.
    Safetensors(Vec<PathBuf>),
    /// A PyTorch pickle, as older hub repos ship.
    Pickle(PathBuf),
}

const HUB_FILES: [&str; 2] = ["config.json", "vocab.json"];
const HUB_OPTIONAL_FILES: [&str; 2] = ["merges.txt", "tokenizer.json"];

impl Checkpoint {
    /// The files the weights are read from.
    pub fn weight_files(&self) -> Vec<&Path> {
        match &self.weights {
            Weights::Safetensors(files) => files.iter().map(PathBuf::as_path).collect(),
            Weights::Pickle(file) => vec![file.as_path()],
        }
    }

    /// `spec` is a folder, or a hub id such as `google/owlv2-base-patch16`.
    pub fn locate(spec: &str) -> Result<Self> {
        let path = Path::new(spec);
        if path.is_dir() {
            return Self::from_dir(path);
        }
        if path.exists() {
            return Err(ModelError::Checkpoint {
                path: path.to_owned(),
                reason: "is a file; give the checkpoint's folder (config.json, model.safetensors, vocab.json, merges.txt)".into(),
            });
        }
        if looks_like_hub_id(spec) {
            let dir = resolve_hub(spec)?;
            return Self::from_dir(&dir);
        }
        Err(ModelError::Checkpoint {
            path: path.to_owned(),
            reason: "no such folder, and not a hub id (owner/name)".into(),
        })
    }

    pub fn from_dir(dir: &Path) -> Result<Self> {
        let config = OwlConfig::from_file(&dir.join("config.json"))?;
        let weights = find_weights(dir)?;
        Ok(Checkpoint {
            dir: dir.to_owned(),
            config,
            weights,
        })
    }

    /// Builds the model on `device` in `dtype`. A missing tensor or one of the
    /// wrong shape is an error naming it.
    pub fn load(&self, device: &Device, dtype: DType) -> Result<OwlModel> {
        let vb = match &self.weights {
            // SAFETY: the files are memory-mapped read-only; owltrack never
            // writes them, and a checkpoint changed underneath a running
            // process is outside what any loader can defend against.
            Weights::Safetensors(files) => unsafe {
                VarBuilder::from_mmaped_safetensors(files, dtype, device)
            },
            Weights::Pickle(file) => VarBuilder::from_pth(file, dtype, device),
        }
        .map_err(|e| self.checkpoint_error(e.to_string()))?;
        OwlModel::new(self.config.clone(), vb).map_err(|e| match e {
            ModelError::Candle(e) => self.checkpoint_error(e.to_string()),
            other => other,
        })
    }

    /// The video decoder stored beside the backbone (`video_decoder.json`
    /// and `video_decoder.safetensors`), if there is one.
    pub fn load_decoder(&self, device: &Device, dtype: DType) -> Result<Option<VideoDecoder>> {
        let (config_path, weights) = (
            self.dir.join(DECODER_CONFIG),
            self.dir.join(DECODER_WEIGHTS),
        );
        if !config_path.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
        let config: DecoderConfig =
            serde_json::from_str(&text).map_err(|e| ModelError::Checkpoint {
                path: config_path.clone(),
                reason: e.to_string(),
            })?;
        let error = |reason: String| ModelError::Checkpoint {
            path: weights.clone(),
            reason,
        };
        // SAFETY: as for the backbone's weights: mapped read-only, never
        // written by owltrack.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], dtype, device) }
            .map_err(|e| error(e.to_string()))?;
        VideoDecoder::new(config, vb)
            .map(Some)
            .map_err(|e| error(e.to_string()))
    }

    /// Writes this checkpoint to `out` in the hub layout with its floating
    /// point weights stored as `dtype` (f16 halves a model's size on disk;
    /// loading converts back), the video decoder's too when there is one.
    /// Config and tokenizer files are copied as
    /// they are.
    pub fn export(&self, out: &Path, dtype: DType) -> Result<usize> {
        let mut tensors = self.tensors()?;
        for tensor in tensors.values_mut() {
            if tensor.dtype().is_float() {
                *tensor = tensor.to_dtype(dtype)?;
            }
        }
        std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
        let weights = out.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights).map_err(|e| ModelError::Checkpoint {
            path: weights.clone(),
            reason: e.to_string(),
        })?;
        for name in HUB_FILES
            .iter()
            .chain(&HUB_OPTIONAL_FILES)
            .chain(&[DECODER_CONFIG])
        {
            let from = self.dir.join(name);
            if from.is_file() {
                let to = out.join(name);
                std::fs::copy(&from, &to).map_err(|e| ModelError::io(&to, e))?;
            }
        }
        let decoder = self.dir.join(DECODER_WEIGHTS);
        if decoder.is_file() {
            let mut tensors = candle_core::safetensors::load(&decoder, &Device::Cpu)
                .map_err(|e| self.checkpoint_error(e.to_string()))?;
            for tensor in tensors.values_mut() {
                *tensor = tensor.to_dtype(dtype)?;
            }
            let to = out.join(DECODER_WEIGHTS);
            candle_core::safetensors::save(&tensors, &to).map_err(|e| ModelError::Checkpoint {
                path: to.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(tensors.len())
    }

    /// Every tensor of the checkpoint, read into memory on the CPU as stored.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut tensors = HashMap::new();
        match &self.weights {
            Weights::Safetensors(files) => {
                for file in files {
                    let loaded = candle_core::safetensors::load(file, &Device::Cpu)
                        .map_err(|e| self.checkpoint_error(e.to_string()))?;
                    tensors.extend(loaded);
                }
            }
            Weights::Pickle(file) => {
                let loaded = candle_core::pickle::read_all(file)
                    .map_err(|e| self.checkpoint_error(e.to_string()))?;
                tensors.extend(loaded);
            }
        }
        Ok(tensors)
    }

    pub(crate) fn checkpoint_error(&self, reason: String) -> ModelError {
        let path = match &self.weights {
            Weights::Safetensors(files) => {
                files.first().cloned().unwrap_or_else(|| self.dir.clone())
            }
            Weights::Pickle(file) => file.clone(),
        };
        ModelError::Checkpoint { path, reason }
    }
}

fn find_weights(dir: &Path) -> Result<Weights> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(Weights::Safetensors(vec![single]));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let parsed: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Checkpoint {
                path: index.clone(),
                reason: e.to_string(),
            })?;
        let mut files: Vec<PathBuf> = parsed["weight_map"]
            .as_object()
            .map(|map| {
                map.values()
                    .filter_map(|v| v.as_str())
                    .map(|f| dir.join(f))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        if files.is_empty() {
            return Err(ModelError::Checkpoint {
                path: index,
                reason: "weight_map lists no files".into(),
            });
        }
        return Ok(Weights::Safetensors(files));
    }
    let pickle = dir.join("pytorch_model.bin");
    if pickle.is_file() {
        return Ok(Weights::Pickle(pickle));
    }
    Err(ModelError::Checkpoint {
        path: dir.to_owned(),
        reason: "holds no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
            .into(),
    })
}

fn looks_like_hub_id(spec: &str) -> bool {
    let mut parts = spec.split('/');
    let valid = |p: &str| {
        p.starts_with(|c: char| c.is_ascii_alphanumeric())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    matches!((parts.next(), parts.next(), parts.next()), (Some(owner), Some(name), None) if valid(owner) && valid(name))
}

/// The snapshot folder of a hub model: from the cache, else downloaded (unless
/// `HF_HUB_OFFLINE` is set), else an error saying how to fill the cache.
fn resolve_hub(id: &str) -> Result<PathBuf> {
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(id.to_owned());
    let has = |file: &str| cached.get(file).is_some();
    if HUB_FILES.iter().all(|f| has(f)) && (has("model.safetensors") || has("pytorch_model.bin")) {
        if let Some(dir) = cached.get("config.json").as_deref().and_then(Path::parent) {
            return Ok(dir.to_path_buf());
        }
    }
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    let how_to_fill = || {
        format!(
            "model {id} is not in the Hugging Face cache at {}. On a machine with network access run \
             `huggingface-cli download {id}` (or any owltrack command with this id) and copy the \
             folder {}/models--{} here; or download the repository's files (config.json, \
             model.safetensors, vocab.json, merges.txt) into a folder and pass that folder instead",
            cache.path().display(),
            cache.path().display(),
            id.replace('/', "--")
        )
    };
    if offline {
        return Err(ModelError::Hub(format!(
            "HF_HUB_OFFLINE is set: {}",
            how_to_fill()
        )));
    }
    tracing::info!(model = id, "downloading from the Hugging Face hub");
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(true)
        .build()
        .map_err(|e| ModelError::Hub(format!("{e}; {}", how_to_fill())))?;
    let repo = api.model(id.to_owned());
    let mut dir = None;
    for file in HUB_FILES {
        let path = repo.get(file).map_err(|e| {
            ModelError::Hub(format!(
                "cannot fetch {file} of {id} ({e}); {}",
                how_to_fill()
            ))
        })?;
        dir = path.parent().map(Path::to_path_buf);
    }
    for file in HUB_OPTIONAL_FILES {
        if let Err(error) = repo.get(file) {
            tracing::debug!(model = id, file, %error, "optional file not fetched");
        }
    }
    if repo.get("model.safetensors").is_err() {
        repo.get("pytorch_model.bin").map_err(|e| {
            ModelError::Hub(format!(
                "{id} has neither model.safetensors nor pytorch_model.bin ({e})"
            ))
        })?;
    }
    dir.ok_or_else(|| ModelError::Hub(format!("could not resolve {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_owner_slash_name() {
        assert!(looks_like_hub_id("google/owlv2-base-patch16-ensemble"));
        assert!(!looks_like_hub_id("google/owlv2/x"));
        assert!(!looks_like_hub_id("./model"));
        assert!(!looks_like_hub_id("a b/c"));
    }
}
