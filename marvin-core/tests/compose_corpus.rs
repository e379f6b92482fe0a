//! Every compose file of the corpus in `tests/corpus/compose` (real files from docker/awesome-compose)
//! renders: parses, interpolates, validates against the compose schema and
//! reads into the model.

use std::collections::BTreeMap;
use std::path::PathBuf;

use marvin_core::compose;

fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/compose");
    assert!(
        dir.is_dir(),
        "the compose corpus is missing: {} (expected in marvin-core/tests/corpus/compose)",
        dir.display()
    );
    dir
}

/// The variables the corpus files interpolate.
fn vars() -> BTreeMap<String, String> {
    [
        ("TIMEZONE", "Europe/Berlin"),
        ("PIHOLE_PW", "secret"),
        ("PIHOLE_ROUTER_IP", "192.168.1.1"),
        ("PIHOLE_NETWORK_DOMAIN", "lan"),
        ("PIHOLE_REVERSE_DNS", "192.168.1.0/24"),
        ("PIHOLE_HOST_IP", "192.168.1.2"),
        ("PIHOLE_HOST_IPV6", "fe80::2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn every_corpus_file_parses_and_validates() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus directory is readable")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected the 20 corpus files, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().expect("a file name").to_string_lossy();
        let text = std::fs::read_to_string(path).expect("a readable corpus file");
        match compose::render(&text, &name, &vars()) {
            Ok(file) => {
                assert!(!file.services.is_empty(), "{name}: no services read");
                // The only warning a corpus file may give: its `container_name` is ignored.
                let other: Vec<&String> = file
                    .warnings
                    .iter()
                    .filter(|w| !w.contains("container_name"))
                    .collect();
                assert!(other.is_empty(), "{name}: {other:?}");
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    assert!(
        failures.is_empty(),
        "corpus files rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn corpus_file_without_its_variables_warns_about_each_one() {
    let path = corpus_dir().join("pihole-cloudflared-DoH.yaml");
    let text = std::fs::read_to_string(path).expect("a readable corpus file");
    let file = compose::render(&text, "pihole.yaml", &BTreeMap::new()).expect("renders");
    assert_eq!(
        file.services["pihole"].environment["TZ"].as_deref(),
        Some(""),
        "an unset variable becomes an empty string"
    );
    assert!(
        file.warnings.contains(
            &"pihole.yaml: services.pihole.environment[0]: variable `TIMEZONE` is not set; using an empty string"
                .to_string()
        ),
        "{:?}",
        file.warnings
    );
}

#[test]
fn corpus_fields_read_as_written() {
    let path = corpus_dir().join("nginx-golang-postgres.yaml");
    let text = std::fs::read_to_string(path).expect("a readable corpus file");
    let file = compose::render(&text, "ngp.yaml", &vars()).expect("renders");
    let backend = &file.services["backend"];
    let build = backend.build.as_ref().expect("backend is built");
    assert_eq!(build.context, "backend");
    assert_eq!(build.dockerfile, "Dockerfile");
    assert_eq!(build.target.as_deref(), Some("builder"));
    assert_eq!(backend.depends_on["db"].condition, "service_healthy");
    let proxy = &file.services["proxy"];
    assert_eq!(
        proxy.volumes,
        vec!["./proxy/nginx.conf:/etc/nginx/conf.d/default.conf:ro"]
    );
    let db = &file.services["db"];
    let health = db.healthcheck.as_ref().expect("db has a healthcheck");
    assert_eq!(health.test, vec!["CMD", "pg_isready"]);
    assert_eq!(health.retries, Some(5));
    assert_eq!(db.expose, vec!["5432"]);
    assert_eq!(db.user.as_deref(), Some("postgres"));
    assert!(file.volumes.contains_key("db-data"));
}
