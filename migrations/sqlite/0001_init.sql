-- chump's SQLite schema. Times are Unix milliseconds (UTC).

-- Sources: the original tool's seven fields plus server-kept ones.
-- AUTOINCREMENT: ids are never reused, even after the highest one is deleted.
CREATE TABLE sources (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace          TEXT    NOT NULL,
    deployment_name    TEXT    NOT NULL,
    git_url            TEXT    NOT NULL,
    branch             TEXT    NOT NULL,
    deploy_path        TEXT    NOT NULL,
    container_name     TEXT    NOT NULL,
    image_version_file TEXT    NOT NULL,
    interval_seconds   INTEGER,
    suspended          INTEGER NOT NULL DEFAULT 0,
    revision           INTEGER NOT NULL DEFAULT 1,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    UNIQUE (namespace, deployment_name, container_name)
);

-- The schedule and the last check of each source (one row per source).
CREATE TABLE source_status (
    source_id            INTEGER PRIMARY KEY REFERENCES sources (id) ON DELETE CASCADE,
    next_check_at        INTEGER NOT NULL,
    requested_trigger    TEXT,
    lease_owner          TEXT,
    lease_until          INTEGER,
    last_checked_at      INTEGER,
    last_commit          TEXT,
    last_outcome         TEXT,
    last_stage           TEXT,
    last_message         TEXT,
    desired_image        TEXT,
    running_image        TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX source_status_due ON source_status (next_check_at);

-- Deploys and failures. No foreign key: history outlives its source.
CREATE TABLE history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id       INTEGER NOT NULL,
    namespace       TEXT    NOT NULL,
    deployment_name TEXT    NOT NULL,
    container_name  TEXT    NOT NULL,
    trigger         TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER NOT NULL,
    commit_sha      TEXT,
    desired_image   TEXT,
    running_image   TEXT,
    outcome         TEXT    NOT NULL,
    stage           TEXT,
    message         TEXT,
    objects         TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX history_by_source ON history (source_id, id);
CREATE INDEX history_by_namespace ON history (namespace, id);
