//! Secrets never shown (docs/secrets.md): every value of a variable listed in
//! an environment's `secrets`, or named like a secret (`*_PASSWORD`,
//! `*_TOKEN`, `*_SECRET`, `*_KEY`), is replaced by `***` in everything
//! Marvin emits. Pure: values in, text out.
//!
//! Decisions:
//! - values shorter than [`MIN_SECRET_CHARS`] characters are not redacted:
//!   masking every `1` or `abc` in every log line would make logs unreadable
//!   and would point at the secret anyway;
//! - every occurrence of every value is covered, overlapping ones merged into
//!   one `***`, so the order of the values does not matter and no fragment of
//!   a longer secret survives a shorter one;
//! - the forms a renderer produces are covered too: HTML/mrkdwn escaping
//!   (`&amp;`, `&lt;`, `&gt;`, `&quot;`), JSON string escaping, and each line
//!   of a multi-line value (logs arrive line by line).
//!
//! ```
//! use marvin_core::redact::Redactor;
//! let r = Redactor::new(["hunter22".to_string()]);
//! assert_eq!(r.redact("password=hunter22;"), "password=***;");
//! ```

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use crate::config::Environment;

/// What a secret is replaced by.
pub const MASK: &str = "***";
/// Values shorter than this are not redacted (see the module docs).
pub const MIN_SECRET_CHARS: usize = 4;

/// Replaces secret values by [`MASK`]. Its `Debug` shows only how many it holds.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form of every value, longest first.
    needles: Vec<String>,
    /// How many values were given (long enough to count).
    values: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("values", &self.values)
            .finish_non_exhaustive()
    }
}

impl Redactor {
    /// A redactor for these secret values.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut needles: BTreeSet<String> = BTreeSet::new();
        let mut count = 0;
        for value in values {
            if value.chars().count() < MIN_SECRET_CHARS {
                continue;
            }
            count += 1;
            let mut forms = vec![value.clone()];
            forms.extend(
                value
                    .lines()
                    .map(str::trim)
                    .filter(|l| l.chars().count() >= MIN_SECRET_CHARS)
                    .map(String::from),
            );
            for form in forms {
                let html = form
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                let html_quot = html.replace('"', "&quot;");
                let json = serde_json::to_string(&form)
                    .map(|s| s[1..s.len() - 1].to_string())
                    .unwrap_or_default();
                needles.extend([form, html, html_quot, json]);
            }
        }
        let mut needles: Vec<String> = needles
            .into_iter()
            .filter(|n| n.chars().count() >= MIN_SECRET_CHARS)
            .collect();
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        Redactor {
            needles,
            values: count,
        }
    }

    /// A redactor with no secrets (every text passes unchanged).
    pub fn none() -> Self {
        Redactor::default()
    }

    /// Whether it has nothing to hide.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret value replaced by [`MASK`].
    ///
    /// Repeated until nothing matches: the mask's `*` next to what follows a
    /// secret can spell another secret (`*abc` after `xyzw`). Each round
    /// replaces at least four characters by three, so it ends.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = self.redact_once(text);
        while let Cow::Owned(again) = self.redact_once(&out) {
            out = Cow::Owned(again);
        }
        out
    }

    fn redact_once<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for needle in &self.needles {
            let step = needle.chars().next().map_or(1, char::len_utf8);
            let mut from = 0;
            while let Some(i) = text[from..].find(needle.as_str()) {
                let start = from + i;
                spans.push((start, start + needle.len()));
                from = start + step;
            }
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut done = 0;
        let mut current: Option<(usize, usize)> = None;
        for (s, e) in spans {
            match &mut current {
                Some((_, ce)) if s <= *ce => *ce = (*ce).max(e),
                _ => {
                    if let Some((cs, ce)) = current.take() {
                        out.push_str(&text[done..cs]);
                        out.push_str(MASK);
                        done = ce;
                    }
                    current = Some((s, e));
                }
            }
        }
        if let Some((cs, ce)) = current {
            out.push_str(&text[done..cs]);
            out.push_str(MASK);
            done = ce;
        }
        out.push_str(&text[done..]);
        Cow::Owned(out)
    }

    /// Redact every string (and object key) inside a JSON value, in place.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        if self.is_empty() {
            return;
        }
        match value {
            serde_json::Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            serde_json::Value::Object(map) => {
                let taken = std::mem::take(map);
                for (k, mut v) in taken {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }
}

/// The secret values of an environment: values of names listed in its
/// `secrets` or named like secrets, from its own `env` and `vars` and from
/// `env_files_and_env` (the name/value pairs of its env files, and any other
/// environment the caller injects).
pub fn secret_values(env: &Environment, env_files_and_env: &[(String, String)]) -> Vec<String> {
    let mut values: BTreeSet<String> = BTreeSet::new();
    let pairs = env
        .env
        .iter()
        .chain(env.vars.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(
            env_files_and_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
    for (name, value) in pairs {
        if env.is_secret_name(name) && !value.is_empty() {
            values.insert(value.to_string());
        }
    }
    values.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Project;

    fn check(secrets: &[&str], text: &str, expected: &str) {
        let r = Redactor::new(secrets.iter().map(|s| s.to_string()));
        assert_eq!(r.redact(text), expected, "{text:?} with {secrets:?}");
    }

    #[test]
    fn every_occurrence_is_masked() {
        check(&["hunter22"], "a hunter22 b hunter22", "a *** b ***");
        check(&["hunter22"], "nothing here", "nothing here");
        check(
            &["s3cr3t-Tok"],
            "Authorization: s3cr3t-Tok\n",
            "Authorization: ***\n",
        );
    }

    #[test]
    fn overlapping_and_nested_secrets_leave_no_fragment() {
        check(&["abcd", "cdefgh"], "xxabcdefghyy", "xx***yy");
        check(&["passw0rd", "passw0rd-extra"], "[passw0rd-extra]", "[***]");
        check(&["aaaa"], "aaaaaa", "***");
        check(&["pass", "password1"], "password1 pass", "*** ***");
    }

    #[test]
    fn the_mask_next_to_the_text_never_spells_a_secret() {
        // Found by tests/properties.rs: `***` + `' )` showed the secret `*' )`.
        check(&["*' )"], "*' )' )", "*****");
        check(&["xyzw", "*abc1"], "xyzwabc1 ok", "***** ok");
    }

    #[test]
    fn short_values_are_not_redacted() {
        check(&["abc", "", "1"], "abc 1 x", "abc 1 x");
        assert!(Redactor::new(["abc".to_string()]).is_empty());
    }

    #[test]
    fn escaped_forms_are_masked_too() {
        let secret = "p<a&s\"s>";
        check(&[secret], "html: p&lt;a&amp;s\"s&gt;", "html: ***");
        check(&[secret], "attr: p&lt;a&amp;s&quot;s&gt;", "attr: ***");
        check(&[secret], r#"json: "p<a&s\"s>""#, "json: \"***\"");
    }

    #[test]
    fn each_line_of_a_multiline_secret_is_masked() {
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkq\n-----END KEY-----";
        check(&[key], "key line: MIIEvQIBADANBgkq", "key line: ***");
        check(&[key], key, "***");
    }

    #[test]
    fn unicode_text_and_secrets_are_handled_on_char_boundaries() {
        check(&["密码是秘密"], "黄鸿: 密码是秘密!", "黄鸿: ***!");
        check(&["ééé1"], "éééé1é", "é***é");
    }

    #[test]
    fn json_strings_and_keys_are_redacted_in_place() {
        let r = Redactor::new(["hunter22".to_string()]);
        let mut v = serde_json::json!({
            "text": "pw hunter22",
            "blocks": [{"text": {"text": "x hunter22 y"}}],
            "hunter22": 1,
            "n": 5
        });
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "text": "pw ***",
                "blocks": [{"text": {"text": "x *** y"}}],
                "***": 1,
                "n": 5
            })
        );
    }

    #[test]
    fn debug_output_does_not_show_the_secrets() {
        let r = Redactor::new(["hunter22".to_string()]);
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter22"), "{shown}");
        assert_eq!(shown, "Redactor { values: 1, .. }");
    }

    #[test]
    fn secret_values_come_from_listed_and_secret_looking_names() {
        let p = Project::parse(
            "project: shop\nrepos:\n  app: {url: /srv/app.git}\nenvironments:\n  dev:\n    \
             secrets: [DB_PASS]\n    env: {API_TOKEN: tok-from-env, MODE: debug}\n    \
             vars: {SIGNING_KEY: key-from-vars}\n",
            "marvin.yml",
        )
        .expect("fixture parses");
        let env = p.environment("dev").expect("dev");
        let from_files = vec![
            ("DB_PASS".to_string(), "from-file-pass".to_string()),
            ("DB_PASSWORD".to_string(), "other-pass".to_string()),
            ("DB_HOST".to_string(), "db.internal".to_string()),
            ("EMPTY_TOKEN".to_string(), String::new()),
        ];
        assert_eq!(
            secret_values(env, &from_files),
            vec![
                "from-file-pass",
                "key-from-vars",
                "other-pass",
                "tok-from-env"
            ]
        );
    }
}
