//! Jobs in the store: a run (branch and testbed found or created by name, Spec chosen,
//! report shell, pending job) in one transaction; claims that hand each job to exactly
//! one runner, also with several server processes on one database; every other
//! lifecycle change as a conditional update on the current status, checked by
//! `queue::transition`; job reads and lists; the minimal branch, testbed and report
//! reads. Database IO only: the lifecycle rules live in `crate::queue`.

use std::time::Duration;

use bencher_types::protocol::JobConfig;
use bencher_types::{
    Adapter, BranchUuid, Direction, Fold, GitHash, JobStatus, JobUuid, JsonSpec, ProjectUuid,
    ReportUuid, ResourceId, ResourceName, RunnerUuid, Slug, SpecUuid, TestbedUuid,
};
use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};
use uuid::Uuid;

use super::report_queries::{RunThreshold, set_run_thresholds};
use super::specs::{SPEC_COLUMNS, SpecRow, fetch_spec};
use super::{ListQuery, Store, StoreError, from_millis, from_millis_opt, parse_column, to_millis};
use crate::queue::{self, InvalidTransition, JobClock, JobEvent};

const TABLE: &str = "job";

/// Every column of `job`, aliased so they do not collide with the joined Spec's.
const JOB_COLUMNS: &str = "job.uuid AS job_uuid, job.project_uuid AS job_project, \
     job.report_uuid AS job_report, job.config AS job_config, job.status AS job_status, \
     job.last_event AS job_last_event, job.priority AS job_priority, \
     job.runner_uuid AS job_runner, job.created AS job_created, job.claimed AS job_claimed, \
     job.started AS job_started, job.ended AS job_ended, \
     job.last_heartbeat AS job_last_heartbeat, job.output_digest AS job_output_digest, \
     job.error AS job_error, job.modified AS job_modified";

/// A job always comes with its Spec: runners get the full Spec, and so do API clients.
const JOB_FROM: &str = "job JOIN spec ON spec.uuid = job.spec_uuid";

/// Bound on the optimistic retries of a claim or a transition. Every lost race means
/// another writer changed a job, so the loops end long before; the bound only turns a
/// bug into an error instead of a spinning task.
const MAX_ATTEMPTS: usize = 1000;

/// Who claims: a runner through one channel connection, with the hash of the key that
/// connection authenticated with. A claim succeeds only while the store still records
/// that connection and that key for the runner.
#[derive(Debug, Clone)]
pub struct Claimant {
    pub runner: RunnerUuid,
    pub connection: Uuid,
    pub key_hash: String,
}

/// A job as stored, with every field the server needs (the API redacts some of them).
#[derive(Debug, Clone)]
pub struct Job {
    pub uuid: JobUuid,
    pub project: ProjectUuid,
    pub report: ReportUuid,
    pub spec: JsonSpec,
    /// Unredacted: this is what the runner gets.
    pub config: JobConfig,
    pub status: JobStatus,
    /// The event that led to `status`; `None` while never touched since submission.
    pub last_event: Option<JobEvent>,
    pub priority: i64,
    pub runner: Option<RunnerUuid>,
    pub created: DateTime<Utc>,
    pub claimed: Option<DateTime<Utc>>,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub output_digest: Option<String>,
    pub error: Option<String>,
    pub modified: DateTime<Utc>,
}

impl Job {
    /// What the timeout rules of `queue` look at.
    pub fn clock(&self) -> JobClock {
        JobClock {
            status: self.status,
            timeout: Duration::from_secs(self.config.timeout.into()),
            claimed: self.claimed,
            started: self.started,
            last_heartbeat: self.last_heartbeat,
        }
    }
}

#[derive(sqlx::FromRow)]
struct JobRow {
    job_uuid: String,
    job_project: String,
    job_report: String,
    job_config: String,
    job_status: String,
    job_last_event: Option<String>,
    job_priority: i64,
    job_runner: Option<String>,
    job_created: i64,
    job_claimed: Option<i64>,
    job_started: Option<i64>,
    job_ended: Option<i64>,
    job_last_heartbeat: Option<i64>,
    job_output_digest: Option<String>,
    job_error: Option<String>,
    job_modified: i64,
    #[sqlx(flatten)]
    spec: SpecRow,
}

impl JobRow {
    fn into_job(self) -> Result<Job, StoreError> {
        Ok(Job {
            uuid: parse_column(TABLE, "uuid", &self.job_uuid)?,
            project: parse_column(TABLE, "project_uuid", &self.job_project)?,
            report: parse_column(TABLE, "report_uuid", &self.job_report)?,
            spec: self.spec.into_json()?,
            config: serde_json::from_str(&self.job_config)
                .map_err(|e| StoreError::corrupt(TABLE, format!("column `config`: {e}")))?,
            status: parse_column(TABLE, "status", &self.job_status)?,
            last_event: self
                .job_last_event
                .as_deref()
                .map(|e| parse_column(TABLE, "last_event", e))
                .transpose()?,
            priority: self.job_priority,
            runner: self
                .job_runner
                .as_deref()
                .map(|r| parse_column(TABLE, "runner_uuid", r))
                .transpose()?,
            created: from_millis(TABLE, self.job_created)?,
            claimed: from_millis_opt(TABLE, self.job_claimed)?,
            started: from_millis_opt(TABLE, self.job_started)?,
            ended: from_millis_opt(TABLE, self.job_ended)?,
            last_heartbeat: from_millis_opt(TABLE, self.job_last_heartbeat)?,
            output_digest: self.job_output_digest,
            error: self.job_error,
            modified: from_millis(TABLE, self.job_modified)?,
        })
    }
}

/// One job by UUID, from the pool or inside a transaction.
async fn fetch_job<'e, E>(executor: E, uuid: &str) -> Result<Option<Job>, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row: Option<JobRow> = sqlx::query_as(&format!(
        "SELECT {JOB_COLUMNS}, {SPEC_COLUMNS} FROM {JOB_FROM} WHERE job.uuid = $1"
    ))
    .bind(uuid.to_owned())
    .fetch_optional(executor)
    .await?;
    row.map(JobRow::into_job).transpose()
}

/// What `POST /v0/run` stores, validated and resolved by the caller: the image is a
/// digest in the project's repository and the config passed `JobConfig::validate`.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub project: ProjectUuid,
    /// Name, slug or UUID; a name or slug that does not exist yet creates the branch.
    pub branch: ResourceName,
    /// Name, slug or UUID; a name or slug that does not exist yet creates the testbed.
    pub testbed: ResourceName,
    /// The explicit Spec, if any; see `Store::create_run` for the selection.
    pub spec: Option<ResourceId>,
    pub adapter: Option<Adapter>,
    pub hash: Option<GitHash>,
    pub fold: Option<Fold>,
    pub config: JobConfig,
    pub thresholds: Vec<RunThreshold>,
    /// Higher is claimed first; the REST API submits 0.
    pub priority: i64,
}

/// Why a run was not stored. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum CreateRunError {
    #[error(
        "no Spec for this job: the request names none (`job.spec`), testbed `{testbed}` has none yet, and no Spec is the fallback; pass a Spec or ask an admin to set a fallback Spec"
    )]
    NoSpec { testbed: String },
    #[error("spec `{0}` not found")]
    UnknownSpec(ResourceId),
    #[error("spec `{0}` is archived; choose another Spec with `job.spec`")]
    ArchivedSpec(Slug),
    #[error(
        "spec `{spec}` of testbed `{testbed}` is archived; choose another Spec with `job.spec`"
    )]
    ArchivedTestbedSpec { spec: Slug, testbed: String },
    /// A branch or testbed named by a UUID that the project does not have.
    #[error("{kind} `{id}` not found in this project")]
    Unknown { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("cannot store the job config")]
    Config(#[source] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for CreateRunError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Branches and testbeds are found or created by name the same way.
#[derive(Debug, Clone, Copy)]
enum Named {
    Branch,
    Testbed,
}

impl Named {
    fn table(self) -> &'static str {
        match self {
            Self::Branch => "branch",
            Self::Testbed => "testbed",
        }
    }

    fn insert_sql(self) -> &'static str {
        // ON CONFLICT DO NOTHING: a concurrent run creating the same name wins and this
        // one uses its row (PostgreSQL waits for the other transaction, then skips).
        match self {
            Self::Branch => {
                "INSERT INTO branch (uuid, project_uuid, name, slug, created) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
            }
            Self::Testbed => {
                "INSERT INTO testbed (uuid, project_uuid, name, slug, spec_uuid, created, modified) \
                 VALUES ($1, $2, $3, $4, NULL, $5, $5) ON CONFLICT DO NOTHING"
            }
        }
    }
}

async fn find_by(
    tx: &mut Transaction<'static, Any>,
    named: Named,
    project: &str,
    column: &'static str,
    value: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT uuid FROM {} WHERE project_uuid = $1 AND {column} = $2",
        named.table()
    ))
    .bind(project.to_owned())
    .bind(value.to_owned())
    .fetch_optional(&mut **tx)
    .await
}

/// The UUID of the branch or testbed `id` names in `project`: by UUID (which must
/// exist), else by exact name, else by slug, else a new one with that name.
async fn find_or_create(
    tx: &mut Transaction<'static, Any>,
    named: Named,
    project: ProjectUuid,
    id: &ResourceName,
    now: DateTime<Utc>,
) -> Result<String, CreateRunError> {
    let project = project.to_string();
    let kind = named.table();
    if let Ok(uuid) = uuid::Uuid::parse_str(id.as_str()) {
        return find_by(tx, named, &project, "uuid", &uuid.to_string())
            .await?
            .ok_or_else(|| CreateRunError::Unknown {
                kind,
                id: id.to_string(),
            });
    }
    if let Some(uuid) = find_by(tx, named, &project, "name", id.as_str()).await? {
        return Ok(uuid);
    }
    if let Ok(slug) = id.as_str().parse::<Slug>()
        && let Some(uuid) = find_by(tx, named, &project, "slug", slug.as_str()).await?
    {
        return Ok(uuid);
    }

    let uuid = uuid::Uuid::new_v4();
    let suffix = &uuid.simple().to_string()[..8];
    let derived = match Slug::derive(id) {
        Some(slug) => slug,
        None => format!("{kind}-{suffix}")
            .parse()
            .map_err(|e| StoreError::corrupt(kind, e))?,
    };
    // "Main" and "main" are different names with the same derived slug.
    let slug = if find_by(tx, named, &project, "slug", derived.as_str())
        .await?
        .is_some()
    {
        derived
            .with_suffix(suffix)
            .map_err(|e| StoreError::corrupt(kind, e))?
    } else {
        derived
    };
    sqlx::query(named.insert_sql())
        .bind(uuid.to_string())
        .bind(project.clone())
        .bind(id.as_str().to_owned())
        .bind(slug.as_str().to_owned())
        .bind(to_millis(now))
        .execute(&mut **tx)
        .await?;
    find_by(tx, named, &project, "name", id.as_str())
        .await?
        .ok_or_else(|| {
            CreateRunError::Conflict(format!(
                "{kind} `{id}` could not be created: another {kind} took slug `{slug}` at the same time; retry"
            ))
        })
}

/// The Spec a run uses: the explicit one, else the testbed's, else the fallback.
async fn choose_spec(
    tx: &mut Transaction<'static, Any>,
    explicit: Option<&ResourceId>,
    testbed: &ResourceName,
    testbed_spec: Option<String>,
) -> Result<JsonSpec, CreateRunError> {
    if let Some(id) = explicit {
        let spec = match fetch_spec(tx, id).await {
            Err(StoreError::NotFound(_)) => return Err(CreateRunError::UnknownSpec(id.clone())),
            other => other?,
        };
        if spec.archived.is_some() {
            return Err(CreateRunError::ArchivedSpec(spec.slug));
        }
        return Ok(spec);
    }
    if let Some(uuid) = testbed_spec {
        let uuid = parse_column::<uuid::Uuid>("testbed", "spec_uuid", &uuid)?;
        let spec = fetch_spec(tx, &ResourceId::Uuid(uuid)).await?;
        // Falling back silently would measure the testbed on different hardware.
        if spec.archived.is_some() {
            return Err(CreateRunError::ArchivedTestbedSpec {
                spec: spec.slug,
                testbed: testbed.to_string(),
            });
        }
        return Ok(spec);
    }
    let fallback: Option<SpecRow> = sqlx::query_as(&format!(
        "SELECT {SPEC_COLUMNS} FROM spec WHERE spec.fallback = 1 AND spec.archived IS NULL"
    ))
    .fetch_optional(&mut **tx)
    .await?;
    match fallback {
        Some(row) => Ok(row.into_json()?),
        None => Err(CreateRunError::NoSpec {
            testbed: testbed.to_string(),
        }),
    }
}

/// Runner-side details of a lifecycle change.
#[derive(Debug, Clone, Default)]
pub struct JobChange {
    /// The runner sending the event: the job must be claimed by it. `None` for the
    /// server's own events (cancel, timeouts, processing). Required for a claim.
    pub runner: Option<RunnerUuid>,
    /// Recorded with `failed` and the timeouts.
    pub error: Option<String>,
    /// Blob key of the stored output, with `completed` or `failed`.
    pub output_digest: Option<String>,
    /// `completed.environment` as JSON, with `completed`.
    pub environment: Option<String>,
}

/// The result of a lifecycle change that was allowed.
#[derive(Debug, Clone)]
pub enum Transitioned {
    /// The job moved to a new status.
    Changed(Job),
    /// The event repeated what already happened (a re-sent message): nothing changed,
    /// and the sender should be acknowledged.
    Unchanged(Job),
}

impl Transitioned {
    pub fn job(&self) -> &Job {
        match self {
            Self::Changed(job) | Self::Unchanged(job) => job,
        }
    }

    pub fn into_job(self) -> Job {
        match self {
            Self::Changed(job) | Self::Unchanged(job) => job,
        }
    }
}

/// Why a lifecycle change was refused.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("job `{0}` not found")]
    NotFound(JobUuid),
    #[error("job `{job}` is not claimed by runner `{runner}`")]
    NotClaimedBy { job: JobUuid, runner: RunnerUuid },
    #[error("a claim needs the claiming runner")]
    ClaimWithoutRunner,
    #[error(transparent)]
    Invalid(#[from] InvalidTransition),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for TransitionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Values bound to a statement assembled from fixed fragments, numbered in order.
#[derive(Default)]
struct Binds(Vec<Bind>);

enum Bind {
    Text(Option<String>),
    Int(i64),
}

impl Binds {
    fn text(&mut self, value: Option<String>) -> String {
        self.0.push(Bind::Text(value));
        format!("${}", self.0.len())
    }

    fn int(&mut self, value: i64) -> String {
        self.0.push(Bind::Int(value));
        format!("${}", self.0.len())
    }

    fn apply<'q>(
        self,
        mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
        for bind in self.0 {
            query = match bind {
                Bind::Text(value) => query.bind(value),
                Bind::Int(value) => query.bind(value),
            };
        }
        query
    }
}

/// The conditional update moving `current` to `to` by `event`: it only matches while the
/// job still has the status (and runner) that was read, so a concurrent change makes it
/// match nothing instead of being overwritten.
fn transition_statement(
    current: &Job,
    to: JobStatus,
    event: JobEvent,
    change: &JobChange,
    now: DateTime<Utc>,
) -> (String, Binds) {
    let mut binds = Binds::default();
    let now = binds.int(to_millis(now));
    let mut set = vec![
        format!("status = {}", binds.text(Some(to.as_str().to_owned()))),
        format!(
            "last_event = {}",
            binds.text(Some(event.as_str().to_owned()))
        ),
        format!("modified = {now}"),
    ];
    let runner = change.runner.map(|r| r.to_string());
    match event {
        JobEvent::Claim => {
            set.push(format!("runner_uuid = {}", binds.text(runner.clone())));
            set.push(format!("claimed = {now}"));
            set.push("last_heartbeat = NULL".into());
        }
        JobEvent::Unclaim => {
            set.extend(
                ["runner_uuid", "claimed", "started", "last_heartbeat"]
                    .map(|c| format!("{c} = NULL")),
            );
        }
        JobEvent::Running => {
            set.push(format!("started = COALESCE(started, {now})"));
            set.push(format!("last_heartbeat = {now}"));
        }
        JobEvent::Completed | JobEvent::LateCompleted | JobEvent::Failed => {
            set.push(format!("ended = {now}"));
            set.push(format!("last_heartbeat = {now}"));
            // A late completion replaces the heartbeat-timeout error: the job did finish.
            set.push(format!("error = {}", binds.text(change.error.clone())));
            set.push(format!(
                "output_digest = COALESCE({}, output_digest)",
                binds.text(change.output_digest.clone())
            ));
            set.push(format!(
                "environment = COALESCE({}, environment)",
                binds.text(change.environment.clone())
            ));
        }
        JobEvent::HeartbeatTimeout | JobEvent::ClaimTimeout | JobEvent::HardTimeout => {
            set.push(format!("ended = {now}"));
            set.push(format!("error = {}", binds.text(change.error.clone())));
        }
        JobEvent::Cancel => set.push(format!("ended = {now}")),
        JobEvent::Processed => {}
        JobEvent::ProcessingFailed => {
            set.push(format!("error = {}", binds.text(change.error.clone())));
        }
    }
    let mut sql = format!(
        "UPDATE job SET {} WHERE uuid = {} AND status = {}",
        set.join(", "),
        binds.text(Some(current.uuid.to_string())),
        binds.text(Some(current.status.as_str().to_owned())),
    );
    if event != JobEvent::Claim
        && let Some(runner) = runner
    {
        sql.push_str(&format!(" AND runner_uuid = {}", binds.text(Some(runner))));
    }
    (sql, binds)
}

/// A report about to be made: where it goes and how its results are read.
#[derive(Debug, Clone, Copy)]
pub struct ReportShell<'a> {
    pub project: ProjectUuid,
    pub branch: &'a ResourceName,
    pub testbed: &'a ResourceName,
    /// The explicit Spec, if any; else the testbed's, else the fallback.
    pub spec: Option<&'a ResourceId>,
    pub adapter: Option<Adapter>,
    pub hash: Option<&'a GitHash>,
    pub fold: Option<Fold>,
    /// The job producing it, if any.
    pub job: Option<&'a str>,
    /// Thresholds the run sets for its branch and testbed (see `set_run_thresholds`).
    pub thresholds: &'a [RunThreshold],
}

/// Where a new report went.
#[derive(Debug, Clone)]
pub struct PlacedReport {
    pub report: String,
    pub branch: String,
    pub testbed: String,
    pub spec: JsonSpec,
    pub head: String,
    pub version: String,
}

/// Inserts a report shell: the branch and testbed (created by name when missing), the
/// Spec (explicit, else the testbed's, else the fallback, else `NoSpec`) recorded on the
/// testbed and the report, and the report's place in the branch's history.
pub(crate) async fn insert_report_shell(
    tx: &mut Transaction<'static, Any>,
    shell: &ReportShell<'_>,
    now: DateTime<Utc>,
) -> Result<PlacedReport, CreateRunError> {
    let branch = find_or_create(tx, Named::Branch, shell.project, shell.branch, now).await?;
    let testbed = find_or_create(tx, Named::Testbed, shell.project, shell.testbed, now).await?;
    set_run_thresholds(tx, shell.project, &branch, &testbed, shell.thresholds, now).await?;
    let testbed_spec: Option<String> =
        sqlx::query_scalar("SELECT spec_uuid FROM testbed WHERE uuid = $1")
            .bind(testbed.clone())
            .fetch_one(&mut **tx)
            .await?;
    let spec = choose_spec(tx, shell.spec, shell.testbed, testbed_spec).await?;
    let spec_uuid = spec.uuid.to_string();
    sqlx::query(
        "UPDATE testbed SET spec_uuid = $1, modified = $2 \
         WHERE uuid = $3 AND (spec_uuid IS NULL OR spec_uuid <> $1)",
    )
    .bind(spec_uuid.clone())
    .bind(to_millis(now))
    .bind(testbed.clone())
    .execute(&mut **tx)
    .await?;
    let (head, version) = super::reports::place_in_history(
        tx,
        shell.project,
        &branch,
        shell.hash.map(GitHash::as_str),
        now,
    )
    .await?;
    let report = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO report (uuid, project_uuid, branch_uuid, testbed_uuid, spec_uuid, job_uuid, \
         adapter, created, head_uuid, version_uuid, fold) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(report.clone())
    .bind(shell.project.to_string())
    .bind(branch.clone())
    .bind(testbed.clone())
    .bind(spec_uuid)
    .bind(shell.job.map(str::to_owned))
    .bind(shell.adapter.map(|a| a.as_str().to_owned()))
    .bind(to_millis(now))
    .bind(head.clone())
    .bind(version.clone())
    .bind(shell.fold.map(|f| f.as_str().to_owned()))
    .execute(&mut **tx)
    .await?;
    Ok(PlacedReport {
        report,
        branch,
        testbed,
        spec,
        head,
        version,
    })
}

/// `completed → processed` inside the transaction writing the job's report; `false`
/// when the job is not `completed` (processed by another process, or failed meanwhile).
pub(crate) async fn mark_processed(
    tx: &mut Transaction<'static, Any>,
    job: JobUuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let processed = queue::transition(JobStatus::Completed, JobEvent::Processed)
        .expect("the lifecycle lets a completed job be processed");
    let updated = sqlx::query(
        "UPDATE job SET status = $1, last_event = $2, modified = $3 WHERE uuid = $4 AND status = $5",
    )
    .bind(processed.as_str())
    .bind(JobEvent::Processed.as_str())
    .bind(to_millis(now))
    .bind(job.to_string())
    .bind(JobStatus::Completed.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Which jobs a list shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct JobFilter {
    /// One project's jobs; `None` for every project (admins).
    pub project: Option<ProjectUuid>,
    pub status: Option<JobStatus>,
}

impl Store {
    /// Stores a run in one transaction: the branch and testbed (created by name when
    /// missing), the Spec (the explicit one, else the testbed's, else the fallback, else
    /// `NoSpec`), recorded on the testbed and the report, the report shell and the
    /// pending job. A refused run writes nothing.
    pub async fn create_run(
        &self,
        new: &NewRun,
        now: DateTime<Utc>,
    ) -> Result<Job, CreateRunError> {
        let config = serde_json::to_string(&new.config).map_err(CreateRunError::Config)?;
        let mut tx = self.begin_write().await?;
        let job = uuid::Uuid::new_v4().to_string();
        let shell = ReportShell {
            project: new.project,
            branch: &new.branch,
            testbed: &new.testbed,
            spec: new.spec.as_ref(),
            adapter: new.adapter,
            hash: new.hash.as_ref(),
            fold: new.fold,
            job: Some(&job),
            thresholds: &new.thresholds,
        };
        let placed = insert_report_shell(&mut tx, &shell, now).await?;
        let (report, spec_uuid) = (placed.report.clone(), placed.spec.uuid.to_string());
        sqlx::query(
            "INSERT INTO job (uuid, project_uuid, report_uuid, spec_uuid, config, status, last_event, \
             priority, runner_uuid, created, claimed, started, ended, last_heartbeat, output_digest, \
             error, modified) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, NULL, $8, NULL, NULL, NULL, NULL, NULL, NULL, $8)",
        )
        .bind(job.clone())
        .bind(new.project.to_string())
        .bind(report)
        .bind(spec_uuid)
        .bind(config)
        .bind(JobStatus::Pending.as_str())
        .bind(new.priority)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        let stored = fetch_job(&mut *tx, &job)
            .await?
            .ok_or_else(|| StoreError::corrupt(TABLE, "the job just inserted is missing"))?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Claims the best pending job for one of `specs` (highest priority, then oldest) for
    /// the claimant's runner, or `None` when there is none or the claimant no longer holds
    /// the runner's channel (replaced, key rotated, runner archived: checked in the same
    /// statement, so a claim never races a rotation made on another server process whose
    /// notification has not arrived yet). Exactly once, also with several server
    /// processes on one database: the claim is one conditional `UPDATE` that only matches
    /// a job still pending, so of two claimers that picked the same job one updates it
    /// and the other matches nothing and tries the next. This works alike on SQLite
    /// (writers are serialized) and PostgreSQL (the loser waits for the winner's row
    /// lock, then re-checks `status` on the new row), without `FOR UPDATE SKIP LOCKED`,
    /// which SQLite lacks.
    pub async fn claim_next(
        &self,
        claimant: &Claimant,
        specs: &[SpecUuid],
        now: DateTime<Utc>,
    ) -> Result<Option<Job>, StoreError> {
        if specs.is_empty() {
            return Ok(None);
        }
        let claimed = queue::transition(JobStatus::Pending, JobEvent::Claim)
            .expect("the lifecycle lets a pending job be claimed");
        let pending = JobStatus::Pending.as_str();
        let spec_list = |first: usize| {
            (first..first + specs.len())
                .map(|n| format!("${n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let claim_sql = format!(
            "UPDATE job SET status = $1, last_event = $2, runner_uuid = $3, claimed = $4, \
             last_heartbeat = NULL, modified = $4 \
             WHERE uuid = (SELECT uuid FROM job WHERE status = '{pending}' AND spec_uuid IN ({}) \
             ORDER BY priority DESC, created, uuid LIMIT 1) AND status = '{pending}' \
             AND EXISTS (SELECT 1 FROM runner WHERE uuid = $3 AND connection = $5 \
             AND key_hash = $6 AND archived IS NULL) RETURNING uuid",
            spec_list(7)
        );
        let any_pending_sql = format!(
            "SELECT 1 FROM job WHERE status = '{pending}' AND spec_uuid IN ({}) LIMIT 1",
            spec_list(1)
        );
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = self.begin_write().await?;
            let mut claim = sqlx::query_scalar::<_, String>(&claim_sql)
                .bind(claimed.as_str())
                .bind(JobEvent::Claim.as_str())
                .bind(claimant.runner.to_string())
                .bind(to_millis(now))
                .bind(claimant.connection.to_string())
                .bind(claimant.key_hash.clone());
            for spec in specs {
                claim = claim.bind(spec.to_string());
            }
            if let Some(uuid) = claim.fetch_optional(&mut *tx).await? {
                let job = fetch_job(&mut *tx, &uuid)
                    .await?
                    .ok_or_else(|| StoreError::corrupt(TABLE, "a claimed job vanished"))?;
                tx.commit().await?;
                return Ok(Some(job));
            }
            tx.rollback().await?;
            // Nothing matched: either nothing is pending, or another claimer took the job
            // this one picked. Only the first ends the search.
            let mut any = sqlx::query_scalar::<_, i64>(&any_pending_sql);
            for spec in specs {
                any = any.bind(spec.to_string());
            }
            if any.fetch_optional(&self.pool).await?.is_none()
                || !self.holds_channel(claimant).await?
            {
                return Ok(None);
            }
            tokio::task::yield_now().await;
        }
        Err(StoreError::Conflict(
            "could not claim a job: too much contention; retry".into(),
        ))
    }

    /// Whether the claimant still holds its runner's channel: a claim that matched nothing
    /// because it does not ends the search.
    async fn holds_channel(&self, claimant: &Claimant) -> Result<bool, StoreError> {
        let held = sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM runner WHERE uuid = $1 AND connection = $2 AND key_hash = $3 \
             AND archived IS NULL",
        )
        .bind(claimant.runner.to_string())
        .bind(claimant.connection.to_string())
        .bind(claimant.key_hash.clone())
        .fetch_optional(&self.pool)
        .await?;
        Ok(held.is_some())
    }

    /// Undoes a claim whose `job` message could not be sent to `runner`: back to
    /// pending, for another runner.
    pub async fn unclaim(
        &self,
        job: JobUuid,
        runner: RunnerUuid,
        now: DateTime<Utc>,
    ) -> Result<Transitioned, TransitionError> {
        let change = JobChange {
            runner: Some(runner),
            ..JobChange::default()
        };
        self.transition_job(job, JobEvent::Unclaim, &change, now)
            .await
    }

    /// Applies `event` to a job if the lifecycle allows it from the job's current status:
    /// a conditional update on that status (and on the runner, for a runner's events).
    /// When another writer changed the job first, it is read again and the event
    /// re-checked against the new status; nothing is ever overwritten. A runner's
    /// `completed` after a heartbeat-timeout failure becomes a late completion, and
    /// repeated events (re-sent messages) are `Unchanged`.
    pub async fn transition_job(
        &self,
        job: JobUuid,
        event: JobEvent,
        change: &JobChange,
        now: DateTime<Utc>,
    ) -> Result<Transitioned, TransitionError> {
        if event == JobEvent::Claim && change.runner.is_none() {
            return Err(TransitionError::ClaimWithoutRunner);
        }
        let id = job.to_string();
        for _ in 0..MAX_ATTEMPTS {
            let current = fetch_job(&self.pool, &id)
                .await?
                .ok_or(TransitionError::NotFound(job))?;
            if event != JobEvent::Claim
                && let Some(runner) = change.runner
                && current.runner != Some(runner)
            {
                return Err(TransitionError::NotClaimedBy { job, runner });
            }
            let event = match event {
                JobEvent::Completed | JobEvent::LateCompleted => {
                    queue::completion_event(current.status, current.last_event)
                }
                other => other,
            };
            if queue::is_repeat(current.status, event) {
                return Ok(Transitioned::Unchanged(current));
            }
            let to = queue::transition(current.status, event)?;
            let (sql, binds) = transition_statement(&current, to, event, change, now);
            let mut tx = self.begin_write().await?;
            let updated = binds
                .apply(sqlx::query(&sql))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 1 {
                let job = fetch_job(&mut *tx, &id)
                    .await?
                    .ok_or(TransitionError::NotFound(job))?;
                tx.commit().await?;
                return Ok(Transitioned::Changed(job));
            }
            tx.rollback().await?;
        }
        Err(TransitionError::Store(StoreError::Conflict(format!(
            "job `{job}` keeps changing; retry"
        ))))
    }

    /// A user's cancel of a job of `project`: pending, claimed and running jobs become
    /// canceled; anything else is an invalid transition (the API answers 409).
    pub async fn cancel_job(
        &self,
        project: ProjectUuid,
        job: JobUuid,
        now: DateTime<Utc>,
    ) -> Result<Job, TransitionError> {
        match self.get_project_job(project, job).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => return Err(TransitionError::NotFound(job)),
            Err(error) => return Err(error.into()),
        }
        Ok(self
            .transition_job(job, JobEvent::Cancel, &JobChange::default(), now)
            .await?
            .into_job())
    }

    /// Records a sign of life from the runner of an in-flight job (any valid protocol
    /// message). Not a status change; `false` when the job is not the runner's or no
    /// longer in flight.
    pub async fn touch_job(
        &self,
        job: JobUuid,
        runner: RunnerUuid,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let touched = sqlx::query(&format!(
            "UPDATE job SET last_heartbeat = $1 WHERE uuid = $2 AND runner_uuid = $3 \
             AND status IN ('{}', '{}')",
            JobStatus::Claimed.as_str(),
            JobStatus::Running.as_str()
        ))
        .bind(to_millis(now))
        .bind(job.to_string())
        .bind(runner.to_string())
        .execute(&self.pool)
        .await?;
        Ok(touched.rows_affected() == 1)
    }

    pub async fn get_job(&self, job: JobUuid) -> Result<Job, StoreError> {
        fetch_job(&self.pool, &job.to_string())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job `{job}`")))
    }

    /// A job of `project`; a job of another project is not found, like an unknown one.
    pub async fn get_project_job(
        &self,
        project: ProjectUuid,
        job: JobUuid,
    ) -> Result<Job, StoreError> {
        let found = self.get_job(job).await?;
        if found.project != project {
            return Err(StoreError::NotFound(format!("job `{job}`")));
        }
        Ok(found)
    }

    /// One page of jobs, ordered by submission time (then UUID, so pages are stable),
    /// and the total number matching.
    pub async fn list_jobs(
        &self,
        filter: &JobFilter,
        direction: Direction,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<Job>, u64), StoreError> {
        let mut list = ListQuery::default();
        if let Some(project) = filter.project {
            list.condition("job.project_uuid = ?", &[&project.to_string()]);
        }
        if let Some(status) = filter.status {
            list.condition("job.status = ?", &[status.as_str()]);
        }
        let where_clause = list.where_clause();
        let count_sql = format!("SELECT COUNT(*) FROM job{where_clause}");
        let mut count = sqlx::query_scalar::<_, i64>(&count_sql);
        for value in list.values() {
            count = count.bind(value.clone());
        }
        let total = count.fetch_one(&self.pool).await?;

        let d = match direction {
            Direction::Asc => "ASC",
            Direction::Desc => "DESC",
        };
        let (tail, limit, offset) =
            list.page_clause(&format!("job.created {d}, job.uuid {d}"), limit_offset);
        let sql =
            format!("SELECT {JOB_COLUMNS}, {SPEC_COLUMNS} FROM {JOB_FROM}{where_clause}{tail}");
        let mut rows = sqlx::query_as::<_, JobRow>(&sql);
        for value in list.values() {
            rows = rows.bind(value.clone());
        }
        let rows = rows.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let jobs = rows
            .into_iter()
            .map(JobRow::into_job)
            .collect::<Result<_, _>>()?;
        Ok((jobs, u64::try_from(total).unwrap_or_default()))
    }

    /// Every claimed or running job, oldest first: what a starting server re-arms
    /// timeouts for and recovers.
    pub async fn in_flight_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(&format!(
            "SELECT {JOB_COLUMNS}, {SPEC_COLUMNS} FROM {JOB_FROM} \
             WHERE job.status IN ('{}', '{}') ORDER BY job.created, job.uuid",
            JobStatus::Claimed.as_str(),
            JobStatus::Running.as_str()
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(JobRow::into_job).collect()
    }
}

/// A branch of a project; the reports issue adds to it.
#[derive(Debug, Clone)]
pub struct Branch {
    pub uuid: BranchUuid,
    pub project: ProjectUuid,
    pub name: ResourceName,
    pub slug: Slug,
    pub created: DateTime<Utc>,
}

/// A testbed of a project, with the Spec its last run used.
#[derive(Debug, Clone)]
pub struct Testbed {
    pub uuid: TestbedUuid,
    pub project: ProjectUuid,
    pub name: ResourceName,
    pub slug: Slug,
    pub spec: Option<SpecUuid>,
    pub created: DateTime<Utc>,
    pub modified: DateTime<Utc>,
}

/// A report shell: where a job's results will go. Metrics come with the reports issue.
#[derive(Debug, Clone)]
pub struct Report {
    pub uuid: ReportUuid,
    pub project: ProjectUuid,
    pub branch: BranchUuid,
    pub testbed: TestbedUuid,
    pub spec: SpecUuid,
    pub job: Option<JobUuid>,
    pub adapter: Option<Adapter>,
    pub created: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct BranchRow {
    uuid: String,
    project_uuid: String,
    name: String,
    slug: String,
    created: i64,
}

#[derive(sqlx::FromRow)]
struct TestbedRow {
    uuid: String,
    project_uuid: String,
    name: String,
    slug: String,
    spec_uuid: Option<String>,
    created: i64,
    modified: i64,
}

#[derive(sqlx::FromRow)]
struct ReportRow {
    uuid: String,
    project_uuid: String,
    branch_uuid: String,
    testbed_uuid: String,
    spec_uuid: String,
    job_uuid: Option<String>,
    adapter: Option<String>,
    created: i64,
}

impl Store {
    /// The branches of a project, by name.
    pub async fn branches(&self, project: ProjectUuid) -> Result<Vec<Branch>, StoreError> {
        const T: &str = "branch";
        let rows: Vec<BranchRow> = sqlx::query_as(
            "SELECT uuid, project_uuid, name, slug, created FROM branch \
             WHERE project_uuid = $1 ORDER BY name, uuid",
        )
        .bind(project.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Branch {
                    uuid: parse_column(T, "uuid", &row.uuid)?,
                    project: parse_column(T, "project_uuid", &row.project_uuid)?,
                    name: parse_column(T, "name", &row.name)?,
                    slug: parse_column(T, "slug", &row.slug)?,
                    created: from_millis(T, row.created)?,
                })
            })
            .collect()
    }

    /// The testbeds of a project, by name.
    pub async fn testbeds(&self, project: ProjectUuid) -> Result<Vec<Testbed>, StoreError> {
        const T: &str = "testbed";
        let rows: Vec<TestbedRow> = sqlx::query_as(
            "SELECT uuid, project_uuid, name, slug, spec_uuid, created, modified FROM testbed \
             WHERE project_uuid = $1 ORDER BY name, uuid",
        )
        .bind(project.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Testbed {
                    uuid: parse_column(T, "uuid", &row.uuid)?,
                    project: parse_column(T, "project_uuid", &row.project_uuid)?,
                    name: parse_column(T, "name", &row.name)?,
                    slug: parse_column(T, "slug", &row.slug)?,
                    spec: row
                        .spec_uuid
                        .as_deref()
                        .map(|s| parse_column(T, "spec_uuid", s))
                        .transpose()?,
                    created: from_millis(T, row.created)?,
                    modified: from_millis(T, row.modified)?,
                })
            })
            .collect()
    }

    /// The reports of a project, oldest first.
    pub async fn reports(&self, project: ProjectUuid) -> Result<Vec<Report>, StoreError> {
        const T: &str = "report";
        let rows: Vec<ReportRow> = sqlx::query_as(
            "SELECT uuid, project_uuid, branch_uuid, testbed_uuid, spec_uuid, job_uuid, adapter, created \
             FROM report WHERE project_uuid = $1 ORDER BY created, uuid",
        )
        .bind(project.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Report {
                    uuid: parse_column(T, "uuid", &row.uuid)?,
                    project: parse_column(T, "project_uuid", &row.project_uuid)?,
                    branch: parse_column(T, "branch_uuid", &row.branch_uuid)?,
                    testbed: parse_column(T, "testbed_uuid", &row.testbed_uuid)?,
                    spec: parse_column(T, "spec_uuid", &row.spec_uuid)?,
                    job: row
                        .job_uuid
                        .as_deref()
                        .map(|j| parse_column(T, "job_uuid", j))
                        .transpose()?,
                    adapter: row
                        .adapter
                        .as_deref()
                        .map(|a| parse_column(T, "adapter", a))
                        .transpose()?,
                    created: from_millis(T, row.created)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus) -> Job {
        let spec: JsonSpec = serde_json::from_value(serde_json::json!({
            "uuid": uuid::Uuid::nil(), "name": "s", "slug": "s", "os": "linux",
            "architecture": "x86_64", "cpu": 1, "memory": 1, "disk": 1, "network": false,
            "fallback": false, "created": "2024-01-01T00:00:00Z", "modified": "2024-01-01T00:00:00Z",
        }))
        .unwrap();
        Job {
            uuid: JobUuid::new_v4(),
            project: ProjectUuid::new_v4(),
            report: ReportUuid::new_v4(),
            spec,
            config: serde_json::from_value(serde_json::json!({
                "registry": "http://localhost:6610", "project": uuid::Uuid::nil(),
                "digest": "sha256:00", "timeout": 60,
            }))
            .unwrap(),
            status,
            last_event: None,
            priority: 0,
            runner: None,
            created: DateTime::UNIX_EPOCH,
            claimed: None,
            started: None,
            ended: None,
            last_heartbeat: None,
            output_digest: None,
            error: None,
            modified: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn statements_are_conditional_on_status_and_runner() {
        let current = job(JobStatus::Running);
        let runner = RunnerUuid::new_v4();
        let change = JobChange {
            runner: Some(runner),
            error: Some("boom".into()),
            output_digest: None,
            environment: None,
        };
        let (sql, binds) = transition_statement(
            &current,
            JobStatus::Failed,
            JobEvent::Failed,
            &change,
            DateTime::UNIX_EPOCH,
        );
        assert_eq!(
            sql,
            "UPDATE job SET status = $2, last_event = $3, modified = $1, ended = $1, \
             last_heartbeat = $1, error = $4, output_digest = COALESCE($5, output_digest), \
             environment = COALESCE($6, environment) \
             WHERE uuid = $7 AND status = $8 AND runner_uuid = $9"
        );
        assert_eq!(binds.0.len(), 9);

        let (sql, binds) = transition_statement(
            &job(JobStatus::Pending),
            JobStatus::Canceled,
            JobEvent::Cancel,
            &JobChange::default(),
            DateTime::UNIX_EPOCH,
        );
        assert_eq!(
            sql,
            "UPDATE job SET status = $2, last_event = $3, modified = $1, ended = $1 \
             WHERE uuid = $4 AND status = $5"
        );
        assert_eq!(binds.0.len(), 5);
    }

    #[test]
    fn job_clock_uses_the_config_timeout() {
        let clock = job(JobStatus::Running).clock();
        assert_eq!(clock.timeout, Duration::from_secs(60));
        assert_eq!(clock.status, JobStatus::Running);
    }
}
