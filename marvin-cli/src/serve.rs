//! `marvin serve`: one long-running process for a team — the runtime, the
//! web page, the push webhook receiver, the scheduler and the poller (and the
//! chat front ends whose tokens are set) — until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use marvin_core::channels::Poster;
use marvin_core::chat::Chat;
use marvin_core::marvin::Marvin;
use marvin_core::runtime::{Runtime, SystemClock};
use marvin_core::store::Store;
use marvin_core::triggers::{Hub, Notice};
use tokio_util::sync::CancellationToken;

/// How `serve` was asked to run.
pub struct ServeOptions {
    /// Where the page and the webhook receiver listen.
    pub listen: SocketAddr,
    /// How long running jobs may take to finish after SIGTERM.
    pub grace: Duration,
}

/// Run until SIGTERM/SIGINT; then stop taking work, give running jobs
/// `grace` to finish, record the rest as interrupted, and exit 0.
pub async fn serve(marvin: Marvin, options: ServeOptions) -> anyhow::Result<ExitCode> {
    let engine = marvin.engine.clone().context(
        "no Docker engine: cannot connect to the local socket or DOCKER_HOST; start dockerd or set DOCKER_HOST",
    )?;
    let project = marvin.project.name.clone();
    let store = Store::open_in(&marvin.data_dir)?;
    let runtime = Runtime::new(marvin, engine, store, Arc::new(SystemClock))?;
    let chat = Chat::new(runtime.clone());
    let hub = Hub::new(runtime.clone())?;
    let web = marvin_web::Web::with_hub(chat.clone(), hub.clone());
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("cannot listen on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();

    let hub_task = {
        let hub = hub.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move { hub.run(stop).await })
    };
    // The chat front ends whose tokens are set run inside this process, and
    // lend their posters for notices and trigger-started jobs.
    let (fronts, posters) = start_front_ends(&chat, &shutdown).await?;
    let notices_task = {
        let mut notices = hub.subscribe();
        let chat = chat.clone();
        let posters = posters.clone();
        tokio::spawn(async move {
            while let Ok(n) = notices.recv().await {
                let line = match &n {
                    Notice::Started { env, job, causes } => {
                        format!("{env}: job #{job} started by {}", causes.join("; "))
                    }
                    Notice::Skipped { env, text }
                    | Notice::Failed { env, text }
                    | Notice::Attention { env, text }
                    | Notice::Message { env, text } => format!("{env}: {text}"),
                };
                println!("{}", chat.runtime().redactor().redact(&line));
                let posters: Vec<Arc<dyn Poster>> = posters.lock().expect("posters lock").clone();
                marvin_core::channels::deliver(&chat, &posters, &n).await;
            }
        })
    };
    // Every new job — from here or any other process (console, Python) —
    // has its report posted to its environment's channels.
    let announcer = {
        let chat = chat.clone();
        let posters = posters.clone();
        let stop = shutdown.clone();
        let project = chat.runtime().marvin().project.name.clone();
        let mut last = chat
            .runtime()
            .store()
            .jobs(&project, None, 1)
            .ok()
            .and_then(|j| j.first().map(|j| j.id))
            .unwrap_or(0);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                    _ = stop.cancelled() => return,
                }
                let Ok(mut jobs) = chat.runtime().store().jobs(&project, None, 100) else {
                    continue;
                };
                jobs.retain(|j| j.id > last);
                jobs.sort_by_key(|j| j.id);
                for job in jobs {
                    last = last.max(job.id);
                    let posters: Vec<Arc<dyn Poster>> =
                        posters.lock().expect("posters lock").clone();
                    marvin_core::channels::deliver_job(&chat, &posters, &job);
                }
            }
        })
    };
    let server = {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, web.router())
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    println!("marvin serve: {project} on http://{addr}/ (webhooks: POST http://{addr}/hooks/push)");

    marvin_core::marvin::stop_signal().await;
    println!(
        "marvin serve: stopping: no new work; running jobs have {} to finish",
        marvin_core::duration::format(options.grace)
    );
    shutdown.cancel();
    let _ = hub_task.await;
    let _ = server.await;
    notices_task.abort();
    let _ = announcer.await;

    // Let running jobs finish within the grace period; then stop them.
    let store = runtime.store();
    let mine = |_: &Store| runtime.unfinished();
    let deadline = Instant::now() + options.grace;
    while !mine(store).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = mine(store);
    if !left.is_empty() {
        let now = marvin_core::runtime::Clock::now_ms(&SystemClock);
        let interrupted = store.interrupt_jobs(&left, now)?;
        runtime.cancel_all();
        let ids: Vec<String> = interrupted.iter().map(|j| format!("#{}", j.id)).collect();
        println!("marvin serve: recorded as interrupted: {}", ids.join(", "));
    }
    // The chat front ends post their last edits (briefly: the jobs are over).
    let all = futures_util::future::join_all(fronts);
    let _ = tokio::time::timeout(Duration::from_secs(3), all).await;
    println!("marvin serve: stopped");
    Ok(ExitCode::SUCCESS)
}

type Posters = Arc<std::sync::Mutex<Vec<Arc<dyn Poster>>>>;
type Fronts = Vec<tokio::task::JoinHandle<()>>;

/// Start Slack (when `SLACK_BOT_TOKEN` is set) and Telegram (when
/// `TELEGRAM_BOT_TOKEN` is set) in this process. A front end that fails to
/// start stops `serve` with its message; one that stops later is logged.
async fn start_front_ends(
    chat: &Chat,
    shutdown: &CancellationToken,
) -> anyhow::Result<(Fronts, Posters)> {
    let posters: Posters = Arc::default();
    let mut fronts: Fronts = Vec::new();
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(bot_token) = env("SLACK_BOT_TOKEN") {
        let listen = if let Some(app_token) = env("SLACK_APP_TOKEN") {
            marvin_slack::Listen::SocketMode { app_token }
        } else if let (Some(signing_secret), Some(addr)) =
            (env("SLACK_SIGNING_SECRET"), env("MARVIN_SLACK_EVENTS_ADDR"))
        {
            let addr = addr
                .parse()
                .with_context(|| format!("MARVIN_SLACK_EVENTS_ADDR `{addr}` is not an address"))?;
            marvin_slack::Listen::EventsApi {
                addr,
                signing_secret,
            }
        } else {
            anyhow::bail!(
                "SLACK_BOT_TOKEN is set, but neither SLACK_APP_TOKEN (Socket Mode) nor SLACK_SIGNING_SECRET with MARVIN_SLACK_EVENTS_ADDR (Events API)"
            );
        };
        let mut cfg = marvin_slack::SlackConfig::new(bot_token, listen);
        if let Some(url) = env("SLACK_API_URL") {
            cfg.api_url = url;
        }
        fronts.push(
            start_one("Slack", chat, shutdown, &posters, move |chat, stop, tx| {
                Box::pin(async move {
                    marvin_slack::run_posting(chat, cfg, stop, Some(tx))
                        .await
                        .map_err(|e| e.to_string())
                })
            })
            .await?,
        );
    }
    if let Some(token) = env("TELEGRAM_BOT_TOKEN") {
        let mut cfg = marvin_telegram::TelegramConfig::new(token, marvin_telegram::Mode::Polling);
        if let Some(url) = env("TELEGRAM_API_URL") {
            cfg.api_url = marvin_telegram::Url::parse(&url)
                .with_context(|| format!("TELEGRAM_API_URL `{url}` is not a URL"))?;
        }
        fronts.push(
            start_one(
                "Telegram",
                chat,
                shutdown,
                &posters,
                move |chat, stop, tx| {
                    Box::pin(async move {
                        marvin_telegram::run_posting(chat, cfg, stop, Some(tx))
                            .await
                            .map_err(|e| e.to_string())
                    })
                },
            )
            .await?,
        );
    }
    Ok((fronts, posters))
}

type Start = Box<
    dyn FnOnce(
            Chat,
            CancellationToken,
            tokio::sync::oneshot::Sender<Arc<dyn Poster>>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send,
>;

/// Run one front end; wait until it is connected (its poster arrives) or
/// has failed.
async fn start_one(
    name: &'static str,
    chat: &Chat,
    shutdown: &CancellationToken,
    posters: &Posters,
    run: impl FnOnce(
        Chat,
        CancellationToken,
        tokio::sync::oneshot::Sender<Arc<dyn Poster>>,
    )
        -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
    + Send
    + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let run: Start = Box::new(run);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut task = tokio::spawn(run(chat.clone(), shutdown.clone(), tx));
    tokio::select! {
        poster = rx => match poster {
            Ok(p) => {
                posters.lock().expect("posters lock").push(p);
                println!("marvin serve: {name} connected");
            }
            Err(_) => {
                let outcome = (&mut task).await;
                let why = match outcome {
                    Ok(Err(e)) => e,
                    Ok(Ok(())) => "it stopped".into(),
                    Err(e) => e.to_string(),
                };
                anyhow::bail!("{name} did not start: {why}");
            }
        },
        outcome = &mut task => {
            let why = match outcome {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "it stopped".into(),
                Err(e) => e.to_string(),
            };
            anyhow::bail!("{name} did not start: {why}");
        }
    }
    Ok(tokio::spawn(async move {
        match task.await {
            Ok(Err(e)) => eprintln!("marvin serve: {name} stopped: {e}"),
            Err(e) => eprintln!("marvin serve: {name} stopped: {e}"),
            Ok(Ok(())) => {}
        }
    }))
}
