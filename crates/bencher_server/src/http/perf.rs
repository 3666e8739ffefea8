//! `GET /v0/projects/{project}/perf`: the history of branches × testbeds × benchmarks ×
//! measures, one series per combination, optionally only on some Specs and in a time
//! range. Bounded: at most `MAX_PERF_SERIES` series and `MAX_PERF_POINTS` points, else
//! a 400 that says how to narrow the query.

use axum::extract::State;
use bencher_types::{
    JsonError, JsonNamed, JsonPerf, MAX_PERF_POINTS, MAX_PERF_SERIES, PerfQuery, ProjectUuid,
    ResourceId,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{Path, Query, User};
use crate::store::report_queries::{Named, PerfError, PerfSelection, group_perf};

/// Most items one list of the query may name.
const MAX_LIST_ITEMS: usize = 64;

impl From<PerfError> for ApiError {
    fn from(error: PerfError) -> Self {
        match error {
            PerfError::TooManyPoints { .. } => Self::BadRequest(error.to_string()),
            PerfError::Store(error) => error.into(),
        }
    }
}

/// Resolves a comma-separated list of names, slugs or UUIDs; duplicates are kept once.
async fn resolve_list(
    state: &AppState,
    named: Named,
    project: ProjectUuid,
    parameter: &str,
    list: &str,
) -> Result<Vec<JsonNamed>, ApiError> {
    let items: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    if items.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "`{parameter}` needs at least one name, slug or UUID"
        )));
    }
    if items.len() > MAX_LIST_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "`{parameter}` names {} items, more than {MAX_LIST_ITEMS}",
            items.len()
        )));
    }
    let mut resolved: Vec<JsonNamed> = Vec::with_capacity(items.len());
    for item in items {
        let found = state
            .store
            .find_named(named, project, item)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("{} `{item}` not found", named.table())))?;
        if !resolved.iter().any(|r| r.uuid == found.uuid) {
            resolved.push(found);
        }
    }
    Ok(resolved)
}

/// Query the history: one series per branch × testbed × benchmark × measure (each a
/// comma-separated list of names, slugs or UUIDs), every point with its version, report,
/// iteration, Spec, metric, boundary and alert, oldest first.
#[utoipa::path(get, path = "/v0/projects/{project}/perf", tag = "reports",
    params(("project" = String, Path, description = "Project UUID or slug"), PerfQuery),
    responses(
        (status = 200, body = JsonPerf),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn perf(
    State(state): State<AppState>,
    _user: User,
    Path(project): Path<ResourceId>,
    Query(query): Query<PerfQuery>,
) -> Result<axum::Json<JsonPerf>, ApiError> {
    if let (Some(start), Some(end)) = (query.start_time, query.end_time)
        && start > end
    {
        return Err(ApiError::BadRequest(
            "`start_time` is after `end_time`".into(),
        ));
    }
    let project = state.store.get_project(&project).await?;
    let p = project.uuid;
    let selection = PerfSelection {
        branches: resolve_list(&state, Named::Branch, p, "branches", &query.branches).await?,
        testbeds: resolve_list(&state, Named::Testbed, p, "testbeds", &query.testbeds).await?,
        benchmarks: resolve_list(&state, Named::Benchmark, p, "benchmarks", &query.benchmarks)
            .await?,
        measures: resolve_list(&state, Named::Measure, p, "measures", &query.measures).await?,
        specs: match &query.specs {
            Some(specs) => resolve_list(&state, Named::Spec, p, "specs", specs).await?,
            None => Vec::new(),
        },
        start_time: query.start_time,
        end_time: query.end_time,
    };
    let series = selection.branches.len()
        * selection.testbeds.len()
        * selection.benchmarks.len()
        * selection.measures.len();
    if series > MAX_PERF_SERIES {
        return Err(ApiError::BadRequest(format!(
            "the query asks for {series} series (branches × testbeds × benchmarks × measures), more than {MAX_PERF_SERIES}: ask for fewer"
        )));
    }
    let points = state
        .store
        .perf_points(p, &selection, MAX_PERF_POINTS)
        .await?;
    Ok(axum::Json(JsonPerf {
        project: p,
        start_time: query.start_time,
        end_time: query.end_time,
        results: group_perf(&selection, points),
    }))
}
