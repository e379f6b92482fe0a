//! Every example, run as the built binary against the real Docker engine on a
//! fresh demo project of its own (removed afterwards, also on failure).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use marvin_core::demo;
use marvin_core::engine::{DockerEngine, Engine, LABEL_PROJECT, ensure_busybox_image};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(f)
}

/// A demo project with a unique name; its Docker objects go when this drops.
struct Demo {
    _dir: tempfile::TempDir,
    config: PathBuf,
    project: String,
}

impl Demo {
    fn new(prefix: &str) -> Demo {
        let dir = tempfile::tempdir().expect("temp dir");
        let project = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .subsec_nanos()
        );
        block_on(async {
            let engine = DockerEngine::connect().expect("the Docker engine (run scripts/setup)");
            let labels =
                BTreeMap::from([(LABEL_PROJECT.to_string(), demo::DEMO_PROJECT.to_string())]);
            ensure_busybox_image(&engine, demo::DEMO_BASE_IMAGE, &labels)
                .await
                .expect("the demo's base image");
        });
        let config = demo::create(&dir.path().join("demo")).expect("demo project");
        let text = std::fs::read_to_string(&config).expect("marvin.yml");
        let text = text
            .replacen(
                &format!("project: {}\n", demo::DEMO_PROJECT),
                &format!("project: {project}\n"),
                1,
            )
            .replacen(
                "tasks:\n",
                &format!(
                    "tasks:\n  fail:\n    image: {}\n    command: [\"sh\", \"-c\", \"exit 3\"]\n",
                    demo::DEMO_BASE_IMAGE
                ),
                1,
            );
        std::fs::write(&config, text).expect("write marvin.yml");
        Demo {
            _dir: dir,
            config,
            project,
        }
    }

    fn containers(&self) -> Vec<String> {
        block_on(async {
            let engine = DockerEngine::connect().expect("engine");
            let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), self.project.clone())]);
            engine
                .list_containers(&labels)
                .await
                .expect("list containers")
                .into_iter()
                .map(|c| c.name)
                .collect()
        })
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        block_on(async {
            if let Ok(engine) = DockerEngine::connect() {
                let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), self.project.clone())]);
                let _ = engine.remove_labelled(&labels).await;
            }
        });
    }
}

/// The example binaries cargo built beside this test: target/debug/examples/NAME.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let debug = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/debug/deps/THIS");
    let path = debug.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: cargo test builds examples; run `cargo build -p marvin-examples --examples`",
        path.display()
    );
    path
}

fn run(name: &str, args: &[&str]) -> (i32, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(example(name))
        .args(args)
        .output()
        .expect("run the example");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().unwrap_or(-1), text)
}

#[test]
fn plan_example_prints_a_plan_and_touches_no_container() {
    let demo = Demo::new("ex-plan");
    let config = demo.config.to_str().expect("utf-8 path");
    let (code, out) = run("plan", &[config, "dev"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("Plan for dev ({})", demo.project)),
        "{out}"
    );
    assert!(out.contains("5 to build, 0 reused"), "{out}");
    assert_eq!(demo.containers(), Vec::<String>::new());
}

#[test]
fn deploy_and_task_examples_run_against_the_engine() {
    let demo = Demo::new("ex-deploy");
    let config = demo.config.to_str().expect("utf-8 path");
    let (code, out) = run("deploy", &[config, "dev"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("· build\n"), "progress is printed: {out}");
    assert!(out.contains("  built api"), "{out}");
    assert!(out.contains("✅ dev build #1 succeeded"), "{out}");
    assert_eq!(demo.containers().len(), 5);

    let (code, out) = run("task", &[config, "dev", "hello", "from", "rust"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("  | hello from a task from rust"), "{out}");

    let (code, out) = run("task", &[config, "dev", "fail"]);
    assert_eq!(code, 3, "the task's exit code: {out}");
    assert!(out.contains("task `fail` exited with code 3"), "{out}");
}

#[test]
fn rollout_example_stops_at_the_first_failing_environment() {
    let demo = Demo::new("ex-rollout");
    let config = demo.config.to_str().expect("utf-8 path");
    let (code, out) = run("rollout", &[config, "staging", "stagign", "dev"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("✅ staging build #1 succeeded"), "{out}");
    assert!(out.contains("unknown environment `stagign`"), "{out}");
    assert!(
        out.contains("rollout stopped at stagign; not deployed: dev"),
        "{out}"
    );
    let containers = demo.containers();
    assert_eq!(containers.len(), 5, "{containers:?}");
    assert!(
        containers.iter().all(|c| c.contains("-staging-")),
        "{containers:?}"
    );
}
