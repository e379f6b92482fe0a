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
//!    `{{ NAME }}`. YAML comments are copied as written, placeholders and
//!    all (a `#` at the start of a line's content or after a space, outside
//!    quotes and block scalars). A name that is not a variable is an error
//!    when it has no lower-case letter (`{{ NOPE }}`: Marvin's variables are
//!    upper case by convention, so it is a typo), and is kept as written
//!    otherwise (`{{username}}`, another tool's template). See
//!    `docs/compose.md`.
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
mod fields;
mod interpolate;
mod locate;
mod model;
mod ports;
mod schema;
mod template;
mod words;

use std::collections::BTreeMap;
use std::fmt;

pub use document::{Format, normalize, parse};
pub use fields::parse_bytes;
pub use interpolate::{Interpolation, InterpolationError, interpolate, interpolate_str};
pub use locate::locate;
pub use model::{Build, ComposeFile, DependsOn, Healthcheck, Service, Size, model};
pub use ports::{PortMapping, parse_expose, parse_port, transport_protocol};
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
    let steps = || {
        let mut doc = parse(&text, file)?;
        let warnings = interpolate(&mut doc, file, vars)?;
        let (doc, format) = normalize(doc, file)?;
        validate(&doc, file, format)?;
        let mut compose = model(&doc, file, format, vars)?;
        compose.warnings.splice(0..0, warnings);
        Ok(compose)
    };
    let mut compose = steps().map_err(|e: ComposeError| e.located(&text))?;
    compose.source = text;
    Ok(compose)
}

/// One problem of a compose file, with where it is written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SourceProblem {
    /// The file, as the caller named it.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The service the problem is in, if any.
    pub service: Option<String>,
    /// Key path such as `services.web.ports[0]`; empty when not known.
    pub path: String,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The service a key path is in: `services.web.ports` → `web`. In the v1
/// layout (no `services:`), any first key that is not a top-level section.
pub(crate) fn service_of(path: &str) -> Option<String> {
    let mut parts = path.split(['.', '[']);
    match parts.next()? {
        "services" => parts.next().map(str::to_string),
        "" | "version" | "volumes" | "networks" | "secrets" | "configs" | "include" | "name" => {
            None
        }
        x if x.starts_with("x-") => None,
        x => Some(x.to_string()),
    }
}

impl ComposeError {
    /// Every problem this error stands for, each with its place when known.
    pub fn problems(&self) -> Vec<SourceProblem> {
        let one =
            |file: &str, location: Option<Location>, path: &str, message: String| SourceProblem {
                file: file.to_string(),
                line: location.map(|l| l.line),
                column: location.map(|l| l.column),
                service: service_of(path),
                path: path.to_string(),
                message,
            };
        match self {
            ComposeError::UnknownTemplateVariable {
                file,
                line,
                column,
                name,
                hint,
            } => vec![one(
                file,
                Some(Location {
                    line: *line,
                    column: *column,
                }),
                "",
                format!("unknown template variable `{name}`; {hint}"),
            )],
            ComposeError::Syntax {
                file,
                location,
                message,
            } => vec![one(file, *location, "", message.clone())],
            ComposeError::Interpolation {
                file,
                path,
                message,
            } => vec![one(
                file,
                None,
                path,
                format!("invalid interpolation: {message}"),
            )],
            ComposeError::RequiredVariable {
                file,
                path,
                name,
                message,
            } => vec![one(
                file,
                None,
                path,
                format!("{}{}", required_text(name), colon(message)) + &where_to_set(name, file),
            )],
            ComposeError::Invalid {
                file,
                path,
                message,
            } => vec![one(file, None, path, message.clone())],
            ComposeError::Schema { file, problems } => problems
                .iter()
                .map(|p| one(file, None, &p.path, p.message.clone()))
                .collect(),
            ComposeError::Problems { problems } => problems.clone(),
        }
    }

    /// The same error with line and column found in `text` for every
    /// problem that has only a key path. Errors that already say where
    /// they are (syntax, template) are kept as they are.
    pub fn located(self, text: &str) -> ComposeError {
        if matches!(
            self,
            ComposeError::UnknownTemplateVariable { .. }
                | ComposeError::Syntax { .. }
                | ComposeError::Problems { .. }
        ) {
            return self;
        }
        let problems = self
            .problems()
            .into_iter()
            .map(|mut p| {
                if p.line.is_none() && !p.path.is_empty() {
                    // An unknown key is placed at the key itself, not its parent.
                    let key = p
                        .message
                        .strip_prefix("unknown key `")
                        .and_then(|rest| rest.split_once('`'))
                        .map(|(key, _)| format!("{}.{key}", p.path));
                    if let Some(at) = locate(text, key.as_deref().unwrap_or(&p.path)) {
                        p.line = Some(at.line);
                        p.column = Some(at.column);
                    }
                }
                p
            })
            .collect::<Vec<_>>();
        let mut problems = problems;
        // In the order of the file; problems with no line keep their place at the end.
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        ComposeError::Problems { problems }
    }
}

fn required_text(name: &str) -> String {
    format!("variable `{name}` is required")
}

/// Where a required variable can be given a value.
fn where_to_set(name: &str, file: &str) -> String {
    let dir = file
        .rsplit_once('/')
        .map_or(String::new(), |(d, _)| format!("{d}/"));
    format!(
        "; set `{name}` in the environment's `vars` in marvin.yml, or in `{dir}.env` beside the compose file"
    )
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
        "{}: variable `{name}` is required{}{}",
        at_path(file, path),
        colon(message),
        where_to_set(name, file)
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
    /// Several problems, or problems placed at a line: one line each.
    #[error("{}", problem_lines(problems))]
    Problems {
        /// Every problem found, in the order of the file.
        problems: Vec<SourceProblem>,
    },
}

fn problem_lines(problems: &[SourceProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    lines.join("\n")
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
