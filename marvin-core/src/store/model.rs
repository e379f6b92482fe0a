//! The plain data the store takes and gives back.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job's number, as people see it (`build #42`). Never reused.
pub type JobId = i64;

/// Where a job is in its life (ARCHITECTURE.md, `store/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Persisted, waiting for its environment's queue slot (or an approval).
    Queued,
    /// Holding the queue slot and working.
    Running,
    /// Finished and did what it was asked.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Stopped on someone's request.
    Cancelled,
    /// Left queued or running when Marvin stopped; found on start-up.
    Interrupted,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Interrupted,
    ];

    /// The lowercase name, as stored and serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Interrupted => "interrupted",
        }
    }

    /// True for the states a job never leaves.
    pub fn is_finished(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`JobState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a job state (queued, running, succeeded, failed, cancelled, interrupted)")]
pub struct UnknownJobState(pub String);

impl FromStr for JobState {
    type Err = UnknownJobState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_owned()))
    }
}

/// What a caller knows about a job before it is persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJob {
    /// Project name.
    pub project: String,
    /// Environment name.
    pub env: String,
    /// The command verb (`build`, `run`, `rollback`, ...).
    pub verb: String,
    /// The command's arguments, already parsed.
    pub args: Vec<String>,
    /// Identity of the person or trigger, e.g. `local:alice`.
    pub who: String,
    /// Where the command came from, e.g. `console`, `slack:C024BE91L`.
    pub origin: String,
    /// What started it: `person`, `push`, `poll` or `schedule`.
    pub trigger: String,
}

/// A persisted job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's number.
    pub id: JobId,
    /// Project name.
    pub project: String,
    /// Environment name.
    pub env: String,
    /// The command verb.
    pub verb: String,
    /// The command's arguments.
    pub args: Vec<String>,
    /// Identity of the person or trigger.
    pub who: String,
    /// Where the command came from.
    pub origin: String,
    /// What started it.
    pub trigger: String,
    /// Where the job is in its life.
    pub state: JobState,
    /// When it was persisted (unix millis).
    pub created_ms: i64,
    /// When it took its queue slot.
    pub started_ms: Option<i64>,
    /// When it reached a finished state.
    pub finished_ms: Option<i64>,
    /// The job's summary, free-form JSON.
    pub result: Option<serde_json::Value>,
    /// Why it failed, in words.
    pub error: Option<String>,
}

/// One thing that happened during a job (step started, image built, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The job it belongs to.
    pub job: JobId,
    /// Position in the job's events, from 1.
    pub seq: i64,
    /// When it happened (unix millis).
    pub at_ms: i64,
    /// What kind of event, e.g. `step.started`.
    pub kind: String,
    /// Its details.
    pub data: serde_json::Value,
}

/// One line of a job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The job it belongs to.
    pub job: JobId,
    /// Position in the job's log, from 1, across all streams.
    pub seq: i64,
    /// When it was recorded (unix millis).
    pub at_ms: i64,
    /// Which output, e.g. `build:web`, `deploy`, `task:migrate`.
    pub stream: String,
    /// The text, without its newline.
    pub line: String,
}

/// What one job deployed to one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// The deployment's number.
    pub id: i64,
    /// The job that deployed it.
    pub job: JobId,
    /// Project name.
    pub project: String,
    /// Environment name.
    pub env: String,
    /// When it was recorded (unix millis).
    pub at_ms: i64,
    /// Every service running after the deployment, by service name.
    pub services: Vec<DeployedService>,
}

/// One service as deployed: enough to redeploy it exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedService {
    /// Compose service name.
    pub service: String,
    /// The deploy key stamped on its container.
    pub deploy_key: String,
    /// The build key of its image, when Marvin built it.
    pub build_key: Option<String>,
    /// The image tag it runs.
    pub image: String,
    /// Source commit per repo.
    pub commits: BTreeMap<String, String>,
    /// The `ContainerSpec` as JSON, so a rollback can redeploy exactly.
    pub spec: serde_json::Value,
}

/// A reservation of an environment (docs/people.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Project name.
    pub project: String,
    /// Environment name.
    pub env: String,
    /// Identity of who holds it.
    pub holder: String,
    /// Why, in the holder's words.
    pub reason: String,
    /// When the holder took it (unix millis); renewing keeps it.
    pub since_ms: i64,
    /// When it lapses; `None` holds until unlocked.
    pub until_ms: Option<i64>,
}

impl Lock {
    /// True while the lock holds at `now_ms`.
    pub fn in_force(&self, now_ms: i64) -> bool {
        self.until_ms.is_none_or(|until| until > now_ms)
    }
}

/// What a lock request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LockOutcome {
    /// The environment was free (or its lock had expired): now it is the caller's.
    Taken(Lock),
    /// The caller already held it: reason and expiry updated.
    Renewed(Lock),
    /// An admin took it from someone; `previous` is who to tell.
    TakenOver {
        /// The caller's new lock.
        lock: Lock,
        /// The lock that was taken over.
        previous: Lock,
    },
    /// Someone else holds it: their lock.
    Refused(Lock),
}

/// What an unlock request did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum UnlockOutcome {
    /// The lock that was released.
    Released(Lock),
    /// There was no lock in force.
    NotLocked,
    /// Someone else holds it and `force` was not given: their lock.
    Refused(Lock),
}

/// An audit record before it is persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// Identity of the caller.
    pub who: String,
    /// Where the command came from.
    pub origin: String,
    /// Project name.
    pub project: String,
    /// Environment, when the command has one.
    pub env: Option<String>,
    /// The command as typed (after redaction).
    pub command: String,
    /// `allowed` or `denied`.
    pub decision: String,
    /// How it ended, when known (e.g. `job #42 succeeded`).
    pub outcome: Option<String>,
    /// Anything else worth keeping, e.g. why it was denied.
    pub detail: Option<String>,
}

/// A persisted audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The record's number.
    pub id: i64,
    /// When the command arrived (unix millis).
    pub at_ms: i64,
    /// Identity of the caller.
    pub who: String,
    /// Where the command came from.
    pub origin: String,
    /// Project name.
    pub project: String,
    /// Environment, when the command has one.
    pub env: Option<String>,
    /// The command as typed (after redaction).
    pub command: String,
    /// `allowed` or `denied`.
    pub decision: String,
    /// How it ended, when known.
    pub outcome: Option<String>,
    /// Anything else worth keeping.
    pub detail: Option<String>,
}

/// Where an approval request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalState {
    /// Waiting for an admin.
    Pending,
    /// An admin other than the requester approved it.
    Approved,
    /// Nobody approved it in time.
    Expired,
}

impl ApprovalState {
    /// The lowercase name, as stored and serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Expired => "expired",
        }
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(ApprovalState::Pending),
            "approved" => Ok(ApprovalState::Approved),
            "expired" => Ok(ApprovalState::Expired),
            other => Err(format!("`{other}` is not an approval state")),
        }
    }
}

/// A request that an admin approve a job on a protected environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The job waiting for it.
    pub job: JobId,
    /// Project name (the job's).
    pub project: String,
    /// Environment name (the job's).
    pub env: String,
    /// Who asked (the job's `who`).
    pub requester: String,
    /// When it was asked (unix millis).
    pub requested_ms: i64,
    /// When it lapses unless approved.
    pub expires_ms: i64,
    /// Where it stands.
    pub state: ApprovalState,
    /// Who approved it.
    pub approver: Option<String>,
    /// When it was approved or found expired.
    pub decided_ms: Option<i64>,
}

/// What an `approve` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApproveOutcome {
    /// Approved now.
    Approved(Approval),
    /// The job has no approval request.
    NoRequest,
    /// The approver is the requester: refused, nothing changed.
    SelfApproval(Approval),
    /// It had lapsed (and is now marked expired).
    Expired(Approval),
    /// It was already approved or expired before.
    AlreadyDecided(Approval),
}
