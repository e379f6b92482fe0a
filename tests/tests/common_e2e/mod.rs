//! Helpers of the end-to-end tests on the real Docker engine: a two-repo
//! project made per test (its own name, temp dir and data dir), a runtime
//! over it, and a guard that removes every Docker object the test made.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use marvin_core::engine::{
    ContainerState, DockerEngine, Engine, HealthState, LABEL_DEPLOY_KEY, LABEL_ENV, LABEL_PROJECT,
    LABEL_ROLE, ObservedContainer, ensure_busybox_image,
};
use marvin_core::marvin::{Marvin, PlanOptions};
use marvin_core::runtime::{JobKind, JobRequest, JobSummary, Runtime, SystemClock};
use marvin_core::store::{JobId, Store};

/// The base image every test Dockerfile builds `FROM`, shared by the tests of
/// one process and removed when the last of them ends. Tagged per process, so
/// two runs on one engine (two worktrees) never remove each other's.
pub fn base_image() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| format!("marvin-e2e/busybox:{}", std::process::id()))
}

/// The label value the shared base image carries (never a test's project).
const BASE_PROJECT: &str = "marvin-e2e-base";

/// How many tests hold the base image; the last one out removes it.
static BASE_USERS: tokio::sync::Mutex<usize> = tokio::sync::Mutex::const_new(0);

/// The compose file: five tiny busybox services over two repos. `api` is
/// healthy while it serves `/healthy`; `db` once it has written its volume.
pub const COMPOSE: &str = r#"x-busybox: &busybox
  restart: unless-stopped
  size: XS

services:
  db:
    <<: *busybox
    build: ./db
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "test", "-f", "/data/ready"]
      interval: 1s
      timeout: 2s
      retries: 30
  api:
    <<: *busybox
    build: ./api
    depends_on: [db]
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/healthy"]
      interval: 1s
      timeout: 3s
      retries: 3
  worker:
    <<: *busybox
    build: ./worker
    depends_on:
      api: { condition: service_healthy }
  web:
    <<: *busybox
    build: ./fe/web
    depends_on: [api]
    links: ["api:backend"]
  docs:
    <<: *busybox
    build: ./fe/docs

volumes:
  data: {}
"#;

/// Every service of the project, sorted.
pub const SERVICES: [&str; 5] = ["api", "db", "docs", "web", "worker"];

fn httpd_dockerfile() -> String {
    format!(
        "FROM {}\nCOPY . /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        base_image()
    )
}

fn backend_files() -> Vec<(&'static str, String)> {
    vec![
        ("docker-compose.yml", COMPOSE.to_string()),
        (
            "db/Dockerfile",
            format!(
                "FROM {}\nCMD [\"sh\", \"-c\", \"mkdir -p /data && touch /data/ready && exec sleep 2147483647\"]\n",
                base_image()
            ),
        ),
        ("api/Dockerfile", httpd_dockerfile()),
        ("api/index.html", "hello from the api\n".to_string()),
        ("api/healthy", "ok\n".to_string()),
        (
            "worker/Dockerfile",
            format!(
                "FROM {}\nCOPY work.sh /work.sh\nCMD [\"sh\", \"/work.sh\"]\n",
                base_image()
            ),
        ),
        (
            "worker/work.sh",
            "while true; do sleep 5; done\n".to_string(),
        ),
    ]
}

fn frontend_files() -> Vec<(&'static str, String)> {
    vec![
        ("web/Dockerfile", httpd_dockerfile()),
        ("web/index.html", "<h1>web</h1>\n".to_string()),
        ("docs/Dockerfile", httpd_dockerfile()),
        ("docs/index.html", "<p>docs</p>\n".to_string()),
    ]
}

/// What differs between the tests' projects.
#[derive(Default)]
pub struct Options {
    /// Tasks run before `dev` deploys (hook names from the tasks below).
    pub dev_before_deploy: Vec<&'static str>,
    /// Tasks run when a `dev` job fails.
    pub dev_on_failure: Vec<&'static str>,
    /// More keys of `dev` (YAML lines indented by 4 spaces, e.g.
    /// `"    channels: [\"slack:C1\"]\n"`).
    pub dev_yaml: String,
    /// More keys of `staging`, likewise.
    pub staging_yaml: String,
    /// More top-level sections (e.g. `people:`), appended to marvin.yml
    /// right after `settings:` (so lines indented by 2 spaces first add settings).
    pub top_yaml: String,
    /// More keys of the backend repo (indented by 4 spaces, e.g. `    poll: 1s\n`).
    pub backend_yaml: String,
}

fn marvin_yml(project: &str, root: &Path, options: &Options) -> String {
    let before: Vec<String> = options
        .dev_before_deploy
        .iter()
        .map(|t| t.to_string())
        .collect();
    let on_failure: Vec<String> = options
        .dev_on_failure
        .iter()
        .map(|t| t.to_string())
        .collect();
    format!(
        r#"project: {project}
compose: docker-compose.yml

repos:
  backend:
    url: {backend}
    path: .
{backend_yaml}  frontend:
    url: {frontend}
    path: fe

environments:
  dev:
    branch: main
    hooks: {{ before_deploy: [{before}], on_failure: [{on_failure}] }}
{dev_yaml}  staging:
    branch: main
{staging_yaml}
tasks:
  fetch:
    image: {base}
    command: ["wget", "-qO-"]
  fetch-from-worker:
    service: worker
    command: ["wget", "-qO-", "http://api:8080/"]
  show-env:
    service: worker
    command: ["env"]
  gate:
    service: api
    command: ["test", "-f", "/www/open"]
  fail-loudly:
    image: {base}
    command: ["sh", "-c", "echo about to fail; echo on stderr >&2; exit 3"]
  nap:
    image: {base}
    command: ["sleep"]
  notify:
    image: {base}
    command: ["echo", "on-failure hook ran"]
  mark-data:
    service: db
    command: ["touch", "/data/marked"]
  check-data:
    service: db
    command: ["test", "-f", "/data/marked"]
  leak:
    service: worker
    command: ["sh", "-c", "env; echo leaked; exit 1"]

settings:
  health_timeout: 60s
{top_yaml}"#,
        backend = root.join("repos/backend.git").display(),
        frontend = root.join("repos/frontend.git").display(),
        before = before.join(", "),
        on_failure = on_failure.join(", "),
        base = base_image(),
        dev_yaml = options.dev_yaml,
        staging_yaml = options.staging_yaml,
        top_yaml = options.top_yaml,
        backend_yaml = options.backend_yaml,
    )
}

/// Run git in `dir`; panics with git's words when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "E2E Test")
        .env("GIT_AUTHOR_EMAIL", "e2e@marvin.invalid")
        .env("GIT_COMMITTER_NAME", "E2E Test")
        .env("GIT_COMMITTER_EMAIL", "e2e@marvin.invalid")
        .output()
        .expect("git must be installed for the end-to-end tests");
    assert!(
        out.status.success(),
        "git {} in {} failed: {}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn write_files(dir: &Path, files: &[(&str, String)]) {
    for (path, text) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("files live in a directory"))
            .expect("create a directory in the temp dir");
        std::fs::write(&p, text).expect("write a file in the temp dir");
    }
}

fn make_repo(root: &Path, name: &str, files: &[(&str, String)]) {
    let work = root.join("work").join(name);
    let bare = root.join("repos").join(format!("{name}.git"));
    std::fs::create_dir_all(&work).expect("create the working copy");
    std::fs::create_dir_all(&bare).expect("create the bare repo");
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    git(&work, &["init", "-q", "-b", "main"]);
    write_files(&work, files);
    git(&work, &["add", "-A"]);
    git(
        &work,
        &["commit", "-q", "-m", &format!("{name}: first version")],
    );
    git(
        &work,
        &["remote", "add", "origin", &bare.display().to_string()],
    );
    git(&work, &["push", "-q", "origin", "main"]);
}

/// A project name no other test (or run) uses: `e2e-<test>-<unique>`.
fn unique_name(test: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "e2e-{test}-{}{}{}",
        std::process::id() % 10_000,
        nanos % 10_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes everything labelled with the test's project, then lets go of the
/// shared base image, also when the test panics. Runs on a thread of its
/// own: Drop cannot await, and the test's runtime may be shutting down.
pub struct Cleanup {
    project: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let project = self.project.clone();
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            rt.block_on(async {
                let engine = DockerEngine::connect().expect("the Docker engine for the cleanup");
                let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), project.clone())]);
                // A cancelled task's container may still be on its way out
                // (removal in progress, network still attached): try again.
                for attempt in 1..=10 {
                    match engine.remove_labelled(&labels).await {
                        Ok(()) => break,
                        Err(e) if attempt == 10 => eprintln!("cleanup of {project} failed: {e}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    }
                }
                let mut users = BASE_USERS.lock().await;
                *users -= 1;
                if *users == 0 {
                    for _ in 0..10 {
                        let _ = engine.remove_image(base_image()).await;
                        if !engine.image_exists(base_image()).await.unwrap_or(false) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            });
        })
        .join();
        if done.is_err() {
            eprintln!("cleanup of {} panicked", self.project);
        }
    }
}

/// One test's project: two git repos, a marvin.yml, a data dir, and the guard
/// that removes its Docker objects.
pub struct Fixture {
    /// The project name (unique per test).
    pub project: String,
    /// The project's directory (repos, working copies, marvin.yml).
    pub root: PathBuf,
    /// marvin.yml.
    pub config: PathBuf,
    /// The data directory (mirrors, marvin.db).
    pub data: PathBuf,
    /// The engine, for checks.
    pub engine: Arc<DockerEngine>,
    _cleanup: Cleanup,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A fresh project for `test`, with the shared base image present.
    pub async fn new(test: &str, options: Options) -> Fixture {
        let engine = DockerEngine::connect().expect("the end-to-end tests need a Docker engine");
        engine.ping().await.expect("the Docker engine answers");
        let project = unique_name(test);
        let cleanup = {
            let mut users = BASE_USERS.lock().await;
            let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), BASE_PROJECT.to_string())]);
            ensure_busybox_image(&engine, base_image(), &labels)
                .await
                .expect("the busybox base image (apt-get install -y busybox-static)");
            *users += 1;
            Cleanup {
                project: project.clone(),
            }
        };
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path().canonicalize().expect("the temp dir's path");
        make_repo(&root, "backend", &backend_files());
        make_repo(&root, "frontend", &frontend_files());
        let config = root.join("marvin.yml");
        std::fs::write(&config, marvin_yml(&project, &root, &options)).expect("write marvin.yml");
        Fixture {
            project,
            data: root.join("data"),
            root,
            config,
            engine: Arc::new(engine),
            _cleanup: cleanup,
            _dir: dir,
        }
    }

    /// The project loaded afresh, with the engine.
    pub fn marvin(&self) -> Marvin {
        Marvin::load(&self.config, Some(self.data.clone()))
            .expect("the test's marvin.yml loads")
            .with_engine(self.engine.clone())
    }

    /// The environment is as a clean build leaves it: each service once, by its
    /// name, running, with the deploy key a plan wants now; nothing set aside;
    /// a plan finds nothing to do.
    pub async fn assert_converged(&self, data: &Path) {
        let plan = Marvin::load(&self.config, Some(data.to_path_buf()))
            .expect("the test's marvin.yml loads")
            .with_engine(self.engine.clone())
            .plan("dev", &PlanOptions::default())
            .await
            .expect("plan dev");
        let c = plan.counts();
        assert_eq!(
            (c.build, c.create, c.recreate, c.remove),
            (0, 0, 0, 0),
            "a plan after the build finds nothing to do"
        );
        let running = self.services("dev").await;
        assert_eq!(running.keys().cloned().collect::<Vec<_>>(), all_services());
        for d in &plan.desired {
            let c = &running[&d.service];
            assert_eq!(c.state, ContainerState::Running, "{} runs", d.service);
            assert_eq!(c.name, self.container_name("dev", &d.service));
            assert_eq!(
                c.labels.get(LABEL_DEPLOY_KEY),
                Some(&d.deploy_key.0),
                "{} has the deploy key of the last commits",
                d.service
            );
        }
        let names: Vec<String> = self
            .containers("dev")
            .await
            .into_iter()
            .map(|c| c.name)
            .collect();
        let aside: Vec<&String> = names.iter().filter(|n| n.contains("-previous-")).collect();
        assert!(aside.is_empty(), "containers left aside: {aside:?}");
        assert_eq!(names.len(), all_services().len(), "containers: {names:?}");
    }

    /// A runtime over the project, as a new Marvin process would open it.
    pub fn runtime(&self) -> Runtime {
        Runtime::new(
            self.marvin(),
            self.engine.clone(),
            Store::open_in(&self.data).expect("the store opens"),
            Arc::new(SystemClock),
        )
        .expect("the runtime starts")
    }

    /// Change files in a repo's working copy (`None` deletes), commit and push.
    pub fn commit(&self, repo: &str, changes: &[(&str, Option<&str>)], message: &str) {
        let work = self.root.join("work").join(repo);
        for (path, text) in changes {
            let p = work.join(path);
            match text {
                Some(text) => write_files(&work, &[(path, text.to_string())]),
                None => std::fs::remove_file(&p).expect("the file to delete exists"),
            }
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", message]);
        git(&work, &["push", "-q", "origin", "main"]);
    }

    /// api takes seconds to serve (with a start period to match), so a deploy
    /// can be caught mid-recreate; web and docs change too, so work is left on
    /// both sides of it (waves: db+docs, api, web+worker).
    pub fn commit_slow_api_and_new_pages(&self) {
        let compose = COMPOSE.replace(
            "      retries: 3\n",
            "      retries: 3\n      start_period: 60s\n",
        );
        assert_ne!(compose, COMPOSE, "the compose file has api's health check");
        let dockerfile = format!(
            "FROM {}\nCOPY . /www\nCMD [\"sh\", \"-c\", \"sleep 5; exec httpd -f -p 8080 -h /www\"]\n",
            base_image()
        );
        self.commit(
            "backend",
            &[
                ("api/Dockerfile", Some(&dockerfile)),
                ("docker-compose.yml", Some(&compose)),
            ],
            "api: slow start",
        );
        self.commit(
            "frontend",
            &[
                ("web/index.html", Some("<h1>web 2</h1>\n")),
                ("docs/index.html", Some("<p>docs 2</p>\n")),
            ],
            "web, docs: second version",
        );
    }

    /// The containers of an environment's services (tasks left out), by service.
    /// Panics if a service has two.
    pub async fn services(&self, env: &str) -> BTreeMap<String, ObservedContainer> {
        let mut by_service = BTreeMap::new();
        for c in self.containers(env).await {
            if c.labels.get(LABEL_ROLE).map(String::as_str) == Some("task") {
                continue;
            }
            let name = c.name.clone();
            if let Some(other) = by_service.insert(c.service.clone(), c) {
                panic!(
                    "{env} has two containers for {}: {} and {name}",
                    other.service, other.name
                );
            }
        }
        by_service
    }

    /// Every container of an environment, tasks and leftovers included.
    pub async fn containers(&self, env: &str) -> Vec<ObservedContainer> {
        let labels = BTreeMap::from([
            (LABEL_PROJECT.to_string(), self.project.clone()),
            (LABEL_ENV.to_string(), env.to_string()),
        ]);
        self.engine
            .list_containers(&labels)
            .await
            .expect("list the environment's containers")
    }

    /// Container id per service.
    pub async fn ids(&self, env: &str) -> BTreeMap<String, String> {
        self.services(env)
            .await
            .into_iter()
            .map(|(s, c)| (s, c.id))
            .collect()
    }

    /// The container name Marvin gives a service.
    pub fn container_name(&self, env: &str, service: &str) -> String {
        marvin_core::desired::container_name(&self.project, env, service)
    }

    /// Wait until a container is healthy (it may still be starting its checks).
    pub async fn wait_healthy(&self, name: &str, within: Duration) -> ObservedContainer {
        let until = Instant::now() + within;
        loop {
            let c = self
                .engine
                .inspect_container(name)
                .await
                .expect("inspect a container")
                .unwrap_or_else(|| panic!("container {name} is gone"));
            if c.health == Some(HealthState::Healthy) || Instant::now() > until {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A request as a person at the console makes it.
pub fn request(env: &str, kind: JobKind) -> JobRequest {
    JobRequest {
        env: env.to_string(),
        kind,
        who: "local:e2e".to_string(),
        origin: "console".to_string(),
        trigger: "person".to_string(),
    }
}

/// `build ENV`.
pub fn build(env: &str) -> JobRequest {
    request(
        env,
        JobKind::Build {
            services: vec![],
            force: false,
        },
    )
}

/// `run ENV TASK ARGS...`.
pub fn run(env: &str, task: &str, args: &[&str]) -> JobRequest {
    request(
        env,
        JobKind::Run {
            task: task.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        },
    )
}

/// Submit and wait.
pub async fn job(rt: &Runtime, request: JobRequest) -> JobSummary {
    rt.submit(request)
        .expect("the job is accepted")
        .wait()
        .await
}

/// A job's log, one `stream: line` per line, for assertions and failure messages.
pub fn log_text(rt: &Runtime, job: JobId) -> String {
    rt.store()
        .logs(job, None)
        .expect("read the job's log")
        .into_iter()
        .map(|l| format!("{}: {}", l.stream, l.line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panic with the job's log unless it succeeded.
pub fn assert_succeeded(rt: &Runtime, summary: &JobSummary) {
    assert_eq!(
        summary.state,
        Some(marvin_core::store::JobState::Succeeded),
        "job #{} ({} {}) did not succeed: {:?}\n{:?}\nlog:\n{}",
        summary.job,
        summary.verb,
        summary.env,
        summary.error,
        summary.last_lines,
        log_text(rt, summary.job)
    );
}

/// Sorted service names.
pub fn sorted(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort();
    v
}

/// Every service name, as owned strings.
pub fn all_services() -> Vec<String> {
    SERVICES.iter().map(|s| s.to_string()).collect()
}

/// The `marvin` binary beside this test binary (`target/<profile>/marvin`),
/// built first with the cargo that builds the tests, so `cargo test -p
/// marvin-tests` never runs a stale or missing one.
pub fn marvin_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let target = profile_dir.parent().expect("target/<profile>");
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| if n == "debug" { "dev" } else { n })
        .expect("a profile directory name");
    let mut cargo = Command::new(env!("CARGO"));
    // What `cargo test` sets for this test (CARGO_MANIFEST_DIR, CARGO_PKG_*)
    // is not what a plain `cargo build` sees: build scripts that watch it
    // (ring's) would rebuild here, and again at the next `cargo test`.
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_BIN_EXE_",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .iter()
            .any(|p| key.starts_with(p))
        {
            cargo.env_remove(key);
        }
    }
    let status = cargo
        .args(["build", "--quiet", "-p", "marvin-cli", "--bin", "marvin"])
        .args(["--profile", profile])
        .env("CARGO_TARGET_DIR", target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo to build the marvin binary");
    assert!(status.success(), "cargo build -p marvin-cli failed");
    let binary = profile_dir.join("marvin");
    assert!(
        binary.is_file(),
        "{} is missing after the build",
        binary.display()
    );
    binary
}
