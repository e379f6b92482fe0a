//! Jobs, their events and their logs.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Durability, Event, Fail, Job, JobId, JobState, LogLine, NewJob, Store, StoreError, json_column,
    json_column_opt, json_text, parsed_column, sql_limit,
};

const JOB_COLUMNS: &str = "id, project, env, verb, args, who, origin, trigger, state, \
                           created_ms, started_ms, finished_ms, result, error";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: row.get(0)?,
        project: row.get(1)?,
        env: row.get(2)?,
        verb: row.get(3)?,
        args: json_column(row, 4)?,
        who: row.get(5)?,
        origin: row.get(6)?,
        trigger: row.get(7)?,
        state: parsed_column(row, 8)?,
        created_ms: row.get(9)?,
        started_ms: row.get(10)?,
        finished_ms: row.get(11)?,
        result: json_column_opt(row, 12)?,
        error: row.get(13)?,
    })
}

fn job_state(conn: &Connection, id: JobId) -> Result<JobState, Fail> {
    let state: Option<String> = conn
        .query_row("SELECT state FROM jobs WHERE id = ?1", [id], |row| {
            row.get(0)
        })
        .optional()?;
    let state = state.ok_or(Fail::NoSuchJob(id))?;
    state.parse().map_err(|e: super::UnknownJobState| {
        Fail::Sql(rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            Box::new(e),
        ))
    })
}

fn query_jobs(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Job>, Fail> {
    let mut stmt = conn.prepare_cached(sql)?;
    let jobs = stmt
        .query_map(params, job_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(jobs)
}

impl Store {
    /// Persists a new job in state `queued` and returns it with its number.
    pub fn create_job(&self, job: &NewJob, now_ms: i64) -> Result<Job, StoreError> {
        self.create_job_owned(job, None, now_ms)
    }

    /// Like [`Store::create_job`], recording the process that will run it
    /// (`host:pid`), so a process that dies before the job starts is known
    /// to be gone at once rather than after a heartbeat goes stale.
    pub fn create_job_owned(
        &self,
        job: &NewJob,
        owner: Option<&str>,
        now_ms: i64,
    ) -> Result<Job, StoreError> {
        self.write("creating a job", Durability::Full, |tx| {
            tx.execute(
                "INSERT INTO jobs (project, env, verb, args, who, origin, trigger, state, created_ms, owner, heartbeat_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, CASE WHEN ?9 IS NULL THEN NULL ELSE ?8 END)",
                params![
                    job.project,
                    job.env,
                    job.verb,
                    json_text(&job.args),
                    job.who,
                    job.origin,
                    job.trigger,
                    now_ms,
                    owner
                ],
            )?;
            Ok(Job {
                id: tx.last_insert_rowid(),
                project: job.project.clone(),
                env: job.env.clone(),
                verb: job.verb.clone(),
                args: job.args.clone(),
                who: job.who.clone(),
                origin: job.origin.clone(),
                trigger: job.trigger.clone(),
                state: JobState::Queued,
                created_ms: now_ms,
                started_ms: None,
                finished_ms: None,
                result: None,
                error: None,
            })
        })
    }

    /// Marks a queued job running. Any other state is an `InvalidTransition`.
    pub fn start_job(&self, id: JobId, now_ms: i64) -> Result<(), StoreError> {
        self.write("starting a job", Durability::Normal, |tx| {
            let from = job_state(tx, id)?;
            if from != JobState::Queued {
                return Err(Fail::InvalidTransition {
                    job: id,
                    from,
                    to: JobState::Running,
                });
            }
            tx.execute(
                "UPDATE jobs SET state = 'running', started_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?;
            Ok(())
        })
    }

    /// Moves a queued or running job to a finished `state`, with its summary
    /// and error. A finished job cannot be finished again, and `state` must be
    /// a finished one; both are an `InvalidTransition`.
    pub fn finish_job(
        &self,
        id: JobId,
        state: JobState,
        result: Option<&serde_json::Value>,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write("finishing a job", Durability::Full, |tx| {
            let from = job_state(tx, id)?;
            if from.is_finished() || !state.is_finished() {
                return Err(Fail::InvalidTransition {
                    job: id,
                    from,
                    to: state,
                });
            }
            tx.execute(
                "UPDATE jobs SET state = ?2, finished_ms = ?3, result = ?4, error = ?5 WHERE id = ?1",
                params![id, state.as_str(), now_ms, result.map(json_text), error],
            )?;
            Ok(())
        })
    }

    /// The job with this number, if any.
    pub fn job(&self, id: JobId) -> Result<Option<Job>, StoreError> {
        self.read("reading a job", |conn| {
            let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
            Ok(conn.query_row(&sql, [id], job_from_row).optional()?)
        })
    }

    /// The project's latest `limit` jobs, in one environment or all, newest first.
    pub fn jobs(
        &self,
        project: &str,
        env: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Job>, StoreError> {
        self.read("listing jobs", |conn| {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE project = ?1 AND (?2 IS NULL OR env = ?2)
                 ORDER BY id DESC LIMIT ?3"
            );
            query_jobs(conn, &sql, params![project, env, sql_limit(limit)])
        })
    }

    /// The project's queued and running jobs, in one environment or all,
    /// oldest first (queue order).
    pub fn active_jobs(&self, project: &str, env: Option<&str>) -> Result<Vec<Job>, StoreError> {
        self.read("listing active jobs", |conn| {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE state IN ('queued', 'running')
                   AND project = ?1 AND (?2 IS NULL OR env = ?2)
                 ORDER BY id"
            );
            query_jobs(conn, &sql, params![project, env])
        })
    }

    /// On start-up: every job left queued or running becomes interrupted
    /// (finished at `now_ms`); returns them, oldest first, as they are now.
    pub fn interrupt_unfinished(&self, now_ms: i64) -> Result<Vec<Job>, StoreError> {
        self.write("interrupting unfinished jobs", Durability::Full, |tx| {
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running') ORDER BY id"
            );
            let mut jobs = query_jobs(tx, &sql, [])?;
            tx.execute(
                "UPDATE jobs SET state = 'interrupted', finished_ms = ?1
                 WHERE state IN ('queued', 'running')",
                [now_ms],
            )?;
            for job in &mut jobs {
                job.state = JobState::Interrupted;
                job.finished_ms = Some(now_ms);
            }
            Ok(jobs)
        })
    }

    /// Who runs each queued or running job of a project, so a new process
    /// can tell which ones belong to a process that is gone.
    pub fn active_owners(&self, project: &str) -> Result<Vec<JobOwner>, StoreError> {
        self.read("listing job owners", |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, owner, heartbeat_ms, created_ms FROM jobs
                 WHERE project = ?1 AND state IN ('queued', 'running') ORDER BY id",
            )?;
            let rows = stmt
                .query_map([project], |r| {
                    Ok(JobOwner {
                        job: r.get(0)?,
                        owner: r.get(1)?,
                        heartbeat_ms: r.get(2)?,
                        created_ms: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// These jobs, if still queued or running, become interrupted; returns those that did.
    pub fn interrupt_jobs(&self, ids: &[JobId], now_ms: i64) -> Result<Vec<Job>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.write("interrupting jobs", Durability::Full, |tx| {
            let mut out = Vec::new();
            for id in ids {
                let n = tx.execute(
                    "UPDATE jobs SET state = 'interrupted', finished_ms = ?1
                     WHERE id = ?2 AND state IN ('queued', 'running')",
                    params![now_ms, id],
                )?;
                if n > 0 {
                    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
                    out.extend(query_jobs(tx, &sql, [id])?);
                }
            }
            Ok(out)
        })
    }

    /// Take the environment's slot: the job becomes running only when no
    /// other job of its environment runs and no older one is queued (one job
    /// at a time per environment, first come first served, across processes).
    ///
    /// `now_ms` is read once the database's write lock is held: a time read
    /// before waiting for it could precede the finish of the job whose slot
    /// this one takes (seen under load: a start recorded 5 ms before the
    /// previous job's end).
    pub fn try_start_job(
        &self,
        id: JobId,
        owner: &str,
        now_ms: impl FnOnce() -> i64,
    ) -> Result<bool, StoreError> {
        self.write("starting a job", Durability::Normal, |tx| {
            let blocked: bool = tx.query_row(
                "SELECT EXISTS (
                    SELECT 1 FROM jobs o, jobs j WHERE j.id = ?1
                      AND o.project = j.project AND o.env = j.env AND o.id != j.id
                      AND (o.state = 'running' OR (o.state = 'queued' AND o.id < j.id)))",
                [id],
                |r| r.get(0),
            )?;
            if blocked {
                return Ok(false);
            }
            let n = tx.execute(
                "UPDATE jobs SET state = 'running', started_ms = ?2, owner = ?3, heartbeat_ms = ?2
                 WHERE id = ?1 AND state = 'queued'",
                params![id, now_ms(), owner],
            )?;
            Ok(n > 0)
        })
    }

    /// The process running these jobs is alive: record it and the time.
    pub fn heartbeat(&self, jobs: &[JobId], owner: &str, now_ms: i64) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.write("recording a heartbeat", Durability::Normal, |tx| {
            for id in jobs {
                tx.execute(
                    "UPDATE jobs SET owner = ?1, heartbeat_ms = ?2 WHERE id = ?3 AND state IN ('queued', 'running')",
                    params![owner, now_ms, id],
                )?;
            }
            Ok(())
        })
    }

    /// Ask whichever process runs a job to cancel it. False when the job is not queued or running.
    pub fn request_cancel(&self, job: JobId, now_ms: i64) -> Result<bool, StoreError> {
        self.write("requesting a cancel", Durability::Full, |tx| {
            let n = tx.execute(
                "UPDATE jobs SET cancel_requested_ms = ?1 WHERE id = ?2 AND state IN ('queued', 'running')",
                params![now_ms, job],
            )?;
            Ok(n > 0)
        })
    }

    /// Of these jobs, the ones someone asked to cancel.
    pub fn cancel_requests(&self, jobs: &[JobId]) -> Result<Vec<JobId>, StoreError> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        self.read("reading cancel requests", |conn| {
            let mut out = Vec::new();
            let mut stmt =
                conn.prepare("SELECT cancel_requested_ms IS NOT NULL FROM jobs WHERE id = ?1")?;
            for id in jobs {
                let asked: bool = stmt.query_row([id], |r| r.get(0)).unwrap_or(false);
                if asked {
                    out.push(*id);
                }
            }
            Ok(out)
        })
    }

    /// Appends an event to a job; returns its `seq` (1, 2, ...).
    pub fn add_event(
        &self,
        job: JobId,
        kind: &str,
        data: &serde_json::Value,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        self.write("recording an event", Durability::Normal, |tx| {
            // Selecting from jobs inserts nothing for an unknown job, which
            // tells it apart from a foreign-key failure.
            let seq: Option<i64> = tx
                .query_row(
                    "INSERT INTO events (job, seq, at_ms, kind, data)
                     SELECT id, COALESCE((SELECT MAX(seq) FROM events WHERE job = ?1), 0) + 1,
                            ?2, ?3, ?4
                     FROM jobs WHERE id = ?1
                     RETURNING seq",
                    params![job, now_ms, kind, json_text(data)],
                    |row| row.get(0),
                )
                .optional()?;
            seq.ok_or(Fail::NoSuchJob(job))
        })
    }

    /// The step a job is in, or was in when it stopped: its last `step` event's name.
    pub fn last_step(&self, job: JobId) -> Result<Option<String>, StoreError> {
        self.read("reading the last step", |conn| {
            let step = conn
                .query_row(
                    "SELECT json_extract(data, '$.step') FROM events
                     WHERE job = ?1 AND kind = 'step' ORDER BY seq DESC LIMIT 1",
                    [job],
                    |row| row.get::<_, Option<String>>(0),
                )
                .optional()?;
            Ok(step.flatten())
        })
    }

    /// A job's events in order (empty for an unknown job).
    pub fn events(&self, job: JobId) -> Result<Vec<Event>, StoreError> {
        self.read("reading events", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT job, seq, at_ms, kind, data FROM events WHERE job = ?1 ORDER BY seq",
            )?;
            let events = stmt
                .query_map([job], |row| {
                    Ok(Event {
                        job: row.get(0)?,
                        seq: row.get(1)?,
                        at_ms: row.get(2)?,
                        kind: row.get(3)?,
                        data: json_column(row, 4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(events)
        })
    }

    /// Appends one line to a job's log.
    pub fn add_log(
        &self,
        job: JobId,
        stream: &str,
        line: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write("recording a log line", Durability::Normal, |tx| {
            insert_logs(tx, job, [(stream, line)], now_ms)
        })
    }

    /// Appends `(stream, line)` pairs to a job's log in one transaction.
    pub fn add_logs(
        &self,
        job: JobId,
        lines: &[(String, String)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.write("recording log lines", Durability::Normal, |tx| {
            insert_logs(
                tx,
                job,
                lines.iter().map(|(s, l)| (s.as_str(), l.as_str())),
                now_ms,
            )
        })
    }

    /// A job's log in order; with `tail`, only the last that many lines.
    pub fn logs(&self, job: JobId, tail: Option<usize>) -> Result<Vec<LogLine>, StoreError> {
        self.read("reading logs", |conn| {
            let sql = "SELECT job, seq, at_ms, stream, line FROM (
                           SELECT * FROM logs WHERE job = ?1 ORDER BY seq DESC LIMIT ?2
                       ) ORDER BY seq";
            let limit = tail.map_or(-1, sql_limit); // SQLite: a negative LIMIT is no limit
            let mut stmt = conn.prepare_cached(sql)?;
            let lines = stmt
                .query_map(params![job, limit], |row| {
                    Ok(LogLine {
                        job: row.get(0)?,
                        seq: row.get(1)?,
                        at_ms: row.get(2)?,
                        stream: row.get(3)?,
                        line: row.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(lines)
        })
    }
}

fn insert_logs<'a>(
    conn: &Connection,
    job: JobId,
    lines: impl IntoIterator<Item = (&'a str, &'a str)>,
    now_ms: i64,
) -> Result<(), Fail> {
    job_state(conn, job)?;
    let last: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM logs WHERE job = ?1",
        [job],
        |row| row.get(0),
    )?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO logs (job, seq, at_ms, stream, line) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for (seq, (stream, line)) in (last + 1..).zip(lines) {
        stmt.execute(params![job, seq, now_ms, stream, line])?;
    }
    Ok(())
}

/// Which process runs an unfinished job, and when it last said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobOwner {
    /// The job.
    pub job: JobId,
    /// `host:pid` of the process running it, once it has heart-beaten.
    pub owner: Option<String>,
    /// Its last heartbeat (unix millis).
    pub heartbeat_ms: Option<i64>,
    /// When the job was created.
    pub created_ms: i64,
}
