//! Issue #3 "Speed": `marvin build dev` versus docker-compose on the same
//! engine, the same compose file and the same build contexts.
//!
//! The talk's shape: two git repos (a backend at the workspace root, a
//! frontend at `fe/`), 17 small services built `FROM` a local busybox base
//! image (no registry). Measured, each several times (median reported):
//! - no change: `marvin build dev` vs `docker-compose build && docker-compose up -d`;
//! - one service changed: `marvin build dev` vs `docker-compose up -d --build`.
//!
//! Images built and containers recreated are counted from the engine (image
//! and container ids before and after each run), not from either tool's report.
//!
//! `cargo bench -p marvin-tests --bench build` runs the full benchmark with the
//! release `marvin` binary (`scripts/bench-build` builds it first). Without
//! `--bench` (`cargo test --benches`) it runs a smoke version (4 services, one
//! round, the debug binary) that checks the counts, not the times.
//! Everything it creates is removed at the end, also on failure.
//! `BENCH_VERBOSE=1` shows each tool's own report; `BENCH_KEEP_STATE=FILE`
//! keeps a copy of Marvin's state database (events and logs carry times).
//! `BENCH_CONTEXT_FILES=N` adds N small source files (1 KiB each, in nested
//! directories, committed in the repos) to every service's build context, the
//! size of a real service's sources (issue #2: ~20,000 files per repo, N=1000).
//!
//! `BENCH_ENVIRONMENTS=N` (N ≥ 2) measures issue #18's scenario instead:
//! `marvin build ENV` for one environment alone, then N `marvin build`
//! processes for N environments started at once on the same commits, first
//! on an empty data directory, then again after Marvin's images and
//! containers are removed (mirrors present). It checks that every job
//! succeeds, that the images built across all of them are as many as the
//! distinct build keys, and that no untagged image is left, and prints the
//! wall times and their ratio.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use marvin_core::engine::{
    DockerEngine, Engine, LABEL_BUILD_KEY, LABEL_PROJECT, ensure_busybox_image,
};

/// Services of the backend repo (mounted at the workspace root).
const BACKEND: &[&str] = &[
    "gateway",
    "auth",
    "users",
    "orders",
    "payments",
    "inventory",
    "catalog",
    "search",
    "notify",
    "reports",
    "scheduler",
    "sequence",
];

/// Services of the frontend repo (mounted at `fe/`).
const FRONTEND: &[&str] = &["web", "admin", "docs", "portal", "assets"];

/// The services changed in turn by the one-service-change rounds: one with
/// dependents, one leaf in the other repo, one plain backend service.
const CHANGED: &[&str] = &["orders", "web", "search"];

/// How big a run is.
struct Shape {
    backend: Vec<&'static str>,
    frontend: Vec<&'static str>,
    rounds: usize,
    smoke: bool,
    /// Extra source files in each service's context (`BENCH_CONTEXT_FILES`).
    context_files: usize,
}

impl Shape {
    fn full() -> Self {
        Shape {
            backend: BACKEND.to_vec(),
            frontend: FRONTEND.to_vec(),
            rounds: 5,
            smoke: false,
            context_files: 0,
        }
    }

    fn smoke() -> Self {
        Shape {
            backend: vec!["gateway", "auth", "orders"],
            frontend: vec!["web"],
            rounds: 1,
            smoke: true,
            context_files: 0,
        }
    }

    fn services(&self) -> Vec<&'static str> {
        self.backend.iter().chain(&self.frontend).copied().collect()
    }

    fn is_frontend(&self, service: &str) -> bool {
        self.frontend.contains(&service)
    }

    fn changed(&self, round: usize) -> &'static str {
        let candidates: Vec<&str> = CHANGED
            .iter()
            .copied()
            .filter(|s| self.services().contains(s))
            .collect();
        candidates[round % candidates.len()]
    }
}

type Failure = String;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mut shape = if full { Shape::full() } else { Shape::smoke() };
    match context_files() {
        Ok(n) => shape.context_files = n,
        Err(e) => {
            eprintln!("bench-build failed: {e}");
            std::process::exit(1);
        }
    }
    if let Err(e) = run(&shape) {
        eprintln!("bench-build failed: {e}");
        std::process::exit(1);
    }
}

fn run(shape: &Shape) -> Result<(), Failure> {
    let marvin_bin = marvin_binary()?;
    for tool in ["git", "docker", "docker-compose"] {
        which(tool)?;
    }
    let tokio = tokio::runtime::Runtime::new().map_err(|e| format!("tokio: {e}"))?;
    let engine = DockerEngine::connect().map_err(|e| e.to_string())?;
    tokio
        .block_on(engine.ping())
        .map_err(|e| format!("no Docker engine: {e}"))?;

    let id = std::process::id();
    let bench = Bench {
        dir: tempfile::Builder::new()
            .prefix("marvin-bench-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?,
        project: format!("mbench-{id}"),
        compose_project: format!("cbench{id}"),
        marvin_bin,
        engine,
        tokio,
    };
    let base = format!("{}/busybox:1", bench.project);
    let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), bench.project.clone())]);
    bench
        .tokio
        .block_on(ensure_busybox_image(&bench.engine, &base, &labels))
        .map_err(|e| format!("base image: {e}"))?;
    bench.create_project(shape, &base)?;
    if let Some(n) = environments()? {
        return concurrent_environments(&bench, shape, n);
    }
    println!(
        "bench-build: {} services in 2 repos, {} extra file(s) per context, {} round(s) per scenario, marvin = {}",
        shape.services().len(),
        shape.context_files,
        shape.rounds,
        bench.marvin_bin.display()
    );

    let mut results: Vec<Measured> = Vec::new();
    let first_marvin = bench.measure_marvin("first build")?;
    let first_compose = bench.measure_compose("first build", &[&["up", "-d", "--build"]])?;
    results.push(first_marvin);
    results.push(first_compose);

    for round in 0..shape.rounds {
        eprintln!("no-change round {}", round + 1);
        results.push(bench.measure_marvin("no change")?);
        results.push(bench.measure_compose("no change", &[&["build"], &["up", "-d"]])?);
    }
    for round in 0..shape.rounds {
        let service = shape.changed(round);
        eprintln!("one-service-change round {} ({service})", round + 1);
        // Each tool builds content nobody built before: the engine's layer
        // cache, shared by both, must not hand the second one a free build.
        // Each tool also sees exactly one service changed since its last
        // build: Marvin's changes are pushed to the remotes it fetches,
        // docker-compose's are committed in its checkout only.
        bench.change_remote(shape, service, &format!("round {round}, for marvin"))?;
        results.push(bench.measure_marvin("one service changed")?);
        bench.change_checkout(
            shape,
            service,
            &format!("round {round}, for docker-compose"),
        )?;
        results.push(bench.measure_compose("one service changed", &[&["up", "-d", "--build"]])?);
    }

    if let Some(to) = std::env::var_os("BENCH_KEEP_STATE") {
        // Marvin's state (jobs, events and logs with times) for profiling.
        std::fs::copy(bench.path().join(".marvin/marvin.db"), &to)
            .map_err(|e| format!("copying Marvin's state: {e}"))?;
    }
    print!("{}", table(&results));
    if shape.smoke {
        check_counts(&results, shape)?;
    }
    Ok(())
}

/// Everything the benchmark made; dropping it removes all of it.
struct Bench {
    dir: tempfile::TempDir,
    project: String,
    compose_project: String,
    marvin_bin: PathBuf,
    engine: DockerEngine,
    tokio: tokio::runtime::Runtime,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let checkout = self.checkout();
        if checkout.join("docker-compose.yml").exists() {
            let out = Command::new("docker-compose")
                .args(["-p", &self.compose_project])
                .args(["down", "--rmi", "local", "-v", "--remove-orphans"])
                .current_dir(&checkout)
                .output();
            if let Ok(out) = out
                && !out.status.success()
            {
                eprintln!(
                    "cleanup: docker-compose down failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), self.project.clone())]);
        if let Err(e) = self.tokio.block_on(self.engine.remove_labelled(&labels)) {
            eprintln!("cleanup: removing {}'s Docker objects: {e}", self.project);
        }
    }
}

/// One timed run of one tool.
struct Measured {
    scenario: &'static str,
    tool: &'static str,
    wall: Duration,
    images_built: usize,
    containers_recreated: usize,
}

/// What the engine holds for one tool: image ids, and container id per container name.
struct Snapshot {
    images: BTreeSet<String>,
    containers: BTreeMap<String, String>,
}

impl Snapshot {
    fn diff(&self, after: &Snapshot) -> (usize, usize) {
        let built = after.images.difference(&self.images).count();
        let recreated = after
            .containers
            .iter()
            .filter(|(name, id)| self.containers.get(*name) != Some(id))
            .count();
        (built, recreated)
    }
}

impl Bench {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Both repos checked out into one tree, as the workspace merges them: docker-compose's directory.
    fn checkout(&self) -> PathBuf {
        self.path().join("checkout")
    }

    fn create_project(&self, shape: &Shape, base: &str) -> Result<(), Failure> {
        let root = self.path();
        let mut backend = vec![("docker-compose.yml".to_string(), compose_file(shape))];
        for s in &shape.backend {
            backend.extend(service_files(s, base));
            backend.extend(source_files(s, shape.context_files));
        }
        let mut frontend = Vec::new();
        for s in &shape.frontend {
            frontend.extend(service_files(s, base));
            frontend.extend(source_files(s, shape.context_files));
        }
        make_repo(root, "backend", &backend)?;
        make_repo(root, "frontend", &frontend)?;
        std::fs::write(root.join("marvin.yml"), self.marvin_yml())
            .map_err(|e| format!("marvin.yml: {e}"))?;
        let checkout = self.checkout();
        git(
            root,
            &[
                "clone",
                "-q",
                &root.join("repos/backend.git").display().to_string(),
                &checkout.display().to_string(),
            ],
        )?;
        git(
            root,
            &[
                "clone",
                "-q",
                &root.join("repos/frontend.git").display().to_string(),
                &checkout.join("fe").display().to_string(),
            ],
        )?;
        Ok(())
    }

    fn marvin_yml(&self) -> String {
        let root = self.path();
        let environments: String = environment_names(environments().ok().flatten().unwrap_or(1))
            .iter()
            .map(|env| format!("  {env}:\n    branch: main\n"))
            .collect();
        format!(
            "project: {project}\ncompose: docker-compose.yml\n\
             repos:\n  backend:\n    url: {backend}\n    path: .\n  frontend:\n    url: {frontend}\n    path: fe\n\
             environments:\n{environments}\
             settings:\n  health_timeout: 60s\n",
            project = self.project,
            backend = root.join("repos/backend.git").display(),
            frontend = root.join("repos/frontend.git").display(),
        )
    }

    /// `marvin build ENV --json` for each of `envs` at once, on `data`:
    /// the wall time until the last one ends, and what the engine gained.
    fn build_at_once(&self, envs: &[String], data: &Path) -> Result<(Duration, usize), Failure> {
        let before = self.snapshot_marvin()?;
        let started = Instant::now();
        let outputs: Vec<std::io::Result<Output>> = std::thread::scope(|scope| {
            let running: Vec<_> = envs
                .iter()
                .map(|env| {
                    let mut command = Command::new(&self.marvin_bin);
                    command
                        .args(["build", env, "--json", "--config"])
                        .arg(self.path().join("marvin.yml"))
                        .arg("--data-dir")
                        .arg(data);
                    scope.spawn(move || command.output())
                })
                .collect();
            running
                .into_iter()
                .map(|h| h.join().expect("a thread running marvin"))
                .collect()
        });
        let wall = started.elapsed();
        for (env, out) in envs.iter().zip(outputs) {
            let out = out.map_err(|e| format!("running {}: {e}", self.marvin_bin.display()))?;
            checked(&format!("marvin build {env}"), &out)?;
        }
        let (built, _) = before.diff(&self.snapshot_marvin()?);
        Ok((wall, built))
    }

    /// Remove Marvin's containers and built images (not the base image).
    fn remove_deployments(&self) -> Result<(), Failure> {
        let project = format!("label={LABEL_PROJECT}={}", self.project);
        let containers = docker(&["ps", "-aq", "--filter", &project])?;
        let ids: Vec<&str> = containers.lines().collect();
        if !ids.is_empty() {
            docker(&[&["rm", "-f"][..], &ids].concat())?;
        }
        let images = docker(&[
            "images",
            "-q",
            "--filter",
            &project,
            "--filter",
            &format!("label={LABEL_BUILD_KEY}"),
        ])?;
        let ids: BTreeSet<&str> = images.lines().collect();
        if !ids.is_empty() {
            let ids: Vec<&str> = ids.into_iter().collect();
            docker(&[&["rmi", "-f"][..], &ids].concat())?;
        }
        Ok(())
    }

    /// Commit and push a change to one file of `service`'s context, as a developer would.
    fn change_remote(&self, shape: &Shape, service: &str, text: &str) -> Result<(), Failure> {
        let repo = if shape.is_frontend(service) {
            "frontend"
        } else {
            "backend"
        };
        let work = self.path().join("work").join(repo);
        commit_change(&work, service, text)?;
        git(&work, &["push", "-q", "origin", "main"])?;
        Ok(())
    }

    /// Commit a change to one file of `service`'s context in docker-compose's checkout (not timed).
    fn change_checkout(&self, shape: &Shape, service: &str, text: &str) -> Result<(), Failure> {
        let dir = if shape.is_frontend(service) {
            self.checkout().join("fe")
        } else {
            self.checkout()
        };
        commit_change(&dir, service, text)
    }

    fn measure_marvin(&self, scenario: &'static str) -> Result<Measured, Failure> {
        let before = self.snapshot_marvin()?;
        let started = Instant::now();
        let out = Command::new(&self.marvin_bin)
            .args(["build", "dev"])
            .arg("--config")
            .arg(self.path().join("marvin.yml"))
            .output()
            .map_err(|e| format!("running {}: {e}", self.marvin_bin.display()))?;
        let wall = started.elapsed();
        checked("marvin build dev", &out)?;
        if verbose() {
            eprint!("{}", String::from_utf8_lossy(&out.stdout));
        }
        let (images_built, containers_recreated) = before.diff(&self.snapshot_marvin()?);
        Ok(Measured {
            scenario,
            tool: "marvin",
            wall,
            images_built,
            containers_recreated,
        })
    }

    fn measure_compose(
        &self,
        scenario: &'static str,
        commands: &[&[&str]],
    ) -> Result<Measured, Failure> {
        let before = self.snapshot_compose()?;
        let started = Instant::now();
        for args in commands {
            let out = Command::new("docker-compose")
                .args(["-p", &self.compose_project])
                .args(*args)
                .current_dir(self.checkout())
                .output()
                .map_err(|e| format!("running docker-compose: {e}"))?;
            checked(&format!("docker-compose {}", args.join(" ")), &out)?;
            if verbose() {
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let wall = started.elapsed();
        let (images_built, containers_recreated) = before.diff(&self.snapshot_compose()?);
        Ok(Measured {
            scenario,
            tool: "docker-compose",
            wall,
            images_built,
            containers_recreated,
        })
    }

    fn snapshot_marvin(&self) -> Result<Snapshot, Failure> {
        let label = format!("label={LABEL_PROJECT}={}", self.project);
        Ok(Snapshot {
            images: docker_images(&label)?,
            containers: docker_containers(&label)?,
        })
    }

    fn snapshot_compose(&self) -> Result<Snapshot, Failure> {
        Ok(Snapshot {
            images: docker_images(&format!("reference={}_*", self.compose_project))?,
            containers: docker_containers(&format!(
                "label=com.docker.compose.project={}",
                self.compose_project
            ))?,
        })
    }
}

/// Ids of the images matching `filter` (dangling ones included: a rebuilt image leaves one).
fn docker_images(filter: &str) -> Result<BTreeSet<String>, Failure> {
    let out = docker(&["images", "-q", "--no-trunc", "--filter", filter])?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Container name → id of the containers matching `filter`.
fn docker_containers(filter: &str) -> Result<BTreeMap<String, String>, Failure> {
    let out = docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        filter,
        "--format",
        "{{.Names}} {{.ID}}",
    ])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(name, id)| (name.to_string(), id.to_string()))
        .collect())
}

/// `BENCH_ENVIRONMENTS=N`: issue #18's concurrent scenario with N environments.
fn environments() -> Result<Option<usize>, Failure> {
    match std::env::var("BENCH_ENVIRONMENTS") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(text) => match text.trim().parse() {
            Ok(n) if n >= 2 => Ok(Some(n)),
            _ => Err(format!(
                "BENCH_ENVIRONMENTS={text:?}: give a number of environments, 2 or more"
            )),
        },
        Err(e) => Err(format!("BENCH_ENVIRONMENTS: {e}")),
    }
}

/// `dev`, then `env2` … `envN`.
fn environment_names(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| {
            if i == 1 {
                "dev".into()
            } else {
                format!("env{i}")
            }
        })
        .collect()
}

/// Issue #18: N environments built by N processes at once vs one alone.
fn concurrent_environments(bench: &Bench, shape: &Shape, n: usize) -> Result<(), Failure> {
    let envs = environment_names(n);
    let keys = shape.services().len();
    println!(
        "bench-build: {keys} services in 2 repos; {n} `marvin build` processes at once vs one alone, marvin = {}",
        bench.marvin_bin.display()
    );
    let alone_data = bench.path().join("data-alone");
    let (alone, built) = bench.build_at_once(&envs[..1], &alone_data)?;
    println!(
        "one environment alone, empty data directory: {} ({built} images built)",
        seconds(alone)
    );
    bench.remove_deployments()?;
    let shared = bench.path().join("data-shared");
    for round in [
        "empty data directory",
        "mirrors present, images and containers removed",
    ] {
        let (wall, built) = bench.build_at_once(&envs, &shared)?;
        let untagged = docker(&[
            "images",
            "-q",
            "--filter",
            "dangling=true",
            "--filter",
            &format!("label={LABEL_PROJECT}={}", bench.project),
        ])?
        .lines()
        .count();
        println!(
            "{n} environments at once, {round}: {} ({built} images built for {keys} keys, {untagged} untagged left) = {:.2}× one alone",
            seconds(wall),
            wall.as_secs_f64() / alone.as_secs_f64()
        );
        if built != keys || untagged != 0 {
            return Err(format!(
                "{round}: {built} images built for {keys} distinct keys, {untagged} untagged images left"
            ));
        }
        bench.remove_deployments()?;
    }
    Ok(())
}

/// `BENCH_CONTEXT_FILES=N`: extra source files per service context (0 when unset).
fn context_files() -> Result<usize, Failure> {
    match std::env::var("BENCH_CONTEXT_FILES") {
        Err(std::env::VarError::NotPresent) => Ok(0),
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("BENCH_CONTEXT_FILES={text:?} is not a number of files")),
        Err(e) => Err(format!("BENCH_CONTEXT_FILES: {e}")),
    }
}

/// `BENCH_VERBOSE=1`: show each tool's own report of every run.
fn verbose() -> bool {
    std::env::var_os("BENCH_VERBOSE").is_some()
}

fn docker(args: &[&str]) -> Result<String, Failure> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("running docker: {e}"))?;
    checked(&format!("docker {}", args.join(" ")), &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn checked(what: &str, out: &Output) -> Result<(), Failure> {
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn which(program: &str) -> Result<(), Failure> {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!(
            "`{program}` is not on PATH; scripts/setup installs what the benchmark needs"
        ))
    }
}

/// The `marvin` binary of the same profile as this bench: `target/<profile>/marvin`.
fn marvin_binary() -> Result<PathBuf, Failure> {
    if let Some(path) = std::env::var_os("MARVIN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    // target/<profile>/deps/build-<hash> → target/<profile>/marvin
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|profile| profile.join("marvin"))
        .ok_or_else(|| format!("cannot place {} in a target dir", exe.display()))?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: build it first (`cargo build --release -p marvin-cli` for the benchmark, \
             `cargo build -p marvin-cli` for the smoke run), or set MARVIN_BIN",
            bin.display()
        ))
    }
}

/// A standard compose file both tools read unchanged (docker-compose 1.29 knows no `size:` or `{{ }}`).
fn compose_file(shape: &Shape) -> String {
    let mut text = String::from(
        "# The benchmark's services: the talk's shape, 2 repos and 17 services.\n\
         x-service: &service\n  restart: unless-stopped\n\nservices:\n",
    );
    let backend: BTreeSet<&str> = shape.backend.iter().copied().collect();
    for service in shape.services() {
        let context = if shape.is_frontend(service) {
            format!("./fe/{service}")
        } else {
            format!("./{service}")
        };
        text.push_str(&format!(
            "  {service}:\n    <<: *service\n    build: {context}\n"
        ));
        match service {
            // The gateway fronts some backend services; compose recreates a
            // service whose dependencies were recreated, Marvin keeps it.
            "gateway" => {
                let deps: Vec<&str> = ["auth", "users", "orders"]
                    .into_iter()
                    .filter(|d| backend.contains(d))
                    .collect();
                if !deps.is_empty() {
                    text.push_str(&format!("    depends_on: [{}]\n", deps.join(", ")));
                }
                text.push_str(HEALTHCHECK);
            }
            "auth" => text.push_str(HEALTHCHECK),
            "sequence" => text.push_str("    volumes: [\"sequence:/data\"]\n"),
            "web" if backend.contains("gateway") => {
                text.push_str("    depends_on: [gateway]\n    links: [\"gateway:api\"]\n");
            }
            _ => {}
        }
        text.push_str("    environment:\n      SERVICE_NAME: ");
        text.push_str(service);
        text.push('\n');
    }
    if backend.contains("sequence") {
        text.push_str("\nvolumes:\n  sequence: {}\n");
    }
    text
}

const HEALTHCHECK: &str = "    healthcheck:\n      test: [\"CMD\", \"wget\", \"-qO-\", \"http://127.0.0.1:8080/\"]\n      interval: 1s\n      timeout: 2s\n      retries: 20\n";

/// A small web service: a page and a build argument, served by busybox httpd.
/// It stops on SIGTERM as a real service does (httpd as PID 1 would ignore
/// it, and every recreate by either tool would wait out the 10 s stop timeout).
fn service_files(service: &str, base: &str) -> Vec<(String, String)> {
    vec![
        (
            format!("{service}/Dockerfile"),
            format!(
                "FROM {base}\nARG VERSION=1\nCOPY . /www\nRUN echo \"{service} v$VERSION\" > /www/version.txt\n\
                 CMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait\"]\n"
            ),
        ),
        (
            format!("{service}/index.html"),
            format!("<h1>{service}</h1>\n"),
        ),
        (format!("{service}/.dockerignore"), "*.md\n".to_string()),
        (
            format!("{service}/README.md"),
            format!("The {service} service; not sent to the engine.\n"),
        ),
    ]
}

/// `count` source files of about 1 KiB for `service`, ten per directory,
/// nested as a Java or Node service's sources are (`src/mNN/pN/FileNNNN.java`).
/// Each file's content is distinct, so the engine cannot share it between services.
fn source_files(service: &str, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let path = format!(
                "{service}/src/m{:02}/p{}/File{i:04}.java",
                i / 100,
                (i / 10) % 10
            );
            let mut text = format!("// {service} source file {i}\nclass File{i} {{\n");
            let mut line = 0;
            while text.len() < 1000 {
                text.push_str(&format!("    int field{line} = {};\n", i * 31 + line));
                line += 1;
            }
            text.push_str("}\n");
            (path, text)
        })
        .collect()
}

/// Rewrite `service`'s page in the git work tree `dir` and commit it.
fn commit_change(dir: &Path, service: &str, text: &str) -> Result<(), Failure> {
    std::fs::write(
        dir.join(service).join("index.html"),
        format!("<h1>{service}</h1>\n<p>{text}</p>\n"),
    )
    .map_err(|e| format!("changing {service}: {e}"))?;
    git(dir, &["commit", "-q", "-am", &format!("{service}: {text}")])?;
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<String, Failure> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Marvin Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@marvin.invalid")
        .env("GIT_COMMITTER_NAME", "Marvin Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@marvin.invalid")
        .output()
        .map_err(|e| format!("running git: {e}"))?;
    checked(&format!("git {}", args.join(" ")), &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A working copy under `work/` and its bare "remote" under `repos/`, as a team would have.
fn make_repo(root: &Path, name: &str, files: &[(String, String)]) -> Result<(), Failure> {
    let work = root.join("work").join(name);
    let bare = root.join("repos").join(format!("{name}.git"));
    for (path, text) in files {
        let p = work.join(path);
        let parent = p.parent().expect("a file in the work tree has a parent");
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    let bare_path = bare.display().to_string();
    git(root, &["init", "-q", "--bare", "-b", "main", &bare_path])?;
    git(&work, &["init", "-q", "-b", "main"])?;
    git(&work, &["add", "-A"])?;
    git(
        &work,
        &["commit", "-q", "-m", &format!("{name}: first version")],
    )?;
    git(&work, &["remote", "add", "origin", &bare_path])?;
    git(&work, &["push", "-q", "origin", "main"])?;
    Ok(())
}

fn median(mut walls: Vec<Duration>) -> Duration {
    walls.sort();
    walls[walls.len() / 2]
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// The results as a Markdown table: per scenario and tool, median wall time and counts per run.
fn table(results: &[Measured]) -> String {
    let mut text = String::from(
        "\n| scenario | tool | runs | median wall | min – max | images built (per run) | containers recreated (per run) | marvin faster by |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    let scenarios = ["first build", "no change", "one service changed"];
    for scenario in scenarios {
        let median_of = |tool: &str| {
            let walls: Vec<Duration> = results
                .iter()
                .filter(|m| m.scenario == scenario && m.tool == tool)
                .map(|m| m.wall)
                .collect();
            (!walls.is_empty()).then(|| median(walls))
        };
        let marvin = median_of("marvin");
        for tool in ["marvin", "docker-compose"] {
            let runs: Vec<&Measured> = results
                .iter()
                .filter(|m| m.scenario == scenario && m.tool == tool)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let walls: Vec<Duration> = runs.iter().map(|m| m.wall).collect();
            let min = walls.iter().min().expect("at least one run");
            let max = walls.iter().max().expect("at least one run");
            let med = median(walls.clone());
            let join = |f: fn(&Measured) -> usize| {
                runs.iter()
                    .map(|m| f(m).to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let factor = match (tool, marvin) {
                ("docker-compose", Some(m)) if scenario != "first build" => {
                    format!("{:.1}×", med.as_secs_f64() / m.as_secs_f64())
                }
                _ => String::new(),
            };
            text.push_str(&format!(
                "| {scenario} | {tool} | {} | {} | {} – {} | {} | {} | {factor} |\n",
                runs.len(),
                seconds(med),
                seconds(*min),
                seconds(*max),
                join(|m| m.images_built),
                join(|m| m.containers_recreated),
            ));
        }
    }
    text
}

/// The smoke run's checks: what each tool must have built and recreated.
fn check_counts(results: &[Measured], shape: &Shape) -> Result<(), Failure> {
    let all = shape.services().len();
    for m in results {
        let expected_marvin = match m.scenario {
            "first build" => Some((all, all)),
            "no change" => Some((0, 0)),
            _ => Some((1, 1)),
        };
        if m.tool == "marvin" && Some((m.images_built, m.containers_recreated)) != expected_marvin {
            return Err(format!(
                "marvin, {}: built {} image(s) and recreated {} container(s), expected {:?}",
                m.scenario, m.images_built, m.containers_recreated, expected_marvin
            ));
        }
        if m.tool == "docker-compose" && m.scenario == "no change" && m.containers_recreated != 0 {
            return Err(format!(
                "docker-compose, no change: recreated {} container(s)",
                m.containers_recreated
            ));
        }
    }
    Ok(())
}
