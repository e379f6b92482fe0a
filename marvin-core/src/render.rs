//! What people read about a job (docs/commands.md), from one model to every
//! front end's format. Pure: data in, text out.
//!
//! A [`Report`] is made from a finished job's [`JobSummary`], or while it
//! runs from a [`Progress`] folded over its events (the time elapsed comes in
//! as a value). Three renderers read it:
//!
//! - [`text`]: plain text for the console (the same text as
//!   [`crate::report::summary_text`] for a finished job);
//! - [`slack`]: mrkdwn fallback text plus Block Kit blocks;
//! - [`telegram_html`]: Telegram's HTML parse mode.
//!
//! Every renderer takes a [`Redactor`]: the report's strings are redacted
//! before anything is cut or escaped (so a cut never leaves half a secret),
//! and the finished output is redacted again, last. Messages longer than
//! [`RenderOptions::limit`] characters lose their oldest log lines first,
//! then their least important parts, and end with a pointer to the full log.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{Value, json};

use crate::redact::Redactor;
use crate::runtime::{EventKind, JobSummary};
use crate::source::Commit;
use crate::store::{JobId, JobState};

/// The default message limit, in characters (Slack and Telegram both allow a little more).
pub const MESSAGE_LIMIT: usize = 3_500;
/// How many log lines a running job's report keeps.
pub const PROGRESS_LOG_LINES: usize = 20;
/// Longest shown `verb args` text.
const MAX_WHAT_CHARS: usize = 200;
/// Longest shown log line.
const MAX_LOG_LINE_CHARS: usize = 300;
/// Longest shown error, commit subject or list line.
const MAX_LINE_CHARS: usize = 1_000;

/// Who, what and where: the parts of a job known before it runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JobHeader {
    /// Job id.
    pub job: JobId,
    /// Environment name.
    pub env: String,
    /// Verb.
    pub verb: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Who asked.
    pub who: String,
}

/// A running job's progress, folded from its events ([`Progress::apply`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// Started (holds the environment's slot).
    pub started: bool,
    /// Waiting for an admin's approval, which lapses at this time (unix millis).
    pub awaiting_approval: Option<i64>,
    /// The current step (`fetch`, `build`, `deploy`, …).
    pub step: Option<String>,
    /// Commits resolved so far.
    pub commits: Vec<Commit>,
    /// Images being built now.
    pub building: Vec<String>,
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
    /// Containers put back after a failure.
    pub rolled_back: Vec<String>,
    /// The last log lines of the current step.
    pub last_lines: VecDeque<String>,
    /// The summary, once the job finished.
    pub finished: Option<JobSummary>,
}

impl Progress {
    /// A job not started yet.
    pub fn new() -> Self {
        Progress::default()
    }

    /// Take one event into account.
    pub fn apply(&mut self, event: &EventKind) {
        match event {
            EventKind::Queued => {}
            EventKind::AwaitingApproval { expires_ms } => {
                self.awaiting_approval = Some(*expires_ms);
            }
            EventKind::Approved { .. } => self.awaiting_approval = None,
            EventKind::Started => self.started = true,
            EventKind::Step { step } => {
                self.started = true;
                self.step = Some(step.clone());
                self.last_lines.clear();
            }
            EventKind::Commits { commits } => self.commits = commits.clone(),
            EventKind::BuildStarted { service } => {
                if !self.building.contains(service) {
                    self.building.push(service.clone());
                }
            }
            EventKind::Built { service, millis } => {
                self.building.retain(|s| s != service);
                self.built.push((service.clone(), *millis));
            }
            EventKind::Reused { service } => self.reused.push(service.clone()),
            EventKind::Container { service, action } => {
                let list = match action.as_str() {
                    "create" => &mut self.created,
                    "recreate" => &mut self.recreated,
                    "remove" => &mut self.removed,
                    "rolled-back" => &mut self.rolled_back,
                    _ => return,
                };
                list.push(service.clone());
            }
            EventKind::Log { line, .. } => {
                if self.last_lines.len() == PROGRESS_LOG_LINES {
                    self.last_lines.pop_front();
                }
                self.last_lines.push_back(line.clone());
            }
            EventKind::Finished { summary, .. } => self.finished = Some((**summary).clone()),
        }
    }
}

/// Everything a report shows, in one model every renderer reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Job id.
    pub job: JobId,
    /// Environment name.
    pub env: String,
    /// Verb.
    pub verb: String,
    /// Arguments.
    pub args: Vec<String>,
    /// Who asked.
    pub who: String,
    /// Where it stands; `Running` and `Queued` are in progress.
    pub state: JobState,
    /// The current step (running) or the failed step (failed).
    pub step: Option<String>,
    /// Time from start to end, or so far.
    pub elapsed_ms: u64,
    /// Commits per repo.
    pub commits: Vec<Commit>,
    /// Images being built now (in progress only).
    pub building: Vec<String>,
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
    /// What went wrong.
    pub error: Option<String>,
    /// The last lines of the failing (or current) step's log.
    pub last_lines: Vec<String>,
}

impl Report {
    /// The report of a job from its summary.
    pub fn from_summary(s: &JobSummary) -> Report {
        let state = s.state.unwrap_or(JobState::Running);
        Report {
            job: s.job,
            env: s.env.clone(),
            verb: s.verb.clone(),
            args: s.args.clone(),
            who: s.who.clone(),
            state,
            step: s.failed_step.clone(),
            elapsed_ms: s.duration_ms,
            commits: s.commits.clone(),
            building: Vec::new(),
            built: s.built.clone(),
            reused: s.reused.clone(),
            created: s.created.clone(),
            recreated: s.recreated.clone(),
            removed: s.removed.clone(),
            unchanged: s.unchanged.clone(),
            rolled_back: s.rolled_back.clone(),
            exit_code: s.exit_code,
            error: s.error.clone(),
            last_lines: s.last_lines.clone(),
        }
    }

    /// The report of a job in progress; once it finished, its summary's report.
    pub fn in_progress(header: &JobHeader, progress: &Progress, elapsed_ms: u64) -> Report {
        if let Some(summary) = &progress.finished {
            return Report::from_summary(summary);
        }
        Report {
            job: header.job,
            env: header.env.clone(),
            verb: header.verb.clone(),
            args: header.args.clone(),
            who: header.who.clone(),
            state: if progress.started {
                JobState::Running
            } else {
                JobState::Queued
            },
            step: match progress.awaiting_approval {
                Some(_) if !progress.started => {
                    Some(format!("waiting for an admin's `approve #{}`", header.job))
                }
                _ => progress.step.clone(),
            },
            elapsed_ms,
            commits: progress.commits.clone(),
            building: progress.building.clone(),
            built: progress.built.clone(),
            reused: progress.reused.clone(),
            created: progress.created.clone(),
            recreated: progress.recreated.clone(),
            removed: progress.removed.clone(),
            unchanged: Vec::new(),
            rolled_back: progress.rolled_back.clone(),
            exit_code: None,
            error: None,
            last_lines: progress.last_lines.iter().cloned().collect(),
        }
    }

    /// Whether the job has ended.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, JobState::Queued | JobState::Running)
    }

    /// A copy with every string redacted.
    pub fn redacted(&self, r: &Redactor) -> Report {
        let s = |x: &String| r.redact(x).into_owned();
        let v = |xs: &Vec<String>| xs.iter().map(s).collect::<Vec<_>>();
        Report {
            job: self.job,
            env: s(&self.env),
            verb: s(&self.verb),
            args: v(&self.args),
            who: s(&self.who),
            state: self.state,
            step: self.step.as_ref().map(s),
            elapsed_ms: self.elapsed_ms,
            commits: self
                .commits
                .iter()
                .map(|c| Commit {
                    repo: s(&c.repo),
                    id: s(&c.id),
                    author: s(&c.author),
                    date: s(&c.date),
                    subject: s(&c.subject),
                })
                .collect(),
            building: v(&self.building),
            built: self.built.iter().map(|(n, ms)| (s(n), *ms)).collect(),
            reused: v(&self.reused),
            created: v(&self.created),
            recreated: v(&self.recreated),
            removed: v(&self.removed),
            unchanged: v(&self.unchanged),
            rolled_back: v(&self.rolled_back),
            exit_code: self.exit_code,
            error: self.error.as_ref().map(s),
            last_lines: v(&self.last_lines),
        }
    }
}

/// How to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Cut messages longer than this many characters.
    pub limit: usize,
    /// Where the full log is: a URL, or a command to show. `None`:
    /// `marvin logs ENV JOB` (no `#`: a shell would take it for a comment).
    pub full_log: Option<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            limit: MESSAGE_LIMIT,
            full_log: None,
        }
    }
}

/// A Slack message: fallback text (notifications) and Block Kit blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct SlackMessage {
    /// mrkdwn text, shown in notifications and where blocks are not.
    pub text: String,
    /// The `blocks` array.
    pub blocks: Value,
}

/// The report as plain text for the console.
pub fn text(report: &Report, opts: &RenderOptions, redactor: &Redactor) -> String {
    let doc = Doc::new(&report.redacted(redactor), opts);
    let out = doc.fit(opts.limit, |pieces| {
        let t = render_text(pieces);
        let n = t.chars().count();
        (t, n)
    });
    redactor.redact(&out).into_owned()
}

/// The report as a Slack message (mrkdwn + blocks).
pub fn slack(report: &Report, opts: &RenderOptions, redactor: &Redactor) -> SlackMessage {
    let doc = Doc::new(&report.redacted(redactor), opts);
    let mut msg = doc.fit(opts.limit, |pieces| {
        let m = render_slack(pieces);
        let texts = block_texts(&m.blocks);
        // Slack refuses a section text over 3,000 characters.
        let size = if texts.iter().any(|t| t.chars().count() > 3_000) {
            usize::MAX
        } else {
            texts.iter().map(|t| t.chars().count()).sum()
        };
        (m, size)
    });
    msg.text = redactor.redact(&msg.text).into_owned();
    redactor.redact_json(&mut msg.blocks);
    msg
}

/// The report in Telegram's HTML parse mode.
pub fn telegram_html(report: &Report, opts: &RenderOptions, redactor: &Redactor) -> String {
    let doc = Doc::new(&report.redacted(redactor), opts);
    let out = doc.fit(opts.limit, |pieces| {
        let t = render_html(pieces);
        let n = t.chars().count();
        (t, n)
    });
    redactor.redact(&out).into_owned()
}

// ---- the document: what is shown, before any format ----

/// The parts of a message, most important first (the log tail aside).
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// `✅ develop build #42 succeeded in 1m32s — who`.
    Headline {
        icon: &'static str,
        env: String,
        what: String,
        job: JobId,
        status: String,
        who: String,
    },
    /// One commit per repo (aligned in text).
    Commits(Vec<Commit>),
    /// `built 1: web (41s) · reused 4 · …`.
    Counts(String),
    /// A plain line: exit code, rollback, error.
    Line(String),
    /// The last log lines, in a code block.
    LogTail(Vec<String>),
    /// Where the full log is, after a cut.
    Pointer(String),
}

struct Doc {
    pieces: Vec<Piece>,
    pointer: String,
}

impl Doc {
    fn new(r: &Report, opts: &RenderOptions) -> Doc {
        let pointer = opts
            .full_log
            .clone()
            .unwrap_or_else(|| format!("marvin logs {} {}", r.env, r.job));
        let mut pieces = vec![headline(r)];
        if !r.commits.is_empty() {
            pieces.push(Piece::Commits(
                r.commits
                    .iter()
                    .map(|c| Commit {
                        subject: clip(&c.subject, MAX_LINE_CHARS),
                        ..c.clone()
                    })
                    .collect(),
            ));
        }
        if let Some(counts) = counts(r) {
            pieces.push(Piece::Counts(clip(&counts, MAX_LINE_CHARS)));
        }
        if let Some(code) = r.exit_code {
            pieces.push(Piece::Line(format!("exit code {code}")));
        }
        if !r.rolled_back.is_empty() {
            pieces.push(Piece::Line(clip(
                &format!("put back in service: {}", r.rolled_back.join(", ")),
                MAX_LINE_CHARS,
            )));
        }
        if let Some(e) = &r.error {
            pieces.push(Piece::Line(clip(e, MAX_LINE_CHARS)));
        }
        let show_lines = r.state == JobState::Failed || !r.is_final();
        if show_lines && !r.last_lines.is_empty() {
            pieces.push(Piece::LogTail(
                r.last_lines
                    .iter()
                    .map(|l| clip(l, MAX_LOG_LINE_CHARS))
                    .collect(),
            ));
        }
        Doc { pieces, pointer }
    }

    /// Render whole if it fits; else drop the oldest log lines, then the
    /// last pieces, adding the pointer to the full log.
    fn fit<T>(&self, limit: usize, render: impl Fn(&[Piece]) -> (T, usize)) -> T {
        let (whole, size) = render(&self.pieces);
        if size <= limit {
            return whole;
        }
        let pointer = Piece::Pointer(self.pointer.clone());
        let mut pieces = self.pieces.clone();
        if let Some(Piece::LogTail(lines)) = pieces.last().cloned() {
            for keep in (1..lines.len()).rev() {
                let mut tried = pieces.clone();
                tried.pop();
                tried.push(Piece::LogTail(lines[lines.len() - keep..].to_vec()));
                tried.push(pointer.clone());
                let (out, size) = render(&tried);
                if size <= limit {
                    return out;
                }
            }
            pieces.pop();
        }
        loop {
            let mut tried = pieces.clone();
            tried.push(pointer.clone());
            let (out, size) = render(&tried);
            if size <= limit || pieces.len() <= 1 {
                return out;
            }
            pieces.pop();
        }
    }
}

fn headline(r: &Report) -> Piece {
    let (icon, word) = match r.state {
        JobState::Succeeded => ("✅", "succeeded"),
        JobState::Failed => ("❌", "failed"),
        JobState::Cancelled => ("⏹", "was cancelled"),
        JobState::Interrupted => ("⚠️", "was interrupted"),
        JobState::Queued => ("⏳", "is queued"),
        JobState::Running => ("⏳", "is running"),
    };
    let elapsed = crate::duration::format(Duration::from_millis(r.elapsed_ms));
    let status = match (r.state, &r.step) {
        (JobState::Failed, Some(step)) => format!("{word} in {elapsed} at {step}"),
        (JobState::Running | JobState::Queued, Some(step)) => {
            format!("{word}: {step}, {elapsed} so far")
        }
        (JobState::Running | JobState::Queued, _) => format!("{word}, {elapsed} so far"),
        _ => format!("{word} in {elapsed}"),
    };
    let what = if r.args.is_empty() {
        r.verb.clone()
    } else {
        format!("{} {}", r.verb, r.args.join(" "))
    };
    Piece::Headline {
        icon,
        env: r.env.clone(),
        what: clip(&what, MAX_WHAT_CHARS),
        job: r.job,
        status,
        who: r.who.clone(),
    }
}

/// The counts line: all of it when final (as docs/commands.md shows), what happened so far in progress.
fn counts(r: &Report) -> Option<String> {
    if r.verb == "run" {
        return None;
    }
    let named =
        |word: &str, names: &[String]| format!("{word} {}: {}", names.len(), names.join(", "));
    let built: Vec<String> = r
        .built
        .iter()
        .map(|(svc, ms)| {
            format!(
                "{svc} ({})",
                crate::duration::format(Duration::from_millis(*ms))
            )
        })
        .collect();
    let mut parts = Vec::new();
    if r.is_final() {
        parts.push(if built.is_empty() {
            "built 0".to_string()
        } else {
            named("built", &built)
        });
        parts.push(format!("reused {}", r.reused.len()));
        if !r.created.is_empty() {
            parts.push(named("created", &r.created));
        }
        parts.push(if r.recreated.is_empty() {
            "recreated 0".to_string()
        } else {
            named("recreated", &r.recreated)
        });
        if !r.removed.is_empty() {
            parts.push(named("removed", &r.removed));
        }
        parts.push(format!("unchanged {}", r.unchanged.len()));
    } else {
        if !built.is_empty() {
            parts.push(named("built", &built));
        }
        if !r.building.is_empty() {
            parts.push(format!("building {}", r.building.join(", ")));
        }
        if !r.reused.is_empty() {
            parts.push(format!("reused {}", r.reused.len()));
        }
        for (word, names) in [
            ("created", &r.created),
            ("recreated", &r.recreated),
            ("removed", &r.removed),
        ] {
            if !names.is_empty() {
                parts.push(named(word, names));
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

/// At most `max` characters, ending in `…` when cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

fn short_id(c: &Commit) -> &str {
    // On a char boundary: never panic on an id that is not hex.
    c.id.char_indices()
        .nth(7)
        .map_or(&c.id[..], |(i, _)| &c.id[..i])
}

fn commit_date(c: &Commit) -> String {
    c.date.get(..16).unwrap_or(&c.date).replace('T', " ")
}

fn is_url(pointer: &str) -> bool {
    pointer.starts_with("https://") || pointer.starts_with("http://")
}

// ---- plain text ----

fn render_text(pieces: &[Piece]) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Headline {
                icon,
                env,
                what,
                job,
                status,
                who,
            } => out.push_str(&format!("{icon} {env} {what} #{job} {status} — {who}\n")),
            Piece::Commits(commits) => {
                for line in crate::report::commit_lines(commits) {
                    out.push_str(&format!("   {line}\n"));
                }
            }
            Piece::Counts(c) | Piece::Line(c) => out.push_str(&format!("   {c}\n")),
            Piece::LogTail(lines) => {
                out.push_str("   last lines:\n");
                for l in lines {
                    out.push_str(&format!("     {l}\n"));
                }
            }
            Piece::Pointer(p) => out.push_str(&format!("   … cut; full log: {p}\n")),
        }
    }
    out
}

// ---- Slack ----

/// Slack's mrkdwn escaping: only `&`, `<` and `>` are special.
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Inline code in mrkdwn; backticks inside would end it early.
fn mrkdwn_code(s: &str) -> String {
    format!("`{}`", mrkdwn(&s.replace('`', "'")))
}

fn render_slack(pieces: &[Piece]) -> SlackMessage {
    let mut text = String::new();
    let mut blocks = Vec::new();
    for p in pieces {
        match p {
            Piece::Headline {
                icon,
                env,
                what,
                job,
                status,
                who,
            } => {
                let line = format!(
                    "{icon} *{}* {} #{job} {} — {}",
                    mrkdwn(env),
                    mrkdwn(what),
                    mrkdwn(status),
                    mrkdwn(who)
                );
                text = line.clone();
                blocks.push(section(&line));
            }
            Piece::Commits(commits) => {
                let lines: Vec<String> = commits
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {} {} {}  {}",
                            mrkdwn_code(&c.repo),
                            mrkdwn_code(short_id(c)),
                            mrkdwn(&c.author),
                            mrkdwn(&commit_date(c)),
                            mrkdwn(&c.subject)
                        )
                    })
                    .collect();
                blocks.push(section(&lines.join("\n")));
            }
            Piece::Counts(c) => blocks.push(json!({
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": mrkdwn(c)}]
            })),
            Piece::Line(l) => blocks.push(section(&mrkdwn(l))),
            Piece::LogTail(lines) => {
                // A code block cannot hold three backticks; nothing else needs care.
                let body = mrkdwn(&lines.join("\n")).replace("```", "'''");
                blocks.push(section(&format!("*last lines*\n```\n{body}\n```")));
            }
            Piece::Pointer(p) => {
                let where_ = if is_url(p) {
                    format!("<{}|full log>", mrkdwn(&p.replace('|', "%7C")))
                } else {
                    mrkdwn_code(p)
                };
                blocks.push(json!({
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": format!("… cut; {where_}")}]
                }));
            }
        }
    }
    SlackMessage {
        text,
        blocks: Value::Array(blocks),
    }
}

fn section(mrkdwn_text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn_text}})
}

/// Every text shown in a blocks array.
fn block_texts(blocks: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for b in blocks.as_array().into_iter().flatten() {
        if let Some(t) = b.pointer("/text/text").and_then(Value::as_str) {
            out.push(t.to_string());
        }
        for e in b
            .get("elements")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = e.get("text").and_then(Value::as_str) {
                out.push(t.to_string());
            }
        }
    }
    out
}

/// An immediate answer ([`crate::chat::Answer`]) as a Slack message. Its
/// text's backticks stay inline code; its block is a code block; each
/// identity in `mentions` is written as Slack writes people (`<@U123>` for
/// `slack:U123`, the identity in code otherwise) in front of the text.
pub fn answer_slack(answer: &crate::chat::Answer, redactor: &Redactor) -> SlackMessage {
    let mut text = String::new();
    for m in &answer.mentions {
        match m.strip_prefix("slack:") {
            Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric()) => {
                text.push_str(&format!("<@{id}> "))
            }
            _ => text.push_str(&format!("{} ", mrkdwn_code(m))),
        }
    }
    text.push_str(&mrkdwn(&redactor.redact(&answer.text)));
    let mut full = text.clone();
    if let Some(block) = &answer.block {
        let body = clip(&redactor.redact(block), 2_800).replace("```", "'''");
        full.push_str(&format!("\n```\n{}\n```", mrkdwn(body.trim_end())));
    }
    let full = redactor.redact(&full).into_owned();
    SlackMessage {
        text: redactor.redact(&text).into_owned(),
        blocks: Value::Array(vec![section(&full)]),
    }
}

// ---- Telegram ----

/// An immediate answer ([`crate::chat::Answer`]) in Telegram's HTML parse
/// mode: `code` in backticks becomes `<code>`, the block a `<pre>`, and
/// each `telegram:ID` in `mentions` a link to that user.
pub fn answer_telegram_html(answer: &crate::chat::Answer, redactor: &Redactor) -> String {
    let mut out = String::new();
    for m in &answer.mentions {
        match m.strip_prefix("telegram:") {
            Some(id) if !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()) => {
                out.push_str(&format!("<a href=\"tg://user?id={id}\">{}</a> ", html(m)))
            }
            _ => out.push_str(&format!("<code>{}</code> ", html(m))),
        }
    }
    // Backtick pairs become <code>; an unpaired one stays as it is.
    let text = redactor.redact(&answer.text);
    let parts: Vec<&str> = text.split('`').collect();
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 1 && i + 1 < parts.len() {
            out.push_str(&format!("<code>{}</code>", html(part)));
        } else {
            if i % 2 == 1 {
                out.push('`');
            }
            out.push_str(&html(part));
        }
    }
    if let Some(block) = &answer.block {
        let body = clip(&redactor.redact(block), 3_000);
        out.push_str(&format!("\n<pre>{}</pre>", html(body.trim_end())));
    }
    redactor.redact(&out).into_owned()
}

/// Telegram HTML escaping (`"` too, for attribute values).
fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render_html(pieces: &[Piece]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for p in pieces {
        match p {
            Piece::Headline {
                icon,
                env,
                what,
                job,
                status,
                who,
            } => lines.push(format!(
                "{icon} <b>{}</b> {} #{job} {} — {}",
                html(env),
                html(what),
                html(status),
                html(who)
            )),
            Piece::Commits(commits) => lines.extend(commits.iter().map(|c| {
                format!(
                    "<code>{}</code> <code>{}</code> {} {}  {}",
                    html(&c.repo),
                    html(short_id(c)),
                    html(&c.author),
                    html(&commit_date(c)),
                    html(&c.subject)
                )
            })),
            Piece::Counts(c) | Piece::Line(c) => lines.push(html(c)),
            Piece::LogTail(log) => lines.push(format!(
                "<b>last lines</b>\n<pre>{}</pre>",
                html(&log.join("\n"))
            )),
            Piece::Pointer(p) => lines.push(if is_url(p) {
                format!("<i>… cut; <a href=\"{}\">full log</a></i>", html(p))
            } else {
                format!("<i>… cut; full log: <code>{}</code></i>", html(p))
            }),
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::summary_text;

    fn commits() -> Vec<Commit> {
        vec![
            Commit {
                repo: "CloudMatrix".into(),
                id: "0379bafdeadbeef".into(),
                author: "黄鸿".into(),
                date: "2017-05-05T10:27:00+08:00".into(),
                subject: "fix login".into(),
            },
            Commit {
                repo: "CloudMatrixFE".into(),
                id: "978d409cafe".into(),
                author: "唐承敏".into(),
                date: "2017-05-05T09:55:00+08:00".into(),
                subject: "new <header> & footer".into(),
            },
        ]
    }

    fn succeeded() -> JobSummary {
        JobSummary {
            job: 42,
            project: "cloudmatrix".into(),
            env: "develop".into(),
            verb: "build".into(),
            who: "@huanghong".into(),
            state: Some(JobState::Succeeded),
            duration_ms: 92_000,
            commits: commits(),
            built: vec![("systemManagementServer".into(), 41_000)],
            reused: (0..16).map(|i| format!("svc{i}")).collect(),
            recreated: vec!["systemManagementServer".into()],
            unchanged: (0..16).map(|i| format!("svc{i}")).collect(),
            ..JobSummary::default()
        }
    }

    fn failed() -> JobSummary {
        JobSummary {
            state: Some(JobState::Failed),
            duration_ms: 12_000,
            built: vec![],
            reused: vec![],
            recreated: vec![],
            unchanged: vec![],
            failed_step: Some("build".into()),
            error: Some("image web failed to build".into()),
            last_lines: vec![
                "Step 3/4 : RUN make".into(),
                "make: *** [all] Error 2".into(),
            ],
            ..succeeded()
        }
    }

    fn opts() -> RenderOptions {
        RenderOptions::default()
    }

    fn none() -> Redactor {
        Redactor::none()
    }

    #[test]
    fn console_text_is_the_summary_text_for_finished_jobs() {
        let run = JobSummary {
            verb: "run".into(),
            args: vec!["migrate".into(), "--to".into(), "3".into()],
            exit_code: Some(1),
            state: Some(JobState::Failed),
            failed_step: Some("task".into()),
            last_lines: vec!["boom".into()],
            ..succeeded()
        };
        let rolled = JobSummary {
            rolled_back: vec!["web".into()],
            created: vec!["new".into()],
            removed: vec!["old".into()],
            ..failed()
        };
        let cancelled = JobSummary {
            state: Some(JobState::Cancelled),
            ..succeeded()
        };
        let interrupted = JobSummary {
            state: Some(JobState::Interrupted),
            commits: vec![],
            ..succeeded()
        };
        for s in [succeeded(), failed(), run, rolled, cancelled, interrupted] {
            assert_eq!(
                text(&Report::from_summary(&s), &opts(), &none()),
                summary_text(&s),
                "{s:?}"
            );
        }
    }

    #[test]
    fn success_reads_like_the_design() {
        assert_eq!(
            text(&Report::from_summary(&succeeded()), &opts(), &none()),
            "✅ develop build #42 succeeded in 1m32s — @huanghong\n   \
             CloudMatrix    0379baf  黄鸿 2017-05-05 10:27  fix login\n   \
             CloudMatrixFE  978d409  唐承敏 2017-05-05 09:55  new <header> & footer\n   \
             built 1: systemManagementServer (41s) · reused 16 · recreated 1: systemManagementServer · unchanged 16\n"
        );
    }

    #[test]
    fn slack_message_escapes_mrkdwn_and_has_blocks() {
        let m = slack(&Report::from_summary(&succeeded()), &opts(), &none());
        assert_eq!(
            m.text,
            "✅ *develop* build #42 succeeded in 1m32s — @huanghong"
        );
        assert_eq!(
            m.blocks,
            json!([
                {"type": "section", "text": {"type": "mrkdwn", "text": "✅ *develop* build #42 succeeded in 1m32s — @huanghong"}},
                {"type": "section", "text": {"type": "mrkdwn", "text":
                    "`CloudMatrix` `0379baf` 黄鸿 2017-05-05 10:27  fix login\n\
                     `CloudMatrixFE` `978d409` 唐承敏 2017-05-05 09:55  new &lt;header&gt; &amp; footer"}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text":
                    "built 1: systemManagementServer (41s) · reused 16 · recreated 1: systemManagementServer · unchanged 16"}]}
            ])
        );
    }

    #[test]
    fn telegram_html_escapes_and_formats() {
        assert_eq!(
            telegram_html(&Report::from_summary(&succeeded()), &opts(), &none()),
            "✅ <b>develop</b> build #42 succeeded in 1m32s — @huanghong\n\
             <code>CloudMatrix</code> <code>0379baf</code> 黄鸿 2017-05-05 10:27  fix login\n\
             <code>CloudMatrixFE</code> <code>978d409</code> 唐承敏 2017-05-05 09:55  new &lt;header&gt; &amp; footer\n\
             built 1: systemManagementServer (41s) · reused 16 · recreated 1: systemManagementServer · unchanged 16"
        );
    }

    #[test]
    fn failure_names_the_step_and_shows_the_last_lines_in_a_code_block() {
        let r = Report::from_summary(&failed());
        assert_eq!(
            text(&r, &opts(), &none()),
            "❌ develop build #42 failed in 12s at build — @huanghong\n   \
             CloudMatrix    0379baf  黄鸿 2017-05-05 10:27  fix login\n   \
             CloudMatrixFE  978d409  唐承敏 2017-05-05 09:55  new <header> & footer\n   \
             built 0 · reused 0 · recreated 0 · unchanged 0\n   \
             image web failed to build\n   \
             last lines:\n     \
             Step 3/4 : RUN make\n     \
             make: *** [all] Error 2\n"
        );
        let html = telegram_html(&r, &opts(), &none());
        assert!(
            html.starts_with("❌ <b>develop</b> build #42 failed in 12s at build — @huanghong\n"),
            "{html}"
        );
        assert!(
            html.ends_with("image web failed to build\n<b>last lines</b>\n<pre>Step 3/4 : RUN make\nmake: *** [all] Error 2</pre>"),
            "{html}"
        );
        let blocks = slack(&r, &opts(), &none()).blocks;
        assert_eq!(
            blocks[blocks.as_array().map_or(0, Vec::len) - 1],
            json!({"type": "section", "text": {"type": "mrkdwn", "text":
                "*last lines*\n```\nStep 3/4 : RUN make\nmake: *** [all] Error 2\n```"}})
        );
    }

    #[test]
    fn progress_folds_events_into_a_running_report() {
        let header = JobHeader {
            job: 7,
            env: "develop".into(),
            verb: "build".into(),
            args: vec![],
            who: "local:alice".into(),
        };
        let mut p = Progress::new();
        assert_eq!(
            text(&Report::in_progress(&header, &p, 2_000), &opts(), &none()),
            "⏳ develop build #7 is queued, 2s so far — local:alice\n"
        );
        for e in [
            EventKind::Started,
            EventKind::Step {
                step: "fetch".into(),
            },
            EventKind::Commits {
                commits: commits()[..1].to_vec(),
            },
            EventKind::Step {
                step: "build".into(),
            },
            EventKind::BuildStarted {
                service: "web".into(),
            },
            EventKind::BuildStarted {
                service: "api".into(),
            },
            EventKind::Reused {
                service: "db".into(),
            },
            EventKind::Built {
                service: "web".into(),
                millis: 3_000,
            },
            EventKind::Log {
                stream: "build:api".into(),
                line: "Step 1/2 : FROM base".into(),
            },
        ] {
            p.apply(&e);
        }
        assert_eq!(
            text(&Report::in_progress(&header, &p, 12_000), &opts(), &none()),
            "⏳ develop build #7 is running: build, 12s so far — local:alice\n   \
             CloudMatrix  0379baf  黄鸿 2017-05-05 10:27  fix login\n   \
             built 1: web (3s) · building api · reused 1\n   \
             last lines:\n     \
             Step 1/2 : FROM base\n"
        );
        p.apply(&EventKind::Step {
            step: "deploy".into(),
        });
        p.apply(&EventKind::Container {
            service: "web".into(),
            action: "recreate".into(),
        });
        let r = Report::in_progress(&header, &p, 15_000);
        assert!(r.last_lines.is_empty(), "a new step starts a new log tail");
        assert_eq!(r.recreated, vec!["web".to_string()]);
        let done = JobSummary {
            job: 7,
            ..succeeded()
        };
        p.apply(&EventKind::Finished {
            state: JobState::Succeeded,
            summary: Box::new(done.clone()),
        });
        assert_eq!(
            Report::in_progress(&header, &p, 99_000),
            Report::from_summary(&done)
        );
    }

    #[test]
    fn progress_keeps_only_the_last_log_lines() {
        let mut p = Progress::new();
        for i in 0..50 {
            p.apply(&EventKind::Log {
                stream: "deploy".into(),
                line: format!("line {i}"),
            });
        }
        assert_eq!(p.last_lines.len(), PROGRESS_LOG_LINES);
        assert_eq!(p.last_lines.front().map(String::as_str), Some("line 30"));
    }

    fn long_failure() -> JobSummary {
        JobSummary {
            last_lines: (0..100)
                .map(|i| format!("log line number {i:03} {}", "x".repeat(40)))
                .collect(),
            ..failed()
        }
    }

    #[test]
    fn long_messages_are_cut_keeping_the_newest_lines_and_point_to_the_full_log() {
        let r = Report::from_summary(&long_failure());
        let t = text(&r, &opts(), &none());
        assert!(t.chars().count() <= MESSAGE_LIMIT, "{}", t.chars().count());
        assert!(t.contains("log line number 099"));
        assert!(!t.contains("log line number 000"));
        assert!(t.starts_with("❌ develop build #42 failed in 12s at build"));
        assert!(
            t.ends_with("   … cut; full log: marvin logs develop 42\n"),
            "{t}"
        );

        let url = RenderOptions {
            full_log: Some("https://marvin.example/jobs/42?a=1&b=2".into()),
            ..opts()
        };
        let html = telegram_html(&r, &url, &none());
        assert!(html.chars().count() <= MESSAGE_LIMIT);
        assert!(html.ends_with("</pre>\n<i>… cut; <a href=\"https://marvin.example/jobs/42?a=1&amp;b=2\">full log</a></i>"), "{html}");
        assert!(html.contains("log line number 099"));

        let m = slack(&r, &url, &none());
        let size: usize = block_texts(&m.blocks)
            .iter()
            .map(|t| t.chars().count())
            .sum();
        assert!(size <= MESSAGE_LIMIT, "{size}");
        assert_eq!(
            m.blocks.as_array().and_then(|b| b.last()).cloned(),
            Some(
                json!({"type": "context", "elements": [{"type": "mrkdwn", "text":
                "… cut; <https://marvin.example/jobs/42?a=1&amp;b=2|full log>"}]})
            )
        );
    }

    #[test]
    fn a_huge_error_is_clipped_and_nothing_exceeds_the_limit() {
        let s = JobSummary {
            error: Some("e".repeat(20_000)),
            args: vec!["a".repeat(5_000)],
            built: (0..500)
                .map(|i| (format!("service-number-{i}"), 1_000))
                .collect(),
            ..long_failure()
        };
        let r = Report::from_summary(&s);
        for limit in [600, 1_000, MESSAGE_LIMIT] {
            let o = RenderOptions { limit, ..opts() };
            let t = text(&r, &o, &none());
            assert!(t.chars().count() <= limit, "{limit}: {t}");
            assert!(
                t.starts_with("❌ develop build aaaa"),
                "the headline stays: {t}"
            );
            assert!(
                t.ends_with("   … cut; full log: marvin logs develop 42\n"),
                "{t}"
            );
            let h = telegram_html(&r, &o, &none());
            assert!(h.chars().count() <= limit, "{limit}: {h}");
        }
    }

    #[test]
    fn secrets_appear_in_no_format_even_escaped_or_cut() {
        let secret = "s3cr<t&pw";
        let mut s = long_failure();
        s.error = Some(format!("login failed with password {secret}"));
        s.args = vec!["--password".into(), secret.into()];
        s.last_lines.push(format!("DB_PASSWORD={secret}"));
        s.commits[0].subject = format!("oops, committed {secret}");
        let r = Report::from_summary(&s);
        let red = Redactor::new([secret.to_string()]);
        let escaped = ["s3cr&lt;t&amp;pw", "s3cr", "t&pw"];
        for limit in [300, 1_000, MESSAGE_LIMIT, 100_000] {
            let o = RenderOptions { limit, ..opts() };
            let t = text(&r, &o, &red);
            let h = telegram_html(&r, &o, &red);
            let m = slack(&r, &o, &red);
            let all = format!("{t}\n{h}\n{}\n{}", m.text, m.blocks);
            for leak in escaped {
                assert!(!all.contains(leak), "{leak} leaked at limit {limit}: {all}");
            }
            if limit == 100_000 {
                assert!(t.contains("DB_PASSWORD=***"), "{t}");
                assert!(h.contains("password ***"), "{h}");
            }
        }
    }
    fn answer(text: &str, block: Option<&str>, mentions: &[&str]) -> crate::chat::Answer {
        crate::chat::Answer {
            tone: crate::chat::Tone::Info,
            text: text.into(),
            block: block.map(str::to_owned),
            mentions: mentions.iter().map(|m| m.to_string()).collect(),
            data: None,
        }
    }

    #[test]
    fn answers_mention_people_as_each_chat_does_and_escape_the_rest() {
        let a = answer(
            "🔒 dev taken over, see `marvin logs dev 4` <now> & then",
            Some("a < b\n``` fence"),
            &["slack:U123", "telegram:42", "local:<x>"],
        );
        let s = answer_slack(&a, &none());
        assert!(
            s.text
                .starts_with("<@U123> `telegram:42` `local:&lt;x&gt;` "),
            "{}",
            s.text
        );
        assert!(s.text.contains("&lt;now&gt; &amp; then"), "{}", s.text);
        let body = s.blocks[0]["text"]["text"].as_str().unwrap();
        assert!(body.contains("```\na &lt; b\n''' fence\n```"), "{body}");

        let t = answer_telegram_html(&a, &none());
        assert!(
            t.starts_with("<code>slack:U123</code> <a href=\"tg://user?id=42\">telegram:42</a> <code>local:&lt;x&gt;</code> "),
            "{t}"
        );
        assert!(
            t.contains("<code>marvin logs dev 4</code> &lt;now&gt; &amp; then"),
            "{t}"
        );
        assert!(t.ends_with("<pre>a &lt; b\n``` fence</pre>"), "{t}");
        // An unpaired backtick stays as typed.
        let odd = answer_telegram_html(&answer("it's `open", None, &[]), &none());
        assert_eq!(odd, "it's `open");
    }

    #[test]
    fn answers_are_redacted() {
        let r = Redactor::new(["hunter2-secret".to_string()]);
        let a = answer("lock: hunter2-secret", Some("x hunter2-secret"), &[]);
        assert!(!answer_slack(&a, &r).blocks.to_string().contains("hunter2"));
        assert!(!answer_slack(&a, &r).text.contains("hunter2"));
        assert!(!answer_telegram_html(&a, &r).contains("hunter2"));
        assert!(answer_telegram_html(&a, &r).contains("***"));
    }
}
