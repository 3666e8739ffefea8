//! Manifest endpoints of the registry (`HEAD`/`GET`/`PUT`/`DELETE` by tag or digest,
//! for OCI and Docker manifests and indexes), tag listing, the referrers API and the
//! catalog.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bencher_oci::digest::{Digest, DigestHasher};
use bencher_oci::manifest::{Manifest, OCI_IMAGE_INDEX};
use bencher_oci::reference::ManifestRef;
use bencher_types::JsonProject;
use futures::StreamExt;
use serde_json::{Value, json};

use super::error::RegistryError;
use super::{Call, authenticate, param};
use crate::http::AppState;
use crate::store::registry::{ManifestRow, NewManifest, PutManifestError};

fn parse_reference(reference: &str) -> Result<ManifestRef, RegistryError> {
    reference.parse().map_err(|e| {
        if reference.contains(':') {
            RegistryError::digest_invalid(format!("`{reference}`: {e}"))
        } else {
            RegistryError::Oci {
                status: StatusCode::BAD_REQUEST,
                code: "TAG_INVALID",
                message: format!("`{reference}`: {e}"),
            }
        }
    })
}

/// `/v2/<name>/manifests/<reference>`.
pub async fn manifest(
    state: &AppState,
    project: &JsonProject,
    name: &str,
    reference: &str,
    call: Call,
) -> Result<Response, RegistryError> {
    let reference = parse_reference(reference)?;
    match call.method {
        Method::PUT => put(state, project, name, reference, call).await,
        Method::DELETE => {
            let deleted = match &reference {
                ManifestRef::Digest(digest) => {
                    state
                        .store
                        .delete_manifest(project.uuid, &digest.to_string())
                        .await?
                }
                ManifestRef::Tag(tag) => state.store.delete_tag(project.uuid, tag.as_str()).await?,
            };
            if deleted {
                Ok(StatusCode::ACCEPTED.into_response())
            } else {
                Err(RegistryError::manifest_unknown(format!(
                    "manifest `{reference}` is unknown"
                )))
            }
        }
        _ => {
            let row = match &reference {
                ManifestRef::Digest(digest) => {
                    state
                        .store
                        .manifest_by_digest(project.uuid, &digest.to_string())
                        .await?
                }
                ManifestRef::Tag(tag) => {
                    state
                        .store
                        .manifest_by_tag(project.uuid, tag.as_str())
                        .await?
                }
            }
            .ok_or_else(|| {
                RegistryError::manifest_unknown(format!("manifest `{reference}` is unknown"))
            })?;
            let mut headers = HeaderMap::new();
            set(&mut headers, "content-type", &row.media_type);
            set(&mut headers, "docker-content-digest", &row.digest);
            headers.insert("content-length", HeaderValue::from(row.size));
            if call.method == Method::HEAD {
                return Ok((StatusCode::OK, headers).into_response());
            }
            let digest: Digest = row.digest.parse().map_err(RegistryError::internal)?;
            let blob = state.blobs.get(&digest, None).await?.ok_or_else(|| {
                RegistryError::manifest_unknown(format!(
                    "manifest {digest} is missing from storage"
                ))
            })?;
            Ok((StatusCode::OK, headers, Body::from_stream(blob.stream)).into_response())
        }
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Reads at most `limit` bytes of body; more is 413 `SIZE_INVALID`.
async fn read_limited(body: Body, limit: u64) -> Result<Vec<u8>, RegistryError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::manifest_invalid(format!("reading the manifest failed: {e}"))
        })?;
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(RegistryError::too_large(format!(
                "manifests are limited to {limit} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn put(
    state: &AppState,
    project: &JsonProject,
    name: &str,
    reference: ManifestRef,
    call: Call,
) -> Result<Response, RegistryError> {
    let content_type = call
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let bytes = read_limited(call.body, state.limits.max_manifest_size).await?;
    let algorithm = match &reference {
        ManifestRef::Digest(digest) => digest.algorithm(),
        ManifestRef::Tag(_) => bencher_oci::digest::DigestAlgorithm::Sha256,
    };
    let mut hasher = DigestHasher::new(algorithm);
    hasher.update(&bytes);
    let digest = hasher.finish();
    if let ManifestRef::Digest(expected) = &reference
        && *expected != digest
    {
        return Err(RegistryError::digest_invalid(format!(
            "the manifest's digest is {digest}, not {expected}"
        )));
    }
    let manifest = Manifest::parse(content_type.as_deref(), &bytes)
        .map_err(|e| RegistryError::manifest_invalid(crate::error_chain(&e)))?;
    let record = NewManifest {
        digest: digest.to_string(),
        media_type: manifest.media_type().to_owned(),
        size: bytes.len() as u64,
        artifact_type: manifest.artifact_type().map(str::to_owned),
        subject: manifest.subject().map(|s| s.digest.to_string()),
        annotations: (!manifest.annotations().is_empty())
            .then(|| serde_json::to_string(manifest.annotations()).unwrap_or_default()),
        blobs: manifest
            .blobs()
            .iter()
            .map(|d| d.digest.to_string())
            .collect(),
        manifests: manifest
            .children()
            .iter()
            .map(|d| d.digest.to_string())
            .collect(),
    };
    // Bytes first, then the record: a crash in between leaves an unreferenced blob that
    // garbage collection removes, never a record without bytes.
    let size = bytes.len() as u64;
    let body =
        futures::stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(bytes)) });
    state.blobs.put(&digest, body, size).await?;
    let tag = match &reference {
        ManifestRef::Tag(tag) => Some(tag.as_str()),
        ManifestRef::Digest(_) => None,
    };
    match state
        .store
        .put_manifest(project.uuid, &record, tag, state.clock.now())
        .await
    {
        Ok(()) => {}
        Err(PutManifestError::Missing { missing }) => {
            return Err(RegistryError::manifest_blob_unknown(format!(
                "the manifest references content not in `{name}`: {}",
                missing.join(", ")
            )));
        }
        Err(PutManifestError::Store(error)) => return Err(error.into()),
    }
    let mut headers = HeaderMap::new();
    set(
        &mut headers,
        "location",
        &format!("/v2/{name}/manifests/{digest}"),
    );
    set(&mut headers, "docker-content-digest", &digest.to_string());
    if let Some(subject) = &record.subject {
        set(&mut headers, "oci-subject", subject);
    }
    Ok((StatusCode::CREATED, headers).into_response())
}

/// A page of a sorted list after `last`, at most `n` long, and whether more follow.
fn page<'a>(
    items: &'a [String],
    call_n: Option<&str>,
    last: Option<&str>,
) -> Result<(&'a [String], bool), RegistryError> {
    let start = match last {
        Some(last) => items.partition_point(|item| item.as_str() <= last),
        None => 0,
    };
    let rest = &items[start..];
    let n = match call_n {
        Some(n) => n.parse::<usize>().map_err(|_| RegistryError::Oci {
            status: StatusCode::BAD_REQUEST,
            code: "PAGINATION_NUMBER_INVALID",
            message: format!("`n` must be a whole number, got `{n}`"),
        })?,
        None => rest.len(),
    };
    let taken = &rest[..n.min(rest.len())];
    Ok((taken, taken.len() < rest.len()))
}

fn link_header(path: &str, n: Option<&str>, last: Option<&String>) -> Option<HeaderValue> {
    let last = last?;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("n", n.unwrap_or_default())
        .append_pair("last", last)
        .finish();
    HeaderValue::from_str(&format!("<{path}?{query}>; rel=\"next\"")).ok()
}

/// `GET /v2/<name>/tags/list` with `n` and `last`.
pub async fn tags(
    state: &AppState,
    project: &JsonProject,
    name: &str,
    query: &[(String, String)],
) -> Result<Response, RegistryError> {
    let all = state.store.tags(project.uuid).await?;
    let (tags, more) = page(&all, param(query, "n"), param(query, "last"))?;
    let mut headers = HeaderMap::new();
    if more
        && let Some(link) = link_header(
            &format!("/v2/{name}/tags/list"),
            param(query, "n"),
            tags.last(),
        )
    {
        headers.insert("link", link);
    }
    Ok((
        StatusCode::OK,
        headers,
        axum::Json(json!({ "name": name, "tags": tags })),
    )
        .into_response())
}

/// `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose subject
/// is `digest`, optionally filtered by `artifactType`.
pub async fn referrers(
    state: &AppState,
    project: &JsonProject,
    digest: &Digest,
    query: &[(String, String)],
) -> Result<Response, RegistryError> {
    let filter = param(query, "artifactType");
    let rows = state
        .store
        .referrers(project.uuid, &digest.to_string())
        .await?;
    let manifests: Vec<Value> = rows
        .iter()
        .filter(|row| filter.is_none_or(|wanted| row.artifact_type.as_deref() == Some(wanted)))
        .map(descriptor)
        .collect();
    let mut headers = HeaderMap::new();
    set(&mut headers, "content-type", OCI_IMAGE_INDEX);
    if filter.is_some() {
        set(&mut headers, "oci-filters-applied", "artifactType");
    }
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_IMAGE_INDEX, "manifests": manifests });
    Ok((StatusCode::OK, headers, index.to_string()).into_response())
}

fn descriptor(row: &ManifestRow) -> Value {
    let mut value = json!({ "mediaType": row.media_type, "digest": row.digest, "size": row.size });
    if let Some(artifact_type) = &row.artifact_type {
        value["artifactType"] = json!(artifact_type);
    }
    if let Some(annotations) = row
        .annotations
        .as_deref()
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
    {
        value["annotations"] = annotations;
    }
    value
}

/// `GET /v2/_catalog` with `n` and `last`: every repository, for admins.
pub async fn catalog(State(state): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let result = async {
        let grant = authenticate(&state, &headers, Some("registry:catalog:*")).await?;
        if !grant.catalog() {
            return Err(RegistryError::denied("the catalog is for admins"));
        }
        let query: Vec<(String, String)> =
            form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let all = state.store.repositories().await?;
        let (names, more) = page(&all, param(&query, "n"), param(&query, "last"))?;
        let mut response_headers = HeaderMap::new();
        if more && let Some(link) = link_header("/v2/_catalog", param(&query, "n"), names.last()) {
            response_headers.insert("link", link);
        }
        Ok((
            StatusCode::OK,
            response_headers,
            axum::Json(json!({ "repositories": names })),
        )
            .into_response())
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let items: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(page(&items, Some("2"), None).unwrap(), (&items[0..2], true));
        assert_eq!(
            page(&items, Some("2"), Some("b")).unwrap(),
            (&items[2..4], false)
        );
        assert_eq!(
            page(&items, None, Some("bb")).unwrap(),
            (&items[2..4], false)
        );
        assert_eq!(page(&items, Some("0"), None).unwrap(), (&items[0..0], true));
        assert!(page(&items, Some("x"), None).is_err());
    }
}
