//! Store errors: which database file, what went wrong in words, while doing what.

use std::fmt;
use std::io;
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;

use super::JobId;
use super::model::JobState;

/// What went wrong with the database, in words a user can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No space left on the device.
    DiskFull,
    /// The file, its directory or the filesystem does not allow writing.
    ReadOnly,
    /// The operating system refused access.
    PermissionDenied,
    /// Another process held the database longer than the busy timeout.
    Busy,
    /// The file is damaged or is not a SQLite database.
    Corrupt,
    /// The file could not be opened (missing directory, a directory in its place, ...).
    CannotOpen,
    /// The disk reported an I/O error.
    Io,
    /// A stored value is not what this Marvin expects.
    UnexpectedValue(String),
    /// Anything else: SQLite's or the OS's own description.
    Other(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::DiskFull => f.write_str("the disk is full"),
            Problem::ReadOnly => f.write_str(
                "it is read-only (the file, its directory or the filesystem does not allow writing)",
            ),
            Problem::PermissionDenied => {
                f.write_str("permission denied: this user may not write the file or its directory")
            }
            Problem::Busy => {
                f.write_str("it stayed locked by another Marvin process for too long")
            }
            Problem::Corrupt => f.write_str("the file is corrupt or is not a SQLite database"),
            Problem::CannotOpen => f.write_str("the file cannot be opened"),
            Problem::Io => f.write_str("the disk reported an I/O error"),
            Problem::UnexpectedValue(what) => write!(f, "a stored value is unexpected: {what}"),
            Problem::Other(what) => f.write_str(what),
        }
    }
}

impl Problem {
    /// Classifies a SQLite error.
    pub(crate) fn of_sqlite(err: &rusqlite::Error) -> Problem {
        match err {
            rusqlite::Error::SqliteFailure(e, _) => match e.code {
                ErrorCode::DiskFull => Problem::DiskFull,
                ErrorCode::ReadOnly => Problem::ReadOnly,
                ErrorCode::PermissionDenied => Problem::PermissionDenied,
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => Problem::Busy,
                ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => Problem::Corrupt,
                ErrorCode::CannotOpen => Problem::CannotOpen,
                ErrorCode::SystemIoFailure => Problem::Io,
                _ => Problem::Other(rusqlite::ffi::code_to_str(e.extended_code).to_owned()),
            },
            rusqlite::Error::FromSqlConversionFailure(column, ty, cause) => {
                Problem::UnexpectedValue(format!("column {column} ({ty}): {cause}"))
            }
            rusqlite::Error::InvalidColumnType(_, name, ty) => {
                Problem::UnexpectedValue(format!("column {name} holds {ty}"))
            }
            rusqlite::Error::IntegralValueOutOfRange(column, value) => {
                Problem::UnexpectedValue(format!("column {column} holds {value}, out of range"))
            }
            other => Problem::Other(other.to_string()),
        }
    }

    /// Classifies a SQLite error on the database at `path`. SQLite says "disk
    /// I/O error" also when the disk is full (it could not grow the WAL or its
    /// shared-memory file), so an I/O error is put to the OS: a probe write
    /// beside the database that finds no space makes it [`Problem::DiskFull`].
    pub(crate) fn of_sqlite_at(err: &rusqlite::Error, path: &Path) -> Problem {
        match Problem::of_sqlite(err) {
            Problem::Io if no_space_beside(path) => Problem::DiskFull,
            problem => problem,
        }
    }

    /// Classifies an operating-system error met while preparing the file.
    pub(crate) fn of_io(err: &io::Error) -> Problem {
        match err.kind() {
            io::ErrorKind::PermissionDenied => Problem::PermissionDenied,
            io::ErrorKind::ReadOnlyFilesystem => Problem::ReadOnly,
            io::ErrorKind::StorageFull => Problem::DiskFull,
            _ => Problem::Other(err.to_string()),
        }
    }
}

/// Whether the file system holding `path` refuses a small write for want of space.
fn no_space_beside(path: &Path) -> bool {
    let Some(dir) = path.parent() else {
        return false;
    };
    let probe = dir.join(format!(".marvin-space-probe-{}", std::process::id()));
    let written = fs_probe(&probe);
    let _ = std::fs::remove_file(&probe);
    matches!(written, Err(e) if e.kind() == io::ErrorKind::StorageFull)
}

fn fs_probe(probe: &Path) -> io::Result<()> {
    let mut file = std::fs::File::create(probe)?;
    file.write_all(&[0u8; 64 * 1024])?;
    file.sync_all()
}

/// Why a store operation failed. Every variant names the database file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite (or the OS underneath it) refused.
    #[error("state database {path}: {problem} (while {action})")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        problem: Problem,
        /// What the store was doing.
        action: &'static str,
        /// The underlying error (boxed: it is large and rarely looked at).
        #[source]
        source: Box<rusqlite::Error>,
    },
    /// Preparing the file or its directory failed before SQLite was involved.
    #[error("state database {path}: {problem} (while {action})")]
    File {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        problem: Problem,
        /// What the store was doing.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file was written by a newer Marvin.
    #[error(
        "state database {path} has schema version {found}, newer than this Marvin knows ({known}); upgrade Marvin or point it at another data directory"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// SQLite would not use write-ahead logging for the file.
    #[error(
        "state database {path}: SQLite would not switch it to WAL journal mode (it stays in {mode}); WAL needs a local filesystem with shared memory, not a network share"
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The job number is not in the database.
    #[error("state database {path}: there is no job #{job}")]
    NoSuchJob {
        /// The database file.
        path: PathBuf,
        /// The job asked for.
        job: JobId,
    },
    /// A job cannot move from its state to the one asked for.
    #[error("state database {path}: job #{job} is {from} and cannot become {to}")]
    InvalidTransition {
        /// The database file.
        path: PathBuf,
        /// The job.
        job: JobId,
        /// Its current state.
        from: JobState,
        /// The state asked for.
        to: JobState,
    },
}

impl StoreError {
    /// The problem, when the database or the file system reported one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            StoreError::Database { problem, .. } | StoreError::File { problem, .. } => {
                Some(problem)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn sqlite(code: i32) -> StoreError {
        let source = rusqlite::Error::SqliteFailure(
            ffi::Error::new(code),
            Some("INSERT INTO logs VALUES (1)".into()),
        );
        StoreError::Database {
            path: PathBuf::from("/srv/marvin/.marvin/marvin.db"),
            problem: Problem::of_sqlite(&source),
            action: "recording a log line",
            source: Box::new(source),
        }
    }

    #[test]
    fn sqlite_failures_are_told_in_words_with_the_file_and_without_sql() {
        for (code, words) in [
            (ffi::SQLITE_FULL, "the disk is full"),
            (ffi::SQLITE_READONLY, "it is read-only"),
            (ffi::SQLITE_BUSY, "locked by another Marvin process"),
            (ffi::SQLITE_CORRUPT, "corrupt"),
            (ffi::SQLITE_NOTADB, "not a SQLite database"),
            (ffi::SQLITE_IOERR, "I/O error"),
        ] {
            let message = sqlite(code).to_string();
            assert!(
                message.starts_with("state database /srv/marvin/.marvin/marvin.db: "),
                "{message}"
            );
            assert!(message.contains(words), "{message}");
            assert!(
                message.ends_with("(while recording a log line)"),
                "{message}"
            );
            assert!(!message.contains("INSERT"), "{message}");
        }
    }

    #[test]
    fn operating_system_refusals_are_classified() {
        let problem = |kind| Problem::of_io(&io::Error::from(kind));
        assert_eq!(
            problem(io::ErrorKind::PermissionDenied),
            Problem::PermissionDenied
        );
        assert_eq!(
            problem(io::ErrorKind::ReadOnlyFilesystem),
            Problem::ReadOnly
        );
        assert_eq!(problem(io::ErrorKind::StorageFull), Problem::DiskFull);
    }
}
