//! `marvin serve` and its triggers end to end (issue #5): push webhooks over
//! real HTTP to the running binary, polling of a real git repo, schedules
//! under a clock the test moves, and SIGTERM during a job — on the real
//! Docker engine with a real SQLite store.

mod common_e2e;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use common_e2e::{Fixture, Options};
use marvin_core::runtime::{Clock, Runtime, SystemClock};
use marvin_core::store::{Job, JobState, Store};
use marvin_core::triggers::{Hub, Notice};
use marvin_core::webhook::sign;
use marvin_tests::served::{Served, free_addr};
use serde_json::json;

const SECRET: &str = "hook-secret-for-tests-41c9";

/// `marvin serve` on a free port, its log collected, killed when dropped.
async fn start_serve(fx: &Fixture, grace: &str) -> Served {
    let addr = free_addr();
    let mut command = Command::new(marvin_tests::marvin_bin());
    command
        .args(["serve", "--listen", &addr.to_string(), "--grace", grace])
        .arg("--config")
        .arg(&fx.config)
        .arg("--data-dir")
        .arg(&fx.data)
        .env("MARVIN_TEST_HOOK_SECRET", SECRET);
    Served::start(command, addr)
        .await
        .unwrap_or_else(|e| panic!("marvin serve: {e}"))
}

fn hooks_options(extra_dev: &str) -> Options {
    Options {
        dev_yaml: format!("    triggers: {{push: true}}\n{extra_dev}"),
        staging_yaml: "    triggers: {push: true}\n".into(),
        top_yaml: "  coalesce_window: 500ms\nwebhooks:\n  secret_env: MARVIN_TEST_HOOK_SECRET\n"
            .into(),
        ..Options::default()
    }
}

fn jobs(fx: &Fixture) -> Vec<Job> {
    let store = Store::open_in(&fx.data).expect("the store opens");
    let mut jobs = store.jobs(&fx.project, None, 1_000).unwrap();
    jobs.reverse();
    jobs
}

/// Wait until `n` jobs exist and all have finished.
async fn settle(fx: &Fixture, n: usize) -> Vec<Job> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let all = jobs(fx);
        if all.len() >= n && all.iter().all(|j| j.state.is_finished()) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "expected {n} finished jobs: {:#?}",
            all.iter()
                .map(|j| (j.id, &j.env, j.state))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn backend_url(fx: &Fixture) -> String {
    fx.root.join("repos/backend.git").display().to_string()
}

fn github_body(fx: &Fixture, commit: &str, nonce: u32) -> Vec<u8> {
    json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": commit,
        "repository": {"full_name": "team/backend", "clone_url": backend_url(fx)},
        "pushed_at": nonce,
    })
    .to_string()
    .into_bytes()
}

async fn post(url: &str, headers: &[(&str, String)], body: Vec<u8>) -> u16 {
    let mut req = reqwest::Client::new().post(url).body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn github(serve: &Served, body: Vec<u8>, delivery: &str, signature: Option<String>) -> u16 {
    let mut headers = vec![
        ("x-github-event", "push".to_string()),
        ("x-github-delivery", delivery.to_string()),
        ("content-type", "application/json".to_string()),
    ];
    if let Some(s) = signature {
        headers.push(("x-hub-signature-256", s));
    }
    post(&format!("{}/hooks/push", serve.url()), &headers, body).await
}

fn head(fx: &Fixture) -> String {
    common_e2e::git(&fx.root.join("work/backend"), &["rev-parse", "HEAD"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_pushes_start_one_build_per_tracking_environment_and_nothing_else_does() {
    let fx = Fixture::new("serve-hooks", hooks_options("")).await;
    let serve = start_serve(&fx, "10s").await;
    let commit = head(&fx);
    let hooks = format!("{}/hooks/push", serve.url());

    // GitHub: one build of dev and one of staging (both track main).
    let body = github_body(&fx, &commit, 1);
    let status = github(&serve, body.clone(), "gh-1", Some(sign(SECRET, &body))).await;
    assert_eq!(status, 202);
    let after_github = settle(&fx, 2).await;
    assert_eq!(after_github.len(), 2);
    let mut envs: Vec<&str> = after_github.iter().map(|j| j.env.as_str()).collect();
    envs.sort();
    assert_eq!(envs, ["dev", "staging"]);
    for j in &after_github {
        assert_eq!(j.trigger, "push");
        assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    }

    // Refused, and nothing starts: a wrong signature, none, a replay, an unknown repo.
    let body = github_body(&fx, &commit, 2);
    assert_eq!(
        github(
            &serve,
            body.clone(),
            "gh-2",
            Some(sign("not-the-secret", &body))
        )
        .await,
        401
    );
    assert_eq!(github(&serve, body.clone(), "gh-3", None).await, 401);
    let replay = github_body(&fx, &commit, 1);
    assert_eq!(
        github(&serve, replay.clone(), "gh-1", Some(sign(SECRET, &replay))).await,
        401
    );
    let unknown = json!({
        "ref": "refs/heads/main", "after": commit,
        "repository": {"full_name": "team/elsewhere", "clone_url": "/srv/elsewhere.git"},
    })
    .to_string()
    .into_bytes();
    assert_eq!(
        github(
            &serve,
            unknown.clone(),
            "gh-4",
            Some(sign(SECRET, &unknown))
        )
        .await,
        404
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(jobs(&fx).len(), 2, "refused deliveries started nothing");
    // ... and each was logged, with its reason.
    let log = serve.log();
    assert_eq!(log.matches("webhook refused (401").count(), 3, "{log}");
    assert_eq!(log.matches("webhook refused (404").count(), 1, "{log}");
    assert!(!log.contains(SECRET), "the secret is never logged: {log}");

    // GitLab (a token, not a signature) and Gitea (hex HMAC).
    let gitlab = json!({
        "object_kind": "push", "ref": "refs/heads/main", "after": commit,
        "project": {"path_with_namespace": "team/backend", "git_http_url": backend_url(&fx)},
    })
    .to_string()
    .into_bytes();
    let headers = [
        ("x-gitlab-event", "Push Hook".to_string()),
        ("x-gitlab-token", SECRET.to_string()),
        ("x-gitlab-event-uuid", "gl-1".to_string()),
    ];
    assert_eq!(post(&hooks, &headers, gitlab.clone()).await, 202);
    let wrong = [
        ("x-gitlab-event", "Push Hook".to_string()),
        ("x-gitlab-token", "guess".to_string()),
        ("x-gitlab-event-uuid", "gl-2".to_string()),
    ];
    assert_eq!(post(&hooks, &wrong, gitlab).await, 401);
    settle(&fx, 4).await;
    let gitea = json!({
        "ref": "refs/heads/main", "after": commit, "before": commit,
        "repository": {"full_name": "team/backend", "clone_url": backend_url(&fx)},
    })
    .to_string()
    .into_bytes();
    let signature = sign(SECRET, &gitea)
        .trim_start_matches("sha256=")
        .to_string();
    let headers = [
        ("x-gitea-event", "push".to_string()),
        ("x-gitea-delivery", "gt-1".to_string()),
        ("x-gitea-signature", signature),
    ];
    assert_eq!(post(&hooks, &headers, gitea).await, 202);
    settle(&fx, 6).await;

    // Ten pushes within one second: one job per environment.
    let started = Instant::now();
    for i in 0..10 {
        let body = github_body(&fx, &commit, 100 + i);
        let status = github(
            &serve,
            body.clone(),
            &format!("burst-{i}"),
            Some(sign(SECRET, &body)),
        )
        .await;
        assert_eq!(status, 202);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the burst took {:?}",
        started.elapsed()
    );
    let all = settle(&fx, 8).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let all_after = jobs(&fx);
    assert_eq!(
        all_after.len(),
        8,
        "{:#?}",
        all.iter().map(|j| (j.id, &j.env)).collect::<Vec<_>>()
    );
}

/// A clock the test moves by hand.
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_at_their_times_once_and_skip_a_locked_environment() {
    let fx = Fixture::new(
        "serve-schedule",
        Options {
            dev_yaml: "    triggers: {schedule: \"0 3 * * *\"}\n".into(),
            ..Options::default()
        },
    )
    .await;
    // 2026-11-25 02:59:30 UTC.
    let day_ms: i64 = 1_795_564_800_000;
    let clock = Arc::new(ManualClock(AtomicI64::new(
        day_ms + (2 * 3600 + 59 * 60 + 30) * 1000,
    )));
    let runtime = Runtime::new(
        fx.marvin(),
        fx.engine.clone(),
        Store::open_in(&fx.data).unwrap(),
        clock.clone(),
    )
    .unwrap();
    let hub = Hub::new(runtime.clone()).expect("the schedule parses");
    let mut notices = hub.subscribe();

    hub.tick().await;
    assert!(notices.try_recv().is_err(), "nothing is due at 02:59:30");
    clock
        .0
        .store(day_ms + (3 * 3600) * 1000 + 1_000, Ordering::SeqCst);
    hub.tick().await;
    match notices.try_recv() {
        Ok(Notice::Started { env, causes, .. }) => {
            assert_eq!(env, "dev");
            assert!(causes[0].contains("schedule"), "{causes:?}");
        }
        other => panic!("03:00 starts dev's build: {other:?}"),
    }
    hub.tick().await;
    assert!(notices.try_recv().is_err(), "an occurrence fires once");
    let done = settle(&fx, 1).await;
    assert_eq!(done[0].trigger, "schedule");
    assert_eq!(done[0].state, JobState::Succeeded, "{:?}", done[0]);

    // Locked the next day: skipped, and said so with the holder.
    let now = clock.now_ms();
    runtime
        .store()
        .lock(
            &fx.project,
            "dev",
            "slack:UALICE",
            "demo",
            Some(now + 3 * 86_400_000),
            false,
            now,
        )
        .unwrap();
    clock.0.store(
        day_ms + 86_400_000 + (3 * 3600) * 1000 + 1_000,
        Ordering::SeqCst,
    );
    hub.tick().await;
    match notices.try_recv() {
        Ok(Notice::Skipped { env, text }) => {
            assert_eq!(env, "dev");
            assert!(text.contains("skipped the schedule build"), "{text}");
            assert!(text.contains("slack:UALICE"), "{text}");
        }
        other => panic!("a locked environment is skipped: {other:?}"),
    }
    assert_eq!(jobs(&fx).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_picks_up_a_pushed_commit_within_two_intervals() {
    let fx = Fixture::new(
        "serve-poll",
        Options {
            dev_yaml: "    triggers: {push: true}\n".into(),
            backend_yaml: "    poll: 1s\n".into(),
            top_yaml: "  coalesce_window: 200ms\n".into(),
            ..Options::default()
        },
    )
    .await;
    let runtime = Runtime::new(
        fx.marvin(),
        fx.engine.clone(),
        Store::open_in(&fx.data).unwrap(),
        Arc::new(SystemClock),
    )
    .unwrap();
    let hub = Hub::new(runtime).unwrap();
    let mut notices = hub.subscribe();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = {
        let hub = hub.clone();
        let stop = stop.clone();
        tokio::spawn(async move { hub.run(stop).await })
    };
    // The first look is a baseline, not a change. The sentinel: the mirror
    // the first poll fetched into place (its tips, read from the mirror, are
    // the baseline, whenever the commit below lands). A baseline taken for a
    // change would show as a second job below.
    let mirror = fx.data.join("repos/backend.git");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mirror.join("HEAD").exists() {
        assert!(Instant::now() < deadline, "the first poll never fetched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(jobs(&fx).is_empty());

    fx.commit(
        "backend",
        &[("api/index.html", Some("new\n"))],
        "api: new page",
    );
    let pushed = Instant::now();
    let notice = tokio::time::timeout(Duration::from_secs(10), notices.recv())
        .await
        .expect("a notice")
        .unwrap();
    let took = pushed.elapsed();
    match notice {
        Notice::Started { env, causes, .. } => {
            assert_eq!(env, "dev");
            assert!(
                causes[0].contains("new commit on backend main"),
                "{causes:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Two intervals (2 s), the coalescing window (0.2 s) and a fetch.
    assert!(
        took < Duration::from_millis(3_500),
        "picked up after {took:?}"
    );
    eprintln!("poll picked the commit up after {took:?}");
    let done = settle(&fx, 1).await;
    assert_eq!(done.len(), 1, "the baseline started nothing: {done:#?}");
    assert_eq!(done[0].trigger, "poll");
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_job_exits_within_the_grace_period_and_accounts_for_the_job() {
    let fx = Fixture::new("serve-term", hooks_options("")).await;
    let mut serve = start_serve(&fx, "2s").await;
    let body = github_body(&fx, &head(&fx), 1);
    assert_eq!(
        github(&serve, body.clone(), "t-1", Some(sign(SECRET, &body))).await,
        202
    );
    // Wait until a job runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if jobs(&fx).iter().any(|j| j.state == JobState::Running) {
            break;
        }
        assert!(Instant::now() < deadline, "no job started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = Instant::now();
    serve.terminate();
    let exit = serve
        .exited_within(Duration::from_secs(15))
        .await
        .expect("marvin serve exits after SIGTERM");
    let took = sent.elapsed();
    let out = serve.stdout_lines().join("\n");
    assert!(exit.success(), "{exit:?}\n{out}");
    assert!(took < Duration::from_secs(2 + 5), "exited after {took:?}");
    assert!(out.contains("marvin serve: stopped"), "{out}");
    for j in jobs(&fx) {
        assert!(
            matches!(
                j.state,
                JobState::Succeeded | JobState::Interrupted | JobState::Failed
            ),
            "every job finished or interrupted: {j:?}"
        );
    }
    let store = Store::open_in(&fx.data).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
}
