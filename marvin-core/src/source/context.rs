//! Build contexts as tar archives written straight from git objects.

use std::collections::BTreeMap;

use gix::ObjectId;

use super::dockerignore::{self, DockerIgnore};
use super::workspace::{Child, Node, Workspace};
use super::{SourceError, path};

/// Every entry's mtime: fixed, so one tree always gives the same bytes
/// whichever commit or branch it came from.
const MTIME: u64 = 0;

impl Workspace {
    /// A tar archive of the directory `context` (merged across mounts beneath it), honouring the
    /// `.dockerignore` at the context root (Docker's syntax: patterns, `**`, `!` exceptions, comments;
    /// Dockerfile and .dockerignore are always sent), with optional file replacements (path in the
    /// context → bytes) used to send a Dockerfile that lives outside the context, or a rewritten one.
    ///
    /// Replacement paths are always sent too, so a Dockerfile with another
    /// name belongs in `extra`. Files keep their executable bit, symlinks
    /// stay symlinks (never followed), submodules become empty directories
    /// as in `git archive`; every entry is owned by root with mtime 0.
    pub fn context_tar(
        &self,
        context: &str,
        extra: &[(String, Vec<u8>)],
    ) -> Result<Vec<u8>, SourceError> {
        let repos = self.repos();
        let (tree, at) = match self.resolve(&repos, context)? {
            Some(Node::Tree { mount, id, at }) => (Some((mount, id)), at),
            Some(Node::Virtual { at }) => (None, at),
            Some(Node::Submodule { mount, at }) => {
                return Err(self.submodule_error(context, mount, &at));
            }
            Some(Node::Blob { .. }) => {
                return Err(SourceError::NotADirectory {
                    path: context.to_string(),
                    found: "file",
                });
            }
            None => {
                return Err(SourceError::ContextNotFound {
                    path: context.to_string(),
                });
            }
        };
        let root = at.join("/");

        let mut extras: BTreeMap<String, &[u8]> = BTreeMap::new();
        for (p, bytes) in extra {
            let normal = path::normalise(p)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| SourceError::InvalidPath {
                    path: p.clone(),
                    reason: "is no file path inside the build context",
                })?;
            extras.insert(normal.join("/"), bytes.as_slice());
        }

        let ignore_path = join(&root, ".dockerignore");
        let mut ignore = match self.resolve(&repos, &ignore_path)? {
            Some(Node::Blob { mount, id }) => {
                let blob = repos[mount]
                    .find_blob(id)
                    .map_err(|e| self.object_error(mount, e))?;
                let text = String::from_utf8_lossy(&blob.data);
                dockerignore::parse(&text).map_err(|source| SourceError::DockerIgnore {
                    path: ignore_path.clone(),
                    source,
                })?
            }
            _ => DockerIgnore::default(),
        };
        if let Some(text) = extras.get(".dockerignore") {
            ignore = dockerignore::parse(&String::from_utf8_lossy(text)).map_err(|source| {
                SourceError::DockerIgnore {
                    path: ignore_path.clone(),
                    source,
                }
            })?;
        }
        ignore.always_send(".dockerignore");
        ignore.always_send("Dockerfile");
        for p in extras.keys() {
            ignore.always_send(p);
        }

        let mut archive = Archive {
            ws: self,
            repos: &repos,
            ignore: &ignore,
            extras,
            tar: tar::Builder::new(Vec::new()),
        };
        archive.dir(&at, tree, "")?;
        let Archive {
            extras, mut tar, ..
        } = archive;
        for (p, bytes) in extras {
            append_file(&mut tar, &p, bytes, false)?;
        }
        tar.into_inner().map_err(|e| tar_error(&root, e))
    }
}

struct Archive<'w, 'e> {
    ws: &'w Workspace,
    repos: &'w [gix::Repository],
    ignore: &'w DockerIgnore,
    /// Replacements not yet written.
    extras: BTreeMap<String, &'e [u8]>,
    tar: tar::Builder<Vec<u8>>,
}

impl Archive<'_, '_> {
    /// Write the entries of one directory (`rel` inside the context, `at` in the workspace).
    fn dir(
        &mut self,
        at: &[String],
        tree: Option<(usize, ObjectId)>,
        rel: &str,
    ) -> Result<(), SourceError> {
        for (name, child) in self.ws.children(self.repos, at, tree)? {
            let rel = join(rel, &name);
            let excluded = self.ignore.is_excluded(&rel);
            let replacement = self.extras.remove(&rel);
            match child {
                Child::Dir(_) | Child::Submodule if replacement.is_none() => {
                    if excluded && !self.ignore.may_include_beneath(&rel) {
                        continue;
                    }
                    if !excluded {
                        append_dir(&mut self.tar, &rel)?;
                    }
                    if let Child::Dir(tree) = child {
                        let mut at = at.to_vec();
                        at.push(name);
                        self.dir(&at, tree, &rel)?;
                    }
                }
                Child::File {
                    mount,
                    id,
                    executable,
                } => match replacement {
                    Some(bytes) => append_file(&mut self.tar, &rel, bytes, executable)?,
                    None if excluded => {}
                    None => {
                        let blob = self.repos[mount]
                            .find_blob(id)
                            .map_err(|e| self.ws.object_error(mount, e))?;
                        append_file(&mut self.tar, &rel, &blob.data, executable)?;
                    }
                },
                _ => match replacement {
                    Some(bytes) => append_file(&mut self.tar, &rel, bytes, false)?,
                    None if excluded => {}
                    None => {
                        if let Child::Link { target } = child {
                            append_link(&mut self.tar, &rel, &target)?;
                        }
                    }
                },
            }
        }
        Ok(())
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, rel: &str) -> Result<(), SourceError> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, format!("{rel}/"), std::io::empty())
        .map_err(|e| tar_error(rel, e))
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    rel: &str,
    bytes: &[u8],
    executable: bool,
) -> Result<(), SourceError> {
    let mode = if executable { 0o755 } else { 0o644 };
    let mut h = header(tar::EntryType::Regular, mode, bytes.len() as u64);
    tar.append_data(&mut h, rel, bytes)
        .map_err(|e| tar_error(rel, e))
}

fn append_link(
    tar: &mut tar::Builder<Vec<u8>>,
    rel: &str,
    target: &[u8],
) -> Result<(), SourceError> {
    let target = String::from_utf8_lossy(target);
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut h, rel, target.as_ref())
        .map_err(|e| tar_error(rel, e))
}

fn tar_error(path: &str, cause: std::io::Error) -> SourceError {
    SourceError::Tar {
        path: path.to_string(),
        cause: cause.to_string(),
    }
}
