//! `marvin.yml`: the project's configuration (docs/marvin-yml.md).
//!
//! [`Project::parse`] reads the text into a typed, validated model. It is
//! pure: the caller reads the file. Everything has a default; a minimal file
//! is `project`, one repo and one environment.
//!
//! ```
//! let project = marvin_core::config::Project::parse(
//!     "project: shop\nrepos:\n  app: {url: /srv/git/app.git}\nenvironments:\n  dev: {branch: develop}\n",
//!     "marvin.yml",
//! ).unwrap();
//! assert_eq!(project.environment("dev").unwrap().branch_for("app"), "develop");
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::suggest;
use crate::yaml::{self, YamlError};

/// The default branch when an environment names none.
pub const DEFAULT_BRANCH: &str = "main";
/// The default compose file path inside the merged workspace.
pub const DEFAULT_COMPOSE: &str = "docker-compose.yml";

/// Something wrong in marvin.yml.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The YAML does not parse, or does not have the expected shape.
    #[error(transparent)]
    Yaml(#[from] YamlError),
    /// The shape is right but a value is not (unknown repo, overlapping mounts, …).
    #[error("{file}: {path}: {message}")]
    Invalid {
        /// The file, as the user named it.
        file: String,
        /// The key path, e.g. `environments.dev.branches.frontend`.
        path: String,
        /// What is wrong and what would be right.
        message: String,
    },
}

/// Who may do what (docs/people.md). Ordered: viewer < developer < admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: status, plan, logs, history, envs.
    Viewer,
    /// Builds, runs tasks, locks unprotected environments.
    Developer,
    /// Everything, including protected environments and approvals.
    Admin,
}

/// Which kind of engine an environment deploys to (docs/swarm.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// The local Docker engine (socket or `DOCKER_HOST`).
    #[default]
    Docker,
    /// Docker Swarm services, images through a registry.
    Swarm,
}

/// The whole project, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Project {
    /// The file this came from, as the user named it (for messages).
    pub file: String,
    /// Project name: prefixes networks, containers, volumes and images.
    pub name: String,
    /// Path of the compose template inside the merged workspace.
    pub compose: String,
    /// Repositories, in the order they are declared.
    pub repos: Vec<Repo>,
    /// Environments, in the order they are declared.
    pub environments: Vec<Environment>,
    /// Named one-off tasks.
    pub tasks: BTreeMap<String, Task>,
    /// Identities and roles.
    pub people: People,
    /// Build and deploy settings.
    pub settings: Settings,
    /// How push webhooks are verified.
    pub webhooks: Webhooks,
}

/// How push webhooks are verified. The secret itself never appears in
/// marvin.yml: the file names the environment variable that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Webhooks {
    /// The environment variable holding the secret shared with the git host,
    /// used for every repo without its own `webhook_secret_env`.
    pub secret_env: Option<String>,
}

/// One git repository mounted into the workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repo {
    /// The repo's name in marvin.yml (used in messages and `MARVIN_COMMIT_<REPO>`).
    pub name: String,
    /// Anything git can fetch: a path, `file://`, ssh or https.
    pub url: String,
    /// Mount point in the workspace: `""` for the root, else `a/b` (normalised).
    pub path: String,
    /// Poll this often for new commits (for hosts without webhooks).
    pub poll: Option<Duration>,
    /// The environment variable holding this repo's webhook secret, when it
    /// differs from the project's `webhooks.secret_env`.
    pub webhook_secret_env: Option<String>,
}

/// One environment: what runs where, from which branches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Environment {
    /// Its name (also in container and network names).
    pub name: String,
    /// Other names people may use for it.
    pub aliases: Vec<String>,
    /// Branch for every repo without an override.
    pub branch: String,
    /// Per-repo branch overrides.
    pub branches: BTreeMap<String, String>,
    /// Template variables for `{{ VAR }}` and `${VAR}` in the compose file.
    pub vars: BTreeMap<String, String>,
    /// Container environment added to every service (wins over env files).
    pub env: BTreeMap<String, String>,
    /// Env files (workspace paths) added to every service.
    pub env_file: Vec<String>,
    /// Names whose values are never shown.
    pub secrets: Vec<String>,
    /// Chat channels bound to this environment (`slack:C…`, `telegram:-100…`).
    pub channels: Vec<String>,
    /// Admins only, or an admin's approval.
    pub protected: bool,
    /// What starts builds besides people.
    pub triggers: Triggers,
    /// Tasks bound to deploy events.
    pub hooks: Hooks,
    /// Where it deploys.
    pub engine: EngineKind,
    /// Registry images are pushed to (swarm).
    pub registry: Option<String>,
    /// Host paths its containers may bind-mount (absolute prefixes). A
    /// compose file comes from a branch anyone with push access can change,
    /// so a host path (`/var/run/docker.sock:/x`) is refused unless listed here.
    pub allow_host_paths: Vec<String>,
    /// Compose fields that give a container power over the host, allowed
    /// here (`cap_add`, `privileged`, `devices`, `pid`, `ipc`,
    /// `network_mode`, `runtime`, `security_opt`; see docs/compose.md).
    pub allow_powerful: Vec<String>,
}

/// The compose fields an environment may allow with `allow_powerful`.
pub const POWERFUL_FIELDS: [&str; 8] = [
    "cap_add",
    "privileged",
    "devices",
    "pid",
    "ipc",
    "network_mode",
    "runtime",
    "security_opt",
];

/// What starts a build besides a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Triggers {
    /// A push to a tracked branch builds.
    pub push: bool,
    /// A cron expression (5 or 6 fields, UTC), checked when the file is read.
    pub schedule: Option<String>,
}

/// Tasks run at deploy events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Hooks {
    /// Before any container changes, only when the diff is non-empty; failure aborts.
    pub before_deploy: Vec<String>,
    /// After the health wait.
    pub after_deploy: Vec<String>,
    /// When a job fails.
    pub on_failure: Vec<String>,
}

/// A one-off container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    /// The task's name.
    pub name: String,
    /// Run with this service's image (and its environment).
    pub service: Option<String>,
    /// Or with this image.
    pub image: Option<String>,
    /// The command; arguments given to `run` are appended.
    pub command: Vec<String>,
}

/// Identities and their roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct People {
    /// Role of anyone not listed.
    pub default_role: Role,
    /// Identities with the admin role.
    pub admins: Vec<String>,
    /// Identities with the developer role.
    pub developers: Vec<String>,
    /// Identities with the viewer role.
    pub viewers: Vec<String>,
    /// Web sign-in tokens: token → person name (`web:NAME`).
    pub web_tokens: BTreeMap<String, String>,
}

/// Build and deploy settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// How many images build at once (default: the number of cores, decided by the runtime).
    pub build_concurrency: Option<usize>,
    /// How long a container may take to become running/healthy.
    pub health_timeout: Duration,
    /// Pushes to one environment within this long of the first become one job.
    pub coalesce_window: Duration,
    /// The engine's image builder: BuildKit unless `builder: legacy`.
    pub builder: crate::engine::Builder,
}

/// The default `settings.coalesce_window`.
pub const DEFAULT_COALESCE_WINDOW: Duration = Duration::from_secs(2);

impl Project {
    /// Read and validate marvin.yml text. `file` is used in messages only.
    pub fn parse(text: &str, file: &str) -> Result<Project, ConfigError> {
        let raw: RawProject = yaml::from_str(text, file)?;
        raw.validate(file)
    }

    /// The environment with this name or alias.
    pub fn environment(&self, name_or_alias: &str) -> Result<&Environment, ConfigError> {
        self.environments
            .iter()
            .find(|e| e.name == name_or_alias || e.aliases.iter().any(|a| a == name_or_alias))
            .ok_or_else(|| ConfigError::Invalid {
                file: self.file.clone(),
                path: "environments".to_string(),
                message: format!(
                    "unknown environment `{name_or_alias}`; {}",
                    suggest::hint(name_or_alias, self.environment_names())
                ),
            })
    }

    /// Every environment name and alias.
    pub fn environment_names(&self) -> Vec<&str> {
        self.environments
            .iter()
            .flat_map(|e| {
                std::iter::once(e.name.as_str()).chain(e.aliases.iter().map(String::as_str))
            })
            .collect()
    }

    /// The repo with this name.
    pub fn repo(&self, name: &str) -> Result<&Repo, ConfigError> {
        self.repos
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| ConfigError::Invalid {
                file: self.file.clone(),
                path: "repos".to_string(),
                message: format!(
                    "unknown repo `{name}`; {}",
                    suggest::hint(name, self.repos.iter().map(|r| r.name.as_str()))
                ),
            })
    }

    /// The task with this name.
    pub fn task(&self, name: &str) -> Result<&Task, ConfigError> {
        self.tasks.get(name).ok_or_else(|| ConfigError::Invalid {
            file: self.file.clone(),
            path: "tasks".to_string(),
            message: format!(
                "unknown task `{name}`; {}",
                suggest::hint(name, self.tasks.keys().map(String::as_str))
            ),
        })
    }

    /// The role of an identity (`slack:U123`, `local:alice`, …).
    pub fn role_of(&self, identity: &str) -> Role {
        let p = &self.people;
        if p.admins.iter().any(|i| i == identity) {
            Role::Admin
        } else if p.developers.iter().any(|i| i == identity) {
            Role::Developer
        } else if p.viewers.iter().any(|i| i == identity) {
            Role::Viewer
        } else {
            p.default_role
        }
    }

    /// The environments a chat channel is bound to.
    pub fn environments_of_channel(&self, channel: &str) -> Vec<&Environment> {
        self.environments
            .iter()
            .filter(|e| e.channels.iter().any(|c| c == channel))
            .collect()
    }
}

impl Environment {
    /// The branch this environment builds for a repo.
    pub fn branch_for(&self, repo: &str) -> &str {
        self.branches
            .get(repo)
            .map(String::as_str)
            .unwrap_or(&self.branch)
    }

    /// Whether a variable name's value must never be shown: listed in
    /// `secrets`, or named like a secret (`*_PASSWORD`, `*_TOKEN`, `*_SECRET`, `*_KEY`).
    pub fn is_secret_name(&self, name: &str) -> bool {
        self.secrets.iter().any(|s| s == name) || looks_secret(name)
    }
}

/// Whether a variable name looks like it holds a secret (docs/secrets.md).
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    ["PASSWORD", "TOKEN", "SECRET", "KEY"]
        .iter()
        .any(|s| upper == *s || upper.ends_with(&format!("_{s}")))
}

/// Normalise a workspace path: `./fe/` → `fe`, `.` → ``. `None` if it escapes the root.
pub fn normalize_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// What to say when a secret is written into marvin.yml in clear.
fn secret_in_clear(instead: &str) -> String {
    format!(
        "a secret is never written in marvin.yml; put it in an environment variable and name that variable with `{instead}` (e.g. `{instead}: MARVIN_WEBHOOK_SECRET`)"
    )
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        // The value is not echoed: it may be the secret itself, pasted in the wrong place.
        Err("this is not an environment variable name (letters, digits and `_`); name the variable that holds the secret, e.g. `MARVIN_WEBHOOK_SECRET` (the value given is not shown, in case it is the secret)".to_string())
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

// ---- the shape of the file, as serde reads it ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    project: String,
    #[serde(default)]
    compose: Option<String>,
    repos: IndexMap<String, RawRepo>,
    environments: IndexMap<String, RawEnvironment>,
    #[serde(default)]
    tasks: IndexMap<String, RawTask>,
    #[serde(default)]
    people: RawPeople,
    #[serde(default)]
    settings: RawSettings,
    #[serde(default)]
    webhooks: RawWebhooks,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    #[serde(default)]
    secret_env: Option<String>,
    /// Only read to say where a secret belongs instead.
    #[serde(default)]
    secret: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    url: String,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    poll: Option<String>,
    #[serde(default)]
    webhook_secret_env: Option<String>,
    /// Only read to say where a secret belongs instead.
    #[serde(default)]
    webhook_secret: Option<serde_yaml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    branches: BTreeMap<String, String>,
    #[serde(default)]
    vars: BTreeMap<String, Scalar>,
    #[serde(default)]
    env: BTreeMap<String, Scalar>,
    #[serde(default)]
    env_file: OneOrMany,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    protected: bool,
    #[serde(default)]
    triggers: RawTriggers,
    #[serde(default)]
    hooks: RawHooks,
    #[serde(default)]
    engine: EngineKind,
    #[serde(default)]
    registry: Option<String>,
    #[serde(default)]
    allow_host_paths: Vec<String>,
    #[serde(default)]
    allow_powerful: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTriggers {
    #[serde(default)]
    push: bool,
    #[serde(default)]
    schedule: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    #[serde(default)]
    before_deploy: OneOrMany,
    #[serde(default)]
    after_deploy: OneOrMany,
    #[serde(default)]
    on_failure: OneOrMany,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    command: Option<Command>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Command {
    Line(String),
    Argv(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPeople {
    #[serde(default)]
    default_role: Option<Role>,
    #[serde(default)]
    admins: Vec<String>,
    #[serde(default)]
    developers: Vec<String>,
    #[serde(default)]
    viewers: Vec<String>,
    #[serde(default)]
    web_tokens: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    #[serde(default)]
    build_concurrency: Option<usize>,
    #[serde(default)]
    health_timeout: Option<String>,
    #[serde(default)]
    coalesce_window: Option<String>,
    #[serde(default)]
    builder: Option<String>,
}

/// A string, number or boolean: YAML users write `PORT: 8080` and mean "8080".
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Split a command line into words the way a shell would quote them, without
/// any expansion: `java -jar "my app.jar"` → `["java", "-jar", "my app.jar"]`.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    crate::compose::split_words(line)
}

impl RawProject {
    fn validate(self, file: &str) -> Result<Project, ConfigError> {
        let invalid = |path: String, message: String| ConfigError::Invalid {
            file: file.to_string(),
            path,
            message,
        };
        if !valid_name(&self.project) {
            return Err(invalid(
                "project".into(),
                format!(
                    "`{}` is not a usable project name: use letters, digits, `-`, `_` or `.`, starting with a letter or digit",
                    self.project
                ),
            ));
        }
        if self.repos.is_empty() {
            return Err(invalid(
                "repos".into(),
                "at least one repo is needed".into(),
            ));
        }
        if self.environments.is_empty() {
            return Err(invalid(
                "environments".into(),
                "at least one environment is needed".into(),
            ));
        }

        let mut repos = Vec::new();
        let mut mounts: BTreeMap<String, String> = BTreeMap::new();
        for (name, raw) in self.repos {
            let at = format!("repos.{name}");
            if !valid_name(&name) {
                return Err(invalid(
                    at,
                    "a repo name uses letters, digits, `-`, `_` or `.`".into(),
                ));
            }
            if raw.url.trim().is_empty() {
                return Err(invalid(format!("{at}.url"), "the url is empty".into()));
            }
            let given = raw.path.unwrap_or_else(|| ".".into());
            let path = normalize_path(&given).ok_or_else(|| {
                invalid(
                    format!("{at}.path"),
                    format!("`{given}` leaves the workspace; use a path inside it"),
                )
            })?;
            if let Some(other) = mounts.insert(path.clone(), name.clone()) {
                let shown = if path.is_empty() { "." } else { &path };
                return Err(invalid(
                    format!("{at}.path"),
                    format!(
                        "`{shown}` is already the mount point of repo `{other}`; give each repo its own path"
                    ),
                ));
            }
            let poll = raw
                .poll
                .map(|p| crate::duration::parse(&p).map_err(|m| invalid(format!("{at}.poll"), m)))
                .transpose()?;
            if poll == Some(Duration::ZERO) {
                return Err(invalid(
                    format!("{at}.poll"),
                    "a poll interval of zero would poll without pause; write e.g. `1m`".into(),
                ));
            }
            if raw.webhook_secret.is_some() {
                return Err(invalid(
                    format!("{at}.webhook_secret"),
                    secret_in_clear("webhook_secret_env"),
                ));
            }
            if let Some(var) = &raw.webhook_secret_env {
                check_env_name(var).map_err(|m| invalid(format!("{at}.webhook_secret_env"), m))?;
            }
            repos.push(Repo {
                name,
                url: raw.url,
                path,
                poll,
                webhook_secret_env: raw.webhook_secret_env,
            });
        }
        let repo_names: Vec<&str> = repos.iter().map(|r| r.name.as_str()).collect();

        let task_names: Vec<String> = self.tasks.keys().cloned().collect();
        let mut tasks = BTreeMap::new();
        for (name, raw) in self.tasks {
            let at = format!("tasks.{name}");
            let command = match raw.command {
                None => Vec::new(),
                Some(Command::Argv(v)) => v,
                Some(Command::Line(l)) => {
                    split_words(&l).map_err(|m| invalid(format!("{at}.command"), m))?
                }
            };
            match (&raw.service, &raw.image) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        at,
                        "give either `service` or `image`, not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        at,
                        "a task needs `service` (run with that service's image) or `image`".into(),
                    ));
                }
                _ => {}
            }
            tasks.insert(
                name.clone(),
                Task {
                    name,
                    service: raw.service,
                    image: raw.image,
                    command,
                },
            );
        }

        let mut environments = Vec::new();
        let mut seen_names: BTreeMap<String, String> = BTreeMap::new();
        for (name, raw) in self.environments {
            let at = format!("environments.{name}");
            if !valid_name(&name) {
                return Err(invalid(
                    at,
                    "an environment name uses letters, digits, `-`, `_` or `.`, starting with a letter or digit".into(),
                ));
            }
            for n in std::iter::once(&name).chain(raw.aliases.iter()) {
                if let Some(other) = seen_names.insert(n.clone(), name.clone()) {
                    return Err(invalid(
                        format!("{at}.aliases"),
                        format!("`{n}` already names environment `{other}`"),
                    ));
                }
            }
            for repo in raw.branches.keys() {
                if !repo_names.contains(&repo.as_str()) {
                    return Err(invalid(
                        format!("{at}.branches.{repo}"),
                        format!(
                            "unknown repo `{repo}`; {}",
                            suggest::hint(repo, repo_names.iter().copied())
                        ),
                    ));
                }
            }
            let hooks = Hooks {
                before_deploy: raw.hooks.before_deploy.into_vec(),
                after_deploy: raw.hooks.after_deploy.into_vec(),
                on_failure: raw.hooks.on_failure.into_vec(),
            };
            for (event, list) in [
                ("before_deploy", &hooks.before_deploy),
                ("after_deploy", &hooks.after_deploy),
                ("on_failure", &hooks.on_failure),
            ] {
                for task in list {
                    if !task_names.contains(task) {
                        return Err(invalid(
                            format!("{at}.hooks.{event}"),
                            format!(
                                "unknown task `{task}`; {}",
                                suggest::hint(task, task_names.iter().map(String::as_str))
                            ),
                        ));
                    }
                }
            }
            for channel in &raw.channels {
                let known = ["slack:", "telegram:", "web:", "local:"];
                if !known
                    .iter()
                    .any(|p| channel.starts_with(p) && channel.len() > p.len())
                {
                    return Err(invalid(
                        format!("{at}.channels"),
                        format!(
                            "`{channel}` is not a channel; write `slack:C024BE91L` or `telegram:-1001234567`"
                        ),
                    ));
                }
            }
            if raw.engine == EngineKind::Swarm && raw.registry.is_none() {
                return Err(invalid(
                    format!("{at}.registry"),
                    "a swarm environment needs a `registry` to push images to (e.g. `127.0.0.1:5000`)".into(),
                ));
            }
            for (i, path) in raw.allow_host_paths.iter().enumerate() {
                let bad = !path.starts_with('/')
                    || path.split('/').any(|part| part == "..")
                    || path.trim_end_matches('/').is_empty();
                if bad {
                    return Err(invalid(
                        format!("{at}.allow_host_paths[{i}]"),
                        format!(
                            "`{path}` is not an absolute host path below `/`; write e.g. `/srv/shared`"
                        ),
                    ));
                }
            }
            for (i, field) in raw.allow_powerful.iter().enumerate() {
                if !POWERFUL_FIELDS.contains(&field.as_str()) {
                    return Err(invalid(
                        format!("{at}.allow_powerful[{i}]"),
                        format!(
                            "`{field}` is not a compose field Marvin refuses by default; {}",
                            crate::suggest::hint(field, POWERFUL_FIELDS.iter().copied())
                        ),
                    ));
                }
            }
            if let Some(expr) = &raw.triggers.schedule {
                crate::schedule::Schedule::parse(expr)
                    .map_err(|m| invalid(format!("{at}.triggers.schedule"), m))?;
            }
            let branch = raw.branch.unwrap_or_else(|| DEFAULT_BRANCH.to_string());
            environments.push(Environment {
                name,
                aliases: raw.aliases,
                branch,
                branches: raw.branches,
                vars: raw
                    .vars
                    .into_iter()
                    .map(|(k, v)| (k, v.into_string()))
                    .collect(),
                env: raw
                    .env
                    .into_iter()
                    .map(|(k, v)| (k, v.into_string()))
                    .collect(),
                env_file: raw.env_file.into_vec(),
                secrets: raw.secrets,
                channels: raw.channels,
                protected: raw.protected,
                triggers: Triggers {
                    push: raw.triggers.push,
                    schedule: raw.triggers.schedule,
                },
                hooks,
                engine: raw.engine,
                registry: raw.registry,
                allow_host_paths: raw.allow_host_paths,
                allow_powerful: raw.allow_powerful,
            });
        }

        let mut listed: BTreeSet<&str> = BTreeSet::new();
        for (key, ids) in [
            ("admins", &self.people.admins),
            ("developers", &self.people.developers),
            ("viewers", &self.people.viewers),
        ] {
            for id in ids {
                if !id.contains(':') {
                    return Err(invalid(
                        format!("people.{key}"),
                        format!(
                            "`{id}` is not an identity; write `slack:U123`, `telegram:456`, `local:alice`, `web:alice` or `py:script`"
                        ),
                    ));
                }
                if !listed.insert(id) {
                    return Err(invalid(
                        format!("people.{key}"),
                        format!("`{id}` is listed under two roles"),
                    ));
                }
            }
        }

        let health_timeout = match self.settings.health_timeout {
            Some(t) => crate::duration::parse(&t)
                .map_err(|m| invalid("settings.health_timeout".into(), m))?,
            None => Duration::from_secs(120),
        };
        let coalesce_window = match self.settings.coalesce_window {
            Some(t) => crate::duration::parse(&t)
                .map_err(|m| invalid("settings.coalesce_window".into(), m))?,
            None => DEFAULT_COALESCE_WINDOW,
        };
        if self.webhooks.secret.is_some() {
            return Err(invalid(
                "webhooks.secret".into(),
                secret_in_clear("secret_env"),
            ));
        }
        if let Some(var) = &self.webhooks.secret_env {
            check_env_name(var).map_err(|m| invalid("webhooks.secret_env".into(), m))?;
        }
        let builder = match self.settings.builder.as_deref() {
            None | Some("buildkit") => crate::engine::Builder::BuildKit,
            Some("legacy") => crate::engine::Builder::Legacy,
            Some(other) => {
                return Err(invalid(
                    "settings.builder".into(),
                    format!(
                        "unknown builder `{other}`; write `buildkit` (the default) or `legacy` \
                         (the engine's legacy builder, for engines without BuildKit)"
                    ),
                ));
            }
        };
        if self.settings.build_concurrency == Some(0) {
            return Err(invalid(
                "settings.build_concurrency".into(),
                "must be at least 1".into(),
            ));
        }

        Ok(Project {
            file: file.to_string(),
            name: self.project,
            compose: self.compose.unwrap_or_else(|| DEFAULT_COMPOSE.to_string()),
            repos,
            environments,
            tasks,
            people: People {
                default_role: self.people.default_role.unwrap_or(Role::Developer),
                admins: self.people.admins,
                developers: self.people.developers,
                viewers: self.people.viewers,
                web_tokens: self.people.web_tokens,
            },
            settings: Settings {
                build_concurrency: self.settings.build_concurrency,
                health_timeout,
                coalesce_window,
                builder,
            },
            webhooks: Webhooks {
                secret_env: self.webhooks.secret_env,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TALK: &str = r#"
project: cloudmatrix
compose: docker-compose.yml
repos:
  backend:
    url: git@git.example.com:jsxf/CloudMatrix.git
    path: .
  frontend:
    url: git@git.example.com:jsxf/CloudMatrixFE.git
    path: fe
environments:
  develop:
    aliases: [dev]
    branch: develop
    branches: { frontend: dev }
    vars: { CLUSTER_TYPE: java-dev, CONFIG_ENV_FILE: envs/develop.env, PORT: 8080 }
    env: { SPRING_PROFILES_ACTIVE: dev }
    env_file: [envs/common.env]
    secrets: [DB_PASSWORD]
    channels: ["slack:C024BE91L", "telegram:-1001234567"]
    triggers: { push: true, schedule: "0 3 * * *" }
    hooks: { after_deploy: [migrate] }
  production:
    branch: master
    protected: true
    engine: swarm
    registry: 127.0.0.1:5000
tasks:
  migrate:
    service: baseSequenceServer
    command: ["java", "-jar", "migrate.jar"]
people:
  default_role: developer
  admins: ["slack:U0ADMIN", "telegram:111"]
  viewers: []
"#;

    fn parse(text: &str) -> Result<Project, String> {
        Project::parse(text, "marvin.yml").map_err(|e| e.to_string())
    }

    fn minimal(extra: &str) -> String {
        format!("project: p\nrepos:\n  app: {{url: /git/app}}\nenvironments:\n  dev: {{}}\n{extra}")
    }

    #[test]
    fn the_talks_example_reads_with_every_field() {
        let p = parse(TALK).unwrap();
        assert_eq!(p.name, "cloudmatrix");
        assert_eq!(p.repos[1].path, "fe");
        assert_eq!(p.repos[0].path, "");
        let dev = p.environment("dev").unwrap();
        assert_eq!(dev.name, "develop");
        assert_eq!(dev.branch_for("backend"), "develop");
        assert_eq!(dev.branch_for("frontend"), "dev");
        assert_eq!(dev.vars["PORT"], "8080");
        assert_eq!(dev.hooks.after_deploy, vec!["migrate"]);
        assert_eq!(dev.triggers.schedule.as_deref(), Some("0 3 * * *"));
        assert!(p.environment("production").unwrap().protected);
        assert_eq!(p.role_of("slack:U0ADMIN"), Role::Admin);
        assert_eq!(p.role_of("slack:U999"), Role::Developer);
        assert_eq!(
            p.task("migrate").unwrap().command,
            vec!["java", "-jar", "migrate.jar"]
        );
    }

    #[test]
    fn a_minimal_file_gets_defaults() {
        let p = parse(&minimal("")).unwrap();
        assert_eq!(p.compose, "docker-compose.yml");
        let dev = p.environment("dev").unwrap();
        assert_eq!(dev.branch, "main");
        assert_eq!(dev.engine, EngineKind::Docker);
        assert_eq!(p.settings.health_timeout, Duration::from_secs(120));
    }

    #[test]
    fn unknown_key_is_an_error_with_location_and_suggestion() {
        let text = minimal("").replace("dev: {}", "dev:\n    brnch: develop");
        assert_eq!(
            parse(&text).unwrap_err(),
            "marvin.yml:6:5: environments.dev: unknown key `brnch`; did you mean `branch`?"
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let e = parse("project: p\nrepos: [\n").unwrap_err();
        assert!(e.starts_with("marvin.yml:3:1: "), "{e}");
    }

    #[test]
    fn branch_override_for_unknown_repo_names_the_key_path() {
        let text = minimal("").replace("dev: {}", "dev: {branches: {ap: x}}");
        assert_eq!(
            parse(&text).unwrap_err(),
            "marvin.yml: environments.dev.branches.ap: unknown repo `ap`; did you mean `app`?"
        );
    }

    #[test]
    fn overlapping_mount_paths_are_refused() {
        let text = "project: p\nrepos:\n  a: {url: /a, path: ./x/}\n  b: {url: /b, path: x}\nenvironments:\n  dev: {}\n";
        assert_eq!(
            parse(text).unwrap_err(),
            "marvin.yml: repos.b.path: `x` is already the mount point of repo `a`; give each repo its own path"
        );
    }

    #[test]
    fn mount_outside_the_workspace_is_refused() {
        let text = "project: p\nrepos:\n  a: {url: /a, path: ../x}\nenvironments:\n  dev: {}\n";
        assert!(
            parse(text)
                .unwrap_err()
                .contains("repos.a.path: `../x` leaves the workspace")
        );
    }

    #[test]
    fn unknown_environment_and_task_suggest_names() {
        let p = parse(TALK).unwrap();
        assert_eq!(
            p.environment("prod").unwrap_err().to_string(),
            "marvin.yml: environments: unknown environment `prod`; did you mean `production`?"
        );
        assert!(
            p.task("migrat")
                .unwrap_err()
                .to_string()
                .ends_with("did you mean `migrate`?")
        );
        assert!(
            p.repo("fronted")
                .unwrap_err()
                .to_string()
                .ends_with("did you mean `frontend`?")
        );
    }

    #[test]
    fn hook_naming_an_unknown_task_is_refused() {
        let text = minimal("tasks:\n  migrate: {image: x, command: run}\n")
            .replace("dev: {}", "dev: {hooks: {before_deploy: migrat}}");
        assert_eq!(
            parse(&text).unwrap_err(),
            "marvin.yml: environments.dev.hooks.before_deploy: unknown task `migrat`; did you mean `migrate`?"
        );
    }

    #[test]
    fn alias_used_twice_is_refused() {
        let text = minimal("").replace("dev: {}", "dev: {}\n  qa: {aliases: [dev]}");
        assert!(
            parse(&text)
                .unwrap_err()
                .contains("`dev` already names environment `dev`")
        );
    }

    #[test]
    fn bad_role_value_suggests() {
        let e = parse(&minimal("people: {default_role: develper}\n")).unwrap_err();
        assert!(
            e.contains("unknown value `develper`; did you mean `developer`?"),
            "{e}"
        );
    }

    #[test]
    fn missing_required_key_says_which() {
        let e = parse("project: p\nenvironments:\n  dev: {}\n").unwrap_err();
        assert!(e.contains("missing field `repos`"), "{e}");
    }

    #[test]
    fn secret_names_are_recognised() {
        let p = parse(TALK).unwrap();
        let dev = p.environment("dev").unwrap();
        assert!(dev.is_secret_name("DB_PASSWORD"));
        assert!(dev.is_secret_name("GITHUB_TOKEN"));
        assert!(dev.is_secret_name("api_key"));
        assert!(!dev.is_secret_name("KEYBOARD"));
        assert!(!dev.is_secret_name("SPRING_PROFILES_ACTIVE"));
    }

    #[test]
    fn task_command_line_is_split_without_a_shell() {
        assert_eq!(
            split_words(r#"java -jar "my app.jar" 'a b' c\ d"#).unwrap(),
            vec!["java", "-jar", "my app.jar", "a b", "c d"]
        );
        assert_eq!(
            split_words("echo $(rm -rf /)").unwrap(),
            vec!["echo", "$(rm", "-rf", "/)"]
        );
        assert!(split_words("echo \"open").is_err());
    }

    #[test]
    fn webhook_secrets_are_named_by_environment_variable() {
        let text = minimal("webhooks: {secret_env: MARVIN_WEBHOOK_SECRET}\n").replace(
            "app: {url: /git/app}",
            "app: {url: /git/app, webhook_secret_env: APP_HOOK_SECRET}",
        );
        let p = parse(&text).unwrap();
        assert_eq!(
            p.webhooks.secret_env.as_deref(),
            Some("MARVIN_WEBHOOK_SECRET")
        );
        assert_eq!(
            p.repos[0].webhook_secret_env.as_deref(),
            Some("APP_HOOK_SECRET")
        );
        let p = parse(&minimal("")).unwrap();
        assert_eq!(p.webhooks, Webhooks::default());
        assert_eq!(p.repos[0].webhook_secret_env, None);
    }

    #[test]
    fn a_webhook_secret_in_clear_is_refused_without_echoing_it() {
        let e = parse(&minimal("webhooks: {secret: hunter2}\n")).unwrap_err();
        assert!(
            e.starts_with("marvin.yml: webhooks.secret: a secret is never written in marvin.yml"),
            "{e}"
        );
        assert!(e.contains("`secret_env: MARVIN_WEBHOOK_SECRET`"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");

        let text = minimal("").replace(
            "app: {url: /git/app}",
            "app: {url: /git/app, webhook_secret: hunter2}",
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with("marvin.yml: repos.app.webhook_secret: "),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn a_secret_pasted_as_the_variable_name_is_refused_without_echoing_it() {
        let e = parse(&minimal("webhooks: {secret_env: \"s3cr3t-v@lue\"}\n")).unwrap_err();
        assert!(
            e.starts_with(
                "marvin.yml: webhooks.secret_env: this is not an environment variable name"
            ),
            "{e}"
        );
        assert!(!e.contains("s3cr3t"), "{e}");
        let text = minimal("").replace(
            "app: {url: /git/app}",
            "app: {url: /git/app, webhook_secret_env: 9LIVES}",
        );
        assert!(
            parse(&text)
                .unwrap_err()
                .starts_with("marvin.yml: repos.app.webhook_secret_env: this is not")
        );
    }

    #[test]
    fn misspelt_webhook_key_suggests_the_right_one() {
        let text = minimal("webhooks:\n  secret_evn: X\n");
        assert_eq!(
            parse(&text).unwrap_err(),
            "marvin.yml:7:3: webhooks: unknown key `secret_evn`; did you mean `secret_env`?"
        );
    }

    #[test]
    fn a_schedule_that_does_not_parse_names_the_environment() {
        let text = minimal("").replace(
            "dev: {}",
            "dev: {}\n  nightly: {triggers: {schedule: \"0 3 * *\"}}",
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with("marvin.yml: environments.nightly.triggers.schedule: `0 3 * *` is not a cron expression"),
            "{e}"
        );
        let text =
            minimal("").replace("dev: {}", "nightly: {triggers: {schedule: \"0 25 * * *\"}}");
        let e = parse(&text).unwrap_err();
        assert!(
            e.starts_with("marvin.yml: environments.nightly.triggers.schedule: `0 25 * * *` is not a cron expression: the hour field `25` is not valid (0-23); "),
            "{e}"
        );
    }

    #[test]
    fn five_and_six_field_schedules_are_accepted() {
        for expr in ["0 3 * * *", "30 0 3 * * MON-FRI", "*/15 * * * *"] {
            let text = minimal("").replace(
                "dev: {}",
                &format!("dev: {{triggers: {{schedule: \"{expr}\"}}}}"),
            );
            let p = parse(&text).unwrap();
            assert_eq!(p.environments[0].triggers.schedule.as_deref(), Some(expr));
        }
    }

    #[test]
    fn coalesce_window_reads_as_a_duration_with_a_default() {
        let p = parse(&minimal("")).unwrap();
        assert_eq!(p.settings.coalesce_window, Duration::from_secs(2));
        let p = parse(&minimal("settings: {coalesce_window: 500ms}\n")).unwrap();
        assert_eq!(p.settings.coalesce_window, Duration::from_millis(500));
        let e = parse(&minimal("settings: {coalesce_window: soon}\n")).unwrap_err();
        assert!(
            e.starts_with("marvin.yml: settings.coalesce_window: "),
            "{e}"
        );
    }

    #[test]
    fn builder_is_buildkit_unless_legacy_is_asked_for() {
        use crate::engine::Builder;
        assert_eq!(
            parse(&minimal("")).unwrap().settings.builder,
            Builder::BuildKit
        );
        let p = parse(&minimal("settings: {builder: legacy}\n")).unwrap();
        assert_eq!(p.settings.builder, Builder::Legacy);
        let p = parse(&minimal("settings: {builder: buildkit}\n")).unwrap();
        assert_eq!(p.settings.builder, Builder::BuildKit);
        let e = parse(&minimal("settings: {builder: buildx}\n")).unwrap_err();
        assert!(e.starts_with("marvin.yml: settings.builder: "), "{e}");
        assert!(e.contains("`buildkit`") && e.contains("`legacy`"), "{e}");
    }

    #[test]
    fn poll_interval_reads_and_zero_is_refused() {
        let text = minimal("").replace("app: {url: /git/app}", "app: {url: /git/app, poll: 30s}");
        assert_eq!(
            parse(&text).unwrap().repos[0].poll,
            Some(Duration::from_secs(30))
        );
        let text = minimal("").replace("app: {url: /git/app}", "app: {url: /git/app, poll: 0s}");
        assert!(
            parse(&text)
                .unwrap_err()
                .starts_with("marvin.yml: repos.app.poll: a poll interval of zero")
        );
    }

    #[test]
    fn paths_normalise() {
        assert_eq!(normalize_path("./fe/").as_deref(), Some("fe"));
        assert_eq!(normalize_path(".").as_deref(), Some(""));
        assert_eq!(normalize_path("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize_path("../x"), None);
    }
}
