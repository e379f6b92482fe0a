//! The chat dispatcher end to end, on the real Docker engine, real git repos
//! and a real SQLite store: what every chat front end gets (docs/commands.md,
//! docs/people.md, issue #4). The Slack and Telegram adapters add only their wire formats.

mod common_e2e;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use common_e2e::{Fixture, Options};
use marvin_core::chat::{Answer, Chat, Follow, Message, Reply, Tone};
use marvin_core::render::{self, RenderOptions, Report};
use marvin_core::runtime::{Clock, JobKind, JobRequest, Runtime, SystemClock, Triggered};
use marvin_core::store::{JobState, Store};

/// A clock the test moves by hand.
struct ManualClock(AtomicI64);

impl ManualClock {
    fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock(AtomicI64::new(SystemClock.now_ms())))
    }
    fn advance_minutes(&self, minutes: i64) {
        self.0.fetch_add(minutes * 60_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const PEOPLE: &str = "people:
  default_role: viewer
  admins: [\"slack:UADMIN\", \"slack:UADMIN2\"]
  developers: [\"slack:UDEV\", \"slack:UDEV2\"]
";

fn options() -> Options {
    Options {
        dev_yaml: "    channels: [\"slack:CDEV\"]\n".into(),
        staging_yaml: "    protected: true\n".into(),
        top_yaml: PEOPLE.into(),
        ..Options::default()
    }
}

fn runtime_with(fx: &Fixture, clock: Arc<dyn Clock>) -> Runtime {
    Runtime::new(
        fx.marvin(),
        fx.engine.clone(),
        Store::open_in(&fx.data).expect("the store opens"),
        clock,
    )
    .expect("the runtime starts")
}

fn msg(who: &str, channel: &str, text: &str) -> Message {
    Message {
        identity: who.into(),
        channel: channel.into(),
        text: text.into(),
        bot: None,
    }
}

async fn say(chat: &Chat, who: &str, text: &str) -> Reply {
    chat.handle(&msg(who, "slack:CRANDOM", text)).await
}

fn answer(reply: Reply) -> Answer {
    match reply {
        Reply::Answer(a) => a,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn job(reply: Reply) -> Follow {
    match reply {
        Reply::Job(f) => f,
        other => panic!("expected a job, got {other:?}"),
    }
}

/// Every report of a job, in order, until the final one.
async fn reports(mut follow: Follow) -> Vec<Report> {
    let mut all = Vec::new();
    let deadline = std::time::Duration::from_secs(300);
    tokio::time::timeout(deadline, async {
        while let Some(r) = follow.next().await {
            all.push(r);
        }
    })
    .await
    .expect("the job ends within 5 minutes");
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_in_a_bound_channel_reports_progress_and_is_audited() {
    let fx = Fixture::new("chat-build", options()).await;
    let chat = Chat::new(fx.runtime());
    // The channel is bound to dev: no environment needed.
    let follow = job(chat
        .handle(&msg("slack:UDEV", "slack:CDEV", "@marvin build"))
        .await);
    let id = follow.job;
    assert_eq!(follow.env, "dev");
    let all = reports(follow).await;
    let first = all.first().expect("a first report");
    assert_eq!(first.state, JobState::Queued, "{first:?}");
    let last = all.last().expect("a final report");
    assert!(last.is_final());
    assert_eq!(last.state, JobState::Succeeded, "{last:?}");
    assert_eq!(last.commits.len(), 2, "one commit per repo: {last:?}");
    assert_eq!(last.built.len(), 5, "{last:?}");
    let text = render::text(last, &RenderOptions::default(), &follow_redactor(&chat));
    assert!(
        text.contains(&format!("dev build #{id} succeeded")),
        "{text}"
    );
    assert!(text.contains("built 5"), "{text}");

    let audit = chat.runtime().store().audit_log(&fx.project, 10).unwrap();
    let entry = audit
        .iter()
        .find(|e| e.command == "dev build")
        .expect("the build is audited");
    assert_eq!(entry.who, "slack:UDEV");
    assert_eq!(entry.origin, "slack:CDEV");
    assert_eq!(entry.decision, "allowed");
    assert_eq!(
        entry.outcome.as_deref(),
        Some(format!("job #{id} succeeded").as_str())
    );

    // A second build reuses everything and says so.
    let again = reports(job(say(&chat, "slack:UDEV", "dev build").await)).await;
    let last = again.last().unwrap();
    assert_eq!(last.state, JobState::Succeeded);
    assert!(last.built.is_empty(), "{last:?}");
    assert_eq!(last.reused.len(), 5, "{last:?}");
    assert_eq!(last.unchanged.len(), 5, "{last:?}");

    // status, envs, history and logs answer at once.
    let status = answer(say(&chat, "slack:UVIEWER", "dev status").await);
    assert_eq!(status.tone, Tone::Info);
    let block = status.block.unwrap();
    for svc in common_e2e::SERVICES {
        assert!(block.contains(svc), "{block}");
    }
    let envs = answer(say(&chat, "slack:UVIEWER", "envs").await)
        .block
        .unwrap();
    assert!(
        envs.contains("dev") && envs.contains("staging · protected"),
        "{envs}"
    );
    assert!(envs.contains(&format!("deployed by #{}", id + 1)), "{envs}");
    let history = answer(say(&chat, "slack:UVIEWER", "dev history 5").await)
        .block
        .unwrap();
    assert!(history.contains(&format!("#{id}")), "{history}");
    let logs = answer(say(&chat, "slack:UVIEWER", &format!("dev logs #{id} --tail 5")).await);
    assert_eq!(logs.block.unwrap().lines().count(), 5);
}

fn follow_redactor(chat: &Chat) -> marvin_core::redact::Redactor {
    chat.runtime().redactor()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_environment_waits_for_another_admins_approval() {
    let fx = Fixture::new("chat-approve", options()).await;
    let chat = Chat::new(fx.runtime());
    let store = || chat.runtime().store();

    // A viewer may not even ask.
    let refused = answer(say(&chat, "slack:UVIEWER", "staging build").await);
    assert_eq!(refused.tone, Tone::Refused);
    assert!(refused.text.contains("viewer"), "{}", refused.text);

    // A developer's build waits, and says for what.
    let mut follow = job(say(&chat, "slack:UDEV", "staging build").await);
    let id = follow.job;
    let first = follow.next().await.unwrap();
    assert_eq!(first.state, JobState::Queued);
    let waiting = render::text(&first, &RenderOptions::default(), &follow.redactor);
    assert!(waiting.contains(&format!("approve #{id}")), "{waiting}");

    // Not by the requester (a developer), not by a viewer.
    for who in ["slack:UDEV", "slack:UVIEWER"] {
        let no = answer(say(&chat, who, &format!("approve #{id}")).await);
        assert_eq!(no.tone, Tone::Refused, "{who}: {no:?}");
        assert!(no.text.contains("only admins approve"), "{}", no.text);
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(store().job(id).unwrap().unwrap().state, JobState::Queued);

    // An admin approves; the requester is told; the job runs.
    let yes = answer(say(&chat, "slack:UADMIN", &format!("approve {id}")).await);
    assert_eq!(yes.tone, Tone::Info, "{yes:?}");
    assert_eq!(yes.mentions, vec!["slack:UDEV".to_string()]);
    let all = reports(follow).await;
    let last = all.last().unwrap();
    assert_eq!(last.state, JobState::Succeeded, "{last:?}");

    // Once is enough.
    let twice = answer(say(&chat, "slack:UADMIN2", &format!("approve #{id}")).await);
    assert_eq!(twice.tone, Tone::Refused);
    assert!(
        twice.text.contains("already approved by slack:UADMIN"),
        "{}",
        twice.text
    );

    // An admin's own build needs nobody.
    let mut own = job(say(&chat, "slack:UADMIN", "staging build").await);
    let first = own.next().await.unwrap();
    assert!(first.step.is_none(), "{first:?}");
    assert_eq!(reports(own).await.pop().unwrap().state, JobState::Succeeded);

    let audit = store().audit_log(&fx.project, 50).unwrap();
    let decisions: Vec<(&str, &str, &str)> = audit
        .iter()
        .rev()
        .map(|e| (e.who.as_str(), e.command.as_str(), e.decision.as_str()))
        .collect();
    assert!(
        decisions.contains(&("slack:UVIEWER", "staging build", "denied")),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&("slack:UDEV", "staging build", "needs-approval")),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&("slack:UDEV", &format!("approve #{id}"), "denied")),
        "{decisions:?}"
    );
    assert!(
        decisions.contains(&("slack:UADMIN", &format!("approve #{id}"), "allowed")),
        "{decisions:?}"
    );
    let requested = audit
        .iter()
        .find(|e| e.decision == "needs-approval")
        .unwrap();
    assert_eq!(
        requested.outcome.as_deref(),
        Some(format!("job #{id} succeeded").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_nobody_gives_lapses_and_the_job_fails_at_approval() {
    let fx = Fixture::new("chat-lapse", options()).await;
    let clock = ManualClock::new();
    let chat = Chat::new(runtime_with(&fx, clock.clone()));
    let mut follow = job(say(&chat, "slack:UDEV", "staging build").await);
    let id = follow.job;
    assert_eq!(follow.next().await.unwrap().state, JobState::Queued);
    clock.advance_minutes(31);
    let last = reports(follow).await.pop().unwrap();
    assert_eq!(last.state, JobState::Failed, "{last:?}");
    assert_eq!(last.step.as_deref(), Some("approval"));
    assert!(
        last.error.as_deref().unwrap().contains("nobody approved"),
        "{last:?}"
    );
    let late = answer(say(&chat, "slack:UADMIN", &format!("approve #{id}")).await);
    assert_eq!(late.tone, Tone::Refused);
    assert!(late.text.contains("expired"), "{}", late.text);
    // Nothing was deployed.
    let status = answer(say(&chat, "slack:UDEV", "staging status").await);
    assert!(status.block.unwrap().contains("nothing deployed yet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_refuse_others_with_who_why_and_until_skip_triggers_and_expire() {
    let fx = Fixture::new("chat-lock", options()).await;
    let clock = ManualClock::new();
    let chat = Chat::new(runtime_with(&fx, clock.clone()));

    let taken = answer(say(&chat, "slack:UDEV", "dev lock 1h testing payments").await);
    assert_eq!(taken.tone, Tone::Info, "{taken:?}");
    assert!(
        taken
            .text
            .contains("dev is locked by slack:UDEV: testing payments"),
        "{}",
        taken.text
    );

    // Someone else is refused, told who, why and until when; nothing is queued.
    let refused = answer(say(&chat, "slack:UDEV2", "dev build").await);
    assert_eq!(refused.tone, Tone::Refused);
    for part in ["slack:UDEV", "testing payments", "until", "1h from now"] {
        assert!(refused.text.contains(part), "{part}: {}", refused.text);
    }
    let unlock = answer(say(&chat, "slack:UDEV2", "dev unlock").await);
    assert_eq!(unlock.tone, Tone::Refused, "{unlock:?}");
    assert!(
        chat.runtime()
            .store()
            .jobs(&fx.project, None, 10)
            .unwrap()
            .is_empty()
    );

    // A push trigger skips it, and says so.
    let push = chat
        .runtime()
        .trigger(JobRequest {
            env: "dev".into(),
            kind: JobKind::Build {
                services: vec![],
                force: false,
            },
            who: "push:backend".into(),
            origin: "webhook".into(),
            trigger: "push".into(),
        })
        .unwrap();
    match push {
        Triggered::Skipped { reason } => {
            assert!(reason.contains("skipped the push build"), "{reason}");
            assert!(reason.contains("slack:UDEV"), "{reason}");
        }
        Triggered::Started(_) => panic!("a push must skip a locked environment"),
    }

    // The holder still builds (and may cancel).
    let mine = job(say(&chat, "slack:UDEV", "dev build").await);
    let cancel = answer(say(&chat, "slack:UDEV", "dev cancel").await);
    assert_eq!(cancel.tone, Tone::Info, "{cancel:?}");
    let last = reports(mine).await.pop().unwrap();
    assert!(
        matches!(last.state, JobState::Cancelled | JobState::Succeeded),
        "{last:?}"
    );

    // A developer cannot take it over; an admin can, and the holder is told.
    let no = answer(say(&chat, "slack:UDEV2", "dev lock --force").await);
    assert_eq!(no.tone, Tone::Refused);
    assert!(
        no.text
            .starts_with("dev is locked by slack:UDEV: testing payments")
            && no.text.ends_with("; only admins can take it over"),
        "a developer's --force is told whose lock it is: {}",
        no.text
    );
    let over = answer(say(&chat, "slack:UADMIN", "dev lock 30m hotfix --force").await);
    assert_eq!(over.tone, Tone::Info, "{over:?}");
    assert!(
        over.text.contains("taken over from slack:UDEV"),
        "{}",
        over.text
    );
    assert_eq!(over.mentions, vec!["slack:UDEV".to_string()]);

    // The lock shows in status and envs.
    let status = answer(say(&chat, "slack:UVIEWER", "dev status").await)
        .block
        .unwrap();
    assert!(
        status.contains("dev is locked by slack:UADMIN: hotfix"),
        "{status}"
    );
    let envs = answer(say(&chat, "slack:UVIEWER", "envs").await)
        .block
        .unwrap();
    assert!(envs.contains("locked by slack:UADMIN"), "{envs}");

    // After it expires, anyone may take it.
    clock.advance_minutes(31);
    let later = answer(say(&chat, "slack:UDEV2", "dev lock 10m").await);
    assert_eq!(later.tone, Tone::Info, "{later:?}");
    assert!(
        later.text.contains("locked by slack:UDEV2"),
        "{}",
        later.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_or_taken_as_data_and_nothing_runs() {
    let fx = Fixture::new("chat-hostile", options()).await;
    let chat = Chat::new(fx.runtime());
    let long = "build ".repeat(400);
    let inputs: Vec<String> = vec![
        "; rm -rf /".into(),
        "dev build; rm -rf /".into(),
        "dev build $(reboot)".into(),
        "dev build `id`".into(),
        "dev build\nrm -rf /".into(),
        "dev run fetch-from-worker $(cat /etc/passwd)".into(),
        "dev build --service ../../etc".into(),
        "dev build --service 'web; rm -rf /'".into(),
        "dev logs ../../etc/passwd".into(),
        "d\u{0435}v build".into(), // a Cyrillic е
        "dev build --forc".into(),
        "dve build".into(),
        "dev biuld".into(),
        "dev run nosuchtask".into(),
        long,
        "\u{202e}dev build".into(),
        "dev build \"unclosed".into(),
        "".into(),
    ];
    for text in &inputs {
        let reply = say(&chat, "slack:UDEV", text).await;
        match reply {
            Reply::Answer(a) => assert_ne!(a.tone, Tone::Info, "{text:?} → {a:?}"),
            Reply::Job(f) => {
                // Arguments are data: a task gets them as argv, never a shell.
                assert!(
                    text.starts_with("dev run fetch-from-worker"),
                    "{text:?} started #{}",
                    f.job
                );
                let last = reports(f).await.pop().unwrap();
                assert_ne!(last.state, JobState::Succeeded, "wget of a nonsense URL");
            }
            Reply::Ignored => panic!("{text:?} was ignored"),
        }
    }
    let jobs = chat.runtime().store().jobs(&fx.project, None, 100).unwrap();
    assert!(jobs.len() <= 1, "{jobs:?}");
    if let Some(j) = jobs.first() {
        assert_eq!(j.args, vec!["fetch-from-worker", "$(cat", "/etc/passwd)"]);
    }
    // Every one of them is in the audit log, on one line.
    let audit = chat.runtime().store().audit_log(&fx.project, 100).unwrap();
    assert_eq!(audit.len(), inputs.len(), "{audit:#?}");
    for e in &audit {
        assert!(!e.command.contains('\n'), "{e:?}");
        assert!(e.command.chars().count() <= 500, "{e:?}");
    }
    let suggestion = answer(say(&chat, "slack:UDEV", "dve build").await);
    assert!(suggestion.text.contains("dev"), "{}", suggestion.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_an_env_file_reaches_no_message_log_or_audit_entry() {
    const SECRET: &str = "hunter2-s3cr3t-value-9f81";
    let fx = Fixture::new(
        "chat-secret",
        Options {
            dev_yaml: "    env_file: [envs/dev.env]\n".into(),
            top_yaml: PEOPLE.into(),
            ..Options::default()
        },
    )
    .await;
    fx.commit(
        "backend",
        &[(
            "envs/dev.env",
            Some(&format!("API_TOKEN={SECRET}\nPLAIN=visible\n")),
        )],
        "dev env file",
    );
    let chat = Chat::new(fx.runtime());
    let mut emitted: Vec<String> = Vec::new();
    // A task before anything is deployed is told to build first.
    let early = reports(job(say(&chat, "slack:UDEV", "dev run leak").await)).await;
    let early = early.last().unwrap();
    assert!(
        early
            .error
            .as_deref()
            .unwrap()
            .contains("run `build` first"),
        "{early:?}"
    );
    let built = reports(job(say(&chat, "slack:UDEV", "dev build").await)).await;
    assert_eq!(built.last().unwrap().state, JobState::Succeeded);
    // A fresh process (nothing learned from plans yet) runs the task.
    let chat = Chat::new(fx.runtime());
    let follow = job(say(&chat, "slack:UDEV", "dev run leak").await);
    let id = follow.job;
    let redactor = follow.redactor.clone();
    let all = reports(follow).await;
    let last = all.last().unwrap();
    assert_eq!(last.state, JobState::Failed, "{last:?}");
    let options = RenderOptions::default();
    let secrets = chat.runtime().redactor();
    for r in &all {
        emitted.push(render::text(r, &options, &redactor));
        emitted.push(render::telegram_html(r, &options, &redactor));
        let slack = render::slack(r, &options, &redactor);
        emitted.push(slack.text);
        emitted.push(slack.blocks.to_string());
        emitted.push(format!("{r:?}"));
    }
    // Someone pastes the secret into a command (in a process that has only
    // just started: it knows the secret from the last deployment); and asks
    // for the logs.
    let chat = Chat::new(fx.runtime());
    for text in [
        format!("dev lock 1h {SECRET}"),
        format!("dev logs #{id}"),
        format!("dev run leak {SECRET}"),
        format!("dve build {SECRET}"),
    ] {
        match say(&chat, "slack:UDEV", &text).await {
            Reply::Answer(a) => {
                emitted.push(a.to_text());
                emitted.push(render::answer_slack(&a, &secrets).blocks.to_string());
                emitted.push(render::answer_telegram_html(&a, &secrets));
            }
            Reply::Job(f) => {
                for r in reports(f).await {
                    emitted.push(format!("{r:?}"));
                    emitted.push(render::text(&r, &options, &secrets));
                }
            }
            Reply::Ignored => {}
        }
    }
    let store = chat.runtime().store();
    for j in store.jobs(&fx.project, None, 100).unwrap() {
        for l in store.logs(j.id, None).unwrap() {
            emitted.push(l.line);
        }
        emitted.push(serde_json::to_string(&j).unwrap());
        for e in store.events(j.id).unwrap() {
            emitted.push(e.data.to_string());
        }
    }
    for e in store.audit_log(&fx.project, 100).unwrap() {
        emitted.push(serde_json::to_string(&e).unwrap());
    }
    let leaks: Vec<&String> = emitted.iter().filter(|t| t.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "the secret leaked into: {leaks:#?}");
    let all_text = emitted.join("\n");
    assert!(
        all_text.contains("API_TOKEN=***"),
        "the task did print it, masked"
    );
    assert!(
        all_text.contains("PLAIN=visible"),
        "other values stay readable"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_hide_server_paths_keep_code_spans_name_the_bot_and_cancel_follows_the_rules() {
    use marvin_core::command::{Command, Verb};
    let fx = Fixture::new("chat-wording", options()).await;
    let chat = Chat::new(fx.runtime());
    let root = fx.root.display().to_string();
    let no_path = |a: &Answer| {
        let all = format!("{}\n{}", a.text, a.block.as_deref().unwrap_or(""));
        assert!(!all.contains(&root), "a server path in {all:?}");
    };

    // A viewer's refusal names marvin.yml, not where it is on the server.
    let viewer = answer(say(&chat, "slack:UVIEWER", "dev build").await);
    assert_eq!(viewer.tone, Tone::Refused);
    assert!(viewer.text.contains("marvin.yml"), "{}", viewer.text);
    no_path(&viewer);
    // Nor does a configuration error reached through the door.
    let person = chat.person("slack:UDEV", "slack:CRANDOM");
    let unknown = Command {
        env: Some("nosuch".into()),
        verb: Verb::Status,
    };
    let unknown = answer(chat.door(&person, &unknown).await);
    assert!(unknown.text.contains("nosuch"), "{}", unknown.text);
    no_path(&unknown);

    // A person's backtick cannot end a code span early.
    for text in [
        "dev biuld`x",
        "dev build --forc`e",
        "dev run no`task",
        "d`v build",
    ] {
        let a = answer(say(&chat, "slack:UDEV", text).await);
        let slack = render::answer_slack(&a, &chat.runtime().redactor());
        for line in slack.text.lines() {
            assert_eq!(line.matches('`').count() % 2, 0, "{text:?} → {line:?}");
        }
    }

    // `help` names the bot as the front end knows it.
    let mut help = msg("slack:UDEV", "slack:CRANDOM", "help");
    help.bot = Some("shipit".into());
    let help = answer(chat.handle(&help).await);
    assert!(help.text.contains("@shipit [ENV] VERB"), "{}", help.text);
    assert!(!help.text.contains("@marvin"), "{}", help.text);
    let mut unknown = msg("slack:UDEV", "slack:CRANDOM", "dev biuld");
    unknown.bot = Some("shipit".into());
    let unknown = answer(chat.handle(&unknown).await);
    assert!(unknown.text.contains("`@shipit help`"), "{}", unknown.text);

    // A developer's build of a protected environment waits; a viewer and
    // another developer may not cancel it, the requester may.
    let follow = job(say(&chat, "slack:UDEV", "staging build").await);
    let id = follow.job;
    for who in ["slack:UVIEWER", "slack:UDEV2"] {
        let no = answer(say(&chat, who, &format!("cancel #{id}")).await);
        assert_eq!(no.tone, Tone::Refused, "{who}: {no:?}");
        let no = answer(say(&chat, who, "staging cancel").await);
        assert_eq!(no.tone, Tone::Refused, "{who}: {no:?}");
    }
    let yes = answer(say(&chat, "slack:UADMIN", &format!("approve #{id}")).await);
    assert_eq!(yes.tone, Tone::Info, "{yes:?}");
    assert!(yes.text.contains("(build in staging,"), "{}", yes.text);
    assert!(!yes.text.contains("  "), "{:?}", yes.text);
    let stop = answer(say(&chat, "slack:UDEV", &format!("cancel #{id}")).await);
    assert_eq!(stop.tone, Tone::Info, "{stop:?}");
    assert!(
        !stop.text.contains("  ") && !stop.text.contains(" )"),
        "{:?}",
        stop.text
    );
    let last = reports(follow).await.pop().unwrap();
    assert_eq!(last.state, JobState::Cancelled, "{last:?}");
}
