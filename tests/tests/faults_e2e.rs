//! End-to-end faults on the real Docker engine (issue #7 item 3): the engine
//! going away mid-build and mid-deploy, a git remote going away, SIGKILL at
//! random points of 20 jobs, and a full disk under the data directory.
//!
//! Marvin runs as the real `marvin` binary, as a person runs it; the test
//! reads what it left with the store, the engine and `marvin status`.
//! Needs a local Docker engine, git, Debian's busybox-static, and root (the
//! disk test mounts a tmpfs). A missing one fails the test, never skips it.

mod common_e2e;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common_e2e::{Fixture, Options, git};
use marvin_core::engine::ContainerState;
use marvin_core::store::{Job, JobState, Store};
use marvin_tests::rng::Rng;

// ---------------------------------------------------------------------------
// The `marvin` process.

/// What one `marvin` process did.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Ran {
    fn text(&self) -> String {
        format!(
            "exit {:?} after {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.took.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }

    /// The job summary `--json` printed.
    fn summary(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("marvin printed no JSON summary ({e}):\n{}", self.text()))
    }

    fn assert_no_panic(&self) {
        let all = format!("{}{}", self.stdout, self.stderr);
        assert!(
            !all.contains("panicked") && !all.contains("stack backtrace"),
            "marvin panicked:\n{}",
            self.text()
        );
    }
}

/// A started `marvin` process, its output going to two files.
struct Proc {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    started: Instant,
}

/// Start `marvin --config .. --data-dir DATA ARGS` with `DOCKER_HOST` as given.
fn spawn(fx: &Fixture, data: &Path, docker_host: Option<&str>, args: &[&str]) -> Proc {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let out = fx.root.join(format!("marvin-{n}.out"));
    let err = fx.root.join(format!("marvin-{n}.err"));
    let mut command = Command::new(marvin_bin());
    command
        .arg("--config")
        .arg(&fx.config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .current_dir(&fx.root)
        .env_remove("MARVIN_CONFIG")
        .env_remove(marvin_core::marvin::DATA_DIR_ENV)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("create the stdout file"))
        .stderr(std::fs::File::create(&err).expect("create the stderr file"));
    match docker_host {
        Some(host) => command.env("DOCKER_HOST", host),
        None => command.env_remove("DOCKER_HOST"),
    };
    let child = command.spawn().expect("start marvin");
    Proc {
        child,
        out,
        err,
        started: Instant::now(),
    }
}

impl Proc {
    fn output(&self, code: Option<i32>) -> Ran {
        Ran {
            code,
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
            took: self.started.elapsed(),
        }
    }

    /// Whether it has ended.
    fn ended(&mut self) -> bool {
        self.child.try_wait().expect("poll marvin").is_some()
    }

    /// Wait for the end; a process still running after `within` is killed and the test fails: a hang.
    async fn finish(mut self, within: Duration) -> Ran {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll marvin") {
                return self.output(status.code());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "marvin hung: still running after {}s\n{}",
                    within.as_secs(),
                    self.output(None).text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL and reap.
    fn kill(mut self) -> Ran {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap marvin");
        self.output(status.code())
    }
}

/// Run `marvin ARGS` to its end (at most `within`).
async fn marvin(
    fx: &Fixture,
    data: &Path,
    docker_host: Option<&str>,
    args: &[&str],
    within: Duration,
) -> Ran {
    let ran = spawn(fx, data, docker_host, args).finish(within).await;
    ran.assert_no_panic();
    ran
}

fn marvin_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(common_e2e::marvin_binary).clone()
}

// ---------------------------------------------------------------------------
// A TCP proxy in front of the Docker socket that the test can cut.

/// Listens on 127.0.0.1 and forwards every connection to the Docker socket.
/// `cut` drops every connection and closes the port (new ones are refused);
/// `restore` opens the same port again.
struct Proxy {
    rt: Option<tokio::runtime::Runtime>,
    port: u16,
    socket: PathBuf,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    fn start() -> Proxy {
        let socket = match std::env::var("DOCKER_HOST") {
            Ok(h) if !h.is_empty() => {
                PathBuf::from(h.strip_prefix("unix://").unwrap_or_else(|| {
                    panic!("the fault tests proxy a unix Docker socket; DOCKER_HOST is {h}")
                }))
            }
            _ => PathBuf::from("/var/run/docker.sock"),
        };
        assert!(
            socket.exists(),
            "the Docker socket {} is missing: the fault tests need a local Docker engine",
            socket.display()
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the proxy's runtime");
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy on 127.0.0.1");
        let port = listener.local_addr().expect("the proxy's port").port();
        let proxy = Proxy {
            rt: Some(rt),
            port,
            socket,
            accept: Mutex::new(None),
            conns: Arc::new(Mutex::new(Vec::new())),
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        proxy.listen(listener);
        proxy
    }

    fn docker_host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn listen(&self, listener: std::net::TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let rt = self.rt.as_ref().expect("the proxy runs");
        let _enter = rt.enter();
        let listener = tokio::net::TcpListener::from_std(listener).expect("the proxy's listener");
        let socket = self.socket.clone();
        let conns = Arc::clone(&self.conns);
        let accepted = Arc::clone(&self.accepted);
        let handle = rt.spawn(async move {
            loop {
                let Ok((mut tcp, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                let socket = socket.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                    }
                });
                let mut conns = conns.lock().expect("conns lock");
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        });
        *self.accept.lock().expect("accept lock") = Some(handle);
    }

    /// The engine is gone: the port closes and every open connection drops.
    fn cut(&self) {
        if let Some(accept) = self.accept.lock().expect("accept lock").take() {
            accept.abort();
        }
        let conns: Vec<_> = std::mem::take(&mut *self.conns.lock().expect("conns lock"));
        for c in &conns {
            c.abort();
        }
        // Aborted tasks drop their sockets on the proxy's thread: wait until they have.
        let deadline = Instant::now() + Duration::from_secs(5);
        while conns.iter().any(|c| !c.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "the proxy's connections did not close"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The listener too: a connect must be refused now.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "the proxy's port did not close");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The engine is back, on the same address.
    fn restore(&self) {
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port))
            .expect("bind the proxy's port again");
        self.listen(listener);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------
// Checks.

/// Every job of the fixture's `dev`, oldest first.
fn jobs(fx: &Fixture, data: &Path) -> Vec<Job> {
    let store = Store::open_in(data).expect("open the store");
    let mut jobs = store
        .jobs(&fx.project, Some("dev"), 1000)
        .expect("read the jobs");
    jobs.reverse();
    jobs
}

fn states(jobs: &[Job]) -> Vec<JobState> {
    jobs.iter().map(|j| j.state).collect()
}

/// `PRAGMA integrity_check` on the data directory's database.
fn integrity(data: &Path) -> String {
    let db = data.join(marvin_core::store::DB_FILE);
    let conn = rusqlite::Connection::open(&db)
        .unwrap_or_else(|e| panic!("open {} for the integrity check: {e}", db.display()));
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|e| panic!("PRAGMA integrity_check on {}: {e}", db.display()));
    rows.join("\n")
}

/// The step a job was in when it stopped (its last `step` event), or `-`.
fn last_step(data: &Path, job: i64) -> String {
    Store::open_in(data)
        .expect("open the store")
        .last_step(job)
        .expect("read the events")
        .unwrap_or_else(|| "-".to_string())
}

/// Whether a job has an event of this kind (`build_started`, `step` deploy, ...).
fn has_event(store: &Store, job: i64, kind: &str, step: Option<&str>) -> bool {
    store.events(job).expect("read the events").iter().any(|e| {
        e.kind == kind
            && step.is_none_or(|s| e.data.get("step").and_then(|v| v.as_str()) == Some(s))
    })
}

/// api's Dockerfile with a build step that takes `seconds`.
fn slow_api_dockerfile(seconds: u32) -> String {
    // A step no build on this engine ran before: BuildKit's cache is the
    // engine's, and a cached `RUN sleep` would take no time at all.
    static N: AtomicUsize = AtomicUsize::new(0);
    let unique = format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    format!(
        "FROM {}\nRUN sleep {seconds} && echo {unique}\nCOPY . /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        common_e2e::base_image()
    )
}

/// The first `marvin build dev`, which must succeed.
async fn first_build(fx: &Fixture, data: &Path, docker_host: Option<&str>) -> Ran {
    let first = marvin(fx, data, docker_host, &["build", "dev", "--json"], MINUTES).await;
    assert_eq!(first.code, Some(0), "first build:\n{}", first.text());
    first
}

/// Commit (and push) one changed file in a fixture repo.
fn change(fx: &Fixture, repo: &str, path: &str, text: &str) {
    fx.commit(repo, &[(path, Some(text))], &format!("{path}: {text}"));
}

const MINUTES: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------
// 1. The Docker engine goes away.

/// Wait for the newest `dev` job to be running and `ready` to hold; fails if marvin ends first.
async fn wait_for(
    fx: &Fixture,
    data: &Path,
    process: &mut Proc,
    what: &str,
    ready: impl AsyncFn(&Store, i64) -> bool,
) -> i64 {
    let store = Store::open_in(data).expect("open the store");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if process.ended() {
            panic!(
                "marvin ended before {what}:\n{}",
                process.output(None).text()
            );
        }
        assert!(Instant::now() < deadline, "marvin never reached {what}");
        if let Some(j) = store
            .jobs(&fx.project, Some("dev"), 1)
            .expect("read the jobs")
            .pop()
            .filter(|j| j.state == JobState::Running)
            && ready(&store, j.id).await
        {
            return j.id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_gone_mid_build_fails_the_job_naming_the_engine_and_the_next_build_converges() {
    let fx = Fixture::new("engine-build", Options::default()).await;
    let proxy = Proxy::start();
    let host = proxy.docker_host();
    let data = fx.data.clone();
    first_build(&fx, &data, Some(&host)).await;

    // api's build takes seconds: the engine goes while it runs.
    let slow = slow_api_dockerfile(4);
    change(&fx, "backend", "api/Dockerfile", &slow);
    let mut process = spawn(&fx, &data, Some(&host), &["build", "dev", "--json"]);
    let job = wait_for(&fx, &data, &mut process, "api's build", async |s, j| {
        has_event(s, j, "build_started", None)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.cut();
    let cut = Instant::now();
    let ran = process.finish(Duration::from_secs(150)).await;
    let to_exit = cut.elapsed();
    eprintln!(
        "engine cut mid-build: marvin exited {:.2}s later with {:?} (proxy saw {} connections)",
        to_exit.as_secs_f64(),
        ran.code,
        proxy.accepted.load(Ordering::Relaxed)
    );
    ran.assert_no_panic();
    assert_eq!(ran.code, Some(1), "the build fails:\n{}", ran.text());
    let summary = ran.summary();
    assert_eq!(summary["job"], job, "{}", ran.text());
    assert_eq!(summary["state"], "failed", "{}", ran.text());
    assert_eq!(summary["failed_step"], "build", "{}", ran.text());
    let error = summary["error"].as_str().unwrap_or_default();
    eprintln!("engine cut: the job says: {error}");
    assert!(
        error.contains(&format!("cannot reach the Docker engine at {host}"))
            && error.contains("api")
            && error.contains("build"),
        "the error says the engine is unreachable while building api: {error:?}\n{}",
        ran.text()
    );
    let recorded = jobs(&fx, &data);
    assert_eq!(
        states(&recorded),
        [JobState::Succeeded, JobState::Failed],
        "one job per build, the cut one failed"
    );
    assert_eq!(
        recorded[1].error.as_deref(),
        Some(error),
        "the store has the reason"
    );

    proxy.restore();
    let next = marvin(
        &fx,
        &data,
        Some(&host),
        &["build", "dev", "--json"],
        MINUTES,
    )
    .await;
    assert_eq!(
        next.code,
        Some(0),
        "the build after the engine is back:\n{}",
        next.text()
    );
    let built = next.summary()["built"].clone();
    assert!(
        built
            .as_array()
            .is_some_and(|b| b.iter().any(|x| x[0] == "api")),
        "api is built this time: {built}"
    );
    fx.assert_converged(&data).await;
    assert_eq!(
        states(&jobs(&fx, &data)),
        [JobState::Succeeded, JobState::Failed, JobState::Succeeded],
        "no job record lost or added"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_gone_mid_deploy_fails_the_job_naming_the_engine_and_the_next_build_converges() {
    let fx = Fixture::new("engine-deploy", Options::default()).await;
    let proxy = Proxy::start();
    let host = proxy.docker_host();
    let data = fx.data.clone();
    first_build(&fx, &data, Some(&host)).await;

    // api takes seconds to become healthy: the engine goes while marvin waits
    // for it, with its previous container stopped and set aside.
    fx.commit_slow_api_and_new_pages();
    let mut process = spawn(&fx, &data, Some(&host), &["build", "dev", "--json"]);
    let api = fx.container_name("dev", "api");
    let job = wait_for(
        &fx,
        &data,
        &mut process,
        "api's health wait in the deploy",
        async |s, j| {
            has_event(s, j, "step", Some("deploy"))
                && fx
                    .containers("dev")
                    .await
                    .iter()
                    .any(|c| c.name.starts_with(&format!("{api}-previous-")))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.cut();
    let cut = Instant::now();
    let ran = process.finish(Duration::from_secs(150)).await;
    eprintln!(
        "engine cut mid-deploy: marvin exited {:.2}s later with {:?} (proxy saw {} connections)",
        cut.elapsed().as_secs_f64(),
        ran.code,
        proxy.accepted.load(Ordering::Relaxed)
    );
    ran.assert_no_panic();
    assert_eq!(ran.code, Some(1), "the build fails:\n{}", ran.text());
    let summary = ran.summary();
    assert_eq!(summary["job"], job, "{}", ran.text());
    assert_eq!(summary["state"], "failed", "{}", ran.text());
    assert_eq!(summary["failed_step"], "deploy", "{}", ran.text());
    let error = summary["error"].as_str().unwrap_or_default();
    eprintln!("engine cut: the job says: {error}");
    assert!(
        error.contains(&format!("cannot reach the Docker engine at {host}"))
            && error.starts_with("api"),
        "the error says the engine is unreachable while deploying api: {error:?}\n{}",
        ran.text()
    );
    let recorded = jobs(&fx, &data);
    assert_eq!(
        states(&recorded),
        [JobState::Succeeded, JobState::Failed],
        "one job per build, the cut one failed"
    );
    assert_eq!(
        recorded[1].error.as_deref(),
        Some(error),
        "the store has the reason"
    );
    let aside: Vec<String> = fx
        .containers("dev")
        .await
        .into_iter()
        .map(|c| format!("{} ({:?})", c.name, c.state))
        .collect();
    eprintln!("left by the cut deploy: {aside:?}");

    proxy.restore();
    let next = marvin(
        &fx,
        &data,
        Some(&host),
        &["build", "dev", "--json"],
        MINUTES,
    )
    .await;
    assert_eq!(
        next.code,
        Some(0),
        "the build after the engine is back:\n{}",
        next.text()
    );
    fx.assert_converged(&data).await;
    assert_eq!(
        states(&jobs(&fx, &data)),
        [JobState::Succeeded, JobState::Failed, JobState::Succeeded],
        "no job record lost or added"
    );
}

// ---------------------------------------------------------------------------
// 2. A git remote goes away.

/// What `marvin status dev --json` says runs (the containers; the last job changes).
async fn running(fx: &Fixture) -> serde_json::Value {
    let ran = marvin(fx, &fx.data, None, &["status", "dev", "--json"], MINUTES).await;
    assert_eq!(ran.code, Some(0), "status:\n{}", ran.text());
    let status: serde_json::Value = serde_json::from_str(&ran.stdout).expect("status JSON");
    let mut containers = status["containers"]
        .as_array()
        .cloned()
        .expect("status lists containers");
    containers.sort_by_key(|c| c["name"].as_str().unwrap_or_default().to_string());
    serde_json::Value::Array(containers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_remote_gone_fails_the_build_naming_the_repo_and_the_environment_keeps_running() {
    let fx = Fixture::new("remote-gone", Options::default()).await;
    let data = fx.data.clone();
    first_build(&fx, &data, None).await;
    let before = running(&fx).await;
    let ids = fx.ids("dev").await;

    let remote = fx.root.join("repos/frontend.git");
    let away = fx.root.join("repos/frontend.git.away");
    std::fs::rename(&remote, &away).expect("move the frontend remote away");
    let ran = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    eprintln!(
        "remote gone: marvin exited {:?} after {:.2}s",
        ran.code,
        ran.took.as_secs_f64()
    );
    assert_eq!(ran.code, Some(1), "the build fails:\n{}", ran.text());
    let summary = ran.summary();
    assert_eq!(summary["state"], "failed", "{}", ran.text());
    assert_eq!(summary["failed_step"], "fetch", "{}", ran.text());
    let error = summary["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("frontend") && error.contains(&remote.display().to_string()),
        "the error names the repo and its URL: {error:?}"
    );
    assert!(
        !error.contains("backend"),
        "only the unreachable repo is blamed: {error:?}"
    );
    eprintln!("remote gone: {error}");

    // Nothing moved: the same containers, running, and `status` says so.
    assert_eq!(fx.ids("dev").await, ids, "the same containers");
    for (service, c) in fx.services("dev").await {
        assert_eq!(c.state, ContainerState::Running, "{service} still runs");
    }
    assert_eq!(
        running(&fx).await,
        before,
        "`marvin status dev` is unchanged"
    );
    assert_eq!(
        states(&jobs(&fx, &data)),
        [JobState::Succeeded, JobState::Failed]
    );

    // Back, with a change: it builds and deploys it.
    std::fs::rename(&away, &remote).expect("put the frontend remote back");
    change(&fx, "frontend", "web/index.html", "<h1>web 2</h1>\n");
    let next = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    assert_eq!(
        next.code,
        Some(0),
        "the build after the remote is back:\n{}",
        next.text()
    );
    assert_eq!(next.summary()["recreated"], serde_json::json!(["web"]));
    fx.assert_converged(&data).await;
    assert_eq!(
        states(&jobs(&fx, &data)),
        [JobState::Succeeded, JobState::Failed, JobState::Succeeded]
    );
}

// ---------------------------------------------------------------------------
// 3. SIGKILL at random points of 20 jobs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_of_20_jobs_loses_no_record_and_the_next_build_converges() {
    const KILLS: usize = 20;
    // A failing run is replayed with FAULTS_SEED.
    let (mut rng, seed) = Rng::from_env("FAULTS_SEED");
    eprintln!("sigkill: seed {seed} (FAULTS_SEED={seed} replays it)");
    let fx = Fixture::new("sigkill", Options::default()).await;
    let data = fx.data.clone();
    let test_started = Instant::now();
    let first = first_build(&fx, &data, None).await;

    // How long one changed service takes, fetch to deploy: the span to kill in.
    let changes = [
        ("backend", "api/index.html"),
        ("frontend", "docs/index.html"),
        ("frontend", "web/index.html"),
        ("backend", "worker/work.sh"),
    ];
    change(&fx, "backend", "api/index.html", "api 0\n");
    let measured = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    assert_eq!(
        measured.code,
        Some(0),
        "measured build:\n{}",
        measured.text()
    );
    let span = measured.took;
    eprintln!(
        "sigkill: one changed service takes {:.2}s (first full build {:.2}s)",
        span.as_secs_f64(),
        first.took.as_secs_f64()
    );
    let setup_jobs = 2;

    let mut expected: Vec<(i64, Option<Duration>)> = Vec::new();
    for i in 1..=KILLS {
        let (repo, path) = changes[i % changes.len()];
        let text = if path.ends_with(".sh") {
            format!("while true; do sleep 5; done # {i}\n")
        } else {
            format!("version {i}\n")
        };
        change(&fx, repo, path, &text);
        let before = jobs(&fx, &data).last().map(|j| j.id).unwrap_or(0);
        let mut process = spawn(&fx, &data, None, &["build", "dev", "--json"]);
        // Count from the moment its job exists, so every process leaves one record.
        let store = Store::open_in(&data).expect("open the store");
        let job = loop {
            if let Some(j) = store
                .jobs(&fx.project, Some("dev"), 1)
                .expect("read the jobs")
                .pop()
                .filter(|j| j.id > before)
            {
                break j.id;
            }
            if process.ended() {
                panic!(
                    "marvin ended before its job was recorded:\n{}",
                    process.output(None).text()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        drop(store);
        let finish = rng.unit() < 0.2;
        // Squared: early points (fetch, plan, build) get as many kills as the long deploy.
        let delay = span.mul_f64(rng.unit().powi(2) * 1.2);
        if finish {
            let ran = process.finish(MINUTES).await;
            ran.assert_no_panic();
            eprintln!(
                "sigkill {i:2}: job #{job} {path:<16} left to finish: exit {:?} after {:.2}s",
                ran.code,
                ran.took.as_secs_f64()
            );
            assert_eq!(ran.code, Some(0), "job #{job} succeeds:\n{}", ran.text());
            expected.push((job, None));
        } else {
            tokio::time::sleep(delay).await;
            let ran = process.kill();
            ran.assert_no_panic();
            let state = jobs(&fx, &data)
                .into_iter()
                .find(|j| j.id == job)
                .map(|j| j.state);
            eprintln!(
                "sigkill {i:2}: job #{job} {path:<16} killed after {:>4}ms in step {:<8} (stored as {:?}, exit {:?})",
                delay.as_millis(),
                last_step(&data, job),
                state,
                ran.code
            );
            expected.push((job, Some(delay)));
        }
    }

    // Before any recovery: the file is sound and every process left its one record.
    assert_eq!(
        integrity(&data),
        "ok",
        "the database after {KILLS} SIGKILLs"
    );
    let raw = jobs(&fx, &data);
    assert_eq!(raw.len(), setup_jobs + KILLS, "one record per process");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for j in &raw[setup_jobs..] {
        *tally.entry(j.state.to_string()).or_default() += 1;
    }
    eprintln!("sigkill: states as the killed processes left them: {tally:?}");

    // The next process interrupts what the dead ones left, and converges.
    let next = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    eprintln!(
        "sigkill: the build after the kills took {:.2}s: {}",
        next.took.as_secs_f64(),
        next.summary()
    );
    assert_eq!(
        next.code,
        Some(0),
        "the build after the kills:\n{}",
        next.text()
    );
    let all = jobs(&fx, &data);
    assert_eq!(all.len(), setup_jobs + KILLS + 1, "no record lost or added");
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (j, (id, killed)) in all[setup_jobs..].iter().zip(&expected) {
        assert_eq!(j.id, *id);
        *tally.entry(j.state.to_string()).or_default() += 1;
        match killed {
            None => assert_eq!(j.state, JobState::Succeeded, "job #{id} ran to its end"),
            Some(_) => assert!(
                matches!(j.state, JobState::Interrupted | JobState::Succeeded),
                "killed job #{id} is {} ({:?}); a killed job is interrupted, or succeeded if it ended first",
                j.state,
                j.error
            ),
        }
    }
    eprintln!("sigkill: states after recovery: {tally:?}");
    assert_eq!(all.last().map(|j| j.state), Some(JobState::Succeeded));
    assert_eq!(integrity(&data), "ok", "the database after recovery");
    fx.assert_converged(&data).await;

    // And a build right after has nothing to do.
    let again = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    assert_eq!(again.code, Some(0), "{}", again.text());
    let s = again.summary();
    for key in ["built", "created", "recreated", "removed"] {
        assert_eq!(
            s[key],
            serde_json::json!([]),
            "the build after does nothing: {s}"
        );
    }
    eprintln!(
        "sigkill: whole test {:.1}s",
        test_started.elapsed().as_secs_f64()
    );
}

/// A job killed while it waits for its environment (before the process's
/// first heartbeat) is recognised as abandoned by the next process at once:
/// it does not hold the queue until a heartbeat would have gone stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_queued_job_does_not_hold_up_the_next_build() {
    let fx = Fixture::new("sigkill-queued", Options::default()).await;
    let data = fx.data.clone();
    first_build(&fx, &data, None).await;

    // A holds the environment for seconds; B queues behind it and is killed.
    let slow = slow_api_dockerfile(6);
    change(&fx, "backend", "api/Dockerfile", &slow);
    let mut a = spawn(&fx, &data, None, &["build", "dev", "--json"]);
    let a_job = wait_for(&fx, &data, &mut a, "A running", async |_, _| true).await;
    let mut b = spawn(&fx, &data, None, &["build", "dev", "--json"]);
    let store = Store::open_in(&data).expect("open the store");
    let b_job = loop {
        if let Some(j) = store
            .jobs(&fx.project, Some("dev"), 1)
            .expect("read the jobs")
            .pop()
            .filter(|j| j.id > a_job)
        {
            break j;
        }
        assert!(
            !b.ended(),
            "B ended before it queued:\n{}",
            b.output(None).text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(b_job.state, JobState::Queued, "B waits behind A");
    let b_ran = b.kill();
    let b_owner = store
        .active_owners(&fx.project)
        .expect("read the owners")
        .into_iter()
        .find(|o| o.job == b_job.id)
        .expect("B's job is still queued");
    eprintln!(
        "queued kill: B's job #{} killed {}ms after it was recorded, owner {:?} (exit {:?})",
        b_job.id,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
            - b_job.created_ms,
        b_owner.owner,
        b_ran.code
    );
    assert!(
        b_owner.owner.is_some(),
        "B's job names its process from the start, so its death is seen at once"
    );
    let a_ran = a.finish(MINUTES).await;
    assert_eq!(a_ran.code, Some(0), "A:\n{}", a_ran.text());

    // C starts at once: B's job is interrupted, not waited for.
    let c = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    assert_eq!(c.code, Some(0), "C:\n{}", c.text());
    let all = jobs(&fx, &data);
    let c_job = all.last().expect("C's job");
    let waited = c_job.started_ms.expect("C started") - c_job.created_ms;
    eprintln!(
        "queued kill: C waited {waited}ms for the environment, ran {:.2}s",
        c.took.as_secs_f64()
    );
    assert_eq!(
        states(&all),
        [
            JobState::Succeeded,
            JobState::Succeeded,
            JobState::Interrupted,
            JobState::Succeeded
        ],
        "first, A, B (killed while queued), C"
    );
    assert!(
        waited < 3_000,
        "C waited {waited}ms behind a job whose process is gone"
    );
}

/// `marvin history` and `marvin status` start no runtime, yet a job whose
/// process was killed reads as interrupted there at once, not as running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_job_reads_as_interrupted_in_history_and_status_at_once() {
    let fx = Fixture::new("sigkill-read", Options::default()).await;
    let data = fx.data.clone();
    first_build(&fx, &data, None).await;
    let slow = slow_api_dockerfile(6);
    change(&fx, "backend", "api/Dockerfile", &slow);
    let mut a = spawn(&fx, &data, None, &["build", "dev", "--json"]);
    let a_job = wait_for(&fx, &data, &mut a, "A running", async |_, _| true).await;
    a.kill();
    // Nothing has swept the store yet: it still says running.
    let killed = jobs(&fx, &data)
        .into_iter()
        .find(|j| j.id == a_job)
        .expect("A's job");
    assert_eq!(killed.state, JobState::Running, "{killed:?}");

    let history = marvin(&fx, &data, None, &["history", "dev", "--json"], MINUTES).await;
    assert_eq!(history.code, Some(0), "{}", history.text());
    let listed: serde_json::Value = serde_json::from_str(&history.stdout).expect("history --json");
    let shown = listed
        .as_array()
        .expect("a list of jobs")
        .iter()
        .find(|j| j["id"] == serde_json::json!(a_job))
        .unwrap_or_else(|| panic!("job {a_job} in {listed}"));
    assert_eq!(shown["state"], "interrupted", "{shown}");

    let status = marvin(&fx, &data, None, &["status", "dev"], MINUTES).await;
    assert_eq!(status.code, Some(0), "{}", status.text());
    assert!(
        status
            .stdout
            .contains(&format!("last job: #{a_job} build interrupted")),
        "status shows the killed job interrupted:\n{}",
        status.stdout
    );
    assert_eq!(
        states(&jobs(&fx, &data)),
        [JobState::Succeeded, JobState::Interrupted]
    );
}

// ---------------------------------------------------------------------------
// 4. The data directory's disk is full.

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create the mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .expect("the `mount` command (util-linux) is needed");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs at {} failed — the disk-full test needs root and mount rights: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Free bytes, as `df` says.
    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.path)
            .output()
            .expect("the `df` command");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }

    /// Fill with one file until at most `leave` bytes are free; returns the file.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("create the filler");
        let chunk = vec![0x5au8; 64 * 1024];
        loop {
            let free = self.free();
            if free <= leave {
                break;
            }
            let n = usize::try_from((free - leave).min(chunk.len() as u64)).expect("small");
            match file.write_all(&chunk[..n]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("write the filler: {e}"),
            }
            file.flush().expect("flush the filler");
        }
        file.sync_all().ok();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.path).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        }
    }
}

/// Random bytes that do not compress (so git stores all of them).
fn incompressible(len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_under_the_data_dir_fails_clearly_keeps_the_database_sound_and_recovers() {
    let fx = Fixture::new("disk-full", Options::default()).await;
    let disk = Tmpfs::mount(&fx.root.join("small-disk"), "24m");
    let data = disk.path.join("data");
    first_build(&fx, &data, None).await;
    eprintln!(
        "disk full: after the first build {} bytes are free of 24 MiB",
        disk.free()
    );

    // (a) Not a byte left: the job cannot even be recorded. Say so, and where.
    change(&fx, "frontend", "docs/index.html", "<p>docs 2</p>\n");
    let filler = disk.fill(0);
    eprintln!("disk full: filled, {} bytes free", disk.free());
    let ran = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    eprintln!("disk full (a): exit {:?}: {}", ran.code, ran.stderr.trim());
    assert_eq!(ran.code, Some(1), "{}", ran.text());
    assert!(
        ran.stderr.contains("the disk is full") && ran.stderr.contains(&data.display().to_string()),
        "the error says the disk is full and where: {}",
        ran.text()
    );
    // (SQLite cannot even open a WAL database on a full disk: check once there is room.)
    std::fs::remove_file(&filler).expect("remove the filler");
    assert_eq!(integrity(&data), "ok", "the database after the full disk");
    assert_eq!(
        states(&jobs(&fx, &data)),
        [JobState::Succeeded],
        "the job that could not be recorded is not there"
    );

    // (b) Room for the state database, not for a big commit's objects: the
    // fetch fails, the job is recorded as failed with the reason.
    let mut rng = Rng::new(4);
    let big = incompressible(10 * 1024 * 1024, &mut rng);
    let work = fx.root.join("work/frontend");
    std::fs::write(work.join("docs/big.bin"), &big).expect("write the big file");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "docs: a big file"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let filler = disk.fill(3 * 1024 * 1024);
    eprintln!("disk nearly full: {} bytes free", disk.free());
    let ran = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    eprintln!(
        "disk full (b): exit {:?}: {}",
        ran.code,
        ran.summary()["error"]
    );
    assert_eq!(ran.code, Some(1), "{}", ran.text());
    let summary = ran.summary();
    assert_eq!(summary["failed_step"], "fetch", "{}", ran.text());
    let error = summary["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("frontend") && error.to_lowercase().contains("no space left on device"),
        "the error names the repo and the full disk: {error:?}"
    );
    assert_eq!(
        states(&jobs(&fx, &data)),
        [JobState::Succeeded, JobState::Failed],
        "the job whose fetch failed is recorded as failed"
    );
    assert_eq!(integrity(&data), "ok", "the database on a nearly full disk");

    // Room again: the next build deploys the change.
    std::fs::remove_file(&filler).expect("remove the filler");
    let next = marvin(&fx, &data, None, &["build", "dev", "--json"], MINUTES).await;
    assert_eq!(
        next.code,
        Some(0),
        "the build with room again:\n{}",
        next.text()
    );
    assert_eq!(next.summary()["recreated"], serde_json::json!(["docs"]));
    fx.assert_converged(&data).await;
    assert_eq!(integrity(&data), "ok");
    assert_eq!(
        states(&jobs(&fx, &data)),
        [JobState::Succeeded, JobState::Failed, JobState::Succeeded]
    );
}
