//! Mirrors, resolve and the merged workspace against real repos made with
//! the `git` command, which is also the oracle for ids, dates and trees.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use marvin_core::source::{DirId, EntryKind, Mirrors, RepoSpec, SourceError, Workspace};

/// A work repo made with the `git` command; the remote the mirrors fetch from.
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

    fn git(&self, args: &[&str]) -> String {
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
        String::from_utf8(out.stdout)
            .expect("git prints utf-8")
            .trim_end()
            .to_string()
    }

    fn write(&self, path: &str, content: &str) -> &Self {
        let file = self.dir.join(path);
        std::fs::create_dir_all(file.parent().expect("has parent")).expect("mkdir");
        std::fs::write(file, content).expect("write file");
        self
    }

    fn symlink(&self, path: &str, target: &str) -> &Self {
        let link = self.dir.join(path);
        std::fs::create_dir_all(link.parent().expect("has parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, link).expect("symlink");
        self
    }

    /// Commit everything with an author date in +08:00; returns the commit id.
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        let out = Command::new("git")
            .args(["commit", "-q", "--allow-empty", "-m", message])
            .current_dir(&self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Zhang Wei")
            .env("GIT_AUTHOR_EMAIL", "zw@example.com")
            .env("GIT_AUTHOR_DATE", "2017-05-05T10:27:00+08:00")
            .env("GIT_COMMITTER_NAME", "Marvin Test")
            .env("GIT_COMMITTER_EMAIL", "ci@example.com")
            .output()
            .expect("git commit");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.git(&["rev-parse", "HEAD"])
    }

    fn rev_parse(&self, spec: &str) -> String {
        self.git(&["rev-parse", spec])
    }

    fn spec(&self, name: &str, path: &str) -> RepoSpec {
        RepoSpec::new(name, self.dir.display().to_string(), path)
    }
}

/// A backend repo at the root and a frontend repo at `fe`, synced and resolved.
struct Project {
    tmp: tempfile::TempDir,
    backend: GitRepo,
    frontend: GitRepo,
    mirrors: Mirrors,
}

impl Project {
    fn new() -> Project {
        let tmp = tempfile::tempdir().expect("tempdir");
        let backend = GitRepo::init(tmp.path(), "backend");
        backend
            .write("docker-compose.yml", "services: {}\n")
            .write("api/Dockerfile", "FROM scratch\n")
            .write("api/src/main.rs", "fn main() {}\n")
            .write("api/src/deep/mod.rs", "// deep\n")
            .write("shared/base.env", "A=1\n")
            .symlink("api/compose.yml", "../docker-compose.yml")
            .symlink("api/escape", "../../outside");
        backend.commit("Initial backend");
        let frontend = GitRepo::init(tmp.path(), "frontend");
        frontend
            .write("web/Dockerfile", "FROM scratch\nCOPY . /\n")
            .write("web/index.html", "<h1>hi</h1>\n")
            .symlink("web/env", "../../shared/base.env");
        frontend.commit("Initial frontend");
        frontend.git(&["branch", "develop"]);
        let mirrors = Mirrors::new(tmp.path().join("data"));
        Project {
            tmp,
            backend,
            frontend,
            mirrors,
        }
    }

    fn specs(&self) -> (RepoSpec, RepoSpec) {
        (
            self.backend.spec("backend", "."),
            self.frontend.spec("frontend", "fe"),
        )
    }

    fn workspace(&self) -> Workspace {
        let (be, fe) = self.specs();
        self.mirrors.sync(&be).expect("sync backend");
        self.mirrors.sync(&fe).expect("sync frontend");
        let be_commit = self
            .mirrors
            .resolve(&be, "master")
            .expect("resolve backend");
        let fe_commit = self
            .mirrors
            .resolve(&fe, "master")
            .expect("resolve frontend");
        self.mirrors
            .workspace(&[(be, be_commit), (fe, fe_commit)])
            .expect("open workspace")
    }
}

#[test]
fn workspace_and_mirrors_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    fn send_sync<T: Send + Sync>() {}
    shareable::<Workspace>();
    send_sync::<Mirrors>();
}

#[test]
fn clone_then_incremental_fetch_picks_up_a_new_commit() {
    let p = Project::new();
    let (be, _) = p.specs();
    p.mirrors.sync(&be).expect("first sync clones");
    let first = p.mirrors.resolve(&be, "master").expect("resolve");
    assert_eq!(first.id, p.backend.rev_parse("master"));
    assert!(p.tmp.path().join("data/repos/backend.git").is_dir());

    p.backend
        .write("api/src/main.rs", "fn main() { println!(); }\n");
    let second_id = p.backend.commit("Print something");
    assert_eq!(
        p.mirrors.resolve(&be, "master").expect("resolve").id,
        first.id,
        "the mirror only changes on sync"
    );
    p.mirrors.sync(&be).expect("second sync fetches");
    assert_eq!(
        p.mirrors.resolve(&be, "master").expect("resolve").id,
        second_id
    );
    // An older commit stays readable for rollbacks.
    assert_eq!(p.mirrors.commit(&be, &first.id).expect("old commit"), first);
}

#[test]
fn branch_deleted_on_the_remote_disappears_from_the_mirror() {
    let p = Project::new();
    let (_, fe) = p.specs();
    p.mirrors.sync(&fe).expect("sync");
    p.mirrors.resolve(&fe, "develop").expect("develop exists");
    p.frontend.git(&["branch", "-D", "develop"]);
    p.mirrors.sync(&fe).expect("sync again");
    let err = p
        .mirrors
        .resolve(&fe, "develop")
        .expect_err("develop is gone");
    assert!(matches!(err, SourceError::BranchNotFound { .. }), "{err}");
}

#[test]
fn branch_replaced_by_a_branch_beneath_its_name_is_fetched() {
    let p = Project::new();
    let (_, fe) = p.specs();
    p.frontend.git(&["branch", "feature"]);
    p.mirrors.sync(&fe).expect("sync");
    p.frontend.git(&["branch", "-D", "feature"]);
    p.frontend.git(&["branch", "feature/login"]);
    p.mirrors
        .sync(&fe)
        .expect("`feature` is pruned before `feature/login` is written");
    assert_eq!(
        p.mirrors.resolve(&fe, "feature/login").expect("resolve").id,
        p.frontend.rev_parse("feature/login")
    );
}

#[test]
fn an_empty_remote_syncs_and_has_no_branches() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = GitRepo::init(tmp.path(), "empty");
    let spec = empty.spec("empty", "");
    let mirrors = Mirrors::new(tmp.path().join("data"));
    mirrors
        .sync(&spec)
        .expect("an empty repo is not an error to fetch");
    let err = mirrors.resolve(&spec, "master").expect_err("no branches");
    assert!(
        err.to_string()
            .ends_with("branch `master` not found; the repo has no branches"),
        "{err}"
    );
}

#[test]
fn concurrent_syncs_and_lookups_share_one_mirror_and_workspace() {
    let p = Project::new();
    let (be, _) = p.specs();
    std::thread::scope(|scope| {
        let syncs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| p.mirrors.sync(&be)))
            .collect();
        for sync in syncs {
            sync.join()
                .expect("thread")
                .expect("every concurrent sync succeeds");
        }
    });
    let ws = p.workspace();
    let expected = ws.dir_id("api").expect("dir_id");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let ws = ws.clone();
            let expected = expected.clone();
            scope.spawn(move || assert_eq!(ws.dir_id("api").expect("dir_id"), expected));
        }
    });
}

#[test]
fn resolve_reports_what_git_log_shows() {
    let p = Project::new();
    let (be, _) = p.specs();
    p.backend.write("NOTES", "x\n");
    p.backend
        .commit("Fix the gateway\nwhen it restarts\n\nLonger explanation.\n");
    p.mirrors.sync(&be).expect("sync");
    let commit = p.mirrors.resolve(&be, "master").expect("resolve");
    let log = p.backend.git(&["log", "-1", "--format=%H%n%an%n%aI%n%s"]);
    let expected: Vec<&str> = log.lines().collect();
    assert_eq!(commit.repo, "backend");
    assert_eq!(commit.id, expected[0]);
    assert_eq!(commit.author, expected[1]);
    assert_eq!(commit.date, expected[2]);
    assert_eq!(commit.date, "2017-05-05T10:27:00+08:00");
    assert_eq!(commit.subject, expected[3]);
    assert_eq!(commit.subject, "Fix the gateway when it restarts");
}

#[test]
fn dir_id_equals_git_rev_parse_of_the_directory() {
    let p = Project::new();
    let ws = p.workspace();
    let c = p.backend.rev_parse("master");
    for dir in [
        "api",
        "api/src",
        "api/src/deep",
        "shared",
        "./api/src/../src/",
    ] {
        let id = ws.dir_id(dir).expect("dir_id").expect("exists");
        let normal = dir.trim_start_matches("./").replace("src/../src/", "src");
        assert_eq!(
            id.tree,
            p.backend.rev_parse(&format!("{c}:{normal}")),
            "{dir}"
        );
        assert!(id.mounts.is_empty(), "{dir} has no mounts beneath it");
    }
    let fe_c = p.frontend.rev_parse("master");
    let web = ws.dir_id("fe/web").expect("dir_id").expect("exists");
    assert_eq!(web.tree, p.frontend.rev_parse(&format!("{fe_c}:web")));
    assert_eq!(ws.dir_id("nope").expect("dir_id"), None);
    assert_eq!(ws.dir_id("fe/nope").expect("dir_id"), None);
}

#[test]
fn dir_id_of_the_root_lists_the_nested_mount() {
    let p = Project::new();
    let ws = p.workspace();
    let be_c = p.backend.rev_parse("master");
    let fe_c = p.frontend.rev_parse("master");
    assert_eq!(
        ws.dir_id("").expect("dir_id"),
        Some(DirId {
            tree: p.backend.rev_parse(&format!("{be_c}^{{tree}}")),
            mounts: vec![(
                "fe".to_string(),
                p.frontend.rev_parse(&format!("{fe_c}^{{tree}}"))
            )],
        })
    );
    let fe = ws.dir_id("fe").expect("dir_id").expect("mount root exists");
    assert_eq!(fe.tree, p.frontend.rev_parse(&format!("{fe_c}^{{tree}}")));
    assert!(fe.mounts.is_empty());
}

#[test]
fn blob_id_equals_git_rev_parse_of_the_file() {
    let p = Project::new();
    let ws = p.workspace();
    let c = p.backend.rev_parse("master");
    for file in ["api/Dockerfile", "docker-compose.yml", "api/src/main.rs"] {
        assert_eq!(
            ws.blob_id(file).expect("blob_id"),
            Some(p.backend.rev_parse(&format!("{c}:{file}"))),
            "{file}"
        );
    }
    let fe_c = p.frontend.rev_parse("master");
    assert_eq!(
        ws.blob_id("fe/web/Dockerfile").expect("blob_id"),
        Some(p.frontend.rev_parse(&format!("{fe_c}:web/Dockerfile")))
    );
    assert_eq!(ws.blob_id("api/missing").expect("blob_id"), None);
    assert!(ws.blob_id("api").is_err(), "a directory has no blob id");
}

#[test]
fn read_file_goes_through_mounts_and_normalises_paths() {
    let p = Project::new();
    let ws = p.workspace();
    assert_eq!(
        ws.read_file("fe/web/Dockerfile").expect("read"),
        Some(b"FROM scratch\nCOPY . /\n".to_vec())
    );
    assert_eq!(
        ws.read_file("./fe/web/../web/Dockerfile").expect("read"),
        Some(b"FROM scratch\nCOPY . /\n".to_vec())
    );
    assert_eq!(
        ws.read_file("docker-compose.yml").expect("read"),
        Some(b"services: {}\n".to_vec())
    );
    assert_eq!(ws.read_file("fe/web/missing").expect("read"), None);
    assert_eq!(ws.read_file("api/Dockerfile/x").expect("read"), None);
    assert_eq!(ws.kind("fe").expect("kind"), Some(EntryKind::Dir));
    assert_eq!(
        ws.kind("fe/web/index.html").expect("kind"),
        Some(EntryKind::File)
    );
    assert_eq!(ws.kind("api/src/").expect("kind"), Some(EntryKind::Dir));
    assert_eq!(ws.kind("missing").expect("kind"), None);
}

#[test]
fn symlinks_are_followed_inside_the_workspace_only() {
    let p = Project::new();
    let ws = p.workspace();
    // Within one repo, and from a mounted repo into the root repo.
    assert_eq!(
        ws.read_file("api/compose.yml").expect("read"),
        Some(b"services: {}\n".to_vec())
    );
    assert_eq!(
        ws.read_file("fe/web/env").expect("read"),
        Some(b"A=1\n".to_vec())
    );
    let err = ws
        .read_file("api/escape")
        .expect_err("leaves the workspace");
    assert_eq!(
        err.to_string(),
        "path `api/escape`: symlink `api/escape` points outside the workspace (to `../../outside`)"
    );
    // dir_id does not follow them: the tree id covers the link text.
    let c = p.backend.rev_parse("master");
    assert_eq!(
        ws.dir_id("api").expect("dir_id").expect("exists").tree,
        p.backend.rev_parse(&format!("{c}:api"))
    );
}

#[test]
fn file_url_works() {
    let p = Project::new();
    let url = format!("file://{}", p.frontend.dir.display());
    let fe = RepoSpec::new("frontend", url, "fe");
    p.mirrors.sync(&fe).expect("sync over file://");
    let commit = p.mirrors.resolve(&fe, "develop").expect("resolve");
    assert_eq!(commit.id, p.frontend.rev_parse("develop"));
}

#[test]
fn unreachable_remote_names_the_repo_and_url_and_leaves_no_mirror() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mirrors = Mirrors::new(tmp.path().join("data"));
    let fe = RepoSpec::new("frontend", "/nope", "fe");
    let err = mirrors.sync(&fe).expect_err("nothing at /nope");
    let message = err.to_string();
    assert!(
        message.starts_with("repo `frontend`: cannot fetch from /nope: "),
        "{message}"
    );
    assert!(message.len() > "repo `frontend`: cannot fetch from /nope: ".len());
    assert!(!tmp.path().join("data/repos/frontend.git").exists());
    let err = mirrors.resolve(&fe, "master").expect_err("never synced");
    assert!(matches!(err, SourceError::NoMirror { .. }), "{err}");
}

#[test]
fn missing_branch_names_the_repo_url_and_branch_and_lists_branches() {
    let p = Project::new();
    let url = format!("file://{}", p.frontend.dir.display());
    let fe = RepoSpec::new("frontend", url.clone(), "fe");
    p.mirrors.sync(&fe).expect("sync");
    let err = p.mirrors.resolve(&fe, "develp").expect_err("typo");
    assert_eq!(
        err.to_string(),
        format!(
            "repo `frontend` ({url}): branch `develp` not found; did you mean `develop`? branches: `develop`, `master`"
        )
    );
    let err = p.mirrors.resolve(&fe, "zzz").expect_err("nothing close");
    assert_eq!(
        err.to_string(),
        format!("repo `frontend` ({url}): branch `zzz` not found; branches: `develop`, `master`")
    );
}

#[test]
fn unknown_commit_id_is_an_error_naming_the_repo() {
    let p = Project::new();
    let (be, _) = p.specs();
    p.mirrors.sync(&be).expect("sync");
    let missing = "0123456789012345678901234567890123456789";
    let err = p.mirrors.commit(&be, missing).expect_err("no such commit");
    assert!(err.to_string().contains("repo `backend`"), "{err}");
    assert!(err.to_string().contains(missing), "{err}");
}

#[test]
fn path_escaping_the_root_is_refused() {
    let p = Project::new();
    let ws = p.workspace();
    for bad in ["../x", "fe/../../x", "/etc/passwd"] {
        let err = ws.read_file(bad).expect_err(bad);
        assert!(
            matches!(err, SourceError::InvalidPath { .. }),
            "{bad}: {err}"
        );
        assert!(ws.dir_id(bad).is_err(), "{bad}");
    }
    assert_eq!(
        ws.read_file("../x").expect_err("escapes").to_string(),
        "path `../x` leaves the workspace root"
    );
}

#[test]
fn submodules_are_keyed_by_commit_and_cannot_be_read_into() {
    let p = Project::new();
    let sub_commit = p.frontend.rev_parse("master");
    p.backend.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{sub_commit},vendor/lib"),
    ]);
    p.backend.git(&["commit", "-q", "-m", "Add a submodule"]);
    let ws = p.workspace();
    let c = p.backend.rev_parse("master");
    assert_eq!(
        ws.dir_id("vendor").expect("dir_id").expect("exists").tree,
        p.backend.rev_parse(&format!("{c}:vendor"))
    );
    assert_eq!(
        ws.kind("vendor/lib").expect("kind"),
        Some(EntryKind::Submodule)
    );
    let err = ws
        .read_file("vendor/lib/web/Dockerfile")
        .expect_err("inside a submodule");
    assert_eq!(
        err.to_string(),
        "path `vendor/lib/web/Dockerfile` lies in submodule `vendor/lib` of repo `backend`, whose files are not in the workspace"
    );
}

#[test]
fn a_directory_holding_only_mount_points_exists() {
    let p = Project::new();
    let (be, fe) = p.specs();
    let fe = RepoSpec::new(&fe.name, &fe.url, "apps/fe");
    p.mirrors.sync(&be).expect("sync");
    p.mirrors.sync(&fe).expect("sync");
    let ws = p
        .mirrors
        .workspace(&[
            (
                be.clone(),
                p.mirrors.resolve(&be, "master").expect("resolve"),
            ),
            (
                fe.clone(),
                p.mirrors.resolve(&fe, "master").expect("resolve"),
            ),
        ])
        .expect("workspace");
    assert_eq!(ws.kind("apps").expect("kind"), Some(EntryKind::Dir));
    let apps = ws.dir_id("apps").expect("dir_id").expect("exists");
    assert_eq!(
        apps.tree, "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
        "the empty tree"
    );
    assert_eq!(apps.mounts.len(), 1);
    assert_eq!(apps.mounts[0].0, "fe");
    assert_eq!(
        ws.read_file("apps/fe/web/index.html").expect("read"),
        Some(b"<h1>hi</h1>\n".to_vec())
    );
}

#[test]
fn two_repos_at_one_mount_path_are_refused() {
    let p = Project::new();
    let (be, fe) = p.specs();
    let fe = RepoSpec::new(&fe.name, &fe.url, "./");
    p.mirrors.sync(&be).expect("sync");
    p.mirrors.sync(&fe).expect("sync");
    let err = p
        .mirrors
        .workspace(&[
            (
                be.clone(),
                p.mirrors.resolve(&be, "master").expect("resolve"),
            ),
            (
                fe.clone(),
                p.mirrors.resolve(&fe, "master").expect("resolve"),
            ),
        ])
        .expect_err("overlap");
    assert!(
        matches!(err, SourceError::OverlappingMounts { .. }),
        "{err}"
    );
}

/// A repo with `files` files in nested directories, made with `git fast-import`.
fn big_repo(parent: &Path, files: usize) -> GitRepo {
    let repo = GitRepo::init(parent, "big");
    let mut stream = String::from("blob\nmark :1\ndata 6\nhello\n");
    stream.push_str("commit refs/heads/master\n");
    stream.push_str("author A <a@example.com> 1494000000 +0800\n");
    stream.push_str("committer A <a@example.com> 1494000000 +0800\n");
    stream.push_str("data 4\nbig\n");
    for i in 0..files {
        stream.push_str(&format!(
            "M 100644 :1 svc{}/src/m{}/f{i}.txt\n",
            i % 17,
            i % 50
        ));
    }
    for s in 0..17 {
        stream.push_str(&format!(
            "M 100644 inline svc{s}/Dockerfile\ndata 13\nFROM scratch\n\n"
        ));
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&repo.dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("git fast-import");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream.as_bytes())
        .expect("feed fast-import");
    assert!(child.wait().expect("fast-import").success());
    repo
}

#[test]
fn no_change_fetch_resolve_and_lookups_stay_fast_on_a_big_repo() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let big = big_repo(tmp.path(), 100_000);
    let spec = big.spec("big", "");
    let mirrors = Mirrors::new(tmp.path().join("data"));
    mirrors.sync(&spec).expect("first sync");

    let start = Instant::now();
    mirrors.sync(&spec).expect("no-change sync");
    let commit = mirrors.resolve(&spec, "master").expect("resolve");
    let ws = mirrors.workspace(&[(spec, commit)]).expect("workspace");
    for s in 0..17 {
        assert!(ws.dir_id(&format!("svc{s}")).expect("dir_id").is_some());
        assert!(
            ws.blob_id(&format!("svc{s}/Dockerfile"))
                .expect("blob_id")
                .is_some()
        );
    }
    let took = start.elapsed();
    eprintln!("no-change sync + resolve + 34 lookups on 100,000 files: {took:?}");
    // Generous for a shared debug build; walking 100,000 entries would not fit.
    assert!(took < Duration::from_millis(400), "took {took:?}");
}

/// Several Marvin processes sharing a data directory each have their own
/// `Mirrors` (so only the file lock stands between them): a first clone by
/// all of them at once must succeed for every one, leave one mirror and no
/// temporary clone behind, and later fetches at once must succeed too.
#[test]
fn first_clones_by_many_processes_at_once_all_succeed() {
    let p = Project::new();
    let (be, _) = p.specs();
    let data = p.tmp.path().join("shared-data");
    let sync_all = |label: &str| {
        let barrier = std::sync::Barrier::new(8);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        let mirrors = Mirrors::new(&data);
                        barrier.wait();
                        mirrors.sync(&be).map(|()| mirrors)
                    })
                })
                .collect();
            for handle in handles {
                let mirrors = handle
                    .join()
                    .expect("thread")
                    .unwrap_or_else(|e| panic!("{label}: a concurrent sync failed: {e}"));
                assert_eq!(
                    mirrors.resolve(&be, "master").expect("resolve").id,
                    p.backend.rev_parse("HEAD"),
                    "{label}"
                );
            }
        });
    };
    sync_all("first clone");
    let leftovers: Vec<String> = std::fs::read_dir(data.join("repos"))
        .expect("repos dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".git.tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary clones left: {leftovers:?}");

    p.backend
        .write("api/src/main.rs", "fn main() { println!(\"2\"); }\n");
    p.backend.commit("Second");
    sync_all("fetch");
}

/// A process SIGKILLed mid-fetch leaves git's ref lock files in the mirror;
/// the next sync (which holds the mirror's process lock, so no one else
/// writes) removes them instead of failing on them forever.
#[test]
fn a_lock_file_left_by_a_killed_fetch_does_not_block_the_next_one() {
    let p = Project::new();
    let (be, _) = p.specs();
    p.mirrors.sync(&be).expect("first sync");
    let mirror = p.mirrors.mirror_dir(&be).expect("mirror dir");
    std::fs::write(mirror.join("refs/heads/master.lock"), "").expect("a stale ref lock");
    std::fs::write(mirror.join("packed-refs.lock"), "").expect("a stale packed-refs lock");
    p.backend
        .write("api/src/main.rs", "fn main() { println!(\"3\"); }\n");
    let head = p.backend.commit("Third");
    p.mirrors
        .sync(&be)
        .expect("a sync after a killed fetch succeeds");
    assert_eq!(p.mirrors.resolve(&be, "master").expect("resolve").id, head);
}
