//! Desired state: each compose service of an environment turned into the
//! exact container Marvin wants running (DESIGN.md §5). Pure: files the
//! caller read from the workspace come in as text.

use std::collections::{BTreeMap, BTreeSet};

use crate::compose::{ComposeFile, Service};
use crate::config::{EngineKind, Environment, normalize_path};
use crate::engine::{
    ContainerSpec, Health, LABEL_BUILD_KEY, LABEL_COMMITS, LABEL_DEPLOY_KEY, LABEL_ENV,
    LABEL_PROJECT, LABEL_ROLE, LABEL_SERVICE, Mount, PortBinding,
};
use crate::files::FileMount;
use crate::keys::{BuildKey, DeployKey, deploy_key};

/// A service's desired container and its deploy key.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredContainer {
    /// Compose service name.
    pub service: String,
    /// The container, with the deploy-key label set.
    pub spec: ContainerSpec,
    /// Its deploy key.
    pub deploy_key: DeployKey,
    /// The build key of its image, when built here.
    pub build_key: Option<BuildKey>,
    /// Files it mounts from git, secrets and configs, to write before it is created.
    pub files: Vec<FileMount>,
}

/// The image each service runs: its tag and, when Marvin builds it, its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceImage {
    /// Image tag (Marvin's for built services, compose `image:` otherwise).
    pub tag: String,
    /// Build key, for built services.
    pub key: Option<BuildKey>,
}

/// Everything needed to compute an environment's desired containers.
#[derive(Debug, Clone, Copy)]
pub struct DesiredInput<'a> {
    /// Project name.
    pub project: &'a str,
    /// The environment.
    pub env: &'a Environment,
    /// Workspace path of the compose file (env_file paths are relative to its directory).
    pub compose_path: &'a str,
    /// The rendered compose file.
    pub compose: &'a ComposeFile,
    /// Image per service.
    pub images: &'a BTreeMap<String, ServiceImage>,
    /// Contents of every env file named by [`env_file_paths`], by workspace path.
    pub env_files: &'a BTreeMap<String, String>,
    /// Resolved commit per repo.
    pub commits: &'a BTreeMap<String, String>,
    /// Files from git, secrets and configs per service, with content ids ([`crate::files`]).
    pub files: &'a BTreeMap<String, Vec<FileMount>>,
    /// Where they are written on the host (`<data>/files`).
    pub files_root: &'a str,
}

/// Something in the compose file that cannot be deployed as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service `{service}`: {message}")]
pub struct DesiredError {
    /// The service.
    pub service: String,
    /// What is wrong and what would be right.
    pub message: String,
}

/// The network of an environment: `marvin-<project>-<env>`.
pub fn network_name(project: &str, env: &str) -> String {
    format!("marvin-{project}-{env}").to_lowercase()
}

/// The container name of a service: `<project>-<env>-<service>`.
pub fn container_name(project: &str, env: &str, service: &str) -> String {
    format!("{project}-{env}-{service}")
}

/// The name of a named volume in an environment: `<project>-<env>-<volume>`.
pub fn volume_name(project: &str, env: &str, volume: &str) -> String {
    format!("{project}-{env}-{volume}")
}

/// Resolve a path relative to the compose file's directory into a workspace path.
pub fn relative_to_compose(compose_path: &str, path: &str) -> Option<String> {
    let dir = compose_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    normalize_path(&format!("{dir}/{path}"))
}

/// Every env file the environment's containers read, as workspace paths:
/// services' `env_file`s (relative to the compose file) and the environment's.
pub fn env_file_paths(compose_path: &str, compose: &ComposeFile, env: &Environment) -> Vec<String> {
    let mut paths = BTreeSet::new();
    for service in compose.services.values() {
        for f in &service.env_file {
            if let Some(p) = relative_to_compose(compose_path, f) {
                paths.insert(p);
            }
        }
    }
    for f in &env.env_file {
        if let Some(p) = normalize_path(f) {
            paths.insert(p);
        }
    }
    paths.into_iter().collect()
}

/// Parse an env file: `KEY=VALUE` lines, `#` comments, blank lines, optional
/// `export `, values in matching single or double quotes unquoted.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (k, v) = line.split_once('=')?;
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"'))
                    || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// The environment variables of one service, in the documented order (later
/// wins): compose `environment`, the service's `env_file`s, the environment's
/// `env_file`s and `env`, then `MARVIN_ENV`, `MARVIN_PROJECT`,
/// `MARVIN_COMMIT_<REPO>`. A compose entry without a value (`- FOO`) takes
/// the environment's `vars` value, or is left out.
pub fn service_env(input: &DesiredInput<'_>, service: &Service) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        if let Some(slot) = env.iter_mut().find(|(key, _)| key == k) {
            slot.1 = v.to_string();
        } else {
            env.push((k.to_string(), v.to_string()));
        }
    };
    for (k, v) in &service.environment {
        match v {
            Some(v) => set(k, v),
            None => {
                if let Some(v) = input.env.vars.get(k) {
                    set(k, v);
                }
            }
        }
    }
    let service_files = service
        .env_file
        .iter()
        .filter_map(|f| relative_to_compose(input.compose_path, f));
    let env_files = input.env.env_file.iter().filter_map(|f| normalize_path(f));
    for path in service_files.chain(env_files) {
        if let Some(text) = input.env_files.get(&path) {
            for (k, v) in parse_env_file(text) {
                set(&k, &v);
            }
        }
    }
    for (k, v) in &input.env.env {
        set(k, v);
    }
    set("MARVIN_ENV", &input.env.name);
    set("MARVIN_PROJECT", input.project);
    for (repo, commit) in input.commits {
        set(&format!("MARVIN_COMMIT_{}", env_name_part(repo)), commit);
    }
    env
}

fn env_name_part(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A compose short port (`8080:80`, `127.0.0.1:8080:80/udp`, `80`,
/// `8000-8001:9000-9001`) as engine bindings. A published range for one
/// container port binds its first port.
pub fn parse_port(text: &str) -> Result<Vec<PortBinding>, String> {
    crate::compose::parse_port(text)?
        .into_iter()
        .map(|m| {
            let host_port = match &m.published {
                None => None,
                Some(p) => Some(
                    p.split('-')
                        .next()
                        .and_then(|first| first.parse::<u16>().ok())
                        .ok_or_else(|| format!("port `{text}` has no valid published port"))?,
                ),
            };
            Ok(PortBinding {
                host_ip: m.host_ip,
                host_port,
                container_port: m.target,
                protocol: m.protocol,
            })
        })
        .collect()
}

/// Whether an environment lets its containers bind-mount `source` from the
/// host: only paths under one of its `allow_host_paths`. The compose file
/// comes from a branch anyone with push access can change, and a host path
/// (the Docker socket, `/etc`) would give them the host.
pub fn check_host_path(source: &str, env: &Environment) -> Result<(), String> {
    let normal = source.trim_end_matches('/');
    let escapes = normal.split('/').any(|part| part == "..");
    let allowed = !escapes
        && env.allow_host_paths.iter().any(|prefix| {
            let prefix = prefix.trim_end_matches('/');
            normal == prefix || normal.starts_with(&format!("{prefix}/"))
        });
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "`{source}` is a host path, and {env} does not allow it: a compose file from any branch could mount the host; if {env} should, list it in marvin.yml (`environments.{env}.allow_host_paths: [{source}]`), or use a named volume",
            env = env.name
        ))
    }
}

/// Parse a compose short volume (`data:/var/lib/x:ro`, `/host:/c`, `/c`).
/// Named volumes are prefixed per environment; `~` is a host path Docker
/// would not expand, refused. Relative paths (`./x:/y`) are files from git,
/// handled by [`crate::files`] before this is called.
pub fn parse_volume(text: &str, project: &str, env: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] => {
            return Ok(Mount::Anonymous {
                target: t.to_string(),
            });
        }
        [s, t] => (*s, *t, ""),
        [s, t, m] => (*s, *t, *m),
        _ => return Err(format!("`{text}` is not a volume; write `name:/path[:ro]`")),
    };
    let read_only = mode.split(',').any(|m| m == "ro");
    if source.starts_with('/') {
        Ok(Mount::Bind {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        })
    } else if source.starts_with('~') {
        Err(format!(
            "`{text}` mounts `{source}`, a host path in the home directory of whoever runs Marvin; write it as an absolute path the environment allows (`allow_host_paths` in marvin.yml), or use a named volume"
        ))
    } else if source.starts_with('.') {
        // Relative mounts are served from git by `crate::files`; this is what is left.
        Err(format!(
            "`{text}` is not a mount of a path in git; write `./path:/container/path[:ro]`"
        ))
    } else {
        Ok(Mount::Named {
            name: volume_name(project, env, source),
            target: target.to_string(),
            read_only,
        })
    }
}

fn nanos(d: &Option<String>, service: &str, field: &str) -> Result<Option<i64>, DesiredError> {
    d.as_ref()
        .map(|t| {
            crate::duration::parse(t)
                .map(|d| d.as_nanos() as i64)
                .map_err(|m| DesiredError {
                    service: service.to_string(),
                    message: format!("healthcheck.{field}: {m}"),
                })
        })
        .transpose()
}

/// The desired containers of an environment, with deploy keys.
pub fn desired_containers(input: &DesiredInput<'_>) -> Result<Vec<DesiredContainer>, DesiredError> {
    let project = input.project;
    let env_name = &input.env.name;
    // Link aliases: `links: [db:database]` in web makes `database` resolve to db.
    let mut aliases: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, service) in &input.compose.services {
        aliases.entry(name).or_default().insert(name.clone());
        for link in &service.links {
            let (target, alias) = link.split_once(':').unwrap_or((link, link));
            if !input.compose.services.contains_key(target) {
                return Err(DesiredError {
                    service: name.clone(),
                    message: format!(
                        "links: unknown service `{target}`; {}",
                        crate::suggest::hint(
                            target,
                            input.compose.services.keys().map(String::as_str)
                        )
                    ),
                });
            }
            aliases.entry(target).or_default().insert(alias.to_string());
        }
    }
    let commits_label: Vec<String> = input
        .commits
        .iter()
        .map(|(r, c)| format!("{r}={c}"))
        .collect();

    let mut out = Vec::new();
    for (name, service) in &input.compose.services {
        let err = |message: String| DesiredError {
            service: name.clone(),
            message,
        };
        let image = input
            .images
            .get(name)
            .ok_or_else(|| err("has neither `build` nor `image`; give it one".into()))?;
        let mut ports = Vec::new();
        for p in &service.ports {
            ports.extend(parse_port(p).map_err(|m| err(format!("ports: {m}")))?);
        }
        let mut volumes = service
            .volumes
            .iter()
            .filter(|v| !crate::files::is_git_volume(v))
            .map(|v| parse_volume(v, project, env_name).map_err(|m| err(format!("volumes: {m}"))))
            .collect::<Result<Vec<_>, _>>()?;
        for v in &volumes {
            if let Mount::Bind { source, .. } = v {
                check_host_path(source, input.env).map_err(|m| err(format!("volumes: {m}")))?;
            }
        }
        let files = input.files.get(name).cloned().unwrap_or_default();
        volumes.extend(files.iter().map(|f| Mount::Bind {
            source: f.host_path(input.files_root, project, env_name),
            target: f.target.clone(),
            read_only: f.read_only,
        }));
        let healthcheck = match &service.healthcheck {
            Some(h) if !h.disable && h.test.first().map(String::as_str) != Some("NONE") => {
                Some(Health {
                    test: h.test.clone(),
                    interval_ns: nanos(&h.interval, name, "interval")?,
                    timeout_ns: nanos(&h.timeout, name, "timeout")?,
                    start_period_ns: nanos(&h.start_period, name, "start_period")?,
                    retries: h.retries.map(i64::from),
                })
            }
            _ => None,
        };
        let mut labels = service.labels.clone();
        labels.insert(LABEL_PROJECT.into(), project.to_string());
        labels.insert(LABEL_ENV.into(), env_name.clone());
        labels.insert(LABEL_SERVICE.into(), name.clone());
        labels.insert(LABEL_ROLE.into(), "service".into());
        labels.insert(LABEL_COMMITS.into(), commits_label.join(","));
        if let Some(k) = &image.key {
            labels.insert(LABEL_BUILD_KEY.into(), k.0.clone());
        }
        let mut spec = ContainerSpec {
            name: container_name(project, env_name, name),
            image: image.tag.clone(),
            command: service.command.clone(),
            entrypoint: service.entrypoint.clone(),
            env: service_env(input, service),
            labels,
            network: network_name(project, env_name),
            aliases: aliases
                .get(name.as_str())
                .map(|a| a.iter().cloned().collect())
                .unwrap_or_default(),
            ports,
            expose: service.expose.clone(),
            volumes,
            healthcheck,
            restart: service.restart.clone(),
            working_dir: service.working_dir.clone(),
            user: service.user.clone(),
            nano_cpus: service.size.map(|s| (s.cpus() * 1e9) as i64),
            memory_bytes: service.size.map(|s| s.memory_bytes() as i64),
            replicas: (input.env.engine == EngineKind::Swarm)
                .then(|| service.replicas.unwrap_or(1)),
        };
        let key = deploy_key(&spec, image.key.as_ref());
        spec.labels.insert(LABEL_DEPLOY_KEY.into(), key.0.clone());
        out.push(DesiredContainer {
            service: name.clone(),
            spec,
            deploy_key: key,
            build_key: image.key.clone(),
            files,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_in_every_short_form() {
        let p = parse_port("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(p[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            (p[0].host_port, p[0].container_port, p[0].protocol.as_str()),
            (Some(8080), 80, "udp")
        );
        let p = parse_port("80").unwrap();
        assert_eq!((p[0].host_port, p[0].container_port), (None, 80));
        let p = parse_port("9000-9001:8000-8001").unwrap();
        assert_eq!(
            p.iter()
                .map(|b| (b.host_port, b.container_port))
                .collect::<Vec<_>>(),
            vec![(Some(9000), 8000), (Some(9001), 8001)]
        );
        assert!(
            parse_port("eighty")
                .unwrap_err()
                .contains("no valid container port")
        );
    }

    #[test]
    fn named_volumes_are_per_environment() {
        assert_eq!(
            parse_volume("data:/var/lib/db:ro", "shop", "dev").unwrap(),
            Mount::Named {
                name: "shop-dev-data".into(),
                target: "/var/lib/db".into(),
                read_only: true
            }
        );
        assert_eq!(
            parse_volume("/tmp", "p", "e").unwrap(),
            Mount::Anonymous {
                target: "/tmp".into()
            }
        );
        assert!(
            parse_volume("~/conf:/etc/x", "p", "e")
                .unwrap_err()
                .contains("a host path in the home directory")
        );
    }

    #[test]
    fn env_files_parse_like_compose() {
        let parsed = parse_env_file("# c\nA=1\n\nexport B=\"two words\"\nC='x=y'\nnoequals\n");
        assert_eq!(
            parsed,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into())
            ]
        );
    }

    #[test]
    fn paths_are_relative_to_the_compose_file() {
        assert_eq!(
            relative_to_compose("deploy/docker-compose.yml", "../envs/a.env").as_deref(),
            Some("envs/a.env")
        );
        assert_eq!(
            relative_to_compose("docker-compose.yml", "./a.env").as_deref(),
            Some("a.env")
        );
    }
}

#[cfg(test)]
mod host_path_tests {
    use super::*;
    use crate::config::Project;

    fn project(allow: &str) -> Project {
        Project::parse(
            &format!(
                "project: shop\nrepos:\n  app: {{url: /srv/app.git}}\nenvironments:\n  dev: {{{allow}}}\n"
            ),
            "marvin.yml",
        )
        .expect("the fixture parses")
    }

    #[test]
    fn host_paths_are_refused_unless_the_environment_allows_them() {
        let p = project("");
        let dev = p.environment("dev").unwrap();
        let e = check_host_path("/var/run/docker.sock", dev).unwrap_err();
        assert!(e.contains("`/var/run/docker.sock` is a host path"), "{e}");
        assert!(
            e.contains("environments.dev.allow_host_paths: [/var/run/docker.sock]"),
            "{e}"
        );

        let p = project("allow_host_paths: [/srv/shared/]");
        let dev = p.environment("dev").unwrap();
        assert_eq!(check_host_path("/srv/shared", dev), Ok(()));
        assert_eq!(check_host_path("/srv/shared/logs", dev), Ok(()));
        assert!(
            check_host_path("/srv/sharedx", dev).is_err(),
            "a prefix of a name is not the directory"
        );
        assert!(check_host_path("/srv/shared/../../etc", dev).is_err());
        assert!(check_host_path("/etc", dev).is_err());
    }

    #[test]
    fn allow_host_paths_must_be_absolute_and_plain() {
        for bad in ["[srv/x]", "['/srv/../etc']", "['/']"] {
            let e = Project::parse(
                &format!(
                    "project: shop\nrepos:\n  app: {{url: /srv/app.git}}\nenvironments:\n  dev: {{allow_host_paths: {bad}}}\n"
                ),
                "marvin.yml",
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("environments.dev.allow_host_paths[0]"),
                "{bad}: {e}"
            );
        }
    }
}
