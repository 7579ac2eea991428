-- Server schema for the PostgreSQL backend, version 1.
--
-- Documents are stored as jsonb. Text columns that hold ids, names and paths use
-- the "C" collation, so sorting and range tests follow code-point order whatever
-- the database's locale is, as the Python evaluator of the query language does.

-- One row per applied migration; the highest version is the schema's version.
CREATE TABLE schema_version (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- One row per setting: epoch, node_id, last_hlc, secret.
CREATE TABLE meta (
    key text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE projects (
    id text COLLATE "C" PRIMARY KEY,
    name text NOT NULL UNIQUE,
    json jsonb NOT NULL
);

CREATE TABLE datasets (
    id text COLLATE "C" PRIMARY KEY,
    project_id text NOT NULL REFERENCES projects (id),
    name text NOT NULL,
    json jsonb NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE tasks (
    id text COLLATE "C" PRIMARY KEY,
    project_id text NOT NULL REFERENCES projects (id),
    dataset_id text NOT NULL REFERENCES datasets (id),
    name text NOT NULL,
    json jsonb NOT NULL,
    UNIQUE (dataset_id, name)
);
CREATE INDEX tasks_by_project ON tasks (project_id, id);

CREATE TABLE assignments (
    id text COLLATE "C" PRIMARY KEY,
    task_id text NOT NULL REFERENCES tasks (id),
    project_id text NOT NULL,
    dataset_id text NOT NULL,
    annotator text NOT NULL,
    json jsonb NOT NULL
);
CREATE INDEX assignments_by_task ON assignments (task_id);
CREATE INDEX assignments_by_project ON assignments (project_id, id);

-- Items, with typed projections of top-level fields that the query compiler tests
-- as columns: a text column is NULL unless the JSON value is a string, a flag
-- column is 1 or 0 only for true or false, so a test on a column means the same
-- as the test on the JSON.
CREATE TABLE items (
    id text COLLATE "C" PRIMARY KEY,
    dataset_id text NOT NULL,
    json jsonb NOT NULL CHECK (jsonb_typeof(json) = 'object'),
    filename text COLLATE "C" GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(json -> 'filename') = 'string'
        THEN json ->> 'filename' END) STORED,
    dir text COLLATE "C" GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(json -> 'dir') = 'string'
        THEN json ->> 'dir' END) STORED,
    name text COLLATE "C" GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(json -> 'name') = 'string'
        THEN json ->> 'name' END) STORED,
    type text COLLATE "C" GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(json -> 'type') = 'string'
        THEN json ->> 'type' END) STORED,
    hidden integer GENERATED ALWAYS AS (
        CASE json -> 'hidden' WHEN 'true' THEN 1 WHEN 'false' THEN 0 END) STORED,
    annotated integer GENERATED ALWAYS AS (
        CASE json -> 'annotated' WHEN 'true' THEN 1 WHEN 'false' THEN 0 END) STORED,
    created_at text COLLATE "C" GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(json -> 'createdAt') = 'string'
        THEN json ->> 'createdAt' END) STORED,
    updated_at text COLLATE "C" GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(json -> 'updatedAt') = 'string'
        THEN json ->> 'updatedAt' END) STORED
);

-- The default filter (hidden false, type file) with keyset paging on id.
CREATE INDEX items_default ON items (dataset_id, hidden, type, id);
-- One folder, optionally annotated, in id order.
CREATE INDEX items_dir ON items (dataset_id, dir, annotated, hidden, type, id);
-- Exact filenames and wildcard prefixes such as '/folder/%': LIKE uses a btree
-- index for a prefix because the column's collation is "C".
CREATE INDEX items_filename ON items (dataset_id, filename);
CREATE INDEX items_annotated ON items (dataset_id, annotated, hidden, type, id);
CREATE INDEX items_created_at ON items (dataset_id, created_at);
-- Equality on nested fields that cross no array is written as json @> '{...}'.
CREATE INDEX items_json ON items USING gin (json jsonb_path_ops);

CREATE TABLE annotations (
    id text COLLATE "C" PRIMARY KEY,
    item_id text COLLATE "C" NOT NULL,
    dataset_id text NOT NULL,
    json jsonb NOT NULL CHECK (jsonb_typeof(json) = 'object'),
    label text COLLATE "C" GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(json -> 'label') = 'string'
        THEN json ->> 'label' END) STORED,
    type text COLLATE "C" GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(json -> 'type') = 'string'
        THEN json ->> 'type' END) STORED
);
CREATE INDEX annotations_item ON annotations (item_id);
CREATE INDEX annotations_label ON annotations (dataset_id, label);

-- Dotted paths (array elements add no segment) that hold a JSON array in at least
-- one stored document of the dataset; resource is 'items' or 'annotations'. The
-- query compiler handles arrays only at these paths, so writers add the paths of
-- every document before storing it, and never remove any.
CREATE TABLE array_paths (
    dataset_id text NOT NULL,
    resource text NOT NULL,
    path text NOT NULL,
    PRIMARY KEY (dataset_id, resource, path)
);

-- The current value of each register: the status of one item in one task.
-- A cleared register keeps its row with status NULL, so its HLC still counts.
CREATE TABLE registers (
    item_id text NOT NULL,
    task_id text NOT NULL,
    dataset_id text NOT NULL,
    status text,
    hlc text COLLATE "C" NOT NULL,
    creator text,
    timestamp text,
    source text NOT NULL CHECK (source IN ('rest', 'replica')),
    replica_id text,
    PRIMARY KEY (item_id, task_id)
);
CREATE INDEX registers_by_task ON registers (task_id, status);

-- Every write of a register, winning, losing or rejected, in arrival order.
CREATE TABLE register_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    item_id text NOT NULL,
    task_id text NOT NULL,
    dataset_id text,
    status text,
    hlc text COLLATE "C" NOT NULL,
    creator text,
    timestamp text,
    source text NOT NULL CHECK (source IN ('rest', 'replica')),
    user_email text NOT NULL,
    replica_id text,
    op_id text,
    outcome text NOT NULL CHECK (outcome IN ('applied', 'superseded', 'rejected')),
    reason text,
    restamped boolean NOT NULL DEFAULT false,
    recorded_at bigint NOT NULL          -- ms since the Unix epoch, server clock
);
CREATE INDEX register_history_by_register ON register_history (item_id, task_id, id);

-- The change feed: one row per entity, holding its newest change. A change gives
-- the entity's row a new seq, so a pull from cursor 0 reads each entity once.
-- Rows with deleted = true are tombstones. Writers take the seq values of a
-- dataset under a per-dataset advisory lock held until commit (see
-- localsync/server/postgres_database.py), so seqs commit in order.
CREATE SEQUENCE change_seq AS bigint;
CREATE TABLE changes (
    seq bigint NOT NULL DEFAULT nextval('change_seq') UNIQUE,
    dataset_id text NOT NULL,
    kind text NOT NULL CHECK (
        kind IN ('project', 'dataset', 'task', 'assignment', 'item', 'annotation',
                 'register')
    ),
    entity_id text NOT NULL,
    deleted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (dataset_id, kind, entity_id)
);
ALTER SEQUENCE change_seq OWNED BY changes.seq;
CREATE INDEX changes_by_dataset ON changes (dataset_id, seq);
CREATE INDEX changes_by_entity ON changes (kind, entity_id) WHERE deleted;

-- A replica id is bound to the user of the token of its first push.
CREATE TABLE replicas (
    replica_id text PRIMARY KEY,
    user_email text NOT NULL,
    created_at bigint NOT NULL
);

-- Each pushed op, so a retried batch is answered from here and changes nothing.
CREATE TABLE pushed_ops (
    replica_id text NOT NULL REFERENCES replicas (replica_id),
    seq bigint NOT NULL,
    op_id text NOT NULL,
    content_hash text NOT NULL,
    result jsonb NOT NULL,                 -- the push result sent back
    PRIMARY KEY (replica_id, seq)
);
