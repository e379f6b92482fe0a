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
    let posters: Vec<Arc<dyn Poster>> = Vec::new();
    let notices_task = {
        let mut notices = hub.subscribe();
        let chat = chat.clone();
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
                marvin_core::channels::deliver(&chat, &posters, &n).await;
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

    wait_for_signal().await;
    println!(
        "marvin serve: stopping: no new work; running jobs have {} to finish",
        marvin_core::duration::format(options.grace)
    );
    shutdown.cancel();
    let _ = hub_task.await;
    let _ = server.await;
    notices_task.abort();

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
    println!("marvin serve: stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
