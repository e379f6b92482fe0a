//! The typed compose model, read from a validated document.
//!
//! Short and long syntaxes are brought to one form: lists and maps to maps,
//! long port and volume syntax to the short strings, `command` strings to
//! words. Numbers and booleans in `environment`, `labels` and build `args`
//! become strings, as compose does.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::document::invalid;
use super::{ComposeError, Format, KeyPath, split_words};
use crate::{duration, suggest};

/// A compose file, read and normalised.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ComposeFile {
    /// Which layout the file used.
    pub format: Format,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Top-level named volumes, as written (`{}` when written empty).
    pub volumes: BTreeMap<String, Value>,
    /// Top-level networks, as written (`{}` when written empty).
    pub networks: BTreeMap<String, Value>,
    /// Top-level secrets, as written (read by [`crate::files`]).
    pub secrets: BTreeMap<String, Value>,
    /// Top-level configs, as written (read by [`crate::files`]).
    pub configs: BTreeMap<String, Value>,
    /// Things that worked but deserve a look (unset variables that became "").
    pub warnings: Vec<String>,
    /// The text the model was read from (after `{{ }}` templating), to
    /// place later problems at their line with [`super::locate`].
    #[serde(skip)]
    pub source: String,
}

/// One service.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Service {
    /// How to build the image, when it is built here.
    pub build: Option<Build>,
    /// The image to run (or the tag to give a built image).
    pub image: Option<String>,
    /// Command words; a string is split like a POSIX shell would (no expansion).
    pub command: Option<Vec<String>>,
    /// Entrypoint words; split like `command`.
    pub entrypoint: Option<Vec<String>>,
    /// Container environment; `None` means "take the value from the caller".
    pub environment: BTreeMap<String, Option<String>>,
    /// Environment files, in order.
    pub env_file: Vec<String>,
    /// Published ports in the short syntax (`[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]`).
    pub ports: Vec<String>,
    /// Ports exposed to other services only.
    pub expose: Vec<String>,
    /// Links (`service` or `service:alias`).
    pub links: Vec<String>,
    /// Services this one starts after, with the condition to wait for.
    pub depends_on: BTreeMap<String, DependsOn>,
    /// How to tell the service is healthy.
    pub healthcheck: Option<Healthcheck>,
    /// Mounts in the short syntax (`SOURCE:TARGET[:OPTIONS]` or `TARGET`).
    pub volumes: Vec<String>,
    /// tmpfs mounts (container paths), from `tmpfs:` and long-form `type: tmpfs` volumes.
    pub tmpfs: Vec<String>,
    /// Networks the service joins.
    pub networks: Vec<String>,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// Restart policy (`always`, `on-failure`, ...).
    pub restart: Option<String>,
    /// Working directory inside the container.
    pub working_dir: Option<String>,
    /// User inside the container.
    pub user: Option<String>,
    /// Marvin's size class (`size:` or `x-size:`), mapped to CPU and memory limits.
    pub size: Option<Size>,
    /// Replica count from `deploy.replicas` (or `scale`).
    pub replicas: Option<u64>,
    /// Further fields applied to the container (docs/compose.md).
    pub options: crate::engine::ContainerOptions,
    /// Memory limit in bytes from `mem_limit` or `deploy.resources.limits.memory` (wins over `size`).
    pub memory_limit: Option<i64>,
    /// CPU limit in billionths from `cpus` or `deploy.resources.limits.cpus` (wins over `size`).
    pub nano_cpus: Option<i64>,
    /// Fields written that Marvin does not apply: refused when the environment is planned.
    pub unapplied: Vec<String>,
    /// The service's `secrets`, as written (read by [`crate::files`]).
    pub secrets: Vec<Value>,
    /// The service's `configs`, as written (read by [`crate::files`]).
    pub configs: Vec<Value>,
}

/// How a service's image is built.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Build {
    /// Build context as written (a path relative to the compose file, or a URL).
    pub context: String,
    /// Dockerfile path relative to the context; `Dockerfile` by default.
    pub dockerfile: String,
    /// Build args; args written without a value take the caller's variable,
    /// and are left out when there is none.
    pub args: BTreeMap<String, String>,
    /// Multi-stage target.
    pub target: Option<String>,
    /// Target platform: the first of `build.platforms`, else the service's `platform`.
    pub platform: Option<String>,
}

/// A `depends_on` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DependsOn {
    /// `service_started` (the default), `service_healthy` or `service_completed_successfully`.
    pub condition: String,
}

/// A service healthcheck.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", cmd]` or `["NONE"]`; a string `s` means `["CMD-SHELL", s]`.
    pub test: Vec<String>,
    /// Time between checks (compose duration such as `1m30s`).
    pub interval: Option<String>,
    /// Time one check may take.
    pub timeout: Option<String>,
    /// Grace period after start.
    pub start_period: Option<String>,
    /// Failures in a row before the service counts as unhealthy.
    pub retries: Option<u32>,
    /// The healthcheck is turned off (`disable: true` or test `["NONE"]`).
    pub disable: bool,
}

/// Marvin's size classes (docs/compose.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Size {
    /// 0.125 CPU, 256 MiB.
    XXS,
    /// 0.25 CPU, 512 MiB.
    XS,
    /// 0.5 CPU, 1 GiB.
    S,
    /// 1 CPU, 2 GiB.
    M,
    /// 2 CPU, 4 GiB.
    L,
    /// 4 CPU, 8 GiB.
    XL,
}

const MIB: u64 = 1024 * 1024;

impl Size {
    /// Every size, smallest first.
    pub const ALL: [Size; 6] = [Size::XXS, Size::XS, Size::S, Size::M, Size::L, Size::XL];

    /// CPU limit in cores.
    pub fn cpus(&self) -> f64 {
        match self {
            Size::XXS => 0.125,
            Size::XS => 0.25,
            Size::S => 0.5,
            Size::M => 1.0,
            Size::L => 2.0,
            Size::XL => 4.0,
        }
    }

    /// Memory limit in bytes.
    pub fn memory_bytes(&self) -> u64 {
        match self {
            Size::XXS => 256 * MIB,
            Size::XS => 512 * MIB,
            Size::S => 1024 * MIB,
            Size::M => 2048 * MIB,
            Size::L => 4096 * MIB,
            Size::XL => 8192 * MIB,
        }
    }

    /// The name as written in compose files.
    pub fn name(&self) -> &'static str {
        match self {
            Size::XXS => "XXS",
            Size::XS => "XS",
            Size::S => "S",
            Size::M => "M",
            Size::L => "L",
            Size::XL => "XL",
        }
    }

    /// Read a size name, ignoring case.
    pub fn parse(text: &str) -> Option<Size> {
        Size::ALL
            .into_iter()
            .find(|s| s.name().eq_ignore_ascii_case(text.trim()))
    }
}

/// Build the typed model from a normalised (and validated) document.
/// `vars` give values to build args written without one.
pub fn model(
    doc: &Value,
    file: &str,
    format: Format,
    vars: &BTreeMap<String, String>,
) -> Result<ComposeFile, ComposeError> {
    let reader = Reader { file, format, vars };
    let root = KeyPath::default();
    let mut services = BTreeMap::new();
    let mut warnings = Vec::new();
    if let Some(value) = doc.get("services") {
        let path = root.key("services");
        for (name, service) in reader.object(value, &path)? {
            let (service, more) = reader.service(service, &path.key(name))?;
            services.insert(name.clone(), service);
            warnings.extend(more);
        }
    }
    Ok(ComposeFile {
        format,
        services,
        volumes: reader.named(doc.get("volumes"), &root.key("volumes"))?,
        networks: reader.named(doc.get("networks"), &root.key("networks"))?,
        secrets: reader.named(doc.get("secrets"), &root.key("secrets"))?,
        configs: reader.named(doc.get("configs"), &root.key("configs"))?,
        warnings,
        source: String::new(),
    })
}

struct Reader<'a> {
    file: &'a str,
    format: Format,
    vars: &'a BTreeMap<String, String>,
}

impl Reader<'_> {
    fn error(&self, path: &KeyPath, message: &str) -> ComposeError {
        let path = match self.format {
            Format::V1 => KeyPath(
                path.as_str()
                    .strip_prefix("services.")
                    .unwrap_or(path.as_str())
                    .to_string(),
            ),
            Format::Services => path.clone(),
        };
        invalid(self.file, &path, message)
    }

    fn service(
        &self,
        value: &Value,
        path: &KeyPath,
    ) -> Result<(Service, Vec<String>), ComposeError> {
        let s = self.object(value, path)?;
        let fields = super::fields::read(s, path, self.file, &|p, m| self.error(p, m))?;
        let get = |key: &str| s.get(key).filter(|v| !v.is_null());
        let at = |key: &str| path.key(key);
        let platform = get("platform")
            .map(|v| self.string(v, &at("platform")))
            .transpose()?;
        let mut tmpfs = match get("tmpfs") {
            Some(v) => self.strings(v, &at("tmpfs"))?,
            None => Vec::new(),
        };
        let mut volumes = Vec::new();
        if let Some(v) = get("volumes") {
            for (i, item) in self.array(v, &at("volumes"))?.iter().enumerate() {
                match self.volume(item, &at("volumes").index(i))? {
                    Mount::Volume(short) => volumes.push(short),
                    Mount::Tmpfs(target) => tmpfs.push(target),
                }
            }
        }
        if get("image").is_none() && get("build").is_none() {
            let why = match self.format {
                Format::V1 => {
                    "a service needs `image` or `build` (in this format every top-level key is a service; start shared blocks with `x-`)"
                }
                Format::Services => "a service needs `image` or `build`",
            };
            return Err(self.error(path, why));
        }
        let service = Service {
            build: get("build")
                .map(|v| self.build(v, &at("build"), platform.as_deref()))
                .transpose()?,
            image: get("image")
                .map(|v| self.string(v, &at("image")))
                .transpose()?,
            command: get("command")
                .map(|v| self.words(v, &at("command")))
                .transpose()?,
            entrypoint: get("entrypoint")
                .map(|v| self.words(v, &at("entrypoint")))
                .transpose()?,
            environment: match get("environment") {
                Some(v) => self.pairs(v, &at("environment"))?,
                None => BTreeMap::new(),
            },
            env_file: match get("env_file") {
                Some(v) => self.env_files(v, &at("env_file"))?,
                None => Vec::new(),
            },
            ports: match get("ports") {
                Some(v) => self.ports(v, &at("ports"))?,
                None => Vec::new(),
            },
            expose: match get("expose") {
                Some(v) => self.strings(v, &at("expose"))?,
                None => Vec::new(),
            },
            links: match get("links") {
                Some(v) => self.strings(v, &at("links"))?,
                None => Vec::new(),
            },
            depends_on: match get("depends_on") {
                Some(v) => self.depends_on(v, &at("depends_on"))?,
                None => BTreeMap::new(),
            },
            healthcheck: get("healthcheck")
                .map(|v| self.healthcheck(v, &at("healthcheck")))
                .transpose()?,
            volumes,
            tmpfs,
            networks: match get("networks") {
                Some(Value::Object(map)) => map.keys().cloned().collect(),
                Some(v) => self.strings(v, &at("networks"))?,
                None => Vec::new(),
            },
            labels: match get("labels") {
                Some(v) => self
                    .pairs(v, &at("labels"))?
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default()))
                    .collect(),
                None => BTreeMap::new(),
            },
            restart: get("restart")
                .map(|v| self.string(v, &at("restart")))
                .transpose()?,
            working_dir: get("working_dir")
                .map(|v| self.string(v, &at("working_dir")))
                .transpose()?,
            user: get("user")
                .map(|v| self.string(v, &at("user")))
                .transpose()?,
            size: match (get("size"), get("x-size")) {
                (Some(v), _) => Some(self.size(v, &at("size"))?),
                (None, Some(v)) => Some(self.size(v, &at("x-size"))?),
                (None, None) => None,
            },
            replicas: match (get("deploy").and_then(|d| d.get("replicas")), get("scale")) {
                (Some(v), _) if !v.is_null() => Some(self.count(v, &at("deploy").key("replicas"))?),
                (_, Some(v)) => Some(self.count(v, &at("scale"))?),
                _ => None,
            },
            options: fields.options,
            memory_limit: fields.memory_limit,
            nano_cpus: fields.nano_cpus,
            unapplied: fields.unapplied,
            secrets: match get("secrets") {
                Some(v) => self.array(v, &at("secrets"))?.to_vec(),
                None => Vec::new(),
            },
            configs: match get("configs") {
                Some(v) => self.array(v, &at("configs"))?.to_vec(),
                None => Vec::new(),
            },
        };
        Ok((service, fields.warnings))
    }

    fn build(
        &self,
        value: &Value,
        path: &KeyPath,
        service_platform: Option<&str>,
    ) -> Result<Build, ComposeError> {
        let mut build = Build {
            context: ".".to_string(),
            dockerfile: "Dockerfile".to_string(),
            args: BTreeMap::new(),
            target: None,
            platform: service_platform.map(str::to_string),
        };
        match value {
            Value::Object(b) => {
                let get = |key: &str| b.get(key).filter(|v| !v.is_null());
                // These need a BuildKit session (the client serving files or
                // secrets to the build), which Marvin does not open.
                for (key, what) in [
                    ("secrets", "build secrets (`RUN --mount=type=secret`)"),
                    ("ssh", "SSH agent forwarding (`RUN --mount=type=ssh`)"),
                    ("additional_contexts", "named build contexts"),
                ] {
                    if get(key).is_some() {
                        return Err(self.error(
                            &path.key(key),
                            &format!(
                                "{what} are not supported: Marvin's BuildKit builds run \
                                 without a client session. Remove `{key}` from the build \
                                 section and make the Dockerfile build without it (read a \
                                 secret at run time from the service's environment instead)"
                            ),
                        ));
                    }
                }
                if let Some(v) = get("context") {
                    build.context = self.string(v, &path.key("context"))?;
                }
                if let Some(v) = get("dockerfile") {
                    build.dockerfile = self.string(v, &path.key("dockerfile"))?;
                }
                if let Some(v) = get("args") {
                    for (k, v) in self.pairs(v, &path.key("args"))? {
                        if let Some(v) = v.or_else(|| self.vars.get(&k).cloned()) {
                            build.args.insert(k, v);
                        }
                    }
                }
                if let Some(v) = get("target") {
                    build.target = Some(self.string(v, &path.key("target"))?);
                }
                if let Some(v) = get("platforms").and_then(|p| p.get(0)) {
                    build.platform = Some(self.string(v, &path.key("platforms").index(0))?);
                }
            }
            other => build.context = self.string(other, path)?,
        }
        Ok(build)
    }

    fn healthcheck(&self, value: &Value, path: &KeyPath) -> Result<Healthcheck, ComposeError> {
        let h = self.object(value, path)?;
        let get = |key: &str| h.get(key).filter(|v| !v.is_null());
        let mut check = Healthcheck {
            test: match get("test") {
                Some(Value::String(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
                Some(v) => self.strings(v, &path.key("test"))?,
                None => Vec::new(),
            },
            disable: matches!(get("disable"), Some(Value::Bool(true))),
            ..Healthcheck::default()
        };
        if check.test.first().is_some_and(|t| t == "NONE") {
            check.disable = true;
        }
        for (key, slot) in [
            ("interval", &mut check.interval),
            ("timeout", &mut check.timeout),
            ("start_period", &mut check.start_period),
        ] {
            if let Some(v) = get(key) {
                let text = self.string(v, &path.key(key))?;
                duration::parse(&text).map_err(|e| self.error(&path.key(key), &e))?;
                *slot = Some(text);
            }
        }
        if let Some(v) = get("retries") {
            let n = self.count(v, &path.key("retries"))?;
            check.retries = Some(
                u32::try_from(n).map_err(|_| self.error(&path.key("retries"), "is too large"))?,
            );
        }
        Ok(check)
    }

    fn depends_on(
        &self,
        value: &Value,
        path: &KeyPath,
    ) -> Result<BTreeMap<String, DependsOn>, ComposeError> {
        let started = || DependsOn {
            condition: "service_started".to_string(),
        };
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(name, v)| {
                    let condition = match v.get("condition") {
                        Some(c) => self.string(c, &path.key(name).key("condition"))?,
                        None => started().condition,
                    };
                    Ok((name.clone(), DependsOn { condition }))
                })
                .collect(),
            other => Ok(self
                .strings(other, path)?
                .into_iter()
                .map(|name| (name, started()))
                .collect()),
        }
    }

    fn ports(&self, value: &Value, path: &KeyPath) -> Result<Vec<String>, ComposeError> {
        let mut out = Vec::new();
        for (i, item) in self.array(value, path)?.iter().enumerate() {
            let at = path.index(i);
            match item {
                Value::Object(p) => {
                    let get = |key: &str| p.get(key).filter(|v| !v.is_null());
                    let target = match get("target") {
                        Some(t) => self.string(t, &at.key("target"))?,
                        None => return Err(self.error(&at, "a long-form port needs `target`")),
                    };
                    let mut short = String::new();
                    if let Some(ip) = get("host_ip") {
                        let ip = self.string(ip, &at.key("host_ip"))?;
                        if ip.contains(':') {
                            short.push_str(&format!("[{ip}]:"));
                        } else {
                            short.push_str(&format!("{ip}:"));
                        }
                    }
                    match get("published") {
                        Some(p) => {
                            short.push_str(&self.string(p, &at.key("published"))?);
                            short.push(':');
                        }
                        None if !short.is_empty() => short.push(':'),
                        None => {}
                    }
                    short.push_str(&target);
                    if let Some(proto) = get("protocol") {
                        short.push('/');
                        short.push_str(&self.string(proto, &at.key("protocol"))?);
                    }
                    out.push(short);
                }
                other => out.push(self.string(other, &at)?),
            }
        }
        Ok(out)
    }

    fn volume(&self, value: &Value, path: &KeyPath) -> Result<Mount, ComposeError> {
        let Value::Object(v) = value else {
            return Ok(Mount::Volume(self.string(value, path)?));
        };
        let get = |key: &str| v.get(key).filter(|v| !v.is_null());
        let target = match get("target") {
            Some(t) => self.string(t, &path.key("target"))?,
            None => return Err(self.error(path, "a long-form volume needs `target`")),
        };
        if get("type").and_then(Value::as_str) == Some("tmpfs") {
            return Ok(Mount::Tmpfs(target));
        }
        let source = get("source")
            .map(|s| self.string(s, &path.key("source")))
            .transpose()?
            .filter(|s| !s.is_empty());
        let mut options = Vec::new();
        match get("read_only") {
            Some(Value::Bool(true)) => options.push("ro".to_string()),
            // Said out loud: a mount from git is read-only unless asked for rw.
            Some(Value::Bool(false)) => options.push("rw".to_string()),
            _ => {}
        }
        if let Some(bind) = get("bind") {
            for key in ["selinux", "propagation"] {
                if let Some(o) = bind.get(key).filter(|v| !v.is_null()) {
                    options.push(self.string(o, &path.key("bind").key(key))?);
                }
            }
        }
        if get("volume")
            .and_then(|v| v.get("nocopy"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            options.push("nocopy".to_string());
        }
        Ok(Mount::Volume(match source {
            Some(source) if options.is_empty() => format!("{source}:{target}"),
            Some(source) => format!("{source}:{target}:{}", options.join(",")),
            None => target,
        }))
    }

    fn size(&self, value: &Value, path: &KeyPath) -> Result<Size, ComposeError> {
        let text = self.string(value, path)?;
        Size::parse(&text).ok_or_else(|| {
            let names = Size::ALL.map(|s| s.name());
            self.error(
                path,
                &format!(
                    "unknown size `{text}`; {}",
                    suggest::hint(&text, names.iter().copied())
                ),
            )
        })
    }

    fn named(
        &self,
        value: Option<&Value>,
        path: &KeyPath,
    ) -> Result<BTreeMap<String, Value>, ComposeError> {
        match value {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(v) => Ok(self
                .object(v, path)?
                .iter()
                .map(|(k, v)| {
                    let v = if v.is_null() {
                        Value::Object(Map::new())
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect()),
        }
    }

    /// `command`/`entrypoint`: a string split into words, or a list.
    fn words(&self, value: &Value, path: &KeyPath) -> Result<Vec<String>, ComposeError> {
        match value {
            Value::String(s) => split_words(s).map_err(|e| self.error(path, &e)),
            other => self.strings(other, path),
        }
    }

    /// `env_file`: a string, or a list of strings or `{path, required}`.
    fn env_files(&self, value: &Value, path: &KeyPath) -> Result<Vec<String>, ComposeError> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item.get("path") {
                    Some(p) => self.string(p, &path.index(i).key("path")),
                    None => self.string(item, &path.index(i)),
                })
                .collect(),
            other => Ok(vec![self.string(other, path)?]),
        }
    }

    /// `KEY=value` lists (`KEY` alone is `None`) or mappings (null is `None`).
    fn pairs(
        &self,
        value: &Value,
        path: &KeyPath,
    ) -> Result<BTreeMap<String, Option<String>>, ComposeError> {
        match value {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Null => None,
                        v => Some(self.string(v, &path.key(k))?),
                    };
                    Ok((k.clone(), v))
                })
                .collect(),
            other => Ok(self
                .strings(other, path)?
                .into_iter()
                .map(|item| match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (item, None),
                })
                .collect()),
        }
    }

    /// A list of scalars (a lone scalar counts as a list of one).
    fn strings(&self, value: &Value, path: &KeyPath) -> Result<Vec<String>, ComposeError> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| self.string(item, &path.index(i)))
                .collect(),
            other => Ok(vec![self.string(other, path)?]),
        }
    }

    /// A scalar as text: numbers and booleans as compose writes them.
    fn string(&self, value: &Value, path: &KeyPath) -> Result<String, ComposeError> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Null => Err(self.error(path, "expected a value, found nothing (null)")),
            Value::Array(_) => Err(self.error(path, "expected a single value, found a list")),
            Value::Object(_) => Err(self.error(path, "expected a single value, found a mapping")),
        }
    }

    fn count(&self, value: &Value, path: &KeyPath) -> Result<u64, ComposeError> {
        match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| self.error(path, "expected a whole number of zero or more"))
    }

    fn array<'v>(&self, value: &'v Value, path: &KeyPath) -> Result<&'v [Value], ComposeError> {
        value
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| self.error(path, "expected a list"))
    }

    fn object<'v>(
        &self,
        value: &'v Value,
        path: &KeyPath,
    ) -> Result<&'v Map<String, Value>, ComposeError> {
        value
            .as_object()
            .ok_or_else(|| self.error(path, "expected a mapping"))
    }
}

enum Mount {
    Volume(String),
    Tmpfs(String),
}
