use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use owltrack_streams::server::{serve, AppState, ServerConfig, SourcePolicy};
use owltrack_streams::Inference;

use crate::runtime::ModelArgs;

#[derive(Args)]
pub struct ServeArgs {
    /// Address and port to listen on. Binding beyond loopback exposes the
    /// service: set a token then.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    #[command(flatten)]
    pub model: ModelArgs,
    /// A file holding the bearer token clients must send (Authorization:
    /// Bearer TOKEN, or ?token=TOKEN); every route but /healthz needs it.
    #[arg(long, value_name = "FILE", env = "OWLTRACK_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Streams that may run at once.
    #[arg(long, default_value_t = 16)]
    pub max_streams: usize,
    /// WebSocket clients per stream.
    #[arg(long, default_value_t = 64)]
    pub max_clients: usize,
    /// Queries per stream.
    #[arg(long, default_value_t = 32)]
    pub max_queries: usize,
    /// Characters per query.
    #[arg(long, default_value_t = 200)]
    pub max_query_chars: usize,
    /// Largest request body or WebSocket message, in bytes (image queries
    /// travel base64-encoded in request bodies).
    #[arg(long, default_value_t = 4 << 20)]
    pub max_message_bytes: usize,
    /// Updates a WebSocket client may fall behind before it skips to the
    /// newest (it is then sent a `lagged` event with the count).
    #[arg(long, default_value_t = 64)]
    pub client_buffer: usize,
    /// The kernel's send buffer per connection, in KiB (0: the system's,
    /// which grows to megabytes and hides a slow client for seconds).
    #[arg(long, default_value_t = 256)]
    pub socket_buffer_kib: usize,
    /// Let clients open files and frame folders under this folder (paths
    /// relative to it, or absolute inside it). Without it only network
    /// URLs are accepted.
    #[arg(long, value_name = "DIR")]
    pub allow_files: Option<PathBuf>,
    /// Let clients open capture devices (/dev/videoN).
    #[arg(long)]
    pub allow_devices: bool,
    /// Network URL schemes clients may use (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rtsp,rtsps,rtmp,rtmps,http,https,srt,udp,rtp"
    )]
    pub schemes: Vec<String>,
    /// Frames of different streams that may share one backbone pass (1:
    /// no batching). Batches never wait for frames: only frames already
    /// queued are grouped.
    #[arg(long, default_value_t = 4)]
    pub max_batch: usize,
}

pub fn run(args: ServeArgs) -> Result<()> {
    let token = match &args.token_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?;
            let token = text.trim().to_owned();
            if token.is_empty() {
                bail!("the token file {} is empty", file.display());
            }
            Some(token)
        }
        None => None,
    };
    if token.is_none() && !args.bind.ip().is_loopback() {
        tracing::warn!(bind = %args.bind, "serving beyond loopback without a token: anyone who can reach this address can start streams");
    }
    let mut sources = SourcePolicy {
        schemes: args
            .schemes
            .iter()
            .map(|s| s.trim().to_ascii_lowercase())
            .collect(),
        allow_devices: args.allow_devices,
        ..SourcePolicy::default()
    };
    if let Some(root) = &args.allow_files {
        sources = sources
            .with_files_root(root)
            .with_context(|| format!("--allow-files {}", root.display()))?;
    }
    let config = ServerConfig {
        token,
        sources,
        max_streams: args.max_streams.max(1),
        max_clients: args.max_clients.max(1),
        max_queries: args.max_queries.max(1),
        max_query_chars: args.max_query_chars.max(1),
        max_message_bytes: args.max_message_bytes.max(1024),
        client_buffer: args.client_buffer.max(1),
        socket_send_buffer: (args.socket_buffer_kib > 0).then_some(args.socket_buffer_kib << 10),
        ..ServerConfig::default()
    };
    let detector = args.model.load()?;
    let inference =
        Inference::start(detector, args.max_batch).context("cannot start the inference worker")?;
    let runtime = crate::runtime::async_runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("cannot listen on {}", args.bind))?;
        let address = listener.local_addr()?;
        eprintln!("owltrack serving on http://{address}/ (viewer at /, API at /v1, OpenAPI at /v1/openapi.json)");
        let state = AppState::new(inference, config);
        serve(listener, state, shutdown_signal()).await?;
        eprintln!("owltrack stopped");
        Ok(())
    })
}

/// Ctrl-C or SIGTERM (what service managers send).
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    eprintln!("owltrack: shutting down (telling clients, draining)");
}
