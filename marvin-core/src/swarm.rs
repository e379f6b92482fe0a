//! Docker Swarm, decided as data (docs/swarm.md): the swarm service a desired
//! container becomes, how it rolls out, and what the service and its tasks
//! say about a rollout in progress. Pure: the engine's answers come in as
//! [`ObservedSwarmService`] and [`ObservedTask`]; `engine::swarm` does the I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::desired::DesiredContainer;
use crate::engine::{ContainerSpec, LABEL_DEPLOY_KEY, Mount, ObservedSwarmService, ObservedTask};
use crate::keys::DeployKey;

/// Monitor period after a task without a health check starts (Docker's default).
const MONITOR_NS: i64 = 5_000_000_000;
/// Bounds of the monitor period of a health-checked task.
const MONITOR_MIN_NS: i64 = 2_000_000_000;
const MONITOR_MAX_NS: i64 = 30_000_000_000;

/// Which task goes first when a replica is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    /// The new task starts, and the old one stops once the new one runs: no gap.
    StartFirst,
    /// The old task stops first: two tasks never share a volume.
    StopFirst,
}

/// How Swarm replaces a service's tasks: one at a time, watched for
/// `monitor_ns` after each starts, rolled back on the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// Which task goes first.
    pub order: UpdateOrder,
    /// How long a new task is watched after it starts (nanoseconds).
    pub monitor_ns: i64,
    /// Tasks replaced at once.
    pub parallelism: i64,
}

/// A swarm service as Marvin wants it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwarmServiceSpec {
    /// Compose service name.
    pub service: String,
    /// Swarm service name: `<project>-<env>-<service>` (the container name of the single engine).
    pub name: String,
    /// Replicated tasks wanted.
    pub replicas: u64,
    /// The task's container: image, command, env, labels (with the deploy key),
    /// network and aliases, mounts, health check, limits.
    pub container: ContainerSpec,
    /// How tasks are replaced.
    pub update: UpdatePolicy,
}

/// The swarm service a desired container becomes.
pub fn service_spec(desired: &DesiredContainer) -> SwarmServiceSpec {
    SwarmServiceSpec {
        service: desired.service.clone(),
        name: desired.spec.name.clone(),
        replicas: desired.spec.replicas.unwrap_or(1),
        container: desired.spec.clone(),
        update: update_policy(&desired.spec),
    }
}

/// Start-first unless the service mounts a volume or a host path (two tasks
/// must not write one database); a health-checked task is watched for two
/// check intervals after it turns healthy, others for Docker's 5s.
pub fn update_policy(spec: &ContainerSpec) -> UpdatePolicy {
    let shares_storage = spec
        .volumes
        .iter()
        .any(|m| matches!(m, Mount::Named { .. } | Mount::Bind { .. }));
    let monitor_ns = match &spec.healthcheck {
        Some(h) => {
            (h.interval_ns.unwrap_or(30_000_000_000) * 2).clamp(MONITOR_MIN_NS, MONITOR_MAX_NS)
        }
        None => MONITOR_NS,
    };
    UpdatePolicy {
        order: if shares_storage {
            UpdateOrder::StopFirst
        } else {
            UpdateOrder::StartFirst
        },
        monitor_ns,
        parallelism: 1,
    }
}

/// Where a service's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Still going: what it waits for.
    Waiting(String),
    /// Every wanted replica runs the new spec, and Swarm's update (if any) completed.
    Done,
    /// Swarm's update failed and it rolled the service back to its previous spec.
    RolledBack {
        /// Why, from the failed task's status (or the update's message).
        reason: String,
    },
    /// A new service's task failed, or an update stopped without a rollback.
    Failed {
        /// Why, from the failed task's status (or the update's message).
        reason: String,
    },
}

/// Read a rollout from the service and its tasks. `key` is the deploy key
/// being rolled out; `update_before` the update status's start time seen
/// before this change (an older status says nothing about this one);
/// `created`: the service is new, so a failed task is a failure at once
/// (there is nothing to roll back to).
pub fn rollout(
    service: &ObservedSwarmService,
    tasks: &[ObservedTask],
    key: &DeployKey,
    replicas: u64,
    update_before: Option<&str>,
    created: bool,
) -> Rollout {
    let ours = |t: &&ObservedTask| t.deploy_key.as_deref() == Some(key.0.as_str());
    let failed_reason = || {
        tasks
            .iter()
            .filter(ours)
            .filter(|t| t.failed())
            .max_by(|a, b| a.timestamp.cmp(&b.timestamp))
            .map(ObservedTask::reason)
    };
    let update = service
        .update_state
        .as_deref()
        .filter(|_| service.update_started.as_deref() != update_before);
    let message = || service.update_message.clone().unwrap_or_default();
    match update {
        Some("rollback_completed") | Some("rollback_paused") => {
            return Rollout::RolledBack {
                reason: failed_reason().unwrap_or_else(message),
            };
        }
        Some("rollback_started") => {
            return Rollout::Waiting("swarm is rolling the update back".into());
        }
        Some("paused") => {
            return Rollout::Failed {
                reason: failed_reason().unwrap_or_else(message),
            };
        }
        _ => {}
    }
    if created && let Some(reason) = failed_reason() {
        return Rollout::Failed { reason };
    }
    let running = tasks
        .iter()
        .filter(ours)
        .filter(|t| t.desired_running && t.state == "running")
        .count() as u64;
    if update == Some("updating") {
        return Rollout::Waiting(format!(
            "swarm is updating ({running}/{replicas} new tasks running)"
        ));
    }
    if running >= replicas {
        Rollout::Done
    } else {
        let states: BTreeMap<&str, usize> =
            tasks.iter().filter(ours).fold(BTreeMap::new(), |mut m, t| {
                *m.entry(t.state.as_str()).or_default() += 1;
                m
            });
        let states: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        Rollout::Waiting(format!(
            "{running}/{replicas} tasks running ({})",
            if states.is_empty() {
                "none scheduled yet".to_string()
            } else {
                states.join(", ")
            }
        ))
    }
}

/// The deploy key a service carries (its `io.marvin.deploy-key` label).
pub fn deploy_key_of(service: &ObservedSwarmService) -> Option<DeployKey> {
    service
        .labels
        .get(LABEL_DEPLOY_KEY)
        .map(|k| DeployKey(k.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Health;

    fn desired(
        replicas: Option<u64>,
        volumes: Vec<Mount>,
        health: Option<Health>,
    ) -> DesiredContainer {
        DesiredContainer {
            service: "api".into(),
            spec: ContainerSpec {
                name: "shop-prod-api".into(),
                image: "r:5000/marvin/shop-api:0123".into(),
                volumes,
                healthcheck: health,
                replicas,
                ..Default::default()
            },
            deploy_key: DeployKey("k1".into()),
            build_key: None,
            files: Vec::new(),
        }
    }

    fn service(state: Option<&str>, started: Option<&str>) -> ObservedSwarmService {
        ObservedSwarmService {
            id: "s1".into(),
            name: "shop-prod-api".into(),
            service: "api".into(),
            version: 7,
            update_state: state.map(str::to_string),
            update_started: started.map(str::to_string),
            update_message: Some("update rolled back due to failure".into()),
            ..Default::default()
        }
    }

    fn task(
        key: &str,
        state: &str,
        desired_running: bool,
        err: Option<&str>,
        at: &str,
    ) -> ObservedTask {
        ObservedTask {
            id: format!("t-{key}-{state}-{at}"),
            slot: Some(1),
            state: state.into(),
            desired_running,
            deploy_key: Some(key.into()),
            message: state.into(),
            error: err.map(str::to_string),
            timestamp: at.into(),
        }
    }

    #[test]
    fn a_desired_container_becomes_a_service_with_its_replicas_and_name() {
        let spec = service_spec(&desired(Some(3), vec![], None));
        assert_eq!((spec.name.as_str(), spec.replicas), ("shop-prod-api", 3));
        assert_eq!(spec.container.image, "r:5000/marvin/shop-api:0123");
        assert_eq!(service_spec(&desired(None, vec![], None)).replicas, 1);
    }

    #[test]
    fn services_with_volumes_stop_first_and_others_start_first() {
        let volume = Mount::Named {
            name: "shop-prod-data".into(),
            target: "/data".into(),
            read_only: false,
        };
        assert_eq!(
            update_policy(&desired(None, vec![volume], None).spec).order,
            UpdateOrder::StopFirst
        );
        let anonymous = Mount::Anonymous {
            target: "/tmp".into(),
        };
        assert_eq!(
            update_policy(&desired(None, vec![anonymous], None).spec).order,
            UpdateOrder::StartFirst
        );
    }

    #[test]
    fn the_monitor_period_follows_the_health_check_within_bounds() {
        let health = |interval_s: i64| Health {
            test: vec!["CMD".into(), "true".into()],
            interval_ns: Some(interval_s * 1_000_000_000),
            timeout_ns: None,
            start_period_ns: None,
            retries: Some(3),
        };
        let monitor = |h| update_policy(&desired(None, vec![], h).spec).monitor_ns / 1_000_000_000;
        assert_eq!(monitor(None), 5);
        assert_eq!(monitor(Some(health(1))), 2);
        assert_eq!(monitor(Some(health(5))), 10);
        assert_eq!(monitor(Some(health(60))), 30);
    }

    #[test]
    fn a_rollout_is_done_when_every_replica_runs_the_new_key() {
        let tasks = vec![
            task("k1", "running", true, None, "2"),
            task("k0", "shutdown", false, None, "1"),
        ];
        let key = DeployKey("k1".into());
        assert_eq!(
            rollout(&service(None, None), &tasks, &key, 1, None, false),
            Rollout::Done
        );
        assert!(matches!(
            rollout(&service(None, None), &tasks, &key, 3, None, false),
            Rollout::Waiting(w) if w.starts_with("1/3 tasks running")
        ));
    }

    #[test]
    fn an_update_in_progress_is_waited_for_even_when_tasks_run() {
        let tasks = vec![task("k1", "running", true, None, "2")];
        let key = DeployKey("k1".into());
        let s = service(Some("updating"), Some("t2"));
        assert!(matches!(
            rollout(&s, &tasks, &key, 1, None, false),
            Rollout::Waiting(_)
        ));
        let s = service(Some("completed"), Some("t2"));
        assert_eq!(rollout(&s, &tasks, &key, 1, None, false), Rollout::Done);
    }

    #[test]
    fn a_rollback_is_reported_with_the_failed_tasks_reason() {
        let tasks = vec![
            task("k1", "failed", false, Some("task: non-zero exit (1)"), "1"),
            task("k1", "failed", false, Some("unhealthy container"), "3"),
            task("k0", "running", true, None, "4"),
        ];
        let key = DeployKey("k1".into());
        let s = service(Some("rollback_started"), Some("t2"));
        assert!(matches!(
            rollout(&s, &tasks, &key, 1, None, false),
            Rollout::Waiting(_)
        ));
        let s = service(Some("rollback_completed"), Some("t2"));
        assert_eq!(
            rollout(&s, &tasks, &key, 1, None, false),
            Rollout::RolledBack {
                reason: "unhealthy container".into()
            }
        );
    }

    #[test]
    fn an_old_update_status_says_nothing_about_this_rollout() {
        let tasks = vec![task("k1", "running", true, None, "2")];
        let key = DeployKey("k1".into());
        let s = service(Some("rollback_completed"), Some("t1"));
        assert_eq!(
            rollout(&s, &tasks, &key, 1, Some("t1"), false),
            Rollout::Done
        );
    }

    #[test]
    fn a_new_service_fails_on_its_first_failed_task() {
        let tasks = vec![task(
            "k1",
            "failed",
            false,
            Some("task: non-zero exit (3)"),
            "1",
        )];
        let key = DeployKey("k1".into());
        assert_eq!(
            rollout(&service(None, None), &tasks, &key, 1, None, true),
            Rollout::Failed {
                reason: "task: non-zero exit (3)".into()
            }
        );
        assert!(matches!(
            rollout(&service(None, None), &tasks, &key, 1, None, false),
            Rollout::Waiting(_)
        ));
    }
}
