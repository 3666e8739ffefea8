//! Blob endpoints of the registry: `HEAD`/`GET` (with `Range`)/`DELETE` of blobs, and
//! upload sessions: start (also monolithic with `?digest=` and cross-repository mount
//! with `?mount=&from=`), chunked `PATCH` with `Content-Range` checks, status, finish
//! with digest verification, cancel.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bencher_oci::digest::Digest;
use bencher_types::JsonProject;

use super::error::{RegistryError, upload_range};
use super::{Call, Grant, parse_digest};
use crate::http::AppState;

fn headers<const N: usize>(pairs: [(&'static str, String); N]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            map.insert(name, value);
        }
    }
    map
}

fn created_blob(name: &str, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        headers([
            ("location", format!("/v2/{name}/blobs/{digest}")),
            ("docker-content-digest", digest.to_string()),
        ]),
    )
        .into_response()
}

fn upload_status(status: StatusCode, name: &str, session: uuid::Uuid, size: u64) -> Response {
    (
        status,
        headers([
            ("location", format!("/v2/{name}/blobs/uploads/{session}")),
            ("range", upload_range(size)),
            ("docker-upload-uuid", session.to_string()),
        ]),
    )
        .into_response()
}

/// `HEAD`, `GET` and `DELETE /v2/<name>/blobs/<digest>`.
pub async fn blob(
    state: &AppState,
    project: &JsonProject,
    digest: &Digest,
    call: Call,
) -> Result<Response, RegistryError> {
    let key = digest.to_string();
    if call.method == Method::DELETE {
        return if state.store.unlink_blob(project.uuid, &key).await? {
            Ok(StatusCode::ACCEPTED.into_response())
        } else {
            Err(RegistryError::blob_unknown(format!(
                "blob {digest} is not in this repository"
            )))
        };
    }
    let size = state
        .store
        .repository_blob(project.uuid, &key)
        .await?
        .ok_or_else(|| {
            RegistryError::blob_unknown(format!("blob {digest} is not in this repository"))
        })?;
    let mut response_headers = headers([
        ("docker-content-digest", key.clone()),
        ("content-type", "application/octet-stream".to_owned()),
        ("accept-ranges", "bytes".to_owned()),
    ]);
    if call.method == Method::HEAD {
        response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        return Ok((StatusCode::OK, response_headers).into_response());
    }
    let range = match call
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        Some(value) => match parse_range(value, size) {
            Some(range) => Some(range),
            None => {
                let mut response = RegistryError::Oci {
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                    code: "BLOB_UNKNOWN",
                    message: format!(
                        "range `{value}` cannot be satisfied by a blob of {size} bytes"
                    ),
                }
                .into_response();
                if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return Ok(response);
            }
        },
        None => None,
    };
    let stream = state.blobs.get(digest, range).await?.ok_or_else(|| {
        RegistryError::blob_unknown(format!("blob {digest} is missing from storage"))
    })?;
    let (status, length) = match range {
        Some((start, end)) => {
            if let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{size}")) {
                response_headers.insert(header::CONTENT_RANGE, value);
            }
            (StatusCode::PARTIAL_CONTENT, end - start + 1)
        }
        None => (StatusCode::OK, size),
    };
    response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    Ok((status, response_headers, Body::from_stream(stream.stream)).into_response())
}

/// An inclusive byte range within a blob of `size` bytes, from a single-range `Range`
/// header (`bytes=a-b`, `bytes=a-`, `bytes=-n`); `None` when it cannot be satisfied.
fn parse_range(value: &str, size: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = match (start.trim(), end.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.checked_sub(n.min(size))?, size - 1)
        }
        (start, "") => (start.parse().ok()?, size - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

/// `POST /v2/<name>/blobs/uploads/`: a mount, a monolithic upload, or a new session.
pub async fn start_upload(
    state: &AppState,
    grant: &Grant,
    project: &JsonProject,
    name: &str,
    call: Call,
) -> Result<Response, RegistryError> {
    let now = state.clock.now();
    if let (Some(mount), Some(from)) = (call.param("mount"), call.param("from")) {
        let digest = parse_digest(mount)?;
        if let Some(size) = mountable(state, grant, from, &digest).await? {
            state
                .store
                .link_blob(project.uuid, &digest.to_string(), size, now)
                .await?;
            return Ok(created_blob(name, &digest));
        }
        // Not mountable from there: the spec says to fall back to a plain upload session.
    }
    if let Some(digest) = call.param("digest") {
        let digest = parse_digest(digest)?;
        let size = state
            .blobs
            .put(
                &digest,
                call.body.into_data_stream(),
                state.limits.max_blob_size,
            )
            .await?;
        state
            .store
            .link_blob(project.uuid, &digest.to_string(), size, now)
            .await?;
        return Ok(created_blob(name, &digest));
    }
    let session = uuid::Uuid::new_v4();
    state.blobs.upload_start(session).await?;
    state
        .store
        .create_upload(session, project.uuid, now)
        .await?;
    Ok(upload_status(StatusCode::ACCEPTED, name, session, 0))
}

/// The size of `digest` in repository `from`, if the caller may pull it from there.
async fn mountable(
    state: &AppState,
    grant: &Grant,
    from: &str,
    digest: &Digest,
) -> Result<Option<u64>, RegistryError> {
    let Some(source) = state.store.repository(from).await? else {
        return Ok(None);
    };
    if !grant.allows(&source, false) {
        return Ok(None);
    }
    Ok(state
        .store
        .repository_blob(source.uuid, &digest.to_string())
        .await?)
}

/// `GET`, `PATCH`, `PUT` and `DELETE /v2/<name>/blobs/uploads/<session>`.
pub async fn upload(
    state: &AppState,
    project: &JsonProject,
    name: &str,
    session: uuid::Uuid,
    call: Call,
) -> Result<Response, RegistryError> {
    if state.store.upload(session, project.uuid).await?.is_none() {
        return Err(RegistryError::blob_upload_unknown(format!(
            "upload {session} is unknown"
        )));
    }
    let size = state.blobs.upload_size(session).await?.ok_or_else(|| {
        RegistryError::blob_upload_unknown(format!("upload {session} has no data"))
    })?;
    let max = state.limits.max_blob_size;
    match call.method {
        Method::GET => Ok(upload_status(StatusCode::NO_CONTENT, name, session, size)),
        Method::DELETE => {
            state.blobs.upload_cancel(session).await?;
            state.store.delete_upload(session).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::PATCH => {
            check_content_range(&call.headers, size)?;
            let new_size = state
                .blobs
                .upload_append(session, size, call.body.into_data_stream(), max)
                .await?;
            state.store.touch_upload(session, state.clock.now()).await?;
            Ok(upload_status(StatusCode::ACCEPTED, name, session, new_size))
        }
        _ => {
            let digest = parse_digest(call.param("digest").ok_or_else(|| {
                RegistryError::digest_invalid("finishing an upload needs `?digest=`")
            })?)?;
            check_content_range(&call.headers, size)?;
            state
                .blobs
                .upload_append(session, size, call.body.into_data_stream(), max)
                .await?;
            let finished = state.blobs.upload_finish(session, &digest).await;
            // Verified or not, the session is over.
            state.store.delete_upload(session).await?;
            let size = finished?;
            state
                .store
                .link_blob(project.uuid, &digest.to_string(), size, state.clock.now())
                .await?;
            Ok(created_blob(name, &digest))
        }
    }
}

/// A chunk's `Content-Range: <start>-<end>` must start where the upload stands and agree
/// with `Content-Length`; otherwise 416 with the current range.
fn check_content_range(headers: &HeaderMap, size: u64) -> Result<(), RegistryError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(());
    };
    let refuse = |why: String| RegistryError::RangeNotSatisfiable {
        message: why,
        range: Some(upload_range(size)),
    };
    let text = value.to_str().unwrap_or_default().trim();
    let text = text.strip_prefix("bytes ").unwrap_or(text);
    let (start, end) = text
        .split_once('-')
        .and_then(|(s, e)| {
            Some((
                s.trim().parse::<u64>().ok()?,
                e.split('/').next()?.trim().parse::<u64>().ok()?,
            ))
        })
        .ok_or_else(|| refuse(format!("malformed Content-Range `{text}`")))?;
    if start != size || end < start {
        return Err(refuse(format!(
            "chunk {start}-{end} does not continue the upload, which has {size} bytes"
        )));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if length.is_some_and(|length| length != end - start + 1) {
        return Err(refuse(format!(
            "Content-Range {start}-{end} disagrees with Content-Length"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=95-200", 100), Some((95, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=9-0", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }

    #[test]
    fn content_ranges() {
        let mut h = HeaderMap::new();
        assert!(check_content_range(&h, 10).is_ok());
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("10-19"));
        assert!(check_content_range(&h, 10).is_ok());
        assert!(check_content_range(&h, 0).is_err());
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        assert!(check_content_range(&h, 10).is_err());
        h.insert(header::CONTENT_RANGE, HeaderValue::from_static("garbage"));
        assert!(check_content_range(&h, 10).is_err());
    }
}
