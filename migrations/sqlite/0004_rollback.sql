-- Rollback (issue 14).
-- `auto_rollback`: NULL takes the service's default (CHUMP_AUTO_ROLLBACK).
ALTER TABLE sources ADD COLUMN auto_rollback INTEGER;
-- A history entry's manifests: 'kept' (bytes in history_manifests),
-- 'dropped' (by retention), 'too_large', or NULL (it applied nothing).
-- `rollback_to`: the entry a rollback applied again.
ALTER TABLE history ADD COLUMN manifests TEXT;
ALTER TABLE history ADD COLUMN rollback_to INTEGER;
-- The rendered manifests of entries that keep them: gzip of a JSON array.
-- No foreign key: like history, they outlive their source.
CREATE TABLE history_manifests (
    history_id INTEGER PRIMARY KEY,
    source_id  INTEGER NOT NULL,
    data       BLOB    NOT NULL
);
CREATE INDEX history_manifests_by_source ON history_manifests (source_id, history_id);
-- `?at=` time travel: each source's newest entry before an instant.
CREATE INDEX history_by_finish ON history (finished_at, source_id);
-- The pin a rollback leaves, and a rollback asked for and not yet recorded.
ALTER TABLE source_status ADD COLUMN pinned_commit TEXT;
ALTER TABLE source_status ADD COLUMN pinned_reason TEXT;
ALTER TABLE source_status ADD COLUMN pinned_entry INTEGER;
ALTER TABLE source_status ADD COLUMN pinned_at INTEGER;
ALTER TABLE source_status ADD COLUMN rollback_to INTEGER;
ALTER TABLE source_status ADD COLUMN rollback_trigger TEXT;
