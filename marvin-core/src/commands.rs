//! The commands every front end offers besides jobs — status, logs,
//! history, lock, unlock — and the check a job passes before it is
//! submitted. The decisions are the pure ones of [`crate::access`] (who may)
//! and [`crate::locks`] (the lock); this module asks the store and the
//! engine, applies them, and returns plain data for front ends to render.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::access::{self, Decision};
use crate::command::{LogTarget, Verb};
use crate::config::{EngineKind, Environment, Role};
use crate::engine::{LABEL_ENV, LABEL_PROJECT, ObservedContainer};
use crate::locks::{self, BuildGate, LockDecision, UnlockDecision};
use crate::marvin::{Marvin, MarvinError};
use crate::runtime::{Clock, JobKind};
use crate::store::{Job, Lock, LockOutcome, Store, StoreError, UnlockOutcome};

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The caller's role does not allow it.
    #[error("{0}")]
    PermissionDenied(String),
    /// Someone else holds the environment's lock.
    #[error("{message}")]
    Locked {
        /// The lock in force.
        lock: Box<Lock>,
        /// Who holds it, why and until when, in words.
        message: String,
    },
    /// What was asked for does not exist (a job, a container).
    #[error("{0}")]
    NotFound(String),
    /// An argument is wrong (a job of another environment).
    #[error("{0}")]
    BadInput(String),
    /// No Docker engine is connected.
    #[error(
        "no Docker engine: cannot connect to the local socket or DOCKER_HOST; start dockerd or set DOCKER_HOST"
    )]
    NoEngine,
    /// Config, resolution or engine problem.
    #[error(transparent)]
    Marvin(#[from] MarvinError),
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::config::ConfigError> for CommandError {
    fn from(e: crate::config::ConfigError) -> Self {
        CommandError::Marvin(MarvinError::Config(e))
    }
}

impl From<crate::engine::EngineError> for CommandError {
    fn from(e: crate::engine::EngineError) -> Self {
        CommandError::Marvin(MarvinError::Engine(e))
    }
}

/// What `status` shows: the environment's containers, its lock, its last job.
/// The same keys as `marvin status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct EnvStatus {
    /// Environment name.
    pub environment: String,
    /// Its containers as the engine reports them now (none for a swarm environment).
    pub containers: Vec<ObservedContainer>,
    /// A swarm environment's services with desired and running replicas (absent otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<SwarmServiceStatus>,
    /// The lock in force, if any.
    pub lock: Option<Lock>,
    /// The newest job.
    pub last_job: Option<Job>,
}

/// One swarm service in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwarmServiceStatus {
    /// Compose service name.
    pub service: String,
    /// Swarm service name.
    pub name: String,
    /// Replicas wanted.
    pub desired: u64,
    /// Tasks running now.
    pub running: u64,
    /// The image its tasks run.
    pub image: String,
    /// Swarm's last update state (`completed`, `rollback_completed`, ...), if any.
    pub update: Option<String>,
}

/// The verb a job kind is asked with, for the permission check.
/// The chat verb that starts a job of this kind.
pub fn verb_of(kind: &JobKind) -> Verb {
    match kind {
        JobKind::Build { services, force } => Verb::Build {
            services: services.clone(),
            force: *force,
        },
        JobKind::Run { task, args } => Verb::Run {
            task: task.clone(),
            args: args.clone(),
        },
        JobKind::Rollback { job } => Verb::Rollback { job: *job },
    }
}

/// `access::decide` for a front end that cannot wait for an approval.
fn allowed(marvin: &Marvin, who: &str, env: &Environment, verb: &Verb) -> Result<(), CommandError> {
    match access::decide(&marvin.project, who, Some(env), verb, None) {
        Decision::Allow => Ok(()),
        Decision::Deny { reason } => Err(CommandError::PermissionDenied(reason)),
        Decision::NeedsApproval => Err(CommandError::PermissionDenied(format!(
            "{} is protected: a developer's {} there waits for an admin's `approve`, which only the chat front ends ask for; ask an admin to run it",
            env.name,
            verb.name()
        ))),
    }
}

/// A developer's `lock --force` or `unlock --force` while someone else
/// holds the lock (`current`, in force at `now_ms`): the lock's refusal,
/// which names the holder and says only admins can, instead of the role
/// check's, which does not. `None` for anything else.
pub fn forced_by_a_developer(
    marvin: &Marvin,
    current: Option<Lock>,
    who: &str,
    verb: &Verb,
    now_ms: i64,
) -> Option<CommandError> {
    let role = marvin.project.role_of(who);
    if role != Role::Developer {
        return None;
    }
    let lock = current.as_ref();
    let message = match verb {
        Verb::Lock { force: true, .. } => {
            match locks::decide_lock(lock, who, role, true, None, now_ms) {
                LockDecision::Refused { message } => message,
                _ => return None,
            }
        }
        Verb::Unlock { force: true } => match locks::decide_unlock(lock, who, role, true, now_ms) {
            UnlockDecision::Refused { message } => message,
            _ => return None,
        },
        _ => return None,
    };
    Some(refused(current, message))
}

fn refused(lock: Option<Lock>, message: String) -> CommandError {
    match lock {
        Some(lock) => CommandError::Locked {
            lock: Box::new(lock),
            message,
        },
        None => CommandError::BadInput(message),
    }
}

/// May `who` start this job in `env` now? Checks the role, then the lock:
/// the holder may still build, anyone else is refused.
pub fn check_job(
    marvin: &Marvin,
    store: &Store,
    who: &str,
    env: &str,
    kind: &JobKind,
    now_ms: i64,
) -> Result<(), CommandError> {
    let environment = marvin.project.environment(env)?;
    allowed(marvin, who, environment, &verb_of(kind))?;
    let lock = store.current_lock(&marvin.project.name, &environment.name, now_ms)?;
    match locks::may_build(lock.as_ref(), who, now_ms) {
        BuildGate::Free | BuildGate::Holder => Ok(()),
        BuildGate::Refused { message } => Err(refused(lock, message)),
    }
}

/// Take (or renew) `env`'s lock for `who`, for `duration` (None: the
/// default, [`locks::DEFAULT_LOCK`]); `force`: an admin taking someone
/// else's.
#[allow(clippy::too_many_arguments)] // mirrors the command: who, where, how long, why, how
pub fn lock(
    marvin: &Marvin,
    store: &Store,
    who: &str,
    env: &str,
    duration: Option<Duration>,
    reason: &str,
    force: bool,
    now_ms: i64,
) -> Result<Lock, CommandError> {
    take_lock(marvin, store, who, env, duration, reason, force, now_ms).map(|g| g.lock)
}

/// A lock taken: the lock, and the one taken over from someone else (whom
/// the front end tells).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockGranted {
    /// The caller's lock.
    pub lock: Lock,
    /// Whose lock an admin's `--force` took over.
    pub taken_from: Option<Lock>,
}

/// [`lock`], also saying whose lock was taken over.
#[allow(clippy::too_many_arguments)] // mirrors the command: who, where, how long, why, how
pub fn take_lock(
    marvin: &Marvin,
    store: &Store,
    who: &str,
    env: &str,
    duration: Option<Duration>,
    reason: &str,
    force: bool,
    now_ms: i64,
) -> Result<LockGranted, CommandError> {
    let environment = marvin.project.environment(env)?;
    let verb = Verb::Lock {
        duration,
        reason: reason.to_string(),
        force,
    };
    let (project, name) = (&marvin.project.name, &environment.name);
    let current = store.current_lock(project, name, now_ms)?;
    let role = marvin.project.role_of(who);
    if let Err(denied) = allowed(marvin, who, environment, &verb) {
        return Err(forced_by_a_developer(marvin, current, who, &verb, now_ms).unwrap_or(denied));
    }
    let until_ms = match locks::decide_lock(current.as_ref(), who, role, force, duration, now_ms) {
        LockDecision::Refused { message } => return Err(refused(current, message)),
        LockDecision::Take { until_ms }
        | LockDecision::Renew { until_ms }
        | LockDecision::TakeOver { until_ms, .. } => until_ms,
    };
    match store.lock(project, name, who, reason, Some(until_ms), force, now_ms)? {
        LockOutcome::Taken(l) | LockOutcome::Renewed(l) => Ok(LockGranted {
            lock: l,
            taken_from: None,
        }),
        LockOutcome::TakenOver { lock, previous } => Ok(LockGranted {
            lock,
            taken_from: Some(previous),
        }),
        // Someone took it between the read and the write.
        LockOutcome::Refused(l) => {
            let message = format!("{}; ask them, or wait", locks::describe(&l, now_ms));
            Err(refused(Some(l), message))
        }
    }
}

/// Release `env`'s lock. Only its holder may, or an admin with `force`.
/// Returns the released lock, or None when there was none.
pub fn unlock(
    marvin: &Marvin,
    store: &Store,
    who: &str,
    env: &str,
    force: bool,
    now_ms: i64,
) -> Result<Option<Lock>, CommandError> {
    let environment = marvin.project.environment(env)?;
    let (project, name) = (&marvin.project.name, &environment.name);
    let current = store.current_lock(project, name, now_ms)?;
    let role = marvin.project.role_of(who);
    let verb = Verb::Unlock { force };
    if let Err(denied) = allowed(marvin, who, environment, &verb) {
        return Err(forced_by_a_developer(marvin, current, who, &verb, now_ms).unwrap_or(denied));
    }
    match locks::decide_unlock(current.as_ref(), who, role, force, now_ms) {
        UnlockDecision::NotLocked => return Ok(None),
        UnlockDecision::Refused { message } => return Err(refused(current, message)),
        UnlockDecision::Release | UnlockDecision::ReleaseOther { .. } => {}
    }
    match store.unlock(project, name, who, force, now_ms)? {
        UnlockOutcome::Released(l) => Ok(Some(l)),
        UnlockOutcome::NotLocked => Ok(None),
        UnlockOutcome::Refused(l) => {
            let message = format!("{}; ask them, or an admin", locks::describe(&l, now_ms));
            Err(refused(Some(l), message))
        }
    }
}

/// The newest `n` jobs of `env`.
pub fn history(
    marvin: &Marvin,
    store: &Store,
    env: &str,
    n: usize,
) -> Result<Vec<Job>, CommandError> {
    let environment = marvin.project.environment(env)?;
    settle_abandoned(marvin, store, crate::runtime::SystemClock.now_ms());
    Ok(store.jobs(&marvin.project.name, Some(&environment.name), n)?)
}

/// A job whose process died (SIGKILL, power loss) is shown as interrupted,
/// not running, even when no runtime has started since to sweep it. A
/// store that cannot be written (a full disk) is still read.
fn settle_abandoned(marvin: &Marvin, store: &Store, now_ms: i64) {
    if let Err(e) = crate::runtime::sweep_abandoned(store, &marvin.project.name, now_ms) {
        tracing::warn!("could not mark the jobs of dead processes interrupted: {e}");
    }
}

/// `status`: the containers the engine holds for `env`, its lock, its last job.
pub async fn status(
    marvin: &Marvin,
    store: &Store,
    env: &str,
    now_ms: i64,
) -> Result<EnvStatus, CommandError> {
    let environment = marvin.project.environment(env)?.clone();
    settle_abandoned(marvin, store, now_ms);
    let engine = marvin.engine.clone().ok_or(CommandError::NoEngine)?;
    let labels = BTreeMap::from([
        (LABEL_PROJECT.to_string(), marvin.project.name.clone()),
        (LABEL_ENV.to_string(), environment.name.clone()),
    ]);
    let (containers, services) = if environment.engine == EngineKind::Swarm {
        let swarm = crate::marvin::swarm_of(engine.as_ref())?;
        let mut services = Vec::new();
        for s in swarm.list_services(&labels).await? {
            // Tasks Swarm wants running and that run: an old task still
            // stopping after an update is not a replica.
            let running = swarm
                .service_tasks(&s.id)
                .await?
                .iter()
                .filter(|t| t.desired_running && t.state == "running")
                .count() as u64;
            services.push(SwarmServiceStatus {
                service: s.service,
                name: s.name,
                desired: s.replicas.unwrap_or_default(),
                running,
                image: s.image,
                update: s.update_state,
            });
        }
        services.sort_by(|a, b| a.service.cmp(&b.service));
        (Vec::new(), services)
    } else {
        (engine.list_containers(&labels).await?, Vec::new())
    };
    let lock = store.current_lock(&marvin.project.name, &environment.name, now_ms)?;
    let last_job = store
        .jobs(&marvin.project.name, Some(&environment.name), 1)?
        .pop();
    Ok(EnvStatus {
        environment: environment.name,
        containers,
        services,
        lock,
        last_job,
    })
}

/// A `logs` target as people write it: a job number (`42`, `#42`) or a service name.
pub fn log_target(text: &str) -> LogTarget {
    match text.trim_start_matches('#').parse() {
        Ok(id) => LogTarget::Job(id),
        Err(_) => LogTarget::Service(text.to_string()),
    }
}

/// `logs`: the last `tail` lines of a job's log (`[stream] line`; None:
/// the environment's last job) or of a service's container.
pub async fn logs(
    marvin: &Marvin,
    store: &Store,
    env: &str,
    target: Option<&LogTarget>,
    tail: usize,
) -> Result<Vec<String>, CommandError> {
    let environment = marvin.project.environment(env)?.clone();
    let job_id = match target {
        Some(LogTarget::Job(id)) => Some(*id),
        None => Some(
            store
                .jobs(&marvin.project.name, Some(&environment.name), 1)?
                .first()
                .map(|j| j.id)
                .ok_or_else(|| {
                    CommandError::NotFound(format!(
                        "{} has no jobs yet; run `marvin build {}`",
                        environment.name, environment.name
                    ))
                })?,
        ),
        Some(LogTarget::Service(_)) => None,
    };
    if let Some(id) = job_id {
        let job = store
            .job(id)?
            .ok_or_else(|| CommandError::NotFound(format!("there is no job #{id}")))?;
        if job.env != environment.name || job.project != marvin.project.name {
            return Err(CommandError::BadInput(format!(
                "job #{id} ran in {}, not {}",
                job.env, environment.name
            )));
        }
        return Ok(store
            .logs(id, Some(tail))?
            .into_iter()
            .map(|l| format!("[{}] {}", l.stream, l.line))
            .collect());
    }
    let Some(LogTarget::Service(service)) = target else {
        unreachable!("jobs are handled above")
    };
    let engine = marvin.engine.clone().ok_or(CommandError::NoEngine)?;
    let name = crate::desired::container_name(&marvin.project.name, &environment.name, service);
    let container = engine.inspect_container(&name).await?.ok_or_else(|| {
        CommandError::NotFound(format!(
            "service `{service}` has no container in {}; see `marvin status {}`",
            environment.name, environment.name
        ))
    })?;
    Ok(engine.logs(&container.id, tail).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewJob;

    const CONFIG: &str = "project: shop\nrepos:\n  app: {url: /srv/app.git}\nenvironments:\n  dev: {}\n  prod: {protected: true}\npeople:\n  default_role: developer\n  viewers: [py:eve]\n  admins: [py:root]\n";

    const BUILD: JobKind = JobKind::Build {
        services: Vec::new(),
        force: false,
    };

    fn fixture() -> (tempfile::TempDir, Marvin, Store) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let config = tmp.path().join("marvin.yml");
        std::fs::write(&config, CONFIG).expect("write config");
        let marvin = Marvin::load(&config, None).expect("valid config");
        let store = Store::open_in(&marvin.data_dir).expect("store");
        (tmp, marvin, store)
    }

    #[test]
    fn the_lock_holder_may_build_and_others_are_refused_with_who_and_why() {
        let (_tmp, marvin, store) = fixture();
        let now = 1_000_000;
        let hour = Some(Duration::from_secs(3600));
        lock(
            &marvin,
            &store,
            "py:alice",
            "dev",
            hour,
            "demo at 3",
            false,
            now,
        )
        .expect("alice locks dev");
        check_job(&marvin, &store, "py:alice", "dev", &BUILD, now).expect("the holder may build");
        match check_job(&marvin, &store, "py:bob", "dev", &BUILD, now) {
            Err(CommandError::Locked { lock, message }) => {
                assert_eq!(lock.holder, "py:alice");
                assert_eq!(
                    message,
                    "dev is locked by py:alice: demo at 3, until 01:16 UTC (1h from now); ask them, or wait"
                );
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        check_job(&marvin, &store, "py:bob", "dev", &BUILD, now + 3_600_001)
            .expect("an expired lock no longer refuses");
    }

    #[test]
    fn viewers_cannot_lock_or_build() {
        let (_tmp, marvin, store) = fixture();
        assert!(matches!(
            check_job(&marvin, &store, "py:eve", "dev", &BUILD, 0),
            Err(CommandError::PermissionDenied(m)) if m.starts_with("you (py:eve) are a viewer")
        ));
        assert!(matches!(
            lock(&marvin, &store, "py:eve", "dev", None, "", false, 0),
            Err(CommandError::PermissionDenied(_))
        ));
    }

    #[test]
    fn a_developer_job_in_a_protected_environment_is_refused_without_approval() {
        let (_tmp, marvin, store) = fixture();
        match check_job(&marvin, &store, "py:bob", "prod", &BUILD, 0) {
            Err(CommandError::PermissionDenied(m)) => {
                assert!(m.starts_with("prod is protected"), "{m}")
            }
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
        check_job(&marvin, &store, "py:root", "prod", &BUILD, 0).expect("admins may");
    }

    #[test]
    fn only_the_holder_or_a_forcing_admin_unlocks() {
        let (_tmp, marvin, store) = fixture();
        lock(&marvin, &store, "py:alice", "dev", None, "", false, 0).expect("lock");
        assert!(matches!(
            unlock(&marvin, &store, "py:bob", "dev", false, 1),
            Err(CommandError::Locked { .. })
        ));
        let released = unlock(&marvin, &store, "py:root", "dev", true, 1).expect("admin");
        assert_eq!(released.map(|l| l.holder), Some("py:alice".to_string()));
        assert_eq!(
            unlock(&marvin, &store, "py:root", "dev", false, 2).expect("nothing to unlock"),
            None
        );
    }

    #[test]
    fn a_developers_force_on_someone_elses_lock_is_refused_naming_the_holder() {
        // Found by tests/properties.rs: the role check's refusal did not say whose lock it was.
        let (_tmp, marvin, store) = fixture();
        lock(&marvin, &store, "py:alice", "dev", None, "", false, 0).expect("lock");
        match unlock(&marvin, &store, "py:bob", "dev", true, 1) {
            Err(CommandError::Locked { lock, message }) => {
                assert_eq!(lock.holder, "py:alice");
                assert!(
                    message.starts_with("dev is locked by py:alice")
                        && message.ends_with("; only admins can release it"),
                    "{message}"
                );
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        match lock(&marvin, &store, "py:bob", "dev", None, "", true, 1) {
            Err(CommandError::Locked { message, .. }) => {
                assert!(
                    message.ends_with("; only admins can take it over"),
                    "{message}"
                )
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        // Free, or their own: the role check's refusal, as before.
        assert!(matches!(
            lock(&marvin, &store, "py:alice", "dev", None, "", true, 1),
            Err(CommandError::PermissionDenied(_))
        ));
        assert!(matches!(
            unlock(&marvin, &store, "py:bob", "prod", true, 1),
            Err(CommandError::PermissionDenied(_))
        ));
    }

    #[test]
    fn an_admin_takes_over_a_lock_only_with_force() {
        let (_tmp, marvin, store) = fixture();
        lock(&marvin, &store, "py:alice", "dev", None, "mine", false, 0).expect("lock");
        assert!(matches!(
            lock(&marvin, &store, "py:root", "dev", None, "", false, 1),
            Err(CommandError::Locked { .. })
        ));
        let taken =
            lock(&marvin, &store, "py:root", "dev", None, "release", true, 1).expect("force");
        assert_eq!(
            (taken.holder.as_str(), taken.reason.as_str()),
            ("py:root", "release")
        );
        assert_eq!(
            taken.until_ms,
            Some(1 + locks::DEFAULT_LOCK.as_millis() as i64)
        );
    }

    #[test]
    fn logs_of_a_job_of_another_environment_are_refused() {
        let (_tmp, marvin, store) = fixture();
        let job = store
            .create_job(
                &NewJob {
                    project: "shop".into(),
                    env: "prod".into(),
                    verb: "build".into(),
                    args: vec![],
                    who: "py:root".into(),
                    origin: "test".into(),
                    trigger: "person".into(),
                },
                0,
            )
            .expect("job");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let target = LogTarget::Job(job.id);
        let err = rt
            .block_on(logs(&marvin, &store, "dev", Some(&target), 10))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("job #{} ran in prod, not dev", job.id)
        );
        let err = rt
            .block_on(logs(&marvin, &store, "dev", None, 10))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dev has no jobs yet; run `marvin build dev`"
        );
    }

    #[test]
    fn a_log_target_is_a_job_number_or_a_service() {
        assert_eq!(log_target("#12"), LogTarget::Job(12));
        assert_eq!(log_target("12"), LogTarget::Job(12));
        assert_eq!(log_target("web"), LogTarget::Service("web".into()));
    }
}
