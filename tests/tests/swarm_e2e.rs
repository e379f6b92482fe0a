//! Issue #8 on the real engine: an environment deployed to Docker Swarm with
//! its images through a registry. The engine becomes a single-node swarm
//! (or an existing swarm is reused and left as it was), Debian's
//! `docker-registry` serves on a free 127.0.0.1 port from a temp dir, and a
//! five-service environment is deployed, changed, scaled, rebuilt on a
//! "fresh build host" (no local images: everything comes from the registry)
//! and broken (Swarm rolls the update back and the job names the service).
//! A guard removes the services, leaves the swarm it made, stops the
//! registry and deletes its data, also when the test fails.

mod common_e2e;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{LocalNodeState, SwarmInitRequest};
use bollard::query_parameters::LeaveSwarmOptionsBuilder;
use common_e2e::{
    COMPOSE, Fixture, Options, SERVICES, all_services, assert_succeeded, build, job, log_text,
    sorted,
};
use marvin_core::engine::{DockerEngine, Engine, LABEL_ENV, LABEL_PROJECT};
use marvin_core::store::JobState;

const ENV: &str = "cluster";
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The engine's client at the engine's API version.
async fn docker() -> Docker {
    Docker::connect_with_defaults()
        .expect("the swarm test needs a Docker engine")
        .negotiate_version()
        .await
        .expect("the Docker engine answers")
}

/// Undoes what the test set up, in reverse: services, the swarm (only if
/// this test made it), the registry process and its data.
struct SwarmGuard {
    project: String,
    made_swarm: bool,
    registry: Option<Child>,
    registry_port: u16,
    dir: Option<tempfile::TempDir>,
}

impl SwarmGuard {
    /// Make the engine a swarm manager (or reuse its swarm) and start a registry.
    async fn start(project: &str) -> SwarmGuard {
        let docker = docker().await;
        let info = docker.info().await.expect("the engine's info");
        let state = info.swarm.and_then(|s| s.local_node_state);
        let made_swarm = state != Some(LocalNodeState::ACTIVE);
        let mut guard = SwarmGuard {
            project: project.to_string(),
            made_swarm: false,
            registry: None,
            registry_port: 0,
            dir: Some(tempfile::tempdir().expect("a temp dir for the registry")),
        };
        if made_swarm {
            docker
                .init_swarm(SwarmInitRequest {
                    listen_addr: Some("127.0.0.1:2377".into()),
                    advertise_addr: Some("127.0.0.1".into()),
                    ..Default::default()
                })
                .await
                .expect("swarm mode starts (docker swarm init --advertise-addr 127.0.0.1)");
            guard.made_swarm = true;
        }
        guard.start_registry();
        guard
    }

    fn registry_dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("the registry dir")
            .path()
            .to_path_buf()
    }

    fn start_registry(&mut self) {
        assert!(
            Path::new(REGISTRY_BIN).is_file(),
            "{REGISTRY_BIN} is missing: apt-get install docker-registry (scripts/setup installs it)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = self.registry_dir();
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("data").display()
            ),
        )
        .expect("write the registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("the registry log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::from(log.try_clone().expect("the log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start docker-registry");
        self.registry = Some(child);
        self.registry_port = port;
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            if registry_answers(port) {
                return;
            }
            assert!(
                Instant::now() < until,
                "docker-registry did not answer on 127.0.0.1:{port}: {}",
                std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn registry(&self) -> String {
        format!("127.0.0.1:{}", self.registry_port)
    }
}

/// Whether `GET /v2/` answers 200.
fn registry_answers(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

impl Drop for SwarmGuard {
    fn drop(&mut self) {
        let project = self.project.clone();
        let made_swarm = self.made_swarm;
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            rt.block_on(async {
                let engine = DockerEngine::connect().expect("the engine for the cleanup");
                let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), project.clone())]);
                if let Some(swarm) = engine.swarm() {
                    for s in swarm.list_services(&labels).await.unwrap_or_default() {
                        if let Err(e) = swarm.remove_service(&s.id).await {
                            eprintln!("cleanup: removing service {} failed: {e}", s.name);
                        }
                    }
                }
                // Task containers go away shortly after their service.
                let until = Instant::now() + Duration::from_secs(30);
                while Instant::now() < until {
                    let left = engine.list_containers(&labels).await.unwrap_or_default();
                    if left.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                if made_swarm {
                    let docker = docker().await;
                    let options = LeaveSwarmOptionsBuilder::new().force(true).build();
                    if let Err(e) = docker.leave_swarm(Some(options)).await {
                        eprintln!("cleanup: leaving the swarm failed: {e}");
                    }
                }
            });
        })
        .join();
        if done.is_err() {
            eprintln!("cleanup of the swarm of {} panicked", self.project);
        }
        if let Some(mut child) = self.registry.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = self.dir.take()
            && let Err(e) = dir.close()
        {
            eprintln!("cleanup: removing the registry data failed: {e}");
        }
    }
}

/// Add the swarm environment to the fixture's marvin.yml.
fn add_swarm_env(fixture: &Fixture, registry: &str) {
    let text = std::fs::read_to_string(&fixture.config).expect("read marvin.yml");
    let text = text.replacen(
        "environments:\n",
        &format!(
            "environments:\n  {ENV}:\n    branch: main\n    engine: swarm\n    registry: {registry}\n"
        ),
        1,
    );
    std::fs::write(&fixture.config, text).expect("write marvin.yml");
}

fn env_labels(fixture: &Fixture) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_PROJECT.to_string(), fixture.project.clone()),
        (LABEL_ENV.to_string(), ENV.to_string()),
    ])
}

/// Running task ids per service, and the deploy key each service carries.
async fn running_tasks(fixture: &Fixture) -> BTreeMap<String, (BTreeSet<String>, String)> {
    let swarm = fixture.engine.swarm().expect("the engine's swarm side");
    let mut out = BTreeMap::new();
    for s in swarm
        .list_services(&env_labels(fixture))
        .await
        .expect("list the environment's services")
    {
        let tasks: BTreeSet<String> = swarm
            .service_tasks(&s.id)
            .await
            .expect("list a service's tasks")
            .into_iter()
            .filter(|t| t.desired_running && t.state == "running")
            .map(|t| t.id)
            .collect();
        let key = marvin_core::swarm::deploy_key_of(&s)
            .map(|k| k.0)
            .unwrap_or_default();
        out.insert(s.service.clone(), (tasks, key));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_deploys_changes_scales_and_rolls_back_on_a_swarm() {
    let fixture = Fixture::new("swarm", Options::default()).await;
    let guard = SwarmGuard::start(&fixture.project).await;
    add_swarm_env(&fixture, &guard.registry());
    let swarm = fixture.engine.swarm().expect("the engine's swarm side");

    // 1. Five services created from five images pushed to the registry.
    let rt = fixture.runtime();
    let first = job(&rt, build(ENV)).await;
    assert_succeeded(&rt, &first);
    assert_eq!(sorted(&first.created), all_services());
    assert_eq!(first.built.len(), 5, "{:?}", first.built);
    let plan = fixture
        .marvin()
        .plan(ENV, &Default::default())
        .await
        .expect("plan the swarm environment");
    for b in &plan.builds {
        assert!(
            b.image
                .starts_with(&format!("{}/marvin/", guard.registry())),
            "{} is tagged for the registry",
            b.image
        );
        assert!(
            swarm
                .registry_has(&b.image, None)
                .await
                .expect("ask the registry"),
            "{} was pushed",
            b.image
        );
    }
    assert!(!plan.changes_anything(), "a second plan changes nothing");
    let before = running_tasks(&fixture).await;
    assert_eq!(before.len(), 5);
    for (service, (tasks, _)) in &before {
        assert_eq!(tasks.len(), 1, "{service} runs one task");
    }
    let log = log_text(&rt, first.job);
    assert!(log.contains("creating service"), "{log}");

    // 2. One service changes: exactly that one is updated, the others keep their tasks.
    fixture.commit(
        "frontend",
        &[("docs/index.html", Some("<p>docs 2</p>\n"))],
        "docs: second version",
    );
    let second = job(&rt, build(ENV)).await;
    assert_succeeded(&rt, &second);
    assert_eq!(second.recreated, vec!["docs".to_string()]);
    assert!(second.created.is_empty());
    assert_eq!(
        sorted(&second.unchanged),
        vec!["api", "db", "web", "worker"]
    );
    let after = running_tasks(&fixture).await;
    for service in SERVICES.iter().filter(|s| **s != "docs") {
        assert_eq!(
            after[*service].0, before[*service].0,
            "{service} kept its task"
        );
    }
    assert_ne!(after["docs"].0, before["docs"].0, "docs runs a new task");
    assert_ne!(
        after["docs"].1, before["docs"].1,
        "docs carries its new deploy key"
    );

    // 3. worker scales to 3 replicas; status shows desired and running per service.
    let scaled = COMPOSE.replace(
        "    build: ./worker\n",
        "    build: ./worker\n    deploy:\n      replicas: 3\n",
    );
    assert_ne!(scaled, COMPOSE);
    fixture.commit(
        "backend",
        &[("docker-compose.yml", Some(&scaled))],
        "worker: three replicas",
    );
    let third = job(&rt, build(ENV)).await;
    assert_succeeded(&rt, &third);
    assert_eq!(third.recreated, vec!["worker".to_string()]);
    assert!(
        third.built.is_empty(),
        "scaling builds nothing: {:?}",
        third.built
    );
    let scaled_tasks = running_tasks(&fixture).await;
    assert_eq!(scaled_tasks["worker"].0.len(), 3);
    for service in SERVICES.iter().filter(|s| **s != "worker") {
        assert_eq!(
            scaled_tasks[*service].0, after[*service].0,
            "{service} kept its task"
        );
    }
    let marvin = fixture.marvin();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64;
    let status = marvin_core::commands::status(&marvin, rt.store(), ENV, now)
        .await
        .expect("status of the swarm environment");
    let replicas: BTreeMap<&str, (u64, u64)> = status
        .services
        .iter()
        .map(|s| (s.service.as_str(), (s.desired, s.running)))
        .collect();
    assert_eq!(
        replicas,
        BTreeMap::from([
            ("api", (1, 1)),
            ("db", (1, 1)),
            ("docs", (1, 1)),
            ("web", (1, 1)),
            ("worker", (3, 3)),
        ])
    );
    assert!(
        status.containers.is_empty(),
        "a swarm environment lists services"
    );

    // 4. A fresh build host: no services, no local images. Every key is in the
    // registry, so nothing is rebuilt: the images are pulled.
    for s in swarm
        .list_services(&env_labels(&fixture))
        .await
        .expect("list services")
    {
        swarm.remove_service(&s.id).await.expect("remove a service");
    }
    let project_labels = BTreeMap::from([(LABEL_PROJECT.to_string(), fixture.project.clone())]);
    let until = Instant::now() + Duration::from_secs(60);
    while !fixture
        .engine
        .list_containers(&project_labels)
        .await
        .expect("list containers")
        .is_empty()
    {
        assert!(
            Instant::now() < until,
            "task containers outlived their services"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let tags: BTreeSet<String> = fixture
        .marvin()
        .plan(ENV, &Default::default())
        .await
        .expect("plan")
        .builds
        .iter()
        .map(|b| b.image.clone())
        .collect();
    for tag in &tags {
        fixture
            .engine
            .remove_image(tag)
            .await
            .expect("remove a local image");
        assert!(
            !fixture
                .engine
                .image_exists(tag)
                .await
                .expect("look for an image")
        );
    }
    let plan = fixture
        .marvin()
        .plan(ENV, &Default::default())
        .await
        .expect("plan on the fresh host");
    assert!(
        plan.builds
            .iter()
            .all(|b| b.reason == marvin_core::plan::BuildReason::InRegistry),
        "{:?}",
        plan.builds
    );
    let fresh = job(&rt, build(ENV)).await;
    assert_succeeded(&rt, &fresh);
    assert!(
        fresh.built.is_empty(),
        "nothing is rebuilt: {:?}",
        fresh.built
    );
    assert_eq!(sorted(&fresh.reused), all_services());
    assert_eq!(sorted(&fresh.created), all_services());
    let log = log_text(&rt, fresh.job);
    assert!(log.contains("pulling"), "{log}");
    let fresh_tasks = running_tasks(&fixture).await;
    assert_eq!(fresh_tasks["worker"].0.len(), 3);

    // 5. A broken api (its health check never passes): Swarm rolls the update
    // back, the job fails naming api, and api runs its previous spec again.
    let broken = scaled.replace(
        "      test: [\"CMD\", \"wget\", \"-qO-\", \"http://127.0.0.1:8080/healthy\"]\n      interval: 1s\n      timeout: 3s\n      retries: 3\n",
        "      test: [\"CMD\", \"test\", \"-f\", \"/www/never\"]\n      interval: 1s\n      timeout: 3s\n      retries: 2\n",
    );
    assert_ne!(broken, scaled, "api's health check was replaced");
    fixture.commit(
        "backend",
        &[("docker-compose.yml", Some(&broken))],
        "api: a health check that fails",
    );
    let failed = job(&rt, build(ENV)).await;
    assert_eq!(
        failed.state,
        Some(JobState::Failed),
        "{:?}\n{}",
        failed.error,
        log_text(&rt, failed.job)
    );
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("swarm rolled back api: "),
        "{error}\n{}",
        log_text(&rt, failed.job)
    );
    assert_eq!(failed.rolled_back, vec!["api".to_string()]);
    let rolled = running_tasks(&fixture).await;
    assert_eq!(
        rolled["api"].1, fresh_tasks["api"].1,
        "api carries its previous deploy key again"
    );
    assert_eq!(rolled["api"].0.len(), 1, "api runs again");
    for service in SERVICES.iter().filter(|s| **s != "api") {
        assert_eq!(
            rolled[*service].0, fresh_tasks[*service].0,
            "{service} kept its tasks"
        );
    }
    eprintln!("swarm rolled back api, reported as: {error}");
    drop(guard);
}
