//! The project of the load and soak tests: one git repo with three cheap
//! busybox services, eleven environments on the same branch (each bound to a
//! chat channel of its own) and twenty people. Built on the end-to-end
//! [`Fixture`] for its unique name, data dir, base image and cleanup; its
//! two-repo marvin.yml is replaced before any runtime opens it.

#![allow(dead_code)]

use std::path::Path;

use crate::common_e2e::{Fixture, Options, base_image, git};
use marvin_core::chat::Message;

/// The environments, all tracking `main`.
pub const ENVS: [&str; 11] = [
    "dev", "dev2", "dev3", "dev4", "dev5", "qa", "qa2", "staging", "demo", "perf", "preview",
];

/// The services, each built from its own Dockerfile.
pub const SERVICES: [&str; 3] = ["cron", "web", "worker"];

/// How many people there are; the first [`ADMINS`] are admins, the rest developers.
pub const PEOPLE: usize = 20;
/// How many of the people are admins.
pub const ADMINS: usize = 4;

/// The compose file: no health checks, so a deploy waits only for the
/// containers to be running.
const COMPOSE: &str = r#"services:
  web:
    build: ./web
    restart: unless-stopped
  worker:
    build: ./worker
    restart: unless-stopped
  cron:
    build: ./cron
    restart: unless-stopped
"#;

/// Person `i`'s identity (0-based).
pub fn person(i: usize) -> String {
    format!("slack:ULOAD{i:02}")
}

/// The channel bound to an environment.
pub fn channel(env: &str) -> String {
    format!("slack:C{}", env.to_uppercase())
}

/// A message as a chat front end hands it over.
pub fn message(identity: &str, channel: &str, text: &str) -> Message {
    Message {
        identity: identity.to_string(),
        channel: channel.to_string(),
        text: text.to_string(),
        bot: None,
    }
}

fn marvin_yml(project: &str, url: &Path) -> String {
    let mut environments = String::new();
    for env in ENVS {
        environments.push_str(&format!(
            "  {env}:\n    branch: main\n    channels: [\"{}\"]\n",
            channel(env)
        ));
    }
    let quoted = |range: std::ops::Range<usize>| {
        range
            .map(|i| format!("\"{}\"", person(i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"project: {project}
compose: docker-compose.yml

repos:
  app:
    url: {url}
    path: .

environments:
{environments}
tasks:
  hello:
    image: {base}
    command: ["echo", "hello from a task"]

settings:
  health_timeout: 60s

people:
  default_role: viewer
  admins: [{admins}]
  developers: [{developers}]
"#,
        url = url.display(),
        base = base_image(),
        admins = quoted(0..ADMINS),
        developers = quoted(ADMINS..PEOPLE),
    )
}

/// A fresh project for `test`: the repo pushed to a bare remote, marvin.yml
/// written over the fixture's.
pub async fn fixture(test: &str) -> Fixture {
    let fx = Fixture::new(test, Options::default()).await;
    let work = fx.root.join("fleet/work");
    let bare = fx.root.join("fleet/app.git");
    std::fs::create_dir_all(&work).expect("create the working copy");
    std::fs::create_dir_all(&bare).expect("create the bare repo");
    let base = base_image();
    let files = [
        ("docker-compose.yml", COMPOSE.to_string()),
        (
            "web/Dockerfile",
            format!(
                "FROM {base}\nCOPY index.html /www/index.html\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n"
            ),
        ),
        ("web/index.html", "<h1>load</h1>\n".to_string()),
        (
            "worker/Dockerfile",
            format!("FROM {base}\nCOPY work.sh /work.sh\nCMD [\"sh\", \"/work.sh\"]\n"),
        ),
        (
            "worker/work.sh",
            "trap 'exit 0' TERM\nwhile true; do sleep 1; done\n".to_string(),
        ),
        (
            "cron/Dockerfile",
            format!("FROM {base}\nCOPY tick.sh /tick.sh\nCMD [\"sh\", \"/tick.sh\"]\n"),
        ),
        (
            "cron/tick.sh",
            "trap 'exit 0' TERM\nwhile true; do date > /tmp/tick; sleep 2; done\n".to_string(),
        ),
    ];
    for (path, text) in &files {
        let p = work.join(path);
        std::fs::create_dir_all(p.parent().expect("a directory")).expect("create a directory");
        std::fs::write(&p, text).expect("write a file of the repo");
    }
    git(&bare, &["init", "-q", "--bare", "-b", "main"]);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "app: first version"]);
    git(
        &work,
        &["remote", "add", "origin", &bare.display().to_string()],
    );
    git(&work, &["push", "-q", "origin", "main"]);
    std::fs::write(&fx.config, marvin_yml(&fx.project, &bare)).expect("write marvin.yml");
    fx
}
