//! Registry housekeeping: garbage collection of blobs no manifest needs, and the sweep
//! of stale upload sessions. Both are safe to run while clients push.

use std::time::Duration;

use bencher_oci::digest::Digest;
use chrono::{DateTime, TimeDelta, Utc};

use crate::blobs::{BlobError, BlobStore};
use crate::store::{Store, StoreError};

/// Blobs untouched for less than this survive garbage collection: a client may have
/// pushed them and not yet the manifest that references them.
pub const GC_GRACE: Duration = Duration::from_secs(3600);
/// Upload sessions untouched for this long are abandoned.
pub const UPLOAD_MAX_IDLE: Duration = Duration::from_secs(24 * 3600);

/// What one garbage collection removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct GcReport {
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub uploads_swept: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("garbage collection failed in the database")]
    Store(#[from] StoreError),
    #[error("garbage collection failed in blob storage")]
    Blobs(#[from] BlobError),
}

fn cutoff(now: DateTime<Utc>, age: Duration) -> DateTime<Utc> {
    now - TimeDelta::from_std(age).unwrap_or(TimeDelta::MAX)
}

/// Deletes blobs that no manifest references and nothing touched within `grace`, then
/// sweeps stale upload sessions.
pub async fn collect_garbage(
    store: &Store,
    blobs: &BlobStore,
    now: DateTime<Utc>,
    grace: Duration,
) -> Result<GcReport, GcError> {
    let before = cutoff(now, grace);
    let mut report = GcReport::default();
    for digest in store.unreferenced_blobs(before).await? {
        // The record goes first, under the same conditions re-checked by the database: a
        // manifest that took the blob meanwhile keeps it.
        if !store.forget_unreferenced_blob(&digest, before).await? {
            continue;
        }
        let Ok(parsed) = digest.parse::<Digest>() else {
            tracing::warn!(%digest, "unparseable digest in the blob records; left in storage");
            continue;
        };
        let size = blobs.size(&parsed).await?.unwrap_or_default();
        if blobs.delete(&parsed).await? {
            report.blobs_deleted += 1;
            report.bytes_freed += size;
        }
    }
    report.uploads_swept = sweep_uploads(store, blobs, now, UPLOAD_MAX_IDLE).await?;
    tracing::info!(
        blobs = report.blobs_deleted,
        bytes = report.bytes_freed,
        uploads = report.uploads_swept,
        "registry garbage collected"
    );
    Ok(report)
}

/// Cancels upload sessions idle for `age`: those the database knows, and data of
/// sessions whose record never committed (a crash between the two).
pub async fn sweep_uploads(
    store: &Store,
    blobs: &BlobStore,
    now: DateTime<Utc>,
    age: Duration,
) -> Result<u64, GcError> {
    let mut swept = 0;
    for session in store.stale_uploads(cutoff(now, age)).await? {
        blobs.upload_cancel(session).await?;
        store.delete_upload(session).await?;
        swept += 1;
    }
    for session in blobs.stale_uploads(age).await? {
        blobs.upload_cancel(session).await?;
        if store.delete_upload(session).await? {
            swept += 1;
        }
    }
    Ok(swept)
}
