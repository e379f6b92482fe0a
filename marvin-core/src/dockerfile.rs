//! Just enough of the Dockerfile language to know which images a build
//! starts `FROM`, and to point those lines at images built here.

use std::collections::BTreeMap;

/// One `FROM` instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// The image as written after `ARG` substitution (`cloudmatrix/java-base:1`).
    pub image: String,
    /// The stage name after `AS`, if any.
    pub alias: Option<String>,
    /// 0-based index of the instruction's first line.
    pub line: usize,
}

/// The `FROM` instructions of a Dockerfile, with global `ARG` defaults
/// (overridden by `build_args`) substituted. Stages that build `FROM` an
/// earlier stage's alias are left out: they are not images.
pub fn from_images(text: &str, build_args: &BTreeMap<String, String>) -> Vec<From> {
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut aliases: Vec<String> = Vec::new();
    let mut froms = Vec::new();
    for (line_no, instruction) in instructions(text) {
        let mut words = instruction.split_whitespace();
        let Some(keyword) = words.next() else {
            continue;
        };
        match keyword.to_ascii_uppercase().as_str() {
            "ARG" if froms.is_empty() => {
                for decl in words {
                    let (name, default) = match decl.split_once('=') {
                        Some((n, d)) => (n, unquote(d)),
                        None => (decl, String::new()),
                    };
                    let value = build_args.get(name).cloned().unwrap_or(default);
                    args.insert(name.to_string(), value);
                }
            }
            "FROM" => {
                let rest: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
                let Some(raw) = rest.first() else { continue };
                let image = substitute(raw, &args);
                let alias = match rest.get(1..3) {
                    Some([as_kw, name]) if as_kw.eq_ignore_ascii_case("as") => {
                        Some(name.to_string())
                    }
                    _ => None,
                };
                let is_stage = aliases.iter().any(|a| a.eq_ignore_ascii_case(&image));
                if let Some(a) = &alias {
                    aliases.push(a.clone());
                }
                if !is_stage {
                    froms.push(From {
                        image,
                        alias,
                        line: line_no,
                    });
                }
            }
            _ => {}
        }
    }
    froms
}

/// Rewrite `FROM` lines whose image is a key of `replace` to the mapped image
/// (keeping `--platform`, `AS` and everything else). Other lines are untouched.
pub fn rewrite_from(
    text: &str,
    build_args: &BTreeMap<String, String>,
    replace: &BTreeMap<String, String>,
) -> String {
    let targets: BTreeMap<usize, String> = from_images(text, build_args)
        .into_iter()
        .filter_map(|f| replace.get(&f.image).map(|to| (f.line, to.clone())))
        .collect();
    if targets.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split_inclusive('\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let Some(to) = targets.get(&i) else {
            out.push_str(line);
            continue;
        };
        // Join the continuation lines of this FROM and write it as one line.
        let mut joined = line.trim_end_matches(['\n', '\r']).to_string();
        while joined.ends_with('\\') {
            joined.pop();
            match lines.next() {
                Some((_, next)) => joined.push_str(next.trim_end_matches(['\n', '\r'])),
                None => break,
            }
        }
        let mut words: Vec<String> = joined.split_whitespace().map(str::to_string).collect();
        if let Some(pos) = words.iter().skip(1).position(|w| !w.starts_with("--")) {
            words[pos + 1] = to.clone();
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// The Dockerfile with `labels` set by one `LABEL` instruction at its end.
/// The classic builder turns the build API's `labels` option into one
/// `LABEL` step per label, each a container created and committed: four
/// labels cost seconds per build. `None` when appending is not safe: a value
/// `LABEL` would expand or unquote, or a last line that continues.
/// The end is the last stage's end: not for builds with a `target`.
pub fn with_labels(text: &str, labels: &BTreeMap<String, String>) -> Option<String> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-,=:/@+".contains(c))
    };
    if labels.is_empty()
        || !labels
            .iter()
            .all(|(k, v)| plain(k) && (v.is_empty() || plain(v)))
    {
        return None;
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    if last.trim_end().ends_with('\\') || last.trim_end().ends_with('`') {
        return None;
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str("LABEL");
    for (key, value) in labels {
        out.push_str(&format!(" \"{key}\"=\"{value}\""));
    }
    out.push('\n');
    Some(out)
}

/// `RUN --mount=type=secret` and `type=ssh` mounts: `(1-based line, type)`.
/// They need a BuildKit session serving the secret or agent, which Marvin
/// does not open; without one BuildKit runs the step without them.
pub fn session_mounts(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (line_no, instruction) in instructions(text) {
        let mut words = instruction.split_whitespace();
        if !words.next().is_some_and(|k| k.eq_ignore_ascii_case("RUN")) {
            continue;
        }
        for word in words.take_while(|w| w.starts_with("--")) {
            let Some(spec) = word.strip_prefix("--mount=") else {
                continue;
            };
            let kind = spec
                .split(',')
                .find_map(|kv| kv.strip_prefix("type="))
                .unwrap_or("bind");
            if kind == "secret" || kind == "ssh" {
                out.push((line_no + 1, kind.to_string()));
            }
        }
    }
    out
}

/// The instructions of a Dockerfile with continuations joined and comments
/// dropped, each with the index of its first line.
fn instructions(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && current.is_none() {
            continue;
        }
        let (start, mut acc) = current.take().unwrap_or((i, String::new()));
        if let Some(body) = trimmed.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            current = Some((start, acc));
        } else {
            if !trimmed.starts_with('#') {
                acc.push_str(trimmed);
            }
            if !acc.trim().is_empty() {
                out.push((start, acc));
            }
        }
    }
    if let Some((start, acc)) = current {
        out.push((start, acc));
    }
    out
}

fn unquote(s: &str) -> String {
    s.trim_matches(|c| c == '"' || c == '\'').to_string()
}

/// `$NAME`, `${NAME}` and `${NAME:-default}` from ARG values.
fn substitute(word: &str, args: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        if let Some(body) = rest.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push('$');
                continue;
            };
            let inner = &body[..end];
            let value = match inner.split_once(":-") {
                Some((name, default)) => match args.get(name) {
                    Some(v) if !v.is_empty() => v.clone(),
                    _ => default.to_string(),
                },
                None => args.get(inner).cloned().unwrap_or_default(),
            };
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push_str(args.get(&rest[..end]).map(String::as_str).unwrap_or(""));
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_and_ssh_mounts_are_found_with_their_lines() {
        let text = "FROM a\nRUN --mount=type=cache,target=/c \\\n    --mount=type=secret,id=npm make\nRUN --mount=type=bind,from=b,target=/b true\nRUN --network=none --mount=id=k,type=ssh git pull\nRUN echo --mount=type=secret\n";
        assert_eq!(
            session_mounts(text),
            vec![(2, "secret".to_string()), (5, "ssh".to_string())]
        );
        assert!(session_mounts("FROM a\nRUN --mount=type=tmpfs,target=/t true\n").is_empty());
    }

    fn images(text: &str) -> Vec<String> {
        from_images(text, &BTreeMap::new())
            .into_iter()
            .map(|f| f.image)
            .collect()
    }

    #[test]
    fn finds_every_from_but_not_earlier_stages() {
        let text = "FROM golang:1 AS build\nRUN make\nFROM --platform=linux/amd64 base/img:2 as run\nCOPY --from=build /x /x\nFROM build\n";
        assert_eq!(images(text), vec!["golang:1", "base/img:2"]);
    }

    #[test]
    fn global_args_and_build_args_substitute() {
        let text = "ARG BASE=alpine\nARG TAG\nFROM ${BASE}:${TAG:-3}\n";
        assert_eq!(images(text), vec!["alpine:3"]);
        let args = BTreeMap::from([("BASE".to_string(), "debian".to_string())]);
        assert_eq!(from_images(text, &args)[0].image, "debian:3");
    }

    #[test]
    fn comments_and_continuations_are_handled() {
        let text = "# FROM not-this\nFROM \\\n  base \\\n  AS b\n";
        let f = from_images(text, &BTreeMap::new());
        assert_eq!(f[0].image, "base");
        assert_eq!(f[0].alias.as_deref(), Some("b"));
        assert_eq!(f[0].line, 1);
    }

    #[test]
    fn rewrite_points_from_at_images_built_here() {
        let text = "FROM cm/java-base AS run\nRUN x\nFROM \\\n  other\n";
        let map = BTreeMap::from([
            ("cm/java-base".to_string(), "marvin/cm-base:abc".to_string()),
            ("other".to_string(), "marvin/cm-other:def".to_string()),
        ]);
        assert_eq!(
            rewrite_from(text, &BTreeMap::new(), &map),
            "FROM marvin/cm-base:abc AS run\nRUN x\nFROM marvin/cm-other:def\n"
        );
        assert_eq!(rewrite_from("FROM x\n", &BTreeMap::new(), &map), "FROM x\n");
    }

    #[test]
    fn labels_become_one_instruction_at_the_end() {
        let labels = BTreeMap::from([
            ("io.marvin.service".to_string(), "web".to_string()),
            (
                "io.marvin.commits".to_string(),
                "be=0a1b,fe=2c3d".to_string(),
            ),
        ]);
        assert_eq!(
            with_labels("FROM base\nCOPY . /www", &labels).as_deref(),
            Some(
                "FROM base\nCOPY . /www\nLABEL \"io.marvin.commits\"=\"be=0a1b,fe=2c3d\" \"io.marvin.service\"=\"web\"\n"
            )
        );
    }

    #[test]
    fn labels_that_label_would_expand_or_a_trailing_continuation_are_refused() {
        let label = |v: &str| BTreeMap::from([("k".to_string(), v.to_string())]);
        assert_eq!(with_labels("FROM base\n", &label("$HOME")), None);
        assert_eq!(with_labels("FROM base\n", &label("a \"b\"")), None);
        assert_eq!(with_labels("FROM base\nRUN x \\\n", &label("v")), None);
        assert_eq!(with_labels("FROM base\n", &BTreeMap::new()), None);
    }
}
