//! Automatic triggers at the edge (issue #5, docs/webhooks.md): push
//! webhooks, polling and schedules become jobs through
//! [`Runtime::trigger`], which skips a locked environment.
//!
//! The decisions are the pure modules' — [`crate::webhook`] (is this
//! delivery genuine, which environments), [`crate::coalesce`] (a burst is
//! one job), [`crate::poll`] (did a tip move), [`crate::schedule`] (what is
//! due) — and the time is the runtime's clock, so a test moves it. This
//! module holds their state, fetches for the poller, and submits.
//!
//! What happened is announced on [`Hub::subscribe`] as [`Notice`]s, for
//! whatever posts to the environments' channels.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::coalesce::Coalescer;
use crate::config::ConfigError;
use crate::poll::Poller;
use crate::runtime::{JobKind, JobRequest, Runtime, Triggered};
use crate::schedule::Scheduler;
use crate::store::JobId;
use crate::webhook::{self, Accepted, DeliverySeen, WebhookError, WebhookSecrets};

/// How often the hub looks at its timers.
const TICK: Duration = Duration::from_millis(100);
/// How often the watcher looks at the deployed containers.
const WATCH: Duration = Duration::from_secs(2);

/// Why a job was (or would have been) started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `push`, `poll` or `schedule`.
    pub trigger: &'static str,
    /// What, in words: `push to backend main (0379baf)`, `schedule 0 3 * * *`.
    pub what: String,
}

/// Something an environment's channels should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A trigger started a job.
    Started {
        /// The environment.
        env: String,
        /// The job.
        job: JobId,
        /// What caused it (one per coalesced push).
        causes: Vec<String>,
    },
    /// A trigger skipped the environment (locked), or a schedule missed runs.
    Skipped {
        /// The environment.
        env: String,
        /// The sentence to post.
        text: String,
    },
    /// A deployed container needs a person's attention, or recovered
    /// ([`crate::attention`]).
    Attention {
        /// The environment.
        env: String,
        /// The sentence to post.
        text: String,
    },
    /// Another system (monitoring, CI) posted a message for the channels.
    Message {
        /// The environment.
        env: String,
        /// The message, as sent.
        text: String,
    },
    /// A trigger could not start a job.
    Failed {
        /// The environment.
        env: String,
        /// What went wrong.
        text: String,
    },
}

struct State {
    attention: crate::attention::Attention,
    last_watch: Option<std::time::Instant>,
    seen: DeliverySeen,
    pending: Coalescer<Cause>,
    poller: Poller,
    scheduler: Scheduler,
}

/// The triggers of one project. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    runtime: Runtime,
    secrets: Arc<WebhookSecrets>,
    state: Arc<Mutex<State>>,
    notices: broadcast::Sender<Notice>,
}

fn now_u64(runtime: &Runtime) -> u64 {
    runtime.now_ms().max(0) as u64
}

impl Hub {
    /// The hub of the runtime's project; webhook secrets are read from the
    /// process environment variables marvin.yml names. A schedule that
    /// does not parse, or a named secret variable that is not set, is a
    /// configuration error.
    pub fn new(runtime: Runtime) -> Result<Hub, ConfigError> {
        let project = Arc::clone(&runtime.marvin().project);
        let secrets = WebhookSecrets::from_lookup(&project, |name| std::env::var(name).ok())
            .map_err(|e| ConfigError::Invalid {
                file: project.file.clone(),
                path: e.path.clone(),
                message: e.to_string(),
            })?;
        Hub::with_secrets(runtime, secrets)
    }

    /// The hub with the webhook secrets given (tests, embedding).
    pub fn with_secrets(runtime: Runtime, secrets: WebhookSecrets) -> Result<Hub, ConfigError> {
        let project = Arc::clone(&runtime.marvin().project);
        let now = now_u64(&runtime);
        let state = State {
            attention: crate::attention::Attention::new(),
            last_watch: None,
            seen: DeliverySeen::default(),
            pending: Coalescer::new(project.settings.coalesce_window),
            poller: Poller::new(&project, now),
            scheduler: Scheduler::for_project(&project, now)?,
        };
        let (notices, _) = broadcast::channel(1024);
        Ok(Hub {
            runtime,
            secrets: Arc::new(secrets),
            state: Arc::new(Mutex::new(state)),
            notices,
        })
    }

    /// The runtime jobs go to.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Every notice from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    /// One webhook delivery: verified, matched, deduplicated, and its
    /// environments queued for a build once the coalescing window closes.
    /// The caller answers an error with [`WebhookError::status`].
    pub fn push(&self, headers: &[(&str, &str)], body: &[u8]) -> Result<Accepted, WebhookError> {
        let project = &self.runtime.marvin().project;
        let now = now_u64(&self.runtime);
        let mut state = self.state.lock().expect("hub lock");
        let accepted = webhook::accept(headers, body, project, &self.secrets, &mut state.seen)?;
        let commit = &accepted.push.commit;
        let cause = Cause {
            trigger: "push",
            what: format!(
                "push to {} {} ({})",
                accepted.push.repo_shown(),
                accepted.push.branch,
                &commit[..commit.len().min(7)]
            ),
        };
        for env in &accepted.environments {
            state.pending.offer(env, now, cause.clone());
        }
        Ok(accepted)
    }

    /// A signed message from another system for an environment's channels:
    /// body `{"env": "dev", "text": "…"}`, signed like the generic webhook
    /// with the project-wide secret. Replays (the same body again) are
    /// refused; include a time or an id in the text to repeat a message.
    pub fn message(&self, headers: &[(&str, &str)], body: &[u8]) -> Result<String, WebhookError> {
        webhook::verify_message(headers, body, &self.secrets)?;
        let malformed = |path: &str, message: &str| WebhookError::Malformed {
            provider: webhook::Provider::Generic,
            path: path.into(),
            message: message.into(),
        };
        let json: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| malformed("", &format!("not JSON: {e}")))?;
        let env = json
            .get("env")
            .and_then(|v| v.as_str())
            .ok_or_else(|| malformed("env", "missing; the environment's name"))?;
        let text = json
            .get("text")
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed("text", "missing or empty; the message to post"))?;
        if text.chars().count() > 3_000 {
            return Err(malformed("text", "longer than 3,000 characters"));
        }
        let env = self
            .runtime
            .marvin()
            .project
            .environment(env)
            .map_err(|_| {
                malformed(
                    "env",
                    &format!("`{env}` is not an environment of this project"),
                )
            })?
            .name
            .clone();
        let digest = format!("message:{}", webhook::sign("", body));
        if !self
            .state
            .lock()
            .expect("hub lock")
            .seen
            .first_time(&digest)
        {
            return Err(WebhookError::Replayed {
                provider: webhook::Provider::Generic,
                delivery_id: "(the same message)".into(),
            });
        }
        let _ = self.notices.send(Notice::Message {
            env: env.clone(),
            text: text.to_string(),
        });
        Ok(env)
    }

    /// Run until `shutdown`: start coalesced pushes, due schedules and polls.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            self.tick().await;
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// One look at every timer (public so tests can drive it).
    pub async fn tick(&self) {
        let now = now_u64(&self.runtime);
        let (due_pushes, fires, polls) = {
            let mut state = self.state.lock().expect("hub lock");
            (
                state.pending.due(now),
                state.scheduler.due(now),
                state.poller.due(now),
            )
        };
        for (env, causes) in due_pushes {
            let what: Vec<String> = causes.iter().map(|c| c.what.clone()).collect();
            let trigger = causes.first().map_or("push", |c| c.trigger);
            self.start(&env, trigger, what);
        }
        for fire in fires {
            if let Some(text) = fire.missed_notice() {
                let _ = self.notices.send(Notice::Skipped {
                    env: fire.environment.clone(),
                    text,
                });
            }
            let what = format!("schedule of {}", fire.environment);
            self.start(&fire.environment, "schedule", vec![what]);
        }
        for repo in polls {
            self.poll(&repo, now).await;
        }
        let watch = {
            let mut state = self.state.lock().expect("hub lock");
            let due = state.last_watch.is_none_or(|t| t.elapsed() >= WATCH);
            if due {
                state.last_watch = Some(std::time::Instant::now());
            }
            due
        };
        if watch {
            self.watch().await;
        }
    }

    /// One look at every (local-engine) environment's containers.
    pub async fn watch(&self) {
        let marvin = self.runtime.marvin();
        let project = &marvin.project;
        for env in &project.environments {
            if env.engine != crate::config::EngineKind::Docker {
                continue;
            }
            let labels = std::collections::BTreeMap::from([
                (
                    crate::engine::LABEL_PROJECT.to_string(),
                    project.name.clone(),
                ),
                (crate::engine::LABEL_ENV.to_string(), env.name.clone()),
            ]);
            let containers = match self.runtime.engine().list_containers(&labels).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("watching {}: {e}", env.name);
                    continue;
                }
            };
            let busy = self
                .runtime
                .store()
                .active_jobs(&project.name, Some(&env.name))
                .map(|j| !j.is_empty())
                .unwrap_or(true);
            let alerts = self.state.lock().expect("hub lock").attention.observe(
                &env.name,
                &containers,
                busy,
            );
            for alert in alerts {
                tracing::info!("{}", alert.text);
                let _ = self.notices.send(Notice::Attention {
                    env: alert.env,
                    text: alert.text,
                });
            }
        }
    }

    /// Fetch one repo and offer the branches that moved.
    async fn poll(&self, repo: &str, now: u64) {
        let marvin = self.runtime.marvin();
        let Some(spec) = crate::resolve::repo_specs(&marvin.project)
            .into_iter()
            .find(|s| s.name == repo)
        else {
            return;
        };
        let branches: Vec<String> = {
            let mut state = self.state.lock().expect("hub lock");
            state.poller.polled(repo, now);
            state.poller.tracked(repo).to_vec()
        };
        let mirrors = Arc::clone(&marvin.mirrors);
        let fetched = tokio::task::spawn_blocking(move || {
            mirrors.sync(&spec)?;
            branches
                .iter()
                .map(|b| mirrors.resolve(&spec, b).map(|c| (b.clone(), c.id)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        let tips = match fetched {
            Ok(Ok(tips)) => tips,
            Ok(Err(e)) => {
                tracing::warn!("polling {repo}: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!("polling {repo}: {e}");
                return;
            }
        };
        let project = &marvin.project;
        let mut state = self.state.lock().expect("hub lock");
        for (branch, commit) in tips {
            if let Some(change) = state.poller.observed(repo, &branch, &commit) {
                let cause = Cause {
                    trigger: "poll",
                    what: format!(
                        "new commit on {repo} {branch} ({})",
                        &change.after[..change.after.len().min(7)]
                    ),
                };
                for env in webhook::environments_to_build(project, repo, &branch) {
                    state.pending.offer(&env, now, cause.clone());
                }
            }
        }
    }

    fn start(&self, env: &str, trigger: &'static str, causes: Vec<String>) {
        let request = JobRequest {
            env: env.to_string(),
            kind: JobKind::Build {
                services: vec![],
                force: false,
            },
            who: format!("marvin:{trigger}"),
            origin: trigger.to_string(),
            trigger: trigger.to_string(),
        };
        let notice = match self.runtime.trigger(request) {
            Ok(Triggered::Started(handle)) => {
                tracing::info!("{env}: {} started job #{}", causes.join("; "), handle.id);
                Notice::Started {
                    env: env.to_string(),
                    job: handle.id,
                    causes,
                }
            }
            Ok(Triggered::Skipped { reason }) => Notice::Skipped {
                env: env.to_string(),
                text: reason,
            },
            Err(e) => {
                tracing::warn!("{env}: the {trigger} trigger failed: {e}");
                Notice::Failed {
                    env: env.to_string(),
                    text: format!("the {trigger} build could not start: {e}"),
                }
            }
        };
        let _ = self.notices.send(notice);
    }
}
