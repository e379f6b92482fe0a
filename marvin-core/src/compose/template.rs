//! `{{ VAR }}` placeholders, filled on the raw text before YAML parsing.

use std::collections::BTreeMap;

use super::ComposeError;
use crate::suggest;

/// Fill every `{{ NAME }}` placeholder in `text` from `vars`.
///
/// [`crate::compose`] says what counts as a placeholder; everything else is
/// copied unchanged, and so are YAML comments. An unknown name in upper case
/// (`{{ NOPE }}`) is an error with its line and column; an unknown name with
/// a lower-case letter (`{{username}}`, another tool's template) is kept as
/// written.
pub fn template(
    text: &str,
    file: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, ComposeError> {
    let comments = comment_ranges(text);
    let mut unknown = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let from_open = &rest[start..];
        let offset = text.len() - from_open.len();
        if let Some(&(_, end)) = comments.iter().find(|(s, e)| (*s..*e).contains(&offset)) {
            // A comment is copied as written, placeholders and all.
            out.push_str(&text[offset..end]);
            rest = &text[end..];
            continue;
        }
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
                None if name.chars().any(|c| c.is_ascii_lowercase()) => {
                    // Not a name Marvin's variables use: another tool's template.
                    out.push_str(&from_open[..len]);
                    rest = &from_open[len..];
                }
                None => {
                    let (line, column) = line_column(text, offset);
                    unknown.push(ComposeError::UnknownTemplateVariable {
                        file: file.to_string(),
                        line,
                        column,
                        name: name.to_string(),
                        hint: suggest::hint(name, vars.keys().map(String::as_str)),
                    });
                    out.push_str(&from_open[..len]);
                    rest = &from_open[len..];
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
    match unknown.len() {
        0 => Ok(out),
        1 => Err(unknown.remove(0)),
        _ => Err(ComposeError::Problems {
            problems: unknown.iter().flat_map(ComposeError::problems).collect(),
        }),
    }
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

/// Byte ranges of the YAML comments in `text`, each from its `#` to the end
/// of its line. A `#` starts a comment at the start of a line's content or
/// after a space or tab, outside a quoted scalar on that line and outside a
/// block scalar (`|`, `>`) body, where `#` is text.
pub(crate) fn comment_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    // Indentation of the line that opened a block scalar, while in its body.
    let mut block: Option<usize> = None;
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let indent = content.len() - content.trim_start_matches(' ').len();
        let blank = content.trim().is_empty();
        if let Some(parent) = block {
            if blank || indent > parent {
                line_start += line.len();
                continue;
            }
            block = None;
        }
        let bytes = content.as_bytes();
        let mut quote: Option<u8> = None;
        let mut comment = None;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            let before = if i == 0 { b' ' } else { bytes[i - 1] };
            match quote {
                Some(b'\'') if b == b'\'' => {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 1;
                    } else {
                        quote = None;
                    }
                }
                Some(b'"') if b == b'\\' => i += 1,
                Some(b'"') if b == b'"' => quote = None,
                Some(_) => {}
                None if (b == b'\'' || b == b'"')
                    && matches!(before, b' ' | b'\t' | b':' | b'[' | b'{' | b',' | b'-') =>
                {
                    quote = Some(b)
                }
                None if b == b'#' && matches!(before, b' ' | b'\t') => {
                    comment = Some(i);
                    break;
                }
                None => {}
            }
            i += 1;
        }
        if let Some(at) = comment {
            ranges.push((line_start + at, line_start + content.len()));
        }
        let code = content[..comment.unwrap_or(content.len())].trim_end();
        if opens_block_scalar(code) {
            block = Some(indent);
        }
        line_start += line.len();
    }
    ranges
}

/// Whether a line (without its comment) ends with a block scalar indicator:
/// `key: |`, `- >-`, `key: |2+`.
fn opens_block_scalar(code: &str) -> bool {
    let last = code.rsplit([' ', '\t']).next().unwrap_or("");
    let mut chars = last.chars();
    let is_block = matches!(chars.next(), Some('|' | '>'))
        && chars.all(|c| matches!(c, '-' | '+') || c.is_ascii_digit());
    let before = code[..code.len() - last.len()].trim_end();
    is_block && (before.is_empty() || before.ends_with(':') || before.ends_with('-'))
}
