//! The schema, as forward-only migrations. `PRAGMA user_version` says how
//! many have been applied. Never edit a released migration: append one.

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: jobs, events, logs, deployments, locks, audit, approvals.
    r#"
    -- AUTOINCREMENT: a job number seen in a chat must never name another job later.
    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        project     TEXT NOT NULL,
        env         TEXT NOT NULL,
        verb        TEXT NOT NULL,
        args        TEXT NOT NULL,                -- JSON array of strings
        who         TEXT NOT NULL,
        origin      TEXT NOT NULL,
        trigger     TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN
                    ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
        created_ms  INTEGER NOT NULL,
        started_ms  INTEGER,
        finished_ms INTEGER,
        result      TEXT,                         -- JSON
        error       TEXT
    );
    CREATE INDEX jobs_by_env ON jobs (project, env, id);
    CREATE INDEX jobs_unfinished ON jobs (state) WHERE state IN ('queued', 'running');

    CREATE TABLE events (
        job   INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq   INTEGER NOT NULL,
        at_ms INTEGER NOT NULL,
        kind  TEXT NOT NULL,
        data  TEXT NOT NULL,                      -- JSON
        PRIMARY KEY (job, seq)
    ) WITHOUT ROWID;

    CREATE TABLE logs (
        job    INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        seq    INTEGER NOT NULL,
        at_ms  INTEGER NOT NULL,
        stream TEXT NOT NULL,
        line   TEXT NOT NULL,
        PRIMARY KEY (job, seq)
    ) WITHOUT ROWID;

    CREATE TABLE deployments (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        job     INTEGER NOT NULL REFERENCES jobs (id),
        project TEXT NOT NULL,
        env     TEXT NOT NULL,
        at_ms   INTEGER NOT NULL
    );
    CREATE INDEX deployments_by_env ON deployments (project, env, id);
    CREATE INDEX deployments_by_job ON deployments (job);

    CREATE TABLE deployed_services (
        deployment INTEGER NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
        service    TEXT NOT NULL,
        deploy_key TEXT NOT NULL,
        build_key  TEXT,
        image      TEXT NOT NULL,
        commits    TEXT NOT NULL,                 -- JSON object repo -> commit
        spec       TEXT NOT NULL,                 -- JSON ContainerSpec
        PRIMARY KEY (deployment, service)
    ) WITHOUT ROWID;

    -- One row per environment: the last lock taken. Expired rows stay until replaced.
    CREATE TABLE locks (
        project  TEXT NOT NULL,
        env      TEXT NOT NULL,
        holder   TEXT NOT NULL,
        reason   TEXT NOT NULL,
        since_ms INTEGER NOT NULL,
        until_ms INTEGER,
        PRIMARY KEY (project, env)
    ) WITHOUT ROWID;

    CREATE TABLE audit (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms    INTEGER NOT NULL,
        who      TEXT NOT NULL,
        origin   TEXT NOT NULL,
        project  TEXT NOT NULL,
        env      TEXT,
        command  TEXT NOT NULL,
        decision TEXT NOT NULL,
        outcome  TEXT,
        detail   TEXT
    );
    CREATE INDEX audit_by_project ON audit (project, id);

    CREATE TABLE approvals (
        job          INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        project      TEXT NOT NULL,
        env          TEXT NOT NULL,
        requester    TEXT NOT NULL,
        requested_ms INTEGER NOT NULL,
        expires_ms   INTEGER NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'expired')),
        approver     TEXT,
        decided_ms   INTEGER
    );
    CREATE INDEX approvals_pending ON approvals (project, expires_ms) WHERE state = 'pending';
    "#,
    // 2: which process runs a job (so another process never marks it
    // interrupted while it lives), its heartbeat, and cancel requests from
    // other processes.
    r#"
    ALTER TABLE jobs ADD COLUMN owner TEXT;
    ALTER TABLE jobs ADD COLUMN heartbeat_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN cancel_requested_ms INTEGER;
    "#,
    // 3: build leases, so one build key is built once across every process
    // sharing the data directory.
    r#"
    CREATE TABLE build_leases (
        project      TEXT NOT NULL,
        key          TEXT NOT NULL,
        owner        TEXT NOT NULL,
        job          INTEGER NOT NULL,
        taken_ms     INTEGER NOT NULL,
        heartbeat_ms INTEGER NOT NULL,
        PRIMARY KEY (project, key)
    );
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
