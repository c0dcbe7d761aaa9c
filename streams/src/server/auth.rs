//! Bearer-token authentication: `Authorization: Bearer TOKEN`, or
//! `?token=TOKEN` where a client cannot set headers (browsers' WebSockets,
//! the viewer page's own URL). `/healthz` is open to probes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::api::ApiError;
use super::AppState;

pub(crate) async fn authorize(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.config().token.as_deref() else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .or_else(|| request.uri().query().and_then(token_from_query));
    match presented {
        Some(token) if tokens_equal(&token, expected) => next.run(request).await,
        presented => {
            let message = if presented.is_some() {
                "the token is wrong"
            } else {
                "a bearer token is required (Authorization: Bearer TOKEN, or ?token=TOKEN)"
            };
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Compares in time independent of where the tokens differ (the length
/// of the configured token is not secret).
fn tokens_equal(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

fn token_from_query(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .and_then(percent_decode)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(tokens_equal("s3cret", "s3cret"));
        assert!(!tokens_equal("s3creT", "s3cret"));
        assert!(!tokens_equal("s3cre", "s3cret"));
        assert!(!tokens_equal("", "s3cret"));
    }

    #[test]
    fn token_is_found_and_decoded_in_a_query() {
        assert_eq!(
            token_from_query("frames=jpeg&token=a%2Bb%3D").as_deref(),
            Some("a+b=")
        );
        assert_eq!(token_from_query("token=x").as_deref(), Some("x"));
        assert_eq!(token_from_query("frames=jpeg"), None);
        assert_eq!(token_from_query("token=%zz"), None);
    }
}
