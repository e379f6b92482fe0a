//! `{{ VAR }}` placeholders, filled on the raw text before YAML parsing.

use std::collections::BTreeMap;

use super::ComposeError;
use crate::suggest;

/// Fill every `{{ NAME }}` placeholder in `text` from `vars`.
///
/// [`crate::compose`] says what counts as a placeholder; everything else is
/// copied unchanged. An unknown name is an error with its line and column.
pub fn template(
    text: &str,
    file: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, ComposeError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let from_open = &rest[start..];
        match placeholder(from_open) {
            Some((Inner::Literal(literal), len)) => {
                out.push_str(literal);
                rest = &from_open[len..];
            }
            Some((Inner::Name(name), len)) => match vars.get(name) {
                Some(value) => {
                    out.push_str(value);
                    rest = &from_open[len..];
                }
                None => {
                    let offset = text.len() - from_open.len();
                    let (line, column) = line_column(text, offset);
                    return Err(ComposeError::UnknownTemplateVariable {
                        file: file.to_string(),
                        line,
                        column,
                        name: name.to_string(),
                        hint: suggest::hint(name, vars.keys().map(String::as_str)),
                    });
                }
            },
            None => {
                // Not a placeholder: keep one `{` and look again from the next,
                // so `{{{ X }}` still finds `{{ X }}`.
                out.push('{');
                rest = &from_open[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

enum Inner<'a> {
    Name(&'a str),
    Literal(&'a str),
}

/// Match a placeholder at the start of `s` (which starts with `{{`), giving
/// what is inside and the placeholder's length in bytes.
fn placeholder(s: &str) -> Option<(Inner<'_>, usize)> {
    let after_open = s.strip_prefix("{{")?;
    let inner_start = after_open.len() - after_open.trim_start_matches([' ', '\t']).len();
    let body = &after_open[inner_start..];
    let (inner, body_len) =
        if let Some(quoted) = ["'{{'", "'}}'"].into_iter().find(|q| body.starts_with(q)) {
            (Inner::Literal(&quoted[1..3]), quoted.len())
        } else {
            let len = name_len(body)?;
            (Inner::Name(&body[..len]), len)
        };
    let after_inner = &body[body_len..];
    let spaces = after_inner.len() - after_inner.trim_start_matches([' ', '\t']).len();
    after_inner[spaces..].strip_prefix("}}")?;
    Some((inner, 2 + inner_start + body_len + spaces + 2))
}

/// Length of a name `[A-Za-z_][A-Za-z0-9_.-]*` at the start of `s`, if any.
fn name_len(s: &str) -> Option<usize> {
    let mut chars = s.char_indices();
    let (_, first) = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let end = chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
        .map_or(s.len(), |(i, _)| i);
    Some(end)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}
