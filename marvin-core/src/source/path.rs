//! Workspace path normalisation: relative, `/`-separated, no way out of the root.

use super::SourceError;

/// The components of a relative workspace path with `.`, empty parts and
/// `..` resolved; `None` when the path is absolute or climbs above the root.
pub(crate) fn normalise(path: &str) -> Option<Vec<String>> {
    if path.starts_with('/') {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            name => out.push(name.to_string()),
        }
    }
    Some(out)
}

/// [`normalise`] with the error a user sees.
pub(crate) fn components(path: &str) -> Result<Vec<String>, SourceError> {
    normalise(path).ok_or_else(|| SourceError::InvalidPath {
        path: path.to_string(),
        reason: if path.starts_with('/') {
            "is absolute; workspace paths are relative to the workspace root"
        } else {
            "leaves the workspace root"
        },
    })
}

#[cfg(test)]
mod tests {
    use super::normalise;

    fn check(input: &str, expected: Option<&str>) {
        assert_eq!(
            normalise(input).map(|c| c.join("/")),
            expected.map(str::to_string),
            "normalising {input:?}"
        );
    }

    #[test]
    fn dots_and_trailing_slashes_disappear() {
        check("", Some(""));
        check(".", Some(""));
        check("./fe/web/", Some("fe/web"));
        check("a/../b", Some("b"));
        check("a//b/./c", Some("a/b/c"));
        check("a/..", Some(""));
    }

    #[test]
    fn escaping_or_absolute_paths_are_refused() {
        check("../x", None);
        check("a/../../x", None);
        check("/etc/passwd", None);
    }
}
