//! End-to-end: build and deploy on the real Docker engine (issue #3, "What it
//! must show"). Each test makes its own two-repo project with a unique name
//! and removes every Docker object labelled with it when it ends, pass or fail.
//! Needs a local Docker engine, git and Debian's busybox-static.

mod common_e2e;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common_e2e::{
    Fixture, Options, all_services, assert_succeeded, build, job, log_text, run, sorted,
};
use marvin_core::engine::{ContainerState, HealthState, LABEL_DEPLOY_KEY};
use marvin_core::runtime::JobKind;
use marvin_core::store::JobState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_build_starts_every_service_and_services_reach_each_other_by_name() {
    let fx = Fixture::new("first", Options::default()).await;
    let rt = fx.runtime();

    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    let built: Vec<String> = first.built.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(sorted(&built), all_services(), "every service is built");
    assert_eq!(sorted(&first.created), all_services(), "every container is created");
    let repos: Vec<&str> = first.commits.iter().map(|c| c.repo.as_str()).collect();
    assert_eq!(repos.len(), 2, "both repos are resolved: {repos:?}");

    let running = fx.services("dev").await;
    assert_eq!(running.keys().cloned().collect::<Vec<_>>(), all_services());
    for (service, c) in &running {
        assert_eq!(c.state, ContainerState::Running, "{service} runs");
        assert_eq!(c.name, fx.container_name("dev", service));
    }

    // From a one-off container on dev's network, and from a service's image.
    let fetched = job(&rt, run("dev", "fetch", &["http://api:8080/"])).await;
    assert_succeeded(&rt, &fetched);
    assert_eq!(fetched.exit_code, Some(0));
    let log = log_text(&rt, fetched.job);
    assert!(
        log.contains("task:fetch: hello from the api"),
        "the api's page is in the job log:\n{log}"
    );
    let from_worker = job(&rt, run("dev", "fetch-from-worker", &[])).await;
    assert_succeeded(&rt, &from_worker);
    assert!(log_text(&rt, from_worker.job).contains("hello from the api"));
    // `links: ["api:backend"]` gives web's network an alias for api.
    let linked = job(&rt, run("dev", "fetch", &["http://backend:8080/"])).await;
    assert_eq!(linked.exit_code, Some(0), "{}", log_text(&rt, linked.job));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_changed_file_rebuilds_and_recreates_only_its_service() {
    let fx = Fixture::new("change", Options::default()).await;
    let rt = fx.runtime();
    assert_succeeded(&rt, &job(&rt, build("dev")).await);
    let before = fx.ids("dev").await;

    fx.commit(
        "frontend",
        &[("docs/index.html", Some("<p>docs, second edition</p>\n"))],
        "docs: second edition",
    );
    let second = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &second);
    let built: Vec<&str> = second.built.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(built, vec!["docs"], "exactly one image is built");
    assert_eq!(second.recreated, vec!["docs"], "exactly one container is recreated");
    assert!(second.created.is_empty() && second.removed.is_empty());
    assert_eq!(sorted(&second.unchanged), vec!["api", "db", "web", "worker"]);

    let after = fx.ids("dev").await;
    for service in ["api", "db", "web", "worker"] {
        assert_eq!(
            after[service], before[service],
            "{service} keeps its container"
        );
    }
    assert_ne!(after["docs"], before["docs"], "docs has a new container");
    let docs = fx.services("dev").await.remove("docs").expect("docs runs");
    assert_eq!(docs.state, ContainerState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_reuses_every_image_and_is_isolated_from_dev() {
    let fx = Fixture::new("staging", Options::default()).await;
    let rt = fx.runtime();
    assert_succeeded(&rt, &job(&rt, build("dev")).await);

    let staging = job(&rt, build("staging")).await;
    assert_succeeded(&rt, &staging);
    assert!(
        staging.built.is_empty(),
        "staging builds nothing: {:?}",
        staging.built
    );
    assert_eq!(sorted(&staging.reused), all_services(), "every image is reused");
    assert_eq!(sorted(&staging.created), all_services());
    let dev = fx.ids("dev").await;
    let stg = fx.ids("staging").await;
    for service in common_e2e::SERVICES {
        assert_ne!(dev[service], stg[service], "{service} runs once per environment");
    }

    // dev's api answers to its container name on dev's network...
    let dev_api = format!("http://{}:8080/", fx.container_name("dev", "api"));
    let from_dev = job(&rt, run("dev", "fetch", &[&dev_api])).await;
    assert_eq!(from_dev.exit_code, Some(0), "{}", log_text(&rt, from_dev.job));
    // ...but not on staging's, where `api` is staging's own.
    let from_staging = job(&rt, run("staging", "fetch", &[&dev_api])).await;
    assert_eq!(from_staging.state, Some(JobState::Failed));
    assert_ne!(from_staging.exit_code, Some(0));
    let log = log_text(&rt, from_staging.job);
    assert!(
        log.contains("bad address"),
        "staging cannot resolve dev's name:\n{log}"
    );
    let own = job(&rt, run("staging", "fetch", &["http://api:8080/"])).await;
    assert_succeeded(&rt, &own);
    assert!(log_text(&rt, own.job).contains("hello from the api"));
}
