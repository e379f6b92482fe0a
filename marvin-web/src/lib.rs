//! The one-button web page (issue #5, docs/commands.md): per environment one
//! button that builds, its live state and its last result; nothing else on
//! the page changes anything.
//!
//! Server-rendered HTML and a little plain JavaScript (no build step). Live
//! updates come over server-sent events (`/events`): each one carries an
//! environment's card re-rendered by the same [`board::card_html`] as the
//! page. A job page (`/jobs/N`) shows the full log, redacted.
//!
//! Sign-in: a per-person token from marvin.yml (`people.web_tokens`, token →
//! name) makes the visitor `web:NAME`, under the same permission rules as
//! chat; the button posts through the same [`Chat`] dispatcher (so it is
//! audited, lock-checked and approval-gated like `@marvin ENV build`).
//! Without sign-in the page is read-only: no button is rendered at all.
//! Sessions live in memory (a restart signs everyone out); the session
//! cookie is `HttpOnly; SameSite=Strict` and every form carries a per-session
//! token, so another site cannot press the button.

pub mod board;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use marvin_core::chat::{Chat, Message, Reply, Tone};
use marvin_core::command;
use marvin_core::runtime::EventKind;
use marvin_core::store::{ApprovalState, JobState};
use marvin_core::triggers::Hub;
use serde::Deserialize;

use board::{Card, Facts, esc};

const COOKIE: &str = "marvin_session";
/// How often every card is re-sent (locks change without job events).
const REFRESH: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Session {
    identity: String,
    csrf: String,
}

struct Inner {
    chat: Chat,
    hub: Option<Hub>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// The most a webhook delivery may weigh.
const MAX_WEBHOOK_BYTES: usize = 1 << 20;

/// The web front end's state. Cheap to clone.
#[derive(Clone)]
pub struct Web {
    inner: Arc<Inner>,
}

impl Web {
    /// The page over a dispatcher (and through it, the runtime and store).
    pub fn new(chat: Chat) -> Web {
        Web {
            inner: Arc::new(Inner {
                chat,
                hub: None,
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The page and the push webhook receiver (`POST /hooks/push`), which
    /// hands deliveries to `hub`.
    pub fn with_hub(chat: Chat, hub: Hub) -> Web {
        Web {
            inner: Arc::new(Inner {
                chat,
                hub: Some(hub),
                sessions: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The routes: `/`, `/login`, `/logout`, `/envs/{env}/build`, `/events`,
    /// `/jobs/{id}`, `/healthz`, and with a hub `/hooks/push`.
    pub fn router(&self) -> Router {
        let hooks = Router::new()
            .route("/hooks/push", post(push_hook))
            .route("/hooks/message", post(message_hook))
            .layer(DefaultBodyLimit::max(MAX_WEBHOOK_BYTES));
        Router::new()
            .merge(hooks)
            .route("/", get(index))
            .route("/login", get(login_form).post(login))
            .route("/logout", post(logout))
            .route("/envs/{env}/build", post(build))
            .route("/events", get(events))
            .route("/jobs/{id}", get(job_page))
            .route("/healthz", get(|| async { "ok" }))
            .with_state(self.clone())
    }

    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie(headers, COOKIE)?;
        self.inner
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&id)
            .cloned()
    }

    fn cards(&self, visitor: Option<&str>, only: Option<&str>) -> Vec<Card> {
        let runtime = self.inner.chat.runtime();
        let project = &runtime.marvin().project;
        let store = runtime.store();
        let now = runtime.now_ms();
        let mut cards = Vec::new();
        for env in &project.environments {
            if only.is_some_and(|o| o != env.name) {
                continue;
            }
            let active = store
                .active_jobs(&project.name, Some(&env.name))
                .unwrap_or_default();
            let awaiting_approval = active
                .iter()
                .find(|j| j.state == JobState::Queued)
                .and_then(|j| store.approval(j.id).ok().flatten())
                .is_some_and(|a| a.state == ApprovalState::Pending);
            let step = active
                .iter()
                .find(|j| j.state == JobState::Running)
                .and_then(|j| store.last_step(j.id).ok().flatten());
            let recent = store
                .jobs(&project.name, Some(&env.name), 20)
                .unwrap_or_default();
            let last_finished = recent.iter().find(|j| j.state.is_finished());
            let lock = store
                .current_lock(&project.name, &env.name, now)
                .ok()
                .flatten();
            let facts = Facts {
                env,
                active: &active,
                awaiting_approval,
                step,
                last_finished,
                lock: lock.as_ref(),
                now_ms: now,
            };
            cards.push(board::card(project, &facts, visitor));
        }
        cards
    }
}

/// A cookie's value from the request headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// 32 random bytes as hex, from the kernel.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;background:#f6f7f9;color:#222}\
header{display:flex;justify-content:space-between;align-items:center}\
.envs{display:grid;grid-template-columns:repeat(auto-fill,minmax(22rem,1fr));gap:1rem}\
.env{background:#fff;border-radius:8px;padding:1rem 1.2rem;box-shadow:0 1px 3px #0002}\
.env h2{margin:.2rem 0}.tag{font-size:.7rem;background:#fde68a;padding:.1rem .4rem;border-radius:4px}\
.state{font-weight:600}.running,.queued,.awaiting-approval{color:#b45309}.succeeded{color:#15803d}\
.failed,.interrupted{color:#b91c1c}.lock{color:#7c3aed}.error{color:#b91c1c;white-space:pre-wrap}\
.commits{font-size:.85rem;padding-left:1rem}button{font-size:1.1rem;padding:.5rem 1.5rem;border-radius:6px;\
border:0;background:#2563eb;color:#fff;cursor:pointer}button[disabled]{background:#9ca3af;cursor:default}\
pre{background:#111;color:#eee;padding:1rem;overflow:auto;font-size:.8rem}#flash{color:#b91c1c}";

const SCRIPT: &str = r#"
const flash = document.getElementById('flash');
const es = new EventSource('/events');
es.onmessage = (e) => {
  const d = JSON.parse(e.data);
  const el = document.getElementById('env-' + d.env);
  if (el) { el.innerHTML = d.html; el.dataset.state = d.state; }
};
document.addEventListener('submit', async (ev) => {
  const f = ev.target;
  if (!f.classList.contains('build')) return;
  ev.preventDefault();
  const b = f.querySelector('button'); if (b) b.disabled = true;
  try {
    const r = await fetch(f.action, {method: 'POST', body: new URLSearchParams(new FormData(f)),
                                     headers: {'X-Requested-With': 'fetch'}});
    const d = await r.json();
    flash.textContent = d.error || '';
  } catch (err) { flash.textContent = 'Marvin did not answer: ' + err; }
});
"#;

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    ))
}

async fn index(State(web): State<Web>, headers: HeaderMap) -> Html<String> {
    let session = web.session(&headers);
    let visitor = session.as_ref().map(|s| s.identity.as_str());
    let csrf = session.as_ref().map(|s| s.csrf.as_str());
    let runtime = web.inner.chat.runtime();
    let project = &runtime.marvin().project.name;
    let now = runtime.now_ms();
    let who = match &session {
        Some(s) => format!(
            "<span id=\"who\">{}</span> <form method=\"post\" action=\"/logout\" style=\"display:inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"submit\" value=\"sign out\"></form>",
            esc(&s.identity),
            esc(&s.csrf)
        ),
        None => "<a id=\"signin\" href=\"/login\">sign in</a> to build".to_string(),
    };
    let mut body = format!(
        "<header><h1>{} — Marvin</h1><div>{who}</div></header><p id=\"flash\"></p><main class=\"envs\">",
        esc(project)
    );
    for card in web.cards(visitor, None) {
        body.push_str(&format!(
            "<section class=\"env\" id=\"env-{}\" data-state=\"{}\">{}</section>",
            esc(&card.env),
            esc(&board::state_word(&card)),
            board::card_html(&card, csrf, now)
        ));
    }
    body.push_str(&format!("</main><script>{SCRIPT}</script>"));
    page(&format!("{project} — Marvin"), &body)
}

async fn login_form(State(web): State<Web>) -> Html<String> {
    let project = &web.inner.chat.runtime().marvin().project.name;
    page(
        "Sign in — Marvin",
        &format!(
            "<h1>{} — sign in</h1><form method=\"post\" action=\"/login\">\
             <label>Your token <input type=\"password\" name=\"token\" id=\"token\" autofocus></label> \
             <button type=\"submit\" id=\"signin-button\">Sign in</button></form>\
             <p>Tokens are given by an admin in marvin.yml (<code>people.web_tokens</code>).</p>",
            esc(project)
        ),
    )
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(web): State<Web>, Form(form): Form<LoginForm>) -> Response {
    let project = &web.inner.chat.runtime().marvin().project;
    let name = project
        .people
        .web_tokens
        .iter()
        .filter(|(token, _)| same(token.as_bytes(), form.token.trim().as_bytes()))
        .map(|(_, name)| name.clone())
        .next_back();
    let Some(name) = name else {
        tracing::warn!("web sign-in refused: unknown token");
        return (
            StatusCode::UNAUTHORIZED,
            page(
                "Sign in — Marvin",
                "<h1>Sign in</h1><p id=\"flash\">That token is not known; ask an admin for yours.</p>\
                 <p><a href=\"/login\">try again</a></p>",
            ),
        )
            .into_response();
    };
    let id = random_token();
    web.inner.sessions.lock().expect("sessions lock").insert(
        id.clone(),
        Session {
            identity: format!("web:{name}"),
            csrf: random_token(),
        },
    );
    let mut response = Redirect::to("/").into_response();
    let cookie = format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a hex cookie is a valid header"),
    );
    response
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(web): State<Web>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(id) = cookie(&headers, COOKIE) {
        let mut sessions = web.inner.sessions.lock().expect("sessions lock");
        if sessions
            .get(&id)
            .is_some_and(|s| same(s.csrf.as_bytes(), form.csrf.as_bytes()))
        {
            sessions.remove(&id);
        }
    }
    let mut response = Redirect::to("/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("marvin_session=; Max-Age=0; Path=/"),
    );
    response
}

async fn build(
    State(web): State<Web>,
    Path(env): Path<String>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let by_script = headers.get("x-requested-with").is_some();
    let answer = |status: StatusCode, job: Option<i64>, error: Option<String>| -> Response {
        if by_script {
            (
                status,
                Json(serde_json::json!({ "job": job, "error": error })),
            )
                .into_response()
        } else if let Some(e) = error {
            (
                status,
                page(
                    "Marvin",
                    &format!(
                        "<p id=\"flash\">{}</p><p><a href=\"/\">back</a></p>",
                        esc(&e)
                    ),
                ),
            )
                .into_response()
        } else {
            Redirect::to("/").into_response()
        }
    };
    let Some(session) = web.session(&headers) else {
        return answer(
            StatusCode::UNAUTHORIZED,
            None,
            Some("sign in to build".into()),
        );
    };
    if !same(session.csrf.as_bytes(), form.csrf.as_bytes()) {
        tracing::warn!("web build refused: bad form token for {}", session.identity);
        return answer(
            StatusCode::FORBIDDEN,
            None,
            Some("this form is stale; reload the page".into()),
        );
    }
    // The path names an environment (or an alias), nothing else: a path
    // like `/envs/help/build` is not a way to type another command.
    let project = &web.inner.chat.runtime().marvin().project;
    let env = match project.environment(&env) {
        Ok(e) => e.name.clone(),
        Err(e) => return answer(StatusCode::NOT_FOUND, None, Some(e.to_string())),
    };
    let message = Message {
        identity: session.identity.clone(),
        channel: "web".into(),
        text: format!("{} build", command::quote(&env)),
        bot: None,
    };
    match web.inner.chat.handle(&message).await {
        Reply::Job(follow) => answer(StatusCode::ACCEPTED, Some(follow.job), None),
        Reply::Answer(a) => {
            let status = match a.tone {
                Tone::Info => StatusCode::OK,
                Tone::Refused => StatusCode::FORBIDDEN,
                Tone::Error => StatusCode::INTERNAL_SERVER_ERROR,
            };
            answer(status, None, Some(a.text))
        }
        Reply::Ignored => answer(StatusCode::BAD_REQUEST, None, Some("ignored".into())),
    }
}

fn card_event(card: &Card, csrf: Option<&str>, now: i64) -> Event {
    let data = serde_json::json!({
        "env": card.env,
        "state": board::state_word(card),
        "html": board::card_html(card, csrf, now),
    });
    Event::default().data(data.to_string())
}

async fn events(
    State(web): State<Web>,
    headers: HeaderMap,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let session = web.session(&headers);
    let rx = web.inner.chat.runtime().subscribe();
    // First every card; then a card whenever its environment's job moves,
    // and every card every few seconds (locks change without job events).
    let state = (web, session, rx, Vec::<Event>::new(), true);
    let stream = futures_util::stream::unfold(
        state,
        |(web, session, mut rx, mut queue, first)| async move {
            let visitor = session.as_ref().map(|s| s.identity.clone());
            let csrf = session.as_ref().map(|s| s.csrf.clone());
            let now = || web.inner.chat.runtime().now_ms();
            if first {
                queue = web
                    .cards(visitor.as_deref(), None)
                    .iter()
                    .map(|c| card_event(c, csrf.as_deref(), now()))
                    .collect();
            }
            while queue.is_empty() {
                let only = tokio::select! {
                    event = rx.recv() => match event {
                        Ok(e) if matches!(e.kind, EventKind::Log { .. }) => continue,
                        Ok(e) => Some(e.env),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    },
                    _ = tokio::time::sleep(REFRESH) => None,
                };
                queue = web
                    .cards(visitor.as_deref(), only.as_deref())
                    .iter()
                    .map(|c| card_event(c, csrf.as_deref(), now()))
                    .collect();
            }
            let next = queue.remove(0);
            Some((Ok(next), (web, session, rx, queue, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn job_page(State(web): State<Web>, Path(id): Path<String>) -> Response {
    let runtime = web.inner.chat.runtime();
    let project = &runtime.marvin().project.name;
    let job = id
        .trim_start_matches('#')
        .parse::<i64>()
        .ok()
        .and_then(|id| runtime.store().job(id).ok().flatten())
        .filter(|j| &j.project == project);
    let Some(job) = job else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "Marvin",
                "<p>There is no such job. <a href=\"/\">back</a></p>",
            ),
        )
            .into_response();
    };
    let redactor = runtime.redactor();
    let lines = runtime.store().logs(job.id, None).unwrap_or_default();
    let log: Vec<String> = lines
        .iter()
        .map(|l| esc(&redactor.redact(&format!("[{}] {}", l.stream, l.line))))
        .collect();
    let what = esc(&redactor.redact(&format!("{} {}", job.verb, job.args.join(" "))));
    let error = job
        .error
        .as_deref()
        .map(|e| format!("<p class=\"error\">{}</p>", esc(&redactor.redact(e))))
        .unwrap_or_default();
    let body = format!(
        "<p><a href=\"/\">← {project}</a></p><h1>{env} {what} #{id}</h1>\
         <p class=\"state {state}\" id=\"job-state\">{state}</p><p>{who}, from {origin}</p>{error}<pre id=\"log\">{log}</pre>",
        project = esc(project),
        env = esc(&job.env),
        id = job.id,
        state = job.state.as_str(),
        who = esc(&job.who),
        origin = esc(&job.origin),
        log = log.join("\n"),
    );
    page(&format!("#{} — Marvin", job.id), &body).into_response()
}

fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// `POST /hooks/message`: another system (monitoring, CI) posts a message
/// into an environment's channels: body `{"env", "text"}`, signed with
/// `X-Marvin-Signature: sha256=<HMAC>` and the project's webhook secret.
async fn message_hook(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hub) = &web.inner.hub else {
        return (StatusCode::NOT_FOUND, "messages are not enabled here").into_response();
    };
    let pairs = header_pairs(&headers);
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match hub.message(&pairs, &body) {
        Ok(env) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "env": env })),
        )
            .into_response(),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            tracing::warn!("message refused ({status}): {e}");
            (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}

/// `POST /hooks/push`: a git host's push webhook (GitHub, GitLab, Gitea,
/// Gogs, or Marvin's generic signed form). 202 with the environments that
/// will build; otherwise the status of the refusal (401 unsigned or wrongly
/// signed or replayed, 404 unknown repo, 400 malformed), logged, and nothing
/// started.
async fn push_hook(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(hub) = &web.inner.hub else {
        return (StatusCode::NOT_FOUND, "webhooks are not enabled here").into_response();
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect();
    let pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    match hub.push(&pairs, &body) {
        Ok(accepted) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "repo": accepted.push.repo_shown(),
                "branch": accepted.push.branch,
                "environments": accepted.environments,
            })),
        )
            .into_response(),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            if e.is_ignored() {
                tracing::info!("webhook ignored: {e}");
            } else {
                tracing::warn!("webhook refused ({status}): {e}");
            }
            (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
