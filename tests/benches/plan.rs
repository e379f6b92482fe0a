//! Issue #2 "Speed": how long a no-change `marvin plan` takes as the repos grow.
//!
//! `cargo bench -p marvin-tests --bench plan` generates the talk's shape — a
//! backend repo mounted at `.` and a frontend repo at `fe`, 17 services with
//! build contexts in both — with 1,000, 20,000 and 100,000 files per repo,
//! and prints the first fetch (clone) time, a no-change `Marvin::plan` with
//! and without fetching (median and p90 of 20), and the wall time of the real
//! `marvin plan dev` binary with no engine (median of 10).
//!
//! Run without `--bench` (as `cargo test --all-targets` does) it is a smoke
//! test: 200 files, 2 runs, and it checks the plan rather than timing it.

use std::error::Error;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use marvin_core::marvin::{Marvin, PlanOptions};
use marvin_core::resolve::{self, Plan};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Services whose build context is in the backend repo (`services/<name>`).
const BACKEND_SERVICES: [&str; 11] = [
    "db",
    "cache",
    "api",
    "auth",
    "billing",
    "search",
    "mailer",
    "worker",
    "scheduler",
    "reports",
    "gateway",
];
/// Services whose build context is in the frontend repo (`fe/apps/<name>`).
const FRONTEND_SERVICES: [&str; 6] = ["web", "admin", "docs", "storybook", "landing", "widgets"];
/// Backend directories outside every build context.
const BACKEND_OTHER: [&str; 3] = ["lib", "docs", "scripts"];
/// Frontend directories outside every build context.
const FRONTEND_OTHER: [&str; 2] = ["shared", "design"];
/// At most this many files per generated directory, as real source trees have.
const FILES_PER_DIR: usize = 50;
/// Where `marvin plan` is pointed so it measures its own work, not an engine's.
const NO_ENGINE: &str = "unix:///nonexistent.sock";

/// How much to measure.
struct Settings {
    sizes: Vec<usize>,
    plan_runs: usize,
    binary_runs: usize,
    release: bool,
}

/// One row of the table.
struct Row {
    files: usize,
    generate: Duration,
    clone: Duration,
    online: Timed,
    offline: Timed,
    binary: Timed,
}

/// Wall times of repeated runs and the CPU time they used on average.
struct Timed {
    wall: Vec<Duration>,
    /// User + system time per run, this process and its children (git, `marvin`) together.
    cpu: Duration,
}

/// Time `runs` calls of `f`: wall time each, CPU time on average.
fn timed(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timed> {
    let mut wall = Vec::with_capacity(runs);
    let cpu_before = cpu_time()?;
    for _ in 0..runs {
        let started = Instant::now();
        f()?;
        wall.push(started.elapsed());
    }
    let cpu = cpu_time()?.saturating_sub(cpu_before) / u32::try_from(runs.max(1))?;
    Ok(Timed { wall, cpu })
}

/// User + system time of this process and its waited-for children, from /proc/self/stat.
///
/// CPU time is what the machine's load does not inflate, so it shows
/// Marvin's own work even when others are compiling on the same cores.
fn cpu_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after_name = stat.rsplit_once(')').ok_or("unreadable /proc/self/stat")?.1;
    // Fields 14–17 of proc(5): utime, stime, cutime, cstime; field 3 is the first after the name.
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(str::parse::<u64>)
        .sum::<std::result::Result<u64, _>>()?;
    // Linux reports these in USER_HZ, which is 100 on every architecture it supports.
    Ok(Duration::from_millis(ticks * 10))
}

fn main() -> Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let settings = if bench {
        Settings {
            sizes: vec![1_000, 20_000, 100_000],
            plan_runs: 20,
            binary_runs: 10,
            release: true,
        }
    } else {
        Settings {
            sizes: vec![200],
            plan_runs: 2,
            binary_runs: 2,
            release: cfg!(not(debug_assertions)),
        }
    };
    let binary = marvin_binary(settings.release)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let mut rows = Vec::new();
    for &files in &settings.sizes {
        let row = measure(&runtime, &binary, files, &settings)?;
        if bench {
            eprintln!(
                "{files} files per repo done (generated in {})",
                ms(row.generate)
            );
        }
        rows.push(row);
    }
    print!("{}", table(&rows));
    if bench {
        print!("{}", verdict(&rows));
        // The machine is shared: figures taken under load read slower than they are.
        if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
            println!("load average at the end (1, 5, 15 min): {}", load.trim());
        }
    }
    Ok(())
}

fn measure(
    runtime: &tokio::runtime::Runtime,
    marvin_bin: &Path,
    files: usize,
    settings: &Settings,
) -> Result<Row> {
    let dir = tempfile::Builder::new()
        .prefix("marvin-planbench-")
        .tempdir()?;
    let started = Instant::now();
    let config = generate(dir.path(), files)?;
    let generate = started.elapsed();

    // No engine: the plan assumes nothing exists, which is what "Marvin's own work" means.
    let marvin = Marvin::load(&config, None)?;
    let started = Instant::now();
    for spec in resolve::repo_specs(&marvin.project) {
        marvin.mirrors.sync(&spec)?;
    }
    let clone = started.elapsed();

    let mut plans = Vec::new();
    let mut time_plans = |offline: bool| -> Result<Timed> {
        let options = PlanOptions {
            offline,
            ..PlanOptions::default()
        };
        timed(settings.plan_runs, || {
            plans.push(runtime.block_on(marvin.plan("dev", &options))?);
            Ok(())
        })
    };
    let online = time_plans(false)?;
    let offline = time_plans(true)?;
    check_plans(&plans)?;

    let binary = timed(settings.binary_runs, || {
        let out = Command::new(marvin_bin)
            .arg("-c")
            .arg(&config)
            .args(["plan", "dev"])
            .env("DOCKER_HOST", NO_ENGINE)
            .env_remove("MARVIN_DATA_DIR")
            .env_remove("MARVIN_CONFIG")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "`{} -c {} plan dev` failed: {}",
                marvin_bin.display(),
                config.display(),
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        for service in BACKEND_SERVICES.iter().chain(&FRONTEND_SERVICES) {
            if !stdout.contains(service) {
                return Err(
                    format!("`marvin plan dev` does not mention {service}:\n{stdout}").into(),
                );
            }
        }
        Ok(())
    })?;
    Ok(Row {
        files,
        generate,
        clone,
        online,
        offline,
        binary,
    })
}

/// Every plan builds all 17 services (no engine, so no images) with the same keys each time.
fn check_plans(plans: &[Plan]) -> Result<()> {
    let first = plans.first().ok_or("no plan was made")?;
    if first.builds.len() != BACKEND_SERVICES.len() + FRONTEND_SERVICES.len() {
        return Err(format!("expected 17 builds, the plan has {}", first.builds.len()).into());
    }
    if !first.assumed_empty_engine {
        return Err("the plan should say it assumed an empty engine".into());
    }
    let keys = |p: &Plan| -> Vec<(String, String)> {
        p.build_specs
            .values()
            .map(|b| (b.service.clone(), b.key.0.clone()))
            .collect()
    };
    if let Some(other) = plans.iter().find(|p| keys(p) != keys(first)) {
        return Err(format!(
            "a no-change plan changed its keys: {:?} then {:?}",
            keys(first),
            keys(other)
        )
        .into());
    }
    Ok(())
}

/// The `marvin` binary of this build profile, built if needed, so the figures are of the same code.
fn marvin_binary(release: bool) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/plan-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot find the target directory from the bench executable")?;
    let target_dir = profile_dir
        .parent()
        .ok_or("cannot find the target directory from the bench executable")?;
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "-p", "marvin-cli", "--bin", "marvin"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if release {
        cargo.arg("--release");
    }
    let status = cargo.status()?;
    if !status.success() {
        return Err("cannot build the marvin binary (cargo build -p marvin-cli failed)".into());
    }
    let binary = profile_dir.join("marvin");
    if !binary.is_file() {
        return Err(format!("no marvin binary at {}", binary.display()).into());
    }
    Ok(binary)
}

/// Make the two repos (with `git fast-import`) and a marvin.yml pointing at them; returns the marvin.yml path.
fn generate(root: &Path, files: usize) -> Result<PathBuf> {
    let backend = root.join("remotes/backend.git");
    let frontend = root.join("remotes/frontend.git");
    let mut backend_files = vec![("docker-compose.yml".to_string(), compose())];
    backend_files.extend(dockerfiles("services", &BACKEND_SERVICES));
    backend_files.extend(filler(
        files.saturating_sub(backend_files.len()),
        &areas("services", &BACKEND_SERVICES, &BACKEND_OTHER),
    ));
    let mut frontend_files = dockerfiles("apps", &FRONTEND_SERVICES);
    frontend_files.extend(filler(
        files.saturating_sub(frontend_files.len()),
        &areas("apps", &FRONTEND_SERVICES, &FRONTEND_OTHER),
    ));
    fast_import(&backend, &backend_files)?;
    fast_import(&frontend, &frontend_files)?;

    let project = root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "marvin-planbench".into());
    let config = root.join("project/marvin.yml");
    std::fs::create_dir_all(root.join("project"))?;
    std::fs::write(
        &config,
        format!(
            "project: {project}\ncompose: docker-compose.yml\n\nrepos:\n  backend:\n    url: {}\n    path: .\n  frontend:\n    url: {}\n    path: fe\n\nenvironments:\n  dev:\n    branch: main\n    vars: {{ LOG_LEVEL: debug, API_VERSION: \"7\" }}\n",
            backend.display(),
            frontend.display()
        ),
    )?;
    Ok(config)
}

/// The compose template: 17 services, contexts in both repos, one built `FROM` another.
fn compose() -> String {
    let mut out = String::from(
        "x-common: &common\n  restart: unless-stopped\n  size: S\n  environment:\n    LOG_LEVEL: \"{{ LOG_LEVEL }}\"\n\nservices:\n",
    );
    for name in BACKEND_SERVICES {
        out.push_str(&format!("  {name}:\n    <<: *common\n"));
        match name {
            "api" => out.push_str(
                "    image: bench/api:latest\n    build:\n      context: ./services/api\n      args: { API_VERSION: \"{{ API_VERSION }}\" }\n    depends_on: [db, cache]\n",
            ),
            _ => out.push_str(&format!("    build: ./services/{name}\n")),
        }
        if matches!(name, "worker" | "scheduler" | "gateway") {
            out.push_str("    depends_on: [api]\n");
        }
    }
    for name in FRONTEND_SERVICES {
        out.push_str(&format!(
            "  {name}:\n    <<: *common\n    build: ./fe/apps/{name}\n"
        ));
        if name == "web" {
            out.push_str("    ports: [\"8080:80\"]\n    depends_on: [gateway]\n");
        }
    }
    out
}

/// A Dockerfile per service context; `worker` builds `FROM` the api image.
fn dockerfiles(dir: &str, services: &[&str]) -> Vec<(String, String)> {
    services
        .iter()
        .map(|name| {
            let from = if *name == "worker" {
                "bench/api:latest"
            } else {
                "debian:stable-slim"
            };
            (
                format!("{dir}/{name}/Dockerfile"),
                format!("FROM {from}\nCOPY . /app\nCMD [\"/app/run\", \"{name}\"]\n"),
            )
        })
        .collect()
}

/// Where filler files go: inside each service context and in directories outside every context.
fn areas(dir: &str, services: &[&str], other: &[&str]) -> Vec<String> {
    services
        .iter()
        .map(|s| format!("{dir}/{s}/src"))
        .chain(other.iter().map(|o| o.to_string()))
        .collect()
}

/// `count` small distinct files spread over `areas`, at most [`FILES_PER_DIR`] per directory.
fn filler(count: usize, areas: &[String]) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let area = &areas[i % areas.len()];
            let n = i / areas.len();
            let leaf = n / FILES_PER_DIR;
            (
                format!(
                    "{area}/g{:02}/d{:02}/file{n:06}.txt",
                    leaf / FILES_PER_DIR,
                    leaf % FILES_PER_DIR
                ),
                format!("// {area} file {n}\nfn item_{n}() -> usize {{ {i} }}\n"),
            )
        })
        .collect()
}

/// A bare repo with one commit on `main` holding `files`, written by `git fast-import`.
fn fast_import(bare: &Path, files: &[(String, String)]) -> Result<()> {
    git(
        None,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &bare.display().to_string(),
        ],
    )?;
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(bare)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    {
        let stdin = child.stdin.take().ok_or("git fast-import has no stdin")?;
        let mut w = std::io::BufWriter::new(stdin);
        let message = "Generated for the plan benchmark";
        write!(
            w,
            "commit refs/heads/main\nauthor Bench <bench@marvin.invalid> 1700000000 +0000\ncommitter Bench <bench@marvin.invalid> 1700000000 +0000\ndata {}\n{message}\n",
            message.len()
        )?;
        for (path, text) in files {
            write!(w, "M 100644 inline {path}\ndata {}\n{text}\n", text.len())?;
        }
        w.write_all(b"done\n")?;
        w.flush()?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "git fast-import into {} failed: {}",
            bare.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

fn git(dir: Option<&Path>, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("git");
    cmd.args(args);
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// The median (upper of the two middle values for an even count).
fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// The 90th percentile by nearest rank.
fn p90(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let rank = (sorted.len() * 9).div_ceil(10).max(1);
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| files/repo | first fetch (clone) | plan, fetch: median | p90 | CPU | plan, offline: median | p90 | CPU | `marvin plan dev`: median | CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.files,
            ms(r.clone),
            ms(median(&r.online.wall)),
            ms(p90(&r.online.wall)),
            ms(r.online.cpu),
            ms(median(&r.offline.wall)),
            ms(p90(&r.offline.wall)),
            ms(r.offline.cpu),
            ms(median(&r.binary.wall)),
            ms(r.binary.cpu),
        ));
    }
    out
}

/// Which measurement of a row.
type Pick = fn(&Row) -> &Timed;

/// The two targets, judged on the medians.
fn verdict(rows: &[Row]) -> String {
    let mut out = String::from("\n");
    let measures: [(&str, Pick); 3] = [
        ("plan, fetch", |r| &r.online),
        ("plan, offline", |r| &r.offline),
        ("marvin plan dev", |r| &r.binary),
    ];
    for (what, pick) in measures {
        let worst = rows
            .iter()
            .map(|r| median(&pick(r).wall))
            .max()
            .unwrap_or_default();
        out.push_str(&format!(
            "{what}: slowest median {} — target < 100 ms: {}\n",
            ms(worst),
            if worst < Duration::from_millis(100) {
                "met"
            } else {
                "MISSED"
            }
        ));
    }
    if let (Some(small), Some(large)) = (rows.first(), rows.last()) {
        for (what, pick) in measures {
            let (a, b) = (median(&pick(small).wall), median(&pick(large).wall));
            let ratio = b.as_secs_f64() / a.as_secs_f64().max(1e-9);
            out.push_str(&format!(
                "{what}: {} files {} → {} files {} = {ratio:.2}× — target ≤ 2×: {}\n",
                small.files,
                ms(a),
                large.files,
                ms(b),
                if ratio <= 2.0 { "met" } else { "MISSED" }
            ));
        }
    }
    out
}
