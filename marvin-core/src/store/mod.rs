//! The state port: jobs, events, logs, deployments, locks, audit and
//! approvals in one SQLite file, `<data_dir>/marvin.db` (ARCHITECTURE.md, `store/`).
//!
//! [`Store`] is blocking (rusqlite); async callers use
//! `tokio::task::spawn_blocking`. Every method takes plain data and returns
//! plain data, and time always comes in as `now_ms` (unix millis): the store
//! never reads the clock.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`, which
//! never corrupts the file but may lose the last commits on power loss. The
//! writes people rely on afterwards — a job created or finished, a deployment
//! recorded (rollback reads it), a lock taken or released, an audit record,
//! an approval — switch the connection to `synchronous=FULL` for their
//! transaction, so they are on disk when the call returns. High-volume writes
//! (log lines, events, a job starting) stay at NORMAL.
//!
//! Several `Store`s (threads, processes) may open the same file: writes that
//! read before they write run in `BEGIN IMMEDIATE` transactions, and a busy
//! database is waited for up to [`BUSY_TIMEOUT`].

mod audit;
mod deployments;
mod error;
mod jobs;
mod leases;
mod locks;
mod model;
mod schema;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, Transaction, TransactionBehavior};

pub use error::{Problem, StoreError};
pub use jobs::JobOwner;
pub use leases::{LeaseAttempt, LeaseHolder};
pub use model::{
    Approval, ApprovalState, ApproveOutcome, AuditEntry, DeployedService, Deployment, Event, Job,
    JobId, JobState, Lock, LockOutcome, LogLine, NewAuditEntry, NewJob, UnknownJobState,
    UnlockOutcome,
};
pub use schema::SCHEMA_VERSION;

/// The database's file name inside the data directory.
pub const DB_FILE: &str = "marvin.db";

/// How long a call waits for another connection's write to finish.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Handle to the state database. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    // One connection per opened Store: SQLite connections are not for
    // concurrent use, and WAL lets other Stores on the same file read meanwhile.
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Whether a write must be on disk when the call returns (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    Normal,
    Full,
}

/// Failure inside a store closure; the wrapper adds the file and the action.
pub(crate) enum Fail {
    Sql(rusqlite::Error),
    NoSuchJob(JobId),
    InvalidTransition {
        job: JobId,
        from: JobState,
        to: JobState,
    },
}

impl From<rusqlite::Error> for Fail {
    fn from(err: rusqlite::Error) -> Self {
        Fail::Sql(err)
    }
}

impl Store {
    /// Opens (creating file, directories and schema as needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let file_err = |action, source: std::io::Error| StoreError::File {
            path: path.to_owned(),
            problem: Problem::of_io(&source),
            action,
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| file_err("creating its directory", e))?;
        }
        // SQLite reports every refusal here as "unable to open database file";
        // the OS says precisely why (read-only, permission, disk full).
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| file_err("opening the file for writing", e))?;

        let sql_err = |action, source: rusqlite::Error| StoreError::Database {
            path: path.to_owned(),
            problem: Problem::of_sqlite_at(&source, path),
            action,
            source: Box::new(source),
        };
        let mut conn = Connection::open(path).map_err(|e| sql_err("opening", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_err("setting the busy timeout", e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| sql_err("switching to WAL journal mode", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::NoWal {
                path: path.to_owned(),
                mode,
            });
        }
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(|e| sql_err("enabling foreign keys", e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| sql_err("setting synchronous mode", e))?;
        migrate(&mut conn, path)?;

        Ok(Store {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                conn: Mutex::new(conn),
            }),
        })
    }

    /// Opens `<data_dir>/marvin.db`.
    pub fn open_in(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open(&data_dir.join(DB_FILE))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The schema version recorded in the file (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.read("reading the schema version", |conn| {
            Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
        })
    }

    /// Runs `PRAGMA integrity_check`: `"ok"`, or SQLite's list of problems.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.read("checking integrity", |conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let lines = stmt
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(lines.join("\n"))
        })
    }

    /// Runs `f` on the connection, outside any explicit transaction.
    pub(crate) fn read<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let conn = self.connection();
        f(&conn).map_err(|fail| self.error(action, fail))
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f` succeeds.
    pub(crate) fn write<T>(
        &self,
        action: &'static str,
        durability: Durability,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, Fail>,
    ) -> Result<T, StoreError> {
        let mut conn = self.connection();
        if durability == Durability::Full {
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(|e| self.error(action, e.into()))?;
        }
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })();
        if durability == Durability::Full {
            let restored = conn.pragma_update(None, "synchronous", "NORMAL");
            if let (Ok(_), Err(e)) = (&result, restored) {
                return Err(self.error(action, e.into()));
            }
        }
        result.map_err(|fail| self.error(action, fail))
    }

    fn connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic mid-call rolled its transaction back while unwinding, so the
        // connection behind a poisoned mutex is still consistent.
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, action: &'static str, fail: Fail) -> StoreError {
        let path = self.inner.path.clone();
        match fail {
            Fail::Sql(source) => StoreError::Database {
                problem: Problem::of_sqlite_at(&source, &path),
                path,
                action,
                source: Box::new(source),
            },
            Fail::NoSuchJob(job) => StoreError::NoSuchJob { path, job },
            Fail::InvalidTransition { job, from, to } => StoreError::InvalidTransition {
                path,
                job,
                from,
                to,
            },
        }
    }
}

/// Brings the schema up to [`SCHEMA_VERSION`], in one transaction, so two
/// processes opening a new file at once do not both migrate it.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let sql_err = |source: rusqlite::Error| StoreError::Database {
        path: path.to_owned(),
        problem: Problem::of_sqlite_at(&source, path),
        action: "upgrading the schema",
        source: Box::new(source),
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_err)?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sql_err)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known: SCHEMA_VERSION,
        });
    }
    let start = usize::try_from(found).unwrap_or(0);
    for migration in &schema::MIGRATIONS[start..] {
        tx.execute_batch(migration).map_err(sql_err)?;
    }
    if found != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql_err)?;
    }
    tx.commit().map_err(sql_err)
}

/// A caller's `limit` as SQLite's integer.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// JSON text column into a value; bad JSON is a conversion failure of that column.
pub(crate) fn json_column<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Optional JSON text column into a value.
pub(crate) fn json_column_opt<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|text| {
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

/// A value as JSON text. Only used for types whose serialisation cannot fail
/// (strings, string maps, `serde_json::Value`).
pub(crate) fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("strings, string maps and JSON values always serialise")
}

/// Text column parsed with `FromStr`; an unknown name is a conversion failure.
pub(crate) fn parsed_column<T>(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.get(idx)?;
    text.parse().map_err(|e: T::Err| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            e.to_string().into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(store: &Store, name: &str) -> String {
        store
            .connection()
            .pragma_query_value(None, name, |row| row.get::<_, rusqlite::types::Value>(0))
            .map(|value| match value {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            })
            .expect("pragma reads")
    }

    #[test]
    fn connections_run_wal_with_foreign_keys_and_normal_sync_after_durable_writes() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let store = Store::open_in(tmp.path()).expect("open");
        let job = NewJob {
            project: "shop".into(),
            env: "dev".into(),
            verb: "build".into(),
            args: vec![],
            who: "local:alice".into(),
            origin: "console".into(),
            trigger: "person".into(),
        };
        store.create_job(&job, 1).expect("durable write");
        assert_eq!(pragma(&store, "journal_mode"), "wal");
        assert_eq!(pragma(&store, "foreign_keys"), "1");
        assert_eq!(pragma(&store, "synchronous"), "1", "NORMAL is restored");
        assert_eq!(pragma(&store, "busy_timeout"), "10000");
    }
}
