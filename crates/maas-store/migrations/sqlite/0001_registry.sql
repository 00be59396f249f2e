-- The model registry, API keys and the audit chain (embedded SQLite).
CREATE TABLE models (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    task         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    created_by   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    -- Version numbers are never reused, even after a version is deleted.
    next_version INTEGER NOT NULL DEFAULT 1
);

CREATE TABLE versions (
    id              INTEGER PRIMARY KEY,
    model_id        INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    version         INTEGER NOT NULL,
    format          TEXT NOT NULL,
    artifact_kind   TEXT NOT NULL,
    artifact_digest TEXT NOT NULL,
    artifact_size   INTEGER NOT NULL,
    source          TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}',
    metrics         TEXT NOT NULL DEFAULT '{}',
    lineage         TEXT NOT NULL DEFAULT '{}',
    created_by      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    UNIQUE (model_id, version)
);
CREATE INDEX versions_digest ON versions(artifact_digest);

CREATE TABLE aliases (
    model_id   INTEGER NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    version_id INTEGER NOT NULL REFERENCES versions(id),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (model_id, name)
);

CREATE TABLE tags (
    version_id INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (version_id, key)
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    models      TEXT,            -- JSON array of model names, NULL = all models
    secret_hash BLOB NOT NULL,   -- sha256 of the whole key; the key itself is never stored
    created_by  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);

CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT NOT NULL,
    detail    TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);

-- The chain's head, written in the same transaction as each entry, so removing the newest
-- entries is detected too.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash TEXT NOT NULL
);
