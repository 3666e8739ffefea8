//! `/v0/projects/{project}/reports…`: a project's reports (newest first, filtered by
//! branch, testbed and time) and one report with its results per iteration, benchmark
//! and measure. Reads only; processing writes reports (`crate::report`).

use axum::extract::State;
use axum::response::Response;
use bencher_types::{
    Direction, JsonError, JsonReport, Pagination, ReportQuery, ReportUuid, ResourceId,
};

use super::error::ApiError;
use super::extract::{Path, Query, User};
use super::{AppState, paginated};
use crate::store::report_queries::{Named, ReportFilter, created_only};

/// The UUID a filter names, or a 404 naming what was not found.
pub(super) async fn resolve_filter(
    state: &AppState,
    named: Named,
    project: bencher_types::ProjectUuid,
    id: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let Some(id) = id else {
        return Ok(None);
    };
    let found = state
        .store
        .find_named(named, project, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{} `{id}` not found", named.table())))?;
    Ok(Some(found.uuid.to_string()))
}

/// `(limit, offset)` and direction of a time-ordered list: newest first by default.
pub(super) fn time_page(pagination: &Pagination) -> Result<((u32, u64), Direction), ApiError> {
    created_only(pagination).map_err(ApiError::BadRequest)?;
    let limit_offset = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    Ok((
        limit_offset,
        pagination.direction.unwrap_or(Direction::Desc),
    ))
}

/// List a project's reports, newest first unless `direction=asc`. A report's time is
/// when its benchmark ended, else when it was submitted; results are left out (view one
/// report for them).
#[utoipa::path(get, path = "/v0/projects/{project}/reports", tag = "reports",
    params(("project" = String, Path, description = "Project UUID or slug"), ReportQuery, Pagination),
    responses(
        (status = 200, body = [JsonReport], headers(("X-Total-Count" = u64, description = "Total number of matching reports"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _user: User,
    Path(project): Path<ResourceId>,
    Query(query): Query<ReportQuery>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let (limit_offset, direction) = time_page(&pagination)?;
    let project = state.store.get_project(&project).await?;
    let filter = ReportFilter {
        branch: resolve_filter(&state, Named::Branch, project.uuid, query.branch.as_deref())
            .await?,
        testbed: resolve_filter(
            &state,
            Named::Testbed,
            project.uuid,
            query.testbed.as_deref(),
        )
        .await?,
        start_time: query.start_time,
        end_time: query.end_time,
    };
    let (reports, total) = state
        .store
        .list_reports(project.uuid, &filter, direction, limit_offset)
        .await?;
    Ok(paginated(reports, total))
}

/// View a report: branch, testbed, Spec, version, adapter, times, iterations, job, and
/// per iteration, benchmark and measure its metric, boundary and alert.
#[utoipa::path(get, path = "/v0/projects/{project}/reports/{report}", tag = "reports",
    params(
        ("project" = String, Path, description = "Project UUID or slug"),
        ("report" = String, Path, format = Uuid, description = "Report UUID"),
    ),
    responses(
        (status = 200, body = JsonReport),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn view(
    State(state): State<AppState>,
    _user: User,
    Path((project, report)): Path<(ResourceId, ReportUuid)>,
) -> Result<axum::Json<JsonReport>, ApiError> {
    let project = state.store.get_project(&project).await?;
    Ok(axum::Json(
        state.store.get_report(project.uuid, report).await?,
    ))
}
