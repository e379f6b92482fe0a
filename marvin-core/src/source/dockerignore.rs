//! `.dockerignore` as Docker reads it: which context paths a build never sees.
//!
//! Follows Docker's own reader (moby `patternmatcher`): lines starting with
//! `#` are comments, patterns are trimmed and cleaned (`./a/` is `a`, a
//! leading `/` is dropped), `*` and `?` stop at `/`, `**` spans directories,
//! `[...]` is a character class, `\` escapes, and `!` makes an exception.
//! The last pattern that matches a path, or any directory above it, decides.
//! Pure: text in, answers out.

/// What is wrong with a line of a `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(".dockerignore line {line}: {message}")]
pub struct DockerIgnoreError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The parsed patterns of one `.dockerignore`, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// The cleaned pattern without its `!`.
    text: String,
    exception: bool,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`: one character but `/`.
    One,
    /// `*`: any run of characters without `/`.
    Run,
    /// `**` (or `**/`) inside a pattern: any number of leading directories, also none.
    Dirs,
    /// `**` at the end: anything at all.
    Rest,
    /// `[...]`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Parse a `.dockerignore` file.
pub fn parse(text: &str) -> Result<DockerIgnore, DockerIgnoreError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut patterns = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        // Docker drops comments before trimming, so ` # x` is a pattern.
        if raw.starts_with('#') {
            continue;
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let (exception, body) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        if body.is_empty() {
            return Err(DockerIgnoreError {
                line,
                message: "`!` needs a pattern after it".to_string(),
            });
        }
        let cleaned = clean(body);
        let cleaned = match cleaned.strip_prefix('/') {
            Some(rest) if !rest.is_empty() => rest.to_string(),
            _ => cleaned,
        };
        let tokens = compile(&cleaned).map_err(|message| DockerIgnoreError { line, message })?;
        patterns.push(Pattern {
            text: cleaned,
            exception,
            tokens,
        });
    }
    Ok(DockerIgnore { patterns })
}

impl DockerIgnore {
    /// Whether Docker would leave this context path (relative, `/`-separated) out of the build context.
    pub fn is_excluded(&self, path: &str) -> bool {
        let path = clean(path);
        let chars: Vec<char> = path.chars().collect();
        // The path itself and every directory above it, shortest last.
        let mut candidates: Vec<&[char]> = vec![&chars];
        for (i, c) in chars.iter().enumerate() {
            if *c == '/' {
                candidates.push(&chars[..i]);
            }
        }
        let mut excluded = false;
        for pattern in &self.patterns {
            // An exception only matters once something is excluded, and vice versa.
            if pattern.exception != excluded {
                continue;
            }
            if candidates.iter().any(|c| matches(&pattern.tokens, c)) {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// Whether an exception may bring back something beneath an excluded
    /// directory, so the directory must still be walked (Docker's rule: an
    /// exception pattern that starts with `dir/`).
    pub fn may_include_beneath(&self, dir: &str) -> bool {
        let prefix = format!("{}/", clean(dir));
        self.patterns
            .iter()
            .any(|p| p.exception && format!("{}/", p.text).starts_with(&prefix))
    }

    /// Make sure a path is sent even if a pattern excludes it, as Docker
    /// does for the Dockerfile and `.dockerignore` itself.
    pub fn always_send(&mut self, path: &str) {
        if !self.is_excluded(path) {
            return;
        }
        let text = clean(path);
        let tokens = text.chars().map(Token::Char).collect();
        self.patterns.push(Pattern {
            text,
            exception: true,
            tokens,
        });
    }
}

/// Go's `filepath.Clean` for `/`-separated paths.
fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => match out.last() {
                Some(&last) if last != ".." => {
                    out.pop();
                }
                _ if rooted => {}
                _ => out.push(".."),
            },
            name => out.push(name),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

fn compile(pattern: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i == chars.len() {
                    Token::Rest
                } else {
                    Token::Dirs
                });
                continue;
            }
            '*' => tokens.push(Token::Run),
            '?' => tokens.push(Token::One),
            '\\' => match chars.get(i + 1) {
                Some(&next) => {
                    tokens.push(Token::Char(next));
                    i += 1;
                }
                None => tokens.push(Token::Char('\\')),
            },
            '[' => {
                let (class, end) = compile_class(&chars, i)?;
                tokens.push(class);
                i = end;
            }
            c => tokens.push(Token::Char(c)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// A `[...]` class starting at `start`; returns it and the index of its `]`.
fn compile_class(chars: &[char], start: usize) -> Result<(Token, usize), String> {
    let unterminated = || {
        format!(
            "unterminated `[` in pattern `{}`",
            chars.iter().collect::<String>()
        )
    };
    let mut i = start + 1;
    let negated = matches!(chars.get(i), Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = *chars.get(i).ok_or_else(unterminated)?;
        if c == ']' && !first {
            break;
        }
        first = false;
        if c == '\\' {
            i += 1;
            c = *chars.get(i).ok_or_else(unterminated)?;
        }
        let mut hi = c;
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&n| n != ']') {
            i += 2;
            hi = chars[i];
            if hi == '\\' {
                i += 1;
                hi = *chars.get(i).ok_or_else(unterminated)?;
            }
            if hi < c {
                return Err(format!("bad range `{c}-{hi}` in pattern"));
            }
        }
        ranges.push((c, hi));
        i += 1;
    }
    Ok((Token::Class { negated, ranges }, i))
}

/// Whether `tokens` match all of `s` (Docker compiles patterns to an anchored regex).
fn matches(tokens: &[Token], s: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match token {
        Token::Char(c) => s.first() == Some(c) && matches(rest, &s[1..]),
        Token::One => s.first().is_some_and(|&c| c != '/') && matches(rest, &s[1..]),
        Token::Class { negated, ranges } => {
            s.first()
                .is_some_and(|&c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated)
                && matches(rest, &s[1..])
        }
        Token::Run => {
            let run = s.iter().take_while(|&&c| c != '/').count();
            (0..=run).any(|k| matches(rest, &s[k..]))
        }
        Token::Rest => true,
        Token::Dirs => {
            matches(rest, s) || (1..=s.len()).any(|k| s[k - 1] == '/' && matches(rest, &s[k..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `excluded` and `sent` list context paths and what the ignore file must say about them.
    fn check(dockerignore: &str, excluded: &[&str], sent: &[&str]) {
        let ignore = parse(dockerignore).expect("valid .dockerignore");
        for path in excluded {
            assert!(
                ignore.is_excluded(path),
                "{path} should be excluded by:\n{dockerignore}"
            );
        }
        for path in sent {
            assert!(
                !ignore.is_excluded(path),
                "{path} should be sent with:\n{dockerignore}"
            );
        }
    }

    #[test]
    fn star_stays_within_one_directory() {
        check(
            "*.md",
            &["README.md", "README.md/x"],
            &["docs/README.md", "README.txt"],
        );
        check("*/*.md", &["docs/a.md"], &["a.md", "docs/sub/a.md"]);
        check("?.txt", &["a.txt"], &["ab.txt", "/.txt"]);
    }

    #[test]
    fn double_star_spans_directories() {
        check(
            "**/*.log",
            &["a.log", "x/a.log", "x/y/z/a.log"],
            &["a.log.txt"],
        );
        check(
            "node_modules/**",
            &["node_modules/a", "node_modules/a/b"],
            &["node_modules"],
        );
        check("a/**/b", &["a/b", "a/x/b", "a/x/y/b"], &["a/xb", "b"]);
        check("**", &["anything", "a/b"], &[]);
    }

    #[test]
    fn a_matching_directory_excludes_everything_beneath_it() {
        check(
            "target",
            &["target", "target/debug/x"],
            &["targets", "src/target"],
        );
        check("/build/", &["build/out.o"], &["src/build"]);
    }

    #[test]
    fn the_last_matching_pattern_wins_and_exceptions_re_include() {
        check("*.md\n!README.md\n", &["CHANGES.md"], &["README.md"]);
        check(
            "docs\n!docs/keep.txt\n",
            &["docs/a.txt", "docs"],
            &["docs/keep.txt"],
        );
        check("!a\na\n", &["a"], &[]);
        check(
            "**/*.tmp\n!**/keep.tmp\nsecret/keep.tmp",
            &["x/a.tmp", "secret/keep.tmp"],
            &["x/keep.tmp"],
        );
    }

    #[test]
    fn comments_blank_lines_and_spaces_are_docker_s() {
        check(
            "# comment\n\n  spaced.txt  \n./dir/sub/\n",
            &["spaced.txt", "dir/sub/x"],
            &["# comment", "dir"],
        );
        check(" # not a comment", &["# not a comment"], &[]);
        check("\u{feff}bom.txt", &["bom.txt"], &[]);
    }

    #[test]
    fn classes_and_escapes() {
        check("file[0-9].txt", &["file1.txt"], &["filex.txt"]);
        check("file[^0-9].txt", &["filex.txt"], &["file1.txt"]);
        check("a\\*b", &["a*b"], &["axb"]);
        check("a.b", &["a.b"], &["axb"]);
    }

    #[test]
    fn malformed_lines_name_the_line() {
        assert_eq!(
            parse("ok\n!\n").expect_err("bare !").to_string(),
            ".dockerignore line 2: `!` needs a pattern after it"
        );
        assert_eq!(parse("a[b").expect_err("open class").line, 1);
    }

    #[test]
    fn always_send_overrides_exclusions_only_when_needed() {
        let mut ignore = parse("*\n").expect("valid");
        ignore.always_send("Dockerfile");
        ignore.always_send(".dockerignore");
        assert!(!ignore.is_excluded("Dockerfile"));
        assert!(!ignore.is_excluded(".dockerignore"));
        assert!(ignore.is_excluded("src"));

        let mut ignore = parse("docker\n").expect("valid");
        ignore.always_send("docker/Dockerfile.prod");
        assert!(ignore.may_include_beneath("docker"));
        assert!(!ignore.is_excluded("docker/Dockerfile.prod"));
        assert!(ignore.is_excluded("docker/other"));

        let mut ignore = parse("").expect("valid");
        ignore.always_send("Dockerfile");
        assert_eq!(ignore, DockerIgnore::default());
    }

    #[test]
    fn excluded_directories_are_walked_only_for_exceptions_beneath_them() {
        let ignore = parse("docs\nvendor\n!docs/keep.txt\n!**/x").expect("valid");
        assert!(ignore.may_include_beneath("docs"));
        assert!(
            !ignore.may_include_beneath("vendor"),
            "Docker only looks at the exception's text"
        );
    }
}
