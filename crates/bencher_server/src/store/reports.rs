//! Reports' records: where a report sits in its branch's history (heads and versions),
//! the benchmarks and measures it names (created on first use), its metrics, and the
//! boundaries and alerts thresholds give them. Database IO only; parsing is in
//! `crate::adapter`, statistics in `crate::threshold`, the orchestration in
//! `crate::report`.

use std::collections::HashMap;

use bencher_types::{JobUuid, ProjectUuid, Slug};
use chrono::{DateTime, Utc};
use sqlx::{Any, AnyConnection, Transaction};

use super::float::NullableF64;
use super::jobs::{CreateRunError, PlacedReport, ReportShell, insert_report_shell};
use super::{Store, StoreError, from_millis, to_millis};

const TABLE: &str = "report";

/// A measure every project has; any other is created on the fly when results name it.
pub struct BuiltInMeasure {
    pub slug: &'static str,
    pub name: &'static str,
    pub units: &'static str,
}

pub const BUILT_IN_MEASURES: &[BuiltInMeasure] = &[
    BuiltInMeasure {
        slug: "latency",
        name: "Latency",
        units: "nanoseconds (ns)",
    },
    BuiltInMeasure {
        slug: "throughput",
        name: "Throughput",
        units: "operations / second (ops/s)",
    },
    BuiltInMeasure {
        slug: "build-time",
        name: "Build Time",
        units: "seconds (s)",
    },
    BuiltInMeasure {
        slug: "file-size",
        name: "File Size",
        units: "bytes (B)",
    },
];

/// Units of a measure first named by results, when it is not built in.
pub(super) const CUSTOM_UNITS: &str = "units";

/// Places a new report in its branch's history: the branch's head (created with the
/// branch's first report) and a version on it. A git `hash` already on the head reuses
/// its version (a re-run of the same commit); otherwise the next number. Returns
/// `(head, version)`.
pub(crate) async fn place_in_history(
    tx: &mut Transaction<'static, Any>,
    project: ProjectUuid,
    branch: &str,
    hash: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(String, String), StoreError> {
    let head: Option<String> = sqlx::query_scalar("SELECT head_uuid FROM branch WHERE uuid = $1")
        .bind(branch.to_owned())
        .fetch_one(&mut **tx)
        .await?;
    let head = match head {
        Some(head) => head,
        None => {
            let head = uuid::Uuid::new_v4().to_string();
            sqlx::query(
                "INSERT INTO head (uuid, branch_uuid, start_point_head_uuid, \
                 start_point_version_uuid, created, replaced) VALUES ($1, $2, NULL, NULL, $3, NULL)",
            )
            .bind(head.clone())
            .bind(branch.to_owned())
            .bind(to_millis(now))
            .execute(&mut **tx)
            .await?;
            sqlx::query("UPDATE branch SET head_uuid = $1 WHERE uuid = $2")
                .bind(head.clone())
                .bind(branch.to_owned())
                .execute(&mut **tx)
                .await?;
            head
        }
    };
    if let Some(hash) = hash {
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT v.uuid FROM version v JOIN head_version hv ON hv.version_uuid = v.uuid \
             WHERE hv.head_uuid = $1 AND v.hash = $2 ORDER BY v.number DESC LIMIT 1",
        )
        .bind(head.clone())
        .bind(hash.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(version) = existing {
            return Ok((head, version));
        }
    }
    let last: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(v.number) FROM version v JOIN head_version hv ON hv.version_uuid = v.uuid \
         WHERE hv.head_uuid = $1",
    )
    .bind(head.clone())
    .fetch_one(&mut **tx)
    .await?;
    let version = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO version (uuid, project_uuid, number, hash, created) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(version.clone())
    .bind(project.to_string())
    .bind(last.unwrap_or(0) + 1)
    .bind(hash.map(str::to_owned))
    .bind(to_millis(now))
    .execute(&mut **tx)
    .await?;
    sqlx::query("INSERT INTO head_version (head_uuid, version_uuid) VALUES ($1, $2)")
        .bind(head.clone())
        .bind(version.clone())
        .execute(&mut **tx)
        .await?;
    Ok((head, version))
}

/// A measure or benchmark by name, created when missing (a slug derived from the name,
/// made unique with a suffix). Concurrent creators of one name end with one row.
async fn get_or_create(
    tx: &mut Transaction<'static, Any>,
    table: NamedTable,
    project: ProjectUuid,
    name: &str,
    units: &str,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let select = format!(
        "SELECT uuid FROM {} WHERE project_uuid = $1 AND name = $2",
        table.name()
    );
    let found: Option<String> = sqlx::query_scalar(&select)
        .bind(project.to_string())
        .bind(name.to_owned())
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(uuid) = found {
        return Ok(uuid);
    }
    let uuid = uuid::Uuid::new_v4();
    let suffix = uuid.simple().to_string()[..8].to_owned();
    let derived = name
        .parse::<bencher_types::ResourceName>()
        .ok()
        .and_then(|name| Slug::derive(&name))
        .map(|slug| slug.to_string())
        .unwrap_or_else(|| format!("{}-{suffix}", table.name()));
    let taken: Option<String> = sqlx::query_scalar(&format!(
        "SELECT uuid FROM {} WHERE project_uuid = $1 AND slug = $2",
        table.name()
    ))
    .bind(project.to_string())
    .bind(derived.clone())
    .fetch_optional(&mut **tx)
    .await?;
    let slug = if taken.is_some() {
        format!("{derived}-{suffix}")
    } else {
        derived
    };
    let insert = match table {
        NamedTable::Measure => {
            "INSERT INTO measure (uuid, project_uuid, name, slug, units, created, modified) \
             VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING"
        }
        NamedTable::Benchmark => {
            "INSERT INTO benchmark (uuid, project_uuid, name, slug, created, modified) \
             VALUES ($1, $2, $3, $4, $6, $6) ON CONFLICT DO NOTHING"
        }
    };
    let mut query = sqlx::query(insert)
        .bind(uuid.to_string())
        .bind(project.to_string())
        .bind(name.to_owned())
        .bind(slug);
    if table == NamedTable::Measure {
        query = query.bind(units.to_owned());
    } else {
        // `$5` is unused for benchmarks; bind a placeholder so `$6` lines up.
        query = query.bind(String::new());
    }
    query.bind(to_millis(now)).execute(&mut **tx).await?;
    sqlx::query_scalar(&select)
        .bind(project.to_string())
        .bind(name.to_owned())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::corrupt(table.name(), format!("`{name}` vanished")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NamedTable {
    Measure,
    Benchmark,
}

impl NamedTable {
    fn name(self) -> &'static str {
        match self {
            Self::Measure => "measure",
            Self::Benchmark => "benchmark",
        }
    }
}

/// A measure's name for its slug: the built-in's, or the slug itself.
fn measure_name(slug: &str) -> (&str, &str) {
    BUILT_IN_MEASURES
        .iter()
        .find(|m| m.slug == slug)
        .map_or((slug, CUSTOM_UNITS), |m| (m.name, m.units))
}

/// One metric to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMetric {
    pub iteration: u32,
    pub benchmark: String,
    /// The measure's slug (`latency`, `throughput`, or a custom one).
    pub measure: String,
    pub value: f64,
    pub lower_value: Option<f64>,
    pub upper_value: Option<f64>,
}

/// A boundary a threshold gave one metric, and whether it alerts.
#[derive(Debug, Clone, PartialEq)]
pub struct NewBoundary {
    /// Index into the metrics written with it.
    pub metric: usize,
    pub threshold: String,
    pub model: String,
    pub baseline: Option<f64>,
    pub lower_limit: Option<f64>,
    pub upper_limit: Option<f64>,
    /// `lower` or `upper` when the metric is past that limit.
    pub alert: Option<&'static str>,
}

/// A threshold on a branch and testbed, with its current model.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdModel {
    pub threshold: String,
    pub model: String,
    pub measure_slug: String,
    pub test: String,
    pub min_sample_size: Option<u32>,
    pub max_sample_size: Option<u32>,
    pub window_seconds: Option<u64>,
    pub lower_boundary: Option<f64>,
    pub upper_boundary: Option<f64>,
}

/// Everything [`Store::write_report`] writes.
#[derive(Debug, Clone, Copy)]
pub struct ReportWrite<'a> {
    pub report: &'a str,
    pub project: ProjectUuid,
    /// The job whose output this is, moved from `completed` to `processed`.
    pub job: Option<JobUuid>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
    pub iterations: u32,
    pub metrics: &'a [NewMetric],
    pub boundaries: &'a [NewBoundary],
    /// What the job was measured on (`completed.environment`, JSON), if the runner said.
    pub environment: Option<&'a str>,
    /// Whether its fingerprint differs from the baseline's; `None`: nothing to compare.
    pub environment_changed: Option<bool>,
}

/// What history a metric is compared with: the same branch head, testbed, benchmark,
/// measure and Spec, in processed reports made up to `before` and from `since`, newest first.
#[derive(Debug, Clone)]
pub struct HistoryQuery<'a> {
    pub head: &'a str,
    pub testbed: &'a str,
    pub spec: &'a str,
    pub benchmark: &'a str,
    pub measure: &'a str,
    pub before: DateTime<Utc>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    /// The report being checked, never part of its own history.
    pub exclude_report: &'a str,
}

/// The thresholds of a branch and testbed with their current models. On a connection,
/// not the pool: a local report reads them inside the transaction that set them.
pub async fn thresholds_for(
    conn: &mut AnyConnection,
    branch: &str,
    testbed: &str,
) -> Result<Vec<ThresholdModel>, StoreError> {
    let rows: Vec<ThresholdRow> = sqlx::query_as(
        "SELECT t.uuid, m.uuid, ms.slug, m.test, m.min_sample_size, m.max_sample_size, \
             m.window_seconds, m.lower_boundary, m.upper_boundary \
             FROM threshold t JOIN model m ON m.uuid = t.model_uuid \
             JOIN measure ms ON ms.uuid = t.measure_uuid \
             WHERE t.branch_uuid = $1 AND t.testbed_uuid = $2 ORDER BY ms.slug",
    )
    .bind(branch.to_owned())
    .bind(testbed.to_owned())
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(ThresholdRow::into_model).collect())
}

/// The environment of a report's baseline: the newest other processed report with one
/// on the same branch head, testbed and Spec, at or before `before` (JSON).
pub async fn baseline_environment(
    conn: &mut AnyConnection,
    place: &HistoryPlace<'_>,
    before: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar::<_, String>(
        "SELECT environment FROM report r WHERE r.head_uuid = $1 AND r.testbed_uuid = $2 \
         AND r.spec_uuid = $3 AND r.uuid <> $4 AND r.processed IS NOT NULL \
         AND r.environment IS NOT NULL AND COALESCE(r.end_time, r.created) <= $5 \
         ORDER BY COALESCE(r.end_time, r.created) DESC, r.uuid DESC LIMIT 1",
    )
    .bind(place.head.to_owned())
    .bind(place.testbed.to_owned())
    .bind(place.spec.to_owned())
    .bind(place.report.to_owned())
    .bind(to_millis(before))
    .fetch_optional(&mut *conn)
    .await?)
}

/// Where a report sits in history: what [`baseline_environment`] compares within.
#[derive(Debug, Clone, Copy)]
pub struct HistoryPlace<'a> {
    pub report: &'a str,
    pub head: &'a str,
    pub testbed: &'a str,
    pub spec: &'a str,
}

/// The history of one benchmark and measure (see [`HistoryQuery`]): values with
/// their report times, newest first. A report's time is its benchmark's end time,
/// else its creation.
pub async fn history(
    conn: &mut AnyConnection,
    query: &HistoryQuery<'_>,
) -> Result<Vec<(DateTime<Utc>, f64)>, StoreError> {
    let limit = query.limit.map_or(i64::MAX, i64::from);
    let since = query.since.map_or(i64::MIN, to_millis);
    let rows: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT COALESCE(r.end_time, r.created) AS t, mt.value FROM metric mt \
             JOIN report_benchmark rb ON rb.uuid = mt.report_benchmark_uuid \
             JOIN report r ON r.uuid = rb.report_uuid \
             JOIN benchmark b ON b.uuid = rb.benchmark_uuid \
             JOIN measure ms ON ms.uuid = mt.measure_uuid \
             WHERE r.head_uuid = $1 AND r.testbed_uuid = $2 AND r.spec_uuid = $3 \
             AND b.name = $4 AND ms.slug = $5 AND r.uuid <> $6 AND r.processed IS NOT NULL \
             AND COALESCE(r.end_time, r.created) <= $7 AND COALESCE(r.end_time, r.created) >= $8 \
             ORDER BY t DESC, r.uuid DESC LIMIT $9",
    )
    .bind(query.head.to_owned())
    .bind(query.testbed.to_owned())
    .bind(query.spec.to_owned())
    .bind(query.benchmark.to_owned())
    .bind(query.measure.to_owned())
    .bind(query.exclude_report.to_owned())
    .bind(to_millis(query.before))
    .bind(since)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|(t, v)| Ok((from_millis(TABLE, t)?, v)))
        .collect()
}

impl Store {
    /// A connection from the pool, for reads that also run inside a transaction
    /// ([`thresholds_for`], [`history`]).
    pub async fn connection(&self) -> Result<sqlx::pool::PoolConnection<Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// Writes a report's metrics, boundaries and alerts, and marks it processed, in one
    /// transaction with the job's `completed → processed` for job reports. A report
    /// processed already (or a job no longer `completed`) is left alone: `Ok(false)`.
    pub async fn write_report(
        &self,
        write: &ReportWrite<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        if write_in(&mut tx, write, now).await? {
            tx.commit().await?;
            Ok(true)
        } else {
            tx.rollback().await?;
            Ok(false)
        }
    }

    /// Starts a report made from results submitted directly (not by a job): its shell
    /// is placed in a transaction that [`LocalReport::finish`] commits with the metrics,
    /// so a report is either whole or absent.
    pub async fn begin_local_report(
        &self,
        shell: &ReportShell<'_>,
        now: DateTime<Utc>,
    ) -> Result<LocalReport, CreateRunError> {
        let mut tx = self.begin_write().await?;
        let placed = insert_report_shell(&mut tx, shell, now).await?;
        Ok(LocalReport { tx, placed })
    }
}

/// A local report being made (see [`Store::begin_local_report`]).
pub struct LocalReport {
    tx: Transaction<'static, Any>,
    pub placed: PlacedReport,
}

impl LocalReport {
    /// The report's own transaction, to read what it has set (its thresholds).
    pub fn connection(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// Writes the metrics, boundaries and alerts and commits the whole report.
    pub async fn finish(
        mut self,
        write: &ReportWrite<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !write_in(&mut self.tx, write, now).await? {
            return Err(StoreError::corrupt(
                TABLE,
                "a new report was processed already",
            ));
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// [`Store::write_report`] inside a transaction; `false` when the report (or its job)
/// was processed already, and nothing was written.
async fn write_in(
    tx: &mut Transaction<'static, Any>,
    write: &ReportWrite<'_>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let ReportWrite {
        report,
        project,
        job,
        start_time,
        end_time,
        iterations,
        metrics,
        boundaries,
        environment,
        environment_changed,
    } = *write;
    let claimed = sqlx::query(
        "UPDATE report SET processed = $1, start_time = $2, end_time = $3, iterations = $4, \
         environment = $5, environment_changed = $6 WHERE uuid = $7 AND processed IS NULL",
    )
    .bind(to_millis(now))
    .bind(start_time.map(to_millis))
    .bind(end_time.map(to_millis))
    .bind(i64::from(iterations))
    .bind(environment.map(str::to_owned))
    .bind(environment_changed.map(i64::from))
    .bind(report.to_owned())
    .execute(&mut **tx)
    .await?;
    if claimed.rows_affected() == 0 {
        return Ok(false);
    }
    if let Some(job) = job
        && !super::jobs::mark_processed(tx, job, now).await?
    {
        return Ok(false);
    }
    let mut benchmarks: HashMap<&str, String> = HashMap::new();
    let mut measures: HashMap<&str, String> = HashMap::new();
    let mut report_benchmarks: HashMap<(u32, &str), String> = HashMap::new();
    let mut metric_uuids = Vec::with_capacity(metrics.len());
    for metric in metrics {
        let benchmark = match benchmarks.get(metric.benchmark.as_str()) {
            Some(uuid) => uuid.clone(),
            None => {
                let uuid = get_or_create(
                    tx,
                    NamedTable::Benchmark,
                    project,
                    &metric.benchmark,
                    "",
                    now,
                )
                .await?;
                benchmarks.insert(&metric.benchmark, uuid.clone());
                uuid
            }
        };
        let measure = match measures.get(metric.measure.as_str()) {
            Some(uuid) => uuid.clone(),
            None => {
                let (name, units) = measure_name(&metric.measure);
                let uuid =
                    get_or_create_measure(tx, project, &metric.measure, name, units, now).await?;
                measures.insert(&metric.measure, uuid.clone());
                uuid
            }
        };
        let key = (metric.iteration, metric.benchmark.as_str());
        let report_benchmark = match report_benchmarks.get(&key) {
            Some(uuid) => uuid.clone(),
            None => {
                let uuid = uuid::Uuid::new_v4().to_string();
                sqlx::query(
                    "INSERT INTO report_benchmark (uuid, report_uuid, iteration, benchmark_uuid) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(uuid.clone())
                .bind(report.to_owned())
                .bind(i64::from(metric.iteration))
                .bind(benchmark)
                .execute(&mut **tx)
                .await?;
                report_benchmarks.insert(key, uuid.clone());
                uuid
            }
        };
        let uuid = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO metric (uuid, report_benchmark_uuid, measure_uuid, value, lower_value, upper_value) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(uuid.clone())
        .bind(report_benchmark)
        .bind(measure)
        .bind(metric.value)
        .bind(NullableF64(metric.lower_value))
        .bind(NullableF64(metric.upper_value))
        .execute(&mut **tx)
        .await?;
        metric_uuids.push(uuid);
    }
    for boundary in boundaries {
        let metric = metric_uuids.get(boundary.metric).ok_or_else(|| {
            StoreError::corrupt(TABLE, "a boundary names a metric that was not written")
        })?;
        let uuid = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO boundary (uuid, metric_uuid, threshold_uuid, model_uuid, baseline, lower_limit, upper_limit) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(uuid.clone())
        .bind(metric.clone())
        .bind(boundary.threshold.clone())
        .bind(boundary.model.clone())
        .bind(NullableF64(boundary.baseline))
        .bind(NullableF64(boundary.lower_limit))
        .bind(NullableF64(boundary.upper_limit))
        .execute(&mut **tx)
        .await?;
        if let Some(side) = boundary.alert {
            sqlx::query(
                "INSERT INTO alert (uuid, project_uuid, boundary_uuid, side, status, created, modified) \
                 VALUES ($1, $2, $3, $4, 'active', $5, $5)",
            )
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(project.to_string())
            .bind(uuid)
            .bind(side)
            .bind(to_millis(now))
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(true)
}

/// A measure by slug, created with its built-in name and units when missing.
pub(super) async fn get_or_create_measure(
    tx: &mut Transaction<'static, Any>,
    project: ProjectUuid,
    slug: &str,
    name: &str,
    units: &str,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT uuid FROM measure WHERE project_uuid = $1 AND slug = $2")
            .bind(project.to_string())
            .bind(slug.to_owned())
            .fetch_optional(&mut **tx)
            .await?;
    if let Some(uuid) = found {
        return Ok(uuid);
    }
    get_or_create(tx, NamedTable::Measure, project, name, units, now).await
}

#[derive(sqlx::FromRow)]
struct ThresholdRow(
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<f64>,
    Option<f64>,
);

impl ThresholdRow {
    fn into_model(self) -> ThresholdModel {
        let size = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        ThresholdModel {
            threshold: self.0,
            model: self.1,
            measure_slug: self.2,
            test: self.3,
            min_sample_size: size(self.4),
            max_sample_size: size(self.5),
            window_seconds: self.6.and_then(|v| u64::try_from(v).ok()),
            lower_boundary: self.7,
            upper_boundary: self.8,
        }
    }
}

/// What processing a job's output needs: its report's place and settings, the job's
/// configuration, times and stored output.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub job: JobUuid,
    pub report: String,
    pub project: ProjectUuid,
    pub branch: String,
    pub testbed: String,
    pub spec: String,
    pub head: Option<String>,
    /// The adapter asked for; `None` is `magic`.
    pub adapter: Option<String>,
    pub fold: Option<String>,
    pub config: String,
    pub created: DateTime<Utc>,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub output_digest: Option<String>,
    /// `completed.environment` as the runner sent it (JSON).
    pub environment: Option<String>,
}

type JobReportRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

impl Store {
    /// The jobs whose output waits for processing (`completed`), oldest first.
    pub async fn completed_jobs(&self) -> Result<Vec<JobUuid>, StoreError> {
        let uuids: Vec<String> = sqlx::query_scalar(
            "SELECT uuid FROM job WHERE status = 'completed' ORDER BY ended, created, uuid",
        )
        .fetch_all(&self.pool)
        .await?;
        uuids
            .iter()
            .map(|uuid| super::parse_column("job", "uuid", uuid))
            .collect()
    }

    /// A job with its report, for processing; `None` for an unknown job.
    pub async fn job_report(&self, job: JobUuid) -> Result<Option<JobReport>, StoreError> {
        let row: Option<JobReportRow> = sqlx::query_as(
            "SELECT j.uuid, r.uuid, r.project_uuid, r.branch_uuid, r.testbed_uuid, r.spec_uuid, \
             r.head_uuid, r.adapter, r.fold, j.config, r.created, j.started, j.ended, j.output_digest, \
             j.environment FROM job j JOIN report r ON r.uuid = j.report_uuid WHERE j.uuid = $1",
        )
        .bind(job.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(JobReport {
            job: super::parse_column("job", "uuid", &row.0)?,
            report: row.1,
            project: super::parse_column(TABLE, "project_uuid", &row.2)?,
            branch: row.3,
            testbed: row.4,
            spec: row.5,
            head: row.6,
            adapter: row.7,
            fold: row.8,
            config: row.9,
            created: from_millis(TABLE, row.10)?,
            started: super::from_millis_opt("job", row.11)?,
            ended: super::from_millis_opt("job", row.12)?,
            output_digest: row.13,
            environment: row.14,
        }))
    }
}
