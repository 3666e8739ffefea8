//! The OCI registry's records: which verified blobs exist, which blobs and manifests
//! each repository (project) holds, references between them, tags, upload sessions,
//! the key that signs registry tokens, and what garbage collection may delete. The
//! bytes themselves live in blob storage (`crate::blobs`).

use bencher_types::{JsonProject, ProjectUuid, ResourceId};
use chrono::{DateTime, Utc};
use rand::RngCore;

use super::{Store, StoreError, from_millis, to_millis};

/// `server_meta` key of the HMAC key that signs registry tokens, shared by every server
/// process on one database.
const TOKEN_KEY: &str = "oci_token_key";

/// A manifest as the registry serves it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub size: i64,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
}

/// What a manifest PUT records, after the caller parsed and stored its bytes.
#[derive(Debug, Clone)]
pub struct NewManifest {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    /// JSON object of the manifest's annotations, for referrers.
    pub annotations: Option<String>,
    /// Config and layers: must already be in the repository.
    pub blobs: Vec<String>,
    /// Child manifests of an index: must already be in the repository.
    pub manifests: Vec<String>,
}

/// Why a manifest PUT was refused by the store.
#[derive(Debug, thiserror::Error)]
pub enum PutManifestError {
    #[error("the manifest references content this repository does not have: {}", missing.join(", "))]
    Missing { missing: Vec<String> },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for PutManifestError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

#[derive(Debug, Clone)]
pub struct Upload {
    pub uuid: uuid::Uuid,
    pub project: ProjectUuid,
    pub created: DateTime<Utc>,
}

fn size_column(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

impl Store {
    /// The HMAC key for registry tokens: created once per database, then read back by
    /// every process, so a token one process issued is valid on all of them.
    pub async fn registry_token_key(&self) -> Result<Vec<u8>, StoreError> {
        let mut candidate = [0u8; 32];
        rand::rng().fill_bytes(&mut candidate);
        let hex: String = candidate.iter().map(|b| format!("{b:02x}")).collect();
        sqlx::query(
            "INSERT INTO server_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(TOKEN_KEY)
        .bind(hex)
        .execute(&self.pool)
        .await?;
        let stored: String = sqlx::query_scalar("SELECT value FROM server_meta WHERE key = $1")
            .bind(TOKEN_KEY)
            .fetch_one(&self.pool)
            .await?;
        (0..stored.len())
            .step_by(2)
            .map(|i| {
                stored
                    .get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| {
                        StoreError::corrupt("server_meta", "registry token key is not hex")
                    })
            })
            .collect()
    }

    /// The project a registry repository name (slug or UUID) stands for.
    pub async fn repository(&self, name: &str) -> Result<Option<JsonProject>, StoreError> {
        let Ok(id) = name.parse::<ResourceId>() else {
            return Ok(None);
        };
        match self.get_project(&id).await {
            Ok(project) => Ok(Some(project)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Records a verified blob and makes it visible in the repository.
    pub async fn link_blob(
        &self,
        project: ProjectUuid,
        digest: &str,
        size: u64,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO oci_blob (digest, size, touched) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO UPDATE SET touched = $3",
        )
        .bind(digest.to_owned())
        .bind(size_column(size))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO oci_repository_blob (project_uuid, digest, created) VALUES ($1, $2, $3) \
             ON CONFLICT (project_uuid, digest) DO NOTHING",
        )
        .bind(project.to_string())
        .bind(digest.to_owned())
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The size of a blob if the repository holds it.
    pub async fn repository_blob(
        &self,
        project: ProjectUuid,
        digest: &str,
    ) -> Result<Option<u64>, StoreError> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT oci_blob.size FROM oci_blob JOIN oci_repository_blob \
             ON oci_repository_blob.digest = oci_blob.digest \
             WHERE oci_repository_blob.project_uuid = $1 AND oci_blob.digest = $2",
        )
        .bind(project.to_string())
        .bind(digest.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        Ok(size.map(|s| u64::try_from(s).unwrap_or_default()))
    }

    /// Removes a blob from a repository. Its bytes stay until garbage collection finds
    /// nothing else needs them.
    pub async fn unlink_blob(
        &self,
        project: ProjectUuid,
        digest: &str,
    ) -> Result<bool, StoreError> {
        let deleted =
            sqlx::query("DELETE FROM oci_repository_blob WHERE project_uuid = $1 AND digest = $2")
                .bind(project.to_string())
                .bind(digest.to_owned())
                .execute(&self.pool)
                .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Records a manifest whose bytes are already in blob storage, its references and
    /// optionally a tag, in one transaction. Refused when a referenced blob or child
    /// manifest is not in the repository.
    pub async fn put_manifest(
        &self,
        project: ProjectUuid,
        manifest: &NewManifest,
        tag: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), PutManifestError> {
        let project_id = project.to_string();
        let mut tx = self.begin_write().await?;
        let mut missing = Vec::new();
        for digest in &manifest.blobs {
            // Touching the blob both checks it is in the repository and keeps garbage
            // collection (a conditional delete on `touched`) off it.
            let touched = sqlx::query(
                "UPDATE oci_blob SET touched = $1 WHERE digest = $2 AND EXISTS \
                 (SELECT 1 FROM oci_repository_blob WHERE project_uuid = $3 AND digest = $2)",
            )
            .bind(to_millis(now))
            .bind(digest)
            .bind(&project_id)
            .execute(&mut *tx)
            .await?;
            if touched.rows_affected() == 0 {
                missing.push(digest.clone());
            }
        }
        for digest in &manifest.manifests {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM oci_manifest WHERE project_uuid = $1 AND digest = $2",
            )
            .bind(&project_id)
            .bind(digest)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                missing.push(digest.clone());
            }
        }
        if !missing.is_empty() {
            return Err(PutManifestError::Missing { missing });
        }
        sqlx::query(
            "INSERT INTO oci_blob (digest, size, touched) VALUES ($1, $2, $3) \
             ON CONFLICT (digest) DO UPDATE SET touched = $3",
        )
        .bind(&manifest.digest)
        .bind(size_column(manifest.size))
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO oci_manifest (project_uuid, digest, media_type, size, artifact_type, subject, annotations, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (project_uuid, digest) DO NOTHING",
        )
        .bind(&project_id)
        .bind(&manifest.digest)
        .bind(&manifest.media_type)
        .bind(size_column(manifest.size))
        .bind(manifest.artifact_type.clone())
        .bind(manifest.subject.clone())
        .bind(manifest.annotations.clone())
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        let references = manifest
            .blobs
            .iter()
            .map(|d| ("blob", d))
            .chain(manifest.manifests.iter().map(|d| ("manifest", d)));
        for (kind, child) in references {
            sqlx::query(
                "INSERT INTO oci_manifest_reference (project_uuid, manifest_digest, kind, child_digest) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (project_uuid, manifest_digest, kind, child_digest) DO NOTHING",
            )
            .bind(&project_id)
            .bind(&manifest.digest)
            .bind(kind)
            .bind(child)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(tag) = tag {
            sqlx::query(
                "INSERT INTO oci_tag (project_uuid, name, manifest_digest, modified) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (project_uuid, name) DO UPDATE SET manifest_digest = $3, modified = $4",
            )
            .bind(&project_id)
            .bind(tag.to_owned())
            .bind(&manifest.digest)
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A manifest of the repository by digest.
    pub async fn manifest_by_digest(
        &self,
        project: ProjectUuid,
        digest: &str,
    ) -> Result<Option<ManifestRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT digest, media_type, size, artifact_type, annotations FROM oci_manifest \
             WHERE project_uuid = $1 AND digest = $2",
        )
        .bind(project.to_string())
        .bind(digest.to_owned())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The manifest a tag points at.
    pub async fn manifest_by_tag(
        &self,
        project: ProjectUuid,
        tag: &str,
    ) -> Result<Option<ManifestRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT oci_manifest.digest, oci_manifest.media_type, oci_manifest.size, \
             oci_manifest.artifact_type, oci_manifest.annotations \
             FROM oci_tag JOIN oci_manifest ON oci_manifest.project_uuid = oci_tag.project_uuid \
             AND oci_manifest.digest = oci_tag.manifest_digest \
             WHERE oci_tag.project_uuid = $1 AND oci_tag.name = $2",
        )
        .bind(project.to_string())
        .bind(tag.to_owned())
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Deletes a manifest and every tag pointing at it.
    pub async fn delete_manifest(
        &self,
        project: ProjectUuid,
        digest: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // Explicit, not only through the foreign keys' cascades: SQLite needs them enabled
        // and this must hold whatever the connection's settings.
        sqlx::query("DELETE FROM oci_tag WHERE project_uuid = $1 AND manifest_digest = $2")
            .bind(project.to_string())
            .bind(digest.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "DELETE FROM oci_manifest_reference WHERE project_uuid = $1 AND manifest_digest = $2",
        )
        .bind(project.to_string())
        .bind(digest.to_owned())
        .execute(&mut *tx)
        .await?;
        let deleted =
            sqlx::query("DELETE FROM oci_manifest WHERE project_uuid = $1 AND digest = $2")
                .bind(project.to_string())
                .bind(digest.to_owned())
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(deleted.rows_affected() > 0)
    }

    pub async fn delete_tag(&self, project: ProjectUuid, tag: &str) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM oci_tag WHERE project_uuid = $1 AND name = $2")
            .bind(project.to_string())
            .bind(tag.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Every tag of the repository, in byte order (the order the distribution spec
    /// means by lexical; sorted here because database collations differ).
    pub async fn tags(&self, project: ProjectUuid) -> Result<Vec<String>, StoreError> {
        let mut tags: Vec<String> =
            sqlx::query_scalar("SELECT name FROM oci_tag WHERE project_uuid = $1")
                .bind(project.to_string())
                .fetch_all(&self.pool)
                .await?;
        tags.sort_unstable();
        Ok(tags)
    }

    /// Manifests whose subject is `digest`, for the referrers API.
    pub async fn referrers(
        &self,
        project: ProjectUuid,
        digest: &str,
    ) -> Result<Vec<ManifestRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT digest, media_type, size, artifact_type, annotations FROM oci_manifest \
             WHERE project_uuid = $1 AND subject = $2 ORDER BY created, digest",
        )
        .bind(project.to_string())
        .bind(digest.to_owned())
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every repository name (project slug), in byte order, for the catalog.
    pub async fn repositories(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> =
            sqlx::query_scalar("SELECT slug FROM project WHERE archived IS NULL")
                .fetch_all(&self.pool)
                .await?;
        names.sort_unstable();
        Ok(names)
    }

    pub async fn create_upload(
        &self,
        uuid: uuid::Uuid,
        project: ProjectUuid,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO oci_upload (uuid, project_uuid, created, modified) VALUES ($1, $2, $3, $3)")
            .bind(uuid.to_string())
            .bind(project.to_string())
            .bind(to_millis(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An upload session of this repository.
    pub async fn upload(
        &self,
        uuid: uuid::Uuid,
        project: ProjectUuid,
    ) -> Result<Option<Upload>, StoreError> {
        let created: Option<i64> = sqlx::query_scalar(
            "SELECT created FROM oci_upload WHERE uuid = $1 AND project_uuid = $2",
        )
        .bind(uuid.to_string())
        .bind(project.to_string())
        .fetch_optional(&self.pool)
        .await?;
        created
            .map(|created| {
                Ok(Upload {
                    uuid,
                    project,
                    created: from_millis("oci_upload", created)?,
                })
            })
            .transpose()
    }

    pub async fn touch_upload(
        &self,
        uuid: uuid::Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE oci_upload SET modified = $1 WHERE uuid = $2")
            .bind(to_millis(now))
            .bind(uuid.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_upload(&self, uuid: uuid::Uuid) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM oci_upload WHERE uuid = $1")
            .bind(uuid.to_string())
            .execute(&self.pool)
            .await?;
        Ok(deleted.rows_affected() > 0)
    }

    /// Upload sessions untouched since `before`.
    pub async fn stale_uploads(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<uuid::Uuid>, StoreError> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT uuid FROM oci_upload WHERE modified < $1")
                .bind(to_millis(before))
                .fetch_all(&self.pool)
                .await?;
        ids.iter()
            .map(|id| super::parse_column("oci_upload", "uuid", id))
            .collect()
    }

    /// Blobs untouched since `before` that no manifest references and that are no
    /// manifest themselves: what garbage collection deletes.
    pub async fn unreferenced_blobs(
        &self,
        before: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar(&format!("SELECT digest FROM oci_blob WHERE {UNREFERENCED}"))
                .bind(to_millis(before))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Whether any blob record names `digest` (so its bytes must stay).
    pub async fn blob_known(&self, digest: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM oci_blob WHERE digest = $1")
            .bind(digest.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// Forgets a blob if it is still unreferenced and untouched since `before`; the
    /// condition is re-checked by the delete itself, so a manifest that referenced the
    /// blob meanwhile keeps it. Returns whether it was forgotten (then its bytes go).
    pub async fn forget_unreferenced_blob(
        &self,
        digest: &str,
        before: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query(&format!(
            "DELETE FROM oci_blob WHERE {UNREFERENCED} AND digest = $2"
        ))
        .bind(to_millis(before))
        .bind(digest.to_owned())
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM oci_repository_blob WHERE digest = $1")
            .bind(digest.to_owned())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// `oci_blob` rows garbage collection may delete; `$1` is the grace cutoff.
const UNREFERENCED: &str = "touched < $1 \
    AND NOT EXISTS (SELECT 1 FROM oci_manifest_reference r WHERE r.kind = 'blob' AND r.child_digest = oci_blob.digest) \
    AND NOT EXISTS (SELECT 1 FROM oci_manifest m WHERE m.digest = oci_blob.digest)";
