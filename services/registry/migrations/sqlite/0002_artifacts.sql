-- Files uploaded through the Artifacts service, with their checksums. Same in both dialects.
CREATE TABLE artifacts (
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    uri TEXT NOT NULL,
    PRIMARY KEY (run_id, path)
);
