//! Git sources: bare mirrors of the project's repos and the merged workspace.
//!
//! Every repo is mirrored under `<data_dir>/repos/<name>.git`; an
//! environment's branches resolve to [`Commit`]s, and a [`Workspace`] mounts
//! each repo at its path as one virtual tree read straight from git objects:
//! no checkout, so two builds of two commits never share files. Lookups go
//! by path through tree objects (never a walk of the whole tree), which keeps
//! a no-change plan fast however large the repos grow.
//!
//! Everything here blocks; async callers use `tokio::task::spawn_blocking`.

mod context;
pub mod dockerignore;
mod files;
mod mirror;
mod path;
mod workspace;

pub use mirror::Mirrors;
pub use workspace::{DirId, EntryKind, Workspace};

/// One repo of the project as the config gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    /// The repo's name in `marvin.yml`; also names its mirror.
    pub name: String,
    /// Where to fetch from: a path, `file://`, ssh (`git@host:path`, `ssh://`) or https.
    pub url: String,
    /// The mount point in the workspace; `""` or `"."` is the root.
    pub path: String,
}

impl RepoSpec {
    /// A repo spec with its mount path normalised (`"."`, `"./"` and `""` all mean the root).
    pub fn new(name: impl Into<String>, url: impl Into<String>, path: impl Into<String>) -> Self {
        let path = path.into();
        let path = path::normalise(&path).map_or(path, |c| c.join("/"));
        RepoSpec {
            name: name.into(),
            url: url.into(),
            path,
        }
    }
}

/// A resolved commit, shown in reports.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Commit {
    /// The repo's name.
    pub repo: String,
    /// The full hex id.
    pub id: String,
    /// The author's name.
    pub author: String,
    /// The author date, RFC 3339 with the author's offset (`2017-05-05T10:27:00+08:00`).
    pub date: String,
    /// The first paragraph of the message on one line, as `git log --format=%s` shows it.
    pub subject: String,
}

/// What went wrong reading a repo or the workspace; each names the repo or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The remote could not be reached or the fetch failed.
    #[error("repo `{repo}`: cannot fetch from {url}: {cause}")]
    Fetch {
        /// The repo's name.
        repo: String,
        /// The URL as configured.
        url: String,
        /// Why, as gix tells it.
        cause: String,
    },
    /// The branch does not exist in the mirror (after a sync, so not on the remote either).
    #[error("repo `{repo}` ({url}): branch `{branch}` not found; {}", branch_hint(.branch, .branches))]
    BranchNotFound {
        /// The repo's name.
        repo: String,
        /// The URL as configured.
        url: String,
        /// The branch asked for.
        branch: String,
        /// The branches the mirror has, sorted.
        branches: Vec<String>,
    },
    /// No commit with this id in the mirror.
    #[error("repo `{repo}` ({url}): commit `{id}` not found")]
    CommitNotFound {
        /// The repo's name.
        repo: String,
        /// The URL as configured.
        url: String,
        /// The id asked for.
        id: String,
    },
    /// The repo has never been synced, so there is no mirror to read.
    #[error("repo `{repo}`: no mirror at {path} yet; sync it first")]
    NoMirror {
        /// The repo's name.
        repo: String,
        /// Where the mirror should be.
        path: String,
    },
    /// A repo name that cannot name a mirror directory.
    #[error("repo name `{repo}` cannot name a mirror: use letters, digits, `-`, `_` or `.`")]
    InvalidRepoName {
        /// The name given.
        repo: String,
    },
    /// Reading or writing the mirror itself failed (disk, corrupt objects).
    #[error("repo `{repo}`: mirror at {path}: {cause}")]
    Mirror {
        /// The repo's name.
        repo: String,
        /// The mirror's directory.
        path: String,
        /// Why.
        cause: String,
    },
    /// A workspace path that is absolute or leaves the workspace root.
    #[error("path `{path}` {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A path reaches into a submodule, whose files are not part of the repo.
    #[error(
        "path `{path}` lies in submodule `{submodule}` of repo `{repo}`, whose files are not in the workspace"
    )]
    IntoSubmodule {
        /// The path as given.
        path: String,
        /// The submodule's workspace path.
        submodule: String,
        /// The repo holding the submodule.
        repo: String,
    },
    /// A symlink that points outside the workspace.
    #[error("path `{path}`: symlink `{link}` points outside the workspace (to `{target}`)")]
    SymlinkEscapes {
        /// The path as given.
        path: String,
        /// The symlink's workspace path.
        link: String,
        /// Its target text.
        target: String,
    },
    /// Symlinks that refer to each other without end.
    #[error("path `{path}`: too many levels of symlinks")]
    SymlinkLoop {
        /// The path as given.
        path: String,
    },
    /// A file was expected but the path is something else.
    #[error("path `{path}` is a {found}, not a file")]
    NotAFile {
        /// The path as given.
        path: String,
        /// What it is.
        found: &'static str,
    },
    /// A directory was expected but the path is something else.
    #[error("path `{path}` is a {found}, not a directory")]
    NotADirectory {
        /// The path as given.
        path: String,
        /// What it is.
        found: &'static str,
    },
    /// The build context directory exists in no repo.
    #[error("build context `{path}` does not exist in the workspace")]
    ContextNotFound {
        /// The context path as given.
        path: String,
    },
    /// The context's `.dockerignore` cannot be read.
    #[error("{path}: {source}")]
    DockerIgnore {
        /// The workspace path of the `.dockerignore`.
        path: String,
        /// Which line and why.
        source: dockerignore::DockerIgnoreError,
    },
    /// Writing the tar archive failed (a name tar cannot hold).
    #[error("build context: cannot archive `{path}`: {cause}")]
    Tar {
        /// The path inside the context.
        path: String,
        /// Why.
        cause: String,
    },
    /// Two repos given to one workspace with the same mount path.
    #[error("repos `{first}` and `{second}` are both mounted at `{path}`")]
    OverlappingMounts {
        /// The first repo.
        first: String,
        /// The second repo.
        second: String,
        /// The shared mount path.
        path: String,
    },
}

/// An error and its causes on one line, each cause once, outermost first.
pub(crate) fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut push = |text: String| {
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    };
    if let Some(gix_error) = error.downcast_ref::<gix::Error>() {
        // gix keeps its causes as a tree; its `source()` shows only one path.
        gix_error.iter_errors().for_each(|e| push(e.to_string()));
    } else {
        let mut next = Some(error);
        while let Some(e) = next {
            push(e.to_string());
            next = e.source();
        }
    }
    parts.join(": ")
}

fn branch_hint(branch: &str, branches: &[String]) -> String {
    if branches.is_empty() {
        return "the repo has no branches".to_string();
    }
    let listed: Vec<String> = branches.iter().map(|b| format!("`{b}`")).collect();
    let listed = format!("branches: {}", listed.join(", "));
    let hint = crate::suggest::hint(branch, branches.iter().map(String::as_str));
    if hint.starts_with("did you mean") {
        format!("{hint} {listed}")
    } else {
        listed
    }
}
