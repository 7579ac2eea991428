-- Item and annotation tables, shared by the replica store and the server's SQLite
-- backend. `json` contains each document exactly as the platform returns it. The
-- other item columns are typed projections of top-level JSON fields: a text column
-- is NULL unless the JSON value is a string, a flag column is 1 or 0 only for
-- true or false, so a test on a column means the same as the test on the JSON.
-- Writers fill them with localsync.dql.rows (plain columns, not generated ones,
-- so rewriting an item's statuses in `json` updates no index). The annotation
-- columns are generated, because annotations are written once and rarely again.

CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    dataset_id TEXT NOT NULL,
    json TEXT NOT NULL CHECK (json_type(json) = 'object'),
    filename TEXT,
    dir TEXT,
    name TEXT,
    type TEXT,
    hidden INTEGER,
    annotated INTEGER,
    created_at TEXT,
    updated_at TEXT
);

-- The default filter (hidden false, type file) with keyset paging on id.
CREATE INDEX IF NOT EXISTS items_default ON items (dataset_id, hidden, type, id);
-- One folder, optionally annotated, in id order.
CREATE INDEX IF NOT EXISTS items_dir
    ON items (dataset_id, dir, annotated, hidden, type, id);
-- Exact filenames and wildcard prefixes such as '/folder/**' (GLOB uses it).
CREATE INDEX IF NOT EXISTS items_filename ON items (dataset_id, filename);
CREATE INDEX IF NOT EXISTS items_annotated
    ON items (dataset_id, annotated, hidden, type, id);
CREATE INDEX IF NOT EXISTS items_created_at ON items (dataset_id, created_at);

CREATE TABLE IF NOT EXISTS annotations (
    id TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    json TEXT NOT NULL CHECK (json_type(json) = 'object'),
    label TEXT GENERATED ALWAYS AS (
        CASE WHEN json_type(json, '$.label') = 'text'
        THEN json_extract(json, '$.label') END) VIRTUAL,
    type TEXT GENERATED ALWAYS AS (
        CASE WHEN json_type(json, '$.type') = 'text'
        THEN json_extract(json, '$.type') END) VIRTUAL
);

CREATE INDEX IF NOT EXISTS annotations_item ON annotations (item_id);
CREATE INDEX IF NOT EXISTS annotations_label ON annotations (dataset_id, label);

-- Dotted paths (array elements add no segment) that contain a JSON array in at
-- least one stored document of the dataset. resource is 'items' or 'annotations'.
-- The query compiler handles arrays only at these paths, so writers add the paths
-- of every document before storing it. Stale paths are harmless and stay.
CREATE TABLE IF NOT EXISTS array_paths (
    dataset_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    path TEXT NOT NULL,
    PRIMARY KEY (dataset_id, resource, path)
) WITHOUT ROWID;
