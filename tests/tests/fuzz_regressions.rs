//! Every input the fuzzers ever crashed on (`fuzz/regressions/<target>/`),
//! and the seed corpus (`fuzz/seeds/<target>/`), replayed through the same
//! target bodies `cargo fuzz` runs (fuzz/targets.rs), so each crash found
//! stays fixed. A new crash: copy its file from `fuzz/artifacts/<target>/`
//! into `fuzz/regressions/<target>/` (scripts/fuzz says so).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/targets.rs"]
#[allow(dead_code)]
mod targets;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (`.gitkeep` and the like left out).
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{} cannot be read: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

/// Run every file of `kind` for every target; the failures, named by file.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let mut count = 0;
    let mut failures = Vec::new();
    for target in targets::TARGETS {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).expect("read an input");
            count += 1;
            let outcome = catch_unwind(AssertUnwindSafe(|| targets::run(target, &data)));
            match outcome {
                Ok(true) => {}
                Ok(false) => failures.push(format!("{target}: no such target")),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{target}: {}: {message}", file.display()));
                }
            }
        }
    }
    (count, failures)
}

#[test]
fn every_fuzz_regression_input_stays_fixed() {
    let (count, failures) = replay("regressions");
    assert!(
        failures.is_empty(),
        "fuzz regressions fail again:\n{}",
        failures.join("\n")
    );
    eprintln!("{count} regression inputs replayed");
}

#[test]
fn every_fuzz_seed_runs_clean_and_every_target_has_seeds() {
    for target in targets::TARGETS {
        assert!(
            !inputs("seeds", target).is_empty(),
            "fuzz/seeds/{target}/ has no input: each target needs seeds"
        );
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "fuzz/fuzz_targets/{target}.rs is missing"
        );
    }
    let (count, failures) = replay("seeds");
    assert!(
        failures.is_empty(),
        "fuzz seeds fail:\n{}",
        failures.join("\n")
    );
    eprintln!("{count} seed inputs replayed");
}

/// The seeds reach past the checks they are meant to pass: a signed
/// webhook seed gives a push, a Slack seed gives a command, a Telegram seed
/// gives a message; otherwise the fuzzer would start from nothing.
#[test]
fn the_seeds_reach_the_parsers_behind_the_signature_checks() {
    use marvin_core::webhook;
    let read = |target: &str, name: &str| {
        std::fs::read(fuzz_dir().join("seeds").join(target).join(name)).expect("a seed")
    };
    let data = read("webhook", "github-push");
    let body = data[2..].splitn(3, |b| *b == 0).nth(2).expect("a body");
    let sig = webhook::sign("fuzz-project-hook-secret", body);
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-Hub-Signature-256", sig.as_str()),
    ];
    let secrets = webhook::WebhookSecrets::project_wide("fuzz-project-hook-secret");
    let push = webhook::parse(&headers, body, &secrets).expect("the seed is a valid push");
    assert_eq!(push.branch, "main");

    let event: slack_morphism::prelude::SlackPushEvent =
        serde_json::from_slice(&read("slack", "app-mention.json")).expect("a Slack event");
    let slack_morphism::prelude::SlackPushEvent::EventCallback(callback) = event else {
        panic!("the seed is an event_callback");
    };
    let bot = marvin_slack::incoming::BotIdentity {
        user_id: "UBOT".into(),
        bot_id: None,
        name: None,
    };
    let incoming = marvin_slack::incoming::command_of(&callback.event, &bot).expect("a command");
    assert_eq!(incoming.text, "dev build --service api & more");

    let update: teloxide::types::Update =
        serde_json::from_slice(&read("telegram", "group-command.json")).expect("an update");
    let incoming = marvin_telegram::address::incoming_of(&update).expect("a text message");
    let message = marvin_telegram::address::to_message(&incoming, "marvinbot").expect("for us");
    assert_eq!(message.text, "/build@marvinbot dev --service api");
}
