//! `marvin chat` (the chat grammar on the console, as local:$USER) and
//! `marvin audit`, as a person runs them: the real binary, real git repos,
//! the real engine and store.

mod common_e2e;

use std::io::Write;
use std::process::{Command, Stdio};

use common_e2e::{Fixture, Options};

fn chat(fx: &Fixture, user: &str, input: &str) -> (Option<i32>, String, String) {
    let mut child = Command::new(marvin_tests::marvin_bin())
        .args(["chat", "--config"])
        .arg(&fx.config)
        .arg("--data-dir")
        .arg(&fx.data)
        .env("USER", user)
        .env_remove("MARVIN_CHAT_IDENTITY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("marvin runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marvin_chat_speaks_the_grammar_and_marvin_audit_shows_every_command() {
    let fx = Fixture::new(
        "cli-chat",
        Options {
            staging_yaml: "    protected: true\n".into(),
            top_yaml: "people:\n  default_role: developer\n  admins: [\"local:boss\"]\n".into(),
            ..Options::default()
        },
    )
    .await;
    let (code, out, err) = chat(
        &fx,
        "alice",
        "help\nwhoami\n\n# a comment\ndev build\ndev lock 1h demo day\nbiuld dev\nquit\nenvs\n",
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        out.contains("@marvin [ENV] VERB") || out.contains("build"),
        "{out}"
    );
    assert!(out.contains("You are local:alice, a developer"), "{out}");
    assert!(out.contains("dev build #1 succeeded"), "{out}\n{err}");
    assert!(out.contains("built 5"), "{out}");
    assert!(
        out.contains("dev is locked by local:alice: demo day"),
        "{out}"
    );
    assert!(
        out.contains("unknown command `biuld`; did you mean `build`?"),
        "{out}"
    );
    assert!(
        !out.contains("1 environments"),
        "input after quit is not read: {out}"
    );
    assert_eq!(code, Some(1), "a refused command makes the exit code 1");

    // bob is refused by alice's lock; the protected environment asks him to wait for an admin.
    let (_, out, _) = chat(&fx, "bob", "dev build\nwhoami\n");
    assert!(
        out.contains("dev is locked by local:alice: demo day"),
        "{out}"
    );
    assert!(out.contains("staging is protected"), "{out}");

    let audit = marvin_tests::run_marvin(
        &fx.root,
        None,
        &[
            "audit",
            "--config",
            fx.config.to_str().unwrap(),
            "--data-dir",
            fx.data.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(audit.success(), "{audit:?}");
    let entries: Vec<serde_json::Value> = serde_json::from_str(&audit.stdout).unwrap();
    let rows: Vec<(String, String, String, String)> = entries
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("who"), s("command"), s("decision"), s("outcome"))
        })
        .collect();
    let has = |who: &str, command: &str, decision: &str, outcome: &str| {
        rows.iter()
            .any(|r| r.0 == who && r.1 == command && r.2 == decision && r.3.starts_with(outcome))
    };
    assert!(
        has("local:alice", "dev build", "allowed", "job #1 succeeded"),
        "{rows:#?}"
    );
    assert!(
        has("local:alice", "dev lock 1h 'demo day'", "allowed", "ok"),
        "{rows:#?}"
    );
    assert!(has("local:alice", "biuld dev", "invalid", ""), "{rows:#?}");
    assert!(
        has(
            "local:bob",
            "dev build",
            "allowed",
            "refused: dev is locked"
        ),
        "{rows:#?}"
    );
    assert_eq!(
        rows.len(),
        7,
        "help, whoami, build, lock, biuld; bob's build, whoami: {rows:#?}"
    );

    let text = marvin_tests::run_marvin(
        &fx.root,
        None,
        &[
            "audit",
            "-n",
            "2",
            "--config",
            fx.config.to_str().unwrap(),
            "--data-dir",
            fx.data.to_str().unwrap(),
        ],
    );
    assert!(text.success(), "{text:?}");
    assert_eq!(
        text.stdout
            .lines()
            .filter(|l| l.contains("local:bob"))
            .count(),
        2,
        "{}",
        text.stdout
    );
}
