//! Deployment history: what each job left running, so a rollback can redeploy it.

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    DeployedService, Deployment, Durability, Fail, JobId, Store, StoreError, json_column,
    json_text, sql_limit,
};

fn with_services(conn: &Connection, mut deployment: Deployment) -> Result<Deployment, Fail> {
    let mut stmt = conn.prepare_cached(
        "SELECT service, deploy_key, build_key, image, commits, spec
         FROM deployed_services WHERE deployment = ?1 ORDER BY service",
    )?;
    deployment.services = stmt
        .query_map([deployment.id], |row| {
            Ok(DeployedService {
                service: row.get(0)?,
                deploy_key: row.get(1)?,
                build_key: row.get(2)?,
                image: row.get(3)?,
                commits: json_column(row, 4)?,
                spec: json_column(row, 5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(deployment)
}

fn deployment_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Deployment> {
    Ok(Deployment {
        id: row.get(0)?,
        job: row.get(1)?,
        project: row.get(2)?,
        env: row.get(3)?,
        at_ms: row.get(4)?,
        services: Vec::new(),
    })
}

impl Store {
    /// Records what `job` left running in an environment; returns the deployment's number.
    pub fn record_deployment(
        &self,
        job: JobId,
        project: &str,
        env: &str,
        services: &[DeployedService],
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        self.write("recording a deployment", Durability::Full, |tx| {
            let known: Option<i64> = tx
                .query_row("SELECT id FROM jobs WHERE id = ?1", [job], |row| row.get(0))
                .optional()?;
            known.ok_or(Fail::NoSuchJob(job))?;
            tx.execute(
                "INSERT INTO deployments (job, project, env, at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![job, project, env, now_ms],
            )?;
            let id = tx.last_insert_rowid();
            let mut stmt = tx.prepare_cached(
                "INSERT INTO deployed_services
                     (deployment, service, deploy_key, build_key, image, commits, spec)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for s in services {
                stmt.execute(params![
                    id,
                    s.service,
                    s.deploy_key,
                    s.build_key,
                    s.image,
                    json_text(&s.commits),
                    json_text(&s.spec)
                ])?;
            }
            Ok(id)
        })
    }

    /// The environment's latest `limit` deployments, newest first.
    pub fn deployments(
        &self,
        project: &str,
        env: &str,
        limit: usize,
    ) -> Result<Vec<Deployment>, StoreError> {
        self.read("reading deployments", |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, job, project, env, at_ms FROM deployments
                 WHERE project = ?1 AND env = ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let deployments = stmt
                .query_map(params![project, env, sql_limit(limit)], deployment_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            deployments
                .into_iter()
                .map(|d| with_services(conn, d))
                .collect()
        })
    }

    /// The deployment a job recorded (its latest, should it have recorded several).
    pub fn deployment_of_job(&self, job: JobId) -> Result<Option<Deployment>, StoreError> {
        self.read("reading a job's deployment", |conn| {
            let deployment = conn
                .query_row(
                    "SELECT id, job, project, env, at_ms FROM deployments
                     WHERE job = ?1 ORDER BY id DESC LIMIT 1",
                    [job],
                    deployment_from_row,
                )
                .optional()?;
            deployment.map(|d| with_services(conn, d)).transpose()
        })
    }
}
