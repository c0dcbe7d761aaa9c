//! Choosing and loading a model: checkpoint, device, dtype, threads.

use anyhow::{bail, Context, Result};
use clap::Args;
use owltrack_models::video::{Reseed, DEFAULT_RESEED_BELOW};
use owltrack_models::{DType, Detector, Device};
use owltrack_tracker::recurrent::SlotTrackerConfig;

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Checkpoint: a folder in the Hugging Face layout (config.json,
    /// model.safetensors or pytorch_model.bin, vocab.json, merges.txt) or a
    /// hub id such as google/owlv2-base-patch16-ensemble. Default: the
    /// built-in model, trained by owltrack on its synthetic world.
    #[arg(long, value_name = "DIR|HUB_ID", env = "OWLTRACK_MODEL")]
    pub model: Option<String>,
    /// Where the model runs: cpu, or cuda / cuda:N (builds with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Number format of the weights and activations: f32 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// CPU threads for inference (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ModelArgs {
    pub fn device(&self) -> Result<Device> {
        match self.device.as_str() {
            "cpu" => Ok(Device::Cpu),
            cuda if cuda == "cuda" || cuda.starts_with("cuda:") => {
                let ordinal = cuda
                    .strip_prefix("cuda:")
                    .map_or(Ok(0), str::parse::<usize>)
                    .with_context(|| format!("bad device {cuda:?}: use cuda or cuda:N"))?;
                if !owltrack_models::cuda_available() {
                    bail!("this owltrack was built without CUDA: rebuild with `--features cuda` on a machine with the CUDA toolkit");
                }
                Device::new_cuda(ordinal)
                    .with_context(|| format!("cannot open CUDA device {ordinal}"))
            }
            other => bail!("unknown device {other:?}: use cpu, cuda or cuda:N"),
        }
    }

    pub fn dtype(&self) -> Result<DType> {
        match self.dtype.as_str() {
            "f32" => Ok(DType::F32),
            "bf16" => Ok(DType::BF16),
            other => bail!("unknown dtype {other:?}: use f32 or bf16"),
        }
    }

    /// The checkpoint to load: `--model`, else the built-in one.
    pub fn spec(&self) -> Result<String> {
        if let Some(model) = &self.model {
            return Ok(model.clone());
        }
        let builtin = builtin_model();
        if !builtin.join("model.safetensors").is_file() {
            bail!(
                "no --model given, and the built-in model is missing from {}",
                builtin.display()
            );
        }
        Ok(builtin.display().to_string())
    }

    pub fn load(&self) -> Result<Detector> {
        set_cpu_threads(self.threads);
        let device = self.device()?;
        let dtype = self.dtype()?;
        let spec = self.spec()?;
        Detector::load(&spec, &device, dtype).with_context(|| format!("cannot load model {spec}"))
    }
}

/// `--threads N`: the CPU threads of every tensor operation, set before the
/// first one starts the thread pool. The flag wins over `RAYON_NUM_THREADS`.
pub fn set_cpu_threads(threads: Option<usize>) {
    if let Some(threads) = threads.filter(|t| *t > 0) {
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// The model owltrack trains on its synthetic world and ships.
pub fn builtin_model() -> std::path::PathBuf {
    std::env::var_os("OWLTRACK_BUILTIN_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("models/builtin/owltrack-tiny")
        })
}

/// The async runtime of the network commands (`serve`, `camera`, `bench
/// serve`): two workers are plenty for sockets beside the model's threads.
pub fn async_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `--tracker` and the recurrent tracker's settings, shared by `track` and
/// `benchmark`.
#[derive(clap::Args)]
pub struct TrackerChoice {
    /// The tracker: `detection` (tracking by detection, ByteTrack-style) or
    /// `recurrent` (Video OWL-ViT: the checkpoint's video decoder follows
    /// objects with its query slots; see `owltrack train decoder`).
    #[arg(long, default_value = "detection")]
    pub tracker: String,
    /// Recurrent tracker: a free slot scoring at least this starts a track.
    #[arg(long, default_value_t = SlotTrackerConfig::default().birth_score)]
    pub birth_score: f64,
    /// Recurrent tracker: a slot scoring at least this keeps its track alive.
    #[arg(long, default_value_t = SlotTrackerConfig::default().keep_score)]
    pub keep_score: f64,
    /// Recurrent tracker: frames a slot may go without evidence before its
    /// track ends.
    #[arg(long, default_value_t = SlotTrackerConfig::default().keep_alive)]
    pub keep_alive: u32,
    /// Recurrent tracker: a slot starting a track whose box overlaps, by at
    /// least this IoU, where a track lost within --keep-alive frames (its
    /// slot let the object go) would be now — its last box carried on at its
    /// velocity — continues that track; 0 turns it off.
    #[arg(long, value_name = "IOU", default_value_t = SlotTrackerConfig::default().handover_iou)]
    pub handover_iou: f64,
    /// Recurrent tracker: each frame, a slot takes the box and objectness of
    /// the most object-like patch whose box overlaps its own by at least
    /// this IoU; 0 turns anchoring off [default: the decoder's setting].
    #[arg(long, value_name = "IOU")]
    pub anchor_iou: Option<f32>,
    /// Recurrent tracker: a slot whose objectness stays under
    /// --reseed-below for N frames is seeded again on a new object; 0 turns
    /// reseeding off [default: the decoder's setting].
    #[arg(long, value_name = "N")]
    pub reseed_after: Option<u32>,
    /// Recurrent tracker: the objectness under which a slot counts as idle
    /// [default: the decoder's setting, else 0.1].
    #[arg(long, value_name = "P", value_parser = parse_probability::<f32>)]
    pub reseed_below: Option<f32>,
}

impl TrackerChoice {
    /// None for tracking by detection; the slot tracker's settings for the
    /// recurrent one (tracks confirmed after `confirm_hits` frames).
    pub fn recurrent(&self, confirm_hits: u32) -> Result<Option<SlotTrackerConfig>> {
        match self.tracker.as_str() {
            "detection" => Ok(None),
            "recurrent" => {
                let slots = SlotTrackerConfig {
                    birth_score: self.birth_score,
                    keep_score: self.keep_score,
                    keep_alive: self.keep_alive,
                    confirm_hits,
                    handover_iou: self.handover_iou,
                };
                slots
                    .validate()
                    .map_err(|e| anyhow::anyhow!("bad recurrent tracker setting: {e}"))?;
                Ok(Some(slots))
            }
            other => bail!("unknown tracker {other:?}: `detection` or `recurrent`"),
        }
    }

    /// Applies the anchoring and reseeding flags to the detector's video
    /// decoder; the decoder's own settings stand for flags not given.
    pub fn configure_decoder(&self, detector: &mut Detector) -> Result<()> {
        if self.anchor_iou.is_none() && self.reseed_after.is_none() && self.reseed_below.is_none() {
            return Ok(());
        }
        let Some(decoder) = detector.decoder_mut() else {
            bail!("--anchor-iou and --reseed-* need a checkpoint with a video decoder");
        };
        let current = decoder.config().clone();
        let anchor_iou = match self.anchor_iou {
            None => current.anchor_iou,
            Some(0.0) => None,
            Some(iou) => Some(iou),
        };
        let reseed = match (self.reseed_after, self.reseed_below) {
            (Some(0), _) => None,
            (Some(after), below) => Some(Reseed {
                after,
                below: below
                    .or(current.reseed.map(|r| r.below))
                    .unwrap_or(DEFAULT_RESEED_BELOW),
            }),
            (None, Some(below)) => match current.reseed {
                Some(reseed) => Some(Reseed { below, ..reseed }),
                None => bail!("--reseed-below needs --reseed-after: this decoder does not reseed"),
            },
            (None, None) => current.reseed,
        };
        decoder
            .set_tracking(anchor_iou, reseed)
            .map_err(|e| anyhow::anyhow!("bad recurrent tracker setting: {e}"))
    }
}

/// A command-line probability, in [0, 1].
pub fn parse_probability<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
{
    match text.parse::<T>() {
        Ok(p) if p >= T::from(0) && p <= T::from(1) => Ok(p),
        _ => Err(format!("{text:?} is not a probability between 0 and 1")),
    }
}
