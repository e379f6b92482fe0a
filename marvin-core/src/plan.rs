//! The plan, as plain data: which images to build or reuse, which containers
//! to create, recreate, keep or remove (ARCHITECTURE.md, `plan`).
//!
//! Pure functions of what is wanted and what is observed; the executor
//! carries a plan out, `marvin plan` prints one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::keys::{BuildKey, DeployKey};

/// Build or reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildAction {
    /// No image with this key exists: build it.
    Build,
    /// An image with this key exists: use it.
    Reuse,
}

/// Why a service's image is built or reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BuildReason {
    /// No image carries this key yet.
    NewKey,
    /// An image with this key is already present.
    KeyPresent,
    /// `--force` asked for a rebuild.
    Forced,
    /// Not on this host, but the registry has it (swarm): pulled, not built.
    InRegistry,
}

impl BuildReason {
    /// The reason as people read it.
    pub fn describe(self) -> &'static str {
        match self {
            BuildReason::NewKey => "new key",
            BuildReason::KeyPresent => "key already present",
            BuildReason::Forced => "forced",
            BuildReason::InRegistry => "key in the registry",
        }
    }
}

/// One service's image in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildStep {
    /// Compose service name.
    pub service: String,
    /// Build or reuse.
    pub action: BuildAction,
    /// The build key.
    pub key: BuildKey,
    /// The image tag.
    pub image: String,
    /// Why.
    pub reason: BuildReason,
}

/// What happens to one service's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployAction {
    /// No container yet: create it.
    Create,
    /// A container with another deploy key runs: replace it.
    Recreate,
    /// The running container already has this deploy key.
    Keep,
    /// A container of this environment whose service no longer exists.
    Remove,
}

/// One container in the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployStep {
    /// Compose service name.
    pub service: String,
    /// Create, recreate, keep or remove.
    pub action: DeployAction,
}

/// A service whose image is wanted, with its key and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedImage {
    /// Compose service name.
    pub service: String,
    /// The build key.
    pub key: BuildKey,
    /// The image tag.
    pub image: String,
}

/// What the engine holds for one service of the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedService {
    /// The deploy key label of its container (None: a container without one).
    pub deploy_key: Option<DeployKey>,
    /// Whether the container is running (a stopped container is recreated).
    pub running: bool,
}

/// For each wanted image: build when no image carries its key (or when
/// `force` names it), reuse otherwise. Two services with the same key are
/// built once: the second reuses the first.
pub fn plan_builds(
    wanted: &[WantedImage],
    existing: &BTreeSet<BuildKey>,
    force: &BTreeSet<String>,
) -> Vec<BuildStep> {
    let mut building: BTreeSet<&BuildKey> = BTreeSet::new();
    wanted
        .iter()
        .map(|w| {
            let (action, reason) = if force.contains(&w.service) {
                (BuildAction::Build, BuildReason::Forced)
            } else if existing.contains(&w.key) || building.contains(&w.key) {
                (BuildAction::Reuse, BuildReason::KeyPresent)
            } else {
                (BuildAction::Build, BuildReason::NewKey)
            };
            if action == BuildAction::Build {
                building.insert(&w.key);
            }
            BuildStep {
                service: w.service.clone(),
                action,
                key: w.key.clone(),
                image: w.image.clone(),
                reason,
            }
        })
        .collect()
}

/// For a swarm environment: a step that would build a new key reuses the
/// image instead when the registry already holds its tag (`in_registry`), so
/// a fresh build host never rebuilds what another one pushed. Forced builds stay.
pub fn reuse_from_registry(builds: &[BuildStep], in_registry: &BTreeSet<String>) -> Vec<BuildStep> {
    builds
        .iter()
        .map(|b| {
            let mut b = b.clone();
            if b.action == BuildAction::Build
                && b.reason == BuildReason::NewKey
                && in_registry.contains(&b.image)
            {
                b.action = BuildAction::Reuse;
                b.reason = BuildReason::InRegistry;
            }
            b
        })
        .collect()
}

/// Compare wanted deploy keys with observed containers: keep what matches and
/// runs, recreate what differs or stopped, create what is missing, remove
/// what is no longer wanted. Sorted by service name, removals last.
pub fn plan_deploy(
    desired: &BTreeMap<String, DeployKey>,
    observed: &BTreeMap<String, ObservedService>,
) -> Vec<DeployStep> {
    let mut steps: Vec<DeployStep> = desired
        .iter()
        .map(|(service, key)| {
            let action = match observed.get(service) {
                None => DeployAction::Create,
                Some(o) if o.running && o.deploy_key.as_ref() == Some(key) => DeployAction::Keep,
                Some(_) => DeployAction::Recreate,
            };
            DeployStep {
                service: service.clone(),
                action,
            }
        })
        .collect();
    steps.extend(
        observed
            .keys()
            .filter(|s| !desired.contains_key(*s))
            .map(|service| DeployStep {
                service: service.clone(),
                action: DeployAction::Remove,
            }),
    );
    steps
}

/// Counts for a summary line: built, reused, created+recreated, kept, removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlanCounts {
    /// Images to build.
    pub build: usize,
    /// Images reused.
    pub reuse: usize,
    /// Containers created.
    pub create: usize,
    /// Containers recreated.
    pub recreate: usize,
    /// Containers kept as they are.
    pub keep: usize,
    /// Containers removed.
    pub remove: usize,
}

/// Count the steps of a plan.
pub fn counts(builds: &[BuildStep], deploy: &[DeployStep]) -> PlanCounts {
    let mut c = PlanCounts::default();
    for b in builds {
        match b.action {
            BuildAction::Build => c.build += 1,
            BuildAction::Reuse => c.reuse += 1,
        }
    }
    for d in deploy {
        match d.action {
            DeployAction::Create => c.create += 1,
            DeployAction::Recreate => c.recreate += 1,
            DeployAction::Keep => c.keep += 1,
            DeployAction::Remove => c.remove += 1,
        }
    }
    c
}

/// Order services for deployment: each after what it depends on, in waves
/// whose members do not depend on each other and can be started in parallel.
/// A dependency cycle is an error naming the services in it.
pub fn deploy_waves(
    depends: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Vec<Vec<String>>, String> {
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = depends
        .iter()
        .map(|(s, deps)| {
            let known: BTreeSet<&str> = deps
                .iter()
                .map(String::as_str)
                .filter(|d| depends.contains_key(*d) && *d != s)
                .collect();
            (s.as_str(), known)
        })
        .collect();
    let mut waves = Vec::new();
    while !remaining.is_empty() {
        let ready: Vec<&str> = remaining
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(s, _)| *s)
            .collect();
        if ready.is_empty() {
            let cycle: Vec<&str> = remaining.keys().copied().collect();
            return Err(format!(
                "depends_on has a cycle among: {}; remove one of these dependencies",
                cycle.join(", ")
            ));
        }
        for s in &ready {
            remaining.remove(s);
        }
        for deps in remaining.values_mut() {
            for s in &ready {
                deps.remove(s);
            }
        }
        waves.push(ready.into_iter().map(str::to_string).collect());
    }
    Ok(waves)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> BuildKey {
        BuildKey(s.to_string())
    }

    fn wanted(service: &str, k: &str) -> WantedImage {
        WantedImage {
            service: service.into(),
            key: key(k),
            image: format!("marvin/p-{service}:{k}"),
        }
    }

    #[test]
    fn present_keys_are_reused_and_new_keys_built() {
        let existing = BTreeSet::from([key("a")]);
        let plan = plan_builds(
            &[wanted("web", "a"), wanted("api", "b")],
            &existing,
            &BTreeSet::new(),
        );
        assert_eq!(plan[0].action, BuildAction::Reuse);
        assert_eq!(plan[0].reason, BuildReason::KeyPresent);
        assert_eq!(plan[1].action, BuildAction::Build);
        assert_eq!(plan[1].reason, BuildReason::NewKey);
    }

    #[test]
    fn one_key_wanted_twice_is_built_once() {
        let plan = plan_builds(
            &[wanted("a", "k"), wanted("b", "k")],
            &BTreeSet::new(),
            &BTreeSet::new(),
        );
        assert_eq!(counts(&plan, &[]).build, 1);
        assert_eq!(plan[1].action, BuildAction::Reuse);
    }

    #[test]
    fn force_rebuilds_a_present_key() {
        let plan = plan_builds(
            &[wanted("web", "a")],
            &BTreeSet::from([key("a")]),
            &BTreeSet::from(["web".into()]),
        );
        assert_eq!(
            (plan[0].action, plan[0].reason),
            (BuildAction::Build, BuildReason::Forced)
        );
    }

    #[test]
    fn an_image_in_the_registry_is_reused_not_built_unless_forced() {
        let builds = vec![
            BuildStep {
                service: "web".into(),
                action: BuildAction::Build,
                key: key("a"),
                image: "r:5000/marvin/p-web:a".into(),
                reason: BuildReason::NewKey,
            },
            BuildStep {
                service: "api".into(),
                action: BuildAction::Build,
                key: key("b"),
                image: "r:5000/marvin/p-api:b".into(),
                reason: BuildReason::Forced,
            },
            BuildStep {
                service: "db".into(),
                action: BuildAction::Build,
                key: key("c"),
                image: "r:5000/marvin/p-db:c".into(),
                reason: BuildReason::NewKey,
            },
        ];
        let in_registry = BTreeSet::from([
            "r:5000/marvin/p-web:a".to_string(),
            "r:5000/marvin/p-api:b".to_string(),
        ]);
        let got: Vec<(BuildAction, BuildReason)> = reuse_from_registry(&builds, &in_registry)
            .iter()
            .map(|b| (b.action, b.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                (BuildAction::Reuse, BuildReason::InRegistry),
                (BuildAction::Build, BuildReason::Forced),
                (BuildAction::Build, BuildReason::NewKey),
            ]
        );
    }

    #[test]
    fn deploy_diff_keeps_recreates_creates_and_removes() {
        let dk = |s: &str| DeployKey(s.into());
        let desired = BTreeMap::from([
            ("same".into(), dk("1")),
            ("changed".into(), dk("2")),
            ("new".into(), dk("3")),
            ("stopped".into(), dk("4")),
        ]);
        let observed = BTreeMap::from([
            (
                "same".into(),
                ObservedService {
                    deploy_key: Some(dk("1")),
                    running: true,
                },
            ),
            (
                "changed".into(),
                ObservedService {
                    deploy_key: Some(dk("x")),
                    running: true,
                },
            ),
            (
                "stopped".into(),
                ObservedService {
                    deploy_key: Some(dk("4")),
                    running: false,
                },
            ),
            (
                "orphan".into(),
                ObservedService {
                    deploy_key: Some(dk("5")),
                    running: true,
                },
            ),
        ]);
        let plan = plan_deploy(&desired, &observed);
        let got: Vec<(&str, DeployAction)> = plan
            .iter()
            .map(|s| (s.service.as_str(), s.action))
            .collect();
        assert_eq!(
            got,
            vec![
                ("changed", DeployAction::Recreate),
                ("new", DeployAction::Create),
                ("same", DeployAction::Keep),
                ("stopped", DeployAction::Recreate),
                ("orphan", DeployAction::Remove),
            ]
        );
    }

    #[test]
    fn waves_follow_depends_on_and_group_independent_services() {
        let deps = BTreeMap::from([
            ("db".to_string(), BTreeSet::new()),
            ("cache".to_string(), BTreeSet::new()),
            (
                "api".to_string(),
                BTreeSet::from(["db".to_string(), "cache".to_string()]),
            ),
            (
                "web".to_string(),
                BTreeSet::from(["api".to_string(), "external".to_string()]),
            ),
        ]);
        assert_eq!(
            deploy_waves(&deps).unwrap(),
            vec![vec!["cache", "db"], vec!["api"], vec!["web"]]
        );
    }

    #[test]
    fn a_dependency_cycle_is_named() {
        let deps = BTreeMap::from([
            ("a".to_string(), BTreeSet::from(["b".to_string()])),
            ("b".to_string(), BTreeSet::from(["a".to_string()])),
            ("c".to_string(), BTreeSet::new()),
        ]);
        assert_eq!(
            deploy_waves(&deps).unwrap_err(),
            "depends_on has a cycle among: a, b; remove one of these dependencies"
        );
    }
}
