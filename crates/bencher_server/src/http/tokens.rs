//! `/v0/tokens…`: API tokens (server admins only). Secrets are returned once, at create.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bencher_types::{JsonCreatedToken, JsonError, JsonNewToken, JsonToken, Pagination, TokenUuid};
use chrono::TimeDelta;

use super::error::ApiError;
use super::extract::{Admin, Json, Path, Query};
use super::{AppState, paginated};
use crate::auth::{generate_api_token, hash_secret};

/// List API tokens (never their secrets).
#[utoipa::path(get, path = "/v0/tokens", tag = "tokens",
    params(Pagination),
    responses(
        (status = 200, body = [JsonToken], headers(("X-Total-Count" = u64))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let limit_offset = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    let (tokens, total) = state.store.list_tokens(&pagination, limit_offset).await?;
    Ok(paginated(tokens, total))
}

/// Create an API token, admin or not. The secret is shown only this once.
#[utoipa::path(post, path = "/v0/tokens", tag = "tokens",
    request_body = JsonNewToken,
    responses(
        (status = 201, body = JsonCreatedToken),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Admin(creator): Admin,
    Json(new): Json<JsonNewToken>,
) -> Result<(StatusCode, axum::Json<JsonCreatedToken>), ApiError> {
    let now = state.clock.now();
    let expires = match new.ttl {
        Some(0) => return Err(ApiError::BadRequest("ttl must be at least 1 second".into())),
        Some(ttl) => Some(now + TimeDelta::seconds(i64::from(ttl))),
        None => None,
    };
    let token = generate_api_token();
    let meta = state
        .store
        .create_token(
            &new.name,
            new.admin,
            expires,
            &hash_secret(token.expose_secret()),
            now,
        )
        .await?;
    tracing::info!(token = %meta.uuid, admin = meta.admin, by = %creator.uuid, "API token created");
    Ok((
        StatusCode::CREATED,
        axum::Json(JsonCreatedToken { meta, token }),
    ))
}

/// Revoke an API token at once. The last active admin token cannot be revoked.
#[utoipa::path(delete, path = "/v0/tokens/{token}", tag = "tokens",
    params(("token" = String, Path, format = Uuid, description = "Token UUID")),
    responses(
        (status = 204),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
        (status = 404, body = JsonError), (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Admin(revoker): Admin,
    Path(token): Path<TokenUuid>,
) -> Result<StatusCode, ApiError> {
    state.store.revoke_token(token, state.clock.now()).await?;
    tracing::info!(token = %token, by = %revoker.uuid, "API token revoked");
    Ok(StatusCode::NO_CONTENT)
}
