-- Jobs: branches and testbeds (minimal; the reports issue extends them), report shells
-- (metrics come with the reports issue), and the job queue.
--
-- References to `spec` keep the default NO ACTION rather than RESTRICT: both refuse to
-- delete a Spec in use (the API answers 409), but SQLite reports a RESTRICT violation as
-- SQLITE_CONSTRAINT_TRIGGER, which sqlx does not recognize as a foreign-key violation.

CREATE TABLE branch (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    created BIGINT NOT NULL,
    UNIQUE (project_uuid, name),
    UNIQUE (project_uuid, slug)
);

CREATE TABLE testbed (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    -- The Spec the testbed's last run used; the default for its next one.
    spec_uuid TEXT REFERENCES spec (uuid),
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    UNIQUE (project_uuid, name),
    UNIQUE (project_uuid, slug)
);

CREATE TABLE report (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    branch_uuid TEXT NOT NULL REFERENCES branch (uuid) ON DELETE CASCADE,
    testbed_uuid TEXT NOT NULL REFERENCES testbed (uuid) ON DELETE CASCADE,
    -- The hardware the results were measured on: a Spec that reports name cannot be
    -- deleted, only archived.
    spec_uuid TEXT NOT NULL REFERENCES spec (uuid),
    -- The job producing this report. No foreign key: `job` references `report`, and a
    -- cycle of foreign keys cannot be declared portably (PostgreSQL needs ALTER TABLE,
    -- which SQLite cannot do for constraints).
    job_uuid TEXT UNIQUE,
    adapter TEXT,
    created BIGINT NOT NULL
);

CREATE TABLE job (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    report_uuid TEXT NOT NULL UNIQUE REFERENCES report (uuid) ON DELETE CASCADE,
    spec_uuid TEXT NOT NULL REFERENCES spec (uuid),
    -- The JobConfig of the runner protocol, as JSON, with the image resolved to a digest.
    config TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN
        ('pending', 'claimed', 'running', 'completed', 'processed', 'failed', 'canceled')),
    -- The event that led to the current status (`queue::JobEvent`); NULL when submitted.
    -- It tells a heartbeat-timeout failure (which a late `completed` may undo) from a
    -- failure the runner reported.
    last_event TEXT,
    priority BIGINT NOT NULL DEFAULT 0,
    runner_uuid TEXT REFERENCES runner (uuid),
    created BIGINT NOT NULL,
    claimed BIGINT,
    started BIGINT,
    ended BIGINT,
    last_heartbeat BIGINT,
    -- Blob key of the stored output, written once the runner's terminal message is stored.
    output_digest TEXT,
    error TEXT,
    modified BIGINT NOT NULL,
    -- A pending job belongs to no runner; a claimed or running one to exactly one.
    CHECK (status <> 'pending' OR runner_uuid IS NULL),
    CHECK (status NOT IN ('claimed', 'running') OR runner_uuid IS NOT NULL)
);

-- The claim query: pending jobs of some Specs, best priority first, then oldest.
CREATE INDEX job_pending ON job (spec_uuid, priority, created, uuid) WHERE status = 'pending';
CREATE INDEX job_by_project ON job (project_uuid, status, created);
CREATE INDEX job_by_status ON job (status, created);
CREATE INDEX job_by_runner ON job (runner_uuid);
