//! Things that need a person's attention (the talk's "message hub", issue
//! #5): a deployed container that exits unexpectedly, restarts repeatedly or
//! turns unhealthy is reported to its environment's channels once per
//! incident, and once more when it recovers. Pure: observed containers in,
//! alerts out; the caller polls the engine and posts.

use std::collections::{BTreeMap, HashMap};

use crate::engine::{ContainerState, HealthState, LABEL_ROLE, ObservedContainer};

/// How many restarts since a container was first seen count as "restarts
/// repeatedly".
pub const RESTARTS: i64 = 3;

/// One message for an environment's channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The environment.
    pub env: String,
    /// The service.
    pub service: String,
    /// Whether it is the recovery of an earlier incident.
    pub recovered: bool,
    /// The sentence to post.
    pub text: String,
}

#[derive(Debug, Default)]
struct Seen {
    /// The container id the restart baseline belongs to.
    id: String,
    /// Its restart count when first seen.
    restarts_at_start: i64,
    /// The open incident, in words.
    trouble: Option<String>,
}

/// The incidents of every environment, as last observed.
#[derive(Debug, Default)]
pub struct Attention {
    seen: HashMap<(String, String), Seen>,
}

/// What is wrong with a container now, in words; `None`: nothing.
fn trouble(c: &ObservedContainer, restarts_at_start: i64) -> Option<String> {
    let restarts = c.restart_count - restarts_at_start;
    match &c.state {
        ContainerState::Exited { code } => return Some(format!("exited with code {code}")),
        ContainerState::Restarting => {
            return Some(format!("keeps restarting ({} restarts)", c.restart_count));
        }
        ContainerState::Other(s) => return Some(format!("is {s}")),
        ContainerState::Created | ContainerState::Running | ContainerState::Paused => {}
    }
    if restarts >= RESTARTS {
        return Some(format!("restarted {restarts} times"));
    }
    if c.health == Some(HealthState::Unhealthy) {
        return Some("is unhealthy".into());
    }
    None
}

impl Attention {
    /// Nothing seen yet.
    pub fn new() -> Attention {
        Attention::default()
    }

    /// Take one look at an environment's containers. `busy`: a job is
    /// working on it (containers are being replaced on purpose), so nothing
    /// is judged until it ends. Returns the alerts to post.
    pub fn observe(
        &mut self,
        env: &str,
        containers: &[ObservedContainer],
        busy: bool,
    ) -> Vec<Alert> {
        if busy {
            return Vec::new();
        }
        let services: BTreeMap<&str, &ObservedContainer> = containers
            .iter()
            .filter(|c| !c.service.is_empty())
            .filter(|c| c.labels.get(LABEL_ROLE).is_none_or(|r| r != "task"))
            .map(|c| (c.service.as_str(), c))
            .collect();
        let mut alerts = Vec::new();
        for (service, c) in &services {
            let key = (env.to_string(), service.to_string());
            let seen = self.seen.entry(key).or_default();
            if seen.id != c.id {
                // A new container (a deploy replaced it): a fresh baseline.
                seen.id = c.id.clone();
                seen.restarts_at_start = c.restart_count;
            }
            let now = trouble(c, seen.restarts_at_start);
            match (&seen.trouble, &now) {
                (None, Some(what)) => alerts.push(Alert {
                    env: env.to_string(),
                    service: service.to_string(),
                    recovered: false,
                    text: format!("⚠️ {env}: {service} {what}"),
                }),
                (Some(_), None) => alerts.push(Alert {
                    env: env.to_string(),
                    service: service.to_string(),
                    recovered: true,
                    text: format!("✅ {env}: {service} is running again"),
                }),
                _ => {}
            }
            seen.trouble = now;
        }
        // A service whose container is gone (removed by a deploy) has no incident.
        self.seen
            .retain(|(e, s), _| e != env || services.contains_key(s.as_str()));
        alerts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(service: &str, id: &str, state: ContainerState, restarts: i64) -> ObservedContainer {
        ObservedContainer {
            id: id.into(),
            name: format!("shop-dev-{service}"),
            service: service.into(),
            labels: BTreeMap::new(),
            image: "img".into(),
            state,
            health: None,
            restart_count: restarts,
        }
    }

    #[test]
    fn an_exit_is_reported_once_and_its_recovery_once() {
        let mut a = Attention::new();
        let up = [
            c("web", "1", ContainerState::Running, 0),
            c("api", "2", ContainerState::Running, 0),
        ];
        assert!(a.observe("dev", &up, false).is_empty());
        let down = [
            c("web", "1", ContainerState::Exited { code: 137 }, 0),
            up[1].clone(),
        ];
        let alerts = a.observe("dev", &down, false);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].text, "⚠️ dev: web exited with code 137");
        assert!(
            a.observe("dev", &down, false).is_empty(),
            "once per incident"
        );
        assert!(a.observe("dev", &down, false).is_empty());
        // A build replaces it (busy meanwhile: nothing judged).
        assert!(a.observe("dev", &[], true).is_empty());
        let back = [c("web", "3", ContainerState::Running, 0), up[1].clone()];
        let alerts = a.observe("dev", &back, false);
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0].recovered);
        assert_eq!(alerts[0].text, "✅ dev: web is running again");
        assert!(a.observe("dev", &back, false).is_empty());
    }

    #[test]
    fn repeated_restarts_and_unhealthy_are_incidents_too() {
        let mut a = Attention::new();
        assert!(
            a.observe("dev", &[c("web", "1", ContainerState::Running, 5)], false)
                .is_empty()
        );
        assert!(
            a.observe("dev", &[c("web", "1", ContainerState::Running, 7)], false)
                .is_empty()
        );
        let alerts = a.observe("dev", &[c("web", "1", ContainerState::Running, 8)], false);
        assert_eq!(alerts[0].text, "⚠️ dev: web restarted 3 times");
        // Still restarting or now unhealthy: the same incident.
        let mut sick = c("web", "1", ContainerState::Running, 9);
        sick.health = Some(HealthState::Unhealthy);
        assert!(a.observe("dev", &[sick], false).is_empty());
        let mut b = Attention::new();
        let mut sick = c("api", "9", ContainerState::Running, 0);
        assert!(b.observe("qa", &[sick.clone()], false).is_empty());
        sick.health = Some(HealthState::Unhealthy);
        assert_eq!(
            b.observe("qa", &[sick], false)[0].text,
            "⚠️ qa: api is unhealthy"
        );
    }

    #[test]
    fn task_containers_and_other_environments_are_apart() {
        let mut a = Attention::new();
        let mut task = c("migrate", "5", ContainerState::Exited { code: 1 }, 0);
        task.labels.insert(LABEL_ROLE.into(), "task".into());
        assert!(a.observe("dev", &[task], false).is_empty());
        let down = [c("web", "1", ContainerState::Exited { code: 1 }, 0)];
        assert_eq!(a.observe("dev", &down, false).len(), 1);
        assert_eq!(
            a.observe("qa", &down, false).len(),
            1,
            "qa's web is its own incident"
        );
    }
}
