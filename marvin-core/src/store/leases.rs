//! Build leases: one build of a build key at a time across every process
//! sharing the store (ARCHITECTURE.md, "Many processes, one data directory").
//!
//! The store only records who holds a lease and when it last beat; whether
//! a holder is still alive is the caller's rule (the same one as for jobs),
//! passed in as a function, so the store never reads the clock or `/proc`.

use rusqlite::{OptionalExtension, params};

use super::{Durability, JobId, Store, StoreError};

/// The process building a key, as its lease records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The holding process (`host:pid`).
    pub owner: String,
    /// The job that builds the key.
    pub job: JobId,
    /// When the lease was taken (unix millis).
    pub taken_ms: i64,
    /// The holder's last heartbeat (unix millis).
    pub heartbeat_ms: i64,
}

/// What asking for a build lease gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAttempt {
    /// The caller holds the lease now (taken fresh, or over from a dead holder).
    Taken {
        /// The holder whose lease lapsed and was taken over, if any.
        from: Option<LeaseHolder>,
    },
    /// Another live process holds it: wait for its build.
    Held(LeaseHolder),
}

impl Store {
    /// Take the lease on building `key` of `project` for `job` of `owner`,
    /// unless another owner holds it and `alive` says that holder lives.
    /// A lease of the same owner is taken again (one process deduplicates
    /// its own builds in memory).
    pub fn take_build_lease(
        &self,
        project: &str,
        key: &str,
        owner: &str,
        job: JobId,
        now_ms: i64,
        alive: impl FnOnce(&LeaseHolder) -> bool,
    ) -> Result<LeaseAttempt, StoreError> {
        self.write("taking a build lease", Durability::Normal, |tx| {
            let holder = tx
                .query_row(
                    "SELECT owner, job, taken_ms, heartbeat_ms FROM build_leases \
                     WHERE project = ?1 AND key = ?2",
                    params![project, key],
                    |row| {
                        Ok(LeaseHolder {
                            owner: row.get(0)?,
                            job: row.get(1)?,
                            taken_ms: row.get(2)?,
                            heartbeat_ms: row.get(3)?,
                        })
                    },
                )
                .optional()?;
            if let Some(h) = &holder
                && h.owner != owner
                && alive(h)
            {
                return Ok(LeaseAttempt::Held(h.clone()));
            }
            tx.execute(
                "INSERT INTO build_leases (project, key, owner, job, taken_ms, heartbeat_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5) \
                 ON CONFLICT (project, key) DO UPDATE SET owner = ?3, job = ?4, taken_ms = ?5, heartbeat_ms = ?5",
                params![project, key, owner, job, now_ms],
            )?;
            Ok(LeaseAttempt::Taken {
                from: holder.filter(|h| h.owner != owner),
            })
        })
    }

    /// Record that `owner` is alive for every lease it holds.
    pub fn heartbeat_build_leases(&self, owner: &str, now_ms: i64) -> Result<(), StoreError> {
        self.write(
            "recording a build lease heartbeat",
            Durability::Normal,
            |tx| {
                tx.execute(
                    "UPDATE build_leases SET heartbeat_ms = ?1 WHERE owner = ?2",
                    params![now_ms, owner],
                )?;
                Ok(())
            },
        )
    }

    /// Give up the lease `job` of `owner` holds on `key` (its build
    /// finished, well or not); a lease taken since by another job stays.
    pub fn release_build_lease(
        &self,
        project: &str,
        key: &str,
        owner: &str,
        job: JobId,
    ) -> Result<(), StoreError> {
        self.write("releasing a build lease", Durability::Normal, |tx| {
            tx.execute(
                "DELETE FROM build_leases WHERE project = ?1 AND key = ?2 AND owner = ?3 AND job = ?4",
                params![project, key, owner, job],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("marvin.db")).expect("open");
        (dir, store)
    }

    #[test]
    fn a_live_holder_keeps_the_lease_and_a_dead_one_loses_it() {
        let (_dir, store) = store();
        let take = |owner: &str, job: JobId, now: i64, alive: bool| {
            store
                .take_build_lease("p", "k1", owner, job, now, |_| alive)
                .expect("take")
        };
        assert_eq!(
            take("a:1", 1, 100, true),
            LeaseAttempt::Taken { from: None }
        );
        let held = take("b:2", 2, 200, true);
        let LeaseAttempt::Held(h) = held else {
            panic!("a live holder must keep its lease: {held:?}")
        };
        assert_eq!((h.owner.as_str(), h.job, h.heartbeat_ms), ("a:1", 1, 100));
        store.heartbeat_build_leases("a:1", 300).expect("beat");
        let LeaseAttempt::Held(h) = take("b:2", 2, 400, true) else {
            panic!("still held")
        };
        assert_eq!(h.heartbeat_ms, 300);
        // The holder died: the next asker takes over and is told from whom.
        let LeaseAttempt::Taken { from: Some(from) } = take("b:2", 2, 500, false) else {
            panic!("a dead holder's lease is taken over")
        };
        assert_eq!(from.owner, "a:1");
        // Other keys and projects are independent.
        assert_eq!(
            store
                .take_build_lease("p", "k2", "a:1", 3, 600, |_| true)
                .expect("take"),
            LeaseAttempt::Taken { from: None }
        );
        assert_eq!(
            store
                .take_build_lease("q", "k1", "a:1", 3, 600, |_| true)
                .expect("take"),
            LeaseAttempt::Taken { from: None }
        );
    }

    #[test]
    fn a_released_lease_is_free_and_only_its_job_releases_it() {
        let (_dir, store) = store();
        store
            .take_build_lease("p", "k", "a:1", 1, 100, |_| true)
            .expect("take");
        store
            .release_build_lease("p", "k", "b:2", 2)
            .expect("release");
        store
            .release_build_lease("p", "k", "a:1", 9)
            .expect("release");
        assert!(matches!(
            store
                .take_build_lease("p", "k", "b:2", 2, 200, |_| true)
                .expect("take"),
            LeaseAttempt::Held(_)
        ));
        store
            .release_build_lease("p", "k", "a:1", 1)
            .expect("release");
        assert_eq!(
            store
                .take_build_lease("p", "k", "b:2", 2, 300, |_| true)
                .expect("take"),
            LeaseAttempt::Taken { from: None }
        );
    }
}
