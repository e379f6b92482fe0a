//! The one-button web page end to end (issue #5): the real page served by
//! marvin-web over a real runtime on the real Docker engine, driven by
//! Debian's Chromium through chromedriver over WebDriver. A person signs in,
//! presses dev's button, and sees the state go to running and then
//! succeeded; a screenshot of the page is saved as a test artifact. Plus the
//! HTTP rules a browser does not show: no session, a stale form, a viewer.

mod common_e2e;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common_e2e::{Fixture, Options};
use marvin_core::chat::Chat;
use serde_json::{Value, json};

const PEOPLE: &str = "people:
  default_role: viewer
  developers: [\"web:dan\"]
  web_tokens:
    tok-dan-0123456789: dan
    tok-vic-0123456789: vic
";

/// marvin-web on 127.0.0.1 over the fixture's project; returns its address.
async fn serve(fx: &Fixture) -> (SocketAddr, Chat) {
    let chat = Chat::new(fx.runtime());
    let web = marvin_web::Web::new(chat.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, web.router()).await });
    (addr, chat)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Sign in over HTTP; returns the session cookie and the page's form token.
async fn sign_in(addr: SocketAddr, token: &str) -> (String, String) {
    let http = client();
    let r = http
        .post(format!("http://{addr}/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed in and sent to the page");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = http
        .get(format!("http://{addr}/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or("")
        .to_string();
    (cookie, csrf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_refuses_what_a_visitor_may_not_do() {
    let fx = Fixture::new(
        "web-http",
        Options {
            top_yaml: PEOPLE.into(),
            ..Options::default()
        },
    )
    .await;
    let (addr, chat) = serve(&fx).await;
    let http = client();

    // Read-only without sign-in: state, no button, no form.
    let page = http.get(format!("http://{addr}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("id=\"env-dev\""), "{page}");
    assert!(
        !page.contains("<button") && !page.contains("action=\"/envs/"),
        "{page}"
    );

    // Pressing anyway: refused, nothing starts.
    let r = http
        .post(format!("http://{addr}/envs/dev/build"))
        .header("x-requested-with", "fetch")
        .form(&[("csrf", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // A wrong token does not sign in.
    let r = http
        .post(format!("http://{addr}/login"))
        .form(&[("token", "tok-dan-012345678")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    // Signed in, but a stale form token (another site's form): refused.
    let (cookie, csrf) = sign_in(addr, "tok-dan-0123456789").await;
    assert!(!csrf.is_empty());
    let r = http
        .post(format!("http://{addr}/envs/dev/build"))
        .header("cookie", &cookie)
        .header("x-requested-with", "fetch")
        .form(&[("csrf", "not-the-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A viewer signs in and still sees no button; pressing is refused and audited.
    let (vic, vic_csrf) = sign_in(addr, "tok-vic-0123456789").await;
    let page = http
        .get(format!("http://{addr}/"))
        .header("cookie", &vic)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("web:vic") && !page.contains("<button"),
        "{page}"
    );
    let r = http
        .post(format!("http://{addr}/envs/dev/build"))
        .header("cookie", &vic)
        .header("x-requested-with", "fetch")
        .form(&[("csrf", vic_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("viewer"), "{body}");
    // An environment that does not exist, through the path: an answer, not a crash.
    let (_, dan_csrf) = (cookie.clone(), csrf.clone());
    let r = http
        .post(format!("http://{addr}/envs/..%2F..%2Fetc/build"))
        .header("cookie", &cookie)
        .header("x-requested-with", "fetch")
        .form(&[("csrf", dan_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Nor is the path a way to type another command.
    let r = http
        .post(format!("http://{addr}/envs/help/build"))
        .header("cookie", &cookie)
        .header("x-requested-with", "fetch")
        .form(&[("csrf", dan_csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unknown environment"),
        "{body}"
    );

    let store = chat.runtime().store();
    assert!(store.jobs(&fx.project, None, 10).unwrap().is_empty());
    let audit = store.audit_log(&fx.project, 10).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.who == "web:vic" && e.decision == "denied" && e.origin == "web"),
        "{audit:#?}"
    );
    let unknown = http
        .get(format!("http://{addr}/jobs/999"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver (apt-get install chromium chromium-driver; scripts/setup does)");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("{}/status", driver.url)).await
            && r.status().is_success()
        {
            return driver;
        }
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A WebDriver session (W3C protocol, plain JSON over HTTP).
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn new(driver: &Driver) -> Browser {
        let http = client();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/lib/chromium/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,900"]
            }
        }}});
        let r: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser {
            http,
            base: format!("{}/session/{id}", driver.url),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e.as_object()?.values().next()?.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Wait (at most 20 s) until an element matching `css` is on the page,
    /// e.g. after a click that submits a form and loads the next page.
    async fn wait_for(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.find_all(css).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "no element {css} on the page after 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn find(&self, css: &str) -> String {
        let found = self.find_all(css).await;
        found
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element {css} on the page"))
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    async fn attribute(&self, css: &str, name: &str) -> Option<String> {
        let e = self.find_all(css).await.into_iter().next()?;
        self.call(
            reqwest::Method::GET,
            &format!("/element/{e}/attribute/{name}"),
            None,
        )
        .await
        .as_str()
        .map(str::to_owned)
    }

    async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64_decode(b64.as_str().expect("a base64 PNG"))
    }

    async fn quit(self) {
        let _ = self.http.delete(&self.base).send().await;
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b" \n\r=".contains(b)).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_presses_dev_and_sees_it_run_and_succeed_in_chromium() {
    let fx = Fixture::new(
        "web-browser",
        Options {
            top_yaml: PEOPLE.into(),
            ..Options::default()
        },
    )
    .await;
    let (addr, chat) = serve(&fx).await;
    let driver = start_driver().await;
    let browser = Browser::new(&driver).await;

    // Read-only first: no button that does anything.
    browser.go(&format!("http://{addr}/")).await;
    assert!(browser.find_all("button").await.is_empty());
    assert!(browser.find_all("form[action^='/envs/']").await.is_empty());
    assert_eq!(
        browser.attribute("#env-dev", "data-state").await.as_deref(),
        Some("idle")
    );

    // Sign in with dan's token.
    browser.click("#signin").await;
    browser.wait_for("#token").await;
    browser.type_into("#token", "tok-dan-0123456789").await;
    browser.click("#signin-button").await;
    // The click submits the form; the signed-in page loads after it.
    browser.wait_for("#who").await;
    assert_eq!(browser.text("#who").await, "web:dan");

    // Press dev's button; watch the card change live (server-sent events).
    browser.click("#build-dev").await;
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Some(state) = browser.attribute("#env-dev", "data-state").await
            && seen.last() != Some(&state)
        {
            seen.push(state.clone());
            if state == "succeeded" || state == "failed" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "dev did not finish; states seen: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.iter().any(|s| s.starts_with("running")),
        "running was shown: {seen:?}"
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("succeeded"),
        "{seen:?}"
    );
    let card = browser.text("#env-dev").await;
    assert!(card.contains("build") && card.contains("web:dan"), "{card}");
    assert!(
        card.contains("backend") && card.contains("frontend"),
        "commits shown: {card}"
    );

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web_e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("dev-succeeded.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", shot.display(), png.len());

    // The job page shows the full log.
    browser.click("#env-dev .last a").await;
    browser.wait_for("#job-state").await;
    assert_eq!(browser.text("#job-state").await, "succeeded");
    assert!(browser.text("#log").await.contains("== deploy"));
    browser.quit().await;

    let jobs = chat.runtime().store().jobs(&fx.project, None, 10).unwrap();
    assert_eq!(jobs.len(), 1, "one press, one job");
    assert_eq!(jobs[0].who, "web:dan");
    assert_eq!(jobs[0].origin, "web");
}
