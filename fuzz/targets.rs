//! The bodies of Marvin's fuzz targets, one plain function per target.
//!
//! Used twice: by the `fuzz_target!` wrappers in `fuzz/fuzz_targets/` (built
//! by `cargo fuzz`, run by `scripts/fuzz`), and by the ordinary test
//! `tests/tests/fuzz_regressions.rs`, which replays every file under
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` through the same
//! function, so a crash once found stays fixed.
//!
//! Each body feeds outside input to the parser exactly as the edge does, and
//! asserts the invariants that are cheap to check, not only "no panic".

use std::collections::BTreeMap;

use marvin_core::command::{self, Context};
use marvin_core::compose;
use marvin_core::config::Project;
use marvin_core::dockerfile;
use marvin_core::redact::Redactor;
use marvin_core::webhook::{self, DeliverySeen, SecretScope, WebhookSecrets};

/// The names of the targets, as `cargo fuzz` and the directories know them.
pub const TARGETS: [&str; 6] = [
    "marvin_yml",
    "compose",
    "command",
    "webhook",
    "slack",
    "telegram",
];

/// Run `target`'s body on `data`; `false` for an unknown target name.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "marvin_yml" => marvin_yml(data),
        "compose" => compose(data),
        "command" => command(data),
        "webhook" => webhook(data),
        "slack" => slack(data),
        "telegram" => telegram(data),
        _ => return false,
    }
    true
}

/// The project the command and webhook targets parse against.
const PROJECT: &str = r#"
project: shop
repos:
  backend:
    url: git@GitHub.com:jsxf/CloudMatrix.git
  frontend:
    url: https://gitlab.example.com/web/shop/frontend.git
    path: fe
  tools:
    url: ssh://git@gitea.example.com:2222/ops/tools
    path: tools
    webhook_secret_env: TOOLS_HOOK_SECRET
  local:
    url: /srv/git/local.git
    path: local
webhooks:
  secret_env: MARVIN_WEBHOOK_SECRET
environments:
  develop:
    aliases: [dev]
    branch: develop
    branches: {frontend: dev}
    triggers: {push: true}
    channels: ["slack:C024BE91L", "telegram:-1001234567"]
  qa: {branch: develop, triggers: {push: true}, channels: ["slack:CSHARED"]}
  staging: {branch: develop, channels: ["slack:CSHARED"]}
  prod: {branch: main, protected: true, triggers: {push: true}}
tasks:
  migrate:
    service: api
    command: ["migrate", "--up"]
people:
  admins: ["slack:U0ADMIN"]
"#;

fn project() -> Project {
    Project::parse(PROJECT, "marvin.yml").expect("the fuzz project parses")
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

// ---- marvin.yml ----

/// marvin.yml: [`Project::parse`], then the look-ups every front end makes.
pub fn marvin_yml(data: &[u8]) {
    let text = text(data);
    let project = match Project::parse(&text, "marvin.yml") {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty(), "an error says what is wrong");
            return;
        }
    };
    let names: Vec<String> = project
        .environment_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    for env in &project.environments {
        let found = project
            .environment(&env.name)
            .expect("an environment is found by its own name");
        assert_eq!(found.name, env.name);
        for alias in &env.aliases {
            // An alias finds its environment (or is refused at parse time).
            let by_alias = project
                .environment(alias)
                .expect("an alias is found once the file parsed");
            assert_eq!(
                by_alias.name, env.name,
                "alias `{alias}` finds its own environment"
            );
        }
        for channel in &env.channels {
            assert!(
                project
                    .environments_of_channel(channel)
                    .iter()
                    .any(|e| e.name == env.name),
                "a channel bound to `{}` lists it",
                env.name
            );
        }
        for repo in &project.repos {
            let _ = env.branch_for(&repo.name);
        }
    }
    assert!(names.iter().all(|n| !n.is_empty()));
    for repo in &project.repos {
        assert_eq!(
            project.repo(&repo.name).expect("a repo by its name").name,
            repo.name
        );
    }
    for (name, task) in &project.tasks {
        assert_eq!(&project.task(name).expect("a task by its name").name, name);
        assert_eq!(&task.name, name);
    }
    let _ = project.role_of("slack:U0ADMIN");
}

// ---- compose files and Dockerfiles ----

const SECRET_VALUE: &str = "s3cr3t-fuzz-value";

fn compose_vars() -> BTreeMap<String, String> {
    [
        ("API_VERSION", "1.0"),
        ("LOG_LEVEL", "debug"),
        ("GREETING", "hello"),
        ("EMPTY", ""),
        ("PORT", "8080"),
        ("DB_PASSWORD", SECRET_VALUE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A compose template (and the same text as a Dockerfile, as a build reads
/// it from the repo): every step of [`compose::render`] on its own, then the
/// whole; the Dockerfile reader; and redaction of the text.
pub fn compose(data: &[u8]) {
    let text = text(data);
    let file = "docker-compose.yml";
    let vars = compose_vars();

    // The steps one by one, so an error in an early one does not hide the later ones.
    if let Ok(filled) = compose::template(&text, file, &vars) {
        // Text without `{{` is copied unchanged.
        if !text.contains("{{") {
            assert_eq!(filled, text);
        }
        if let Ok(mut doc) = compose::parse(&filled, file)
            && compose::interpolate(&mut doc, file, &vars).is_ok()
            && let Ok((doc, format)) = compose::normalize(doc, file)
            && compose::validate(&doc, file, format).is_ok()
        {
            let _ = compose::model(&doc, file, format, &vars);
        }
    }
    match compose::render(&text, file, &vars) {
        Ok(c) => {
            for (name, service) in &c.services {
                assert!(!name.is_empty(), "a service has a name");
                let _ = service;
            }
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an error says what is wrong"),
    }
    let _ = compose::interpolate_str(&text, &vars);
    let _ = compose::split_words(&text);
    for line in text.lines().take(16) {
        let _ = compose::parse_port(line);
        let _ = compose::Size::parse(line);
    }

    // The same text as a Dockerfile.
    let froms = dockerfile::from_images(&text, &vars);
    let replace: BTreeMap<String, String> = froms
        .iter()
        .map(|f| (f.image.clone(), "marvin/built:1".to_string()))
        .collect();
    let rewritten = dockerfile::rewrite_from(&text, &vars, &replace);
    if replace.is_empty() {
        assert_eq!(rewritten, text, "nothing to replace leaves the text alone");
    }
    let labels: BTreeMap<String, String> = [("marvin.job".to_string(), "42".to_string())].into();
    if let Some(labelled) = dockerfile::with_labels(&text, &labels) {
        assert!(labelled.starts_with(text.trim_end()) || labelled.contains("LABEL"));
    }

    // Redaction: no secret survives, and redacting twice changes nothing.
    let redactor = Redactor::new([
        SECRET_VALUE.to_string(),
        text.lines().next().unwrap_or("").to_string(),
    ]);
    let once = redactor.redact(&text).into_owned();
    assert!(!once.contains(SECRET_VALUE), "a secret survived redaction");
    let twice = redactor.redact(&once).into_owned();
    assert_eq!(twice, once, "redaction is idempotent");
    let mut json = serde_json::json!({ "log": text, "k": [text.clone()] });
    redactor.redact_json(&mut json);
    assert!(
        !json.to_string().contains(SECRET_VALUE),
        "a secret survived JSON redaction"
    );
}

// ---- chat commands ----

/// The chat grammar: [`command::parse`] in every kind of context; a parsed
/// command's canonical text parses back to the same command.
pub fn command(data: &[u8]) {
    let text = text(data);
    let project = project();
    let services = vec!["api".to_string(), "web".to_string(), "db".to_string()];
    let mut contexts = vec![
        Context::new(&project),
        Context::for_channel(&project, "slack:C024BE91L"),
        Context::for_channel(&project, "slack:CSHARED"),
        Context::for_channel(&project, "telegram:-1001234567"),
    ];
    let mut with_bot = Context::for_channel(&project, "telegram:-1001234567");
    with_bot.bot = Some("marvinbot".into());
    with_bot.services = Some(services.clone());
    contexts.push(with_bot);
    for ctx in &contexts {
        match command::parse(&text, ctx) {
            Ok(cmd) => {
                let canonical = cmd.to_text();
                let mut plain = Context::new(&project);
                plain.services = ctx.services.clone();
                let again = command::parse(&canonical, &plain);
                assert_eq!(
                    again.as_ref(),
                    Ok(&cmd),
                    "`{text}` parsed to {cmd:?}, whose text `{canonical}` parses to {again:?}"
                );
                if let command::Verb::Help { verb } = &cmd.verb {
                    assert!(!command::help_text(verb.as_deref()).is_empty());
                }
            }
            Err(e) => assert!(!e.to_string().is_empty(), "an error says what is wrong"),
        }
    }
}

// ---- push webhooks ----

const HOOK_SECRET: &str = "fuzz-project-hook-secret";
const REPO_HOOK_SECRET: &str = "fuzz-tools-hook-secret";

/// Push webhooks from every sender. Input: byte 0 picks the sender and how
/// the delivery is signed (validly with the project's secret, validly with
/// the `tools` repo's secret, with a value from the input, or not at all);
/// byte 1 picks the event header; the rest is `VALUE \0 DELIVERY-ID \0 BODY`.
/// A valid signature lets the fuzzer reach the JSON reading behind it.
pub fn webhook(data: &[u8]) {
    let (Some(&pick), Some(&event_pick)) = (data.first(), data.get(1)) else {
        return;
    };
    let mut fields = data[2..].splitn(3, |b| *b == 0);
    let value = text(fields.next().unwrap_or_default());
    let delivery = fields.next().map(text);
    let body = fields.next().unwrap_or_default();

    let senders = [
        ("X-GitHub-Event", "X-Hub-Signature-256", "X-GitHub-Delivery"),
        ("X-Gitlab-Event", "X-Gitlab-Token", "X-Gitlab-Event-UUID"),
        ("X-Gitea-Event", "X-Gitea-Signature", "X-Gitea-Delivery"),
        ("X-Gogs-Event", "X-Gogs-Signature", "X-Gogs-Delivery"),
        ("", "X-Marvin-Signature", "X-Marvin-Delivery"),
    ];
    let sender = usize::from(pick % 5);
    let (event_header, signature_header, delivery_header) = senders[sender];
    let signature_of = |secret: &str| match sender {
        1 => secret.to_string(),
        2 | 3 => webhook::sign(secret, body)
            .trim_start_matches("sha256=")
            .to_string(),
        _ => webhook::sign(secret, body),
    };
    let valid = [signature_of(HOOK_SECRET), signature_of(REPO_HOOK_SECRET)];
    let signature = match (pick / 5) % 4 {
        0 => Some(valid[0].clone()),
        1 => Some(valid[1].clone()),
        2 => Some(value.clone()),
        _ => None,
    };
    let event = match event_pick % 6 {
        0 => Some("push".to_string()),
        1 => Some("Push Hook".to_string()),
        2 => Some("ping".to_string()),
        3 => Some("Tag Push Hook".to_string()),
        4 => Some(value.clone()),
        _ => None,
    };

    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if let Some(e) = &event
        && !event_header.is_empty()
    {
        headers.push((event_header, e));
    }
    if let Some(s) = &signature {
        headers.push((signature_header, s));
    }
    if let Some(d) = &delivery {
        headers.push((delivery_header, d));
    }
    if sender == 0 && event.is_none() && signature.is_none() {
        // Nothing says who sent it.
        assert_eq!(
            webhook::parse(&headers, body, &secrets()).unwrap_err(),
            webhook::WebhookError::Unrecognised
        );
    }

    let genuinely_signed = signature
        .as_ref()
        .is_some_and(|s| valid.iter().any(|v| v.trim() == s.trim()));
    let input_has_secret = [&value, delivery.as_deref().unwrap_or(""), &text(body)]
        .iter()
        .any(|t| t.contains(HOOK_SECRET) || t.contains(REPO_HOOK_SECRET));

    let secrets = secrets();
    let parsed = webhook::parse(&headers, body, &secrets);
    match &parsed {
        Ok(push) => {
            assert!(
                genuinely_signed,
                "an unsigned or wrongly signed delivery was accepted"
            );
            assert!(!push.commit.is_empty());
            assert!(push.commit.chars().all(|c| c.is_ascii_hexdigit()));
            assert!(!push.signed_with.is_empty());
            assert!(!push.delivery_id.is_empty());
            assert!(!push.branch.is_empty(), "a push names its branch: {push:?}");
        }
        Err(e) => {
            if !genuinely_signed {
                assert_eq!(
                    e.status(),
                    401,
                    "an unverified delivery is refused with 401: {e}"
                );
            }
            assert!(matches!(e.status(), 202 | 400 | 401 | 404));
            if !input_has_secret {
                let shown = e.to_string();
                assert!(
                    !shown.contains(HOOK_SECRET) && !shown.contains(REPO_HOOK_SECRET),
                    "an error shows a secret: {shown}"
                );
            }
        }
    }

    // The whole check, twice: the second delivery is a replay.
    let project = project();
    let mut seen = DeliverySeen::new(16);
    let first = webhook::accept(&headers, body, &project, &secrets, &mut seen);
    match (&parsed, &first) {
        (Err(a), Err(b)) => assert_eq!(a, b, "accept fails as parse does"),
        (Err(e), Ok(_)) => panic!("parse refused ({e}) what accept took"),
        _ => {}
    }
    if let Ok(accepted) = &first {
        let names = project.environment_names();
        for env in &accepted.environments {
            assert!(names.contains(&env.as_str()), "`{env}` is an environment");
        }
        let again = webhook::accept(&headers, body, &project, &secrets, &mut seen);
        assert!(
            matches!(again, Err(webhook::WebhookError::Replayed { .. })),
            "a replayed delivery was taken again: {again:?}"
        );
    }

    // Messages for the channels: only the project's secret signs them.
    let by_project = webhook::sign(HOOK_SECRET, body);
    let by_repo = webhook::sign(REPO_HOOK_SECRET, body);
    assert!(
        webhook::verify_message(&[("X-Marvin-Signature", &by_project)], body, &secrets).is_ok()
    );
    assert!(webhook::verify_message(&[("X-Marvin-Signature", &by_repo)], body, &secrets).is_err());
    let forged = webhook::verify_message(&[("X-Marvin-Signature", &value)], body, &secrets);
    assert_eq!(forged.is_ok(), value.trim() == by_project);

    // URLs from the body are compared normalized, each side once. For a
    // URL-shaped value (one `://`, no spaces or quotes) normalizing is
    // idempotent; garbage with a second `://` is not (found by this target;
    // harmless: no side is normalized twice), so that is not asserted.
    let url = webhook::normalize_url(&value);
    let url_shaped = value.matches("://").count() <= 1
        && !value.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'');
    if url_shaped {
        assert_eq!(
            webhook::normalize_url(&url),
            url,
            "normalize_url(`{value}`)"
        );
    }
}

fn secrets() -> WebhookSecrets {
    WebhookSecrets::project_wide(HOOK_SECRET)
        .with(SecretScope::Repo("tools".into()), REPO_HOOK_SECRET)
}

// ---- Slack ----

const SLACK_SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_NOW: i64 = 1_700_000_000;

/// A Slack Events API request body, as marvin-slack's handler reads it:
/// the signature check (signed validly, and with a signature taken from the
/// input), the event envelope, [`marvin_slack::incoming::command_of`] and the
/// command parser on what it returns.
pub fn slack(data: &[u8]) {
    use marvin_slack::incoming::{BotIdentity, command_of, strip_mention};
    use marvin_slack::signature::{self, SignatureError};
    use slack_morphism::prelude::SlackPushEvent;

    let sig = signature::sign(SLACK_SECRET, SLACK_NOW, data);
    let ts = SLACK_NOW.to_string();
    assert_eq!(
        signature::verify(SLACK_SECRET, Some(&ts), Some(&sig), data, SLACK_NOW),
        Ok(())
    );
    assert_eq!(
        signature::verify(b"another secret", Some(&ts), Some(&sig), data, SLACK_NOW),
        Err(SignatureError::Mismatch)
    );
    // The first two lines as the headers, the rest as the body.
    let text = text(data);
    let mut lines = text.splitn(3, '\n');
    let (ts_given, sig_given, rest) = (lines.next(), lines.next(), lines.next().unwrap_or(""));
    let verdict = signature::verify(
        SLACK_SECRET,
        ts_given,
        sig_given,
        rest.as_bytes(),
        SLACK_NOW,
    );
    if verdict.is_ok() {
        let expected = ts_given
            .and_then(|t| t.trim().parse::<i64>().ok())
            .map(|t| signature::sign(SLACK_SECRET, t, rest.as_bytes()));
        // Only a signature made with the secret passes (over the timestamp as sent).
        assert!(
            expected.is_some(),
            "a request without a readable timestamp passed"
        );
    }

    let bot = BotIdentity {
        user_id: "UBOT".into(),
        bot_id: Some("BBOT".into()),
        name: None,
    };
    let stripped = strip_mention(&text, &bot.user_id);
    assert_eq!(stripped.trim(), stripped, "the text is trimmed");

    let Ok(event) = serde_json::from_slice::<SlackPushEvent>(data) else {
        return;
    };
    let SlackPushEvent::EventCallback(callback) = event else {
        return;
    };
    let Some(incoming) = command_of(&callback.event, &bot) else {
        return;
    };
    assert_ne!(incoming.user, bot.user_id, "the bot never answers itself");
    assert!(incoming.identity().starts_with("slack:"));
    assert_eq!(incoming.text.trim(), incoming.text);
    let project = project();
    let ctx = Context::for_channel(&project, &incoming.chat_channel());
    let _ = command::parse(&incoming.text, &ctx);
}

// ---- Telegram ----

const TELEGRAM_SECRET: &[u8] = b"fuzz-telegram-secret-token";

/// A Telegram update, as marvin-telegram's webhook and poller read it: the
/// secret-token check, the [`teloxide::types::Update`] JSON,
/// [`marvin_telegram::address::incoming_of`] and
/// [`marvin_telegram::address::to_message`], then the command parser. The
/// raw text also goes straight to `to_message` as a private and a group message.
pub fn telegram(data: &[u8]) {
    use marvin_telegram::address::{Incoming, incoming_of, to_message};

    assert_eq!(
        marvin_telegram::same_secret(data, TELEGRAM_SECRET),
        data == TELEGRAM_SECRET
    );
    let project = project();
    let bot = "marvinbot";
    let check = |incoming: &Incoming<'_>| {
        let Some(message) = to_message(incoming, bot) else {
            return;
        };
        assert!(incoming.from.is_some() && !incoming.from_bot);
        assert!(message.identity.starts_with("telegram:"));
        assert!(message.channel.starts_with("telegram:"));
        let mut ctx = Context::for_channel(&project, &message.channel);
        ctx.bot = message.bot.clone();
        let _ = command::parse(&message.text, &ctx);
    };

    let text = text(data);
    for (private, from_bot) in [(true, false), (false, false), (false, true)] {
        check(&Incoming {
            from: Some(111),
            from_bot,
            chat: if private { 111 } else { -1001234567 },
            private,
            text: &text,
        });
    }

    let Ok(update) = serde_json::from_slice::<teloxide::types::Update>(data) else {
        return;
    };
    if let Some(incoming) = incoming_of(&update) {
        check(&incoming);
    }
}
