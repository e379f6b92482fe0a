//! Issue #7 item 2: property tests of three promises.
//!
//! 1. Secrets never shown (docs/secrets.md, `redact.rs`): for any set of secret
//!    values of at least [`MIN_SECRET_CHARS`] characters and any report or
//!    answer that embeds them (raw, HTML/mrkdwn or JSON escaped, a line of a
//!    multi-line value, cut by the renderer), no rendered output holds any
//!    of the forms the redactor promises to cover.
//! 2. Locks (docs/people.md, `locks.rs`): through any sequence of lock, unlock,
//!    take-over and time passing by admins and developers, on a real store,
//!    the store holds exactly the holder a simple model says (so at most one),
//!    and every refusal while someone else holds the lock names that holder.
//! 3. Build keys (ARCHITECTURE.md, `keys.rs`): the same services written with
//!    their compose keys in any order give the same keys; changing the
//!    Dockerfile, a context file, a build arg value or the target changes
//!    that service's key and no other.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use marvin_core::chat::{Answer, Tone};
use marvin_core::commands::{self, CommandError};
use marvin_core::keys::{BuildInputs, BuildKey, build_key};
use marvin_core::marvin::Marvin;
use marvin_core::redact::{MIN_SECRET_CHARS, Redactor};
use marvin_core::render::{self, RenderOptions, Report};
use marvin_core::source::Commit;
use marvin_core::store::{JobState, Store};

// ---------------------------------------------------------------------------
// 1. secrets
// ---------------------------------------------------------------------------

/// Characters secrets and texts are made of: letters, regex specials, what
/// HTML, mrkdwn and JSON escape, the mask's own `*`, unicode, whitespace.
const ALPHABET: &[char] = &[
    'a', 'b', 'c', 'Z', '1', '*', '.', '+', '?', '(', ')', '[', ']', '{', '}', '|', '^', '$', '\\',
    '&', '<', '>', '"', '\'', '`', ';', ':', '-', 'é', '密', '🔑', ' ', '\n', '\t',
];

fn chars(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), min..=max)
        .prop_map(|cs| cs.into_iter().collect())
}

/// Secret values: some fresh, some prefixes or substrings of others, some too short to count.
fn secrets() -> impl Strategy<Value = Vec<String>> {
    (
        prop::collection::vec(chars(4, 12), 1..=3),
        prop::collection::vec((0usize..3, 0usize..12, 1usize..12), 0..=2),
        prop::collection::vec(chars(0, 3), 0..=1),
    )
        .prop_map(|(mut values, cuts, short)| {
            for (from, start, len) in cuts {
                let base: Vec<char> = values[from % values.len()].chars().collect();
                let start = start % base.len();
                let end = (start + len).min(base.len());
                values.push(base[start..end].iter().collect());
            }
            values.extend(short);
            values
        })
}

/// How a secret is written into a text.
#[derive(Debug, Clone)]
enum Form {
    Raw,
    Html,
    HtmlQuot,
    Json,
    /// One (trimmed) line of it.
    Line(usize),
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        3 => Just(Form::Raw),
        1 => Just(Form::Html),
        1 => Just(Form::HtmlQuot),
        1 => Just(Form::Json),
        1 => (0usize..4).prop_map(Form::Line),
    ]
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn json_inner(s: &str) -> String {
    let quoted = serde_json::to_string(s).expect("a string encodes");
    quoted[1..quoted.len() - 1].to_string()
}

fn write_in(secret: &str, form: &Form) -> String {
    match form {
        Form::Raw => secret.to_string(),
        Form::Html => html(secret),
        Form::HtmlQuot => html(secret).replace('"', "&quot;"),
        Form::Json => json_inner(secret),
        Form::Line(n) => {
            let lines: Vec<&str> = secret.lines().collect();
            lines
                .get(n % lines.len().max(1))
                .map_or(secret, |l| l.trim())
                .to_string()
        }
    }
}

/// Every form of a value the redactor promises to mask (redact.rs module docs).
fn promised_forms(secrets: &[String]) -> Vec<String> {
    let long = |s: &str| s.chars().count() >= MIN_SECRET_CHARS;
    let mut out = Vec::new();
    for value in secrets.iter().filter(|v| long(v)) {
        let mut bases = vec![value.clone()];
        bases.extend(
            value
                .lines()
                .map(str::trim)
                .filter(|l| long(l))
                .map(String::from),
        );
        for b in bases {
            out.push(html(&b).replace('"', "&quot;"));
            out.push(html(&b));
            out.push(json_inner(&b));
            out.push(b);
        }
    }
    out.retain(|f| long(f));
    out.sort();
    out.dedup();
    out
}

/// A text made of filler and secrets in various forms.
fn text_with(secrets: Vec<String>) -> impl Strategy<Value = String> {
    prop::collection::vec((chars(0, 6), prop::option::of((0usize..8, form()))), 0..=5).prop_map(
        move |parts| {
            let mut out = String::new();
            for (filler, secret) in parts {
                out.push_str(&filler);
                if let Some((i, f)) = secret {
                    out.push_str(&write_in(&secrets[i % secrets.len()], &f));
                }
            }
            out
        },
    )
}

/// Secrets and a pool of texts embedding them (a long one too, so messages get cut).
fn secrets_and_texts() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
    secrets().prop_flat_map(|s| {
        let texts = prop::collection::vec(text_with(s.clone()), 12..=24);
        (Just(s), texts, 0usize..40).prop_map(|(s, mut texts, repeat)| {
            // One log line long enough to be clipped.
            let long = texts[0].repeat(repeat);
            texts.push(long);
            (s, texts)
        })
    })
}

fn report_from(texts: &[String], state_pick: usize) -> Report {
    let t = |i: usize| texts[i % texts.len()].clone();
    let some = |from: usize, n: usize| (0..n).map(|i| t(from + i)).collect::<Vec<_>>();
    let state = [
        JobState::Succeeded,
        JobState::Failed,
        JobState::Running,
        JobState::Queued,
        JobState::Cancelled,
        JobState::Interrupted,
    ][state_pick % 6];
    Report {
        job: 42,
        env: t(0),
        verb: if state_pick.is_multiple_of(7) {
            "run".into()
        } else {
            t(1)
        },
        args: some(2, 2),
        who: t(4),
        state,
        step: Some(t(5)),
        elapsed_ms: 61_000,
        commits: vec![Commit {
            repo: t(6),
            id: t(7),
            author: t(8),
            date: t(9),
            subject: t(10),
        }],
        building: some(11, 1),
        built: vec![(t(12), 1_500)],
        reused: some(13, 1),
        created: some(14, 1),
        recreated: some(15, 1),
        removed: some(16, 1),
        unchanged: some(17, 1),
        rolled_back: some(18, 2),
        exit_code: Some(3),
        error: Some(t(20)),
        last_lines: {
            let mut lines = some(21, 6);
            lines.push(texts.last().cloned().unwrap_or_default());
            lines
        },
    }
}

/// Every string in a JSON value, keys too.
fn json_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                json_strings(x, out);
            }
        }
        _ => {}
    }
}

fn assert_hidden(what: &str, outputs: &[String], forms: &[String]) -> Result<(), TestCaseError> {
    for out in outputs {
        for f in forms {
            prop_assert!(
                !out.contains(f.as_str()),
                "{what} shows the secret form {f:?} in {out:?}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// `Redactor::redact` itself: no promised form survives, whatever the order of the values.
    #[test]
    fn redact_leaves_no_promised_form((secrets, texts) in secrets_and_texts()) {
        let forms = promised_forms(&secrets);
        let r = Redactor::new(secrets.clone());
        let mut reversed = secrets.clone();
        reversed.reverse();
        let r_rev = Redactor::new(reversed);
        for text in &texts {
            let out = r.redact(text).into_owned();
            assert_hidden("redact", std::slice::from_ref(&out), &forms)?;
            prop_assert_eq!(&out, &r_rev.redact(text).into_owned(), "order of the values matters");
            if forms.iter().all(|f| !text.contains(f.as_str())) {
                prop_assert_eq!(&out, text, "a text without secrets is changed");
            }
        }
    }

    /// Reports, in every renderer, cut or whole.
    #[test]
    fn rendered_reports_show_no_secret(
        (secrets, texts) in secrets_and_texts(),
        state in 0usize..12,
        limit in prop_oneof![Just(render::MESSAGE_LIMIT), 60usize..600],
        url_pointer in any::<bool>(),
    ) {
        let forms = promised_forms(&secrets);
        let r = Redactor::new(secrets.clone());
        let report = report_from(&texts, state);
        let opts = RenderOptions {
            limit,
            full_log: url_pointer.then(|| format!("https://ci.example/{}", texts[3])),
        };
        assert_hidden("text", &[render::text(&report, &opts, &r)], &forms)?;
        assert_hidden("telegram_html", &[render::telegram_html(&report, &opts, &r)], &forms)?;
        let slack = render::slack(&report, &opts, &r);
        let mut outs = vec![slack.text];
        json_strings(&slack.blocks, &mut outs);
        assert_hidden("slack", &outs, &forms)?;
    }

    /// Immediate answers: text with inline code, a block, mentions.
    #[test]
    fn rendered_answers_show_no_secret(
        (secrets, texts) in secrets_and_texts(),
        with_block in any::<bool>(),
        backticks in any::<bool>(),
    ) {
        let forms = promised_forms(&secrets);
        let r = Redactor::new(secrets.clone());
        let text = if backticks {
            format!("`{}` and `{}` then {}", texts[0], texts[1], texts[2])
        } else {
            texts[0].clone()
        };
        let answer = Answer {
            tone: Tone::Refused,
            text,
            block: with_block.then(|| texts[3..].join("\n")),
            mentions: vec![format!("slack:{}", texts[4]), format!("telegram:{}", texts[5]), texts[6].clone()],
            data: None,
        };
        let slack = render::answer_slack(&answer, &r);
        let mut outs = vec![slack.text];
        json_strings(&slack.blocks, &mut outs);
        assert_hidden("answer_slack", &outs, &forms)?;
        assert_hidden("answer_telegram_html", &[render::answer_telegram_html(&answer, &r)], &forms)?;
    }
}

// ---------------------------------------------------------------------------
// 2. locks
// ---------------------------------------------------------------------------

const LOCKS_YML: &str = "\
project: shop
repos:
  app: {url: /srv/app.git}
environments:
  develop: {}
  staging: {}
people:
  default_role: viewer
  admins: ['slack:UADMIN', 'telegram:1001']
  developers: ['slack:UDEV', 'slack:UDEV2']
";
const PEOPLE: [&str; 4] = ["slack:UADMIN", "telegram:1001", "slack:UDEV", "slack:UDEV2"];
const ENVS: [&str; 2] = ["develop", "staging"];
const MINUTE: i64 = 60_000;

#[derive(Debug, Clone)]
enum LockOp {
    Lock {
        who: usize,
        env: usize,
        minutes: Option<u16>,
        force: bool,
    },
    Unlock {
        who: usize,
        env: usize,
        force: bool,
    },
    Wait {
        minutes: u16,
    },
}

fn lock_op() -> impl Strategy<Value = LockOp> {
    prop_oneof![
        3 => (0usize..4, 0usize..2, prop::option::of(1u16..180), any::<bool>())
            .prop_map(|(who, env, minutes, force)| LockOp::Lock { who, env, minutes, force }),
        2 => (0usize..4, 0usize..2, any::<bool>())
            .prop_map(|(who, env, force)| LockOp::Unlock { who, env, force }),
        2 => (0u16..240).prop_map(|minutes| LockOp::Wait { minutes }),
    ]
}

fn is_admin(who: &str) -> bool {
    who == PEOPLE[0] || who == PEOPLE[1]
}

/// The holder of a lock in force, if any, per the model.
fn holder(model: &BTreeMap<&str, (String, i64)>, env: &str, now: i64) -> Option<String> {
    model
        .get(env)
        .filter(|(_, until)| *until > now)
        .map(|(h, _)| h.clone())
}

/// A refusal while `other` holds the lock must name them.
fn check_refusal(err: &CommandError, other: Option<&str>, what: &str) -> Result<(), TestCaseError> {
    let message = err.to_string();
    match (err, other) {
        (CommandError::Locked { lock, message }, Some(h)) => {
            prop_assert_eq!(
                lock.holder.as_str(),
                h,
                "{} refused with the wrong lock",
                what
            );
            prop_assert!(
                message.contains(h),
                "{what}: refusal {message:?} does not name {h}"
            );
        }
        (CommandError::PermissionDenied(_), Some(h)) => {
            prop_assert!(
                message.contains(h),
                "{what}: refusal {message:?} does not name {h}"
            );
        }
        (CommandError::PermissionDenied(_), None) => {}
        _ => prop_assert!(false, "{what}: unexpected error {err:?} (holder {other:?})"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn one_holder_at_a_time_and_refusals_name_it(ops in prop::collection::vec(lock_op(), 1..40)) {
        let dir = tempfile::tempdir().expect("temp dir");
        let yml = dir.path().join("marvin.yml");
        std::fs::write(&yml, LOCKS_YML).expect("write marvin.yml");
        let marvin = Marvin::load(&yml, Some(dir.path().join("data"))).expect("fixture loads");
        let store = Store::open_in(dir.path()).expect("store opens");
        let mut model: BTreeMap<&str, (String, i64)> = BTreeMap::new();
        let mut now: i64 = 1_780_000_000_000;
        for (step, op) in ops.iter().enumerate() {
            let what = format!("step {step} {op:?}");
            match *op {
                LockOp::Wait { minutes } => now += i64::from(minutes) * MINUTE,
                LockOp::Lock { who, env, minutes, force } => {
                    let (who, env) = (PEOPLE[who], ENVS[env]);
                    let duration = minutes.map(|m| Duration::from_secs(u64::from(m) * 60));
                    let until = now + minutes.map_or(120, i64::from) * MINUTE;
                    let current = holder(&model, env, now);
                    let got = commands::take_lock(&marvin, &store, who, env, duration, "testing", force, now);
                    let other = current.as_deref().filter(|h| *h != who);
                    if force && !is_admin(who) {
                        // `--force` is for admins, held or not.
                        let err = got.expect_err("a developer's --force is refused");
                        check_refusal(&err, other, &what)?;
                    } else if let Some(h) = other.filter(|_| !(force && is_admin(who))) {
                        let err = got.expect_err("someone else's lock refuses");
                        check_refusal(&err, Some(h), &what)?;
                    } else {
                        let granted = got.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                        prop_assert_eq!(&granted.lock.holder, who);
                        prop_assert_eq!(granted.lock.until_ms, Some(until));
                        prop_assert_eq!(granted.taken_from.map(|l| l.holder), other.map(String::from));
                        model.insert(env, (who.to_string(), until));
                    }
                }
                LockOp::Unlock { who, env, force } => {
                    let (who, env) = (PEOPLE[who], ENVS[env]);
                    let current = holder(&model, env, now);
                    let got = commands::unlock(&marvin, &store, who, env, force, now);
                    let other = current.as_deref().filter(|h| *h != who);
                    if force && !is_admin(who) {
                        let err = got.expect_err("a developer's --force is refused");
                        check_refusal(&err, other, &what)?;
                    } else if let Some(h) = other.filter(|_| !(force && is_admin(who))) {
                        let err = got.expect_err("someone else's lock refuses");
                        check_refusal(&err, Some(h), &what)?;
                    } else {
                        let released = got.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))?;
                        prop_assert_eq!(released.map(|l| l.holder), current);
                        model.remove(env);
                    }
                }
            }
            for env in ENVS {
                let in_store = store
                    .current_lock("shop", env, now)
                    .expect("store reads")
                    .map(|l| l.holder);
                prop_assert_eq!(&in_store, &holder(&model, env, now), "{} after {}", env, what);
            }
            let all = store.locks("shop", now).expect("store lists");
            for env in ENVS {
                prop_assert!(all.iter().filter(|l| l.env == env).count() <= 1, "two holders of {env}: {all:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3. build keys
// ---------------------------------------------------------------------------

/// What one service's image is made of.
#[derive(Debug, Clone)]
struct ServiceSpec {
    dockerfile: String,
    /// Context files besides the Dockerfile: path → content.
    files: BTreeMap<String, String>,
    args: BTreeMap<String, String>,
    target: Option<String>,
}

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9._-]{0,6}"
}

fn service_spec() -> impl Strategy<Value = ServiceSpec> {
    (
        "FROM scratch\n[A-Z .a-z0-9]{0,20}",
        prop::collection::btree_map("[a-z]{1,5}(/[a-z]{1,5})?\\.txt", ".{0,12}", 0..4),
        prop::collection::btree_map("[A-Z][A-Z0-9_]{0,5}", "[a-zA-Z0-9 ._/-]{0,8}", 0..5),
        prop::option::of(word()),
    )
        .prop_map(|(dockerfile, files, args, target)| ServiceSpec {
            dockerfile,
            files,
            args,
            target,
        })
}

fn services() -> impl Strategy<Value = BTreeMap<String, ServiceSpec>> {
    prop::collection::btree_map("[a-z][a-z0-9]{0,5}", service_spec(), 1..4)
}

fn sha(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// A deterministic shuffle (the order is the point, not the randomness).
fn shuffled<T>(mut items: Vec<T>, seed: &mut u64) -> Vec<T> {
    for i in (1..items.len()).rev() {
        *seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let j = (*seed >> 33) as usize % (i + 1);
        items.swap(i, j);
    }
    items
}

/// The services as a compose file, every map written in an order `seed` picks,
/// build args as a map or as a `KEY=value` list.
fn compose_text(services: &BTreeMap<String, ServiceSpec>, mut seed: u64) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string encodes");
    let mut out = String::from("services:\n");
    for (name, spec) in shuffled(services.iter().collect(), &mut seed) {
        out.push_str(&format!("  {name}:\n"));
        let list_args = seed & 1 == 1;
        let args: Vec<String> = shuffled(spec.args.iter().collect(), &mut seed)
            .into_iter()
            .map(|(k, v)| {
                if list_args {
                    format!("        - {}\n", q(&format!("{k}={v}")))
                } else {
                    format!("        {k}: {}\n", q(v))
                }
            })
            .collect();
        let mut build_keys = vec![
            format!("      context: ./{name}\n"),
            "      dockerfile: Dockerfile\n".to_string(),
            format!(
                "      args:{}\n{}",
                if args.is_empty() { " {}" } else { "" },
                args.concat()
            ),
        ];
        if let Some(t) = &spec.target {
            build_keys.push(format!("      target: {}\n", q(t)));
        }
        let service_keys = vec![
            format!("    build:\n{}", shuffled(build_keys, &mut seed).concat()),
            format!("    image: shop/{name}\n"),
            "    environment:\n      MODE: test\n      LEVEL: \"3\"\n".to_string(),
            "    restart: unless-stopped\n".to_string(),
        ];
        out.push_str(&shuffled(service_keys, &mut seed).concat());
    }
    out
}

/// Each service's build key, read through the compose parser; context tree and
/// Dockerfile blob ids are content digests, as git's are.
fn keys_through_compose(
    services: &BTreeMap<String, ServiceSpec>,
    seed: u64,
) -> Result<BTreeMap<String, BuildKey>, TestCaseError> {
    let text = compose_text(services, seed);
    let compose = marvin_core::compose::render(&text, "compose.yml", &BTreeMap::new())
        .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
    let mut out = BTreeMap::new();
    for (name, svc) in &compose.services {
        let build = svc
            .build
            .as_ref()
            .ok_or_else(|| TestCaseError::fail(format!("{name} has no build")))?;
        let spec = &services[name];
        let mut tree: Vec<&str> = vec!["Dockerfile", &spec.dockerfile];
        for (path, content) in &spec.files {
            tree.extend([path.as_str(), content.as_str()]);
        }
        let inputs = BuildInputs {
            context_tree: sha(&tree),
            context_mounts: vec![],
            dockerfile_path: build.dockerfile.clone(),
            dockerfile_blob: sha(&[&spec.dockerfile]),
            args: build.args.clone(),
            target: build.target.clone(),
            platform: build.platform.clone(),
            from_keys: BTreeMap::new(),
        };
        out.insert(name.clone(), build_key(&inputs));
    }
    Ok(out)
}

/// What to change in one service.
#[derive(Debug, Clone)]
enum Change {
    Dockerfile,
    ContextFile,
    ArgValue,
    Target,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn build_keys_do_not_depend_on_the_order_compose_keys_are_written_in(
        services in services(),
        a in any::<u64>(),
        b in any::<u64>(),
    ) {
        let ka = keys_through_compose(&services, a)?;
        let kb = keys_through_compose(&services, b)?;
        prop_assert_eq!(ka.len(), services.len());
        prop_assert_eq!(ka, kb);
    }

    #[test]
    fn changing_an_input_changes_that_services_key_only(
        services in services(),
        pick in any::<prop::sample::Index>(),
        change in prop_oneof![Just(Change::Dockerfile), Just(Change::ContextFile), Just(Change::ArgValue), Just(Change::Target)],
        seed in any::<u64>(),
    ) {
        let before = keys_through_compose(&services, seed)?;
        let name = pick.get(&services.keys().cloned().collect::<Vec<_>>()).clone();
        let mut changed = services.clone();
        let spec = changed.get_mut(&name).expect("picked from the map");
        match change {
            Change::Dockerfile => spec.dockerfile.push_str("\nRUN true"),
            Change::ContextFile => match spec.files.values_mut().next() {
                Some(content) => content.push('x'),
                None => {
                    spec.files.insert("new.txt".into(), String::new());
                }
            },
            Change::ArgValue => match spec.args.values_mut().next() {
                Some(v) => v.push('x'),
                None => {
                    spec.args.insert("NEW".into(), String::new());
                }
            },
            Change::Target => {
                spec.target = match &spec.target {
                    Some(t) => Some(format!("{t}x")),
                    None => Some("prod".into()),
                }
            }
        }
        let after = keys_through_compose(&changed, seed.rotate_left(7))?;
        for (svc, key) in &before {
            if *svc == name {
                prop_assert_ne!(key, &after[svc], "{:?} of {} did not change its key", change, svc);
            } else {
                prop_assert_eq!(key, &after[svc], "{:?} of {} changed {}'s key", change, name, svc);
            }
        }
    }
}
