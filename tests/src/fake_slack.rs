//! A fake Slack on 127.0.0.1 for the Slack front end's tests and benchmark:
//! the Web API methods Marvin calls (`auth.test`, `apps.connections.open`,
//! `chat.postMessage`, `chat.update`), a Socket Mode websocket that sends
//! `events_api` envelopes and records their acknowledgements, and a small
//! HTTP client for signed Events API requests. Everything received is kept
//! for the test to check.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::IntoResponse;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// The bot's user id the fake's `auth.test` answers.
pub const BOT_USER: &str = "UBOT";

/// One Web API call the fake received.
#[derive(Debug, Clone)]
pub struct ApiCall {
    /// `chat.postMessage`, `chat.update`, …
    pub method: String,
    /// The raw request body (and query string, if any).
    pub body: String,
    /// The body as JSON (`Null` if it was not JSON).
    pub json: Value,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<ApiCall>>,
    acks: Mutex<Vec<(String, Instant)>>,
    /// Every websocket frame received, raw.
    frames: Mutex<Vec<String>>,
    sockets: Mutex<Vec<mpsc::UnboundedSender<String>>>,
    changed: Notify,
    next_ts: AtomicU64,
    ws_url: Mutex<String>,
}

/// The running fake; stops when dropped.
pub struct FakeSlack {
    /// The Web API base URL (`http://127.0.0.1:PORT/api`).
    pub api_url: String,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeSlack {
    /// Start the fake (Web API and websocket) on two free ports of 127.0.0.1.
    pub async fn start() -> FakeSlack {
        let shared = Arc::new(Shared::default());
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Web API");
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake websocket");
        let api_url = format!(
            "http://{}/api",
            http.local_addr().expect("the fake's address")
        );
        *shared.ws_url.lock().unwrap() =
            format!("ws://{}/link", ws.local_addr().expect("the fake's address"));
        let app = Router::new()
            .route("/api/{method}", axum::routing::any(web_api))
            .with_state(shared.clone());
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http, app).await;
        });
        let ws_shared = shared.clone();
        let ws_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = ws.accept().await else {
                    break;
                };
                let shared = ws_shared.clone();
                tokio::spawn(serve_socket(stream, shared));
            }
        });
        FakeSlack {
            api_url,
            shared,
            tasks: vec![http_task, ws_task],
        }
    }

    /// Every Web API call so far.
    pub fn calls(&self) -> Vec<ApiCall> {
        self.shared.calls.lock().unwrap().clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<ApiCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// The envelope ids acknowledged over the websocket.
    pub fn acks(&self) -> Vec<String> {
        self.shared
            .acks
            .lock()
            .unwrap()
            .iter()
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Forget the calls and acknowledgements so far.
    pub fn clear(&self) {
        self.shared.calls.lock().unwrap().clear();
        self.shared.acks.lock().unwrap().clear();
    }

    /// Wait until `check` holds over the calls, or panic after `within` with what arrived.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&[ApiCall]) -> bool,
    ) -> Vec<ApiCall> {
        let until = Instant::now() + within;
        loop {
            let notified = self.shared.changed.notified();
            let calls = self.calls();
            if check(&calls) {
                return calls;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let shown: Vec<String> = calls
                    .iter()
                    .map(|c| format!("{} {}", c.method, c.body))
                    .collect();
                panic!(
                    "timed out waiting for {what}; the fake received:\n{}",
                    shown.join("\n")
                );
            }
            let _ = tokio::time::timeout(left.min(Duration::from_millis(200)), notified).await;
        }
    }

    /// Wait until a Socket Mode client is connected.
    pub async fn wait_connected(&self, within: Duration) {
        let until = Instant::now() + within;
        while self.shared.sockets.lock().unwrap().is_empty() {
            assert!(
                Instant::now() < until,
                "no Socket Mode client connected within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until the envelope `id` is acknowledged.
    pub async fn wait_ack(&self, id: &str, within: Duration) {
        let until = Instant::now() + within;
        while !self.acks().iter().any(|a| a == id) {
            assert!(
                Instant::now() < until,
                "envelope {id} was not acknowledged within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Send a Socket Mode frame to the newest connected client; when it was sent.
    pub fn send_frame(&self, frame: String) -> Instant {
        let sockets = self.shared.sockets.lock().unwrap();
        let socket = sockets.last().expect("a Socket Mode client is connected");
        let at = Instant::now();
        socket.send(frame).expect("the websocket is open");
        at
    }

    /// Every websocket frame received from the client.
    pub fn frames(&self) -> Vec<String> {
        self.shared.frames.lock().unwrap().clone()
    }
}

/// An `event_callback` payload, as Slack sends it over HTTP and inside envelopes.
pub fn event_callback(event_id: &str, event: Value) -> Value {
    json!({
        "token": "verification-token-unused",
        "team_id": "T1",
        "api_app_id": "A1",
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1_700_000_000,
        "authed_users": [BOT_USER],
        "event": event,
    })
}

/// An `app_mention` event from `user` in `channel`.
pub fn mention(user: &str, channel: &str, text: &str) -> Value {
    json!({
        "type": "app_mention", "user": user, "channel": channel, "text": text,
        "ts": "1700000000.000100", "event_ts": "1700000000.000100"
    })
}

/// A direct message from `user`.
pub fn direct_message(user: &str, channel: &str, text: &str) -> Value {
    json!({
        "type": "message", "channel_type": "im", "user": user, "channel": channel,
        "text": text, "ts": "1700000000.000200", "event_ts": "1700000000.000200"
    })
}

/// A Socket Mode `events_api` envelope around an event callback.
pub fn envelope(envelope_id: &str, payload: Value) -> String {
    json!({
        "envelope_id": envelope_id,
        "type": "events_api",
        "accepts_response_payload": false,
        "retry_attempt": 0,
        "retry_reason": "",
        "payload": payload,
    })
    .to_string()
}

async fn web_api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> impl IntoResponse {
    let text = String::from_utf8_lossy(&body).into_owned();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recorded = match &query {
        Some(q) if !q.is_empty() => format!("{text}?{q}"),
        _ => text,
    };
    let answer = match method.as_str() {
        "auth.test" => json!({
            "ok": true, "url": "https://marvin-test.slack.com/", "team": "Marvin Test",
            "user": "marvin", "team_id": "T1", "user_id": BOT_USER, "bot_id": "BBOT"
        }),
        "apps.connections.open" => json!({ "ok": true, "url": *shared.ws_url.lock().unwrap() }),
        "chat.postMessage" => {
            let n = shared.next_ts.fetch_add(1, Ordering::Relaxed) + 1;
            let ts = format!("1700000001.{n:06}");
            json!({
                "ok": true, "channel": json_body["channel"], "ts": ts,
                "message": { "type": "message", "text": json_body["text"], "user": BOT_USER,
                             "bot_id": "BBOT", "ts": ts }
            })
        }
        "chat.update" => json!({
            "ok": true, "channel": json_body["channel"], "ts": json_body["ts"],
            "text": json_body["text"],
            "message": { "text": json_body["text"], "user": BOT_USER, "bot_id": "BBOT" }
        }),
        _ => json!({ "ok": false, "error": "unknown_method" }),
    };
    shared.calls.lock().unwrap().push(ApiCall {
        method,
        body: recorded,
        json: json_body,
        at: Instant::now(),
    });
    shared.changed.notify_waiters();
    axum::Json(answer)
}

async fn serve_socket(stream: tokio::net::TcpStream, shared: Arc<Shared>) {
    let Ok(socket) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut write, mut read) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let hello = json!({
        "type": "hello", "num_connections": 1,
        "connection_info": { "app_id": "A1" },
        "debug_info": { "host": "fake-slack", "approximate_connection_time": 18060 }
    });
    if write
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    shared.sockets.lock().unwrap().push(tx);
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write.send(WsMessage::Text(frame.into())).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = read.next().await {
        if let WsMessage::Text(text) = message {
            let at = Instant::now();
            let text = text.to_string();
            if let Ok(v) = serde_json::from_str::<Value>(&text)
                && let Some(id) = v["envelope_id"].as_str()
            {
                shared.acks.lock().unwrap().push((id.to_string(), at));
            }
            shared.frames.lock().unwrap().push(text);
            shared.changed.notify_waiters();
        }
    }
    writer.abort();
}

/// POST a raw Events API request to `addr` with these headers; the HTTP
/// status and body.
pub async fn post_event(addr: SocketAddr, body: &str, headers: &[(&str, String)]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the Events API listener");
    let mut request = format!(
        "POST /slack/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The headers of a request Slack signed with `secret` at `timestamp`.
pub fn signed_headers(secret: &str, timestamp: i64, body: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Slack-Request-Timestamp", timestamp.to_string()),
        (
            "X-Slack-Signature",
            marvin_slack::signature::sign(secret.as_bytes(), timestamp, body.as_bytes()),
        ),
    ]
}
