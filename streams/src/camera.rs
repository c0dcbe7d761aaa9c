//! A synthetic live camera: a synthetic video served as MJPEG over HTTP
//! (`multipart/x-mixed-replace`, what many IP cameras send), always showing
//! the frame of the current moment, looping. It stands in for a real
//! camera in tests, benchmarks and first tries of `owltrack serve`: a
//! client that reconnects resumes where the scene is now, as with a real
//! camera.

use std::sync::Arc;
use std::time::{Duration, Instant};

use owltrack_decoder::image;
use owltrack_tracker::synth::{SynthConfig, VideoWorld};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The camera's frames, JPEG-encoded once, and its frame rate.
#[derive(Clone)]
pub struct CameraFeed {
    frames: Arc<Vec<Vec<u8>>>,
    fps: f64,
}

impl CameraFeed {
    /// Renders video `index` of the synthetic world `config` (its size,
    /// length and seed) and encodes every frame; played at `fps`.
    pub fn synthetic(config: &SynthConfig, index: usize, fps: f64) -> Result<Self, String> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(format!("the frame rate must be positive, got {fps}"));
        }
        let world = VideoWorld::new(config, index).map_err(|e| e.to_string())?;
        let frames = (0..config.frames as usize)
            .map(|frame| {
                let (rgb, _) = world.render(frame);
                image::encode_jpeg(&rgb, config.width, config.height, 85).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        if frames.is_empty() {
            return Err("the camera needs at least one frame".into());
        }
        Ok(CameraFeed {
            frames: Arc::new(frames),
            fps,
        })
    }

    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// Serves every connection on `listener` until the returned future is
    /// dropped (which cuts them all, as a camera that goes away would).
    pub async fn serve(self, listener: TcpListener) {
        let started = Instant::now();
        let mut connections = JoinSet::new();
        loop {
            let Ok((connection, _)) = listener.accept().await else {
                return;
            };
            let feed = self.clone();
            connections.spawn(async move {
                if let Err(error) = feed.stream_to(connection, started).await {
                    tracing::debug!(%error, "camera client left");
                }
            });
            // Reap finished connections so the set stays small.
            while connections.try_join_next().is_some() {}
        }
    }

    async fn stream_to(&self, mut connection: TcpStream, started: Instant) -> std::io::Result<()> {
        let mut request = [0u8; 4096];
        let _ = connection.read(&mut request).await?;
        connection
            .write_all(
                b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=frame\r\nCache-Control: no-cache\r\n\r\n",
            )
            .await?;
        let period = Duration::from_secs_f64(1.0 / self.fps);
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            ticks.tick().await;
            let index = (started.elapsed().as_secs_f64() * self.fps) as usize % self.frames.len();
            let jpeg = &self.frames[index];
            let head = format!(
                "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                jpeg.len()
            );
            connection.write_all(head.as_bytes()).await?;
            connection.write_all(jpeg).await?;
            connection.write_all(b"\r\n").await?;
        }
    }
}
