-- Replica schema, version 1. The item, annotation and array-path tables come from
-- sqlite/items.sql, which the server's SQLite backend shares; it runs before this.

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT
);

CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    json TEXT NOT NULL
);

CREATE TABLE datasets (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    json TEXT NOT NULL
);

CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    name TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX tasks_by_name ON tasks (dataset_id, name);

CREATE TABLE assignments (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    name TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX assignments_by_task ON assignments (task_id);

-- Every status change, in the order it was made. Rows are never deleted; only
-- state, reason, result and pushed_at change after a push.
CREATE TABLE journal (
    rowid INTEGER PRIMARY KEY,
    op_id TEXT NOT NULL UNIQUE,
    replica_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    item_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    status TEXT,                      -- NULL clears the register
    hlc TEXT NOT NULL,
    creator TEXT,
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'applied', 'superseded', 'rejected', 'dropped')),
    reason TEXT,                      -- why the remote rejected it, or who dropped it
    origin_op_id TEXT,                -- the op a retry or revert was made from
    created_at INTEGER NOT NULL,      -- ms since the epoch, local clock
    pushed_at INTEGER,
    result TEXT,                      -- the remote's push result, JSON
    UNIQUE (replica_id, seq)
);
CREATE INDEX journal_pending ON journal (state, rowid);
CREATE INDEX journal_register ON journal (item_id, task_id, hlc);

-- The newest value of each register the remote is known to hold.
CREATE TABLE remote_registers (
    item_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    status TEXT,
    hlc TEXT NOT NULL,
    creator TEXT,
    timestamp TEXT,
    PRIMARY KEY (item_id, task_id)
);

-- A local op that lost to a newer write of the same register.
CREATE TABLE conflicts (
    id INTEGER PRIMARY KEY,
    op_id TEXT NOT NULL UNIQUE REFERENCES journal (op_id),
    item_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    local_status TEXT,
    local_hlc TEXT NOT NULL,
    winner_status TEXT,
    winner_hlc TEXT NOT NULL,
    winner_creator TEXT,
    winner_source TEXT,
    winner_replica_id TEXT,
    detected_at INTEGER NOT NULL
);
