//! The OCI Distribution registry under `/v2/`: authentication (registry tokens, or an
//! API token directly), routing of `/v2/<name>/…` paths, and repository resolution. A
//! repository is a project, named by its slug or UUID. Handlers are in `blobs` and
//! `manifests`; records in `store::registry`; bytes in `blobs` storage.
//!
//! First-push rule: pushing to a repository name that is a valid, unused slug creates
//! the project, for any authenticated user.

mod blobs;
pub mod error;
pub mod gc;
mod manifests;
pub mod token;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use base64::Engine as _;
use bencher_oci::digest::Digest;
use bencher_types::{ApiToken, JsonNewProject, JsonProject, JsonToken, Slug};

use crate::auth::hash_secret;
use crate::http::AppState;
use error::RegistryError;
use token::Claims;

/// The `service` of our Bearer challenges and tokens.
pub const SERVICE: &str = "bencher";
/// Where clients get registry tokens.
pub const TOKEN_PATH: &str = "/v0/auth/oci/token";

/// Size limits of what the registry accepts.
/// From the server configuration (`--max-manifest-size`, `--max-blob-size`).
#[derive(Debug, Clone, Copy)]
pub struct RegistryLimits {
    pub max_manifest_size: u64,
    pub max_blob_size: u64,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2", get(base))
        .route("/v2/", get(base))
        .route("/v2/_catalog", get(manifests::catalog))
        .route("/v2/{*path}", any(dispatch))
}

/// Who is calling and what they may do.
pub enum Grant {
    /// An API token: pull and push everywhere (projects are open to every user), the
    /// catalog for admins.
    User(JsonToken),
    /// A registry token: exactly its claims.
    Token(Claims),
}

impl Grant {
    fn allows(&self, project: &JsonProject, push: bool) -> bool {
        match self {
            Self::User(_) => true,
            Self::Token(claims) => claims.allows(project.uuid, push),
        }
    }

    fn catalog(&self) -> bool {
        match self {
            Self::User(token) => token.admin,
            Self::Token(claims) => claims.catalog,
        }
    }
}

/// The caller's grant, or a 401 with a challenge naming `scope`.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    scope: Option<&str>,
) -> Result<Grant, RegistryError> {
    let unauthorized = |message: &str| RegistryError::Unauthorized {
        challenge: challenge(headers, scope, None),
        message: message.to_owned(),
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized("authentication required"));
    };
    let (scheme, credential) = value.split_once(' ').unwrap_or((value, ""));
    let credential = credential.trim();
    let api_token = if scheme.eq_ignore_ascii_case("basic") {
        // Basic credentials carry an API token as the password; the user name is ignored.
        basic_password(credential).and_then(|password| password.parse::<ApiToken>().ok())
    } else if scheme.eq_ignore_ascii_case("bearer") && credential.starts_with(ApiToken::PREFIX) {
        credential.parse::<ApiToken>().ok()
    } else if scheme.eq_ignore_ascii_case("bearer") {
        return state
            .oci_tokens
            .verify(credential, state.clock.now())
            .map(Grant::Token)
            .ok_or_else(|| unauthorized("invalid or expired registry token"));
    } else {
        None
    };
    let token = api_token.ok_or_else(|| unauthorized("malformed credentials"))?;
    state
        .store
        .find_active_token(&hash_secret(token.expose_secret()), state.clock.now())
        .await?
        .map(Grant::User)
        .ok_or_else(|| unauthorized("invalid, expired or revoked API token"))
}

pub fn basic_password(credential: &str) -> Option<String> {
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credential)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_owned())
}

/// This server as the client reached it, `http[s]://host[:port]`, honouring a proxy's
/// `X-Forwarded-Host` and `X-Forwarded-Proto`.
pub(crate) fn external_origin(headers: &HeaderMap) -> String {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost:6610");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https" || *p == "http")
        .unwrap_or("http");
    format!("{proto}://{host}")
}

/// `Bearer realm="…/v0/auth/oci/token",service="bencher"[,scope="…"][,error="…"]`. The
/// realm is this server as the client reached it.
fn challenge(headers: &HeaderMap, scope: Option<&str>, error: Option<&str>) -> String {
    let origin = external_origin(headers);
    let mut value = format!("Bearer realm=\"{origin}{TOKEN_PATH}\",service=\"{SERVICE}\"");
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    if let Some(error) = error {
        value.push_str(&format!(",error=\"{error}\""));
    }
    value
}

fn scope_of(name: &str, push: bool) -> String {
    format!(
        "repository:{name}:{}",
        if push { "pull,push" } else { "pull" }
    )
}

/// The repository `name` for a caller that wants to pull or push. A valid, unused slug
/// becomes a new project on push by a user (the first-push rule).
async fn repository(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    push: bool,
) -> Result<(Grant, JsonProject), RegistryError> {
    let scope = scope_of(name, push);
    let grant = authenticate(state, headers, Some(&scope)).await?;
    let project = match state.store.repository(name).await? {
        Some(project) => project,
        None if push && matches!(grant, Grant::User(_)) => create_on_push(state, name).await?,
        None => {
            return Err(RegistryError::name_unknown(format!(
                "repository `{name}` is not known to this registry"
            )));
        }
    };
    if !grant.allows(&project, push) {
        return Err(match grant {
            Grant::Token(_) => RegistryError::Unauthorized {
                challenge: challenge(headers, Some(&scope), Some("insufficient_scope")),
                message: format!(
                    "this token does not allow {} on `{name}`",
                    if push { "push" } else { "pull" }
                ),
            },
            Grant::User(_) => RegistryError::denied(format!("access to `{name}` denied")),
        });
    }
    Ok((grant, project))
}

/// Creates the project a first push names.
pub async fn create_on_push(state: &AppState, name: &str) -> Result<JsonProject, RegistryError> {
    let slug: Slug = name.parse().map_err(|e| {
        RegistryError::name_unknown(format!(
            "repository `{name}` does not exist and cannot be created by a push: {e}"
        ))
    })?;
    let new = JsonNewProject {
        name: slug
            .as_str()
            .parse()
            .map_err(|e| RegistryError::name_invalid(format!("{e}")))?,
        slug: Some(slug),
    };
    match state.store.create_project(&new, state.clock.now()).await {
        Ok(project) => {
            tracing::info!(project = %project.uuid, slug = %project.slug, "project created by a first push");
            Ok(project)
        }
        // Another push created it at the same moment.
        Err(crate::store::StoreError::Conflict(_)) => {
            state.store.repository(name).await?.ok_or_else(|| {
                RegistryError::name_unknown(format!("repository `{name}` is not known"))
            })
        }
        Err(error) => Err(error.into()),
    }
}

/// `GET /v2/`: 200 for an authenticated caller, else the challenge that starts the
/// token flow.
async fn base(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match authenticate(&state, &headers, None).await {
        Ok(_) => (
            [("Docker-Distribution-API-Version", "registry/2.0")],
            axum::Json(serde_json::json!({})),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

/// One parsed `/v2/<name>/…` route.
enum Route<'a> {
    Tags { name: &'a str },
    Manifest { name: &'a str, reference: &'a str },
    Blob { name: &'a str, digest: &'a str },
    UploadStart { name: &'a str },
    Upload { name: &'a str, session: &'a str },
    Referrers { name: &'a str, digest: &'a str },
}

impl<'a> Route<'a> {
    /// Splits at the last route keyword, since only the name may contain slashes.
    fn parse(path: &'a str) -> Option<Self> {
        if let Some(name) = path.strip_suffix("/tags/list") {
            return Some(Self::Tags { name });
        }
        if let Some(name) = path
            .strip_suffix("/blobs/uploads/")
            .or_else(|| path.strip_suffix("/blobs/uploads"))
        {
            return Some(Self::UploadStart { name });
        }
        if let Some((name, session)) = path.rsplit_once("/blobs/uploads/") {
            return Some(Self::Upload { name, session });
        }
        if let Some((name, digest)) = path.rsplit_once("/blobs/") {
            return Some(Self::Blob { name, digest });
        }
        if let Some((name, reference)) = path.rsplit_once("/manifests/") {
            return Some(Self::Manifest { name, reference });
        }
        if let Some((name, digest)) = path.rsplit_once("/referrers/") {
            return Some(Self::Referrers { name, digest });
        }
        None
    }
}

/// Everything a handler may need of the request.
pub struct Call {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub body: Body,
}

impl Call {
    pub fn param(&self, key: &str) -> Option<&str> {
        param(&self.query, key)
    }
}

/// The first value of `key` in a parsed query string.
pub fn param<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

async fn dispatch(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path().strip_prefix("/v2/").unwrap_or_default();
    let query = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let call = Call {
        method,
        headers,
        query,
        body,
    };
    let result = match Route::parse(path) {
        Some(route) => route_call(&state, route, call).await,
        None => Err(RegistryError::Oci {
            status: axum::http::StatusCode::NOT_FOUND,
            code: "NAME_UNKNOWN",
            message: format!("no registry endpoint at /v2/{path}"),
        }),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn route_call(
    state: &AppState,
    route: Route<'_>,
    call: Call,
) -> Result<Response, RegistryError> {
    let write = matches!(
        call.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    match route {
        Route::Tags { name } => {
            only(&call, &[Method::GET])?;
            let (_, project) = repository(state, &call.headers, name, false).await?;
            manifests::tags(state, &project, name, &call.query).await
        }
        Route::Referrers { name, digest } => {
            only(&call, &[Method::GET])?;
            let digest = parse_digest(digest)?;
            let (_, project) = repository(state, &call.headers, name, false).await?;
            manifests::referrers(state, &project, &digest, &call.query).await
        }
        Route::Manifest { name, reference } => {
            only(
                &call,
                &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            )?;
            let (_, project) = repository(state, &call.headers, name, write).await?;
            manifests::manifest(state, &project, name, reference, call).await
        }
        Route::Blob { name, digest } => {
            only(&call, &[Method::GET, Method::HEAD, Method::DELETE])?;
            let digest = parse_digest(digest)?;
            let (_, project) = repository(state, &call.headers, name, write).await?;
            blobs::blob(state, &project, &digest, call).await
        }
        Route::UploadStart { name } => {
            only(&call, &[Method::POST])?;
            let (grant, project) = repository(state, &call.headers, name, true).await?;
            blobs::start_upload(state, &grant, &project, name, call).await
        }
        Route::Upload { name, session } => {
            only(
                &call,
                &[Method::GET, Method::PATCH, Method::PUT, Method::DELETE],
            )?;
            let (_, project) = repository(state, &call.headers, name, true).await?;
            let session = session.parse::<uuid::Uuid>().map_err(|_| {
                RegistryError::blob_upload_unknown(format!("upload `{session}` is unknown"))
            })?;
            blobs::upload(state, &project, name, session, call).await
        }
    }
}

fn only(call: &Call, methods: &[Method]) -> Result<(), RegistryError> {
    if methods.contains(&call.method) {
        Ok(())
    } else {
        Err(RegistryError::unsupported(format!(
            "{} is not supported on this endpoint",
            call.method
        )))
    }
}

pub fn parse_digest(text: &str) -> Result<Digest, RegistryError> {
    text.parse()
        .map_err(|e| RegistryError::digest_invalid(format!("`{text}` is not a valid digest: {e}")))
}
