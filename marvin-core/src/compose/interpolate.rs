//! Compose `${VAR}` interpolation of string values.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{ComposeError, KeyPath};

/// The result of interpolating one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolation {
    /// The string with every expression replaced.
    pub value: String,
    /// Variables used plainly (`$X`, `${X}`) that were not set: they became "".
    pub unset: BTreeSet<String>,
}

/// Why one string could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// `${VAR:?message}` / `${VAR?message}` met an unset (or, with `:`, empty) variable.
    #[error("variable `{name}` is required: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The message written after `?`.
        message: String,
    },
    /// The expression is malformed.
    #[error("{0}")]
    Syntax(String),
}

/// Interpolate every string value of `doc` in place (keys are left alone).
/// Returns one warning per unset variable used without a default.
pub fn interpolate(
    doc: &mut Value,
    file: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Vec<String>, ComposeError> {
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    walk(
        doc,
        &KeyPath::default(),
        file,
        vars,
        &mut warnings,
        &mut errors,
    );
    match errors.len() {
        0 => Ok(warnings),
        1 => Err(errors.remove(0)),
        _ => Err(ComposeError::Problems {
            problems: errors.iter().flat_map(ComposeError::problems).collect(),
        }),
    }
}

fn walk(
    value: &mut Value,
    path: &KeyPath,
    file: &str,
    vars: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
    errors: &mut Vec<ComposeError>,
) {
    match value {
        Value::String(s) => {
            let done = interpolate_str(s, vars).map_err(|e| match e {
                InterpolationError::Required { name, message } => ComposeError::RequiredVariable {
                    file: file.to_string(),
                    path: path.to_string(),
                    name,
                    message,
                },
                InterpolationError::Syntax(message) => ComposeError::Interpolation {
                    file: file.to_string(),
                    path: path.to_string(),
                    message,
                },
            });
            let done = match done {
                Ok(done) => done,
                Err(e) => {
                    errors.push(e);
                    return;
                }
            };
            for name in &done.unset {
                warnings.push(format!(
                    "{file}: {path}: variable `{name}` is not set; using an empty string"
                ));
            }
            *s = done.value;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &path.index(i), file, vars, warnings, errors);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                walk(v, &path.key(k), file, vars, warnings, errors);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Interpolate one string with compose rules (the forms are listed in [`crate::compose`]).
pub fn interpolate_str(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<Interpolation, InterpolationError> {
    let mut unset = BTreeSet::new();
    let value = expand(text, vars, &mut unset)?;
    Ok(Interpolation { value, unset })
}

fn expand(
    text: &str,
    vars: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> Result<String, InterpolationError> {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&text[copied..i]);
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                let close = matching_brace(text, i + 2)?;
                out.push_str(&braced(&text[i + 2..close], vars, unset)?);
                i = close + 1;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let len = name_len(&text[i + 1..]);
                let name = &text[i + 1..i + 1 + len];
                out.push_str(&plain(name, vars, unset));
                i += 1 + len;
            }
            _ => {
                return Err(InterpolationError::Syntax(format!(
                    "`$` must start a variable (`$VAR`, `${{VAR}}`) or be doubled (`$$`) for a literal `$` in `{text}`"
                )));
            }
        }
        copied = i;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

/// Evaluate the inside of `${...}`.
fn braced(
    inner: &str,
    vars: &BTreeMap<String, String>,
    unset: &mut BTreeSet<String>,
) -> Result<String, InterpolationError> {
    let len = name_len(inner);
    let name = &inner[..len];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(InterpolationError::Syntax(format!(
            "`${{{inner}}}` does not start with a variable name"
        )));
    }
    let rest = &inner[len..];
    if rest.is_empty() {
        return Ok(plain(name, vars, unset));
    }
    let (colon, rest) = match rest.strip_prefix(':') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let mut chars = rest.chars();
    let op = chars.next();
    let word = chars.as_str();
    let value = vars.get(name);
    // With `:`, an empty value counts as unset.
    let present = value.is_some_and(|v| !colon || !v.is_empty());
    match op {
        Some('-') => match value {
            Some(v) if present => Ok(v.clone()),
            _ => expand(word, vars, unset),
        },
        Some('+') => {
            if present {
                expand(word, vars, unset)
            } else {
                Ok(String::new())
            }
        }
        Some('?') => match value {
            Some(v) if present => Ok(v.clone()),
            _ => Err(InterpolationError::Required {
                name: name.to_string(),
                message: expand(word, vars, unset)?,
            }),
        },
        _ => Err(InterpolationError::Syntax(format!(
            "`${{{inner}}}`: after the name comes `}}`, `:-`, `-`, `:?`, `?`, `:+` or `+`"
        ))),
    }
}

fn plain(name: &str, vars: &BTreeMap<String, String>, unset: &mut BTreeSet<String>) -> String {
    match vars.get(name) {
        Some(v) => v.clone(),
        None => {
            unset.insert(name.to_string());
            String::new()
        }
    }
}

/// Byte index of the `}` closing a `${` whose inside starts at `start`,
/// skipping nested `${...}` and `$$`.
fn matching_brace(text: &str, start: usize) -> Result<usize, InterpolationError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Ok(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    Err(InterpolationError::Syntax(format!(
        "`${{` is not closed by `}}` in `{text}`"
    )))
}

/// Length of a variable name `[A-Za-z0-9_]*` at the start of `s`.
fn name_len(s: &str) -> usize {
    s.bytes()
        .position(|b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or(s.len())
}
