//! A ready-to-use detector: checkpoint, tokenizer, preprocessing, query
//! embeddings cached per query, post-processing.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::detect::{Detection, PostProcess};
use crate::error::{ModelError, Result};
use crate::owl::{ImageOutputs, OwlModel};
use crate::preprocess::{box_scale, Preprocessor};
use crate::tokenizer::ClipTokenizer;
use crate::video::{DecoderState, VideoDecoder};

/// A query: free text, or an example image of what to find.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Text(String),
    /// Packed RGB8 pixels of an example image.
    Image {
        name: String,
        rgb: Vec<u8>,
        width: u32,
        height: u32,
    },
}

impl Query {
    /// What the query is called in outputs.
    pub fn name(&self) -> &str {
        match self {
            Query::Text(text) => text,
            Query::Image { name, .. } => name,
        }
    }
}

pub struct Detector {
    model: OwlModel,
    tokenizer: ClipTokenizer,
    preprocessor: Preprocessor,
    /// Embeddings (E,) of text queries already seen: a query set that
    /// changes by one query costs one text-tower pass, not a whole set.
    text_cache: HashMap<String, Tensor>,
    decoder: Option<VideoDecoder>,
}

/// One image of a batch, with the queries and post-processing it is
/// detected with.
#[derive(Clone, Copy)]
pub struct BatchItem<'a> {
    pub rgb: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// Query embeddings (Q, E) from [`Detector::embed_queries`].
    pub queries: &'a Tensor,
    pub post: &'a PostProcess,
}

/// What one image gives: every query-independent output, the logits of the
/// current queries, and the detections after post-processing.
pub struct ImageResult {
    pub outputs: ImageOutputs,
    /// (N, Q) logits of the image's patches against the queries.
    pub logits: Tensor,
    pub detections: Vec<Detection>,
    pub timings: StageTimings,
}

/// Where one image's time went (on the CPU; a GPU's asynchronous work is
/// counted where it is waited for).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    pub preprocess: std::time::Duration,
    pub backbone: std::time::Duration,
    /// Box, class and objectness heads, logits against the queries, and
    /// post-processing.
    pub heads: std::time::Duration,
}

impl Detector {
    pub fn load(spec: &str, device: &Device, dtype: DType) -> Result<Self> {
        let checkpoint = Checkpoint::locate(spec)?;
        let model = checkpoint.load(device, dtype)?;
        let tokenizer = ClipTokenizer::from_dir(&checkpoint.dir)?;
        let mut detector = Self::from_model(model, tokenizer)?;
        detector.decoder = checkpoint.load_decoder(device, dtype)?;
        Ok(detector)
    }

    /// A detector around a model built elsewhere (random weights for a
    /// benchmark, say) and the tokenizer of its vocabulary.
    pub fn from_model(model: OwlModel, tokenizer: ClipTokenizer) -> Result<Self> {
        let config = model.config();
        let preprocessor = Preprocessor::new(config.version, config.vision.image_size)?;
        Ok(Detector {
            model,
            tokenizer,
            preprocessor,
            text_cache: HashMap::new(),
            decoder: None,
        })
    }

    /// The recurrent video decoder, when the checkpoint has one.
    pub fn decoder(&self) -> Option<&VideoDecoder> {
        self.decoder.as_ref()
    }

    /// The recurrent video decoder, to change its tracking settings.
    pub fn decoder_mut(&mut self) -> Option<&mut VideoDecoder> {
        self.decoder.as_mut()
    }

    /// Attaches a video decoder (its image width must be the backbone's).
    pub fn set_decoder(&mut self, decoder: VideoDecoder) -> Result<()> {
        let width = self.model.config().vision.hidden_size;
        if decoder.config().image_width != width {
            return Err(ModelError::InvalidInput(format!(
                "the decoder reads {}-wide tokens; this backbone makes {width}-wide ones",
                decoder.config().image_width
            )));
        }
        self.decoder = Some(decoder);
        Ok(())
    }

    /// One frame through the backbone and the video decoder: the result
    /// has one entry per slot (`Detection::patch` is the slot), and the
    /// returned state goes with the next frame (None: the video's first).
    pub fn detect_slots(
        &self,
        rgb: &[u8],
        width: u32,
        height: u32,
        queries: &Tensor,
        post: &PostProcess,
        state: Option<&DecoderState>,
    ) -> Result<(ImageResult, DecoderState)> {
        let decoder = self.decoder.as_ref().ok_or_else(|| {
            ModelError::InvalidInput(
                "this checkpoint has no video decoder (train one with `owltrack train decoder`)"
                    .into(),
            )
        })?;
        let started = std::time::Instant::now();
        let pixels = self
            .preprocessor
            .tensor(rgb, width, height, self.model.device())?;
        let preprocessed = std::time::Instant::now();
        let tokens = self.model.backbone(&pixels)?;
        let embedded = std::time::Instant::now();
        let image = self.model.heads(tokens)?;
        let first;
        let state = match state {
            Some(state) => state,
            None => {
                first = decoder.initial_state(&image)?;
                &first
            }
        };
        let (outputs, next) = decoder.step(&image, state)?;
        let mut result = self.score(outputs, queries, post, (width, height))?;
        let timings = StageTimings {
            preprocess: preprocessed - started,
            backbone: embedded - preprocessed,
            heads: embedded.elapsed(),
        };
        result.timings = timings;
        Ok((result, next))
    }

    /// One image's (or one frame's decoder slots') outputs, a batch of one,
    /// scored against `queries` and post-processed for a `width`×`height`
    /// source; the timings are left for the caller.
    fn score(
        &self,
        outputs: ImageOutputs,
        queries: &Tensor,
        post: &PostProcess,
        (width, height): (u32, u32),
    ) -> Result<ImageResult> {
        let logits = outputs.class_logits(queries, None)?.squeeze(0)?;
        let boxes = outputs.boxes_of(0)?;
        let flat: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let scale = box_scale(self.model.config().version, width, height);
        let objectness: Option<Vec<f32>> = match (&outputs.objectness, post.objectness) {
            (Some(o), true) => Some(o.get(0)?.to_dtype(DType::F32)?.to_vec1()?),
            _ => None,
        };
        let detections = post.run(
            &flat,
            logits.dim(1)?,
            &boxes,
            objectness.as_deref(),
            scale,
            (width, height),
        );
        Ok(ImageResult {
            outputs,
            logits,
            detections,
            timings: StageTimings::default(),
        })
    }

    pub fn model(&self) -> &OwlModel {
        &self.model
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Query embeddings (Q, E) for a query set, computing only those not
    /// seen before.
    pub fn embed_queries(&mut self, queries: &[Query]) -> Result<Tensor> {
        if queries.is_empty() {
            return Err(ModelError::InvalidInput(
                "at least one query is needed".into(),
            ));
        }
        let missing: Vec<&str> = queries
            .iter()
            .filter_map(|q| match q {
                Query::Text(t) if !self.text_cache.contains_key(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            let ids: Vec<Vec<u32>> = missing
                .iter()
                .map(|text| self.tokenizer.encode(text).map(|e| e.ids.to_vec()))
                .collect::<Result<_>>()?;
            let embedded = self.model.embed_text(&ids)?;
            for (i, text) in missing.iter().enumerate() {
                self.text_cache.insert((*text).to_owned(), embedded.get(i)?);
            }
        }
        let rows = queries
            .iter()
            .map(|q| match q {
                Query::Text(t) => self.text_cache.get(t).cloned().ok_or_else(|| {
                    ModelError::InvalidInput(format!("query {t:?} was not embedded"))
                }),
                Query::Image {
                    rgb, width, height, ..
                } => self.embed_image_query(rgb, *width, *height),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }

    /// The class embedding (E,) that stands for an example image.
    pub fn embed_image_query(&self, rgb: &[u8], width: u32, height: u32) -> Result<Tensor> {
        let pixels = self
            .preprocessor
            .tensor(rgb, width, height, self.model.device())?;
        let outputs = self.model.image_outputs(&pixels)?;
        Ok(self.model.embed_image_query(&outputs)?.0)
    }

    /// Detects `queries` (from [`Detector::embed_queries`]) in one RGB image.
    pub fn detect(
        &self,
        rgb: &[u8],
        width: u32,
        height: u32,
        queries: &Tensor,
        post: &PostProcess,
    ) -> Result<ImageResult> {
        let mut results = self.detect_batch(&[BatchItem {
            rgb,
            width,
            height,
            queries,
            post,
        }])?;
        results
            .pop()
            .ok_or_else(|| ModelError::InvalidInput("no image was detected".into()))
    }

    /// Detects in several images at once, each with its own queries and
    /// post-processing: one backbone pass over the whole batch, which keeps
    /// more cores busy than one image does when several streams share a
    /// model. Every result carries the batch's stage timings.
    pub fn detect_batch(&self, items: &[BatchItem<'_>]) -> Result<Vec<ImageResult>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let pixels = items
            .iter()
            .map(|item| {
                self.preprocessor
                    .tensor(item.rgb, item.width, item.height, self.model.device())
            })
            .collect::<Result<Vec<_>>>()?;
        let pixels = Tensor::cat(&pixels, 0)?;
        let preprocessed = std::time::Instant::now();
        let tokens = self.model.backbone(&pixels)?;
        let embedded = std::time::Instant::now();
        let batch = self.model.heads(tokens)?;
        let mut results = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let outputs = if items.len() == 1 {
                batch.clone()
            } else {
                batch.select(index)?
            };
            results.push(self.score(
                outputs,
                item.queries,
                item.post,
                (item.width, item.height),
            )?);
        }
        let timings = StageTimings {
            preprocess: preprocessed - started,
            backbone: embedded - preprocessed,
            heads: embedded.elapsed(),
        };
        for result in &mut results {
            result.timings = timings;
        }
        Ok(results)
    }
}
