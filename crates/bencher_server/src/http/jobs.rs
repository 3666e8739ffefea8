//! Jobs over REST: `POST /v0/run` (a report and its job, the image resolved to a digest
//! in the project's repository), a project's jobs, one job, cancel, and every project's
//! jobs for admins. Handlers validate and resolve; the store writes; the lifecycle rules
//! are `crate::queue`'s. A submitted job wakes a waiting runner at once and a canceled
//! one reaches its runner as `cancel`, through `channel::Hub`. One job's view carries the
//! output its runner reported (read from blob storage). Environment values never leave
//! the server in a response.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bencher_oci::reference::{DEFAULT_REGISTRY, Reference, ReferenceError, Target};
use bencher_types::protocol::JobConfig;
use bencher_types::{
    DEFAULT_BRANCH, DEFAULT_TESTBED, JobQuery, JobUuid, JsonError, JsonJob, JsonNewRun,
    JsonProject, Pagination, REDACTED, ResourceId, ResourceName, SortBy,
};

use super::error::{ApiError, error_chain};
use super::extract::{Admin, Json, Path, Query, User};
use super::{AppState, paginated};
use crate::channel::output::read_output;
use crate::registry::external_origin;
use crate::store::jobs::{CreateRunError, Job, JobFilter, NewRun, TransitionError};
use crate::store::{Store, StoreError};

/// The job as clients see it: environment values redacted (they may be secrets), output
/// absent (lists leave it out; one job's view adds it).
fn to_json(job: Job) -> JsonJob {
    let mut config = job.config;
    if let Some(env) = &mut config.env {
        for value in env.values_mut() {
            REDACTED.clone_into(value);
        }
    }
    JsonJob {
        uuid: job.uuid,
        project: job.project,
        report: job.report,
        status: job.status,
        spec: job.spec,
        runner: job.runner,
        priority: job.priority,
        config,
        created: job.created,
        claimed: job.claimed,
        started: job.started,
        ended: job.ended,
        last_heartbeat: job.last_heartbeat,
        error: job.error,
        output: None,
        modified: job.modified,
    }
}

impl From<CreateRunError> for ApiError {
    fn from(error: CreateRunError) -> Self {
        match error {
            CreateRunError::NoSpec { .. }
            | CreateRunError::ArchivedSpec(_)
            | CreateRunError::ArchivedTestbedSpec { .. } => Self::BadRequest(error.to_string()),
            CreateRunError::UnknownSpec(_) | CreateRunError::Unknown { .. } => {
                Self::NotFound(error.to_string())
            }
            CreateRunError::Conflict(why) => Self::Conflict(why),
            CreateRunError::Store(error) => error.into(),
            CreateRunError::Config(_) => Self::internal(error),
        }
    }
}

impl From<TransitionError> for ApiError {
    fn from(error: TransitionError) -> Self {
        match error {
            TransitionError::NotFound(_) => Self::NotFound(error.to_string()),
            TransitionError::NotClaimedBy { .. } | TransitionError::Invalid(_) => {
                Self::Conflict(error.to_string())
            }
            TransitionError::Store(error) => error.into(),
            TransitionError::ClaimWithoutRunner => Self::internal(error),
        }
    }
}

/// Why an image reference does not name an image the job can run. Every case but
/// `Store` is the caller's (400).
#[derive(Debug, thiserror::Error)]
enum ImageError {
    #[error("invalid image reference `{reference}`")]
    Parse {
        reference: String,
        #[source]
        source: ReferenceError,
    },
    #[error(
        "image `{reference}` is in repository `{repository}`, not in project `{project}`'s: push it to `{origin}/{project}` on this server first"
    )]
    OtherRepository {
        reference: String,
        repository: String,
        project: String,
        origin: String,
    },
    #[error("tag `{tag}` not found in repository `{project}`; push the image first")]
    UnknownTag { tag: String, project: String },
    #[error("manifest `{digest}` not found in repository `{project}`")]
    UnknownDigest { digest: String, project: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ImageError> for ApiError {
    fn from(error: ImageError) -> Self {
        match error {
            ImageError::Store(error) => error.into(),
            other => Self::BadRequest(error_chain(&other)),
        }
    }
}

/// Resolves `raw` to the digest of a manifest in `project`'s repository. The registry
/// host is not checked (the server cannot know every name it is reached by); the
/// repository must be the project, by slug or UUID.
async fn resolve_image(
    store: &Store,
    project: &JsonProject,
    raw: &str,
    origin: &str,
) -> Result<String, ImageError> {
    let reference: Reference = raw.trim().parse().map_err(|source| ImageError::Parse {
        reference: raw.to_owned(),
        source,
    })?;
    // A reference without a registry (`my-project:v1`) parses with Docker's default,
    // `docker.io/library/my-project`; here it names this registry's `my-project`.
    let implicit_registry = reference.registry == DEFAULT_REGISTRY
        && !raw.trim().starts_with("docker.io/")
        && !raw.trim().starts_with("index.docker.io/");
    let repository = match reference.repository.strip_prefix("library/") {
        Some(name) if implicit_registry => name,
        _ => reference.repository.as_str(),
    };
    if repository != project.slug.as_str() && repository != project.uuid.to_string() {
        return Err(ImageError::OtherRepository {
            reference: raw.to_owned(),
            repository: repository.to_owned(),
            project: project.slug.to_string(),
            origin: origin
                .split_once("://")
                .map_or(origin, |(_, host)| host)
                .to_owned(),
        });
    }
    let slug = project.slug.to_string();
    let manifest = match reference.target() {
        Target::Digest(digest) => store
            .manifest_by_digest(project.uuid, digest.as_str())
            .await?
            .ok_or_else(|| ImageError::UnknownDigest {
                digest: digest.to_string(),
                project: slug,
            })?,
        Target::Tag(tag) => store
            .manifest_by_tag(project.uuid, &tag)
            .await?
            .ok_or(ImageError::UnknownTag { tag, project: slug })?,
    };
    Ok(manifest.digest)
}

fn default_name(name: &str) -> Result<ResourceName, ApiError> {
    name.parse().map_err(ApiError::internal)
}

/// Submit a run: a report shell and its pending job, in one transaction.
///
/// The image is resolved to a manifest digest in the project's repository now, so
/// moving the tag later does not change the job. The Spec is `job.spec`, else the
/// testbed's Spec, else the fallback Spec; it is recorded on the testbed and the report.
#[utoipa::path(post, path = "/v0/run", tag = "jobs",
    request_body = JsonNewRun,
    responses(
        (status = 201, body = JsonJob),
        (status = 400, body = JsonError), (status = 401, body = JsonError),
        (status = 404, body = JsonError), (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn run(
    State(state): State<AppState>,
    User(user): User,
    headers: HeaderMap,
    Json(new): Json<JsonNewRun>,
) -> Result<(StatusCode, axum::Json<JsonJob>), ApiError> {
    new.job.validate().map_err(ApiError::BadRequest)?;
    let thresholds = super::thresholds::run_thresholds(&new.thresholds)?;
    let project = state.store.get_project(&new.project).await?;
    let origin = external_origin(&headers);
    let digest = resolve_image(&state.store, &project, &new.job.image, &origin).await?;
    let job = new.job;
    let config = JobConfig {
        registry: origin,
        project: project.uuid,
        digest,
        image: Some(job.image.trim().to_owned()),
        entrypoint: job.entrypoint,
        cmd: job.cmd,
        env: job.env,
        timeout: job.timeout.unwrap_or_default().get(),
        file_paths: job.file_paths,
        build_time: job.build_time,
        file_size: job.file_size,
        iter: Some(job.iter.unwrap_or_default().get()),
        allow_failure: job.allow_failure,
    };
    config.validate().map_err(ApiError::BadRequest)?;
    let run = NewRun {
        project: project.uuid,
        branch: match new.branch {
            Some(branch) => branch,
            None => default_name(DEFAULT_BRANCH)?,
        },
        testbed: match new.testbed {
            Some(testbed) => testbed,
            None => default_name(DEFAULT_TESTBED)?,
        },
        spec: job.spec,
        adapter: new.adapter,
        hash: new.hash,
        fold: new.fold,
        config,
        thresholds,
        priority: 0,
    };
    let job = state.store.create_run(&run, state.clock.now()).await?;
    state.hub.job_available(job.spec.uuid).await;
    tracing::info!(
        job = %job.uuid, project = %project.slug, spec = %job.spec.slug,
        digest = %job.config.digest, by = %user.uuid, "job submitted"
    );
    Ok((StatusCode::CREATED, axum::Json(to_json(job))))
}

/// `(limit, offset)` and direction of a job list; jobs sort by submission time only.
fn job_page(pagination: &Pagination) -> Result<(u32, u64), ApiError> {
    if pagination.sort == Some(SortBy::Name) {
        return Err(ApiError::BadRequest(
            "jobs have no name: sort them by `created`".into(),
        ));
    }
    pagination.limit_offset().map_err(ApiError::BadRequest)
}

async fn list_page(
    state: &AppState,
    filter: JobFilter,
    pagination: &Pagination,
) -> Result<Response, ApiError> {
    let limit_offset = job_page(pagination)?;
    let (jobs, total) = state
        .store
        .list_jobs(
            &filter,
            pagination.direction.unwrap_or_default(),
            limit_offset,
        )
        .await?;
    Ok(paginated(
        jobs.into_iter().map(to_json).collect::<Vec<_>>(),
        total,
    ))
}

/// List a project's jobs, oldest first unless `direction=desc`.
#[utoipa::path(get, path = "/v0/projects/{project}/jobs", tag = "jobs",
    params(("project" = String, Path, description = "Project UUID or slug"), JobQuery, Pagination),
    responses(
        (status = 200, body = [JsonJob], headers(("X-Total-Count" = u64, description = "Total number of matching jobs"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    _user: User,
    Path(project): Path<ResourceId>,
    Query(query): Query<JobQuery>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let project = state.store.get_project(&project).await?;
    let filter = JobFilter {
        project: Some(project.uuid),
        status: query.status,
    };
    list_page(&state, filter, &pagination).await
}

/// View a job: status, Spec, runner, timestamps, the resolved config with environment
/// values redacted, and, once its runner reported, the output of every iteration (exit
/// code, stdout, stderr, output files; `error` says why a job failed).
#[utoipa::path(get, path = "/v0/projects/{project}/jobs/{job}", tag = "jobs",
    params(
        ("project" = String, Path, description = "Project UUID or slug"),
        ("job" = String, Path, format = Uuid, description = "Job UUID"),
    ),
    responses(
        (status = 200, body = JsonJob),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn view(
    State(state): State<AppState>,
    _user: User,
    Path((project, job)): Path<(ResourceId, JobUuid)>,
) -> Result<axum::Json<JsonJob>, ApiError> {
    let project = state.store.get_project(&project).await?;
    let job = state.store.get_project_job(project.uuid, job).await?;
    let output = match &job.output_digest {
        // The runner's message was at most the request limit, and so is its document
        // give or take JSON escaping; anything much larger is not ours.
        Some(digest) => {
            // …or, uploaded (`upload` extension), at most `max_output_size`.
            let limit = u64::try_from(state.request_limit)
                .unwrap_or(u64::MAX)
                .saturating_mul(2)
                .max(state.max_output_size);
            match read_output(&state.blobs, digest, limit).await {
                Ok(Some(output)) => Some(output.results),
                Ok(None) => {
                    tracing::error!(job = %job.uuid, %digest, "the job's output blob is missing");
                    None
                }
                Err(error) => return Err(ApiError::internal(error)),
            }
        }
        None => None,
    };
    let mut json = to_json(job);
    json.output = output;
    Ok(axum::Json(json))
}

/// Cancel a pending, claimed or running job; any other status is a conflict.
#[utoipa::path(post, path = "/v0/projects/{project}/jobs/{job}/cancel", tag = "jobs",
    params(
        ("project" = String, Path, description = "Project UUID or slug"),
        ("job" = String, Path, format = Uuid, description = "Job UUID"),
    ),
    responses(
        (status = 200, body = JsonJob),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 404, body = JsonError),
        (status = 409, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    User(user): User,
    Path((project, job)): Path<(ResourceId, JobUuid)>,
) -> Result<axum::Json<JsonJob>, ApiError> {
    let project = state.store.get_project(&project).await?;
    let job = state
        .store
        .cancel_job(project.uuid, job, state.clock.now())
        .await?;
    tracing::info!(job = %job.uuid, project = %project.slug, by = %user.uuid, "job canceled");
    // A claimed or running job keeps its runner: tell it to stop.
    if let Some(runner) = job.runner {
        state.hub.cancel(runner, job.uuid).await;
    }
    Ok(axum::Json(to_json(job)))
}

/// List the jobs of every project (server admins).
#[utoipa::path(get, path = "/v0/jobs", tag = "jobs",
    params(JobQuery, Pagination),
    responses(
        (status = 200, body = [JsonJob], headers(("X-Total-Count" = u64, description = "Total number of matching jobs"))),
        (status = 400, body = JsonError), (status = 401, body = JsonError), (status = 403, body = JsonError),
    ),
    security(("api_token" = [])))]
pub async fn list_all(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<JobQuery>,
    Query(pagination): Query<Pagination>,
) -> Result<Response, ApiError> {
    let filter = JobFilter {
        project: None,
        status: query.status,
    };
    list_page(&state, filter, &pagination).await
}
