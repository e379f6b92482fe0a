//! The I/O side of [`crate::files`]: content ids looked up in the workspace
//! (git objects, no checkout) and in the Marvin process's environment, and
//! the files written under `<data>/files/` before containers are created.
//!
//! A secret taken from a variable is named by an HMAC of its value under a
//! key kept in `<data>/files/.key` (made on first use), so its file name says
//! nothing about the value; the directory is readable by Marvin's user only.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::desired::DesiredError;
use crate::files::{FileContent, FileMount, FileRequest, FileSource, line_of};
use crate::source::{EntryKind, Workspace};

/// The directory under the data directory that holds mounted files.
pub fn files_root(data_dir: &Path) -> PathBuf {
    data_dir.join("files")
}

/// What the lookup needs besides the requests.
pub struct Lookup<'a> {
    /// The merged workspace at the job's commits.
    pub workspace: &'a Workspace,
    /// The compose file's workspace path, for messages.
    pub compose_path: &'a str,
    /// Its text, to name the line of a mount.
    pub compose_text: &'a str,
    /// Commits, as shown in messages ("app 1a2b3c4").
    pub commits: &'a str,
    /// `<data>/files`.
    pub files_root: &'a Path,
    /// A variable of the Marvin process.
    pub var: &'a dyn Fn(&str) -> Option<String>,
}

/// Content ids for every request; every problem at once.
pub fn lookup(
    l: &Lookup<'_>,
    requests: &BTreeMap<String, Vec<FileRequest>>,
) -> Result<BTreeMap<String, Vec<FileMount>>, Vec<DesiredError>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    let mut key: Option<Vec<u8>> = None;
    for (service, list) in requests {
        let mut mounts = Vec::new();
        for r in list {
            let at = match line_of(l.compose_text, &r.needle) {
                Some(line) => format!("{} ({}:{line})", r.what, l.compose_path),
                None => format!("{} ({})", r.what, l.compose_path),
            };
            let fail = |message: String| DesiredError {
                service: service.clone(),
                message: format!("{at}: {message}"),
            };
            let found = match &r.source {
                FileSource::Git { path } => match git_content(l, path).map_err(fail) {
                    // A secret's value is read now, so every output can mask it.
                    // Named `secret-…` so a later process knows to mask it.
                    Ok((id, FileContent::GitFile { path, .. })) if r.secret => l
                        .workspace
                        .read_file(&path)
                        .map_err(|e| DesiredError {
                            service: service.clone(),
                            message: format!("{at}: {e}"),
                        })
                        .map(|b| {
                            (
                                format!("secret-{id}"),
                                FileContent::Bytes(b.unwrap_or_default()),
                            )
                        }),
                    Ok((_, FileContent::GitDir { path })) if r.secret => Err(DesiredError {
                        service: service.clone(),
                        message: format!("{at}: `{path}` is a directory; a secret is one file"),
                    }),
                    other => other,
                },
                FileSource::Variable { name } => match (l.var)(name) {
                    None => Err(fail(format!(
                        "the variable `{name}` is not set in Marvin's environment; set it for the Marvin process (its value never belongs in git or marvin.yml)"
                    ))),
                    Some(value) if r.secret => {
                        if key.is_none() {
                            key = secret_key(l.files_root).ok();
                        }
                        match key.as_deref() {
                            None => Err(fail(format!(
                                "cannot keep the secrets' key in {}; is it writable?",
                                l.files_root.display()
                            ))),
                            Some(key) => {
                                let mut mac = Hmac::<Sha256>::new_from_slice(key)
                                    .expect("HMAC takes any key length");
                                mac.update(value.as_bytes());
                                let id = hex::encode(mac.finalize().into_bytes());
                                Ok((
                                    format!("secret-{}", &id[..40]),
                                    FileContent::Bytes(value.into_bytes()),
                                ))
                            }
                        }
                    }
                    Some(value) => Ok(bytes_content(value.into_bytes())),
                },
                FileSource::Content { text } => Ok(bytes_content(text.clone().into_bytes())),
            };
            match found {
                Ok((id, content)) => mounts.push(FileMount {
                    id,
                    content,
                    target: r.target.clone(),
                    read_only: r.read_only,
                    mode: r.mode,
                    secret: r.secret,
                }),
                Err(e) => errors.push(e),
            }
        }
        out.insert(service.clone(), mounts);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn bytes_content(bytes: Vec<u8>) -> (String, FileContent) {
    let id = hex::encode(Sha256::digest(&bytes));
    (format!("config-{}", &id[..40]), FileContent::Bytes(bytes))
}

fn git_content(l: &Lookup<'_>, path: &str) -> Result<(String, FileContent), String> {
    let missing = || {
        format!(
            "`{path}` does not exist in the merged workspace at {}; add it to git, or fix the path (it is relative to the compose file)",
            l.commits
        )
    };
    match l.workspace.kind(path).map_err(|e| e.to_string())? {
        None => Err(missing()),
        Some(EntryKind::Submodule) => Err(format!(
            "`{path}` is a submodule, whose files are not in the workspace; mount the submodule's repo as a repo of marvin.yml instead"
        )),
        Some(EntryKind::File) => {
            let (id, executable) = l
                .workspace
                .file_entry(path)
                .map_err(|e| e.to_string())?
                .ok_or_else(missing)?;
            let id = if executable {
                format!("blob-{id}-x")
            } else {
                format!("blob-{id}")
            };
            Ok((
                id,
                FileContent::GitFile {
                    path: path.to_string(),
                    executable,
                },
            ))
        }
        Some(EntryKind::Dir) => {
            let dir = l
                .workspace
                .dir_id(path)
                .map_err(|e| e.to_string())?
                .ok_or_else(missing)?;
            let id = if dir.mounts.is_empty() {
                dir.tree
            } else {
                let json = serde_json::to_vec(&dir).expect("plain data encodes");
                hex::encode(Sha256::digest(&json))[..40].to_string()
            };
            Ok((
                format!("tree-{id}"),
                FileContent::GitDir {
                    path: path.to_string(),
                },
            ))
        }
    }
}

/// The key naming secrets' files: read, or made on first use.
fn secret_key(root: &Path) -> io::Result<Vec<u8>> {
    ensure_root(root)?;
    let path = root.join(".key");
    match std::fs::read(&path) {
        Ok(k) if k.len() >= 32 => return Ok(k),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut key = vec![0u8; 32];
    io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut key)?;
    let tmp = root.join(format!(".key.{}", std::process::id()));
    std::fs::write(&tmp, &key)?;
    set_mode(&tmp, 0o600)?;
    // Another process may have won the race: keep whichever key is in place.
    if std::fs::hard_link(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
        return std::fs::read(&path);
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(key)
}

fn ensure_root(root: &Path) -> io::Result<()> {
    if !root.is_dir() {
        std::fs::create_dir_all(root)?;
        set_mode(root, 0o700)?;
    }
    Ok(())
}

/// Write every mount that is not on disk yet (blocking). Content-named, so
/// a file already there is the right one; a per-environment `rw` copy, once
/// made, keeps what the containers wrote into it.
pub fn write(
    workspace: &Workspace,
    files_root: &Path,
    project: &str,
    env: &str,
    mounts: &[FileMount],
) -> io::Result<()> {
    ensure_root(files_root)?;
    let root = files_root.to_string_lossy();
    for m in mounts {
        let dest = PathBuf::from(m.host_path(&root, project, env));
        match std::fs::symlink_metadata(&dest) {
            // Docker makes an empty directory for a bind source that is
            // missing (a container created while the file was gone): replace it.
            Ok(meta)
                if meta.is_dir()
                    && !matches!(m.content, FileContent::GitDir { .. })
                    && std::fs::remove_dir(&dest).is_ok() => {}
            Ok(_) => {
                // Touched, so the clean-up's grace period covers this job too.
                let _ = std::fs::File::open(&dest)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                continue;
            }
            Err(_) => {}
        }
        let parent = dest.parent().expect("host paths lie under the files root");
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(
            ".tmp-{}-{}-{}",
            m.file_name(),
            std::process::id(),
            TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let written = match &m.content {
            FileContent::GitFile { path, executable } => {
                workspace.write_file(path, *executable, &tmp)
            }
            FileContent::GitDir { path } => workspace.write_dir(path, &tmp),
            FileContent::Bytes(bytes) => std::fs::write(&tmp, bytes),
        };
        let written = written.and_then(|()| match (&m.content, m.mode) {
            (FileContent::GitDir { .. }, _) => Ok(()),
            (_, Some(mode)) => set_mode(&tmp, mode),
            (FileContent::Bytes(_), None) => set_mode(&tmp, 0o444),
            _ => Ok(()),
        });
        if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &dest)) {
            let _ = std::fs::remove_dir_all(&tmp).or_else(|_| std::fs::remove_file(&tmp));
            if std::fs::symlink_metadata(&dest).is_err() {
                return Err(io::Error::other(format!("writing {}: {e}", dest.display())));
            }
        }
    }
    Ok(())
}

/// The values of the secrets that recorded containers mount from the files
/// root (files named `secret-…`), each as written and trimmed: a process
/// that starts masks them before it plans anything.
pub fn mounted_secret_values(
    files_root: &Path,
    specs: &[crate::engine::ContainerSpec],
) -> Vec<String> {
    let mut out = Vec::new();
    for spec in specs {
        for m in &spec.volumes {
            let crate::engine::Mount::Bind { source, .. } = m else {
                continue;
            };
            let source = Path::new(source);
            let named_secret = source
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("secret-"));
            if !named_secret || source.parent() != Some(files_root) {
                continue;
            }
            if let Ok(value) = std::fs::read_to_string(source) {
                let trimmed = value.trim().to_string();
                for v in [value, trimmed] {
                    if !v.is_empty() && !out.contains(&v) {
                        out.push(v);
                    }
                }
            }
        }
    }
    out
}

/// Remove what lies under the files root that no recorded deployment
/// mounts (`keep`: every bind source of every deployment of the project),
/// once it is older than `older_than` — a job planning now may have just
/// written files it has not deployed yet. Returns how many entries went.
pub fn collect_garbage(
    files_root: &Path,
    keep: &std::collections::BTreeSet<PathBuf>,
    older_than: std::time::SystemTime,
) -> io::Result<usize> {
    let mut removed = 0;
    let mut dirs = vec![files_root.to_path_buf()];
    if let Ok(envs) = std::fs::read_dir(files_root.join("rw")) {
        dirs.extend(envs.filter_map(|e| e.ok()).map(|e| e.path()));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let content_named = ["blob-", "tree-", "secret-", "config-", ".tmp-"]
                .iter()
                .any(|p| name.starts_with(p));
            if !content_named || keep.contains(&path) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < older_than);
            if !old {
                continue;
            }
            let gone = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if gone.is_ok() {
                removed += 1;
            }
        }
    }
    Ok(removed)
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::time::{Duration, SystemTime};

    #[test]
    fn garbage_is_what_no_deployment_mounts_and_is_old_enough() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("rw/shop-dev/tree-old")).expect("mkdir");
        for name in ["blob-kept", "blob-old", "secret-old", ".key"] {
            std::fs::write(root.join(name), "x").expect("write");
        }
        std::fs::create_dir_all(root.join("tree-old/sub")).expect("mkdir");
        let keep = BTreeSet::from([root.join("blob-kept")]);

        // Everything is new: nothing goes.
        let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
        assert_eq!(collect_garbage(&root, &keep, an_hour_ago).expect("gc"), 0);

        let later = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(collect_garbage(&root, &keep, later).expect("gc"), 4);
        let mut left: Vec<String> = std::fs::read_dir(&root)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".key", "blob-kept", "rw"]);
        assert!(!root.join("rw/shop-dev/tree-old").exists());
    }
}
