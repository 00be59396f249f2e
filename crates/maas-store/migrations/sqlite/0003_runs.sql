-- Training runs: persisted so progress survives a restart and an interrupted run can resume.
CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    dataset          TEXT NOT NULL,
    dataset_version  INTEGER NOT NULL,
    model            TEXT NOT NULL,
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    epochs_done      INTEGER NOT NULL DEFAULT 0,
    epochs_total     INTEGER NOT NULL,
    history          TEXT NOT NULL DEFAULT '[]',
    result           TEXT,
    error            TEXT,
    created_by       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
);
CREATE INDEX runs_created_at ON runs (created_at);
