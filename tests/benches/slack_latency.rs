//! Issue #4 "Speed": from a Slack event arriving over Socket Mode to the
//! first `chat.postMessage` reaching Slack, and the resident memory of an
//! idle `marvin-slack`.
//!
//! `cargo bench -p marvin-tests --bench slack_latency` runs the real
//! `marvin_slack` front end in this process against the fake Slack of
//! `marvin_tests::fake_slack` (Web API + Socket Mode websocket on 127.0.0.1)
//! and sends 200 `help` and 200 `dev status` commands, one at a time; each
//! latency is from the envelope leaving the fake to the answer's
//! `chat.postMessage` arriving at it (p50, p99, max). Then it starts the
//! `marvin-slack` binary against a fresh fake, has it answer one command,
//! lets it idle and reads its VmRSS from /proc. Targets: p99 < 100 ms,
//! RSS < 50 MB.
//!
//! Run without `--bench` (as `cargo test --benches` does) it is a smoke
//! test: 5 commands of each kind, the same memory reading, and it checks
//! every command was answered rather than timing it.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use marvin_core::chat::Chat;
use marvin_core::engine::DockerEngine;
use marvin_core::marvin::Marvin;
use marvin_core::runtime::{Runtime, SystemClock};
use marvin_core::store::Store;
use marvin_slack::{Listen, SlackConfig};
use marvin_tests::GitRepo;
use marvin_tests::fake_slack::{FakeSlack, envelope, event_callback, mention};
use tokio_util::sync::CancellationToken;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const P99_TARGET_MS: f64 = 100.0;
const RSS_TARGET_MB: f64 = 50.0;

fn main() -> Result<()> {
    let bench = std::env::args().any(|a| a == "--bench");
    let commands = if bench { 200 } else { 5 };
    let binary = slack_binary()?;
    let dir = tempfile::tempdir()?;
    let config = project(dir.path());
    let runtime = tokio::runtime::Runtime::new()?;
    let (help, status) = runtime.block_on(latencies(&config, commands))?;
    let rss = runtime.block_on(idle_rss(&binary, &config, dir.path()))?;
    println!(
        "Slack event → first chat.postMessage, Socket Mode, {commands} commands each, one at a time"
    );
    println!("{:<12} {:>9} {:>9} {:>9}", "command", "p50", "p99", "max");
    for (name, samples) in [("help", &help), ("dev status", &status)] {
        println!(
            "{name:<12} {:>9} {:>9} {:>9}",
            ms(percentile(samples, 50.0)),
            ms(percentile(samples, 99.0)),
            ms(percentile(samples, 100.0)),
        );
    }
    println!(
        "idle marvin-slack ({}): VmRSS {rss:.1} MB",
        if cfg!(debug_assertions) {
            "debug build"
        } else {
            "release build"
        }
    );
    if bench {
        let p99 = percentile(&help, 99.0).max(percentile(&status, 99.0));
        println!(
            "targets: p99 < {P99_TARGET_MS} ms: {}; RSS < {RSS_TARGET_MB} MB: {}",
            if p99.as_secs_f64() * 1000.0 < P99_TARGET_MS {
                "met"
            } else {
                "MISSED"
            },
            if rss < RSS_TARGET_MB { "met" } else { "MISSED" },
        );
    }
    Ok(())
}

/// A one-repo project; `help` and `status` need no fetch or build.
fn project(root: &Path) -> PathBuf {
    let repo = GitRepo::new(root, "app");
    repo.write(
        "docker-compose.yml",
        "services:\n  web:\n    image: busybox\n",
    );
    repo.commit_and_push("first");
    marvin_tests::project(
        &root.join("project"),
        &format!(
            "project: bench-slack-{}\nrepos:\n  app:\n    url: {}\n    path: .\nenvironments:\n  dev:\n    branch: master\n",
            std::process::id(),
            repo.url()
        ),
    )
}

/// Send `n` of each command through the in-process front end; their latencies.
async fn latencies(config: &Path, n: usize) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let fake = FakeSlack::start().await;
    let data = config
        .parent()
        .ok_or("marvin.yml has a directory")?
        .join(".marvin");
    let engine = Arc::new(DockerEngine::connect()?);
    let marvin = Marvin::load(config, Some(data.clone()))?.with_engine(engine.clone());
    let jobs = Runtime::new(
        marvin,
        engine,
        Store::open_in(&data)?,
        Arc::new(SystemClock),
    )?;
    let mut cfg = SlackConfig::new(
        "xoxb-bench",
        Listen::SocketMode {
            app_token: "xapp-bench".into(),
        },
    );
    cfg.api_url = fake.api_url.clone();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(marvin_slack::run(Chat::new(jobs), cfg, shutdown.clone()));
    fake.wait_connected(Duration::from_secs(20)).await;
    let mut sequence = 0;
    let mut measure = async |text: &str| -> Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            sequence += 1;
            let before = fake.calls_of("chat.postMessage").len();
            let sent = fake.send_frame(envelope(
                &format!("env-{sequence}"),
                event_callback(&format!("Ev{sequence}"), mention("U1", "C1", text)),
            ));
            let calls = fake
                .wait_for("the answer", Duration::from_secs(10), |calls| {
                    calls
                        .iter()
                        .filter(|c| c.method == "chat.postMessage")
                        .count()
                        > before
                })
                .await;
            let answer = calls
                .iter()
                .filter(|c| c.method == "chat.postMessage")
                .nth(before)
                .ok_or("an answer")?;
            let shown = answer.json["text"].as_str().unwrap_or_default();
            if shown.is_empty() || shown.contains("not understood") {
                return Err(format!("{text:?} was answered with {shown:?}").into());
            }
            samples.push(answer.at - sent);
        }
        Ok(samples)
    };
    // A few commands first, so connections and caches are warm.
    measure("<@UBOT> help").await?;
    let help = measure("<@UBOT> help").await?;
    let status = measure("<@UBOT> dev status").await?;
    shutdown.cancel();
    task.await??;
    Ok((help, status))
}

/// Start the binary against a fresh fake, have it answer once, let it idle; its VmRSS in MB.
async fn idle_rss(binary: &Path, config: &Path, dir: &Path) -> Result<f64> {
    let fake = FakeSlack::start().await;
    let child = Command::new(binary)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join("bin-data"))
        .env("SLACK_BOT_TOKEN", "xoxb-bench")
        .env("SLACK_APP_TOKEN", "xapp-bench")
        .env("SLACK_API_URL", &fake.api_url)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let child = KillOnDrop(child);
    fake.wait_connected(Duration::from_secs(30)).await;
    fake.send_frame(envelope(
        "env-rss",
        event_callback("EvRss", mention("U1", "C1", "<@UBOT> help")),
    ));
    fake.wait_for("the binary's answer", Duration::from_secs(10), |calls| {
        calls.iter().any(|c| c.method == "chat.postMessage")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.0.id()))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmRSS in /proc/PID/status")?;
    Ok(kb / 1024.0)
}

/// The child process, killed (by its own pid) when the bench ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Build the `marvin-slack` binary of this profile; its path.
fn slack_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // <target>/<profile>/deps/slack_latency-<hash>
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
        .args([
            "build",
            "--quiet",
            "-p",
            "marvin-slack",
            "--bin",
            "marvin-slack",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if !cfg!(debug_assertions) {
        cargo.arg("--release");
    }
    if !cargo.status()?.success() {
        return Err(
            "cannot build the marvin-slack binary (cargo build -p marvin-slack failed)".into(),
        );
    }
    let binary = profile_dir.join("marvin-slack");
    if !binary.is_file() {
        return Err(format!("no marvin-slack binary at {}", binary.display()).into());
    }
    Ok(binary)
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
