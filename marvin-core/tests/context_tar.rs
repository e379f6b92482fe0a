//! Build contexts as tar streams from git objects, checked against
//! `git archive` of the same directories less what `.dockerignore` excludes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use marvin_core::source::{Mirrors, RepoSpec, SourceError, Workspace};

/// A work repo made with the `git` command.
struct GitRepo {
    dir: PathBuf,
}

impl GitRepo {
    fn init(parent: &Path, name: &str) -> GitRepo {
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).expect("create repo dir");
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", "master"]);
        repo
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Zhang Wei")
            .env("GIT_AUTHOR_EMAIL", "zw@example.com")
            .env("GIT_COMMITTER_NAME", "Marvin Test")
            .env("GIT_COMMITTER_EMAIL", "ci@example.com")
            .output()
            .expect("the `git` command must be installed");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn git(&self, args: &[&str]) -> String {
        String::from_utf8(self.run(args))
            .expect("utf-8")
            .trim_end()
            .to_string()
    }

    fn write(&self, path: &str, content: &str) -> &Self {
        let file = self.dir.join(path);
        std::fs::create_dir_all(file.parent().expect("has parent")).expect("mkdir");
        std::fs::write(file, content).expect("write file");
        self
    }

    fn executable(&self, path: &str, content: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        self.write(path, content);
        std::fs::set_permissions(self.dir.join(path), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        self
    }

    fn symlink(&self, path: &str, target: &str) -> &Self {
        std::os::unix::fs::symlink(target, self.dir.join(path)).expect("symlink");
        self
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn spec(&self, name: &str, path: &str) -> RepoSpec {
        RepoSpec::new(name, self.dir.display().to_string(), path)
    }
}

/// What a tar says about one path: kind, executable bit, content or link target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { executable: bool, content: Vec<u8> },
    Link(String),
}

/// The entries of a tar keyed by path (no trailing `/`), with `strip` removed from the front.
fn entries(tar_bytes: &[u8], strip: &str, prefix: &str) -> BTreeMap<String, Entry> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let path = path.trim_end_matches('/');
        let Some(rel) = path.strip_prefix(strip) else {
            continue;
        };
        if rel.is_empty() {
            continue;
        }
        let rel = format!("{prefix}{rel}");
        let header = entry.header().clone();
        let value = match header.entry_type() {
            tar::EntryType::Directory => Entry::Dir,
            tar::EntryType::Symlink => Entry::Link(
                entry
                    .link_name()
                    .expect("link name")
                    .expect("symlink has a target")
                    .to_string_lossy()
                    .into_owned(),
            ),
            tar::EntryType::Regular => {
                let mut content = Vec::new();
                entry.read_to_end(&mut content).expect("read entry");
                Entry::File {
                    executable: header.mode().expect("mode") & 0o100 != 0,
                    content,
                }
            }
            // git archive's global pax header carries the commit id.
            tar::EntryType::XGlobalHeader => continue,
            other => panic!("unexpected tar entry {other:?} at {rel}"),
        };
        out.insert(rel, value);
    }
    out
}

/// A backend repo whose `app/` directory is the context, with the frontend
/// repo mounted at `app/web`, and a `.dockerignore` using every feature.
struct Fixture {
    _tmp: tempfile::TempDir,
    backend: GitRepo,
    frontend: GitRepo,
    ws: Workspace,
}

const DOCKERIGNORE: &str = "\
# build output and secrets
**/*.log
secret
docs
!docs/README.md
*.tmp
!keep.tmp
src/**/generated
Dockerfile
.dockerignore
web/**/*.map
";

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let backend = GitRepo::init(tmp.path(), "backend");
    let long_dir =
        "a-rather-long-directory-name-to-push-past-one-hundred-bytes/and-another-long-one";
    backend
        .write("app/Dockerfile", "FROM scratch\nCOPY . /\n")
        .write("app/.dockerignore", DOCKERIGNORE)
        .executable("app/run.sh", "#!/bin/sh\necho hi\n")
        .symlink("app/start", "run.sh")
        .symlink("app/shared-env", "../shared/base.env")
        .write("app/src/main.rs", "fn main() {}\n")
        .write("app/src/a/b/c.txt", "deep\n")
        .write("app/src/a/debug.log", "log\n")
        .write("app/src/a/generated/x.rs", "// generated\n")
        .write("app/x.log", "log\n")
        .write("app/secret/key", "hunter2\n")
        .write("app/docs/README.md", "# docs\n")
        .write("app/docs/other.md", "other\n")
        .write("app/scratch.tmp", "tmp\n")
        .write("app/keep.tmp", "kept\n")
        .write(
            &format!("app/{long_dir}/file-with-a-long-name.txt"),
            "long\n",
        )
        .write("shared/base.env", "A=1\n")
        .write("other/ignored-by-context.txt", "not in app\n");
    let frontend = GitRepo::init(tmp.path(), "frontend");
    frontend
        .write("index.html", "<h1>hi</h1>\n")
        .write("js/app.js", "console.log(1)\n")
        .write("js/app.js.map", "{}\n");
    let fe_commit = frontend.commit("Frontend");
    backend.commit("Backend");
    // A submodule entry: git archive writes it as an empty directory.
    backend.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{fe_commit},app/vendor/lib"),
    ]);
    backend.git(&["commit", "-q", "-m", "Add a submodule"]);

    let mirrors = Mirrors::new(tmp.path().join("data"));
    let be = backend.spec("backend", "");
    let fe = frontend.spec("frontend", "app/web");
    let mut mounts = Vec::new();
    for spec in [be, fe] {
        mirrors.sync(&spec).expect("sync");
        let commit = mirrors.resolve(&spec, "master").expect("resolve");
        mounts.push((spec, commit));
    }
    let ws = mirrors.workspace(&mounts).expect("workspace");
    Fixture {
        _tmp: tmp,
        backend,
        frontend,
        ws,
    }
}

/// `git archive` of `app/` in the backend plus the whole frontend at `web/`.
fn git_archive_of_the_context(f: &Fixture) -> BTreeMap<String, Entry> {
    let mut expected = entries(&f.backend.run(&["archive", "HEAD", "app/"]), "app/", "");
    expected.insert("web".to_string(), Entry::Dir);
    expected.extend(entries(&f.frontend.run(&["archive", "HEAD"]), "", "web/"));
    expected
}

#[test]
fn context_tar_equals_git_archive_less_what_dockerignore_excludes() {
    let f = fixture();
    let actual = entries(&f.ws.context_tar("app", &[]).expect("context tar"), "", "");
    let mut expected = git_archive_of_the_context(&f);
    for excluded in [
        "x.log",
        "src/a/debug.log",
        "secret",
        "secret/key",
        // The directory is left out; the exception still brings its README.
        "docs",
        "docs/other.md",
        "scratch.tmp",
        "src/a/generated",
        "src/a/generated/x.rs",
        "web/js/app.js.map",
    ] {
        assert!(
            expected.remove(excluded).is_some(),
            "{excluded} should be in git archive"
        );
    }
    assert_eq!(actual, expected);

    // The things the fixture is there to exercise really are in it.
    assert_eq!(actual["start"], Entry::Link("run.sh".to_string()));
    assert_eq!(
        actual["shared-env"],
        Entry::Link("../shared/base.env".to_string())
    );
    assert!(matches!(
        actual["run.sh"],
        Entry::File {
            executable: true,
            ..
        }
    ));
    assert!(matches!(
        actual["src/main.rs"],
        Entry::File {
            executable: false,
            ..
        }
    ));
    assert_eq!(actual["vendor/lib"], Entry::Dir);
    assert!(actual.contains_key("docs/README.md"));
    assert!(actual.contains_key("keep.tmp"));
    assert!(actual.contains_key("Dockerfile"), "always sent");
    assert!(actual.contains_key(".dockerignore"), "always sent");
    assert!(
        actual.keys().any(|k| k.len() > 100),
        "a path longer than ustar's 100 bytes"
    );
}

#[test]
fn context_tar_is_deterministic_with_fixed_owner_and_mtime() {
    let f = fixture();
    let first = f.ws.context_tar("app", &[]).expect("context tar");
    let second =
        f.ws.clone()
            .context_tar("./app/", &[])
            .expect("context tar");
    assert_eq!(first, second);
    let mut archive = tar::Archive::new(first.as_slice());
    for entry in archive.entries().expect("entries") {
        let entry = entry.expect("entry");
        let h = entry.header();
        assert_eq!(h.mtime().expect("mtime"), 0);
        assert_eq!(h.uid().expect("uid"), 0);
        assert_eq!(h.gid().expect("gid"), 0);
    }
}

#[test]
fn replacements_rewrite_or_add_files_and_are_always_sent() {
    let f = fixture();
    let tar =
        f.ws.context_tar(
            "app",
            &[
                ("Dockerfile".to_string(), b"FROM rewritten\n".to_vec()),
                (
                    "./build/Dockerfile.outside".to_string(),
                    b"FROM outside\n".to_vec(),
                ),
                ("secret/key".to_string(), b"replaced\n".to_vec()),
                ("run.sh".to_string(), b"#!/bin/sh\necho new\n".to_vec()),
            ],
        )
        .expect("context tar");
    let actual = entries(&tar, "", "");
    let file = |content: &str, executable: bool| Entry::File {
        executable,
        content: content.as_bytes().to_vec(),
    };
    assert_eq!(actual["Dockerfile"], file("FROM rewritten\n", false));
    assert_eq!(
        actual["build/Dockerfile.outside"],
        file("FROM outside\n", false)
    );
    assert_eq!(actual["secret/key"], file("replaced\n", false));
    assert_eq!(
        actual["run.sh"],
        file("#!/bin/sh\necho new\n", true),
        "keeps its mode"
    );
    assert!(
        !actual.contains_key("secret"),
        "the excluded directory itself is not sent"
    );
}

#[test]
fn a_context_spanning_a_mount_is_merged_and_the_root_works_too() {
    let f = fixture();
    let web = entries(&f.ws.context_tar("app/web", &[]).expect("tar"), "", "");
    let expected = entries(&f.frontend.run(&["archive", "HEAD"]), "", "");
    assert_eq!(web, expected);
    let root = entries(&f.ws.context_tar("", &[]).expect("tar"), "", "");
    assert!(root.contains_key("other/ignored-by-context.txt"));
    assert!(
        root.contains_key("app/web/js/app.js.map"),
        "app's .dockerignore does not apply"
    );
}

#[test]
fn bad_contexts_are_errors_naming_the_path() {
    let f = fixture();
    let err = f.ws.context_tar("nope", &[]).expect_err("missing");
    assert!(matches!(err, SourceError::ContextNotFound { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "build context `nope` does not exist in the workspace"
    );
    let err = f.ws.context_tar("app/run.sh", &[]).expect_err("a file");
    assert!(matches!(err, SourceError::NotADirectory { .. }), "{err}");
    let err =
        f.ws.context_tar("app/vendor/lib", &[])
            .expect_err("a submodule");
    assert!(matches!(err, SourceError::IntoSubmodule { .. }), "{err}");
    let err = f.ws.context_tar("../x", &[]).expect_err("escapes");
    assert!(matches!(err, SourceError::InvalidPath { .. }), "{err}");
    let err =
        f.ws.context_tar("app", &[("../evil".to_string(), Vec::new())])
            .expect_err("replacement outside the context");
    assert!(matches!(err, SourceError::InvalidPath { .. }), "{err}");
}

#[test]
fn a_malformed_dockerignore_names_its_path_and_line() {
    let f = fixture();
    f.backend.write("app/.dockerignore", "ok\n!\n");
    f.backend.commit("Break .dockerignore");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mirrors = Mirrors::new(tmp.path());
    let be = f.backend.spec("backend", "");
    mirrors.sync(&be).expect("sync");
    let commit = mirrors.resolve(&be, "master").expect("resolve");
    let ws = mirrors.workspace(&[(be, commit)]).expect("workspace");
    let err = ws.context_tar("app", &[]).expect_err("bad line");
    assert_eq!(
        err.to_string(),
        "app/.dockerignore: .dockerignore line 2: `!` needs a pattern after it"
    );
}
