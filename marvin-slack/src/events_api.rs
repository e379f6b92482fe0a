//! The Events API over HTTP. Every request's signature is checked here
//! ([`crate::signature::verify`]: HMAC-SHA256 of `v0:{timestamp}:{raw body}`,
//! five-minute window, constant-time compare) before its body is even
//! parsed; a request that fails gets 401 and starts nothing. slack-morphism's
//! own events layer is not used: it sends a failed check to the listener's
//! one error handler, which picks the status for every kind of error alike,
//! whereas here the 401 path is explicit and the check a pure, tested function.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use slack_morphism::prelude::SlackPushEvent;
use tokio_util::sync::CancellationToken;

use crate::SlackError;
use crate::respond::Responder;
use crate::signature;

struct Endpoint {
    signing_secret: Vec<u8>,
    responder: Arc<Responder>,
}

/// Listen on `addr` until `shutdown` is cancelled.
pub(crate) async fn serve(
    addr: SocketAddr,
    signing_secret: &[u8],
    responder: Arc<Responder>,
    shutdown: CancellationToken,
) -> Result<(), SlackError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| SlackError::Bind {
            addr,
            reason: e.to_string(),
        })?;
    let endpoint = Arc::new(Endpoint {
        signing_secret: signing_secret.to_vec(),
        responder,
    });
    let app = Router::new().fallback(receive).with_state(endpoint);
    tracing::info!(%addr, "listening for Slack events over HTTP");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(|e| SlackError::Bind {
            addr,
            reason: e.to_string(),
        })
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(
    State(endpoint): State<Arc<Endpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if let Err(e) = signature::verify(
        &endpoint.signing_secret,
        header(&headers, "x-slack-request-timestamp"),
        header(&headers, "x-slack-signature"),
        &body,
        now,
    ) {
        tracing::warn!("rejected a Slack events request: {e}");
        return (StatusCode::UNAUTHORIZED, "invalid Slack signature").into_response();
    }
    let retry = header(&headers, "x-slack-retry-num").and_then(|n| n.parse::<u32>().ok());
    match serde_json::from_slice::<SlackPushEvent>(&body) {
        Ok(SlackPushEvent::UrlVerification(v)) => {
            axum::Json(serde_json::json!({ "challenge": v.challenge })).into_response()
        }
        Ok(SlackPushEvent::EventCallback(event)) => {
            // Acknowledged at once whatever happens next: a slow answer must
            // not make Slack retry.
            endpoint.responder.accept(&event, retry);
            StatusCode::OK.into_response()
        }
        Ok(SlackPushEvent::AppRateLimited(_)) => {
            tracing::warn!("Slack is rate-limiting this app's events");
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::warn!("a signed Slack request Marvin does not understand: {e}");
            (StatusCode::BAD_REQUEST, "unknown Slack event").into_response()
        }
    }
}
