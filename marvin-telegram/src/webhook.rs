//! The webhook endpoint: an axum handler of our own (teloxide's compares
//! the secret token in variable time), so a request without the right
//! `X-Telegram-Bot-Api-Secret-Token` gets 401 before its body is read as an
//! update, and accepted updates take the same path as polled ones.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use teloxide::types::Update;
use tokio_util::sync::CancellationToken;

use crate::handle::Handler;
use crate::{TelegramError, WebhookConfig};

/// The header Telegram sends the secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

#[derive(Clone)]
struct Endpoint {
    secret: Arc<[u8]>,
    handler: Arc<Handler>,
}

/// Serve the webhook until `shutdown` is cancelled.
pub(crate) async fn serve(
    cfg: &WebhookConfig,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
) -> Result<(), TelegramError> {
    let path = match cfg.url.path() {
        "" => "/",
        p => p,
    };
    let app = Router::new()
        .route(path, post(receive))
        .with_state(Endpoint {
            secret: Arc::from(cfg.secret.as_bytes()),
            handler,
        });
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| TelegramError::Listen {
            addr: cfg.listen,
            source,
        })?;
    tracing::info!("webhook: listening on {} for {}", cfg.listen, cfg.url);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(TelegramError::Serve)
}

async fn receive(State(ep): State<Endpoint>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same_secret(given, &ep.secret) {
        tracing::warn!("webhook: a request without the right secret token was refused");
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<Update>(&body) {
        Ok(update) => {
            ep.handler.accept(update);
            StatusCode::OK
        }
        Err(e) => {
            tracing::warn!("webhook: not an update: {e}");
            StatusCode::BAD_REQUEST
        }
    }
}

/// Compare in time that depends only on the lengths, not on where the
/// first difference is. Public for the fuzz target only.
pub fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let diff = given
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3creT", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
