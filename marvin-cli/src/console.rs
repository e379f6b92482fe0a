//! The console: runs jobs in this process with live progress, and reads state.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use marvin_core::chat::{Answer, Chat, Reply, Tone};
use marvin_core::command::{Command, Verb};
use marvin_core::commands;
use marvin_core::demo;
use marvin_core::engine::{DockerEngine, Engine, LABEL_PROJECT, ensure_busybox_image};
use marvin_core::marvin::Marvin;
use marvin_core::report;
use marvin_core::runtime::{Clock, EventKind, JobKind, JobSummary, Runtime, SystemClock};
use marvin_core::store::{JobState, Store};

/// A job to run from the console.
pub struct JobSpec {
    /// Environment name or alias.
    pub env: String,
    /// What to do.
    pub kind: JobKind,
}

/// The console's identity: `local:$USER`.
pub fn identity() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "someone".into());
    format!("local:{user}")
}

fn engine_of(marvin: &Marvin) -> anyhow::Result<Arc<dyn Engine>> {
    marvin.engine.clone().context(
        "no Docker engine: cannot connect to the local socket or DOCKER_HOST; start dockerd or set DOCKER_HOST",
    )
}

fn open_runtime(marvin: Marvin) -> anyhow::Result<Runtime> {
    let engine = engine_of(&marvin)?;
    let store = Store::open_in(&marvin.data_dir)?;
    Ok(Runtime::new(marvin, engine, store, Arc::new(SystemClock))?)
}

/// The console's door: every command of the person at the console goes
/// through [`Chat::door`] as `local:$USER` from origin `console` — judged,
/// lock-checked and audited like a chat message.
fn open_chat(marvin: Marvin) -> anyhow::Result<Chat> {
    Ok(Chat::new(open_runtime(marvin)?))
}

/// The command as the door takes it; the environment's alias resolved when it names one.
fn command(chat: &Chat, env: &str, verb: Verb) -> Command {
    let project = &chat.runtime().marvin().project;
    let env = project
        .environment(env)
        .map(|e| e.name.clone())
        .unwrap_or_else(|_| env.to_string());
    Command {
        env: Some(env),
        verb,
    }
}

/// A command that is answered at once: print the answer (its data with
/// `--json`); a refusal or failure goes to stderr and exits 1.
async fn answer(chat: &Chat, command: Command, json: bool) -> anyhow::Result<ExitCode> {
    let person = chat.person(&identity(), "console");
    match chat.door(&person, &command).await {
        Reply::Answer(a) if a.tone == Tone::Info => {
            match (&a.data, json) {
                (Some(data), true) => println!("{}", serde_json::to_string_pretty(data)?),
                _ => println!("{}", a.to_text()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Reply::Answer(a) => {
            eprintln!("marvin: {}", a.to_text());
            Ok(ExitCode::FAILURE)
        }
        Reply::Ignored => Ok(ExitCode::SUCCESS),
        Reply::Job(follow) => {
            anyhow::bail!("`{}` started job #{}", command.to_text(), follow.job)
        }
    }
}

/// Run one job with a live status line; print its summary. Exit code 0 on success.
pub async fn run_job(marvin: Marvin, spec: JobSpec, json: bool) -> anyhow::Result<ExitCode> {
    let chat = open_chat(marvin)?;
    let summary = match run_with_progress(&chat, spec, !json).await? {
        Ok(summary) => summary,
        Err(refusal) => {
            eprintln!("marvin: {}", refusal.to_text());
            return Ok(ExitCode::FAILURE);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", report::summary_text(&summary));
    }
    Ok(if summary.state == Some(JobState::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Submit a job through the door and show its progress on stderr until it
/// ends; the door's answer when it was not submitted. Ctrl-C cancels it cleanly.
pub async fn run_with_progress(
    chat: &Chat,
    spec: JobSpec,
    show: bool,
) -> anyhow::Result<Result<JobSummary, Answer>> {
    let runtime = chat.runtime();
    // Subscribe before submitting, so no event of the job is missed.
    let mut events = runtime.subscribe();
    let command = command(chat, &spec.env, commands::verb_of(&spec.kind));
    let person = chat.person(&identity(), "console");
    let follow = match chat.door(&person, &command).await {
        Reply::Job(follow) => follow,
        Reply::Answer(a) => return Ok(Err(a)),
        Reply::Ignored => anyhow::bail!("`{}` was ignored", command.to_text()),
    };
    let id = follow.job;
    if show && let Some(step) = follow.current().step {
        // A protected environment: the job waits for an admin's approval (from any front end).
        eprintln!("job #{id}: {step}");
    }
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut step = String::from("queued");
    let mut building: Vec<String> = Vec::new();
    let wait = follow.summary();
    tokio::pin!(wait);
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut cancelled = false;
    loop {
        tokio::select! {
            summary = &mut wait => {
                if show && tty {
                    eprint!("\r\x1b[K");
                }
                return Ok(Ok(summary));
            }
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                cancelled = true;
                runtime.cancel(id);
                if show { eprintln!("\rcancelling job #{id}…"); }
            }
            _ = ticker.tick() => {
                if show && tty {
                    let mut line = format!("⏳ #{id} {step} {:.0}s", started.elapsed().as_secs_f64());
                    if !building.is_empty() {
                        line.push_str(&format!(" · building {}", building.join(", ")));
                    }
                    eprint!("\r\x1b[K{line}");
                    let _ = std::io::stderr().flush();
                }
            }
            event = events.recv() => {
                let Ok(event) = event else { continue };
                if event.job != id || !show {
                    continue;
                }
                let text = match event.kind {
                    EventKind::Queued => Some(format!("job #{id} queued for {}", event.env)),
                    EventKind::Started => Some(format!("job #{id} started")),
                    EventKind::Step { step: s } => { step = s.clone(); Some(format!("· {s}")) }
                    EventKind::BuildStarted { service } => { building.push(service.clone()); None }
                    EventKind::Built { service, millis } => {
                        building.retain(|s| s != &service);
                        Some(format!("  built {service} in {}", marvin_core::duration::format(std::time::Duration::from_millis(millis))))
                    }
                    EventKind::Reused { service } => Some(format!("  reused {service}")),
                    EventKind::Container { service, action } => Some(format!("  {action} {service}")),
                    EventKind::Log { stream, line } if stream.starts_with("task:") => Some(format!("  | {line}")),
                    _ => None,
                };
                if let Some(text) = text {
                    if tty { eprint!("\r\x1b[K"); }
                    eprintln!("{text}");
                }
            }
        }
    }
}

/// `marvin status ENV`: containers, lock, last job.
pub async fn status(marvin: Marvin, env: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open_in(&marvin.data_dir)?;
    let now = SystemClock.now_ms();
    let status = commands::status(&marvin, &store, env, now).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} ({})", status.environment, marvin.project.name);
    // The same text as chat's `status` answer.
    for line in marvin_core::chat::status_text(&status, now).lines() {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `marvin logs ENV [SERVICE|JOB]`.
pub async fn logs(
    marvin: Marvin,
    env: &str,
    target: Option<String>,
    tail: usize,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = Store::open_in(&marvin.data_dir)?;
    let target = target.as_deref().map(commands::log_target);
    let lines = commands::logs(&marvin, &store, env, target.as_ref(), tail).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `marvin history ENV [N]`.
pub fn history(marvin: Marvin, env: &str, n: usize, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open_in(&marvin.data_dir)?;
    let jobs = commands::history(&marvin, &store, env, n)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!("{env} has no jobs yet");
    }
    // The same table as chat's `history` answer.
    print!("{}", marvin_core::chat::history_text(&jobs));
    Ok(ExitCode::SUCCESS)
}

/// `marvin lock ENV [DURATION] [REASON]`, through the door.
pub async fn lock(
    marvin: Marvin,
    env: &str,
    duration: Option<String>,
    reason: &str,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    // As in chat: a first word starting with a digit is the duration, anything else starts the reason.
    let (duration, reason) = match duration {
        Some(d) if d.starts_with(|c: char| c.is_ascii_digit()) => (
            Some(marvin_core::duration::parse(&d).map_err(anyhow::Error::msg)?),
            reason.to_string(),
        ),
        Some(word) => (None, format!("{word} {reason}").trim().to_string()),
        None => (None, reason.to_string()),
    };
    let chat = open_chat(marvin)?;
    let verb = Verb::Lock {
        duration,
        reason,
        force,
    };
    answer(&chat, command(&chat, env, verb), json).await
}

/// `marvin unlock ENV`, through the door.
pub async fn unlock(
    marvin: Marvin,
    env: &str,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let chat = open_chat(marvin)?;
    answer(&chat, command(&chat, env, Verb::Unlock { force }), json).await
}

/// `marvin cancel ENV [JOB]`, through the door: the requester, admins, and
/// developers on unprotected environments may; the process running the job
/// stops it.
pub async fn cancel(
    marvin: Marvin,
    env: &str,
    job: Option<i64>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let chat = open_chat(marvin)?;
    answer(&chat, command(&chat, env, Verb::Cancel { job }), json).await
}

/// `marvin demo`: the main job on the embedded default.
pub async fn demo(dir: &Path, clean: bool) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect()?;
    engine.ping().await?;
    let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), demo::DEMO_PROJECT.to_string())]);
    if clean {
        engine.remove_labelled(&labels).await?;
        let _ = engine.remove_image(demo::DEMO_BASE_IMAGE).await;
        println!("removed the demo's containers, networks, volumes and images");
        if dir.exists() {
            println!(
                "the demo's files are still in {}; remove them with rm -rf",
                dir.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "Marvin demo: a project with two git repos and five services, on the local Docker engine."
    );
    ensure_busybox_image(&engine, demo::DEMO_BASE_IMAGE, &labels).await?;
    let config = demo::create(dir)?;
    println!(
        "created {} (repos in {}/repos)\n",
        config.display(),
        dir.display()
    );

    let marvin = Marvin::load(&config, None)?.with_engine(Arc::new(engine));
    let chat = open_chat(marvin)?;
    let Some(_first) = demo_build(&chat).await? else {
        return Ok(ExitCode::FAILURE);
    };

    let subject = demo::change_web(dir, "a change to one service")?;
    println!("\nA developer pushes one change to the frontend repo: \"{subject}\"");
    let Some(second) = demo_build(&chat).await? else {
        return Ok(ExitCode::FAILURE);
    };
    let built: Vec<&str> = second.built.iter().map(|(s, _)| s.as_str()).collect();
    println!(
        "\nThe second build rebuilt {} and recreated {}; the {} other containers kept running untouched.",
        list_or_none(&built),
        list_or_none(
            &second
                .recreated
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        ),
        second.unchanged.len()
    );
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "marvin".into());
    println!(
        "Where to look next (from {dir}):\n  \
         {me} status dev          what runs in dev\n  \
         {me} plan staging        staging would reuse every image dev built\n  \
         {me} build staging       deploy an isolated copy\n  \
         {me} run dev hello       a one-off task\n  \
         {me} history dev         the jobs so far\n  \
         {me} logs dev web        a container's log\n  \
         {me} demo --clean        remove everything the demo made in Docker",
        dir = dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "nothing".to_string()
    } else {
        items.join(", ")
    }
}

/// One `build dev` of the demo, shown as the console shows any job; `None` when it failed.
async fn demo_build(chat: &Chat) -> anyhow::Result<Option<JobSummary>> {
    println!("$ marvin build dev");
    let spec = JobSpec {
        env: "dev".into(),
        kind: JobKind::Build {
            services: vec![],
            force: false,
        },
    };
    let summary = match run_with_progress(chat, spec, true).await? {
        Ok(summary) => summary,
        Err(refusal) => {
            eprintln!("marvin: {}", refusal.to_text());
            return Ok(None);
        }
    };
    print!("{}", report::summary_text(&summary));
    Ok((summary.state == Some(JobState::Succeeded)).then_some(summary))
}

/// `marvin chat`: one command per line from stdin, through the same
/// dispatcher as Slack and Telegram, as `local:$USER` from channel `console`.
pub async fn chat(marvin: Marvin, identity_override: Option<String>) -> anyhow::Result<ExitCode> {
    use marvin_core::chat::Message;
    use tokio::io::AsyncBufReadExt;
    let who = identity_override.unwrap_or_else(identity);
    let project = marvin.project.name.clone();
    let chat = Chat::new(open_runtime(marvin)?);
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "marvin chat: {project} as {who}. Type `help` for the commands, `quit` to leave."
        );
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut failures = 0u32;
    loop {
        if interactive {
            eprint!("marvin> ");
            let _ = std::io::stderr().flush();
        }
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some(line) = line else { break };
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if matches!(text, "quit" | "exit") {
            break;
        }
        let message = Message {
            identity: who.clone(),
            channel: "console".into(),
            text: text.to_string(),
            bot: None,
        };
        match chat.handle(&message).await {
            Reply::Ignored => {}
            Reply::Answer(answer) => {
                if answer.tone != marvin_core::chat::Tone::Info {
                    failures += 1;
                }
                println!("{}", answer.to_text());
            }
            Reply::Job(follow) => {
                let report = follow_job(chat.runtime(), follow).await;
                if report.state != JobState::Succeeded {
                    failures += 1;
                }
            }
        }
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Show a job's report as a redrawn status line on a terminal, then print the
/// final report. Ctrl-C cancels the job.
async fn follow_job(
    runtime: &Runtime,
    mut follow: marvin_core::chat::Follow,
) -> marvin_core::render::Report {
    use marvin_core::render::{self, RenderOptions};
    let tty = std::io::stderr().is_terminal();
    let options = RenderOptions::default();
    let mut last = follow.current();
    let mut cancelled = false;
    loop {
        let next = tokio::select! {
            r = follow.next() => r,
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                cancelled = true;
                runtime.cancel(follow.job);
                eprintln!("\rcancelling job #{}…", follow.job);
                continue;
            }
        };
        let Some(report) = next else { break };
        if !report.is_final() && tty {
            let text = render::text(&report, &options, &follow.redactor);
            let line = text.lines().next().unwrap_or("");
            eprint!("\r\x1b[K{line}");
            let _ = std::io::stderr().flush();
        }
        last = report;
    }
    if tty {
        eprint!("\r\x1b[K");
    }
    println!("{}", render::text(&last, &options, &follow.redactor));
    last
}

/// `marvin audit`: the newest audit entries.
pub fn audit(marvin: Marvin, limit: usize, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open_in(&marvin.data_dir)?;
    let entries = store.audit_log(&marvin.project.name, limit)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("the audit log of {} is empty", marvin.project.name);
    }
    let now = SystemClock.now_ms();
    for e in entries {
        let ago = marvin_core::duration::format(std::time::Duration::from_millis(
            (now - e.at_ms).max(0) as u64,
        ));
        let outcome = e.outcome.as_deref().unwrap_or("-");
        println!(
            "{:<6} {:>8} ago  {:<20} {:<18} {:<14} {}  → {outcome}",
            e.id, ago, e.who, e.origin, e.decision, e.command
        );
        if let Some(d) = e.detail.as_deref().filter(|d| !d.is_empty()) {
            println!("{:>22}{d}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}
