//! Bare mirrors of the project's repos, kept up to date by incremental fetches.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gix::remote::Direction;

use super::workspace::{Mount, Workspace};
use super::{Commit, RepoSpec, SourceError, path};

/// The refspec of a mirror: every branch, force-updated, under its own name.
const MIRROR_REFSPEC: &str = "+refs/heads/*:refs/heads/*";

/// The mirrors of a project's repos under `<data_dir>/repos/<name>.git` (bare).
#[derive(Debug)]
pub struct Mirrors {
    root: PathBuf,
    /// One lock per repo so two jobs syncing the same mirror take turns
    /// instead of racing for ref locks.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Tells concurrent first clones apart in their temporary directories.
    clone_counter: AtomicU64,
}

impl Mirrors {
    /// Mirrors kept under `<data_dir>/repos/`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Mirrors {
            root: data_dir.into().join("repos"),
            locks: Mutex::new(HashMap::new()),
            clone_counter: AtomicU64::new(0),
        }
    }

    /// Where mounted files are written (`<data_dir>/files/`, beside the mirrors).
    pub fn files_root(&self) -> PathBuf {
        crate::materialize::files_root(self.root.parent().unwrap_or(&self.root))
    }

    /// The directory of a repo's mirror.
    pub fn mirror_dir(&self, repo: &RepoSpec) -> Result<PathBuf, SourceError> {
        let name = &repo.name;
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(SourceError::InvalidRepoName { repo: name.clone() });
        }
        Ok(self.root.join(format!("{name}.git")))
    }

    /// Whether the mirror of this repo exists (a first sync has completed).
    pub fn has(&self, repo: &RepoSpec) -> bool {
        self.mirror_dir(repo).map(|d| d.is_dir()).unwrap_or(false)
    }

    /// Clone (bare, mirror refspec +refs/heads/*:refs/heads/*) when absent, else fetch incrementally.
    ///
    /// Branches deleted on the remote are deleted in the mirror too. A first
    /// clone goes to a temporary directory and is renamed into place only
    /// when complete, so a failed clone leaves nothing behind.
    ///
    /// Every Marvin process sharing the data directory takes turns on a
    /// mirror (a file lock, `repos/.<name>.lock`, besides the in-process
    /// lock), so concurrent first clones and fetches never race. A caller
    /// that waited while another process fetched, in a fetch that *started*
    /// after this call was made, takes that fetch as its own instead of
    /// repeating it: what the remote had when it asked is in the mirror.
    pub fn sync(&self, repo: &RepoSpec) -> Result<(), SourceError> {
        let dir = self.mirror_dir(repo)?;
        let asked = now_nanos();
        let lock = self.lock_for(&repo.name);
        let _turn = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        std::fs::create_dir_all(&self.root).map_err(|e| mirror_error(repo, &self.root, e))?;
        let _process_turn = self.process_lock(repo)?;
        let stamp = self.root.join(format!(".{}.fetched", repo.name));
        if dir.exists() {
            if fetch_started_at(&stamp).is_some_and(|started| started >= asked) {
                return Ok(());
            }
            let started = now_nanos();
            remove_stale_locks(&dir);
            let mirror = open(repo, &dir)?;
            fetch(repo, &mirror)?;
            record_fetch(&stamp, started);
            return Ok(());
        }
        let started = now_nanos();
        let n = self.clone_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join(format!(".{}.git.tmp-{}-{n}", repo.name, std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| mirror_error(repo, &tmp, e))?;
        }
        let result = gix::init_bare(&tmp)
            .map_err(|e| mirror_error(repo, &tmp, e))
            .and_then(|mirror| fetch(repo, &mirror))
            .and_then(|()| std::fs::rename(&tmp, &dir).map_err(|e| mirror_error(repo, &dir, e)));
        match result {
            Ok(()) => record_fetch(&stamp, started),
            // Best effort: the error that matters is the one being returned.
            Err(_) => drop(std::fs::remove_dir_all(&tmp)),
        }
        result
    }

    /// This process's turn on a repo's mirror among every process sharing
    /// the data directory; released when the returned file is dropped (and
    /// by the kernel when the process dies, so a killed Marvin blocks no one).
    fn process_lock(&self, repo: &RepoSpec) -> Result<std::fs::File, SourceError> {
        let path = self.root.join(format!(".{}.lock", repo.name));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| mirror_error(repo, &path, e))?;
        file.lock().map_err(|e| mirror_error(repo, &path, e))?;
        Ok(file)
    }

    /// The commit a branch points at in the mirror (after sync).
    pub fn resolve(&self, repo: &RepoSpec, branch: &str) -> Result<Commit, SourceError> {
        let mirror = open(repo, &self.mirror_dir(repo)?)?;
        let not_found = || SourceError::BranchNotFound {
            repo: repo.name.clone(),
            url: repo.url.clone(),
            branch: branch.to_string(),
            branches: branches(repo, &mirror).unwrap_or_default(),
        };
        let full_name = format!("refs/heads/{branch}");
        let Ok(name) = gix::refs::FullName::try_from(full_name.as_str()) else {
            return Err(not_found());
        };
        let mut reference = mirror
            .try_find_reference(&name)
            .map_err(|e| mirror_error(repo, mirror.path(), e))?
            .ok_or_else(not_found)?;
        let commit = reference
            .peel_to_commit()
            .map_err(|e| mirror_error(repo, mirror.path(), e))?;
        describe(repo, &mirror, &commit)
    }

    /// A commit by id (for rollbacks that rebuild from recorded commits).
    pub fn commit(&self, repo: &RepoSpec, id: &str) -> Result<Commit, SourceError> {
        let mirror = open(repo, &self.mirror_dir(repo)?)?;
        let not_found = || SourceError::CommitNotFound {
            repo: repo.name.clone(),
            url: repo.url.clone(),
            id: id.to_string(),
        };
        let oid = gix::ObjectId::from_hex(id.as_bytes()).map_err(|_| not_found())?;
        let object = mirror
            .try_find_object(oid)
            .map_err(|e| mirror_error(repo, mirror.path(), e))?
            .ok_or_else(not_found)?;
        let commit = object.try_into_commit().map_err(|_| not_found())?;
        describe(repo, &mirror, &commit)
    }

    /// Open the merged workspace for these (repo, commit) pairs.
    ///
    /// Each mirror is opened once here; the workspace reads only git objects
    /// from then on, so it stays valid while the mirrors are fetched again.
    pub fn workspace(&self, mounts: &[(RepoSpec, Commit)]) -> Result<Workspace, SourceError> {
        let mut opened: HashMap<&str, gix::ThreadSafeRepository> = HashMap::new();
        let mut taken: HashMap<String, &str> = HashMap::new();
        let mut out = Vec::with_capacity(mounts.len());
        for (spec, commit) in mounts {
            let at = path::components(&spec.path)?;
            if let Some(first) = taken.insert(at.join("/"), &spec.name) {
                return Err(SourceError::OverlappingMounts {
                    first: first.to_string(),
                    second: spec.name.clone(),
                    path: at.join("/"),
                });
            }
            let repo = match opened.get(spec.name.as_str()) {
                Some(repo) => repo.clone(),
                None => {
                    let repo = open(spec, &self.mirror_dir(spec)?)?.into_sync();
                    opened.insert(&spec.name, repo.clone());
                    repo
                }
            };
            let tree = {
                let local = repo.to_thread_local();
                let not_found = || SourceError::CommitNotFound {
                    repo: spec.name.clone(),
                    url: spec.url.clone(),
                    id: commit.id.clone(),
                };
                let oid = gix::ObjectId::from_hex(commit.id.as_bytes()).map_err(|_| not_found())?;
                let found = local
                    .try_find_object(oid)
                    .map_err(|e| mirror_error(spec, local.path(), e))?
                    .ok_or_else(not_found)?
                    .try_into_commit()
                    .map_err(|_| not_found())?;
                found
                    .tree_id()
                    .map(gix::Id::detach)
                    .map_err(|e| mirror_error(spec, local.path(), e))?
            };
            out.push(Mount {
                repo_name: spec.name.clone(),
                at,
                commit: commit.clone(),
                tree,
                repo,
            });
        }
        Ok(Workspace::new(out))
    }

    fn lock_for(&self, name: &str) -> Arc<Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.entry(name.to_string()).or_default().clone()
    }
}

fn mirror_error(
    repo: &RepoSpec,
    path: &Path,
    cause: impl std::error::Error + 'static,
) -> SourceError {
    SourceError::Mirror {
        repo: repo.name.clone(),
        path: path.display().to_string(),
        cause: super::one_line(&cause),
    }
}

/// Remove the git lock files (`refs/heads/main.lock`, `packed-refs.lock`…)
/// a process killed mid-fetch left in a mirror. Only the holder of the
/// mirror's process lock writes to it, so any lock file found by the holder
/// is stale; left in place it would fail every later fetch. Best effort.
fn remove_stale_locks(dir: &Path) {
    fn walk(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => walk(&path),
                Ok(_) if path.extension().is_some_and(|e| e == "lock") => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
    }
    for top in [
        "HEAD.lock",
        "config.lock",
        "packed-refs.lock",
        "shallow.lock",
    ] {
        let _ = std::fs::remove_file(dir.join(top));
    }
    walk(&dir.join("refs"));
}

/// Nanoseconds since the Unix epoch (0 on a clock before it).
fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// When the last successful fetch of a mirror started, if recorded.
fn fetch_started_at(stamp: &Path) -> Option<u128> {
    std::fs::read_to_string(stamp).ok()?.trim().parse().ok()
}

/// Record when a successful fetch started. Best effort: without the stamp
/// the next caller fetches again, which is only slower.
fn record_fetch(stamp: &Path, started: u128) {
    let tmp = stamp.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&tmp, started.to_string()).is_ok() && std::fs::rename(&tmp, stamp).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

fn open(repo: &RepoSpec, dir: &Path) -> Result<gix::Repository, SourceError> {
    if !dir.exists() {
        return Err(SourceError::NoMirror {
            repo: repo.name.clone(),
            path: dir.display().to_string(),
        });
    }
    gix::open(dir).map_err(|e| mirror_error(repo, dir, e))
}

/// Fetch every branch of the remote into the mirror and drop the branches
/// the remote no longer has.
fn fetch(repo: &RepoSpec, mirror: &gix::Repository) -> Result<(), SourceError> {
    let cause = |e: gix::Error| SourceError::Fetch {
        repo: repo.name.clone(),
        url: repo.url.clone(),
        cause: super::one_line(&e),
    };
    let remote = mirror
        .remote_at(repo.url.as_str())
        .map_err(cause)?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs([MIRROR_REFSPEC], Direction::Fetch)
        .map_err(cause)?;
    let prepare = remote
        .connect(Direction::Fetch)
        .map_err(cause)?
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(cause)?;
    // Prune before receiving: a deleted `feature` must go before `feature/x` can be written.
    prune(repo, mirror, &prepare.ref_map().remote_refs)?;
    prepare
        .receive(gix::progress::Discard, &AtomicBool::new(false))
        .map_err(cause)?;
    Ok(())
}

/// Delete the mirror's branches that the remote no longer advertises.
fn prune(
    repo: &RepoSpec,
    mirror: &gix::Repository,
    remote_refs: &[gix::protocol::handshake::Ref],
) -> Result<(), SourceError> {
    use gix::protocol::handshake::Ref;
    let on_remote: HashSet<&[u8]> = remote_refs
        .iter()
        .filter_map(|r| match r {
            Ref::Direct { full_ref_name, .. }
            | Ref::Peeled { full_ref_name, .. }
            | Ref::Symbolic { full_ref_name, .. } => Some(full_ref_name.as_slice()),
            Ref::Unborn { .. } => None,
        })
        .collect();
    let stale: Vec<gix::refs::FullName> = mirror
        .references()
        .and_then(|refs| {
            refs.local_branches()?
                .filter_map(Result::ok)
                .filter(|r| !on_remote.contains(r.name().as_bstr().as_ref() as &[u8]))
                .map(|r| Ok(r.name().to_owned()))
                .collect()
        })
        .map_err(|e| mirror_error(repo, mirror.path(), e))?;
    for name in stale {
        if let Some(reference) = mirror
            .try_find_reference(&name)
            .map_err(|e| mirror_error(repo, mirror.path(), e))?
        {
            reference
                .delete()
                .map_err(|e| mirror_error(repo, mirror.path(), e))?;
        }
    }
    Ok(())
}

/// The mirror's branch names, sorted, for "did you mean".
fn branches(repo: &RepoSpec, mirror: &gix::Repository) -> Result<Vec<String>, SourceError> {
    let mut names: Vec<String> = mirror
        .references()
        .and_then(|refs| {
            Ok(refs
                .local_branches()?
                .filter_map(Result::ok)
                .map(|r| r.name().shorten().to_string())
                .collect())
        })
        .map_err(|e| mirror_error(repo, mirror.path(), e))?;
    names.sort();
    Ok(names)
}

fn describe(
    repo: &RepoSpec,
    mirror: &gix::Repository,
    commit: &gix::Commit<'_>,
) -> Result<Commit, SourceError> {
    let corrupt = |e: gix::Error| mirror_error(repo, mirror.path(), e);
    let author = commit.author().map_err(corrupt)?;
    let time = author.time().map_err(corrupt)?;
    let date = time
        .format(gix::date::time::format::ISO8601_STRICT)
        .map_err(|e| mirror_error(repo, mirror.path(), e))?;
    let subject = commit.message().map_err(corrupt)?.summary().to_string();
    Ok(Commit {
        repo: repo.name.clone(),
        id: commit.id().to_string(),
        author: author.trim().name.to_string(),
        date,
        subject,
    })
}
