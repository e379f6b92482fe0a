//! The merged virtual tree: every repo mounted at its path, read from git objects.

use std::sync::Arc;

use gix::ObjectId;

use super::{Commit, SourceError, path};

/// How many symlinks one lookup may follow, as Linux's `MAXSYMLINKS`.
const MAX_SYMLINK_HOPS: usize = 40;

/// One repo at one commit, mounted at a workspace path.
pub(crate) struct Mount {
    pub(crate) repo_name: String,
    pub(crate) at: Vec<String>,
    pub(crate) commit: Commit,
    /// The commit's root tree.
    pub(crate) tree: ObjectId,
    pub(crate) repo: gix::ThreadSafeRepository,
}

/// The merged virtual tree: every repo mounted at its path, read from git objects, no checkout.
///
/// Cheap to clone and safe to share between threads; each call makes its
/// own thread-local view of the already opened repos.
#[derive(Clone)]
pub struct Workspace {
    /// Deepest mount first, so the first prefix match is the longest.
    mounts: Arc<Vec<Mount>>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for m in self.mounts.iter() {
            list.entry(&format_args!(
                "{}@{} at `{}`",
                m.repo_name,
                m.commit.id,
                m.at.join("/")
            ));
        }
        list.finish()
    }
}

/// The identity of a workspace directory for build keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DirId {
    /// The git tree id (hex) of the directory in the repo that holds it.
    pub tree: String,
    /// Every other repo mounted beneath it: (mount path relative to the directory, root tree id), sorted.
    pub mounts: Vec<(String, String)>,
}

/// What a workspace path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory of some repo, or one that only holds mount points.
    Dir,
    /// A regular or executable file (after following symlinks).
    File,
    /// A submodule: a commit of another repository, whose files are not here.
    Submodule,
}

/// A resolved workspace path.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A tree of the repo at `mount`.
    Tree {
        mount: usize,
        id: ObjectId,
        at: Vec<String>,
    },
    /// A directory no repo has, present only because repos are mounted beneath it.
    Virtual { at: Vec<String> },
    /// A file.
    Blob { mount: usize, id: ObjectId },
    /// A submodule entry.
    Submodule { mount: usize, at: Vec<String> },
}

/// One entry of a merged directory listing.
#[derive(Debug, Clone)]
pub(crate) enum Child {
    /// A directory: its tree (mount index, id) if some repo has it.
    Dir(Option<(usize, ObjectId)>),
    /// A file, executable or not.
    File {
        mount: usize,
        id: ObjectId,
        executable: bool,
    },
    /// A symlink with its target text.
    Link { target: Vec<u8> },
    /// A submodule (a commit entry).
    Submodule,
}

impl Workspace {
    pub(crate) fn new(mut mounts: Vec<Mount>) -> Self {
        mounts.sort_by(|a, b| b.at.len().cmp(&a.at.len()).then(a.at.cmp(&b.at)));
        Workspace {
            mounts: Arc::new(mounts),
        }
    }

    /// The (repo, commit) pairs mounted, in no particular order.
    pub fn commits(&self) -> impl Iterator<Item = &Commit> {
        self.mounts.iter().map(|m| &m.commit)
    }

    /// File contents at a workspace path (e.g. "fe/web/Dockerfile"); None when absent. Follows no symlink outside the workspace.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
        let repos = self.repos();
        match self.resolve(&repos, path)? {
            None => Ok(None),
            Some(Node::Blob { mount, id }) => {
                let blob = repos[mount]
                    .find_blob(id)
                    .map_err(|e| self.object_error(mount, e))?;
                Ok(Some(blob.data.clone()))
            }
            Some(other) => Err(self.not_a_file(path, &other)),
        }
    }

    /// The blob id (hex) of a file at a workspace path; None when absent.
    ///
    /// A symlink is followed to the file it names, so a key made from this
    /// changes when the content does.
    pub fn blob_id(&self, path: &str) -> Result<Option<String>, SourceError> {
        let repos = self.repos();
        match self.resolve(&repos, path)? {
            None => Ok(None),
            Some(Node::Blob { id, .. }) => Ok(Some(id.to_string())),
            Some(other) => Err(self.not_a_file(path, &other)),
        }
    }

    /// The identity of a directory for build keys: the git tree id (hex) of the directory in the repo that
    /// holds it, plus the tree ids of every other repo mounted beneath it (as (relative mount path, tree id)),
    /// sorted. None when the directory exists in no repo. For a plain directory this is exactly
    /// `git rev-parse <commit>:<path>`.
    ///
    /// A directory that only exists because repos are mounted beneath it has
    /// the empty tree's id. Symlinks inside it are not followed: the tree id
    /// covers their targets' text.
    pub fn dir_id(&self, path: &str) -> Result<Option<DirId>, SourceError> {
        let repos = self.repos();
        let (tree, at) = match self.resolve(&repos, path)? {
            None => return Ok(None),
            Some(Node::Tree { id, at, .. }) => (id, at),
            Some(Node::Virtual { at }) => (ObjectId::empty_tree(gix::hash::Kind::Sha1), at),
            Some(Node::Submodule { mount, at }) => {
                return Err(self.submodule_error(path, mount, &at));
            }
            Some(Node::Blob { .. }) => {
                return Err(SourceError::NotADirectory {
                    path: path.to_string(),
                    found: "file",
                });
            }
        };
        let mut mounts: Vec<(String, String)> = self
            .mounts
            .iter()
            .filter(|m| m.at.len() > at.len() && m.at.starts_with(&at))
            .map(|m| (m.at[at.len()..].join("/"), m.tree.to_string()))
            .collect();
        mounts.sort();
        Ok(Some(DirId {
            tree: tree.to_string(),
            mounts,
        }))
    }

    /// Whether a path is a directory / a file in the workspace.
    pub fn kind(&self, path: &str) -> Result<Option<EntryKind>, SourceError> {
        let repos = self.repos();
        Ok(self.resolve(&repos, path)?.map(|node| match node {
            Node::Tree { .. } | Node::Virtual { .. } => EntryKind::Dir,
            Node::Blob { .. } => EntryKind::File,
            Node::Submodule { .. } => EntryKind::Submodule,
        }))
    }

    /// A thread-local handle per mount, in mount order.
    pub(crate) fn repos(&self) -> Vec<gix::Repository> {
        self.mounts
            .iter()
            .map(|m| m.repo.to_thread_local())
            .collect()
    }

    /// Resolve a workspace path, following symlinks (also the last
    /// component) as long as they stay inside the workspace.
    pub(crate) fn resolve(
        &self,
        repos: &[gix::Repository],
        path: &str,
    ) -> Result<Option<Node>, SourceError> {
        let mut at = path::components(path)?;
        let mut hops = 0;
        'restart: loop {
            let Some(mount) = self.mounts.iter().position(|m| at.starts_with(&m.at)) else {
                return Ok(self.virtual_dir(&at));
            };
            let repo = &repos[mount];
            let mut id = self.mounts[mount].tree;
            for i in self.mounts[mount].at.len()..at.len() {
                let tree = repo
                    .find_tree(id)
                    .map_err(|e| self.object_error(mount, e))?;
                let Some(entry) = tree.find_entry(at[i].as_str()) else {
                    return Ok(self.virtual_dir(&at));
                };
                let mode = entry.mode();
                let entry_id = entry.object_id();
                let last = i + 1 == at.len();
                if mode.is_tree() {
                    id = entry_id;
                } else if mode.is_commit() {
                    let sub = at[..=i].to_vec();
                    return if last {
                        Ok(Some(Node::Submodule { mount, at: sub }))
                    } else {
                        Err(self.submodule_error(path, mount, &sub))
                    };
                } else if mode.is_link() {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(SourceError::SymlinkLoop {
                            path: path.to_string(),
                        });
                    }
                    let blob = repo
                        .find_blob(entry_id)
                        .map_err(|e| self.object_error(mount, e))?;
                    let target = String::from_utf8_lossy(&blob.data).into_owned();
                    let escapes = || SourceError::SymlinkEscapes {
                        path: path.to_string(),
                        link: at[..=i].join("/"),
                        target: target.clone(),
                    };
                    if target.starts_with('/') {
                        return Err(escapes());
                    }
                    let mut next = at[..i].to_vec();
                    for part in target.split('/') {
                        match part {
                            "" | "." => {}
                            ".." => {
                                next.pop().ok_or_else(escapes)?;
                            }
                            name => next.push(name.to_string()),
                        }
                    }
                    next.extend_from_slice(&at[i + 1..]);
                    at = next;
                    continue 'restart;
                } else if last {
                    return Ok(Some(Node::Blob {
                        mount,
                        id: entry_id,
                    }));
                } else {
                    // A file used as a directory: nothing there.
                    return Ok(None);
                }
            }
            return Ok(Some(Node::Tree { mount, id, at }));
        }
    }

    /// The merged listing of a directory: its tree's entries, with repos
    /// mounted directly beneath it in place of (or beside) them, and
    /// directories leading to deeper mounts. Sorted by name.
    pub(crate) fn children(
        &self,
        repos: &[gix::Repository],
        at: &[String],
        tree: Option<(usize, ObjectId)>,
    ) -> Result<Vec<(String, Child)>, SourceError> {
        let mut out: std::collections::BTreeMap<String, Child> = std::collections::BTreeMap::new();
        if let Some((mount, id)) = tree {
            let repo = &repos[mount];
            let tree = repo
                .find_tree(id)
                .map_err(|e| self.object_error(mount, e))?;
            for entry in tree.iter() {
                let entry = entry.map_err(|e| self.object_error(mount, e))?;
                let name = entry.filename().to_string();
                let mode = entry.mode();
                let id = entry.object_id();
                let child = if mode.is_tree() {
                    Child::Dir(Some((mount, id)))
                } else if mode.is_commit() {
                    Child::Submodule
                } else if mode.is_link() {
                    let blob = repo
                        .find_blob(id)
                        .map_err(|e| self.object_error(mount, e))?;
                    Child::Link {
                        target: blob.data.clone(),
                    }
                } else {
                    Child::File {
                        mount,
                        id,
                        executable: mode.is_executable(),
                    }
                };
                out.insert(name, child);
            }
        }
        for (index, m) in self.mounts.iter().enumerate() {
            if m.at.len() <= at.len() || !m.at.starts_with(at) {
                continue;
            }
            let name = m.at[at.len()].clone();
            if m.at.len() == at.len() + 1 {
                out.insert(name, Child::Dir(Some((index, m.tree))));
            } else {
                let entry = out.entry(name).or_insert(Child::Dir(None));
                // A deeper mount needs a directory on its way, whatever the repo had there.
                if !matches!(entry, Child::Dir(_)) {
                    *entry = Child::Dir(None);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn virtual_dir(&self, at: &[String]) -> Option<Node> {
        self.mounts
            .iter()
            .any(|m| m.at.len() > at.len() && m.at.starts_with(at))
            .then(|| Node::Virtual { at: at.to_vec() })
    }

    pub(crate) fn object_error(
        &self,
        mount: usize,
        cause: impl std::error::Error + 'static,
    ) -> SourceError {
        let m = &self.mounts[mount];
        SourceError::Mirror {
            repo: m.repo_name.clone(),
            path: m.repo.path().display().to_string(),
            cause: super::one_line(&cause),
        }
    }

    pub(crate) fn submodule_error(&self, path: &str, mount: usize, at: &[String]) -> SourceError {
        SourceError::IntoSubmodule {
            path: path.to_string(),
            submodule: at.join("/"),
            repo: self.mounts[mount].repo_name.clone(),
        }
    }

    fn not_a_file(&self, path: &str, node: &Node) -> SourceError {
        match node {
            Node::Submodule { mount, at } => self.submodule_error(path, *mount, at),
            _ => SourceError::NotAFile {
                path: path.to_string(),
                found: "directory",
            },
        }
    }
}
