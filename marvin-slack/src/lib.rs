//! Marvin's Slack front end: Slack events in, marvin-core's chat dispatcher
//! ([`marvin_core::chat::Chat`]) in the middle, Slack messages out.
//!
//! It listens in Socket Mode (the default: an outgoing websocket, no public
//! URL) or over the Events API (HTTP requests verified by their signature,
//! [`signature`]). Mentions of the bot and direct messages become
//! [`marvin_core::chat::Message`]s (`slack:<user>` from `slack:<channel>`);
//! answers are posted with `chat.postMessage`; a job's report is posted once
//! and then edited in place with `chat.update` (at most one edit per
//! [`SlackConfig::edit_interval`], the final report always), and a failed
//! job's last log lines go into the message's thread. Everything posted is
//! rendered and redacted by [`marvin_core::render`]; the crate holds no
//! business logic.
//!
//! ```no_run
//! # async fn example(chat: marvin_core::chat::Chat) -> Result<(), marvin_slack::SlackError> {
//! use marvin_slack::{Listen, SlackConfig};
//! let cfg = SlackConfig::new(
//!     std::env::var("SLACK_BOT_TOKEN").unwrap_or_default(),
//!     Listen::SocketMode { app_token: std::env::var("SLACK_APP_TOKEN").unwrap_or_default() },
//! );
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! marvin_slack::run(chat, cfg, shutdown).await
//! # }
//! ```

pub mod incoming;
pub mod signature;

mod events_api;
mod respond;
mod socket_mode;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use marvin_core::chat::Chat;
use slack_morphism::prelude::*;
use tokio_util::sync::CancellationToken;

pub use incoming::{BotIdentity, Incoming};

/// Slack's Web API.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// The least time between two edits of a job's status message.
pub const EDIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long `run` waits, after shutdown, for status messages to get their final edit.
const DRAIN: Duration = Duration::from_secs(10);

/// How Slack's events reach Marvin.
#[derive(Clone)]
pub enum Listen {
    /// Socket Mode: Marvin opens a websocket to Slack with an app-level token
    /// (`xapp-…`, scope `connections:write`).
    SocketMode {
        /// `SLACK_APP_TOKEN`.
        app_token: String,
    },
    /// The Events API: Slack POSTs events to `addr`; each request must carry a
    /// valid signature made with the app's signing secret.
    EventsApi {
        /// Where to listen (any path is accepted).
        addr: SocketAddr,
        /// `SLACK_SIGNING_SECRET`.
        signing_secret: String,
    },
}

impl std::fmt::Debug for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::SocketMode { .. } => f.write_str("SocketMode { app_token: *** }"),
            Listen::EventsApi { addr, .. } => {
                write!(f, "EventsApi {{ addr: {addr}, signing_secret: *** }}")
            }
        }
    }
}

/// Everything the Slack front end needs besides the dispatcher.
#[derive(Clone)]
pub struct SlackConfig {
    /// The bot token (`xoxb-…`), `SLACK_BOT_TOKEN`.
    pub bot_token: String,
    /// Socket Mode or the Events API.
    pub listen: Listen,
    /// The Web API's base URL (default [`DEFAULT_API_URL`]; `http://` works too, for tests).
    pub api_url: String,
    /// The least time between two edits of a status message (default [`EDIT_INTERVAL`]).
    pub edit_interval: Duration,
}

impl SlackConfig {
    /// A configuration with Slack's API URL and the default edit interval.
    pub fn new(bot_token: impl Into<String>, listen: Listen) -> SlackConfig {
        SlackConfig {
            bot_token: bot_token.into(),
            listen,
            api_url: DEFAULT_API_URL.to_string(),
            edit_interval: EDIT_INTERVAL,
        }
    }
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("bot_token", &"***")
            .field("listen", &self.listen)
            .field("api_url", &self.api_url)
            .field("edit_interval", &self.edit_interval)
            .finish()
    }
}

/// Why the Slack front end could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// A token or secret is empty.
    #[error("{0} is empty")]
    MissingToken(&'static str),
    /// The API URL is not a URL.
    #[error("the Slack API URL {url:?} is not valid: {reason}")]
    ApiUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client could not be made (no TLS root certificates).
    #[error("cannot set up HTTPS: {0}")]
    Tls(String),
    /// `auth.test` refused the bot token or could not be reached.
    #[error("Slack did not accept SLACK_BOT_TOKEN (auth.test at {url}): {reason}")]
    Auth {
        /// The API URL asked.
        url: String,
        /// Slack's answer.
        reason: String,
    },
    /// Socket Mode could not start.
    #[error("Socket Mode did not start: {0}")]
    SocketMode(String),
    /// The Events API address could not be bound.
    #[error("cannot listen for Slack events on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// The HTTP connector: HTTPS for Slack, plain HTTP allowed for a local fake.
pub(crate) type Connector = SlackClientHyperHttpsConnector;
/// The Slack Web API client.
pub(crate) type Client = SlackClient<Connector>;

/// Make the Web API client for `api_url`.
fn client(api_url: &str) -> Result<Client, SlackError> {
    let url = api_url.trim_end_matches('/');
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(SlackError::ApiUrl {
            url: api_url.to_string(),
            reason: "it must start with https:// (or http:// for a local server)".into(),
        });
    }
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| SlackError::Tls(e.to_string()))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(SlackClient::new(
        SlackClientHyperConnector::from(https).with_slack_api_url(url),
    ))
}

/// Ask Slack who the bot is (this also checks the bot token).
async fn who_am_i(
    client: &Client,
    token: &SlackApiToken,
    url: &str,
) -> Result<BotIdentity, SlackError> {
    let me = client
        .open_session(token)
        .auth_test()
        .await
        .map_err(|e| SlackError::Auth {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    Ok(BotIdentity {
        user_id: me.user_id.0,
        bot_id: me.bot_id.map(|b| b.0),
        name: me.user,
    })
}

/// Serve Slack until `shutdown` is cancelled: check the bot token
/// (`auth.test`), then listen in the configured way and answer every command.
/// After shutdown, waits up to ten seconds for running jobs' status messages
/// to get their last edit (cancel the jobs with
/// [`marvin_core::runtime::Runtime::cancel_all`] to make that quick).
pub async fn run(
    chat: Chat,
    cfg: SlackConfig,
    shutdown: CancellationToken,
) -> Result<(), SlackError> {
    run_posting(chat, cfg, shutdown, None).await
}

/// [`run`], also handing out (once connected) a
/// [`marvin_core::channels::Poster`] that posts to Slack channels on
/// Marvin's own initiative — `marvin serve` uses it for trigger-started
/// jobs and notices.
pub async fn run_posting(
    chat: Chat,
    cfg: SlackConfig,
    shutdown: CancellationToken,
    poster: Option<tokio::sync::oneshot::Sender<Arc<dyn marvin_core::channels::Poster>>>,
) -> Result<(), SlackError> {
    if cfg.bot_token.trim().is_empty() {
        return Err(SlackError::MissingToken("SLACK_BOT_TOKEN"));
    }
    match &cfg.listen {
        Listen::SocketMode { app_token } if app_token.trim().is_empty() => {
            return Err(SlackError::MissingToken("SLACK_APP_TOKEN"));
        }
        Listen::EventsApi { signing_secret, .. } if signing_secret.is_empty() => {
            return Err(SlackError::MissingToken("SLACK_SIGNING_SECRET"));
        }
        _ => {}
    }
    let client = Arc::new(client(&cfg.api_url)?);
    let token = SlackApiToken::new(SlackApiTokenValue(cfg.bot_token.trim().to_string()));
    let bot = who_am_i(&client, &token, &cfg.api_url).await?;
    tracing::info!(bot = %bot.user_id, "connected to Slack as <@{}>", bot.user_id);
    let responder = Arc::new(respond::Responder::new(
        chat,
        client.clone(),
        token,
        bot,
        cfg.edit_interval,
    ));
    if let Some(tx) = poster {
        let _ = tx.send(Arc::new(respond::SlackPoster {
            responder: responder.clone(),
        }));
    }
    let result = match &cfg.listen {
        Listen::SocketMode { app_token } => {
            socket_mode::serve(client, app_token.trim(), responder.clone(), shutdown).await
        }
        Listen::EventsApi {
            addr,
            signing_secret,
        } => {
            events_api::serve(
                *addr,
                signing_secret.as_bytes(),
                responder.clone(),
                shutdown,
            )
            .await
        }
    };
    responder.drain(DRAIN).await;
    result
}
