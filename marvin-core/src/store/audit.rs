//! The audit trail (every command, allowed or denied) and approvals for
//! protected environments (docs/people.md).

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    Approval, ApprovalState, ApproveOutcome, AuditEntry, Durability, Fail, JobId, JobState,
    NewAuditEntry, Store, StoreError, parsed_column, sql_limit,
};

const APPROVAL_COLUMNS: &str =
    "job, project, env, requester, requested_ms, expires_ms, state, approver, decided_ms";

fn approval_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Approval> {
    Ok(Approval {
        job: row.get(0)?,
        project: row.get(1)?,
        env: row.get(2)?,
        requester: row.get(3)?,
        requested_ms: row.get(4)?,
        expires_ms: row.get(5)?,
        state: parsed_column(row, 6)?,
        approver: row.get(7)?,
        decided_ms: row.get(8)?,
    })
}

fn approval_of(conn: &Connection, job: JobId) -> Result<Option<Approval>, Fail> {
    let sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE job = ?1");
    Ok(conn.query_row(&sql, [job], approval_from_row).optional()?)
}

fn decide(
    conn: &Connection,
    approval: &mut Approval,
    state: ApprovalState,
    approver: Option<&str>,
    now_ms: i64,
) -> Result<(), Fail> {
    conn.execute(
        "UPDATE approvals SET state = ?2, approver = ?3, decided_ms = ?4 WHERE job = ?1",
        params![approval.job, state.as_str(), approver, now_ms],
    )?;
    approval.state = state;
    approval.approver = approver.map(str::to_owned);
    approval.decided_ms = Some(now_ms);
    Ok(())
}

impl Store {
    /// Records one command and its decision; returns the record's number.
    pub fn audit(&self, entry: &NewAuditEntry, now_ms: i64) -> Result<i64, StoreError> {
        self.write("recording an audit entry", Durability::Full, |tx| {
            tx.execute(
                "INSERT INTO audit (at_ms, who, origin, project, env, command, decision, outcome, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    now_ms,
                    entry.who,
                    entry.origin,
                    entry.project,
                    entry.env,
                    entry.command,
                    entry.decision,
                    entry.outcome,
                    entry.detail
                ],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    /// Fills in how an audited command ended, once it has (e.g. its job finished).
    /// Returns false when there is no record with that number.
    pub fn set_audit_outcome(
        &self,
        id: i64,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.write("recording an audit outcome", Durability::Full, |tx| {
            let changed = tx.execute(
                "UPDATE audit SET outcome = ?2, detail = COALESCE(?3, detail) WHERE id = ?1",
                params![id, outcome, detail],
            )?;
            Ok(changed > 0)
        })
    }

    /// The project's latest `limit` audit records, newest first.
    pub fn audit_log(&self, project: &str, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.read("reading the audit log", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at_ms, who, origin, project, env, command, decision, outcome, detail
                 FROM audit WHERE project = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let entries = stmt
                .query_map(params![project, sql_limit(limit)], |row| {
                    Ok(AuditEntry {
                        id: row.get(0)?,
                        at_ms: row.get(1)?,
                        who: row.get(2)?,
                        origin: row.get(3)?,
                        project: row.get(4)?,
                        env: row.get(5)?,
                        command: row.get(6)?,
                        decision: row.get(7)?,
                        outcome: row.get(8)?,
                        detail: row.get(9)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(entries)
        })
    }

    /// Asks for an admin's approval of a queued job, lapsing at `expires_ms`.
    /// The requester is the job's `who`. Asking again for the same job
    /// returns the existing request unchanged.
    pub fn request_approval(
        &self,
        job: JobId,
        expires_ms: i64,
        now_ms: i64,
    ) -> Result<Approval, StoreError> {
        self.write("requesting an approval", Durability::Full, |tx| {
            tx.execute(
                "INSERT INTO approvals (job, project, env, requester, requested_ms, expires_ms, state)
                 SELECT id, project, env, who, ?2, ?3, 'pending' FROM jobs WHERE id = ?1
                 ON CONFLICT (job) DO NOTHING",
                params![job, now_ms, expires_ms],
            )?;
            approval_of(tx, job)?.ok_or(Fail::NoSuchJob(job))
        })
    }

    /// An admin approves a job. The approver must not be the requester; a
    /// request past its expiry, or whose job already finished, is marked
    /// expired instead.
    pub fn approve(
        &self,
        job: JobId,
        approver: &str,
        now_ms: i64,
    ) -> Result<ApproveOutcome, StoreError> {
        self.write("approving a job", Durability::Full, |tx| {
            let Some(mut approval) = approval_of(tx, job)? else {
                return Ok(ApproveOutcome::NoRequest);
            };
            if approval.state != ApprovalState::Pending {
                return Ok(ApproveOutcome::AlreadyDecided(approval));
            }
            if approval.requester == approver {
                return Ok(ApproveOutcome::SelfApproval(approval));
            }
            let job_state: String =
                tx.query_row("SELECT state FROM jobs WHERE id = ?1", [job], |row| {
                    row.get(0)
                })?;
            let job_waiting = job_state == JobState::Queued.as_str();
            if approval.expires_ms <= now_ms || !job_waiting {
                decide(tx, &mut approval, ApprovalState::Expired, None, now_ms)?;
                return Ok(ApproveOutcome::Expired(approval));
            }
            decide(
                tx,
                &mut approval,
                ApprovalState::Approved,
                Some(approver),
                now_ms,
            )?;
            Ok(ApproveOutcome::Approved(approval))
        })
    }

    /// The approval request of a job, if any.
    pub fn approval(&self, job: JobId) -> Result<Option<Approval>, StoreError> {
        self.read("reading an approval", |conn| approval_of(conn, job))
    }

    /// The project's requests still waiting at `now_ms`, oldest first.
    pub fn pending_approvals(
        &self,
        project: &str,
        now_ms: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        self.read("listing pending approvals", |conn| {
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals
                 WHERE project = ?1 AND state = 'pending' AND expires_ms > ?2
                 ORDER BY requested_ms, job"
            );
            let mut stmt = conn.prepare_cached(&sql)?;
            let approvals = stmt
                .query_map(params![project, now_ms], approval_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(approvals)
        })
    }

    /// Marks every pending request past its expiry as expired; returns them so
    /// the caller can fail their jobs and tell the requesters.
    pub fn expire_approvals(&self, now_ms: i64) -> Result<Vec<Approval>, StoreError> {
        self.write("expiring approvals", Durability::Full, |tx| {
            let sql = format!(
                "SELECT {APPROVAL_COLUMNS} FROM approvals
                 WHERE state = 'pending' AND expires_ms <= ?1
                 ORDER BY requested_ms, job"
            );
            let mut approvals = {
                let mut stmt = tx.prepare_cached(&sql)?;
                stmt.query_map([now_ms], approval_from_row)?
                    .collect::<Result<Vec<_>, _>>()?
            };
            for approval in &mut approvals {
                decide(tx, approval, ApprovalState::Expired, None, now_ms)?;
            }
            Ok(approvals)
        })
    }
}
