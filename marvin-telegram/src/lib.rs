//! marvin-telegram: Marvin's chat commands over the Telegram Bot API.
//!
//! A thin front end over [`marvin_core::chat`]: updates arrive by long
//! polling (`getUpdates`, the default) or by webhook (an HTTP endpoint that
//! checks Telegram's secret token); each text message meant for the bot
//! becomes a [`Message`](marvin_core::chat::Message) for
//! [`Chat::handle`]. Answers are sent as HTML
//! ([`render::answer_telegram_html`]); a job's report is sent once and then
//! edited in place as the job progresses ([`render::telegram_html`]). Parsing,
//! permissions, locks, approvals, audit and redaction all happen in
//! marvin-core; nothing here decides anything about a command.
//!
//! ```no_run
//! # async fn example(chat: marvin_core::chat::Chat) -> Result<(), marvin_telegram::TelegramError> {
//! use marvin_telegram::{Mode, TelegramConfig};
//! let cfg = TelegramConfig::new("123:ABC".into(), Mode::Polling);
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! marvin_telegram::run(chat, cfg, shutdown).await
//! # }
//! ```

pub mod address;
mod handle;
mod webhook;

/// The webhook's secret-token comparison, for the fuzz target (fuzz/targets.rs).
#[doc(hidden)]
pub use webhook::{SECRET_HEADER, same_secret};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use marvin_core::chat::Chat;
use teloxide::prelude::*;
use teloxide::types::AllowedUpdate;
use tokio_util::sync::CancellationToken;

pub use reqwest::Url;

/// The public Bot API server.
pub const DEFAULT_API_URL: &str = "https://api.telegram.org";
/// How long one `getUpdates` call waits for updates (seconds); under the
/// HTTP client's 17 s timeout.
const POLL_TIMEOUT_SECS: u32 = 10;
/// How long a shutdown waits for job reports still being followed.
const DRAIN: Duration = Duration::from_secs(60);

/// How updates arrive.
#[derive(Clone)]
pub enum Mode {
    /// `getUpdates` long polling (no public address needed).
    Polling,
    /// Telegram POSTs updates to a public HTTPS URL that reaches `listen`.
    Webhook(WebhookConfig),
}

/// The webhook endpoint.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where the HTTP server listens (behind the TLS proxy).
    pub listen: SocketAddr,
    /// The public URL registered with `setWebhook`; its path is served.
    pub url: Url,
    /// Sent back by Telegram in `X-Telegram-Bot-Api-Secret-Token`; requests
    /// without it are refused with 401.
    pub secret: String,
}

/// Everything the bot needs besides the dispatcher.
#[derive(Clone)]
pub struct TelegramConfig {
    /// The bot token from @BotFather (never printed).
    pub token: String,
    /// The Bot API server (a self-hosted one, or a fake in tests).
    pub api_url: Url,
    /// Polling or webhook.
    pub mode: Mode,
}

impl std::fmt::Debug for TelegramConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("token", &"***")
            .field("api_url", &self.api_url.as_str())
            .field(
                "mode",
                &match &self.mode {
                    Mode::Polling => "polling".to_string(),
                    Mode::Webhook(w) => format!("webhook on {} for {}", w.listen, w.url),
                },
            )
            .finish()
    }
}

impl TelegramConfig {
    /// A config for the public Bot API.
    pub fn new(token: String, mode: Mode) -> TelegramConfig {
        TelegramConfig {
            token,
            api_url: Url::parse(DEFAULT_API_URL).expect("the default API URL parses"),
            mode,
        }
    }
}

/// What can stop the bot. Messages never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    /// The Bot API refused the token.
    #[error(
        "the Telegram Bot API at {url} refused the bot token: check TELEGRAM_BOT_TOKEN (the token @BotFather gave)"
    )]
    Unauthorized {
        /// The API base URL.
        url: String,
    },
    /// A Bot API call failed at start-up.
    #[error("the Telegram Bot API at {url} failed on {method}: {detail}")]
    Api {
        /// The API base URL.
        url: String,
        /// The method (`getMe`, `setWebhook`, ...).
        method: &'static str,
        /// What went wrong, with the token masked.
        detail: String,
    },
    /// `getMe` returned a bot without a user name.
    #[error("the Bot API says this bot has no user name; give it one with @BotFather")]
    NoUsername,
    /// The webhook secret is not what Telegram accepts.
    #[error(
        "the webhook secret must be 1-256 characters of A-Z, a-z, 0-9, `_` and `-` (TELEGRAM_WEBHOOK_SECRET)"
    )]
    BadSecret,
    /// The webhook server could not listen.
    #[error("cannot listen for webhook requests on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The webhook server failed while running.
    #[error("the webhook server failed: {0}")]
    Serve(std::io::Error),
}

/// Replace the token wherever it appears (request URLs in network errors).
pub fn mask_token(text: &str, token: &str) -> String {
    if token.is_empty() {
        return text.to_string();
    }
    text.replace(token, "<token>")
}

/// Run the bot until `shutdown` is cancelled: ask `getMe` who the bot is,
/// then take updates by polling or webhook and answer them through `chat`.
/// On shutdown, reports of jobs still running are followed to their end
/// (cancel the jobs with [`marvin_core::runtime::Runtime::cancel_all`]) for
/// up to a minute.
pub async fn run(
    chat: Chat,
    cfg: TelegramConfig,
    shutdown: CancellationToken,
) -> Result<(), TelegramError> {
    run_posting(chat, cfg, shutdown, None).await
}

/// [`run`], also handing out (once signed in) a
/// [`marvin_core::channels::Poster`] that posts to Telegram chats on
/// Marvin's own initiative — `marvin serve` uses it for trigger-started
/// jobs and notices.
pub async fn run_posting(
    chat: Chat,
    cfg: TelegramConfig,
    shutdown: CancellationToken,
    poster: Option<tokio::sync::oneshot::Sender<Arc<dyn marvin_core::channels::Poster>>>,
) -> Result<(), TelegramError> {
    if let Mode::Webhook(w) = &cfg.mode
        && !valid_secret(&w.secret)
    {
        return Err(TelegramError::BadSecret);
    }
    let client = teloxide::net::default_reqwest_settings()
        .build()
        .map_err(|e| api_error(&cfg, "the HTTP client", &e))?;
    let bot = Bot::with_client(cfg.token.clone(), client).set_api_url(cfg.api_url.clone());
    let me = bot
        .get_me()
        .await
        .map_err(|e| api_error(&cfg, "getMe", &e))?;
    let username = me.user.username.clone().ok_or(TelegramError::NoUsername)?;
    tracing::info!(
        "signed in as @{username} at {}; project {}",
        cfg.api_url,
        chat.runtime().marvin().project.name
    );
    if let Some(tx) = poster {
        let _ = tx.send(Arc::new(handle::TelegramPoster {
            chat: chat.clone(),
            bot: bot.clone(),
            token: cfg.token.clone(),
        }));
    }
    let handler = Arc::new(handle::Handler::new(
        chat,
        bot.clone(),
        username,
        cfg.token.clone(),
    ));
    let outcome = match &cfg.mode {
        Mode::Polling => {
            // getUpdates is refused while a webhook is set.
            bot.delete_webhook()
                .await
                .map_err(|e| api_error(&cfg, "deleteWebhook", &e))?;
            poll(&bot, &cfg, &handler, &shutdown).await;
            Ok(())
        }
        Mode::Webhook(w) => {
            bot.set_webhook(w.url.clone())
                .secret_token(w.secret.clone())
                .allowed_updates(vec![AllowedUpdate::Message])
                .await
                .map_err(|e| api_error(&cfg, "setWebhook", &e))?;
            webhook::serve(w, handler.clone(), shutdown.clone()).await
        }
    };
    handler.drain(DRAIN).await;
    outcome
}

/// The long-polling loop: the offset moves past every update received, so
/// Telegram forgets them; errors back off up to 30 s.
async fn poll(
    bot: &Bot,
    cfg: &TelegramConfig,
    handler: &Arc<handle::Handler>,
    shutdown: &CancellationToken,
) {
    let mut offset: i32 = 0;
    let mut backoff = Duration::from_secs(1);
    loop {
        let request = bot
            .get_updates()
            .offset(offset)
            .timeout(POLL_TIMEOUT_SECS)
            .allowed_updates(vec![AllowedUpdate::Message]);
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = request.send() => r,
        };
        match result {
            Ok(updates) => {
                backoff = Duration::from_secs(1);
                for update in updates {
                    offset = offset.max(update.id.as_offset());
                    handler.accept(update);
                }
            }
            Err(e) => {
                tracing::warn!(
                    "getUpdates at {} failed (trying again in {}s): {}",
                    cfg.api_url,
                    backoff.as_secs(),
                    mask_token(&e.to_string(), &cfg.token)
                );
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn api_error(
    cfg: &TelegramConfig,
    method: &'static str,
    e: &dyn std::fmt::Display,
) -> TelegramError {
    let detail = mask_token(&e.to_string(), &cfg.token);
    if detail.contains("Invalid bot token") || detail.contains("Unauthorized") {
        return TelegramError::Unauthorized {
            url: cfg.api_url.to_string(),
        };
    }
    TelegramError::Api {
        url: cfg.api_url.to_string(),
        method,
        detail,
    }
}

/// Telegram's rule for `secret_token`.
fn valid_secret(s: &str) -> bool {
    (1..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_masked_in_error_text() {
        let e = "error sending request for url (https://api.telegram.org/bot123:SECRET/GetMe)";
        assert_eq!(
            mask_token(e, "123:SECRET"),
            "error sending request for url (https://api.telegram.org/bot<token>/GetMe)"
        );
    }

    #[test]
    fn the_config_debug_form_hides_the_token() {
        let cfg = TelegramConfig::new("123:SECRET".into(), Mode::Polling);
        assert!(!format!("{cfg:?}").contains("SECRET"));
    }

    #[test]
    fn webhook_secrets_follow_telegrams_rule() {
        assert!(valid_secret("abc-DEF_123"));
        assert!(!valid_secret(""));
        assert!(!valid_secret("has space"));
        assert!(!valid_secret(&"x".repeat(257)));
    }
}
