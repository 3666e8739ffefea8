//! `/v0/projects…`: projects, open to every authenticated user. A project is also a
//! registry repository (`HOST/<slug>` or `HOST/<uuid>`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bencher_types::{JsonError, JsonNewProject, JsonProject, Pagination, ProjectQuery, ResourceId};

use super::error::ApiError;
use super::extract::{Json, Path, Query, User};
use super::{AppState, paginated};

/// List projects.
#[utoipa::path(get, path = "/v0/projects", tag = "projects",
    params(ProjectQuery, Pagination),
    responses(
        (status = 200, body = [JsonProject], headers(("X-Total-Count" = u64, description = "Total number of matching projects"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _user: User,
    Query(query): Query<ProjectQuery>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let limit_offset = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    let (projects, total) = state
        .store
        .list_projects(&query, &pagination, limit_offset)
        .await?;
    Ok(paginated(projects, total))
}

/// Create a project.
#[utoipa::path(post, path = "/v0/projects", tag = "projects",
    request_body = JsonNewProject,
    responses(
        (status = 201, body = JsonProject),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    User(user): User,
    Json(new): Json<JsonNewProject>,
) -> Result<(StatusCode, axum::Json<JsonProject>), ApiError> {
    let project = state.store.create_project(&new, state.clock.now()).await?;
    tracing::info!(project = %project.uuid, slug = %project.slug, by = %user.uuid, "project created");
    Ok((StatusCode::CREATED, axum::Json(project)))
}

/// View a project.
#[utoipa::path(get, path = "/v0/projects/{project}", tag = "projects",
    params(("project" = String, Path, description = "Project UUID or slug")),
    responses(
        (status = 200, body = JsonProject),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn view(
    State(state): State<AppState>,
    _user: User,
    Path(project): Path<ResourceId>,
) -> Result<axum::Json<JsonProject>, ApiError> {
    Ok(axum::Json(state.store.get_project(&project).await?))
}
