//! The commands every front end offers besides jobs — status, logs,
//! history, lock, unlock — and the check a job passes before it is
//! submitted (the caller's role, the environment's lock). Front ends render
//! what these return; the decisions are made here, once (DESIGN.md §7).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::engine::{LABEL_ENV, LABEL_PROJECT, ObservedContainer};
use crate::marvin::{Marvin, MarvinError, may_change};
use crate::store::{Job, JobId, Lock, LockOutcome, Store, StoreError, UnlockOutcome};

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
    /// An argument is wrong (a duration, a job of another environment).
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
    /// Its containers as the engine reports them now.
    pub containers: Vec<ObservedContainer>,
    /// The lock in force, if any.
    pub lock: Option<Lock>,
    /// The newest job.
    pub last_job: Option<Job>,
}

/// The sentence that refuses a change to a locked environment.
pub fn locked_message(lock: &Lock, now_ms: i64) -> String {
    let until = match lock.until_ms {
        Some(until) => format!(
            "for another {}",
            crate::duration::format(Duration::from_millis((until - now_ms).max(0) as u64))
        ),
        None => "until unlocked".to_string(),
    };
    let reason = if lock.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", lock.reason)
    };
    format!(
        "{} is locked by {} {until}{reason}; ask them to unlock it, or wait",
        lock.env, lock.holder
    )
}

/// May `who` start a job that changes `env` now? Checks the role, then the
/// lock: the holder may still build, anyone else is refused.
pub fn check_job(
    marvin: &Marvin,
    store: &Store,
    who: &str,
    env: &str,
    now_ms: i64,
) -> Result<(), CommandError> {
    let environment = marvin.project.environment(env)?;
    may_change(&marvin.project, who, environment).map_err(CommandError::PermissionDenied)?;
    match store.current_lock(&marvin.project.name, &environment.name, now_ms)? {
        Some(lock) if lock.holder != who => Err(CommandError::Locked {
            message: locked_message(&lock, now_ms),
            lock: Box::new(lock),
        }),
        _ => Ok(()),
    }
}

/// Take (or renew) `env`'s lock for `who`, for `duration` (None: until unlocked).
pub fn lock(
    marvin: &Marvin,
    store: &Store,
    who: &str,
    env: &str,
    duration: Option<Duration>,
    reason: &str,
    now_ms: i64,
) -> Result<Lock, CommandError> {
    let environment = marvin.project.environment(env)?;
    may_change(&marvin.project, who, environment).map_err(CommandError::PermissionDenied)?;
    let until = duration.map(|d| now_ms + d.as_millis() as i64);
    match store.lock(
        &marvin.project.name,
        &environment.name,
        who,
        reason,
        until,
        false,
        now_ms,
    )? {
        LockOutcome::Taken(l)
        | LockOutcome::Renewed(l)
        | LockOutcome::TakenOver { lock: l, .. } => Ok(l),
        LockOutcome::Refused(current) => Err(CommandError::Locked {
            message: locked_message(&current, now_ms),
            lock: Box::new(current),
        }),
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
    if force && marvin.project.role_of(who) != crate::config::Role::Admin {
        return Err(CommandError::PermissionDenied(format!(
            "only an admin may unlock an environment someone else locked, and {who} is not one"
        )));
    }
    match store.unlock(&marvin.project.name, &environment.name, who, force, now_ms)? {
        UnlockOutcome::Released(l) => Ok(Some(l)),
        UnlockOutcome::NotLocked => Ok(None),
        UnlockOutcome::Refused(current) => Err(CommandError::Locked {
            message: locked_message(&current, now_ms),
            lock: Box::new(current),
        }),
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
    Ok(store.jobs(&marvin.project.name, Some(&environment.name), n)?)
}

/// `status`: the containers the engine holds for `env`, its lock, its last job.
pub async fn status(
    marvin: &Marvin,
    store: &Store,
    env: &str,
    now_ms: i64,
) -> Result<EnvStatus, CommandError> {
    let environment = marvin.project.environment(env)?.clone();
    let engine = marvin.engine.clone().ok_or(CommandError::NoEngine)?;
    let labels = BTreeMap::from([
        (LABEL_PROJECT.to_string(), marvin.project.name.clone()),
        (LABEL_ENV.to_string(), environment.name.clone()),
    ]);
    let containers = engine.list_containers(&labels).await?;
    let lock = store.current_lock(&marvin.project.name, &environment.name, now_ms)?;
    let last_job = store
        .jobs(&marvin.project.name, Some(&environment.name), 1)?
        .pop();
    Ok(EnvStatus {
        environment: environment.name,
        containers,
        lock,
        last_job,
    })
}

/// What `logs` reads: a job's log, or a service's container log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// The newest job of the environment.
    LastJob,
    /// This job.
    Job(JobId),
    /// This service's container.
    Service(String),
}

impl LogTarget {
    /// A job number (`42`, `#42`) or a service name; nothing means the last job.
    pub fn parse(target: Option<&str>) -> LogTarget {
        match target {
            None => LogTarget::LastJob,
            Some(t) => match t.trim_start_matches('#').parse::<JobId>() {
                Ok(id) => LogTarget::Job(id),
                Err(_) => LogTarget::Service(t.to_string()),
            },
        }
    }
}

/// `logs`: the last `tail` lines of a job's log (`[stream] line`) or of a
/// service's container.
pub async fn logs(
    marvin: &Marvin,
    store: &Store,
    env: &str,
    target: &LogTarget,
    tail: usize,
) -> Result<Vec<String>, CommandError> {
    let environment = marvin.project.environment(env)?.clone();
    let job_id = match target {
        LogTarget::Job(id) => Some(*id),
        LogTarget::LastJob => Some(
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
        LogTarget::Service(_) => None,
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
    let LogTarget::Service(service) = target else {
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
        lock(
            &marvin,
            &store,
            "py:alice",
            "dev",
            Some(Duration::from_secs(3600)),
            "demo at 3",
            now,
        )
        .expect("alice locks dev");
        check_job(&marvin, &store, "py:alice", "dev", now).expect("the holder may build");
        match check_job(&marvin, &store, "py:bob", "dev", now) {
            Err(CommandError::Locked { lock, message }) => {
                assert_eq!(lock.holder, "py:alice");
                assert_eq!(
                    message,
                    "dev is locked by py:alice for another 1h (demo at 3); ask them to unlock it, or wait"
                );
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        check_job(&marvin, &store, "py:bob", "dev", now + 3_600_001)
            .expect("an expired lock no longer refuses");
    }

    #[test]
    fn viewers_cannot_lock_or_build() {
        let (_tmp, marvin, store) = fixture();
        assert!(matches!(
            check_job(&marvin, &store, "py:eve", "dev", 0),
            Err(CommandError::PermissionDenied(_))
        ));
        assert!(matches!(
            lock(&marvin, &store, "py:eve", "dev", None, "", 0),
            Err(CommandError::PermissionDenied(_))
        ));
    }

    #[test]
    fn only_the_holder_or_a_forcing_admin_unlocks() {
        let (_tmp, marvin, store) = fixture();
        lock(&marvin, &store, "py:alice", "dev", None, "", 0).expect("lock");
        assert!(matches!(
            unlock(&marvin, &store, "py:bob", "dev", false, 1),
            Err(CommandError::Locked { .. })
        ));
        assert!(matches!(
            unlock(&marvin, &store, "py:bob", "dev", true, 1),
            Err(CommandError::PermissionDenied(_))
        ));
        let released = unlock(&marvin, &store, "py:root", "dev", true, 1).expect("admin");
        assert_eq!(released.map(|l| l.holder), Some("py:alice".to_string()));
        assert_eq!(
            unlock(&marvin, &store, "py:root", "dev", false, 2).expect("nothing to unlock"),
            None
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
        let err = rt
            .block_on(logs(&marvin, &store, "dev", &LogTarget::Job(job.id), 10))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("job #{} ran in prod, not dev", job.id)
        );
        let err = rt
            .block_on(logs(&marvin, &store, "dev", &LogTarget::LastJob, 10))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dev has no jobs yet; run `marvin build dev`"
        );
    }

    #[test]
    fn a_log_target_is_a_job_number_or_a_service() {
        assert_eq!(LogTarget::parse(None), LogTarget::LastJob);
        assert_eq!(LogTarget::parse(Some("#12")), LogTarget::Job(12));
        assert_eq!(LogTarget::parse(Some("12")), LogTarget::Job(12));
        assert_eq!(
            LogTarget::parse(Some("web")),
            LogTarget::Service("web".into())
        );
    }
}
