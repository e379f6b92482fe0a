//! Files a container gets from outside its image, decided as data: relative
//! bind mounts (`./nginx/nginx.conf:/etc/nginx/conf.d/default.conf:ro`,
//! `./app:/var/www/html`) and compose `secrets` and `configs`.
//!
//! Marvin has no checkout: a mounted file or directory is written from git
//! objects into `<data>/files/`, named by its content id (blob id, tree id,
//! or a keyed digest of a secret's value), and bind-mounted from there. The
//! host path is part of the container spec, so the deploy key changes
//! exactly when the content does. A mount is read-only unless the compose
//! file writes `rw` (short syntax) or `read_only: false` (long syntax); then
//! the container gets a per-environment copy under `<data>/files/rw/`.
//!
//! Pure: [`requests`] reads what the compose file asks for; the content ids
//! are looked up by [`crate::materialize`], which also writes the files.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::compose::{ComposeFile, Service};
use crate::desired::{DesiredError, relative_to_compose};

/// Where a mounted file's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A workspace path in git (a file or a directory).
    Git {
        /// Workspace path.
        path: String,
    },
    /// A variable of the Marvin process (`environment:` of a secret or config).
    Variable {
        /// The variable's name.
        name: String,
    },
    /// Inline text (`content:` of a config).
    Content {
        /// The text.
        text: String,
    },
}

/// One file or directory a service asks for, before its content is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    /// What the compose file wrote, for messages: "volume `./a:/b`", "secret `db`".
    pub what: String,
    /// Text to look for in the compose file to name the line (the source as written).
    pub needle: String,
    /// Where the content comes from.
    pub source: FileSource,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only (everything but an `rw` bind mount).
    pub read_only: bool,
    /// File mode asked for (secrets and configs), e.g. `0o440`.
    pub mode: Option<u32>,
    /// A secret: its value is masked in every output.
    pub secret: bool,
}

/// How the runtime writes a file's content under `<data>/files/`.
#[derive(Clone, PartialEq, Eq)]
pub enum FileContent {
    /// A file of the workspace.
    GitFile {
        /// Workspace path.
        path: String,
        /// Executable in git.
        executable: bool,
    },
    /// A directory of the workspace, written recursively.
    GitDir {
        /// Workspace path.
        path: String,
    },
    /// Bytes known at plan time (a secret's or config's value).
    Bytes(Vec<u8>),
}

impl std::fmt::Debug for FileContent {
    // A secret's value never appears in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileContent::GitFile { path, executable } => f
                .debug_struct("GitFile")
                .field("path", path)
                .field("executable", executable)
                .finish(),
            FileContent::GitDir { path } => f.debug_struct("GitDir").field("path", path).finish(),
            FileContent::Bytes(b) => write!(f, "Bytes(*** {} bytes)", b.len()),
        }
    }
}

/// A file or directory mounted into a container, with its content id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    /// Content id: `blob-<sha1>`, `tree-<sha1>`, `secret-blob-<sha1>`, `secret-<hmac>`, `config-<sha256>`.
    pub id: String,
    /// How to write it.
    pub content: FileContent,
    /// Path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// File mode to give it (files only), when asked for.
    pub mode: Option<u32>,
    /// A secret: its value is masked in every output.
    pub secret: bool,
}

impl FileMount {
    /// The name of its materialized copy: the content id, plus the mode when one was asked for.
    pub fn file_name(&self) -> String {
        match self.mode {
            Some(mode) => format!("{}-{mode:04o}", self.id),
            None => self.id.clone(),
        }
    }

    /// Where it is written on the host, under `files_root` (`<data>/files`):
    /// shared and read-only, or a per-environment copy for `rw` mounts.
    pub fn host_path(&self, files_root: &str, project: &str, env: &str) -> String {
        let root = files_root.trim_end_matches('/');
        if self.read_only {
            format!("{root}/{}", self.file_name())
        } else {
            format!("{root}/rw/{project}-{env}/{}", self.file_name())
        }
    }
}

/// Whether a volume's source is a path relative to the compose file
/// (`.`, `..`, `./x`, `../x`): such a mount is served from git.
pub fn is_git_volume(volume: &str) -> bool {
    let source = volume.split(':').next().unwrap_or("");
    volume.contains(':')
        && (source == "."
            || source == ".."
            || source.starts_with("./")
            || source.starts_with("../"))
}

/// A relative bind mount (`./src:/target[:ro|rw,...]`) as a request; `None`
/// when the volume is not one.
pub fn volume_request(compose_path: &str, volume: &str) -> Option<Result<FileRequest, String>> {
    if !is_git_volume(volume) {
        return None;
    }
    let parts: Vec<&str> = volume.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [s, t] => (*s, *t, ""),
        [s, t, o] => (*s, *t, *o),
        _ => {
            return Some(Err(format!(
                "volumes: `{volume}` is not a mount; write `./path:/container/path[:ro]`"
            )));
        }
    };
    let Some(path) = relative_to_compose(compose_path, source) else {
        return Some(Err(format!(
            "volumes: `{volume}` leaves the workspace; mount a path inside the repos"
        )));
    };
    if !target.starts_with('/') {
        return Some(Err(format!(
            "volumes: `{volume}`: the container path `{target}` must be absolute"
        )));
    }
    let rw = options.split(',').any(|o| o == "rw");
    Some(Ok(FileRequest {
        what: format!("volume `{volume}`"),
        needle: source.to_string(),
        source: FileSource::Git { path },
        target: target.to_string(),
        read_only: !rw,
        mode: None,
        secret: false,
    }))
}

/// Which kind of top-level entry a service refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Secret,
    Config,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Secret => "secrets",
            Kind::Config => "configs",
        }
    }

    /// Where compose mounts it when the service gives no (absolute) target.
    fn target(self, name: &str, target: Option<&str>) -> String {
        match (self, target) {
            (_, Some(t)) if t.starts_with('/') => t.to_string(),
            (Kind::Secret, Some(t)) => format!("/run/secrets/{t}"),
            (Kind::Secret, None) => format!("/run/secrets/{name}"),
            (Kind::Config, Some(t)) => format!("/{t}"),
            (Kind::Config, None) => format!("/{name}"),
        }
    }
}

/// Everything every service asks for: relative bind mounts, secrets and
/// configs. All problems are returned, not only the first.
pub fn requests(
    compose_path: &str,
    compose: &ComposeFile,
) -> Result<BTreeMap<String, Vec<FileRequest>>, Vec<DesiredError>> {
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, service) in &compose.services {
        let mut list = Vec::new();
        let mut fail = |message: String| {
            errors.push(DesiredError {
                service: name.clone(),
                message,
            })
        };
        for v in &service.volumes {
            match volume_request(compose_path, v) {
                Some(Ok(r)) => list.push(r),
                Some(Err(m)) => fail(m),
                None => {}
            }
        }
        for kind in [Kind::Secret, Kind::Config] {
            for (i, item) in refs(service, kind).iter().enumerate() {
                match reference(compose_path, compose, kind, item, i) {
                    Ok(r) => list.push(r),
                    Err(m) => fail(m),
                }
            }
        }
        let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
        for r in &list {
            if let Some(first) = targets.insert(&r.target, &r.what) {
                fail(format!(
                    "{first} and {} both mount `{}`; give one another target",
                    r.what, r.target
                ));
            }
        }
        if !list.is_empty() {
            out.insert(name.clone(), list);
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn refs(service: &Service, kind: Kind) -> &[Value] {
    match kind {
        Kind::Secret => &service.secrets,
        Kind::Config => &service.configs,
    }
}

/// One entry of a service's `secrets` or `configs`, short (`NAME`) or long
/// (`{source, target, mode}`), joined with its top-level definition.
fn reference(
    compose_path: &str,
    compose: &ComposeFile,
    kind: Kind,
    item: &Value,
    index: usize,
) -> Result<FileRequest, String> {
    let at = format!("{}[{index}]", kind.plural());
    let (name, target, mode) = match item {
        Value::String(s) => (s.clone(), None, None),
        Value::Object(m) => {
            let name = m
                .get("source")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}: the long form needs `source`"))?
                .to_string();
            for key in ["uid", "gid"] {
                if m.get(key).is_some_and(|v| !v.is_null()) {
                    return Err(format!(
                        "{at}.{key}: Marvin cannot set a mounted {}'s owner yet; remove `{key}` and give it a `mode` the container's user can read (e.g. `mode: 0444`)",
                        kind.word()
                    ));
                }
            }
            let target = m.get("target").and_then(Value::as_str).map(str::to_string);
            let mode = m
                .get("mode")
                .filter(|v| !v.is_null())
                .map(|v| {
                    parse_mode(v).ok_or_else(|| {
                        format!(
                            "{at}.mode: `{v}` is not a file mode; write it in octal, e.g. `0440`"
                        )
                    })
                })
                .transpose()?;
            (name, target, mode)
        }
        other => return Err(format!("{at}: `{other}` is neither a name nor a mapping")),
    };
    let defined = match kind {
        Kind::Secret => &compose.secrets,
        Kind::Config => &compose.configs,
    };
    let Some(definition) = defined.get(&name) else {
        return Err(format!(
            "{at}: no top-level {} `{name}`; {}",
            kind.word(),
            crate::suggest::hint(&name, defined.keys().map(String::as_str))
        ));
    };
    let top = format!("{}.{name}", kind.plural());
    let field = |key: &str| {
        definition
            .get(key)
            .filter(|v| !v.is_null())
            .and_then(Value::as_str)
    };
    let source = if let Some(file) = field("file") {
        if file.starts_with('/') || file.starts_with('~') {
            return Err(format!(
                "{top}.file: `{file}` is a host path; Marvin reads secret and config files from git: give a path relative to the compose file, or use `environment:`"
            ));
        }
        let path = relative_to_compose(compose_path, file)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("{top}.file: `{file}` leaves the workspace"))?;
        FileSource::Git { path }
    } else if let Some(var) = field("environment") {
        FileSource::Variable {
            name: var.to_string(),
        }
    } else if let Some(text) = field("content") {
        if kind == Kind::Secret {
            return Err(format!(
                "{top}.content: a secret's value is never written in the compose file (it is in git); use `environment:` and set that variable for Marvin"
            ));
        }
        FileSource::Content {
            text: text.to_string(),
        }
    } else if definition.get("external").and_then(Value::as_bool) == Some(true)
        || definition.get("external").is_some_and(Value::is_object)
    {
        return Err(format!(
            "{top}: an `external` {} lives in a swarm's store, which Marvin does not read; use `file:` (from git) or `environment:` (a variable set for Marvin)",
            kind.word()
        ));
    } else {
        return Err(format!(
            "{top}: say where its value comes from: `file:` (a path in git, relative to the compose file) or `environment:` (a variable set for Marvin){}",
            if kind == Kind::Config {
                " or `content:`"
            } else {
                ""
            }
        ));
    };
    Ok(FileRequest {
        what: format!("{} `{name}`", kind.word()),
        needle: match &source {
            FileSource::Git { .. } => field("file").unwrap_or(&name).to_string(),
            _ => format!("{name}:"),
        },
        source,
        target: kind.target(&name, target.as_deref()),
        read_only: true,
        mode: mode.or((kind == Kind::Secret).then_some(0o444)),
        secret: kind == Kind::Secret,
    })
}

/// A compose file mode: octal digits in a string (`"0440"`), or a number.
/// YAML 1.2 reads `0440` as the decimal 440, so a number whose digits are
/// all octal is read as the octal it was written as; `288` (0o440 in
/// decimal) stays itself.
pub fn parse_mode(value: &Value) -> Option<u32> {
    let mode = match value {
        Value::String(s) => u32::from_str_radix(s.trim().trim_start_matches("0o"), 8).ok()?,
        Value::Number(n) => {
            let n = u32::try_from(n.as_u64()?).ok()?;
            let digits = n.to_string();
            if digits.chars().all(|c| ('0'..='7').contains(&c)) {
                u32::from_str_radix(&digits, 8).ok()?
            } else {
                n
            }
        }
        _ => return None,
    };
    (mode <= 0o7777).then_some(mode)
}

/// The 1-based line of the compose text where `needle` first appears, to
/// point at the mount in a message.
pub fn line_of(text: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    text.lines()
        .position(|l| !l.trim_start().starts_with('#') && l.contains(needle))
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose;

    fn compose(text: &str) -> ComposeFile {
        compose::render(text, "deploy/docker-compose.yml", &BTreeMap::new()).expect("parses")
    }

    fn check(text: &str) -> BTreeMap<String, Vec<FileRequest>> {
        requests("deploy/docker-compose.yml", &compose(text)).expect("no problems")
    }

    fn problems(text: &str) -> Vec<String> {
        requests("deploy/docker-compose.yml", &compose(text))
            .expect_err("problems")
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn relative_bind_mounts_come_from_git_read_only_unless_rw() {
        let r = check(
            "services:\n  web:\n    image: nginx\n    volumes:\n      - ./nginx/nginx.conf:/etc/nginx/conf.d/default.conf:ro\n      - ../app:/var/www/html\n      - ./cache:/cache:rw\n      - data:/data\n      - type: bind\n        source: ./static\n        target: /static\n        read_only: false\nvolumes:\n  data:\n",
        );
        let web = &r["web"];
        let summary: Vec<(&str, &str, bool)> = web
            .iter()
            .map(|f| match &f.source {
                FileSource::Git { path } => (path.as_str(), f.target.as_str(), f.read_only),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "deploy/nginx/nginx.conf",
                    "/etc/nginx/conf.d/default.conf",
                    true
                ),
                ("app", "/var/www/html", true),
                ("deploy/cache", "/cache", false),
                ("deploy/static", "/static", false),
            ]
        );
        assert_eq!(web[0].needle, "./nginx/nginx.conf");
    }

    #[test]
    fn named_volumes_host_paths_and_anonymous_volumes_are_not_files() {
        for v in ["data:/x", "/srv/x:/x", "/x", "~/x:/x", ".env"] {
            assert!(!is_git_volume(v), "{v}");
        }
        for v in ["./x:/x", ".:/src", "..:/up:ro", "../a:/a"] {
            assert!(is_git_volume(v), "{v}");
        }
    }

    #[test]
    fn secrets_and_configs_in_short_and_long_syntax_mount_where_compose_does() {
        let r = check(
            "services:\n  db:\n    image: db\n    secrets:\n      - db_password\n      - source: api_key\n        target: key.txt\n        mode: 0400\n    configs:\n      - app_conf\n      - source: inline\n        target: /etc/inline.conf\n        mode: \"0640\"\nsecrets:\n  db_password:\n    file: ./secrets/db.txt\n  api_key:\n    environment: API_KEY\nconfigs:\n  app_conf:\n    file: ../conf/app.conf\n  inline:\n    content: |\n      a=1\n",
        );
        let db = &r["db"];
        let got: Vec<(&str, &str, Option<u32>, bool)> = db
            .iter()
            .map(|f| (f.what.as_str(), f.target.as_str(), f.mode, f.secret))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "secret `db_password`",
                    "/run/secrets/db_password",
                    Some(0o444),
                    true
                ),
                (
                    "secret `api_key`",
                    "/run/secrets/key.txt",
                    Some(0o400),
                    true
                ),
                ("config `app_conf`", "/app_conf", None, false),
                ("config `inline`", "/etc/inline.conf", Some(0o640), false),
            ]
        );
        assert_eq!(
            db[0].source,
            FileSource::Git {
                path: "deploy/secrets/db.txt".into()
            }
        );
        assert_eq!(
            db[1].source,
            FileSource::Variable {
                name: "API_KEY".into()
            }
        );
        assert_eq!(
            db[2].source,
            FileSource::Git {
                path: "conf/app.conf".into()
            }
        );
        assert_eq!(
            db[3].source,
            FileSource::Content {
                text: "a=1\n".into()
            }
        );
    }

    #[test]
    fn every_problem_is_reported_with_the_fix() {
        let p = problems(
            "services:\n  a:\n    image: a\n    secrets: [db_pasword, ext]\n    configs:\n      - source: c\n        uid: \"100\"\n  b:\n    image: b\n    volumes: [\"../../../x:/x\", \"./y:y\"]\nsecrets:\n  db_password:\n    environment: P\n  ext:\n    external: true\nconfigs:\n  c:\n    content: x\n",
        );
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(
            p[0].contains("service `a`: secrets[0]: no top-level secret `db_pasword`")
                && p[0].contains("db_password"),
            "{}",
            p[0]
        );
        assert!(
            p[1].contains("secrets.ext: an `external` secret"),
            "{}",
            p[1]
        );
        assert!(p[2].contains("configs[0].uid"), "{}", p[2]);
        assert!(
            p[3].contains("service `b`") && p[3].contains("leaves the workspace"),
            "{}",
            p[3]
        );
        assert!(p[4].contains("`y` must be absolute"), "{}", p[4]);
    }

    #[test]
    fn secret_files_come_from_git_not_the_host() {
        let p = problems(
            "services:\n  a:\n    image: a\n    secrets: [h]\nsecrets:\n  h:\n    file: /etc/shadow\n",
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].contains("`/etc/shadow` is a host path"), "{}", p[0]);
    }

    #[test]
    fn two_mounts_on_one_target_are_refused() {
        let p = problems(
            "services:\n  a:\n    image: a\n    volumes: [\"./x:/run/secrets/s\"]\n    secrets: [s]\nsecrets:\n  s:\n    environment: S\n",
        );
        assert!(p[0].contains("both mount `/run/secrets/s`"), "{}", p[0]);
    }

    #[test]
    fn modes_read_as_written() {
        use serde_json::json;
        assert_eq!(parse_mode(&json!("0440")), Some(0o440));
        assert_eq!(parse_mode(&json!(440)), Some(0o440));
        assert_eq!(parse_mode(&json!(288)), Some(0o440));
        assert_eq!(parse_mode(&json!("rw")), None);
        assert_eq!(parse_mode(&json!(99999)), None);
    }

    #[test]
    fn host_paths_name_the_content_and_rw_copies_are_per_environment() {
        let mut f = FileMount {
            id: "blob-abc".into(),
            content: FileContent::Bytes(b"hunter2".to_vec()),
            target: "/x".into(),
            read_only: true,
            mode: Some(0o440),
            secret: true,
        };
        assert_eq!(
            f.host_path("/d/files/", "shop", "dev"),
            "/d/files/blob-abc-0440"
        );
        f.read_only = false;
        f.mode = None;
        assert_eq!(
            f.host_path("/d/files", "shop", "dev"),
            "/d/files/rw/shop-dev/blob-abc"
        );
        assert!(!format!("{f:?}").contains("hunter2"));
    }

    #[test]
    fn the_line_of_a_mount_skips_comments() {
        let text = "services:\n  web:\n    # - ./a.conf:/x\n    volumes:\n      - ./a.conf:/x\n";
        assert_eq!(line_of(text, "./a.conf"), Some(5));
        assert_eq!(line_of(text, "./b.conf"), None);
    }
}
