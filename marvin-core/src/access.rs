//! Who may do what (docs/people.md). Pure: the project, an identity, the
//! environment and the command in; a [`Decision`] out.
//!
//! - viewers read: `plan`, `status`, `logs`, `history`, `envs`, `whoami`, `help`;
//! - developers also build, run, lock, unlock, roll back and cancel on
//!   unprotected environments;
//! - on a protected environment those need an admin, or (for the verbs that
//!   start a job: build, run, rollback) an admin's `approve` — from an admin
//!   other than the requester, before the request expires;
//! - `approve` and taking over someone else's lock (`--force`) are admin-only.
//!
//! ```
//! use marvin_core::access::{decide, Decision};
//! use marvin_core::command::Verb;
//! use marvin_core::config::Project;
//!
//! let project = Project::parse(
//!     "project: shop\nrepos:\n  app: {url: /srv/app.git}\nenvironments:\n  prod: {protected: true}\npeople:\n  admins: ['slack:UADMIN']\n",
//!     "marvin.yml",
//! ).unwrap();
//! let prod = project.environment("prod").unwrap();
//! let build = Verb::Build { services: vec![], force: false };
//! assert_eq!(decide(&project, "slack:UDEV", Some(prod), &build, None), Decision::NeedsApproval);
//! assert_eq!(decide(&project, "slack:UDEV", Some(prod), &build, Some("slack:UADMIN")), Decision::Allow);
//! ```

use std::time::Duration;

use crate::command::Verb;
use crate::config::{Environment, Project, Role};
use crate::store::{Approval, ApprovalState};

/// How long a request for approval waits for an admin before it lapses.
pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Whether a command may go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused; `reason` is the message for the person (and the audit log).
    Deny {
        /// Why, and what would make it possible.
        reason: String,
    },
    /// A protected environment: the job waits for an admin's `approve`.
    NeedsApproval,
}

/// The lowercase name of a role, as marvin.yml writes it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Developer => "developer",
        Role::Admin => "admin",
    }
}

/// Decide whether `identity` may run `verb` on `env`.
///
/// `env` is the command's environment; for `cancel JOB` (and anything
/// else addressed by job) pass the job's environment. A changing verb with
/// no environment is judged as if on a protected one. `approved_by` is the
/// admin whose approval of this request has already passed
/// [`check_approval`].
pub fn decide(
    project: &Project,
    identity: &str,
    env: Option<&Environment>,
    verb: &Verb,
    approved_by: Option<&str>,
) -> Decision {
    decide_as(
        project,
        identity,
        project.role_of(identity),
        env,
        verb,
        approved_by,
    )
}

/// [`decide`] for a person whose `role` was already resolved (the door
/// resolves it once per command).
pub fn decide_as(
    project: &Project,
    identity: &str,
    role: Role,
    env: Option<&Environment>,
    verb: &Verb,
    approved_by: Option<&str>,
) -> Decision {
    if !verb.changes() {
        return Decision::Allow;
    }
    let name = verb.name();
    if let Verb::Approve { .. } = verb {
        return if role == Role::Admin {
            Decision::Allow
        } else {
            deny(format!(
                "only admins approve jobs; you ({identity}) are a {}",
                role_name(role)
            ))
        };
    }
    if role == Role::Viewer {
        return deny(format!(
            "you ({identity}) are a viewer: viewers can read (status, plan, logs, history, envs) \
             but not {name}; an admin can make you a developer in {}",
            project.file
        ));
    }
    let force = matches!(
        verb,
        Verb::Lock { force: true, .. } | Verb::Unlock { force: true }
    );
    if force && role != Role::Admin {
        return deny(format!(
            "`{name} --force` acts on someone else's lock: admins only; you ({identity}) are a {}",
            role_name(role)
        ));
    }
    if role == Role::Admin {
        return Decision::Allow;
    }
    let protected = env.is_none_or(|e| e.protected);
    if !protected {
        return Decision::Allow;
    }
    let env_name = env.map_or("this environment", |e| e.name.as_str());
    if verb.job_kind().is_none() {
        return deny(format!(
            "{env_name} is protected: only admins can {name} there; you ({identity}) are a developer"
        ));
    }
    match approved_by {
        None => Decision::NeedsApproval,
        Some(a) if a == identity => deny(format!(
            "{env_name} is protected: an approval must come from another admin, not from the requester"
        )),
        Some(a) if project.role_of(a) != Role::Admin => deny(format!(
            "{env_name} is protected: {a} approved, but only an admin's approval counts"
        )),
        Some(_) => Decision::Allow,
    }
}

fn deny(reason: String) -> Decision {
    Decision::Deny { reason }
}

/// When a request for approval made at `now_ms` lapses.
pub fn approval_expiry(now_ms: i64) -> i64 {
    now_ms.saturating_add(APPROVAL_TIMEOUT.as_millis() as i64)
}

/// Why an `approve JOB` does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// The approver is not an admin.
    #[error("only admins approve jobs; you ({approver}) are a {role}")]
    NotAdmin {
        /// Who tried.
        approver: String,
        /// Their role.
        role: &'static str,
    },
    /// The approver asked for the job.
    #[error("job #{job} is your own request: another admin must approve it")]
    OwnRequest {
        /// The job.
        job: i64,
    },
    /// Nobody approved it in time.
    #[error("the request for job #{job} expired; ask for it again")]
    Expired {
        /// The job.
        job: i64,
    },
    /// Somebody already did.
    #[error("job #{job} was already approved by {by}")]
    AlreadyApproved {
        /// The job.
        job: i64,
        /// Who approved it.
        by: String,
    },
}

/// Whether `approver` may approve this pending request now: an admin, not the
/// requester, before it expires, and only once.
pub fn check_approval(
    project: &Project,
    approval: &Approval,
    approver: &str,
    now_ms: i64,
) -> Result<(), ApprovalError> {
    let role = project.role_of(approver);
    if role != Role::Admin {
        return Err(ApprovalError::NotAdmin {
            approver: approver.to_string(),
            role: role_name(role),
        });
    }
    match approval.state {
        ApprovalState::Approved => {
            return Err(ApprovalError::AlreadyApproved {
                job: approval.job,
                by: approval.approver.clone().unwrap_or_default(),
            });
        }
        ApprovalState::Expired => return Err(ApprovalError::Expired { job: approval.job }),
        ApprovalState::Pending if now_ms >= approval.expires_ms => {
            return Err(ApprovalError::Expired { job: approval.job });
        }
        ApprovalState::Pending => {}
    }
    if approval.requester == approver {
        return Err(ApprovalError::OwnRequest { job: approval.job });
    }
    Ok(())
}

/// The answer to `whoami`: identity, role, and what that allows where.
pub fn whoami_text(project: &Project, identity: &str) -> String {
    let role = project.role_of(identity);
    let (open, protected): (Vec<&str>, Vec<&str>) = {
        let (p, o): (Vec<&Environment>, Vec<&Environment>) =
            project.environments.iter().partition(|e| e.protected);
        (
            o.iter().map(|e| e.name.as_str()).collect(),
            p.iter().map(|e| e.name.as_str()).collect(),
        )
    };
    let list = |v: &[&str]| v.join(", ");
    let mut out = format!("You are {identity}, {} {}.", article(role), role_name(role));
    match role {
        Role::Viewer => {
            out.push_str(" You can read (status, plan, logs, history, envs) everywhere.")
        }
        Role::Developer => {
            if !open.is_empty() {
                out.push_str(&format!(" You can build, run and lock {}.", list(&open)));
            }
            if !protected.is_empty() {
                out.push_str(&format!(
                    " {} protected: builds there wait for an admin's approval.",
                    if protected.len() == 1 {
                        format!("{} is", protected[0])
                    } else {
                        format!("{} are", list(&protected))
                    }
                ));
            }
        }
        Role::Admin => {
            out.push_str(" You can do everything, everywhere, and approve others' jobs.")
        }
    }
    out
}

fn article(role: Role) -> &'static str {
    match role {
        Role::Admin => "an",
        Role::Viewer | Role::Developer => "a",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YML: &str = "\
project: shop
repos:
  app: {url: /srv/app.git}
environments:
  develop: {aliases: [dev]}
  production: {protected: true}
tasks:
  migrate: {service: web, command: [migrate]}
people:
  default_role: viewer
  admins: ['slack:UADMIN', 'slack:UADMIN2']
  developers: ['slack:UDEV', 'slack:UDEV2']
";

    fn project() -> Project {
        Project::parse(YML, "marvin.yml").expect("fixture parses")
    }

    fn verbs() -> Vec<Verb> {
        vec![
            Verb::Build {
                services: vec![],
                force: false,
            },
            Verb::Plan,
            Verb::Status,
            Verb::Logs {
                target: None,
                tail: None,
            },
            Verb::Run {
                task: "migrate".into(),
                args: vec![],
            },
            Verb::Lock {
                duration: None,
                reason: String::new(),
                force: false,
            },
            Verb::Unlock { force: false },
            Verb::History { count: None },
            Verb::Rollback { job: None },
            Verb::Cancel { job: None },
            Verb::Envs,
            Verb::Approve { job: 1 },
            Verb::Whoami,
            Verb::Help { verb: None },
        ]
    }

    /// One letter per outcome: Allow, Deny, Needs approval.
    fn letter(d: &Decision) -> char {
        match d {
            Decision::Allow => 'A',
            Decision::Deny { .. } => 'D',
            Decision::NeedsApproval => 'N',
        }
    }

    #[test]
    fn permission_matrix_role_by_protection_by_verb() {
        // Columns: viewer on develop, viewer on production, developer on
        // develop, developer on production, admin on develop, admin on production.
        let expected = [
            ("build", "DDANAA"),
            ("plan", "AAAAAA"),
            ("status", "AAAAAA"),
            ("logs", "AAAAAA"),
            ("run", "DDANAA"),
            ("lock", "DDADAA"),
            ("unlock", "DDADAA"),
            ("history", "AAAAAA"),
            ("rollback", "DDANAA"),
            ("cancel", "DDADAA"),
            ("envs", "AAAAAA"),
            ("approve", "DDDDAA"),
            ("whoami", "AAAAAA"),
            ("help", "AAAAAA"),
        ];
        let p = project();
        let develop = p.environment("develop").expect("develop");
        let production = p.environment("production").expect("production");
        let verbs = verbs();
        assert_eq!(
            verbs.len(),
            crate::command::VERBS.len(),
            "every verb is in the matrix"
        );
        for (verb, (name, row)) in verbs.iter().zip(expected) {
            assert_eq!(verb.name(), name);
            let got: String = ["slack:UNOBODY", "slack:UDEV", "slack:UADMIN"]
                .iter()
                .flat_map(|who| {
                    [develop, production].map(|env| letter(&decide(&p, who, Some(env), verb, None)))
                })
                .collect();
            assert_eq!(got, row, "{name}");
        }
    }

    #[test]
    fn admin_approval_lets_a_developer_build_a_protected_environment() {
        let p = project();
        let prod = p.environment("production").ok();
        let build = Verb::Build {
            services: vec![],
            force: false,
        };
        assert_eq!(
            decide(&p, "slack:UDEV", prod, &build, Some("slack:UADMIN")),
            Decision::Allow
        );
    }

    #[test]
    fn approval_by_the_requester_or_a_non_admin_does_not_count() {
        let p = project();
        let prod = p.environment("production").ok();
        let build = Verb::Build {
            services: vec![],
            force: false,
        };
        assert_eq!(
            decide(&p, "slack:UDEV", prod, &build, Some("slack:UDEV")),
            Decision::Deny {
                reason: "production is protected: an approval must come from another admin, not from the requester".into()
            }
        );
        assert_eq!(
            decide(&p, "slack:UDEV", prod, &build, Some("slack:UDEV2")),
            Decision::Deny {
                reason: "production is protected: slack:UDEV2 approved, but only an admin's approval counts".into()
            }
        );
    }

    #[test]
    fn denials_say_why_and_what_would_help() {
        let p = project();
        let dev = p.environment("develop").ok();
        let prod = p.environment("production").ok();
        let lock = Verb::Lock {
            duration: None,
            reason: String::new(),
            force: false,
        };
        assert_eq!(
            decide(&p, "slack:UNOBODY", dev, &Verb::Build { services: vec![], force: false }, None),
            Decision::Deny {
                reason: "you (slack:UNOBODY) are a viewer: viewers can read (status, plan, logs, history, envs) but not build; an admin can make you a developer in marvin.yml".into()
            }
        );
        assert_eq!(
            decide(&p, "slack:UDEV", prod, &lock, None),
            Decision::Deny {
                reason: "production is protected: only admins can lock there; you (slack:UDEV) are a developer".into()
            }
        );
        assert_eq!(
            decide(&p, "slack:UDEV", dev, &Verb::Approve { job: 3 }, None),
            Decision::Deny {
                reason: "only admins approve jobs; you (slack:UDEV) are a developer".into()
            }
        );
    }

    #[test]
    fn taking_over_a_lock_is_for_admins_only() {
        let p = project();
        let dev = p.environment("develop").ok();
        let force_lock = Verb::Lock {
            duration: None,
            reason: String::new(),
            force: true,
        };
        assert_eq!(
            letter(&decide(&p, "slack:UDEV", dev, &force_lock, None)),
            'D'
        );
        assert_eq!(
            letter(&decide(
                &p,
                "slack:UDEV",
                dev,
                &Verb::Unlock { force: true },
                None
            )),
            'D'
        );
        assert_eq!(
            letter(&decide(&p, "slack:UADMIN", dev, &force_lock, None)),
            'A'
        );
    }

    #[test]
    fn changing_verb_without_an_environment_is_judged_as_protected() {
        let p = project();
        let cancel = Verb::Cancel { job: Some(9) };
        assert_eq!(letter(&decide(&p, "slack:UDEV", None, &cancel, None)), 'D');
        assert_eq!(
            letter(&decide(&p, "slack:UADMIN", None, &cancel, None)),
            'A'
        );
    }

    fn pending(requester: &str) -> Approval {
        Approval {
            job: 12,
            project: "shop".into(),
            env: "production".into(),
            requester: requester.into(),
            requested_ms: 1_000,
            expires_ms: approval_expiry(1_000),
            state: ApprovalState::Pending,
            approver: None,
            decided_ms: None,
        }
    }

    #[test]
    fn approving_needs_another_admin_before_expiry() {
        let p = project();
        let a = pending("slack:UDEV");
        assert_eq!(check_approval(&p, &a, "slack:UADMIN", 2_000), Ok(()));
        assert_eq!(
            check_approval(&p, &a, "slack:UDEV2", 2_000).map_err(|e| e.to_string()),
            Err("only admins approve jobs; you (slack:UDEV2) are a developer".into())
        );
        let own = pending("slack:UADMIN");
        assert_eq!(
            check_approval(&p, &own, "slack:UADMIN", 2_000).map_err(|e| e.to_string()),
            Err("job #12 is your own request: another admin must approve it".into())
        );
        assert_eq!(check_approval(&p, &own, "slack:UADMIN2", 2_000), Ok(()));
        let late = a.expires_ms;
        assert_eq!(
            check_approval(&p, &a, "slack:UADMIN", late).map_err(|e| e.to_string()),
            Err("the request for job #12 expired; ask for it again".into())
        );
        assert_eq!(check_approval(&p, &a, "slack:UADMIN", late - 1), Ok(()));
        let done = Approval {
            state: ApprovalState::Approved,
            approver: Some("slack:UADMIN2".into()),
            ..pending("slack:UDEV")
        };
        assert_eq!(
            check_approval(&p, &done, "slack:UADMIN", 2_000).map_err(|e| e.to_string()),
            Err("job #12 was already approved by slack:UADMIN2".into())
        );
    }

    #[test]
    fn whoami_names_the_role_and_what_it_allows() {
        let p = project();
        assert_eq!(
            whoami_text(&p, "slack:UDEV"),
            "You are slack:UDEV, a developer. You can build, run and lock develop. \
             production is protected: builds there wait for an admin's approval."
        );
        assert_eq!(
            whoami_text(&p, "telegram:5"),
            "You are telegram:5, a viewer. You can read (status, plan, logs, history, envs) everywhere."
        );
        assert_eq!(
            whoami_text(&p, "slack:UADMIN"),
            "You are slack:UADMIN, an admin. You can do everything, everywhere, and approve others' jobs."
        );
    }
}
