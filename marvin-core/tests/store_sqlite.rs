//! The SQLite store against real files in temporary directories.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;

use marvin_core::store::{
    ApprovalState, ApproveOutcome, DeployedService, JobState, Lock, LockOutcome, NewAuditEntry,
    NewJob, Problem, SCHEMA_VERSION, Store, StoreError, UnlockOutcome,
};
use serde_json::json;
use tempfile::TempDir;

/// A moment in unix millis; tests move time by adding to it.
const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

fn temp_dir() -> TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

/// A store in `<tmp>/data/marvin.db` (the data directory does not exist yet).
fn fresh() -> (TempDir, Store) {
    let tmp = temp_dir();
    let store = Store::open_in(&tmp.path().join("data")).expect("open a fresh store");
    (tmp, store)
}

fn new_job(project: &str, env: &str, who: &str) -> NewJob {
    NewJob {
        project: project.to_owned(),
        env: env.to_owned(),
        verb: "build".to_owned(),
        args: vec!["--service".to_owned(), "web".to_owned()],
        who: who.to_owned(),
        origin: "console".to_owned(),
        trigger: "person".to_owned(),
    }
}

fn lock_of(holder: &str, reason: &str, since_ms: i64, until_ms: Option<i64>) -> Lock {
    Lock {
        project: "shop".to_owned(),
        env: "dev".to_owned(),
        holder: holder.to_owned(),
        reason: reason.to_owned(),
        since_ms,
        until_ms,
    }
}

fn service(name: &str, deploy_key: &str, commit: &str) -> DeployedService {
    DeployedService {
        service: name.to_owned(),
        deploy_key: deploy_key.to_owned(),
        build_key: Some(format!("build-{deploy_key}")),
        image: format!("marvin/shop-{name}:{deploy_key}"),
        commits: BTreeMap::from([("backend".to_owned(), commit.to_owned())]),
        spec: json!({ "name": format!("shop-dev-{name}"), "env": [["A", "1"]] }),
    }
}

// ---------------------------------------------------------------- jobs

#[test]
fn job_lifecycle_is_persisted_and_read_back_after_reopening() {
    let tmp = temp_dir();
    let data_dir = tmp.path().join("data");
    let id = {
        let store = Store::open_in(&data_dir).expect("open");
        let job = store
            .create_job(&new_job("shop", "dev", "local:alice"), T0)
            .expect("create");
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(job.created_ms, T0);
        store.start_job(job.id, T0 + 1_000).expect("start");
        store
            .finish_job(
                job.id,
                JobState::Succeeded,
                Some(&json!({ "built": ["web"], "reused": 16 })),
                None,
                T0 + 92_000,
            )
            .expect("finish");
        job.id
    };

    let store = Store::open(&data_dir.join("marvin.db")).expect("reopen");
    let job = store
        .job(id)
        .expect("read")
        .expect("the job is still there");
    assert_eq!(job.project, "shop");
    assert_eq!(job.env, "dev");
    assert_eq!(job.verb, "build");
    assert_eq!(job.args, ["--service", "web"]);
    assert_eq!(job.who, "local:alice");
    assert_eq!(job.origin, "console");
    assert_eq!(job.trigger, "person");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!(job.created_ms, T0);
    assert_eq!(job.started_ms, Some(T0 + 1_000));
    assert_eq!(job.finished_ms, Some(T0 + 92_000));
    assert_eq!(job.result, Some(json!({ "built": ["web"], "reused": 16 })));
    assert_eq!(job.error, None);
}

#[test]
fn failed_job_keeps_its_error() {
    let (_tmp, store) = fresh();
    let job = store
        .create_job(&new_job("shop", "dev", "local:alice"), T0)
        .expect("create");
    store.start_job(job.id, T0).expect("start");
    store
        .finish_job(
            job.id,
            JobState::Failed,
            None,
            Some("build of web failed"),
            T0 + 5,
        )
        .expect("finish");
    let job = store.job(job.id).expect("read").expect("exists");
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.error.as_deref(), Some("build of web failed"));
    assert_eq!(job.result, None);
}

#[test]
fn job_numbers_are_never_reused_and_unknown_numbers_read_as_none() {
    let (_tmp, store) = fresh();
    let a = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("a");
    let b = store
        .create_job(&new_job("shop", "dev", "b"), T0)
        .expect("b");
    assert!(b.id > a.id);
    assert_eq!(store.job(b.id + 100).expect("read"), None);
}

#[test]
fn jobs_are_listed_newest_first_per_environment_and_active_ones_in_queue_order() {
    let (_tmp, store) = fresh();
    let d1 = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("d1");
    let q1 = store
        .create_job(&new_job("shop", "qa", "a"), T0 + 1)
        .expect("q1");
    let d2 = store
        .create_job(&new_job("shop", "dev", "a"), T0 + 2)
        .expect("d2");
    let d3 = store
        .create_job(&new_job("shop", "dev", "a"), T0 + 3)
        .expect("d3");
    store
        .create_job(&new_job("blog", "dev", "a"), T0 + 4)
        .expect("other project");
    store.start_job(d1.id, T0 + 5).expect("start d1");
    store
        .finish_job(d1.id, JobState::Succeeded, None, None, T0 + 6)
        .expect("finish d1");
    store.start_job(d2.id, T0 + 7).expect("start d2");

    let ids = |jobs: Vec<marvin_core::store::Job>| jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.jobs("shop", Some("dev"), 10).expect("dev")),
        [d3.id, d2.id, d1.id]
    );
    assert_eq!(
        ids(store.jobs("shop", Some("dev"), 2).expect("dev 2")),
        [d3.id, d2.id]
    );
    assert_eq!(
        ids(store.jobs("shop", None, 10).expect("all")),
        [d3.id, d2.id, q1.id, d1.id]
    );
    assert_eq!(
        ids(store.active_jobs("shop", Some("dev")).expect("active")),
        [d2.id, d3.id]
    );
    assert_eq!(
        ids(store.active_jobs("shop", None).expect("active all")),
        [q1.id, d2.id, d3.id]
    );
}

#[test]
fn job_state_changes_follow_the_life_cycle() {
    let (_tmp, store) = fresh();
    let job = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("create");

    let err = store
        .finish_job(job.id, JobState::Running, None, None, T0)
        .expect_err("running is not a finished state");
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: JobState::Queued,
                to: JobState::Running,
                ..
            }
        ),
        "{err:?}"
    );

    // A queued job may be cancelled without ever running.
    store
        .finish_job(job.id, JobState::Cancelled, None, None, T0 + 1)
        .expect("cancel while queued");
    let err = store
        .start_job(job.id, T0 + 2)
        .expect_err("cancelled jobs do not start");
    assert_eq!(
        err.to_string(),
        format!(
            "state database {}: job #{} is cancelled and cannot become running",
            store.path().display(),
            job.id
        )
    );
    let err = store
        .finish_job(job.id, JobState::Succeeded, None, None, T0 + 3)
        .expect_err("finished jobs stay finished");
    assert!(
        matches!(
            err,
            StoreError::InvalidTransition {
                from: JobState::Cancelled,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store.job(job.id).expect("read").expect("exists").state,
        JobState::Cancelled
    );
}

#[test]
fn changing_an_unknown_job_names_the_job_and_the_file() {
    let (_tmp, store) = fresh();
    let err = store.start_job(42, T0).expect_err("no job 42");
    assert!(
        matches!(err, StoreError::NoSuchJob { job: 42, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "state database {}: there is no job #42",
            store.path().display()
        )
    );
    for err in [
        store
            .add_event(42, "step", &json!({}), T0)
            .expect_err("event"),
        store
            .add_log(42, "deploy", "x", T0)
            .map(|_| 0)
            .expect_err("log"),
        store
            .record_deployment(42, "shop", "dev", &[], T0)
            .expect_err("deployment"),
        store
            .request_approval(42, T0 + MINUTE, T0)
            .map(|_| 0)
            .expect_err("approval"),
    ] {
        assert!(
            matches!(err, StoreError::NoSuchJob { job: 42, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn interrupt_unfinished_marks_queued_and_running_jobs_interrupted_once() {
    let tmp = temp_dir();
    let data_dir = tmp.path().join("data");
    let (queued, running, done) = {
        let store = Store::open_in(&data_dir).expect("open");
        let queued = store
            .create_job(&new_job("shop", "dev", "a"), T0)
            .expect("q");
        let running = store
            .create_job(&new_job("shop", "qa", "a"), T0)
            .expect("r");
        let done = store
            .create_job(&new_job("shop", "prod", "a"), T0)
            .expect("d");
        store.start_job(running.id, T0 + 1).expect("start");
        store.start_job(done.id, T0 + 1).expect("start");
        store
            .finish_job(done.id, JobState::Succeeded, None, None, T0 + 2)
            .expect("finish");
        (queued.id, running.id, done.id)
        // The "crash": the store is dropped with two jobs unfinished.
    };

    let store = Store::open_in(&data_dir).expect("restart");
    let interrupted = store.interrupt_unfinished(T0 + MINUTE).expect("interrupt");
    assert_eq!(
        interrupted.iter().map(|j| j.id).collect::<Vec<_>>(),
        [queued, running]
    );
    for job in &interrupted {
        assert_eq!(job.state, JobState::Interrupted);
        assert_eq!(job.finished_ms, Some(T0 + MINUTE));
        assert_eq!(store.job(job.id).expect("read").as_ref(), Some(job));
    }
    assert_eq!(
        store.job(running).expect("read").expect("r").started_ms,
        Some(T0 + 1)
    );
    assert_eq!(
        store.job(done).expect("read").expect("d").state,
        JobState::Succeeded
    );
    assert!(store.active_jobs("shop", None).expect("active").is_empty());
    assert!(
        store
            .interrupt_unfinished(T0 + 2 * MINUTE)
            .expect("again")
            .is_empty()
    );
}

// ---------------------------------------------------------------- events and logs

#[test]
fn events_are_numbered_per_job_and_read_back_in_order() {
    let (_tmp, store) = fresh();
    let a = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("a");
    let b = store
        .create_job(&new_job("shop", "qa", "a"), T0)
        .expect("b");
    assert_eq!(
        store
            .add_event(a.id, "fetch.started", &json!({}), T0 + 1)
            .expect("e"),
        1
    );
    assert_eq!(
        store
            .add_event(b.id, "fetch.started", &json!({}), T0 + 2)
            .expect("e"),
        1
    );
    assert_eq!(
        store
            .add_event(
                a.id,
                "build.finished",
                &json!({ "service": "web", "ms": 41000 }),
                T0 + 3
            )
            .expect("e"),
        2
    );

    let events = store.events(a.id).expect("events");
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].job, events[0].seq, events[0].at_ms),
        (a.id, 1, T0 + 1)
    );
    assert_eq!(events[0].kind, "fetch.started");
    assert_eq!(
        (events[1].seq, events[1].kind.as_str()),
        (2, "build.finished")
    );
    assert_eq!(events[1].data, json!({ "service": "web", "ms": 41000 }));
    assert_eq!(store.events(b.id).expect("events").len(), 1);
}

#[test]
fn the_last_step_is_the_newest_step_event() {
    let (_tmp, store) = fresh();
    let job = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("job");
    assert_eq!(store.last_step(job.id).expect("read"), None);
    store
        .add_event(job.id, "step", &json!({ "step": "fetch" }), T0 + 1)
        .expect("e");
    store
        .add_event(job.id, "step", &json!({ "step": "build" }), T0 + 2)
        .expect("e");
    store
        .add_event(
            job.id,
            "built",
            &json!({ "step": "not a step event" }),
            T0 + 3,
        )
        .expect("e");
    assert_eq!(
        store.last_step(job.id).expect("read").as_deref(),
        Some("build")
    );
    assert_eq!(store.last_step(job.id + 1).expect("read"), None);
}

#[test]
fn logs_keep_their_order_across_streams_and_tail_returns_the_last_lines() {
    let (_tmp, store) = fresh();
    let job = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("job");
    let other = store
        .create_job(&new_job("shop", "qa", "a"), T0)
        .expect("other");
    store
        .add_log(job.id, "build:web", "Step 1/3 : FROM base", T0 + 1)
        .expect("log");
    let batch: Vec<(String, String)> = (2..=5)
        .map(|i| ("build:web".to_owned(), format!("Step {i}/5")))
        .chain([("deploy".to_owned(), "recreated web".to_owned())])
        .collect();
    store.add_logs(job.id, &batch, T0 + 2).expect("batch");
    store
        .add_log(other.id, "deploy", "elsewhere", T0 + 3)
        .expect("other log");
    store
        .add_log(job.id, "task:migrate", "done", T0 + 4)
        .expect("log");

    let all = store.logs(job.id, None).expect("all");
    assert_eq!(
        all.iter().map(|l| l.seq).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    assert_eq!(
        all.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
        [
            "Step 1/3 : FROM base",
            "Step 2/5",
            "Step 3/5",
            "Step 4/5",
            "Step 5/5",
            "recreated web",
            "done"
        ]
    );
    assert_eq!(all[5].stream, "deploy");
    assert_eq!(all[6].stream, "task:migrate");
    assert_eq!((all[6].at_ms, all[6].job), (T0 + 4, job.id));

    let tail = store.logs(job.id, Some(2)).expect("tail");
    assert_eq!(
        tail.iter()
            .map(|l| (l.seq, l.line.as_str()))
            .collect::<Vec<_>>(),
        [(6, "recreated web"), (7, "done")]
    );
    assert_eq!(store.logs(job.id, Some(100)).expect("long tail"), all);
    assert!(store.logs(job.id, Some(0)).expect("zero tail").is_empty());
    assert_eq!(store.logs(other.id, None).expect("other").len(), 1);
}

#[test]
fn an_empty_log_batch_is_fine() {
    let (_tmp, store) = fresh();
    let job = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("job");
    store.add_logs(job.id, &[], T0).expect("empty batch");
    assert!(store.logs(job.id, None).expect("logs").is_empty());
}

// ---------------------------------------------------------------- deployments

#[test]
fn deployment_history_is_newest_first_and_keeps_what_a_rollback_needs() {
    let (_tmp, store) = fresh();
    let first = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("j1");
    let second = store
        .create_job(&new_job("shop", "dev", "a"), T0 + MINUTE)
        .expect("j2");
    let in_qa = store
        .create_job(&new_job("shop", "qa", "a"), T0 + MINUTE)
        .expect("j3");

    let d1 = store
        .record_deployment(
            first.id,
            "shop",
            "dev",
            &[service("web", "k1", "aaa"), service("api", "k2", "aaa")],
            T0 + 10,
        )
        .expect("d1");
    let d2 = store
        .record_deployment(
            second.id,
            "shop",
            "dev",
            &[service("web", "k3", "bbb"), service("api", "k2", "aaa")],
            T0 + MINUTE + 10,
        )
        .expect("d2");
    store
        .record_deployment(
            in_qa.id,
            "shop",
            "qa",
            &[service("web", "k1", "aaa")],
            T0 + 20,
        )
        .expect("qa");

    let history = store.deployments("shop", "dev", 10).expect("history");
    assert_eq!(history.iter().map(|d| d.id).collect::<Vec<_>>(), [d2, d1]);
    assert_eq!(history[0].job, second.id);
    assert_eq!(history[0].at_ms, T0 + MINUTE + 10);
    // Services come back by name, with everything needed to redeploy.
    assert_eq!(
        history[0].services,
        [service("api", "k2", "aaa"), service("web", "k3", "bbb")]
    );
    assert_eq!(
        history[1].services,
        [service("api", "k2", "aaa"), service("web", "k1", "aaa")]
    );
    assert_eq!(
        store.deployments("shop", "dev", 1).expect("latest").len(),
        1
    );

    let of_first = store
        .deployment_of_job(first.id)
        .expect("of job")
        .expect("recorded");
    assert_eq!(of_first, history[1]);
    assert_eq!(store.deployment_of_job(in_qa.id + 1).expect("none"), None);
}

// ---------------------------------------------------------------- locks

#[test]
fn a_free_environment_is_taken_and_reported_as_current() {
    let (_tmp, store) = fresh();
    let outcome = store
        .lock(
            "shop",
            "dev",
            "slack:U1",
            "demo at 3",
            Some(T0 + 60 * MINUTE),
            false,
            T0,
        )
        .expect("lock");
    let expected = lock_of("slack:U1", "demo at 3", T0, Some(T0 + 60 * MINUTE));
    assert_eq!(outcome, LockOutcome::Taken(expected.clone()));
    assert_eq!(
        store.current_lock("shop", "dev", T0 + 1).expect("current"),
        Some(expected.clone())
    );
    assert_eq!(store.current_lock("shop", "qa", T0 + 1).expect("qa"), None);
    assert_eq!(store.locks("shop", T0 + 1).expect("locks"), [expected]);
}

#[test]
fn the_holder_renews_keeping_since_and_others_are_refused_with_the_holders_lock() {
    let (_tmp, store) = fresh();
    store
        .lock(
            "shop",
            "dev",
            "slack:U1",
            "demo",
            Some(T0 + 10 * MINUTE),
            false,
            T0,
        )
        .expect("take");
    let renewed = store
        .lock(
            "shop",
            "dev",
            "slack:U1",
            "demo, longer",
            Some(T0 + 30 * MINUTE),
            false,
            T0 + MINUTE,
        )
        .expect("renew");
    let held = lock_of("slack:U1", "demo, longer", T0, Some(T0 + 30 * MINUTE));
    assert_eq!(renewed, LockOutcome::Renewed(held.clone()));

    let refused = store
        .lock(
            "shop",
            "dev",
            "slack:U2",
            "testing",
            None,
            false,
            T0 + 2 * MINUTE,
        )
        .expect("refuse");
    assert_eq!(refused, LockOutcome::Refused(held.clone()));
    assert_eq!(
        store
            .current_lock("shop", "dev", T0 + 2 * MINUTE)
            .expect("current"),
        Some(held)
    );
}

#[test]
fn an_expired_lock_frees_the_environment() {
    let (_tmp, store) = fresh();
    store
        .lock(
            "shop",
            "dev",
            "slack:U1",
            "demo",
            Some(T0 + MINUTE),
            false,
            T0,
        )
        .expect("take");
    assert!(
        store
            .current_lock("shop", "dev", T0 + MINUTE - 1)
            .expect("before")
            .is_some()
    );
    assert_eq!(
        store
            .current_lock("shop", "dev", T0 + MINUTE)
            .expect("at expiry"),
        None
    );
    assert!(store.locks("shop", T0 + MINUTE).expect("locks").is_empty());

    let taken = store
        .lock(
            "shop",
            "dev",
            "slack:U2",
            "testing",
            None,
            false,
            T0 + 2 * MINUTE,
        )
        .expect("take expired");
    assert_eq!(
        taken,
        LockOutcome::Taken(lock_of("slack:U2", "testing", T0 + 2 * MINUTE, None))
    );
}

#[test]
fn take_over_replaces_the_lock_and_returns_the_previous_one() {
    let (_tmp, store) = fresh();
    store
        .lock("shop", "dev", "slack:U1", "demo", None, false, T0)
        .expect("take");
    let outcome = store
        .lock(
            "shop",
            "dev",
            "local:admin",
            "hotfix",
            Some(T0 + MINUTE),
            true,
            T0 + 5,
        )
        .expect("take over");
    assert_eq!(
        outcome,
        LockOutcome::TakenOver {
            lock: lock_of("local:admin", "hotfix", T0 + 5, Some(T0 + MINUTE)),
            previous: lock_of("slack:U1", "demo", T0, None),
        }
    );
    // Taking over a free environment is just taking it.
    let free = store
        .lock("shop", "qa", "local:admin", "hotfix", None, true, T0)
        .expect("take over free");
    assert!(matches!(free, LockOutcome::Taken(_)), "{free:?}");
}

#[test]
fn unlock_releases_for_the_holder_or_by_force_and_refuses_others() {
    let (_tmp, store) = fresh();
    assert_eq!(
        store
            .unlock("shop", "dev", "slack:U1", false, T0)
            .expect("nothing"),
        UnlockOutcome::NotLocked
    );
    store
        .lock("shop", "dev", "slack:U1", "demo", None, false, T0)
        .expect("take");
    let held = lock_of("slack:U1", "demo", T0, None);
    assert_eq!(
        store
            .unlock("shop", "dev", "slack:U2", false, T0 + 1)
            .expect("other"),
        UnlockOutcome::Refused(held.clone())
    );
    assert_eq!(
        store
            .unlock("shop", "dev", "slack:U1", false, T0 + 2)
            .expect("holder"),
        UnlockOutcome::Released(held)
    );
    assert_eq!(
        store.current_lock("shop", "dev", T0 + 3).expect("current"),
        None
    );

    store
        .lock("shop", "dev", "slack:U1", "again", None, false, T0 + 4)
        .expect("take");
    assert!(matches!(
        store.unlock("shop", "dev", "local:admin", true, T0 + 5).expect("force"),
        UnlockOutcome::Released(lock) if lock.holder == "slack:U1"
    ));

    store
        .lock(
            "shop",
            "dev",
            "slack:U1",
            "short",
            Some(T0 + 10),
            false,
            T0 + 6,
        )
        .expect("take");
    assert_eq!(
        store
            .unlock("shop", "dev", "slack:U1", false, T0 + 10)
            .expect("expired"),
        UnlockOutcome::NotLocked
    );
}

#[test]
fn concurrent_lock_attempts_from_eight_handles_take_it_exactly_once() {
    let tmp = temp_dir();
    let path = tmp.path().join("marvin.db");
    Store::open(&path).expect("create the file first");
    let handles: Vec<Store> = (0..8)
        .map(|_| Store::open(&path).expect("one handle per thread"))
        .collect();
    let barrier = Arc::new(Barrier::new(handles.len()));
    let threads: Vec<_> = handles
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                store
                    .lock("shop", "dev", &format!("user{i}"), "mine", None, false, T0)
                    .expect("lock attempt")
            })
        })
        .collect();
    let outcomes: Vec<LockOutcome> = threads
        .into_iter()
        .map(|t| t.join().expect("thread finished"))
        .collect();

    let winners: Vec<&Lock> = outcomes
        .iter()
        .filter_map(|o| match o {
            LockOutcome::Taken(lock) => Some(lock),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0];
    for outcome in &outcomes {
        match outcome {
            LockOutcome::Taken(_) => {}
            LockOutcome::Refused(holder) => assert_eq!(holder, winner),
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    let store = Store::open(&path).expect("reopen");
    assert_eq!(
        store
            .current_lock("shop", "dev", T0)
            .expect("current")
            .as_ref(),
        Some(winner)
    );
}

#[test]
fn eight_processes_worth_of_handles_can_create_a_new_file_at_once() {
    let tmp = temp_dir();
    let path = tmp.path().join("new").join("marvin.db");
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (barrier, path) = (Arc::clone(&barrier), path.clone());
            thread::spawn(move || {
                barrier.wait();
                let store = Store::open(&path).expect("concurrent open of a new file");
                store
                    .create_job(&new_job("shop", "dev", &format!("user{i}")), T0)
                    .expect("create")
                    .id
            })
        })
        .collect();
    let mut ids: Vec<i64> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    let store = Store::open(&path).expect("reopen");
    assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
}

// ---------------------------------------------------------------- audit and approvals

#[test]
fn audit_entries_are_kept_newest_first_per_project_with_their_outcome() {
    let (_tmp, store) = fresh();
    let denied = NewAuditEntry {
        who: "slack:U2".to_owned(),
        origin: "slack:C024BE91L".to_owned(),
        project: "shop".to_owned(),
        env: Some("prod".to_owned()),
        command: "prod build".to_owned(),
        decision: "denied".to_owned(),
        outcome: None,
        detail: Some("prod is protected: needs an admin".to_owned()),
    };
    let allowed = NewAuditEntry {
        env: None,
        command: "whoami".to_owned(),
        decision: "allowed".to_owned(),
        detail: None,
        ..denied.clone()
    };
    let first = store.audit(&denied, T0).expect("denied");
    let second = store.audit(&allowed, T0 + 1).expect("allowed");
    store
        .audit(
            &NewAuditEntry {
                project: "blog".to_owned(),
                ..allowed.clone()
            },
            T0 + 2,
        )
        .expect("other project");
    assert!(
        store
            .set_audit_outcome(second, "answered", None)
            .expect("outcome")
    );
    assert!(
        !store
            .set_audit_outcome(second + 100, "answered", None)
            .expect("unknown")
    );

    let log = store.audit_log("shop", 10).expect("log");
    assert_eq!(
        log.iter().map(|e| e.id).collect::<Vec<_>>(),
        [second, first]
    );
    assert_eq!(log[0].at_ms, T0 + 1);
    assert_eq!(log[0].command, "whoami");
    assert_eq!(log[0].env, None);
    assert_eq!(log[0].outcome.as_deref(), Some("answered"));
    assert_eq!(
        (
            log[1].who.as_str(),
            log[1].origin.as_str(),
            log[1].env.as_deref(),
            log[1].decision.as_str(),
            log[1].detail.as_deref()
        ),
        (
            "slack:U2",
            "slack:C024BE91L",
            Some("prod"),
            "denied",
            Some("prod is protected: needs an admin")
        )
    );
    assert_eq!(store.audit_log("shop", 1).expect("limit").len(), 1);
}

#[test]
fn an_approval_needs_someone_other_than_the_requester_before_it_expires() {
    let (_tmp, store) = fresh();
    let job = store
        .create_job(&new_job("shop", "prod", "slack:U1"), T0)
        .expect("job");
    let asked = store
        .request_approval(job.id, T0 + 10 * MINUTE, T0)
        .expect("request");
    assert_eq!(
        (asked.requester.as_str(), asked.env.as_str()),
        ("slack:U1", "prod")
    );
    assert_eq!(asked.state, ApprovalState::Pending);
    assert_eq!(
        store
            .request_approval(job.id, T0 + 99 * MINUTE, T0 + 1)
            .expect("again"),
        asked
    );
    assert_eq!(
        store.pending_approvals("shop", T0 + 1).expect("pending"),
        std::slice::from_ref(&asked)
    );

    assert_eq!(
        store.approve(job.id, "slack:U1", T0 + 2).expect("self"),
        ApproveOutcome::SelfApproval(asked.clone())
    );
    let ApproveOutcome::Approved(approved) = store
        .approve(job.id, "slack:UADMIN", T0 + 3)
        .expect("approve")
    else {
        panic!("an admin other than the requester approves");
    };
    assert_eq!(approved.state, ApprovalState::Approved);
    assert_eq!(approved.approver.as_deref(), Some("slack:UADMIN"));
    assert_eq!(approved.decided_ms, Some(T0 + 3));
    assert_eq!(
        store.approval(job.id).expect("read"),
        Some(approved.clone())
    );
    assert!(
        store
            .pending_approvals("shop", T0 + 4)
            .expect("pending")
            .is_empty()
    );
    assert_eq!(
        store
            .approve(job.id, "slack:UOTHER", T0 + 5)
            .expect("twice"),
        ApproveOutcome::AlreadyDecided(approved)
    );
    assert_eq!(
        store.approve(job.id + 1, "slack:UADMIN", T0).expect("none"),
        ApproveOutcome::NoRequest
    );
}

#[test]
fn approvals_lapse_at_their_expiry() {
    let (_tmp, store) = fresh();
    let late = store
        .create_job(&new_job("shop", "prod", "slack:U1"), T0)
        .expect("late");
    let swept = store
        .create_job(&new_job("shop", "prod", "slack:U1"), T0)
        .expect("swept");
    let fresh_job = store
        .create_job(&new_job("shop", "prod", "slack:U1"), T0)
        .expect("fresh");
    store
        .request_approval(late.id, T0 + MINUTE, T0)
        .expect("late");
    store
        .request_approval(swept.id, T0 + MINUTE, T0)
        .expect("swept");
    store
        .request_approval(fresh_job.id, T0 + 60 * MINUTE, T0)
        .expect("fresh");

    let ApproveOutcome::Expired(expired) = store
        .approve(late.id, "slack:UADMIN", T0 + MINUTE)
        .expect("late")
    else {
        panic!("approving at the expiry is too late");
    };
    assert_eq!(
        (expired.state, expired.approver),
        (ApprovalState::Expired, None)
    );

    let lapsed = store.expire_approvals(T0 + 2 * MINUTE).expect("sweep");
    assert_eq!(lapsed.iter().map(|a| a.job).collect::<Vec<_>>(), [swept.id]);
    assert_eq!(lapsed[0].state, ApprovalState::Expired);
    assert_eq!(lapsed[0].decided_ms, Some(T0 + 2 * MINUTE));
    assert_eq!(
        store
            .pending_approvals("shop", T0 + 2 * MINUTE)
            .expect("pending")
            .iter()
            .map(|a| a.job)
            .collect::<Vec<_>>(),
        [fresh_job.id]
    );
}

#[test]
fn a_job_that_finished_while_waiting_cannot_be_approved() {
    let (_tmp, store) = fresh();
    let job = store
        .create_job(&new_job("shop", "prod", "slack:U1"), T0)
        .expect("job");
    store
        .request_approval(job.id, T0 + MINUTE, T0)
        .expect("request");
    store
        .finish_job(job.id, JobState::Cancelled, None, None, T0 + 1)
        .expect("cancel");
    assert!(matches!(
        store
            .approve(job.id, "slack:UADMIN", T0 + 2)
            .expect("approve"),
        ApproveOutcome::Expired(_)
    ));
}

// ---------------------------------------------------------------- the file

#[test]
fn reopening_keeps_schema_version_and_data() {
    let tmp = temp_dir();
    let path = tmp.path().join("marvin.db");
    let id = {
        let store = Store::open(&path).expect("create");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        store
            .create_job(&new_job("shop", "dev", "a"), T0)
            .expect("job")
            .id
    };
    for _ in 0..3 {
        let store = Store::open(&path).expect("reopen");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        assert!(store.job(id).expect("read").is_some());
        assert_eq!(store.jobs("shop", None, 10).expect("jobs").len(), 1);
    }
}

#[test]
fn a_database_from_a_newer_marvin_is_refused_by_name() {
    let tmp = temp_dir();
    let path = tmp.path().join("marvin.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
    }
    let err = Store::open(&path).expect_err("too new");
    assert!(
        matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 1),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn integrity_check_says_ok() {
    let (_tmp, store) = fresh();
    let job = store
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("job");
    store.add_log(job.id, "deploy", "line", T0).expect("log");
    assert_eq!(store.integrity_check().expect("check"), "ok");
}

#[test]
fn a_file_that_is_not_a_database_is_reported_corrupt_by_name() {
    let tmp = temp_dir();
    let path = tmp.path().join("marvin.db");
    fs::write(&path, "version: 1\nservices: {}\n".repeat(200)).expect("write junk");
    let err = Store::open(&path).expect_err("not a database");
    assert_eq!(err.problem(), Some(&Problem::Corrupt), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("corrupt or is not a SQLite database"),
        "{message}"
    );
    assert!(
        !message.to_ascii_uppercase().contains("PRAGMA"),
        "no SQL in messages: {message}"
    );
}

/// Set in the child process that opens the store as an unprivileged user.
const OPEN_AS_CHILD: &str = "MARVIN_STORE_TEST_OPEN_AS_CHILD";

/// Makes a directory writable again when the test ends, so it can be removed.
struct Writable(PathBuf);

impl Drop for Writable {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn opening_in_a_read_only_directory_names_the_file() {
    if let Ok(path) = std::env::var(OPEN_AS_CHILD) {
        match Store::open(Path::new(&path)) {
            Ok(_) => println!("RESULT: opened"),
            Err(err) => println!("RESULT: {err}"),
        }
        return;
    }

    let tmp = temp_dir();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod tmp");
    let dir = tmp.path().join("read-only");
    fs::create_dir(&dir).expect("mkdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).expect("chmod 555");
    let _restore = Writable(dir.clone());
    let path = dir.join("marvin.db");

    // root ignores directory modes: then the check runs as `nobody` in a child process.
    let probe = dir.join("probe");
    let message = if fs::write(&probe, "").is_ok() {
        fs::remove_file(&probe).expect("remove probe");
        let exe = std::env::current_exe().expect("test binary");
        let output = std::process::Command::new(exe)
            .args([
                "opening_in_a_read_only_directory_names_the_file",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(OPEN_AS_CHILD, &path)
            .uid(65534)
            .gid(65534)
            .output()
            .expect("run the test binary as nobody");
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .find_map(|line| line.split_once("RESULT: ").map(|(_, result)| result))
            .unwrap_or_else(|| {
                panic!(
                    "child printed no result; stdout: {stdout}; stderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })
            .to_owned()
    } else {
        Store::open(&path)
            .expect_err("read-only directory")
            .to_string()
    };

    assert!(
        message.contains(&path.display().to_string()),
        "names the file: {message}"
    );
    assert!(
        message.contains("permission denied") || message.contains("read-only"),
        "says why: {message}"
    );
    assert!(!path.exists(), "nothing was created");
}

#[test]
fn clones_share_one_database() {
    let (_tmp, store) = fresh();
    let clone = store.clone();
    let job = clone
        .create_job(&new_job("shop", "dev", "a"), T0)
        .expect("job");
    assert_eq!(store.job(job.id).expect("read").map(|j| j.id), Some(job.id));
    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    send_sync(&store);
}
