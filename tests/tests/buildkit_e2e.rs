//! End-to-end: BuildKit builds on the real Docker engine (issue #14, "What it
//! must show"). Each test makes its own two-repo project (see `common_e2e`)
//! and removes every Docker object labelled with it when it ends. The base
//! image is made locally: no `# syntax=` line, nothing is pulled.

mod common_e2e;

use common_e2e::{
    COMPOSE, Fixture, Options, assert_succeeded, base_image, build, job, log_text, run,
};
use marvin_core::store::JobState;

/// Lines of one stream of a job's log (`build:api`), without the stream name.
fn stream_lines(log: &str, stream: &str) -> Vec<String> {
    let prefix = format!("{stream}: ");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_cache_tmpfs_and_stage_bind_mounts_build_deploy_and_serve() {
    let fx = Fixture::new("bk-stages", Options::default()).await;
    let base = base_image();
    // Two independent stages; the served one binds both. The stage after the
    // target would fail if it were built. The build arg reaches the RUN.
    // Each step names the test's project: BuildKit's cache is the engine's,
    // and a step some earlier run on this engine built would read `CACHED`.
    let id = &fx.project;
    let dockerfile = format!(
        "FROM {base} AS left\n\
         RUN --mount=type=cache,target=/cache echo left-made > /cache/l && cp /cache/l /left.txt && echo {id}\n\
         FROM {base} AS right\n\
         RUN --mount=type=tmpfs,target=/scratch echo right-made > /scratch/r && cp /scratch/r /right.txt && echo {id}\n\
         FROM {base} AS served\n\
         ARG GREETING\n\
         COPY . /www\n\
         RUN --mount=type=bind,from=left,target=/l --mount=type=bind,from=right,target=/r \\\n\
         \x20   cat /l/left.txt /r/right.txt > /www/stages.txt && echo \"$GREETING\" > /www/greeting.txt\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n\
         FROM served AS never\n\
         RUN echo this stage is not the target && exit 1\n"
    );
    let compose = COMPOSE.replace(
        "    build: ./api\n",
        "    build:\n      context: ./api\n      target: served\n      args:\n        GREETING: hello-from-args\n",
    );
    assert_ne!(compose, COMPOSE, "the compose file builds api from ./api");
    fx.commit(
        "backend",
        &[
            ("api/Dockerfile", Some(&dockerfile)),
            ("docker-compose.yml", Some(&compose)),
        ],
        "api: BuildKit stages",
    );
    let rt = fx.runtime();

    let built = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &built);
    let log = log_text(&rt, built.job);
    let api = stream_lines(&log, "build:api");
    for step in [
        "[left 2/2] RUN --mount=type=cache,target=/cache",
        "[right 2/2] RUN --mount=type=tmpfs,target=/scratch",
        "RUN --mount=type=bind,from=left,target=/l",
    ] {
        assert!(
            api.iter()
                .any(|l| l.contains(step) && l.contains(": done in ")),
            "{step} finished, in:\n{}",
            api.join("\n")
        );
    }
    assert!(
        !api.iter().any(|l| l.contains("not the target")),
        "the stage after the target is not built:\n{}",
        api.join("\n")
    );

    let stages = job(&rt, run("dev", "fetch", &["http://api:8080/stages.txt"])).await;
    assert_succeeded(&rt, &stages);
    let out = log_text(&rt, stages.job);
    assert!(
        out.contains("task:fetch: left-made") && out.contains("task:fetch: right-made"),
        "api serves what both stages made:\n{out}"
    );
    let greeting = job(&rt, run("dev", "fetch", &["http://api:8080/greeting.txt"])).await;
    assert_succeeded(&rt, &greeting);
    let out = log_text(&rt, greeting.job);
    assert!(out.contains("task:fetch: hello-from-args"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_run_step_reports_the_service_the_step_and_its_output() {
    let fx = Fixture::new("bk-fails", Options::default()).await;
    let dockerfile = format!(
        "FROM {}\nCOPY . /www\nRUN echo compiling the api && echo the compiler broke >&2 && exit 4\n",
        base_image()
    );
    fx.commit(
        "backend",
        &[("api/Dockerfile", Some(&dockerfile))],
        "api: broken",
    );
    let rt = fx.runtime();

    let failed = job(&rt, build("dev")).await;
    assert_eq!(failed.state, Some(JobState::Failed), "{failed:?}");
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("building api failed"), "{error}");
    let report = failed.last_lines.join("\n");
    assert!(
        report.contains(
            "step [3/3] RUN echo compiling the api && echo the compiler broke >&2 && exit 4 failed"
        ),
        "the step is named:\n{report}"
    );
    for output in ["compiling the api", "the compiler broke", "exit code: 4"] {
        assert!(report.contains(output), "{output} in:\n{report}");
    }
    for noise in ["moby.buildkit", "sha256:", "aux"] {
        assert!(!report.contains(noise), "{noise} in:\n{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_where_only_a_late_layer_changed_shows_cached_steps() {
    let fx = Fixture::new("bk-cached", Options::default()).await;
    // The step names the test's project, so no earlier run on this engine
    // left it in BuildKit's cache: the first build must run it.
    let dockerfile = format!(
        "FROM {}\nRUN echo installing dependencies for {} > /deps.txt\nCOPY . /www\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
        base_image(),
        fx.project
    );
    fx.commit(
        "backend",
        &[("api/Dockerfile", Some(&dockerfile))],
        "api: a dependency step",
    );
    let rt = fx.runtime();
    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    let first_api = stream_lines(&log_text(&rt, first.job), "build:api");
    assert!(
        first_api
            .iter()
            .any(|l| l.contains("[2/3] RUN echo installing dependencies")
                && l.contains(": done in ")),
        "the first build runs the step:\n{}",
        first_api.join("\n")
    );

    fx.commit(
        "backend",
        &[("api/index.html", Some("hello again from the api\n"))],
        "api: new page",
    );
    let second = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &second);
    assert_eq!(
        second
            .built
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>(),
        ["api"],
        "only api changed"
    );
    let api = stream_lines(&log_text(&rt, second.job), "build:api");
    assert!(
        api.iter().any(|l| l.ends_with(&format!(
            "[2/3] RUN echo installing dependencies for {} > /deps.txt: CACHED",
            fx.project
        ))),
        "the unchanged step is CACHED:\n{}",
        api.join("\n")
    );
    assert!(
        api.iter()
            .any(|l| l.contains("[3/3] COPY . /www") && l.contains(": done in ")),
        "the changed step runs:\n{}",
        api.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_builder_still_builds_when_asked_for() {
    let options = Options {
        top_yaml: "  builder: legacy\n".to_string(),
        ..Options::default()
    };
    let fx = Fixture::new("bk-legacy", options).await;
    let rt = fx.runtime();
    let built = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &built);
    let api = stream_lines(&log_text(&rt, built.job), "build:api");
    assert!(
        api.iter().any(|l| l.starts_with("Step 1/")),
        "the legacy builder's log:\n{}",
        api.join("\n")
    );
    let page = job(&rt, run("dev", "fetch", &["http://api:8080/"])).await;
    assert_succeeded(&rt, &page);
    assert!(log_text(&rt, page.job).contains("task:fetch: hello from the api"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_mount_is_refused_with_the_file_and_line() {
    let fx = Fixture::new("bk-secret", Options::default()).await;
    let dockerfile = format!(
        "FROM {}\nCOPY . /www\nRUN --mount=type=secret,id=npm cat /run/secrets/npm\n",
        base_image()
    );
    fx.commit(
        "backend",
        &[("api/Dockerfile", Some(&dockerfile))],
        "api: needs a secret",
    );
    let rt = fx.runtime();
    let failed = job(&rt, build("dev")).await;
    assert_eq!(failed.state, Some(JobState::Failed), "{failed:?}");
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("building api failed")
            && error.contains("api/Dockerfile:3")
            && error.contains("--mount=type=secret"),
        "{error}"
    );
}
