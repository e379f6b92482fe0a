//! Issue #4's Slack end-to-end tests: the real `marvin_slack` front end (and
//! the `marvin-slack` binary) against a fake Slack on 127.0.0.1, jobs on the
//! real Docker engine, state in the real store.

mod common_e2e;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common_e2e::{Fixture, Options};
use marvin_core::chat::Chat;
use marvin_core::runtime::{JobSummary, Runtime};
use marvin_core::store::{JobState, Store};
use marvin_slack::{Listen, SlackConfig, SlackError};
use marvin_tests::fake_slack::{
    self, ApiCall, FakeSlack, envelope, event_callback, mention, post_event, signed_headers,
    unix_now,
};
use tokio_util::sync::CancellationToken;

const SIGNING_SECRET: &str = "e2e-signing-secret";
const JOB_WAIT: Duration = Duration::from_secs(300);

/// The front end running in this process over a fixture's project.
struct Bot {
    fake: FakeSlack,
    runtime: Runtime,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), SlackError>>,
}

impl Bot {
    async fn socket_mode(fx: &Fixture) -> Bot {
        let bot = Bot::start(
            fx,
            Listen::SocketMode {
                app_token: "xapp-e2e".into(),
            },
        )
        .await;
        bot.fake.wait_connected(Duration::from_secs(20)).await;
        bot
    }

    async fn events_api(fx: &Fixture) -> (Bot, SocketAddr) {
        let addr = free_port();
        let bot = Bot::start(
            fx,
            Listen::EventsApi {
                addr,
                signing_secret: SIGNING_SECRET.into(),
            },
        )
        .await;
        let until = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(
                Instant::now() < until,
                "the Events API listener did not come up on {addr}"
            );
            assert!(
                !bot.task.is_finished(),
                "the front end stopped before listening"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (bot, addr)
    }

    async fn start(fx: &Fixture, listen: Listen) -> Bot {
        let fake = FakeSlack::start().await;
        let runtime = fx.runtime();
        let mut cfg = SlackConfig::new("xoxb-e2e", listen);
        cfg.api_url = fake.api_url.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(marvin_slack::run(
            Chat::new(runtime.clone()),
            cfg,
            shutdown.clone(),
        ));
        Bot {
            fake,
            runtime,
            shutdown,
            task,
        }
    }

    /// Send `text` as a mention from `user` in `channel` over Socket Mode and wait for the ack.
    async fn say(&self, n: u32, user: &str, channel: &str, text: &str) {
        let id = format!("env-{n}");
        self.fake.send_frame(envelope(
            &id,
            event_callback(&format!("Ev{n}"), mention(user, channel, text)),
        ));
        self.fake.wait_ack(&id, Duration::from_secs(10)).await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.runtime.cancel_all();
        let result = tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the front end stops within 30 s")
            .expect("the front end's task did not panic");
        assert!(result.is_ok(), "the front end ended with {result:?}");
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address")
}

fn text_of(call: &ApiCall) -> String {
    call.json["text"].as_str().unwrap_or_default().to_string()
}

/// Everything a message shows: its fallback text and its blocks.
fn shown(call: &ApiCall) -> String {
    format!("{}\n{}", text_of(call), call.json["blocks"])
}

fn is_final_update(c: &ApiCall, word: &str) -> bool {
    c.method == "chat.update" && text_of(c).contains(word)
}

fn summary_of(job: &marvin_core::store::Job) -> JobSummary {
    serde_json::from_value(job.result.clone().expect("a finished job has a summary"))
        .expect("the summary reads back")
}

fn store(fx: &Fixture) -> Store {
    Store::open_in(&fx.data).expect("the store opens")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_mention_builds_on_the_engine_and_edits_one_status_message() {
    let fx = Fixture::new("slack-build", Options::default()).await;
    let bot = Bot::socket_mode(&fx).await;
    bot.say(1, "U1", "C1", "<@UBOT> dev build").await;
    let calls = bot
        .fake
        .wait_for("the final report", JOB_WAIT, |calls| {
            calls
                .iter()
                .any(|c| is_final_update(c, "succeeded") || is_final_update(c, "failed"))
        })
        .await;

    let posts: Vec<&ApiCall> = calls
        .iter()
        .filter(|c| c.method == "chat.postMessage")
        .collect();
    let updates: Vec<&ApiCall> = calls.iter().filter(|c| c.method == "chat.update").collect();
    assert_eq!(posts.len(), 1, "one status message: {posts:#?}");
    let post = posts[0];
    assert_eq!(post.json["channel"], "C1");
    assert!(text_of(post).contains("*dev* build #"), "{}", text_of(post));
    // Every edit is of that message, after it, at least ~1 s apart.
    let ts = calls
        .iter()
        .position(|c| c.method == "chat.postMessage")
        .expect("posted");
    assert!(
        calls.iter().take(ts).all(|c| c.method != "chat.update"),
        "an edit came before the post"
    );
    for u in &updates {
        assert_eq!(u.json["channel"], "C1");
        assert_eq!(
            u.json["ts"], "1700000001.000001",
            "edits the status message"
        );
    }
    for pair in updates.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= Duration::from_millis(900), "two edits {gap:?} apart");
    }

    let job = store(&fx)
        .jobs(&fx.project, Some("dev"), 10)
        .expect("list jobs");
    assert_eq!(job.len(), 1, "one job: {job:?}");
    let summary = summary_of(&job[0]);
    assert_eq!(job[0].state, JobState::Succeeded, "{summary:?}");

    let last = updates.last().expect("at least one edit");
    let text = shown(last);
    assert!(text.contains("succeeded"), "{text}");
    assert!(text.contains(&format!("#{}", job[0].id)), "{text}");
    for commit in &summary.commits {
        assert!(
            text.contains(&commit.id[..7]),
            "commit {} missing: {text}",
            commit.id
        );
        assert!(text.contains(&commit.subject), "{text}");
    }
    assert!(
        text.contains(&format!("built {}", summary.built.len())),
        "{text}"
    );
    assert!(summary.built.len() == 5, "{summary:?}");
    assert!(
        text.contains(&format!("reused {}", summary.reused.len())),
        "{text}"
    );
    assert_eq!(bot.fake.acks(), vec!["env-1"]);
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_api_verifies_signatures_and_starts_a_retried_event_once() {
    let fx = Fixture::new("slack-events", Options::default()).await;
    let (bot, addr) = Bot::events_api(&fx).await;

    // Slack's URL check is answered with its challenge.
    let challenge = r#"{"type":"url_verification","challenge":"3eZbrw1aB","token":"t"}"#;
    let (status, body) = post_event(
        addr,
        challenge,
        &signed_headers(SIGNING_SECRET, unix_now(), challenge),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("3eZbrw1aB"), "{body}");

    let command =
        |id: &str| event_callback(id, mention("U1", "C1", "<@UBOT> dev run nap 1")).to_string();
    // A wrong signature, a stale timestamp, a missing signature: 401, nothing starts.
    let forged = command("EvForged");
    let (status, _) = post_event(
        addr,
        &forged,
        &signed_headers("not the secret", unix_now(), &forged),
    )
    .await;
    assert_eq!(status, 401, "a request signed with another secret");
    let stale = command("EvStale");
    let old = unix_now() - 301;
    let (status, _) = post_event(addr, &stale, &signed_headers(SIGNING_SECRET, old, &stale)).await;
    assert_eq!(
        status, 401,
        "a correctly signed request older than 5 minutes"
    );
    let tampered_body = command("EvTampered");
    let headers = signed_headers(SIGNING_SECRET, unix_now(), &tampered_body);
    let (status, _) = post_event(addr, &tampered_body.replace("nap 1", "nap 2"), &headers).await;
    assert_eq!(status, 401, "a body changed after signing");
    let (status, _) = post_event(
        addr,
        &stale,
        &[("X-Slack-Request-Timestamp", unix_now().to_string())],
    )
    .await;
    assert_eq!(status, 401, "no signature");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        store(&fx)
            .jobs(&fx.project, None, 10)
            .expect("list jobs")
            .is_empty(),
        "a rejected request started a job"
    );
    assert!(
        bot.fake.calls_of("chat.postMessage").is_empty(),
        "a rejected request was answered"
    );
    let audit = store(&fx)
        .audit_log(&fx.project, 10)
        .expect("the audit log");
    assert!(
        audit.is_empty(),
        "a rejected request reached the dispatcher: {audit:?}"
    );

    // A signed event starts a job; Slack's retry of it (same event_id) does not.
    let good = command("EvGood");
    let (status, _) = post_event(
        addr,
        &good,
        &signed_headers(SIGNING_SECRET, unix_now(), &good),
    )
    .await;
    assert_eq!(status, 200);
    let mut retry_headers = signed_headers(SIGNING_SECRET, unix_now(), &good);
    retry_headers.push(("X-Slack-Retry-Num", "1".to_string()));
    retry_headers.push(("X-Slack-Retry-Reason", "http_timeout".to_string()));
    let (status, _) = post_event(addr, &good, &retry_headers).await;
    assert_eq!(status, 200, "a retry is acknowledged");
    bot.fake
        .wait_for("the final report", JOB_WAIT, |calls| {
            calls
                .iter()
                .any(|c| is_final_update(c, "succeeded") || is_final_update(c, "failed"))
        })
        .await;
    // The sentinel: a later event, answered only after the retry was taken
    // in (a retry taken for a new command would be audited and answered too).
    let later = event_callback("EvLater", mention("U1", "C1", "<@UBOT> whoami")).to_string();
    let (status, _) = post_event(
        addr,
        &later,
        &signed_headers(SIGNING_SECRET, unix_now(), &later),
    )
    .await;
    assert_eq!(status, 200);
    let whoami = |c: &ApiCall| c.method == "chat.postMessage" && shown(c).contains("You are");
    bot.fake
        .wait_for("the answer to the later event", JOB_WAIT, |calls| {
            calls.iter().any(whoami)
        })
        .await;
    let jobs = store(&fx).jobs(&fx.project, None, 10).expect("list jobs");
    assert_eq!(
        jobs.len(),
        1,
        "one job for an event and its retry: {jobs:?}"
    );
    let audited = store(&fx)
        .audit_log(&fx.project, 10)
        .expect("the audit log");
    assert_eq!(
        audited.iter().filter(|e| e.command.contains("nap")).count(),
        1,
        "the retry reached the dispatcher: {audited:#?}"
    );
    assert_eq!(jobs[0].state, JobState::Succeeded, "{:?}", jobs[0]);
    assert_eq!(jobs[0].who, "slack:U1");
    assert_eq!(jobs[0].origin, "slack:C1");
    let posted = bot.fake.calls_of("chat.postMessage");
    assert_eq!(
        posted.iter().filter(|c| !whoami(c)).count(),
        1,
        "{posted:#?}"
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_from_an_env_file_appears_in_no_message_log_line_or_audit_entry() {
    let fx = Fixture::new(
        "slack-secret",
        Options {
            dev_yaml: "    env_file: [envs/dev.env]\n".into(),
            ..Options::default()
        },
    )
    .await;
    let secret = format!("s3cr3t-{}-{}", std::process::id(), unix_now());
    fx.commit(
        "backend",
        &[("envs/dev.env", Some(&format!("API_TOKEN={secret}\n")))],
        "dev: an API token",
    );
    let bot = Bot::socket_mode(&fx).await;
    // A task runs with its service's image and environment: deploy dev first.
    bot.say(1, "U1", "C1", "<@UBOT> dev build").await;
    bot.fake
        .wait_for("the build", JOB_WAIT, |calls| {
            calls.iter().any(|c| is_final_update(c, "succeeded"))
        })
        .await;
    bot.say(3, "U1", "C1", "<@UBOT> dev run leak").await;
    let calls = bot
        .fake
        .wait_for("the failure's log in the thread", JOB_WAIT, |calls| {
            calls
                .iter()
                .any(|c| c.method == "chat.postMessage" && c.json["thread_ts"].is_string())
        })
        .await;
    // Also a command that echoes the secret back is masked in the answer and the audit log.
    bot.say(2, "U1", "C1", &format!("<@UBOT> dev logs {secret}"))
        .await;
    let calls_after = bot
        .fake
        .wait_for(
            "the answer to the echoed secret",
            Duration::from_secs(30),
            |c| c.len() > calls.len(),
        )
        .await;

    let jobs = store(&fx)
        .jobs(&fx.project, Some("dev"), 10)
        .expect("list jobs");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert_eq!(jobs[0].verb, "run");
    assert_eq!(jobs[0].state, JobState::Failed);
    let logs = store(&fx).logs(jobs[0].id, None).expect("the job's log");
    let log_text: Vec<String> = logs
        .iter()
        .map(|l| format!("{} {}", l.stream, l.line))
        .collect();
    let thread = calls
        .iter()
        .find(|c| c.json["thread_ts"].is_string())
        .expect("a thread reply");
    assert!(
        log_text.iter().any(|l| l.contains("leaked")),
        "the task ran: {}",
        log_text.join("\n")
    );
    assert!(
        shown(thread).contains("API_TOKEN=***"),
        "the leaked line is shown masked: {}",
        shown(thread)
    );
    assert!(
        shown(thread).contains(&format!("marvin logs dev {}", jobs[0].id)),
        "{}",
        shown(thread)
    );

    for c in &calls_after {
        assert!(
            !c.body.contains(&secret),
            "the secret reached Slack in {}: {}",
            c.method,
            c.body
        );
    }
    for frame in bot.fake.frames() {
        assert!(
            !frame.contains(&secret),
            "the secret went over the websocket: {frame}"
        );
    }
    assert!(
        log_text.iter().any(|l| l.contains("API_TOKEN=***")),
        "the task's env line is in the log, masked: {}",
        log_text.join("\n")
    );
    for l in &logs {
        assert!(
            !l.line.contains(&secret),
            "the secret is in the job log: {}",
            l.line
        );
    }
    let audit = store(&fx)
        .audit_log(&fx.project, 100)
        .expect("the audit log");
    assert!(audit.len() >= 2, "{audit:?}");
    let audit_json = serde_json::to_string(&audit).expect("audit entries serialise");
    assert!(
        !audit_json.contains(&secret),
        "the secret is in the audit log: {audit_json}"
    );
    assert!(
        audit_json.contains("***"),
        "the echoed secret is audited masked: {audit_json}"
    );
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_build_is_refused_and_audited_as_denied() {
    let fx = Fixture::new(
        "slack-viewer",
        Options {
            top_yaml: "people:\n  viewers: [\"slack:UVIEW\"]\n".into(),
            ..Options::default()
        },
    )
    .await;
    let bot = Bot::socket_mode(&fx).await;
    bot.say(1, "UVIEW", "C9", "<@UBOT> dev build").await;
    let calls = bot
        .fake
        .wait_for("the refusal", Duration::from_secs(30), |c| {
            c.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    let answer = calls
        .iter()
        .find(|c| c.method == "chat.postMessage")
        .expect("an answer");
    assert_eq!(answer.json["channel"], "C9");
    let text = text_of(answer);
    assert!(text.contains("viewer"), "the refusal says why: {text}");
    assert!(
        store(&fx)
            .jobs(&fx.project, None, 10)
            .expect("list jobs")
            .is_empty(),
        "a viewer started a job"
    );
    let audit = store(&fx)
        .audit_log(&fx.project, 10)
        .expect("the audit log");
    let entry = audit
        .iter()
        .find(|e| e.who == "slack:UVIEW")
        .unwrap_or_else(|| panic!("the attempt is audited: {audit:?}"));
    assert_eq!(entry.decision, "denied", "{entry:?}");
    assert_eq!(entry.origin, "slack:C9");
    assert!(entry.command.contains("build"), "{entry:?}");

    // Socket Mode sends the same event again (a retry): acknowledged, not answered twice.
    bot.fake.send_frame(envelope(
        "env-1-retry",
        event_callback("Ev1", mention("UVIEW", "C9", "<@UBOT> dev build")),
    ));
    bot.fake
        .wait_ack("env-1-retry", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        bot.fake.calls_of("chat.postMessage").len(),
        1,
        "a retry was answered again"
    );
    let denied = store(&fx)
        .audit_log(&fx.project, 10)
        .expect("the audit log");
    assert_eq!(denied.len(), 1, "a retry was audited again: {denied:?}");
    bot.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_messages_are_answered_and_bots_are_ignored() {
    let fx = Fixture::new("slack-dm", Options::default()).await;
    let bot = Bot::socket_mode(&fx).await;
    let send = |n: u32, event: serde_json::Value| {
        let id = format!("env-{n}");
        bot.fake
            .send_frame(envelope(&id, event_callback(&format!("Ev{n}"), event)));
        id
    };
    let mut from_bot = fake_slack::direct_message("U2", "D1", "dev build");
    from_bot["bot_id"] = "B2".into();
    let own = fake_slack::direct_message(fake_slack::BOT_USER, "D1", "dev build");
    let in_channel = {
        let mut m = fake_slack::direct_message("U1", "C1", "dev build");
        m["channel_type"] = "channel".into();
        m
    };
    for (n, event) in [(1, from_bot), (2, own), (3, in_channel)] {
        let id = send(n, event);
        bot.fake.wait_ack(&id, Duration::from_secs(10)).await;
    }
    let id = send(4, fake_slack::direct_message("U1", "D1", "help"));
    bot.fake.wait_ack(&id, Duration::from_secs(10)).await;
    let calls = bot
        .fake
        .wait_for("the answer to help", Duration::from_secs(30), |c| {
            c.iter().any(|c| c.method == "chat.postMessage")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posts = bot.fake.calls_of("chat.postMessage");
    assert_eq!(
        posts.len(),
        1,
        "only the person's message is answered: {posts:#?}"
    );
    assert_eq!(posts[0].json["channel"], "D1");
    assert!(
        text_of(&posts[0]).contains("build"),
        "help lists the verbs: {}",
        text_of(&posts[0])
    );
    assert!(calls.iter().all(|c| c.method != "chat.update"));
    assert!(
        store(&fx)
            .jobs(&fx.project, None, 10)
            .expect("list jobs")
            .is_empty(),
        "a bot's message started a job"
    );
    bot.stop().await;
}

/// Run the `marvin-slack` binary with only these Slack variables set; it must end within 30 s.
fn run_bin(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(marvin_tests::slack_bin());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("MARVIN_CONFIG")
        .env_remove(marvin_core::marvin::DATA_DIR_ENV)
        .env("RUST_BACKTRACE", "1");
    for var in [
        "SLACK_BOT_TOKEN",
        "SLACK_APP_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_API_URL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run marvin-slack");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_refuses_to_start_without_a_token_or_with_a_broken_marvin_yml() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = marvin_tests::project(
        dir.path(),
        "project: p\nrepos:\n  app: { url: /nonexistent.git }\nenvironments:\n  dev: { branch: main }\n",
    );
    let (code, stderr) = run_bin(dir.path(), &[], &[("SLACK_APP_TOKEN", "xapp-1")]);
    assert_ne!(code, Some(0), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("SLACK_BOT_TOKEN is not set"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (code, stderr) = run_bin(dir.path(), &[], &[("SLACK_BOT_TOKEN", "xoxb-secret-value")]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("SLACK_APP_TOKEN is not set"), "{stderr}");
    let (code, stderr) = run_bin(
        dir.path(),
        &["--events-addr", "127.0.0.1:0"],
        &[("SLACK_BOT_TOKEN", "xoxb-secret-value")],
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("SLACK_SIGNING_SECRET is not set"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("xoxb-secret-value"),
        "a token was printed: {stderr}"
    );

    std::fs::write(
        &config,
        "project: p\nrepos:\n  app: { url: /x.git }\nenvironments:\n  dev:\n    branch: [main\n",
    )
    .expect("break marvin.yml");
    let tokens = [
        ("SLACK_BOT_TOKEN", "xoxb-secret-value"),
        ("SLACK_APP_TOKEN", "xapp-secret-value"),
    ];
    let (code, stderr) = run_bin(dir.path(), &[], &tokens);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("marvin.yml:"),
        "Marvin's file:line error: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("secret-value"),
        "a token was printed: {stderr}"
    );
    let (code, stderr) = run_bin(dir.path(), &["-c", "/nonexistent/marvin.yml"], &tokens);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(stderr.contains("/nonexistent/marvin.yml"), "{stderr}");
}
