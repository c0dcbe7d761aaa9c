//! Encoding RGB frames to a video file (MP4 by default; the container follows
//! the file's extension).

use std::path::{Path, PathBuf};

use ffmpeg::codec::Id;
use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::util::frame::video::Video as AvFrame;
use ffmpeg::{encoder, format, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{DecodeError, Result};
use crate::frame::copy_rows;

/// Which encoder to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VideoCodec {
    /// H.264 through libx264 when this FFmpeg has it, else MPEG-4 Part 2.
    #[default]
    Auto,
    H264,
    Mpeg4,
}

/// Chroma subsampling of the encoded video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chroma {
    /// 4:2:0, which every player plays.
    #[default]
    Yuv420,
    /// 4:4:4, full colour resolution (H.264 only).
    Yuv444,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WriterOptions {
    pub fps: f64,
    pub codec: VideoCodec,
    pub chroma: Chroma,
    /// Constant-quality factor for H.264 (0 = lossless … 51); MPEG-4 maps it to its qscale.
    pub quality: u8,
    /// x264 speed preset.
    pub preset: &'static str,
    /// At most this many frames between keyframes (None: the encoder's
    /// default, 250 for x264). Short intervals make files seekable and let
    /// live viewers join quickly.
    pub keyframe_interval: Option<u32>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            fps: 25.0,
            codec: VideoCodec::Auto,
            chroma: Chroma::Yuv420,
            quality: 18,
            preset: "veryfast",
            keyframe_interval: None,
        }
    }
}

/// Time base of written streams: fine enough for any frame rate and for
/// variable-rate timestamps.
const TICKS_PER_SECOND: i32 = 90_000;

pub struct VideoWriter {
    path: PathBuf,
    output: format::context::Output,
    encoder: encoder::Video,
    scaler: scaling::Context,
    rgb: AvFrame,
    yuv: AvFrame,
    width: u32,
    height: u32,
    frame_ticks: i64,
    encoder_time_base: Rational,
    stream_time_base: Rational,
    frames: u64,
    last_pts: Option<i64>,
    codec_name: String,
    finished: bool,
}

// The FFmpeg contexts are used by one thread at a time through `&mut self`.
unsafe impl Send for VideoWriter {}

impl VideoWriter {
    pub fn create(path: &Path, width: u32, height: u32, options: &WriterOptions) -> Result<Self> {
        crate::init();
        let label = path.display().to_string();
        let fail = |during: &'static str| {
            let label = label.clone();
            move |e| DecodeError::ffmpeg(&label, during, e)
        };
        if width == 0 || height == 0 || width > 16384 || height > 16384 {
            return Err(DecodeError::InvalidOption(format!(
                "cannot write a {width}×{height} video"
            )));
        }
        if !(options.fps.is_finite() && options.fps > 0.0 && options.fps <= 1000.0) {
            return Err(DecodeError::InvalidOption(format!(
                "frame rate must be in (0, 1000], got {}",
                options.fps
            )));
        }
        let codec = match options.codec {
            VideoCodec::Auto => {
                encoder::find_by_name("libx264").or_else(|| encoder::find(Id::MPEG4))
            }
            VideoCodec::H264 => encoder::find_by_name("libx264"),
            VideoCodec::Mpeg4 => encoder::find(Id::MPEG4),
        }
        .ok_or_else(|| DecodeError::UnsupportedCodec {
            input: label.clone(),
            codec: format!("{:?} encoder", options.codec).to_lowercase(),
        })?;
        let is_h264 = codec.id() == Id::H264;
        let odd = width % 2 == 1 || height % 2 == 1;
        let pixel = match (options.chroma, is_h264, odd) {
            (Chroma::Yuv444, true, _) => Pixel::YUV444P,
            (Chroma::Yuv444, false, _) => {
                return Err(DecodeError::InvalidOption(
                    "4:4:4 output needs H.264 (libx264)".into(),
                ))
            }
            (Chroma::Yuv420, _, false) => Pixel::YUV420P,
            (Chroma::Yuv420, true, true) => {
                tracing::warn!(
                    width,
                    height,
                    "odd frame size: writing 4:4:4 H.264, since 4:2:0 needs even sizes"
                );
                Pixel::YUV444P
            }
            (Chroma::Yuv420, false, true) => {
                return Err(DecodeError::InvalidOption(format!(
                    "MPEG-4 needs an even frame size, got {width}×{height}"
                )))
            }
        };

        let mut output = format::output(path).map_err(|e| match e {
            ffmpeg::Error::Other { errno } if errno == ffmpeg::util::error::ENOENT => {
                DecodeError::NotFound(path.parent().map(Path::to_path_buf).unwrap_or_default())
            }
            e => DecodeError::ffmpeg(&label, "creating the output", e),
        })?;
        let global_header = output
            .format()
            .flags()
            .contains(format::Flags::GLOBAL_HEADER);
        let encoder_time_base = Rational::new(1, TICKS_PER_SECOND);
        let frame_rate = Rational::from(options.fps);
        let mut context = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(fail("setting up the encoder"))?;
        context.set_width(width);
        context.set_height(height);
        context.set_format(pixel);
        context.set_time_base(encoder_time_base);
        context.set_frame_rate(Some(frame_rate));
        if let Some(interval) = options.keyframe_interval {
            context.set_gop(interval.max(1));
        }
        if global_header {
            context.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        }
        let mut settings = Dictionary::new();
        if is_h264 {
            settings.set("preset", options.preset);
            settings.set("crf", &options.quality.min(51).to_string());
        } else {
            // MPEG-4's qscale runs 1 (best) … 31.
            let qscale = 1 + usize::from(options.quality.min(51)) * 30 / 51;
            context.set_flags(ffmpeg::codec::Flags::QSCALE);
            context.set_quality(qscale * ffmpeg::ffi::FF_QP2LAMBDA as usize);
        }
        let encoder = context
            .open_as_with(codec, settings)
            .map_err(fail("opening the encoder"))?;
        let mut stream = output.add_stream(codec).map_err(fail("adding a stream"))?;
        stream.set_parameters(&encoder);
        stream.set_time_base(encoder_time_base);
        stream.set_avg_frame_rate(frame_rate);
        stream.set_rate(frame_rate);
        output.write_header().map_err(fail("writing the header"))?;
        let stream_time_base = output
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(encoder_time_base);
        let scaler = scaling::Context::get(
            Pixel::RGB24,
            width,
            height,
            pixel,
            width,
            height,
            scaling::Flags::BICUBIC,
        )
        .map_err(fail("setting up the colour converter"))?;
        Ok(VideoWriter {
            path: path.to_owned(),
            codec_name: codec.name().to_owned(),
            output,
            encoder,
            scaler,
            rgb: AvFrame::new(Pixel::RGB24, width, height),
            yuv: AvFrame::empty(),
            width,
            height,
            frame_ticks: (f64::from(TICKS_PER_SECOND) / options.fps).round().max(1.0) as i64,
            encoder_time_base,
            stream_time_base,
            frames: 0,
            last_pts: None,
            finished: false,
        })
    }

    /// The encoder in use (`libx264` or `mpeg4`).
    pub fn codec_name(&self) -> &str {
        &self.codec_name
    }

    pub fn frames_written(&self) -> u64 {
        self.frames
    }

    /// Appends a frame one frame period after the previous one.
    pub fn write(&mut self, rgb: &[u8]) -> Result<()> {
        let pts = self.last_pts.map_or(0, |last| last + self.frame_ticks);
        self.encode(rgb, pts)
    }

    /// Appends a frame at `seconds` (variable frame rate); times must increase.
    pub fn write_at(&mut self, rgb: &[u8], seconds: f64) -> Result<()> {
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(DecodeError::InvalidOption(format!(
                "bad frame time {seconds}"
            )));
        }
        let pts = (seconds * f64::from(TICKS_PER_SECOND)).round() as i64;
        if self.last_pts.is_some_and(|last| pts <= last) {
            return Err(DecodeError::InvalidOption(format!(
                "frame times must increase: {seconds}s after {:.6}s",
                self.last_pts.unwrap_or(0) as f64 / f64::from(TICKS_PER_SECOND)
            )));
        }
        self.encode(rgb, pts)
    }

    fn encode(&mut self, rgb: &[u8], pts: i64) -> Result<()> {
        let row = self.width as usize * 3;
        if rgb.len() != row * self.height as usize {
            return Err(DecodeError::InvalidOption(format!(
                "frame has {} bytes, a {}×{} RGB frame has {}",
                rgb.len(),
                self.width,
                self.height,
                row * self.height as usize
            )));
        }
        let stride = self.rgb.stride(0);
        copy_rows(
            rgb,
            row,
            self.rgb.data_mut(0),
            stride,
            row,
            self.height as usize,
        );
        let label = self.path.display().to_string();
        self.scaler
            .run(&self.rgb, &mut self.yuv)
            .map_err(|e| DecodeError::ffmpeg(&label, "converting to YUV", e))?;
        self.yuv.set_pts(Some(pts));
        self.encoder
            .send_frame(&self.yuv)
            .map_err(|e| DecodeError::ffmpeg(&label, "encoding", e))?;
        self.last_pts = Some(pts);
        self.frames += 1;
        self.write_packets()
    }

    fn write_packets(&mut self) -> Result<()> {
        let mut packet = Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(0);
            // Without a duration the muxer guesses the last frame's length and
            // the file's frame rate comes out wrong.
            packet.set_duration(self.frame_ticks);
            packet.rescale_ts(self.encoder_time_base, self.stream_time_base);
            packet
                .write_interleaved(&mut self.output)
                .map_err(|e| DecodeError::ffmpeg(&self.path.display().to_string(), "writing", e))?;
        }
        Ok(())
    }

    /// Flushes the encoder and writes the container's index; returns the
    /// number of frames written.
    pub fn finish(mut self) -> Result<u64> {
        self.finalize()
    }

    fn finalize(&mut self) -> Result<u64> {
        if self.finished {
            return Ok(self.frames);
        }
        self.finished = true;
        let label = self.path.display().to_string();
        self.encoder
            .send_eof()
            .map_err(|e| DecodeError::ffmpeg(&label, "flushing the encoder", e))?;
        self.write_packets()?;
        self.output
            .write_trailer()
            .map_err(|e| DecodeError::ffmpeg(&label, "writing the trailer", e))?;
        Ok(self.frames)
    }
}

impl Drop for VideoWriter {
    fn drop(&mut self) {
        if let Err(error) = self.finalize() {
            tracing::warn!(path = %self.path.display(), %error, "could not finish the video");
        }
    }
}
