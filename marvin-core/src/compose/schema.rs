//! Validation against the Compose Specification JSON schema (embedded).

use std::sync::LazyLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use jsonschema::{JsonType, ValidationError, Validator};
use serde_json::Value;

use super::{ComposeError, Format, KeyPath, Problem};
use crate::suggest;

static SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    serde_json::from_str(include_str!("../../schema/compose-spec.json"))
        .expect("the embedded compose schema is valid JSON")
});

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    jsonschema::draft7::new(&SCHEMA).expect("the embedded compose schema compiles")
});

/// Marvin's own service keys, removed before validation (the schema does not know them).
const MARVIN_SERVICE_KEYS: [&str; 1] = ["size"];

/// Check a normalised document (`services:` layout) against the compose
/// schema. Problems name the key path as the user wrote it (without the
/// `services.` prefix for a v1 file).
pub fn validate(doc: &Value, file: &str, format: Format) -> Result<(), ComposeError> {
    let mut doc = doc.clone();
    if let Some(Value::Object(services)) = doc.get_mut("services") {
        for service in services.values_mut() {
            if let Value::Object(service) = service {
                for key in MARVIN_SERVICE_KEYS {
                    service.remove(key);
                }
            }
        }
    }
    let mut problems = Vec::new();
    for error in VALIDATOR.iter_errors(&doc) {
        describe(&error, &mut problems);
    }
    if problems.is_empty() {
        return Ok(());
    }
    if format == Format::V1 {
        for p in &mut problems {
            if let Some(rest) = p.path.strip_prefix("services.") {
                p.path = rest.to_string();
            }
        }
    }
    problems.sort_by(|a, b| a.path.cmp(&b.path).then(a.message.cmp(&b.message)));
    problems.dedup();
    Err(ComposeError::Schema {
        file: file.to_string(),
        problems,
    })
}

/// Turn one schema error into problems a person can act on.
fn describe(error: &ValidationError<'_>, out: &mut Vec<Problem>) {
    let path = key_path(error);
    let message = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let (known, patterns) = known_keys(error);
            for key in unexpected {
                let message = if known.is_empty() && !patterns.is_empty() {
                    format!(
                        "invalid name `{key}`: it must match `{}`",
                        patterns.join("` or `")
                    )
                } else {
                    let hint = suggest::hint(key, known.iter().map(String::as_str));
                    format!("unknown key `{key}`; {hint}")
                };
                out.push(Problem {
                    path: path.to_string(),
                    message,
                });
            }
            return;
        }
        ValidationErrorKind::OneOfNotValid { context } | ValidationErrorKind::AnyOf { context } => {
            match best_branch(error, context) {
                Some(branch) => {
                    for e in branch {
                        describe(e, out);
                    }
                    return;
                }
                None => format!(
                    "expected {}, found {}",
                    alternatives(context),
                    type_name(error.instance())
                ),
            }
        }
        ValidationErrorKind::Type { kind } => {
            format!(
                "expected {}, found {}",
                types(kind),
                type_name(error.instance())
            )
        }
        ValidationErrorKind::Required { property } => {
            format!("missing required key {property}")
        }
        ValidationErrorKind::Enum { options } => {
            format!("{} is not one of {options}", error.instance())
        }
        ValidationErrorKind::Pattern { pattern } => {
            format!("{} does not match `{pattern}`", error.instance())
        }
        ValidationErrorKind::PropertyNames { error: inner } => {
            format!("invalid key: {inner}")
        }
        _ => error.to_string(),
    };
    out.push(Problem {
        path: path.to_string(),
        message,
    });
}

/// Among the branches of a failed `oneOf`/`anyOf`, the one that got
/// furthest into the value (its errors are deepest): that is the shape the
/// user meant. `None` when every branch failed on the value's own type.
fn best_branch<'e>(
    error: &ValidationError<'_>,
    context: &'e [Vec<ValidationError<'static>>],
) -> Option<&'e [ValidationError<'static>]> {
    let own_depth = error.instance_path().iter().count();
    let score = |branch: &[ValidationError<'static>]| {
        let depth = branch
            .iter()
            .map(|e| e.instance_path().iter().count())
            .max()
            .unwrap_or(0);
        let shape_mismatch = branch
            .iter()
            .all(|e| matches!(e.kind(), ValidationErrorKind::Type { .. }));
        (depth, !shape_mismatch)
    };
    let best = context
        .iter()
        .filter(|b| !b.is_empty())
        .max_by_key(|b| score(b))?;
    let (depth, meaningful) = score(best);
    (depth > own_depth || meaningful).then_some(best.as_slice())
}

/// The types a failed `oneOf`/`anyOf` would have accepted.
fn alternatives(context: &[Vec<ValidationError<'static>>]) -> String {
    let mut names: Vec<String> = Vec::new();
    for e in context.iter().flatten() {
        if let ValidationErrorKind::Type { kind } = e.kind() {
            for name in type_names(kind) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    if names.is_empty() {
        "another shape".to_string()
    } else {
        or_list(&names)
    }
}

fn types(kind: &TypeKind) -> String {
    or_list(&type_names(kind))
}

fn type_names(kind: &TypeKind) -> Vec<String> {
    match kind {
        TypeKind::Single(t) => vec![json_type(*t).to_string()],
        TypeKind::Multiple(set) => set.iter().map(|t| json_type(t).to_string()).collect(),
    }
}

fn json_type(t: JsonType) -> &'static str {
    match t {
        JsonType::Null => "nothing (null)",
        JsonType::Boolean => "a boolean",
        JsonType::Integer => "an integer",
        JsonType::Number => "a number",
        JsonType::String => "a string",
        JsonType::Array => "a list",
        JsonType::Object => "a mapping",
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn or_list(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn key_path(error: &ValidationError<'_>) -> KeyPath {
    error
        .instance_path()
        .iter()
        .fold(KeyPath::default(), |path, segment| match segment {
            LocationSegment::Property(p) => path.key(&p),
            LocationSegment::Index(i) => path.index(i),
        })
}

/// The keys the schema allows where an `additionalProperties` error was
/// raised (the `properties` beside that keyword), and the key patterns
/// allowed there other than `^x-`.
fn known_keys(error: &ValidationError<'_>) -> (Vec<String>, Vec<String>) {
    let pointer = error
        .absolute_keyword_location()
        .and_then(|uri| uri.fragment().map(|f| f.as_str().to_string()))
        .or_else(|| Some(error.schema_path().as_str().to_string()));
    let parent = pointer
        .as_deref()
        .and_then(|p| p.strip_suffix("/additionalProperties"))
        .and_then(|p| SCHEMA.pointer(p));
    let keys = |key: &str| -> Vec<String> {
        parent
            .and_then(|p| p.get(key))
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut known = keys("properties");
    if known.is_empty()
        && let Some(properties) = service_properties(error).and_then(Value::as_object)
    {
        known = properties.keys().cloned().collect();
    }
    let patterns = keys("patternProperties")
        .into_iter()
        .filter(|p| p != "^x-")
        .collect();
    (known, patterns)
}

/// Fallback for a service key: the schema's service properties.
fn service_properties(error: &ValidationError<'_>) -> Option<&'static Value> {
    let segments: Vec<_> = error.instance_path().iter().collect();
    match segments.as_slice() {
        [LocationSegment::Property(s), LocationSegment::Property(_)] if s == "services" => {
            SCHEMA.pointer("/definitions/service/properties")
        }
        _ => None,
    }
}
