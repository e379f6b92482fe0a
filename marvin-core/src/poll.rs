//! Polling bookkeeping for git hosts without webhooks.
//!
//! A repo with `poll: 1m` in marvin.yml is fetched that often; a new commit
//! on a tracked branch triggers like a push. A branch is tracked when an
//! environment with `triggers.push` builds it from that repo. The
//! [`Poller`] only keeps the books: which repos are due for a fetch, and
//! whether the tip it was shown moved. The caller fetches (through
//! `source`), reads the branch tips and reports them with
//! [`observed`](Poller::observed). The first tip seen of a branch is a
//! baseline, not a change: starting Marvin does not rebuild everything. To
//! catch commits pushed while it was stopped, the caller may seed the
//! baseline with the commit last deployed ([`baseline`](Poller::baseline)).
//!
//! Pure: time comes in as `now_ms`.
//!
//! ```
//! use marvin_core::config::Project;
//! use marvin_core::poll::Poller;
//! let project = Project::parse(
//!     "project: p\nrepos:\n  app: {url: /git/app, poll: 30s}\nenvironments:\n  dev: {branch: develop, triggers: {push: true}}\n",
//!     "marvin.yml",
//! ).unwrap();
//! let mut poller = Poller::new(&project, 0);
//! assert_eq!(poller.due(0), vec!["app"]);
//! assert_eq!(poller.observed("app", "develop", "c1"), None); // baseline
//! poller.polled("app", 0);
//! assert!(poller.due(29_999).is_empty());
//! assert_eq!(poller.observed("app", "develop", "c2").unwrap().after, "c2");
//! ```

use std::collections::BTreeMap;

use crate::config::Project;

/// A tracked branch whose tip moved between two polls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The repo's name in marvin.yml.
    pub repo: String,
    /// The branch.
    pub branch: String,
    /// The tip before.
    pub before: String,
    /// The tip now.
    pub after: String,
}

#[derive(Debug, Clone)]
struct PolledRepo {
    interval_ms: u64,
    next_ms: u64,
    branches: Vec<String>,
}

/// Per polled repo: when to fetch next, which branches matter, and their last tips.
#[derive(Debug, Clone)]
pub struct Poller {
    repos: BTreeMap<String, PolledRepo>,
    tips: BTreeMap<(String, String), String>,
}

impl Poller {
    /// The repos of `project` that have a `poll` interval and a tracked
    /// branch (polling any other starts nothing), each due at `now_ms` so the
    /// baseline is read at start.
    pub fn new(project: &Project, now_ms: u64) -> Poller {
        let mut repos = BTreeMap::new();
        for repo in &project.repos {
            let Some(interval) = repo.poll else { continue };
            let branches = tracked_branches(project, &repo.name);
            if branches.is_empty() {
                continue;
            }
            repos.insert(
                repo.name.clone(),
                PolledRepo {
                    interval_ms: u64::try_from(interval.as_millis())
                        .unwrap_or(u64::MAX)
                        .max(1),
                    next_ms: now_ms,
                    branches,
                },
            );
        }
        Poller {
            repos,
            tips: BTreeMap::new(),
        }
    }

    /// The polled repos whose fetch is due at `now_ms`, by name.
    pub fn due(&self, now_ms: u64) -> Vec<String> {
        self.repos
            .iter()
            .filter(|(_, r)| r.next_ms <= now_ms)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A fetch of `repo` finished at `at_ms` (whether it worked or not): the
    /// next one is an interval later. Unknown repos are ignored.
    pub fn polled(&mut self, repo: &str, at_ms: u64) {
        if let Some(r) = self.repos.get_mut(repo) {
            r.next_ms = at_ms.saturating_add(r.interval_ms);
        }
    }

    /// When the next fetch is due (ms), or `None` when no repo is polled.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.repos.values().map(|r| r.next_ms).min()
    }

    /// The branches of `repo` worth reading after a fetch: those some
    /// environment with `triggers.push` builds. Empty for an unpolled repo.
    pub fn tracked(&self, repo: &str) -> &[String] {
        self.repos
            .get(repo)
            .map(|r| r.branches.as_slice())
            .unwrap_or(&[])
    }

    /// The tip of a tracked branch as read after a fetch. Returns a change
    /// when it moved since the last observation; `None` for the first
    /// observation (the baseline), for an unchanged tip, and for a branch
    /// that is not tracked.
    pub fn observed(&mut self, repo: &str, branch: &str, commit: &str) -> Option<Change> {
        if !self.tracked(repo).iter().any(|b| b == branch) {
            return None;
        }
        let key = (repo.to_string(), branch.to_string());
        let before = self.tips.insert(key, commit.to_string())?;
        (before != commit).then(|| Change {
            repo: repo.to_string(),
            branch: branch.to_string(),
            before,
            after: commit.to_string(),
        })
    }

    /// Set the known tip of a branch without reporting a change (e.g. the
    /// commit last deployed, so a commit pushed while Marvin was stopped is
    /// seen as new). A later observation is compared with this.
    pub fn baseline(&mut self, repo: &str, branch: &str, commit: &str) {
        self.tips
            .insert((repo.to_string(), branch.to_string()), commit.to_string());
    }

    /// A tracked branch disappeared (deleted upstream): forget its tip, so
    /// that if it comes back its first tip is a baseline again.
    pub fn forget(&mut self, repo: &str, branch: &str) {
        self.tips.remove(&(repo.to_string(), branch.to_string()));
    }
}

/// The branches of `repo` that environments with `triggers.push` build, in
/// the order environments are declared, without repeats.
pub fn tracked_branches(project: &Project, repo: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for env in project.environments.iter().filter(|e| e.triggers.push) {
        let branch = env.branch_for(repo);
        if !out.iter().any(|b| b == branch) {
            out.push(branch.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = r#"
project: p
repos:
  app: {url: /git/app, poll: 30s}
  web: {url: /git/web, path: web, poll: 2m}
  lib: {url: /git/lib, path: lib}
environments:
  dev: {branch: develop, branches: {web: dev}, triggers: {push: true}}
  qa: {branch: develop, triggers: {push: true}}
  prod: {branch: main}
"#;

    fn poller(now: u64) -> Poller {
        Poller::new(&Project::parse(PROJECT, "marvin.yml").unwrap(), now)
    }

    #[test]
    fn only_repos_with_a_poll_interval_are_polled_and_all_are_due_at_start() {
        let p = poller(1_000);
        assert_eq!(p.due(1_000), vec!["app", "web"]);
        assert!(p.tracked("lib").is_empty());
    }

    #[test]
    fn each_repo_is_due_again_one_interval_after_its_poll() {
        let mut p = poller(0);
        p.polled("app", 500);
        p.polled("web", 800);
        assert!(p.due(30_499).is_empty());
        assert_eq!(p.due(30_500), vec!["app"]);
        assert_eq!(p.next_due_ms(), Some(30_500));
        p.polled("app", 30_600);
        assert!(p.due(60_599).is_empty());
        assert_eq!(p.due(60_600), vec!["app"]);
        p.polled("app", 100_000); // a slow fetch: the interval counts from its end
        assert_eq!(p.due(120_800), vec!["web"]);
        assert_eq!(p.due(130_000), vec!["app", "web"]);
    }

    #[test]
    fn tracked_branches_come_from_environments_with_push_triggers() {
        let p = poller(0);
        assert_eq!(p.tracked("app"), ["develop"]);
        assert_eq!(p.tracked("web"), ["dev", "develop"]);
    }

    #[test]
    fn first_observation_is_a_baseline_not_a_change() {
        let mut p = poller(0);
        assert_eq!(p.observed("app", "develop", "c1"), None);
        assert_eq!(p.observed("app", "develop", "c1"), None);
    }

    #[test]
    fn a_moved_tip_is_a_change_once() {
        let mut p = poller(0);
        p.observed("app", "develop", "c1");
        assert_eq!(
            p.observed("app", "develop", "c2"),
            Some(Change {
                repo: "app".into(),
                branch: "develop".into(),
                before: "c1".into(),
                after: "c2".into()
            })
        );
        assert_eq!(p.observed("app", "develop", "c2"), None);
    }

    #[test]
    fn a_tip_moved_back_is_a_change_too() {
        // A force-push that resets the branch is a new state to build.
        let mut p = poller(0);
        p.observed("app", "develop", "c1");
        p.observed("app", "develop", "c2");
        assert_eq!(p.observed("app", "develop", "c1").unwrap().after, "c1");
    }

    #[test]
    fn untracked_branches_and_unpolled_repos_never_change() {
        let mut p = poller(0);
        p.observed("app", "main", "c1");
        assert_eq!(p.observed("app", "main", "c2"), None);
        p.observed("lib", "develop", "c1");
        assert_eq!(p.observed("lib", "develop", "c2"), None);
    }

    #[test]
    fn branches_of_one_repo_are_tracked_separately() {
        let mut p = poller(0);
        p.observed("web", "dev", "a1");
        p.observed("web", "develop", "b1");
        assert_eq!(p.observed("web", "develop", "b1"), None);
        assert_eq!(p.observed("web", "dev", "a2").unwrap().before, "a1");
    }

    #[test]
    fn a_seeded_baseline_makes_the_first_observation_count() {
        let mut p = poller(0);
        p.baseline("app", "develop", "deployed");
        assert_eq!(
            p.observed("app", "develop", "pushed-while-stopped")
                .unwrap()
                .before,
            "deployed"
        );
    }

    #[test]
    fn a_forgotten_branch_starts_from_a_baseline_again() {
        let mut p = poller(0);
        p.observed("app", "develop", "c1");
        p.forget("app", "develop");
        assert_eq!(p.observed("app", "develop", "c9"), None);
    }

    #[test]
    fn a_polled_repo_no_push_triggered_environment_builds_is_not_polled() {
        let project = Project::parse(
            "project: p\nrepos:\n  app: {url: /git/app, poll: 1m}\nenvironments:\n  dev: {}\n",
            "marvin.yml",
        )
        .unwrap();
        let p = Poller::new(&project, 0);
        assert!(p.due(0).is_empty());
        assert_eq!(p.next_due_ms(), None);
    }

    #[test]
    fn polled_on_an_unknown_repo_is_ignored() {
        let mut p = poller(0);
        p.polled("nope", 10);
        assert_eq!(p.due(0), vec!["app", "web"]);
    }
}
