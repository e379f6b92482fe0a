//! Debian's `docker-compose` (1.29) as an oracle: for every corpus file (and
//! a few fixtures exercising v1, merge keys and interpolation), what
//! `docker-compose config` prints must agree with Marvin's model on services,
//! images, build context and Dockerfile, environment, ports and depends_on.
//!
//! docker-compose must be installed (`apt-get install -y docker-compose`);
//! without it this test fails, it does not skip.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use marvin_core::compose::{self, ComposeFile, PortMapping, parse_port};
use serde_json::Value;

const DOCKER_COMPOSE: &str = "/usr/bin/docker-compose";

fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/compose");
    assert!(
        dir.is_dir(),
        "the compose corpus is missing: {} (expected in marvin-core/tests/corpus/compose)",
        dir.display()
    );
    dir
}

/// The variables given to both docker-compose (as its whole environment)
/// and Marvin.
fn vars() -> BTreeMap<String, String> {
    [
        ("TIMEZONE", "Europe/Berlin"),
        ("PIHOLE_PW", "secret"),
        ("PIHOLE_ROUTER_IP", "192.168.1.1"),
        ("PIHOLE_NETWORK_DOMAIN", "lan"),
        ("PIHOLE_REVERSE_DNS", "192.168.1.0/24"),
        ("PIHOLE_HOST_IP", "192.168.1.2"),
        ("PIHOLE_HOST_IPV6", "fe80::2"),
        ("TAG", "1.4"),
        ("EMPTY", ""),
        ("FROM_HOST", "host-value"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Fixtures in forms docker-compose 1.29 also reads (it knows neither
/// `${A:+x}` nor nested defaults, which the unit tests cover).
const FIXTURES: &[(&str, &str)] = &[
    (
        "v1-merge-keys.yml",
        "\
java:
  build: ./java
  dockerfile: Java.Dockerfile
  environment: &env
    JAVA_OPTS: -Xmx1g
    LEVEL: info
  ports: [\"8080:8080\"]
scheduler:
  build: ./scheduler
  environment:
    <<: *env
    LEVEL: debug
  links: [java]
  ports: [\"127.0.0.1::9000\", \"9100-9101:100-101/udp\"]
",
    ),
    (
        "interpolation.yml",
        "\
version: '3.8'
x-base: &base
  restart: always
  environment:
    - PLAIN=$TAG
    - BRACED=${TAG}
    - DEFAULT=${MISSING:-fallback}
    - DEFAULT_EMPTY=${EMPTY:-fallback}
    - DASH_EMPTY=${EMPTY-fallback}
    - DASH_UNSET=${MISSING-fallback}
    - REQUIRED=${TAG?tag needed}
    - DOLLAR=$$HOME costs 5$$
    - FROM_HOST
services:
  api:
    <<: *base
    image: \"registry.local/api:${TAG}\"
    ports:
      - target: 80
        published: 8080
      - target: 53
        published: 5353
        protocol: udp
      - \"443\"
    depends_on:
      db:
        condition: service_healthy
  db:
    <<: *base
    image: postgres:16
    environment:
      POSTGRES_DB: app
      PORT: 5432
",
    ),
];

#[test]
fn docker_compose_config_agrees_with_marvin() {
    assert!(
        Path::new(DOCKER_COMPOSE).exists(),
        "{DOCKER_COMPOSE} is missing: apt-get install -y docker-compose"
    );
    let mut cases: Vec<(String, String, bool)> = Vec::new();
    let mut corpus: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    corpus.sort();
    for path in corpus {
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("a readable corpus file");
        cases.push((name, text, true));
    }
    for (name, text) in FIXTURES {
        cases.push((name.to_string(), text.to_string(), false));
    }

    let mut compared_corpus = 0;
    let mut rejected = Vec::new();
    let mut disagreements = Vec::new();
    for (name, text, from_corpus) in &cases {
        let marvin = compose::render(text, name, &vars())
            .unwrap_or_else(|e| panic!("Marvin rejects {name}:\n{e}"));
        let dir = tempfile::tempdir().expect("a temporary directory");
        let oracle = match docker_compose_config(dir.path(), text, &marvin) {
            Ok(v) => v,
            Err(why) => {
                assert!(*from_corpus, "docker-compose rejects fixture {name}: {why}");
                rejected.push(format!("{name}: {why}"));
                continue;
            }
        };
        disagreements.extend(
            compare(&marvin, &oracle, dir.path())
                .into_iter()
                .map(|d| format!("{name}: {d}")),
        );
        if *from_corpus {
            compared_corpus += 1;
        }
    }
    println!(
        "compared {compared_corpus} corpus files and {} fixtures with docker-compose",
        FIXTURES.len()
    );
    if rejected.is_empty() {
        println!("docker-compose rejected no corpus file");
    } else {
        println!("docker-compose rejected:\n  {}", rejected.join("\n  "));
    }
    assert!(
        disagreements.is_empty(),
        "Marvin and docker-compose disagree:\n{}",
        disagreements.join("\n")
    );
    assert!(
        compared_corpus >= 15,
        "only {compared_corpus} corpus files could be compared"
    );
}

/// Run `docker-compose config` on `text` in `dir`, after creating the build
/// contexts and env files it checks for. Gives the printed document, or the
/// first line of docker-compose's complaint.
fn docker_compose_config(dir: &Path, text: &str, marvin: &ComposeFile) -> Result<Value, String> {
    std::fs::write(dir.join("docker-compose.yml"), text).expect("writes the compose file");
    for service in marvin.services.values() {
        if let Some(build) = &service.build {
            std::fs::create_dir_all(dir.join(&build.context)).expect("creates a build context");
        }
        for env_file in &service.env_file {
            let path = dir.join(env_file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("creates an env_file directory");
            }
            std::fs::write(path, "").expect("creates an env_file");
        }
    }
    let output = Command::new(DOCKER_COMPOSE)
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .envs(vars())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {DOCKER_COMPOSE}: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // "The Compose file is invalid because:" says little alone.
        let first: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(2)
            .collect();
        return Err(first.join(" "));
    }
    let yaml: serde_yaml::Value =
        serde_yaml::from_slice(&output.stdout).expect("docker-compose prints YAML");
    Ok(serde_json::to_value(yaml).expect("docker-compose output has string keys"))
}

/// Every disagreement between Marvin's model and docker-compose's output.
fn compare(marvin: &ComposeFile, oracle: &Value, dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let services = oracle
        .get("services")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let ours: Vec<&String> = marvin.services.keys().collect();
    let theirs: Vec<&String> = services.keys().collect();
    if ours != theirs {
        out.push(format!(
            "services: Marvin {ours:?}, docker-compose {theirs:?}"
        ));
        return out;
    }
    for (name, service) in &marvin.services {
        let oracle = &services[name.as_str()];
        let mut check = |what: &str, ours: String, theirs: String| {
            if ours != theirs {
                out.push(format!(
                    "{name}.{what}: Marvin {ours}, docker-compose {theirs}"
                ));
            }
        };
        check(
            "image",
            format!("{:?}", service.image),
            format!("{:?}", oracle.get("image").and_then(Value::as_str)),
        );
        let (context, dockerfile) = match &service.build {
            Some(b) => (
                Some(normal(&dir.join(&b.context))),
                Some(b.dockerfile.clone()),
            ),
            None => (None, None),
        };
        let build = oracle.get("build");
        check(
            "build.context",
            format!("{context:?}"),
            format!(
                "{:?}",
                build
                    .and_then(|b| b.get("context"))
                    .and_then(Value::as_str)
                    .map(|c| normal(Path::new(c)))
            ),
        );
        check(
            "build.dockerfile",
            format!("{dockerfile:?}"),
            format!(
                "{:?}",
                build.map(|b| b
                    .get("dockerfile")
                    .and_then(Value::as_str)
                    .unwrap_or("Dockerfile")
                    .to_string())
            ),
        );
        check(
            "environment",
            format!("{:?}", environment(service, &vars())),
            format!("{:?}", oracle_environment(oracle)),
        );
        check(
            "ports",
            format!("{:?}", ports(&service.ports)),
            format!("{:?}", oracle_ports(oracle)),
        );
        let depends: BTreeMap<&str, &str> = service
            .depends_on
            .iter()
            .map(|(k, v)| (k.as_str(), v.condition.as_str()))
            .collect();
        let oracle_depends: BTreeMap<&str, &str> = oracle
            .get("depends_on")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        (
                            k.as_str(),
                            v.get("condition")
                                .and_then(Value::as_str)
                                .unwrap_or("service_started"),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        check(
            "depends_on",
            format!("{depends:?}"),
            format!("{oracle_depends:?}"),
        );
    }
    out
}

/// Lexically normalised path (`a/./b/` and `a/b` agree).
fn normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Marvin's environment with valueless entries taken from the caller, as
/// docker-compose takes them from its own environment.
fn environment(
    service: &compose::Service,
    vars: &BTreeMap<String, String>,
) -> BTreeMap<String, Option<String>> {
    service
        .environment
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().or_else(|| vars.get(k).cloned())))
        .collect()
}

/// docker-compose prints values with `$` escaped as `$$`.
fn oracle_environment(service: &Value) -> BTreeMap<String, Option<String>> {
    service
        .get("environment")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Null => None,
                        Value::String(s) => Some(s.replace("$$", "$")),
                        other => Some(other.to_string()),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The one port normaliser: Marvin's short strings, read into mappings.
fn ports(specs: &[String]) -> Vec<PortMapping> {
    let mut all: Vec<PortMapping> = specs
        .iter()
        .flat_map(|s| parse_port(s).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    all.sort();
    all
}

/// docker-compose 1.29 prints ports in the long form.
fn oracle_ports(service: &Value) -> Vec<PortMapping> {
    let mut all: Vec<PortMapping> = service
        .get("ports")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .flat_map(|p| match p {
                    // v1 and v2 files are printed in the short syntax.
                    Value::String(spec) => parse_port(spec).unwrap_or_else(|e| panic!("{e}")),
                    long => vec![long_port(long)],
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    all
}

fn long_port(p: &Value) -> PortMapping {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    PortMapping {
        host_ip: p.get("host_ip").map(text),
        published: p.get("published").map(text),
        target: p
            .get("target")
            .and_then(Value::as_u64)
            .and_then(|t| u16::try_from(t).ok())
            .unwrap_or_else(|| panic!("docker-compose printed a port without target: {p}")),
        protocol: p
            .get("protocol")
            .map(text)
            .unwrap_or_else(|| "tcp".to_string()),
    }
}
