-- Foundation: API tokens, Specs, Runners and the Specs each Runner serves.
-- Portable SQL only: the same migration runs on SQLite and PostgreSQL.
-- Ids are UUID strings, times are Unix milliseconds (BIGINT), secrets are SHA-256 hex,
-- flags are BIGINT 0 or 1 (sqlx's Any driver cannot read SQLite's BOOLEAN).

CREATE TABLE server_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE api_token (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    admin BIGINT NOT NULL CHECK (admin IN (0, 1)),
    created BIGINT NOT NULL,
    expires BIGINT,
    revoked BIGINT
);

CREATE TABLE spec (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    os TEXT NOT NULL,
    architecture TEXT NOT NULL,
    sandbox TEXT,
    cpu BIGINT NOT NULL CHECK (cpu >= 1),
    memory BIGINT NOT NULL CHECK (memory >= 1),
    disk BIGINT NOT NULL CHECK (disk >= 1),
    network BIGINT NOT NULL CHECK (network IN (0, 1)),
    fallback BIGINT NOT NULL CHECK (fallback IN (0, 1)),
    archived BIGINT,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL
);

-- At most one fallback Spec, enforced by the database, not only by the code.
CREATE UNIQUE INDEX spec_single_fallback ON spec (fallback) WHERE fallback = 1;

CREATE TABLE runner (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    last_seen BIGINT,
    archived BIGINT,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL
);

CREATE TABLE runner_spec (
    runner_uuid TEXT NOT NULL REFERENCES runner (uuid) ON DELETE CASCADE,
    -- RESTRICT: a Spec in use cannot be deleted (the API answers 409).
    spec_uuid TEXT NOT NULL REFERENCES spec (uuid) ON DELETE RESTRICT,
    created BIGINT NOT NULL,
    PRIMARY KEY (runner_uuid, spec_uuid)
);

CREATE INDEX runner_spec_by_spec ON runner_spec (spec_uuid);
