//! The service fields beyond the basics: each is read into
//! [`ContainerOptions`] (applied to the container), or named as not applied
//! (refused when the environment is planned). docs/compose.md has the table.

use serde_json::{Map, Value};

use super::{ComposeError, KeyPath};
use crate::engine::ContainerOptions;

/// Service keys the model reads elsewhere (or that are Marvin's own).
const READ_ELSEWHERE: &[&str] = &[
    "build",
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "links",
    "depends_on",
    "healthcheck",
    "volumes",
    "tmpfs",
    "networks",
    "labels",
    "restart",
    "working_dir",
    "user",
    "size",
    "deploy",
    "scale",
    "platform",
    // Another part of Marvin owns these (compose secrets and configs).
    "secrets",
    "configs",
];

/// Service keys read here.
const READ_HERE: &[&str] = &[
    "stop_signal",
    "stop_grace_period",
    "init",
    "tty",
    "stdin_open",
    "read_only",
    "hostname",
    "extra_hosts",
    "dns",
    "shm_size",
    "ulimits",
    "sysctls",
    "cap_drop",
    "cap_add",
    "privileged",
    "devices",
    "pid",
    "ipc",
    "network_mode",
    "runtime",
    "security_opt",
    "mem_limit",
    "mem_reservation",
    "cpus",
    "cpu_shares",
    "pids_limit",
    "logging",
    "container_name",
];

/// What the fields of one service give.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    /// Options for the container.
    pub options: ContainerOptions,
    /// Memory limit in bytes (`mem_limit`, `deploy.resources.limits.memory`); wins over `size`.
    pub memory_limit: Option<i64>,
    /// CPU limit in billionths (`cpus`, `deploy.resources.limits.cpus`); wins over `size`.
    pub nano_cpus: Option<i64>,
    /// Keys present that Marvin does not apply (refused when planned).
    pub unapplied: Vec<String>,
    /// Warnings (`container_name` ignored).
    pub warnings: Vec<String>,
}

/// Read the fields of service `s` at `path`.
pub(super) fn read(
    s: &Map<String, Value>,
    path: &KeyPath,
    file: &str,
    error: &dyn Fn(&KeyPath, &str) -> ComposeError,
) -> Result<Fields, ComposeError> {
    let get = |key: &str| s.get(key).filter(|v| !v.is_null());
    let at = |key: &str| path.key(key);
    let mut f = Fields::default();
    let o = &mut f.options;
    for key in s.keys() {
        if !key.starts_with("x-")
            && !READ_ELSEWHERE.contains(&key.as_str())
            && !READ_HERE.contains(&key.as_str())
        {
            f.unapplied.push(key.clone());
        }
    }
    if let Some(v) = get("container_name") {
        f.warnings.push(format!(
            "{file}: {}: container_name `{}` is ignored: Marvin names containers `<project>-<environment>-<service>` so that environments never collide",
            at("container_name"),
            text(v)
        ));
    }
    o.stop_signal = get("stop_signal").map(text);
    if let Some(v) = get("stop_grace_period") {
        let d =
            crate::duration::parse(&text(v)).map_err(|e| error(&at("stop_grace_period"), &e))?;
        o.stop_timeout_s = Some(d.as_secs() as i64);
    }
    o.init = get("init")
        .map(|v| flag(v, &at("init"), error))
        .transpose()?;
    for (key, slot) in [
        ("tty", &mut o.tty),
        ("stdin_open", &mut o.stdin_open),
        ("read_only", &mut o.read_only),
        ("privileged", &mut o.privileged),
    ] {
        if let Some(v) = get(key) {
            *slot = flag(v, &at(key), error)?;
        }
    }
    o.hostname = get("hostname").map(text);
    if let Some(v) = get("extra_hosts") {
        o.extra_hosts = match v {
            Value::Object(map) => map
                .iter()
                .flat_map(|(host, ips)| match ips {
                    Value::Array(ips) => ips
                        .iter()
                        .map(|ip| format!("{host}:{}", text(ip)))
                        .collect(),
                    ip => vec![format!("{host}:{}", text(ip))],
                })
                .collect(),
            other => list(other)
                .into_iter()
                .map(|entry| match entry.split_once('=') {
                    Some((host, ip)) => format!("{host}:{ip}"),
                    None => entry,
                })
                .collect(),
        };
    }
    o.dns = get("dns").map(list).unwrap_or_default();
    o.shm_size = get("shm_size")
        .map(|v| bytes(v, &at("shm_size"), error))
        .transpose()?;
    if let Some(Value::Object(map)) = get("ulimits") {
        for (name, limit) in map {
            let here = at("ulimits").key(name);
            let (soft, hard) = match limit {
                Value::Object(l) => (
                    whole(
                        l.get("soft").unwrap_or(&Value::Null),
                        &here.key("soft"),
                        error,
                    )?,
                    whole(
                        l.get("hard").unwrap_or(&Value::Null),
                        &here.key("hard"),
                        error,
                    )?,
                ),
                v => {
                    let n = whole(v, &here, error)?;
                    (n, n)
                }
            };
            o.ulimits.insert(name.clone(), (soft, hard));
        }
    }
    if let Some(v) = get("sysctls") {
        o.sysctls = match v {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), text(v))).collect(),
            other => list(other)
                .into_iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e, String::new()),
                })
                .collect(),
        };
    }
    o.cap_drop = get("cap_drop").map(list).unwrap_or_default();
    o.cap_add = get("cap_add").map(list).unwrap_or_default();
    o.security_opt = get("security_opt").map(list).unwrap_or_default();
    if let Some(Value::Array(items)) = get("devices") {
        for (i, item) in items.iter().enumerate() {
            o.devices.push(match item {
                Value::Object(d) => {
                    let source = d.get("source").map(text).unwrap_or_default();
                    let target = d.get("target").map(text).unwrap_or_else(|| source.clone());
                    match d.get("permissions").map(text) {
                        Some(p) => format!("{source}:{target}:{p}"),
                        None => format!("{source}:{target}"),
                    }
                }
                Value::String(s) => s.clone(),
                _ => {
                    return Err(error(
                        &at("devices").index(i),
                        "expected `HOST:CONTAINER[:PERMISSIONS]`",
                    ));
                }
            });
        }
    }
    o.pid = get("pid").map(text);
    o.ipc = get("ipc").map(text);
    if let Some(mode) = get("network_mode").map(text) {
        if mode == "host" {
            o.host_network = true;
        } else {
            f.unapplied.push(format!("network_mode: {mode}"));
        }
    }
    o.runtime = get("runtime").map(text);
    f.memory_limit = get("mem_limit")
        .map(|v| bytes(v, &at("mem_limit"), error))
        .transpose()?;
    o.memory_reservation = get("mem_reservation")
        .map(|v| bytes(v, &at("mem_reservation"), error))
        .transpose()?;
    f.nano_cpus = get("cpus")
        .map(|v| cpus(v, &at("cpus"), error))
        .transpose()?;
    o.cpu_shares = get("cpu_shares")
        .map(|v| whole(v, &at("cpu_shares"), error))
        .transpose()?;
    o.pids_limit = get("pids_limit")
        .map(|v| whole(v, &at("pids_limit"), error))
        .transpose()?;
    if let Some(resources) = get("deploy").and_then(|d| d.get("resources")) {
        let here = at("deploy").key("resources");
        if let Some(limits) = resources.get("limits") {
            let here = here.key("limits");
            if let Some(v) = limits.get("memory") {
                f.memory_limit = Some(bytes(v, &here.key("memory"), error)?);
            }
            if let Some(v) = limits.get("cpus") {
                f.nano_cpus = Some(cpus(v, &here.key("cpus"), error)?);
            }
            if let Some(v) = limits.get("pids") {
                o.pids_limit = Some(whole(v, &here.key("pids"), error)?);
            }
        }
        if let Some(reservations) = resources.get("reservations") {
            let here = here.key("reservations");
            if let Some(v) = reservations.get("memory") {
                o.memory_reservation = Some(bytes(v, &here.key("memory"), error)?);
            }
            if let Some(v) = reservations.get("cpus") {
                // The engine has no CPU reservation for a single container:
                // a relative weight (1024 per CPU) is the nearest it has.
                o.cpu_shares = Some(cpus(v, &here.key("cpus"), error)? * 1024 / 1_000_000_000);
            }
            for key in ["devices", "generic_resources"] {
                if reservations.get(key).is_some() {
                    f.unapplied
                        .push(format!("deploy.resources.reservations.{key}"));
                }
            }
        }
    }
    if let Some(Value::Object(logging)) = get("logging") {
        o.log_driver = logging.get("driver").map(text);
        if let Some(Value::Object(options)) = logging.get("options") {
            o.log_options = options
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), text(v)))
                .collect();
        }
    }
    Ok(f)
}

/// A scalar as text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A string or a list of scalars, as a list.
fn list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(text).collect(),
        Value::Null => Vec::new(),
        other => vec![text(other)],
    }
}

fn flag(
    v: &Value,
    path: &KeyPath,
    error: &dyn Fn(&KeyPath, &str) -> ComposeError,
) -> Result<bool, ComposeError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => Err(error(path, "expected true or false")),
    }
}

fn whole(
    v: &Value,
    path: &KeyPath,
    error: &dyn Fn(&KeyPath, &str) -> ComposeError,
) -> Result<i64, ComposeError> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| error(path, "expected a whole number"))
}

/// `0.5`, `"1.5"` CPUs, in billionths.
fn cpus(
    v: &Value,
    path: &KeyPath,
    error: &dyn Fn(&KeyPath, &str) -> ComposeError,
) -> Result<i64, ComposeError> {
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| *n >= 0.0)
    .ok_or_else(|| error(path, "expected a number of CPUs such as `0.5`"))?;
    Ok((n * 1e9).round() as i64)
}

/// A byte size as compose writes it: a number of bytes, or `512m`, `1g`,
/// `64k`, `2gb` (units b, k, m, g, t; powers of 1024; case ignored).
pub fn parse_bytes(text: &str) -> Option<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix('b')
        .filter(|r| r.ends_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(&t);
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, ""),
    };
    let factor: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let n: f64 = number.trim().parse().ok()?;
    (n >= 0.0).then_some((n * factor) as i64)
}

fn bytes(
    v: &Value,
    path: &KeyPath,
    error: &dyn Fn(&KeyPath, &str) -> ComposeError,
) -> Result<i64, ComposeError> {
    parse_bytes(&text(v)).ok_or_else(|| error(path, "expected a size such as `512m` or `1g`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_read_like_compose() {
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("64k"), Some(65536));
        assert_eq!(parse_bytes("512m"), Some(512 * 1024 * 1024));
        assert_eq!(parse_bytes("512MB"), Some(512 * 1024 * 1024));
        assert_eq!(parse_bytes("1.5g"), Some(1536 * 1024 * 1024));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("5x"), None);
    }
}
