//! `/v0/projects/{project}/measures` and `…/benchmarks`: what a project's results have
//! named so far (measures also when a threshold created a built-in one).

use axum::extract::State;
use axum::response::Response;
use bencher_types::{JsonBenchmark, JsonError, JsonMeasure, Pagination, ResourceId};

use super::error::ApiError;
use super::extract::{Path, Query, User};
use super::{AppState, paginated};

/// List a project's measures, by name unless `sort=created`.
#[utoipa::path(get, path = "/v0/projects/{project}/measures", tag = "reports",
    params(("project" = String, Path, description = "Project UUID or slug"), Pagination),
    responses(
        (status = 200, body = [JsonMeasure], headers(("X-Total-Count" = u64, description = "Total number of measures"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list_measures(
    State(state): State<AppState>,
    _user: User,
    Path(project): Path<ResourceId>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let limit_offset = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    let project = state.store.get_project(&project).await?;
    let (measures, total) = state
        .store
        .list_measures(project.uuid, &pagination, limit_offset)
        .await?;
    Ok(paginated(measures, total))
}

/// List a project's benchmarks, by name unless `sort=created`.
#[utoipa::path(get, path = "/v0/projects/{project}/benchmarks", tag = "reports",
    params(("project" = String, Path, description = "Project UUID or slug"), Pagination),
    responses(
        (status = 200, body = [JsonBenchmark], headers(("X-Total-Count" = u64, description = "Total number of benchmarks"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list_benchmarks(
    State(state): State<AppState>,
    _user: User,
    Path(project): Path<ResourceId>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let limit_offset = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    let project = state.store.get_project(&project).await?;
    let (benchmarks, total) = state
        .store
        .list_benchmarks(project.uuid, &pagination, limit_offset)
        .await?;
    Ok(paginated(benchmarks, total))
}
