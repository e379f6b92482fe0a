//! The demo project `marvin demo` creates: two git repos (a backend mounted
//! at the workspace root, a frontend at `fe`), a compose file with five
//! services built `FROM` a local busybox image, and two environments.
//! It needs no registry: the base image is made from the host's static busybox.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The base image every demo Dockerfile builds `FROM`.
pub const DEMO_BASE_IMAGE: &str = "marvin-demo/busybox:1";

/// A service's main process is PID 1, which ignores SIGTERM unless it
/// handles it: without the trap every recreate would wait out the stop timeout.
const SERVE: &str = "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait";
/// The same for a service that only idles.
const IDLE: &str = "trap 'exit 0' TERM; sleep 2147483647 & wait";

/// The demo project's name (prefixes its containers, networks and images).
pub const DEMO_PROJECT: &str = "marvin-demo";

/// Something the demo could not set up.
#[derive(Debug, thiserror::Error)]
#[error("demo: {0}")]
pub struct DemoError(pub String);

const COMPOSE: &str = r#"# The demo's services. {{ GREETING }} is filled per environment by marvin.yml.
x-busybox: &busybox
  restart: unless-stopped
  size: XS

services:
  db:
    <<: *busybox
    build: ./db
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "test", "-f", "/data/ready"]
      interval: 1s
      timeout: 2s
      retries: 20
  api:
    <<: *busybox
    build:
      context: ./api
      args: { API_VERSION: "1" }
    environment:
      GREETING: "{{ GREETING }}"
    depends_on: [db]
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1:8080/"]
      interval: 1s
      timeout: 2s
      retries: 20
  worker:
    <<: *busybox
    build: ./worker
    depends_on:
      api: { condition: service_healthy }
  web:
    <<: *busybox
    build: ./fe/web
    depends_on: [api]
    links: ["api:backend"]
  docs:
    <<: *busybox
    build: ./fe/docs

volumes:
  data: {}
"#;

fn backend_files() -> Vec<(&'static str, String)> {
    let from = format!("FROM {DEMO_BASE_IMAGE}\n");
    vec![
        ("docker-compose.yml", COMPOSE.to_string()),
        ("README.md", "The demo's backend repo.\n".to_string()),
        (
            "db/Dockerfile",
            format!(
                "{from}CMD [\"sh\", \"-c\", \"mkdir -p /data && touch /data/ready && {IDLE}\"]\n"
            ),
        ),
        (
            "api/Dockerfile",
            format!(
                "{from}ARG API_VERSION\nCOPY index.html /www/index.html\nRUN echo \"api v$API_VERSION\" >> /www/index.html\nCMD [\"sh\", \"-c\", \"{SERVE}\"]\n"
            ),
        ),
        ("api/index.html", "hello from the api\n".to_string()),
        (
            "worker/Dockerfile",
            format!("{from}COPY work.sh /work.sh\nCMD [\"sh\", \"/work.sh\"]\n"),
        ),
        (
            "worker/work.sh",
            "trap 'exit 0' TERM\nwhile true; do wget -qO- http://api:8080/ >/dev/null 2>&1; sleep 5 & wait $!; done\n"
                .to_string(),
        ),
        ("envs/common.env", "LOG_LEVEL=info\n".to_string()),
    ]
}

fn frontend_files() -> Vec<(&'static str, String)> {
    let from = format!("FROM {DEMO_BASE_IMAGE}\n");
    vec![
        ("README.md", "The demo's frontend repo.\n".to_string()),
        (
            "web/Dockerfile",
            format!("{from}COPY public /www\nCMD [\"sh\", \"-c\", \"{SERVE}\"]\n"),
        ),
        (
            "web/public/index.html",
            "<h1>Marvin demo</h1>\n".to_string(),
        ),
        ("web/.dockerignore", "*.md\n".to_string()),
        ("web/NOTES.md", "not sent to the engine\n".to_string()),
        (
            "docs/Dockerfile",
            format!("{from}COPY . /www\nCMD [\"sh\", \"-c\", \"{SERVE}\"]\n"),
        ),
        ("docs/index.html", "<p>docs</p>\n".to_string()),
    ]
}

fn marvin_yml(dir: &Path) -> String {
    format!(
        r#"# The demo project. Try: marvin plan dev · marvin build staging · marvin status dev
project: {DEMO_PROJECT}
compose: docker-compose.yml

repos:
  backend:
    url: {backend}
    path: .
  frontend:
    url: {frontend}
    path: fe

environments:
  dev:
    aliases: [develop]
    branch: main
    vars: {{ GREETING: "hello dev" }}
    env_file: [envs/common.env]
    env: {{ FEATURE_FLAGS: "all" }}
    hooks: {{ after_deploy: [smoke] }}
  staging:
    branch: main
    vars: {{ GREETING: "hello staging" }}
    env_file: [envs/common.env]

tasks:
  smoke:
    service: worker
    command: ["wget", "-qO-", "http://backend:8080/"]
  hello:
    image: {DEMO_BASE_IMAGE}
    command: ["echo", "hello from a task"]

people:
  default_role: developer

settings:
  health_timeout: 60s
"#,
        backend = dir.join("repos/backend.git").display(),
        frontend = dir.join("repos/frontend.git").display(),
    )
}

fn git(dir: &Path, args: &[&str]) -> Result<String, DemoError> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Marvin Demo")
        .env("GIT_AUTHOR_EMAIL", "demo@marvin.invalid")
        .env("GIT_COMMITTER_NAME", "Marvin Demo")
        .env("GIT_COMMITTER_EMAIL", "demo@marvin.invalid")
        .output()
        .map_err(|e| DemoError(format!("cannot run git (is it installed?): {e}")))?;
    if !out.status.success() {
        return Err(DemoError(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn write(dir: &Path, files: &[(&str, String)]) -> Result<(), DemoError> {
    for (path, text) in files {
        let p = dir.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| DemoError(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&p, text).map_err(|e| DemoError(format!("{}: {e}", p.display())))?;
    }
    Ok(())
}

/// A working copy and its bare "remote", as a team would have.
fn make_repo(dir: &Path, name: &str, files: &[(&str, String)]) -> Result<(), DemoError> {
    let work = dir.join("work").join(name);
    let bare = dir.join("repos").join(format!("{name}.git"));
    std::fs::create_dir_all(&work).map_err(|e| DemoError(format!("{}: {e}", work.display())))?;
    std::fs::create_dir_all(bare.parent().expect("repos dir"))
        .map_err(|e| DemoError(e.to_string()))?;
    git(
        dir,
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            &bare.display().to_string(),
        ],
    )?;
    git(&work, &["init", "-q", "-b", "main"])?;
    write(&work, files)?;
    git(&work, &["add", "-A"])?;
    git(
        &work,
        &["commit", "-q", "-m", &format!("{name}: first version")],
    )?;
    git(
        &work,
        &["remote", "add", "origin", &bare.display().to_string()],
    )?;
    git(&work, &["push", "-q", "origin", "main"])?;
    Ok(())
}

/// Create the demo project in `dir` (which must not exist or be empty).
/// Returns the path of its marvin.yml.
pub fn create(dir: &Path) -> Result<PathBuf, DemoError> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| DemoError(format!("{}: {e}", dir.display())))?
            .next()
            .is_some()
    {
        return Err(DemoError(format!(
            "{} already exists and is not empty; pass another directory, or remove it",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| DemoError(format!("{}: {e}", dir.display())))?;
    let dir = dir.canonicalize().map_err(|e| DemoError(e.to_string()))?;
    make_repo(&dir, "backend", &backend_files())?;
    make_repo(&dir, "frontend", &frontend_files())?;
    let config = dir.join("marvin.yml");
    std::fs::write(&config, marvin_yml(&dir)).map_err(|e| DemoError(e.to_string()))?;
    Ok(config)
}

/// Change one service (the frontend's `web` page), commit and push, as a
/// developer would. Returns the new commit's subject.
pub fn change_web(dir: &Path, text: &str) -> Result<String, DemoError> {
    let work = dir.join("work/frontend");
    write(
        &work,
        &[(
            "web/public/index.html",
            format!("<h1>Marvin demo</h1>\n<p>{text}</p>\n"),
        )],
    )?;
    let subject = format!("web: {text}");
    git(&work, &["commit", "-q", "-am", &subject])?;
    git(&work, &["push", "-q", "origin", "main"])?;
    Ok(subject)
}
