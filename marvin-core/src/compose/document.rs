//! From YAML text to a merged JSON document, and from v1 to `services:`.

use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;

use super::{ComposeError, KeyPath};
use crate::yaml::Location;

/// Which layout a compose file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Format {
    /// The old format: every top-level key except `version` and `x-*` is a service.
    V1,
    /// A `services:` mapping (compose file versions 2, 3 and the spec).
    Services,
}

/// Parse YAML text into a JSON value with merge keys (`<<`) applied.
///
/// Mapping keys that YAML reads as numbers or booleans become strings;
/// values keep their types (interpolation and the model stringify later).
pub fn parse(text: &str, file: &str) -> Result<Value, ComposeError> {
    let mut yaml: Yaml = serde_yaml::from_str(text).map_err(|e| ComposeError::Syntax {
        file: file.to_string(),
        location: e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        }),
        message: strip_location(&e.to_string()),
    })?;
    merge(&mut yaml, &KeyPath::default(), file)?;
    let doc = to_json(yaml, &KeyPath::default(), file)?;
    match doc {
        Value::Null => Err(invalid(file, &KeyPath::default(), "the file is empty")),
        Value::Object(_) => Ok(doc),
        _ => Err(invalid(
            file,
            &KeyPath::default(),
            "a compose file must be a mapping of keys (`services:` or service names)",
        )),
    }
}

/// Bring a parsed document to the `services:` layout, saying which layout
/// it had. A document with a top-level `services` key is taken as the
/// modern format; any other is v1.
pub fn normalize(doc: Value, file: &str) -> Result<(Value, Format), ComposeError> {
    let Value::Object(top) = doc else {
        return Err(invalid(
            file,
            &KeyPath::default(),
            "a compose file must be a mapping of keys",
        ));
    };
    if top.contains_key("services") {
        let mut top = top;
        // `version: 3.7` unquoted is a number; the schema wants a string and
        // compose ignores the value anyway.
        if let Some(v @ Value::Number(_)) = top.get_mut("version") {
            *v = Value::String(v.to_string());
        }
        return Ok((Value::Object(top), Format::Services));
    }
    let mut out = Map::new();
    let mut services = Map::new();
    for (key, value) in top {
        if key == "version" || key.starts_with("x-") {
            out.insert(key, value);
        } else {
            services.insert(key.clone(), v1_service(value));
        }
    }
    out.remove("version");
    out.insert("services".to_string(), Value::Object(services));
    Ok((Value::Object(out), Format::V1))
}

/// Rename the v1-only service keys to their modern equivalents.
fn v1_service(value: Value) -> Value {
    let Value::Object(mut service) = value else {
        return value;
    };
    if let Some(dockerfile) = service.remove("dockerfile") {
        let build = match service.remove("build") {
            Some(Value::Object(b)) => b,
            Some(context) => Map::from_iter([("context".to_string(), context)]),
            None => Map::new(),
        };
        let mut build = build;
        build.entry("dockerfile").or_insert(dockerfile);
        service.insert("build".to_string(), Value::Object(build));
    }
    if let Some(net) = service.remove("net") {
        service.entry("network_mode").or_insert(net);
    }
    let driver = service.remove("log_driver");
    let options = service.remove("log_opt");
    if driver.is_some() || options.is_some() {
        let mut logging = Map::new();
        if let Some(d) = driver {
            logging.insert("driver".to_string(), d);
        }
        if let Some(o) = options {
            logging.insert("options".to_string(), o);
        }
        service.entry("logging").or_insert(Value::Object(logging));
    }
    Value::Object(service)
}

/// Apply `<<` merge keys everywhere: explicit keys win over merged ones, and
/// among several merged mappings (`<<: [*a, *b]`) the first wins. A merged
/// mapping's own merge keys are applied first, so chains work.
fn merge(value: &mut Yaml, path: &KeyPath, file: &str) -> Result<(), ComposeError> {
    match value {
        Yaml::Mapping(mapping) => {
            if let Some(mut sources) = mapping.remove("<<") {
                merge(&mut sources, &path.key("<<"), file)?;
                let sources = match sources {
                    Yaml::Mapping(m) => vec![m],
                    Yaml::Sequence(items) => items
                        .into_iter()
                        .map(|item| match item {
                            Yaml::Mapping(m) => Ok(m),
                            _ => Err(invalid(
                                file,
                                &path.key("<<"),
                                "a merge key (`<<`) takes a mapping or a list of mappings (`*anchor`)",
                            )),
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(invalid(
                            file,
                            &path.key("<<"),
                            "a merge key (`<<`) takes a mapping or a list of mappings (`*anchor`)",
                        ));
                    }
                };
                for source in sources {
                    for (k, v) in source {
                        mapping.entry(k).or_insert(v);
                    }
                }
            }
            for (k, v) in mapping.iter_mut() {
                merge(v, &path.key(&key_text(k)), file)?;
            }
        }
        Yaml::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                merge(item, &path.index(i), file)?;
            }
        }
        Yaml::Tagged(tagged) => merge(&mut tagged.value, path, file)?,
        Yaml::Null | Yaml::Bool(_) | Yaml::Number(_) | Yaml::String(_) => {}
    }
    Ok(())
}

fn to_json(value: Yaml, path: &KeyPath, file: &str) -> Result<Value, ComposeError> {
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().expect("a YAML number is an integer or a float");
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| invalid(file, path, &format!("`{f}` is not a usable number")))?
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &path.index(i), file))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(mapping) => {
            let mut map = Map::new();
            for (k, v) in mapping {
                let key = match &k {
                    Yaml::Mapping(_) | Yaml::Sequence(_) | Yaml::Tagged(_) => {
                        return Err(invalid(
                            file,
                            path,
                            "a key must be a plain scalar (text or a number)",
                        ));
                    }
                    other => key_text(other),
                };
                let child = path.key(&key);
                map.insert(key, to_json(v, &child, file)?);
            }
            Value::Object(map)
        }
        Yaml::Tagged(tagged) => {
            return Err(invalid(
                file,
                path,
                &format!("YAML tags (`{}`) are not supported here", tagged.tag),
            ));
        }
    })
}

fn key_text(key: &Yaml) -> String {
    match key {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => "null".to_string(),
        other => format!("{other:?}"),
    }
}

pub(crate) fn invalid(file: &str, path: &KeyPath, message: &str) -> ComposeError {
    ComposeError::Invalid {
        file: file.to_string(),
        path: path.to_string(),
        message: message.to_string(),
    }
}

/// serde_yaml appends " at line L column C"; the location is printed in front.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
