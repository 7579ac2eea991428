-- Server schema for the SQLite backend, version 1. The item, annotation and
-- array-path tables come from sqlite/items.sql, which runs before this file.

-- One row per setting: epoch, node_id, last_hlc, secret, schema_version, created_at.
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    json TEXT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id),
    dataset_id TEXT NOT NULL REFERENCES datasets (id),
    name TEXT NOT NULL,
    json TEXT NOT NULL,
    UNIQUE (dataset_id, name)
);

CREATE TABLE IF NOT EXISTS assignments (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES tasks (id),
    project_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    annotator TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS assignments_by_task ON assignments (task_id);

-- The current value of each register: the status of one item in one task.
-- A cleared register keeps its row with status NULL, so its HLC still counts.
CREATE TABLE IF NOT EXISTS registers (
    item_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    status TEXT,
    hlc TEXT NOT NULL,
    creator TEXT,
    timestamp TEXT,
    source TEXT NOT NULL CHECK (source IN ('rest', 'replica')),
    replica_id TEXT,
    PRIMARY KEY (item_id, task_id)
);
CREATE INDEX IF NOT EXISTS registers_by_task ON registers (task_id, status);

-- Every write of a register, winning, losing or rejected, in arrival order.
CREATE TABLE IF NOT EXISTS register_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    dataset_id TEXT,
    status TEXT,
    hlc TEXT NOT NULL,
    creator TEXT,
    timestamp TEXT,
    source TEXT NOT NULL CHECK (source IN ('rest', 'replica')),
    user_email TEXT NOT NULL,
    replica_id TEXT,
    op_id TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('applied', 'superseded', 'rejected')),
    reason TEXT,
    restamped INTEGER NOT NULL DEFAULT 0,
    recorded_at INTEGER NOT NULL          -- ms since the Unix epoch, server clock
);
CREATE INDEX IF NOT EXISTS register_history_by_register
    ON register_history (item_id, task_id, id);

-- The change feed: one row per entity, holding its newest change. A change deletes
-- the entity's row and inserts a new one, so seq only grows and a pull from cursor 0
-- reads each entity once. Rows with deleted = 1 are tombstones.
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (
        kind IN ('project', 'dataset', 'task', 'assignment', 'item', 'annotation',
                 'register')
    ),
    entity_id TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    UNIQUE (dataset_id, kind, entity_id)
);
CREATE INDEX IF NOT EXISTS changes_by_dataset ON changes (dataset_id, seq);
CREATE INDEX IF NOT EXISTS changes_by_entity ON changes (kind, entity_id);

-- A replica id is bound to the user of the token of its first push.
CREATE TABLE IF NOT EXISTS replicas (
    replica_id TEXT PRIMARY KEY,
    user_email TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Each pushed op with its result, so a retried batch gets the stored results and
-- changes nothing.
CREATE TABLE IF NOT EXISTS pushed_ops (
    replica_id TEXT NOT NULL REFERENCES replicas (replica_id),
    seq INTEGER NOT NULL,
    op_id TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    result TEXT NOT NULL,                  -- the push result sent back, JSON
    PRIMARY KEY (replica_id, seq)
);
