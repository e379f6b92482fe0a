//! Environment locks (docs/people.md): one row per environment, decided in
//! one IMMEDIATE transaction so two callers never both take it.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Durability, Fail, Lock, LockOutcome, Store, StoreError, UnlockOutcome};

const LOCK_COLUMNS: &str = "project, env, holder, reason, since_ms, until_ms";

fn lock_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Lock> {
    Ok(Lock {
        project: row.get(0)?,
        env: row.get(1)?,
        holder: row.get(2)?,
        reason: row.get(3)?,
        since_ms: row.get(4)?,
        until_ms: row.get(5)?,
    })
}

/// The environment's lock row if it is still in force at `now_ms`.
fn lock_in_force(
    conn: &Connection,
    project: &str,
    env: &str,
    now_ms: i64,
) -> Result<Option<Lock>, Fail> {
    let sql = format!("SELECT {LOCK_COLUMNS} FROM locks WHERE project = ?1 AND env = ?2");
    let lock = conn
        .query_row(&sql, params![project, env], lock_from_row)
        .optional()?;
    Ok(lock.filter(|lock| lock.in_force(now_ms)))
}

fn put_lock(conn: &Connection, lock: &Lock) -> Result<(), Fail> {
    conn.execute(
        "INSERT OR REPLACE INTO locks (project, env, holder, reason, since_ms, until_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            lock.project,
            lock.env,
            lock.holder,
            lock.reason,
            lock.since_ms,
            lock.until_ms
        ],
    )?;
    Ok(())
}

impl Store {
    /// Atomically: takes the environment's lock when free or expired; renews
    /// it (new reason and expiry, same `since_ms`) when `holder` holds it;
    /// takes it over when `take_over` (an admin; the permission check is the
    /// caller's); otherwise refuses with the current holder's lock.
    #[allow(clippy::too_many_arguments)] // mirrors the command: who, why, until when, how
    pub fn lock(
        &self,
        project: &str,
        env: &str,
        holder: &str,
        reason: &str,
        until_ms: Option<i64>,
        take_over: bool,
        now_ms: i64,
    ) -> Result<LockOutcome, StoreError> {
        self.write("taking a lock", Durability::Full, |tx| {
            let mut lock = Lock {
                project: project.to_owned(),
                env: env.to_owned(),
                holder: holder.to_owned(),
                reason: reason.to_owned(),
                since_ms: now_ms,
                until_ms,
            };
            let outcome = match lock_in_force(tx, project, env, now_ms)? {
                None => LockOutcome::Taken(lock.clone()),
                Some(current) if current.holder == holder => {
                    lock.since_ms = current.since_ms;
                    LockOutcome::Renewed(lock.clone())
                }
                Some(current) if take_over => LockOutcome::TakenOver {
                    lock: lock.clone(),
                    previous: current,
                },
                Some(current) => return Ok(LockOutcome::Refused(current)),
            };
            put_lock(tx, &lock)?;
            Ok(outcome)
        })
    }

    /// Releases the environment's lock when `who` holds it or `force` (an
    /// admin; the permission check is the caller's).
    pub fn unlock(
        &self,
        project: &str,
        env: &str,
        who: &str,
        force: bool,
        now_ms: i64,
    ) -> Result<UnlockOutcome, StoreError> {
        self.write("releasing a lock", Durability::Full, |tx| {
            let outcome = match lock_in_force(tx, project, env, now_ms)? {
                None => UnlockOutcome::NotLocked,
                Some(current) if current.holder == who || force => UnlockOutcome::Released(current),
                Some(current) => return Ok(UnlockOutcome::Refused(current)),
            };
            // Also clears an expired row: nobody needs it any more.
            tx.execute(
                "DELETE FROM locks WHERE project = ?1 AND env = ?2",
                params![project, env],
            )?;
            Ok(outcome)
        })
    }

    /// The lock in force at `now_ms`; expired locks are not returned.
    pub fn current_lock(
        &self,
        project: &str,
        env: &str,
        now_ms: i64,
    ) -> Result<Option<Lock>, StoreError> {
        self.read("reading a lock", |conn| {
            lock_in_force(conn, project, env, now_ms)
        })
    }

    /// Every lock in force in the project at `now_ms`, by environment name.
    pub fn locks(&self, project: &str, now_ms: i64) -> Result<Vec<Lock>, StoreError> {
        self.read("listing locks", |conn| {
            let sql = format!(
                "SELECT {LOCK_COLUMNS} FROM locks
                 WHERE project = ?1 AND (until_ms IS NULL OR until_ms > ?2)
                 ORDER BY env"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let locks = stmt
                .query_map(params![project, now_ms], lock_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(locks)
        })
    }
}
