//! Reading YAML documents with errors a person can act on.
//!
//! Syntax errors carry the file, line and column. Type errors carry the key
//! path (`environments.dev.branches.frontend`) and, when the text had no merge
//! keys, the line and column too. An unknown key gets a "did you mean".

use std::fmt;

use serde::de::DeserializeOwned;

use crate::suggest;

/// Where in a file something is: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// A YAML document that could not be read into the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// The file, as the user named it.
    pub file: String,
    /// Line and column, when known.
    pub location: Option<Location>,
    /// The key path (`services.web.build`), when known.
    pub path: Option<String>,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        write!(f, ": ")?;
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for YamlError {}

/// Parse text into a YAML value, with merge keys (`<<: *anchor`) applied.
pub fn parse_value(text: &str, file: &str) -> Result<serde_yaml::Value, YamlError> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| syntax(e, file))?;
    value.apply_merge().map_err(|e| YamlError {
        file: file.to_string(),
        location: None,
        path: None,
        message: format!("bad merge key (`<<`): {e}"),
    })?;
    Ok(value)
}

/// Read `text` into `T`: syntax errors with line and column, type errors with
/// the key path (and the line and column when the document has no merge keys,
/// which are applied on a parsed value that no longer knows its positions).
pub fn from_str<T: DeserializeOwned>(text: &str, file: &str) -> Result<T, YamlError> {
    let value = parse_value(text, file)?;
    if value.is_null() {
        return Err(YamlError {
            file: file.to_string(),
            location: None,
            path: None,
            message: "the file is empty".to_string(),
        });
    }
    if !has_merge_key(text) {
        let de = serde_yaml::Deserializer::from_str(text);
        return serde_path_to_error::deserialize(de).map_err(|e| shape(e, file));
    }
    from_value(value, file)
}

/// Read an already parsed value into `T`, naming the key path on error.
pub fn from_value<T: DeserializeOwned>(
    value: serde_yaml::Value,
    file: &str,
) -> Result<T, YamlError> {
    serde_path_to_error::deserialize(value).map_err(|e| shape(e, file))
}

fn has_merge_key(text: &str) -> bool {
    text.contains("<<")
}

fn syntax(e: serde_yaml::Error, file: &str) -> YamlError {
    YamlError {
        file: file.to_string(),
        location: e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        }),
        path: None,
        message: strip_location(&e.to_string()),
    }
}

fn shape(e: serde_path_to_error::Error<serde_yaml::Error>, file: &str) -> YamlError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let location = inner.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    let mut raw = strip_location(&inner.to_string());
    // serde_yaml starts some messages with its own (shorter) path: we print ours.
    if let Some((prefix, rest)) = raw.split_once(": ")
        && !prefix.contains(' ')
        && path.starts_with(prefix)
    {
        raw = rest.to_string();
    }
    let message = explain(&raw);
    let mut path = (path != "." && !path.is_empty()).then_some(path);
    // For an unknown key, point at the mapping that holds it, not at the key.
    if message.starts_with("unknown key `")
        && let Some(p) = &path
    {
        path = p.rsplit_once('.').map(|(parent, _)| parent.to_string());
    }
    YamlError {
        file: file.to_string(),
        location,
        path,
        message,
    }
}

/// serde_yaml appends " at line L column C" to its messages; we print the
/// location ourselves, in front.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Turn serde's "unknown field `brnch`, expected one of `a`, `b`" into a
/// sentence with a suggestion.
fn explain(message: &str) -> String {
    for (prefix, what) in [("unknown field `", "key"), ("unknown variant `", "value")] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let Some(end) = rest.find('`') else { break };
            let name = &rest[..end];
            let expected: Vec<&str> = rest[end + 1..].split('`').skip(1).step_by(2).collect();
            return format!(
                "unknown {what} `{name}`; {}",
                suggest::hint(name, expected.iter().copied())
            );
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        #[serde(default)]
        envs: BTreeMap<String, Env>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Env {
        branch: Option<String>,
        replicas: Option<u32>,
    }

    fn err(text: &str) -> String {
        from_str::<Doc>(text, "m.yml").unwrap_err().to_string()
    }

    #[test]
    fn syntax_error_names_file_line_and_column() {
        let e = err("name: x\nenvs:\n  dev: [unclosed\n");
        assert!(e.starts_with("m.yml:"), "{e}");
        assert!(e.contains(":4:") || e.contains(":3:"), "{e}");
    }

    #[test]
    fn unknown_key_gets_path_location_and_suggestion() {
        let e = err("name: x\nenvs:\n  dev:\n    brnch: main\n");
        assert_eq!(
            e,
            "m.yml:4:5: envs.dev: unknown key `brnch`; did you mean `branch`?"
        );
    }

    #[test]
    fn wrong_type_names_the_key_path() {
        let e = err("name: x\nenvs:\n  dev:\n    replicas: many\n");
        assert!(
            e.starts_with("m.yml:4:15: envs.dev.replicas: invalid type"),
            "{e}"
        );
    }

    #[test]
    fn merge_keys_are_applied() {
        let doc: Doc = from_str(
            "name: x\nenvs:\n  base: &b {branch: main}\n  dev:\n    <<: *b\n    replicas: 2\n",
            "m.yml",
        )
        .unwrap();
        assert_eq!(doc.envs["dev"].branch.as_deref(), Some("main"));
        assert_eq!(doc.envs["dev"].replicas, Some(2));
    }

    #[test]
    fn errors_after_a_merge_keep_the_key_path() {
        let e = err("name: x\nenvs:\n  base: &b {brnch: main}\n  dev:\n    <<: *b\n");
        assert_eq!(
            e,
            "m.yml: envs.base: unknown key `brnch`; did you mean `branch`?"
        );
    }

    #[test]
    fn empty_file_is_an_error() {
        assert_eq!(err(""), "m.yml: the file is empty");
    }
}
