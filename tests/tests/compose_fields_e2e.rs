//! End-to-end: compose fields as real stacks write them (issue #13), on the
//! real Docker engine. Each test makes its own project with a unique name and
//! removes every Docker object labelled with it when it ends.

mod common_e2e;

use std::collections::BTreeMap;

use common_e2e::{COMPOSE, Fixture, Options, assert_succeeded, base_image, build, job, sorted};
use marvin_core::desired::{container_name, network_name};
use marvin_core::engine::{
    ContainerSpec, Engine, LABEL_ENV, LABEL_PROJECT, LABEL_ROLE, LABEL_SERVICE,
};

/// `expose: - 8080/http` (the talk's dialect) builds, and after one service
/// changes, builds again recreating exactly that one; a container another
/// tool (or an old Marvin) left with port protocol `http` breaks nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_hints_build_twice_and_an_odd_container_does_not_break_plan() {
    let fx = Fixture::new("hint", Options::default()).await;
    let compose = COMPOSE
        .replace(
            "    build: ./fe/docs\n",
            "    build: ./fe/docs\n    expose: [\"8080/http\", \"9000/grpc\"]\n    ports: [\"8080/https\"]\n",
        )
        .replace(
            "    build: ./api\n",
            "    build: ./api\n    expose:\n      - 8080/http\n",
        );
    assert_ne!(compose, COMPOSE);
    fx.commit(
        "backend",
        &[("docker-compose.yml", Some(&compose))],
        "expose with protocol hints",
    );
    let rt = fx.runtime();
    assert_succeeded(&rt, &job(&rt, build("dev")).await);
    let docs = fx.services("dev").await.remove("docs").expect("docs runs");
    let inspected = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{json .Config.ExposedPorts}}", &docs.id])
        .output()
        .expect("docker inspect runs");
    let exposed = String::from_utf8_lossy(&inspected.stdout).to_string();
    assert!(
        exposed.contains("\"8080/tcp\"") && exposed.contains("\"9000/tcp\""),
        "the hints reach the engine as tcp: {exposed}"
    );
    assert!(!exposed.contains("http"), "{exposed}");

    // What an older Marvin left: a running container of dev exposing `8080/http`.
    let odd = ContainerSpec {
        name: container_name(&fx.project, "dev", "odd"),
        image: base_image().to_string(),
        command: Some(vec!["sleep".into(), "600".into()]),
        labels: BTreeMap::from([
            (LABEL_PROJECT.to_string(), fx.project.clone()),
            (LABEL_ENV.to_string(), "dev".to_string()),
            (LABEL_SERVICE.to_string(), "odd".to_string()),
            (LABEL_ROLE.to_string(), "service".to_string()),
        ]),
        network: network_name(&fx.project, "dev"),
        expose: vec!["8080/http".into()],
        ..Default::default()
    };
    fx.engine
        .run_container(&odd)
        .await
        .expect("the engine takes the odd container");
    // The engine describes its port with a type bollard cannot read: the
    // typed listing fails, which is what broke `plan` before.
    let docker = bollard::Docker::connect_with_defaults().expect("a client");
    let typed = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&std::collections::HashMap::from([(
                    "name".to_string(),
                    vec![odd.name.clone()],
                )]))
                .build(),
        ))
        .await;
    assert!(
        typed
            .as_ref()
            .is_err_and(|e| e.to_string().contains("Invalid enum")),
        "the odd container is one bollard cannot read: {typed:?}"
    );
    let listed = fx.containers("dev").await;
    assert!(
        listed.iter().any(|c| c.name == odd.name),
        "the odd container is listed: {:?}",
        listed.iter().map(|c| &c.name).collect::<Vec<_>>()
    );

    let before = fx.ids("dev").await;
    fx.commit(
        "frontend",
        &[("docs/index.html", Some("<p>docs, second edition</p>\n"))],
        "docs: second edition",
    );
    let second = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &second);
    assert_eq!(second.recreated, vec!["docs"], "exactly one container");
    assert_eq!(second.removed, vec!["odd"], "the leftover is removed");
    assert_eq!(
        sorted(&second.unchanged),
        vec!["api", "db", "web", "worker"]
    );
    let after = fx.ids("dev").await;
    for service in ["api", "db", "web", "worker"] {
        assert_eq!(after[service], before[service], "{service} is kept");
    }
}
