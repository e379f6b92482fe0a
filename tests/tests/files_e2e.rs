//! End-to-end: files from git, secrets and configs (issue #13 items 1 and 3)
//! on the real Docker engine. One git repo holds a compose file whose `web`
//! service (built here) mounts a config file and a directory from git, `db`
//! a `file:` secret and an `environment:` secret, `worker` the same
//! `environment:` secret in long syntax plus an inline config. Every Docker
//! object carries the test's project label and is removed when it ends.
//! Needs a local Docker engine, the `docker` CLI, git and Debian's busybox-static.

mod common_e2e;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common_e2e::{assert_succeeded, build, git, job, log_text, run, sorted};
use marvin_core::engine::{DockerEngine, Engine, LABEL_PROJECT, ensure_busybox_image};
use marvin_core::marvin::Marvin;
use marvin_core::runtime::{Runtime, SystemClock};
use marvin_core::store::Store;

const NGINX_V1: &str = "server { listen 80; root /var/www/html; } # v1\n";
const NGINX_V2: &str = "server { listen 8080; root /var/www/html; } # v2\n";

fn compose(token_var: &str) -> String {
    format!(
        r#"services:
  web:
    build: ./web
    volumes:
      - ./nginx/nginx.conf:/etc/nginx/conf.d/default.conf:ro
      - type: bind
        source: ./site
        target: /var/www/html
  db:
    image: ${{BASE}}
    command: ["sleep", "3600"]
    secrets:
      - db_password
      - api_token
  worker:
    image: ${{BASE}}
    command: ["sleep", "3600"]
    secrets:
      - source: api_token
        target: token
        mode: 0400
    configs:
      - source: greeting
        target: /etc/greeting
secrets:
  db_password:
    file: ./secrets/db_password.txt
  api_token:
    environment: {token_var}
configs:
  greeting:
    content: hello from a config
"#
    )
}

struct Stack {
    project: String,
    root: PathBuf,
    work: PathBuf,
    data: PathBuf,
    engine: Arc<DockerEngine>,
    token_var: String,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn new(test: &str) -> Stack {
        let engine = DockerEngine::connect().expect("the end-to-end tests need a Docker engine");
        engine.ping().await.expect("the Docker engine answers");
        let unique = format!(
            "{}{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() % 100_000)
                .unwrap_or(0)
        );
        let project = format!("e2e-files-{test}-{unique}");
        let base = format!("marvin-e2e-files/busybox:{unique}");
        let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), project.clone())]);
        ensure_busybox_image(&engine, &base, &labels)
            .await
            .expect("the busybox base image (apt-get install -y busybox-static)");
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path().canonicalize().expect("the temp dir's path");
        let token_var = format!("E2E_FILES_TOKEN_{unique}");
        let work = root.join("work/app");
        let bare = root.join("repos/app.git");
        std::fs::create_dir_all(&work).expect("working copy");
        std::fs::create_dir_all(&bare).expect("bare repo");
        git(&bare, &["init", "-q", "--bare", "-b", "main"]);
        git(&work, &["init", "-q", "-b", "main"]);
        git(
            &work,
            &["remote", "add", "origin", &bare.display().to_string()],
        );
        let stack = Stack {
            project: project.clone(),
            data: root.join("data"),
            work,
            engine: Arc::new(engine),
            token_var: token_var.clone(),
            root: root.clone(),
            _dir: dir,
        };
        stack.commit(
            &[
                ("docker-compose.yml", &compose(&token_var)),
                (
                    "web/Dockerfile",
                    &format!("FROM {base}\nCMD [\"sleep\", \"3600\"]\n"),
                ),
                ("nginx/nginx.conf", NGINX_V1),
                ("site/index.html", "<p>hello</p>\n"),
                ("site/css/app.css", "p { color: red }\n"),
                ("secrets/db_password.txt", "correct horse battery staple\n"),
                ("README.md", "the stack\n"),
            ],
            "first version",
        );
        std::fs::write(
            root.join("marvin.yml"),
            format!(
                "project: {project}\nrepos:\n  app:\n    url: {}\n    path: .\nenvironments:\n  dev:\n    branch: main\n    vars: {{ BASE: \"{base}\" }}\ntasks:\n  leak:\n    service: db\n    command: [\"sh\", \"-c\", \"cat /run/secrets/api_token; echo\"]\n",
                bare.display()
            ),
        )
        .expect("write marvin.yml");
        stack
    }

    fn commit(&self, files: &[(&str, &str)], message: &str) {
        for (path, text) in files {
            let p = self.work.join(path);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&p, text).expect("write");
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["push", "-q", "origin", "main"]);
    }

    fn runtime(&self) -> Runtime {
        let marvin = Marvin::load(&self.root.join("marvin.yml"), Some(self.data.clone()))
            .expect("marvin.yml loads")
            .with_engine(self.engine.clone());
        Runtime::new(
            marvin,
            self.engine.clone(),
            Store::open_in(&self.data).expect("the store opens"),
            Arc::new(SystemClock),
        )
        .expect("the runtime starts")
    }

    fn container(&self, service: &str) -> String {
        format!("{}-dev-{service}", self.project)
    }

    /// `docker exec <container> <args>`: its stdout, or a panic with stderr.
    fn exec(&self, service: &str, args: &[&str]) -> String {
        let out = Command::new("docker")
            .arg("exec")
            .arg(self.container(service))
            .args(args)
            .output()
            .expect("the docker CLI");
        assert!(
            out.status.success(),
            "docker exec {service} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    async fn ids(&self) -> BTreeMap<String, String> {
        let labels = BTreeMap::from([
            (LABEL_PROJECT.to_string(), self.project.clone()),
            (
                marvin_core::engine::LABEL_ENV.to_string(),
                "dev".to_string(),
            ),
        ]);
        self.engine
            .list_containers(&labels)
            .await
            .expect("list containers")
            .into_iter()
            .map(|c| (c.service, c.id))
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let project = self.project.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the cleanup");
            rt.block_on(async {
                let engine = DockerEngine::connect().expect("the engine for the cleanup");
                let labels = BTreeMap::from([(LABEL_PROJECT.to_string(), project.clone())]);
                for _ in 0..10 {
                    if engine.remove_labelled(&labels).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            });
        })
        .join();
    }
}

fn set_token(var: &str, value: &str) {
    // SAFETY: only this test reads or writes its uniquely named variable.
    unsafe { std::env::set_var(var, value) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_files_and_secrets_recreate_exactly_their_users() {
    let s = Stack::new("mounts").await;
    set_token(&s.token_var, "tok-one-4f1c9a");
    let rt = s.runtime();

    let first = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &first);
    assert_eq!(sorted(&first.created), ["db", "web", "worker"]);
    assert_eq!(
        first
            .built
            .iter()
            .map(|(s, _)| s.as_str())
            .collect::<Vec<_>>(),
        ["web"]
    );
    assert_eq!(
        s.exec("web", &["cat", "/etc/nginx/conf.d/default.conf"]),
        NGINX_V1
    );
    assert_eq!(
        s.exec("web", &["cat", "/var/www/html/css/app.css"]),
        "p { color: red }\n"
    );
    assert_eq!(
        s.exec("db", &["cat", "/run/secrets/db_password"]),
        "correct horse battery staple\n"
    );
    assert_eq!(
        s.exec("db", &["cat", "/run/secrets/api_token"]),
        "tok-one-4f1c9a"
    );
    assert_eq!(
        s.exec("worker", &["cat", "/run/secrets/token"]),
        "tok-one-4f1c9a"
    );
    let listed = s.exec("worker", &["ls", "-l", "/run/secrets/token"]);
    assert!(listed.starts_with("-r-------- "), "mode 0400: {listed}");
    assert_eq!(
        s.exec("worker", &["cat", "/etc/greeting"]),
        "hello from a config"
    );
    // Read-only unless the compose file asks for rw.
    let out = Command::new("docker")
        .args(["exec", &s.container("web"), "touch", "/var/www/html/new"])
        .output()
        .expect("docker exec");
    assert!(!out.status.success(), "the site directory is read-only");

    // Only the mounted config file changes: web is recreated, nothing is built.
    let before = s.ids().await;
    s.commit(&[("nginx/nginx.conf", NGINX_V2)], "nginx: listen on 8080");
    let second = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &second);
    assert!(
        second.built.is_empty(),
        "no image built: {:?}",
        second.built
    );
    assert_eq!(second.recreated, ["web"]);
    assert_eq!(sorted(&second.unchanged), ["db", "worker"]);
    assert_eq!(
        s.exec("web", &["cat", "/etc/nginx/conf.d/default.conf"]),
        NGINX_V2
    );
    let after = s.ids().await;
    assert_ne!(after["web"], before["web"]);
    assert_eq!(
        (&after["db"], &after["worker"]),
        (&before["db"], &before["worker"])
    );

    // The secret's variable changes: exactly its users are recreated.
    set_token(&s.token_var, "tok-two-8e2d7b");
    let third = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &third);
    assert!(third.built.is_empty(), "no image built: {:?}", third.built);
    assert_eq!(sorted(&third.recreated), ["db", "worker"]);
    assert_eq!(third.unchanged, ["web"]);
    assert_eq!(
        s.exec("worker", &["cat", "/run/secrets/token"]),
        "tok-two-8e2d7b"
    );

    // A commit no container mounts recreates nothing.
    let before = s.ids().await;
    s.commit(&[("README.md", "the stack, documented\n")], "readme");
    let fourth = job(&rt, build("dev")).await;
    assert_succeeded(&rt, &fourth);
    assert!(fourth.built.is_empty() && fourth.recreated.is_empty() && fourth.created.is_empty());
    assert_eq!(s.ids().await, before);

    // A task that prints the secret shows it masked.
    let leak = job(&rt, run("dev", "leak", &[])).await;
    assert_succeeded(&rt, &leak);
    let log = log_text(&rt, leak.job);
    assert!(log.contains("task:leak: ***"), "{log}");
    assert!(!log.contains("tok-two-8e2d7b"), "{log}");

    // So does a Marvin process started afresh, which has planned nothing:
    // it reads the secrets its last deployment mounts.
    drop(rt);
    let fresh = s.runtime();
    let leak = job(&fresh, run("dev", "leak", &[])).await;
    assert_succeeded(&fresh, &leak);
    let log = log_text(&fresh, leak.job);
    assert!(log.contains("task:leak: ***"), "{log}");
    assert!(!log.contains("tok-two-8e2d7b"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_missing_in_git_names_service_mount_and_line() {
    let s = Stack::new("missing").await;
    set_token(&s.token_var, "x");
    std::fs::remove_file(s.work.join("nginx/nginx.conf")).expect("remove");
    s.commit(&[], "no nginx.conf");
    let rt = s.runtime();
    let failed = job(&rt, build("dev")).await;
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("service `web`: volume `./nginx/nginx.conf:/etc/nginx/conf.d/default.conf:ro` (docker-compose.yml:5): `nginx/nginx.conf` does not exist"),
        "{error}\n{}",
        log_text(&rt, failed.job)
    );
    assert!(s.ids().await.is_empty(), "nothing was deployed");
}

/// Git only (no engine): a swarm environment refuses files from git with the
/// reason, and a secret's unset variable is named with where to set it.
#[test]
fn swarm_refuses_mounted_files_and_an_unset_secret_variable_is_named() {
    use marvin_tests::{GitRepo, plan, project};
    let dir = tempfile::tempdir().expect("a temp dir");
    let repo = GitRepo::new(dir.path(), "app");
    repo.write(
        "docker-compose.yml",
        "services:\n  web:\n    image: nginx\n    volumes: [\"./nginx.conf:/etc/nginx/nginx.conf:ro\"]\n  db:\n    image: db\n    secrets: [pw]\nsecrets:\n  pw:\n    environment: E2E_FILES_NEVER_SET_9f8e\n",
    )
    .write("nginx.conf", "events {}\n");
    repo.commit_and_push("stack");
    let config = project(
        &dir.path().join("p"),
        &format!(
            "project: shop\nrepos:\n  app: {{ url: {} }}\nenvironments:\n  dev: {{ branch: master }}\n  prod: {{ branch: master, engine: swarm, registry: \"127.0.0.1:5000\" }}\n",
            repo.url()
        ),
    );
    let e = plan(&config, "prod")
        .expect_err("swarm refuses")
        .to_string();
    assert!(
        e.contains("cannot be mounted in swarm environment `prod`"),
        "{e}"
    );
    let e = plan(&config, "dev")
        .expect_err("the variable is unset")
        .to_string();
    assert!(
        e.contains("service `db`: secret `pw` (docker-compose.yml:9): the variable `E2E_FILES_NEVER_SET_9f8e` is not set in Marvin's environment"),
        "{e}"
    );
}
