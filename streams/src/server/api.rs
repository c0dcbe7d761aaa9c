//! The REST side: streams created, listed, changed and deleted; health,
//! metrics, the OpenAPI document and the viewer page.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use owltrack_decoder::image;
use owltrack_models::Query;
use owltrack_tracker::tbd::TrackerConfig;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

use super::{unix_millis, AppState, StreamEntry};
use crate::metrics::Exposition;
use crate::session::{Session, SessionConfig, SessionStatus};

/// Every error's body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn unknown_stream(id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("no stream {id}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// An example image standing for what to find.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageQuery {
    /// The label its tracks get.
    pub name: String,
    /// A JPEG or PNG, base64-encoded.
    pub image: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StreamOptions {
    /// Process every frame, waiting for inference, instead of keeping only
    /// the newest (for files: the same tracks as `owltrack track`).
    pub every_frame: bool,
    /// Read a file no faster than its own clock, as a camera sends.
    pub native_rate: bool,
    /// JPEG quality (1–100) of the frames sent to viewers.
    pub jpeg_quality: Option<u8>,
    /// `detection` (default) or `recurrent` (the model's video decoder
    /// follows objects with its query slots).
    pub tracker: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStream {
    /// A network URL (rtsp, http(s), hls, rtmp, srt, udp, rtp) or a file or
    /// frame folder under the server's `--allow-files` folder.
    pub source: String,
    /// Free-text queries, such as "a red car".
    #[serde(default)]
    pub queries: Vec<String>,
    #[serde(default)]
    pub image_queries: Vec<ImageQuery>,
    /// Tracker settings (`owltrack track`'s flags, snake_case); missing
    /// ones keep the server's defaults.
    #[schema(value_type = Option<Object>)]
    pub tracker: Option<serde_json::Value>,
    #[serde(default)]
    pub options: StreamOptions,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeQueries {
    pub queries: Vec<String>,
    /// Replaces the example-image queries; absent: they stay.
    pub image_queries: Option<Vec<ImageQuery>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamInfo {
    pub id: String,
    pub source: String,
    pub created_at_ms: u64,
    #[serde(flatten)]
    pub status: SessionStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub streams: usize,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "owltrack",
        description = "Open-vocabulary video tracking: live streams, their tracks over WebSocket (GET /v1/streams/{id}/ws)."
    ),
    paths(create_stream, list_streams, get_stream, patch_stream, delete_stream, healthz, metrics),
    components(schemas(CreateStream, ChangeQueries, ImageQuery, StreamOptions, Created, StreamInfo, StreamList, ErrorBody, Health)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))
}

fn info(entry: &StreamEntry) -> StreamInfo {
    StreamInfo {
        id: entry.id.clone(),
        source: entry.source.clone(),
        created_at_ms: u64::try_from(entry.created_at_ms).unwrap_or(u64::MAX),
        status: entry.session.status(),
    }
}

/// Text queries checked against the server's limits, then the example
/// images decoded.
fn build_queries(
    state: &AppState,
    texts: Vec<String>,
    images: Vec<ImageQuery>,
) -> Result<Vec<Query>, ApiError> {
    let config = state.config();
    if texts.len() + images.len() == 0 {
        return Err(ApiError::bad_request("a stream needs at least one query"));
    }
    if texts.len() + images.len() > config.max_queries {
        return Err(ApiError::bad_request(format!(
            "at most {} queries per stream",
            config.max_queries
        )));
    }
    let mut queries = Vec::with_capacity(texts.len() + images.len());
    for text in texts {
        let text = text.trim().to_owned();
        check_query_name(state, &text)?;
        queries.push(Query::Text(text));
    }
    for image in images {
        check_query_name(state, &image.name)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(image.image.trim())
            .map_err(|e| {
                ApiError::bad_request(format!("image query {:?}: not base64: {e}", image.name))
            })?;
        let (rgb, width, height) = image::decode_image(&bytes)
            .map_err(|e| ApiError::bad_request(format!("image query {:?}: {e}", image.name)))?;
        queries.push(Query::Image {
            name: image.name,
            rgb,
            width,
            height,
        });
    }
    let mut names: Vec<&str> = queries.iter().map(Query::name).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|w| w[0] == w[1]) {
        return Err(ApiError::bad_request(format!(
            "the query {:?} is given twice",
            pair[0]
        )));
    }
    Ok(queries)
}

fn check_query_name(state: &AppState, text: &str) -> Result<(), ApiError> {
    let limit = state.config().max_query_chars;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("a query is empty"));
    }
    if text.chars().count() > limit {
        return Err(ApiError::bad_request(format!(
            "a query is longer than {limit} characters"
        )));
    }
    Ok(())
}

fn tracker_config(
    state: &AppState,
    overrides: Option<serde_json::Value>,
) -> Result<TrackerConfig, ApiError> {
    let mut merged = serde_json::to_value(&state.config().tracker)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Some(overrides) = overrides {
        let serde_json::Value::Object(fields) = overrides else {
            return Err(ApiError::bad_request("tracker must be an object"));
        };
        let serde_json::Value::Object(base) = &mut merged else {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the tracker defaults are not an object",
            ));
        };
        for (key, value) in fields {
            if !base.contains_key(&key) {
                return Err(ApiError::bad_request(format!(
                    "unknown tracker setting {key:?} (known: {})",
                    base.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            base.insert(key, value);
        }
    }
    let config: TrackerConfig = serde_json::from_value(merged)
        .map_err(|e| ApiError::bad_request(format!("tracker: {e}")))?;
    owltrack_tracker::tbd::DetectionTracker::new(config.clone())
        .map_err(|e| ApiError::bad_request(format!("tracker: {e}")))?;
    Ok(config)
}

#[utoipa::path(
    post,
    path = "/v1/streams",
    request_body = CreateStream,
    responses(
        (status = 201, description = "The stream runs", body = Created),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 403, description = "The source is not allowed", body = ErrorBody),
        (status = 422, description = "The source could not be opened", body = ErrorBody),
        (status = 429, description = "Too many streams", body = ErrorBody)
    )
)]
pub(crate) async fn create_stream(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let request: CreateStream = parse_json(&body)?;
    let source = state
        .config()
        .sources
        .check(&request.source)
        .map_err(|e| ApiError::new(StatusCode::FORBIDDEN, e))?;
    let queries = build_queries(&state, request.queries, request.image_queries)?;
    let tracker = tracker_config(&state, request.tracker)?;
    let recurrent = match request.options.tracker.as_deref() {
        None | Some("detection") => None,
        Some("recurrent") if state.inference().has_decoder() => Some(Default::default()),
        Some("recurrent") => {
            return Err(ApiError::bad_request(
                "the recurrent tracker needs a model with a video decoder",
            ))
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown tracker {other:?}: detection or recurrent"
            )))
        }
    };
    let quality = request.options.jpeg_quality.unwrap_or(75);
    if !(1..=100).contains(&quality) {
        return Err(ApiError::bad_request("jpeg_quality must be 1–100"));
    }
    let Some(slot) = state.reserve_stream() else {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the server runs its limit of {} streams",
                state.config().max_streams
            ),
        ));
    };
    let image_queries: Vec<Query> = queries
        .iter()
        .filter(|q| matches!(q, Query::Image { .. }))
        .cloned()
        .collect();
    let display = source.to_string();
    let config = SessionConfig {
        tracker,
        nms_iou: state.config().nms_iou,
        label_score: state.config().label_score,
        native_rate: request.options.native_rate,
        every_frame: request.options.every_frame,
        subscriber_buffer: state.config().client_buffer,
        jpeg_quality: quality,
        recurrent,
        ..SessionConfig::new(source, queries)
    };
    let inference = state.inference().clone();
    // Opening a source connects and probes: seconds for a slow camera.
    let session = tokio::task::spawn_blocking(move || Session::start(inference, config))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot open the source: {e}"),
            )
        })?;
    let entry = state.insert(|id| StreamEntry {
        id,
        source: display,
        created_at_ms: unix_millis(),
        session,
        image_queries: std::sync::Mutex::new(image_queries),
    });
    drop(slot);
    tracing::info!(id = %entry.id, source = %entry.source, "stream created");
    Ok((
        StatusCode::CREATED,
        Json(Created {
            id: entry.id.clone(),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/streams", responses((status = 200, body = StreamList)))]
pub(crate) async fn list_streams(State(state): State<Arc<AppState>>) -> Json<StreamList> {
    Json(StreamList {
        streams: state.all_streams().iter().map(|e| info(e)).collect(),
    })
}

#[utoipa::path(
    get,
    path = "/v1/streams/{id}",
    params(("id" = String, Path, description = "The stream's id")),
    responses((status = 200, body = StreamInfo), (status = 404, body = ErrorBody))
)]
pub(crate) async fn get_stream(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<StreamInfo>, ApiError> {
    let entry = state
        .stream(&id)
        .ok_or_else(|| ApiError::unknown_stream(&id))?;
    Ok(Json(info(&entry)))
}

/// Changes a stream's queries (shared by PATCH and the WebSocket's
/// `set_queries`); tracks of queries that stay keep their ids.
pub(crate) fn change_queries(
    state: &AppState,
    entry: &StreamEntry,
    texts: Vec<String>,
    images: Option<Vec<ImageQuery>>,
) -> Result<(), ApiError> {
    let mut kept = super::lock(&entry.image_queries);
    let mut queries = build_queries(state, texts, images.unwrap_or_default())?;
    let replaces_images = queries.iter().any(|q| matches!(q, Query::Image { .. }));
    if !replaces_images {
        queries.extend(kept.iter().cloned());
    }
    entry
        .session
        .set_queries(queries.clone())
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    *kept = queries
        .into_iter()
        .filter(|q| matches!(q, Query::Image { .. }))
        .collect();
    Ok(())
}

#[utoipa::path(
    patch,
    path = "/v1/streams/{id}",
    params(("id" = String, Path, description = "The stream's id")),
    request_body = ChangeQueries,
    responses(
        (status = 200, description = "Takes effect from the next frame; updates carry the new query_version", body = StreamInfo),
        (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The stream has ended", body = ErrorBody)
    )
)]
pub(crate) async fn patch_stream(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<StreamInfo>, ApiError> {
    let entry = state
        .stream(&id)
        .ok_or_else(|| ApiError::unknown_stream(&id))?;
    let request: ChangeQueries = parse_json(&body)?;
    let previous = entry.session.status().query_version;
    change_queries(&state, &entry, request.queries, request.image_queries)?;
    // The stream applies the change between frames (and at least every
    // 100 ms while it waits for one): answer with the new version.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = entry.session.status();
        if status.query_version != previous || !super::is_active(status.state) {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(%id, "the stream did not apply the new queries within 10 s");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(Json(info(&entry)))
}

#[utoipa::path(
    delete,
    path = "/v1/streams/{id}",
    params(("id" = String, Path, description = "The stream's id")),
    responses((status = 204, description = "Stopped; its clients got `ended`"), (status = 404, body = ErrorBody))
)]
pub(crate) async fn delete_stream(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let entry = state
        .remove(&id)
        .ok_or_else(|| ApiError::unknown_stream(&id))?;
    tokio::task::spawn_blocking(move || entry.session.stop())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!(%id, "stream deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, body = Health)))]
pub(crate) async fn healthz(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        streams: state.all_streams().len(),
    })
}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let mut e = Exposition::default();
    let streams = state.all_streams();
    let statuses: Vec<(String, SessionStatus, u64)> = streams
        .iter()
        .map(|s| {
            (
                s.id.clone(),
                s.session.status(),
                s.session.messages_dropped(),
            )
        })
        .collect();
    type Field = fn(&SessionStatus, u64) -> f64;
    let per_stream: [(&str, &str, &str, Field); 7] = [
        (
            "owltrack_stream_fps",
            "gauge",
            "Frames processed per second over the last seconds.",
            |s, _| s.fps,
        ),
        (
            "owltrack_stream_frames_total",
            "counter",
            "Frames processed.",
            |s, _| s.frames as f64,
        ),
        (
            "owltrack_stream_frames_dropped_total",
            "counter",
            "Frames the live queue dropped because inference was slower than the source.",
            |s, _| s.frames_dropped as f64,
        ),
        (
            "owltrack_stream_messages_dropped_total",
            "counter",
            "Messages skipped by clients that fell a whole buffer behind.",
            |_, d| d as f64,
        ),
        (
            "owltrack_stream_reconnects_total",
            "counter",
            "Times the source was reconnected.",
            |s, _| s.reconnects as f64,
        ),
        (
            "owltrack_stream_clients",
            "gauge",
            "WebSocket clients subscribed.",
            |s, _| s.subscribers as f64,
        ),
        (
            "owltrack_stream_running",
            "gauge",
            "1 while the stream runs (or reconnects), 0 once it ended or failed.",
            |s, _| f64::from(u8::from(super::is_active(s.state))),
        ),
    ];
    for (name, kind, help, field) in per_stream {
        e.family(name, kind, help);
        for (id, status, dropped) in &statuses {
            e.sample(name, &[("stream", id)], field(status, *dropped));
        }
    }
    e.family(
        "owltrack_stream_latency_ms",
        "histogram",
        "End-to-end latency, from the decoder delivering a frame to its update being sent, in milliseconds.",
    );
    for (id, status, _) in &statuses {
        e.histogram(
            "owltrack_stream_latency_ms",
            &[("stream", id)],
            &status.latency_histogram,
        );
    }
    let inference = state.inference();
    let stats = inference.stats();
    e.family(
        "owltrack_inference_queue_depth",
        "gauge",
        "Requests waiting for the inference worker.",
    );
    e.sample(
        "owltrack_inference_queue_depth",
        &[],
        inference.queue_depth() as f64,
    );
    e.family(
        "owltrack_inference_frames_total",
        "counter",
        "Frames through the model.",
    );
    e.sample(
        "owltrack_inference_frames_total",
        &[],
        stats.frames.load(Ordering::Relaxed) as f64,
    );
    e.family(
        "owltrack_inference_batches_total",
        "counter",
        "Backbone passes (frames of several streams share one).",
    );
    e.sample(
        "owltrack_inference_batches_total",
        &[],
        stats.batches.load(Ordering::Relaxed) as f64,
    );
    e.family(
        "owltrack_inference_busy_seconds_total",
        "counter",
        "Time the model was busy.",
    );
    e.sample(
        "owltrack_inference_busy_seconds_total",
        &[],
        stats.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
    );
    e.family("owltrack_clients", "gauge", "WebSocket clients connected.");
    e.sample("owltrack_clients", &[], state.clients() as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        e.finish(),
    )
        .into_response()
}

pub(crate) async fn openapi() -> Response {
    match ApiDoc::openapi().to_pretty_json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub(crate) async fn viewer() -> Html<&'static str> {
    Html(include_str!("viewer.html"))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route (see /v1/openapi.json)",
    )
}
