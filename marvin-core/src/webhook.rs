//! Push webhooks: verify a delivery, read the push, and find what to build.
//!
//! `marvin serve` receives a git host's webhook as headers plus the raw body
//! and hands both here. [`parse`] recognises the sender, checks the
//! signature in constant time against the configured secrets *before* reading
//! the body, and returns a [`Push`] (repo identifiers, branch, commit,
//! delivery id) or a [`WebhookError`] whose [`status`](WebhookError::status)
//! is the HTTP answer: 401 unsigned or wrongly signed, 400 malformed,
//! 404 unknown repo, 202 accepted but ignored (a tag, a deleted branch, a
//! `ping`, another event). [`targets`] then matches the push to the
//! project's repos and lists the environments to build; [`DeliverySeen`]
//! refuses a delivery id seen before (replays); [`accept`] runs all three
//! in the safe order.
//!
//! Senders:
//! - GitHub: `X-GitHub-Event: push`, `X-Hub-Signature-256: sha256=<hex>`
//!   (HMAC-SHA256 of the body), `X-GitHub-Delivery`.
//! - GitLab: `X-Gitlab-Event: Push Hook`, `X-Gitlab-Token` equal to the
//!   secret, `X-Gitlab-Event-UUID`.
//! - Gitea / Gogs: `X-Gitea-Event` / `X-Gogs-Event: push`,
//!   `X-Gitea-Signature` / `X-Gogs-Signature: <hex>` (HMAC-SHA256),
//!   `X-Gitea-Delivery` / `X-Gogs-Delivery`.
//! - Generic (scripts, CI): `X-Marvin-Signature: sha256=<hex>`, optional
//!   `X-Marvin-Delivery`, body `{"repo": NAME-or-URL, "branch": B, "commit": C}`
//!   (other fields are allowed and ignored).
//!
//! Replays: delivery id headers are not signed, so for every sender whose
//! signature covers the body, the body's digest counts as well
//! ([`Push::replay_keys`]); a script that means to build the same commit
//! twice adds a unique field (a run id, a time) to the generic body.
//!
//! The secrets come from environment variables named in marvin.yml
//! (`webhooks.secret_env`, per repo `webhook_secret_env`); the edge reads
//! them once into [`WebhookSecrets`]. A repo with its own secret accepts
//! only pushes signed with that one.
//!
//! Pure: no I/O, no clock.
//!
//! ```
//! use marvin_core::config::Project;
//! use marvin_core::webhook::{self, WebhookSecrets};
//! let project = Project::parse(
//!     "project: p\nrepos:\n  app: {url: /srv/git/app.git}\nenvironments:\n  dev: {triggers: {push: true}}\n",
//!     "marvin.yml",
//! ).unwrap();
//! let secrets = WebhookSecrets::project_wide("s3cret");
//! let body = br#"{"repo": "app", "branch": "main", "commit": "0123abcd"}"#;
//! let signature = webhook::sign("s3cret", body);
//! let headers = [("X-Marvin-Signature", signature.as_str())];
//! let push = webhook::parse(&headers, body, &secrets).unwrap();
//! assert_eq!(webhook::targets(&project, &push).unwrap(), vec!["dev"]);
//! ```

use std::collections::{HashSet, VecDeque};
use std::fmt;

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Project, Repo};

/// How many delivery ids [`DeliverySeen`] remembers by default.
pub const DEFAULT_DELIVERIES_REMEMBERED: usize = 10_000;

/// Who sent the webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// GitHub (and GitHub Enterprise).
    GitHub,
    /// GitLab.
    GitLab,
    /// Gitea (and Forgejo).
    Gitea,
    /// Gogs.
    Gogs,
    /// Marvin's own form, for scripts and CI.
    Generic,
}

impl Provider {
    /// Lowercase name, for keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Gogs => "gogs",
            Provider::Generic => "generic",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::GitHub => "GitHub",
            Provider::GitLab => "GitLab",
            Provider::Gitea => "Gitea",
            Provider::Gogs => "Gogs",
            Provider::Generic => "generic",
        })
    }
}

/// Which configured secret a delivery was signed with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretScope {
    /// The project's `webhooks.secret_env`.
    Project,
    /// A repo's own `webhook_secret_env` (the repo's name).
    Repo(String),
}

impl SecretScope {
    /// The secret that must sign pushes for `repo`.
    pub fn of(repo: &Repo) -> SecretScope {
        if repo.webhook_secret_env.is_some() {
            SecretScope::Repo(repo.name.clone())
        } else {
            SecretScope::Project
        }
    }
}

/// A secret value; its `Debug` never shows it.
#[derive(Clone)]
struct Secret(Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The webhook secrets of a project, read from the environment at the edge.
#[derive(Debug, Clone, Default)]
pub struct WebhookSecrets {
    secrets: Vec<(SecretScope, Secret)>,
}

/// A variable named in marvin.yml as holding a webhook secret is not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path} names the environment variable `{variable}`, which is not set or empty; export the webhook secret in it before starting Marvin"
)]
pub struct MissingSecret {
    /// The key in marvin.yml (`webhooks.secret_env`, `repos.app.webhook_secret_env`).
    pub path: String,
    /// The variable's name.
    pub variable: String,
}

impl WebhookSecrets {
    /// Read every secret the project names, through `lookup` (the edge passes
    /// `|name| std::env::var(name).ok()`). A named but unset or empty variable
    /// is an error, so a misconfigured server does not start.
    pub fn from_lookup(
        project: &Project,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<WebhookSecrets, MissingSecret> {
        let mut named: Vec<(SecretScope, String, String)> = Vec::new();
        if let Some(var) = &project.webhooks.secret_env {
            named.push((
                SecretScope::Project,
                "webhooks.secret_env".into(),
                var.clone(),
            ));
        }
        for repo in &project.repos {
            if let Some(var) = &repo.webhook_secret_env {
                named.push((
                    SecretScope::Repo(repo.name.clone()),
                    format!("repos.{}.webhook_secret_env", repo.name),
                    var.clone(),
                ));
            }
        }
        let mut secrets = Vec::new();
        for (scope, path, variable) in named {
            match lookup(&variable) {
                Some(value) if !value.is_empty() => {
                    secrets.push((scope, Secret(value.into_bytes())));
                }
                _ => return Err(MissingSecret { path, variable }),
            }
        }
        Ok(WebhookSecrets { secrets })
    }

    /// One secret for every repo (tests, examples, simple setups).
    pub fn project_wide(secret: &str) -> WebhookSecrets {
        WebhookSecrets::default().with(SecretScope::Project, secret)
    }

    /// Add a secret for a scope.
    pub fn with(mut self, scope: SecretScope, secret: &str) -> WebhookSecrets {
        self.secrets
            .push((scope, Secret(secret.as_bytes().to_vec())));
        self
    }

    /// Whether no secret is configured (every delivery is then refused).
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// A verified push to a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// Who sent it.
    pub provider: Provider,
    /// The sender's delivery id, or `body-sha256:<hex>` when it sent none.
    pub delivery_id: String,
    /// SHA-256 of the raw body, hex.
    pub body_digest: String,
    /// `owner/name` (GitHub, Gitea, Gogs) or `group/sub/name` (GitLab).
    pub full_name: Option<String>,
    /// Every URL the payload gives for the repo (clone, ssh, web).
    pub urls: Vec<String>,
    /// A repo name as written in marvin.yml (generic form only).
    pub repo_name: Option<String>,
    /// The branch pushed to (without `refs/heads/`).
    pub branch: String,
    /// The tip before the push, when the sender says.
    pub before: Option<String>,
    /// The tip after the push.
    pub commit: String,
    /// The configured secrets whose signature matched.
    pub signed_with: Vec<SecretScope>,
}

impl Push {
    /// The keys [`DeliverySeen`] remembers for this delivery: the delivery id,
    /// and, where the signature covers the body (all but GitLab), the body's
    /// digest too. The id header is not signed, so a captured delivery
    /// replayed under a new id is still caught by its body. GitLab's token
    /// signs nothing, and two genuine GitLab pushes may have equal bodies
    /// (A→B, B→A, A→B), so there the id alone counts.
    pub fn replay_keys(&self) -> Vec<String> {
        let provider = self.provider.as_str();
        let mut keys = vec![format!("{provider}:{}", self.delivery_id)];
        let by_body = format!("{provider}:body-sha256:{}", self.body_digest);
        if self.provider != Provider::GitLab && keys[0] != by_body {
            keys.push(by_body);
        }
        keys
    }

    /// The repo as the sender names it, for messages.
    pub fn repo_shown(&self) -> String {
        self.full_name
            .clone()
            .or_else(|| self.repo_name.clone())
            .or_else(|| self.urls.first().cloned())
            .unwrap_or_else(|| "(unnamed repo)".to_string())
    }
}

/// Why a delivery starts nothing. [`status`](WebhookError::status) is the HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No header says who sent it.
    #[error(
        "not a webhook Marvin knows: expected the headers of GitHub (X-GitHub-Event), GitLab (X-Gitlab-Event), Gitea (X-Gitea-Event), Gogs (X-Gogs-Event) or the generic form (X-Marvin-Signature)"
    )]
    Unrecognised,
    /// marvin.yml names no secret, so nothing can be verified.
    #[error(
        "no webhook secret is configured: set `webhooks.secret_env` in marvin.yml to the name of an environment variable holding it"
    )]
    NoSecretConfigured,
    /// The signature header is absent.
    #[error("{provider} webhook without its `{header}` header: configure the hook with the secret")]
    MissingSignature {
        /// The sender.
        provider: Provider,
        /// The header that carries the signature.
        header: &'static str,
    },
    /// The signature does not match any configured secret.
    #[error("{provider} webhook signature does not match the configured secret")]
    BadSignature {
        /// The sender.
        provider: Provider,
    },
    /// Correctly signed, but with a secret not meant for the repo pushed to.
    #[error(
        "{provider} webhook for `{repo}` is signed with a secret that is not the one configured for it"
    )]
    WrongSecretForRepo {
        /// The sender.
        provider: Provider,
        /// The repo as the sender named it.
        repo: String,
    },
    /// The delivery id was seen before.
    #[error("{provider} delivery `{delivery_id}` was already received; a replay starts nothing")]
    Replayed {
        /// The sender.
        provider: Provider,
        /// The id.
        delivery_id: String,
    },
    /// A verified event that is not a push (`issues`, `create`, …).
    #[error("{provider} event `{event}` is not a push; nothing to do")]
    UnsupportedEvent {
        /// The sender.
        provider: Provider,
        /// The event header's value.
        event: String,
    },
    /// A verified push that builds nothing by design (tag, deleted branch, ping).
    #[error("{provider}: {reason}; nothing to build")]
    Ignored {
        /// The sender.
        provider: Provider,
        /// Why.
        reason: String,
    },
    /// The body is not the payload expected.
    #[error("{provider} webhook body: {}{message}", if path.is_empty() { String::new() } else { format!("`{path}`: ") })]
    Malformed {
        /// The sender.
        provider: Provider,
        /// The JSON path (`repository.full_name`), empty for the whole body.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No repo in marvin.yml matches the push.
    #[error(
        "{provider} push for `{repo}`, which is no repo in marvin.yml (compared with every repo's `url`)"
    )]
    UnknownRepo {
        /// The sender.
        provider: Provider,
        /// The repo as the sender named it.
        repo: String,
    },
}

impl WebhookError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            WebhookError::Unrecognised
            | WebhookError::NoSecretConfigured
            | WebhookError::MissingSignature { .. }
            | WebhookError::BadSignature { .. }
            | WebhookError::WrongSecretForRepo { .. }
            | WebhookError::Replayed { .. } => 401,
            WebhookError::Malformed { .. } => 400,
            WebhookError::UnknownRepo { .. } => 404,
            WebhookError::UnsupportedEvent { .. } | WebhookError::Ignored { .. } => 202,
        }
    }

    /// Whether the delivery was genuine and merely has nothing to build (a 202).
    pub fn is_ignored(&self) -> bool {
        self.status() == 202
    }
}

/// The value of a header, matching its name without regard to case.
pub fn header<'a>(headers: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Who sent a delivery, from its headers.
pub fn provider_of(headers: &[(&str, &str)]) -> Option<Provider> {
    let has = |name: &str| header(headers, name).is_some();
    // Gitea and Gogs also send GitHub's headers: look for theirs first.
    if has("x-gitea-event") || has("x-gitea-signature") {
        Some(Provider::Gitea)
    } else if has("x-gogs-event") || has("x-gogs-signature") {
        Some(Provider::Gogs)
    } else if has("x-gitlab-event") || has("x-gitlab-token") {
        Some(Provider::GitLab)
    } else if has("x-github-event") || has("x-hub-signature-256") {
        Some(Provider::GitHub)
    } else if has("x-marvin-signature") || has("x-marvin-delivery") {
        Some(Provider::Generic)
    } else {
        None
    }
}

/// The `X-Marvin-Signature` (and GitHub) value for a body: `sha256=<hex>`.
/// For senders of the generic form, and for tests.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body))
    )
}

fn hmac_sha256(key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// Verify a delivery and read its push. Signature first: an unverified body
/// is never parsed.
pub fn parse(
    headers: &[(&str, &str)],
    body: &[u8],
    secrets: &WebhookSecrets,
) -> Result<Push, WebhookError> {
    let provider = provider_of(headers).ok_or(WebhookError::Unrecognised)?;
    if secrets.is_empty() {
        return Err(WebhookError::NoSecretConfigured);
    }
    let signed_with = verify(provider, headers, body, secrets)?;

    let body_digest = hex::encode(Sha256::digest(body));
    let delivery_id = delivery_header(provider)
        .and_then(|h| header(headers, h))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("body-sha256:{body_digest}"));

    let event = event_header(provider).map(|h| header(headers, h).unwrap_or(""));
    match (provider, event) {
        (_, Some("ping")) => {
            return Err(WebhookError::Ignored {
                provider,
                reason: "a ping to check the hook".into(),
            });
        }
        (Provider::GitLab, Some("Tag Push Hook")) => {
            return Err(WebhookError::Ignored {
                provider,
                reason: "a tag push".into(),
            });
        }
        (Provider::GitLab, Some("Push Hook")) | (_, Some("push")) | (Provider::Generic, None) => {}
        (_, event) => {
            return Err(WebhookError::UnsupportedEvent {
                provider,
                event: event.unwrap_or("").to_string(),
            });
        }
    }

    let json: Value = serde_json::from_slice(body).map_err(|e| WebhookError::Malformed {
        provider,
        path: String::new(),
        message: format!("not JSON: {e}"),
    })?;
    let body = Body {
        provider,
        json: &json,
    };
    let mut push = match provider {
        Provider::Generic => body.generic()?,
        Provider::GitLab => body.gitlab()?,
        Provider::GitHub | Provider::Gitea | Provider::Gogs => body.github_like()?,
    };
    push.delivery_id = delivery_id;
    push.body_digest = body_digest;
    push.signed_with = signed_with;
    Ok(push)
}

fn signature_header(provider: Provider) -> &'static str {
    match provider {
        Provider::GitHub => "X-Hub-Signature-256",
        Provider::GitLab => "X-Gitlab-Token",
        Provider::Gitea => "X-Gitea-Signature",
        Provider::Gogs => "X-Gogs-Signature",
        Provider::Generic => "X-Marvin-Signature",
    }
}

fn event_header(provider: Provider) -> Option<&'static str> {
    match provider {
        Provider::GitHub => Some("X-GitHub-Event"),
        Provider::GitLab => Some("X-Gitlab-Event"),
        Provider::Gitea => Some("X-Gitea-Event"),
        Provider::Gogs => Some("X-Gogs-Event"),
        Provider::Generic => None,
    }
}

fn delivery_header(provider: Provider) -> Option<&'static str> {
    Some(match provider {
        Provider::GitHub => "X-GitHub-Delivery",
        Provider::GitLab => "X-Gitlab-Event-UUID",
        Provider::Gitea => "X-Gitea-Delivery",
        Provider::Gogs => "X-Gogs-Delivery",
        Provider::Generic => "X-Marvin-Delivery",
    })
}

/// The scopes of every configured secret that verifies the delivery.
fn verify(
    provider: Provider,
    headers: &[(&str, &str)],
    body: &[u8],
    secrets: &WebhookSecrets,
) -> Result<Vec<SecretScope>, WebhookError> {
    let name = signature_header(provider);
    let given =
        header(headers, name)
            .filter(|v| !v.is_empty())
            .ok_or(WebhookError::MissingSignature {
                provider,
                header: name,
            })?;
    let matched: Vec<SecretScope> = if provider == Provider::GitLab {
        // A shared token, not a signature: compare digests so that neither
        // the content nor the length of the secret leaks through timing.
        let given = Sha256::digest(given.as_bytes());
        secrets
            .secrets
            .iter()
            .filter(|(_, s)| bool::from(Sha256::digest(&s.0).ct_eq(&given)))
            .map(|(scope, _)| scope.clone())
            .collect()
    } else {
        let hex_part = match provider {
            // GitHub and the generic form prefix the algorithm; Gitea and Gogs do not.
            Provider::GitHub | Provider::Generic => given.strip_prefix("sha256="),
            _ => Some(given.strip_prefix("sha256=").unwrap_or(given)),
        };
        let Some(Ok(signature)) = hex_part.map(hex::decode) else {
            return Err(WebhookError::BadSignature { provider });
        };
        secrets
            .secrets
            .iter()
            .filter(|(_, s)| {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(&s.0).expect("HMAC takes a key of any length");
                mac.update(body);
                mac.verify_slice(&signature).is_ok()
            })
            .map(|(scope, _)| scope.clone())
            .collect()
    };
    if matched.is_empty() {
        Err(WebhookError::BadSignature { provider })
    } else {
        Ok(matched)
    }
}

/// Verify a signed message for an environment's channels (`POST
/// /hooks/message`): `X-Marvin-Signature: sha256=<hex HMAC of the body>`
/// with the project-wide secret (`webhooks.secret_env`); a repo's own secret
/// does not sign messages.
pub fn verify_message(
    headers: &[(&str, &str)],
    body: &[u8],
    secrets: &WebhookSecrets,
) -> Result<(), WebhookError> {
    let project_only = WebhookSecrets {
        secrets: secrets
            .secrets
            .iter()
            .filter(|(scope, _)| *scope == SecretScope::Project)
            .cloned()
            .collect(),
    };
    if project_only.is_empty() {
        return Err(WebhookError::NoSecretConfigured);
    }
    verify(Provider::Generic, headers, body, &project_only).map(|_| ())
}

/// A payload being read, with paths for the errors.
struct Body<'a> {
    provider: Provider,
    json: &'a Value,
}

impl Body<'_> {
    fn at(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(self.json, |v, key| v.get(key))
    }

    fn malformed(&self, path: &str, message: &str) -> WebhookError {
        WebhookError::Malformed {
            provider: self.provider,
            path: path.to_string(),
            message: message.to_string(),
        }
    }

    /// A string that must be there.
    fn text(&self, path: &str) -> Result<String, WebhookError> {
        match self.at(path) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(Value::String(_)) => Err(self.malformed(path, "is empty")),
            Some(_) => Err(self.malformed(path, "expected a string")),
            None => Err(self.malformed(path, "missing")),
        }
    }

    /// A string that may be there (a wrong type counts as absent).
    fn optional(&self, path: &str) -> Option<String> {
        self.at(path)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    fn commit(&self, path: &str) -> Result<String, WebhookError> {
        let c = self.text(path)?;
        if c.chars().all(|ch| ch.is_ascii_hexdigit()) {
            Ok(c.to_ascii_lowercase())
        } else {
            Err(self.malformed(path, "expected a commit id (hexadecimal)"))
        }
    }

    /// The branch a `ref` names, or why this push builds nothing.
    fn branch_of_ref(&self, path: &str) -> Result<String, WebhookError> {
        let r = self.text(path)?;
        if let Some(branch) = r.strip_prefix("refs/heads/") {
            Ok(branch.to_string())
        } else if let Some(tag) = r.strip_prefix("refs/tags/") {
            Err(WebhookError::Ignored {
                provider: self.provider,
                reason: format!("a push of tag `{tag}`"),
            })
        } else {
            Err(WebhookError::Ignored {
                provider: self.provider,
                reason: format!("`{r}` is not a branch"),
            })
        }
    }

    fn deleted(&self, branch: &str) -> WebhookError {
        WebhookError::Ignored {
            provider: self.provider,
            reason: format!("branch `{branch}` was deleted"),
        }
    }

    fn urls(&self, paths: &[&str]) -> Vec<String> {
        let mut urls: Vec<String> = Vec::new();
        for p in paths {
            if let Some(u) = self.optional(p)
                && !urls.contains(&u)
            {
                urls.push(u);
            }
        }
        urls
    }

    fn github_like(&self) -> Result<Push, WebhookError> {
        let branch = self.branch_of_ref("ref")?;
        if self.at("deleted").and_then(Value::as_bool) == Some(true) {
            return Err(self.deleted(&branch));
        }
        let commit = self.commit("after")?;
        if is_zero(&commit) {
            return Err(self.deleted(&branch));
        }
        let full_name = self.text("repository.full_name")?;
        Ok(Push {
            provider: self.provider,
            delivery_id: String::new(),
            body_digest: String::new(),
            full_name: Some(full_name),
            urls: self.urls(&[
                "repository.clone_url",
                "repository.ssh_url",
                "repository.html_url",
                "repository.git_url",
                "repository.url",
            ]),
            repo_name: None,
            branch,
            before: self.optional("before").filter(|b| !is_zero(b)),
            commit,
            signed_with: Vec::new(),
        })
    }

    fn gitlab(&self) -> Result<Push, WebhookError> {
        let branch = self.branch_of_ref("ref")?;
        let commit = self.commit("after")?;
        if is_zero(&commit) {
            return Err(self.deleted(&branch));
        }
        let full_name = self.optional("project.path_with_namespace");
        let urls = self.urls(&[
            "project.git_http_url",
            "project.git_ssh_url",
            "project.web_url",
            "project.http_url",
            "project.ssh_url",
            "repository.git_http_url",
            "repository.git_ssh_url",
            "repository.url",
            "repository.homepage",
        ]);
        if full_name.is_none() && urls.is_empty() {
            return Err(self.malformed(
                "project.path_with_namespace",
                "missing, and no repo URL either (project.git_http_url, repository.url)",
            ));
        }
        Ok(Push {
            provider: self.provider,
            delivery_id: String::new(),
            body_digest: String::new(),
            full_name,
            urls,
            repo_name: None,
            branch,
            before: self.optional("before").filter(|b| !is_zero(b)),
            commit,
            signed_with: Vec::new(),
        })
    }

    fn generic(&self) -> Result<Push, WebhookError> {
        let repo = self.text("repo")?;
        let branch = self.text("branch")?;
        let branch = branch
            .strip_prefix("refs/heads/")
            .map(str::to_string)
            .unwrap_or(branch);
        let commit = self.commit("commit")?;
        Ok(Push {
            provider: self.provider,
            delivery_id: String::new(),
            body_digest: String::new(),
            full_name: None,
            urls: vec![repo.clone()],
            repo_name: Some(repo),
            branch,
            before: None,
            commit,
            signed_with: Vec::new(),
        })
    }
}

fn is_zero(commit: &str) -> bool {
    !commit.is_empty() && commit.chars().all(|c| c == '0')
}

/// A repo URL reduced to what identifies it: no scheme, user, port, `.git` or
/// trailing `/`, host in lowercase, scp-like `git@host:a/b` and
/// `ssh://git@host/a/b` alike (`host/a/b`). Local paths stay paths.
pub fn normalize_url(url: &str) -> String {
    // One pass can leave something a second pass changes (`.git://` gives
    // `.git`, which gives ``: found by the webhook fuzz target); the
    // normal form is the pass's fixed point, so normalizing is idempotent.
    // A pass never lengthens its input, so a few passes reach it.
    let mut current = normalize_once(url);
    for _ in 0..8 {
        let next = normalize_once(&current);
        if next == current {
            break;
        }
        current = next;
    }
    current
}

/// One pass of [`normalize_url`].
fn normalize_once(url: &str) -> String {
    let s = url.trim().trim_end_matches('/');
    let s = s.strip_suffix(".git").unwrap_or(s).trim_end_matches('/');
    let (host, path) = if let Some(rest) = s.strip_prefix("file://") {
        ("", rest)
    } else if let Some(i) = s.find("://") {
        let rest = &s[i + 3..];
        match rest.find('/') {
            Some(j) => (&rest[..j], &rest[j + 1..]),
            None => (rest, ""),
        }
    } else if let Some(colon) = scp_colon(s) {
        (&s[..colon], &s[colon + 1..])
    } else {
        ("", s)
    };
    if host.is_empty() {
        return path.to_string();
    }
    let host = host.rsplit('@').next().unwrap_or(host);
    let host = if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        &host[..end + 2] // `[::1]`, without a port
    } else {
        host.split(':').next().unwrap_or(host)
    };
    let path = path.trim_start_matches('/');
    if path.is_empty() {
        // `git@host:` or `https://host`: no trailing `/` (found by fuzzing:
        // `host/` normalized again gave `host`).
        return host.to_ascii_lowercase();
    }
    format!("{}/{path}", host.to_ascii_lowercase())
}

/// Where the `:` of an scp-like `[user@]host:path` is, if `s` is one.
fn scp_colon(s: &str) -> Option<usize> {
    let colon = s.find(':')?;
    let slash = s.find('/').unwrap_or(usize::MAX);
    // `C:\x` or `./a:b` are paths, `host:` needs a host before it.
    (colon < slash && colon > 1).then_some(colon)
}

/// The path part of a normalised URL (`host/a/b` → `a/b`; a local path as is).
fn path_part(normalized: &str) -> &str {
    if normalized.starts_with('/') {
        normalized
    } else {
        normalized.split_once('/').map(|(_, p)| p).unwrap_or("")
    }
}

/// The project's repos that a push is for: by URL; failing that by full name
/// (`owner/name` at the end of a repo's URL); for the generic form also by
/// the repo's name in marvin.yml. Only repos whose own secret (or, without
/// one, the project's) signed the push count.
pub fn match_repos<'p>(project: &'p Project, push: &Push) -> Result<Vec<&'p Repo>, WebhookError> {
    let wanted: Vec<String> = push.urls.iter().map(|u| normalize_url(u)).collect();
    let mut found: Vec<&Repo> = project
        .repos
        .iter()
        .filter(|r| wanted.contains(&normalize_url(&r.url)))
        .collect();
    if found.is_empty()
        && let Some(full) = &push.full_name
    {
        let full = full.trim_matches('/');
        let suffix = format!("/{full}");
        found = project
            .repos
            .iter()
            .filter(|r| {
                let n = normalize_url(&r.url);
                let p = path_part(&n);
                p == full || p.ends_with(&suffix)
            })
            .collect();
    }
    if found.is_empty()
        && let Some(name) = &push.repo_name
    {
        found = project.repos.iter().filter(|r| &r.name == name).collect();
    }
    if found.is_empty() {
        return Err(WebhookError::UnknownRepo {
            provider: push.provider,
            repo: push.repo_shown(),
        });
    }
    let allowed: Vec<&Repo> = found
        .into_iter()
        .filter(|r| push.signed_with.contains(&SecretScope::of(r)))
        .collect();
    if allowed.is_empty() {
        return Err(WebhookError::WrongSecretForRepo {
            provider: push.provider,
            repo: push.repo_shown(),
        });
    }
    Ok(allowed)
}

/// The environments a push to `branch` of `repo` builds: those with
/// `triggers.push` whose branch for that repo (its `branches` entry, else its
/// `branch`) is the one pushed, in declaration order.
pub fn environments_to_build(project: &Project, repo: &str, branch: &str) -> Vec<String> {
    project
        .environments
        .iter()
        .filter(|e| e.triggers.push && e.branch_for(repo) == branch)
        .map(|e| e.name.clone())
        .collect()
}

/// Every environment a verified push builds (possibly none), over all the
/// repos it matches, without repeats, in declaration order.
pub fn targets(project: &Project, push: &Push) -> Result<Vec<String>, WebhookError> {
    let repos = match_repos(project, push)?;
    Ok(project
        .environments
        .iter()
        .filter(|e| {
            repos
                .iter()
                .any(|r| environments_to_build(project, &r.name, &push.branch).contains(&e.name))
        })
        .map(|e| e.name.clone())
        .collect())
}

/// A delivery that passed every check, and what it builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The push.
    pub push: Push,
    /// The environments to build (possibly none: no environment tracks the branch).
    pub environments: Vec<String>,
}

/// The whole check of one delivery, in the order that keeps it safe:
/// signature ([`parse`]), repo and its secret ([`targets`]), then replay
/// ([`DeliverySeen`]), so only genuine deliveries for known repos are
/// remembered. The edge answers `Ok` with 202 and starts the jobs (through
/// the coalescer), and an error with [`WebhookError::status`].
pub fn accept(
    headers: &[(&str, &str)],
    body: &[u8],
    project: &Project,
    secrets: &WebhookSecrets,
    seen: &mut DeliverySeen,
) -> Result<Accepted, WebhookError> {
    let push = parse(headers, body, secrets)?;
    let environments = targets(project, &push)?;
    seen.check(&push)?;
    Ok(Accepted { push, environments })
}

/// The deliveries seen lately, oldest forgotten first: a replayed delivery
/// is refused. Record only verified deliveries, so that forged ones cannot
/// push genuine ones out.
#[derive(Debug, Clone)]
pub struct DeliverySeen {
    capacity: usize,
    order: VecDeque<Vec<String>>,
    seen: HashSet<String>,
}

impl Default for DeliverySeen {
    fn default() -> Self {
        DeliverySeen::new(DEFAULT_DELIVERIES_REMEMBERED)
    }
}

impl DeliverySeen {
    /// Remember up to `capacity` deliveries (at least one).
    pub fn new(capacity: usize) -> DeliverySeen {
        let capacity = capacity.max(1);
        DeliverySeen {
            capacity,
            order: VecDeque::with_capacity(capacity.min(1024)),
            seen: HashSet::new(),
        }
    }

    /// `true` the first time an id is offered (and remembers it); `false`
    /// when it is among the last `capacity` deliveries.
    pub fn first_time(&mut self, id: &str) -> bool {
        self.remember(vec![id.to_string()])
    }

    /// [`first_time`](Self::first_time) for every key of one delivery: `false`
    /// if any was seen (then none is added), else all are remembered as one.
    pub fn remember(&mut self, keys: Vec<String>) -> bool {
        if keys.iter().any(|k| self.seen.contains(k)) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            for k in oldest {
                self.seen.remove(&k);
            }
        }
        self.seen.extend(keys.iter().cloned());
        self.order.push_back(keys);
        true
    }

    /// [`remember`](Self::remember) a push's [`replay_keys`](Push::replay_keys),
    /// as the error a replay is.
    pub fn check(&mut self, push: &Push) -> Result<(), WebhookError> {
        if self.remember(push.replay_keys()) {
            Ok(())
        } else {
            Err(WebhookError::Replayed {
                provider: push.provider,
                delivery_id: push.delivery_id.clone(),
            })
        }
    }

    /// How many deliveries are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is remembered yet.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";
    const C1: &str = "1481a2de7b2a7d02428ad93446ab166be7793fbb";
    const C0: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn a_url_without_a_path_normalizes_to_its_host_without_a_slash() {
        assert_eq!(normalize_url("sh:"), "sh");
        assert_eq!(normalize_url("https://Git.Example.com/"), "git.example.com");
        assert_eq!(normalize_url("git@host:"), "host");
        // `.git://` once gave `.git`, and `.git` gave `` (found by the
        // webhook fuzz target; its input is kept in fuzz/regressions).
        for url in [
            "sh:",
            "https://git.example.com",
            "git@host:a/b.git",
            ".git://",
            "x.git:",
        ] {
            let once = normalize_url(url);
            assert_eq!(normalize_url(&once), once, "{url}");
        }
    }

    const PROJECT: &str = r#"
project: shop
repos:
  backend:
    url: git@GitHub.com:jsxf/CloudMatrix.git
  frontend:
    url: https://gitlab.example.com/web/shop/frontend.git
    path: fe
  tools:
    url: ssh://git@gitea.example.com:2222/ops/tools
    path: tools
    webhook_secret_env: TOOLS_HOOK_SECRET
  local:
    url: /srv/git/local.git
    path: local
webhooks:
  secret_env: MARVIN_WEBHOOK_SECRET
environments:
  dev: {branch: develop, branches: {frontend: dev}, triggers: {push: true}}
  qa: {branch: develop, triggers: {push: true}}
  staging: {branch: develop}
  prod: {branch: main, triggers: {push: true}}
"#;

    fn project() -> Project {
        Project::parse(PROJECT, "marvin.yml").unwrap()
    }

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::project_wide(SECRET).with(SecretScope::Repo("tools".into()), "tools-secret")
    }

    fn github_body(reference: &str, after: &str) -> String {
        format!(
            r#"{{"ref": "{reference}", "before": "{C0}", "after": "{after}", "created": true, "deleted": false,
               "repository": {{"full_name": "jsxf/CloudMatrix", "clone_url": "https://github.com/jsxf/CloudMatrix.git",
                 "ssh_url": "git@github.com:jsxf/CloudMatrix.git", "html_url": "https://github.com/jsxf/CloudMatrix"}},
               "pusher": {{"name": "alice"}}}}"#
        )
    }

    fn github(body: &str, secret: &str, event: &str) -> Result<Push, WebhookError> {
        let sig = sign(secret, body.as_bytes());
        let headers = [
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("X-Hub-Signature-256", sig.as_str()),
            ("Content-Type", "application/json"),
        ];
        parse(&headers, body.as_bytes(), &secrets())
    }

    fn gitlab_body(reference: &str, after: &str) -> String {
        format!(
            r#"{{"object_kind": "push", "ref": "{reference}", "before": "{C1}", "after": "{after}",
               "project": {{"path_with_namespace": "web/shop/frontend",
                 "git_http_url": "https://gitlab.example.com/web/shop/frontend.git",
                 "git_ssh_url": "git@gitlab.example.com:web/shop/frontend.git",
                 "web_url": "https://gitlab.example.com/web/shop/frontend"}},
               "repository": {{"url": "git@gitlab.example.com:web/shop/frontend.git"}}}}"#
        )
    }

    fn gitlab(
        body: &str,
        token: &str,
        event: &str,
        uuid: Option<&str>,
    ) -> Result<Push, WebhookError> {
        let mut headers = vec![("X-Gitlab-Event", event), ("X-Gitlab-Token", token)];
        if let Some(u) = uuid {
            headers.push(("X-Gitlab-Event-UUID", u));
        }
        parse(&headers, body.as_bytes(), &secrets())
    }

    fn gitea_body(reference: &str, after: &str) -> String {
        format!(
            r#"{{"ref": "{reference}", "before": "{C1}", "after": "{after}",
               "repository": {{"full_name": "ops/tools", "clone_url": "https://gitea.example.com/ops/tools.git",
                 "ssh_url": "ssh://git@gitea.example.com:2222/ops/tools.git", "html_url": "https://gitea.example.com/ops/tools"}}}}"#
        )
    }

    fn gitea(body: &str, secret: &str) -> Result<Push, WebhookError> {
        let sig = hex::encode(hmac_sha256(secret.as_bytes(), body.as_bytes()));
        // Gitea also sends GitHub-style headers; its own must win.
        let github_sig = sign(secret, body.as_bytes());
        let headers = [
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473"),
            ("X-Gitea-Signature", sig.as_str()),
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", github_sig.as_str()),
        ];
        parse(&headers, body.as_bytes(), &secrets())
    }

    fn generic(body: &str, secret: &str, delivery: Option<&str>) -> Result<Push, WebhookError> {
        let sig = sign(secret, body.as_bytes());
        let mut headers = vec![("x-marvin-signature", sig.as_str())];
        if let Some(d) = delivery {
            headers.push(("x-marvin-delivery", d));
        }
        parse(&headers, body.as_bytes(), &secrets())
    }

    #[test]
    fn signing_matches_githubs_documented_example() {
        // docs.github.com "Validating webhook deliveries": secret and payload below.
        assert_eq!(
            sign(SECRET, b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn a_github_push_is_verified_and_read() {
        let push = github(&github_body("refs/heads/develop", C1), SECRET, "push").unwrap();
        assert_eq!(push.provider, Provider::GitHub);
        assert_eq!(push.branch, "develop");
        assert_eq!(push.commit, C1);
        assert_eq!(push.before, None, "a created branch has no before");
        assert_eq!(push.full_name.as_deref(), Some("jsxf/CloudMatrix"));
        assert_eq!(push.urls.len(), 3);
        assert_eq!(push.delivery_id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
        assert_eq!(
            push.replay_keys(),
            vec![
                "github:72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
                format!("github:body-sha256:{}", push.body_digest)
            ]
        );
        assert_eq!(push.signed_with, vec![SecretScope::Project]);
        assert_eq!(targets(&project(), &push).unwrap(), vec!["dev", "qa"]);
    }

    #[test]
    fn a_wrong_github_signature_is_401() {
        let e = github(&github_body("refs/heads/develop", C1), "guess", "push").unwrap_err();
        assert_eq!(
            e,
            WebhookError::BadSignature {
                provider: Provider::GitHub
            }
        );
        assert_eq!(e.status(), 401);
    }

    #[test]
    fn a_body_changed_after_signing_is_refused() {
        let body = github_body("refs/heads/develop", C1);
        let sig = sign(SECRET, body.as_bytes());
        let tampered = body.replace("develop", "main");
        let headers = [
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", sig.as_str()),
        ];
        assert_eq!(
            parse(&headers, tampered.as_bytes(), &secrets())
                .unwrap_err()
                .status(),
            401
        );
    }

    #[test]
    fn a_missing_signature_is_401_and_names_the_header() {
        let body = github_body("refs/heads/develop", C1);
        let e = parse(&[("X-GitHub-Event", "push")], body.as_bytes(), &secrets()).unwrap_err();
        assert_eq!(e.status(), 401);
        assert_eq!(
            e.to_string(),
            "GitHub webhook without its `X-Hub-Signature-256` header: configure the hook with the secret"
        );
        let e = parse(
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "")],
            body.as_bytes(),
            &secrets(),
        )
        .unwrap_err();
        assert!(matches!(e, WebhookError::MissingSignature { .. }));
    }

    #[test]
    fn a_signature_in_the_wrong_format_is_401() {
        let body = github_body("refs/heads/develop", C1);
        let bare_hex = hex::encode(hmac_sha256(SECRET.as_bytes(), body.as_bytes()));
        for sig in [bare_hex.as_str(), "sha256=zz", "sha1=abcd"] {
            let headers = [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", sig)];
            assert_eq!(
                parse(&headers, body.as_bytes(), &secrets()).unwrap_err(),
                WebhookError::BadSignature {
                    provider: Provider::GitHub
                },
                "{sig}"
            );
        }
    }

    #[test]
    fn the_signature_is_checked_before_the_event_and_the_body() {
        let e = github("not json", "guess", "issues").unwrap_err();
        assert_eq!(e.status(), 401);
    }

    #[test]
    fn no_configured_secret_refuses_everything() {
        let body = github_body("refs/heads/develop", C1);
        let sig = sign(SECRET, body.as_bytes());
        let headers = [
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", sig.as_str()),
        ];
        let e = parse(&headers, body.as_bytes(), &WebhookSecrets::default()).unwrap_err();
        assert_eq!(e, WebhookError::NoSecretConfigured);
        assert_eq!(e.status(), 401);
    }

    #[test]
    fn a_request_from_no_known_sender_is_401() {
        let e = parse(&[("Content-Type", "application/json")], b"{}", &secrets()).unwrap_err();
        assert_eq!(e, WebhookError::Unrecognised);
        assert_eq!(e.status(), 401);
    }

    #[test]
    fn github_ping_and_other_events_are_ignored_with_202() {
        let e = github(r#"{"zen": "Keep it logically awesome."}"#, SECRET, "ping").unwrap_err();
        assert_eq!(e.status(), 202);
        assert_eq!(
            e.to_string(),
            "GitHub: a ping to check the hook; nothing to build"
        );
        let e = github("{}", SECRET, "issues").unwrap_err();
        assert_eq!(
            e,
            WebhookError::UnsupportedEvent {
                provider: Provider::GitHub,
                event: "issues".into()
            }
        );
        assert!(e.is_ignored());
    }

    #[test]
    fn a_tag_push_is_ignored_with_a_reason() {
        let e = github(&github_body("refs/tags/v1.0", C1), SECRET, "push").unwrap_err();
        assert_eq!(
            e.to_string(),
            "GitHub: a push of tag `v1.0`; nothing to build"
        );
        assert_eq!(e.status(), 202);
    }

    #[test]
    fn a_deleted_branch_is_ignored_with_a_reason() {
        let body = github_body("refs/heads/feature", C0)
            .replace(r#""deleted": false"#, r#""deleted": true"#);
        let e = github(&body, SECRET, "push").unwrap_err();
        assert_eq!(
            e.to_string(),
            "GitHub: branch `feature` was deleted; nothing to build"
        );
        // Without the `deleted` flag, an all-zero `after` says the same.
        let e = gitlab(
            &gitlab_body("refs/heads/dev", C0),
            SECRET,
            "Push Hook",
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("branch `dev` was deleted"), "{e}");
    }

    #[test]
    fn malformed_bodies_are_400_with_the_path() {
        let e = github("{not json", SECRET, "push").unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(
            e.to_string().starts_with("GitHub webhook body: not JSON: "),
            "{e}"
        );

        let body = github_body("refs/heads/develop", C1).replace("full_name", "fullname");
        let e = github(&body, SECRET, "push").unwrap_err();
        assert_eq!(
            e.to_string(),
            "GitHub webhook body: `repository.full_name`: missing"
        );

        let body = github_body("refs/heads/develop", "not-a-commit");
        let e = github(&body, SECRET, "push").unwrap_err();
        assert_eq!(
            e.to_string(),
            "GitHub webhook body: `after`: expected a commit id (hexadecimal)"
        );

        let e = github(r#"{"ref": 42}"#, SECRET, "push").unwrap_err();
        assert_eq!(
            e.to_string(),
            "GitHub webhook body: `ref`: expected a string"
        );
    }

    #[test]
    fn a_gitlab_push_is_verified_by_token_and_read() {
        let push = gitlab(
            &gitlab_body("refs/heads/dev", C1),
            SECRET,
            "Push Hook",
            Some("13792a34-cac6-4fda-95a8-c58e00a3954e"),
        )
        .unwrap();
        assert_eq!(push.provider, Provider::GitLab);
        assert_eq!(push.branch, "dev");
        assert_eq!(push.before.as_deref(), Some(C1));
        assert_eq!(push.full_name.as_deref(), Some("web/shop/frontend"));
        assert_eq!(push.delivery_id, "13792a34-cac6-4fda-95a8-c58e00a3954e");
        assert_eq!(targets(&project(), &push).unwrap(), vec!["dev"]);
    }

    #[test]
    fn a_wrong_or_missing_gitlab_token_is_401() {
        let body = gitlab_body("refs/heads/dev", C1);
        for token in [
            "wrong",
            "It's a Secret to Everybod",
            "It's a Secret to Everybody!",
        ] {
            assert_eq!(
                gitlab(&body, token, "Push Hook", None).unwrap_err(),
                WebhookError::BadSignature {
                    provider: Provider::GitLab
                }
            );
        }
        let e = parse(
            &[("X-Gitlab-Event", "Push Hook")],
            body.as_bytes(),
            &secrets(),
        )
        .unwrap_err();
        assert_eq!(
            e,
            WebhookError::MissingSignature {
                provider: Provider::GitLab,
                header: "X-Gitlab-Token"
            }
        );
    }

    #[test]
    fn gitlab_tag_pushes_and_other_hooks_are_ignored() {
        let body = gitlab_body("refs/tags/v2", C1);
        assert_eq!(
            gitlab(&body, SECRET, "Tag Push Hook", None)
                .unwrap_err()
                .to_string(),
            "GitLab: a tag push; nothing to build"
        );
        assert_eq!(
            gitlab(&body, SECRET, "Merge Request Hook", None)
                .unwrap_err()
                .status(),
            202
        );
    }

    #[test]
    fn without_a_delivery_header_the_id_is_the_body_digest() {
        let body = gitlab_body("refs/heads/dev", C1);
        let a = gitlab(&body, SECRET, "Push Hook", None).unwrap();
        let b = gitlab(&body, SECRET, "Push Hook", None).unwrap();
        assert!(
            a.delivery_id.starts_with("body-sha256:"),
            "{}",
            a.delivery_id
        );
        assert_eq!(a.delivery_id, b.delivery_id);
        let mut seen = DeliverySeen::default();
        assert!(seen.check(&a).is_ok());
        assert_eq!(seen.check(&b).unwrap_err().status(), 401);
    }

    #[test]
    fn a_gitea_push_is_recognised_before_its_github_style_headers() {
        let push = gitea(&gitea_body("refs/heads/develop", C1), "tools-secret").unwrap();
        assert_eq!(push.provider, Provider::Gitea);
        assert_eq!(push.delivery_id, "f6266f16-1bf3-46a5-9ea4-602e06ead473");
        assert_eq!(push.signed_with, vec![SecretScope::Repo("tools".into())]);
        assert_eq!(targets(&project(), &push).unwrap(), vec!["dev", "qa"]);
    }

    #[test]
    fn a_gogs_push_is_verified_with_its_own_header() {
        let body = gitea_body("refs/heads/main", C1);
        let sig = hex::encode(hmac_sha256(b"tools-secret", body.as_bytes()));
        let headers = [
            ("X-Gogs-Event", "push"),
            ("X-Gogs-Delivery", "d-1"),
            ("X-Gogs-Signature", sig.as_str()),
        ];
        let push = parse(&headers, body.as_bytes(), &secrets()).unwrap();
        assert_eq!(push.provider, Provider::Gogs);
        assert_eq!(push.replay_keys()[0], "gogs:d-1");
        assert_eq!(targets(&project(), &push).unwrap(), vec!["prod"]);
    }

    #[test]
    fn a_repo_with_its_own_secret_refuses_the_project_secret() {
        // Verified (it is a configured secret), but not the one for `tools`.
        let push = gitea(&gitea_body("refs/heads/develop", C1), SECRET).unwrap();
        assert_eq!(push.signed_with, vec![SecretScope::Project]);
        let e = targets(&project(), &push).unwrap_err();
        assert_eq!(
            e,
            WebhookError::WrongSecretForRepo {
                provider: Provider::Gitea,
                repo: "ops/tools".into()
            }
        );
        assert_eq!(e.status(), 401);
    }

    #[test]
    fn a_repo_secret_does_not_open_the_other_repos() {
        let push = github(
            &github_body("refs/heads/develop", C1),
            "tools-secret",
            "push",
        )
        .unwrap();
        assert_eq!(push.signed_with, vec![SecretScope::Repo("tools".into())]);
        assert_eq!(targets(&project(), &push).unwrap_err().status(), 401);
    }

    #[test]
    fn the_generic_form_names_a_repo_by_name_or_url() {
        let body = format!(r#"{{"repo": "local", "branch": "develop", "commit": "{C1}"}}"#);
        let push = generic(&body, SECRET, Some("ci-123")).unwrap();
        assert_eq!(push.provider, Provider::Generic);
        assert_eq!(push.replay_keys()[0], "generic:ci-123");
        assert_eq!(targets(&project(), &push).unwrap(), vec!["dev", "qa"]);

        let body = format!(
            r#"{{"repo": "file:///srv/git/local", "branch": "refs/heads/main", "commit": "{C1}"}}"#
        );
        let push = generic(&body, SECRET, None).unwrap();
        assert_eq!(push.branch, "main");
        assert_eq!(targets(&project(), &push).unwrap(), vec!["prod"]);
    }

    #[test]
    fn the_generic_form_needs_every_field() {
        let e = generic(r#"{"repo": "local", "branch": "develop"}"#, SECRET, None).unwrap_err();
        assert_eq!(e.to_string(), "generic webhook body: `commit`: missing");
        assert_eq!(e.status(), 400);
        let e = generic(
            r#"{"repo": "", "branch": "x", "commit": "ab"}"#,
            SECRET,
            None,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "generic webhook body: `repo`: is empty");
    }

    #[test]
    fn an_unknown_repo_is_404() {
        let body =
            github_body("refs/heads/develop", C1).replace("jsxf/CloudMatrix", "someone/else");
        let push = github(&body, SECRET, "push").unwrap();
        let e = targets(&project(), &push).unwrap_err();
        assert_eq!(e.status(), 404);
        assert_eq!(
            e.to_string(),
            "GitHub push for `someone/else`, which is no repo in marvin.yml (compared with every repo's `url`)"
        );
    }

    #[test]
    fn a_push_matches_by_full_name_when_no_url_does() {
        // GitHub Enterprise behind another host name: the full name still matches.
        let body = github_body("refs/heads/main", C1).replace("github.com", "ghe.internal");
        let push = github(&body, SECRET, "push").unwrap();
        let project = project();
        let repos = match_repos(&project, &push).unwrap();
        assert_eq!(repos.len(), 1);
        assert_eq!(repos[0].name, "backend");
    }

    #[test]
    fn a_push_to_an_untracked_branch_builds_nothing() {
        let push = github(&github_body("refs/heads/feature/x", C1), SECRET, "push").unwrap();
        assert_eq!(push.branch, "feature/x");
        assert!(targets(&project(), &push).unwrap().is_empty());
    }

    #[test]
    fn environments_to_build_follow_branch_overrides_and_push_triggers() {
        let p = project();
        assert_eq!(
            environments_to_build(&p, "backend", "develop"),
            vec!["dev", "qa"]
        );
        assert_eq!(environments_to_build(&p, "frontend", "develop"), vec!["qa"]);
        assert_eq!(environments_to_build(&p, "frontend", "dev"), vec!["dev"]);
        assert_eq!(environments_to_build(&p, "backend", "main"), vec!["prod"]);
        assert!(environments_to_build(&p, "backend", "staging").is_empty());
    }

    #[test]
    fn urls_normalise_across_forms() {
        let same = [
            "git@github.com:jsxf/CloudMatrix.git",
            "ssh://git@github.com/jsxf/CloudMatrix.git",
            "ssh://git@GitHub.com:22/jsxf/CloudMatrix",
            "https://github.com/jsxf/CloudMatrix",
            "https://user:token@github.com/jsxf/CloudMatrix.git/",
            "git://github.com/jsxf/CloudMatrix.git",
        ];
        for u in same {
            assert_eq!(normalize_url(u), "github.com/jsxf/CloudMatrix", "{u}");
        }
        assert_eq!(normalize_url("/srv/git/app.git"), "/srv/git/app");
        assert_eq!(normalize_url("file:///srv/git/app.git/"), "/srv/git/app");
        assert_eq!(normalize_url("./git/app"), "./git/app");
        assert_eq!(normalize_url("ssh://git@[::1]:2222/a/b.git"), "[::1]/a/b");
        assert_ne!(
            normalize_url("https://github.com/jsxf/cloudmatrix"),
            normalize_url("https://github.com/jsxf/CloudMatrix"),
            "paths keep their case"
        );
    }

    #[test]
    fn headers_match_without_regard_to_case() {
        let headers = [
            ("x-github-event", "push"),
            ("X-HUB-SIGNATURE-256", "sha256=00"),
        ];
        assert_eq!(provider_of(&headers), Some(Provider::GitHub));
        assert_eq!(header(&headers, "X-GitHub-Event"), Some("push"));
    }

    #[test]
    fn delivery_seen_refuses_replays_and_forgets_the_oldest() {
        let mut seen = DeliverySeen::new(3);
        assert!(seen.first_time("a"));
        assert!(!seen.first_time("a"));
        assert!(seen.first_time("b"));
        assert!(seen.first_time("c"));
        assert!(seen.first_time("d")); // forgets "a"
        assert_eq!(seen.len(), 3);
        assert!(!seen.first_time("d"));
        assert!(!seen.first_time("b"));
        assert!(seen.first_time("a"));
    }

    #[test]
    fn delivery_seen_holds_ten_thousand_by_default() {
        let mut seen = DeliverySeen::default();
        for i in 0..10_000 {
            assert!(seen.first_time(&format!("id-{i}")));
        }
        assert!(!seen.first_time("id-0"));
        assert!(seen.first_time("id-10000"));
        assert!(seen.first_time("id-0"), "the oldest was forgotten");
    }

    #[test]
    fn a_replayed_delivery_is_refused() {
        let push = github(&github_body("refs/heads/develop", C1), SECRET, "push").unwrap();
        let mut seen = DeliverySeen::default();
        assert!(seen.check(&push).is_ok());
        let e = seen.check(&push).unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(e.to_string().contains("was already received"), "{e}");
    }

    #[test]
    fn secrets_come_from_the_variables_marvin_yml_names() {
        let p = project();
        let env = |name: &str| match name {
            "MARVIN_WEBHOOK_SECRET" => Some(SECRET.to_string()),
            "TOOLS_HOOK_SECRET" => Some("tools-secret".to_string()),
            _ => None,
        };
        let secrets = WebhookSecrets::from_lookup(&p, env).unwrap();
        assert!(
            !format!("{secrets:?}").contains(SECRET),
            "Debug hides secrets"
        );
        let push = gitea(&gitea_body("refs/heads/develop", C1), "tools-secret").unwrap();
        assert_eq!(push.signed_with, vec![SecretScope::Repo("tools".into())]);

        let e = WebhookSecrets::from_lookup(&p, |n| {
            (n == "MARVIN_WEBHOOK_SECRET").then(|| SECRET.to_string())
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "repos.tools.webhook_secret_env names the environment variable `TOOLS_HOOK_SECRET`, which is not set or empty; export the webhook secret in it before starting Marvin"
        );
        let e = WebhookSecrets::from_lookup(&p, |_| Some(String::new())).unwrap_err();
        assert_eq!(e.path, "webhooks.secret_env");
    }

    #[test]
    fn error_messages_never_contain_the_secret() {
        let body = github_body("refs/heads/develop", C1);
        let cases = [
            github(&body, "guess", "push").unwrap_err(),
            github("{bad", SECRET, "push").unwrap_err(),
            gitlab(&body, "wrong", "Push Hook", None).unwrap_err(),
        ];
        for e in cases {
            assert!(!e.to_string().contains(SECRET), "{e}");
        }
    }

    #[test]
    fn accept_checks_signature_repo_and_replay_in_that_order() {
        let p = project();
        let mut seen = DeliverySeen::default();
        let body = github_body("refs/heads/develop", C1);
        let sig = sign(SECRET, body.as_bytes());
        let forged = sign("guess", body.as_bytes());
        fn headers(sig: &str) -> [(&str, &str); 3] {
            [
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", "d-42"),
                ("X-Hub-Signature-256", sig),
            ]
        }
        // A forged delivery with a genuine id is refused and not remembered...
        let e = accept(
            &headers(&forged),
            body.as_bytes(),
            &p,
            &secrets(),
            &mut seen,
        )
        .unwrap_err();
        assert_eq!(e.status(), 401);
        assert!(seen.is_empty());
        // ...so the genuine one still gets through, once.
        let ok = accept(&headers(&sig), body.as_bytes(), &p, &secrets(), &mut seen).unwrap();
        assert_eq!(ok.environments, vec!["dev", "qa"]);
        assert_eq!(ok.push.commit, C1);
        let e = accept(&headers(&sig), body.as_bytes(), &p, &secrets(), &mut seen).unwrap_err();
        assert!(matches!(e, WebhookError::Replayed { .. }), "{e}");
    }

    #[test]
    fn accept_answers_404_for_an_unknown_repo_without_remembering_it() {
        let p = project();
        let mut seen = DeliverySeen::default();
        let body = github_body("refs/heads/develop", C1).replace("jsxf/CloudMatrix", "x/y");
        let sig = sign(SECRET, body.as_bytes());
        let headers = [
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", sig.as_str()),
        ];
        let e = accept(&headers, body.as_bytes(), &p, &secrets(), &mut seen).unwrap_err();
        assert_eq!(e.status(), 404);
        assert!(seen.is_empty());
    }

    #[test]
    fn a_captured_delivery_replayed_under_a_new_id_is_refused_by_its_body() {
        let body = github_body("refs/heads/develop", C1);
        let sig = sign(SECRET, body.as_bytes());
        let first = [
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "id-1"),
            ("X-Hub-Signature-256", sig.as_str()),
        ];
        let forged_id = [
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "id-2"),
            ("X-Hub-Signature-256", sig.as_str()),
        ];
        let mut seen = DeliverySeen::default();
        assert!(
            seen.check(&parse(&first, body.as_bytes(), &secrets()).unwrap())
                .is_ok()
        );
        let replay = parse(&forged_id, body.as_bytes(), &secrets()).unwrap();
        assert!(matches!(
            seen.check(&replay),
            Err(WebhookError::Replayed { .. })
        ));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn gitlab_pushes_with_equal_bodies_and_different_ids_both_count() {
        // A→B, B→A, A→B: the first and third bodies are equal; GitLab's token
        // signs nothing, so only its event id tells replays apart.
        let body = gitlab_body("refs/heads/dev", C1);
        let a = gitlab(&body, SECRET, "Push Hook", Some("uuid-1")).unwrap();
        let b = gitlab(&body, SECRET, "Push Hook", Some("uuid-2")).unwrap();
        assert_eq!(a.replay_keys(), vec!["gitlab:uuid-1".to_string()]);
        let mut seen = DeliverySeen::default();
        assert!(seen.check(&a).is_ok());
        assert!(seen.check(&b).is_ok());
        assert!(seen.check(&a).is_err());
    }

    #[test]
    fn delivery_seen_forgets_all_keys_of_the_oldest_delivery_together() {
        let mut seen = DeliverySeen::new(2);
        assert!(seen.remember(vec!["a".into(), "a-body".into()]));
        assert!(seen.remember(vec!["b".into(), "b-body".into()]));
        assert!(
            !seen.remember(vec!["c".into(), "a-body".into()]),
            "one key seen is enough"
        );
        assert_eq!(seen.len(), 2, "a refused delivery adds nothing");
        assert!(seen.remember(vec!["c".into()]));
        assert!(seen.first_time("a-body"), "a's keys went together");
        assert!(!seen.first_time("c"));
    }
}
