//! `/v0/projects/{project}/thresholds…`: threshold CRUD. A threshold is unique per
//! branch, testbed and measure; its model is validated by `threshold::Model::new`, and
//! changing it adds a model version (the old one stays for the boundaries that used it).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bencher_types::{
    JsonError, JsonNewThreshold, JsonRunThreshold, JsonThreshold, JsonUpdateThreshold, Pagination,
    ResourceId, ThresholdQuery, ThresholdTest, ThresholdUuid,
};

use super::error::ApiError;
use super::extract::{Json, Path, Query, User};
use super::reports::resolve_filter;
use super::{AppState, paginated};
use crate::store::report_queries::{
    Named, NewModel, NewThreshold, RunThreshold, ThresholdFilter, created_only,
};
use crate::threshold::{Model, ModelParameters, Test};

fn test_of(test: ThresholdTest) -> Test {
    match test {
        ThresholdTest::Static => Test::Static,
        ThresholdTest::Percentage => Test::Percentage,
        ThresholdTest::ZScore => Test::ZScore,
        ThresholdTest::TTest => Test::TTest,
        ThresholdTest::LogNormal => Test::LogNormal,
        ThresholdTest::Iqr => Test::Iqr,
        ThresholdTest::DeltaIqr => Test::DeltaIqr,
    }
}

/// The model of a request body, or a 400 saying why it is impossible.
fn validated(model: NewModel) -> Result<NewModel, ApiError> {
    Model::new(ModelParameters {
        test: test_of(model.test),
        min_sample_size: model.min_sample_size,
        max_sample_size: model.max_sample_size,
        window: model.window,
        lower_boundary: model.lower_boundary,
        upper_boundary: model.upper_boundary,
    })
    .map_err(|e| ApiError::BadRequest(format!("invalid threshold model: {e}")))?;
    Ok(model)
}

/// A run's `thresholds`, each model validated; a 400 names the measure of an impossible
/// one. Nothing is written before all are valid.
pub(super) fn run_thresholds(
    thresholds: &[JsonRunThreshold],
) -> Result<Vec<RunThreshold>, ApiError> {
    JsonRunThreshold::validate_all(thresholds).map_err(ApiError::BadRequest)?;
    thresholds
        .iter()
        .map(|t| {
            let model = validated(NewModel {
                test: t.test,
                min_sample_size: t.min_sample_size,
                max_sample_size: t.max_sample_size,
                window: t.window,
                lower_boundary: t.lower_boundary,
                upper_boundary: t.upper_boundary,
            })
            .map_err(|e| match e {
                ApiError::BadRequest(why) => {
                    ApiError::BadRequest(format!("threshold for measure `{}`: {why}", t.measure))
                }
                other => other,
            })?;
            Ok(RunThreshold {
                measure: t.measure.as_str().to_owned(),
                model,
            })
        })
        .collect()
}

/// List a project's thresholds, oldest first unless `direction=desc`.
#[utoipa::path(get, path = "/v0/projects/{project}/thresholds", tag = "thresholds",
    params(("project" = String, Path, description = "Project UUID or slug"), ThresholdQuery, Pagination),
    responses(
        (status = 200, body = [JsonThreshold], headers(("X-Total-Count" = u64, description = "Total number of matching thresholds"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _user: User,
    Path(project): Path<ResourceId>,
    Query(query): Query<ThresholdQuery>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    created_only(&pagination).map_err(ApiError::BadRequest)?;
    let limit_offset = pagination.limit_offset().map_err(ApiError::BadRequest)?;
    let project = state.store.get_project(&project).await?;
    let p = project.uuid;
    let filter = ThresholdFilter {
        branch: resolve_filter(&state, Named::Branch, p, query.branch.as_deref()).await?,
        testbed: resolve_filter(&state, Named::Testbed, p, query.testbed.as_deref()).await?,
        measure: resolve_filter(&state, Named::Measure, p, query.measure.as_deref()).await?,
    };
    let (thresholds, total) = state
        .store
        .list_thresholds(
            project.uuid,
            &filter,
            pagination.direction.unwrap_or_default(),
            limit_offset,
        )
        .await?;
    Ok(paginated(thresholds, total))
}

/// Create a threshold for a branch, testbed and measure (names, slugs or UUIDs; a
/// built-in measure is created on first use).
#[utoipa::path(post, path = "/v0/projects/{project}/thresholds", tag = "thresholds",
    params(("project" = String, Path, description = "Project UUID or slug")),
    request_body = JsonNewThreshold,
    responses(
        (status = 201, body = JsonThreshold),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
        (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    User(user): User,
    Path(project): Path<ResourceId>,
    Json(new): Json<JsonNewThreshold>,
) -> Result<(StatusCode, axum::Json<JsonThreshold>), ApiError> {
    let model = validated(NewModel {
        test: new.test,
        min_sample_size: new.min_sample_size,
        max_sample_size: new.max_sample_size,
        window: new.window,
        lower_boundary: new.lower_boundary,
        upper_boundary: new.upper_boundary,
    })?;
    let project = state.store.get_project(&project).await?;
    let threshold = state
        .store
        .create_threshold(
            &NewThreshold {
                project: project.uuid,
                branch: new.branch.as_str(),
                testbed: new.testbed.as_str(),
                measure: new.measure.as_str(),
                model,
            },
            state.clock.now(),
        )
        .await?;
    tracing::info!(threshold = %threshold.uuid, project = %project.slug, by = %user.uuid, "threshold created");
    Ok((StatusCode::CREATED, axum::Json(threshold)))
}

/// View a threshold with its current model.
#[utoipa::path(get, path = "/v0/projects/{project}/thresholds/{threshold}", tag = "thresholds",
    params(
        ("project" = String, Path, description = "Project UUID or slug"),
        ("threshold" = String, Path, format = Uuid, description = "Threshold UUID"),
    ),
    responses(
        (status = 200, body = JsonThreshold),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn view(
    State(state): State<AppState>,
    _user: User,
    Path((project, threshold)): Path<(ResourceId, ThresholdUuid)>,
) -> Result<axum::Json<JsonThreshold>, ApiError> {
    let project = state.store.get_project(&project).await?;
    Ok(axum::Json(
        state.store.get_threshold(project.uuid, threshold).await?,
    ))
}

/// Replace a threshold's model: a new model version; the old one is kept, `replaced`.
#[utoipa::path(put, path = "/v0/projects/{project}/thresholds/{threshold}", tag = "thresholds",
    params(
        ("project" = String, Path, description = "Project UUID or slug"),
        ("threshold" = String, Path, format = Uuid, description = "Threshold UUID"),
    ),
    request_body = JsonUpdateThreshold,
    responses(
        (status = 200, body = JsonThreshold),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn update(
    State(state): State<AppState>,
    User(user): User,
    Path((project, threshold)): Path<(ResourceId, ThresholdUuid)>,
    Json(update): Json<JsonUpdateThreshold>,
) -> Result<axum::Json<JsonThreshold>, ApiError> {
    let model = validated(NewModel {
        test: update.test,
        min_sample_size: update.min_sample_size,
        max_sample_size: update.max_sample_size,
        window: update.window,
        lower_boundary: update.lower_boundary,
        upper_boundary: update.upper_boundary,
    })?;
    let project = state.store.get_project(&project).await?;
    let threshold = state
        .store
        .update_threshold(project.uuid, threshold, &model, state.clock.now())
        .await?;
    tracing::info!(threshold = %threshold.uuid, model = %threshold.model.uuid, by = %user.uuid, "threshold model replaced");
    Ok(axum::Json(threshold))
}

/// Delete a threshold with its models and the boundaries and alerts they gave.
#[utoipa::path(delete, path = "/v0/projects/{project}/thresholds/{threshold}", tag = "thresholds",
    params(
        ("project" = String, Path, description = "Project UUID or slug"),
        ("threshold" = String, Path, format = Uuid, description = "Threshold UUID"),
    ),
    responses(
        (status = 204),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    User(user): User,
    Path((project, threshold)): Path<(ResourceId, ThresholdUuid)>,
) -> Result<StatusCode, ApiError> {
    let project = state.store.get_project(&project).await?;
    state
        .store
        .delete_threshold(project.uuid, threshold)
        .await?;
    tracing::info!(%threshold, project = %project.slug, by = %user.uuid, "threshold deleted");
    Ok(StatusCode::NO_CONTENT)
}
