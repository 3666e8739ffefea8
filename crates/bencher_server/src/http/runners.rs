//! `/v0/runners…`: Runners, their keys and the Specs they serve (server admins only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bencher_types::{
    Direction, JsonError, JsonNewRunner, JsonNewRunnerSpec, JsonRunner, JsonRunnerKey, JsonSpec,
    JsonUpdateRunner, Pagination, ResourceId, RunnerQuery, RunnerState, SortBy,
};

use super::error::ApiError;
use super::extract::{Admin, Json, Path, Query};
use super::{AppState, paginated};
use crate::auth::{generate_runner_key, hash_secret};
use crate::store::runners::Runner;

fn to_json(runner: Runner) -> JsonRunner {
    JsonRunner {
        uuid: runner.uuid,
        name: runner.name,
        slug: runner.slug,
        specs: runner.specs,
        // Runners connect over their channel, which arrives with jobs; until then no
        // runner is connected.
        state: RunnerState::Offline,
        last_seen: runner.last_seen,
        current_job: None,
        archived: runner.archived,
        created: runner.created,
        modified: runner.modified,
    }
}

/// List runners.
#[utoipa::path(get, path = "/v0/runners", tag = "runners",
    params(RunnerQuery, Pagination),
    responses(
        (status = 200, body = [JsonRunner], headers(("X-Total-Count" = u64, description = "Total number of matching runners"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<RunnerQuery>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let limit_offset = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    let (runners, total) = state
        .store
        .list_runners(&query, &pagination, limit_offset)
        .await?;
    Ok(paginated(
        runners.into_iter().map(to_json).collect::<Vec<_>>(),
        total,
    ))
}

/// Create a runner. The response carries its key, shown only this once.
#[utoipa::path(post, path = "/v0/runners", tag = "runners",
    request_body = JsonNewRunner,
    responses(
        (status = 201, body = JsonRunnerKey),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
        (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _admin: Admin,
    Json(new): Json<JsonNewRunner>,
) -> Result<(StatusCode, axum::Json<JsonRunnerKey>), ApiError> {
    let key = generate_runner_key();
    let runner = state
        .store
        .create_runner(&new, &hash_secret(key.expose_secret()), state.clock.now())
        .await?;
    tracing::info!(runner = %runner.uuid, slug = %runner.slug, "runner created");
    Ok((
        StatusCode::CREATED,
        axum::Json(JsonRunnerKey {
            uuid: runner.uuid,
            slug: runner.slug,
            key,
        }),
    ))
}

/// View a runner.
#[utoipa::path(get, path = "/v0/runners/{runner}", tag = "runners",
    params(("runner" = String, Path, description = "Runner UUID or slug")),
    responses(
        (status = 200, body = JsonRunner),
        (status = 401, body = JsonError), (status = 403, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn view(
    State(state): State<AppState>,
    _admin: Admin,
    Path(runner): Path<ResourceId>,
) -> Result<axum::Json<JsonRunner>, ApiError> {
    Ok(axum::Json(to_json(state.store.get_runner(&runner).await?)))
}

/// Rename or archive a runner. An archived runner cannot authenticate.
#[utoipa::path(patch, path = "/v0/runners/{runner}", tag = "runners",
    params(("runner" = String, Path, description = "Runner UUID or slug")),
    request_body = JsonUpdateRunner,
    responses(
        (status = 200, body = JsonRunner),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
        (status = 404, body = JsonError), (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn update(
    State(state): State<AppState>,
    _admin: Admin,
    Path(runner): Path<ResourceId>,
    Json(update): Json<JsonUpdateRunner>,
) -> Result<axum::Json<JsonRunner>, ApiError> {
    let runner = state
        .store
        .update_runner(&runner, &update, state.clock.now())
        .await?;
    if update.archived == Some(true) {
        tracing::info!(runner = %runner.uuid, "runner archived");
    }
    Ok(axum::Json(to_json(runner)))
}

/// Rotate a runner's key: the old key stops working at once. The new key is shown only
/// this once.
#[utoipa::path(post, path = "/v0/runners/{runner}/key", tag = "runners",
    params(("runner" = String, Path, description = "Runner UUID or slug")),
    responses(
        (status = 201, body = JsonRunnerKey),
        (status = 401, body = JsonError), (status = 403, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn rotate_key(
    State(state): State<AppState>,
    _admin: Admin,
    Path(runner): Path<ResourceId>,
) -> Result<(StatusCode, axum::Json<JsonRunnerKey>), ApiError> {
    let key = generate_runner_key();
    let runner = state
        .store
        .rotate_runner_key(
            &runner,
            &hash_secret(key.expose_secret()),
            state.clock.now(),
        )
        .await?;
    tracing::info!(runner = %runner.uuid, "runner key rotated");
    Ok((
        StatusCode::CREATED,
        axum::Json(JsonRunnerKey {
            uuid: runner.uuid,
            slug: runner.slug,
            key,
        }),
    ))
}

/// List the Specs a runner serves.
#[utoipa::path(get, path = "/v0/runners/{runner}/specs", tag = "runners",
    params(("runner" = String, Path, description = "Runner UUID or slug"), Pagination),
    responses(
        (status = 200, body = [JsonSpec], headers(("X-Total-Count" = u64))),
        (status = 401, body = JsonError), (status = 403, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list_specs(
    State(state): State<AppState>,
    _admin: Admin,
    Path(runner): Path<ResourceId>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let (limit, offset) = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    // A runner serves a handful of Specs: they come in one query and are paged here.
    let mut specs = state.store.runner_specs(&runner).await?;
    let total = specs.len() as u64;
    match pagination.sort.unwrap_or_default() {
        SortBy::Name => {
            specs.sort_by(|a, b| (a.name.as_str(), a.uuid).cmp(&(b.name.as_str(), b.uuid)))
        }
        SortBy::Created => specs.sort_by_key(|s| (s.created, s.uuid)),
    }
    if pagination.direction.unwrap_or_default() == Direction::Desc {
        specs.reverse();
    }
    let page = specs
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(limit as usize)
        .collect();
    Ok(paginated(page, total))
}

/// Let a runner serve a Spec.
#[utoipa::path(post, path = "/v0/runners/{runner}/specs", tag = "runners",
    params(("runner" = String, Path, description = "Runner UUID or slug")),
    request_body = JsonNewRunnerSpec,
    responses(
        (status = 201, body = JsonSpec),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
        (status = 404, body = JsonError), (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn add_spec(
    State(state): State<AppState>,
    _admin: Admin,
    Path(runner): Path<ResourceId>,
    Json(link): Json<JsonNewRunnerSpec>,
) -> Result<(StatusCode, axum::Json<JsonSpec>), ApiError> {
    let spec = state
        .store
        .add_runner_spec(&runner, &link.spec, state.clock.now())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(spec)))
}

/// Stop a runner from serving a Spec.
#[utoipa::path(delete, path = "/v0/runners/{runner}/specs/{spec}", tag = "runners",
    params(
        ("runner" = String, Path, description = "Runner UUID or slug"),
        ("spec" = String, Path, description = "Spec UUID or slug"),
    ),
    responses(
        (status = 204),
        (status = 401, body = JsonError), (status = 403, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn remove_spec(
    State(state): State<AppState>,
    _admin: Admin,
    Path((runner, spec)): Path<(ResourceId, ResourceId)>,
) -> Result<StatusCode, ApiError> {
    state.store.remove_runner_spec(&runner, &spec).await?;
    Ok(StatusCode::NO_CONTENT)
}
