//! The `marvin-telegram` binary: flags, start-up checks, signals; the bot
//! itself is the library's [`marvin_telegram::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use marvin_core::chat::Chat;
use marvin_core::engine::DockerEngine;
use marvin_core::engine::Engine;
use marvin_core::marvin::{DATA_DIR_ENV, Marvin, locate_config};
use marvin_core::runtime::{Runtime, SystemClock};
use marvin_core::store::Store;
use marvin_telegram::{Mode, TelegramConfig, Url, WebhookConfig, mask_token};
use tokio_util::sync::CancellationToken;

/// The environment variable holding the bot token.
const TOKEN_ENV: &str = "TELEGRAM_BOT_TOKEN";
/// The environment variable holding the webhook's secret token.
const SECRET_ENV: &str = "TELEGRAM_WEBHOOK_SECRET";

/// Marvin's Telegram bot: `/build dev`, `@bot dev status`, and every other
/// chat command, answered in Telegram.
///
/// The bot token is read from TELEGRAM_BOT_TOKEN. Updates arrive by long
/// polling unless --webhook-addr and --webhook-url are given; then Telegram
/// POSTs them to the URL, with the secret token from TELEGRAM_WEBHOOK_SECRET.
/// Chats are bound to environments in marvin.yml:
/// `environments.dev.channels: ["telegram:-100123"]`.
#[derive(Parser)]
#[command(name = "marvin-telegram", version, about, long_about)]
struct Cli {
    /// Path to marvin.yml (default: ./marvin.yml or the nearest parent's).
    #[arg(short, long, env = "MARVIN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory for mirrors and state (default: .marvin/ beside marvin.yml).
    #[arg(long, env = DATA_DIR_ENV)]
    data_dir: Option<PathBuf>,
    /// Bot API server (for a self-hosted Bot API server).
    #[arg(long, env = "TELEGRAM_API_URL", default_value = marvin_telegram::DEFAULT_API_URL)]
    api_url: Url,
    /// Receive updates by webhook, listening here (e.g. 127.0.0.1:8443, behind a TLS proxy).
    #[arg(long, requires = "webhook_url")]
    webhook_addr: Option<SocketAddr>,
    /// The public HTTPS URL Telegram posts updates to (registered with setWebhook).
    #[arg(long, requires = "webhook_addr")]
    webhook_url: Option<Url>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let token = std::env::var(TOKEN_ENV).unwrap_or_default();
    let outcome = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(run(cli, token.clone())),
        Err(e) => Err(anyhow::anyhow!("cannot start: {e}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("marvin-telegram: {}", mask_token(&format!("{e:#}"), &token));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, token: String) -> anyhow::Result<()> {
    let token = token.trim().to_string();
    if token.is_empty() {
        anyhow::bail!("{TOKEN_ENV} is not set: export the bot token @BotFather gave you");
    }
    let mode = match (cli.webhook_addr, cli.webhook_url) {
        (Some(listen), Some(url)) => {
            let secret = std::env::var(SECRET_ENV).unwrap_or_default();
            if secret.is_empty() {
                anyhow::bail!(
                    "{SECRET_ENV} is not set: webhook mode needs a secret token (1-256 characters of A-Z, a-z, 0-9, _ and -)"
                );
            }
            Mode::Webhook(WebhookConfig {
                listen,
                url,
                secret,
            })
        }
        _ => Mode::Polling,
    };
    let config = locate_config(cli.config.as_deref()).map_err(anyhow::Error::msg)?;
    let marvin = Marvin::load(&config, cli.data_dir)?;
    let engine = DockerEngine::connect().context("cannot connect to the Docker engine")?;
    engine
        .ping()
        .await
        .context("the Docker engine does not answer (is it running? is DOCKER_HOST right?)")?;
    let engine: Arc<dyn Engine> = Arc::new(engine);
    let store = Store::open_in(&marvin.data_dir)?;
    let runtime = Runtime::new(
        marvin.with_engine(engine.clone()),
        engine,
        store,
        Arc::new(SystemClock),
    )?;
    let chat = Chat::new(runtime.clone());
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            marvin_core::marvin::stop_signal().await;
            tracing::info!("stopping: cancelling running jobs");
            shutdown.cancel();
            runtime.cancel_all();
        }
    });
    let cfg = TelegramConfig {
        token,
        api_url: cli.api_url,
        mode,
    };
    marvin_telegram::run(chat, cfg, shutdown).await?;
    Ok(())
}
