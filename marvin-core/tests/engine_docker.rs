//! The Docker engine port against the real local engine.
//!
//! Every test works under its own `io.marvin.project=test-…` label; a drop
//! guard removes everything carrying it, also when the test fails. No test
//! passes without an engine: a missing engine fails, naming where it looked.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use marvin_core::engine::{
    BuildRequest, Builder, ContainerSpec, ContainerState, DockerEngine, Engine, EngineError,
    Health, LABEL_BUILD_KEY, LABEL_PROJECT, LABEL_SERVICE, ensure_busybox_image,
};

/// One test's corner of the engine: a unique project label and its cleanup.
struct Scope {
    engine: DockerEngine,
    project: String,
}

impl Scope {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .subsec_nanos();
        let project = format!(
            "test-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let engine =
            DockerEngine::connect().expect("a Docker client for DOCKER_HOST or the local socket");
        Scope { engine, project }
    }

    /// The labels every object of this test carries.
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(LABEL_PROJECT.to_string(), self.project.clone())])
    }

    /// Labels plus one more.
    fn labels_with(&self, key: &str, value: &str) -> BTreeMap<String, String> {
        let mut labels = self.labels();
        labels.insert(key.to_string(), value.to_string());
        labels
    }

    /// A name unique to this test.
    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.project)
    }

    /// This test's busybox base image.
    async fn base_image(&self) -> String {
        let tag = format!("{}-busybox:base", self.project);
        ensure_busybox_image(&self.engine, &tag, &self.labels())
            .await
            .expect("busybox base image");
        tag
    }

    /// Build `dockerfile` with extra context files (BuildKit); returns the tag.
    async fn build(
        &self,
        tag_suffix: &str,
        dockerfile: &str,
        files: &[(&str, &str)],
        build_key: &str,
    ) -> Result<(String, Vec<String>), (EngineError, Vec<String>)> {
        self.build_with(Builder::BuildKit, tag_suffix, dockerfile, files, build_key)
            .await
    }

    /// Build `dockerfile` with this builder; returns the tag.
    async fn build_with(
        &self,
        builder: Builder,
        tag_suffix: &str,
        dockerfile: &str,
        files: &[(&str, &str)],
        build_key: &str,
    ) -> Result<(String, Vec<String>), (EngineError, Vec<String>)> {
        let tag = format!("{}-{tag_suffix}:latest", self.project);
        let lines = Mutex::new(Vec::new());
        let request = BuildRequest {
            tag: tag.clone(),
            dockerfile: "Dockerfile".to_string(),
            context_tar: context_tar(dockerfile, files),
            build_args: BTreeMap::new(),
            target: None,
            platform: None,
            labels: self.labels_with(LABEL_BUILD_KEY, build_key),
            builder,
        };
        let result = self
            .engine
            .build_image(request, &|line| {
                lines.lock().unwrap().push(line.to_string())
            })
            .await;
        let lines = lines.into_inner().unwrap();
        match result {
            Ok(_) => Ok((tag, lines)),
            Err(e) => Err((e, lines)),
        }
    }

    /// A container spec on `network` with this test's labels.
    fn spec(&self, suffix: &str, image: &str, network: &str, command: &[&str]) -> ContainerSpec {
        ContainerSpec {
            name: self.name(suffix),
            image: image.to_string(),
            command: Some(command.iter().map(|s| s.to_string()).collect()),
            labels: self.labels_with(LABEL_SERVICE, suffix),
            network: network.to_string(),
            ..Default::default()
        }
    }

    /// Run a one-off to completion; its exit code and output lines.
    async fn run(&self, spec: &ContainerSpec) -> (i64, Vec<String>) {
        let lines = Mutex::new(Vec::new());
        let code = self
            .engine
            .run_to_completion(spec, &|line| lines.lock().unwrap().push(line.to_string()))
            .await
            .expect("one-off ran");
        (code, lines.into_inner().unwrap())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let labels = self.labels();
        // Drop cannot await, and the test's runtime may be unwinding: clean up on a runtime of our own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async { DockerEngine::connect()?.remove_labelled(&labels).await })
        })
        .join();
        match cleanup {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cleanup of {} failed: {e}", self.project),
            Err(_) => eprintln!("cleanup of {} panicked", self.project),
        }
    }
}

/// A build context: the Dockerfile and some files.
fn context_tar(dockerfile: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in [("Dockerfile", dockerfile)].iter().chain(files) {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, path, content.as_bytes())
            .expect("in-memory tar");
    }
    tar.into_inner().expect("in-memory tar")
}

/// Bollard itself, for looking at what the port does not report.
async fn raw_docker() -> bollard::Docker {
    bollard::Docker::connect_with_defaults()
        .expect("docker client")
        .negotiate_version()
        .await
        .expect("docker answers")
}

/// Builds a web image serving `body` at `/` on port 8080 (httpd -h /www).
async fn web_image(scope: &Scope, body: &str) -> String {
    let base = scope.base_image().await;
    let dockerfile = format!("FROM {base}\nCOPY index.html /www/index.html\n");
    let (tag, _) = scope
        .build("web", &dockerfile, &[("index.html", body)], "web-key")
        .await
        .map_err(|(e, _)| e)
        .expect("web image builds");
    tag
}

const HTTPD: &[&str] = &["httpd", "-f", "-p", "8080", "-h", "/www"];

#[tokio::test]
async fn busybox_base_image_is_made_once_and_carries_the_labels() {
    let scope = Scope::new();
    let tag = scope.base_image().await;
    let docker = raw_docker().await;
    let first = docker.inspect_image(&tag).await.expect("image exists");

    ensure_busybox_image(&scope.engine, &tag, &scope.labels())
        .await
        .expect("second call succeeds");

    let second = docker.inspect_image(&tag).await.expect("image exists");
    assert_eq!(first.id, second.id, "the image was made again");
    let labels = second.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get(LABEL_PROJECT), Some(&scope.project));

    let spec = scope.spec("echo", &tag, "", &["echo", "busybox works"]);
    assert_eq!(
        scope.run(&spec).await,
        (0, vec!["busybox works".to_string()])
    );
}

#[tokio::test]
async fn build_streams_its_log_and_the_build_key_label_reads_back() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let dockerfile = format!("FROM {base}\nCOPY hello.txt /hello.txt\nLABEL purpose=test\n");
    let (tag, lines) = scope
        .build("app", &dockerfile, &[("hello.txt", "hello\n")], "key-abc")
        .await
        .map_err(|(e, _)| e)
        .expect("build succeeds");

    assert!(
        lines
            .iter()
            .any(|l| l.contains("COPY hello.txt /hello.txt")),
        "build log: {lines:#?}"
    );
    assert!(scope.engine.image_exists(&tag).await.expect("image_exists"));
    let keys = scope
        .engine
        .image_keys(&scope.project)
        .await
        .expect("image_keys");
    assert!(keys.contains("key-abc"), "keys: {keys:?}");
    assert!(
        scope
            .engine
            .image_keys("no-such-project")
            .await
            .expect("image_keys")
            .is_empty(),
        "another project sees no keys"
    );

    let spec = scope.spec("cat", &tag, "", &["cat", "/hello.txt"]);
    assert_eq!(scope.run(&spec).await, (0, vec!["hello".to_string()]));
}

#[tokio::test]
async fn failed_buildkit_build_reports_the_step_and_its_output() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let dockerfile = format!("FROM {base}\nRUN echo about to fail && false\n");
    let (error, streamed) = scope
        .build("broken", &dockerfile, &[], "key-broken")
        .await
        .expect_err("the build fails");

    let EngineError::BuildFailed { tag, last_lines } = &error else {
        panic!("expected BuildFailed, got {error:?}");
    };
    assert!(tag.starts_with(&scope.project), "tag: {tag}");
    assert_eq!(
        last_lines[..2],
        [
            "step [2/2] RUN echo about to fail && false failed; its last output:".to_string(),
            "  about to fail".to_string()
        ],
        "{last_lines:#?}"
    );
    assert!(
        last_lines
            .last()
            .is_some_and(|l| l.contains("exit code: 1")),
        "the engine's reason comes last: {last_lines:#?}"
    );
    assert!(streamed.iter().any(|l| l.ends_with("| about to fail")));
    assert!(
        !streamed
            .iter()
            .any(|l| l.contains("moby.buildkit") || l.contains("sha256:")),
        "no trace noise: {streamed:#?}"
    );
}

#[tokio::test]
async fn what_the_builtin_frontend_cannot_do_fails_with_the_engines_words() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    // `COPY --link` needs a newer frontend (`# syntax=`), which cannot be pulled here.
    let dockerfile = format!("FROM {base}\nCOPY --link hello.txt /hello.txt\n");
    let (error, streamed) = scope
        .build("link", &dockerfile, &[("hello.txt", "hello\n")], "key-link")
        .await
        .expect_err("the engine's frontend refuses --link");
    let EngineError::BuildFailed { last_lines, .. } = &error else {
        panic!("expected BuildFailed, got {error:?}");
    };
    assert_eq!(last_lines.len(), 1, "{last_lines:#?}");
    assert!(
        last_lines[0].contains("dockerfile parse error line 2: Unknown flag: link"),
        "{last_lines:#?}"
    );
    assert!(
        streamed.iter().any(|l| l.contains("Unknown flag: link")),
        "the job log has it too: {streamed:#?}"
    );
}

#[tokio::test]
async fn failed_legacy_build_reports_its_last_log_lines() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let dockerfile = format!("FROM {base}\nRUN echo about to fail && false\n");
    let (error, streamed) = scope
        .build_with(Builder::Legacy, "broken", &dockerfile, &[], "key-broken")
        .await
        .expect_err("the build fails");

    let EngineError::BuildFailed { tag, last_lines } = &error else {
        panic!("expected BuildFailed, got {error:?}");
    };
    assert!(tag.starts_with(&scope.project), "tag: {tag}");
    assert!(last_lines.len() <= 21, "{last_lines:#?}");
    assert!(
        last_lines.iter().any(|l| l.contains("about to fail")),
        "last lines: {last_lines:#?}"
    );
    assert!(
        last_lines
            .last()
            .is_some_and(|l| l.contains("non-zero code")),
        "the engine's reason comes last: {last_lines:#?}"
    );
    assert!(streamed.iter().any(|l| l.contains("about to fail")));
    assert!(error.to_string().contains("about to fail"), "{error}");
}

#[tokio::test]
async fn services_resolve_each_other_by_alias_on_their_network_only() {
    let scope = Scope::new();
    let image = web_image(&scope, "hello from web\n").await;
    let net = scope.name("net");
    let other_net = scope.name("other");
    for network in [&net, &other_net] {
        scope
            .engine
            .ensure_network(network, &scope.labels())
            .await
            .expect("network");
    }
    scope
        .engine
        .ensure_network(&net, &scope.labels())
        .await
        .expect("ensuring an existing network is fine");

    let mut web = scope.spec("web-1", &image, &net, HTTPD);
    web.aliases = vec!["web".to_string()];
    let id = scope.engine.run_container(&web).await.expect("web runs");
    scope
        .engine
        .wait_ready(&id, Duration::from_secs(20))
        .await
        .expect("web is ready");

    // No `-T`: Debian's static busybox 1.35 wget segfaults with it.
    let fetch = ["wget", "-q", "-O-", "http://web:8080/"];
    let same = scope.spec("client", &image, &net, &fetch);
    assert_eq!(
        scope.run(&same).await,
        (0, vec!["hello from web".to_string()])
    );

    let elsewhere = scope.spec("stranger", &image, &other_net, &fetch);
    let (code, output) = scope.run(&elsewhere).await;
    assert_eq!(code, 1, "reached web from another network: {output:?}");
    assert!(
        output.iter().any(|l| l.contains("bad address 'web")),
        "the name should not resolve there: {output:?}"
    );
}

#[tokio::test]
async fn failing_health_check_is_not_ready_and_says_unhealthy() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let mut spec = scope.spec(
        "sick",
        &base,
        "",
        &["sh", "-c", "echo starting up; sleep 60"],
    );
    spec.healthcheck = Some(Health {
        test: vec!["CMD".to_string(), "false".to_string()],
        interval_ns: Some(200_000_000),
        timeout_ns: Some(1_000_000_000),
        start_period_ns: None,
        retries: Some(1),
    });
    let id = scope
        .engine
        .run_container(&spec)
        .await
        .expect("container runs");

    let error = scope
        .engine
        .wait_ready(&id, Duration::from_secs(20))
        .await
        .expect_err("never healthy");
    let EngineError::NotReady {
        container,
        state,
        last_lines,
    } = &error
    else {
        panic!("expected NotReady, got {error:?}");
    };
    assert_eq!(container, &spec.name);
    assert_eq!(state, "unhealthy");
    assert_eq!(last_lines, &["starting up".to_string()]);
}

#[tokio::test]
async fn container_that_exits_is_not_ready_and_shows_its_log() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let spec = scope.spec(
        "crash",
        &base,
        "",
        &["sh", "-c", "echo config missing >&2; exit 3"],
    );
    let id = scope
        .engine
        .run_container(&spec)
        .await
        .expect("container starts");

    let error = scope
        .engine
        .wait_ready(&id, Duration::from_secs(20))
        .await
        .expect_err("it exited");
    let EngineError::NotReady {
        state, last_lines, ..
    } = &error
    else {
        panic!("expected NotReady, got {error:?}");
    };
    assert_eq!(state, "exited (3)");
    assert_eq!(last_lines, &["config missing".to_string()]);
}

#[tokio::test]
async fn one_off_returns_its_exit_code_streams_output_and_is_removed() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let spec = scope.spec(
        "task",
        &base,
        "",
        &["sh", "-c", "echo one; echo two >&2; exit 7"],
    );

    let (code, mut lines) = scope.run(&spec).await;

    assert_eq!(code, 7);
    lines.sort();
    assert_eq!(lines, ["one", "two"]);
    assert!(
        scope
            .engine
            .inspect_container(&spec.name)
            .await
            .expect("inspect")
            .is_none(),
        "the one-off container is left behind"
    );
}

#[tokio::test]
async fn cpu_and_memory_limits_are_applied() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let mut spec = scope.spec("small", &base, "", &["sleep", "60"]);
    spec.nano_cpus = Some(250_000_000);
    spec.memory_bytes = Some(64 * 1024 * 1024);
    let id = scope
        .engine
        .run_container(&spec)
        .await
        .expect("container runs");

    let inspected = raw_docker()
        .await
        .inspect_container(&id, None)
        .await
        .expect("inspect");
    let host = inspected.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some(250_000_000));
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
}

#[tokio::test]
async fn container_lifecycle_list_stop_start_rename_and_logs() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let spec = scope.spec(
        "svc",
        &base,
        "",
        &["sh", "-c", "echo hello; echo world; sleep 60"],
    );
    let id = scope
        .engine
        .run_container(&spec)
        .await
        .expect("container runs");
    scope
        .engine
        .wait_ready(&id, Duration::from_secs(20))
        .await
        .expect("ready");

    let listed = scope
        .engine
        .list_containers(&scope.labels())
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].name, spec.name);
    assert_eq!(listed[0].service, "svc");
    assert_eq!(listed[0].image, base);
    assert_eq!(listed[0].state, ContainerState::Running);
    assert_eq!(listed[0].health, None);
    assert!(
        scope
            .engine
            .list_containers(&scope.labels_with(LABEL_SERVICE, "other"))
            .await
            .expect("list")
            .is_empty(),
        "every given label must match"
    );

    assert_eq!(scope.engine.logs(&id, 1).await.expect("logs"), ["world"]);
    assert_eq!(
        scope.engine.logs(&id, 10).await.expect("logs"),
        ["hello", "world"]
    );

    scope.engine.stop_container(&id, 1).await.expect("stop");
    let stopped = scope
        .engine
        .inspect_container(&id)
        .await
        .expect("inspect")
        .expect("exists");
    assert!(
        matches!(stopped.state, ContainerState::Exited { .. }),
        "{:?}",
        stopped.state
    );

    let new_name = scope.name("svc-old");
    scope
        .engine
        .rename_container(&id, &new_name)
        .await
        .expect("rename");
    scope.engine.start_container(&id).await.expect("start");
    let renamed = scope
        .engine
        .inspect_container(&new_name)
        .await
        .expect("inspect")
        .expect("found by its new name");
    assert_eq!(renamed.state, ContainerState::Running);
    assert!(
        scope
            .engine
            .inspect_container(&spec.name)
            .await
            .expect("inspect")
            .is_none()
    );

    scope.engine.remove_container(&id).await.expect("remove");
    scope
        .engine
        .remove_container(&id)
        .await
        .expect("removing twice is fine");
    assert!(
        scope
            .engine
            .inspect_container(&id)
            .await
            .expect("inspect")
            .is_none()
    );
}

#[tokio::test]
async fn tagging_and_removing_an_image() {
    let scope = Scope::new();
    let base = scope.base_image().await;
    let alias = format!("{}-alias:v1", scope.project);
    scope.engine.tag_image(&base, &alias).await.expect("tag");
    assert!(scope.engine.image_exists(&alias).await.expect("exists"));
    scope.engine.remove_image(&alias).await.expect("remove");
    assert!(!scope.engine.image_exists(&alias).await.expect("exists"));
    assert!(
        scope.engine.image_exists(&base).await.expect("exists"),
        "untagging keeps the base"
    );
    scope
        .engine
        .remove_image(&alias)
        .await
        .expect("removing twice is fine");
}

#[tokio::test]
async fn remove_labelled_leaves_nothing_behind() {
    let scope = Scope::new();
    let image = web_image(&scope, "bye\n").await;
    let net = scope.name("net");
    let volume = scope.name("data");
    scope
        .engine
        .ensure_network(&net, &scope.labels())
        .await
        .expect("network");
    scope
        .engine
        .ensure_volume(&volume, &scope.labels())
        .await
        .expect("volume");
    scope
        .engine
        .ensure_volume(&volume, &scope.labels())
        .await
        .expect("volume again");
    let mut spec = scope.spec("web", &image, &net, HTTPD);
    spec.volumes = vec![marvin_core::engine::Mount::Named {
        name: volume.clone(),
        target: "/data".to_string(),
        read_only: false,
    }];
    scope
        .engine
        .run_container(&spec)
        .await
        .expect("container runs");

    scope
        .engine
        .remove_labelled(&scope.labels())
        .await
        .expect("remove_labelled");

    assert!(
        scope
            .engine
            .list_containers(&scope.labels())
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        scope
            .engine
            .image_keys(&scope.project)
            .await
            .expect("keys")
            .is_empty()
    );
    assert!(!scope.engine.image_exists(&image).await.expect("exists"));
    let docker = raw_docker().await;
    assert!(
        docker.inspect_network(&net, None).await.is_err(),
        "network left behind"
    );
    assert!(
        docker.inspect_volume(&volume).await.is_err(),
        "volume left behind"
    );
    let refused = scope.engine.remove_labelled(&BTreeMap::new()).await;
    assert!(refused.is_err(), "no labels must not mean everything");
}

#[tokio::test]
async fn unreachable_engine_names_where_it_looked() {
    // A missing socket may already fail at connect; a silent one at the first request.
    let error = match DockerEngine::connect_to("unix:///nonexistent/docker.sock") {
        Err(e) => e,
        Ok(engine) => engine.ping().await.expect_err("nothing listens there"),
    };
    assert!(
        matches!(error, EngineError::Unreachable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{message}"
    );
}
