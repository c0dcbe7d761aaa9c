//! `owltrack serve`: REST control of live streams, their tracks over
//! WebSocket, Prometheus metrics, an OpenAPI document and a viewer page.

mod api;
mod auth;
pub mod policy;
mod socket;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use owltrack_models::Query;
use owltrack_tracker::tbd::TrackerConfig;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

use crate::inference::Inference;
use crate::session::{Session, SessionState};
pub use api::ApiDoc;
pub use policy::SourcePolicy;

/// Everything a server enforces.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Clients must present this bearer token (all routes but `/healthz`).
    pub token: Option<String>,
    pub sources: SourcePolicy,
    /// Streams that may run at once.
    pub max_streams: usize,
    /// WebSocket clients per stream.
    pub max_clients: usize,
    pub max_queries: usize,
    /// Characters per query.
    pub max_query_chars: usize,
    /// Largest request body (image queries included) and WebSocket message.
    pub max_message_bytes: usize,
    /// Updates a WebSocket client may fall behind before it skips ahead.
    pub client_buffer: usize,
    /// The kernel's send buffer per connection, in bytes (None: the
    /// system's, which grows to megabytes): a slow client's backlog then
    /// stays in the bounded per-client queue, where it is noticed and
    /// skipped, rather than in kernel memory.
    pub socket_send_buffer: Option<usize>,
    /// Trackers and post-processing of new streams unless a request says
    /// otherwise.
    pub tracker: TrackerConfig,
    pub nms_iou: f32,
    pub label_score: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            sources: SourcePolicy::default(),
            max_streams: 16,
            max_clients: 64,
            max_queries: 32,
            max_query_chars: 200,
            max_message_bytes: 4 << 20,
            client_buffer: 64,
            socket_send_buffer: Some(256 << 10),
            tracker: TrackerConfig::default(),
            nms_iou: 0.5,
            label_score: 0.1,
        }
    }
}

/// One stream the server runs.
pub(crate) struct StreamEntry {
    pub id: String,
    /// As the client gave it, with credentials redacted.
    pub source: String,
    pub created_at_ms: u128,
    pub session: Session,
    /// Example-image queries, kept when a client changes only the texts.
    pub image_queries: Mutex<Vec<Query>>,
}

/// The server's shared state.
pub struct AppState {
    config: ServerConfig,
    inference: Inference,
    streams: Mutex<BTreeMap<String, Arc<StreamEntry>>>,
    /// Streams being opened (they count against the limit).
    opening: AtomicUsize,
    next_id: AtomicU64,
    clients: AtomicUsize,
    clients_done: Notify,
    shutdown: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn is_active(state: SessionState) -> bool {
    matches!(
        state,
        SessionState::Starting | SessionState::Running | SessionState::Reconnecting
    )
}

impl AppState {
    pub fn new(inference: Inference, config: ServerConfig) -> Arc<Self> {
        Arc::new(AppState {
            config,
            inference,
            streams: Mutex::new(BTreeMap::new()),
            opening: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            clients: AtomicUsize::new(0),
            clients_done: Notify::new(),
            shutdown: watch::channel(false).0,
        })
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    pub(crate) fn stream(&self, id: &str) -> Option<Arc<StreamEntry>> {
        lock(&self.streams).get(id).cloned()
    }

    pub(crate) fn all_streams(&self) -> Vec<Arc<StreamEntry>> {
        lock(&self.streams).values().cloned().collect()
    }

    /// Reserves a slot for a new stream, or says the server is full.
    pub(crate) fn reserve_stream(&self) -> Option<StreamSlot<'_>> {
        let streams = lock(&self.streams);
        let active = streams
            .values()
            .filter(|s| is_active(s.session.status().state))
            .count();
        if active + self.opening.load(Ordering::SeqCst) >= self.config.max_streams {
            return None;
        }
        self.opening.fetch_add(1, Ordering::SeqCst);
        Some(StreamSlot { state: self })
    }

    pub(crate) fn insert(&self, make: impl FnOnce(String) -> StreamEntry) -> Arc<StreamEntry> {
        let id = format!("s{}", self.next_id.fetch_add(1, Ordering::SeqCst));
        let entry = Arc::new(make(id.clone()));
        lock(&self.streams).insert(id, Arc::clone(&entry));
        entry
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Arc<StreamEntry>> {
        lock(&self.streams).remove(id)
    }

    pub(crate) fn inference(&self) -> &Inference {
        &self.inference
    }

    pub(crate) fn client_connected(&self) {
        self.clients.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn client_disconnected(&self) {
        if self.clients.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.clients_done.notify_waiters();
        }
    }

    pub(crate) fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    pub(crate) fn shutting_down(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every WebSocket client the server is going away and waits (a
    /// few seconds at most) for them to be told; then stops every stream.
    pub async fn shut_down(&self) {
        self.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.clients() > 0 {
            let waited = tokio::time::timeout_at(deadline, self.clients_done.notified()).await;
            if waited.is_err() {
                tracing::warn!(
                    clients = self.clients(),
                    "clients still connected at shutdown"
                );
                break;
            }
        }
        let streams: Vec<_> = std::mem::take(&mut *lock(&self.streams))
            .into_values()
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for entry in &streams {
                entry.session.stop();
            }
        })
        .await;
    }
}

/// A reserved place for a stream being opened; released when dropped.
pub(crate) struct StreamSlot<'a> {
    state: &'a AppState,
}

impl Drop for StreamSlot<'_> {
    fn drop(&mut self) {
        self.state.opening.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The routes, with authentication and the body limit.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.max_message_bytes;
    Router::new()
        .route("/", get(api::viewer))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/v1/openapi.json", get(api::openapi))
        .route(
            "/v1/streams",
            get(api::list_streams).post(api::create_stream),
        )
        .route(
            "/v1/streams/{id}",
            get(api::get_stream)
                .patch(api::patch_stream)
                .delete(api::delete_stream),
        )
        .route("/v1/streams/{id}/ws", get(socket::stream_socket))
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::authorize,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` completes, then tells clients,
/// drains and stops every stream.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&state));
    let (stopped, mut stopped_rx) = watch::channel(false);
    let draining = Arc::clone(&state);
    let signal = async move {
        shutdown.await;
        draining.shut_down().await;
        stopped.send_replace(true);
    };
    let send_buffer = state.config.socket_send_buffer;
    let listener = listener.tap_io(move |connection: &mut tokio::net::TcpStream| {
        // Updates are small and latency matters more than packet count.
        if let Err(error) = connection.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        if let Some(size) = send_buffer {
            if let Err(error) = socket2::SockRef::from(&*connection).set_send_buffer_size(size) {
                tracing::debug!(%error, "cannot bound the socket's send buffer");
            }
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    server.await?;
    // The signal future may have been dropped before it finished draining
    // only if the server failed; otherwise it ran to the end.
    if !*stopped_rx.borrow_and_update() {
        state.shut_down().await;
    }
    Ok(())
}
