//! `/v0/projects/{project}/alerts…`: a project's alerts (newest first, by status), one
//! alert, and dismissing or re-activating it.

use axum::extract::State;
use axum::response::Response;
use bencher_types::{
    AlertQuery, AlertUuid, JsonAlert, JsonError, JsonUpdateAlert, Pagination, ResourceId,
};

use super::error::ApiError;
use super::extract::{Json, Path, Query, User};
use super::reports::time_page;
use super::{AppState, paginated};

/// List a project's alerts, newest first unless `direction=asc`, each with its
/// benchmark, measure, branch, testbed, report, metric and boundary.
#[utoipa::path(get, path = "/v0/projects/{project}/alerts", tag = "alerts",
    params(("project" = String, Path, description = "Project UUID or slug"), AlertQuery, Pagination),
    responses(
        (status = 200, body = [JsonAlert], headers(("X-Total-Count" = u64, description = "Total number of matching alerts"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _user: User,
    Path(project): Path<ResourceId>,
    Query(query): Query<AlertQuery>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let (limit_offset, direction) = time_page(&pagination)?;
    let project = state.store.get_project(&project).await?;
    let (alerts, total) = state
        .store
        .list_alerts(project.uuid, &query, direction, limit_offset)
        .await?;
    Ok(paginated(alerts, total))
}

/// View an alert.
#[utoipa::path(get, path = "/v0/projects/{project}/alerts/{alert}", tag = "alerts",
    params(
        ("project" = String, Path, description = "Project UUID or slug"),
        ("alert" = String, Path, format = Uuid, description = "Alert UUID"),
    ),
    responses(
        (status = 200, body = JsonAlert),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn view(
    State(state): State<AppState>,
    _user: User,
    Path((project, alert)): Path<(ResourceId, AlertUuid)>,
) -> Result<axum::Json<JsonAlert>, ApiError> {
    let project = state.store.get_project(&project).await?;
    Ok(axum::Json(
        state.store.get_alert(project.uuid, alert).await?,
    ))
}

/// Dismiss an alert (`{"status": "dismissed"}`) or re-activate it (`"active"`).
#[utoipa::path(patch, path = "/v0/projects/{project}/alerts/{alert}", tag = "alerts",
    params(
        ("project" = String, Path, description = "Project UUID or slug"),
        ("alert" = String, Path, format = Uuid, description = "Alert UUID"),
    ),
    request_body = JsonUpdateAlert,
    responses(
        (status = 200, body = JsonAlert),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn update(
    State(state): State<AppState>,
    User(user): User,
    Path((project, alert)): Path<(ResourceId, AlertUuid)>,
    Json(update): Json<JsonUpdateAlert>,
) -> Result<axum::Json<JsonAlert>, ApiError> {
    let project = state.store.get_project(&project).await?;
    let alert = state
        .store
        .set_alert_status(project.uuid, alert, update.status, state.clock.now())
        .await?;
    tracing::info!(alert = %alert.uuid, status = %alert.status, by = %user.uuid, "alert status set");
    Ok(axum::Json(alert))
}
