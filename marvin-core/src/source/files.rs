//! Workspace files and directories written to disk, for mounts (no checkout:
//! straight from git objects, like build contexts).

use std::io;
use std::path::Path;

use gix::ObjectId;

use super::workspace::{Child, Node, Workspace};
use super::{SourceError, path};

impl Workspace {
    /// The blob id (hex) of a file and whether git marks it executable; None when absent.
    pub fn file_entry(&self, file: &str) -> Result<Option<(String, bool)>, SourceError> {
        let repos = self.repos();
        let id = match self.resolve(&repos, file)? {
            None => return Ok(None),
            Some(Node::Blob { id, .. }) => id,
            Some(_) => {
                return Err(SourceError::NotAFile {
                    path: file.to_string(),
                    found: "directory",
                });
            }
        };
        // The mode lives in the parent's listing (a symlink's target counts as plain).
        let mut at = path::components(file)?;
        let name = at.pop().unwrap_or_default();
        let executable = match self.resolve(&repos, &at.join("/"))? {
            Some(Node::Tree {
                mount,
                id: tree,
                at,
            }) => self
                .children(&repos, &at, Some((mount, tree)))?
                .into_iter()
                .any(|(n, c)| {
                    n == name
                        && matches!(
                            c,
                            Child::File {
                                executable: true,
                                ..
                            }
                        )
                }),
            _ => false,
        };
        Ok(Some((id.to_string(), executable)))
    }

    /// Write the file at `file` to `dest` (mode 0644, or 0755 when executable).
    pub fn write_file(&self, file: &str, executable: bool, dest: &Path) -> io::Result<()> {
        let bytes = self
            .read_file(file)
            .map_err(io::Error::other)?
            .ok_or_else(|| io::Error::other(format!("`{file}` is not in the workspace")))?;
        std::fs::write(dest, bytes)?;
        set_mode(dest, if executable { 0o755 } else { 0o644 })
    }

    /// Write the directory `dir` (merged across repos mounted beneath it) to
    /// `dest`, which must not exist: files keep their executable bit,
    /// symlinks stay symlinks, submodules become empty directories.
    pub fn write_dir(&self, dir: &str, dest: &Path) -> io::Result<()> {
        let repos = self.repos();
        let (tree, at) = match self.resolve(&repos, dir).map_err(io::Error::other)? {
            Some(Node::Tree { mount, id, at }) => (Some((mount, id)), at),
            Some(Node::Virtual { at }) => (None, at),
            _ => {
                return Err(io::Error::other(format!(
                    "`{dir}` is not a directory of the workspace"
                )));
            }
        };
        self.write_tree(&repos, at, tree, dest)
    }

    fn write_tree(
        &self,
        repos: &[gix::Repository],
        at: Vec<String>,
        tree: Option<(usize, ObjectId)>,
        dest: &Path,
    ) -> io::Result<()> {
        std::fs::create_dir(dest)?;
        for (name, child) in self.children(repos, &at, tree).map_err(io::Error::other)? {
            let target = dest.join(&name);
            match child {
                Child::Dir(sub) => {
                    let mut next = at.clone();
                    next.push(name);
                    self.write_tree(repos, next, sub, &target)?;
                }
                Child::File {
                    mount,
                    id,
                    executable,
                } => {
                    let blob = repos[mount]
                        .find_blob(id)
                        .map_err(|e| io::Error::other(self.object_error(mount, e)))?;
                    std::fs::write(&target, &blob.data)?;
                    set_mode(&target, if executable { 0o755 } else { 0o644 })?;
                }
                Child::Link { target: link } => {
                    std::os::unix::fs::symlink(String::from_utf8_lossy(&link).as_ref(), &target)?;
                }
                Child::Submodule => std::fs::create_dir(&target)?,
            }
        }
        set_mode(dest, 0o755)
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}
