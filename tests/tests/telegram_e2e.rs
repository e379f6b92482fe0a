//! Issue #4, Telegram end to end: the real marvin-telegram code against a
//! fake Bot API on 127.0.0.1 (axum; it records every request body), jobs on
//! the real Docker engine, state in the real store. Also the binary's
//! start-up errors.

mod common_e2e;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use common_e2e::{Fixture, Options};
use marvin_core::chat::Chat;
use marvin_core::store::{Job, JobState};
use marvin_telegram::{Mode, TelegramConfig, TelegramError, Url, WebhookConfig};
use marvin_tests::served::{Served, free_addr};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "4242:fake-TOKEN-e2e";
const BOT: &str = "marvin_e2e_bot";
/// A user who writes to the bot.
const ADA: u64 = 1001;
/// Ada's private chat with the bot (Telegram uses the user id).
const PRIVATE: i64 = 1001;
/// A group the bot is in.
const GROUP: i64 = -100_555;
const WAIT: Duration = Duration::from_secs(240);

// ---- the fake Bot API ----

/// One request the fake received.
#[derive(Debug, Clone)]
struct Call {
    /// The method, lower-cased (`sendmessage`).
    method: String,
    /// The raw body.
    body: String,
    /// When it arrived.
    at: Instant,
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct FakeState {
    calls: Mutex<Vec<Call>>,
    /// Updates not yet confirmed by an offset past them, in order.
    updates: Mutex<VecDeque<Value>>,
    /// The text of each message the bot sent, by message id.
    texts: Mutex<HashMap<i64, String>>,
    next_id: Mutex<i64>,
}

struct FakeApi {
    state: Arc<FakeState>,
    url: String,
}

impl FakeApi {
    async fn start() -> FakeApi {
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/{bot}/{method}", post(api))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Bot API");
        let addr = listener.local_addr().expect("the fake's address");
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the fake Bot API serves")
        });
        FakeApi {
            state,
            url: format!("http://{addr}"),
        }
    }

    /// Queue updates for `getUpdates`.
    fn push(&self, updates: &[Value]) {
        self.state
            .updates
            .lock()
            .expect("updates lock")
            .extend(updates.iter().cloned());
    }

    fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().expect("calls lock").clone()
    }

    /// `sendMessage` and `editMessageText` calls to one chat, in order.
    fn posts_to(&self, chat: i64) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| matches!(c.method.as_str(), "sendmessage" | "editmessagetext"))
            .filter(|c| c.json()["chat_id"].as_i64() == Some(chat))
            .collect()
    }

    /// Wait until a post to `chat` contains `needle`; returns the posts so far.
    async fn wait_for_post(&self, chat: i64, needle: &str) -> Vec<Call> {
        let until = Instant::now() + WAIT;
        loop {
            let posts = self.posts_to(chat);
            if posts
                .iter()
                .any(|c| c.json()["text"].as_str().unwrap_or("").contains(needle))
            {
                return posts;
            }
            assert!(
                Instant::now() < until,
                "no post to chat {chat} contains {needle:?} within {WAIT:?}; posts: {:#?}",
                posts
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn ok(result: Value) -> axum::Json<Value> {
    axum::Json(json!({"ok": true, "result": result}))
}

fn chat_json(id: i64) -> Value {
    if id < 0 {
        json!({"id": id, "type": "supergroup", "title": "ops"})
    } else {
        json!({"id": id, "type": "private", "first_name": "Ada"})
    }
}

fn bot_user() -> Value {
    json!({
        "id": 4242, "is_bot": true, "first_name": "Marvin", "username": BOT,
        "can_join_groups": true, "can_read_all_group_messages": false,
        "supports_inline_queries": false, "can_connect_to_business": false,
        "has_main_web_app": false
    })
}

async fn api(
    State(state): State<Arc<FakeState>>,
    UrlPath((bot, method)): UrlPath<(String, String)>,
    body: String,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    use axum::http::StatusCode;
    let method = method.to_lowercase();
    state.calls.lock().expect("calls lock").push(Call {
        method: method.clone(),
        body: body.clone(),
        at: Instant::now(),
    });
    if bot != format!("bot{TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"ok": false, "error_code": 401, "description": "Unauthorized"})),
        );
    }
    let req: Value = serde_json::from_str(&body).unwrap_or(json!({}));
    let message = |id: i64, chat: i64, text: &str| {
        json!({"message_id": id, "date": 1_700_000_000, "chat": chat_json(chat),
               "from": bot_user(), "text": text})
    };
    let reply = match method.as_str() {
        "getme" => ok(bot_user()),
        "deletewebhook" | "setwebhook" => ok(json!(true)),
        "getupdates" => {
            let offset = req["offset"].as_i64().unwrap_or(0);
            let timeout = req["timeout"].as_u64().unwrap_or(0).min(10);
            let until = Instant::now() + Duration::from_secs(timeout);
            loop {
                let batch: Vec<Value> = {
                    let mut queue = state.updates.lock().expect("updates lock");
                    // An offset confirms every update before it.
                    queue.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                    queue.iter().cloned().collect()
                };
                if !batch.is_empty() || Instant::now() >= until {
                    break ok(json!(batch));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        "sendmessage" => {
            let chat = req["chat_id"].as_i64().unwrap_or(0);
            let text = req["text"].as_str().unwrap_or("").to_string();
            let id = {
                let mut next = state.next_id.lock().expect("id lock");
                *next += 1;
                *next
            };
            state
                .texts
                .lock()
                .expect("texts lock")
                .insert(id, text.clone());
            ok(message(id, chat, &text))
        }
        "editmessagetext" => {
            let chat = req["chat_id"].as_i64().unwrap_or(0);
            let id = req["message_id"].as_i64().unwrap_or(0);
            let text = req["text"].as_str().unwrap_or("").to_string();
            let mut texts = state.texts.lock().expect("texts lock");
            match texts.get(&id) {
                None => {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({"ok": false, "error_code": 400,
                            "description": "Bad Request: message to edit not found"})),
                    );
                }
                Some(old) if *old == text => {
                    return (
                        StatusCode::BAD_REQUEST,
                        axum::Json(json!({"ok": false, "error_code": 400,
                            "description": "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"})),
                    );
                }
                Some(_) => {
                    texts.insert(id, text.clone());
                    let mut m = message(id, chat, &text);
                    m["edit_date"] = json!(1_700_000_100);
                    ok(m)
                }
            }
        }
        _ => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
            );
        }
    };
    (StatusCode::OK, reply)
}

/// A text message update from Ada.
fn update(id: i64, chat: i64, text: &str) -> Value {
    json!({
        "update_id": id,
        "message": {
            "message_id": id, "date": 1_700_000_000, "chat": chat_json(chat),
            "from": {"id": ADA, "is_bot": false, "first_name": "Ada"},
            "text": text
        }
    })
}

// ---- the bot under test ----

/// The library's `run` on a fresh runtime over the fixture, stopped on drop.
struct RunningBot {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), TelegramError>>,
    chat: Chat,
}

impl RunningBot {
    fn start(fx: &Fixture, fake: &FakeApi, mode: Mode) -> RunningBot {
        let chat = Chat::new(fx.runtime());
        let cfg = TelegramConfig {
            token: TOKEN.to_string(),
            api_url: Url::parse(&fake.url).expect("the fake's URL"),
            mode,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(marvin_telegram::run(chat.clone(), cfg, shutdown.clone()));
        RunningBot {
            shutdown,
            task,
            chat,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.chat.runtime().cancel_all();
        let outcome = tokio::time::timeout(Duration::from_secs(90), self.task)
            .await
            .expect("the bot stops")
            .expect("the bot's task did not panic");
        outcome.expect("the bot ends without error");
    }
}

fn jobs(fx: &Fixture) -> Vec<Job> {
    marvin_core::store::Store::open_in(&fx.data)
        .expect("the store opens")
        .jobs(&fx.project, None, 100)
        .expect("list jobs")
}

async fn wait_until_finished(fx: &Fixture, count: usize) -> Vec<Job> {
    let until = Instant::now() + WAIT;
    loop {
        let jobs = jobs(fx);
        if jobs.len() >= count && jobs.iter().all(|j| j.state.is_finished()) {
            return jobs;
        }
        assert!(Instant::now() < until, "jobs did not finish: {jobs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn text(c: &Call) -> String {
    c.json()["text"].as_str().unwrap_or("").to_string()
}

// ---- (1) long polling: a build, posted then edited to its summary ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_polling_build_posts_a_report_and_edits_it_to_the_final_summary() {
    let fx = Fixture::new("tg-poll", Options::default()).await;
    let fake = FakeApi::start().await;
    let bot = RunningBot::start(&fx, &fake, Mode::Polling);
    fake.push(&[update(10, PRIVATE, "/build dev")]);

    let posts = fake.wait_for_post(PRIVATE, "succeeded").await;
    let jobs = wait_until_finished(&fx, 1).await;
    bot.stop().await;

    assert_eq!(jobs.len(), 1, "one job: {jobs:#?}");
    assert_eq!(jobs[0].state, JobState::Succeeded);
    assert_eq!(jobs[0].who, format!("telegram:{ADA}"));
    assert_eq!(posts[0].method, "sendmessage", "first the report is sent");
    assert_eq!(posts[0].json()["parse_mode"], "HTML");
    assert!(
        posts[1..].iter().all(|c| c.method == "editmessagetext"),
        "then only edited: {posts:#?}"
    );
    assert!(posts.len() >= 2, "the report was edited: {posts:#?}");
    let first_id = 1; // the fake's first message id
    assert!(
        posts[1..]
            .iter()
            .all(|c| c.json()["message_id"] == first_id)
    );
    let last = text(posts.last().expect("posts"));
    assert!(last.contains("succeeded"), "{last}");
    assert!(last.contains(&format!("#{}", jobs[0].id)), "{last}");
    assert!(
        last.contains("backend: first version"),
        "commit of backend: {last}"
    );
    assert!(
        last.contains("frontend: first version"),
        "commit of frontend: {last}"
    );
    assert!(last.contains("built 5"), "counts: {last}");
    // Edits are throttled: about a second apart at least.
    for pair in posts.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(900),
            "posts {gap:?} apart: {posts:#?}"
        );
    }
}

// ---- (2) a repeated update_id, (5) another bot's command ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_update_starts_one_job_and_other_bots_commands_get_no_answer() {
    // The group is bound to dev in marvin.yml: commands there imply it.
    let fx = Fixture::new(
        "tg-dedup",
        Options {
            dev_yaml: format!("    channels: [\"telegram:{GROUP}\"]\n"),
            ..Options::default()
        },
    )
    .await;
    let fake = FakeApi::start().await;
    let bot = RunningBot::start(&fx, &fake, Mode::Polling);
    // Another bot's command first, then one update delivered twice, then a
    // mention in the bound group with no environment (answered at once).
    fake.push(&[
        update(20, GROUP, "/build@someotherbot dev"),
        update(21, PRIVATE, "/build dev"),
        update(21, PRIVATE, "/build dev"),
        update(22, GROUP, &format!("@{BOT} status")),
    ]);
    // `status` with no environment: the group's binding says dev.
    fake.wait_for_post(GROUP, &format!("dev ({})", fx.project))
        .await;
    fake.wait_for_post(PRIVATE, "succeeded").await;
    let jobs = wait_until_finished(&fx, 1).await;
    // The sentinel: a later update, answered only after the repeated one was
    // taken in (had it been taken for a new command, it would show by now).
    fake.push(&[update(23, PRIVATE, "whoami")]);
    fake.wait_for_post(PRIVATE, "You are").await;
    let jobs_after = jobs_len(&fx);
    bot.stop().await;

    assert_eq!(jobs.len(), 1, "update 21 started one job: {jobs:#?}");
    assert_eq!(jobs_after, 1);
    let private_sends = fake
        .posts_to(PRIVATE)
        .into_iter()
        .filter(|c| c.method == "sendmessage" && !text(c).contains("You are"))
        .count();
    assert_eq!(private_sends, 1, "one report for update 21");
    let group = fake.posts_to(GROUP);
    assert_eq!(
        group.len(),
        1,
        "only the status answer in the group: {group:#?}"
    );
    assert_eq!(group[0].json()["reply_parameters"]["message_id"], 22);
    let audit = marvin_core::store::Store::open_in(&fx.data)
        .expect("store")
        .audit_log(&fx.project, 100)
        .expect("audit");
    assert!(
        audit.iter().all(|a| !a.command.contains("someotherbot")),
        "another bot's command is not ours to audit: {audit:#?}"
    );
}

fn jobs_len(fx: &Fixture) -> usize {
    jobs(fx).len()
}

// ---- (3) webhook: the secret token ----

async fn post_update(addr: SocketAddr, secret: Option<&str>, update: &Value) -> u16 {
    let client = reqwest::Client::new();
    let mut req = client
        .post(format!("http://{addr}/telegram/hook"))
        .header("content-type", "application/json")
        .body(update.to_string());
    if let Some(s) = secret {
        req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
    }
    req.send()
        .await
        .expect("the webhook answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_refuses_a_wrong_secret_with_401_and_runs_the_right_one() {
    let fx = Fixture::new("tg-hook", Options::default()).await;
    let fake = FakeApi::start().await;
    let addr = free_addr();
    let secret = "s3cret-Token_e2e";
    let bot = RunningBot::start(
        &fx,
        &fake,
        Mode::Webhook(WebhookConfig {
            listen: addr,
            url: Url::parse("https://bot.example.com/telegram/hook").expect("url"),
            secret: secret.to_string(),
        }),
    );
    // Wait until it listens.
    let until = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < until, "the webhook server does not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let set = fake
        .calls()
        .into_iter()
        .find(|c| c.method == "setwebhook")
        .expect("setWebhook was called");
    // (setWebhook can carry a certificate, so teloxide sends it as multipart.)
    assert!(
        set.body.contains("https://bot.example.com/telegram/hook"),
        "{}",
        set.body
    );
    assert!(set.body.contains(secret), "{}", set.body);

    let build = update(30, PRIVATE, "/build dev");
    assert_eq!(post_update(addr, Some("wrong"), &build).await, 401);
    assert_eq!(
        post_update(addr, Some("s3cret-Token_e2f"), &build).await,
        401
    );
    assert_eq!(post_update(addr, None, &build).await, 401);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(jobs(&fx).is_empty(), "no job rows after refused requests");
    assert!(fake.posts_to(PRIVATE).is_empty(), "nothing answered");

    assert_eq!(post_update(addr, Some(secret), &build).await, 200);
    // Telegram retries a delivery it did not see answered: one job still.
    assert_eq!(post_update(addr, Some(secret), &build).await, 200);
    fake.wait_for_post(PRIVATE, "succeeded").await;
    let jobs = wait_until_finished(&fx, 1).await;
    bot.stop().await;
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(jobs[0].state, JobState::Succeeded);
}

// ---- (4) secrets never leave ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_from_an_env_file_appears_in_no_request_log_or_audit_entry() {
    let secret = format!("tg-leak-{}-Zq9", std::process::id());
    let fx = Fixture::new(
        "tg-secret",
        Options {
            dev_yaml: "    env_file: [envs/dev.env]\n".into(),
            ..Options::default()
        },
    )
    .await;
    fx.commit(
        "backend",
        &[("envs/dev.env", Some(&format!("API_TOKEN={secret}\n")))],
        "dev: api token",
    );
    let fake = FakeApi::start().await;
    let bot = RunningBot::start(&fx, &fake, Mode::Polling);
    // The task runs in the deployed worker's image: deploy first.
    fake.push(&[update(39, PRIVATE, "/build dev")]);
    fake.wait_for_post(PRIVATE, "succeeded").await;
    fake.push(&[update(40, PRIVATE, "/run dev leak")]);
    let posts = fake.wait_for_post(PRIVATE, "failed").await;
    let jobs = wait_until_finished(&fx, 2).await;
    let jobs: Vec<Job> = jobs.into_iter().filter(|j| j.verb == "run").collect();
    // And someone pastes the secret into the chat.
    fake.push(&[update(41, PRIVATE, &format!("/lock dev 1h {secret}"))]);
    fake.wait_for_post(PRIVATE, "lock").await;
    bot.stop().await;

    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Failed);
    let store = marvin_core::store::Store::open_in(&fx.data).expect("store");
    let logs = store.logs(jobs[0].id, None).expect("logs");
    assert!(
        logs.iter().any(|l| l.line.contains("API_TOKEN=***")),
        "the task printed its environment, masked: {logs:#?}\n{:?}\n{}",
        jobs[0].error,
        text(posts.last().expect("posts"))
    );
    for l in &logs {
        assert!(!l.line.contains(&secret), "log line leaks: {}", l.line);
    }
    let audit = store.audit_log(&fx.project, 100).expect("audit");
    assert!(audit.len() >= 2, "{audit:#?}");
    for a in &audit {
        let all = format!("{a:?}");
        assert!(!all.contains(&secret), "audit entry leaks: {all}");
    }
    for c in fake.calls() {
        assert!(
            !c.body.contains(&secret),
            "request to the Bot API leaks: {}",
            c.body
        );
    }
    let last = text(posts.last().expect("posts"));
    assert!(
        last.contains("***"),
        "the report shows the masked value: {last}"
    );
}

// ---- (6) the binary's start-up errors ----

/// The `marvin-telegram` binary beside this test binary
/// (`target/<profile>/marvin-telegram`), as `marvin_bin` finds `marvin`:
/// `scripts/test` builds every workspace binary first; alone, run
/// `cargo build -p marvin-telegram` before `cargo test -p marvin-tests`.
/// (Building it from here would rebuild shared dependencies with another
/// feature set while the other tests run.)
fn telegram_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let binary = profile_dir.join(format!("marvin-telegram{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "the `marvin-telegram` binary is not at {}: build it with `cargo build -p marvin-telegram` (scripts/test builds every binary first)",
        binary.display()
    );
    binary
}

fn run_binary(dir: &Path, token: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(telegram_binary());
    cmd.args(args)
        .current_dir(dir)
        .env_remove("MARVIN_CONFIG")
        .env_remove("MARVIN_DATA_DIR")
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("TELEGRAM_WEBHOOK_SECRET")
        .env("TELEGRAM_API_URL", "http://127.0.0.1:9")
        .env("RUST_BACKTRACE", "1");
    if let Some(t) = token {
        cmd.env("TELEGRAM_BOT_TOKEN", t);
    }
    let out = cmd.output().expect("run marvin-telegram");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_refuses_to_start_without_a_token_or_with_a_broken_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("marvin.yml"),
        "project: p\ncompose: docker-compose.yml\nrepos:\n  backend:\n    url: /nowhere\n    pathh: .\n",
    )
    .expect("write marvin.yml");

    let (code, stderr) = run_binary(dir.path(), None, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("TELEGRAM_BOT_TOKEN"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let token = "777:do-not-print-me";
    let (code, stderr) = run_binary(dir.path(), Some(token), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("marvin.yml:6"), "file and line: {stderr}");
    assert!(stderr.contains("pathh"), "names the key: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains(token), "{stderr}");

    let (code, stderr) = run_binary(
        dir.path(),
        Some(token),
        &[
            "--webhook-addr",
            "127.0.0.1:0",
            "--webhook-url",
            "https://x.example/h",
        ],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("TELEGRAM_WEBHOOK_SECRET"), "{stderr}");

    let (code, stdout_or_err) = {
        let out = Command::new(telegram_binary())
            .arg("--help")
            .output()
            .expect("run --help");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0));
    for flag in [
        "--config",
        "--data-dir",
        "--api-url",
        "--webhook-addr",
        "--webhook-url",
        "TELEGRAM_BOT_TOKEN",
    ] {
        assert!(
            stdout_or_err.contains(flag),
            "--help mentions {flag}: {stdout_or_err}"
        );
    }
}

// ---- issue #5: `marvin serve` posts to the environment's Telegram group ----

/// A push-triggered job's report, a monitoring message, and a container
/// killed by hand (one message, and one more when the next build brings it
/// back) all reach dev's group through `marvin serve`'s Telegram front end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_tells_the_environments_group_about_pushes_messages_and_a_killed_container() {
    const HOOK_SECRET: &str = "tg-serve-hook-secret";
    let fx = Fixture::new(
        "tg-serve",
        Options {
            dev_yaml: format!(
                "    channels: [\"telegram:{GROUP}\"]\n    triggers: {{push: true}}\n"
            ),
            top_yaml: "  coalesce_window: 300ms\nwebhooks:\n  secret_env: MARVIN_TG_HOOK_SECRET\n"
                .into(),
            ..Options::default()
        },
    )
    .await;
    let fake = FakeApi::start().await;
    let addr = free_addr();
    let mut command = std::process::Command::new(marvin_tests::marvin_bin());
    command
        .args(["serve", "--listen", &addr.to_string(), "--grace", "5s"])
        .arg("--config")
        .arg(&fx.config)
        .arg("--data-dir")
        .arg(&fx.data)
        .env("TELEGRAM_BOT_TOKEN", TOKEN)
        .env("TELEGRAM_API_URL", &fake.url)
        .env("MARVIN_TG_HOOK_SECRET", HOOK_SECRET)
        .env_remove("SLACK_BOT_TOKEN");
    let _serve = Served::start(command, addr)
        .await
        .unwrap_or_else(|e| panic!("marvin serve: {e}"));
    let http = reqwest::Client::new();

    // A signed push: its job's report goes to the group, sent then edited.
    let commit = common_e2e::git(&fx.root.join("work/backend"), &["rev-parse", "HEAD"]);
    let body = json!({
        "ref": "refs/heads/main", "after": commit,
        "repository": {"full_name": "team/backend",
                       "clone_url": fx.root.join("repos/backend.git").display().to_string()},
    })
    .to_string();
    let status = http
        .post(format!("http://{addr}/hooks/push"))
        .header("x-github-event", "push")
        .header("x-github-delivery", "tg-1")
        .header(
            "x-hub-signature-256",
            marvin_core::webhook::sign(HOOK_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    let posts = fake.wait_for_post(GROUP, "succeeded").await;
    assert!(
        text(posts.last().unwrap()).contains("marvin:push"),
        "{posts:#?}"
    );
    wait_until_finished(&fx, 1).await;

    // A build from the console — another process — is reported there too.
    let console = marvin_tests::run_marvin(
        &fx.root,
        None,
        &[
            "build",
            "dev",
            "--config",
            fx.config.to_str().unwrap(),
            "--data-dir",
            fx.data.to_str().unwrap(),
        ],
    );
    assert!(console.success(), "{console:?}");
    let until = Instant::now() + WAIT;
    while !fake
        .posts_to(GROUP)
        .iter()
        .any(|c| text(c).contains("local:") && text(c).contains("succeeded"))
    {
        assert!(
            Instant::now() < until,
            "the console's job, edited to its summary: {:#?}",
            fake.posts_to(GROUP)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Monitoring posts a signed message.
    let msg = json!({"env": "dev", "text": "disk 91% on db-1"}).to_string();
    let status = http
        .post(format!("http://{addr}/hooks/message"))
        .header(
            "x-marvin-signature",
            marvin_core::webhook::sign(HOOK_SECRET, msg.as_bytes()),
        )
        .body(msg.clone())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    fake.wait_for_post(GROUP, "disk 91% on db-1").await;
    let unsigned = http
        .post(format!("http://{addr}/hooks/message"))
        .body(json!({"env": "dev", "text": "spoofed"}).to_string())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(unsigned, 401);

    // Kill web by hand: exactly one message.
    let labels = std::collections::BTreeMap::from([
        (
            marvin_core::engine::LABEL_PROJECT.to_string(),
            fx.project.clone(),
        ),
        (
            marvin_core::engine::LABEL_ENV.to_string(),
            "dev".to_string(),
        ),
    ]);
    use marvin_core::engine::Engine;
    let web = fx
        .engine
        .list_containers(&labels)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.service == "web")
        .expect("web is deployed");
    let killed = Command::new("docker")
        .args(["kill", &web.id])
        .output()
        .unwrap();
    assert!(killed.status.success(), "{killed:?}");
    fake.wait_for_post(GROUP, "web exited").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let about_web = |needle: &str| {
        fake.posts_to(GROUP)
            .iter()
            .filter(|c| c.method == "sendmessage" && text(c).contains(needle))
            .count()
    };
    assert_eq!(about_web("web exited"), 1, "once per incident");

    // The next build (a command in the group) brings it back: one more message.
    fake.push(&[update(700, GROUP, "/build dev")]);
    fake.wait_for_post(GROUP, "web is running again").await;
    wait_until_finished(&fx, 3).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(about_web("web exited"), 1);
    assert_eq!(about_web("web is running again"), 1);
    let spoofed = fake
        .posts_to(GROUP)
        .iter()
        .filter(|c| text(c).contains("spoofed"))
        .count();
    assert_eq!(spoofed, 0);
}
