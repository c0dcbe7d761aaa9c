//! `GET /v1/streams/{id}/ws`: one JSON message per processed frame and the
//! stream's events; with `?frames=jpeg` each update is preceded by its
//! frame as a binary JPEG message. Clients may send `set_queries`,
//! `status` and `ping`; a bad message gets an `error` back and the
//! connection stays.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;

use super::api::{change_queries, ApiError, ImageQuery};
use super::{AppState, StreamEntry};
use crate::fanout::Delivery;
use crate::session::StreamSubscription;

#[derive(Debug, Deserialize)]
pub(crate) struct SocketParams {
    /// `jpeg` to receive frames.
    frames: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMessage {
    SetQueries {
        queries: Vec<String>,
        #[serde(default)]
        image_queries: Option<Vec<ImageQuery>>,
    },
    Status,
    Ping,
}

pub(crate) async fn stream_socket(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(params): Query<SocketParams>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let entry = state
        .stream(&id)
        .ok_or_else(|| ApiError::unknown_stream(&id))?;
    let frames = match params.frames.as_deref() {
        None | Some("none") => false,
        Some("jpeg") => true,
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("frames={other}: only `jpeg` or `none`"),
            ))
        }
    };
    if entry.session.status().subscribers >= state.config().max_clients {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "the stream has its limit of {} clients",
                state.config().max_clients
            ),
        ));
    }
    // Subscribed before the upgrade completes, so no update is missed.
    let subscription = entry.session.subscribe(frames);
    let limit = state.config().max_message_bytes;
    state.client_connected();
    Ok(upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_failed_upgrade({
            let state = Arc::clone(&state);
            move |error| {
                tracing::debug!(%error, "WebSocket upgrade failed");
                state.client_disconnected();
            }
        })
        .on_upgrade(move |socket| async move {
            serve_client(socket, &state, &entry, subscription, frames).await;
            state.client_disconnected();
        }))
}

async fn serve_client(
    socket: WebSocket,
    state: &AppState,
    entry: &StreamEntry,
    mut subscription: StreamSubscription,
    frames: bool,
) {
    let (mut sink, mut incoming) = socket.split();
    let mut shutdown = state.shutting_down();
    loop {
        tokio::select! {
            delivery = subscription.recv() => {
                let sent = match delivery {
                    Some(Delivery::Message(message)) => {
                        let mut sent = Ok(());
                        if let (true, Some(jpeg)) = (frames, &message.jpeg) {
                            sent = sink.send(Message::Binary(jpeg.clone().into())).await;
                        }
                        if sent.is_ok() {
                            sent = sink.send(Message::Text(message.json.clone().into())).await;
                        }
                        sent
                    }
                    Some(Delivery::Lagged(count)) => {
                        let lagged = json!({"type": "event", "event": "lagged", "count": count});
                        sink.send(Message::Text(lagged.to_string().into())).await
                    }
                    None => {
                        let _ = sink.send(close("the stream ended")).await;
                        break;
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
            message = incoming.next() => {
                let reply = match message {
                    Some(Ok(Message::Text(text))) => answer(state, entry, &text),
                    Some(Ok(Message::Binary(_))) => Some(error("binary messages are not understood; send JSON text")),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                };
                if let Some(reply) = reply {
                    if sink.send(Message::Text(reply.to_string().into())).await.is_err() {
                        break;
                    }
                }
            }
            _ = shutdown.changed() => {
                let notice = json!({"type": "event", "event": "shutdown"});
                let _ = sink.send(Message::Text(notice.to_string().into())).await;
                let _ = sink.send(close("the server is shutting down")).await;
                break;
            }
        }
    }
}

fn close(reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: axum::extract::ws::close_code::AWAY,
        reason: reason.into(),
    }))
}

fn error(message: impl Into<String>) -> serde_json::Value {
    json!({"type": "error", "message": message.into()})
}

fn answer(state: &AppState, entry: &StreamEntry, text: &str) -> Option<serde_json::Value> {
    let message: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return Some(error(format!(
                "bad message: {e} (expected {{\"type\":\"set_queries\",\"queries\":[…]}}, {{\"type\":\"status\"}} or {{\"type\":\"ping\"}})"
            )))
        }
    };
    Some(match message {
        ClientMessage::Ping => json!({"type": "pong"}),
        ClientMessage::Status => json!({
            "type": "status",
            "status": serde_json::to_value(entry.session.status()).unwrap_or_default(),
        }),
        ClientMessage::SetQueries {
            queries,
            image_queries,
        } => match change_queries(state, entry, queries, image_queries) {
            Ok(()) => json!({"type": "ack", "request": "set_queries"}),
            Err(e) => error(e.message()),
        },
    })
}
