//! `marvin`: the console front end. Flags and glue only; everything it does
//! is in marvin-core.

mod console;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use marvin_core::engine::DockerEngine;
use marvin_core::marvin::{DATA_DIR_ENV, Marvin, PlanOptions, locate_config};
use marvin_core::report;
use marvin_core::runtime::JobKind;

/// Marvin: ChatOps build-and-deploy for docker-compose microservices.
///
/// Start with `marvin demo`: it creates a demo project, builds and deploys
/// it on the local Docker engine, changes one service and builds again.
#[derive(Parser)]
#[command(name = "marvin", version, about, long_about)]
struct Cli {
    /// Path to marvin.yml (default: ./marvin.yml or the nearest parent's).
    #[arg(short, long, global = true, env = "MARVIN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory for mirrors and state (default: .marvin/ beside marvin.yml).
    #[arg(long, global = true, env = DATA_DIR_ENV)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a demo project, build and deploy it, change one service, build again.
    Demo {
        /// Where to create the demo project.
        #[arg(default_value = "marvin-demo")]
        dir: PathBuf,
        /// Remove the demo's containers, networks, volumes and images, then exit.
        #[arg(long)]
        clean: bool,
    },
    /// Show what `build` would do: images to build or reuse, containers to change. Changes nothing.
    Plan {
        /// Environment name or alias.
        env: String,
        /// Only these services (repeatable).
        #[arg(long = "service", short = 's')]
        services: Vec<String>,
        /// Plan a forced rebuild.
        #[arg(long)]
        force: bool,
        /// Do not fetch; use the mirrors as they are.
        #[arg(long)]
        offline: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fetch, build what changed, deploy what changed.
    Build {
        /// Environment name or alias.
        env: String,
        /// Only these services (repeatable).
        #[arg(long = "service", short = 's')]
        services: Vec<String>,
        /// Rebuild images even when their key is present.
        #[arg(long)]
        force: bool,
        /// Print the job's summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What runs in an environment, and its last job.
    Status {
        /// Environment name or alias.
        env: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The log of a job (default: the last one) or of a service's container.
    Logs {
        /// Environment name or alias.
        env: String,
        /// A service name or a job number.
        target: Option<String>,
        /// Only the last N lines.
        #[arg(long, default_value_t = 100)]
        tail: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a task (a one-off container) in an environment.
    Run {
        /// Environment name or alias.
        env: String,
        /// Task name from marvin.yml.
        task: String,
        /// Arguments appended to the task's command.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
        /// Print the job's summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The last jobs of an environment.
    History {
        /// Environment name or alias.
        env: String,
        /// How many.
        #[arg(default_value_t = 10)]
        n: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Redeploy an earlier successful deployment (default: the one before the current).
    Rollback {
        /// Environment name or alias.
        env: String,
        /// The job whose deployment to restore.
        job: Option<i64>,
        /// Print the job's summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Reserve an environment: others cannot build or deploy it until it expires or you unlock it.
    Lock {
        /// Environment name or alias.
        env: String,
        /// How long (`30m`, `2h`, `1d`; default 2h).
        duration: Option<String>,
        /// Why, shown to whoever is refused.
        #[arg(trailing_var_arg = true)]
        reason: Vec<String>,
        /// Take over someone else's lock (admins).
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Release your lock on an environment.
    Unlock {
        /// Environment name or alias.
        env: String,
        /// Release someone else's lock (admins).
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run Marvin for a team: the web page, push webhooks, schedules and polling, until SIGTERM.
    ///
    /// On SIGTERM or Ctrl-C it stops taking work, gives running jobs the
    /// grace period to finish, records the rest as interrupted, and exits.
    Serve {
        /// Address of the web page and the webhook receiver.
        #[arg(long, default_value = "127.0.0.1:8080", env = "MARVIN_LISTEN")]
        listen: std::net::SocketAddr,
        /// How long running jobs may take to finish after SIGTERM (`30s`, `5m`).
        #[arg(long, default_value = "30s")]
        grace: String,
    },
    /// An interactive session speaking the chat grammar (`dev build`, `help`) as local:$USER.
    ///
    /// Reads one command per line from stdin; jobs show a live status line
    /// and end with their report. `quit` or end of input leaves.
    Chat {
        /// Identity to speak as (default: local:$USER).
        #[arg(long, hide = true, env = "MARVIN_CHAT_IDENTITY")]
        identity: Option<String>,
    },
    /// The audit log: every command, who sent it, from where, allowed or denied, and how it ended.
    Audit {
        /// How many entries (newest first).
        #[arg(short = 'n', long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop a running or queued job (default: the environment's running job).
    Cancel {
        /// Environment name or alias.
        env: String,
        /// The job.
        job: Option<i64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Whether the command was asked for JSON (errors then go to stdout as JSON too).
    fn json(&self) -> bool {
        match self {
            Command::Plan { json, .. }
            | Command::Build { json, .. }
            | Command::Status { json, .. }
            | Command::Logs { json, .. }
            | Command::Run { json, .. }
            | Command::History { json, .. }
            | Command::Rollback { json, .. }
            | Command::Lock { json, .. }
            | Command::Unlock { json, .. }
            | Command::Audit { json, .. }
            | Command::Cancel { json, .. } => *json,
            Command::Demo { .. } | Command::Serve { .. } | Command::Chat { .. } => false,
        }
    }
}

/// `{"error": {"message": ..., "problems": [...]}}`: the whole message, and
/// each problem of a compose file with its file, line, column and service.
fn error_json(e: &anyhow::Error) -> serde_json::Value {
    let problems: Vec<_> = e
        .chain()
        .find_map(|cause| {
            cause
                .downcast_ref::<marvin_core::marvin::MarvinError>()
                .map(|m| m.problems())
        })
        .unwrap_or_default();
    serde_json::json!({
        "error": {
            "message": format!("{e:#}"),
            "problems": problems,
        }
    })
}

fn main() -> ExitCode {
    // `marvin history dev | head` must end quietly when the reader goes away,
    // not panic. (SIGPIPE stays ignored, as Rust sets it: git transports
    // write to child processes and must see EPIPE as an error, not die.)
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let cli = Cli::parse();
    if matches!(cli.command, Command::Serve { .. }) {
        // A long-running server logs what it refuses and starts (stderr;
        // `RUST_LOG` overrides the level).
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("marvin: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.command.json();
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if json => {
            println!("{:#}", error_json(&e));
            eprintln!("marvin: {e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("marvin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> anyhow::Result<Marvin> {
    let config = locate_config(cli.config.as_deref())
        .map_err(|e| anyhow::anyhow!("{e}, or try `marvin demo`"))?;
    let marvin = Marvin::load(&config, cli.data_dir.clone())?;
    Ok(match DockerEngine::connect() {
        Ok(engine) => marvin.with_engine(Arc::new(engine)),
        Err(_) => marvin,
    })
}

fn job(kind: JobKind, env: &str) -> console::JobSpec {
    console::JobSpec {
        env: env.to_string(),
        kind,
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Demo { dir, clean } = &cli.command {
        return console::demo(dir, *clean).await;
    }
    let marvin = load(&cli)?;
    match cli.command {
        Command::Demo { .. } => unreachable!("handled above"),
        Command::Plan {
            env,
            services,
            force,
            offline,
            json,
        } => {
            let plan = marvin
                .plan(
                    &env,
                    &PlanOptions {
                        services,
                        force,
                        offline,
                    },
                )
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report::PlanJson::from(&plan))?
                );
            } else {
                print!("{}", report::plan_text(&plan));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Build {
            env,
            services,
            force,
            json,
        } => console::run_job(marvin, job(JobKind::Build { services, force }, &env), json).await,
        Command::Run {
            env,
            task,
            args,
            json,
        } => console::run_job(marvin, job(JobKind::Run { task, args }, &env), json).await,
        Command::Rollback { env, job: j, json } => {
            console::run_job(marvin, job(JobKind::Rollback { job: j }, &env), json).await
        }
        Command::Status { env, json } => console::status(marvin, &env, json).await,
        Command::Logs {
            env,
            target,
            tail,
            json,
        } => console::logs(marvin, &env, target, tail, json).await,
        Command::History { env, n, json } => console::history(marvin, &env, n, json),
        Command::Cancel { env, job: j, json } => console::cancel(marvin, &env, j, json).await,
        Command::Lock {
            env,
            duration,
            reason,
            force,
            json,
        } => console::lock(marvin, &env, duration, &reason.join(" "), force, json).await,
        Command::Unlock { env, force, json } => console::unlock(marvin, &env, force, json).await,
        Command::Serve { listen, grace } => {
            let grace = marvin_core::duration::parse(&grace)
                .map_err(|e| anyhow::anyhow!("--grace: {e}"))?;
            serve::serve(marvin, serve::ServeOptions { listen, grace }).await
        }
        Command::Chat { identity } => console::chat(marvin, identity).await,
        Command::Audit { limit, json } => console::audit(marvin, limit, json),
    }
}
