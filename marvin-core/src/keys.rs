//! Build keys and deploy keys (ARCHITECTURE.md, `keys`): content digests that decide
//! what is rebuilt and what is recreated.
//!
//! Both are SHA-256 over a canonical JSON encoding of their inputs (maps are
//! sorted, so the order keys were written in a compose file never matters).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::engine::{ContainerSpec, LABEL_COMMITS, LABEL_DEPLOY_KEY};

/// Bumped when the meaning of a build key changes, so old images are not reused wrongly.
pub const BUILD_KEY_FORMAT: &str = "marvin-build-key/1";
/// Bumped when the meaning of a deploy key changes.
pub const DEPLOY_KEY_FORMAT: &str = "marvin-deploy-key/1";
/// How many hex digits of the build key go into an image tag.
pub const TAG_KEY_LEN: usize = 20;

/// The digest of everything a service's image is built from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildKey(pub String);

/// The digest of a service's resolved runtime configuration plus its build key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeployKey(pub String);

impl fmt::Display for BuildKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for DeployKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl BuildKey {
    /// The first hex digits, as shown to people and used in tags.
    pub fn short(&self) -> &str {
        &self.0[..TAG_KEY_LEN.min(self.0.len())]
    }
}

/// Everything a build key is made of (ARCHITECTURE.md, `keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildInputs {
    /// Git tree id of the context directory.
    pub context_tree: String,
    /// Tree ids of other repos mounted beneath the context: (relative path, tree id).
    pub context_mounts: Vec<(String, String)>,
    /// Where the Dockerfile goes in the context tar (it may come from outside the context).
    pub dockerfile_path: String,
    /// Git blob id of the Dockerfile.
    pub dockerfile_blob: String,
    /// Build args after interpolation.
    pub args: BTreeMap<String, String>,
    /// Target stage.
    pub target: Option<String>,
    /// Target platform.
    pub platform: Option<String>,
    /// For each `FROM` image built here: that image's build key.
    pub from_keys: BTreeMap<String, BuildKey>,
}

/// The build key of a service's image.
pub fn build_key(inputs: &BuildInputs) -> BuildKey {
    BuildKey(digest(BUILD_KEY_FORMAT, inputs))
}

/// The deploy key of a container: its spec and the build key of its image.
///
/// Left out: the deploy-key label itself, and the record of which commits
/// the container came from (`io.marvin.commits`, `MARVIN_COMMIT_*`) — a
/// commit that changes nothing a service is made of must not recreate it.
pub fn deploy_key(spec: &ContainerSpec, build_key: Option<&BuildKey>) -> DeployKey {
    let mut spec = spec.clone();
    spec.labels.remove(LABEL_DEPLOY_KEY);
    spec.labels.remove(LABEL_COMMITS);
    spec.env.retain(|(k, _)| !k.starts_with("MARVIN_COMMIT_"));
    DeployKey(digest(DEPLOY_KEY_FORMAT, &(spec, build_key)))
}

/// The tag of a service's image: `marvin/<project>-<service>:<first 20 hex>`,
/// lower-cased because Docker repository names allow no capitals.
pub fn image_tag(project: &str, service: &str, key: &BuildKey) -> String {
    format!("marvin/{}-{}:{}", project, service, key.short()).to_lowercase()
}

/// The tag of a service's image in a registry (swarm environments):
/// `<registry>/marvin/<project>-<service>:<first 20 hex>`, lower-cased.
pub fn registry_image_tag(registry: &str, project: &str, service: &str, key: &BuildKey) -> String {
    format!(
        "{}/{}",
        registry.trim_end_matches('/').to_lowercase(),
        image_tag(project, service, key)
    )
}

fn digest<T: Serialize>(format: &str, value: &T) -> String {
    let json = serde_json::to_vec(value).expect("plain data always encodes as JSON");
    let mut hasher = Sha256::new();
    hasher.update(format.as_bytes());
    hasher.update([0]);
    hasher.update(&json);
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> BuildInputs {
        BuildInputs {
            context_tree: "a".repeat(40),
            context_mounts: vec![],
            dockerfile_path: "Dockerfile".into(),
            dockerfile_blob: "b".repeat(40),
            args: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]),
            target: None,
            platform: None,
            from_keys: BTreeMap::new(),
        }
    }

    #[test]
    fn same_inputs_same_key() {
        assert_eq!(build_key(&inputs()), build_key(&inputs()));
        assert_eq!(build_key(&inputs()).0.len(), 64);
    }

    #[test]
    fn every_input_changes_the_key() {
        let base = build_key(&inputs());
        type Change = Box<dyn Fn(&mut BuildInputs)>;
        let changes: Vec<Change> = vec![
            Box::new(|i| i.context_tree = "c".repeat(40)),
            Box::new(|i| i.context_mounts.push(("fe".into(), "d".repeat(40)))),
            Box::new(|i| i.dockerfile_path = "other/Dockerfile".into()),
            Box::new(|i| i.dockerfile_blob = "e".repeat(40)),
            Box::new(|i| {
                i.args.insert("A".into(), "2".into());
            }),
            Box::new(|i| i.target = Some("prod".into())),
            Box::new(|i| i.platform = Some("linux/arm64".into())),
            Box::new(|i| {
                i.from_keys.insert("base".into(), BuildKey("f".repeat(64)));
            }),
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut i = inputs();
            change(&mut i);
            assert_ne!(build_key(&i), base, "change {n} did not change the key");
        }
    }

    #[test]
    fn arg_order_does_not_matter() {
        let mut reordered = inputs();
        reordered.args = BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())]);
        assert_eq!(build_key(&reordered), build_key(&inputs()));
    }

    #[test]
    fn tags_are_lower_case_and_short() {
        let key = BuildKey("0123456789abcdef0123456789abcdef".into());
        assert_eq!(
            image_tag("CloudMatrix", "systemManagementServer", &key),
            "marvin/cloudmatrix-systemmanagementserver:0123456789abcdef0123"
        );
    }

    #[test]
    fn registry_tags_prefix_the_registry() {
        let key = BuildKey("0123456789abcdef0123456789abcdef".into());
        assert_eq!(
            registry_image_tag("127.0.0.1:5000/", "Shop", "web", &key),
            "127.0.0.1:5000/marvin/shop-web:0123456789abcdef0123"
        );
    }

    #[test]
    fn deploy_key_ignores_its_own_label_and_follows_the_build_key() {
        let mut spec = ContainerSpec {
            name: "p-dev-web".into(),
            image: "marvin/p-web:1".into(),
            ..Default::default()
        };
        let k1 = deploy_key(&spec, Some(&BuildKey("1".into())));
        spec.labels.insert(LABEL_DEPLOY_KEY.into(), k1.0.clone());
        assert_eq!(deploy_key(&spec, Some(&BuildKey("1".into()))), k1);
        assert_ne!(deploy_key(&spec, Some(&BuildKey("2".into()))), k1);
        spec.env
            .push(("MARVIN_COMMIT_BACKEND".into(), "abc".into()));
        spec.labels
            .insert(LABEL_COMMITS.into(), "backend=abc".into());
        assert_eq!(
            deploy_key(&spec, Some(&BuildKey("1".into()))),
            k1,
            "commits alone must not recreate"
        );
        spec.env.push(("A".into(), "1".into()));
        assert_ne!(deploy_key(&spec, Some(&BuildKey("1".into()))), k1);
    }
}
