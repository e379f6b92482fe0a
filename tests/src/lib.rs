//! End-to-end test support: real git repositories made with the `git`
//! command (a bare "remote" plus a working copy), a `marvin.yml` writer, a
//! two-repo project shaped like the talk's, and a synchronous `plan`.
//!
//! Everything lives in a [`tempfile::TempDir`], removed when the fixture drops.
//! The `git` command is required: a missing `git` fails loudly.

pub mod fake_slack;
pub mod rng;
pub mod served;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use marvin_core::keys::BuildKey;
use marvin_core::marvin::{Marvin, MarvinError, PlanOptions};
use marvin_core::resolve::Plan;

/// Author of every fixture commit (non-ASCII on purpose: reports must carry it intact).
pub const AUTHOR_NAME: &str = "黄鸿";
/// Author e-mail of every fixture commit.
pub const AUTHOR_EMAIL: &str = "hh@example.com";
/// Author and committer date of every fixture commit, so commit ids are reproducible.
pub const COMMIT_DATE: &str = "2017-05-05T10:27:00+08:00";

/// A git repository: a bare remote (what marvin.yml points at) and a working copy that pushes to it.
pub struct GitRepo {
    /// The bare repository marvin fetches from.
    pub remote: PathBuf,
    /// The working copy tests write and commit in.
    pub work: PathBuf,
}

impl GitRepo {
    /// A new repository under `parent`: `<parent>/remotes/<name>.git` and
    /// `<parent>/work/<name>`, on branch `master` with nothing committed yet.
    pub fn new(parent: &Path, name: &str) -> GitRepo {
        let remote = parent.join("remotes").join(format!("{name}.git"));
        let work = parent.join("work").join(name);
        std::fs::create_dir_all(&remote).expect("create the remote's directory");
        std::fs::create_dir_all(&work).expect("create the working copy's directory");
        git_in(&remote, &["init", "-q", "--bare", "-b", "master"]);
        let repo = GitRepo { remote, work };
        repo.git(&["init", "-q", "-b", "master"]);
        let url = repo.url();
        repo.git(&["remote", "add", "origin", &url]);
        repo
    }

    /// The URL marvin.yml uses: the bare remote's absolute path.
    pub fn url(&self) -> String {
        self.remote.display().to_string()
    }

    /// Run `git` in the working copy with a hermetic config; returns trimmed stdout.
    pub fn git(&self, args: &[&str]) -> String {
        git_in(&self.work, args)
    }

    /// Write a file (creating directories) in the working copy.
    pub fn write(&self, path: &str, content: &str) -> &Self {
        let file = self.work.join(path);
        std::fs::create_dir_all(file.parent().expect("a file path has a parent"))
            .expect("create the file's directory");
        std::fs::write(&file, content).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        self
    }

    /// Remove a file from the working copy.
    pub fn remove(&self, path: &str) -> &Self {
        let file = self.work.join(path);
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("remove {}: {e}", file.display()));
        self
    }

    /// Commit everything (also an empty change) with the fixed author and date; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Commit everything and push the current branch; returns the commit id.
    pub fn commit_and_push(&self, message: &str) -> String {
        let id = self.commit(message);
        self.push();
        id
    }

    /// Push the current branch to the remote.
    pub fn push(&self) {
        let branch = self.current_branch();
        self.git(&["push", "-q", "origin", &branch]);
    }

    /// Push every local branch to the remote.
    pub fn push_all(&self) {
        self.git(&["push", "-q", "origin", "--all"]);
    }

    /// Create a branch at the current commit and switch to it.
    pub fn branch(&self, name: &str) -> &Self {
        self.git(&["checkout", "-q", "-b", name]);
        self
    }

    /// Switch to an existing branch.
    pub fn checkout(&self, name: &str) -> &Self {
        self.git(&["checkout", "-q", name]);
        self
    }

    /// The checked-out branch.
    pub fn current_branch(&self) -> String {
        self.git(&["rev-parse", "--abbrev-ref", "HEAD"])
    }

    /// The checked-out commit id.
    pub fn head(&self) -> String {
        self.rev_parse("HEAD")
    }

    /// `git rev-parse <rev>`: the oracle for commit, tree and blob ids.
    pub fn rev_parse(&self, rev: &str) -> String {
        self.git(&["rev-parse", rev])
    }
}

/// Run `git` in `dir` with no user or system config and the fixed author and date.
pub fn git_in(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", AUTHOR_NAME)
        .env("GIT_AUTHOR_EMAIL", AUTHOR_EMAIL)
        .env("GIT_AUTHOR_DATE", COMMIT_DATE)
        .env("GIT_COMMITTER_NAME", "Marvin Tests")
        .env("GIT_COMMITTER_EMAIL", "tests@example.com")
        .env("GIT_COMMITTER_DATE", COMMIT_DATE)
        .output()
        .expect("the `git` command must be installed (apt-get install -y git)");
    assert!(
        out.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("git prints utf-8")
        .trim_end()
        .to_string()
}

/// A `DOCKER_HOST` where no engine answers.
pub const DEAD_DOCKER_HOST: &str = "unix:///nonexistent.sock";

/// The `marvin` binary of this build: `$CARGO_BIN_EXE_marvin` if set, else
/// `marvin` in the target directory beside this test executable
/// (`target/debug/deps/<test>` → `target/debug/marvin`). `cargo test
/// --workspace` builds it; `cargo test -p marvin-tests` alone does not.
pub fn marvin_bin() -> PathBuf {
    workspace_bin("marvin", "marvin-cli")
}

/// The `marvin-slack` binary of this build (see [`workspace_bin`]).
pub fn slack_bin() -> PathBuf {
    workspace_bin("marvin-slack", "marvin-slack")
}

/// A binary of this workspace's build, found like [`marvin_bin`]:
/// `$CARGO_BIN_EXE_<name>`, else `<name>` beside the test's target directory.
/// `package` names the crate to build when it is missing.
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(format!("CARGO_BIN_EXE_{name}")) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in <target>/<profile>/deps/");
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "the `{name}` binary is not at {}: build it with `cargo build -p {package}` or run `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// What one run of the `marvin` binary did.
#[derive(Debug)]
pub struct Run {
    /// Exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Run `marvin ARGS` in `dir` with a hermetic environment: no
/// `MARVIN_CONFIG`/`MARVIN_DATA_DIR` from the caller, `DOCKER_HOST` as given
/// (None: leave the caller's), and `RUST_BACKTRACE=1` so a panic would show.
pub fn run_marvin(dir: &Path, docker_host: Option<&str>, args: &[&str]) -> Run {
    let bin = marvin_bin();
    let mut command = Command::new(&bin);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("MARVIN_CONFIG")
        .env_remove(marvin_core::marvin::DATA_DIR_ENV)
        .env("RUST_BACKTRACE", "1");
    if let Some(host) = docker_host {
        command.env("DOCKER_HOST", host);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Write `marvin.yml` into `dir` (created if needed); returns its path.
pub fn project(dir: &Path, marvin_yml: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the project directory");
    let path = dir.join("marvin.yml");
    std::fs::write(&path, marvin_yml).expect("write marvin.yml");
    path
}

/// Load the project at `config` (data directory `.marvin/` beside it), with no
/// engine connected, and plan `env` with all services: the plan an empty engine gets.
pub fn plan(config: &Path, env: &str) -> Result<Plan, MarvinError> {
    plan_with(config, env, &PlanOptions::default())
}

/// Like [`plan`], with options.
pub fn plan_with(config: &Path, env: &str, options: &PlanOptions) -> Result<Plan, MarvinError> {
    let marvin = Marvin::load(config, None)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("start a tokio runtime");
    runtime.block_on(marvin.plan(env, options))
}

/// Build key per built service.
pub fn build_keys(plan: &Plan) -> BTreeMap<String, BuildKey> {
    plan.build_specs
        .iter()
        .map(|(s, b)| (s.clone(), b.key.clone()))
        .collect()
}

/// Deploy key per service.
pub fn deploy_keys(plan: &Plan) -> BTreeMap<String, String> {
    plan.desired
        .iter()
        .map(|d| (d.service.clone(), d.deploy_key.0.clone()))
        .collect()
}

/// Services whose key differs between two key maps (or that exist in only one), sorted.
pub fn changed<K: PartialEq>(
    before: &BTreeMap<String, K>,
    after: &BTreeMap<String, K>,
) -> Vec<String> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .cloned()
        .collect()
}

/// A project shaped like the talk's: a backend repo mounted at `.` (holding
/// the compose file) and a frontend repo mounted at `fe`, seven built
/// services with contexts in both repos plus one image-only service.
///
/// Backend (`.`): `services/api` (build arg from `{{ API_VERSION }}`),
/// `services/worker` (multi-stage, `target`), `services/auth` (Dockerfile
/// outside the context: `../../shared/Dockerfile`), `base` (image
/// `cloudmatrix/base`), `services/report` (`FROM cloudmatrix/base`), and
/// files outside every context (`README.md`, `docs/`).
/// Frontend (`fe`): `web`, `admin`, and `notes/` outside every context.
///
/// Branches: backend `develop` and `master`, frontend `dev-fe` and `master`;
/// environment `dev` uses `develop` with the override `frontend: dev-fe`,
/// `staging` uses `master` everywhere.
pub struct TalkProject {
    /// Holds everything; removed on drop.
    pub root: tempfile::TempDir,
    /// The repo mounted at `.`.
    pub backend: GitRepo,
    /// The repo mounted at `fe`.
    pub frontend: GitRepo,
    /// The project directory (where marvin.yml is).
    pub dir: PathBuf,
    /// marvin.yml.
    pub config: PathBuf,
}

/// Built services of [`TalkProject`], sorted.
pub const TALK_BUILT_SERVICES: [&str; 7] =
    ["admin", "api", "auth", "base", "report", "web", "worker"];

/// The compose file of [`TalkProject`] (backend's `docker-compose.yml`).
pub const TALK_COMPOSE: &str = r#"x-common: &common
  restart: unless-stopped
  labels:
    team: cloudmatrix

services:
  api:
    <<: *common
    build:
      context: ./services/api
      args:
        VERSION: "{{ API_VERSION }}"
    environment:
      LOG_LEVEL: ${LOG_LEVEL:-warn}
    depends_on: [db]
  worker:
    <<: *common
    build:
      context: services/worker
      target: prod
  auth:
    <<: *common
    build:
      context: ./services/auth
      dockerfile: ../../shared/Dockerfile
  base:
    build: ./base
    image: cloudmatrix/base
  report:
    build: ./services/report
  web:
    <<: *common
    build: ./fe/web
    ports: ["8080:80"]
  admin:
    build:
      context: ./fe/admin
  db:
    image: busybox
    command: ["sleep", "3600"]
"#;

/// The environments of [`TalkProject`]'s marvin.yml.
pub const TALK_ENVIRONMENTS: &str = r#"environments:
  dev:
    aliases: [develop]
    branch: develop
    branches: { frontend: dev-fe }
    vars: { API_VERSION: "1.0", LOG_LEVEL: debug }
  staging:
    branch: master
    vars: { API_VERSION: "2.0", LOG_LEVEL: info }
"#;

impl TalkProject {
    /// Make both repos with their branches pushed, and write marvin.yml with [`TALK_ENVIRONMENTS`].
    /// Both working copies are left on the branches `dev` uses (`develop`, `dev-fe`).
    pub fn new() -> TalkProject {
        let root = tempfile::Builder::new()
            .prefix("marvin-talk-")
            .tempdir()
            .expect("create a temporary directory");
        let backend = GitRepo::new(root.path(), "backend");
        backend
            .write("docker-compose.yml", TALK_COMPOSE)
            .write("README.md", "# CloudMatrix\n")
            .write("docs/deploy.md", "Deploy with marvin.\n")
            .write("services/api/Dockerfile", "FROM busybox\nARG VERSION\nCOPY . /app\n")
            .write("services/api/main.txt", "api v1\n")
            .write(
                "services/worker/Dockerfile",
                "FROM busybox AS dev\nCOPY . /app\nFROM busybox AS prod\nCOPY --from=dev /app /app\n",
            )
            .write("services/worker/job.txt", "worker v1\n")
            .write("services/auth/auth.txt", "auth v1\n")
            .write("shared/Dockerfile", "FROM busybox\nCOPY . /srv\n")
            .write("base/Dockerfile", "FROM busybox\nCOPY lib.txt /lib.txt\n")
            .write("base/lib.txt", "base v1\n")
            .write("services/report/Dockerfile", "FROM cloudmatrix/base\nCOPY . /report\n")
            .write("services/report/report.txt", "report v1\n");
        backend.commit("backend: first");
        backend.branch("develop");
        backend.push_all();

        let frontend = GitRepo::new(root.path(), "frontend");
        frontend
            .write("web/Dockerfile", "FROM busybox\nCOPY . /www\n")
            .write("web/index.html", "<h1>web v1</h1>\n")
            .write("admin/Dockerfile", "FROM busybox\nCOPY . /www\n")
            .write("admin/index.html", "<h1>admin v1</h1>\n")
            .write("notes/todo.md", "- ship it\n");
        frontend.commit("frontend: first");
        frontend.branch("dev-fe");
        frontend.push_all();

        let dir = root.path().join("project");
        let config = project(&dir, "");
        let talk = TalkProject {
            root,
            backend,
            frontend,
            dir,
            config,
        };
        talk.write_environments(TALK_ENVIRONMENTS);
        talk
    }

    /// Rewrite marvin.yml with this `environments:` section (and the project, compose and repos of the fixture).
    pub fn write_environments(&self, environments: &str) {
        let text = format!(
            "project: {}\ncompose: docker-compose.yml\n\nrepos:\n  backend:\n    url: {}\n    path: .\n  frontend:\n    url: {}\n    path: fe\n\n{environments}",
            self.project_name(),
            self.backend.url(),
            self.frontend.url(),
        );
        project(&self.dir, &text);
    }

    /// A project name unique to this fixture (Docker objects are labelled with it).
    pub fn project_name(&self) -> String {
        let dir = self
            .root
            .path()
            .file_name()
            .expect("a temporary directory has a name")
            .to_string_lossy()
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "");
        format!("cm{dir}")
    }

    /// Plan an environment with no engine (see [`plan`]).
    pub fn plan(&self, env: &str) -> Result<Plan, MarvinError> {
        plan(&self.config, env)
    }

    /// Plan an environment, failing the test with the error's message if it fails.
    pub fn plan_ok(&self, env: &str) -> Plan {
        self.plan(env)
            .unwrap_or_else(|e| panic!("plan {env} failed: {e}"))
    }

    /// The error planning `env` gives, as a person reads it; fails the test if planning succeeds.
    pub fn plan_err(&self, env: &str) -> String {
        match self.plan(env) {
            Ok(_) => panic!("plan {env} succeeded, an error was expected"),
            Err(e) => e.to_string(),
        }
    }
}

impl Default for TalkProject {
    fn default() -> Self {
        TalkProject::new()
    }
}
