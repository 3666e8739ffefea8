//! `POST /v0/projects/{project}/results`: benchmark output from a local run becomes a
//! report at once (`crate::report::report_results`).

use axum::extract::State;
use axum::http::StatusCode;
use bencher_types::{JsonError, JsonNewResults, JsonResultsReport, ResourceId};

use super::AppState;
use super::error::ApiError;
use super::extract::{Json, Path, User};
use crate::report::{self, ResultsError};

impl From<ResultsError> for ApiError {
    fn from(error: ResultsError) -> Self {
        match error {
            ResultsError::Unreadable(why) => Self::BadRequest(why),
            ResultsError::Place(error) => error.into(),
            ResultsError::Store(error) => error.into(),
        }
    }
}

/// Report results of a local run: parsed with the adapter (`magic` by default), folded
/// when asked, written as a report on the branch and testbed (created by name when
/// new) with the Spec given, else the testbed's, else the fallback, and checked against
/// the thresholds. Results no adapter reads are refused and nothing is written.
#[utoipa::path(post, path = "/v0/projects/{project}/results", tag = "reports",
    params(("project" = String, Path, description = "Project UUID or slug")),
    request_body = JsonNewResults,
    responses(
        (status = 201, body = JsonResultsReport),
        (status = 400, body = JsonError), (status = 401, body = JsonError),
        (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    User(user): User,
    Path(project): Path<ResourceId>,
    Json(new): Json<JsonNewResults>,
) -> Result<(StatusCode, axum::Json<JsonResultsReport>), ApiError> {
    new.validate().map_err(ApiError::BadRequest)?;
    let thresholds = super::thresholds::run_thresholds(&new.thresholds)?;
    let project = state.store.get_project(&project).await?;
    let report =
        report::report_results(&state.store, &state.clock, project.uuid, &new, &thresholds).await?;
    tracing::info!(
        report = %report.report, project = %project.slug, metrics = report.metrics,
        alerts = report.alerts, by = %user.uuid, "results reported"
    );
    Ok((StatusCode::CREATED, axum::Json(report)))
}
