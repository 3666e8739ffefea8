-- Reports: versions and branch heads, measures and benchmarks, metrics per report,
-- iteration, benchmark and measure, thresholds with versioned models, boundaries and
-- alerts.
--
-- A branch's history is its head: the versions (a number, optionally a git hash)
-- reports were made at. A head may start from another branch's head at a version, so a
-- branch can later begin with another's history; replacing a branch's head starts a
-- fresh history without deleting the old one. Reports point at the head and version
-- they were made on.
--
-- Floating-point columns are DOUBLE PRECISION (REAL affinity on SQLite, float8 on
-- PostgreSQL); both decode to f64 through sqlx's Any driver.

CREATE TABLE version (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    hash TEXT,
    created BIGINT NOT NULL
);
CREATE INDEX version_by_project ON version (project_uuid, number);

CREATE TABLE head (
    uuid TEXT PRIMARY KEY,
    branch_uuid TEXT NOT NULL REFERENCES branch (uuid) ON DELETE CASCADE,
    -- Where this head's history starts: another head, up to one of its versions.
    start_point_head_uuid TEXT REFERENCES head (uuid),
    start_point_version_uuid TEXT REFERENCES version (uuid),
    created BIGINT NOT NULL,
    -- When a newer head replaced it as the branch's head.
    replaced BIGINT
);
CREATE INDEX head_by_branch ON head (branch_uuid);

CREATE TABLE head_version (
    head_uuid TEXT NOT NULL REFERENCES head (uuid) ON DELETE CASCADE,
    version_uuid TEXT NOT NULL REFERENCES version (uuid) ON DELETE CASCADE,
    PRIMARY KEY (head_uuid, version_uuid)
);

-- The branch's current head. No foreign key: `head` references `branch`, and a cycle of
-- foreign keys cannot be declared portably. NULL until the branch's first report.
ALTER TABLE branch ADD COLUMN head_uuid TEXT;

-- Filled when the report is made (at submission for jobs): where it sits in the branch's
-- history, when the benchmark ran, and how its iterations fold.
ALTER TABLE report ADD COLUMN head_uuid TEXT REFERENCES head (uuid);
ALTER TABLE report ADD COLUMN version_uuid TEXT REFERENCES version (uuid);
ALTER TABLE report ADD COLUMN start_time BIGINT;
ALTER TABLE report ADD COLUMN end_time BIGINT;
ALTER TABLE report ADD COLUMN iterations BIGINT;
ALTER TABLE report ADD COLUMN fold TEXT;
-- When its metrics were written; NULL while the job runs.
ALTER TABLE report ADD COLUMN processed BIGINT;

CREATE TABLE measure (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    units TEXT NOT NULL,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    UNIQUE (project_uuid, name),
    UNIQUE (project_uuid, slug)
);

CREATE TABLE benchmark (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    name TEXT NOT NULL,
    slug TEXT NOT NULL,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    UNIQUE (project_uuid, name),
    UNIQUE (project_uuid, slug)
);

-- One benchmark's results in one iteration of a report.
CREATE TABLE report_benchmark (
    uuid TEXT PRIMARY KEY,
    report_uuid TEXT NOT NULL REFERENCES report (uuid) ON DELETE CASCADE,
    iteration BIGINT NOT NULL,
    benchmark_uuid TEXT NOT NULL REFERENCES benchmark (uuid) ON DELETE CASCADE,
    UNIQUE (report_uuid, iteration, benchmark_uuid)
);
CREATE INDEX report_benchmark_by_benchmark ON report_benchmark (benchmark_uuid);

CREATE TABLE metric (
    uuid TEXT PRIMARY KEY,
    report_benchmark_uuid TEXT NOT NULL REFERENCES report_benchmark (uuid) ON DELETE CASCADE,
    measure_uuid TEXT NOT NULL REFERENCES measure (uuid) ON DELETE CASCADE,
    value DOUBLE PRECISION NOT NULL,
    lower_value DOUBLE PRECISION,
    upper_value DOUBLE PRECISION,
    UNIQUE (report_benchmark_uuid, measure_uuid)
);
CREATE INDEX metric_by_measure ON metric (measure_uuid);

CREATE TABLE threshold (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    branch_uuid TEXT NOT NULL REFERENCES branch (uuid) ON DELETE CASCADE,
    testbed_uuid TEXT NOT NULL REFERENCES testbed (uuid) ON DELETE CASCADE,
    measure_uuid TEXT NOT NULL REFERENCES measure (uuid) ON DELETE CASCADE,
    -- The current model; older models stay for the boundaries that used them. No
    -- foreign key, as for branch.head_uuid.
    model_uuid TEXT,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    UNIQUE (branch_uuid, testbed_uuid, measure_uuid)
);

CREATE TABLE model (
    uuid TEXT PRIMARY KEY,
    threshold_uuid TEXT NOT NULL REFERENCES threshold (uuid) ON DELETE CASCADE,
    test TEXT NOT NULL CHECK (test IN
        ('static', 'percentage', 'z_score', 't_test', 'log_normal', 'iqr', 'delta_iqr')),
    min_sample_size BIGINT,
    max_sample_size BIGINT,
    -- Seconds back from the report's own time; `window` is reserved in PostgreSQL.
    window_seconds BIGINT,
    lower_boundary DOUBLE PRECISION,
    upper_boundary DOUBLE PRECISION,
    created BIGINT NOT NULL,
    replaced BIGINT
);

-- A metric checked against a threshold's model: the limits it was held to.
CREATE TABLE boundary (
    uuid TEXT PRIMARY KEY,
    metric_uuid TEXT NOT NULL REFERENCES metric (uuid) ON DELETE CASCADE,
    threshold_uuid TEXT NOT NULL REFERENCES threshold (uuid) ON DELETE CASCADE,
    model_uuid TEXT NOT NULL REFERENCES model (uuid) ON DELETE CASCADE,
    baseline DOUBLE PRECISION,
    lower_limit DOUBLE PRECISION,
    upper_limit DOUBLE PRECISION,
    UNIQUE (metric_uuid, threshold_uuid)
);

CREATE TABLE alert (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    boundary_uuid TEXT NOT NULL UNIQUE REFERENCES boundary (uuid) ON DELETE CASCADE,
    side TEXT NOT NULL CHECK (side IN ('lower', 'upper')),
    status TEXT NOT NULL CHECK (status IN ('active', 'dismissed')),
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL
);
CREATE INDEX alert_by_project ON alert (project_uuid, status, created);
