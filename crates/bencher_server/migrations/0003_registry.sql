-- The OCI registry: content-addressed blobs (bytes live in blob storage), the blobs and
-- manifests each repository (project) holds, the references between them, tags, and
-- upload sessions.

-- Blobs whose bytes are complete and verified in blob storage. Manifests are stored as
-- blobs too. `touched` is when the blob was last pushed or referenced by a manifest:
-- garbage collection only deletes blobs untouched for its grace period, with a
-- conditional delete, so a manifest referencing a blob wins the race against it.
CREATE TABLE oci_blob (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL CHECK (size >= 0),
    touched BIGINT NOT NULL
);

-- A blob is visible in a repository only once it was pushed or mounted there.
CREATE TABLE oci_repository_blob (
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    digest TEXT NOT NULL REFERENCES oci_blob (digest) ON DELETE CASCADE,
    created BIGINT NOT NULL,
    PRIMARY KEY (project_uuid, digest)
);

CREATE TABLE oci_manifest (
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    digest TEXT NOT NULL REFERENCES oci_blob (digest),
    media_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    -- For the referrers API: the manifest's artifactType (or its config's media type)
    -- and the digest of the manifest it refers to.
    artifact_type TEXT,
    subject TEXT,
    annotations TEXT,
    created BIGINT NOT NULL,
    PRIMARY KEY (project_uuid, digest)
);

CREATE INDEX oci_manifest_by_subject ON oci_manifest (project_uuid, subject);

-- What a manifest needs: its config and layers (kind 'blob') or, for an index, its
-- child manifests (kind 'manifest'). Garbage collection keeps every referenced blob.
CREATE TABLE oci_manifest_reference (
    project_uuid TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('blob', 'manifest')),
    child_digest TEXT NOT NULL,
    PRIMARY KEY (project_uuid, manifest_digest, kind, child_digest),
    FOREIGN KEY (project_uuid, manifest_digest) REFERENCES oci_manifest (project_uuid, digest) ON DELETE CASCADE
);

CREATE INDEX oci_manifest_reference_by_child ON oci_manifest_reference (child_digest);

CREATE TABLE oci_tag (
    project_uuid TEXT NOT NULL,
    name TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    modified BIGINT NOT NULL,
    PRIMARY KEY (project_uuid, name),
    FOREIGN KEY (project_uuid, manifest_digest) REFERENCES oci_manifest (project_uuid, digest) ON DELETE CASCADE
);

-- Upload sessions; their bytes are in blob storage, so both survive a restart.
CREATE TABLE oci_upload (
    uuid TEXT PRIMARY KEY,
    project_uuid TEXT NOT NULL REFERENCES project (uuid) ON DELETE CASCADE,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL
);
