//! Burst coalescing: many pushes to one environment become one job.
//!
//! A `git push` of a branch with ten commits, a rebase pushed twice, or two
//! repos of one environment pushed together arrive as a burst of webhook
//! deliveries (or poll results) within a second or two. The [`Coalescer`]
//! holds each environment's burst for a window that starts at the burst's
//! first push (`settings.coalesce_window`, 2 s by default), then hands it out
//! once with every cause it collected. The window is fixed, not sliding, so
//! a steady stream of pushes still builds every window instead of never.
//!
//! Pure: no clock, no timers. The caller offers pushes with the time it read
//! and asks what is [`due`](Coalescer::due), sleeping until
//! [`next_due_ms`](Coalescer::next_due_ms) in between.
//!
//! ```
//! use std::time::Duration;
//! use marvin_core::coalesce::Coalescer;
//! let mut c = Coalescer::new(Duration::from_secs(2));
//! for i in 0..10 {
//!     c.offer("dev", 1_000 + i * 100, format!("push {i}"));
//! }
//! assert!(c.due(2_999).is_empty());
//! let jobs = c.due(3_000);
//! assert_eq!(jobs.len(), 1);
//! assert_eq!(jobs[0].1.len(), 10);
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Burst<C> {
    first_ms: u64,
    causes: Vec<C>,
}

/// Pending bursts per environment; `C` is whatever describes a cause (a push,
/// a poll change), handed back with the job it became part of.
#[derive(Debug, Clone)]
pub struct Coalescer<C> {
    window_ms: u64,
    pending: BTreeMap<String, Burst<C>>,
}

impl<C> Coalescer<C> {
    /// A coalescer holding each burst for `window` after its first push.
    pub fn new(window: Duration) -> Coalescer<C> {
        Coalescer {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            pending: BTreeMap::new(),
        }
    }

    /// Record a push to `environment` at `at_ms`. It joins the environment's
    /// pending burst, or starts one.
    pub fn offer(&mut self, environment: &str, at_ms: u64, cause: C) {
        match self.pending.get_mut(environment) {
            Some(burst) => {
                // A late-arriving earlier push (clocks of two threads) does not
                // move the window later; it may move it earlier.
                burst.first_ms = burst.first_ms.min(at_ms);
                burst.causes.push(cause);
            }
            None => {
                self.pending.insert(
                    environment.to_string(),
                    Burst {
                        first_ms: at_ms,
                        causes: vec![cause],
                    },
                );
            }
        }
    }

    /// Take every burst whose window has closed by `now_ms`: one entry per
    /// environment with its causes in arrival order, the oldest burst first
    /// (ties by environment name). A push offered afterwards starts a new burst.
    pub fn due(&mut self, now_ms: u64) -> Vec<(String, Vec<C>)> {
        let ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(_, b)| b.first_ms.saturating_add(self.window_ms) <= now_ms)
            .map(|(env, _)| env.clone())
            .collect();
        let mut out: Vec<(u64, String, Vec<C>)> = ready
            .into_iter()
            .filter_map(|env| {
                self.pending
                    .remove(&env)
                    .map(|b| (b.first_ms, env, b.causes))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        out.into_iter()
            .map(|(_, env, causes)| (env, causes))
            .collect()
    }

    /// When the earliest pending burst is due (ms), or `None` if none is pending.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.pending
            .values()
            .map(|b| b.first_ms.saturating_add(self.window_ms))
            .min()
    }

    /// How many environments have a burst pending.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Take every pending burst now, window or not (at shutdown, the caller
    /// decides whether to start or drop them).
    pub fn drain(&mut self) -> Vec<(String, Vec<C>)> {
        let mut out: Vec<(u64, String, Vec<C>)> = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(env, b)| (b.first_ms, env, b.causes))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        out.into_iter()
            .map(|(_, env, causes)| (env, causes))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coalescer() -> Coalescer<&'static str> {
        Coalescer::new(Duration::from_secs(2))
    }

    #[test]
    fn ten_pushes_in_one_second_become_one_job() {
        let mut c = Coalescer::new(Duration::from_secs(2));
        for i in 0..10u64 {
            c.offer("dev", 10_000 + i * 100, i);
        }
        assert_eq!(c.pending(), 1);
        assert!(c.due(11_999).is_empty());
        assert_eq!(c.due(12_000), vec![("dev".to_string(), (0..10).collect())]);
        assert_eq!(c.pending(), 0);
        assert!(c.due(20_000).is_empty());
    }

    #[test]
    fn the_window_starts_at_the_first_push_and_does_not_slide() {
        let mut c = coalescer();
        c.offer("dev", 0, "a");
        c.offer("dev", 1_900, "b");
        assert_eq!(c.next_due_ms(), Some(2_000));
        assert_eq!(c.due(2_000), vec![("dev".to_string(), vec!["a", "b"])]);
    }

    #[test]
    fn a_push_after_the_window_starts_a_new_burst() {
        let mut c = coalescer();
        c.offer("dev", 0, "a");
        assert_eq!(c.due(2_000).len(), 1);
        c.offer("dev", 2_100, "b");
        assert!(c.due(4_099).is_empty());
        assert_eq!(c.due(4_100), vec![("dev".to_string(), vec!["b"])]);
    }

    #[test]
    fn a_push_arriving_late_but_before_due_is_taken_still_joins() {
        // The caller ticks late: the push at 2 500 is still in the pending burst.
        let mut c = coalescer();
        c.offer("dev", 0, "a");
        c.offer("dev", 2_500, "b");
        assert_eq!(c.due(3_000), vec![("dev".to_string(), vec!["a", "b"])]);
    }

    #[test]
    fn environments_coalesce_separately() {
        let mut c = coalescer();
        c.offer("qa", 500, "q1");
        c.offer("dev", 0, "d1");
        c.offer("qa", 600, "q2");
        c.offer("dev", 700, "d2");
        assert_eq!(c.pending(), 2);
        assert_eq!(c.due(2_000), vec![("dev".to_string(), vec!["d1", "d2"])]);
        assert_eq!(c.next_due_ms(), Some(2_500));
        assert_eq!(c.due(2_500), vec![("qa".to_string(), vec!["q1", "q2"])]);
    }

    #[test]
    fn due_bursts_come_oldest_first_then_by_name() {
        let mut c = coalescer();
        c.offer("b", 0, "b");
        c.offer("c", 100, "c");
        c.offer("a", 0, "a");
        let envs: Vec<String> = c.due(5_000).into_iter().map(|(e, _)| e).collect();
        assert_eq!(envs, vec!["a", "b", "c"]);
    }

    #[test]
    fn an_earlier_timestamp_arriving_late_moves_the_window_earlier() {
        let mut c = coalescer();
        c.offer("dev", 1_000, "late-read");
        c.offer("dev", 900, "early-read");
        assert_eq!(c.next_due_ms(), Some(2_900));
    }

    #[test]
    fn a_zero_window_hands_out_on_the_next_tick() {
        let mut c = Coalescer::new(Duration::ZERO);
        c.offer("dev", 5, "a");
        c.offer("dev", 5, "b");
        assert_eq!(c.due(5), vec![("dev".to_string(), vec!["a", "b"])]);
    }

    #[test]
    fn drain_takes_everything_pending() {
        let mut c = coalescer();
        c.offer("dev", 0, "a");
        c.offer("qa", 10, "b");
        assert_eq!(c.drain().len(), 2);
        assert_eq!(c.pending(), 0);
        assert_eq!(c.next_due_ms(), None);
    }

    #[test]
    fn a_huge_window_does_not_overflow() {
        let mut c = Coalescer::new(Duration::from_secs(u64::MAX));
        c.offer("dev", u64::MAX - 1, "a");
        assert!(c.due(u64::MAX - 1).is_empty());
        assert_eq!(c.next_due_ms(), Some(u64::MAX));
    }
}
