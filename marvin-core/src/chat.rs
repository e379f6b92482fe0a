//! The chat dispatcher (docs/commands.md): the one entry point every front
//! end that takes typed commands goes through — Slack, Telegram,
//! `marvin chat`, and anything else that speaks the grammar.
//!
//! A [`Message`] (identity, channel, text) comes in; the text is parsed by
//! [`crate::command::parse`] in the channel's context, the caller's role is
//! checked by [`crate::access::decide`], the lock by [`crate::locks`], and
//! then either a job is submitted to the [`Runtime`] ([`Reply::Job`], whose
//! [`Follow`] yields the job's [`Report`] as it progresses, for a front end to
//! post and then edit in place) or the command is answered at once
//! ([`Reply::Answer`]). Every command — understood or not, allowed or
//! denied — is written to the audit log with its outcome, redacted.
//!
//! Nothing here formats for a particular chat: answers are plain text plus
//! an optional preformatted block, and reports are rendered by
//! [`crate::render`]. Everything a [`Reply`] carries has passed through the
//! runtime's [`Redactor`].

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::access::{self, Decision};
use crate::command::{self, Command, Context, LogTarget, ParseError, Verb};
use crate::commands::{self, CommandError};
use crate::config::{Environment, Role};
use crate::locks::{self, BuildGate};
use crate::redact::Redactor;
use crate::render::{JobHeader, Progress, Report};
use crate::runtime::{JobKind, JobRequest, JobSummary, Runtime, SubmitError};
use crate::store::{ApproveOutcome, Job, JobId, JobState, NewAuditEntry};

/// How many lines `logs` shows when `--tail` is not given.
pub const DEFAULT_LOG_LINES: usize = 50;
/// How many jobs `history` shows when no count is given.
pub const DEFAULT_HISTORY: usize = 10;
/// Longest answer, in characters; longer ones are cut with a pointer.
pub const ANSWER_LIMIT: usize = crate::render::MESSAGE_LIMIT;
/// Longest command text kept in the audit log.
const AUDIT_COMMAND_CHARS: usize = 500;
/// How often a running job's report is refreshed when nothing else happens
/// (the elapsed time moves on).
const TICK: Duration = Duration::from_secs(5);

/// A command as it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who sent it: `slack:U123`, `telegram:456`, `local:alice`, `web:bob`.
    pub identity: String,
    /// Where from: `slack:C123`, `telegram:-100123`, `console`. Channels
    /// bound to one environment (marvin.yml `channels`) imply it.
    pub channel: String,
    /// The text, with or without the bot's mention.
    pub text: String,
    /// The bot's own user name (Telegram's `/build@name`), if known.
    pub bot: Option<String>,
}

/// Who is asking, resolved once at the door ([`Chat::person`]) and passed
/// down: the identity, where the command came from, and the identity's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// `slack:U123`, `local:alice`, `py:bob`, …
    pub identity: String,
    /// Where from: a channel (`slack:C123`), `console`, `python`.
    pub origin: String,
    /// The role `people` in marvin.yml gives the identity.
    pub role: Role,
    /// The bot's name in the front end the person writes in (`shipit`),
    /// when it knows it: `help` and hints name it instead of `@marvin`.
    pub bot: Option<String>,
}

impl Person {
    /// How the person addresses the bot: `@shipit`, or `@marvin`.
    pub fn bot_mention(&self) -> String {
        match self.bot.as_deref().map(|b| b.trim_start_matches('@')) {
            Some(name) if !name.is_empty() => format!("@{name}"),
            _ => "@marvin".to_string(),
        }
    }
}

/// How an answer should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    /// Information, or something done.
    Info,
    /// Not allowed, not understood, or someone else's lock: nothing was done.
    Refused,
    /// It was allowed but failed.
    Error,
}

/// An immediate answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// How it should look.
    pub tone: Tone,
    /// One or a few sentences; `code` in backticks.
    pub text: String,
    /// A preformatted block shown under the text (tables, logs, plans).
    pub block: Option<String>,
    /// Identities to notify (e.g. the holder of a lock taken over, the
    /// requester of an approved job).
    pub mentions: Vec<String>,
    /// What was done, as data (the console's `--json`): the lock taken, the
    /// lock released, the job asked to stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

impl Answer {
    fn info(text: impl Into<String>) -> Answer {
        Answer {
            tone: Tone::Info,
            text: text.into(),
            block: None,
            mentions: Vec::new(),
            data: None,
        }
    }

    fn refused(text: impl Into<String>) -> Answer {
        Answer {
            tone: Tone::Refused,
            ..Answer::info(text)
        }
    }

    fn error(text: impl Into<String>) -> Answer {
        Answer {
            tone: Tone::Error,
            ..Answer::info(text)
        }
    }

    fn with_block(mut self, block: String) -> Answer {
        self.block = Some(block);
        self
    }

    fn with_data(mut self, data: impl Serialize) -> Answer {
        self.data = serde_json::to_value(data).ok();
        self
    }

    /// The answer as plain text (the console's form).
    pub fn to_text(&self) -> String {
        match &self.block {
            Some(b) => format!("{}\n{}", self.text, b.trim_end()),
            None => self.text.clone(),
        }
    }

    fn redacted(mut self, r: &Redactor) -> Answer {
        self.text = r.redact(&self.text).into_owned();
        self.block = self.block.map(|b| r.redact(&b).into_owned());
        self
    }
}

/// What the dispatcher did with a message.
pub enum Reply {
    /// Addressed to another bot (`/build@otherbot`): say nothing.
    Ignored,
    /// Answered at once.
    Answer(Answer),
    /// A job was submitted: post its report, then update it.
    Job(Follow),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Ignored => f.write_str("Ignored"),
            Reply::Answer(a) => f.debug_tuple("Answer").field(a).finish(),
            Reply::Job(j) => write!(f, "Job(#{})", j.job),
        }
    }
}

/// A submitted job's report as it progresses. The first [`Follow::next`]
/// returns the report at once (queued, or waiting for approval); each
/// later one waits for a change and returns the newest report (intermediate
/// ones a slow front end did not fetch are skipped); after the final report
/// it returns `None`.
pub struct Follow {
    /// The job.
    pub job: JobId,
    /// Its environment.
    pub env: String,
    /// Masks every secret value known when the job was submitted; reports
    /// from [`Follow::next`] are already redacted by the runtime, this is
    /// for renderers (which redact once more, last).
    pub redactor: Arc<Redactor>,
    rx: watch::Receiver<Report>,
    summary: SummarySlot,
    first: bool,
    done: bool,
}

/// Where the follower leaves the job's summary when it ends.
type SummarySlot = Arc<std::sync::Mutex<Option<JobSummary>>>;

impl Follow {
    /// The newest report.
    pub fn current(&self) -> Report {
        self.rx.borrow().clone()
    }

    /// The next report to show; `None` once the final one was returned.
    pub async fn next(&mut self) -> Option<Report> {
        if self.done {
            return None;
        }
        if self.first {
            self.first = false;
        } else if self.rx.changed().await.is_err() {
            // The follower ended; its last value was already seen.
            self.done = true;
            return None;
        }
        let report = self.rx.borrow_and_update().clone();
        if report.is_final() {
            self.done = true;
        }
        Some(report)
    }

    /// Wait for the job to end and return its summary (the console's
    /// `--json` shape).
    pub async fn summary(mut self) -> JobSummary {
        while self.next().await.is_some() {}
        let summary = self.summary.lock().expect("summary slot").clone();
        summary.unwrap_or_else(|| JobSummary {
            job: self.job,
            env: self.env.clone(),
            ..JobSummary::default()
        })
    }

    /// Wait for the job to end and return its final report.
    pub async fn finish(mut self) -> Report {
        let mut last = self.current();
        while let Some(r) = self.next().await {
            last = r;
        }
        last
    }
}

/// The dispatcher. Cheap to clone; one per process, shared by its front ends.
#[derive(Clone)]
pub struct Chat {
    runtime: Runtime,
}

/// A command's outcome before redaction and audit.
enum Done {
    Answer(Answer),
    Job(Follow),
}

impl Chat {
    /// A dispatcher over a runtime.
    pub fn new(runtime: Runtime) -> Chat {
        Chat { runtime }
    }

    /// The runtime jobs are submitted to.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Who is asking: the identity's role, resolved once here and passed down.
    pub fn person(&self, identity: &str, origin: &str) -> Person {
        Person {
            identity: identity.to_string(),
            origin: origin.to_string(),
            role: self.runtime.marvin().project.role_of(identity),
            bot: None,
        }
    }

    /// Parse a message in its channel's context, then go through
    /// [`Chat::door`]. Text that does not parse is audited as `invalid`.
    pub async fn handle(&self, msg: &Message) -> Reply {
        let mut person = self.person(&msg.identity, &msg.channel);
        person.bot = msg.bot.clone();
        let project = &self.runtime.marvin().project;
        let mut ctx = Context::for_channel(project, &msg.channel);
        ctx.bot = msg.bot.clone();
        let command = match command::parse(&msg.text, &ctx) {
            Ok(c) => c,
            Err(ParseError::OtherBot { .. }) => return Reply::Ignored,
            Err(e) => {
                let redactor = self.runtime.redactor();
                let text = e.to_string().replace("@marvin", &person.bot_mention());
                let answer = self.scrubbed(Answer::refused(text)).redacted(&redactor);
                self.audit(
                    &person,
                    None,
                    &raw_text(&msg.text),
                    "invalid",
                    Some(&answer.text),
                    &redactor,
                );
                return Reply::Answer(answer);
            }
        };
        self.door(&person, &command).await
    }

    /// The one door every person's command goes through, from every front
    /// end (chat, the console, Python, the web button): permission
    /// ([`access`]), then the lock ([`locks`]), then the audit log (allowed,
    /// denied, needs approval, invalid, and later the outcome), then the
    /// answer, or the job submitted and followed.
    pub async fn door(&self, person: &Person, command: &Command) -> Reply {
        let redactor = Arc::new(self.runtime.redactor());
        let text = command.to_text();
        let env_name = command.env.clone();
        let decision = match self.decide(person, command) {
            Ok(d) => d,
            Err(e) => {
                let answer = self.scrubbed(error_answer(e)).redacted(&redactor);
                self.audit(
                    person,
                    env_name.as_deref(),
                    &text,
                    "invalid",
                    Some(&answer.text),
                    &redactor,
                );
                return Reply::Answer(answer);
            }
        };
        let approval = match decision {
            Decision::Deny { reason } => {
                let reason = self
                    .forced_by_a_developer(person, command)
                    .unwrap_or(reason);
                let answer = self
                    .scrubbed(Answer::refused(reason))
                    .with_data(serde_json::json!({ "refused": "permission" }))
                    .redacted(&redactor);
                self.audit(
                    person,
                    env_name.as_deref(),
                    &text,
                    "denied",
                    Some(&answer.text),
                    &redactor,
                );
                return Reply::Answer(answer);
            }
            Decision::NeedsApproval => true,
            Decision::Allow => false,
        };
        let decision = if approval {
            "needs-approval"
        } else {
            "allowed"
        };
        let audit_id = self.audit(
            person,
            env_name.as_deref(),
            &text,
            decision,
            None,
            &redactor,
        );
        let done = self
            .carry_out(person, command, approval, audit_id, &redactor)
            .await;
        match done {
            Ok(Done::Job(follow)) => Reply::Job(follow),
            Ok(Done::Answer(answer)) => {
                let answer = self.scrubbed(answer).redacted(&redactor);
                let outcome = match answer.tone {
                    Tone::Info => "ok".to_string(),
                    Tone::Refused => format!("refused: {}", first_line(&answer.text)),
                    Tone::Error => format!("failed: {}", first_line(&answer.text)),
                };
                self.set_outcome(audit_id, &outcome, &redactor);
                Reply::Answer(answer)
            }
            Err(e) => {
                let answer = self.scrubbed(error_answer(e)).redacted(&redactor);
                let outcome = format!(
                    "{}: {}",
                    if answer.tone == Tone::Refused {
                        "refused"
                    } else {
                        "failed"
                    },
                    first_line(&answer.text)
                );
                self.set_outcome(audit_id, &outcome, &redactor);
                Reply::Answer(answer)
            }
        }
    }

    /// An answer without server paths: marvin.yml's full path becomes its
    /// file name, paths under the project's or the data directory relative
    /// ones. People in a chat have no business with the server's file system.
    fn scrubbed(&self, mut answer: Answer) -> Answer {
        answer.text = self.scrub(&answer.text);
        answer.block = answer.block.as_deref().map(|b| self.scrub(b));
        answer
    }

    /// `text` without server paths (see [`Chat::scrubbed`]).
    fn scrub(&self, text: &str) -> String {
        let marvin = self.runtime.marvin();
        let name_of = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let config = Path::new(&marvin.project.file);
        let mut pairs: Vec<(String, String)> = Vec::new();
        for file in [config.to_path_buf(), marvin.config_path.clone()] {
            let canonical = file.canonicalize().ok();
            for f in std::iter::once(file).chain(canonical) {
                if f.is_absolute() {
                    pairs.push((f.display().to_string(), name_of(&f)));
                    if let Some(dir) = f.parent().filter(|d| d.parent().is_some()) {
                        pairs.push((format!("{}/", dir.display()), String::new()));
                        pairs.push((dir.display().to_string(), ".".into()));
                    }
                }
            }
        }
        let data = &marvin.data_dir;
        for d in std::iter::once(data.clone()).chain(data.canonicalize().ok()) {
            if d.is_absolute() && d.parent().is_some() {
                pairs.push((d.display().to_string(), name_of(&d)));
            }
        }
        // The longest first, so a directory does not cut a file's path in two.
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        pairs
            .iter()
            .filter(|(from, _)| from.len() > 1)
            .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
    }

    /// Who may: judged on the command's environment, or for a command
    /// addressed to a job (`cancel #12`, `approve #12`), on the job's. The
    /// person who asked for a job may always cancel it.
    fn decide(&self, person: &Person, command: &Command) -> Result<Decision, CommandError> {
        let project = &self.runtime.marvin().project;
        if let Verb::Cancel { job } = &command.verb
            && let Some(target) = self.cancel_target(command, *job)?.ok()
            && target.who == person.identity
        {
            return Ok(Decision::Allow);
        }
        let job_env = match &command.verb {
            Verb::Cancel { job: Some(id) } | Verb::Approve { job: id } => Some(self.job(*id)?.env),
            _ => None,
        };
        let env = match job_env.as_deref().or(command.env.as_deref()) {
            Some(name) => Some(project.environment(name)?),
            None => None,
        };
        Ok(access::decide_as(
            project,
            &person.identity,
            person.role,
            env,
            &command.verb,
            None,
        ))
    }

    /// A developer's `--force` on someone else's lock: the refusal names the holder.
    fn forced_by_a_developer(&self, person: &Person, command: &Command) -> Option<String> {
        let marvin = self.runtime.marvin();
        let env = marvin.project.environment(command.env.as_deref()?).ok()?;
        let now = self.runtime.now_ms();
        let current = self
            .runtime
            .store()
            .current_lock(&marvin.project.name, &env.name, now)
            .ok()?;
        commands::forced_by_a_developer(marvin, current, &person.identity, &command.verb, now)
            .map(|e| e.to_string())
    }

    fn job(&self, id: JobId) -> Result<Job, CommandError> {
        let job = self
            .runtime
            .store()
            .job(id)?
            .filter(|j| j.project == self.runtime.marvin().project.name);
        job.ok_or_else(|| CommandError::NotFound(format!("there is no job #{id}")))
    }

    fn env(&self, command: &Command) -> Result<&Environment, CommandError> {
        let name = command.env.as_deref().ok_or_else(|| {
            CommandError::BadInput(format!("`{}` needs an environment", command.verb.name()))
        })?;
        Ok(self.runtime.marvin().project.environment(name)?)
    }

    async fn carry_out(
        &self,
        person: &Person,
        command: &Command,
        approval: bool,
        audit_id: Option<i64>,
        redactor: &Arc<Redactor>,
    ) -> Result<Done, CommandError> {
        let marvin = self.runtime.marvin();
        let store = self.runtime.store();
        let now = self.runtime.now_ms();
        let who = person.identity.as_str();
        if let Some(kind) = command.verb.job_kind() {
            let env = self.env(command)?.name.clone();
            return self
                .submit(person, &env, kind, approval, audit_id, redactor)
                .map(Done::Job);
        }
        let answer = match &command.verb {
            Verb::Help { verb } => Answer::info(command::help_text_as(
                verb.as_deref(),
                &person.bot_mention(),
            )),
            Verb::Whoami => Answer::info(access::whoami_text(&marvin.project, who)),
            Verb::Envs => {
                let block = envs_text(&self.runtime, now)?;
                Answer::info(format!(
                    "{} environments of {}:",
                    marvin.project.environments.len(),
                    marvin.project.name
                ))
                .with_block(block)
            }
            Verb::Status => {
                let env = self.env(command)?;
                let status = commands::status(marvin, store, &env.name, now).await?;
                Answer::info(format!("{} ({})", status.environment, marvin.project.name))
                    .with_block(status_text(&status, now))
            }
            Verb::Plan => {
                let env = self.env(command)?;
                let plan = marvin
                    .plan(&env.name, &crate::marvin::PlanOptions::default())
                    .await?;
                Answer::info(format!("the plan for {}:", env.name))
                    .with_block(crate::report::plan_text(&plan))
            }
            Verb::History { count } => {
                let env = self.env(command)?;
                let jobs =
                    commands::history(marvin, store, &env.name, count.unwrap_or(DEFAULT_HISTORY))?;
                if jobs.is_empty() {
                    Answer::info(format!("{} has no jobs yet", env.name))
                } else {
                    Answer::info(format!("the last {} jobs of {}:", jobs.len(), env.name))
                        .with_block(history_text(&jobs))
                }
            }
            Verb::Logs { target, tail } => {
                let env = self.env(command)?;
                let lines = commands::logs(
                    marvin,
                    store,
                    &env.name,
                    target.as_ref(),
                    tail.unwrap_or(DEFAULT_LOG_LINES),
                )
                .await?;
                let what = match target {
                    Some(LogTarget::Job(j)) => format!("job #{j}"),
                    Some(LogTarget::Service(s)) => format!("{s} in {}", env.name),
                    None => format!("the last job of {}", env.name),
                };
                let pointer = match target {
                    Some(LogTarget::Service(s)) => format!("marvin logs {} {s}", env.name),
                    Some(LogTarget::Job(j)) => format!("marvin logs {} {j}", env.name),
                    None => format!("marvin logs {}", env.name),
                };
                if lines.is_empty() {
                    Answer::info(format!("the log of {what} is empty"))
                } else {
                    Answer::info(format!("the log of {what}:")).with_block(cut_lines(
                        &lines,
                        ANSWER_LIMIT,
                        &pointer,
                    ))
                }
            }
            Verb::Lock {
                duration,
                reason,
                force,
            } => {
                let env = self.env(command)?;
                let granted = commands::take_lock(
                    marvin, store, who, &env.name, *duration, reason, *force, now,
                )?;
                let mut answer =
                    Answer::info(format!("🔒 {}", locks::describe(&granted.lock, now)));
                if let Some(previous) = granted.taken_from {
                    answer.text.push_str(&format!(
                        "; taken over from {}, who held it{}",
                        previous.holder,
                        if previous.reason.is_empty() {
                            String::new()
                        } else {
                            format!(" for \"{}\"", previous.reason)
                        }
                    ));
                    answer.mentions.push(previous.holder);
                }
                answer.with_data(&granted.lock)
            }
            Verb::Unlock { force } => {
                let env = self.env(command)?;
                let released = commands::unlock(marvin, store, who, &env.name, *force, now)?;
                let data = serde_json::json!({ "released": &released });
                match released {
                    Some(l) if l.holder != who => {
                        let mut a = Answer::info(format!(
                            "🔓 {} unlocked (it was held by {})",
                            env.name, l.holder
                        ));
                        a.mentions.push(l.holder);
                        a
                    }
                    Some(_) => Answer::info(format!("🔓 {} unlocked", env.name)),
                    None => Answer::info(format!("{} was not locked", env.name)),
                }
                .with_data(data)
            }
            Verb::Cancel { job } => self.cancel(command, *job)?,
            Verb::Approve { job } => self.approve(who, *job, now)?,
            Verb::Build { .. } | Verb::Run { .. } | Verb::Rollback { .. } => {
                unreachable!("verbs that start jobs are submitted above")
            }
        };
        Ok(Done::Answer(answer))
    }

    /// The job a `cancel` is about, or the answer when there is none.
    fn cancel_target(
        &self,
        command: &Command,
        job: Option<JobId>,
    ) -> Result<Result<Job, Answer>, CommandError> {
        let store = self.runtime.store();
        let project = &self.runtime.marvin().project.name;
        Ok(match job {
            Some(id) => {
                let j = self.job(id)?;
                if j.state.is_finished() {
                    Err(Answer::refused(format!(
                        "job #{id} already {}",
                        j.state.as_str()
                    )))
                } else {
                    Ok(j)
                }
            }
            None => {
                let env = self.env(command)?;
                let active = store.active_jobs(project, Some(&env.name))?;
                match active
                    .iter()
                    .find(|j| j.state == JobState::Running)
                    .or(active.first())
                {
                    Some(j) => Ok(j.clone()),
                    None => Err(Answer::refused(format!(
                        "nothing is queued or running in {}",
                        env.name
                    ))),
                }
            }
        })
    }

    fn cancel(&self, command: &Command, job: Option<JobId>) -> Result<Answer, CommandError> {
        let target = match self.cancel_target(command, job)? {
            Ok(j) => j,
            Err(answer) => return Ok(answer),
        };
        if !self.runtime.cancel(target.id) {
            // Another process runs it: it reads the request within a second.
            self.runtime
                .store()
                .request_cancel(target.id, self.runtime.now_ms())?;
        }
        Ok(Answer::info(format!(
            "⏹ asked job #{} ({}) to stop",
            target.id,
            job_words(&target.verb, &target.args)
        ))
        .with_data(serde_json::json!({"job": target.id, "cancel_requested": true})))
    }

    fn approve(&self, who: &str, job: JobId, now: i64) -> Result<Answer, CommandError> {
        let project = &self.runtime.marvin().project;
        let store = self.runtime.store();
        let target = self.job(job)?;
        let Some(approval) = store.approval(job)? else {
            return Ok(Answer::refused(format!(
                "job #{job} is not waiting for an approval"
            )));
        };
        if let Err(e) = access::check_approval(project, &approval, who, now) {
            return Ok(Answer::refused(e.to_string()));
        }
        let answer = match store.approve(job, who, now)? {
            ApproveOutcome::Approved(a) => {
                let mut answer = Answer::info(format!(
                    "👍 approved job #{job} ({} in {}, asked by {}); it starts when {} is free",
                    job_words(&target.verb, &target.args),
                    a.env,
                    a.requester,
                    a.env
                ));
                answer.mentions.push(a.requester);
                answer
            }
            ApproveOutcome::NoRequest => {
                Answer::refused(format!("job #{job} is not waiting for an approval"))
            }
            ApproveOutcome::SelfApproval(_) => {
                Answer::refused(access::ApprovalError::OwnRequest { job }.to_string())
            }
            ApproveOutcome::Expired(_) => {
                Answer::refused(access::ApprovalError::Expired { job }.to_string())
            }
            ApproveOutcome::AlreadyDecided(a) => Answer::refused(match a.approver {
                Some(by) => access::ApprovalError::AlreadyApproved { job, by }.to_string(),
                None => access::ApprovalError::Expired { job }.to_string(),
            }),
        };
        Ok(answer)
    }

    /// Follow a job submitted elsewhere (a push, a schedule, another front
    /// end): its reports as it progresses, ending with its summary (read
    /// from the store, so a job of another process works too).
    pub fn follow_job(&self, id: JobId) -> Result<Follow, CommandError> {
        let events = self.runtime.subscribe();
        let job = self.job(id)?;
        let header = JobHeader {
            job: job.id,
            env: job.env.clone(),
            verb: job.verb.clone(),
            args: job.args.clone(),
            who: job.who.clone(),
        };
        let redactor = Arc::new(self.runtime.redactor());
        let mut progress = Progress::new();
        progress.started = job.state != JobState::Queued;
        let first = Report::in_progress(&header, &progress, 0).redacted(&redactor);
        let (tx, rx) = watch::channel(first);
        let runtime = self.runtime.clone();
        let done = Box::pin(async move {
            loop {
                if let Ok(Some(j)) = runtime.store().job(id)
                    && j.state.is_finished()
                {
                    let mut summary: JobSummary = j
                        .result
                        .clone()
                        .and_then(|r| serde_json::from_value(r).ok())
                        .unwrap_or_default();
                    summary.job = j.id;
                    summary.env = j.env.clone();
                    summary.verb = j.verb.clone();
                    summary.args = j.args.clone();
                    summary.who = j.who.clone();
                    summary.state = Some(j.state);
                    if summary.error.is_none() {
                        summary.error = j.error.clone();
                    }
                    return summary;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        let chat = self.clone();
        let follow_redactor = Arc::clone(&redactor);
        let summary = SummarySlot::default();
        let slot = Arc::clone(&summary);
        tokio::spawn(async move {
            chat.follow(
                header,
                progress,
                events,
                done,
                (tx, slot),
                None,
                follow_redactor,
            )
            .await
        });
        Ok(Follow {
            job: job.id,
            env: job.env,
            redactor,
            rx,
            summary,
            first: true,
            done: false,
        })
    }

    /// The lock check, then submit, then follow.
    fn submit(
        &self,
        person: &Person,
        env: &str,
        kind: JobKind,
        approval: bool,
        audit_id: Option<i64>,
        redactor: &Arc<Redactor>,
    ) -> Result<Follow, CommandError> {
        let marvin = self.runtime.marvin();
        let store = self.runtime.store();
        let now = self.runtime.now_ms();
        let lock = store.current_lock(&marvin.project.name, env, now)?;
        if let BuildGate::Refused { message } =
            locks::may_build(lock.as_ref(), &person.identity, now)
        {
            return Err(CommandError::Locked {
                lock: Box::new(lock.expect("a refusal names a lock")),
                message,
            });
        }
        let request = JobRequest {
            env: env.to_string(),
            kind,
            who: person.identity.clone(),
            origin: person.origin.clone(),
            trigger: "person".into(),
        };
        // Subscribe before submitting, so no event of the job is missed.
        let events = self.runtime.subscribe();
        let handle = if approval {
            self.runtime.submit_for_approval(request)
        } else {
            self.runtime.submit(request)
        }
        .map_err(|e| match e {
            SubmitError::Marvin(m) => CommandError::Marvin(m),
            SubmitError::Store(s) => CommandError::Store(s),
        })?;
        let job = self.job(handle.id)?;
        let header = JobHeader {
            job: job.id,
            env: job.env.clone(),
            verb: job.verb.clone(),
            args: job.args.clone(),
            who: job.who.clone(),
        };
        let mut progress = Progress::new();
        if approval && let Some(a) = store.approval(job.id)? {
            progress.awaiting_approval = Some(a.expires_ms);
        }
        let first = Report::in_progress(&header, &progress, 0).redacted(redactor);
        let (tx, rx) = watch::channel(first);
        let chat = self.clone();
        let follow_redactor = Arc::clone(redactor);
        let done = Box::pin(handle.wait());
        let summary = SummarySlot::default();
        let slot = Arc::clone(&summary);
        tokio::spawn(async move {
            chat.follow(
                header,
                progress,
                events,
                done,
                (tx, slot),
                audit_id,
                follow_redactor,
            )
            .await
        });
        Ok(Follow {
            job: job.id,
            env: job.env,
            redactor: Arc::clone(redactor),
            rx,
            summary,
            first: true,
            done: false,
        })
    }

    /// Fold the job's events into reports until it ends; then record its
    /// outcome in the audit log.
    #[allow(clippy::too_many_arguments)] // one task's whole state, moved in once
    async fn follow(
        &self,
        header: JobHeader,
        mut progress: Progress,
        mut events: tokio::sync::broadcast::Receiver<crate::runtime::JobEvent>,
        done: std::pin::Pin<Box<dyn std::future::Future<Output = JobSummary> + Send>>,
        (tx, slot): (watch::Sender<Report>, SummarySlot),
        audit_id: Option<i64>,
        redactor: Arc<Redactor>,
    ) {
        let started = tokio::time::Instant::now();
        let mut wait = done;
        let mut tick = tokio::time::interval(TICK);
        tick.tick().await;
        let summary = loop {
            tokio::select! {
                summary = &mut wait => break summary,
                event = events.recv() => match event {
                    Ok(e) if e.job == header.job => {
                        if matches!(e.kind, crate::runtime::EventKind::Log { .. }) && progress.step.is_some() {
                            // Log lines alone do not warrant an edit; they show with the next change.
                            progress.apply(&e.kind);
                            continue;
                        }
                        progress.apply(&e.kind);
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        break (&mut wait).await;
                    }
                },
                _ = tick.tick() => {}
            }
            let elapsed = started.elapsed().as_millis() as u64;
            let report = Report::in_progress(&header, &progress, elapsed).redacted(&redactor);
            if report.is_final() {
                continue;
            }
            tx.send_replace(report);
        };
        // Secrets learned while the job ran (env files) are masked too.
        let redactor = self.runtime.redactor();
        let mut report = Report::from_summary(&summary).redacted(&redactor);
        report.error = report.error.as_deref().map(|e| self.scrub(e));
        let outcome = format!(
            "job #{} {}",
            summary.job,
            summary.state.map(|s| s.as_str()).unwrap_or("ended")
        );
        let detail = summary
            .error
            .as_deref()
            .map(|e| redactor.redact(e).into_owned());
        if let Some(id) = audit_id
            && let Err(e) = self
                .runtime
                .store()
                .set_audit_outcome(id, &outcome, detail.as_deref())
        {
            tracing::warn!("cannot record the outcome of audit entry {id}: {e}");
        }
        *slot.lock().expect("summary slot") = Some(summary);
        tx.send_replace(report);
    }

    fn audit(
        &self,
        person: &Person,
        env: Option<&str>,
        command: &str,
        decision: &str,
        detail: Option<&str>,
        redactor: &Redactor,
    ) -> Option<i64> {
        let entry = NewAuditEntry {
            who: redactor.redact(&person.identity).into_owned(),
            origin: redactor.redact(&person.origin).into_owned(),
            project: self.runtime.marvin().project.name.clone(),
            env: env.map(str::to_owned),
            command: redactor.redact(command).into_owned(),
            decision: decision.to_string(),
            outcome: None,
            detail: detail.map(|d| redactor.redact(d).into_owned()),
        };
        match self.runtime.store().audit(&entry, self.runtime.now_ms()) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!("cannot write the audit log: {e}");
                None
            }
        }
    }

    fn set_outcome(&self, id: Option<i64>, outcome: &str, redactor: &Redactor) {
        if let Some(id) = id
            && let Err(e) =
                self.runtime
                    .store()
                    .set_audit_outcome(id, &redactor.redact(outcome), None)
        {
            tracing::warn!("cannot record the outcome of audit entry {id}: {e}");
        }
    }
}

/// The answer for a command that could not be carried out. Its `data` says
/// what kind of refusal or failure it is (`{"refused": "locked", "lock": …}`),
/// for front ends that raise typed errors (Python).
fn error_answer(e: CommandError) -> Answer {
    let kind = |k: &str| serde_json::json!({ "refused": k });
    match e {
        CommandError::PermissionDenied(_) => {
            Answer::refused(e.to_string()).with_data(kind("permission"))
        }
        CommandError::Locked { ref lock, .. } => {
            let data = serde_json::json!({ "refused": "locked", "lock": lock });
            Answer::refused(e.to_string()).with_data(data)
        }
        CommandError::NotFound(_) => Answer::refused(e.to_string()).with_data(kind("not_found")),
        CommandError::BadInput(_) => Answer::refused(e.to_string()).with_data(kind("bad_input")),
        CommandError::Marvin(crate::marvin::MarvinError::Config(_)) => {
            Answer::refused(e.to_string()).with_data(kind("config"))
        }
        CommandError::NoEngine => Answer::error(e.to_string()).with_data(kind("no_engine")),
        other => Answer::error(other.to_string()),
    }
}

/// Raw text as kept in the audit log when it did not parse: one line, clipped.
fn raw_text(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    clip(one_line.trim(), AUDIT_COMMAND_CHARS)
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// A job's verb and arguments: `build`, `run migrate --fast`.
fn job_words(verb: &str, args: &[String]) -> String {
    std::iter::once(verb)
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line(s: &str) -> String {
    clip(s.lines().next().unwrap_or(""), 300)
}

/// The newest lines that fit in `limit` characters, with a pointer to the
/// rest when some were left out.
pub fn cut_lines(lines: &[String], limit: usize, pointer: &str) -> String {
    let total: usize = lines.iter().map(|l| l.chars().count() + 1).sum();
    if total <= limit {
        return lines.join("\n");
    }
    let note_room = pointer.chars().count() + 40;
    let mut kept: VecDeque<String> = VecDeque::new();
    let mut size = 0;
    for line in lines.iter().rev() {
        let line = clip(line, 300);
        let n = line.chars().count() + 1;
        if size + n + note_room > limit {
            break;
        }
        size += n;
        kept.push_front(line);
    }
    let left_out = lines.len() - kept.len();
    let mut out = format!("… {left_out} earlier lines; all of it: {pointer}\n");
    out.push_str(&Vec::from(kept).join("\n"));
    out
}

/// `status` as text: the lock, the containers, the last job.
pub fn status_text(status: &commands::EnvStatus, now_ms: i64) -> String {
    let mut out = String::new();
    if let Some(l) = &status.lock {
        out.push_str(&format!("{}\n", locks::describe(l, now_ms)));
    }
    if status.containers.is_empty() && status.services.is_empty() {
        out.push_str(&format!(
            "nothing deployed yet; `build {}` deploys it\n",
            status.environment
        ));
    }
    for c in &status.containers {
        let health = c
            .health
            .map(|h| format!(" ({h:?})").to_lowercase())
            .unwrap_or_default();
        let state = format!("{:?}", c.state).to_lowercase();
        out.push_str(&format!("{:<20} {state}{health}  {}\n", c.service, c.image));
    }
    // Swarm services: desired and running replicas.
    for svc in &status.services {
        let update = svc
            .update
            .as_deref()
            .map(|u| format!(" (update {u})"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20} {}/{} replicas running{update}  {}\n",
            svc.service, svc.running, svc.desired, svc.image
        ));
    }
    if let Some(j) = &status.last_job {
        out.push_str(&format!("last job: {}\n", job_line(j, now_ms)));
    }
    out
}

/// One job in a line: `#12 build succeeded — slack:U1, 3m ago`.
pub fn job_line(j: &Job, now_ms: i64) -> String {
    let when = j.finished_ms.or(j.started_ms).unwrap_or(j.created_ms);
    let ago = crate::duration::format(Duration::from_millis((now_ms - when).max(0) as u64));
    let what = if j.args.is_empty() {
        j.verb.clone()
    } else {
        format!("{} {}", j.verb, j.args.join(" "))
    };
    format!(
        "#{} {what} {} — {}, {ago} ago",
        j.id,
        j.state.as_str(),
        j.who
    )
}

/// `history` as a table.
pub fn history_text(jobs: &[Job]) -> String {
    let mut out = String::new();
    for j in jobs {
        let took = match (j.started_ms, j.finished_ms) {
            (Some(s), Some(f)) => {
                crate::duration::format(Duration::from_millis((f - s).max(0) as u64))
            }
            _ => "-".into(),
        };
        out.push_str(&format!(
            "#{:<5} {:<11} {:<16} {:<7} {} {}\n",
            j.id,
            j.state.as_str(),
            j.who,
            took,
            j.verb,
            j.args.join(" ")
        ));
    }
    out
}

/// `envs`: every environment, whether protected, its lock, what is deployed
/// (the commits of its last deployment) and its last job.
pub fn envs_text(runtime: &Runtime, now_ms: i64) -> Result<String, CommandError> {
    let project = &runtime.marvin().project;
    let store = runtime.store();
    let mut out = String::new();
    for env in &project.environments {
        let mut head = env.name.clone();
        if !env.aliases.is_empty() {
            head.push_str(&format!(" ({})", env.aliases.join(", ")));
        }
        if env.protected {
            head.push_str(" · protected");
        }
        out.push_str(&head);
        out.push('\n');
        if let Some(l) = store.current_lock(&project.name, &env.name, now_ms)? {
            out.push_str(&format!("  🔒 {}\n", locks::describe(&l, now_ms)));
        }
        match store.deployments(&project.name, &env.name, 1)?.pop() {
            Some(d) => {
                let mut commits: Vec<(String, String)> = d
                    .services
                    .iter()
                    .flat_map(|s| s.commits.iter().map(|(r, c)| (r.clone(), c.clone())))
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .collect();
                commits.sort();
                let commits: Vec<String> = commits
                    .iter()
                    .map(|(r, c)| format!("{r} {}", &c[..c.len().min(7)]))
                    .collect();
                out.push_str(&format!(
                    "  deployed by #{}: {} services{}\n",
                    d.job,
                    d.services.len(),
                    if commits.is_empty() {
                        String::new()
                    } else {
                        format!(" · {}", commits.join(", "))
                    }
                ));
            }
            None => out.push_str("  nothing deployed yet\n"),
        }
        if let Some(j) = store.jobs(&project.name, Some(&env.name), 1)?.pop() {
            out.push_str(&format!("  last job: {}\n", job_line(&j, now_ms)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_lines_keeps_the_newest_and_points_at_the_rest() {
        let lines: Vec<String> = (1..=1000).map(|i| format!("line {i}")).collect();
        let out = cut_lines(&lines, 500, "marvin logs dev 7");
        assert!(out.chars().count() <= 500, "{}", out.chars().count());
        assert!(out.starts_with("… "), "{out}");
        assert!(out.contains("marvin logs dev 7"));
        assert!(out.ends_with("line 1000"));
        assert!(!out.contains("line 1\n"));
        let short = vec!["a".to_string(), "b".to_string()];
        assert_eq!(cut_lines(&short, 500, "p"), "a\nb");
    }

    #[test]
    fn raw_text_is_one_clipped_line() {
        assert_eq!(raw_text("a\nb\u{7}c"), "a b c");
        let long = "x".repeat(2_000);
        assert_eq!(raw_text(&long).chars().count(), AUDIT_COMMAND_CHARS);
    }
}
