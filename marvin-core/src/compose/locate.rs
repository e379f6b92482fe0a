//! Where a key path (`services.web.ports[1]`) is written in a compose file's
//! text, so that a problem found in the parsed document can name its line.
//!
//! The parsed document has no positions, so this reads the text's block
//! structure (indentation, `key:` and `- ` items). Flow collections
//! (`ports: [80, 81]`) and merged keys (`<<: *x`) give the line of the
//! deepest key that is written out; a path not found at all gives `None`.

use crate::yaml::Location;

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Split `services.web.ports[1].target` into keys and indexes. Keys may
/// contain dots only when nothing else is possible, so a service named
/// `a.b` is not found (the caller then gets the nearest parent).
fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some((n, after)) = inner.split_once(']') else {
                break;
            };
            if let Ok(n) = n.parse() {
                out.push(Segment::Index(n));
            }
            rest = after;
        }
    }
    out
}

/// The 1-based line and column where `path` is written in `text`, or of the
/// deepest part of it that is written out; `None` when not even its first
/// key is.
pub fn locate(text: &str, path: &str) -> Option<Location> {
    let lines: Vec<&str> = text.lines().collect();
    // The parent: its line and the column its content starts at (-1: the document).
    let mut parent: Option<usize> = None;
    let mut parent_indent: isize = -1;
    // After an index: the item's content on its `- ` line, if any.
    let mut inline: Option<(usize, usize)> = None;
    let mut found: Option<Location> = None;
    for segment in segments(path) {
        let start = parent.map_or(0, |p| p + 1);
        let step = match segment {
            Segment::Key(key) => {
                let on_item_line = inline.filter(|&(l, c)| starts_with_key(&lines[l][c..], key));
                on_item_line.or_else(|| find_key(&lines, start, parent_indent, key))
            }
            Segment::Index(n) => find_item(&lines, start, parent_indent, n),
        };
        let Some((line, column)) = step else {
            break;
        };
        found = Some(Location {
            line: line + 1,
            column: column + 1,
        });
        parent = Some(line);
        parent_indent = column as isize;
        inline = match segment {
            Segment::Index(_) => {
                let after = column + 1;
                let rest = &lines[line][after.min(lines[line].len())..];
                let spaces = rest.len() - rest.trim_start().len();
                let content = after + spaces;
                (content < lines[line].len() && !lines[line][content..].starts_with('#'))
                    .then_some((line, content))
            }
            Segment::Key(_) => None,
        };
        if let Some((l, c)) = inline {
            // Keys of an item written on its dash line sit at that column.
            parent_indent = c as isize - 1;
            parent = Some(l);
        }
    }
    found
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

fn starts_with_key(text: &str, key: &str) -> bool {
    for quote in ["", "\"", "'"] {
        let written = format!("{quote}{key}{quote}:");
        if let Some(after) = text.strip_prefix(&written) {
            return after.is_empty() || after.starts_with([' ', '\t']);
        }
    }
    false
}

/// A `key:` among the children of the block after `start` whose parent's
/// content starts at `parent_indent`.
fn find_key(
    lines: &[&str],
    start: usize,
    parent_indent: isize,
    key: &str,
) -> Option<(usize, usize)> {
    let mut child: Option<usize> = None;
    for (i, line) in lines.iter().enumerate().skip(start) {
        if !is_content(line) {
            continue;
        }
        let at = indent(line);
        if at as isize <= parent_indent {
            return None;
        }
        let child = *child.get_or_insert(at);
        if at == child && starts_with_key(&line[at..], key) {
            return Some((i, at));
        }
    }
    None
}

/// The `n`-th `- ` item of the block sequence after `start`. A sequence may
/// sit at its key's own indentation (`key:\n- a`).
fn find_item(
    lines: &[&str],
    start: usize,
    parent_indent: isize,
    n: usize,
) -> Option<(usize, usize)> {
    let mut dash: Option<usize> = None;
    let mut count = 0;
    for (i, line) in lines.iter().enumerate().skip(start) {
        if !is_content(line) {
            continue;
        }
        let at = indent(line);
        let is_item = line[at..] == *"-" || line[at..].starts_with("- ");
        if (at as isize) < parent_indent || (at as isize == parent_indent && !is_item) {
            return None;
        }
        let dash = *dash.get_or_insert(at);
        if at < dash {
            return None;
        }
        if at == dash && is_item {
            if count == n {
                return Some((i, at));
            }
            count += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# a comment
services:
  web:
    image: a
    ports:
      - 80
      - target: 81
        published: 8081
    volumes:
    - ./conf:/etc/x
    - \"~/y:/y\"
    environment: [A=1]
  db:
    image: b
volumes:
  data:
";

    fn at(path: &str) -> Option<(usize, usize)> {
        locate(TEXT, path).map(|l| (l.line, l.column))
    }

    #[test]
    fn keys_items_and_items_keys_are_found() {
        assert_eq!(at("services"), Some((2, 1)));
        assert_eq!(at("services.web"), Some((3, 3)));
        assert_eq!(at("services.web.image"), Some((4, 5)));
        assert_eq!(at("services.web.ports[0]"), Some((6, 7)));
        assert_eq!(at("services.web.ports[1]"), Some((7, 7)));
        assert_eq!(at("services.web.ports[1].target"), Some((7, 9)));
        assert_eq!(at("services.web.ports[1].published"), Some((8, 9)));
        assert_eq!(at("services.web.volumes[1]"), Some((11, 5)));
        assert_eq!(at("services.db.image"), Some((14, 5)));
        assert_eq!(at("volumes.data"), Some((16, 3)));
    }

    #[test]
    fn what_is_not_written_out_gives_its_nearest_parent() {
        assert_eq!(at("services.web.environment.A"), Some((12, 5)));
        assert_eq!(at("services.web.ports[5]"), Some((5, 5)));
        assert_eq!(at("services.db.ports"), Some((13, 3)));
        assert_eq!(at("networks"), None);
    }
}
