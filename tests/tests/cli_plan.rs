//! `marvin plan` as a person runs it: the real binary against real git
//! repositories. Docker is pointed at a dead socket unless a test says
//! otherwise, so the plans assume an empty engine and touch nothing.

use std::collections::BTreeSet;

use marvin_tests::{DEAD_DOCKER_HOST, Run, TalkProject, run_marvin};
use serde_json::Value;

fn keys_of(value: &Value) -> BTreeSet<&str> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("expected an object, got {value}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn assert_clean_failure(run: &Run) {
    assert!(
        !run.success() && run.code.is_some(),
        "expected a non-zero exit code: {run:?}"
    );
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.to_lowercase().contains("backtrace"),
        "no panic, no backtrace: {}",
        run.stderr
    );
}

fn json(run: &Run) -> Value {
    assert!(run.success(), "marvin failed: {run:?}");
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", run.stdout))
}

#[test]
fn plan_json_has_the_documented_shape() {
    let talk = TalkProject::new();
    let run = run_marvin(
        &talk.dir,
        Some(DEAD_DOCKER_HOST),
        &["plan", "dev", "--json"],
    );
    let plan = json(&run);

    assert_eq!(
        keys_of(&plan),
        BTreeSet::from([
            "environment",
            "commits",
            "builds",
            "deploy",
            "assumed_empty_engine",
            "warnings"
        ])
    );
    assert_eq!(plan["environment"], "dev");

    let commits = plan["commits"].as_array().expect("commits is a list");
    assert_eq!(commits.len(), 2);
    for commit in commits {
        assert_eq!(
            keys_of(commit),
            BTreeSet::from(["repo", "commit", "author", "date", "subject"])
        );
    }
    assert_eq!(commits[0]["repo"], "backend");
    assert_eq!(commits[0]["commit"], talk.backend.rev_parse("develop"));
    assert_eq!(commits[0]["author"], marvin_tests::AUTHOR_NAME);
    assert_eq!(commits[0]["date"], marvin_tests::COMMIT_DATE);
    assert_eq!(commits[0]["subject"], "backend: first");
    assert_eq!(commits[1]["repo"], "frontend");
    assert_eq!(commits[1]["commit"], talk.frontend.rev_parse("dev-fe"));

    let builds = plan["builds"].as_array().expect("builds is a list");
    let built: BTreeSet<&str> = builds
        .iter()
        .map(|b| b["service"].as_str().expect("service is a string"))
        .collect();
    assert_eq!(built, BTreeSet::from(marvin_tests::TALK_BUILT_SERVICES));
    for build in builds {
        assert_eq!(
            keys_of(build),
            BTreeSet::from(["service", "action", "key", "image", "reason"])
        );
        assert_eq!(build["action"], "build", "an empty engine reuses nothing");
        let key = build["key"].as_str().expect("key is a string");
        assert_eq!(key.len(), 64, "a full sha-256 key: {key}");
        let image = build["image"].as_str().expect("image is a string");
        assert!(
            image.starts_with("marvin/") && image.ends_with(&key[..20]),
            "the tag carries the key: {image}"
        );
    }

    let deploy = plan["deploy"].as_array().expect("deploy is a list");
    assert_eq!(deploy.len(), 8);
    for step in deploy {
        assert_eq!(keys_of(step), BTreeSet::from(["service", "action"]));
        assert_eq!(step["action"], "create");
    }
}

#[test]
fn plan_json_keys_match_the_library_plan() {
    let talk = TalkProject::new();
    let library = talk.plan_ok("staging");
    let run = run_marvin(
        &talk.dir,
        Some(DEAD_DOCKER_HOST),
        &["plan", "staging", "--json"],
    );
    let plan = json(&run);
    for build in plan["builds"].as_array().expect("builds is a list") {
        let service = build["service"].as_str().expect("service is a string");
        assert_eq!(
            build["key"], library.build_specs[service].key.0,
            "key of `{service}`"
        );
    }
}

#[test]
fn plan_finds_marvin_yml_in_a_parent_directory() {
    let talk = TalkProject::new();
    let deep = talk.dir.join("some/sub/dir");
    std::fs::create_dir_all(&deep).expect("create a subdirectory");
    let run = run_marvin(&deep, Some(DEAD_DOCKER_HOST), &["plan", "dev", "--json"]);
    assert_eq!(json(&run)["environment"], "dev");
    assert!(
        talk.dir.join(".marvin").is_dir(),
        "the data directory is beside marvin.yml, not in the working directory"
    );
    assert!(!deep.join(".marvin").exists());
}

#[test]
fn plan_uses_the_config_given_with_c_from_any_directory() {
    let talk = TalkProject::new();
    let elsewhere = tempfile::tempdir().expect("create a temporary directory");
    let config = talk.config.display().to_string();
    for flag in ["-c", "--config"] {
        let run = run_marvin(
            elsewhere.path(),
            Some(DEAD_DOCKER_HOST),
            &[flag, &config, "plan", "staging", "--json"],
        );
        assert_eq!(json(&run)["environment"], "staging", "with {flag}");
    }
}

#[test]
fn plan_without_a_config_says_where_it_looked_and_what_to_do() {
    let empty = tempfile::tempdir().expect("create a temporary directory");
    let run = run_marvin(empty.path(), Some(DEAD_DOCKER_HOST), &["plan", "dev"]);
    assert_clean_failure(&run);
    assert!(
        run.stderr.contains("no marvin.yml in") && run.stderr.contains("-c/--config"),
        "says where it looked and what to do: {}",
        run.stderr
    );
}

#[test]
fn plan_with_no_engine_still_works_and_says_it_assumed_nothing_exists() {
    let talk = TalkProject::new();
    let run = run_marvin(&talk.dir, Some(DEAD_DOCKER_HOST), &["plan", "dev"]);
    assert!(run.success(), "plan works without an engine: {run:?}");
    assert!(
        run.stdout
            .contains("no Docker engine answered: assumed no images and no containers exist"),
        "says what it assumed: {}",
        run.stdout
    );
    assert!(run.stdout.contains("Plan for dev"), "{}", run.stdout);
    assert!(
        run.stdout.contains(
            "7 to build, 0 reused · 8 to create, 0 to recreate, 0 unchanged, 0 to remove"
        ),
        "{}",
        run.stdout
    );
    let as_json = run_marvin(
        &talk.dir,
        Some(DEAD_DOCKER_HOST),
        &["plan", "dev", "--json"],
    );
    assert_eq!(json(&as_json)["assumed_empty_engine"], true);
}

#[test]
fn plan_text_shows_each_repos_commit_and_each_services_action() {
    let talk = TalkProject::new();
    let run = run_marvin(&talk.dir, Some(DEAD_DOCKER_HOST), &["plan", "dev"]);
    assert!(run.success(), "{run:?}");
    let backend = talk.backend.rev_parse("develop");
    let frontend = talk.frontend.rev_parse("dev-fe");
    for short in [&backend[..7], &frontend[..7]] {
        assert!(
            run.stdout.contains(short),
            "shows commit {short}: {}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains(marvin_tests::AUTHOR_NAME),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("backend: first"), "{}", run.stdout);
    for service in marvin_tests::TALK_BUILT_SERVICES {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.trim_start().starts_with("build") && l.contains(service)),
            "a build line for {service}: {}",
            run.stdout
        );
    }
}

#[test]
fn plan_of_named_services_lists_only_them() {
    let talk = TalkProject::new();
    let run = run_marvin(
        &talk.dir,
        Some(DEAD_DOCKER_HOST),
        &["plan", "dev", "--service", "web", "-s", "api", "--json"],
    );
    let plan = json(&run);
    let built: BTreeSet<&str> = plan["builds"]
        .as_array()
        .expect("builds is a list")
        .iter()
        .map(|b| b["service"].as_str().expect("service is a string"))
        .collect();
    assert_eq!(built, BTreeSet::from(["api", "web"]));
}

#[test]
fn a_bad_environment_name_gets_a_did_you_mean_and_fails_without_a_panic() {
    let talk = TalkProject::new();
    let run = run_marvin(&talk.dir, Some(DEAD_DOCKER_HOST), &["plan", "stagng"]);
    assert_clean_failure(&run);
    assert!(
        run.stderr.contains("unknown environment `stagng`")
            && run.stderr.contains("did you mean `staging`"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "nothing on stdout: {}", run.stdout);
}

#[test]
fn a_missing_branch_fails_with_the_repo_url_and_branch_and_without_a_panic() {
    let talk = TalkProject::new();
    talk.write_environments("environments:\n  dev:\n    branch: release\n");
    let run = run_marvin(
        &talk.dir,
        Some(DEAD_DOCKER_HOST),
        &["plan", "dev", "--json"],
    );
    assert_clean_failure(&run);
    assert!(
        run.stderr.contains("repo `backend`")
            && run.stderr.contains(&talk.backend.url())
            && run.stderr.contains("branch `release` not found"),
        "{}",
        run.stderr
    );
    // With --json the error is JSON on stdout too.
    let out: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", run.stdout));
    let message = out["error"]["message"].as_str().expect("error.message");
    assert!(message.contains("branch `release` not found"), "{out}");
}

#[test]
fn every_problem_of_a_compose_file_at_once_with_line_and_service_and_json() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        "services:\n  api:\n    build: ./services/api\n    volumes:\n      - ./conf:/etc/conf\n      - /etc:/host-etc\n  web:\n    build: ./services/api\n    volumes: [\"${MEDIA_PATH}:/media\"]\n",
    );
    talk.backend.commit_and_push("three refused mounts");
    let text = run_marvin(&talk.dir, Some(DEAD_DOCKER_HOST), &["plan", "dev"]);
    assert_clean_failure(&text);
    for line in [
        "docker-compose.yml: service `api`: volume `./conf:/etc/conf` (docker-compose.yml:5): `conf` does not exist in the merged workspace",
        "docker-compose.yml:6:7: service `api`: volumes: `/etc` is a host path",
        "docker-compose.yml:9:5: service `web`: volumes: `:/media` has an empty source",
    ] {
        assert!(text.stderr.contains(line), "{line} in:\n{}", text.stderr);
    }

    let run = run_marvin(
        &talk.dir,
        Some(DEAD_DOCKER_HOST),
        &["plan", "dev", "--json"],
    );
    assert_clean_failure(&run);
    let out: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", run.stdout));
    let problems = out["error"]["problems"].as_array().expect("error.problems");
    let placed: Vec<(String, u64, String)> = problems
        .iter()
        .map(|p| {
            (
                p["file"].as_str().unwrap_or_default().to_string(),
                p["line"].as_u64().unwrap_or_default(),
                p["service"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        placed,
        // A mount of a path missing in git names its line in the message
        // (it is found by its text), not in `line`.
        vec![
            ("docker-compose.yml".to_string(), 0, "api".to_string()),
            ("docker-compose.yml".to_string(), 6, "api".to_string()),
            ("docker-compose.yml".to_string(), 9, "web".to_string()),
        ],
        "{out}"
    );
}

#[test]
fn a_malformed_marvin_yml_fails_with_file_line_and_column_and_without_a_panic() {
    let talk = TalkProject::new();
    marvin_tests::project(&talk.dir, "project: x\nrepos: {\n");
    let run = run_marvin(&talk.dir, Some(DEAD_DOCKER_HOST), &["plan", "dev"]);
    assert_clean_failure(&run);
    let file = talk.config.display().to_string();
    assert!(
        run.stderr.contains(&format!("{file}:3:1")),
        "names the file, line and column: {}",
        run.stderr
    );
}

/// Removes every Docker object labelled with the project when the test ends, passed or failed.
struct RemoveLabelled {
    project: String,
}

impl Drop for RemoveLabelled {
    fn drop(&mut self) {
        use marvin_core::engine::{DockerEngine, Engine, LABEL_PROJECT};
        let labels =
            std::collections::BTreeMap::from([(LABEL_PROJECT.to_string(), self.project.clone())]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("start a tokio runtime");
        let removed = runtime.block_on(async {
            DockerEngine::connect()
                .map_err(|e| e.to_string())?
                .remove_labelled(&labels)
                .await
                .map_err(|e| e.to_string())
        });
        if let Err(e) = removed {
            eprintln!("cannot remove the Docker objects of {}: {e}", self.project);
        }
    }
}

#[test]
fn plan_with_the_local_engine_reuses_an_image_that_carries_the_key() {
    let talk = TalkProject::new();
    let project = talk.project_name();
    let _cleanup = RemoveLabelled {
        project: project.clone(),
    };
    let web = talk.plan_ok("dev").build_specs["web"].clone();
    // An image with no layers is enough: the plan only reads its labels.
    let mut docker = std::process::Command::new("docker")
        .args(["build", "-q", "-t", &web.tag])
        .args(["--label", &format!("io.marvin.project={project}")])
        .args(["--label", &format!("io.marvin.build-key={}", web.key)])
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("this test needs the `docker` command and the local Docker engine");
    {
        use std::io::Write;
        let mut stdin = docker.stdin.take().expect("stdin is piped");
        stdin
            .write_all(b"FROM scratch\nLABEL io.marvin.role=test\n")
            .expect("write the Dockerfile");
    }
    let status = docker.wait().expect("docker build finishes");
    assert!(status.success(), "docker build of {} failed", web.tag);

    let run = run_marvin(&talk.dir, None, &["plan", "dev", "--json"]);
    let plan = json(&run);
    assert_eq!(
        plan["assumed_empty_engine"], false,
        "this test needs the local Docker engine (DOCKER_HOST or /var/run/docker.sock): {}",
        run.stderr
    );
    for build in plan["builds"].as_array().expect("builds is a list") {
        let (action, reason) = if build["service"] == "web" {
            ("reuse", "key-present")
        } else {
            ("build", "new-key")
        };
        assert_eq!(build["action"], action, "{build}");
        assert_eq!(build["reason"], reason, "{build}");
    }
    let text = run_marvin(&talk.dir, None, &["plan", "dev"]);
    assert!(text.success(), "{text:?}");
    assert!(
        !text.stdout.contains("no Docker engine answered"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("6 to build, 1 reused"),
        "{}",
        text.stdout
    );
}
