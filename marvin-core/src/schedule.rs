//! Schedules: which environments a cron expression says to build, and when.
//!
//! An environment's `triggers.schedule` is a cron expression with 5 fields
//! (minute hour day month weekday) or 6 (seconds first), read in UTC by
//! `croner`. [`Schedule::parse`] is what config.rs calls to refuse a bad
//! expression when marvin.yml is read; [`Scheduler`] is the pure clockwork
//! `marvin serve` ticks with the time it reads (`now_ms`, milliseconds since
//! the Unix epoch): each tick returns the environments whose next occurrence
//! has come. No I/O, no clock: tests pass the time in.
//!
//! Rules: an occurrence fires at most once; a tick after a long pause (the
//! machine slept, the process was stopped) fires a missed schedule once, not
//! once per missed occurrence, and says how many were skipped; a clock that
//! goes backwards fires nothing until it passes the pending occurrence again.
//!
//! ```
//! use marvin_core::schedule::{Schedule, Scheduler};
//! let nightly = Schedule::parse("0 3 * * *").unwrap();
//! // 2024-01-01T00:00:00Z
//! let midnight = 1_704_067_200_000;
//! let mut scheduler = Scheduler::new(vec![("nightly".to_string(), nightly)], midnight);
//! assert!(scheduler.due(midnight + 3_600_000).is_empty());
//! let fired = scheduler.due(midnight + 3 * 3_600_000);
//! assert_eq!(fired[0].environment, "nightly");
//! ```

use std::fmt;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::config::{ConfigError, Project};

/// Missed occurrences are counted up to this many (a schedule every second
/// paused for a week would otherwise count for a long time).
pub const MISSED_COUNT_LIMIT: u32 = 1_000;

/// A parsed cron expression.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Schedule {
    /// Parse a 5- or 6-field cron expression (or `@hourly`, `@daily`,
    /// `@weekly`, `@monthly`, `@yearly`). The error is a sentence saying what
    /// is wrong and what would be right.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        const HOW: &str = "write 5 fields `minute hour day month weekday` (e.g. `0 3 * * *` for 03:00 UTC every day) or 6 with seconds first";
        let fields: Vec<&str> = text.split_whitespace().collect();
        let nickname = text.trim_start().starts_with('@');
        if !nickname && !(5..=6).contains(&fields.len()) {
            let n = fields.len();
            let plural = if n == 1 { "" } else { "s" };
            return Err(format!(
                "`{text}` is not a cron expression: it has {n} field{plural}; {HOW}"
            ));
        }
        let cron = parser().parse(text).map_err(|e| {
            let why = bad_field(&fields).unwrap_or_else(|| e.to_string());
            format!("`{text}` is not a cron expression: {why}; {HOW}")
        })?;
        // A pattern that parses may still never occur (`0 0 30 2 *`).
        let probe = DateTime::<Utc>::from_timestamp(946_684_800, 0) // 2000-01-01
            .expect("a fixed instant is representable");
        let probe_end = probe + chrono::Duration::days(366 * 8);
        match cron.find_next_occurrence(&probe, false) {
            Ok(t) if t <= probe_end => {}
            _ => {
                return Err(format!("`{text}` never occurs: no date matches it; {HOW}"));
            }
        }
        Ok(Schedule {
            text: text.to_string(),
            cron,
        })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `ms` (whole seconds), in ms since
    /// the epoch. `None` if there is none (out of chrono's range).
    pub fn next_after(&self, ms: u64) -> Option<u64> {
        let secs = i64::try_from(ms / 1000).ok()?;
        let at = DateTime::<Utc>::from_timestamp(secs, 0)?;
        let next = self.cron.find_next_occurrence(&at, false).ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Which field of a 5- or 6-field expression croner refuses, said the way a
/// person reads it (croner's own message does not name the field).
fn bad_field(fields: &[&str]) -> Option<String> {
    const NAMES: [(&str, &str); 6] = [
        ("second", "0-59"),
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day", "1-31"),
        ("month", "1-12 or JAN-DEC"),
        ("weekday", "0-7 or SUN-SAT"),
    ];
    if !(5..=6).contains(&fields.len()) {
        return None;
    }
    let names = &NAMES[6 - fields.len()..];
    (0..fields.len()).find_map(|i| {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[j] } else { "*" })
            .collect();
        parser().parse(&alone.join(" ")).err().map(|_| {
            let (name, range) = names[i];
            format!("the {name} field `{}` is not valid ({range})", fields[i])
        })
    })
}

/// One environment whose schedule came due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// The environment to build.
    pub environment: String,
    /// The occurrence this fires for (ms since the epoch): the latest one
    /// at or before the tick.
    pub scheduled_ms: u64,
    /// Earlier occurrences since the last tick that were not fired
    /// (counted up to [`MISSED_COUNT_LIMIT`]); 0 when the ticks kept up.
    pub missed: u32,
}

impl Fire {
    /// What to tell the environment's channels about skipped runs, if any.
    pub fn missed_notice(&self) -> Option<String> {
        match self.missed {
            0 => None,
            n => {
                let more = if n >= MISSED_COUNT_LIMIT {
                    " or more"
                } else {
                    ""
                };
                let runs = if n == 1 { "run" } else { "runs" };
                Some(format!(
                    "schedule for `{}`: {n}{more} earlier {runs} were missed while Marvin was not running; building once now",
                    self.environment
                ))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    environment: String,
    schedule: Schedule,
    next_ms: Option<u64>,
}

/// Which environments are due, tick by tick, for a set of schedules.
#[derive(Debug, Clone)]
pub struct Scheduler {
    entries: Vec<Entry>,
}

impl Scheduler {
    /// A scheduler whose first occurrences are the ones strictly after `now_ms`.
    pub fn new(schedules: Vec<(String, Schedule)>, now_ms: u64) -> Scheduler {
        let entries = schedules
            .into_iter()
            .map(|(environment, schedule)| Entry {
                next_ms: schedule.next_after(now_ms),
                environment,
                schedule,
            })
            .collect();
        Scheduler { entries }
    }

    /// The schedules of every environment of a project that has one. (A
    /// project from [`Project::parse`] has only valid ones; one built by
    /// other means gets the same error the file would.)
    pub fn for_project(project: &Project, now_ms: u64) -> Result<Scheduler, ConfigError> {
        let mut schedules = Vec::new();
        for env in &project.environments {
            if let Some(text) = &env.triggers.schedule {
                let schedule = Schedule::parse(text).map_err(|message| ConfigError::Invalid {
                    file: project.file.clone(),
                    path: format!("environments.{}.triggers.schedule", env.name),
                    message,
                })?;
                schedules.push((env.name.clone(), schedule));
            }
        }
        Ok(Scheduler::new(schedules, now_ms))
    }

    /// The environments whose next occurrence is at or before `now_ms`, in the
    /// order they were given. Each fires once however many occurrences passed.
    pub fn due(&mut self, now_ms: u64) -> Vec<Fire> {
        let mut fired = Vec::new();
        for entry in &mut self.entries {
            let Some(next) = entry.next_ms else { continue };
            if next > now_ms {
                continue;
            }
            let mut latest = next;
            let mut missed = 0;
            while missed < MISSED_COUNT_LIMIT {
                match entry.schedule.next_after(latest) {
                    Some(t) if t <= now_ms => {
                        latest = t;
                        missed += 1;
                    }
                    _ => break,
                }
            }
            if missed == MISSED_COUNT_LIMIT {
                // Counting stopped early; the latest occurrence is the one just before now.
                latest = previous_at_or_before(&entry.schedule, now_ms).unwrap_or(latest);
            }
            entry.next_ms = entry.schedule.next_after(now_ms);
            fired.push(Fire {
                environment: entry.environment.clone(),
                scheduled_ms: latest,
                missed,
            });
        }
        fired
    }

    /// When the next tick has something to do (ms since the epoch): the
    /// earliest pending occurrence. `None` when nothing is scheduled.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.entries.iter().filter_map(|e| e.next_ms).min()
    }

    /// The pending occurrence of one environment, if it has a schedule.
    pub fn next_for(&self, environment: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| e.environment == environment)
            .and_then(|e| e.next_ms)
    }
}

fn previous_at_or_before(schedule: &Schedule, ms: u64) -> Option<u64> {
    let secs = i64::try_from(ms / 1000).ok()?;
    let at = DateTime::<Utc>::from_timestamp(secs, 0)?;
    let prev = schedule.cron.find_previous_occurrence(&at, true).ok()?;
    u64::try_from(prev.timestamp_millis()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-01-01T00:00:00Z (a Monday).
    const T0: u64 = 1_704_067_200_000;
    const SEC: u64 = 1_000;
    const MIN: u64 = 60 * SEC;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;

    fn scheduler(specs: &[(&str, &str)], now: u64) -> Scheduler {
        Scheduler::new(
            specs
                .iter()
                .map(|(env, expr)| (env.to_string(), Schedule::parse(expr).unwrap()))
                .collect(),
            now,
        )
    }

    /// Whether croner with its default settings reads `text` (it also takes a year field).
    fn croner_default_accepts(text: &str) -> bool {
        use std::str::FromStr as _;
        Cron::from_str(text).is_ok()
    }

    fn names(fired: &[Fire]) -> Vec<&str> {
        fired.iter().map(|f| f.environment.as_str()).collect()
    }

    #[test]
    fn five_field_daily_schedule_fires_at_its_minute_in_utc() {
        let mut s = scheduler(&[("nightly", "0 3 * * *")], T0);
        assert_eq!(s.next_due_ms(), Some(T0 + 3 * HOUR));
        assert!(s.due(T0 + 3 * HOUR - 1).is_empty());
        let fired = s.due(T0 + 3 * HOUR);
        assert_eq!(
            fired,
            vec![Fire {
                environment: "nightly".into(),
                scheduled_ms: T0 + 3 * HOUR,
                missed: 0
            }]
        );
        assert_eq!(s.next_due_ms(), Some(T0 + DAY + 3 * HOUR));
    }

    #[test]
    fn an_occurrence_never_fires_twice() {
        let mut s = scheduler(&[("nightly", "0 3 * * *")], T0);
        assert_eq!(s.due(T0 + 3 * HOUR + 10).len(), 1);
        assert!(s.due(T0 + 3 * HOUR + 10).is_empty());
        assert!(s.due(T0 + 3 * HOUR + 30 * SEC).is_empty());
        assert!(s.due(T0 + DAY).is_empty());
        assert_eq!(s.due(T0 + DAY + 3 * HOUR).len(), 1);
    }

    #[test]
    fn an_occurrence_exactly_at_start_is_not_fired() {
        // Starting at 03:00:00 means that run belongs to whoever ran before.
        let mut s = scheduler(&[("nightly", "0 3 * * *")], T0 + 3 * HOUR);
        assert!(s.due(T0 + 3 * HOUR + 500).is_empty());
        assert_eq!(s.next_due_ms(), Some(T0 + DAY + 3 * HOUR));
    }

    #[test]
    fn a_long_pause_fires_once_and_counts_the_missed_runs() {
        let mut s = scheduler(&[("hourly", "0 * * * *")], T0);
        let fired = s.due(T0 + 5 * HOUR + 20 * MIN);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].scheduled_ms, T0 + 5 * HOUR);
        assert_eq!(fired[0].missed, 4);
        assert_eq!(
            fired[0].missed_notice().unwrap(),
            "schedule for `hourly`: 4 earlier runs were missed while Marvin was not running; building once now"
        );
        assert_eq!(s.next_due_ms(), Some(T0 + 6 * HOUR));
    }

    #[test]
    fn a_very_long_pause_stops_counting_and_still_fires_once() {
        let mut s = scheduler(&[("every-second", "* * * * * *")], T0);
        let fired = s.due(T0 + DAY);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].missed, MISSED_COUNT_LIMIT);
        assert_eq!(fired[0].scheduled_ms, T0 + DAY);
        assert!(fired[0].missed_notice().unwrap().contains("1000 or more"));
        assert!(s.due(T0 + DAY).is_empty());
        assert_eq!(s.due(T0 + DAY + SEC).len(), 1);
    }

    #[test]
    fn no_notice_when_ticks_keep_up() {
        let mut s = scheduler(&[("often", "*/5 * * * *")], T0);
        for k in 1..=12 {
            let fired = s.due(T0 + k * 5 * MIN + 200);
            assert_eq!(fired.len(), 1, "tick {k}");
            assert_eq!(fired[0].missed_notice(), None);
        }
    }

    #[test]
    fn six_field_schedule_has_seconds_first() {
        let mut s = scheduler(&[("fast", "30 * * * * *")], T0);
        assert!(s.due(T0 + 29 * SEC).is_empty());
        assert_eq!(s.due(T0 + 30 * SEC).len(), 1);
        assert!(s.due(T0 + 89 * SEC).is_empty());
        assert_eq!(s.due(T0 + 90 * SEC).len(), 1);
    }

    #[test]
    fn weekday_schedule_skips_the_weekend() {
        // T0 is Monday; Saturday 2024-01-06 and Sunday 01-07 have no run.
        let mut s = scheduler(&[("weekdays", "0 9 * * MON-FRI")], T0);
        let mut days = Vec::new();
        for day in 0..8 {
            if !s.due(T0 + day * DAY + 9 * HOUR).is_empty() {
                days.push(day);
            }
        }
        assert_eq!(days, vec![0, 1, 2, 3, 4, 7]);
    }

    #[test]
    fn several_environments_fire_independently_in_declaration_order() {
        let mut s = scheduler(&[("b", "0 * * * *"), ("a", "30 * * * *")], T0);
        assert_eq!(names(&s.due(T0 + 30 * MIN)), vec!["a"]);
        assert_eq!(names(&s.due(T0 + HOUR)), vec!["b"]);
        assert_eq!(names(&s.due(T0 + 3 * HOUR)), vec!["b", "a"]);
        assert_eq!(s.next_for("a"), Some(T0 + 3 * HOUR + 30 * MIN));
        assert_eq!(s.next_for("c"), None);
    }

    #[test]
    fn a_clock_going_backwards_fires_nothing_twice() {
        let mut s = scheduler(&[("nightly", "0 3 * * *")], T0);
        assert_eq!(s.due(T0 + 3 * HOUR).len(), 1);
        assert!(s.due(T0 + 2 * HOUR).is_empty());
        assert!(s.due(T0 + 3 * HOUR).is_empty());
    }

    #[test]
    fn nicknames_are_accepted() {
        let mut s = scheduler(&[("d", "@daily"), ("h", "@hourly")], T0);
        assert_eq!(names(&s.due(T0 + HOUR)), vec!["h"]);
        assert_eq!(names(&s.due(T0 + DAY)), vec!["d", "h"]);
    }

    #[test]
    fn wrong_field_counts_are_refused_even_where_croner_would_read_a_year() {
        assert!(croner_default_accepts("0 0 3 * * * 2030"));
        for expr in ["0 3 * *", "0 0 3 * * * 2030", "", "daily"] {
            let e = Schedule::parse(expr).unwrap_err();
            assert!(
                e.starts_with(&format!("`{expr}` is not a cron expression")),
                "{e}"
            );
            assert!(e.contains("write 5 fields"), "{e}");
        }
        assert!(
            Schedule::parse("0 3 * *")
                .unwrap_err()
                .contains(": it has 4 fields;")
        );
        assert!(
            Schedule::parse("daily")
                .unwrap_err()
                .contains(": it has 1 field;")
        );
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let check = |expr: &str, why: &str| {
            let e = Schedule::parse(expr).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "`{expr}` is not a cron expression: {why}; write 5 fields"
                )),
                "{e}"
            );
        };
        check("0 25 * * *", "the hour field `25` is not valid (0-23)");
        check("61 * * * *", "the minute field `61` is not valid (0-59)");
        check(
            "0 0 * 13 *",
            "the month field `13` is not valid (1-12 or JAN-DEC)",
        );
        check("0 0 1-x * *", "the day field `1-x` is not valid (1-31)");
        check(
            "0 0 * * FUNDAY",
            "the weekday field `FUNDAY` is not valid (0-7 or SUN-SAT)",
        );
        check("60 0 3 * * *", "the second field `60` is not valid (0-59)");
    }

    #[test]
    fn an_unknown_nickname_is_refused_with_crons_reason() {
        let e = Schedule::parse("@fortnightly").unwrap_err();
        assert!(
            e.starts_with("`@fortnightly` is not a cron expression: "),
            "{e}"
        );
        assert!(!e.contains("weekday field"), "{e}");
    }

    #[test]
    fn a_schedule_that_never_occurs_is_refused() {
        let e = Schedule::parse("0 0 30 2 *").unwrap_err();
        assert!(
            e.starts_with("`0 0 30 2 *` never occurs: no date matches it"),
            "{e}"
        );
    }

    #[test]
    fn for_project_reads_every_scheduled_environment() {
        let project = Project::parse(
            "project: p\nrepos:\n  app: {url: /git/app}\nenvironments:\n  dev: {}\n  nightly: {triggers: {schedule: \"0 3 * * *\"}}\n",
            "marvin.yml",
        )
        .unwrap();
        let mut s = Scheduler::for_project(&project, T0).unwrap();
        assert_eq!(s.next_for("dev"), None);
        assert_eq!(names(&s.due(T0 + 3 * HOUR)), vec!["nightly"]);

        let mut broken = project.clone();
        broken.environments[0].triggers.schedule = Some("never".into());
        let e = Scheduler::for_project(&broken, T0).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "marvin.yml: environments.dev.triggers.schedule: `never` is not a cron expression"
            ),
            "{e}"
        );
    }
}
