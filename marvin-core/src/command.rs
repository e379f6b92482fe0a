//! The command grammar every front end speaks (docs/commands.md):
//!
//! ```text
//! @marvin [ENV] VERB [ARGS] [--flags]
//! ```
//!
//! Pure: text and what the caller knows (project, the environments bound to
//! the channel, the services when known) in, a typed [`Command`] or a
//! [`ParseError`] whose `Display` is the message to show out. Arguments are
//! data: the tokeniser understands quotes and backslashes and expands nothing.
//!
//! One table, [`VERBS`], defines every verb; the parser and [`help_text`]
//! both read it, so `help` can never disagree with what is accepted.
//!
//! ```
//! use marvin_core::command::{parse, Context, Verb};
//! use marvin_core::config::Project;
//!
//! let project = Project::parse(
//!     "project: shop\nrepos:\n  app: {url: /srv/app.git}\nenvironments:\n  develop: {aliases: [dev]}\n",
//!     "marvin.yml",
//! ).unwrap();
//! let cmd = parse("@marvin dev build --service web", &Context::new(&project)).unwrap();
//! assert_eq!(cmd.env.as_deref(), Some("develop"));
//! assert_eq!(cmd.verb, Verb::Build { services: vec!["web".into()], force: false });
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::Project;
use crate::runtime::JobKind;
use crate::store::JobId;
use crate::suggest;

/// Longer input is refused before it is looked at.
pub const MAX_COMMAND_CHARS: usize = 2_000;
/// The longest lock anyone may take.
pub const MAX_LOCK: Duration = Duration::from_secs(30 * 86_400);
/// The most log lines `logs --tail` returns.
pub const MAX_TAIL: usize = 10_000;
/// The most jobs `history N` lists.
pub const MAX_HISTORY: usize = 1_000;
/// The longest service name accepted (compose allows long names; this only stops junk).
const MAX_NAME_CHARS: usize = 128;

/// Whether a verb is about one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvUse {
    /// It needs one: given, or implied by the channel.
    Required,
    /// It takes one when given or implied, and works without.
    Optional,
    /// It is not about an environment; one given is ignored.
    None,
}

/// How a positional argument takes the words after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// One word.
    One,
    /// Every remaining word, each kept as it is (flags included): `run TASK [ARG...]`.
    Words,
    /// Every remaining word joined by spaces into one text: `lock [REASON]`.
    Text,
}

/// A positional argument of a verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgDef {
    /// Its name in usage lines: `TASK`, `SERVICE|JOB`.
    pub name: &'static str,
    /// May be left out.
    pub optional: bool,
    /// How many words it takes.
    pub rest: Rest,
    /// What it means, for `help VERB`.
    pub summary: &'static str,
}

/// A `--flag` of a verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagDef {
    /// Its name without the dashes.
    pub name: &'static str,
    /// The placeholder of its value (`S`, `N`), or `None` for a switch.
    pub value: Option<&'static str>,
    /// May be given more than once.
    pub repeated: bool,
    /// What it does, for `help VERB`.
    pub summary: &'static str,
}

/// One verb of the grammar: the single definition the parser and `help` share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerbDef {
    /// The verb as typed.
    pub name: &'static str,
    /// Positional arguments, in order.
    pub args: &'static [ArgDef],
    /// Flags, in any order.
    pub flags: &'static [FlagDef],
    /// One line saying what it does.
    pub summary: &'static str,
    /// Whether it is about one environment.
    pub env: EnvUse,
    /// Whether it changes anything (and so needs more than the viewer role).
    pub changes: bool,
}

const JOB_ARG: &str = "JOB";

/// Every verb, in the order `help` lists them.
pub const VERBS: &[VerbDef] = &[
    VerbDef {
        name: "build",
        args: &[],
        flags: &[
            FlagDef {
                name: "service",
                value: Some("S"),
                repeated: true,
                summary: "only this service (repeatable)",
            },
            FlagDef {
                name: "force",
                value: None,
                repeated: false,
                summary: "rebuild images even when nothing changed",
            },
        ],
        summary: "fetch, build what changed, deploy what changed",
        env: EnvUse::Required,
        changes: true,
    },
    VerbDef {
        name: "plan",
        args: &[],
        flags: &[],
        summary: "show what `build` would do, without doing it",
        env: EnvUse::Required,
        changes: false,
    },
    VerbDef {
        name: "status",
        args: &[],
        flags: &[],
        summary: "what runs in the environment, its lock and its last job",
        env: EnvUse::Required,
        changes: false,
    },
    VerbDef {
        name: "logs",
        args: &[ArgDef {
            name: "SERVICE|JOB",
            optional: true,
            rest: Rest::One,
            summary: "a service's container, or a job (`#42`); default: the last job",
        }],
        flags: &[FlagDef {
            name: "tail",
            value: Some("N"),
            repeated: false,
            summary: "only the last N lines",
        }],
        summary: "the log of a job or of a service",
        env: EnvUse::Optional,
        changes: false,
    },
    VerbDef {
        name: "run",
        args: &[
            ArgDef {
                name: "TASK",
                optional: false,
                rest: Rest::One,
                summary: "a task from marvin.yml",
            },
            ArgDef {
                name: "ARG",
                optional: true,
                rest: Rest::Words,
                summary: "appended to the task's command as they are",
            },
        ],
        flags: &[],
        summary: "run a task (a one-off container)",
        env: EnvUse::Required,
        changes: true,
    },
    VerbDef {
        name: "lock",
        args: &[
            ArgDef {
                name: "DURATION",
                optional: true,
                rest: Rest::One,
                summary: "how long, e.g. `30m`, `2h`, `1d` (default 2h)",
            },
            ArgDef {
                name: "REASON",
                optional: true,
                rest: Rest::Text,
                summary: "why, shown to whoever is refused",
            },
        ],
        flags: &[FlagDef {
            name: "force",
            value: None,
            repeated: false,
            summary: "take over someone else's lock (admins)",
        }],
        summary: "reserve the environment: only you can build it",
        env: EnvUse::Required,
        changes: true,
    },
    VerbDef {
        name: "unlock",
        args: &[],
        flags: &[FlagDef {
            name: "force",
            value: None,
            repeated: false,
            summary: "release someone else's lock (admins)",
        }],
        summary: "release the environment's lock",
        env: EnvUse::Required,
        changes: true,
    },
    VerbDef {
        name: "history",
        args: &[ArgDef {
            name: "N",
            optional: true,
            rest: Rest::One,
            summary: "how many jobs (default 10)",
        }],
        flags: &[],
        summary: "the last jobs",
        env: EnvUse::Optional,
        changes: false,
    },
    VerbDef {
        name: "rollback",
        args: &[ArgDef {
            name: JOB_ARG,
            optional: true,
            rest: Rest::One,
            summary: "the job whose deployment to restore; default: the one before the current",
        }],
        flags: &[],
        summary: "redeploy an earlier successful deployment",
        env: EnvUse::Required,
        changes: true,
    },
    VerbDef {
        name: "cancel",
        args: &[ArgDef {
            name: JOB_ARG,
            optional: true,
            rest: Rest::One,
            summary: "the job; default: the environment's running job",
        }],
        flags: &[],
        summary: "stop a running or queued job",
        env: EnvUse::Optional,
        changes: true,
    },
    VerbDef {
        name: "envs",
        args: &[],
        flags: &[],
        summary: "every environment: what is deployed, locks, running jobs",
        env: EnvUse::None,
        changes: false,
    },
    VerbDef {
        name: "approve",
        args: &[ArgDef {
            name: JOB_ARG,
            optional: false,
            rest: Rest::One,
            summary: "the job waiting for approval",
        }],
        flags: &[],
        summary: "let a job on a protected environment go ahead (admins)",
        env: EnvUse::None,
        changes: true,
    },
    VerbDef {
        name: "whoami",
        args: &[],
        flags: &[],
        summary: "who Marvin thinks you are, and your role",
        env: EnvUse::None,
        changes: false,
    },
    VerbDef {
        name: "help",
        args: &[ArgDef {
            name: "VERB",
            optional: true,
            rest: Rest::One,
            summary: "a command to explain",
        }],
        flags: &[],
        summary: "the commands, or one of them in detail",
        env: EnvUse::None,
        changes: false,
    },
];

/// The definition of a verb by name.
pub fn verb_def(name: &str) -> Option<&'static VerbDef> {
    VERBS.iter().find(|v| v.name == name)
}

impl VerbDef {
    /// The usage line: `build [--service S]... [--force]`.
    pub fn usage(&self) -> String {
        let mut out = self.name.to_string();
        for a in self.args {
            let shown = match a.rest {
                Rest::Words => format!("{}...", a.name),
                Rest::One | Rest::Text => a.name.to_string(),
            };
            if a.optional {
                let _ = write!(out, " [{shown}]");
            } else {
                let _ = write!(out, " {shown}");
            }
        }
        for f in self.flags {
            let inner = match f.value {
                Some(v) => format!("--{} {v}", f.name),
                None => format!("--{}", f.name),
            };
            let _ = write!(out, " [{inner}]{}", if f.repeated { "..." } else { "" });
        }
        out
    }
}

/// Where a `logs` command looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// A job's log.
    Job(JobId),
    /// A service's container log.
    Service(String),
}

/// A verb with its typed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verb {
    /// Fetch, build what changed, deploy what changed.
    Build {
        /// Only these services (empty: all).
        services: Vec<String>,
        /// Rebuild even when nothing changed.
        force: bool,
    },
    /// Show the plan.
    Plan,
    /// What runs, the lock, the last job.
    Status,
    /// A job's or a service's log.
    Logs {
        /// What to show; `None`: the last job.
        target: Option<LogTarget>,
        /// Only the last N lines.
        tail: Option<usize>,
    },
    /// Run a task.
    Run {
        /// The task's name (known to the project).
        task: String,
        /// Appended to its command.
        args: Vec<String>,
    },
    /// Reserve the environment.
    Lock {
        /// How long; `None`: the default.
        duration: Option<Duration>,
        /// Why; empty when none was given.
        reason: String,
        /// Take over someone else's lock.
        force: bool,
    },
    /// Release the lock.
    Unlock {
        /// Release someone else's lock.
        force: bool,
    },
    /// The last jobs.
    History {
        /// How many; `None`: the default.
        count: Option<usize>,
    },
    /// Redeploy an earlier deployment.
    Rollback {
        /// Whose deployment; `None`: the one before the current.
        job: Option<JobId>,
    },
    /// Stop a job.
    Cancel {
        /// Which; `None`: the environment's running job.
        job: Option<JobId>,
    },
    /// Every environment.
    Envs,
    /// Approve a job waiting on a protected environment.
    Approve {
        /// The job.
        job: JobId,
    },
    /// Who am I.
    Whoami,
    /// The commands, or one in detail.
    Help {
        /// A verb name (known).
        verb: Option<String>,
    },
}

impl Verb {
    /// The verb's name as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Build { .. } => "build",
            Verb::Plan => "plan",
            Verb::Status => "status",
            Verb::Logs { .. } => "logs",
            Verb::Run { .. } => "run",
            Verb::Lock { .. } => "lock",
            Verb::Unlock { .. } => "unlock",
            Verb::History { .. } => "history",
            Verb::Rollback { .. } => "rollback",
            Verb::Cancel { .. } => "cancel",
            Verb::Envs => "envs",
            Verb::Approve { .. } => "approve",
            Verb::Whoami => "whoami",
            Verb::Help { .. } => "help",
        }
    }

    /// Its definition in [`VERBS`].
    pub fn def(&self) -> &'static VerbDef {
        verb_def(self.name()).expect("every Verb variant has a row in VERBS")
    }

    /// Whether it changes anything.
    pub fn changes(&self) -> bool {
        self.def().changes
    }

    /// The job it starts, for the verbs that start one.
    pub fn job_kind(&self) -> Option<JobKind> {
        match self {
            Verb::Build { services, force } => Some(JobKind::Build {
                services: services.clone(),
                force: *force,
            }),
            Verb::Run { task, args } => Some(JobKind::Run {
                task: task.clone(),
                args: args.clone(),
            }),
            Verb::Rollback { job } => Some(JobKind::Rollback { job: *job }),
            _ => None,
        }
    }

    /// The arguments and flags, as words that parse back to this verb.
    pub fn words(&self) -> Vec<String> {
        let mut w: Vec<String> = Vec::new();
        match self {
            Verb::Build { services, force } => {
                for s in services {
                    w.push("--service".into());
                    w.push(s.clone());
                }
                if *force {
                    w.push("--force".into());
                }
            }
            Verb::Logs { target, tail } => {
                match target {
                    Some(LogTarget::Job(j)) => w.push(format!("#{j}")),
                    Some(LogTarget::Service(s)) => w.push(s.clone()),
                    None => {}
                }
                if let Some(n) = tail {
                    w.push("--tail".into());
                    w.push(n.to_string());
                }
            }
            Verb::Run { task, args } => {
                w.push(task.clone());
                w.extend(args.iter().cloned());
            }
            Verb::Lock {
                duration,
                reason,
                force,
            } => {
                if let Some(d) = duration {
                    w.push(crate::duration::format_exact(*d));
                }
                if !reason.is_empty() {
                    w.push(reason.clone());
                }
                if *force {
                    w.push("--force".into());
                }
            }
            Verb::Unlock { force } if *force => w.push("--force".into()),
            Verb::History { count: Some(n) } => w.push(n.to_string()),
            Verb::Rollback { job: Some(j) }
            | Verb::Cancel { job: Some(j) }
            | Verb::Approve { job: j } => w.push(format!("#{j}")),
            Verb::Help { verb: Some(v) } => w.push(v.clone()),
            _ => {}
        }
        w
    }
}

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The environment's canonical name (aliases resolved), given or implied.
    pub env: Option<String>,
    /// What to do.
    pub verb: Verb,
}

impl Command {
    /// The command written out canonically, quoted so that it parses back to
    /// itself (for the audit log and echoes): `develop run migrate 'a b'`.
    pub fn to_text(&self) -> String {
        let mut words: Vec<String> = Vec::new();
        if let Some(env) = &self.env {
            words.push(env.clone());
        }
        words.push(self.verb.name().to_string());
        // A lock's reason is free text: bare, a reason such as `2h` or
        // `--force` would read back as the duration or a flag.
        let reason_at = match &self.verb {
            Verb::Lock {
                duration, reason, ..
            } if !reason.is_empty() => Some(usize::from(duration.is_some())),
            _ => None,
        };
        words.extend(self.verb.words().iter().enumerate().map(|(i, w)| {
            if Some(i) == reason_at && w.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
                quote_always(w)
            } else {
                quote(w)
            }
        }));
        words.join(" ")
    }
}

/// A word quoted whether or not it needs it: a quoted word is never a flag.
fn quote_always(word: &str) -> String {
    if word.contains('\'') {
        format!("\"{}\"", word.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        format!("'{word}'")
    }
}

/// A word quoted for the grammar when it needs to be.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| !c.is_whitespace() && !matches!(c, '\'' | '"' | '\\' | '‘' | '“'));
    if plain {
        word.to_string()
    } else {
        quote_always(word)
    }
}

/// What the parser needs to know besides the text.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The project: environments, aliases, tasks.
    pub project: &'a Project,
    /// The environments bound to the channel the command came from; with
    /// exactly one, ENV may be left out.
    pub channel_envs: Vec<String>,
    /// The environment's services, when the caller knows them; `None`
    /// accepts any well-formed service name.
    pub services: Option<Vec<String>>,
    /// The bot's own user name (Telegram), so `/build@otherbot` is not taken
    /// as meant for this bot.
    pub bot: Option<String>,
}

impl<'a> Context<'a> {
    /// A context with no channel binding, no known services and no bot name.
    pub fn new(project: &'a Project) -> Self {
        Context {
            project,
            channel_envs: Vec::new(),
            services: None,
            bot: None,
        }
    }

    /// A context for a chat channel (`slack:C123`): its bound environments are implied.
    pub fn for_channel(project: &'a Project, channel: &str) -> Self {
        let mut ctx = Context::new(project);
        ctx.channel_envs = project
            .environments_of_channel(channel)
            .into_iter()
            .map(|e| e.name.clone())
            .collect();
        ctx
    }
}

/// Why a command was not understood. `Display` is the message for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Nothing after the mention.
    #[error("say what to do, e.g. `@marvin dev build`; `@marvin help` lists the commands")]
    Empty,
    /// Over [`MAX_COMMAND_CHARS`].
    #[error("that command is {chars} characters long; the most is {MAX_COMMAND_CHARS}")]
    TooLong {
        /// Its length in characters.
        chars: usize,
    },
    /// A newline or other control character inside the command.
    #[error(
        "a command is one line of plain text; found a control character (U+{code:04X}) at character {position}"
    )]
    ControlCharacter {
        /// Its code point.
        code: u32,
        /// Its position, counted in characters from 1.
        position: usize,
    },
    /// A quote opened and not closed.
    #[error("a {quote} quote is not closed")]
    UnclosedQuote {
        /// `'` or `"`.
        quote: char,
    },
    /// A backslash with nothing after it.
    #[error("the command ends with a backslash; write `\\\\` for a backslash")]
    TrailingBackslash,
    /// `/verb@otherbot`: meant for another bot; front ends ignore it silently.
    #[error("that command is addressed to @{bot}")]
    OtherBot {
        /// The bot it names.
        bot: String,
    },
    /// Neither a verb nor an environment.
    #[error("unknown command `{word}`; {hint} (`@marvin help` lists them)")]
    UnknownVerb {
        /// What was typed.
        word: String,
        /// "did you mean …" or the list of verbs.
        hint: String,
    },
    /// An environment position holding no environment.
    #[error("unknown environment `{word}`; {hint}")]
    UnknownEnv {
        /// What was typed.
        word: String,
        /// "did you mean …" or the list of environments.
        hint: String,
    },
    /// The verb needs an environment and none was given or implied.
    #[error("which environment? write `@marvin ENV {verb}`; {hint}")]
    NeedsEnv {
        /// The verb.
        verb: &'static str,
        /// Which environments there are (or are bound to the channel).
        hint: String,
    },
    /// A flag the verb does not have.
    #[error("`{verb}` has no flag `{flag}`; {hint} (usage: {usage})")]
    UnknownFlag {
        /// The verb.
        verb: &'static str,
        /// The flag as typed.
        flag: String,
        /// "did you mean …" or the verb's flags.
        hint: String,
        /// The verb's usage line.
        usage: String,
    },
    /// A flag that needs a value came last.
    #[error("`--{flag}` needs a value: {usage}")]
    MissingFlagValue {
        /// The flag's name.
        flag: &'static str,
        /// The verb's usage line.
        usage: String,
    },
    /// A switch given `=value`.
    #[error("`--{flag}` takes no value")]
    UnexpectedFlagValue {
        /// The flag's name.
        flag: &'static str,
    },
    /// A flag given twice that may be given once.
    #[error("`--{flag}` is given more than once")]
    RepeatedFlag {
        /// The flag's name.
        flag: &'static str,
    },
    /// A required argument is missing.
    #[error("`{verb}` needs {arg}: {usage}")]
    MissingArgument {
        /// The verb.
        verb: &'static str,
        /// The argument's name.
        arg: &'static str,
        /// The verb's usage line.
        usage: String,
    },
    /// More words than the verb takes.
    #[error("`{verb}` does not take `{word}`: {usage}")]
    UnexpectedArgument {
        /// The verb.
        verb: &'static str,
        /// The first extra word.
        word: String,
        /// The verb's usage line.
        usage: String,
    },
    /// Not a well-formed name (`../../etc`).
    #[error(
        "`{value}` is not a {what} name: names are letters, digits, `_`, `.` and `-`, starting with a letter, digit or `_`"
    )]
    BadName {
        /// `service`.
        what: &'static str,
        /// What was typed.
        value: String,
    },
    /// A service the environment does not have.
    #[error("unknown service `{name}`; {hint}")]
    UnknownService {
        /// What was typed.
        name: String,
        /// "did you mean …" or the services.
        hint: String,
    },
    /// A task marvin.yml does not define.
    #[error("unknown task `{name}`; {hint}")]
    UnknownTask {
        /// What was typed.
        name: String,
        /// "did you mean …" or the tasks.
        hint: String,
    },
    /// A number that is not one, or out of range.
    #[error("`{value}` is not a valid {what}: {expected}")]
    BadNumber {
        /// What it should have been: `job number`, `--tail`.
        what: &'static str,
        /// What was typed.
        value: String,
        /// What would be right.
        expected: String,
    },
    /// A lock duration that does not parse or is out of range.
    #[error("{message}")]
    BadDuration {
        /// The sentence from [`crate::duration::parse`] or the range.
        message: String,
    },
}

/// Parse one command as typed in a chat, the console or the web.
pub fn parse(text: &str, ctx: &Context<'_>) -> Result<Command, ParseError> {
    let chars = text.chars().count();
    if chars > MAX_COMMAND_CHARS {
        return Err(ParseError::TooLong { chars });
    }
    let text = text.trim();
    if let Some((position, c)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() && *c != '\t')
    {
        return Err(ParseError::ControlCharacter {
            code: c as u32,
            position: position + 1,
        });
    }
    let (slash_verb, rest) = strip_address(text, ctx.bot.as_deref())?;
    let mut words = tokenize(rest)?;
    if let Some(v) = slash_verb {
        words.insert(0, Word::bare(v));
    }
    if words.is_empty() {
        return Err(ParseError::Empty);
    }

    // `[ENV] VERB`: a verb first wins unless the first word is an environment followed by a verb.
    let first = &words[0];
    let second_is_verb = words.get(1).is_some_and(|w| find_verb(w).is_some());
    let (mut env, verb_index) = match (find_env(ctx.project, first), find_verb(first)) {
        (Some(env), _) if second_is_verb => (Some(env), 1),
        (_, Some(_)) => (None, 0),
        (Some(_), None) => {
            return Err(match words.get(1) {
                None => ParseError::Empty,
                Some(w) => unknown_verb(&w.text, ctx.project),
            });
        }
        (None, None) if second_is_verb => {
            return Err(ParseError::UnknownEnv {
                word: code_safe(&first.text),
                hint: suggest::hint(&first.text, ctx.project.environment_names()),
            });
        }
        (None, None) => return Err(unknown_verb(&first.text, ctx.project)),
    };
    let def = find_verb(&words[verb_index]).expect("verb_index points at a verb");
    let mut rest: Vec<Word> = words.split_off(verb_index + 1);

    // `VERB ENV ...` (the Telegram `/build dev` form, and a common way to type it).
    if env.is_none()
        && def.env != EnvUse::None
        && let Some(e) = rest.first().and_then(|w| find_env(ctx.project, w))
    {
        env = Some(e);
        rest.remove(0);
    }
    if def.env == EnvUse::None {
        env = None;
    } else if env.is_none()
        && let [only] = ctx.channel_envs.as_slice()
    {
        env = Some(only.clone());
    }

    let parsed = split_args(def, rest)?;
    let verb = typed_verb(def, parsed, ctx)?;
    // `logs` of a service or of the last job, and `cancel` of "the running job", need one too.
    let env_needed = def.env == EnvUse::Required
        || matches!(
            verb,
            Verb::Logs {
                target: None | Some(LogTarget::Service(_)),
                ..
            } | Verb::Cancel { job: None }
        );
    if env_needed && env.is_none() {
        return Err(ParseError::NeedsEnv {
            verb: def.name,
            hint: needs_env_hint(ctx),
        });
    }
    Ok(Command { env, verb })
}

/// The help text: every verb, or one verb in detail.
pub fn help_text(verb: Option<&str>) -> String {
    help_text_as(verb, "@marvin")
}

/// [`help_text`] naming the bot as the front end knows it (`@shipit`).
pub fn help_text_as(verb: Option<&str>, bot: &str) -> String {
    let mut out = String::new();
    match verb.and_then(verb_def) {
        None => {
            let _ = writeln!(out, "Commands: {bot} [ENV] VERB [ARGS] [--flags]");
            let rows: Vec<(String, &str)> = VERBS.iter().map(|v| (v.usage(), v.summary)).collect();
            let width = rows
                .iter()
                .map(|(u, _)| u.chars().count())
                .max()
                .unwrap_or(0);
            for (usage, summary) in rows {
                let _ = writeln!(out, "  {usage:width$}  {summary}");
            }
            out.push_str(
                "ENV may be left out in a channel bound to one environment. \
                 Quote words with spaces ('…' or \"…\"). `help VERB` says more.\n",
            );
        }
        Some(def) => {
            let env = match def.env {
                EnvUse::Required => "ENV ",
                EnvUse::Optional => "[ENV] ",
                EnvUse::None => "",
            };
            let _ = writeln!(out, "{bot} {env}{}", def.usage());
            let _ = writeln!(out, "  {}", capitalise(def.summary));
            for a in def.args {
                let _ = writeln!(out, "  {:<14}{}", a.name, a.summary);
            }
            for f in def.flags {
                let name = match f.value {
                    Some(v) => format!("--{} {v}", f.name),
                    None => format!("--{}", f.name),
                };
                let _ = writeln!(out, "  {name:<14}{}", f.summary);
            }
            match def.env {
                EnvUse::Required => {
                    out.push_str("  Needs an environment (left out in a channel bound to one).\n")
                }
                EnvUse::Optional => {
                    out.push_str("  Takes an environment when given or implied by the channel.\n")
                }
                EnvUse::None => {}
            }
            if def.changes {
                out.push_str("  Changes things: developers and admins only (admins on protected environments).\n");
            }
        }
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

// ---- addressing ----

/// Strips the leading mention (`@marvin`, `<@U123>`) or reads the slash form
/// (`/build@bot`); returns the slash verb, if any, and the rest of the text.
fn strip_address<'t>(
    text: &'t str,
    bot: Option<&str>,
) -> Result<(Option<String>, &'t str), ParseError> {
    if let Some(after) = text.strip_prefix("<@")
        && let Some(end) = after.find('>')
    {
        let rest = after[end + 1..].trim_start_matches([':', ',']);
        return Ok((None, rest.trim_start()));
    }
    let (head, tail) = match text.find(char::is_whitespace) {
        Some(i) => (&text[..i], text[i..].trim_start()),
        None => (text, ""),
    };
    if head.starts_with('@') && head.len() > 1 {
        return Ok((None, tail));
    }
    if let Some(cmd) = head.strip_prefix('/') {
        let (verb, addressed) = match cmd.split_once('@') {
            Some((v, b)) => (v, Some(b)),
            None => (cmd, None),
        };
        if let (Some(addressed), Some(me)) = (addressed, bot)
            && !addressed.eq_ignore_ascii_case(me.trim_start_matches('@'))
        {
            return Err(ParseError::OtherBot {
                bot: addressed.to_string(),
            });
        }
        if !verb.is_empty() && !verb.contains(['\'', '"', '\\']) {
            return Ok((Some(verb.to_string()), tail));
        }
    }
    Ok((None, text))
}

// ---- words ----

/// A word of the command; `quoted` words are never flags.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    quoted: bool,
}

impl Word {
    fn bare(text: String) -> Word {
        Word {
            text,
            quoted: false,
        }
    }

    fn is_flag(&self) -> bool {
        !self.quoted && self.text.starts_with("--") && self.text.len() > 2
    }
}

/// Splits on whitespace; `'…'` (and curly `‘…’`, `“…”`) is literal, `"…"` honours `\"` and `\\`, a
/// backslash outside quotes takes the next character as it is. Nothing is expanded.
fn tokenize(text: &str) -> Result<Vec<Word>, ParseError> {
    let mut words = Vec::new();
    let mut current: Option<Word> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if let Some(w) = current.take() {
                    words.push(w);
                }
            }
            '\'' | '‘' | '“' => {
                // Phones turn quotes into curly ones; those pairs quote the same way.
                let close = match c {
                    '‘' => '’',
                    '“' => '”',
                    _ => '\'',
                };
                let w = current.get_or_insert_with(|| Word::bare(String::new()));
                w.quoted = true;
                loop {
                    match chars.next() {
                        Some(c) if c == close => break,
                        Some(c) => w.text.push(c),
                        None => return Err(ParseError::UnclosedQuote { quote: c }),
                    }
                }
            }
            '"' => {
                let w = current.get_or_insert_with(|| Word::bare(String::new()));
                w.quoted = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.text.push(c),
                            Some(c) => {
                                w.text.push('\\');
                                w.text.push(c);
                            }
                            None => return Err(ParseError::UnclosedQuote { quote: '"' }),
                        },
                        Some(c) => w.text.push(c),
                        None => return Err(ParseError::UnclosedQuote { quote: '"' }),
                    }
                }
            }
            '\\' => {
                let w = current.get_or_insert_with(|| Word::bare(String::new()));
                w.quoted = true;
                match chars.next() {
                    Some(c) => w.text.push(c),
                    None => return Err(ParseError::TrailingBackslash),
                }
            }
            c => current
                .get_or_insert_with(|| Word::bare(String::new()))
                .text
                .push(c),
        }
    }
    if let Some(w) = current.take() {
        words.push(w);
    }
    Ok(words)
}

fn find_verb(word: &Word) -> Option<&'static VerbDef> {
    let lower = word.text.to_lowercase();
    verb_def(&lower)
}

/// The canonical name of the environment a word names: exact name or alias,
/// else a unique case-insensitive match (phones capitalise the first word).
fn find_env(project: &Project, word: &Word) -> Option<String> {
    let w = word.text.as_str();
    if let Ok(e) = project.environment(w) {
        return Some(e.name.clone());
    }
    let matches: Vec<&str> = project
        .environments
        .iter()
        .filter(|e| {
            e.name.eq_ignore_ascii_case(w) || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(w))
        })
        .map(|e| e.name.as_str())
        .collect();
    match matches.as_slice() {
        [one] => Some(one.to_string()),
        _ => None,
    }
}

/// A person's word as shown inside a `code span` of a message: a backtick
/// would end the span early (Slack has no escape for it), so it becomes `'`.
pub fn code_safe(word: &str) -> String {
    word.replace('`', "'")
}

fn unknown_verb(word: &str, project: &Project) -> ParseError {
    let verbs: Vec<&str> = VERBS.iter().map(|v| v.name).collect();
    let hint = if suggest::closest(word, verbs.iter().copied()).is_empty()
        && !suggest::closest(word, project.environment_names()).is_empty()
    {
        format!(
            "as an environment, {}",
            suggest::hint(word, project.environment_names())
        )
    } else {
        suggest::hint(word, verbs.iter().copied())
    };
    ParseError::UnknownVerb {
        word: code_safe(word),
        hint,
    }
}

fn needs_env_hint(ctx: &Context<'_>) -> String {
    if ctx.channel_envs.len() > 1 {
        let listed: Vec<String> = ctx.channel_envs.iter().map(|e| format!("`{e}`")).collect();
        format!("this channel is bound to {}", listed.join(", "))
    } else {
        let names: Vec<String> = ctx
            .project
            .environments
            .iter()
            .map(|e| format!("`{}`", e.name))
            .collect();
        if names.is_empty() {
            "there are no environments defined".to_string()
        } else {
            format!("environments: {}", names.join(", "))
        }
    }
}

// ---- arguments ----

/// Positional words and flag values, before typing.
struct RawArgs {
    positionals: Vec<Word>,
    flags: Vec<(&'static FlagDef, Option<String>)>,
}

impl RawArgs {
    fn switch(&self, name: &str) -> bool {
        self.flags.iter().any(|(f, _)| f.name == name)
    }

    fn values(&self, name: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|(f, _)| f.name == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }
}

fn split_args(def: &'static VerbDef, words: Vec<Word>) -> Result<RawArgs, ParseError> {
    let mut raw = RawArgs {
        positionals: Vec::new(),
        flags: Vec::new(),
    };
    let literal_from = def
        .args
        .iter()
        .position(|a| a.rest == Rest::Words)
        .unwrap_or(usize::MAX);
    let mut words = words.into_iter();
    let mut flags_done = false;
    while let Some(word) = words.next() {
        let literal = flags_done || raw.positionals.len() >= literal_from;
        if !literal && !word.quoted && word.text == "--" {
            flags_done = true;
            continue;
        }
        if literal || !word.is_flag() {
            raw.positionals.push(word);
            continue;
        }
        let body = &word.text[2..];
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(flag) = def.flags.iter().find(|f| f.name == name) else {
            let names: Vec<String> = def.flags.iter().map(|f| format!("--{}", f.name)).collect();
            let hint = if names.is_empty() {
                "it takes no flags".to_string()
            } else {
                suggest::hint(&format!("--{name}"), names.iter().map(String::as_str))
            };
            return Err(ParseError::UnknownFlag {
                verb: def.name,
                flag: code_safe(&format!("--{name}")),
                hint,
                usage: def.usage(),
            });
        };
        if !flag.repeated && raw.flags.iter().any(|(f, _)| f.name == flag.name) {
            return Err(ParseError::RepeatedFlag { flag: flag.name });
        }
        let value = match (flag.value, inline) {
            (None, None) => None,
            (None, Some(_)) => return Err(ParseError::UnexpectedFlagValue { flag: flag.name }),
            (Some(_), Some(v)) => Some(v),
            (Some(_), None) => match words.next() {
                Some(w) => Some(w.text),
                None => {
                    return Err(ParseError::MissingFlagValue {
                        flag: flag.name,
                        usage: def.usage(),
                    });
                }
            },
        };
        raw.flags.push((flag, value));
    }
    Ok(raw)
}

fn typed_verb(def: &'static VerbDef, raw: RawArgs, ctx: &Context<'_>) -> Result<Verb, ParseError> {
    let usage = def.usage();
    let takes_rest = def.args.iter().any(|a| a.rest != Rest::One);
    if !takes_rest && raw.positionals.len() > def.args.len() {
        return Err(ParseError::UnexpectedArgument {
            verb: def.name,
            word: code_safe(&raw.positionals[def.args.len()].text),
            usage,
        });
    }
    let mut pos = raw.positionals.clone().into_iter().map(|w| w.text);
    let verb = match def.name {
        "build" => {
            let mut services = Vec::new();
            for s in raw.values("service") {
                let s = service_name(&s, ctx)?;
                if !services.contains(&s) {
                    services.push(s);
                }
            }
            Verb::Build {
                services,
                force: raw.switch("force"),
            }
        }
        "plan" => Verb::Plan,
        "status" => Verb::Status,
        "logs" => {
            let target = match pos.next() {
                None => None,
                Some(t) => Some(match job_number(&t, false)? {
                    Some(j) => LogTarget::Job(j),
                    None => LogTarget::Service(service_name(&t, ctx)?),
                }),
            };
            let tail = match raw.values("tail").first() {
                None => None,
                Some(v) => Some(bounded(v, "--tail", MAX_TAIL)?),
            };
            Verb::Logs { target, tail }
        }
        "run" => {
            let Some(task) = pos.next() else {
                return Err(ParseError::MissingArgument {
                    verb: def.name,
                    arg: "TASK",
                    usage,
                });
            };
            if !ctx.project.tasks.contains_key(&task) {
                return Err(ParseError::UnknownTask {
                    hint: suggest::hint(&task, ctx.project.tasks.keys().map(String::as_str)),
                    name: code_safe(&task),
                });
            }
            Verb::Run {
                task,
                args: pos.collect(),
            }
        }
        "lock" => {
            // A quoted first word is reason text even when it starts with a digit.
            let mut words: Vec<String> = pos.collect();
            let first_bare = raw.positionals.first().is_some_and(|w| !w.quoted);
            let duration = match words.first() {
                Some(w) if first_bare && w.starts_with(|c: char| c.is_ascii_digit()) => {
                    let d = crate::duration::parse(w)
                        .map_err(|message| ParseError::BadDuration { message })?;
                    if d.is_zero() || d > MAX_LOCK {
                        return Err(ParseError::BadDuration {
                            message: format!(
                                "a lock lasts more than 0s and at most {}; `{w}` is not that",
                                crate::duration::format(MAX_LOCK)
                            ),
                        });
                    }
                    words.remove(0);
                    Some(d)
                }
                _ => None,
            };
            Verb::Lock {
                duration,
                reason: words.join(" "),
                force: raw.switch("force"),
            }
        }
        "unlock" => Verb::Unlock {
            force: raw.switch("force"),
        },
        "history" => Verb::History {
            count: match pos.next() {
                None => None,
                Some(n) => Some(bounded(&n, "number of jobs", MAX_HISTORY)?),
            },
        },
        "rollback" => Verb::Rollback {
            job: optional_job(pos.next())?,
        },
        "cancel" => Verb::Cancel {
            job: optional_job(pos.next())?,
        },
        "envs" => Verb::Envs,
        "approve" => match optional_job(pos.next())? {
            Some(job) => Verb::Approve { job },
            None => {
                return Err(ParseError::MissingArgument {
                    verb: def.name,
                    arg: JOB_ARG,
                    usage,
                });
            }
        },
        "whoami" => Verb::Whoami,
        "help" => Verb::Help {
            verb: match pos.next() {
                None => None,
                Some(v) => match verb_def(&v.to_lowercase()) {
                    Some(d) => Some(d.name.to_string()),
                    None => return Err(unknown_verb(&v, ctx.project)),
                },
            },
        },
        other => unreachable!("verb `{other}` is in VERBS but not typed here"),
    };
    Ok(verb)
}

fn optional_job(word: Option<String>) -> Result<Option<JobId>, ParseError> {
    match word {
        None => Ok(None),
        Some(w) => job_number(&w, true),
    }
}

/// `#42` or `42` as a job number; `None` when `strict` is off and the word is no number.
fn job_number(word: &str, strict: bool) -> Result<Option<JobId>, ParseError> {
    let digits = word.strip_prefix('#').unwrap_or(word);
    let looks_numeric = word.starts_with('#') || word.chars().all(|c| c.is_ascii_digit());
    if !strict && !looks_numeric {
        return Ok(None);
    }
    match digits.parse::<JobId>() {
        Ok(n) if n > 0 && digits.chars().all(|c| c.is_ascii_digit()) => Ok(Some(n)),
        _ => Err(ParseError::BadNumber {
            what: "job number",
            value: code_safe(word),
            expected: "write it as `#42` or `42`".to_string(),
        }),
    }
}

fn bounded(word: &str, what: &'static str, max: usize) -> Result<usize, ParseError> {
    match word.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) && word.chars().all(|c| c.is_ascii_digit()) => Ok(n),
        _ => Err(ParseError::BadNumber {
            what,
            value: code_safe(word),
            expected: format!("a whole number from 1 to {max}"),
        }),
    }
}

/// Whether a word is shaped like a service name (no paths, no flags, no spaces).
pub fn is_service_name(word: &str) -> bool {
    let mut chars = word.chars();
    word.chars().count() <= MAX_NAME_CHARS
        && matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn service_name(word: &str, ctx: &Context<'_>) -> Result<String, ParseError> {
    if !is_service_name(word) {
        return Err(ParseError::BadName {
            what: "service",
            value: code_safe(word),
        });
    }
    match &ctx.services {
        Some(known) if !known.iter().any(|s| s == word) => Err(ParseError::UnknownService {
            name: code_safe(word),
            hint: suggest::hint(word, known.iter().map(String::as_str)),
        }),
        _ => Ok(word.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YML: &str = "\
project: shop
repos:
  app: {url: /srv/app.git}
environments:
  develop:
    aliases: [dev]
    channels: ['slack:CDEV', 'slack:CBOTH']
  staging:
    channels: ['slack:CBOTH']
  production:
    aliases: [prod]
    protected: true
tasks:
  migrate: {service: web, command: [migrate]}
  seed: {service: web, command: [seed]}
";

    fn project() -> Project {
        Project::parse(YML, "marvin.yml").expect("fixture parses")
    }

    fn services() -> Option<Vec<String>> {
        Some(vec![
            "web".into(),
            "api".into(),
            "systemManagementServer".into(),
        ])
    }

    /// Parse in an unbound channel with known services.
    fn check(text: &str) -> Result<Command, ParseError> {
        let p = project();
        let mut ctx = Context::new(&p);
        ctx.services = services();
        parse(text, &ctx)
    }

    fn ok(text: &str) -> Command {
        check(text).unwrap_or_else(|e| panic!("`{text}` should parse: {e}"))
    }

    fn err(text: &str) -> String {
        match check(text) {
            Ok(c) => panic!("`{text}` should be refused, parsed as {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn cmd(env: Option<&str>, verb: Verb) -> Command {
        Command {
            env: env.map(String::from),
            verb,
        }
    }

    #[test]
    fn every_verb_parses_with_its_arguments() {
        let d = Some("develop");
        let table: Vec<(&str, Command)> = vec![
            (
                "@marvin dev build",
                cmd(
                    d,
                    Verb::Build {
                        services: vec![],
                        force: false,
                    },
                ),
            ),
            ("@marvin dev plan", cmd(d, Verb::Plan)),
            ("@marvin dev status", cmd(d, Verb::Status)),
            (
                "@marvin dev logs",
                cmd(
                    d,
                    Verb::Logs {
                        target: None,
                        tail: None,
                    },
                ),
            ),
            (
                "@marvin dev logs web --tail 50",
                cmd(
                    d,
                    Verb::Logs {
                        target: Some(LogTarget::Service("web".into())),
                        tail: Some(50),
                    },
                ),
            ),
            (
                "@marvin logs #42 --tail=5",
                cmd(
                    None,
                    Verb::Logs {
                        target: Some(LogTarget::Job(42)),
                        tail: Some(5),
                    },
                ),
            ),
            (
                "@marvin dev run migrate --to 3 'a b'",
                cmd(
                    d,
                    Verb::Run {
                        task: "migrate".into(),
                        args: vec!["--to".into(), "3".into(), "a b".into()],
                    },
                ),
            ),
            (
                "@marvin dev lock 2h testing payments",
                cmd(
                    d,
                    Verb::Lock {
                        duration: Some(Duration::from_secs(7_200)),
                        reason: "testing payments".into(),
                        force: false,
                    },
                ),
            ),
            (
                "@marvin dev lock",
                cmd(
                    d,
                    Verb::Lock {
                        duration: None,
                        reason: String::new(),
                        force: false,
                    },
                ),
            ),
            (
                "@marvin dev lock demo for the client --force",
                cmd(
                    d,
                    Verb::Lock {
                        duration: None,
                        reason: "demo for the client".into(),
                        force: true,
                    },
                ),
            ),
            ("@marvin dev unlock", cmd(d, Verb::Unlock { force: false })),
            (
                "@marvin dev unlock --force",
                cmd(d, Verb::Unlock { force: true }),
            ),
            ("@marvin history", cmd(None, Verb::History { count: None })),
            (
                "@marvin dev history 5",
                cmd(d, Verb::History { count: Some(5) }),
            ),
            ("@marvin dev rollback", cmd(d, Verb::Rollback { job: None })),
            (
                "@marvin dev rollback #41",
                cmd(d, Verb::Rollback { job: Some(41) }),
            ),
            (
                "@marvin cancel 42",
                cmd(None, Verb::Cancel { job: Some(42) }),
            ),
            ("@marvin dev cancel", cmd(d, Verb::Cancel { job: None })),
            ("@marvin envs", cmd(None, Verb::Envs)),
            ("@marvin approve #7", cmd(None, Verb::Approve { job: 7 })),
            ("@marvin whoami", cmd(None, Verb::Whoami)),
            ("@marvin help", cmd(None, Verb::Help { verb: None })),
            (
                "@marvin help Build",
                cmd(
                    None,
                    Verb::Help {
                        verb: Some("build".into()),
                    },
                ),
            ),
        ];
        for (text, expected) in table {
            assert_eq!(ok(text), expected, "{text}");
        }
        assert_eq!(
            ok("@marvin dev build --service web --service=api --force"),
            cmd(
                d,
                Verb::Build {
                    services: vec!["web".into(), "api".into()],
                    force: true
                }
            )
        );
        // Every verb of the table is covered above.
        for v in VERBS {
            assert!(
                ok(&format!("@marvin dev help {}", v.name))
                    == cmd(
                        None,
                        Verb::Help {
                            verb: Some(v.name.into())
                        }
                    ),
                "{}",
                v.name
            );
        }
    }

    #[test]
    fn mention_forms_and_the_telegram_slash_form_are_understood() {
        let expected = cmd(
            Some("develop"),
            Verb::Build {
                services: vec![],
                force: false,
            },
        );
        for text in [
            "@marvin dev build",
            "<@U024BE7LH> dev build",
            "<@U024BE7LH|marvin> develop build",
            "<@U024BE7LH>: dev build",
            "  @marvin   dev   build  ",
            "dev build",
            "/build dev",
            "/build@marvin_bot dev",
            "@marvin build dev",
            "@marvin Dev Build",
        ] {
            let p = project();
            let mut ctx = Context::new(&p);
            ctx.bot = Some("marvin_bot".into());
            assert_eq!(parse(text, &ctx), Ok(expected.clone()), "{text}");
        }
    }

    #[test]
    fn slash_command_for_another_bot_is_not_ours() {
        let p = project();
        let mut ctx = Context::new(&p);
        ctx.bot = Some("marvin_bot".into());
        assert_eq!(
            parse("/build@other_bot dev", &ctx),
            Err(ParseError::OtherBot {
                bot: "other_bot".into()
            })
        );
    }

    #[test]
    fn aliases_resolve_to_the_environment_name() {
        assert_eq!(ok("@marvin prod status").env.as_deref(), Some("production"));
        assert_eq!(
            ok("@marvin production status").env.as_deref(),
            Some("production")
        );
    }

    #[test]
    fn channel_bound_to_one_environment_implies_it() {
        let p = project();
        let ctx = Context::for_channel(&p, "slack:CDEV");
        assert_eq!(
            parse("@marvin build", &ctx).map(|c| c.env),
            Ok(Some("develop".into()))
        );
        // Naming another environment still works there.
        assert_eq!(
            parse("@marvin prod status", &ctx).map(|c| c.env),
            Ok(Some("production".into()))
        );
    }

    #[test]
    fn channel_bound_to_several_environments_asks_which() {
        let p = project();
        let ctx = Context::for_channel(&p, "slack:CBOTH");
        assert_eq!(
            parse("@marvin build", &ctx).map_err(|e| e.to_string()),
            Err("which environment? write `@marvin ENV build`; this channel is bound to `develop`, `staging`".into())
        );
        assert_eq!(
            err("@marvin status"),
            "which environment? write `@marvin ENV status`; environments: `develop`, `staging`, `production`"
        );
        assert_eq!(
            err("@marvin logs web"),
            "which environment? write `@marvin ENV logs`; environments: `develop`, `staging`, `production`"
        );
    }

    #[test]
    fn unknown_names_get_the_closest_valid_ones() {
        assert_eq!(
            err("@marvin dev biuld"),
            "unknown command `biuld`; did you mean `build`? (`@marvin help` lists them)"
        );
        assert_eq!(
            err("@marvin devlop build"),
            "unknown environment `devlop`; did you mean `develop`?"
        );
        assert_eq!(
            err("@marvin devlop"),
            "unknown command `devlop`; as an environment, did you mean `develop`? (`@marvin help` lists them)"
        );
        assert_eq!(
            err("@marvin dev build --forse"),
            "`build` has no flag `--forse`; did you mean `--force`? (usage: build [--service S]... [--force])"
        );
        assert_eq!(
            err("@marvin dev plan --force"),
            "`plan` has no flag `--force`; it takes no flags (usage: plan)"
        );
        assert_eq!(
            err("@marvin dev build --service wbe"),
            "unknown service `wbe`; did you mean `web`?"
        );
        assert_eq!(
            err("@marvin dev run migrat"),
            "unknown task `migrat`; did you mean `migrate`?"
        );
        assert_eq!(
            err("@marvin help biuld"),
            "unknown command `biuld`; did you mean `build`? (`@marvin help` lists them)"
        );
    }

    #[test]
    fn malformed_arguments_say_what_would_be_right() {
        assert_eq!(
            err("@marvin dev run"),
            "`run` needs TASK: run TASK [ARG...]"
        );
        assert_eq!(err("@marvin approve"), "`approve` needs JOB: approve JOB");
        assert_eq!(
            err("@marvin dev plan now"),
            "`plan` does not take `now`: plan"
        );
        assert_eq!(
            err("@marvin dev logs --tail"),
            "`--tail` needs a value: logs [SERVICE|JOB] [--tail N]"
        );
        assert_eq!(
            err("@marvin dev logs --tail 0"),
            "`0` is not a valid --tail: a whole number from 1 to 10000"
        );
        assert_eq!(
            err("@marvin dev history lots"),
            "`lots` is not a valid number of jobs: a whole number from 1 to 1000"
        );
        assert_eq!(
            err("@marvin approve #x"),
            "`#x` is not a valid job number: write it as `#42` or `42`"
        );
        assert_eq!(
            err("@marvin dev lock 2x"),
            "`2x` is not a duration; write e.g. `30s`, `15m`, `2h`, `1h30m` or `1d`"
        );
        assert_eq!(
            err("@marvin dev lock 400d"),
            "a lock lasts more than 0s and at most 30d; `400d` is not that"
        );
        assert_eq!(
            err("@marvin dev build --force --force"),
            "`--force` is given more than once"
        );
        assert_eq!(
            err("@marvin dev build --force=yes"),
            "`--force` takes no value"
        );
        assert_eq!(err("@marvin"), ParseError::Empty.to_string());
        assert_eq!(err("@marvin dev"), ParseError::Empty.to_string());
    }

    #[test]
    fn quotes_and_backslashes_make_plain_words() {
        let args = |text: &str| match ok(text).verb {
            Verb::Run { args, .. } => args,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            args(r#"dev run seed 'it''s' "say \"hi\"" a\ b"#),
            vec!["its", "say \"hi\"", "a b"]
        );
        assert_eq!(args(r#"dev run seed "a\nb" '\x'"#), vec!["a\\nb", "\\x"]);
        assert_eq!(args("dev run seed ''"), vec![""]);
        assert_eq!(err("dev run seed 'open"), "a ' quote is not closed");
        assert_eq!(
            args("dev run seed “a b” ‘it's’ it’s"),
            vec!["a b", "it's", "it’s"]
        );
        assert_eq!(err("dev run seed “open"), "a “ quote is not closed");
        assert_eq!(err("dev run seed \"open"), "a \" quote is not closed");
        assert_eq!(
            err("dev run seed end\\"),
            ParseError::TrailingBackslash.to_string()
        );
        // A quoted word is never a flag.
        assert_eq!(
            err("dev build '--force'"),
            "`build` does not take `--force`: build [--service S]... [--force]"
        );
    }

    #[test]
    fn hostile_input_is_refused_or_stays_plain_data() {
        enum Want {
            Refused,
            Args(Vec<&'static str>),
            Reason(&'static str),
        }
        let long = format!("@marvin dev lock {}", "x".repeat(MAX_COMMAND_CHARS));
        let table: Vec<(String, Want)> = vec![
            ("@marvin dev build; rm -rf /".into(), Want::Refused),
            ("@marvin dev build ; rm -rf /".into(), Want::Refused),
            (
                "@marvin dev run seed ; rm -rf /".into(),
                Want::Args(vec![";", "rm", "-rf", "/"]),
            ),
            (
                "@marvin dev run seed $(reboot)".into(),
                Want::Args(vec!["$(reboot)"]),
            ),
            (
                "@marvin dev run seed `reboot`".into(),
                Want::Args(vec!["`reboot`"]),
            ),
            (
                "@marvin dev run seed \"$HOME\" '${PATH}'".into(),
                Want::Args(vec!["$HOME", "${PATH}"]),
            ),
            (
                "@marvin dev run seed a|b>c&&d".into(),
                Want::Args(vec!["a|b>c&&d"]),
            ),
            ("@marvin dev build\nrm -rf /".into(), Want::Refused),
            ("@marvin dev build\r".into(), Want::Args(vec![])),
            ("@marvin dev run seed a\u{0}b".into(), Want::Refused),
            ("@marvin dev run seed \u{1b}[2J".into(), Want::Refused),
            (long, Want::Refused),
            (
                "@marvin dev lock 1h 修复登录 🚀".into(),
                Want::Reason("修复登录 🚀"),
            ),
            (
                "@marvin dev run seed ünïcödé \u{202e}evil".into(),
                Want::Args(vec!["ünïcödé", "\u{202e}evil"]),
            ),
            (
                "@marvin dev build --service ../../etc".into(),
                Want::Refused,
            ),
            ("@marvin dev build --service ..".into(), Want::Refused),
            (
                "@marvin dev build --service=/etc/passwd".into(),
                Want::Refused,
            ),
            (
                "@marvin dev build --service 'web api'".into(),
                Want::Refused,
            ),
            ("@marvin dev build --service -rf".into(), Want::Refused),
            ("@marvin dev logs ../../etc/shadow".into(), Want::Refused),
            ("@marvin dev run ../../bin/sh".into(), Want::Refused),
            ("@marvin $(reboot) build".into(), Want::Refused),
            ("@marvin `reboot`".into(), Want::Refused),
        ];
        for (text, want) in table {
            let got = check(&text);
            match (want, got) {
                (Want::Refused, Err(_)) => {}
                (
                    Want::Args(a),
                    Ok(Command {
                        verb: Verb::Run { args, .. },
                        ..
                    }),
                ) => {
                    assert_eq!(args, a, "{text:?}")
                }
                (
                    Want::Args(a),
                    Ok(Command {
                        verb: Verb::Build { .. },
                        ..
                    }),
                ) if a.is_empty() => {}
                (
                    Want::Reason(r),
                    Ok(Command {
                        verb: Verb::Lock { reason, .. },
                        ..
                    }),
                ) => {
                    assert_eq!(reason, r, "{text:?}")
                }
                (_, got) => panic!("{text:?} gave {got:?}"),
            }
        }
    }

    #[test]
    fn too_long_and_control_characters_are_named() {
        assert_eq!(
            err(&"b".repeat(2_001)),
            "that command is 2001 characters long; the most is 2000"
        );
        assert_eq!(
            err("dev build\nrm -rf /"),
            "a command is one line of plain text; found a control character (U+000A) at character 10"
        );
    }

    #[test]
    fn canonical_text_parses_back_to_the_same_command() {
        for text in [
            "@marvin dev build --service web --force",
            "@marvin dev run seed 'a b' \"it's\" --x=1 ''",
            "@marvin dev run seed '“quoted”' '‘x' 'back\\slash'",
            "@marvin dev lock 1h30m 'demo for the client' --force",
            "@marvin dev logs #3 --tail 20",
            "@marvin prod rollback 4",
            "@marvin approve 9",
            "@marvin help lock",
        ] {
            let c = ok(text);
            assert_eq!(ok(&c.to_text()), c, "{text} → {}", c.to_text());
        }
        assert_eq!(
            ok("@marvin dev run seed 'a b'").to_text(),
            "develop run seed 'a b'"
        );
    }

    #[test]
    fn help_is_generated_from_the_verb_table() {
        let all = help_text(None);
        for v in VERBS {
            assert!(all.contains(&v.usage()), "{} missing from help", v.name);
        }
        assert!(all.starts_with(
            "Commands: @marvin [ENV] VERB [ARGS] [--flags]\n  build [--service S]... [--force]"
        ));
        assert_eq!(
            help_text(Some("build")),
            "@marvin ENV build [--service S]... [--force]\n  \
             Fetch, build what changed, deploy what changed\n  \
             --service S   only this service (repeatable)\n  \
             --force       rebuild images even when nothing changed\n  \
             Needs an environment (left out in a channel bound to one).\n  \
             Changes things: developers and admins only (admins on protected environments).\n"
        );
        assert_eq!(
            VERBS
                .iter()
                .find(|v| v.name == "lock")
                .map(|v| v.usage())
                .as_deref(),
            Some("lock [DURATION] [REASON] [--force]")
        );
        assert_eq!(
            verb_def("run").map(|v| v.usage()).as_deref(),
            Some("run TASK [ARG...]")
        );
    }

    #[test]
    fn quoted_reason_starting_with_a_digit_is_not_a_duration() {
        assert_eq!(
            ok("@marvin dev lock '2 people testing'").verb,
            Verb::Lock {
                duration: None,
                reason: "2 people testing".into(),
                force: false
            }
        );
        let c = ok("@marvin dev lock '3rd party demo'");
        assert_eq!(ok(&c.to_text()), c);
    }

    #[test]
    fn a_lock_reason_that_reads_as_a_duration_or_a_flag_stays_quoted() {
        // Found by the `command` fuzz target's round trip: one-word reasons
        // `2h` and `--force` were written bare and read back as the lock's
        // duration and its flag.
        for text in [
            "dev lock \"2h\"",
            "dev lock '--force'",
            "dev lock '--'",
            "dev lock 1h '-x'",
            "dev lock \"2h it's\"",
        ] {
            let c = ok(text);
            assert_eq!(ok(&c.to_text()), c, "{text} → {}", c.to_text());
        }
        assert_eq!(ok("dev lock \"2h\"").to_text(), "develop lock '2h'");
        assert_eq!(ok("dev lock 2h").to_text(), "develop lock 2h");
    }

    #[test]
    fn job_verbs_map_to_job_kinds() {
        assert_eq!(
            ok("dev run seed x").verb.job_kind(),
            Some(JobKind::Run {
                task: "seed".into(),
                args: vec!["x".into()]
            })
        );
        assert_eq!(
            ok("dev rollback").verb.job_kind(),
            Some(JobKind::Rollback { job: None })
        );
        assert_eq!(ok("dev status").verb.job_kind(), None);
    }
}
