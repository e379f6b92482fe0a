//! Socket Mode: slack-morphism's listener keeps a websocket open to Slack
//! (`apps.connections.open` with the app-level token) and acknowledges each
//! envelope once [`Responder::accept`] has taken it.

use std::sync::Arc;

use slack_morphism::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::respond::Responder;
use crate::{Client, SlackError};

/// Listen until `shutdown` is cancelled.
pub(crate) async fn serve(
    client: Arc<Client>,
    app_token: &str,
    responder: Arc<Responder>,
    shutdown: CancellationToken,
) -> Result<(), SlackError> {
    let environment = Arc::new(
        SlackClientEventsListenerEnvironment::new(client)
            .with_error_handler(on_error)
            .with_user_state(responder),
    );
    let callbacks = SlackSocketModeListenerCallbacks::new().with_push_events(on_push_event);
    // One connection: Slack delivers each event to one of them, and the
    // listener reconnects by itself when Slack refreshes it.
    let config = SlackClientSocketModeConfig::new().with_max_connections_count(1);
    let listener = SlackClientSocketModeListener::new(&config, environment, callbacks);
    let token = SlackApiToken::new(SlackApiTokenValue(app_token.to_string()));
    listener
        .listen_for(&token)
        .await
        .map_err(|e| SlackError::SocketMode(e.to_string()))?;
    listener.start().await;
    tracing::info!("listening to Slack in Socket Mode");
    shutdown.cancelled().await;
    listener.shutdown().await;
    Ok(())
}

async fn on_push_event(
    event: SlackPushEventCallback,
    _client: Arc<Client>,
    state: SlackClientEventsUserState,
) -> UserCallbackResult<()> {
    let responder = state
        .read()
        .await
        .get_user_state::<Arc<Responder>>()
        .cloned();
    if let Some(responder) = responder {
        responder.accept(&event, None);
    }
    Ok(())
}

fn on_error(
    err: Box<dyn std::error::Error + Send + Sync>,
    _client: Arc<Client>,
    _state: SlackClientEventsUserState,
) -> HttpStatusCode {
    tracing::warn!("Slack Socket Mode: {err}");
    HttpStatusCode::OK
}
