//! A job's output as the runner reported it: one JSON document `{results, error}` per
//! terminal message, stored in blob storage under its SHA-256 digest before the job's
//! status changes, and read back for `GET /v0/projects/{project}/jobs/{job}`. Blob IO
//! only (through `crate::blobs`).
//!
//! Output blobs share the content-addressed namespace of registry blobs but have no
//! registry record, so the registry cannot serve them and its garbage collection (which
//! works from registry records) never deletes them.

use bencher_oci::digest::Digest;
use bencher_types::protocol::IterationResult;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::blobs::{BlobError, BlobStore};

/// What the runner reported at the end of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDocument {
    /// Per iteration: exit code, stdout, stderr and output files.
    pub results: Vec<IterationResult>,
    /// The runner's error, with `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot encode the job output")]
    Encode(#[source] serde_json::Error),
    #[error("the job output is recorded under `{0}`, which is not a digest")]
    Digest(String),
    #[error("cannot store or read the job output")]
    Blob(#[from] BlobError),
    #[error("the job output `{digest}` is larger than {limit} bytes")]
    TooLarge { digest: String, limit: u64 },
    #[error("the job output `{digest}` is not a valid output document")]
    Decode {
        digest: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Stores `output` durably and returns its digest (`sha256:…`), the key to record on the
/// job. Storing the same output twice stores it once.
pub async fn store_output(
    blobs: &BlobStore,
    output: &OutputDocument,
) -> Result<String, OutputError> {
    let bytes = Bytes::from(serde_json::to_vec(output).map_err(OutputError::Encode)?);
    let digest = Digest::sha256_of(&bytes);
    let size = bytes.len() as u64;
    blobs
        .put(
            &digest,
            futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) }),
            size,
        )
        .await?;
    Ok(digest.to_string())
}

/// Reads the output stored under `digest`; `None` when the blob is missing. Documents
/// over `limit` bytes are refused rather than buffered.
pub async fn read_output(
    blobs: &BlobStore,
    digest: &str,
    limit: u64,
) -> Result<Option<OutputDocument>, OutputError> {
    let parsed: Digest = digest
        .parse()
        .map_err(|_| OutputError::Digest(digest.to_owned()))?;
    let Some(blob) = blobs.get(&parsed, None).await? else {
        return Ok(None);
    };
    let too_large = || OutputError::TooLarge {
        digest: digest.to_owned(),
        limit,
    };
    if blob.size > limit {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(blob.size).unwrap_or_default());
    let mut stream = blob.stream;
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
        if bytes.len() as u64 > limit {
            return Err(too_large());
        }
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| OutputError::Decode {
            digest: digest.to_owned(),
            source,
        })
}
