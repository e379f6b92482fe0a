//! End-to-end: build and deploy on the real Docker engine (issue #3, "What it
//! must show"). Each test makes its own two-repo project with a unique name
//! and removes every Docker object labelled with it when it ends, pass or fail.
//! Needs a local Docker engine, git and Debian's busybox-static.

mod common_e2e;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common_e2e::{
    Fixture, Options, all_services, assert_succeeded, build, job, log_text, request, run, sorted,
};
use marvin_core::engine::{ContainerState, Engine, HealthState, LABEL_DEPLOY_KEY};
use marvin_core::marvin::PlanOptions;
use marvin_core::runtime::JobKind;
use marvin_core::store::{JobState, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_build_starts_every_service_and_services_reach_each_other_by_name() {
    let fx = Fixture::new("first", Options::default()).await;
    let rt = fx.runtime();

    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    let built: Vec<String> = first.built.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(sorted(&built), all_services(), "every service is built");
    assert_eq!(
        sorted(&first.created),
        all_services(),
        "every container is created"
    );
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

    // A service's task runs with the service's injected environment.
    let shown = job(&rt, run("dev", "show-env", &[])).await;
    assert_succeeded(&rt, &shown);
    let log = log_text(&rt, shown.job);
    let backend = first
        .commits
        .iter()
        .find(|c| c.repo == "backend")
        .expect("the backend commit");
    for line in [
        "MARVIN_ENV=dev".to_string(),
        format!("MARVIN_PROJECT={}", fx.project),
        format!("MARVIN_COMMIT_BACKEND={}", backend.id),
    ] {
        assert!(
            log.contains(&format!("task:show-env: {line}")),
            "{line} in:\n{log}"
        );
    }
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
    assert_eq!(
        second.recreated,
        vec!["docs"],
        "exactly one container is recreated"
    );
    assert!(second.created.is_empty() && second.removed.is_empty());
    assert_eq!(
        sorted(&second.unchanged),
        vec!["api", "db", "web", "worker"]
    );

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

    // A commit outside every build context changes no image and no container.
    fx.commit(
        "frontend",
        &[("README.md", Some("notes, in no build context\n"))],
        "readme",
    );
    let third = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &third);
    assert!(
        third.built.is_empty(),
        "nothing is built: {:?}",
        third.built
    );
    assert!(
        third.recreated.is_empty(),
        "nothing is recreated: {:?}",
        third.recreated
    );
    assert_eq!(fx.ids("dev").await, after);
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
    assert_eq!(
        sorted(&staging.reused),
        all_services(),
        "every image is reused"
    );
    assert_eq!(sorted(&staging.created), all_services());
    let dev = fx.ids("dev").await;
    let stg = fx.ids("staging").await;
    for service in common_e2e::SERVICES {
        assert_ne!(
            dev[service], stg[service],
            "{service} runs once per environment"
        );
    }

    // dev's api answers to its container name on dev's network...
    let dev_api = format!("http://{}:8080/", fx.container_name("dev", "api"));
    let from_dev = job(&rt, run("dev", "fetch", &[&dev_api])).await;
    assert_eq!(
        from_dev.exit_code,
        Some(0),
        "{}",
        log_text(&rt, from_dev.job)
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_healthcheck_fails_the_job_and_the_previous_container_serves_again() {
    let fx = Fixture::new("health", Options::default()).await;
    let rt = fx.runtime();
    assert_succeeded(&rt, &job(&rt, build("dev")).await);
    let before = fx.ids("dev").await;

    // api's health check fetches /healthy: without it the new container is unhealthy.
    fx.commit(
        "backend",
        &[("api/healthy", None)],
        "api: drop the health page",
    );
    let broken = job(&rt, build("dev")).await;
    assert_eq!(
        broken.state,
        Some(JobState::Failed),
        "{}",
        log_text(&rt, broken.job)
    );
    assert_eq!(broken.failed_step.as_deref(), Some("deploy"));
    let error = broken.error.clone().unwrap_or_default();
    assert!(
        error.contains("api"),
        "the error names the service: {error}"
    );
    assert_eq!(broken.rolled_back, vec!["api"]);

    let after = fx.services("dev").await;
    let ids: BTreeMap<String, String> = after
        .iter()
        .map(|(s, c)| (s.clone(), c.id.clone()))
        .collect();
    assert_eq!(ids, before, "every service runs its previous container");
    let api = fx
        .wait_healthy(&fx.container_name("dev", "api"), Duration::from_secs(30))
        .await;
    assert_eq!(api.id, before["api"]);
    assert_eq!(api.state, ContainerState::Running);
    assert_eq!(
        api.health,
        Some(HealthState::Healthy),
        "the previous api is healthy"
    );
    assert!(
        fx.containers("dev")
            .await
            .iter()
            .all(|c| !c.name.contains("-previous-")),
        "no container is left aside"
    );
    let served = job(&rt, run("dev", "fetch", &["http://api:8080/healthy"])).await;
    assert_succeeded(&rt, &served);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_before_deploy_hook_changes_no_container_and_tasks_report_exit_codes() {
    let fx = Fixture::new(
        "hook",
        Options {
            dev_before_deploy: vec!["gate"],
            ..Options::default()
        },
    )
    .await;
    // The gate passes while api's image holds /www/open.
    fx.commit(
        "backend",
        &[("api/open", Some("yes\n"))],
        "api: open the gate",
    );
    let rt = fx.runtime();
    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    assert!(log_text(&rt, first.job).contains("marvin: == before_deploy"));
    let before = fx.ids("dev").await;

    fx.commit(
        "backend",
        &[("api/open", None), ("api/index.html", Some("closed\n"))],
        "api: close the gate",
    );
    let gated = job(&rt, build("dev")).await;
    assert_eq!(
        gated.state,
        Some(JobState::Failed),
        "{}",
        log_text(&rt, gated.job)
    );
    assert_eq!(gated.failed_step.as_deref(), Some("before_deploy"));
    let error = gated.error.clone().unwrap_or_default();
    assert!(error.contains("gate"), "the error names the hook: {error}");
    assert_eq!(
        gated
            .built
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>(),
        vec!["api"]
    );
    assert!(gated.recreated.is_empty() && gated.created.is_empty() && gated.removed.is_empty());
    assert_eq!(fx.ids("dev").await, before, "no container changed");
    for (service, c) in fx.services("dev").await {
        assert_eq!(c.state, ContainerState::Running, "{service} still runs");
    }

    // A task's exit code and output, both streams, reach the summary and the log.
    let task = job(&rt, run("dev", "fail-loudly", &[])).await;
    assert_eq!(task.state, Some(JobState::Failed));
    assert_eq!(task.exit_code, Some(3));
    assert_eq!(task.failed_step.as_deref(), Some("task"));
    let log = log_text(&rt, task.job);
    assert!(log.contains("task:fail-loudly: about to fail"), "{log}");
    assert!(log.contains("task:fail-loudly: on stderr"), "{log}");
    assert!(
        task.last_lines.iter().any(|l| l.contains("about to fail")),
        "{:?}",
        task.last_lines
    );
    let ok = job(&rt, run("dev", "nap", &["0"])).await;
    assert_succeeded(&rt, &ok);
    assert_eq!(ok.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_build_names_the_service_and_its_last_log_lines() {
    let fx = Fixture::new("buildfail", Options::default()).await;
    let rt = fx.runtime();
    assert_succeeded(&rt, &job(&rt, build("dev")).await);
    let before = fx.ids("dev").await;

    fx.commit(
        "backend",
        &[(
            "worker/Dockerfile",
            Some(&format!(
                "FROM {}\nRUN echo marker-before-failure && false\nCMD [\"sh\"]\n",
                common_e2e::base_image()
            )),
        )],
        "worker: a build step that fails",
    );
    let failed = job(&rt, build("dev")).await;
    assert_eq!(
        failed.state,
        Some(JobState::Failed),
        "{}",
        log_text(&rt, failed.job)
    );
    assert_eq!(failed.failed_step.as_deref(), Some("build"));
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("worker"),
        "the error names the service: {error}"
    );
    let last = failed.last_lines.join("\n");
    assert!(
        last.contains("marker-before-failure"),
        "the last lines show the build's output:\n{last}"
    );
    assert!(
        last.contains("non-zero code") || last.contains("exit code"),
        "the last lines show why it stopped:\n{last}"
    );
    assert_eq!(fx.ids("dev").await, before, "no container changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_deploy_the_job_is_interrupted_and_the_next_build_converges() {
    let marvin = common_e2e::marvin_binary();
    let fx = Fixture::new("kill", Options::default()).await;
    {
        let rt = fx.runtime();
        assert_succeeded(&rt, &job(&rt, build("dev")).await);
    }
    fx.commit_slow_api_and_new_pages();

    let output = fx.root.join("marvin-build.out");
    let out = std::fs::File::create(&output).expect("create the output file");
    let mut child = std::process::Command::new(&marvin)
        .arg("--config")
        .arg(&fx.config)
        .arg("--data-dir")
        .arg(&fx.data)
        .args(["build", "dev"])
        .stdout(out.try_clone().expect("clone the output file"))
        .stderr(out)
        .spawn()
        .expect("start marvin build dev");
    let store = Store::open_in(&fx.data).expect("open the store");
    let shown = |output: &std::path::Path| std::fs::read_to_string(output).unwrap_or_default();
    let api = fx.container_name("dev", "api");
    let deadline = Instant::now() + Duration::from_secs(180);
    let killed_job = loop {
        if let Some(status) = child.try_wait().expect("poll marvin") {
            panic!(
                "marvin ended ({status}) before it could be killed mid-deploy:\n{}",
                shown(&output)
            );
        }
        assert!(
            Instant::now() < deadline,
            "marvin never reached a recreate in the deploy step:\n{}",
            shown(&output)
        );
        let newest = store
            .jobs(&fx.project, Some("dev"), 1)
            .expect("read the jobs")
            .pop()
            .filter(|j| j.state == JobState::Running);
        if let Some(j) = newest {
            let deploying = store
                .events(j.id)
                .expect("read the events")
                .iter()
                .any(|e| {
                    e.kind == "step"
                        && e.data.get("step").and_then(|s| s.as_str()) == Some("deploy")
                });
            let aside = fx
                .containers("dev")
                .await
                .iter()
                .any(|c| c.name.starts_with(&format!("{api}-previous-")));
            if deploying && aside {
                break j.id;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    child.kill().expect("SIGKILL marvin");
    child.wait().expect("reap marvin");
    assert_eq!(
        store
            .job(killed_job)
            .expect("read the job")
            .map(|j| j.state),
        Some(JobState::Running),
        "nobody finished the killed job"
    );

    // A new process finds the job abandoned.
    let rt = fx.runtime();
    let history = rt.history("dev", 10).expect("history");
    let killed = history
        .iter()
        .find(|j| j.id == killed_job)
        .expect("the killed job is in the history");
    assert_eq!(killed.state, JobState::Interrupted);

    let next = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &next);
    let log = log_text(&rt, next.job);
    assert!(
        log.contains(&format!(
            "removing leftover container {api}-previous-{killed_job}"
        )),
        "the api container the killed job set aside is removed:\n{log}"
    );

    // As a clean build would leave it.
    fx.assert_converged(&fx.data).await;
    let api = fx
        .wait_healthy(&fx.container_name("dev", "api"), Duration::from_secs(30))
        .await;
    assert_eq!(api.health, Some(HealthState::Healthy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_of_one_environment_queue_and_builds_of_two_environments_overlap() {
    let fx = Fixture::new("queue", Options::default()).await;
    let rt = fx.runtime();

    let a = rt.submit(build("dev")).expect("submit");
    let b = rt.submit(build("dev")).expect("submit");
    let (a, b) = tokio::join!(a.wait(), b.wait());
    assert_succeeded(&rt, &a);
    assert_succeeded(&rt, &b);
    let times = |id| {
        let j = rt.store().job(id).expect("read").expect("the job exists");
        (
            j.started_ms.expect("it started"),
            j.finished_ms.expect("it finished"),
        )
    };
    let (a_start, a_end) = times(a.job);
    let (b_start, b_end) = times(b.job);
    assert!(
        b_start >= a_end,
        "the second dev build waits for the first: #{} {a_start}..{a_end}, #{} {b_start}..{b_end}",
        a.job,
        b.job
    );
    assert_eq!(
        sorted(&b.unchanged),
        all_services(),
        "the second build plans after the first deployed"
    );

    fx.commit(
        "frontend",
        &[("docs/index.html", Some("<p>docs 2</p>\n"))],
        "docs: second version",
    );
    let dev = rt.submit(build("dev")).expect("submit");
    let staging = rt.submit(build("staging")).expect("submit");
    let (dev, staging) = tokio::join!(dev.wait(), staging.wait());
    assert_succeeded(&rt, &dev);
    assert_succeeded(&rt, &staging);
    let (d_start, d_end) = times(dev.job);
    let (s_start, s_end) = times(staging.job);
    assert!(
        d_start < s_end && s_start < d_end,
        "dev and staging build at the same time: dev {d_start}..{d_end}, staging {s_start}..{s_end}"
    );
    let built = dev.built.len() + staging.built.len();
    assert_eq!(built, 1, "the changed docs image is built once for both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_earlier_deploy_keys_and_a_queued_job_can_be_cancelled() {
    let fx = Fixture::new("rollback", Options::default()).await;
    let rt = fx.runtime();
    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    fx.commit(
        "frontend",
        &[("docs/index.html", Some("<p>docs, second edition</p>\n"))],
        "docs: second edition",
    );
    let second = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &second);
    assert_eq!(second.recreated, vec!["docs"]);

    let back = job(&rt, request("dev", JobKind::Rollback { job: None })).await;
    assert_succeeded(&rt, &back);
    assert_eq!(back.recreated, vec!["docs"], "only docs differs");
    let recorded = rt
        .store()
        .deployment_of_job(first.job)
        .expect("read")
        .expect("the first build recorded a deployment");
    let running = fx.services("dev").await;
    assert_eq!(running.keys().cloned().collect::<Vec<_>>(), all_services());
    for s in &recorded.services {
        assert_eq!(
            running[&s.service].labels.get(LABEL_DEPLOY_KEY),
            Some(&s.deploy_key),
            "{} runs the first deployment's container",
            s.service
        );
    }
    let page = job(&rt, run("dev", "fetch", &["http://docs:8080/"])).await;
    assert_succeeded(&rt, &page);
    let log = log_text(&rt, page.job);
    assert!(
        log.contains("<p>docs</p>"),
        "the first edition is served:\n{log}"
    );

    // A job waiting for the environment can be cancelled before it starts.
    let nap = rt.submit(run("dev", "nap", &["5"])).expect("submit");
    let store = rt.store().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.job(nap.id).expect("read").map(|j| j.state) != Some(JobState::Running) {
        assert!(Instant::now() < deadline, "the nap never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queued = rt.submit(build("dev")).expect("submit");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store.job(queued.id).expect("read").map(|j| j.state),
        Some(JobState::Queued),
        "the build waits behind the nap"
    );
    assert!(rt.cancel(queued.id), "this runtime runs the queued job");
    let cancelled = queued.wait().await;
    assert_eq!(cancelled.state, Some(JobState::Cancelled));
    let record = store.job(cancelled.job).expect("read").expect("exists");
    assert_eq!(record.state, JobState::Cancelled);
    assert_eq!(record.started_ms, None, "it never started");
    assert_succeeded(&rt, &nap.wait().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_rebuilds_a_pruned_image_from_the_recorded_commits() {
    let fx = Fixture::new("pruned", Options::default()).await;
    let rt = fx.runtime();
    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    fx.commit(
        "frontend",
        &[("docs/index.html", Some("<p>docs, second edition</p>\n"))],
        "docs: second edition",
    );
    assert_succeeded(&rt, &job(&rt, build("dev")).await);
    let recorded = rt
        .store()
        .deployment_of_job(first.job)
        .expect("read")
        .expect("the first build recorded a deployment");
    let old_docs = recorded
        .services
        .iter()
        .find(|s| s.service == "docs")
        .expect("docs was deployed");
    fx.engine
        .remove_image(&old_docs.image)
        .await
        .expect("prune the first docs image");
    assert!(!fx.engine.image_exists(&old_docs.image).await.expect("ask"));

    let back = job(
        &rt,
        request(
            "dev",
            JobKind::Rollback {
                job: Some(first.job),
            },
        ),
    )
    .await;
    assert_succeeded(&rt, &back);
    let built: Vec<&str> = back.built.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(built, vec!["docs"], "only the pruned image is rebuilt");
    assert!(fx.engine.image_exists(&old_docs.image).await.expect("ask"));
    let running = fx.services("dev").await;
    for s in &recorded.services {
        assert_eq!(
            running[&s.service].labels.get(LABEL_DEPLOY_KEY),
            Some(&s.deploy_key),
            "{} runs the first deployment's container",
            s.service
        );
    }
    let page = job(&rt, run("dev", "fetch", &["http://docs:8080/"])).await;
    assert_succeeded(&rt, &page);
    assert!(log_text(&rt, page.job).contains("<p>docs</p>"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_deploy_stops_between_containers_and_leaves_nothing_aside() {
    let fx = Fixture::new("cancel", Options::default()).await;
    let rt = fx.runtime();
    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    let old_keys = deploy_keys(&fx.services("dev").await);
    fx.commit_slow_api_and_new_pages();

    let handle = rt.submit(build("dev")).expect("submit");
    let api = fx.container_name("dev", "api");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        assert!(Instant::now() < deadline, "the build never set api aside");
        let aside = fx
            .containers("dev")
            .await
            .iter()
            .any(|c| c.name.starts_with(&format!("{api}-previous-")));
        if aside {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rt.cancel(handle.id));
    let cancelled = handle.wait().await;
    assert_eq!(
        cancelled.state,
        Some(JobState::Cancelled),
        "{}",
        log_text(&rt, cancelled.job)
    );

    // Every service has one container, running, either as it was or as the
    // build wanted it; nothing is left stopped or set aside.
    let leftovers: Vec<String> = fx
        .containers("dev")
        .await
        .into_iter()
        .map(|c| c.name)
        .filter(|n| n.contains("-previous-"))
        .collect();
    assert!(leftovers.is_empty(), "left aside: {leftovers:?}");
    let plan = fx
        .marvin()
        .plan("dev", &PlanOptions::default())
        .await
        .expect("plan dev");
    let running = fx.services("dev").await;
    assert_eq!(running.keys().cloned().collect::<Vec<_>>(), all_services());
    for d in &plan.desired {
        let c = &running[&d.service];
        assert_eq!(c.state, ContainerState::Running, "{} runs", d.service);
        let key = c.labels.get(LABEL_DEPLOY_KEY).cloned().unwrap_or_default();
        assert!(
            key == d.deploy_key.0 || key == old_keys[&d.service],
            "{} runs the old or the new container, not {key}",
            d.service
        );
    }
    // The cancel came while api's wave ran: api finished, web's wave never began.
    let new_key = |service: &str| {
        plan.desired
            .iter()
            .find(|d| d.service == service)
            .map(|d| d.deploy_key.0.clone())
            .expect("a desired container")
    };
    assert_eq!(
        running["api"].labels.get(LABEL_DEPLOY_KEY),
        Some(&new_key("api"))
    );
    assert_eq!(
        running["web"].labels.get(LABEL_DEPLOY_KEY),
        Some(&old_keys["web"])
    );

    let next = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &next);
    assert_eq!(
        next.recreated,
        vec!["web"],
        "the next build finishes the work"
    );
}

/// Deploy key per service.
fn deploy_keys(
    containers: &BTreeMap<String, marvin_core::engine::ObservedContainer>,
) -> BTreeMap<String, String> {
    containers
        .iter()
        .map(|(s, c)| {
            (
                s.clone(),
                c.labels.get(LABEL_DEPLOY_KEY).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_removes_its_container() {
    let fx = Fixture::new("canceltask", Options::default()).await;
    let rt = fx.runtime();
    let nap = rt.submit(run("dev", "nap", &["600"])).expect("submit");
    let deadline = Instant::now() + Duration::from_secs(60);
    while fx.containers("dev").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the task container never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    assert!(rt.cancel(nap.id));
    let cancelled = nap.wait().await;
    assert_eq!(cancelled.state, Some(JobState::Cancelled));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a cancel does not wait for the task to end"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<String> = fx
            .containers("dev")
            .await
            .into_iter()
            .map(|c| c.name)
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the task's container is left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_jobs_queue_behind_and_cancel_jobs_of_another_process() {
    let marvin = common_e2e::marvin_binary();
    let fx = Fixture::new("procs", Options::default()).await;
    let rt = fx.runtime();
    let console = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(&marvin);
        cmd.arg("--config")
            .arg(&fx.config)
            .arg("--data-dir")
            .arg(&fx.data)
            .args(args);
        cmd
    };
    let wait_running = |id| {
        let store = rt.store().clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while store.job(id).expect("read").map(|j| j.state) != Some(JobState::Running) {
                assert!(Instant::now() < deadline, "job #{id} never started");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // `marvin run` in another process waits for this process's job on dev.
    let nap = rt.submit(run("dev", "nap", &["3"])).expect("submit");
    wait_running(nap.id).await;
    let out = console(&["run", "dev", "nap", "0"])
        .output()
        .await
        .expect("run marvin");
    assert!(
        out.status.success(),
        "marvin run failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let nap_id = nap.id;
    assert_succeeded(&rt, &nap.wait().await);
    let jobs = rt.history("dev", 2).expect("history");
    let (theirs, ours) = (&jobs[0], &jobs[1]);
    assert_eq!(ours.id, nap_id);
    assert!(
        theirs.started_ms.expect("started") >= ours.finished_ms.expect("finished"),
        "the console's job started after ours ended: {jobs:?}"
    );

    // `marvin cancel` in another process stops this process's running job.
    let long = rt.submit(run("dev", "nap", &["600"])).expect("submit");
    wait_running(long.id).await;
    let out = console(&["cancel", "dev", &long.id.to_string()])
        .output()
        .await
        .expect("run marvin");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cancelled = tokio::time::timeout(Duration::from_secs(30), long.wait())
        .await
        .expect("the job stops within seconds of the request");
    assert_eq!(cancelled.state, Some(JobState::Cancelled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_hooks_run_when_a_job_fails_and_named_volumes_are_per_environment() {
    let fx = Fixture::new(
        "hooks-volumes",
        Options {
            dev_on_failure: vec!["notify"],
            ..Options::default()
        },
    )
    .await;
    let rt = fx.runtime();
    assert_succeeded(&rt, &job(&rt, build("dev")).await);
    assert_succeeded(&rt, &job(&rt, build("staging")).await);

    // Each environment has its own `data` volume: a file written in dev's is not in staging's.
    assert_succeeded(&rt, &job(&rt, run("dev", "mark-data", &[])).await);
    assert_succeeded(&rt, &job(&rt, run("dev", "check-data", &[])).await);
    let staging = job(&rt, run("staging", "check-data", &[])).await;
    assert_eq!(staging.exit_code, Some(1), "{}", log_text(&rt, staging.job));
    let project = fx.marvin().project.name.clone();
    let volumes = std::process::Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.marvin.project={project}"),
        ])
        .output()
        .expect("docker volume ls");
    let mut names: Vec<String> = String::from_utf8_lossy(&volumes.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            format!("{project}-dev-data"),
            format!("{project}-staging-data")
        ]
    );

    // A failing job runs the environment's on_failure hook, after the failure.
    fx.commit(
        "backend",
        &[("api/healthy", None)],
        "api: drop the health page",
    );
    let broken = job(&rt, build("dev")).await;
    assert_eq!(broken.state, Some(JobState::Failed));
    let log = log_text(&rt, broken.job);
    assert!(
        log.contains("on-failure hook ran"),
        "on_failure output in the job log:\n{log}"
    );
    assert!(
        log.find("== on_failure").unwrap_or(0) > log.find("== deploy").unwrap_or(usize::MAX),
        "on_failure runs after the failing deploy:\n{log}"
    );
    // staging has no on_failure hook and is untouched by dev's failure.
    assert_eq!(fx.ids("staging").await.len(), common_e2e::SERVICES.len());
}
