//! `marvin-slack`: Marvin's Slack bot. Flags, tokens and glue only; the
//! front end is the `marvin_slack` library and everything it does is in
//! marvin-core.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use marvin_core::chat::Chat;
use marvin_core::engine::{DockerEngine, Engine};
use marvin_core::marvin::{DATA_DIR_ENV, Marvin, locate_config};
use marvin_core::runtime::{Runtime, SystemClock};
use marvin_core::store::Store;
use marvin_slack::{DEFAULT_API_URL, Listen, SlackConfig};
use tokio_util::sync::CancellationToken;

/// Marvin's Slack bot: answers `@marvin dev build` in channels and direct messages.
///
/// Tokens come from the environment, never from flags: SLACK_BOT_TOKEN (xoxb-…,
/// always), SLACK_APP_TOKEN (xapp-…, Socket Mode, the default) or
/// SLACK_SIGNING_SECRET (with --events-addr, the Events API over HTTP).
#[derive(Parser)]
#[command(name = "marvin-slack", version, about, long_about)]
struct Cli {
    /// Path to marvin.yml (default: ./marvin.yml or the nearest parent's).
    #[arg(short, long, env = "MARVIN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory for mirrors and state (default: .marvin/ beside marvin.yml).
    #[arg(long, env = DATA_DIR_ENV)]
    data_dir: Option<PathBuf>,
    /// Slack's Web API base URL (for a self-hosted gateway or a test server).
    #[arg(long, env = "SLACK_API_URL", default_value = DEFAULT_API_URL)]
    api_url: String,
    /// Receive events over HTTP on this address (the Events API, verified with
    /// SLACK_SIGNING_SECRET) instead of Socket Mode, e.g. 0.0.0.0:3000.
    #[arg(long, value_name = "ADDR")]
    events_addr: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,slack_morphism=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("marvin-slack: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("marvin-slack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A token from the environment, or an error naming the variable.
fn token(name: &str, why: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(v.trim().to_string()),
        _ => anyhow::bail!("{name} is not set: {why}"),
    }
}

fn load(cli: &Cli) -> anyhow::Result<Marvin> {
    let config = locate_config(cli.config.as_deref()).map_err(anyhow::Error::msg)?;
    Ok(Marvin::load(&config, cli.data_dir.clone())?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let bot_token = token(
        "SLACK_BOT_TOKEN",
        "set it to the app's Bot User OAuth Token (xoxb-…)",
    )?;
    let listen = match cli.events_addr {
        Some(addr) => Listen::EventsApi {
            addr,
            signing_secret: token(
                "SLACK_SIGNING_SECRET",
                "--events-addr needs the app's Signing Secret to verify requests",
            )?,
        },
        None => Listen::SocketMode {
            app_token: token(
                "SLACK_APP_TOKEN",
                "Socket Mode needs an app-level token (xapp-…, scope connections:write); or use --events-addr",
            )?,
        },
    };
    let marvin = load(&cli)?;
    let engine = DockerEngine::connect()?;
    if let Err(e) = engine.ping().await {
        tracing::warn!("the Docker engine does not answer yet: {e}");
    }
    let engine: Arc<dyn Engine> = Arc::new(engine);
    let marvin = marvin.with_engine(engine.clone());
    let store = Store::open_in(&marvin.data_dir)?;
    let jobs = Runtime::new(marvin, engine, store, Arc::new(SystemClock))?;
    let mut cfg = SlackConfig::new(bot_token, listen);
    cfg.api_url = cli.api_url;
    let shutdown = CancellationToken::new();
    let bot = tokio::spawn(marvin_slack::run(
        Chat::new(jobs.clone()),
        cfg,
        shutdown.clone(),
    ));
    let stopped = marvin_core::marvin::stop_signal();
    tokio::pin!(bot);
    tokio::select! {
        result = &mut bot => return Ok(result.context("the Slack front end stopped")??),
        _ = stopped => {}
    }
    tracing::info!("stopping: cancelling running jobs");
    shutdown.cancel();
    jobs.cancel_all();
    bot.await.context("the Slack front end stopped")??;
    Ok(())
}
