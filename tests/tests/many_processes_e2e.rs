//! Many Marvin processes on one host sharing one data directory (issue #18):
//! every build key is built once across all of them, first clones of the
//! mirrors never race, and a process killed while it builds hands the key
//! over to the next one.
//!
//! Marvin runs as the real `marvin` binary; the test reads what the
//! processes left with the store and the engine. Needs a local Docker
//! engine, git and Debian's busybox-static; a missing one fails the test.

mod common_e2e;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common_e2e::{Fixture, Options, SERVICES};
use marvin_core::store::Store;

/// `marvin --config .. --data-dir DATA ARGS`, not yet started.
fn marvin(fx: &Fixture, data: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(common_e2e::marvin_binary());
    command
        .arg("--config")
        .arg(&fx.config)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .current_dir(&fx.root)
        .env_remove("MARVIN_CONFIG")
        .env_remove(marvin_core::marvin::DATA_DIR_ENV)
        .stdin(Stdio::null());
    command
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `--json` summary a build printed, which must say it succeeded.
fn succeeded(out: &Output) -> serde_json::Value {
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON summary ({e}): {}", text(out)));
    assert!(
        out.status.success() && summary["state"] == "succeeded",
        "the build did not succeed: {}",
        text(out)
    );
    summary
}

fn names(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| match v {
            serde_json::Value::Array(pair) => pair[0].as_str().expect("a name").to_string(),
            other => other.as_str().expect("a name").to_string(),
        })
        .collect()
}

/// `marvin build ENV --json` for each of `envs`, all started at once on `data`.
fn build_at_once(fx: &Fixture, data: &Path, envs: &[&str]) -> Vec<Output> {
    std::thread::scope(|scope| {
        let running: Vec<_> = envs
            .iter()
            .map(|env| {
                let mut command = marvin(fx, data, &["build", env, "--json"]);
                scope.spawn(move || command.output().expect("run marvin"))
            })
            .collect();
        running
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    })
}

/// Marvin's images of the fixture's project that have no tag.
fn untagged_images(fx: &Fixture) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "images",
            "-q",
            "--filter",
            "dangling=true",
            "--filter",
            &format!(
                "label={}={}",
                marvin_core::engine::LABEL_PROJECT,
                fx.project
            ),
        ])
        .output()
        .expect("docker images");
    assert!(out.status.success(), "docker images: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_processes_build_each_key_once_from_an_empty_data_directory() {
    let fx = Fixture::new(
        "manyproc",
        Options {
            staging_yaml: "  qa:\n    branch: main\n  demo:\n    branch: main\n".into(),
            ..Options::default()
        },
    )
    .await;
    let envs = ["dev", "staging", "qa", "demo"];
    let data = fx.root.join("fresh-data");
    // Started together, on a data directory without mirrors or database.
    let outputs = build_at_once(&fx, &data, &envs);
    let mut built = Vec::new();
    for (env, out) in envs.iter().zip(&outputs) {
        let summary = succeeded(out);
        let mine = names(&summary["built"]);
        let reused = names(&summary["reused"]);
        let mut all: Vec<String> = mine.iter().chain(&reused).cloned().collect();
        all.sort();
        assert_eq!(all, SERVICES, "{env}: every service built or reused once");
        built.extend(mine);
    }
    built.sort();
    // One build key per service here: each built once across all processes.
    assert_eq!(
        built,
        SERVICES,
        "images built across the {} processes",
        envs.len()
    );
    assert_eq!(untagged_images(&fx), Vec::<String>::new());
    for env in envs {
        let running = fx.services(env).await;
        assert_eq!(
            running.keys().cloned().collect::<BTreeSet<_>>(),
            SERVICES.iter().map(|s| s.to_string()).collect(),
            "{env} runs every service"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_while_it_builds_hands_the_key_to_the_next() {
    let fx = Fixture::new("leasekill", Options::default()).await;
    let data = fx.data.clone();
    let first = marvin(&fx, &data, &["build", "dev", "--json"])
        .output()
        .expect("run marvin");
    succeeded(&first);
    // A slow build of api, so the first process can be killed in the middle.
    let dockerfile = format!(
        "FROM {}\nRUN sleep 15 && echo {} > /slow\nCOPY . /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        common_e2e::base_image(),
        // Never in BuildKit's cache (the engine's): the step must take its time.
        fx.project
    );
    fx.commit(
        "backend",
        &[("api/Dockerfile", Some(&dockerfile))],
        "api: slow build",
    );

    let mut killed: Child = marvin(&fx, &data, &["build", "dev", "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start marvin");
    // Killed once it holds the build lease of api's new key (taken before
    // the engine is asked to build).
    let db = rusqlite::Connection::open(data.join(marvin_core::store::DB_FILE))
        .expect("open the database");
    let deadline = Instant::now() + Duration::from_secs(60);
    let killed_job = loop {
        let holder: Option<i64> = db
            .query_row(
                "SELECT job FROM build_leases WHERE project = ?1",
                [&fx.project],
                |row| row.get(0),
            )
            .ok();
        if let Some(job) = holder {
            break job;
        }
        assert!(
            Instant::now() < deadline,
            "the second build never took the lease of api's key"
        );
        assert!(
            killed.try_wait().expect("poll").is_none(),
            "the second build ended before it built api"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    killed.kill().expect("SIGKILL");
    killed.wait().expect("reap");

    let store = Store::open_in(&data).expect("open the store");
    let next = marvin(&fx, &data, &["build", "dev", "--json"])
        .output()
        .expect("run marvin");
    let summary = succeeded(&next);
    let job = summary["job"].as_i64().expect("job id");
    let log: Vec<String> = store
        .logs(job, None)
        .expect("logs")
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(
        names(&summary["built"]),
        ["api"],
        "{}\n--- log\n{}",
        text(&next),
        log.join("\n")
    );
    assert!(
        log.iter().any(|l| l.starts_with(&format!(
            "taking over the build of api from job #{killed_job} (process "
        ))),
        "the log says whose build it took over:\n{}",
        log.join("\n")
    );
    // The killed process's build was cut off with its connection: it left
    // no image besides the one the next process built and tagged.
    assert_eq!(untagged_images(&fx), Vec::<String>::new());
    fx.assert_converged(&data).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_concurrency_limit_holds_across_processes() {
    // `other` tracks a branch where every image differs from main's, so the
    // two processes below have no build key in common: only the host's
    // build slot can keep their builds apart.
    let fx = Fixture::new(
        "hostslots",
        Options {
            staging_yaml: "  other:\n    branch: other\n".into(),
            top_yaml: "  build_concurrency: 1\n".into(),
            ..Options::default()
        },
    )
    .await;
    // Builds that take a while, so two at once would overlap by seconds;
    // each step is its own (BuildKit would run a step shared by two
    // Dockerfiles once, and a step an earlier run made not at all).
    let slow = |service: &str, cmd: &str| {
        format!(
            "FROM {}\nRUN sleep 2 && echo {}-{service}\nCOPY . /www\nCMD {cmd}\n",
            common_e2e::base_image(),
            fx.project
        )
    };
    let httpd = r#"["httpd", "-f", "-p", "8080", "-h", "/www"]"#;
    fx.commit(
        "backend",
        &[
            ("api/Dockerfile", Some(&slow("api", httpd))),
            (
                "worker/Dockerfile",
                Some(&slow("worker", r#"["sh", "/www/work.sh"]"#)),
            ),
        ],
        "slow builds",
    );
    fx.commit(
        "frontend",
        &[
            ("web/Dockerfile", Some(&slow("web", httpd))),
            ("docs/Dockerfile", Some(&slow("docs", httpd))),
        ],
        "slow builds",
    );
    for repo in ["backend", "frontend"] {
        let work = fx.root.join("work").join(repo);
        common_e2e::git(&work, &["checkout", "-q", "-b", "other"]);
        for dockerfile in [
            "db/Dockerfile",
            "api/Dockerfile",
            "worker/Dockerfile",
            "web/Dockerfile",
            "docs/Dockerfile",
        ] {
            let path = work.join(dockerfile);
            if let Ok(text) = std::fs::read_to_string(&path) {
                let text = text.replacen("\n", "\nRUN echo other\n", 1);
                std::fs::write(&path, text).expect("write the Dockerfile");
            }
        }
        common_e2e::git(&work, &["commit", "-q", "-am", "other images"]);
        common_e2e::git(&work, &["push", "-q", "origin", "other"]);
        common_e2e::git(&work, &["checkout", "-q", "main"]);
    }
    let data = fx.data.clone();
    let outputs = build_at_once(&fx, &data, &["dev", "other"]);
    let store = Store::open_in(&data).expect("open the store");
    // Every build, as (start, end) by the times its job recorded.
    let mut builds: Vec<(i64, i64, String)> = Vec::new();
    for out in &outputs {
        let job = succeeded(out)["job"].as_i64().expect("job id");
        let events = store.events(job).expect("events");
        for built in events.iter().filter(|e| e.kind == "built") {
            let service = built.data["service"].as_str().expect("service");
            let started = events
                .iter()
                .find(|e| e.kind == "build_started" && e.data["service"] == service)
                .unwrap_or_else(|| panic!("job #{job}: {service} built without build_started"));
            let millis = built.data["millis"].as_i64().expect("millis");
            builds.push((
                started.at_ms,
                started.at_ms + millis,
                format!("#{job} {service}"),
            ));
        }
    }
    builds.sort();
    assert_eq!(
        builds.len(),
        2 * SERVICES.len(),
        "each environment's own images built: {builds:?}"
    );
    for pair in builds.windows(2) {
        // A little slack for the two clocks readings around each build.
        assert!(
            pair[1].0 + 100 >= pair[0].1,
            "two builds ran at once with build_concurrency 1: {} ({}..{}) and {} ({}..{})",
            pair[0].2,
            pair[0].0,
            pair[0].1,
            pair[1].2,
            pair[1].0,
            pair[1].1
        );
    }
}
