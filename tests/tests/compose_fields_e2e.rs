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

/// Every applied service field reaches the container: `docker inspect`
/// shows it. One container carries them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_fields_show_in_docker_inspect() {
    let fx = Fixture::new("fields", Options::default()).await;
    let compose = COMPOSE.replace(
        "    build: ./fe/docs\n",
        r#"    build: ./fe/docs
    container_name: my-docs
    stop_signal: SIGUSR1
    stop_grace_period: 7s
    init: true
    tty: true
    stdin_open: true
    user: "0:0"
    working_dir: /www
    entrypoint: ["httpd"]
    command: ["-f", "-p", "8080", "-h", "/www"]
    hostname: docs-host
    extra_hosts: ["somehost:10.1.2.3", "other=10.1.2.4"]
    dns: [10.0.0.53]
    shm_size: 32m
    tmpfs: ["/scratch:size=1m"]
    ulimits:
      nofile: { soft: 1024, hard: 2048 }
      nproc: 512
    sysctls: { net.ipv4.tcp_syncookies: "1" }
    read_only: true
    cap_drop: [NET_RAW]
    deploy:
      resources:
        limits: { memory: 96m, cpus: "0.75", pids: 100 }
        reservations: { memory: 32m, cpus: "0.5" }
    logging:
      driver: json-file
      options: { max-size: 1m }
    labels: { team: docs }
"#,
    );
    assert_ne!(compose, COMPOSE);
    fx.commit(
        "backend",
        &[("docker-compose.yml", Some(&compose))],
        "docs with every applied field",
    );
    let rt = fx.runtime();
    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    let log = common_e2e::log_text(&rt, first.job);
    assert!(
        log.contains("container_name `my-docs` is ignored"),
        "the ignored container_name is a warning in the job log:\n{log}"
    );
    let docs = fx.services("dev").await.remove("docs").expect("docs runs");
    assert_eq!(docs.name, fx.container_name("dev", "docs"));
    let inspect = |format: &str| {
        let out = std::process::Command::new("docker")
            .args(["inspect", "-f", format, &docs.id])
            .output()
            .expect("docker inspect runs");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let expected = [
        ("{{.Config.StopSignal}}", "SIGUSR1"),
        ("{{.Config.StopTimeout}}", "7"),
        ("{{.HostConfig.Init}}", "true"),
        ("{{.Config.Tty}}", "true"),
        ("{{.Config.OpenStdin}}", "true"),
        ("{{.Config.User}}", "0:0"),
        ("{{.Config.WorkingDir}}", "/www"),
        ("{{json .Config.Entrypoint}}", "[\"httpd\"]"),
        (
            "{{json .Config.Cmd}}",
            "[\"-f\",\"-p\",\"8080\",\"-h\",\"/www\"]",
        ),
        ("{{.Config.Hostname}}", "docs-host"),
        (
            "{{json .HostConfig.ExtraHosts}}",
            "[\"somehost:10.1.2.3\",\"other:10.1.2.4\"]",
        ),
        ("{{json .HostConfig.Dns}}", "[\"10.0.0.53\"]"),
        ("{{.HostConfig.ShmSize}}", "33554432"),
        ("{{json .HostConfig.Tmpfs}}", "{\"/scratch\":\"size=1m\"}"),
        (
            "{{json .HostConfig.Ulimits}}",
            "[{\"Name\":\"nofile\",\"Hard\":2048,\"Soft\":1024},{\"Name\":\"nproc\",\"Hard\":512,\"Soft\":512}]",
        ),
        (
            "{{json .HostConfig.Sysctls}}",
            "{\"net.ipv4.tcp_syncookies\":\"1\"}",
        ),
        ("{{.HostConfig.ReadonlyRootfs}}", "true"),
        ("{{json .HostConfig.CapDrop}}", "[\"NET_RAW\"]"),
        ("{{.HostConfig.Memory}}", "100663296"),
        ("{{.HostConfig.NanoCpus}}", "750000000"),
        ("{{.HostConfig.PidsLimit}}", "100"),
        ("{{.HostConfig.MemoryReservation}}", "33554432"),
        ("{{.HostConfig.CpuShares}}", "512"),
        ("{{.HostConfig.LogConfig.Type}}", "json-file"),
        ("{{index .HostConfig.LogConfig.Config \"max-size\"}}", "1m"),
        ("{{index .Config.Labels \"team\"}}", "docs"),
    ];
    let mut wrong = Vec::new();
    for (format, want) in expected {
        let got = inspect(format);
        if got != want {
            wrong.push(format!("{format}: want {want}, got {got}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "fields not applied:\n{}",
        wrong.join("\n")
    );
    assert_eq!(docs.state, marvin_core::engine::ContainerState::Running);
}
