//! Lock decisions (docs/people.md), pure: the current lock, who asks, their
//! role and the time in; what happens and what to say out. The store takes
//! the lock atomically ([`crate::store::Store::lock`]); these functions
//! decide what to ask of it and word the answers.
//!
//! - the holder can build; anyone else is refused with who, why and until when;
//! - push and schedule triggers skip a locked environment and say so;
//! - a lock expires; an expired lock is no lock;
//! - an admin may take one over (`lock --force`) or release it
//!   (`unlock --force`), and the previous holder is told.
//!
//! Times are shown in UTC with the time left (`until 14:30 UTC, 1h20m from
//! now`): the core knows no time zones, and "how long" reads the same everywhere.

use std::time::Duration;

use crate::config::Role;
use crate::store::Lock;

/// How long `lock` holds when no duration is given.
pub const DEFAULT_LOCK: Duration = Duration::from_secs(2 * 3_600);

/// Whether a person may build a possibly locked environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildGate {
    /// No lock in force.
    Free,
    /// Locked by the one asking: go ahead.
    Holder,
    /// Locked by someone else.
    Refused {
        /// Who holds it, why, until when.
        message: String,
    },
}

/// May `who` start a job that changes the environment (build, run, rollback) now, given its lock?
pub fn may_build(lock: Option<&Lock>, who: &str, now_ms: i64) -> BuildGate {
    match lock.filter(|l| l.in_force(now_ms)) {
        None => BuildGate::Free,
        Some(l) if l.holder == who => BuildGate::Holder,
        Some(l) => BuildGate::Refused {
            message: format!("{}; ask them, or wait", describe(l, now_ms)),
        },
    }
}

/// May a push or schedule trigger build now? `Err` is the message saying it skipped.
pub fn may_trigger(lock: Option<&Lock>, trigger: &str, now_ms: i64) -> Result<(), String> {
    match lock.filter(|l| l.in_force(now_ms)) {
        None => Ok(()),
        Some(l) => Err(format!(
            "skipped the {trigger} build: {}",
            describe(l, now_ms)
        )),
    }
}

/// `develop is locked by slack:U1: testing payments, until 14:30 UTC (1h20m from now)`.
pub fn describe(lock: &Lock, now_ms: i64) -> String {
    let why = if lock.reason.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", lock.reason)
    };
    let until = match lock.until_ms {
        Some(until) => format!(", {}", until_text(until, now_ms)),
        None => ", until unlocked".to_string(),
    };
    format!("{} is locked by {}{why}{until}", lock.env, lock.holder)
}

/// `until 14:30 UTC (1h20m from now)`; the date is added when it is not today.
pub fn until_text(until_ms: i64, now_ms: i64) -> String {
    let left = Duration::from_millis(until_ms.saturating_sub(now_ms).max(0) as u64);
    let (date, clock) = utc_parts(until_ms);
    let (today, _) = utc_parts(now_ms);
    let when = if date == today {
        format!("{clock} UTC")
    } else {
        format!("{date} {clock} UTC")
    };
    format!("until {when} ({} from now)", crate::duration::format(left))
}

/// What `lock` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockDecision {
    /// Free (or expired): take it.
    Take {
        /// Its expiry.
        until_ms: i64,
    },
    /// The caller holds it: new reason and expiry.
    Renew {
        /// Its new expiry.
        until_ms: i64,
    },
    /// An admin takes it from someone.
    TakeOver {
        /// Its expiry.
        until_ms: i64,
        /// The identity to tell.
        notify: String,
        /// What to tell them.
        notice: String,
    },
    /// Someone else holds it.
    Refused {
        /// Who, why, until when, and what would help.
        message: String,
    },
}

/// Decide a `lock [DURATION] [--force]` by `who` (with `role`) at `now_ms`.
pub fn decide_lock(
    current: Option<&Lock>,
    who: &str,
    role: Role,
    force: bool,
    duration: Option<Duration>,
    now_ms: i64,
) -> LockDecision {
    let length = duration.unwrap_or(DEFAULT_LOCK);
    let until_ms = now_ms.saturating_add(i64::try_from(length.as_millis()).unwrap_or(i64::MAX));
    match current.filter(|l| l.in_force(now_ms)) {
        None => LockDecision::Take { until_ms },
        Some(l) if l.holder == who => LockDecision::Renew { until_ms },
        Some(l) if force && role == Role::Admin => LockDecision::TakeOver {
            until_ms,
            notify: l.holder.clone(),
            notice: format!(
                "{who} took over your lock on {}{}",
                l.env,
                reason_suffix(&l.reason)
            ),
        },
        Some(l) => LockDecision::Refused {
            message: refusal(l, role, force, "lock --force", "take it over", now_ms),
        },
    }
}

/// What `unlock` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlockDecision {
    /// The caller's own lock: release it.
    Release,
    /// An admin releases someone else's lock.
    ReleaseOther {
        /// The identity to tell.
        notify: String,
        /// What to tell them.
        notice: String,
    },
    /// There is no lock in force.
    NotLocked,
    /// Someone else holds it.
    Refused {
        /// Who, why, until when, and what would help.
        message: String,
    },
}

/// Decide an `unlock [--force]` by `who` (with `role`) at `now_ms`.
pub fn decide_unlock(
    current: Option<&Lock>,
    who: &str,
    role: Role,
    force: bool,
    now_ms: i64,
) -> UnlockDecision {
    match current.filter(|l| l.in_force(now_ms)) {
        None => UnlockDecision::NotLocked,
        Some(l) if l.holder == who => UnlockDecision::Release,
        Some(l) if force && role == Role::Admin => UnlockDecision::ReleaseOther {
            notify: l.holder.clone(),
            notice: format!(
                "{who} released your lock on {}{}",
                l.env,
                reason_suffix(&l.reason)
            ),
        },
        Some(l) => UnlockDecision::Refused {
            message: refusal(l, role, force, "unlock --force", "release it", now_ms),
        },
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.trim().is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

fn refusal(l: &Lock, role: Role, force: bool, how: &str, what: &str, now_ms: i64) -> String {
    let help = match (role, force) {
        (Role::Admin, _) => format!("; `{how}` would {what}"),
        (_, true) => format!("; only admins can {what}"),
        (_, false) => "; ask them, or an admin".to_string(),
    };
    format!("{}{help}", describe(l, now_ms))
}

/// `(YYYY-MM-DD, HH:MM)` of a Unix time in milliseconds, in UTC.
fn utc_parts(ms: i64) -> (String, String) {
    let secs = ms.div_euclid(1_000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}", of_day / 3_600, of_day / 60 % 60),
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-05-06 12:00:00 UTC.
    const NOON: i64 = 1_714_996_800_000;
    const MIN: i64 = 60_000;

    fn lock(holder: &str, reason: &str, until_ms: Option<i64>) -> Lock {
        Lock {
            project: "shop".into(),
            env: "develop".into(),
            holder: holder.into(),
            reason: reason.into(),
            since_ms: NOON - 10 * MIN,
            until_ms,
        }
    }

    #[test]
    fn dates_are_read_in_utc() {
        assert_eq!(utc_parts(0), ("1970-01-01".into(), "00:00".into()));
        assert_eq!(utc_parts(NOON), ("2024-05-06".into(), "12:00".into()));
        assert_eq!(
            utc_parts(951_782_400_000),
            ("2000-02-29".into(), "00:00".into())
        );
        assert_eq!(utc_parts(-60_000), ("1969-12-31".into(), "23:59".into()));
    }

    #[test]
    fn holder_builds_others_are_told_who_why_and_until_when() {
        let l = lock("slack:UALICE", "testing payments", Some(NOON + 80 * MIN));
        assert_eq!(may_build(Some(&l), "slack:UALICE", NOON), BuildGate::Holder);
        assert_eq!(
            may_build(Some(&l), "slack:UBOB", NOON),
            BuildGate::Refused {
                message: "develop is locked by slack:UALICE: testing payments, \
                          until 13:20 UTC (1h20m from now); ask them, or wait"
                    .into()
            }
        );
        assert_eq!(may_build(None, "slack:UBOB", NOON), BuildGate::Free);
    }

    #[test]
    fn a_lock_lapses_at_its_expiry() {
        let l = lock("slack:UALICE", "", Some(NOON));
        for (now, free) in [(NOON - 1, false), (NOON, true), (NOON + MIN, true)] {
            assert_eq!(
                may_build(Some(&l), "slack:UBOB", now) == BuildGate::Free,
                free,
                "{now}"
            );
            assert_eq!(may_trigger(Some(&l), "push", now).is_ok(), free, "{now}");
            assert_eq!(
                matches!(
                    decide_lock(Some(&l), "slack:UBOB", Role::Developer, false, None, now),
                    LockDecision::Take { .. }
                ),
                free
            );
            assert_eq!(
                decide_unlock(Some(&l), "slack:UBOB", Role::Developer, false, now)
                    == UnlockDecision::NotLocked,
                free
            );
        }
    }

    #[test]
    fn triggers_skip_a_locked_environment_and_say_so() {
        let l = lock("slack:UALICE", "demo", Some(NOON + 2 * 86_400_000));
        assert_eq!(
            may_trigger(Some(&l), "push", NOON),
            Err(
                "skipped the push build: develop is locked by slack:UALICE: demo, \
                 until 2024-05-08 12:00 UTC (2d from now)"
                    .into()
            )
        );
        assert_eq!(may_trigger(None, "schedule", NOON), Ok(()));
    }

    #[test]
    fn lock_decisions_over_every_state_role_and_force() {
        let states: [(&str, Option<Lock>); 4] = [
            ("free", None),
            (
                "expired",
                Some(lock("slack:UOTHER", "old", Some(NOON - MIN))),
            ),
            ("mine", Some(lock("slack:UME", "mine", Some(NOON + MIN)))),
            ("other", Some(lock("slack:UOTHER", "qa", Some(NOON + MIN)))),
        ];
        for (state, current) in &states {
            for role in [Role::Viewer, Role::Developer, Role::Admin] {
                for force in [false, true] {
                    let d = decide_lock(current.as_ref(), "slack:UME", role, force, None, NOON);
                    let u = decide_unlock(current.as_ref(), "slack:UME", role, force, NOON);
                    let case = format!("{state} {role:?} force={force}: {d:?} / {u:?}");
                    match *state {
                        "free" | "expired" => {
                            assert_eq!(
                                d,
                                LockDecision::Take {
                                    until_ms: NOON + DEFAULT_LOCK.as_millis() as i64
                                },
                                "{case}"
                            );
                            assert_eq!(u, UnlockDecision::NotLocked, "{case}");
                        }
                        "mine" => {
                            assert!(matches!(d, LockDecision::Renew { .. }), "{case}");
                            assert_eq!(u, UnlockDecision::Release, "{case}");
                        }
                        _ if force && role == Role::Admin => {
                            assert_eq!(
                                d,
                                LockDecision::TakeOver {
                                    until_ms: NOON + DEFAULT_LOCK.as_millis() as i64,
                                    notify: "slack:UOTHER".into(),
                                    notice: "slack:UME took over your lock on develop (qa)".into(),
                                },
                                "{case}"
                            );
                            assert_eq!(
                                u,
                                UnlockDecision::ReleaseOther {
                                    notify: "slack:UOTHER".into(),
                                    notice: "slack:UME released your lock on develop (qa)".into(),
                                },
                                "{case}"
                            );
                        }
                        _ => {
                            let LockDecision::Refused { message } = &d else {
                                panic!("{case}")
                            };
                            assert!(
                                message.starts_with("develop is locked by slack:UOTHER: qa, until 12:01 UTC (1m from now)"),
                                "{case}"
                            );
                            assert!(matches!(u, UnlockDecision::Refused { .. }), "{case}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn refusals_say_what_would_help() {
        let l = lock("slack:UOTHER", "qa", Some(NOON + 30 * MIN));
        let msg = |role, force| match decide_lock(Some(&l), "slack:UME", role, force, None, NOON) {
            LockDecision::Refused { message } => message,
            other => panic!("{other:?}"),
        };
        let head = "develop is locked by slack:UOTHER: qa, until 12:30 UTC (30m from now)";
        assert_eq!(
            msg(Role::Developer, false),
            format!("{head}; ask them, or an admin")
        );
        assert_eq!(
            msg(Role::Developer, true),
            format!("{head}; only admins can take it over")
        );
        assert_eq!(
            msg(Role::Admin, false),
            format!("{head}; `lock --force` would take it over")
        );
    }

    #[test]
    fn lock_duration_sets_the_expiry() {
        assert_eq!(
            decide_lock(
                None,
                "slack:UME",
                Role::Developer,
                false,
                Some(Duration::from_secs(1_800)),
                NOON
            ),
            LockDecision::Take {
                until_ms: NOON + 30 * MIN
            }
        );
    }
}
