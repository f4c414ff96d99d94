-- What chump last applied for each source (one row per source, once it has
-- one): the commit the inventory was built from, the desired image, and the
-- objects as a JSON array of {api_version, kind, namespace?, name, digest,
-- commit}. Written in the same transaction as the check's status; gone with
-- its source.
CREATE TABLE source_inventory (
    source_id     INTEGER PRIMARY KEY REFERENCES sources (id) ON DELETE CASCADE,
    commit_sha    TEXT    NOT NULL,
    desired_image TEXT,
    objects       TEXT    NOT NULL DEFAULT '[]'
);
