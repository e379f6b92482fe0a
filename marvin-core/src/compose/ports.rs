//! Port specifications: the short syntax `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]`
//! read into one mapping per container port.

/// One container port and where it is published.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PortMapping {
    /// Host address to bind, when given (`127.0.0.1`, `::1`).
    pub host_ip: Option<String>,
    /// Host port or port range (`8080`, `9000-9010`); `None` lets the engine pick.
    pub published: Option<String>,
    /// Container port.
    pub target: u16,
    /// `tcp` (the default), `udp` or `sctp`; the application hints `http`,
    /// `https` and `grpc` are read as `tcp`.
    pub protocol: String,
}

/// The engine's protocol for a port's `/PROTOCOL` suffix: `tcp`, `udp` and
/// `sctp` as written; the application hints `http`, `https`, `http2` and
/// `grpc` (which some stacks write after a port) are `tcp`; anything else is
/// `None`. Case does not matter.
pub fn transport_protocol(suffix: &str) -> Option<&'static str> {
    match suffix.to_ascii_lowercase().as_str() {
        "tcp" | "http" | "https" | "http2" | "grpc" => Some("tcp"),
        "udp" => Some("udp"),
        "sctp" => Some("sctp"),
        _ => None,
    }
}

/// An `expose` entry (`8080`, `8080/http`, `8000-8010/udp`) as the engine's
/// keys (`8080/tcp`, ...), one per port.
pub fn parse_expose(spec: &str) -> Result<Vec<String>, String> {
    let bad = |why: &str| format!("expose `{spec}` {why}; write `PORT[/PROTOCOL]`, e.g. `8080`");
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((ports, p)) => (
            ports,
            transport_protocol(p).ok_or_else(|| {
                bad("has an unknown protocol (tcp, udp, sctp; http, https, grpc mean tcp)")
            })?,
        ),
        None => (spec, "tcp"),
    };
    let ports = range(ports.trim()).ok_or_else(|| bad("has no valid port"))?;
    Ok(ports
        .into_iter()
        .map(|p| format!("{p}/{protocol}"))
        .collect())
}

/// Read a short-syntax port spec. Ranges on both sides (`8000-8001:80-81`)
/// give one mapping per port; a published range with one target
/// (`9000-9010:80`) stays a range for the engine to pick from.
pub fn parse_port(spec: &str) -> Result<Vec<PortMapping>, String> {
    let bad = |why: &str| {
        format!(
            "port `{spec}` {why}; write `[[HOST_IP:]PUBLISHED:]TARGET[/PROTOCOL]`, e.g. `8080:80`"
        )
    };
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((rest, p)) => match transport_protocol(p) {
            Some(p) => (rest, p),
            None => {
                return Err(bad(
                    "has an unknown protocol (tcp, udp, sctp; http, https, grpc mean tcp)",
                ));
            }
        },
        None => (spec, "tcp"),
    };
    let (host_ip, published, target) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (ip, after) = bracketed
            .split_once("]:")
            .ok_or_else(|| bad("has an unclosed `[`"))?;
        let (p, t) = after.rsplit_once(':').unwrap_or(("", after));
        (Some(ip), p, t)
    } else {
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        match parts.as_slice() {
            [t] => (None, "", *t),
            [t, p] => (None, *p, *t),
            [t, p, ip] => (Some(*ip), *p, *t),
            _ => return Err(bad("is empty")),
        }
    };
    let published = (!published.is_empty()).then_some(published);
    let host_ip = host_ip.map(str::to_string);
    let targets = range(target).ok_or_else(|| bad("has no valid container port"))?;
    let publisheds = match published {
        Some(p) => Some(range(p).ok_or_else(|| bad("has no valid published port"))?),
        None => None,
    };
    let mapping = |published: Option<String>, target: u16| PortMapping {
        host_ip: host_ip.clone().filter(|ip| !ip.is_empty()),
        published,
        target,
        protocol: protocol.to_string(),
    };
    match publisheds {
        None => Ok(targets.into_iter().map(|t| mapping(None, t)).collect()),
        Some(ps) if ps.len() == targets.len() => Ok(ps
            .into_iter()
            .zip(targets)
            .map(|(p, t)| mapping(Some(p.to_string()), t))
            .collect()),
        Some(_) if targets.len() == 1 => {
            Ok(vec![mapping(published.map(str::to_string), targets[0])])
        }
        Some(_) => Err(bad("has port ranges of different lengths")),
    }
}

/// `80` or `8000-8010`, as a list of ports.
fn range(text: &str) -> Option<Vec<u16>> {
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b): (u16, u16) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b).then(|| (a..=b).collect())
        }
        None => Some(vec![text.parse().ok()?]),
    }
}
