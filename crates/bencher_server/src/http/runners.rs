//! `/v0/runners…`: Runners, their keys and the Specs they serve (server admins only), and
//! `GET /v0/runners/{runner}/channel`, the runner's own WebSocket, authenticated with its
//! key before the upgrade, and `GET /v0/runners/{runner}/update/{os}/{arch}`, the
//! runner update artifacts this server hosts. A runner's state comes from the live channels (`channel::Hub`)
//! and the store.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bencher_types::{
    Direction, JobStatus, JobUuid, JsonError, JsonNewRunner, JsonNewRunnerSpec, JsonRunner,
    JsonRunnerKey, JsonSpec, JsonUpdateRunner, Pagination, ResourceId, RunnerKey, RunnerQuery,
    RunnerUuid, SortBy,
};
use futures::StreamExt;
use tokio_util::io::ReaderStream;

use super::error::ApiError;
use super::extract::{Admin, Json, Path, Query};
use super::{AppState, paginated};
use crate::auth::{generate_runner_key, hash_secret};
use crate::channel::output::{OutputDocument, store_output};
use crate::channel::{self, ChannelContext};
use crate::registry::external_origin;
use crate::store::StoreError;
use crate::store::channel::StoredPresence;
use crate::store::runners::Runner;
use crate::update::ArtifactSource;

/// Runners as the API shows them: state, current job and last sighting from the live
/// channels of this process, else from the store's channel records.
async fn to_json_all(state: &AppState, runners: Vec<Runner>) -> Result<Vec<JsonRunner>, ApiError> {
    // An archived runner's channel is closing (or closed): it is offline.
    let local: HashMap<RunnerUuid, channel::LocalPresence> = runners
        .iter()
        .filter(|r| r.archived.is_none())
        .filter_map(|r| state.hub.presence(r.uuid).map(|p| (r.uuid, p)))
        .collect();
    let elsewhere: Vec<RunnerUuid> = runners
        .iter()
        .filter(|r| r.archived.is_none() && !local.contains_key(&r.uuid))
        .map(|r| r.uuid)
        .collect();
    let stored: HashMap<RunnerUuid, StoredPresence> =
        state.store.runner_presence(&elsewhere).await?;
    let now = state.clock.now();
    Ok(runners
        .into_iter()
        .map(|runner| {
            let (state, current_job, last_seen) = channel::runner_state(
                local.get(&runner.uuid).copied(),
                stored.get(&runner.uuid).copied(),
                runner.last_seen,
                now,
                state.timeouts.heartbeat,
            );
            JsonRunner {
                uuid: runner.uuid,
                name: runner.name,
                slug: runner.slug,
                specs: runner.specs,
                state,
                last_seen,
                current_job,
                archived: runner.archived,
                created: runner.created,
                modified: runner.modified,
            }
        })
        .collect())
}

async fn to_json(state: &AppState, runner: Runner) -> Result<JsonRunner, ApiError> {
    to_json_all(state, vec![runner])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal("a runner vanished while shown".into()))
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
    Ok(paginated(to_json_all(&state, runners).await?, total))
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
    let runner = state.store.get_runner(&runner).await?;
    Ok(axum::Json(to_json(&state, runner).await?))
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
        // An archived runner cannot authenticate: its open channel closes now.
        state.hub.revoke(runner.uuid).await;
    }
    Ok(axum::Json(to_json(&state, runner).await?))
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
    // The old key fails from the rotation's commit on, and so does its open channel.
    state.hub.revoke(runner.uuid).await;
    Ok((
        StatusCode::CREATED,
        axum::Json(JsonRunnerKey {
            uuid: runner.uuid,
            slug: runner.slug,
            key,
        }),
    ))
}

/// The one message for every refused channel: which part was wrong (unknown runner, wrong
/// key, archived runner, a malformed or missing key) is not told.
const CHANNEL_REFUSED: &str = "invalid runner credentials";

/// The runner key of `Authorization: Bearer bencher_runner_…`, if well-formed.
fn runner_key(headers: &HeaderMap) -> Option<RunnerKey> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    key.trim().parse().ok()
}

/// Open the runner's channel: a WebSocket carrying the runner protocol (JSON text
/// frames). Authenticated with the runner's key before the upgrade; a new connection
/// replaces the runner's open one. Messages are limited to the server's request limit.
#[utoipa::path(get, path = "/v0/runners/{runner}/channel", tag = "runners",
    params(("runner" = String, Path, description = "Runner UUID or slug")),
    responses(
        (status = 101, description = "Switching to the runner protocol over WebSocket"),
        (status = 400, body = JsonError), (status = 401, body = JsonError),
    ),
    security(("runner_key" = [])))]
pub async fn channel(
    State(state): State<AppState>,
    Path(runner): Path<ResourceId>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let key = runner_key(&headers).ok_or(ApiError::Unauthorized(CHANNEL_REFUSED))?;
    let key_hash = hash_secret(key.expose_secret());
    let runner = state
        .store
        .authenticate_runner(&runner, &key_hash)
        .await?
        .ok_or(ApiError::Unauthorized(CHANNEL_REFUSED))?;
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::BadRequest(format!(
            "expected a WebSocket upgrade: {}",
            rejection.body_text()
        ))
    })?;
    let context = ChannelContext {
        hub: state.hub.clone(),
        store: state.store.clone(),
        blobs: state.blobs.clone(),
        clock: state.clock.clone(),
        tokens: state.oci_tokens.clone(),
        timeouts: state.timeouts,
        runner: runner.uuid,
        slug: runner.slug,
        key_hash,
        registry: external_origin(&headers),
        max_output_size: state.max_output_size,
        releases: state.releases.clone(),
    };
    Ok(upgrade
        .max_message_size(state.request_limit)
        .max_frame_size(state.request_limit)
        .on_upgrade(move |socket| channel::serve(socket, context)))
}

/// List the Specs a runner serves. An admin token, or the runner's own key: a runner
/// reads its Specs at start to say which of them it cannot serve, and why.
#[utoipa::path(get, path = "/v0/runners/{runner}/specs", tag = "runners",
    params(("runner" = String, Path, description = "Runner UUID or slug"), Pagination),
    responses(
        (status = 200, body = [JsonSpec], headers(("X-Total-Count" = u64))),
        (status = 401, body = JsonError), (status = 403, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = []), ("runner_key" = [])))]
pub async fn list_specs(
    State(state): State<AppState>,
    Path(runner): Path<ResourceId>,
    Query(pagination): Query<Pagination>,
    request: Request,
) -> Result<Response, ApiError> {
    runner_or_admin(&state, &runner, request).await?;
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

/// Authenticates the runner's own key (`Bearer bencher_runner_…`) or an admin token.
async fn runner_or_admin(
    state: &AppState,
    runner: &ResourceId,
    request: Request,
) -> Result<(), ApiError> {
    match runner_key(request.headers()) {
        Some(key) => {
            let key_hash = hash_secret(key.expose_secret());
            state
                .store
                .authenticate_runner(runner, &key_hash)
                .await?
                .ok_or(ApiError::Unauthorized(CHANNEL_REFUSED))?;
        }
        None => {
            let (mut parts, _) = request.into_parts();
            Admin::from_request_parts(&mut parts, state).await?;
        }
    }
    Ok(())
}

/// Download the runner binary offered by `update` for a platform (`os`/`arch` as Rust's
/// `std::env::consts`, e.g. `linux`/`x86_64`), when the server hosts it (`[update]`
/// `directory`). The runner's own key, or an admin token. The runner checks the
/// checksum and signature of the `update` message against what it downloads.
#[utoipa::path(get, path = "/v0/runners/{runner}/update/{os}/{arch}", tag = "runners",
    params(
        ("runner" = String, Path, description = "Runner UUID or slug"),
        ("os" = String, Path, description = "Operating system, e.g. `linux`"),
        ("arch" = String, Path, description = "Architecture, e.g. `x86_64`"),
    ),
    responses(
        (status = 200, description = "The runner binary", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("Content-Length" = u64))),
        (status = 401, body = JsonError), (status = 403, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = []), ("runner_key" = [])))]
pub async fn download_update(
    State(state): State<AppState>,
    Path((runner, os, arch)): Path<(ResourceId, String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let admin = runner_key(request.headers()).is_none();
    runner_or_admin(&state, &runner, request).await?;
    if admin {
        // A runner key names its runner; an admin may name any, so it must exist.
        state.store.get_runner(&runner).await?;
    }
    let releases = state
        .releases
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("this server offers no runner update".into()))?;
    let not_hosted = || {
        ApiError::NotFound(format!(
            "this server hosts no runner update for {os}/{arch}"
        ))
    };
    let path = match releases.artifact(&os, &arch).map(|a| &a.source) {
        Some(ArtifactSource::File(path)) => path,
        Some(ArtifactSource::Url(_)) | None => return Err(not_hosted()),
    };
    // The file was hashed at start; if the operator removed it since, that is the
    // server's problem, not the runner's.
    let file = tokio::fs::File::open(path)
        .await
        .map_err(ApiError::internal)?;
    let length = file.metadata().await.map_err(ApiError::internal)?.len();
    Response::builder()
        .header(CONTENT_TYPE, "application/octet-stream")
        .header(CONTENT_LENGTH, length)
        .body(Body::from_stream(ReaderStream::new(file)))
        .map_err(ApiError::internal)
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

/// The message for every refused upload: which part was wrong is not told.
const UPLOAD_REFUSED: &str = "invalid runner credentials";

/// The digest an uploaded output document is stored under.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct JsonOutputDigest {
    /// `sha256:…`, for `output` in the runner's `completed` or `failed`.
    pub digest: String,
}

/// Upload a job's output document `{results, error?}` before the terminal message that
/// references it (protocol extension `upload`), for output larger than a channel
/// message. Authenticated with the runner's key; only for a job the runner holds.
#[utoipa::path(put, path = "/v0/runners/{runner}/jobs/{job}/output", tag = "runners",
    params(
        ("runner" = String, Path, description = "Runner UUID or slug"),
        ("job" = String, Path, description = "Job UUID"),
    ),
    request_body(content = String, content_type = "application/json",
        description = "The output document: `{results, error?}`"),
    responses(
        (status = 201, body = JsonOutputDigest),
        (status = 400, body = JsonError), (status = 401, body = JsonError),
        (status = 404, body = JsonError), (status = 409, body = JsonError),
        (status = 413, body = JsonError),
    ),
    security(("runner_key" = [])))]
pub async fn upload_output(
    State(state): State<AppState>,
    Path((runner, job)): Path<(ResourceId, JobUuid)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, axum::Json<JsonOutputDigest>), ApiError> {
    let key = runner_key(&headers).ok_or(ApiError::Unauthorized(UPLOAD_REFUSED))?;
    let key_hash = hash_secret(key.expose_secret());
    let runner = state
        .store
        .authenticate_runner(&runner, &key_hash)
        .await?
        .ok_or(ApiError::Unauthorized(UPLOAD_REFUSED))?;
    let not_held = || ApiError::NotFound(format!("job {job} is not held by this runner"));
    let job = match state.store.get_job(job).await {
        Ok(job) => job,
        Err(StoreError::NotFound(_)) => return Err(not_held()),
        Err(error) => return Err(error.into()),
    };
    if job.runner != Some(runner.uuid) {
        return Err(not_held());
    }
    // Claimed or running; or ended otherwise (a heartbeat timeout, a cancel) with no
    // output yet, which the runner's late terminal message still records.
    let open = matches!(job.status, JobStatus::Claimed | JobStatus::Running)
        || job.output_digest.is_none();
    if !open {
        return Err(ApiError::Conflict(format!(
            "job {} is {} and its output is recorded",
            job.uuid, job.status
        )));
    }
    let limit = state.max_output_size;
    let too_large =
        || ApiError::PayloadTooLarge(format!("the output document is larger than {limit} bytes"));
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(
        usize::try_from(declared.unwrap_or_default().min(limit)).unwrap_or_default(),
    );
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|error| ApiError::BadRequest(format!("cannot read the body: {error}")))?;
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let document: OutputDocument = serde_json::from_slice(&bytes)
        .map_err(|error| ApiError::BadRequest(format!("not an output document: {error}")))?;
    drop(bytes);
    let digest = store_output(&state.blobs, &document)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(runner = %runner.uuid, job = %job.uuid, %digest, "job output uploaded");
    Ok((StatusCode::CREATED, axum::Json(JsonOutputDigest { digest })))
}
