//! Desired state: each compose service of an environment turned into the
//! exact container Marvin wants running (docs/compose.md). Pure: files the
//! caller read from the workspace come in as text.

use std::collections::{BTreeMap, BTreeSet};

use crate::compose::{ComposeFile, Format, Service, SourceProblem};
use crate::config::{EngineKind, Environment, normalize_path};
use crate::engine::{
    ContainerSpec, Health, LABEL_BUILD_KEY, LABEL_COMMITS, LABEL_DEPLOY_KEY, LABEL_ENV,
    LABEL_PROJECT, LABEL_ROLE, LABEL_SERVICE, Mount, PortBinding,
};
use crate::files::FileMount;
use crate::keys::{BuildKey, DeployKey, deploy_key};
use crate::yaml::Location;

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

/// Every problem found in an environment's services, each placed at its
/// line in the compose file when it can be found there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.lines())]
pub struct DesiredErrors {
    /// The compose file, as marvin.yml names it.
    pub file: String,
    /// The problems, in service order.
    pub problems: Vec<PlacedError>,
}

/// One problem and where it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedError {
    /// The problem.
    pub error: DesiredError,
    /// Key path in the compose file (`services.web.volumes[0]`).
    pub path: String,
    /// Line and column of that path, when found.
    pub location: Option<Location>,
}

impl DesiredErrors {
    fn lines(&self) -> String {
        let lines: Vec<String> = self
            .problems
            .iter()
            .map(|p| match p.location {
                Some(l) => format!("{}:{}:{}: {}", self.file, l.line, l.column, p.error),
                None => format!("{}: {}", self.file, p.error),
            })
            .collect();
        lines.join("\n")
    }

    /// The problems in the compose module's terms (for JSON).
    pub fn problems(&self) -> Vec<SourceProblem> {
        self.problems
            .iter()
            .map(|p| SourceProblem {
                file: self.file.clone(),
                line: p.location.map(|l| l.line),
                column: p.location.map(|l| l.column),
                service: Some(p.error.service.clone()),
                path: p.path.clone(),
                message: p.error.message.clone(),
            })
            .collect()
    }
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

/// An `expose` entry as the engine gets it: checked, and with an application
/// hint (`8080/http`, `/https`, `/grpc`) turned into `tcp`. Entries already
/// in the engine's terms (`8080`, `53/udp`) are kept as written, so their
/// deploy keys do not change.
pub fn engine_expose(text: &str) -> Result<String, String> {
    crate::compose::parse_expose(text)?;
    Ok(match text.rsplit_once('/') {
        Some((ports, suffix)) => {
            let protocol = crate::compose::transport_protocol(suffix).unwrap_or("tcp");
            if protocol == suffix {
                text.to_string()
            } else {
                format!("{}/{protocol}", ports.trim())
            }
        }
        None => text.to_string(),
    })
}

/// The powerful fields a container's options use: (the `allow_powerful`
/// name, the field as written).
pub fn powerful_fields(o: &crate::engine::ContainerOptions) -> Vec<(&'static str, String)> {
    let mut used = Vec::new();
    if !o.cap_add.is_empty() {
        used.push(("cap_add", format!("cap_add: [{}]", o.cap_add.join(", "))));
    }
    if o.privileged {
        used.push(("privileged", "privileged: true".to_string()));
    }
    if !o.devices.is_empty() {
        used.push(("devices", format!("devices: [{}]", o.devices.join(", "))));
    }
    if o.pid.as_deref() == Some("host") {
        used.push(("pid", "pid: host".to_string()));
    }
    if o.ipc.as_deref() == Some("host") {
        used.push(("ipc", "ipc: host".to_string()));
    }
    if o.host_network {
        used.push(("network_mode", "network_mode: host".to_string()));
    }
    if let Some(r) = &o.runtime {
        used.push(("runtime", format!("runtime: {r}")));
    }
    if !o.security_opt.is_empty() {
        used.push((
            "security_opt",
            format!("security_opt: [{}]", o.security_opt.join(", ")),
        ));
    }
    used
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
/// Named volumes are prefixed per environment; relative paths (`./x:/y`)
/// are files from git, handled by [`crate::files`] before this is called;
/// `~/x` is a host path in Marvin's home directory (the host path rule
/// applies); an empty source or target (an unset variable) is an error.
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
    if source.is_empty() || target.is_empty() {
        let side = if source.is_empty() {
            "source"
        } else {
            "target"
        };
        return Err(format!(
            "`{text}` has an empty {side}; if a `${{VARIABLE}}` was meant to fill it, it is not set: set it in the environment's `vars` in marvin.yml or in the `.env` beside the compose file"
        ));
    }
    if let Some(home_relative) = source
        .strip_prefix('~')
        .filter(|r| r.is_empty() || r.starts_with('/'))
    {
        // `~/x` is a host path in the home of the user Marvin runs as, as
        // docker-compose reads it; the host path rule applies to it.
        let home = std::env::var("HOME")
            .ok()
            .filter(|h| h.starts_with('/'))
            .ok_or_else(|| format!("`{text}` mounts a path in the home directory, and HOME is not set for Marvin; write the absolute host path"))?;
        return Ok(Mount::Bind {
            source: format!("{}{home_relative}", home.trim_end_matches('/')),
            target: target.to_string(),
            read_only,
        });
    }
    if source.starts_with('~') {
        return Err(format!(
            "`{text}` mounts another user's home directory; write the absolute host path"
        ));
    }
    if source.starts_with('/') {
        Ok(Mount::Bind {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        })
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

/// The desired containers of an environment, with deploy keys. Every
/// problem of every service is reported at once, each at its line.
pub fn desired_containers(
    input: &DesiredInput<'_>,
) -> Result<Vec<DesiredContainer>, DesiredErrors> {
    let mut problems = Vec::new();
    let out = containers(
        input,
        &mut |service: &str, field: String, message: String| {
            let path = match input.compose.format {
                Format::Services => format!("services.{service}.{field}"),
                Format::V1 => format!("{service}.{field}"),
            };
            let path = path.trim_end_matches('.').to_string();
            problems.push(PlacedError {
                location: crate::compose::locate(&input.compose.source, &path),
                error: DesiredError {
                    service: service.to_string(),
                    message,
                },
                path,
            });
        },
    );
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(DesiredErrors {
            file: input.compose_path.to_string(),
            problems,
        })
    }
}

/// What [`desired_containers`] does, giving each problem (service, field
/// path below the service such as `volumes[0]`, message) to `problem`.
fn containers(
    input: &DesiredInput<'_>,
    problem: &mut dyn FnMut(&str, String, String),
) -> Vec<DesiredContainer> {
    let project = input.project;
    let env_name = &input.env.name;
    // Link aliases: `links: [db:database]` in web makes `database` resolve to db.
    let mut aliases: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (name, service) in &input.compose.services {
        aliases.entry(name).or_default().insert(name.clone());
        for (i, link) in service.links.iter().enumerate() {
            let (target, alias) = link.split_once(':').unwrap_or((link, link));
            if !input.compose.services.contains_key(target) {
                problem(
                    name,
                    format!("links[{i}]"),
                    format!(
                        "links: unknown service `{target}`; {}",
                        crate::suggest::hint(
                            target,
                            input.compose.services.keys().map(String::as_str)
                        )
                    ),
                );
                continue;
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
        let mut failed = false;
        let mut fail = |field: String, message: String| {
            failed = true;
            problem(name, field, message);
        };
        let Some(image) = input.images.get(name) else {
            fail(
                String::new(),
                "has neither `build` nor `image`; give it one".into(),
            );
            continue;
        };
        let mut ports = Vec::new();
        for (i, p) in service.ports.iter().enumerate() {
            match parse_port(p) {
                Ok(p) => ports.extend(p),
                Err(m) => fail(format!("ports[{i}]"), format!("ports: {m}")),
            }
        }
        let mut expose = Vec::new();
        for (i, e) in service.expose.iter().enumerate() {
            match engine_expose(e) {
                Ok(e) => expose.push(e),
                Err(m) => fail(format!("expose[{i}]"), format!("expose: {m}")),
            }
        }
        let mut volumes = Vec::new();
        for (i, v) in service.volumes.iter().enumerate() {
            if crate::files::is_git_volume(v) {
                // A file or directory from git: `files` below.
                continue;
            }
            let checked = parse_volume(v, project, env_name).and_then(|mount| {
                if let Mount::Bind { source, .. } = &mount {
                    check_host_path(source, input.env)?;
                }
                Ok(mount)
            });
            match checked {
                Ok(mount) => volumes.push(mount),
                Err(m) => fail(format!("volumes[{i}]"), format!("volumes: {m}")),
            }
        }
        let mut nanos = |d: &Option<String>, field: &str| {
            d.as_ref().and_then(|t| match crate::duration::parse(t) {
                Ok(d) => Some(d.as_nanos() as i64),
                Err(m) => {
                    fail(
                        format!("healthcheck.{field}"),
                        format!("healthcheck.{field}: {m}"),
                    );
                    None
                }
            })
        };
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
                    interval_ns: nanos(&h.interval, "interval"),
                    timeout_ns: nanos(&h.timeout, "timeout"),
                    start_period_ns: nanos(&h.start_period, "start_period"),
                    retries: h.retries.map(i64::from),
                })
            }
            _ => None,
        };
        for field in &service.unapplied {
            fail(
                field.split(':').next().unwrap_or(field).to_string(),
                format!(
                    "`{field}` is not applied by Marvin; remove it from the service (docs/compose.md lists the fields Marvin applies)"
                ),
            );
        }
        let mut options = service.options.clone();
        for t in &service.tmpfs {
            let (path, opts) = t.split_once(':').unwrap_or((t, ""));
            options.tmpfs.insert(path.to_string(), opts.to_string());
        }
        for (field, written) in powerful_fields(&options) {
            if !input.env.allow_powerful.iter().any(|a| a == field) {
                fail(
                    field.to_string(),
                    format!(
                        "`{written}` gives the container power over the host, and {env} does not allow it: a compose file from any branch could use it; if {env} should, add it in marvin.yml: `environments.{env}.allow_powerful: [{field}]`",
                        env = env_name
                    ),
                );
            }
        }
        if let Some(ipc) = options
            .ipc
            .as_deref()
            .filter(|i| !matches!(*i, "host" | "private" | "shareable" | "none"))
        {
            fail(
                "ipc".into(),
                format!(
                    "`ipc: {ipc}` is not applied by Marvin (only `private`, `shareable`, `none`, or `host` when allowed)"
                ),
            );
        }
        if let Some(pid) = options.pid.as_deref().filter(|p| *p != "host") {
            fail(
                "pid".into(),
                format!("`pid: {pid}` is not applied by Marvin (only `host`, when allowed)"),
            );
        }
        if input.env.engine == EngineKind::Swarm && !options.is_empty() {
            // The swarm engine does not carry these to its services yet.
            let set: Vec<String> = serde_json::to_value(&options)
                .ok()
                .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
                .unwrap_or_default();
            fail(
                String::new(),
                format!(
                    "fields `{}` are not applied on a swarm environment yet ({env_name} is one); remove them, or deploy this service to a single-engine environment",
                    set.join("`, `")
                ),
            );
        }
        if failed {
            continue;
        }
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
            expose,
            volumes,
            healthcheck,
            restart: service.restart.clone(),
            working_dir: service.working_dir.clone(),
            user: service.user.clone(),
            // An explicit limit (`cpus`, `mem_limit`, `deploy.resources.limits`) wins over `size`.
            nano_cpus: service
                .nano_cpus
                .or(service.size.map(|s| (s.cpus() * 1e9) as i64)),
            memory_bytes: service
                .memory_limit
                .or(service.size.map(|s| s.memory_bytes() as i64)),
            replicas: (input.env.engine == EngineKind::Swarm)
                .then(|| service.replicas.unwrap_or(1)),
            options,
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
    out
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
    fn protocol_hints_mean_tcp_and_never_reach_the_engine() {
        for hint in ["http", "https", "grpc", "HTTP"] {
            let p = parse_port(&format!("8080:80/{hint}")).unwrap();
            assert_eq!(p[0].protocol, "tcp", "{hint}");
            assert_eq!(engine_expose(&format!("8080/{hint}")).unwrap(), "8080/tcp");
        }
        assert_eq!(
            engine_expose("8080").unwrap(),
            "8080",
            "unchanged: same deploy key"
        );
        assert_eq!(engine_expose("53/udp").unwrap(), "53/udp");
        let e = engine_expose("8080/quic").unwrap_err();
        assert!(e.contains("unknown protocol"), "{e}");
        let e = parse_port("80/quic").unwrap_err();
        assert!(e.contains("unknown protocol"), "{e}");
        assert!(
            engine_expose("eighty")
                .unwrap_err()
                .contains("no valid port")
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
    }

    #[test]
    fn a_home_path_is_a_host_path_and_an_empty_source_is_an_error() {
        let home = std::env::var("HOME").expect("tests run with HOME");
        assert_eq!(
            parse_volume("~/media:/media:ro", "p", "dev").unwrap(),
            Mount::Bind {
                source: format!("{}/media", home.trim_end_matches('/')),
                target: "/media".into(),
                read_only: true
            }
        );
        let e = parse_volume(":/media", "p", "dev").unwrap_err();
        assert!(e.contains("has an empty source"), "{e}");
        assert!(e.contains("`vars` in marvin.yml"), "{e}");
        assert!(
            parse_volume("data:", "p", "dev")
                .unwrap_err()
                .contains("empty target")
        );
        let e = parse_volume("~other/x:/x", "p", "dev").unwrap_err();
        assert!(e.contains("write the absolute host path"), "{e}");
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
    fn container_options_are_refused_on_swarm_and_applied_elsewhere() {
        let compose = crate::compose::render(
            "services:\n  web:\n    image: a\n    init: true\n    ulimits: {nofile: 1024}\n",
            "docker-compose.yml",
            &BTreeMap::new(),
        )
        .expect("renders");
        let images = BTreeMap::from([(
            "web".to_string(),
            ServiceImage {
                tag: "a".into(),
                key: None,
            },
        )]);
        let (none, commits, files) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let plan = |env: &Environment| {
            desired_containers(&DesiredInput {
                project: "shop",
                env,
                compose_path: "docker-compose.yml",
                compose: &compose,
                images: &images,
                env_files: &none,
                commits: &commits,
                files: &files,
                files_root: "/data/files",
            })
        };
        let single = project("");
        let ok = plan(single.environment("dev").unwrap()).expect("plans");
        assert_eq!(ok[0].spec.options.init, Some(true));
        let swarm = project("engine: swarm, registry: \"127.0.0.1:5000\"");
        let e = plan(swarm.environment("dev").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fields `init`, `ulimits` are not applied on a swarm environment yet"),
            "{e}"
        );
        assert!(
            e.starts_with("docker-compose.yml:2:3: service `web`"),
            "{e}"
        );
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
