use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use owltrack_models::train::{Losses, TrainOptions};
use owltrack_models::video::{BoxEncoding, DecoderConfig, Positions, Reseed, DEFAULT_RESEED_BELOW};
use owltrack_models::{Checkpoint, OwlConfig, ARCHITECTURES};
use owltrack_tracker::pseudo_video::CameraMotion;
use owltrack_tracker::training::{train_detector, DetectorTraining};
use owltrack_tracker::video_training::{train_decoder, DecoderTraining, PseudoVideos};

use crate::progress;
use crate::runtime::parse_probability;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train an OWL detector on a TAO-format dataset (annotations.json plus
    /// its frames, as `owltrack synth` writes them). Writes a checkpoint that
    /// `detect --model OUT` loads, a loss log (losses.csv) and its plot
    /// (losses.png); `--resume` continues an interrupted run exactly.
    Detector(DetectorArgs),
    /// Train the Video OWL-ViT recurrent decoder over a frozen OWL backbone
    /// on a TAO-format video dataset (--data), on pseudo-videos made from
    /// annotated still images by a smooth random zoom and pan (--stills), or
    /// both: clips of consecutive frames, clip-consistent matching, losses
    /// summed over the clip. The backbone's image tokens are cached in
    /// OUT/token-cache (per backbone and dataset). Writes a checkpoint (the
    /// backbone's files plus video_decoder.safetensors and
    /// video_decoder.json), losses.csv and losses.png; `--resume` continues
    /// exactly.
    Decoder(DecoderArgs),
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("sources").required(true).multiple(true).args(["data", "stills"])))]
pub struct DecoderArgs {
    /// A TAO-format video dataset: annotations.json and the frames it names.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A COCO-format dataset of annotated still images (annotations.json and
    /// the images it names; a TAO dataset's frames work too): each still
    /// becomes pseudo-videos, a virtual camera zooming and panning over it,
    /// every box a track.
    #[arg(long, value_name = "DIR")]
    pub stills: Option<PathBuf>,
    /// Use at most N stills, spread evenly over the dataset.
    #[arg(long, value_name = "N", requires = "stills")]
    pub stills_max: Option<usize>,
    /// Pseudo-videos made of each still, each with its own camera path.
    #[arg(long, default_value_t = 1, requires = "stills")]
    pub pseudo_per_still: usize,
    /// Frames of each pseudo-video (at least --clip-frames).
    #[arg(long, default_value_t = 16, requires = "stills")]
    pub pseudo_frames: usize,
    /// The camera's largest zoom into a still (1 = whole still, no zoom).
    #[arg(long, default_value_t = 2.0, requires = "stills")]
    pub pseudo_zoom: f64,
    /// With both --data and --stills: the chance that a clip comes from a
    /// pseudo-video (default: every video and pseudo-video equally likely).
    #[arg(long, value_parser = parse_probability::<f64>, requires = "stills")]
    pub pseudo_share: Option<f64>,
    /// The backbone checkpoint (frozen); default: the built-in model.
    #[arg(long, value_name = "CHECKPOINT")]
    pub backbone: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Clips per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Frames per clip (the loss is backpropagated through all of them).
    #[arg(long, default_value_t = 4)]
    pub clip_frames: usize,
    /// Decoder layers (self-attention, cross-attention, MLP).
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Object query slots.
    #[arg(long, default_value_t = 16)]
    pub slots: usize,
    /// Seed the first frame's slots from the most object-like patches
    /// (two-stage DETR) instead of learned queries.
    #[arg(long)]
    pub seed_from_patches: bool,
    /// Positions of the memory's patches: `grid` (their cells) or
    /// `patch-boxes` (the detector's predicted boxes).
    #[arg(long, default_value = "grid", value_parser = parse_positions)]
    pub positions: Positions,
    /// Reseed, on later frames too, slots whose objectness has stayed under
    /// --reseed-below for N frames in a row: they take over the frame's most
    /// object-like patches that no other slot covers, so objects entering
    /// mid-video get slots (needs --seed-from-patches).
    #[arg(long, value_name = "N", requires = "seed_from_patches")]
    pub reseed_after: Option<u32>,
    /// How boxes are embedded: `linear` (coordinates mapped linearly) or
    /// `sine` (sines and cosines at 1–32 cycles per image, then an MLP, as
    /// DAB-DETR: lets a slot attend to what lies near its box).
    #[arg(long, default_value = "linear", value_parser = parse_box_encoding)]
    pub box_encoding: BoxEncoding,
    /// Every slot keeps the query it started from (its seed, or its learned
    /// query) in its attention queries on every frame, as DETR's query
    /// embeddings (the built-in decoder's setting; without it the class and
    /// objectness heads learn on a clip's first frame only).
    #[arg(long)]
    pub persistent_queries: bool,
    /// The objectness under which a slot counts as idle.
    #[arg(long, default_value_t = DEFAULT_RESEED_BELOW, value_parser = parse_probability::<f32>)]
    pub reseed_below: f32,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Continue from the decoder and optimiser state already in --out.
    #[arg(long)]
    pub resume: bool,
}

/// The optimiser, schedule, checkpointing and thread flags both trainers
/// share.
#[derive(Args)]
pub struct ScheduleArgs {
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: usize,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Clip the gradients' global norm to this.
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Fixes the batches and the from-scratch initialisation: the same
    /// seed, the same run.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 200)]
    pub save_every: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ScheduleArgs {
    /// AdamW with warm-up and cosine decay over `steps`.
    fn options(&self, steps: usize) -> TrainOptions {
        TrainOptions {
            learning_rate: self.lr,
            warmup_steps: self.warmup,
            total_steps: steps,
            weight_decay: self.weight_decay,
            clip_norm: self.clip,
            seed: self.seed,
            ..TrainOptions::default()
        }
    }
}

#[derive(Args)]
pub struct DetectorArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// `tiny` (trained from scratch) or a published architecture's name.
    #[arg(long, default_value = "tiny")]
    pub arch: String,
    /// Start from this checkpoint (fine-tuning); its architecture wins.
    #[arg(long, value_name = "CHECKPOINT")]
    pub init: Option<PathBuf>,
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[command(flatten)]
    pub schedule: ScheduleArgs,
    /// Queries per step at most: the batch's categories plus negatives.
    #[arg(long, default_value_t = 64)]
    pub max_queries: usize,
    /// Continue from the checkpoint and optimiser state already in --out.
    #[arg(long)]
    pub resume: bool,
    /// Weight of the query-spread term (mean squared cosine similarity of
    /// the step's query embeddings), which keeps a text tower trained from
    /// scratch from merging queries that differ only in a hard attribute;
    /// 0 turns it off.
    #[arg(long, default_value_t = 1.0)]
    pub query_spread: f64,
    /// Chance (0–1) that the grey padding OWLv2 adds to a non-square frame
    /// is filled with a band of another frame at the same scale, so that
    /// every patch sees content.
    #[arg(long, default_value_t = 0.75, value_parser = parse_probability::<f64>)]
    pub mosaic: f64,
    /// Chance (0–1) that a frame is cropped to a part of itself and
    /// enlarged (scale augmentation: objects up to --max-zoom times larger).
    #[arg(long, default_value_t = 0.5, value_parser = parse_probability::<f64>)]
    pub zoom: f64,
    /// Largest enlargement of a zoomed frame.
    #[arg(long, default_value_t = 2.5)]
    pub max_zoom: f64,
    /// Stop after this many steps of the --steps-long schedule (its learning
    /// rate keeps the --steps shape); the checkpoint is written then.
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// The input's side in pixels instead of the architecture's. With
    /// --init, the checkpoint's vision position embedding is resized to the
    /// new patch grid (bilinearly), so a trained model can be fine-tuned to
    /// see frames larger, which small objects need.
    #[arg(long)]
    pub image_size: Option<usize>,
    /// From scratch: the patch side in pixels instead of the
    /// architecture's (smaller patches see small objects' shapes better, at
    /// the cost of more tokens).
    #[arg(long, conflicts_with = "init")]
    pub patch_size: Option<usize>,
    /// From scratch: a convolutional stem before the patch embedding, given
    /// as the channels of its 3×3 stride-2 convolutions, one per halving of
    /// the patch side (four for 16-pixel patches: e.g. 16,32,64,96). Small
    /// non-linear filters over pixels, which learn shapes far sooner than
    /// one linear map per patch; an owltrack extension that transformers
    /// cannot load.
    #[arg(long, conflicts_with = "init", value_delimiter = ',')]
    pub stem_channels: Option<Vec<usize>>,
    /// Folder with the CLIP vocabulary (vocab.json, merges.txt); default: the
    /// --init checkpoint's, else the built-in one.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

pub fn run(command: TrainCommand) -> Result<()> {
    match command {
        TrainCommand::Detector(args) => detector(args),
        TrainCommand::Decoder(args) => decoder(args),
    }
}

/// The CLIP vocabulary shipped with owltrack.
pub fn builtin_vocabulary() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/builtin/clip-bpe")
}

fn detector(args: DetectorArgs) -> Result<()> {
    crate::runtime::set_cpu_threads(args.schedule.threads);
    let mut config = match &args.init {
        Some(dir) => {
            Checkpoint::from_dir(dir)
                .with_context(|| format!("cannot use {} as --init", dir.display()))?
                .config
        }
        None if args.arch == "tiny" => OwlConfig::tiny(),
        None => OwlConfig::architecture(&args.arch).with_context(|| {
            format!(
                "unknown architecture {:?}: tiny or one of {}",
                args.arch,
                ARCHITECTURES.join(", ")
            )
        })?,
    };
    if let Some(size) = args.image_size {
        config.vision.image_size = size;
    }
    if let Some(patch) = args.patch_size {
        config.vision.patch_size = patch;
    }
    if let Some(channels) = &args.stem_channels {
        config.vision.stem_channels = channels.clone();
    }
    let (size, patch) = (config.vision.image_size, config.vision.patch_size);
    if patch == 0 || size % patch != 0 {
        bail!("the image size {size} must be a multiple of the patch size {patch}");
    }
    config
        .check()
        .map_err(|problem| anyhow::anyhow!("this architecture cannot be built: {problem}"))?;
    if args
        .init
        .as_ref()
        .is_some_and(|dir| !dir.join("model.safetensors").is_file())
    {
        bail!("--init needs a checkpoint with model.safetensors");
    }
    let tokenizer_dir = args
        .tokenizer
        .clone()
        .or_else(|| args.init.clone())
        .unwrap_or_else(builtin_vocabulary);
    let job = DetectorTraining {
        data: args.data.clone(),
        out: args.out.clone(),
        config,
        init: args.init.clone(),
        tokenizer_dir,
        steps: args.steps,
        batch: args.batch,
        options: TrainOptions {
            query_spread: args.query_spread,
            ..args.schedule.options(args.steps)
        },
        seed: args.schedule.seed,
        save_every: args.schedule.save_every,
        max_queries: args.max_queries,
        resume: args.resume,
        mosaic: args.mosaic,
        zoom: args.zoom,
        stop_after: args.stop_after,
        max_zoom: args.max_zoom,
    };
    let bar = progress::bar(Some(args.steps as u64), "steps");
    let summary = train_detector(&job, |step, losses| {
        report_step(&bar, step, losses);
    })
    .with_context(|| format!("training on {} failed", args.data.display()))?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn decoder(args: DecoderArgs) -> Result<()> {
    crate::runtime::set_cpu_threads(args.schedule.threads);
    let backbone = args
        .backbone
        .clone()
        .unwrap_or_else(crate::runtime::builtin_model);
    if args.stills_max == Some(0) {
        anyhow::bail!("--stills-max must be at least 1");
    }
    if !(args.pseudo_zoom.is_finite() && args.pseudo_zoom >= 1.0) {
        anyhow::bail!("--pseudo-zoom must be at least 1, got {}", args.pseudo_zoom);
    }
    let job = DecoderTraining {
        data: args.data.clone(),
        stills: args.stills.clone().map(|data| PseudoVideos {
            data,
            limit: args.stills_max,
            per_still: args.pseudo_per_still,
            motion: CameraMotion {
                frames: args.pseudo_frames,
                max_zoom: args.pseudo_zoom,
            },
            share: args.pseudo_share,
        }),
        backbone,
        out: args.out.clone(),
        decoder: DecoderConfig {
            layers: args.layers,
            width: args.width,
            heads: args.heads,
            queries: args.slots,
            seed_from_patches: args.seed_from_patches,
            positions: args.positions,
            box_encoding: args.box_encoding,
            persistent_queries: args.persistent_queries,
            reseed: args.reseed_after.map(|after| Reseed {
                below: args.reseed_below,
                after,
            }),
            ..DecoderConfig::default()
        },
        steps: args.steps,
        batch: args.batch,
        clip_frames: args.clip_frames,
        options: args.schedule.options(args.steps),
        seed: args.schedule.seed,
        save_every: args.schedule.save_every,
        resume: args.resume,
    };
    let cache_bar = progress::bar(None, "videos cached");
    let bar = progress::bar(Some(args.steps as u64), "steps");
    let summary = train_decoder(
        &job,
        |done, total| {
            cache_bar.set_length(total as u64);
            cache_bar.set_position(done as u64);
        },
        |step, _, losses| {
            cache_bar.finish_and_clear();
            report_step(&bar, step, losses);
        },
    )
    .with_context(|| {
        let sources: Vec<String> = [&args.data, &args.stills]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        format!("training the decoder on {} failed", sources.join(" and "))
    })?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

/// A step's progress on the bar, and its losses in the log every 50 steps.
fn report_step(bar: &indicatif::ProgressBar, step: usize, losses: &Losses) {
    bar.set_position(step as u64);
    bar.set_message(format!("loss {:.3}", losses.total));
    if step.is_multiple_of(50) {
        tracing::info!(
            step,
            total = losses.total,
            class = losses.class,
            l1 = losses.l1,
            giou = losses.giou,
            "training"
        );
    }
}

fn parse_positions(text: &str) -> Result<Positions, String> {
    match text {
        "grid" => Ok(Positions::Grid),
        "patch-boxes" => Ok(Positions::PatchBoxes),
        other => Err(format!("{other:?}: grid or patch-boxes")),
    }
}

fn parse_box_encoding(text: &str) -> Result<BoxEncoding, String> {
    match text {
        "linear" => Ok(BoxEncoding::Linear),
        "sine" => Ok(BoxEncoding::Sine),
        other => Err(format!("{other:?}: linear or sine")),
    }
}
