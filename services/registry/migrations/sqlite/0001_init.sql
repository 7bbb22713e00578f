-- lightops registry schema, SQLite dialect. Keep in step with ../postgres/0001_init.sql.
CREATE TABLE experiments (
    experiment_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    artifact_location TEXT NOT NULL,
    creation_time BIGINT NOT NULL
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL REFERENCES experiments (experiment_id),
    run_name TEXT NOT NULL,
    user_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT,
    artifact_uri TEXT NOT NULL
);
CREATE INDEX runs_experiment ON runs (experiment_id, start_time);
CREATE TABLE params (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE metrics (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL
);
CREATE INDEX metrics_run_key ON metrics (run_id, key, step, timestamp);
CREATE TABLE latest_metrics (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    step BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE tags (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE registered_models (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    latest_version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE model_tags (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, key)
);
CREATE TABLE model_versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    run_id TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    stage TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    creation_time BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (name, alias)
);
