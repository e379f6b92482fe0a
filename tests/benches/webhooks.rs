//! Issue #5 "Speed": 1,000 webhook deliveries, mixed valid and invalid,
//! against a running `marvin serve` (the real binary, real HTTP, the real
//! engine for the jobs they start).
//!
//! 60% are valid signed GitHub pushes to the backend repo (each with its own
//! body); the rest are refused: a wrong signature, no signature, a replay
//! of a valid delivery, an unknown repo (a tenth each). They are sent 8 at a
//! time. Checked, not only timed: every valid one answered 202 and every
//! invalid one 401/404; every valid push is a cause of a job started for
//! each environment that tracks the branch (counted from the causes `marvin
//! serve` prints for each job), so none was lost; and the jobs are few
//! (coalesced). Printed: throughput, p50/p99 latency, jobs per environment.
//!
//! `cargo bench -p marvin-tests --bench webhooks` runs 1,000 deliveries;
//! without `--bench` (`cargo test --benches`) a smoke run of 50.

#[path = "../tests/common_e2e/mod.rs"]
mod common_e2e;

use std::process::Command;
use std::time::{Duration, Instant};

use common_e2e::{Fixture, Options};
use marvin_core::store::Store;
use marvin_core::webhook::sign;
use marvin_tests::served::{Served, free_addr};
use serde_json::json;

const SECRET: &str = "bench-hook-secret-7d1e";

/// One delivery: what it is, its headers, its body.
type Delivery = (Kind, Vec<(&'static str, String)>, Vec<u8>);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Valid,
    BadSignature,
    NoSignature,
    Replay,
    UnknownRepo,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let total = if full { 1_000 } else { 50 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    if let Err(e) = runtime.block_on(run(total)) {
        eprintln!("bench-webhooks failed: {e}");
        std::process::exit(1);
    }
}

async fn run(total: usize) -> Result<(), String> {
    let fx = Fixture::new(
        "bench-hooks",
        Options {
            dev_yaml: "    triggers: {push: true}\n".into(),
            staging_yaml: "    triggers: {push: true}\n".into(),
            top_yaml: "  coalesce_window: 2s\nwebhooks:\n  secret_env: MARVIN_BENCH_HOOK_SECRET\n"
                .into(),
            ..Options::default()
        },
    )
    .await;
    let addr = free_addr();
    let mut command = Command::new(marvin_tests::marvin_bin());
    command
        .args(["serve", "--listen", &addr.to_string(), "--grace", "60s"])
        .arg("--config")
        .arg(&fx.config)
        .arg("--data-dir")
        .arg(&fx.data)
        .env("MARVIN_BENCH_HOOK_SECRET", SECRET);
    let mut serve = Served::start(command, addr)
        .await
        .map_err(|e| format!("marvin serve: {e}"))?;
    let url = format!("{}/hooks/push", serve.url());
    let http = reqwest::Client::new();

    let commit = common_e2e::git(&fx.root.join("work/backend"), &["rev-parse", "HEAD"]);
    let backend = fx.root.join("repos/backend.git").display().to_string();
    let body = |n: usize, repo: &str| -> Vec<u8> {
        json!({
            "ref": "refs/heads/main",
            "after": commit,
            "repository": {"full_name": format!("team/{repo}"), "clone_url": if repo == "backend" { backend.clone() } else { format!("/srv/{repo}.git") }},
            "pushed_at": n,
        })
        .to_string()
        .into_bytes()
    };
    // The plan: which delivery is what, interleaved.
    let mut kinds: Vec<Kind> = Vec::with_capacity(total);
    for i in 0..total {
        kinds.push(match i % 10 {
            0 => Kind::BadSignature,
            3 => Kind::NoSignature,
            5 => Kind::Replay,
            7 => Kind::UnknownRepo,
            _ => Kind::Valid,
        });
    }
    // Replays repeat a valid delivery sent earlier (the first one, sent first).
    kinds[0] = Kind::Valid;
    let valid = kinds.iter().filter(|k| **k == Kind::Valid).count();
    let requests: Vec<Delivery> = kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let mut headers = vec![("x-github-event", "push".to_string())];
            let b = match kind {
                Kind::Replay => body(0, "backend"),
                Kind::UnknownRepo => body(i, "elsewhere"),
                _ => body(i, "backend"),
            };
            let delivery = if *kind == Kind::Replay { 0 } else { i };
            headers.push(("x-github-delivery", format!("d-{delivery}")));
            match kind {
                Kind::NoSignature => {}
                Kind::BadSignature => headers.push(("x-hub-signature-256", sign("wrong", &b))),
                _ => headers.push(("x-hub-signature-256", sign(SECRET, &b))),
            }
            (*kind, headers, b)
        })
        .collect();

    // Send: the first one alone (the replays repeat it), then 8 at a time.
    let started = Instant::now();
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    let mut wrong: Vec<String> = Vec::new();
    let mut last_valid_accepted = Instant::now();
    let mut queue = requests.into_iter();
    let first = queue.next().expect("at least one delivery");
    let mut batches: Vec<Vec<Delivery>> = vec![vec![first]];
    let rest: Vec<_> = queue.collect();
    for chunk in rest.chunks(8) {
        batches.push(chunk.to_vec());
    }
    for batch in batches {
        let sends = batch.into_iter().map(|(kind, headers, b)| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let t = Instant::now();
                let mut req = http.post(&url).body(b);
                for (k, v) in &headers {
                    req = req.header(*k, v);
                }
                let status = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
                (kind, status, t.elapsed())
            }
        });
        for (kind, status, took) in futures_util::future::join_all(sends).await {
            latencies.push(took);
            let expected: &[u16] = match kind {
                Kind::Valid => &[202],
                Kind::UnknownRepo => &[404],
                _ => &[401],
            };
            if !expected.contains(&status) {
                wrong.push(format!("{kind:?} got {status}"));
            }
            if kind == Kind::Valid {
                last_valid_accepted = Instant::now();
            }
        }
    }
    let wall = started.elapsed();
    let _ = last_valid_accepted;

    // Wait for the coalesced jobs to start and finish.
    let store = Store::open_in(&fx.data).map_err(|e| e.to_string())?;
    let causes_of = |serve: &Served, env: &str| -> usize {
        serve
            .stdout_lines()
            .iter()
            .filter(|l| l.starts_with(&format!("{env}: job #")))
            .map(|l| l.matches("push to ").count())
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let jobs = store
            .jobs(&fx.project, None, 10_000)
            .map_err(|e| e.to_string())?;
        let all_done = jobs.iter().all(|j| j.state.is_finished());
        if causes_of(&serve, "dev") >= valid && causes_of(&serve, "staging") >= valid && all_done {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not every valid push became a job cause: dev {} staging {} of {valid}",
                causes_of(&serve, "dev"),
                causes_of(&serve, "staging")
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let jobs = store
        .jobs(&fx.project, None, 10_000)
        .map_err(|e| e.to_string())?;
    let per_env = |env: &str| jobs.iter().filter(|j| j.env == env).count();
    serve.terminate();
    let _ = serve.exited_within(Duration::from_secs(60)).await;

    latencies.sort();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    println!(
        "webhooks: {total} deliveries ({valid} valid, {} refused) in {:.2}s: {:.0}/s; latency p50 {:.1} ms, p99 {:.1} ms",
        total - valid,
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
    println!(
        "webhooks: jobs started: dev {} (causes {}), staging {} (causes {}); wrong answers: {}",
        per_env("dev"),
        causes_of(&serve, "dev"),
        per_env("staging"),
        causes_of(&serve, "staging"),
        wrong.len()
    );
    if !wrong.is_empty() {
        return Err(format!(
            "wrong answers: {:?}",
            &wrong[..wrong.len().min(10)]
        ));
    }
    if causes_of(&serve, "dev") != valid || causes_of(&serve, "staging") != valid {
        return Err(format!(
            "each valid push must be the cause of exactly one job per environment: dev {} staging {} of {valid}",
            causes_of(&serve, "dev"),
            causes_of(&serve, "staging")
        ));
    }
    Ok(())
}
