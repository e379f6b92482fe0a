//! The console goes through the same door as chat: `marvin build`, `lock`,
//! `unlock`, `cancel` and a denied command are judged and audited (who,
//! origin, decision, outcome), and a viewer's `cancel` is refused while the
//! admin's job goes on. The real binary, real git repos, the real engine
//! and a real SQLite store.

mod common_e2e;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common_e2e::{Fixture, Options};
use marvin_core::store::{JobState, Store};

fn marvin(fx: &Fixture, user: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(marvin_tests::marvin_bin());
    // The global flags first: `lock`'s reason takes every word after it.
    cmd.arg("--config")
        .arg(&fx.config)
        .arg("--data-dir")
        .arg(&fx.data)
        .args(args)
        .env("USER", user)
        .env_remove("MARVIN_CONFIG")
        .env_remove(marvin_core::marvin::DATA_DIR_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
}

async fn run(fx: &Fixture, user: &str, args: &[&str]) -> Ran {
    let out = marvin(fx, user, args).output().await.expect("marvin runs");
    let ran = Ran {
        code: out.status.code(),
        out: String::from_utf8_lossy(&out.stdout).into_owned(),
        err: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!ran.err.contains("panicked"), "{}", ran.err);
    ran
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_commands_are_judged_and_audited_and_a_viewer_cannot_cancel() {
    let fx = Fixture::new(
        "cli-door",
        Options {
            dev_yaml: "    protected: true\n".into(),
            top_yaml: "people:\n  default_role: viewer\n  admins: [\"local:boss\"]\n".into(),
            ..Options::default()
        },
    )
    .await;

    let build = run(&fx, "boss", &["build", "dev", "--json"]).await;
    assert_eq!(build.code, Some(0), "{}{}", build.out, build.err);
    let summary: serde_json::Value = serde_json::from_str(&build.out).expect("--json");
    assert_eq!(summary["state"], "succeeded", "{}", build.out);

    let lock = run(&fx, "boss", &["lock", "dev", "1h", "maintenance"]).await;
    assert_eq!(lock.code, Some(0), "{}{}", lock.out, lock.err);
    assert!(lock.out.contains("local:boss"), "{}", lock.out);
    let unlock = run(&fx, "boss", &["unlock", "dev", "--json"]).await;
    assert_eq!(unlock.code, Some(0), "{}{}", unlock.out, unlock.err);
    let released: serde_json::Value = serde_json::from_str(&unlock.out).expect("--json");
    assert_eq!(
        released["released"]["holder"], "local:boss",
        "{}",
        unlock.out
    );

    // A viewer may not lock.
    let denied = run(&fx, "peeker", &["lock", "dev"]).await;
    assert_eq!(denied.code, Some(1), "{}{}", denied.out, denied.err);
    assert!(denied.err.contains("viewer"), "{}", denied.err);

    // The admin's job runs in another process; the viewer's cancel is refused and it goes on.
    let nap = marvin(&fx, "boss", &["run", "--json", "dev", "nap", "4"])
        .spawn()
        .expect("marvin runs");
    let store = Store::open_in(&fx.data).expect("the store");
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let active = store.active_jobs(&fx.project, Some("dev")).expect("read");
        if let Some(j) = active.iter().find(|j| j.state == JobState::Running) {
            break j.clone();
        }
        assert!(Instant::now() < deadline, "the admin's job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let cancel = run(&fx, "peeker", &["cancel", "dev"]).await;
    assert_eq!(cancel.code, Some(1), "{}{}", cancel.out, cancel.err);
    assert!(cancel.err.contains("viewer"), "{}", cancel.err);
    let by_id = run(&fx, "peeker", &["cancel", "dev", &job.id.to_string()]).await;
    assert_eq!(by_id.code, Some(1), "{}{}", by_id.out, by_id.err);
    let nap = nap.wait_with_output().await.expect("the job ends");
    let nap_out = String::from_utf8_lossy(&nap.stdout);
    assert!(
        nap.status.success(),
        "{nap_out}{}",
        String::from_utf8_lossy(&nap.stderr)
    );
    let nap_summary: serde_json::Value = serde_json::from_str(&nap_out).expect("--json");
    assert_eq!(nap_summary["state"], "succeeded", "{nap_out}");
    assert_eq!(
        store.job(job.id).expect("read").map(|j| j.state),
        Some(JobState::Succeeded)
    );

    // The admin may cancel; with nothing running, the door says so.
    let idle = run(&fx, "boss", &["cancel", "dev"]).await;
    assert_eq!(idle.code, Some(1), "{}{}", idle.out, idle.err);
    assert!(
        idle.err.contains("nothing is queued or running"),
        "{}",
        idle.err
    );

    let audit = run(&fx, "boss", &["audit", "--json"]).await;
    assert_eq!(audit.code, Some(0), "{}", audit.err);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&audit.out).expect("--json");
    let rows: Vec<[String; 5]> = entries
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            [
                s("who"),
                s("origin"),
                s("command"),
                s("decision"),
                s("outcome"),
            ]
        })
        .collect();
    let has = |who: &str, command: &str, decision: &str, outcome: &str| {
        rows.iter().any(|r| {
            r[0] == who
                && r[1] == "console"
                && r[2] == command
                && r[3] == decision
                && r[4].starts_with(outcome)
        })
    };
    let nap_done = format!("job #{} succeeded", job.id);
    for (who, command, decision, outcome) in [
        ("local:boss", "dev build", "allowed", "job #1 succeeded"),
        ("local:boss", "dev lock 1h maintenance", "allowed", "ok"),
        ("local:boss", "dev unlock", "allowed", "ok"),
        ("local:peeker", "dev lock", "denied", ""),
        ("local:boss", "dev run nap 4", "allowed", nap_done.as_str()),
        ("local:peeker", "dev cancel", "denied", ""),
        (
            "local:peeker",
            &format!("dev cancel #{}", job.id),
            "denied",
            "",
        ),
        ("local:boss", "dev cancel", "allowed", "refused: nothing"),
    ] {
        assert!(
            has(who, command, decision, outcome),
            "no audit entry {who} {command} {decision} {outcome}: {rows:#?}"
        );
    }
    assert_eq!(rows.len(), 8, "{rows:#?}");
}
