//! `RegistryClient`: the OCI Distribution client shared by the CLI (push) and the
//! runner (pull). IO: HTTP to the registry's `/v2/` API and its token endpoint, and
//! reading blob sources from disk (in `body`).
//!
//! Every request carries the scope its operation needs, so authentication (`auth`)
//! can answer a 401 challenge with a token for exactly that scope and retry once.
//! Blob bodies stream both ways; only manifests, token responses and error bodies are
//! read whole, each with a size cap. Content fetched by digest is verified here for
//! manifests; blob streams are verified by the caller as it consumes them.

mod auth;
mod body;
mod error;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bencher_oci::digest::{Digest, DigestAlgorithm};
use bencher_oci::reference::{ManifestRef, RepositoryName};
use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LINK, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use url::Url;

pub use auth::RegistryCredential;
pub use body::BlobSource;
pub use error::RegistryError;

use auth::{Auth, Authorization, Scope};
use body::{Upload, watched};

/// Short enough that a wrong registry address fails fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest silence while reading an answer (and, in reqwest, while waiting for its
/// headers). Never applied to uploads, which `body` watches instead.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest manifest read; the OCI spec asks registries to accept at least 4 MiB,
/// and ours refuses more.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;
/// How much of an error body is kept for the message.
const MAX_ERROR_BODY: usize = 64 << 10;
/// How much of one page of a tag list is read.
const MAX_TAGS_PAGE: usize = 16 << 20;
/// A registry whose `Link` headers never end would otherwise loop forever.
const MAX_TAG_PAGES: usize = 10_000;
/// The digest header of registry answers.
const CONTENT_DIGEST: &str = "docker-content-digest";

/// Every manifest kind a pull can use, so registries that convert by `Accept` hand
/// back the original bytes (and so the original digest). A test checks these are the
/// bencher_oci constants; `concat!` cannot take them.
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// A manifest as the registry served it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// The exact bytes, whose digest is `digest`.
    pub bytes: Bytes,
    /// The Content-Type the registry sent, or the body's `mediaType` when the header
    /// was missing or generic; empty when neither said.
    pub media_type: String,
    /// The digest of `bytes`: verified against the reference when that was a digest,
    /// or against the registry's `Docker-Content-Digest` when it sent one.
    pub digest: Digest,
}

/// What a manifest `HEAD` tells without the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    pub digest: Digest,
    pub media_type: String,
    pub size: Option<u64>,
}

/// A blob being downloaded. The stream is not verified: the caller hashes it (see
/// `Digest::verifier`) as it writes it away.
pub struct BlobDownload {
    /// From Content-Length, when the registry sent it.
    pub size: Option<u64>,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

impl fmt::Debug for BlobDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobDownload")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What `push_blob` had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The bytes were sent.
    Uploaded,
    /// The repository already had the blob; nothing was sent.
    AlreadyPresent,
    /// The registry linked the blob from the `mount_from` repository; nothing was sent.
    Mounted,
}

/// A client of one OCI registry, such as a Bencher server's (`http://localhost:6610`).
///
/// Cheap to clone: clones share connection pools and the token cache.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// Requests without a large body: connect and read timeouts.
    http: reqwest::Client,
    /// Uploads: connect timeout only (see `body`).
    upload: reqwest::Client,
    registry: Url,
    auth: Auth,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.inner.registry.as_str())
            .field("auth", &self.inner.auth)
            .finish()
    }
}

/// A body read with a cap.
pub(crate) struct Limited {
    pub(crate) bytes: Vec<u8>,
    /// More was there than the cap allowed.
    pub(crate) truncated: bool,
}

/// Reads at most `limit` bytes of a response body.
pub(crate) async fn read_limited(
    mut response: Response,
    limit: usize,
) -> Result<Limited, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len() + chunk.len() > limit {
            let room = limit - bytes.len();
            bytes.extend_from_slice(&chunk[..room]);
            return Ok(Limited {
                bytes,
                truncated: true,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Limited {
        bytes,
        truncated: false,
    })
}

impl RegistryClient {
    /// A client of the registry at `registry` (scheme, host, port, and optionally a
    /// path prefix in front of `/v2/`).
    ///
    /// Fails when `registry` cannot be the base of the registry's URLs: not http(s), or
    /// carrying credentials, a query or a fragment.
    pub fn new(registry: Url, credential: RegistryCredential) -> Result<Self, RegistryError> {
        validate_registry(&registry)?;
        let setup = |source: reqwest::Error| RegistryError::Transport {
            method: "(setup)".to_owned(),
            url: registry.to_string(),
            source,
        };
        let http = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(setup)?;
        let upload = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(setup)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                upload,
                auth: Auth::new(credential, registry.clone()),
                registry,
            }),
        })
    }

    /// The registry's base URL.
    pub fn registry(&self) -> &Url {
        &self.inner.registry
    }

    /// `GET /v2/<name>/manifests/<reference>`: a manifest by tag or digest. When
    /// `reference` is a digest the bytes are verified against it.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &ManifestRef,
    ) -> Result<FetchedManifest, RegistryError> {
        let name = repository_name(repository)?;
        let url = self.url(&name, &["manifests", &reference.to_string()])?;
        let scope = Scope::pull(name.as_str());
        let response = self
            .execute(Method::GET, &url, &scope, &accept_manifests, None)
            .await?;
        let response = expect(response, &[StatusCode::OK]).await?;
        self.read_manifest(response, &name, reference).await
    }

    /// `HEAD /v2/<name>/manifests/<reference>`: digest, media type and size of a
    /// manifest without its body; `None` when the registry does not have it. Falls back
    /// to a `GET` when the registry sends no digest header.
    pub async fn manifest_info(
        &self,
        repository: &str,
        reference: &ManifestRef,
    ) -> Result<Option<ManifestInfo>, RegistryError> {
        let name = repository_name(repository)?;
        let url = self.url(&name, &["manifests", &reference.to_string()])?;
        let scope = Scope::pull(name.as_str());
        let response = self
            .execute(Method::HEAD, &url, &scope, &accept_manifests, None)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = expect(response, &[StatusCode::OK]).await?;
        let headers = response.headers();
        let header_digest = header_str(headers, CONTENT_DIGEST).and_then(|d| d.parse().ok());
        let digest = match (header_digest, reference) {
            (Some(digest), _) => digest,
            (None, ManifestRef::Digest(digest)) => digest.clone(),
            (None, ManifestRef::Tag(_)) => {
                let fetched = self.manifest(repository, reference).await?;
                return Ok(Some(ManifestInfo {
                    size: Some(fetched.bytes.len() as u64),
                    digest: fetched.digest,
                    media_type: fetched.media_type,
                }));
            }
        };
        Ok(Some(ManifestInfo {
            digest,
            media_type: media_type_header(headers).unwrap_or_default(),
            size: content_length(headers),
        }))
    }

    /// `GET /v2/<name>/blobs/<digest>`: streams a blob. The caller verifies it.
    pub async fn blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<BlobDownload, RegistryError> {
        let name = repository_name(repository)?;
        let url = self.url(&name, &["blobs", digest.as_str()])?;
        let scope = Scope::pull(name.as_str());
        let response = self.execute(Method::GET, &url, &scope, &Ok, None).await?;
        let response = expect(response, &[StatusCode::OK]).await?;
        let size = content_length(response.headers());
        let shown = url.to_string();
        let stream = response
            .bytes_stream()
            .map(move |chunk| {
                chunk.map_err(|source| RegistryError::Transport {
                    method: "GET".to_owned(),
                    url: shown.clone(),
                    source: source.without_url(),
                })
            })
            .boxed();
        Ok(BlobDownload { size, stream })
    }

    /// `HEAD /v2/<name>/blobs/<digest>`: the blob's size, or `None` when the repository
    /// does not have it.
    pub async fn blob_size(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, RegistryError> {
        let name = repository_name(repository)?;
        self.blob_size_in(&name, digest, &Scope::pull(name.as_str()))
            .await
    }

    async fn blob_size_in(
        &self,
        name: &RepositoryName,
        digest: &Digest,
        scope: &Scope,
    ) -> Result<Option<u64>, RegistryError> {
        let url = self.url(name, &["blobs", digest.as_str()])?;
        let response = self.execute(Method::HEAD, &url, scope, &Ok, None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = expect(response, &[StatusCode::OK]).await?;
        content_length(response.headers())
            .map(Some)
            .ok_or_else(|| RegistryError::Decode {
                method: "HEAD".to_owned(),
                url: url.to_string(),
                reason: "the blob exists but the answer has no Content-Length".to_owned(),
            })
    }

    /// Uploads a blob unless the repository already has it (checked with a `HEAD`
    /// first). With `mount_from`, asks the registry to link the blob from that
    /// repository instead, and uploads when it cannot. The body streams from `source`
    /// in one `PUT` (`POST` a session, then `PUT ?digest=` to its Location); `progress`
    /// is called with the bytes sent so far as they go.
    pub async fn push_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        source: BlobSource,
        mount_from: Option<&str>,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<PushOutcome, RegistryError> {
        let name = repository_name(repository)?;
        let from = mount_from.map(repository_name).transpose()?;
        // One token for every request of the push: asking for pull alone first would
        // cost a second token exchange at the POST.
        let scope = match &from {
            Some(from) => Scope::push(name.as_str()).and_pull(from.as_str()),
            None => Scope::push(name.as_str()),
        };
        if self.blob_size_in(&name, digest, &scope).await?.is_some() {
            return Ok(PushOutcome::AlreadyPresent);
        }

        let mut start = self.url(&name, &["blobs", "uploads", ""])?;
        if let Some(from) = &from {
            start
                .query_pairs_mut()
                .append_pair("mount", digest.as_str())
                .append_pair("from", from.as_str());
        }
        let no_body = |request: RequestBuilder| Ok(request.header(CONTENT_LENGTH, "0"));
        let response = self
            .execute(Method::POST, &start, &scope, &no_body, None)
            .await?;
        if from.is_some() && response.status() == StatusCode::CREATED {
            return Ok(PushOutcome::Mounted);
        }
        let response = expect(response, &[StatusCode::ACCEPTED]).await?;
        let mut put = location(&response, Method::POST)?;
        put.query_pairs_mut().append_pair("digest", digest.as_str());

        let sent = Arc::new(AtomicU64::new(0));
        let body = |request: RequestBuilder| {
            // A retry after a 401 starts the body over.
            sent.store(0, std::sync::atomic::Ordering::Relaxed);
            let stream = source.stream(size, sent.clone())?;
            Ok(request
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(reqwest::Body::wrap_stream(stream)))
        };
        let upload = Upload {
            sent: sent.clone(),
            size,
            progress,
        };
        let response = self
            .execute(Method::PUT, &put, &scope, &body, Some(&upload))
            .await?;
        let response = expect(response, &[StatusCode::CREATED]).await?;
        if let Some(stored) =
            header_str(response.headers(), CONTENT_DIGEST).and_then(|d| d.parse::<Digest>().ok())
            && stored != *digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("blob uploaded to {name}"),
                source: bencher_oci::digest::DigestMismatch {
                    expected: digest.clone(),
                    actual: stored,
                },
            });
        }
        Ok(PushOutcome::Uploaded)
    }

    /// `PUT /v2/<name>/manifests/<reference>`: stores a manifest (whose blobs and, for an
    /// index, child manifests must already be in the repository) and returns its digest.
    pub async fn put_manifest(
        &self,
        repository: &str,
        reference: &ManifestRef,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Digest, RegistryError> {
        let name = repository_name(repository)?;
        let algorithm = match reference {
            ManifestRef::Digest(digest) => digest.algorithm(),
            ManifestRef::Tag(_) => DigestAlgorithm::Sha256,
        };
        let digest = Digest::of(algorithm, &bytes);
        let mismatch =
            |expected: &Digest, actual: &Digest, what: String| RegistryError::DigestMismatch {
                what,
                source: bencher_oci::digest::DigestMismatch {
                    expected: expected.clone(),
                    actual: actual.clone(),
                },
            };
        if let ManifestRef::Digest(expected) = reference
            && *expected != digest
        {
            return Err(mismatch(
                expected,
                &digest,
                format!("manifest to push to {name}"),
            ));
        }
        let url = self.url(&name, &["manifests", &reference.to_string()])?;
        let build = |request: RequestBuilder| {
            Ok(request.header(CONTENT_TYPE, media_type).body(bytes.clone()))
        };
        let response = self
            .execute(Method::PUT, &url, &Scope::push(name.as_str()), &build, None)
            .await?;
        let response = expect(response, &[StatusCode::CREATED]).await?;
        if let Some(stored) =
            header_str(response.headers(), CONTENT_DIGEST).and_then(|d| d.parse::<Digest>().ok())
            && stored.algorithm() == algorithm
            && stored != digest
        {
            return Err(mismatch(
                &digest,
                &stored,
                format!("manifest stored in {name}"),
            ));
        }
        Ok(digest)
    }

    /// `GET /v2/<name>/tags/list`, following `Link: <…>; rel="next"` pages.
    pub async fn tags(&self, repository: &str) -> Result<Vec<String>, RegistryError> {
        #[derive(Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let name = repository_name(repository)?;
        let scope = Scope::pull(name.as_str());
        let mut url = self.url(&name, &["tags", "list"])?;
        let mut tags = Vec::new();
        for _ in 0..MAX_TAG_PAGES {
            let response = self.execute(Method::GET, &url, &scope, &Ok, None).await?;
            let response = expect(response, &[StatusCode::OK]).await?;
            let next = next_link(response.headers())
                .map(|link| response.url().join(&link))
                .transpose()
                .map_err(|e| RegistryError::Decode {
                    method: "GET".to_owned(),
                    url: url.to_string(),
                    reason: format!("the `Link` header is not a usable URL: {e}"),
                })?;
            let shown = url.to_string();
            let body = read_limited(response, MAX_TAGS_PAGE)
                .await
                .map_err(|source| transport("GET", &shown, source))?;
            let decode = |reason: String| RegistryError::Decode {
                method: "GET".to_owned(),
                url: shown.clone(),
                reason,
            };
            if body.truncated {
                return Err(decode(format!(
                    "a page of tags is larger than {MAX_TAGS_PAGE} bytes"
                )));
            }
            let page: TagList = serde_json::from_slice(&body.bytes)
                .map_err(|e| decode(format!("not a tag list: {e}")))?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(next) if next != url => url = next,
                _ => return Ok(tags),
            }
        }
        Err(RegistryError::Decode {
            method: "GET".to_owned(),
            url: url.to_string(),
            reason: format!("the tag list goes on past {MAX_TAG_PAGES} pages"),
        })
    }

    // ---- plumbing ----

    /// `<registry>/v2/<name>/<rest…>`, each part percent-encoded as its own segment. The
    /// name is validated, so it only ever adds its own `/`-separated components.
    fn url(&self, name: &RepositoryName, rest: &[&str]) -> Result<Url, RegistryError> {
        let mut url = self.inner.registry.clone();
        url.path_segments_mut()
            .map_err(|()| RegistryError::Url {
                url: self.inner.registry.to_string(),
                reason: "it cannot have a path",
            })?
            .pop_if_empty()
            .push("v2")
            .extend(name.as_str().split('/'))
            .extend(rest);
        Ok(url)
    }

    async fn read_manifest(
        &self,
        response: Response,
        name: &RepositoryName,
        reference: &ManifestRef,
    ) -> Result<FetchedManifest, RegistryError> {
        let shown = response.url().to_string();
        let header_type = media_type_header(response.headers());
        let header_digest = header_str(response.headers(), CONTENT_DIGEST).map(str::to_owned);
        let decode = |reason: String| RegistryError::Decode {
            method: "GET".to_owned(),
            url: shown.clone(),
            reason,
        };
        if content_length(response.headers()).is_some_and(|len| len > MAX_MANIFEST_SIZE as u64) {
            return Err(decode(format!(
                "the manifest is larger than {MAX_MANIFEST_SIZE} bytes"
            )));
        }
        let body = read_limited(response, MAX_MANIFEST_SIZE)
            .await
            .map_err(|source| transport("GET", &shown, source))?;
        if body.truncated {
            return Err(decode(format!(
                "the manifest is larger than {MAX_MANIFEST_SIZE} bytes"
            )));
        }
        let bytes = Bytes::from(body.bytes);
        // What the digest must be: the one asked for, else the one the registry claims.
        let expected = match reference {
            ManifestRef::Digest(digest) => Some(digest.clone()),
            ManifestRef::Tag(_) => match header_digest {
                Some(text) => Some(text.parse::<Digest>().map_err(|e| {
                    decode(format!("invalid {CONTENT_DIGEST} header `{text}`: {e}"))
                })?),
                None => None,
            },
        };
        let digest = match expected {
            Some(expected) => {
                expected
                    .verify(&bytes)
                    .map_err(|source| RegistryError::DigestMismatch {
                        what: format!("manifest `{reference}` of {name}"),
                        source,
                    })?;
                expected
            }
            None => Digest::sha256_of(&bytes),
        };
        let media_type = header_type
            .or_else(|| body_media_type(&bytes))
            .unwrap_or_default();
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Sends one request with the authorization `scope` calls for, and on a 401 asks
    /// `auth` for something better and retries once. `build` adds headers and body, and
    /// is called again for the retry so a streamed body starts over. Returns whatever
    /// the registry answered last, for the caller to judge.
    async fn execute(
        &self,
        method: Method,
        url: &Url,
        scope: &Scope,
        build: &(dyn Fn(RequestBuilder) -> Result<RequestBuilder, RegistryError> + Send + Sync),
        upload: Option<&Upload<'_>>,
    ) -> Result<Response, RegistryError> {
        let auth = &self.inner.auth;
        let first = auth.authorization(&self.inner.http, scope).await?;
        let response = self
            .attempt(&method, url, first.as_ref(), build, upload)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let retry = auth
            .after_unauthorized(&self.inner.http, scope, response.headers(), first.as_ref())
            .await?;
        match retry {
            Some(second) => {
                self.attempt(&method, url, Some(&second), build, upload)
                    .await
            }
            None => Ok(response),
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: &Url,
        authorization: Option<&Authorization>,
        build: &(dyn Fn(RequestBuilder) -> Result<RequestBuilder, RegistryError> + Send + Sync),
        upload: Option<&Upload<'_>>,
    ) -> Result<Response, RegistryError> {
        let client = if upload.is_some() {
            &self.inner.upload
        } else {
            &self.inner.http
        };
        let mut request = client.request(method.clone(), url.clone());
        // Credentials stay with the registry: an upload Location or a redirect may point
        // at other storage, which must not see them.
        if let Some(authorization) = authorization
            && same_origin(url, &self.inner.registry)
        {
            request = authorization.apply(request);
        }
        let request = build(request)?;
        // Errors show the URL without the query, which may hold an upload's state.
        let mut shown = url.clone();
        shown.set_query(None);
        let shown = shown.to_string();
        match upload {
            Some(upload) => watched(request.send(), upload, method, &shown).await,
            None => request
                .send()
                .await
                .map_err(|source| transport(method.as_str(), &shown, source)),
        }
    }
}

fn accept_manifests(request: RequestBuilder) -> Result<RequestBuilder, RegistryError> {
    Ok(request.header(ACCEPT, ACCEPT_MANIFESTS))
}

fn transport(method: &str, url: &str, source: reqwest::Error) -> RegistryError {
    RegistryError::Transport {
        method: method.to_owned(),
        url: url.to_owned(),
        source: source.without_url(),
    }
}

/// The response if its status is one of `ok`, else the registry's error.
async fn expect(response: Response, ok: &[StatusCode]) -> Result<Response, RegistryError> {
    let status = response.status();
    if ok.contains(&status) {
        return Ok(response);
    }
    // A body that fails midway still says something; keep what arrived.
    let body = read_limited(response, MAX_ERROR_BODY)
        .await
        .map(|limited| limited.bytes)
        .unwrap_or_default();
    Err(RegistryError::from_response(status, &body))
}

fn repository_name(repository: &str) -> Result<RepositoryName, RegistryError> {
    repository
        .parse()
        .map_err(|source| RegistryError::Repository {
            name: repository.to_owned(),
            source,
        })
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// Read from the header rather than `Response::content_length`, which is the body's
/// size hint and says 0 for any `HEAD`.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    header_str(headers, CONTENT_LENGTH.as_str()).and_then(|value| value.parse().ok())
}

/// The Content-Type without parameters, unless it is a generic one that says nothing
/// about the manifest's kind.
fn media_type_header(headers: &HeaderMap) -> Option<String> {
    let value = header_str(headers, CONTENT_TYPE.as_str())?;
    let media_type = value.split(';').next().unwrap_or_default().trim();
    (!media_type.is_empty()
        && media_type != "application/json"
        && media_type != "application/octet-stream")
        .then(|| media_type.to_owned())
}

fn body_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct MediaType {
        media_type: Option<String>,
    }
    serde_json::from_slice::<MediaType>(bytes)
        .ok()?
        .media_type
        .filter(|m| !m.is_empty())
}

/// The upload URL an answer's Location names, resolved against the URL that was
/// answered (a relative Location is the usual case).
fn location(response: &Response, method: Method) -> Result<Url, RegistryError> {
    let decode = |reason: String| RegistryError::Decode {
        method: method.to_string(),
        url: response.url().to_string(),
        reason,
    };
    let value = header_str(response.headers(), LOCATION.as_str())
        .ok_or_else(|| decode("the answer has no Location header".to_owned()))?;
    response
        .url()
        .join(value)
        .map_err(|e| decode(format!("Location `{value}` is not a usable URL: {e}")))
}

/// The target of `rel="next"` in `Link` headers (`<url>; rel="next"`, possibly several
/// comma-separated links per header).
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            params
                .split(';')
                .filter_map(|param| param.split_once('='))
                .any(|(key, value)| {
                    key.trim().eq_ignore_ascii_case("rel")
                        && value
                            .trim()
                            .trim_matches('"')
                            .split_ascii_whitespace()
                            .any(|rel| rel.eq_ignore_ascii_case("next"))
                })
                .then(|| target.to_owned())
        })
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

fn validate_registry(registry: &Url) -> Result<(), RegistryError> {
    let refuse = |url: &Url, reason| RegistryError::Url {
        url: url.to_string(),
        reason,
    };
    if !matches!(registry.scheme(), "http" | "https") {
        return Err(refuse(registry, "the scheme must be http or https"));
    }
    if registry.cannot_be_a_base() || registry.host().is_none() {
        return Err(refuse(registry, "it has no host name"));
    }
    if !registry.username().is_empty() || registry.password().is_some() {
        let mut redacted = registry.clone();
        // Both setters only fail for URLs without a host, ruled out above.
        let _ = redacted.set_username("");
        let _ = redacted.set_password(None);
        return Err(refuse(
            &redacted,
            "credentials do not belong in the URL; pass a credential instead",
        ));
    }
    if registry.query().is_some() || registry.fragment().is_some() {
        return Err(refuse(registry, "it must not have a query or a fragment"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bencher_oci::manifest::{
        DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2, OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST,
    };
    use reqwest::header::HeaderValue;

    use super::*;

    fn client(registry: &str) -> RegistryClient {
        RegistryClient::new(
            Url::parse(registry).expect("test URL"),
            RegistryCredential::Anonymous,
        )
        .expect("valid registry")
    }

    fn name(text: &str) -> RepositoryName {
        text.parse().expect("test repository name")
    }

    /// The runner spawns pulls on a multi-threaded runtime: every future, and what it
    /// hands back, must be `Send`. Compiling this is the test; nothing is polled.
    #[test]
    fn futures_and_results_are_send() {
        fn send<T: Send>(_: &T) {}
        fn send_sync_static<T: Send + Sync + 'static>() {}
        send_sync_static::<RegistryClient>();
        send_sync_static::<RegistryError>();
        send_sync_static::<FetchedManifest>();
        send_sync_static::<BlobSource>();
        let c = client("http://localhost:6610");
        let digest = Digest::sha256_of(b"x");
        let reference = ManifestRef::Digest(digest.clone());
        send(&c.manifest("p", &reference));
        send(&c.manifest_info("p", &reference));
        send(&c.blob("p", &digest));
        send(&c.blob_size("p", &digest));
        send(&c.tags("p"));
        send(&c.put_manifest("p", &reference, OCI_IMAGE_MANIFEST, Bytes::new()));
        send(&c.push_blob(
            "p",
            &digest,
            1,
            BlobSource::Bytes(Bytes::new()),
            None,
            &|_| {},
        ));
        fn stream_is_send(download: BlobDownload) -> impl Send {
            download.stream
        }
        let _ = stream_is_send;
    }

    #[test]
    fn accept_lists_the_oci_constants() {
        for media_type in [
            OCI_IMAGE_MANIFEST,
            OCI_IMAGE_INDEX,
            DOCKER_MANIFEST_V2,
            DOCKER_MANIFEST_LIST,
        ] {
            assert!(
                ACCEPT_MANIFESTS.split(", ").any(|m| m == media_type),
                "{media_type}"
            );
        }
    }

    #[test]
    fn builds_v2_urls() {
        let digest = Digest::sha256_of(b"x");
        let url = client("http://localhost:6610")
            .url(&name("proj"), &["blobs", digest.as_str()])
            .expect("url");
        assert_eq!(
            url.as_str(),
            format!("http://localhost:6610/v2/proj/blobs/{digest}")
        );
        let url = client("https://example.com/prefix/")
            .url(&name("team/proj"), &["blobs", "uploads", ""])
            .expect("url");
        assert_eq!(
            url.as_str(),
            "https://example.com/prefix/v2/team/proj/blobs/uploads/"
        );
    }

    #[test]
    fn refuses_bad_names_and_registries() {
        for bad in ["", "Proj", "../x", "a//b", "a/", "a?b", "a#b", "a b"] {
            let err = repository_name(bad).expect_err(bad);
            assert!(matches!(err, RegistryError::Repository { .. }), "{bad}");
        }
        for (registry, why) in [
            ("ftp://example.com", "scheme"),
            ("https://user:hunter2@example.com", "credentials"),
            ("https://example.com/?x=1", "query"),
            ("https://example.com/#x", "fragment"),
        ] {
            let url = Url::parse(registry).expect("test URL");
            let err = RegistryClient::new(url, RegistryCredential::Anonymous)
                .expect_err(registry)
                .to_string();
            assert!(err.contains(why), "{registry}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn debug_never_shows_credentials() {
        let token: bencher_types::ApiToken = "bencher_user_0123456789abcdefghijABCDEFGHIJ"
            .parse()
            .expect("test token parses");
        let url = Url::parse("http://localhost:6610").expect("test URL");
        for credential in [
            RegistryCredential::ApiToken(token),
            RegistryCredential::Bearer("payload.s3cr3t".to_owned()),
        ] {
            let c = RegistryClient::new(url.clone(), credential).expect("client");
            let debug = format!("{c:?}");
            assert!(!debug.contains("0123456789abcdefghij"), "{debug}");
            assert!(!debug.contains("s3cr3t"), "{debug}");
        }
    }

    #[test]
    fn finds_the_next_link() {
        let mut headers = HeaderMap::new();
        headers.append(
            LINK,
            HeaderValue::from_static(
                r#"<https://cdn.example.com/x>; rel="preload", </v2/p/tags/list?n=2&last=b>; rel="next""#,
            ),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("/v2/p/tags/list?n=2&last=b")
        );
        let mut other = HeaderMap::new();
        other.append(LINK, HeaderValue::from_static("<x>; rel=prev"));
        assert_eq!(next_link(&other), None);
        other.append(LINK, HeaderValue::from_static("<y>;rel=next"));
        assert_eq!(next_link(&other).as_deref(), Some("y"));
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn media_types_from_header_or_body() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
        );
        assert_eq!(
            media_type_header(&headers).as_deref(),
            Some(OCI_IMAGE_MANIFEST)
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(media_type_header(&headers), None);
        assert_eq!(
            body_media_type(
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#
            )
            .as_deref(),
            Some(OCI_IMAGE_INDEX)
        );
        assert_eq!(body_media_type(b"not json"), None);
    }

    #[test]
    fn origins() {
        let u = |s: &str| Url::parse(s).expect("test URL");
        assert!(same_origin(&u("http://h:80/a"), &u("http://h/b")));
        assert!(!same_origin(&u("http://h:81/a"), &u("http://h/b")));
        assert!(!same_origin(&u("https://h/a"), &u("http://h/b")));
        assert!(!same_origin(
            &u("http://s3.example.com/a"),
            &u("http://h/b")
        ));
    }
}
