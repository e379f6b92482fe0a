//! Issue #2, "What it must show": build keys, branches, template variables
//! and errors, planned from real git repositories made with the `git`
//! command. No engine is connected, so every plan assumes an empty engine.
//! `git rev-parse` is the oracle for commit, tree and blob ids.

use std::collections::BTreeMap;

use marvin_core::keys::BuildKey;
use marvin_core::marvin::PlanOptions;
use marvin_core::plan::{BuildAction, BuildReason, DeployAction};
use marvin_tests::{
    AUTHOR_NAME, TALK_BUILT_SERVICES, TALK_COMPOSE, TalkProject, build_keys, changed, deploy_keys,
    plan_with,
};

/// Where each built service's context is, as (repo, path inside the repo).
const CONTEXTS: [(&str, &str, &str); 7] = [
    ("admin", "frontend", "admin"),
    ("api", "backend", "services/api"),
    ("auth", "backend", "services/auth"),
    ("base", "backend", "base"),
    ("report", "backend", "services/report"),
    ("web", "frontend", "web"),
    ("worker", "backend", "services/worker"),
];

fn keys_of(talk: &TalkProject, env: &str) -> BTreeMap<String, BuildKey> {
    build_keys(&talk.plan_ok(env))
}

// ---- keys follow exactly the inputs of each service ----

#[test]
fn the_talk_project_plans_every_built_service_with_contexts_in_both_repos() {
    let talk = TalkProject::new();
    let plan = talk.plan_ok("dev");
    let built: Vec<&str> = plan.build_specs.keys().map(String::as_str).collect();
    assert_eq!(built, TALK_BUILT_SERVICES);
    assert!(plan.assumed_empty_engine, "no engine was connected");
    assert!(
        plan.builds
            .iter()
            .all(|b| b.action == BuildAction::Build && b.reason == BuildReason::NewKey),
        "an empty engine has no image to reuse: {:?}",
        plan.builds
    );
    let deploy: BTreeMap<&str, DeployAction> = plan
        .deploy
        .iter()
        .map(|d| (d.service.as_str(), d.action))
        .collect();
    assert_eq!(deploy.len(), 8, "seven built services and db: {deploy:?}");
    assert!(deploy.values().all(|a| *a == DeployAction::Create));
    let keys = build_keys(&plan);
    let distinct: std::collections::BTreeSet<&BuildKey> = keys.values().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "every service has its own key: {keys:?}"
    );
}

#[test]
fn context_tree_ids_equal_git_rev_parse_of_commit_and_path() {
    let talk = TalkProject::new();
    let plan = talk.plan_ok("dev");
    let backend_commit = talk.backend.rev_parse("develop");
    let frontend_commit = talk.frontend.rev_parse("dev-fe");
    for (service, repo, path) in CONTEXTS {
        let (git, commit) = match repo {
            "backend" => (&talk.backend, &backend_commit),
            _ => (&talk.frontend, &frontend_commit),
        };
        let spec = &plan.build_specs[service];
        assert_eq!(
            spec.inputs.context_tree,
            git.rev_parse(&format!("{commit}:{path}")),
            "context tree of `{service}` ({repo}:{path})"
        );
    }
    // Dockerfile blob ids too, including one outside its context.
    let blob = |service: &str| plan.build_specs[service].inputs.dockerfile_blob.clone();
    assert_eq!(
        blob("auth"),
        talk.backend
            .rev_parse(&format!("{backend_commit}:shared/Dockerfile"))
    );
    assert_eq!(
        blob("web"),
        talk.frontend
            .rev_parse(&format!("{frontend_commit}:web/Dockerfile"))
    );
    assert_eq!(plan.build_specs["web"].context, "fe/web");
    assert_eq!(plan.build_specs["auth"].dockerfile, "shared/Dockerfile");
}

#[test]
fn commits_are_resolved_per_repo_with_author_date_and_subject() {
    let talk = TalkProject::new();
    talk.frontend.write("web/index.html", "<h1>web v2</h1>\n");
    talk.frontend.commit_and_push("web: second headline");
    let plan = talk.plan_ok("dev");
    let commits: Vec<(&str, &str)> = plan
        .commits
        .iter()
        .map(|c| (c.repo.as_str(), c.id.as_str()))
        .collect();
    let backend = talk.backend.rev_parse("develop");
    let frontend = talk.frontend.rev_parse("dev-fe");
    assert_eq!(
        commits,
        [
            ("backend", backend.as_str()),
            ("frontend", frontend.as_str())
        ]
    );
    let fe = &plan.commits[1];
    assert_eq!(fe.author, AUTHOR_NAME);
    assert_eq!(fe.date, "2017-05-05T10:27:00+08:00");
    assert_eq!(fe.subject, "web: second headline");
}

#[test]
fn changing_a_file_in_one_services_context_changes_only_that_services_key() {
    let talk = TalkProject::new();
    let first = talk.plan_ok("dev");
    let before = build_keys(&first);

    talk.backend.write("services/api/main.txt", "api v2\n");
    talk.backend.commit_and_push("api: v2");
    let second = talk.plan_ok("dev");
    let after_api = build_keys(&second);
    assert_eq!(changed(&before, &after_api), ["api"]);
    assert_eq!(
        changed(&deploy_keys(&first), &deploy_keys(&second)),
        ["api"],
        "a new image means a new container for that service only"
    );

    talk.frontend.write("admin/new-page.html", "<p>new</p>\n");
    talk.frontend.commit_and_push("admin: a new page");
    let after_admin = keys_of(&talk, "dev");
    assert_eq!(changed(&after_api, &after_admin), ["admin"]);

    talk.backend.remove("services/worker/job.txt");
    talk.backend.commit_and_push("worker: drop job.txt");
    assert_eq!(changed(&after_admin, &keys_of(&talk, "dev")), ["worker"]);
}

#[test]
fn changing_a_file_outside_every_context_changes_no_key() {
    let talk = TalkProject::new();
    let plan_before = talk.plan_ok("dev");
    talk.backend
        .write("README.md", "# CloudMatrix, now with docs\n")
        .write("docs/new.md", "more docs\n");
    talk.backend.commit_and_push("docs");
    talk.frontend
        .write("notes/todo.md", "- ship it\n- test it\n");
    talk.frontend.commit_and_push("notes");
    let plan_after = talk.plan_ok("dev");
    assert_ne!(
        plan_before.commits, plan_after.commits,
        "both repos moved on"
    );
    let no_change: Vec<String> = Vec::new();
    assert_eq!(
        changed(&build_keys(&plan_before), &build_keys(&plan_after)),
        no_change
    );
    assert_eq!(
        changed(&deploy_keys(&plan_before), &deploy_keys(&plan_after)),
        no_change,
        "deploy keys do not record commits either"
    );
}

#[test]
fn the_same_tree_on_another_commit_gives_the_same_keys() {
    let talk = TalkProject::new();
    let before = talk.plan_ok("dev");
    talk.backend.commit_and_push("an empty commit");
    talk.frontend.commit_and_push("another empty commit");
    let after = talk.plan_ok("dev");
    assert_ne!(before.commits[0].id, after.commits[0].id);
    assert_ne!(before.commits[1].id, after.commits[1].id);
    assert_eq!(build_keys(&before), build_keys(&after));
}

#[test]
fn the_same_tree_on_another_branch_gives_the_same_keys() {
    let talk = TalkProject::new();
    let dev = keys_of(&talk, "dev");
    // A feature branch that changes the api and changes it back: another
    // branch, other commits, the same trees.
    talk.backend.branch("feature");
    talk.backend
        .write("services/api/main.txt", "api experiment\n");
    talk.backend.commit("api: try something");
    talk.backend.write("services/api/main.txt", "api v1\n");
    talk.backend.commit_and_push("api: revert the experiment");
    talk.write_environments(
        r#"environments:
  dev:
    branch: develop
    branches: { frontend: dev-fe }
    vars: { API_VERSION: "1.0", LOG_LEVEL: debug }
  feature:
    branch: feature
    branches: { frontend: dev-fe }
    vars: { API_VERSION: "1.0", LOG_LEVEL: debug }
"#,
    );
    let feature = talk.plan_ok("feature");
    assert_eq!(
        feature.commits[0].id,
        talk.backend.rev_parse("feature"),
        "feature is planned from its own branch"
    );
    assert_ne!(feature.commits[0].id, talk.backend.rev_parse("develop"));
    assert_eq!(build_keys(&feature), dev);
}

#[test]
fn changing_a_dockerfile_outside_the_context_changes_only_that_services_key() {
    let talk = TalkProject::new();
    let before = keys_of(&talk, "dev");
    talk.backend
        .write("shared/Dockerfile", "FROM busybox\nCOPY . /srv/auth\n");
    talk.backend.commit_and_push("shared Dockerfile: new path");
    assert_eq!(changed(&before, &keys_of(&talk, "dev")), ["auth"]);
}

#[test]
fn changing_a_build_arg_changes_only_that_services_key() {
    let talk = TalkProject::new();
    let before = talk.plan_ok("dev");
    assert_eq!(
        before.build_specs["api"].inputs.args,
        BTreeMap::from([("VERSION".to_string(), "1.0".to_string())])
    );
    talk.write_environments(
        &marvin_tests::TALK_ENVIRONMENTS.replace(r#"API_VERSION: "1.0""#, r#"API_VERSION: "1.1""#),
    );
    let after = talk.plan_ok("dev");
    assert_eq!(
        after.build_specs["api"].inputs.args["VERSION"], "1.1",
        "the build arg is rendered from the environment's vars"
    );
    assert_eq!(changed(&build_keys(&before), &build_keys(&after)), ["api"]);
}

#[test]
fn changing_a_target_changes_only_that_services_key() {
    let talk = TalkProject::new();
    let before = talk.plan_ok("dev");
    assert_eq!(
        before.build_specs["worker"].inputs.target.as_deref(),
        Some("prod")
    );
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace("target: prod", "target: dev"),
    );
    talk.backend.commit_and_push("worker: dev target");
    let after = talk.plan_ok("dev");
    assert_eq!(
        after.build_specs["worker"].inputs.target.as_deref(),
        Some("dev")
    );
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        ["worker"]
    );
}

#[test]
fn changing_the_base_services_context_changes_the_dependents_key_too() {
    let talk = TalkProject::new();
    let before = talk.plan_ok("dev");
    let report = &before.build_specs["report"];
    assert_eq!(
        report.from_services,
        BTreeMap::from([("cloudmatrix/base".to_string(), "base".to_string())])
    );
    assert_eq!(
        report.inputs.from_keys["cloudmatrix/base"], before.build_specs["base"].key,
        "report is keyed by the key of the image it builds FROM"
    );
    talk.backend.write("base/lib.txt", "base v2\n");
    talk.backend.commit_and_push("base: v2");
    let after = talk.plan_ok("dev");
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        ["base", "report"]
    );
    assert_eq!(
        before.build_specs["report"].inputs.context_tree,
        after.build_specs["report"].inputs.context_tree,
        "report's own context did not change"
    );
}

#[test]
fn changing_a_runtime_setting_changes_only_that_services_deploy_key() {
    let talk = TalkProject::new();
    let before = talk.plan_ok("dev");
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(r#"ports: ["8080:80"]"#, r#"ports: ["8081:80"]"#),
    );
    talk.backend.commit_and_push("web: another port");
    let after = talk.plan_ok("dev");
    let no_change: Vec<String> = Vec::new();
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        no_change
    );
    assert_eq!(
        changed(&deploy_keys(&before), &deploy_keys(&after)),
        ["web"]
    );
}

#[test]
fn a_build_arg_from_compose_interpolation_is_part_of_the_key() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "      context: services/worker\n",
            "      context: services/worker\n      args:\n        LEVEL: ${LOG_LEVEL}\n",
        ),
    );
    talk.backend.commit_and_push("worker: LEVEL arg");
    let before = talk.plan_ok("dev");
    assert_eq!(before.build_specs["worker"].inputs.args["LEVEL"], "debug");
    talk.write_environments(
        &marvin_tests::TALK_ENVIRONMENTS.replace("LOG_LEVEL: debug", "LOG_LEVEL: trace"),
    );
    let after = talk.plan_ok("dev");
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        ["worker"],
        "api reads LOG_LEVEL only at run time"
    );
}

#[test]
fn containers_deploy_after_what_they_depend_on() {
    let talk = TalkProject::new();
    let plan = talk.plan_ok("dev");
    let wave_of = |service: &str| {
        plan.waves
            .iter()
            .position(|w| w.iter().any(|s| s == service))
            .unwrap_or_else(|| panic!("{service} is in no wave: {:?}", plan.waves))
    };
    assert!(wave_of("db") < wave_of("api"), "{:?}", plan.waves);
}

#[test]
fn from_an_untagged_name_depends_on_the_service_that_builds_it_as_latest() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "image: cloudmatrix/base\n",
            "image: cloudmatrix/base:latest\n",
        ),
    );
    talk.backend.commit_and_push("base: explicit latest tag");
    let plan = talk.plan_ok("dev");
    assert_eq!(
        plan.build_specs["report"].from_services,
        BTreeMap::from([("cloudmatrix/base".to_string(), "base".to_string())]),
        "`FROM cloudmatrix/base` is `cloudmatrix/base:latest`"
    );
}

#[test]
fn from_through_a_build_arg_depends_on_the_service_that_builds_it() {
    let talk = TalkProject::new();
    talk.backend.write(
        "services/report/Dockerfile",
        "ARG BASE=busybox\nFROM ${BASE}\nCOPY . /report\n",
    );
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "  report:\n    build: ./services/report\n",
            "  report:\n    build:\n      context: ./services/report\n      args: { BASE: cloudmatrix/base }\n",
        ),
    );
    talk.backend
        .commit_and_push("report: base image from a build arg");
    let before = talk.plan_ok("dev");
    assert_eq!(
        before.build_specs["report"].inputs.from_keys["cloudmatrix/base"],
        before.build_specs["base"].key
    );
    talk.backend.write("base/lib.txt", "base v2\n");
    talk.backend.commit_and_push("base: v2");
    let after = talk.plan_ok("dev");
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        ["base", "report"]
    );
}

#[test]
fn a_service_that_runs_an_image_built_by_another_service_follows_its_key() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &format!(
            "{TALK_COMPOSE}  base-shell:\n    image: cloudmatrix/base\n    command: [\"sh\"]\n"
        ),
    );
    talk.backend
        .commit_and_push("a service running the base image");
    let before = talk.plan_ok("dev");
    let shell = before
        .desired
        .iter()
        .find(|d| d.service == "base-shell")
        .expect("base-shell is deployed");
    assert_eq!(
        shell.spec.image, before.build_specs["base"].tag,
        "the image built here, not a registry image of that name"
    );
    talk.backend.write("base/lib.txt", "base v2\n");
    talk.backend.commit_and_push("base: v2");
    let after = talk.plan_ok("dev");
    assert_eq!(
        changed(&deploy_keys(&before), &deploy_keys(&after)),
        ["base", "base-shell", "report"]
    );
}

#[test]
fn building_one_service_also_builds_the_images_it_needs_but_touches_only_its_container() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &format!(
            "{TALK_COMPOSE}  base-shell:\n    image: cloudmatrix/base\n    command: [\"sh\"]\n"
        ),
    );
    talk.backend
        .commit_and_push("a service running the base image");
    let options = PlanOptions {
        services: vec!["base-shell".into(), "report".into()],
        ..PlanOptions::default()
    };
    let plan = plan_with(&talk.config, "dev", &options).expect("plan");
    let built: Vec<&str> = plan.builds.iter().map(|b| b.service.as_str()).collect();
    assert_eq!(built, ["base", "report"]);
    let deployed: Vec<&str> = plan.deploy.iter().map(|d| d.service.as_str()).collect();
    assert_eq!(deployed, ["base-shell", "report"]);
}

#[test]
fn dockerfiles_that_build_from_each_other_are_an_error_naming_them() {
    let talk = TalkProject::new();
    talk.backend
        .write("base/Dockerfile", "FROM cloudmatrix/report\n");
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "    build: ./services/report\n",
            "    build: ./services/report\n    image: cloudmatrix/report\n",
        ),
    );
    talk.backend.commit_and_push("a cycle");
    let err = talk.plan_err("dev");
    assert!(err.contains("cycle"), "says what is wrong: {err}");
    assert!(
        err.contains("base") && err.contains("report"),
        "names both: {err}"
    );
}

#[test]
fn rewriting_the_compose_file_without_changing_its_meaning_changes_no_key() {
    let talk = TalkProject::new();
    let before = talk.plan_ok("dev");
    talk.backend.write(
        "docker-compose.yml",
        r#"x-common: &common
  restart: unless-stopped
  labels:
    team: cloudmatrix

# The same services, in another order, spelled differently.
services:
  db:
    image: busybox
    command: [sleep, "3600"]
  admin:
    build: fe/admin
  web:
    build:
      context: fe/web/
    ports:
      - "8080:80"
    <<: *common
  report: { build: { context: services/report } }
  base:
    image: cloudmatrix/base
    build:
      context: ./base/.
  auth:
    build:
      dockerfile: ../../shared/Dockerfile
      context: services/auth
    <<: *common
  worker:
    build: { target: prod, context: ./services/worker }
    <<: *common
  api:
    depends_on:
      db:
        condition: service_started
    environment:
      - LOG_LEVEL=${LOG_LEVEL:-warn}
    build:
      args:
        - VERSION={{API_VERSION}}
      context: ./services/api
    <<: *common
"#,
    );
    talk.backend.commit_and_push("compose: reformatted");
    let after = talk.plan_ok("dev");
    let no_change: Vec<String> = Vec::new();
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        no_change
    );
    assert_eq!(
        changed(&deploy_keys(&before), &deploy_keys(&after)),
        no_change
    );
}

#[test]
fn the_top_level_services_format_gives_the_same_keys_as_the_services_format() {
    let talk = TalkProject::new();
    let before = talk.plan_ok("dev");
    let v1 = "api:\n  build: ./services/api\n  environment: { LOG_LEVEL: \"${LOG_LEVEL:-warn}\" }\nweb:\n  build: ./fe/web\n";
    let v2 = "services:\n  api:\n    build: ./services/api\n    environment: { LOG_LEVEL: \"${LOG_LEVEL:-warn}\" }\n  web:\n    build: ./fe/web\n";
    talk.backend.write("docker-compose.yml", v1);
    talk.backend.commit_and_push("compose: the talk's format");
    let old_format = talk.plan_ok("dev");
    talk.backend.write("docker-compose.yml", v2);
    talk.backend.commit_and_push("compose: services format");
    let new_format = talk.plan_ok("dev");
    assert_eq!(build_keys(&old_format), build_keys(&new_format));
    assert_eq!(deploy_keys(&old_format), deploy_keys(&new_format));
    assert_eq!(
        build_keys(&old_format)["web"],
        build_keys(&before)["web"],
        "web's inputs are the same as in the full file"
    );
}

#[test]
fn changing_an_environments_env_file_changes_deploy_keys_but_no_build_key() {
    let talk = TalkProject::new();
    talk.backend
        .write("envs/common.env", "# shared\nTZ=Asia/Shanghai\n");
    talk.backend.commit_and_push("envs: common");
    talk.write_environments(&marvin_tests::TALK_ENVIRONMENTS.replace(
        "    branches: { frontend: dev-fe }\n",
        "    branches: { frontend: dev-fe }\n    env_file: [envs/common.env]\n",
    ));
    let before = talk.plan_ok("dev");
    talk.backend.write("envs/common.env", "# shared\nTZ=UTC\n");
    talk.backend.commit_and_push("envs: UTC");
    let after = talk.plan_ok("dev");
    let no_change: Vec<String> = Vec::new();
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        no_change
    );
    let mut every_service: Vec<String> = deploy_keys(&before).into_keys().collect();
    every_service.sort();
    assert_eq!(
        changed(&deploy_keys(&before), &deploy_keys(&after)),
        every_service
    );
}

// ---- environments: branches and template variables ----

#[test]
fn a_branch_override_per_repo_is_honoured() {
    let talk = TalkProject::new();
    // dev-fe moves ahead of frontend's master; develop moves ahead of backend's master.
    talk.frontend
        .write("web/index.html", "<h1>web on dev-fe</h1>\n");
    talk.frontend.commit_and_push("web: dev headline");
    talk.backend
        .write("services/api/main.txt", "api on develop\n");
    talk.backend.commit_and_push("api: develop");
    talk.write_environments(&format!(
        "{}  qa:\n    branch: develop\n    vars: {{ API_VERSION: \"1.0\", LOG_LEVEL: debug }}\n",
        marvin_tests::TALK_ENVIRONMENTS
    ));
    // qa has no override: it wants frontend's `develop`, which does not exist.
    talk.frontend.checkout("master");
    talk.frontend.branch("develop");
    talk.frontend.push();

    let ids = |plan: &marvin_core::resolve::Plan| -> Vec<String> {
        plan.commits.iter().map(|c| c.id.clone()).collect()
    };
    let dev = talk.plan_ok("dev");
    assert_eq!(
        ids(&dev),
        [
            talk.backend.rev_parse("develop"),
            talk.frontend.rev_parse("dev-fe")
        ]
    );
    let staging = talk.plan_ok("staging");
    assert_eq!(
        ids(&staging),
        [
            talk.backend.rev_parse("master"),
            talk.frontend.rev_parse("master")
        ]
    );
    let qa = talk.plan_ok("qa");
    assert_eq!(
        ids(&qa),
        [
            talk.backend.rev_parse("develop"),
            talk.frontend.rev_parse("develop")
        ]
    );
    assert_eq!(
        dev.build_specs["web"].inputs.context_tree,
        talk.frontend.rev_parse("dev-fe:web")
    );
    assert_eq!(
        staging.build_specs["web"].inputs.context_tree,
        talk.frontend.rev_parse("master:web")
    );
    assert_ne!(dev.build_specs["web"].key, staging.build_specs["web"].key);
}

#[test]
fn an_alias_plans_its_environment() {
    let talk = TalkProject::new();
    let plan = talk.plan_ok("develop");
    assert_eq!(plan.environment, "dev");
    assert_eq!(build_keys(&plan), keys_of(&talk, "dev"));
}

#[test]
fn template_variables_differ_per_environment_and_change_the_rendered_compose() {
    let talk = TalkProject::new();
    // Both environments see the same trees (develop == master, dev-fe == master)…
    let dev = talk.plan_ok("dev");
    let staging = talk.plan_ok("staging");
    assert_eq!(
        dev.commits.iter().map(|c| &c.id).collect::<Vec<_>>(),
        staging.commits.iter().map(|c| &c.id).collect::<Vec<_>>()
    );
    // …so only the service whose build arg comes from `{{ API_VERSION }}` differs…
    assert_eq!(dev.build_specs["api"].inputs.args["VERSION"], "1.0");
    assert_eq!(staging.build_specs["api"].inputs.args["VERSION"], "2.0");
    assert_eq!(changed(&build_keys(&dev), &build_keys(&staging)), ["api"]);
    // …and `${LOG_LEVEL}` renders each environment's value into the container.
    let log_level = |plan: &marvin_core::resolve::Plan| {
        let api = plan
            .desired
            .iter()
            .find(|d| d.service == "api")
            .expect("api is deployed");
        api.spec
            .env
            .iter()
            .find(|(k, _)| k == "LOG_LEVEL")
            .map(|(_, v)| v.clone())
    };
    assert_eq!(log_level(&dev).as_deref(), Some("debug"));
    assert_eq!(log_level(&staging).as_deref(), Some("info"));
}

#[test]
fn a_variable_used_only_at_run_time_changes_the_deploy_key_but_not_the_build_key() {
    let talk = TalkProject::new();
    let before = talk.plan_ok("dev");
    talk.write_environments(
        &marvin_tests::TALK_ENVIRONMENTS.replace("LOG_LEVEL: debug", "LOG_LEVEL: trace"),
    );
    let after = talk.plan_ok("dev");
    let no_change: Vec<String> = Vec::new();
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        no_change
    );
    assert_eq!(
        changed(&deploy_keys(&before), &deploy_keys(&after)),
        ["api"]
    );
}

#[test]
fn only_the_named_services_are_planned() {
    let talk = TalkProject::new();
    let plan = plan_with(
        &talk.config,
        "dev",
        &PlanOptions {
            services: vec!["web".into(), "report".into()],
            ..PlanOptions::default()
        },
    )
    .expect("plan two services");
    let built: Vec<&str> = plan.builds.iter().map(|b| b.service.as_str()).collect();
    // report builds FROM base's image, so base's image is planned too.
    assert_eq!(built, ["base", "report", "web"]);
    let deployed: Vec<&str> = plan.deploy.iter().map(|d| d.service.as_str()).collect();
    assert_eq!(deployed, ["report", "web"]);
}

// ---- where contexts and branches are ----

#[test]
fn a_context_that_holds_another_repos_mount_is_keyed_by_that_repos_tree_too() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &format!("{TALK_COMPOSE}  everything:\n    build: .\n"),
    );
    talk.backend
        .write("Dockerfile", "FROM busybox\nCOPY . /all\n");
    talk.backend
        .commit_and_push("a service built from the whole workspace");
    let before = talk.plan_ok("dev");
    let everything = &before.build_specs["everything"];
    assert_eq!(
        everything.inputs.context_tree,
        talk.backend.rev_parse("develop^{tree}")
    );
    assert_eq!(
        everything.inputs.context_mounts,
        [("fe".to_string(), talk.frontend.rev_parse("dev-fe^{tree}"))]
    );
    talk.frontend.write("web/index.html", "<h1>web v2</h1>\n");
    talk.frontend.commit_and_push("web: v2");
    let after = talk.plan_ok("dev");
    assert_eq!(
        changed(&build_keys(&before), &build_keys(&after)),
        ["everything", "web"],
        "a change in the mounted repo is inside the root context"
    );
}

#[test]
fn a_context_at_a_repos_mount_point_is_that_repos_root_tree() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &format!("{TALK_COMPOSE}  frontend-all:\n    build:\n      context: ./fe\n      dockerfile: web/Dockerfile\n"),
    );
    talk.backend
        .commit_and_push("a service built from the whole frontend");
    let plan = talk.plan_ok("dev");
    let spec = &plan.build_specs["frontend-all"];
    assert_eq!(
        spec.inputs.context_tree,
        talk.frontend.rev_parse("dev-fe^{tree}")
    );
    assert_eq!(spec.dockerfile, "fe/web/Dockerfile");
    assert_eq!(
        spec.inputs.dockerfile_blob,
        plan.build_specs["web"].inputs.dockerfile_blob
    );
}

#[test]
fn contexts_are_relative_to_a_compose_file_in_a_subdirectory() {
    let talk = TalkProject::new();
    talk.backend.write(
        "deploy/compose.yml",
        "services:\n  api:\n    build: ../services/api\n  web:\n    build:\n      context: ../fe/web\n",
    );
    talk.backend.commit_and_push("compose file in deploy/");
    let text = std::fs::read_to_string(&talk.config).expect("read marvin.yml");
    marvin_tests::project(
        &talk.dir,
        &text.replace("compose: docker-compose.yml", "compose: deploy/compose.yml"),
    );
    let plan = talk.plan_ok("dev");
    assert_eq!(plan.build_specs["api"].context, "services/api");
    assert_eq!(
        plan.build_specs["web"].inputs.context_tree,
        talk.frontend.rev_parse("dev-fe:web")
    );
}

#[test]
fn a_branch_with_a_slash_in_its_name_resolves() {
    let talk = TalkProject::new();
    talk.frontend.branch("feature/login");
    talk.frontend.write("web/login.html", "<form></form>\n");
    let id = talk.frontend.commit_and_push("web: login page");
    talk.write_environments(
        "environments:\n  login:\n    branch: develop\n    branches: { frontend: feature/login }\n    vars: { API_VERSION: \"1.0\" }\n",
    );
    let plan = talk.plan_ok("login");
    assert_eq!(plan.commits[1].id, id);
    assert_eq!(
        plan.build_specs["web"].inputs.context_tree,
        talk.frontend.rev_parse("feature/login:web")
    );
}

#[test]
fn a_force_pushed_branch_is_planned_at_its_new_commit() {
    let talk = TalkProject::new();
    talk.backend.write("services/api/main.txt", "api v2\n");
    talk.backend.commit_and_push("api: v2");
    let before = talk.plan_ok("dev");
    // Rewrite develop: the v2 commit is replaced by another one.
    talk.backend.git(&["reset", "-q", "--hard", "HEAD~1"]);
    talk.backend
        .write("services/api/main.txt", "api v2, rewritten\n");
    let rewritten = talk.backend.commit("api: v2 done differently");
    talk.backend
        .git(&["push", "-q", "--force", "origin", "develop"]);
    let after = talk.plan_ok("dev");
    assert_eq!(after.commits[0].id, rewritten);
    assert_eq!(
        after.build_specs["api"].inputs.context_tree,
        talk.backend.rev_parse(&format!("{rewritten}:services/api"))
    );
    assert_eq!(changed(&build_keys(&before), &build_keys(&after)), ["api"]);
}

#[test]
fn a_branch_deleted_on_the_remote_is_missing_on_the_next_plan() {
    let talk = TalkProject::new();
    talk.plan_ok("dev");
    talk.frontend.checkout("master");
    talk.frontend
        .git(&["push", "-q", "origin", "--delete", "dev-fe"]);
    let err = talk.plan_err("dev");
    assert!(
        err.contains("repo `frontend`") && err.contains("branch `dev-fe` not found"),
        "the mirror forgets deleted branches instead of planning stale code: {err}"
    );
}

#[test]
fn file_urls_plan_like_plain_paths() {
    let talk = TalkProject::new();
    let by_path = keys_of(&talk, "dev");
    let text = std::fs::read_to_string(&talk.config).expect("read marvin.yml");
    let text = text
        .replace(
            &format!("url: {}", talk.backend.url()),
            &format!("url: file://{}", talk.backend.url()),
        )
        .replace(
            &format!("url: {}", talk.frontend.url()),
            &format!("url: file://{}", talk.frontend.url()),
        );
    assert_eq!(text.matches("file://").count(), 2);
    marvin_tests::project(&talk.dir, &text);
    std::fs::remove_dir_all(talk.dir.join(".marvin")).expect("forget the mirrors");
    assert_eq!(keys_of(&talk, "dev"), by_path);
}

// ---- bad input: a clear message, never a panic ----

#[test]
fn a_malformed_marvin_yml_names_the_file_line_and_column() {
    let talk = TalkProject::new();
    let bad = "project: broken\nrepos:\n  backend:\n    url: [unclosed\n    path: .\n";
    marvin_tests::project(&talk.dir, bad);
    let err = talk.plan_err("dev");
    // serde_yaml notices the unclosed `[` where the next mapping line begins.
    let file = talk.config.display().to_string();
    assert_eq!(err, format!("{file}:5:9: did not find expected ',' or ']'"));
}

#[test]
fn an_unknown_key_in_marvin_yml_is_named_by_its_path_with_a_suggestion() {
    let talk = TalkProject::new();
    talk.write_environments(
        "environments:\n  dev:\n    branch: develop\n    brnches: { frontend: dev-fe }\n",
    );
    let err = talk.plan_err("dev");
    assert!(err.contains("marvin.yml"), "names the file: {err}");
    assert!(
        err.contains("environments.dev"),
        "names the key path: {err}"
    );
    assert!(err.contains("brnches"), "names the unknown key: {err}");
    assert!(err.contains("did you mean `branches`"), "suggests: {err}");
}

#[test]
fn an_override_for_an_unknown_repo_is_named_by_its_key_path() {
    let talk = TalkProject::new();
    talk.write_environments(
        "environments:\n  dev:\n    branch: develop\n    branches: { frontnd: dev-fe }\n",
    );
    let err = talk.plan_err("dev");
    assert!(
        err.contains("environments.dev.branches.frontnd"),
        "names the key path: {err}"
    );
    assert!(err.contains("frontend"), "suggests the repo: {err}");
}

#[test]
fn an_unknown_environment_suggests_the_nearest_one() {
    let talk = TalkProject::new();
    let err = talk.plan_err("stagin");
    assert!(err.contains("stagin"), "names what was typed: {err}");
    assert!(err.contains("did you mean `staging`"), "suggests: {err}");
}

#[test]
fn a_malformed_compose_file_names_the_file_line_and_column() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        "services:\n  api:\n    build: ./services/api\n   image: [oops\n",
    );
    talk.backend.commit_and_push("break the compose file");
    let err = talk.plan_err("dev");
    assert_eq!(err, "docker-compose.yml:4:4: did not find expected key");
}

#[test]
fn a_compose_file_the_schema_rejects_names_the_key_path() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        "services:\n  api:\n    build: ./services/api\n    restart: 3\n",
    );
    talk.backend.commit_and_push("restart is a string");
    let err = talk.plan_err("dev");
    assert!(err.contains("docker-compose.yml"), "names the file: {err}");
    assert!(
        err.contains("services.api.restart"),
        "names the key path: {err}"
    );
}

#[test]
fn an_unknown_template_variable_is_named_with_a_suggestion() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace("{{ API_VERSION }}", "{{ API_VERSON }}"),
    );
    talk.backend.commit_and_push("typo");
    let err = talk.plan_err("dev");
    // `{{ API_VERSION }}` is on line 12 of TALK_COMPOSE; its `{{` at column 19.
    assert_eq!(
        err,
        "docker-compose.yml:12:19: unknown template variable `API_VERSON`; did you mean `API_VERSION`?"
    );
}

#[test]
fn an_unknown_template_variable_is_named_with_the_known_ones() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace("{{ API_VERSION }}", "{{ CLUSTER_TYPE }}"),
    );
    talk.backend
        .commit_and_push("a variable dev does not define");
    let err = talk.plan_err("dev");
    assert_eq!(
        err,
        "docker-compose.yml:12:19: unknown template variable `CLUSTER_TYPE`; known: `API_VERSION`, `LOG_LEVEL`"
    );
}

#[test]
fn an_unset_required_variable_gives_its_message() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "LOG_LEVEL: ${LOG_LEVEL:-warn}",
            "DB_HOST: ${DB_HOST:?set DB_HOST in the environment's vars}",
        ),
    );
    talk.backend.commit_and_push("require DB_HOST");
    let err = talk.plan_err("dev");
    assert!(err.contains("docker-compose.yml"), "names the file: {err}");
    assert!(
        err.contains("services.api.environment"),
        "names the key path: {err}"
    );
    assert!(
        err.contains("`DB_HOST` is required: set DB_HOST in the environment's vars"),
        "names the variable and gives the file's message: {err}"
    );
    // With the variable set, the same file plans.
    talk.write_environments(
        &marvin_tests::TALK_ENVIRONMENTS.replace("LOG_LEVEL: debug", "DB_HOST: db"),
    );
    talk.plan_ok("dev");
}

#[test]
fn a_missing_build_context_names_the_service_and_the_path() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace("context: ./services/auth", "context: ./services/authz"),
    );
    talk.backend.commit_and_push("auth moved?");
    let err = talk.plan_err("dev");
    assert!(err.contains("service `auth`"), "names the service: {err}");
    assert!(err.contains("services/authz"), "names the context: {err}");
    assert!(err.contains("does not exist"), "says what is wrong: {err}");
}

#[test]
fn a_build_context_that_is_a_file_names_the_service() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace("build: ./services/report", "build: ./README.md"),
    );
    talk.backend.commit_and_push("report: a file as context");
    let err = talk.plan_err("dev");
    assert!(err.contains("service `report`"), "names the service: {err}");
    assert!(err.contains("README.md"), "names the path: {err}");
    assert!(err.contains("not a directory"), "says what is wrong: {err}");
}

#[test]
fn a_dockerfile_that_is_a_directory_names_the_service() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "dockerfile: ../../shared/Dockerfile",
            "dockerfile: ../../shared",
        ),
    );
    talk.backend
        .commit_and_push("auth: a directory as Dockerfile");
    let err = talk.plan_err("dev");
    assert!(err.contains("service `auth`"), "names the service: {err}");
    assert!(err.contains("shared"), "names the path: {err}");
    assert!(err.contains("not a file"), "says what is wrong: {err}");
}

#[test]
fn a_build_context_that_leaves_the_workspace_names_the_service() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace("build: ./base", "build: ../outside"),
    );
    talk.backend.commit_and_push("base: outside");
    let err = talk.plan_err("dev");
    assert_eq!(
        err,
        "service `base`: build context `../outside` leaves the workspace"
    );
}

#[test]
fn a_missing_dockerfile_names_the_service_and_the_path() {
    let talk = TalkProject::new();
    talk.frontend.remove("admin/Dockerfile");
    talk.frontend.commit_and_push("admin: no Dockerfile");
    let err = talk.plan_err("dev");
    assert!(err.contains("service `admin`"), "names the service: {err}");
    assert!(
        err.contains("fe/admin/Dockerfile"),
        "names the Dockerfile: {err}"
    );
}

#[test]
fn an_unreachable_repo_names_the_repo_and_the_url() {
    let talk = TalkProject::new();
    let missing = talk.root.path().join("remotes/nowhere.git");
    let text = std::fs::read_to_string(&talk.config).expect("read marvin.yml");
    let text = text.replace(&talk.frontend.url(), &missing.display().to_string());
    marvin_tests::project(&talk.dir, &text);
    let err = talk.plan_err("dev");
    assert!(err.contains("repo `frontend`"), "names the repo: {err}");
    assert!(
        err.contains(&missing.display().to_string()),
        "names the URL: {err}"
    );
}

#[test]
fn an_unreachable_https_remote_names_the_repo_and_the_url() {
    let talk = TalkProject::new();
    let url = "https://127.0.0.1:9/cloudmatrix/frontend.git";
    let text = std::fs::read_to_string(&talk.config).expect("read marvin.yml");
    marvin_tests::project(&talk.dir, &text.replace(&talk.frontend.url(), url));
    let err = talk.plan_err("dev");
    assert!(
        err.starts_with(&format!("repo `frontend`: cannot fetch from {url}: ")),
        "names the repo and the URL: {err}"
    );
}

#[test]
fn a_missing_branch_names_the_repo_the_url_and_the_branch() {
    let talk = TalkProject::new();
    talk.write_environments(
        "environments:\n  dev:\n    branch: develop\n    branches: { frontend: dev-fee }\n",
    );
    let err = talk.plan_err("dev");
    assert!(err.contains("repo `frontend`"), "names the repo: {err}");
    assert!(err.contains(&talk.frontend.url()), "names the URL: {err}");
    assert!(err.contains("branch `dev-fee`"), "names the branch: {err}");
    assert!(err.contains("dev-fe"), "suggests the nearest branch: {err}");
}

#[test]
fn an_unknown_service_suggests_the_nearest_one() {
    let talk = TalkProject::new();
    let err = plan_with(
        &talk.config,
        "dev",
        &PlanOptions {
            services: vec!["reprot".into()],
            ..PlanOptions::default()
        },
    )
    .map(|_| ())
    .expect_err("reprot is not a service")
    .to_string();
    assert!(err.contains("reprot"), "names what was typed: {err}");
    assert!(err.contains("did you mean `report`"), "suggests: {err}");
}

#[test]
fn a_host_path_from_a_branch_is_refused_unless_the_environment_allows_it() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        "services:\n  api:\n    build: ./services/api\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
    );
    talk.backend
        .commit_and_push("mount the host's docker socket");
    let err = talk.plan_err("dev");
    assert!(err.contains("api"), "names the service: {err}");
    assert!(
        err.contains("`/var/run/docker.sock` is a host path, and dev does not allow it"),
        "{err}"
    );
    // An environment that lists it plans it.
    let allowing = marvin_tests::TALK_ENVIRONMENTS.replacen(
        "    branch: develop\n",
        "    branch: develop\n    allow_host_paths: [/var/run/docker.sock]\n",
        1,
    );
    talk.write_environments(&allowing);
    let plan = talk.plan_ok("dev");
    assert!(plan.desired.iter().any(|d| d.service == "api"));
}

#[test]
fn privileged_host_network_pid_and_capabilities_from_a_branch_are_refused_not_applied() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        "services:\n  api:\n    build: ./services/api\n    privileged: true\n    network_mode: host\n    pid: host\n    cap_add: [SYS_ADMIN]\n",
    );
    talk.backend.commit_and_push("ask for the host");
    // Nothing reaches the engine: the plan is refused, each field at its line.
    let err = talk.plan_err("dev");
    for (line, written, field) in [
        (4, "privileged: true", "privileged"),
        (5, "network_mode: host", "network_mode"),
        (6, "pid: host", "pid"),
        (7, "cap_add: [SYS_ADMIN]", "cap_add"),
    ] {
        assert!(
            err.contains(&format!(
                "docker-compose.yml:{line}:5: service `api`: `{written}` gives the container power over the host, and dev does not allow it"
            )) && err.contains(&format!("`environments.dev.allow_powerful: [{field}]`")),
            "{field}: {err}"
        );
    }
}

#[test]
fn the_env_file_beside_the_compose_file_feeds_interpolation_below_the_vars() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "LOG_LEVEL: ${LOG_LEVEL:-warn}",
            "LOG_LEVEL: ${LOG_LEVEL:-warn}\n      REGION: ${REGION}\n      TIER: ${TIER}\n      MISSING: ${NOT_SET_ANYWHERE}",
        ),
    );
    // `.env` says LOG_LEVEL too, but the environment's `vars` win.
    talk.backend.write(
        ".env",
        "# from git\nREGION=eu-west\nTIER='gold'\nLOG_LEVEL=trace\n",
    );
    talk.backend.commit_and_push(".env beside the compose file");
    let plan = talk.plan_ok("dev");
    let api = plan
        .desired
        .iter()
        .find(|d| d.service == "api")
        .expect("api is planned");
    let env: std::collections::BTreeMap<&str, &str> = api
        .spec
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env["REGION"], "eu-west");
    assert_eq!(env["TIER"], "gold");
    assert_eq!(env["LOG_LEVEL"], "debug", "marvin.yml's vars win over .env");
    assert_eq!(env["MISSING"], "");
    assert_eq!(
        plan.warnings,
        vec![
            "docker-compose.yml: services.api.environment.MISSING: variable `NOT_SET_ANYWHERE` is not set; using an empty string"
        ]
    );
    let text = marvin_core::report::plan_text(&plan);
    assert!(
        text.contains("warning: docker-compose.yml: services.api.environment.MISSING: variable `NOT_SET_ANYWHERE` is not set"),
        "{text}"
    );
}

#[test]
fn powerful_and_unapplied_fields_are_refused_with_the_line_to_add() {
    let talk = TalkProject::new();
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "    depends_on: [db]\n",
            "    depends_on: [db]\n    cap_add: [NET_ADMIN]\n    privileged: true\n    devices: [\"/dev/fuse:/dev/fuse\"]\n    pid: host\n    ipc: host\n    network_mode: host\n    runtime: runc\n    security_opt: [\"seccomp:unconfined\"]\n    oom_score_adj: 5\n",
        ),
    );
    talk.backend.commit_and_push("a powerful api");
    let err = talk.plan_err("dev");
    for (field, written) in [
        ("cap_add", "cap_add: [NET_ADMIN]"),
        ("privileged", "privileged: true"),
        ("devices", "devices: [/dev/fuse:/dev/fuse]"),
        ("pid", "pid: host"),
        ("ipc", "ipc: host"),
        ("network_mode", "network_mode: host"),
        ("runtime", "runtime: runc"),
        ("security_opt", "security_opt: [seccomp:unconfined]"),
    ] {
        assert!(
            err.contains(&format!(
                "service `api`: `{written}` gives the container power over the host, and dev does not allow it"
            )),
            "{field} is refused: {err}"
        );
        assert!(
            err.contains(&format!("`environments.dev.allow_powerful: [{field}]`")),
            "the line to add for {field}: {err}"
        );
    }
    assert!(
        err.contains("service `api`: `oom_score_adj` is not applied by Marvin"),
        "{err}"
    );
    // Every problem at once, each at its line.
    assert!(err.lines().count() >= 9, "{err}");
    assert!(
        err.lines().all(|l| l.starts_with("docker-compose.yml:")),
        "{err}"
    );

    // An environment that allows them plans (the unapplied field removed).
    talk.backend.write(
        "docker-compose.yml",
        &TALK_COMPOSE.replace(
            "    depends_on: [db]\n",
            "    depends_on: [db]\n    cap_add: [NET_ADMIN]\n    privileged: true\n",
        ),
    );
    talk.backend.commit_and_push("allowed powers only");
    talk.write_environments(&marvin_tests::TALK_ENVIRONMENTS.replacen(
        "    branch: develop\n",
        "    branch: develop\n    allow_powerful: [cap_add, privileged]\n",
        1,
    ));
    let plan = talk.plan_ok("dev");
    let api = plan
        .desired
        .iter()
        .find(|d| d.service == "api")
        .expect("api");
    assert_eq!(api.spec.options.cap_add, vec!["NET_ADMIN"]);
    assert!(api.spec.options.privileged);
}
