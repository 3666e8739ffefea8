-- Projects: each owns its benchmarks and is one repository of the OCI registry.

CREATE TABLE project (
    uuid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    slug TEXT NOT NULL UNIQUE,
    archived BIGINT,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL
);
