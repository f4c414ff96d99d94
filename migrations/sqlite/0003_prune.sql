-- Pruning (issue 12). `prune`: delete the objects chump applied for the
-- source that a new build no longer renders (default on). `deleting`: the
-- source was deleted with `prune=true` and stays, read-only and due at once,
-- until a worker has pruned every object of its inventory (then the row goes).
ALTER TABLE sources ADD COLUMN prune INTEGER NOT NULL DEFAULT 1;
ALTER TABLE sources ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0;
