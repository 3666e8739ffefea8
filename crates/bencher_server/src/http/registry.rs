//! The registry's REST side: `GET /v0/auth/oci/token`, the Docker token flow (a client
//! presents an API token, as the password of Basic credentials or as a Bearer token, and
//! the scopes it wants, and gets a short-lived registry token for `/v2/`), and garbage
//! collection for admins.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use bencher_types::{ApiToken, JsonError};
use serde::Serialize;

use super::AppState;
use super::error::ApiError;
use super::extract::Admin;
use crate::auth::hash_secret;
use crate::registry::gc::{GC_GRACE, GcReport, collect_garbage};
use crate::registry::token::{Access, Claims, TOKEN_TTL, expiry};
use crate::registry::{basic_password, create_on_push};

/// The token response of the Docker token flow.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JsonOciToken {
    pub token: String,
    /// The same token, for OAuth2-style clients.
    pub access_token: String,
    /// Seconds.
    pub expires_in: u64,
    pub issued_at: String,
}

/// Issue a registry token for the requested scopes (`scope=repository:<project>:pull,push`,
/// repeatable; `registry:catalog:*` for admins). Pushing to an unknown project slug
/// creates the project.
#[utoipa::path(get, path = "/v0/auth/oci/token", tag = "registry",
    params(
        ("service" = Option<String>, Query, description = "Ignored; always `bencher`"),
        ("scope" = Option<String>, Query, description = "`repository:<name>:<actions>`, repeatable"),
    ),
    responses(
        (status = 200, body = JsonOciToken),
        (status = 400, body = JsonError), (status = 401, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn token(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<axum::Json<JsonOciToken>, ApiError> {
    let credential = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|value| {
            let (scheme, rest) = value.split_once(' ')?;
            if scheme.eq_ignore_ascii_case("basic") {
                basic_password(rest.trim())
            } else if scheme.eq_ignore_ascii_case("bearer") {
                Some(rest.trim().to_owned())
            } else {
                None
            }
        })
        .ok_or(ApiError::Unauthorized(
            "send an API token as the password of Basic credentials",
        ))?;
    let api_token: ApiToken = credential.parse().map_err(|_| {
        ApiError::Unauthorized(
            "malformed API token: expected `bencher_user_` and 30 letters or digits",
        )
    })?;
    let now = state.clock.now();
    let user = state
        .store
        .find_active_token(&hash_secret(api_token.expose_secret()), now)
        .await?
        .ok_or(ApiError::Unauthorized(
            "invalid, expired or revoked API token",
        ))?;

    let mut claims = Claims {
        sub: user.uuid.to_string(),
        exp: expiry(now, TOKEN_TTL),
        access: Vec::new(),
        catalog: false,
    };
    let scopes = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "scope")
        .flat_map(|(_, value)| value.split(' ').map(str::to_owned).collect::<Vec<_>>());
    for scope in scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some(kind), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ApiError::BadRequest(format!("malformed scope `{scope}`")));
        };
        let actions: Vec<&str> = actions.split(',').collect();
        match kind {
            "registry" if name == "catalog" => claims.catalog = user.admin,
            "repository" => {
                let push = actions.iter().any(|a| *a == "push" || *a == "*");
                let pull = push || actions.contains(&"pull");
                let project = match state.store.repository(name).await? {
                    Some(project) => project,
                    None if push => create_on_push(&state, name)
                        .await
                        .map_err(|e| ApiError::BadRequest(e.to_string()))?,
                    // Unknown repositories get no access; the registry then says NAME_UNKNOWN.
                    None => continue,
                };
                claims.access.push(Access {
                    project: project.uuid,
                    pull,
                    push,
                });
            }
            _ => {}
        }
    }
    let token = state.oci_tokens.issue(&claims);
    Ok(axum::Json(JsonOciToken {
        access_token: token.clone(),
        token,
        expires_in: TOKEN_TTL.as_secs(),
        issued_at: now.to_rfc3339(),
    }))
}

/// Delete blobs no manifest references (untouched for an hour) and abandoned uploads.
#[utoipa::path(post, path = "/v0/registry/gc", tag = "registry",
    responses(
        (status = 200, body = GcReport),
        (status = 401, body = JsonError), (status = 403, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn gc(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<axum::Json<GcReport>, ApiError> {
    let report = collect_garbage(&state.store, &state.blobs, state.clock.now(), GC_GRACE)
        .await
        .map_err(ApiError::internal)?;
    Ok(axum::Json(report))
}
