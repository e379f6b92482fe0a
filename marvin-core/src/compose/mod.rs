//! Compose templates (docs/compose.md): from the text of a compose file to a
//! typed, validated [`ComposeFile`].
//!
//! [`render`] runs the steps in order; each is public for tests and other uses:
//!
//! 1. [`template`] fills `{{ VAR }}` placeholders in the raw text, before YAML
//!    parsing, so a placeholder may stand for any piece of YAML (a scalar, a
//!    key, a path). A placeholder is `{{`, optional spaces, a name matching
//!    `[A-Za-z_][A-Za-z0-9_.-]*`, optional spaces, `}}`. Anything else that
//!    contains `{{` (Go templates such as `{{.Name}}` or `{{ json .State }}`)
//!    is left exactly as written. To write a placeholder literally, write its
//!    braces as `{{ '{{' }}` and `{{ '}}' }}`: `{{ '{{' }} NAME }}` gives
//!    `{{ NAME }}`. Placeholders inside YAML comments are filled too (the text
//!    is not YAML yet), so an unknown name there is an error as well.
//! 2. [`parse`] reads the YAML (errors carry file, line and column) and
//!    applies merge keys (`<<: *java`, also chained and nested), giving a JSON
//!    value.
//! 3. [`interpolate`] applies compose `${VAR}` interpolation to every string
//!    value (never to keys): `$VAR`, `${VAR}`, `${VAR:-default}`,
//!    `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`,
//!    `${VAR:+replacement}`, `${VAR+replacement}`, `$$` for a literal `$`, and
//!    nested words (`${A:-${B}}`), evaluated only when used. An unset variable
//!    used plainly becomes an empty string and a warning, as in docker-compose.
//! 4. [`normalize`] turns the old v1 format (every top-level key except
//!    `version` and `x-*` is a service) into `{services: ...}`.
//! 5. [`validate`] checks the document against the embedded Compose
//!    Specification JSON schema, after Marvin's own `size` key is removed.
//! 6. [`model`] reads the typed [`ComposeFile`].
//!
//! YAML is read as YAML 1.2 (as compose v2 does): `yes`/`no`/`on`/`off` are
//! strings, not booleans.

mod document;
mod interpolate;
mod model;
mod ports;
mod schema;
mod template;
mod words;

use std::collections::BTreeMap;
use std::fmt;

pub use document::{Format, normalize, parse};
pub use interpolate::{Interpolation, InterpolationError, interpolate, interpolate_str};
pub use model::{Build, ComposeFile, DependsOn, Healthcheck, Service, Size, model};
pub use ports::{PortMapping, parse_port};
pub use schema::validate;
pub use template::template;
pub use words::split_words;

use crate::yaml::Location;

/// Read a compose template: fill `{{ VAR }}`, parse, merge, interpolate
/// `${VAR}`, convert v1, validate against the compose schema, and build the
/// typed model. `file` names the file in messages; `vars` feed both the
/// template and the interpolation (and build args written without a value).
pub fn render(
    text: &str,
    file: &str,
    vars: &BTreeMap<String, String>,
) -> Result<ComposeFile, ComposeError> {
    let text = template(text, file, vars)?;
    let mut doc = parse(&text, file)?;
    let warnings = interpolate(&mut doc, file, vars)?;
    let (doc, format) = normalize(doc, file)?;
    validate(&doc, file, format)?;
    let mut compose = model(&doc, file, format, vars)?;
    compose.warnings = warnings;
    Ok(compose)
}

/// One thing the compose schema rejected, at a key path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// Key path such as `services.web.ports[0]`; empty for the top level.
    pub path: String,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

/// Why a compose template could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposeError {
    /// A `{{ NAME }}` placeholder names no known template variable.
    #[error("{file}:{line}:{column}: unknown template variable `{name}`; {hint}")]
    UnknownTemplateVariable {
        /// The file, as the caller named it.
        file: String,
        /// 1-based line of the placeholder.
        line: usize,
        /// 1-based column of the placeholder's `{{`.
        column: usize,
        /// The unknown name.
        name: String,
        /// "did you mean" or the list of known names.
        hint: String,
    },
    /// The text is not YAML.
    #[error("{}: {message}", at_location(file, location))]
    Syntax {
        /// The file, as the caller named it.
        file: String,
        /// Line and column, when the parser knows them.
        location: Option<Location>,
        /// The parser's message.
        message: String,
    },
    /// A `${...}` expression is malformed.
    #[error("{}: invalid interpolation: {message}", at_path(file, path))]
    Interpolation {
        /// The file, as the caller named it.
        file: String,
        /// Key path of the string value.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// `${VAR:?message}` or `${VAR?message}` met an unset (or empty) variable.
    #[error(
        "{}: variable `{name}` is required{}",
        at_path(file, path),
        colon(message)
    )]
    RequiredVariable {
        /// The file, as the caller named it.
        file: String,
        /// Key path of the string value.
        path: String,
        /// The variable.
        name: String,
        /// The message written after `?` (may be empty).
        message: String,
    },
    /// The document has the wrong shape (outside what the schema checks).
    #[error("{}: {message}", at_path(file, path))]
    Invalid {
        /// The file, as the caller named it.
        file: String,
        /// Key path; empty for the whole document.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The compose schema rejected the document; one line per problem.
    #[error("{}", schema_lines(file, problems))]
    Schema {
        /// The file, as the caller named it.
        file: String,
        /// Every problem found, most specific first.
        problems: Vec<Problem>,
    },
}

fn at_location(file: &str, location: &Option<Location>) -> String {
    match location {
        Some(l) => format!("{file}:{}:{}", l.line, l.column),
        None => file.to_string(),
    }
}

fn at_path(file: &str, path: &str) -> String {
    if path.is_empty() {
        file.to_string()
    } else {
        format!("{file}: {path}")
    }
}

fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn schema_lines(file: &str, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", at_path(file, &p.path), p.message))
        .collect();
    lines.join("\n")
}

/// A key path being walked: `services.web.ports[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(String);

impl KeyPath {
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        if self.0.is_empty() {
            KeyPath(key.to_string())
        } else {
            KeyPath(format!("{}.{key}", self.0))
        }
    }

    pub(crate) fn index(&self, index: usize) -> KeyPath {
        KeyPath(format!("{}[{index}]", self.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests;
