//! The runtime: turns a command into a persisted job, takes the environment's
//! queue slot, carries out the plan through the ports, emits events and
//! records the result (ARCHITECTURE.md, `runtime`).
//!
//! One job at a time per environment (others queue); different environments
//! run in parallel. Builds are single-flight per build key and limited in
//! number; two commits of one service build side by side.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::config::Project;
use crate::desired::DesiredContainer;
use crate::dockerfile;
use crate::engine::{
    BuildRequest, ContainerSpec, Engine, EngineError, LABEL_BUILD_KEY, LABEL_COMMITS, LABEL_ENV,
    LABEL_PROJECT, LABEL_ROLE, LABEL_SERVICE, Mount,
};
use crate::keys::BuildKey;
use crate::marvin::{Marvin, MarvinError};
use crate::plan::{BuildAction, DeployAction};
use crate::resolve::{self, Plan, Resolved, ServiceBuild};
use crate::source::Commit;
use crate::store::{DeployedService, Job, JobId, JobState, LeaseAttempt, NewJob, Store};

#[path = "runtime_swarm.rs"]
mod swarm;

/// Where "now" comes from; tests use their own.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "lowercase")]
pub enum JobKind {
    /// Fetch, build what changed, deploy what changed.
    Build {
        /// Only these services (empty: all).
        services: Vec<String>,
        /// Rebuild even when the key is present.
        force: bool,
    },
    /// Run a task.
    Run {
        /// Task name.
        task: String,
        /// Arguments appended to its command.
        args: Vec<String>,
    },
    /// Redeploy an earlier successful deployment.
    Rollback {
        /// The job whose deployment to restore (default: the one before the current).
        job: Option<JobId>,
    },
}

impl JobKind {
    /// The verb, as stored and shown.
    pub fn verb(&self) -> &'static str {
        match self {
            JobKind::Build { .. } => "build",
            JobKind::Run { .. } => "run",
            JobKind::Rollback { .. } => "rollback",
        }
    }

    /// The arguments, as stored and shown.
    pub fn args(&self) -> Vec<String> {
        match self {
            JobKind::Build { services, force } => {
                let mut a: Vec<String> = services
                    .iter()
                    .flat_map(|s| ["--service".to_string(), s.clone()])
                    .collect();
                if *force {
                    a.push("--force".into());
                }
                a
            }
            JobKind::Run { task, args } => std::iter::once(task.clone())
                .chain(args.iter().cloned())
                .collect(),
            JobKind::Rollback { job } => job.map(|j| vec![j.to_string()]).unwrap_or_default(),
        }
    }
}

/// A request for a job: what, where, who, from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    /// Environment name or alias.
    pub env: String,
    /// What to do.
    pub kind: JobKind,
    /// Identity (`local:alice`, `slack:U123`).
    pub who: String,
    /// Where it came from (`console`, `slack:C123`, `web`).
    pub origin: String,
    /// What started it: `person`, `push`, `poll`, `schedule`.
    pub trigger: String,
}

/// Progress, as every front end sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    /// The job.
    pub job: JobId,
    /// Its environment.
    pub env: String,
    /// What happened.
    pub kind: EventKind,
}

/// What happened in a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// Waiting for the environment's slot.
    Queued,
    /// A protected environment: waiting for an admin's `approve` until `expires_ms`.
    AwaitingApproval {
        /// When the request lapses (unix millis).
        expires_ms: i64,
    },
    /// An admin approved the job; it now waits for the slot.
    Approved {
        /// The admin.
        by: String,
    },
    /// Running.
    Started,
    /// A step began: `fetch`, `plan`, `build`, `before_deploy`, `deploy`, `after_deploy`, `task`, `on_failure`.
    Step {
        /// Step name.
        step: String,
    },
    /// Commits resolved.
    Commits {
        /// One per repo.
        commits: Vec<Commit>,
    },
    /// An image build started.
    BuildStarted {
        /// Service.
        service: String,
    },
    /// An image was built.
    Built {
        /// Service.
        service: String,
        /// How long it took.
        millis: u64,
    },
    /// An image was reused.
    Reused {
        /// Service.
        service: String,
    },
    /// A container changed.
    Container {
        /// Service.
        service: String,
        /// `create`, `recreate`, `remove`, `rolled-back`.
        action: String,
    },
    /// A log line.
    Log {
        /// Which stream (`build:web`, `task:migrate`, `deploy`).
        stream: String,
        /// The line.
        line: String,
    },
    /// The job ended.
    Finished {
        /// Final state.
        state: JobState,
        /// The summary.
        summary: Box<JobSummary>,
    },
}

/// The result of a job, for reports (docs/commands.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct JobSummary {
    /// Job id.
    pub job: JobId,
    /// Project name.
    pub project: String,
    /// Environment name.
    pub env: String,
    /// Verb.
    pub verb: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Who asked.
    pub who: String,
    /// Final state.
    pub state: Option<JobState>,
    /// Wall time from start to end.
    pub duration_ms: u64,
    /// Commits deployed (or attempted).
    pub commits: Vec<Commit>,
    /// Images built, with their build time.
    pub built: Vec<(String, u64)>,
    /// Images reused.
    pub reused: Vec<String>,
    /// Containers created.
    pub created: Vec<String>,
    /// Containers recreated.
    pub recreated: Vec<String>,
    /// Containers removed.
    pub removed: Vec<String>,
    /// Containers left as they were.
    pub unchanged: Vec<String>,
    /// Services whose previous container was put back after a failure.
    pub rolled_back: Vec<String>,
    /// Exit code of a task.
    pub exit_code: Option<i64>,
    /// The step that failed.
    pub failed_step: Option<String>,
    /// What went wrong.
    pub error: Option<String>,
    /// The last lines of the failing step's log.
    pub last_lines: Vec<String>,
}

/// Why a job could not be submitted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Config or resolution problem found before the job was created.
    #[error(transparent)]
    Marvin(#[from] MarvinError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What an automatic trigger did.
pub enum Triggered {
    /// A job was submitted.
    Started(JobHandle),
    /// The environment is locked: nothing was submitted.
    Skipped {
        /// Why, for the environment's channels: who holds it, why, until when.
        reason: String,
    },
}

/// A submitted job.
pub struct JobHandle {
    /// Its id.
    pub id: JobId,
    done: tokio::task::JoinHandle<JobSummary>,
}

impl JobHandle {
    /// Wait for the job to end.
    pub async fn wait(self) -> JobSummary {
        let id = self.id;
        self.done.await.unwrap_or_else(|e| JobSummary {
            job: id,
            state: Some(JobState::Failed),
            error: Some(format!("the job's task died: {e}")),
            ..JobSummary::default()
        })
    }
}

/// A build in flight: its result is how long it took, or why it failed.
/// `Ok(None)`: the image turned out to be present already (another job built it).
type BuildCell = Arc<OnceCell<Result<Option<u64>, BuildError>>>;

/// Why an image was not built.
#[derive(Clone)]
enum BuildError {
    /// The build ran and failed: its last log lines say why.
    Failed(Vec<String>),
    /// It could not run (engine unreachable, context unreadable): the reason.
    NotRun(String),
}

struct Inner {
    marvin: Marvin,
    engine: Arc<dyn Engine>,
    store: Store,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<JobEvent>,
    owner: String,
    build_slots: Semaphore,
    /// How many builds may run at once on this host, across processes.
    build_concurrency: usize,
    inflight: Mutex<HashMap<BuildKey, BuildCell>>,
    /// Build leases this runtime holds in the store (heartbeat while > 0).
    leases_held: AtomicUsize,
    cancels: Mutex<HashMap<JobId, CancellationToken>>,
    /// Secret values learned from plans (env files), per environment.
    learned_secrets: Mutex<HashMap<String, Vec<String>>>,
}

/// The job executor. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

/// How many log lines a failure report keeps.
const LAST_LINES: usize = 20;

/// A job failed in a step.
struct StepError {
    step: String,
    message: String,
    last_lines: Vec<String>,
}

impl StepError {
    fn new(step: &str, message: impl Into<String>) -> Self {
        StepError {
            step: step.to_string(),
            message: message.into(),
            last_lines: Vec::new(),
        }
    }
}

/// The running job's view: its id, its log, its summary so far.
struct JobCtx {
    id: JobId,
    env: String,
    inner: Arc<Inner>,
    pending_logs: Mutex<Vec<(String, String)>>,
    recent: Mutex<VecDeque<String>>,
    summary: Mutex<JobSummary>,
    cancel: CancellationToken,
    /// Secret values of the environment, masked in every log line and report.
    redactor: Mutex<Arc<crate::redact::Redactor>>,
    /// Containers are being replaced: a cancel waits for the current wave.
    deploying: AtomicBool,
}

impl JobCtx {
    fn emit(&self, kind: EventKind) {
        let data = serde_json::to_value(&kind).unwrap_or_default();
        if !matches!(kind, EventKind::Log { .. }) {
            let tag = data
                .get("event")
                .and_then(|v| v.as_str())
                .unwrap_or("event")
                .to_string();
            let _ = self
                .inner
                .store
                .add_event(self.id, &tag, &data, self.inner.clock.now_ms());
        }
        let _ = self.inner.events.send(JobEvent {
            job: self.id,
            env: self.env.clone(),
            kind,
        });
    }

    fn log(&self, stream: &str, line: &str) {
        let redactor = Arc::clone(&self.redactor.lock().expect("redactor lock"));
        let line = redactor.redact(line.trim_end_matches(['\r', '\n']));
        let line = line.as_ref();
        {
            let mut recent = self.recent.lock().expect("log lock");
            if recent.len() == LAST_LINES {
                recent.pop_front();
            }
            recent.push_back(line.to_string());
        }
        let full = {
            let mut pending = self.pending_logs.lock().expect("log lock");
            pending.push((stream.to_string(), line.to_string()));
            pending.len() >= 64
        };
        if full {
            self.flush_logs();
        }
        self.emit(EventKind::Log {
            stream: stream.to_string(),
            line: line.to_string(),
        });
    }

    fn flush_logs(&self) {
        let lines = std::mem::take(&mut *self.pending_logs.lock().expect("log lock"));
        if !lines.is_empty() {
            let _ = self
                .inner
                .store
                .add_logs(self.id, &lines, self.inner.clock.now_ms());
        }
    }

    fn last_lines(&self) -> Vec<String> {
        self.recent
            .lock()
            .expect("log lock")
            .iter()
            .cloned()
            .collect()
    }

    fn step(&self, step: &str) {
        self.flush_logs();
        self.recent.lock().expect("log lock").clear();
        self.emit(EventKind::Step {
            step: step.to_string(),
        });
        self.log("marvin", &format!("== {step}"));
    }

    fn summary(&self) -> std::sync::MutexGuard<'_, JobSummary> {
        self.summary.lock().expect("summary lock")
    }

    fn check_cancel(&self) -> Result<(), StepError> {
        if self.cancel.is_cancelled() {
            Err(StepError::new("cancel", "cancelled"))
        } else {
            Ok(())
        }
    }
}

impl Runtime {
    /// A runtime over a loaded project, an engine and a store. Jobs left
    /// queued or running by a previous process become `interrupted`.
    pub fn new(
        marvin: Marvin,
        engine: Arc<dyn Engine>,
        store: Store,
        clock: Arc<dyn Clock>,
    ) -> Result<Runtime, SubmitError> {
        let interrupted = sweep_abandoned(&store, &marvin.project.name, clock.now_ms())?;
        if !interrupted.is_empty() {
            let ids: Vec<String> = interrupted.iter().map(|j| format!("#{}", j.id)).collect();
            tracing::warn!(
                "jobs left unfinished by a process that is gone are now interrupted: {}",
                ids.join(", ")
            );
        }
        let concurrency = marvin
            .project
            .settings
            .build_concurrency
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
        let (events, _) = broadcast::channel(4096);
        let runtime = Runtime {
            inner: Arc::new(Inner {
                marvin,
                engine,
                store,
                clock,
                events,
                owner: owner_id(),
                build_slots: Semaphore::new(concurrency),
                build_concurrency: concurrency,
                inflight: Mutex::new(HashMap::new()),
                leases_held: AtomicUsize::new(0),
                cancels: Mutex::new(HashMap::new()),
                learned_secrets: Mutex::new(HashMap::new()),
            }),
        };
        runtime.learn_deployed_secrets();
        tokio::spawn(maintain(Arc::downgrade(&runtime.inner)));
        Ok(runtime)
    }

    /// Jobs this runtime interrupted at start because their process was gone.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Every job event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    /// The state store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The loaded project.
    pub fn marvin(&self) -> &Marvin {
        &self.inner.marvin
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.inner.engine
    }

    /// Now, by the runtime's clock (unix millis).
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// A redactor for every secret value known in the project: what
    /// marvin.yml says is secret in any environment, and the values from env
    /// files that plans have read so far. Front ends pass everything they
    /// emit that did not come from a job's own report through it.
    pub fn redactor(&self) -> crate::redact::Redactor {
        let mut values: Vec<String> = self
            .inner
            .marvin
            .project
            .environments
            .iter()
            .flat_map(|e| crate::redact::secret_values(e, &[]))
            .collect();
        values.extend(
            self.inner
                .learned_secrets
                .lock()
                .expect("secrets lock")
                .values()
                .flatten()
                .cloned(),
        );
        crate::redact::Redactor::new(values)
    }

    /// Persist a job, then run it in the background once its environment is free.
    pub fn submit(&self, request: JobRequest) -> Result<JobHandle, SubmitError> {
        self.submit_inner(request, false)
    }

    /// The entry point of automatic triggers (push, poll, schedule): like
    /// [`Runtime::submit`], except that a locked environment is skipped —
    /// whoever holds the lock — with the sentence to tell its channels.
    pub fn trigger(&self, request: JobRequest) -> Result<Triggered, SubmitError> {
        let env = self
            .inner
            .marvin
            .project
            .environment(&request.env)
            .map_err(MarvinError::from)?;
        let now = self.inner.clock.now_ms();
        let lock =
            self.inner
                .store
                .current_lock(&self.inner.marvin.project.name, &env.name, now)?;
        if let Err(reason) = crate::locks::may_trigger(lock.as_ref(), &request.trigger, now) {
            tracing::info!("{}: {reason}", env.name);
            return Ok(Triggered::Skipped { reason });
        }
        self.submit(request).map(Triggered::Started)
    }

    /// Persist a job on a protected environment that waits for an admin's
    /// approval (docs/people.md): the request is recorded with it, expiring
    /// after [`crate::access::APPROVAL_TIMEOUT`]; the job takes its slot once
    /// an admin other than the requester approves (from any process), and
    /// fails at step `approval` if nobody does in time.
    pub fn submit_for_approval(&self, request: JobRequest) -> Result<JobHandle, SubmitError> {
        self.submit_inner(request, true)
    }

    fn submit_inner(&self, request: JobRequest, approval: bool) -> Result<JobHandle, SubmitError> {
        let env = self
            .inner
            .marvin
            .project
            .environment(&request.env)
            .map_err(MarvinError::from)?
            .name
            .clone();
        let job = self.inner.store.create_job_owned(
            &NewJob {
                project: self.inner.marvin.project.name.clone(),
                env: env.clone(),
                verb: request.kind.verb().to_string(),
                // As recorded and shown; the job itself runs `request.kind`.
                args: {
                    let redactor = self.redactor();
                    request
                        .kind
                        .args()
                        .iter()
                        .map(|a| redactor.redact(a).into_owned())
                        .collect()
                },
                who: request.who.clone(),
                origin: request.origin.clone(),
                trigger: request.trigger.clone(),
            },
            Some(&self.inner.owner),
            self.inner.clock.now_ms(),
        )?;
        if approval {
            let now = self.inner.clock.now_ms();
            self.inner
                .store
                .request_approval(job.id, crate::access::approval_expiry(now), now)?;
        }
        let cancel = CancellationToken::new();
        self.inner
            .cancels
            .lock()
            .expect("cancel lock")
            .insert(job.id, cancel.clone());
        let ctx = Arc::new(JobCtx {
            id: job.id,
            env: env.clone(),
            inner: Arc::clone(&self.inner),
            pending_logs: Mutex::new(Vec::new()),
            recent: Mutex::new(VecDeque::new()),
            summary: Mutex::new(JobSummary {
                job: job.id,
                project: self.inner.marvin.project.name.clone(),
                env: env.clone(),
                verb: job.verb.clone(),
                args: job.args.clone(),
                who: job.who.clone(),
                ..JobSummary::default()
            }),
            cancel,
            redactor: Mutex::new(Arc::new(self.secrets_of(&env))),
            deploying: AtomicBool::new(false),
        });
        let runtime = self.clone();
        let kind = request.kind;
        let done = tokio::spawn(async move { runtime.run_job(ctx, kind, approval).await });
        Ok(JobHandle { id: job.id, done })
    }

    /// A redactor for what marvin.yml says is secret in an environment (its
    /// `env` and `vars`) and the values from env files learned so far; plans
    /// and tasks add what they find.
    fn secrets_of(&self, env: &str) -> crate::redact::Redactor {
        match self.inner.marvin.project.environment(env) {
            Ok(e) => {
                let mut values = crate::redact::secret_values(e, &[]);
                if let Some(learned) = self
                    .inner
                    .learned_secrets
                    .lock()
                    .expect("secrets lock")
                    .get(&e.name)
                {
                    values.extend(learned.iter().cloned());
                }
                crate::redact::Redactor::new(values)
            }
            Err(_) => crate::redact::Redactor::none(),
        }
    }

    /// Ask a running or queued job to stop. Returns whether it was found here.
    pub fn cancel(&self, job: JobId) -> bool {
        match self.inner.cancels.lock().expect("cancel lock").get(&job) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// The jobs this runtime has submitted that have not ended yet.
    pub fn unfinished(&self) -> Vec<JobId> {
        let mut ids: Vec<JobId> = self
            .inner
            .cancels
            .lock()
            .expect("cancel lock")
            .keys()
            .copied()
            .collect();
        ids.sort();
        ids
    }

    /// Cancel every job of this runtime (shutdown).
    pub fn cancel_all(&self) {
        for token in self.inner.cancels.lock().expect("cancel lock").values() {
            token.cancel();
        }
    }

    /// What the environments' last deployments put in their containers'
    /// environments is known from the start: a secret from an env file is
    /// masked even before this process plans anything.
    fn learn_deployed_secrets(&self) {
        let project = &self.inner.marvin.project;
        let mut learned = self.inner.learned_secrets.lock().expect("secrets lock");
        for env in &project.environments {
            let Ok(Some(d)) = self
                .inner
                .store
                .deployments(&project.name, &env.name, 1)
                .map(|mut v| v.pop())
            else {
                continue;
            };
            let specs: Vec<ContainerSpec> = d
                .services
                .iter()
                .filter_map(|s| serde_json::from_value::<ContainerSpec>(s.spec.clone()).ok())
                .collect();
            let pairs: Vec<(String, String)> =
                specs.iter().flat_map(|spec| spec.env.clone()).collect();
            let mut values = crate::redact::secret_values(env, &pairs);
            // Compose secrets live in files, not in the recorded environment.
            values.extend(crate::materialize::mounted_secret_values(
                &self.inner.marvin.mirrors.files_root(),
                &specs,
            ));
            learned.insert(env.name.clone(), values);
        }
    }

    /// Mask, from now on, every value among `pairs` (a container's
    /// environment) named like a secret, in this job and in what the
    /// runtime's [`Runtime::redactor`] masks for every front end.
    fn learn_secrets(&self, ctx: &JobCtx, pairs: &[(String, String)]) {
        let Ok(env) = self.inner.marvin.project.environment(&ctx.env) else {
            return;
        };
        let fresh = crate::redact::secret_values(env, pairs);
        self.remember_secrets(ctx, env, fresh);
    }

    /// Mask, from now on, the values of the compose secrets the plan's
    /// containers mount ([`crate::files`]), whatever their names.
    fn learn_file_secrets(&self, ctx: &JobCtx, desired: &[DesiredContainer]) {
        let Ok(env) = self.inner.marvin.project.environment(&ctx.env) else {
            return;
        };
        let fresh: Vec<String> = desired
            .iter()
            .flat_map(|d| &d.files)
            .filter(|f| f.secret)
            .filter_map(|f| match &f.content {
                crate::files::FileContent::Bytes(b) => Some(String::from_utf8_lossy(b)),
                _ => None,
            })
            .flat_map(|v| {
                // A file's value often ends in a newline; mask it with and without.
                let trimmed = v.trim().to_string();
                [v.into_owned(), trimmed]
            })
            .filter(|v| !v.is_empty())
            .collect();
        if !fresh.is_empty() {
            self.remember_secrets(ctx, env, fresh);
        }
    }

    fn remember_secrets(&self, ctx: &JobCtx, env: &crate::config::Environment, fresh: Vec<String>) {
        let values = {
            let mut learned = self.inner.learned_secrets.lock().expect("secrets lock");
            let known = learned.entry(ctx.env.clone()).or_default();
            for v in fresh {
                if !known.contains(&v) {
                    known.push(v);
                }
            }
            known.clone()
        };
        let mut all = crate::redact::secret_values(env, &[]);
        all.extend(values);
        *ctx.redactor.lock().expect("redactor lock") = Arc::new(crate::redact::Redactor::new(all));
    }

    /// Wait until the job's approval request is approved (`Ok`), lapses or
    /// the job is cancelled (`Err`). Approvals are read from the store, so
    /// an admin may approve from any front end or process.
    async fn await_approval(&self, ctx: &Arc<JobCtx>) -> Result<(), StepError> {
        let mut announced = false;
        loop {
            let now = self.inner.clock.now_ms();
            match self.inner.store.approval(ctx.id) {
                Ok(Some(a)) => match a.state {
                    crate::store::ApprovalState::Approved => {
                        let by = a.approver.unwrap_or_default();
                        ctx.log("marvin", &format!("approved by {by}"));
                        ctx.emit(EventKind::Approved { by });
                        return Ok(());
                    }
                    crate::store::ApprovalState::Expired => {
                        return Err(StepError::new(
                            "approval",
                            "nobody approved it in time; ask again, or ask an admin to run it",
                        ));
                    }
                    crate::store::ApprovalState::Pending if now >= a.expires_ms => {
                        let _ = self.inner.store.expire_approvals(now);
                        continue;
                    }
                    crate::store::ApprovalState::Pending => {
                        if !announced {
                            announced = true;
                            ctx.log(
                                "marvin",
                                &format!(
                                    "{} is protected: waiting for an admin's `approve #{}`",
                                    ctx.env, ctx.id
                                ),
                            );
                            ctx.emit(EventKind::AwaitingApproval {
                                expires_ms: a.expires_ms,
                            });
                        }
                    }
                },
                Ok(None) => return Err(StepError::new("approval", "the approval request is gone")),
                Err(e) => ctx.log("marvin", &format!("cannot read the approval: {e}")),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = ctx.cancel.cancelled() => {
                    return Err(StepError::new("queue", "cancelled while waiting for approval"));
                }
            }
        }
    }

    async fn run_job(self, ctx: Arc<JobCtx>, kind: JobKind, approval: bool) -> JobSummary {
        ctx.emit(EventKind::Queued);
        let approved = if approval {
            self.await_approval(&ctx).await
        } else {
            Ok(())
        };
        // The environment's slot is taken in the store, so jobs queue across
        // processes too (a console build while `marvin serve` runs).
        let guard = if let Err(e) = approved {
            Err(e)
        } else {
            loop {
                match self
                    .inner
                    .store
                    .try_start_job(ctx.id, &self.inner.owner, || self.inner.clock.now_ms())
                {
                    Ok(true) => break Ok(()),
                    Ok(false) => {}
                    Err(e) => {
                        ctx.log(
                            "marvin",
                            &format!("cannot take the environment's slot: {e}"),
                        );
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = ctx.cancel.cancelled() => break Err(StepError::new("queue", "cancelled while queued")),
                }
            }
        };
        let started = Instant::now();
        let outcome = match guard {
            Err(e) => Err(e),
            Ok(()) => {
                ctx.emit(EventKind::Started);
                let work = self.execute(&ctx, &kind);
                tokio::pin!(work);
                let result = tokio::select! {
                    r = &mut work => r,
                    _ = ctx.cancel.cancelled() => {
                        if ctx.deploying.load(Ordering::SeqCst) {
                            // Dropping the work mid-replace would leave a container
                            // stopped and set aside: the deploy stops after this wave.
                            ctx.log("marvin", "cancel requested: stopping once the containers being replaced are up");
                            work.await
                        } else {
                            Err(StepError::new("cancel", "cancelled"))
                        }
                    }
                };
                if let Err(e) = &result
                    && e.step != "cancel"
                    && matches!(kind, JobKind::Build { .. } | JobKind::Rollback { .. })
                {
                    self.on_failure_hooks(&ctx).await;
                }
                result
            }
        };
        ctx.flush_logs();
        let state = match &outcome {
            Ok(()) => JobState::Succeeded,
            Err(e) if e.step == "cancel" || e.step == "queue" => JobState::Cancelled,
            Err(_) => JobState::Failed,
        };
        let summary = {
            let mut s = ctx.summary();
            s.state = Some(state);
            s.duration_ms = started.elapsed().as_millis() as u64;
            if let Err(e) = outcome {
                let redactor = Arc::clone(&ctx.redactor.lock().expect("redactor lock"));
                let e = StepError {
                    step: e.step,
                    message: redactor.redact(&e.message).into_owned(),
                    last_lines: e
                        .last_lines
                        .iter()
                        .map(|l| redactor.redact(l).into_owned())
                        .collect(),
                };
                s.failed_step = Some(e.step);
                s.error = Some(e.message);
                s.last_lines = if e.last_lines.is_empty() {
                    ctx.last_lines()
                } else {
                    e.last_lines
                };
            }
            s.clone()
        };
        let result = serde_json::to_value(&summary).ok();
        let _ = self.inner.store.finish_job(
            ctx.id,
            state,
            result.as_ref(),
            summary.error.as_deref(),
            self.inner.clock.now_ms(),
        );
        self.inner
            .cancels
            .lock()
            .expect("cancel lock")
            .remove(&ctx.id);
        ctx.emit(EventKind::Finished {
            state,
            summary: Box::new(summary.clone()),
        });
        summary
    }

    async fn execute(&self, ctx: &Arc<JobCtx>, kind: &JobKind) -> Result<(), StepError> {
        match kind {
            JobKind::Build { services, force } => self.build(ctx, services, *force).await,
            JobKind::Run { task, args } => self.run_task(ctx, task, args).await,
            JobKind::Rollback { job } => self.rollback(ctx, *job).await,
        }
    }

    async fn resolve(&self, ctx: &Arc<JobCtx>, fetch: bool) -> Result<Resolved, StepError> {
        ctx.step("fetch");
        let project = Arc::clone(&self.inner.marvin.project);
        let mirrors = Arc::clone(&self.inner.marvin.mirrors);
        let env = project
            .environment(&ctx.env)
            .map_err(|e| StepError::new("fetch", e.to_string()))?
            .clone();
        let resolved =
            tokio::task::spawn_blocking(move || resolve::resolve(&project, &env, &mirrors, fetch))
                .await
                .map_err(|e| StepError::new("fetch", e.to_string()))?
                .map_err(|e| StepError::new("fetch", e.to_string()))?;
        for c in &resolved.commits {
            ctx.log(
                "marvin",
                &format!(
                    "{} {} {} {}",
                    c.repo,
                    &c.id[..7.min(c.id.len())],
                    c.author,
                    c.subject
                ),
            );
        }
        ctx.summary().commits = resolved.commits.clone();
        ctx.emit(EventKind::Commits {
            commits: resolved.commits.clone(),
        });
        Ok(resolved)
    }

    async fn make_plan(
        &self,
        ctx: &Arc<JobCtx>,
        resolved: &Resolved,
        only: &[String],
        force: bool,
    ) -> Result<Plan, StepError> {
        ctx.step("plan");
        let observed = self
            .inner
            .marvin
            .observe(&ctx.env)
            .await
            .map_err(|e| StepError::new("plan", e.to_string()))?;
        if observed.engine_unreachable {
            return Err(StepError::new(
                "plan",
                "the Docker engine does not answer; is dockerd running (or DOCKER_HOST right)?",
            ));
        }
        let project = Arc::clone(&self.inner.marvin.project);
        let resolved = resolved.clone();
        let only = only.to_vec();
        let plan = tokio::task::spawn_blocking(move || {
            resolve::make_plan(&project, &resolved, &observed, &only, force)
        })
        .await
        .map_err(|e| StepError::new("plan", e.to_string()))?
        .map_err(|e| StepError::new("plan", e.to_string()))?;
        // Every value a container will see that is named like a secret is masked from now on.
        if let Ok(env) = self.inner.marvin.project.environment(&ctx.env) {
            let pairs: Vec<(String, String)> = plan
                .desired
                .iter()
                .flat_map(|d| d.spec.env.iter().cloned())
                .collect();
            let _ = env;
            self.learn_secrets(ctx, &pairs);
        }
        for warning in &plan.warnings {
            ctx.log("marvin", &format!("warning: {warning}"));
        }
        self.learn_file_secrets(ctx, &plan.desired);
        let c = plan.counts();
        ctx.log(
            "marvin",
            &format!(
                "plan: {} to build, {} reused; {} to create, {} to recreate, {} unchanged, {} to remove",
                c.build, c.reuse, c.create, c.recreate, c.keep, c.remove
            ),
        );
        Ok(plan)
    }

    async fn build(
        &self,
        ctx: &Arc<JobCtx>,
        only: &[String],
        force: bool,
    ) -> Result<(), StepError> {
        let resolved = self.resolve(ctx, true).await?;
        let plan = self.make_plan(ctx, &resolved, only, force).await?;
        let plan = self.swarm_images(ctx, plan).await?;
        ctx.check_cancel()?;
        self.build_images(ctx, &resolved, &plan).await?;
        ctx.check_cancel()?;
        self.write_files(ctx, &resolved, &plan).await?;
        self.deploy(ctx, &plan.desired, &plan, &resolved.commits)
            .await
    }

    /// Write the files from git, secrets and configs the plan's containers
    /// mount ([`crate::materialize`]); those already on disk are kept.
    async fn write_files(
        &self,
        ctx: &Arc<JobCtx>,
        resolved: &Resolved,
        plan: &Plan,
    ) -> Result<(), StepError> {
        let mounts: Vec<crate::files::FileMount> = plan
            .desired
            .iter()
            .flat_map(|d| d.files.iter().cloned())
            .collect();
        if mounts.is_empty() {
            return Ok(());
        }
        let workspace = resolved.workspace.clone();
        let root = resolved.files_root.clone();
        let project = self.inner.marvin.project.name.clone();
        let env = ctx.env.clone();
        tokio::task::spawn_blocking(move || {
            crate::materialize::write(&workspace, &root, &project, &env, &mounts)
        })
        .await
        .map_err(|e| StepError::new("deploy", e.to_string()))?
        .map_err(|e| StepError::new("deploy", format!("writing mounted files: {e}")))
    }

    /// Build what the plan says, in `FROM` order, concurrently up to the limit.
    async fn build_images(
        &self,
        ctx: &Arc<JobCtx>,
        resolved: &Resolved,
        plan: &Plan,
    ) -> Result<(), StepError> {
        ctx.step("build");
        let specs = &plan.build_specs;
        // Waves by FROM dependencies among the services to build.
        let mut remaining: Vec<&crate::plan::BuildStep> = plan.builds.iter().collect();
        let mut done: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        while !remaining.is_empty() {
            let (ready, later): (Vec<_>, Vec<_>) = remaining.into_iter().partition(|step| {
                specs[&step.service]
                    .from_services
                    .values()
                    .all(|dep| done.contains(dep) || !plan.builds.iter().any(|b| &b.service == dep))
            });
            if ready.is_empty() {
                return Err(StepError::new(
                    "build",
                    "Dockerfiles build FROM each other in a cycle",
                ));
            }
            let results = join_all(
                ready
                    .iter()
                    .map(|step| self.build_one(ctx, resolved, plan, step)),
            )
            .await;
            for (step, r) in ready.iter().zip(results) {
                r?;
                done.insert(step.service.clone());
            }
            remaining = later;
        }
        Ok(())
    }

    async fn build_one(
        &self,
        ctx: &Arc<JobCtx>,
        resolved: &Resolved,
        plan: &Plan,
        step: &crate::plan::BuildStep,
    ) -> Result<(), StepError> {
        let spec = &plan.build_specs[&step.service];
        let engine = &self.inner.engine;
        let fail = |m: String| StepError::new("build", format!("{}: {m}", step.service));
        if step.action == BuildAction::Reuse {
            let present = engine
                .image_exists(&spec.tag)
                .await
                .map_err(|e| fail(e.to_string()))?;
            if !present {
                // Another service (or a pruned tag) holds the key: tag it for this one.
                match engine
                    .image_with_key(&plan.project, &spec.key.0)
                    .await
                    .map_err(|e| fail(e.to_string()))?
                {
                    Some(id) => engine
                        .tag_image(&id, &spec.tag)
                        .await
                        .map_err(|e| fail(e.to_string()))?,
                    None => {
                        return Box::pin(self.build_fresh(ctx, resolved, plan, spec, false)).await;
                    }
                }
            }
            ctx.summary().reused.push(step.service.clone());
            ctx.emit(EventKind::Reused {
                service: step.service.clone(),
            });
            return Ok(());
        }
        let forced = step.reason == crate::plan::BuildReason::Forced;
        self.build_fresh(ctx, resolved, plan, spec, forced).await
    }

    /// Build one image, once per key however many jobs ask at the same time.
    async fn build_fresh(
        &self,
        ctx: &Arc<JobCtx>,
        resolved: &Resolved,
        plan: &Plan,
        spec: &ServiceBuild,
        forced: bool,
    ) -> Result<(), StepError> {
        let cell = Arc::clone(
            self.inner
                .inflight
                .lock()
                .expect("inflight lock")
                .entry(spec.key.clone())
                .or_default(),
        );
        let mut built_here = false;
        let result = cell
            .get_or_init(|| {
                built_here = true;
                self.build_image(ctx, resolved, plan, spec, forced)
            })
            .await
            .clone();
        {
            // Leave the map only if it still holds this build: a later job may
            // already have started a new one for the same key (after a failure).
            let mut inflight = self.inner.inflight.lock().expect("inflight lock");
            if inflight
                .get(&spec.key)
                .is_some_and(|current| Arc::ptr_eq(current, &cell))
            {
                inflight.remove(&spec.key);
            }
        }
        match result {
            Ok(Some(millis)) if built_here => {
                {
                    ctx.summary().built.push((spec.service.clone(), millis));
                    ctx.emit(EventKind::Built {
                        service: spec.service.clone(),
                        millis,
                    });
                }
                Ok(())
            }
            Ok(_) => {
                ctx.summary().reused.push(spec.service.clone());
                ctx.emit(EventKind::Reused {
                    service: spec.service.clone(),
                });
                Ok(())
            }
            Err(BuildError::Failed(last_lines)) => Err(StepError {
                step: "build".into(),
                message: format!("building {} failed", spec.service),
                last_lines,
            }),
            // Not the Dockerfile's fault: the reason is the message.
            Err(BuildError::NotRun(reason)) => Err(StepError::new(
                "build",
                format!("building {} failed: {reason}", spec.service),
            )),
        }
    }

    /// Take the store's lease on building `spec`'s key, waiting while a live
    /// Marvin process (another one: this one deduplicates in memory) builds
    /// it. `None` when that build left the image: reuse it. A holder that
    /// died loses its lease to the next asker (the job liveness rule).
    async fn build_lease(
        &self,
        ctx: &Arc<JobCtx>,
        plan: &Plan,
        spec: &ServiceBuild,
        forced: bool,
    ) -> Result<Option<BuildLease>, BuildError> {
        let not_run = |e: &dyn std::fmt::Display| BuildError::NotRun(e.to_string());
        let stream = format!("build:{}", spec.service);
        let mut told = None;
        loop {
            let store = self.inner.store.clone();
            let (project, key, owner) = (
                plan.project.clone(),
                spec.key.0.clone(),
                self.inner.owner.clone(),
            );
            let (job, now) = (ctx.id, self.inner.clock.now_ms());
            let attempt = tokio::task::spawn_blocking(move || {
                store.take_build_lease(&project, &key, &owner, job, now, |h| {
                    owner_alive(Some(&h.owner), Some(h.heartbeat_ms), h.taken_ms, now)
                })
            })
            .await
            .map_err(|e| not_run(&e))?
            .map_err(|e| not_run(&e))?;
            match attempt {
                LeaseAttempt::Taken { from } => {
                    if let Some(dead) = from {
                        ctx.log(
                            &stream,
                            &format!(
                                "taking over the build of {} from job #{} (process {} stopped)",
                                spec.service, dead.job, dead.owner
                            ),
                        );
                    }
                    self.inner.leases_held.fetch_add(1, Ordering::SeqCst);
                    return Ok(Some(BuildLease {
                        inner: Arc::clone(&self.inner),
                        project: plan.project.clone(),
                        key: spec.key.0.clone(),
                        job: ctx.id,
                    }));
                }
                LeaseAttempt::Held(holder) => {
                    if told.as_ref() != Some(&holder.job) {
                        ctx.log(
                            &stream,
                            &format!(
                                "waiting: job #{} (process {}) is building {} with the same inputs",
                                holder.job, holder.owner, spec.tag
                            ),
                        );
                        told = Some(holder.job);
                    }
                    pause_unless_cancelled(ctx, LEASE_POLL).await?;
                    if !forced && self.image_present(spec).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// One of the host's build slots, shared by every process using the
    /// data directory (`<data>/build-slots/<n>.lock`, a file lock the kernel
    /// releases when the process dies), so `build_concurrency` holds per
    /// host, not per process.
    async fn host_build_slot(&self, ctx: &Arc<JobCtx>) -> Result<std::fs::File, BuildError> {
        let dir = self.inner.marvin.data_dir.join("build-slots");
        let fail = |path: &std::path::Path, e: std::io::Error| {
            BuildError::NotRun(format!("build slot {}: {e}", path.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail(&dir, e))?;
        loop {
            for n in 0..self.inner.build_concurrency {
                let path = dir.join(format!("{n}.lock"));
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| fail(&path, e))?;
                match file.try_lock() {
                    Ok(()) => return Ok(file),
                    Err(std::fs::TryLockError::WouldBlock) => {}
                    Err(std::fs::TryLockError::Error(e)) => return Err(fail(&path, e)),
                }
            }
            pause_unless_cancelled(ctx, HOST_SLOT_POLL).await?;
        }
    }

    /// Whether `spec`'s image is in the engine already (a build elsewhere
    /// made it); an engine that does not answer counts as no.
    async fn image_present(&self, spec: &ServiceBuild) -> bool {
        self.inner
            .engine
            .image_exists(&spec.tag)
            .await
            .unwrap_or(false)
    }

    async fn build_image(
        &self,
        ctx: &Arc<JobCtx>,
        resolved: &Resolved,
        plan: &Plan,
        spec: &ServiceBuild,
        forced: bool,
    ) -> Result<Option<u64>, BuildError> {
        let not_run = |e: &dyn std::fmt::Display| BuildError::NotRun(e.to_string());
        // One build of a key across every process sharing the data directory.
        let Some(_lease) = self.build_lease(ctx, plan, spec, forced).await? else {
            return Ok(None);
        };
        let _permit = self
            .inner
            .build_slots
            .acquire()
            .await
            .map_err(|e| not_run(&e))?;
        let _host_slot = self.host_build_slot(ctx).await?;
        // A job that planned this build may arrive after another job's build
        // of the same key finished and left the single-flight map.
        if !forced && self.image_present(spec).await {
            return Ok(None);
        }
        let started = Instant::now();
        ctx.emit(EventKind::BuildStarted {
            service: spec.service.clone(),
        });
        let stream = format!("build:{}", spec.service);
        ctx.log(
            &stream,
            &format!("building {} ({})", spec.service, spec.tag),
        );
        let service = &resolved.compose.services[&spec.service];
        let build = service
            .build
            .as_ref()
            .expect("built services have a build section");
        // The Dockerfile goes into the tar: from outside the context, or with
        // FROM lines pointed at the images built here for this plan.
        let workspace = resolved.workspace.clone();
        let dockerfile_path = spec.dockerfile.clone();
        let text = tokio::task::spawn_blocking(move || workspace.read_file(&dockerfile_path))
            .await
            .map_err(|e| not_run(&e))?
            .map_err(|e| not_run(&e))?
            .unwrap_or_default();
        let replace: BTreeMap<String, String> = spec
            .from_services
            .iter()
            .map(|(image, svc)| (image.clone(), plan.build_specs[svc].tag.clone()))
            .collect();
        let original = String::from_utf8_lossy(&text).into_owned();
        let builder = self.inner.marvin.project.settings.builder;
        if builder == crate::engine::Builder::BuildKit
            && let Some((line, kind)) = dockerfile::session_mounts(&original).first()
        {
            return Err(BuildError::NotRun(format!(
                "{}:{line}: `RUN --mount=type={kind}` is not supported: it needs a BuildKit \
                 session, which Marvin's builds run without. Remove the mount and read the \
                 value at run time from the service's environment instead",
                spec.dockerfile
            )));
        }
        let rewritten = dockerfile::rewrite_from(&original, &build.args, &replace);
        let commits: Vec<String> = resolved
            .commits
            .iter()
            .map(|c| format!("{}={}", c.repo, c.id))
            .collect();
        let labels = BTreeMap::from([
            (LABEL_PROJECT.to_string(), plan.project.clone()),
            (LABEL_SERVICE.to_string(), spec.service.clone()),
            (LABEL_BUILD_KEY.to_string(), spec.key.0.clone()),
            (LABEL_COMMITS.to_string(), commits.join(",")),
        ]);
        // Labels as one LABEL line, not the API option: one layer instead of four.
        let (rewritten, labels) = match build
            .target
            .is_none()
            .then(|| dockerfile::with_labels(&rewritten, &labels))
            .flatten()
        {
            Some(text) => (text, BTreeMap::new()),
            None => (rewritten, labels),
        };
        let in_context = !spec.inputs.dockerfile_path.starts_with(".marvin.");
        let extra = if rewritten != original || !in_context {
            vec![(spec.inputs.dockerfile_path.clone(), rewritten.into_bytes())]
        } else {
            Vec::new()
        };
        let workspace = resolved.workspace.clone();
        let context = spec.context.clone();
        let tar = tokio::task::spawn_blocking(move || workspace.context_tar(&context, &extra))
            .await
            .map_err(|e| not_run(&e))?
            .map_err(|e| not_run(&e))?;
        let request = BuildRequest {
            tag: spec.tag.clone(),
            dockerfile: spec.inputs.dockerfile_path.clone(),
            context_tar: tar,
            build_args: build.args.clone(),
            target: build.target.clone(),
            platform: build.platform.clone(),
            labels,
            builder,
        };
        let log_ctx = Arc::clone(ctx);
        let log = move |line: &str| log_ctx.log(&stream, line);
        self.inner
            .engine
            .build_image(request, &log)
            .await
            .map(|_| Some(started.elapsed().as_millis() as u64))
            .map_err(|e| match e {
                EngineError::BuildFailed { last_lines, .. } => BuildError::Failed(
                    last_lines
                        .iter()
                        .flat_map(|l| l.lines().map(str::to_string))
                        .collect(),
                ),
                other => not_run(&other),
            })
    }

    /// Carry out the deploy part of a plan: hooks, waves, health waits,
    /// restore on failure, orphans, history.
    async fn deploy(
        &self,
        ctx: &Arc<JobCtx>,
        desired: &[DesiredContainer],
        plan: &Plan,
        commits: &[Commit],
    ) -> Result<(), StepError> {
        let project = &self.inner.marvin.project;
        let engine = &self.inner.engine;
        let env = project
            .environment(&ctx.env)
            .map_err(|e| StepError::new("deploy", e.to_string()))?
            .clone();
        if env.engine == crate::config::EngineKind::Swarm {
            return self.swarm_deploy(ctx, &env, desired, plan, commits).await;
        }
        let network = crate::desired::network_name(&project.name, &env.name);
        let env_labels = BTreeMap::from([
            (LABEL_PROJECT.to_string(), project.name.clone()),
            (LABEL_ENV.to_string(), env.name.clone()),
        ]);
        let deploy_err = |e: EngineError| StepError::new("deploy", e.to_string());

        // Containers that are not the one a service should have (left by a
        // crash mid-recreate, or renamed aside) are removed first: converge.
        let existing = engine
            .list_containers(&env_labels)
            .await
            .map_err(deploy_err)?;
        for c in &existing {
            let expected = crate::desired::container_name(&project.name, &env.name, &c.service);
            let is_task = c.labels.get(LABEL_ROLE).map(String::as_str) == Some("task");
            if !is_task && c.name != expected {
                ctx.log("deploy", &format!("removing leftover container {}", c.name));
                engine.remove_container(&c.id).await.map_err(deploy_err)?;
            }
        }

        let changes: Vec<&crate::plan::DeployStep> = plan
            .deploy
            .iter()
            .filter(|d| d.action != DeployAction::Keep)
            .collect();
        if !changes.is_empty() && !env.hooks.before_deploy.is_empty() {
            ctx.step("before_deploy");
            for task in &env.hooks.before_deploy {
                self.hook(ctx, task, "before_deploy", desired).await?;
            }
        }

        ctx.step("deploy");
        ctx.deploying.store(true, Ordering::SeqCst);
        engine
            .ensure_network(&network, &env_labels)
            .await
            .map_err(deploy_err)?;
        for d in desired {
            for m in &d.spec.volumes {
                if let Mount::Named { name, .. } = m {
                    engine
                        .ensure_volume(name, &env_labels)
                        .await
                        .map_err(deploy_err)?;
                }
            }
        }
        let by_service: BTreeMap<&str, &DesiredContainer> =
            desired.iter().map(|d| (d.service.as_str(), d)).collect();
        let action_of: BTreeMap<&str, DeployAction> = plan
            .deploy
            .iter()
            .map(|d| (d.service.as_str(), d.action))
            .collect();
        let timeout = project.settings.health_timeout;
        let mut failures: Vec<StepError> = Vec::new();
        for (i, wave) in plan.waves.iter().enumerate() {
            let work: Vec<_> = wave
                .iter()
                .filter_map(|s| {
                    let action = *action_of.get(s.as_str())?;
                    let d = by_service.get(s.as_str())?;
                    matches!(action, DeployAction::Create | DeployAction::Recreate)
                        .then_some((d, action))
                })
                .map(|(d, action)| self.replace_container(ctx, d, action, timeout))
                .collect();
            for r in join_all(work).await {
                if let Err(e) = r {
                    failures.push(e);
                }
            }
            if !failures.is_empty() {
                break;
            }
            // Past the last wave a cancel is too late: finish, so what runs is recorded.
            if i + 1 < plan.waves.len() {
                ctx.check_cancel()?;
            }
        }
        if let Some(first) = failures.into_iter().next() {
            return Err(first);
        }
        for d in plan
            .deploy
            .iter()
            .filter(|d| d.action == DeployAction::Remove)
        {
            let name = crate::desired::container_name(&project.name, &env.name, &d.service);
            if let Some(c) = engine.inspect_container(&name).await.map_err(deploy_err)? {
                ctx.log(
                    "deploy",
                    &format!("removing {} (no longer in the compose file)", d.service),
                );
                engine.remove_container(&c.id).await.map_err(deploy_err)?;
            }
            ctx.summary().removed.push(d.service.clone());
            ctx.emit(EventKind::Container {
                service: d.service.clone(),
                action: "remove".into(),
            });
        }
        {
            let mut s = ctx.summary();
            for d in plan
                .deploy
                .iter()
                .filter(|d| d.action == DeployAction::Keep)
            {
                s.unchanged.push(d.service.clone());
            }
        }

        if !changes.is_empty() && !env.hooks.after_deploy.is_empty() {
            ctx.step("after_deploy");
            for task in &env.hooks.after_deploy {
                self.hook(ctx, task, "after_deploy", desired).await?;
            }
        }

        self.record_deployment(ctx, desired, plan, commits)?;
        self.collect_file_garbage(ctx).await;
        Ok(())
    }

    /// Remove mounted files no recorded deployment of the project refers to
    /// (and untouched for an hour). A failure is logged, never fatal.
    async fn collect_file_garbage(&self, ctx: &Arc<JobCtx>) {
        let project = &self.inner.marvin.project;
        let root = self.inner.marvin.mirrors.files_root();
        if !root.is_dir() {
            return;
        }
        let mut keep = std::collections::BTreeSet::new();
        for env in &project.environments {
            let Ok(deployments) =
                self.inner
                    .store
                    .deployments(&project.name, &env.name, usize::MAX)
            else {
                return; // Unsure what is referenced: keep everything.
            };
            for s in deployments.iter().flat_map(|d| &d.services) {
                if let Ok(spec) = serde_json::from_value::<ContainerSpec>(s.spec.clone()) {
                    keep.extend(spec.volumes.into_iter().filter_map(|m| match m {
                        Mount::Bind { source, .. } => Some(std::path::PathBuf::from(source)),
                        _ => None,
                    }));
                }
            }
        }
        let older_than = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let result = tokio::task::spawn_blocking(move || {
            crate::materialize::collect_garbage(&root, &keep, older_than)
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => ctx.log(
                "deploy",
                &format!("removed {n} mounted file(s) no deployment uses"),
            ),
            Ok(Err(e)) => ctx.log("deploy", &format!("cleaning mounted files: {e}")),
            Err(e) => ctx.log("deploy", &format!("cleaning mounted files: {e}")),
        }
    }

    /// Record what the environment now runs (a partial build merges into the last record).
    fn record_deployment(
        &self,
        ctx: &Arc<JobCtx>,
        desired: &[DesiredContainer],
        plan: &Plan,
        commits: &[Commit],
    ) -> Result<(), StepError> {
        let project = &self.inner.marvin.project;
        let env = project
            .environment(&ctx.env)
            .map_err(|e| StepError::new("deploy", e.to_string()))?;
        let commit_map: BTreeMap<String, String> = commits
            .iter()
            .map(|c| (c.repo.clone(), c.id.clone()))
            .collect();
        let record: Vec<DeployedService> = desired
            .iter()
            .map(|d| DeployedService {
                service: d.service.clone(),
                deploy_key: d.deploy_key.0.clone(),
                build_key: d.build_key.as_ref().map(|k| k.0.clone()),
                image: d.spec.image.clone(),
                commits: commit_map.clone(),
                spec: serde_json::to_value(&d.spec).unwrap_or_default(),
            })
            .collect();
        if plan.only.is_empty() {
            self.inner
                .store
                .record_deployment(
                    ctx.id,
                    &project.name,
                    &env.name,
                    &record,
                    self.inner.clock.now_ms(),
                )
                .map_err(|e| StepError::new("deploy", e.to_string()))?;
        } else {
            // A partial build records the whole environment as it now stands:
            // the chosen services from this plan, the others from the last record.
            let mut merged: BTreeMap<String, DeployedService> = self
                .inner
                .store
                .deployments(&project.name, &env.name, 1)
                .ok()
                .and_then(|mut v| v.pop())
                .map(|d| {
                    d.services
                        .into_iter()
                        .map(|s| (s.service.clone(), s))
                        .collect()
                })
                .unwrap_or_default();
            for r in record
                .into_iter()
                .filter(|r| plan.only.contains(&r.service))
            {
                merged.insert(r.service.clone(), r);
            }
            let merged: Vec<DeployedService> = merged.into_values().collect();
            self.inner
                .store
                .record_deployment(
                    ctx.id,
                    &project.name,
                    &env.name,
                    &merged,
                    self.inner.clock.now_ms(),
                )
                .map_err(|e| StepError::new("deploy", e.to_string()))?;
        }
        Ok(())
    }

    /// Create or recreate one container, wait for it, and put the previous
    /// one back if the new one does not come up.
    async fn replace_container(
        &self,
        ctx: &Arc<JobCtx>,
        d: &DesiredContainer,
        action: DeployAction,
        timeout: Duration,
    ) -> Result<(), StepError> {
        let engine = &self.inner.engine;
        let fail = |e: EngineError| StepError::new("deploy", format!("{}: {e}", d.service));
        let previous = engine.inspect_container(&d.spec.name).await.map_err(fail)?;
        let aside = format!("{}-previous-{}", d.spec.name, ctx.id);
        if let Some(old) = &previous {
            ctx.log("deploy", &format!("stopping the running {}", d.service));
            // The service's `stop_grace_period` (10s when it sets none).
            let grace = d.spec.options.stop_timeout_s.unwrap_or(10);
            engine.stop_container(&old.id, grace).await.map_err(fail)?;
            engine
                .rename_container(&old.id, &aside)
                .await
                .map_err(fail)?;
        }
        ctx.log(
            "deploy",
            &format!("starting {} ({})", d.service, d.spec.image),
        );
        let started = match engine.run_container(&d.spec).await {
            Ok(id) => match engine.wait_ready(&id, timeout).await {
                Ok(()) => Ok(id),
                Err(e) => Err((Some(id), e)),
            },
            Err(e) => Err((None, e)),
        };
        match started {
            Ok(_) => {
                if let Some(old) = &previous {
                    engine.remove_container(&old.id).await.map_err(fail)?;
                }
                let word = if action == DeployAction::Create {
                    "create"
                } else {
                    "recreate"
                };
                {
                    let mut s = ctx.summary();
                    if action == DeployAction::Create {
                        s.created.push(d.service.clone());
                    } else {
                        s.recreated.push(d.service.clone());
                    }
                }
                ctx.emit(EventKind::Container {
                    service: d.service.clone(),
                    action: word.into(),
                });
                Ok(())
            }
            Err((new_id, error)) => {
                let last_lines = match &error {
                    EngineError::NotReady { last_lines, .. } => last_lines.clone(),
                    _ => Vec::new(),
                };
                if let Some(id) = new_id {
                    let _ = engine.remove_container(&id).await;
                }
                let mut message = match &error {
                    // Not the container's fault: the engine went away.
                    EngineError::Unreachable { .. } => format!("{}: {error}", d.service),
                    _ => format!("{} did not come up: {error}", d.service),
                };
                if let Some(old) = &previous {
                    let restored = async {
                        engine.rename_container(&old.id, &d.spec.name).await?;
                        engine.start_container(&old.id).await?;
                        engine.wait_ready(&old.id, timeout).await
                    }
                    .await;
                    match restored {
                        Ok(()) => {
                            message.push_str("; the previous container is back in service");
                            ctx.summary().rolled_back.push(d.service.clone());
                            ctx.emit(EventKind::Container {
                                service: d.service.clone(),
                                action: "rolled-back".into(),
                            });
                        }
                        Err(e) => message.push_str(&format!(
                            "; putting the previous container back failed too: {e}"
                        )),
                    }
                }
                Err(StepError {
                    step: "deploy".into(),
                    message,
                    last_lines,
                })
            }
        }
    }

    /// The container spec of a task: its service's image and environment, or
    /// its image with the environment's injected variables.
    fn task_spec(
        &self,
        ctx: &JobCtx,
        task_name: &str,
        args: &[String],
        desired: &[DesiredContainer],
    ) -> Result<ContainerSpec, StepError> {
        let project = &self.inner.marvin.project;
        let task = project
            .task(task_name)
            .map_err(|e| StepError::new("task", e.to_string()))?;
        let env = project
            .environment(&ctx.env)
            .map_err(|e| StepError::new("task", e.to_string()))?;
        let mut spec = match (&task.service, &task.image) {
            (Some(service), _) => {
                let d = desired.iter().find(|d| &d.service == service).ok_or_else(|| {
                    StepError::new(
                        "task",
                        format!(
                            "task `{task_name}` runs with service `{service}`, which is not in the compose file; {}",
                            crate::suggest::hint(service, desired.iter().map(|d| d.service.as_str()))
                        ),
                    )
                })?;
                let mut s = d.spec.clone();
                s.ports.clear();
                s.healthcheck = None;
                s.restart = None;
                s.aliases.clear();
                s
            }
            (None, Some(image)) => {
                let mut env_vars: Vec<(String, String)> = env
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                env_vars.push(("MARVIN_ENV".into(), env.name.clone()));
                env_vars.push(("MARVIN_PROJECT".into(), project.name.clone()));
                ContainerSpec {
                    image: image.clone(),
                    env: env_vars,
                    network: crate::desired::network_name(&project.name, &env.name),
                    ..ContainerSpec::default()
                }
            }
            (None, None) => {
                return Err(StepError::new(
                    "task",
                    format!("task `{task_name}` has neither service nor image"),
                ));
            }
        };
        spec.name = format!(
            "{}-{}-task-{}-{}",
            project.name, env.name, task_name, ctx.id
        )
        .to_lowercase();
        let mut command = task.command.clone();
        command.extend(args.iter().cloned());
        if !command.is_empty() {
            spec.command = Some(command);
        }
        spec.labels = BTreeMap::from([
            (LABEL_PROJECT.to_string(), project.name.clone()),
            (LABEL_ENV.to_string(), env.name.clone()),
            (
                LABEL_SERVICE.to_string(),
                task.service.clone().unwrap_or_default(),
            ),
            (LABEL_ROLE.to_string(), "task".to_string()),
        ]);
        Ok(spec)
    }

    async fn run_task_container(
        &self,
        ctx: &Arc<JobCtx>,
        task: &str,
        spec: &ContainerSpec,
    ) -> Result<i64, StepError> {
        // A task started from a recorded deployment (`run`) gets no plan to
        // learn its env-file values from: learn them here, before it logs.
        self.learn_secrets(ctx, &spec.env);
        let stream = format!("task:{task}");
        let log_ctx = Arc::clone(ctx);
        let stream_for_log = stream.clone();
        let log = move |line: &str| log_ctx.log(&stream_for_log, line);
        let network = spec.network.clone();
        let labels = BTreeMap::from([
            (
                LABEL_PROJECT.to_string(),
                self.inner.marvin.project.name.clone(),
            ),
            (LABEL_ENV.to_string(), ctx.env.clone()),
        ]);
        self.inner
            .engine
            .ensure_network(&network, &labels)
            .await
            .map_err(|e| StepError::new("task", e.to_string()))?;
        let mut guard = RemoveOnDrop {
            engine: Arc::clone(&self.inner.engine),
            name: spec.name.clone(),
            armed: true,
        };
        let result = self
            .inner
            .engine
            .run_to_completion(spec, &log)
            .await
            .map_err(|e| StepError::new("task", format!("task `{task}`: {e}")));
        guard.armed = false;
        result
    }

    async fn hook(
        &self,
        ctx: &Arc<JobCtx>,
        task: &str,
        event: &str,
        desired: &[DesiredContainer],
    ) -> Result<(), StepError> {
        let spec = self.task_spec(ctx, task, &[], desired)?;
        let code = self
            .run_task_container(ctx, task, &spec)
            .await
            .map_err(|mut e| {
                e.step = event.to_string();
                e
            })?;
        if code != 0 {
            return Err(StepError {
                step: event.to_string(),
                message: format!("{event} hook `{task}` exited with code {code}"),
                last_lines: ctx.last_lines(),
            });
        }
        Ok(())
    }

    async fn on_failure_hooks(&self, ctx: &Arc<JobCtx>) {
        let project = &self.inner.marvin.project;
        let Ok(env) = project.environment(&ctx.env) else {
            return;
        };
        if env.hooks.on_failure.is_empty() {
            return;
        }
        ctx.step("on_failure");
        let desired = self.last_desired(ctx);
        for task in &env.hooks.on_failure {
            if let Ok(spec) = self.task_spec(ctx, task, &[], &desired) {
                let _ = self.run_task_container(ctx, task, &spec).await;
            }
        }
    }

    /// The containers of the last recorded deployment, for tasks that need a
    /// service's image without a fresh plan.
    fn last_desired(&self, ctx: &JobCtx) -> Vec<DesiredContainer> {
        let project = &self.inner.marvin.project;
        self.inner
            .store
            .deployments(&project.name, &ctx.env, 1)
            .ok()
            .and_then(|mut v| v.pop())
            .map(|d| {
                d.services
                    .into_iter()
                    .filter_map(|s| {
                        Some(DesiredContainer {
                            service: s.service,
                            spec: serde_json::from_value(s.spec).ok()?,
                            deploy_key: crate::keys::DeployKey(s.deploy_key),
                            build_key: s.build_key.map(BuildKey),
                            // Recorded containers' files were written when they were deployed.
                            files: Vec::new(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn run_task(
        &self,
        ctx: &Arc<JobCtx>,
        task: &str,
        args: &[String],
    ) -> Result<(), StepError> {
        ctx.step("task");
        let desired = self.last_desired(ctx);
        if let Some(service) = &self
            .inner
            .marvin
            .project
            .task(task)
            .ok()
            .and_then(|t| t.service.clone())
            && !desired.iter().any(|d| &d.service == service)
        {
            let message = if desired.is_empty() {
                format!(
                    "task `{task}` runs with service `{service}`, and nothing has been deployed to {} yet; run `build` first",
                    ctx.env
                )
            } else {
                format!(
                    "task `{task}` runs with service `{service}`, which is not deployed in {}; {}",
                    ctx.env,
                    crate::suggest::hint(service, desired.iter().map(|d| d.service.as_str()))
                )
            };
            return Err(StepError::new("task", message));
        }
        let spec = self.task_spec(ctx, task, args, &desired)?;
        let code = self.run_task_container(ctx, task, &spec).await?;
        ctx.summary().exit_code = Some(code);
        if code != 0 {
            return Err(StepError {
                step: "task".into(),
                message: format!("task `{task}` exited with code {code}"),
                last_lines: ctx.last_lines(),
            });
        }
        Ok(())
    }

    async fn rollback(&self, ctx: &Arc<JobCtx>, job: Option<JobId>) -> Result<(), StepError> {
        ctx.step("plan");
        let project = Arc::clone(&self.inner.marvin.project);
        let store = &self.inner.store;
        let err = |m: String| StepError::new("plan", m);
        let target = match job {
            Some(j) => store
                .deployment_of_job(j)
                .map_err(|e| err(e.to_string()))?
                .filter(|d| d.env == ctx.env)
                .ok_or_else(|| {
                    err(format!(
                        "job #{j} deployed nothing to {}; see `history`",
                        ctx.env
                    ))
                })?,
            None => {
                let mut list = store
                    .deployments(&project.name, &ctx.env, 2)
                    .map_err(|e| err(e.to_string()))?;
                if list.len() < 2 {
                    return Err(err(format!(
                        "{} has no earlier deployment to roll back to",
                        ctx.env
                    )));
                }
                list.remove(1)
            }
        };
        ctx.log(
            "marvin",
            &format!("rolling back to the deployment of job #{}", target.job),
        );
        let mut desired = Vec::new();
        for s in &target.services {
            let spec: ContainerSpec = serde_json::from_value(s.spec.clone())
                .map_err(|e| err(format!("the record of {} cannot be read: {e}", s.service)))?;
            desired.push(DesiredContainer {
                service: s.service.clone(),
                spec,
                deploy_key: crate::keys::DeployKey(s.deploy_key.clone()),
                build_key: s.build_key.clone().map(BuildKey),
                files: Vec::new(),
            });
        }
        // The restored containers' environments: mask their secrets.
        let pairs: Vec<(String, String)> = desired
            .iter()
            .flat_map(|d| d.spec.env.iter().cloned())
            .collect();
        self.learn_secrets(ctx, &pairs);
        // Images are content-keyed and immutable; rebuild from the recorded commits if pruned.
        let mut missing = Vec::new();
        for d in &desired {
            if d.build_key.is_some()
                && !self
                    .inner
                    .engine
                    .image_exists(&d.spec.image)
                    .await
                    .map_err(|e| err(e.to_string()))?
            {
                missing.push(d.service.clone());
            }
        }
        let commits: Vec<Commit>;
        if !missing.is_empty() {
            ctx.log(
                "marvin",
                &format!(
                    "images pruned, rebuilding from recorded commits: {}",
                    missing.join(", ")
                ),
            );
            let recorded = target
                .services
                .first()
                .map(|s| s.commits.clone())
                .unwrap_or_default();
            let mirrors = Arc::clone(&self.inner.marvin.mirrors);
            let env = project
                .environment(&ctx.env)
                .map_err(|e| err(e.to_string()))?
                .clone();
            let p = Arc::clone(&project);
            let resolved = tokio::task::spawn_blocking(move || {
                let mut mounts = Vec::new();
                for spec in resolve::repo_specs(&p) {
                    let id = recorded.get(&spec.name).cloned().unwrap_or_default();
                    let commit = mirrors.commit(&spec, &id)?;
                    mounts.push((spec, commit));
                }
                resolve::resolve_at(&p, &env, &mirrors, mounts)
            })
            .await
            .map_err(|e| err(e.to_string()))?
            .map_err(|e| err(e.to_string()))?;
            let plan = self.make_plan(ctx, &resolved, &missing, true).await?;
            self.build_images(ctx, &resolved, &plan).await?;
            commits = resolved.commits.clone();
        } else {
            commits = Vec::new();
        }
        // Diff the recorded containers against what runs now.
        let observed = self
            .inner
            .marvin
            .observe(&ctx.env)
            .await
            .map_err(|e| err(e.to_string()))?;
        let wanted: BTreeMap<String, crate::keys::DeployKey> = desired
            .iter()
            .map(|d| (d.service.clone(), d.deploy_key.clone()))
            .collect();
        let deploy = crate::plan::plan_deploy(&wanted, &observed.services);
        let depends: BTreeMap<String, std::collections::BTreeSet<String>> = desired
            .iter()
            .map(|d| (d.service.clone(), Default::default()))
            .collect();
        let plan = Plan {
            project: project.name.clone(),
            environment: ctx.env.clone(),
            commits: commits.clone(),
            builds: Vec::new(),
            deploy,
            only: Vec::new(),
            assumed_empty_engine: false,
            warnings: Vec::new(),
            build_specs: BTreeMap::new(),
            desired: desired.clone(),
            waves: crate::plan::deploy_waves(&depends).unwrap_or_default(),
        };
        let recorded_commits: Vec<Commit> = target
            .services
            .first()
            .map(|s| {
                s.commits
                    .iter()
                    .map(|(repo, id)| Commit {
                        repo: repo.clone(),
                        id: id.clone(),
                        ..Commit::default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        ctx.summary().commits = if commits.is_empty() {
            recorded_commits.clone()
        } else {
            commits
        };
        self.deploy(ctx, &desired, &plan, &recorded_commits).await
    }

    /// The jobs of an environment, newest first.
    pub fn history(&self, env: &str, limit: usize) -> Result<Vec<Job>, SubmitError> {
        let env = self
            .inner
            .marvin
            .project
            .environment(env)
            .map_err(MarvinError::from)?
            .name
            .clone();
        Ok(self
            .inner
            .store
            .jobs(&self.inner.marvin.project.name, Some(&env), limit)?)
    }
}

/// Removes a one-off container whose job was dropped mid-run (a cancel): the
/// engine would otherwise keep it running with nobody waiting for it.
struct RemoveOnDrop {
    engine: Arc<dyn Engine>,
    name: String,
    armed: bool,
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let engine = Arc::clone(&self.engine);
        let name = std::mem::take(&mut self.name);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = engine.remove_container(&name).await;
            });
        }
    }
}

/// Wait `pause` before looking again, unless the job is cancelled meanwhile.
async fn pause_unless_cancelled(ctx: &JobCtx, pause: Duration) -> Result<(), BuildError> {
    tokio::select! {
        () = ctx.cancel.cancelled() => Err(BuildError::NotRun("cancelled".into())),
        () = tokio::time::sleep(pause) => Ok(()),
    }
}

/// How often a build waiting for one of the host's build slots looks again.
const HOST_SLOT_POLL: Duration = Duration::from_millis(100);

/// How often a job waiting for another process's build of a key looks again.
const LEASE_POLL: Duration = Duration::from_millis(250);

/// This runtime's lease on building one key; released when dropped.
struct BuildLease {
    inner: Arc<Inner>,
    project: String,
    key: String,
    job: JobId,
}

impl Drop for BuildLease {
    fn drop(&mut self) {
        // Best effort: a lease left behind lapses with this process's
        // heartbeat. Off the async workers when there are any.
        let inner = Arc::clone(&self.inner);
        let (project, key, job) = (
            std::mem::take(&mut self.project),
            std::mem::take(&mut self.key),
            self.job,
        );
        let release = move || {
            let _ = inner
                .store
                .release_build_lease(&project, &key, &inner.owner, job);
            inner.leases_held.fetch_sub(1, Ordering::SeqCst);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

/// This process, as recorded on the jobs it runs: `host:pid`.
fn owner_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// A job whose owner is gone: on this host, its pid no longer runs; on
/// another host (or unknown), no heartbeat for [`STALE_MS`].
const STALE_MS: i64 = 15_000;

fn owner_alive(
    owner: Option<&str>,
    heartbeat_ms: Option<i64>,
    created_ms: i64,
    now_ms: i64,
) -> bool {
    let me = owner_id();
    let (my_host, _) = me.rsplit_once(':').unwrap_or((&me, ""));
    if let Some((host, pid)) = owner.and_then(|o| o.rsplit_once(':'))
        && host == my_host
    {
        return std::path::Path::new(&format!("/proc/{pid}")).exists()
            || !std::path::Path::new("/proc/self").exists();
    }
    now_ms - heartbeat_ms.unwrap_or(created_ms) < STALE_MS
}

/// Mark as interrupted every unfinished job whose process is gone.
pub(crate) fn sweep_abandoned(
    store: &Store,
    project: &str,
    now_ms: i64,
) -> Result<Vec<Job>, crate::store::StoreError> {
    let dead: Vec<JobId> = store
        .active_owners(project)?
        .into_iter()
        .filter(|o| !owner_alive(o.owner.as_deref(), o.heartbeat_ms, o.created_ms, now_ms))
        .map(|o| o.job)
        .collect();
    store.interrupt_jobs(&dead, now_ms)
}

/// Once a second while the runtime lives: heartbeat its jobs, honour cancel
/// requests made by other processes, interrupt jobs of processes that died.
async fn maintain(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let ids: Vec<JobId> = inner
            .cancels
            .lock()
            .expect("cancel lock")
            .keys()
            .copied()
            .collect();
        let now = inner.clock.now_ms();
        let store = inner.store.clone();
        let owner = inner.owner.clone();
        let project = inner.marvin.project.name.clone();
        let ids_for_store = ids.clone();
        let building = inner.leases_held.load(Ordering::SeqCst) > 0;
        let asked = tokio::task::spawn_blocking(move || {
            let _ = store.heartbeat(&ids_for_store, &owner, now);
            if building {
                let _ = store.heartbeat_build_leases(&owner, now);
            }
            let _ = sweep_abandoned(&store, &project, now);
            store.cancel_requests(&ids_for_store).unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        let cancels = inner.cancels.lock().expect("cancel lock");
        for id in asked {
            if let Some(token) = cancels.get(&id) {
                token.cancel();
            }
        }
    }
}

/// The project a runtime serves (for front ends that only hold a runtime).
pub fn project(runtime: &Runtime) -> &Project {
    &runtime.inner.marvin.project
}
