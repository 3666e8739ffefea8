//! `/v0/specs…`: the hardware descriptions jobs ask for (server admins only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bencher_types::{
    JsonError, JsonNewSpec, JsonSpec, JsonUpdateSpec, Pagination, ResourceId, SpecQuery,
};

use super::error::ApiError;
use super::extract::{Admin, Json, Path, Query};
use super::{AppState, paginated};

/// List Specs.
#[utoipa::path(get, path = "/v0/specs", tag = "specs",
    params(SpecQuery, Pagination),
    responses(
        (status = 200, body = [JsonSpec], headers(("X-Total-Count" = u64, description = "Total number of matching specs"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<SpecQuery>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let limit_offset = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    let (specs, total) = state
        .store
        .list_specs(&query, &pagination, limit_offset)
        .await?;
    Ok(paginated(specs, total))
}

/// Create a Spec. With `fallback`, it replaces the current fallback Spec atomically.
#[utoipa::path(post, path = "/v0/specs", tag = "specs",
    request_body = JsonNewSpec,
    responses(
        (status = 201, body = JsonSpec),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
        (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Json(new): Json<JsonNewSpec>,
) -> Result<(StatusCode, axum::Json<JsonSpec>), ApiError> {
    let spec = state.store.create_spec(&new, state.clock.now()).await?;
    tracing::info!(spec = %spec.uuid, slug = %spec.slug, "spec created");
    Ok((StatusCode::CREATED, axum::Json(spec)))
}

/// View a Spec.
#[utoipa::path(get, path = "/v0/specs/{spec}", tag = "specs",
    params(("spec" = String, Path, description = "Spec UUID or slug")),
    responses(
        (status = 200, body = JsonSpec),
        (status = 401, body = JsonError), (status = 403, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn view(
    State(state): State<AppState>,
    _admin: Admin,
    Path(spec): Path<ResourceId>,
) -> Result<axum::Json<JsonSpec>, ApiError> {
    Ok(axum::Json(state.store.get_spec(&spec).await?))
}

/// Rename, archive or (un)set as fallback. Hardware fields are immutable.
#[utoipa::path(patch, path = "/v0/specs/{spec}", tag = "specs",
    params(("spec" = String, Path, description = "Spec UUID or slug")),
    request_body = JsonUpdateSpec,
    responses(
        (status = 200, body = JsonSpec),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
        (status = 404, body = JsonError), (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(spec): Path<ResourceId>,
    Json(update): Json<JsonUpdateSpec>,
) -> Result<axum::Json<JsonSpec>, ApiError> {
    Ok(axum::Json(
        state
            .store
            .update_spec(&spec, &update, state.clock.now())
            .await?,
    ))
}

/// Delete a Spec; refused with 409 while a runner serves it.
#[utoipa::path(delete, path = "/v0/specs/{spec}", tag = "specs",
    params(("spec" = String, Path, description = "Spec UUID or slug")),
    responses(
        (status = 204),
        (status = 401, body = JsonError), (status = 403, body = JsonError), (status = 404, body = JsonError),
        (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    _admin: Admin,
    Path(spec): Path<ResourceId>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_spec(&spec).await?;
    Ok(StatusCode::NO_CONTENT)
}
