//! Runnable one-off deploy scripts using marvin-core as a library
//! (`cargo run -p marvin-examples --example NAME -- …`), and the little they share:
//! load a project, run a job while printing its progress.
//!
//! ```no_run
//! # async fn demo() -> Result<(), String> {
//! let marvin = marvin_examples::load("marvin.yml".as_ref())?;
//! let runtime = marvin_examples::runtime(marvin)?;
//! let build = marvin_core::runtime::JobKind::Build { services: vec![], force: false };
//! let summary = marvin_examples::run(&runtime, "dev", build).await?;
//! println!("{}", marvin_core::report::summary_text(&summary));
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use marvin_core::chat::{Chat, Reply};
use marvin_core::command::Command;
use marvin_core::commands;
use marvin_core::engine::DockerEngine;
use marvin_core::marvin::Marvin;
use marvin_core::runtime::{EventKind, JobKind, JobSummary, Runtime, SystemClock};
use marvin_core::store::Store;

/// Who the examples act as: `script:$USER`.
pub fn identity() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "someone".into());
    format!("script:{user}")
}

/// Load marvin.yml and connect the local Docker engine (if one answers later, it is used).
pub fn load(config: &Path) -> Result<Marvin, String> {
    let marvin = Marvin::load(config, None).map_err(|e| e.to_string())?;
    Ok(match DockerEngine::connect() {
        Ok(engine) => marvin.with_engine(Arc::new(engine)),
        Err(_) => marvin,
    })
}

/// A job runtime over the project's store and engine. Call inside a tokio runtime.
pub fn runtime(marvin: Marvin) -> Result<Runtime, String> {
    let engine = marvin.engine.clone().ok_or(
        "no Docker engine: cannot connect to the local socket or DOCKER_HOST; start dockerd or set DOCKER_HOST",
    )?;
    let store = Store::open_in(&marvin.data_dir).map_err(|e| e.to_string())?;
    Runtime::new(marvin, engine, store, Arc::new(SystemClock)).map_err(|e| e.to_string())
}

/// Run one job in `env` through Marvin's door (the caller's role, the lock,
/// the audit log: the same as a chat command from origin `example`) and
/// print its progress, one line per step, image and container.
pub async fn run(runtime: &Runtime, env: &str, kind: JobKind) -> Result<JobSummary, String> {
    let chat = Chat::new(runtime.clone());
    let person = chat.person(&identity(), "example");
    let env = runtime
        .marvin()
        .project
        .environment(env)
        .map(|e| e.name.clone())
        .unwrap_or_else(|_| env.to_string());
    let command = Command {
        env: Some(env),
        verb: commands::verb_of(&kind),
    };
    // Subscribe before submitting, so no event of the job is missed.
    let mut events = runtime.subscribe();
    let follow = match chat.door(&person, &command).await {
        Reply::Job(follow) => follow,
        Reply::Answer(answer) => return Err(answer.text),
        Reply::Ignored => return Err(format!("`{}` was ignored", command.to_text())),
    };
    let handle = follow;
    let id = handle.job;
    let printer = tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            if event.job != id {
                continue;
            }
            match event.kind {
                EventKind::Started => println!("job #{id} started in {}", event.env),
                EventKind::Step { step } => println!("· {step}"),
                EventKind::Built { service, millis } => println!("  built {service} ({millis}ms)"),
                EventKind::Reused { service } => println!("  reused {service}"),
                EventKind::Container { service, action } => println!("  {action} {service}"),
                EventKind::Log { stream, line } if stream.starts_with("task:") => {
                    println!("  | {line}")
                }
                EventKind::Finished { .. } => break,
                _ => {}
            }
        }
    });
    let summary = handle.summary().await;
    let _ = printer.await;
    Ok(summary)
}
