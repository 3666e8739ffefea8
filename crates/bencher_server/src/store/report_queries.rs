//! Reads of reports and their results (metrics, boundaries, alerts), the perf history,
//! measures and benchmarks, plus threshold CRUD (with versioned models) and alert status
//! changes. Database IO only; model validation is `crate::threshold`'s and happens in
//! the caller. The writes of processing are in `store::reports`.

use std::collections::HashMap;
use std::str::FromStr as _;

use bencher_types::{
    AlertQuery, AlertStatus, AlertUuid, Direction, JsonAlert, JsonAlertSummary, JsonBenchmark,
    JsonBoundary, JsonMeasure, JsonMetric, JsonModel, JsonNamed, JsonPerfPoint, JsonReport,
    JsonReportBenchmark, JsonReportMeasure, JsonThreshold, JsonVersion, Pagination, ProjectUuid,
    ReportUuid, SortBy, ThresholdTest, ThresholdUuid,
};
use chrono::{DateTime, Utc};
use sqlx::{Any, Transaction};

use super::float::NullableF64;
use super::reports::BUILT_IN_MEASURES;
use super::{Store, StoreError, from_millis, from_millis_opt, parse_column, to_millis};

/// A value bound to a `$N` placeholder: text or a number (PostgreSQL will not compare a
/// `BIGINT` column with a text parameter).
#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Int(i64),
}

/// `WHERE` conditions with numbered placeholders, for queries that compare times as well
/// as ids (`ListQuery` binds text only). Only fixed SQL fragments are pushed; user input
/// always travels as a bound value.
#[derive(Debug, Default)]
struct Conditions {
    sql: Vec<String>,
    binds: Vec<Bind>,
}

impl Conditions {
    /// Adds `sql`, whose `?` marks take `values` in order.
    fn push(&mut self, sql: &str, values: Vec<Bind>) {
        let mut values = values.into_iter();
        let mut out = String::with_capacity(sql.len() + 8);
        for c in sql.chars() {
            if c == '?' {
                let value = values.next().expect("one value per placeholder");
                self.binds.push(value);
                out.push_str(&format!("${}", self.binds.len()));
            } else {
                out.push(c);
            }
        }
        self.sql.push(out);
    }

    fn text(&mut self, sql: &str, value: impl Into<String>) {
        self.push(sql, vec![Bind::Text(value.into())]);
    }

    /// `column IN (…)` over `values`; never empty (callers check).
    fn one_of(&mut self, column: &str, values: &[String]) {
        let marks = vec!["?"; values.len()].join(", ");
        self.push(
            &format!("{column} IN ({marks})"),
            values.iter().cloned().map(Bind::Text).collect(),
        );
    }

    fn where_clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.sql.join(" AND "))
        }
    }

    /// The next free placeholder number.
    fn next(&self) -> usize {
        self.binds.len() + 1
    }

    fn bind_all<'q, O>(
        &self,
        mut query: sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>> {
        for bind in &self.binds {
            query = match bind {
                Bind::Text(value) => query.bind(value.clone()),
                Bind::Int(value) => query.bind(*value),
            };
        }
        query
    }

    async fn count(&self, store: &Store, from: &str) -> Result<u64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {from}{}", self.where_clause());
        let mut query = sqlx::query_scalar::<_, i64>(&sql);
        for bind in &self.binds {
            query = match bind {
                Bind::Text(value) => query.bind(value.clone()),
                Bind::Int(value) => query.bind(*value),
            };
        }
        Ok(u64::try_from(query.fetch_one(&store.pool).await?).unwrap_or_default())
    }
}

/// A report's time: when its benchmark ended, else when it was submitted.
const REPORT_TIME: &str = "COALESCE(r.end_time, r.created)";

fn sql_direction(direction: Direction) -> &'static str {
    match direction {
        Direction::Asc => "ASC",
        Direction::Desc => "DESC",
    }
}

/// Which named table a query string names a row of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    Branch,
    Testbed,
    Benchmark,
    Measure,
    /// Specs belong to the server, not to a project.
    Spec,
}

impl Named {
    pub fn table(self) -> &'static str {
        match self {
            Self::Branch => "branch",
            Self::Testbed => "testbed",
            Self::Benchmark => "benchmark",
            Self::Measure => "measure",
            Self::Spec => "spec",
        }
    }
}

/// The row `id` names in `project`: by UUID, else by exact name, else by slug.
async fn find_named(
    conn: &mut sqlx::AnyConnection,
    named: Named,
    project: ProjectUuid,
    id: &str,
) -> Result<Option<JsonNamed>, StoreError> {
    let table = named.table();
    let scope = if named == Named::Spec {
        // Same number of placeholders either way: `$1` compared with itself.
        "$1 = $1"
    } else {
        "project_uuid = $1"
    };
    for column in ["uuid", "name", "slug"] {
        if column == "uuid" && uuid::Uuid::parse_str(id).is_err() {
            continue;
        }
        let value = match uuid::Uuid::parse_str(id) {
            Ok(uuid) if column == "uuid" => uuid.to_string(),
            _ => id.to_owned(),
        };
        let row: Option<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT uuid, name, slug FROM {table} WHERE {scope} AND {column} = $2"
        ))
        .bind(project.to_string())
        .bind(value)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some((uuid, name, slug)) = row {
            return Ok(Some(JsonNamed {
                uuid: parse_column(table, "uuid", &uuid)?,
                name,
                slug,
            }));
        }
    }
    Ok(None)
}

fn named(
    table: &'static str,
    uuid: &str,
    name: String,
    slug: String,
) -> Result<JsonNamed, StoreError> {
    Ok(JsonNamed {
        uuid: parse_column(table, "uuid", uuid)?,
        name,
        slug,
    })
}

fn to_u32(table: &'static str, column: &str, value: i64) -> Result<u32, StoreError> {
    u32::try_from(value)
        .map_err(|_| StoreError::corrupt(table, format!("column `{column}` = {value}")))
}

fn opt_u32(
    table: &'static str,
    column: &str,
    value: Option<i64>,
) -> Result<Option<u32>, StoreError> {
    value.map(|v| to_u32(table, column, v)).transpose()
}

fn version(number: Option<i64>, hash: Option<String>) -> Result<Option<JsonVersion>, StoreError> {
    number
        .map(|number| {
            Ok(JsonVersion {
                number: u64::try_from(number)
                    .map_err(|_| StoreError::corrupt("version", format!("number {number}")))?,
                hash,
            })
        })
        .transpose()
}

// ---- reports ----

const REPORT_COLUMNS: &str = "r.uuid AS uuid, r.project_uuid AS project_uuid, \
    br.uuid AS branch_uuid, br.name AS branch_name, br.slug AS branch_slug, \
    tb.uuid AS testbed_uuid, tb.name AS testbed_name, tb.slug AS testbed_slug, \
    sp.uuid AS spec_uuid, sp.name AS spec_name, sp.slug AS spec_slug, \
    v.number AS version_number, v.hash AS version_hash, r.adapter AS adapter, r.fold AS fold, \
    r.start_time AS start_time, r.end_time AS end_time, r.iterations AS iterations, \
    r.job_uuid AS job_uuid, r.processed AS processed, r.created AS created, \
    r.environment AS environment, r.environment_changed AS environment_changed, \
    (SELECT COUNT(*) FROM alert a JOIN boundary bd ON bd.uuid = a.boundary_uuid \
     JOIN metric mt ON mt.uuid = bd.metric_uuid \
     JOIN report_benchmark rb ON rb.uuid = mt.report_benchmark_uuid \
     WHERE rb.report_uuid = r.uuid) AS alerts";

const REPORT_FROM: &str = "report r JOIN branch br ON br.uuid = r.branch_uuid \
    JOIN testbed tb ON tb.uuid = r.testbed_uuid JOIN spec sp ON sp.uuid = r.spec_uuid \
    LEFT JOIN version v ON v.uuid = r.version_uuid";

#[derive(sqlx::FromRow)]
struct ReportRow {
    uuid: String,
    project_uuid: String,
    branch_uuid: String,
    branch_name: String,
    branch_slug: String,
    testbed_uuid: String,
    testbed_name: String,
    testbed_slug: String,
    spec_uuid: String,
    spec_name: String,
    spec_slug: String,
    version_number: Option<i64>,
    version_hash: Option<String>,
    adapter: Option<String>,
    fold: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    iterations: Option<i64>,
    job_uuid: Option<String>,
    processed: Option<i64>,
    created: i64,
    environment: Option<String>,
    environment_changed: Option<i64>,
    alerts: i64,
}

impl ReportRow {
    fn into_json(self) -> Result<JsonReport, StoreError> {
        const T: &str = "report";
        Ok(JsonReport {
            uuid: parse_column(T, "uuid", &self.uuid)?,
            project: parse_column(T, "project_uuid", &self.project_uuid)?,
            branch: named(
                "branch",
                &self.branch_uuid,
                self.branch_name,
                self.branch_slug,
            )?,
            testbed: named(
                "testbed",
                &self.testbed_uuid,
                self.testbed_name,
                self.testbed_slug,
            )?,
            spec: named("spec", &self.spec_uuid, self.spec_name, self.spec_slug)?,
            version: version(self.version_number, self.version_hash)?,
            adapter: self
                .adapter
                .as_deref()
                .map(|a| parse_column(T, "adapter", a))
                .transpose()?,
            fold: self
                .fold
                .as_deref()
                .map(|f| parse_column(T, "fold", f))
                .transpose()?,
            start_time: from_millis_opt(T, self.start_time)?,
            end_time: from_millis_opt(T, self.end_time)?,
            iterations: opt_u32(T, "iterations", self.iterations)?,
            job: self
                .job_uuid
                .as_deref()
                .map(|j| parse_column(T, "job_uuid", j))
                .transpose()?,
            processed: from_millis_opt(T, self.processed)?,
            created: from_millis(T, self.created)?,
            results: None,
            environment: self
                .environment
                .as_deref()
                .map(|e| {
                    serde_json::from_str(e)
                        .map_err(|e| StoreError::corrupt(T, format!("environment: {e}")))
                })
                .transpose()?,
            environment_changed: self.environment_changed.map(|c| c != 0),
            alerts: u64::try_from(self.alerts).unwrap_or_default(),
        })
    }
}

/// Filters of the report list, resolved to UUIDs by the caller.
#[derive(Debug, Clone, Default)]
pub struct ReportFilter {
    pub branch: Option<String>,
    pub testbed: Option<String>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

// ---- metrics with their boundary, model and alert ----

/// Every column a metric's detail needs: its report's place, the benchmark and measure,
/// the boundary with the model version it used, and the alert.
const DETAIL_COLUMNS: &str = "r.uuid AS report_uuid, r.project_uuid AS project_uuid, \
    rb.iteration AS iteration, \
    br.uuid AS branch_uuid, br.name AS branch_name, br.slug AS branch_slug, \
    tb.uuid AS testbed_uuid, tb.name AS testbed_name, tb.slug AS testbed_slug, \
    sp.uuid AS spec_uuid, sp.name AS spec_name, sp.slug AS spec_slug, \
    v.number AS version_number, v.hash AS version_hash, \
    COALESCE(r.end_time, r.created) AS report_time, \
    b.uuid AS benchmark_uuid, b.name AS benchmark_name, b.slug AS benchmark_slug, \
    ms.uuid AS measure_uuid, ms.name AS measure_name, ms.slug AS measure_slug, \
    mt.uuid AS metric_uuid, mt.value AS value, mt.lower_value AS lower_value, \
    mt.upper_value AS upper_value, \
    bd.uuid AS boundary_uuid, bd.threshold_uuid AS threshold_uuid, bd.baseline AS baseline, \
    bd.lower_limit AS lower_limit, bd.upper_limit AS upper_limit, \
    md.uuid AS model_uuid, md.test AS test, md.min_sample_size AS min_sample_size, \
    md.max_sample_size AS max_sample_size, md.window_seconds AS window_seconds, \
    md.lower_boundary AS lower_boundary, md.upper_boundary AS upper_boundary, \
    md.created AS model_created, md.replaced AS model_replaced, \
    a.uuid AS alert_uuid, a.side AS side, a.status AS status, a.created AS alert_created, \
    a.modified AS alert_modified";

/// The joins of [`DETAIL_COLUMNS`]; `alert_join` is `LEFT JOIN` (every metric) or
/// `JOIN` (only metrics with an alert).
fn detail_from(alert_join: &str) -> String {
    format!(
        "metric mt JOIN report_benchmark rb ON rb.uuid = mt.report_benchmark_uuid \
         JOIN report r ON r.uuid = rb.report_uuid \
         JOIN branch br ON br.uuid = r.branch_uuid JOIN testbed tb ON tb.uuid = r.testbed_uuid \
         JOIN spec sp ON sp.uuid = r.spec_uuid LEFT JOIN version v ON v.uuid = r.version_uuid \
         JOIN benchmark b ON b.uuid = rb.benchmark_uuid JOIN measure ms ON ms.uuid = mt.measure_uuid \
         LEFT JOIN boundary bd ON bd.metric_uuid = mt.uuid \
         LEFT JOIN model md ON md.uuid = bd.model_uuid \
         {alert_join} alert a ON a.boundary_uuid = bd.uuid"
    )
}

#[derive(sqlx::FromRow)]
struct DetailRow {
    report_uuid: String,
    project_uuid: String,
    iteration: i64,
    branch_uuid: String,
    branch_name: String,
    branch_slug: String,
    testbed_uuid: String,
    testbed_name: String,
    testbed_slug: String,
    spec_uuid: String,
    spec_name: String,
    spec_slug: String,
    version_number: Option<i64>,
    version_hash: Option<String>,
    report_time: i64,
    benchmark_uuid: String,
    benchmark_name: String,
    benchmark_slug: String,
    measure_uuid: String,
    measure_name: String,
    measure_slug: String,
    metric_uuid: String,
    value: f64,
    lower_value: Option<f64>,
    upper_value: Option<f64>,
    boundary_uuid: Option<String>,
    threshold_uuid: Option<String>,
    baseline: Option<f64>,
    lower_limit: Option<f64>,
    upper_limit: Option<f64>,
    model_uuid: Option<String>,
    test: Option<String>,
    min_sample_size: Option<i64>,
    max_sample_size: Option<i64>,
    window_seconds: Option<i64>,
    lower_boundary: Option<f64>,
    upper_boundary: Option<f64>,
    model_created: Option<i64>,
    model_replaced: Option<i64>,
    alert_uuid: Option<String>,
    side: Option<String>,
    status: Option<String>,
    alert_created: Option<i64>,
    alert_modified: Option<i64>,
}

/// A metric with everything around it, decoded.
struct Detail {
    report: ReportUuid,
    project: ProjectUuid,
    iteration: u32,
    branch: JsonNamed,
    testbed: JsonNamed,
    spec: JsonNamed,
    version: Option<JsonVersion>,
    time: DateTime<Utc>,
    benchmark: JsonNamed,
    measure: JsonNamed,
    metric: JsonMetric,
    boundary: Option<JsonBoundary>,
    alert: Option<JsonAlertSummary>,
}

impl DetailRow {
    fn decode(self) -> Result<Detail, StoreError> {
        const T: &str = "metric";
        let boundary = match (self.boundary_uuid, self.threshold_uuid, self.model_uuid) {
            (Some(boundary), Some(threshold), Some(model)) => Some(JsonBoundary {
                uuid: parse_column("boundary", "uuid", &boundary)?,
                threshold: parse_column("boundary", "threshold_uuid", &threshold)?,
                model: model_json(ModelRow {
                    uuid: model,
                    test: self.test.unwrap_or_default(),
                    min_sample_size: self.min_sample_size,
                    max_sample_size: self.max_sample_size,
                    window_seconds: self.window_seconds,
                    lower_boundary: self.lower_boundary,
                    upper_boundary: self.upper_boundary,
                    created: self.model_created.unwrap_or_default(),
                    replaced: self.model_replaced,
                })?,
                baseline: self.baseline,
                lower_limit: self.lower_limit,
                upper_limit: self.upper_limit,
            }),
            _ => None,
        };
        let alert = match (
            self.alert_uuid,
            self.side,
            self.status,
            self.alert_created,
            self.alert_modified,
        ) {
            (Some(uuid), Some(side), Some(status), Some(created), Some(modified)) => {
                Some(JsonAlertSummary {
                    uuid: parse_column("alert", "uuid", &uuid)?,
                    side: parse_column("alert", "side", &side)?,
                    status: parse_column("alert", "status", &status)?,
                    created: from_millis("alert", created)?,
                    modified: from_millis("alert", modified)?,
                })
            }
            _ => None,
        };
        Ok(Detail {
            report: parse_column(T, "report_uuid", &self.report_uuid)?,
            project: parse_column(T, "project_uuid", &self.project_uuid)?,
            iteration: to_u32(T, "iteration", self.iteration)?,
            branch: named(
                "branch",
                &self.branch_uuid,
                self.branch_name,
                self.branch_slug,
            )?,
            testbed: named(
                "testbed",
                &self.testbed_uuid,
                self.testbed_name,
                self.testbed_slug,
            )?,
            spec: named("spec", &self.spec_uuid, self.spec_name, self.spec_slug)?,
            version: version(self.version_number, self.version_hash)?,
            time: from_millis("report", self.report_time)?,
            benchmark: named(
                "benchmark",
                &self.benchmark_uuid,
                self.benchmark_name,
                self.benchmark_slug,
            )?,
            measure: named(
                "measure",
                &self.measure_uuid,
                self.measure_name,
                self.measure_slug,
            )?,
            metric: JsonMetric {
                uuid: parse_column(T, "uuid", &self.metric_uuid)?,
                value: self.value,
                lower_value: self.lower_value,
                upper_value: self.upper_value,
            },
            boundary,
            alert,
        })
    }
}

impl Detail {
    /// The alert view; `None` when this metric has no alert.
    fn into_alert(self) -> Result<JsonAlert, StoreError> {
        let (Some(alert), Some(boundary)) = (self.alert, self.boundary) else {
            return Err(StoreError::corrupt(
                "alert",
                "an alert row without its boundary",
            ));
        };
        Ok(JsonAlert {
            uuid: alert.uuid,
            project: self.project,
            status: alert.status,
            side: alert.side,
            report: self.report,
            iteration: self.iteration,
            version: self.version,
            branch: self.branch,
            testbed: self.testbed,
            spec: self.spec,
            benchmark: self.benchmark,
            measure: self.measure,
            metric: self.metric,
            boundary,
            created: alert.created,
            modified: alert.modified,
        })
    }
}

// ---- models and thresholds ----

/// The columns of [`ModelRow`], in its order.
const MODEL_COLUMNS: &str = "uuid, test, min_sample_size, max_sample_size, window_seconds, \
     lower_boundary, upper_boundary, created, replaced";

#[derive(sqlx::FromRow)]
struct ModelRow {
    uuid: String,
    test: String,
    min_sample_size: Option<i64>,
    max_sample_size: Option<i64>,
    window_seconds: Option<i64>,
    lower_boundary: Option<f64>,
    upper_boundary: Option<f64>,
    created: i64,
    replaced: Option<i64>,
}

fn model_json(row: ModelRow) -> Result<JsonModel, StoreError> {
    const T: &str = "model";
    Ok(JsonModel {
        uuid: parse_column(T, "uuid", &row.uuid)?,
        test: parse_column::<ThresholdTest>(T, "test", &row.test)?,
        min_sample_size: opt_u32(T, "min_sample_size", row.min_sample_size)?,
        max_sample_size: opt_u32(T, "max_sample_size", row.max_sample_size)?,
        window: opt_u32(T, "window_seconds", row.window_seconds)?,
        lower_boundary: row.lower_boundary,
        upper_boundary: row.upper_boundary,
        created: from_millis(T, row.created)?,
        replaced: from_millis_opt(T, row.replaced)?,
    })
}

/// A validated model to store (the caller ran `threshold::Model::new`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewModel {
    pub test: ThresholdTest,
    pub min_sample_size: Option<u32>,
    pub max_sample_size: Option<u32>,
    pub window: Option<u32>,
    pub lower_boundary: Option<f64>,
    pub upper_boundary: Option<f64>,
}

/// A threshold to create; branch, testbed and measure by name, slug or UUID.
#[derive(Debug, Clone)]
pub struct NewThreshold<'a> {
    pub project: ProjectUuid,
    pub branch: &'a str,
    pub testbed: &'a str,
    pub measure: &'a str,
    pub model: NewModel,
}

/// Filters of the threshold list, resolved to UUIDs by the caller.
#[derive(Debug, Clone, Default)]
pub struct ThresholdFilter {
    pub branch: Option<String>,
    pub testbed: Option<String>,
    pub measure: Option<String>,
}

const THRESHOLD_COLUMNS: &str = "t.uuid AS uuid, t.project_uuid AS project_uuid, \
    br.uuid AS branch_uuid, br.name AS branch_name, br.slug AS branch_slug, \
    tb.uuid AS testbed_uuid, tb.name AS testbed_name, tb.slug AS testbed_slug, \
    ms.uuid AS measure_uuid, ms.name AS measure_name, ms.slug AS measure_slug, \
    md.uuid AS model_uuid, md.test AS test, md.min_sample_size AS min_sample_size, \
    md.max_sample_size AS max_sample_size, md.window_seconds AS window_seconds, \
    md.lower_boundary AS lower_boundary, md.upper_boundary AS upper_boundary, \
    md.created AS model_created, md.replaced AS model_replaced, \
    t.created AS created, t.modified AS modified";

const THRESHOLD_FROM: &str = "threshold t JOIN branch br ON br.uuid = t.branch_uuid \
    JOIN testbed tb ON tb.uuid = t.testbed_uuid JOIN measure ms ON ms.uuid = t.measure_uuid \
    JOIN model md ON md.uuid = t.model_uuid";

#[derive(sqlx::FromRow)]
struct ThresholdRow {
    uuid: String,
    project_uuid: String,
    branch_uuid: String,
    branch_name: String,
    branch_slug: String,
    testbed_uuid: String,
    testbed_name: String,
    testbed_slug: String,
    measure_uuid: String,
    measure_name: String,
    measure_slug: String,
    model_uuid: String,
    test: String,
    min_sample_size: Option<i64>,
    max_sample_size: Option<i64>,
    window_seconds: Option<i64>,
    lower_boundary: Option<f64>,
    upper_boundary: Option<f64>,
    model_created: i64,
    model_replaced: Option<i64>,
    created: i64,
    modified: i64,
}

impl ThresholdRow {
    fn into_json(self) -> Result<JsonThreshold, StoreError> {
        const T: &str = "threshold";
        Ok(JsonThreshold {
            uuid: parse_column(T, "uuid", &self.uuid)?,
            project: parse_column(T, "project_uuid", &self.project_uuid)?,
            branch: named(
                "branch",
                &self.branch_uuid,
                self.branch_name,
                self.branch_slug,
            )?,
            testbed: named(
                "testbed",
                &self.testbed_uuid,
                self.testbed_name,
                self.testbed_slug,
            )?,
            measure: named(
                "measure",
                &self.measure_uuid,
                self.measure_name,
                self.measure_slug,
            )?,
            model: model_json(ModelRow {
                uuid: self.model_uuid,
                test: self.test,
                min_sample_size: self.min_sample_size,
                max_sample_size: self.max_sample_size,
                window_seconds: self.window_seconds,
                lower_boundary: self.lower_boundary,
                upper_boundary: self.upper_boundary,
                created: self.model_created,
                replaced: self.model_replaced,
            })?,
            created: from_millis(T, self.created)?,
            modified: from_millis(T, self.modified)?,
        })
    }
}

/// Inserts a model version of `threshold` and makes it the current one, marking the
/// previous current model (if any) replaced.
async fn insert_model(
    tx: &mut Transaction<'static, Any>,
    threshold: &str,
    model: &NewModel,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let uuid = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "UPDATE model SET replaced = $1 WHERE uuid = \
         (SELECT model_uuid FROM threshold WHERE uuid = $2) AND replaced IS NULL",
    )
    .bind(to_millis(now))
    .bind(threshold.to_owned())
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO model (uuid, threshold_uuid, test, min_sample_size, max_sample_size, \
         window_seconds, lower_boundary, upper_boundary, created, replaced) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)",
    )
    .bind(uuid.clone())
    .bind(threshold.to_owned())
    .bind(model.test.as_str())
    .bind(model.min_sample_size.map(i64::from))
    .bind(model.max_sample_size.map(i64::from))
    .bind(model.window.map(i64::from))
    .bind(NullableF64(model.lower_boundary))
    .bind(NullableF64(model.upper_boundary))
    .bind(to_millis(now))
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE threshold SET model_uuid = $1, modified = $2 WHERE uuid = $3")
        .bind(uuid)
        .bind(to_millis(now))
        .bind(threshold.to_owned())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A threshold a run sets for its own branch and testbed (`--threshold-*`).
#[derive(Debug, Clone)]
pub struct RunThreshold {
    /// Name, slug or UUID; a built-in measure or a custom slug is created when missing.
    pub measure: String,
    pub model: NewModel,
}

/// Sets a run's thresholds, inside the transaction that places its report: a threshold
/// is created where the branch, testbed and measure have none, and an existing one gets
/// the run's model as a new version when it differs (an identical model keeps its
/// version, so a run repeated in CI does not pile up versions).
pub(crate) async fn set_run_thresholds(
    tx: &mut Transaction<'static, Any>,
    project: ProjectUuid,
    branch: &str,
    testbed: &str,
    thresholds: &[RunThreshold],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for wanted in thresholds {
        let measure = match find_or_create_measure(tx, project, &wanted.measure, now).await? {
            Some(measure) => measure.uuid.to_string(),
            None => {
                // A custom measure is named by its slug, as benchmark output names it.
                let slug = bencher_types::Slug::from_str(&wanted.measure).map_err(|_| {
                    StoreError::NotFound(format!(
                        "measure `{}` (a new custom measure is named by its slug)",
                        wanted.measure
                    ))
                })?;
                super::reports::get_or_create_measure(
                    tx,
                    project,
                    slug.as_str(),
                    slug.as_str(),
                    super::reports::CUSTOM_UNITS,
                    now,
                )
                .await?
            }
        };
        // Insert first, then read: a concurrent run creating the same threshold (on
        // another process) makes this a no-op after its commit instead of a conflict.
        sqlx::query(
            "INSERT INTO threshold (uuid, project_uuid, branch_uuid, testbed_uuid, \
             measure_uuid, model_uuid, created, modified) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6, $6) ON CONFLICT DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(project.to_string())
        .bind(branch.to_owned())
        .bind(testbed.to_owned())
        .bind(measure.clone())
        .bind(to_millis(now))
        .execute(&mut **tx)
        .await?;
        let (threshold, model): (String, Option<String>) = sqlx::query_as(
            "SELECT uuid, model_uuid FROM threshold \
             WHERE branch_uuid = $1 AND testbed_uuid = $2 AND measure_uuid = $3",
        )
        .bind(branch.to_owned())
        .bind(testbed.to_owned())
        .bind(measure)
        .fetch_one(&mut **tx)
        .await?;
        if let Some(model) = model
            && current_model(tx, &model).await?.as_ref() == Some(&wanted.model)
        {
            continue;
        }
        insert_model(tx, &threshold, &wanted.model, now).await?;
    }
    Ok(())
}

/// A stored model's parameters, to compare with a requested one.
async fn current_model(
    tx: &mut Transaction<'static, Any>,
    model: &str,
) -> Result<Option<NewModel>, StoreError> {
    let row: Option<ModelRow> = sqlx::query_as(&format!(
        "SELECT {MODEL_COLUMNS} FROM model WHERE uuid = $1"
    ))
    .bind(model.to_owned())
    .fetch_optional(&mut **tx)
    .await?;
    let Some(model) = row.map(model_json).transpose()? else {
        return Ok(None);
    };
    Ok(Some(NewModel {
        test: model.test,
        min_sample_size: model.min_sample_size,
        max_sample_size: model.max_sample_size,
        window: model.window,
        lower_boundary: model.lower_boundary,
        upper_boundary: model.upper_boundary,
    }))
}

/// The measure `id` names, creating a built-in one (by its slug or name) on first use.
async fn find_or_create_measure(
    tx: &mut Transaction<'static, Any>,
    project: ProjectUuid,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<JsonNamed>, StoreError> {
    if let Some(found) = find_named(tx, Named::Measure, project, id).await? {
        return Ok(Some(found));
    }
    let Some(built_in) = BUILT_IN_MEASURES
        .iter()
        .find(|m| m.slug == id || m.name == id)
    else {
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO measure (uuid, project_uuid, name, slug, units, created, modified) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(project.to_string())
    .bind(built_in.name)
    .bind(built_in.slug)
    .bind(built_in.units)
    .bind(to_millis(now))
    .execute(&mut **tx)
    .await?;
    find_named(tx, Named::Measure, project, built_in.slug).await
}

// ---- measures and benchmarks ----

#[derive(sqlx::FromRow)]
struct MeasureRow {
    uuid: String,
    project_uuid: String,
    name: String,
    slug: String,
    units: String,
    created: i64,
    modified: i64,
}

#[derive(sqlx::FromRow)]
struct BenchmarkRow {
    uuid: String,
    project_uuid: String,
    name: String,
    slug: String,
    created: i64,
    modified: i64,
}

/// What a perf query asks for, resolved: the lists whose product are its series.
pub struct PerfSelection {
    pub branches: Vec<JsonNamed>,
    pub testbeds: Vec<JsonNamed>,
    pub benchmarks: Vec<JsonNamed>,
    pub measures: Vec<JsonNamed>,
    /// Empty: every Spec.
    pub specs: Vec<JsonNamed>,
    pub start_time: Option<DateTime<Utc>>,
    pub end_time: Option<DateTime<Utc>>,
}

/// Why a perf query was not answered.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    #[error(
        "the query matches {points} points, more than {max} at once: narrow it with `start_time`/`end_time` or fewer branches, testbeds, benchmarks or measures"
    )]
    TooManyPoints { points: u64, max: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A perf point with the names of its series.
pub struct PerfPoint {
    pub branch: uuid::Uuid,
    pub testbed: uuid::Uuid,
    pub benchmark: uuid::Uuid,
    pub measure: uuid::Uuid,
    pub point: JsonPerfPoint,
}

impl Store {
    /// The branch, testbed, benchmark, measure or Spec `id` (UUID, name or slug) names
    /// in `project`, or `None`.
    pub async fn find_named(
        &self,
        named: Named,
        project: ProjectUuid,
        id: &str,
    ) -> Result<Option<JsonNamed>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        find_named(&mut conn, named, project, id).await
    }

    /// One page of a project's reports, by report time (newest first unless `Asc`).
    pub async fn list_reports(
        &self,
        project: ProjectUuid,
        filter: &ReportFilter,
        direction: Direction,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<JsonReport>, u64), StoreError> {
        let mut conditions = Conditions::default();
        conditions.text("r.project_uuid = ?", project.to_string());
        if let Some(branch) = &filter.branch {
            conditions.text("r.branch_uuid = ?", branch.clone());
        }
        if let Some(testbed) = &filter.testbed {
            conditions.text("r.testbed_uuid = ?", testbed.clone());
        }
        if let Some(start) = filter.start_time {
            conditions.push(
                &format!("{REPORT_TIME} >= ?"),
                vec![Bind::Int(to_millis(start))],
            );
        }
        if let Some(end) = filter.end_time {
            conditions.push(
                &format!("{REPORT_TIME} <= ?"),
                vec![Bind::Int(to_millis(end))],
            );
        }
        let total = conditions.count(self, REPORT_FROM).await?;
        let d = sql_direction(direction);
        let n = conditions.next();
        let sql = format!(
            "SELECT {REPORT_COLUMNS} FROM {REPORT_FROM}{} ORDER BY {REPORT_TIME} {d}, r.uuid {d} \
             LIMIT ${n} OFFSET ${}",
            conditions.where_clause(),
            n + 1
        );
        let rows: Vec<ReportRow> = conditions
            .bind_all(sqlx::query_as(&sql))
            .bind(i64::from(limit_offset.0))
            .bind(i64::try_from(limit_offset.1).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let reports = rows
            .into_iter()
            .map(|row| {
                // Lists carry whether the environment changed, not the environment.
                ReportRow::into_json(row).map(|report| JsonReport {
                    environment: None,
                    ..report
                })
            })
            .collect::<Result<_, _>>()?;
        Ok((reports, total))
    }

    /// One report with its results per iteration, benchmark (by name) and measure (by
    /// slug).
    pub async fn get_report(
        &self,
        project: ProjectUuid,
        report: ReportUuid,
    ) -> Result<JsonReport, StoreError> {
        let row: Option<ReportRow> = sqlx::query_as(&format!(
            "SELECT {REPORT_COLUMNS} FROM {REPORT_FROM} WHERE r.uuid = $1 AND r.project_uuid = $2"
        ))
        .bind(report.to_string())
        .bind(project.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let mut json = row
            .ok_or_else(|| StoreError::NotFound(format!("report `{report}`")))?
            .into_json()?;
        let rows: Vec<DetailRow> = sqlx::query_as(&format!(
            "SELECT {DETAIL_COLUMNS} FROM {} WHERE r.uuid = $1 \
             ORDER BY rb.iteration, b.name, ms.slug, mt.uuid",
            detail_from("LEFT JOIN")
        ))
        .bind(report.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut iterations: Vec<Vec<JsonReportBenchmark>> = Vec::new();
        for row in rows {
            let detail = row.decode()?;
            let index = usize::try_from(detail.iteration).unwrap_or(usize::MAX);
            if iterations.len() <= index {
                iterations.resize_with(index + 1, Vec::new);
            }
            let benchmarks = &mut iterations[index];
            let measure = JsonReportMeasure {
                measure: detail.measure,
                metric: detail.metric,
                boundary: detail.boundary,
                alert: detail.alert,
            };
            match benchmarks.last_mut() {
                Some(last) if last.benchmark.uuid == detail.benchmark.uuid => {
                    last.measures.push(measure);
                }
                _ => benchmarks.push(JsonReportBenchmark {
                    benchmark: detail.benchmark,
                    measures: vec![measure],
                }),
            }
        }
        json.results = Some(iterations);
        Ok(json)
    }

    /// The points of a perf query, oldest first, or `TooManyPoints` past `max_points`.
    pub async fn perf_points(
        &self,
        project: ProjectUuid,
        selection: &PerfSelection,
        max_points: u64,
    ) -> Result<Vec<PerfPoint>, PerfError> {
        let uuids = |list: &[JsonNamed]| -> Vec<String> {
            list.iter().map(|n| n.uuid.to_string()).collect()
        };
        let mut conditions = Conditions::default();
        conditions.text("r.project_uuid = ?", project.to_string());
        conditions.push("r.processed IS NOT NULL", vec![]);
        conditions.one_of("r.branch_uuid", &uuids(&selection.branches));
        conditions.one_of("r.testbed_uuid", &uuids(&selection.testbeds));
        conditions.one_of("b.uuid", &uuids(&selection.benchmarks));
        conditions.one_of("ms.uuid", &uuids(&selection.measures));
        if !selection.specs.is_empty() {
            conditions.one_of("r.spec_uuid", &uuids(&selection.specs));
        }
        if let Some(start) = selection.start_time {
            conditions.push(
                &format!("{REPORT_TIME} >= ?"),
                vec![Bind::Int(to_millis(start))],
            );
        }
        if let Some(end) = selection.end_time {
            conditions.push(
                &format!("{REPORT_TIME} <= ?"),
                vec![Bind::Int(to_millis(end))],
            );
        }
        let from = detail_from("LEFT JOIN");
        let points = conditions.count(self, &from).await?;
        if points > max_points {
            return Err(PerfError::TooManyPoints {
                points,
                max: max_points,
            });
        }
        let sql = format!(
            "SELECT {DETAIL_COLUMNS} FROM {from}{} \
             ORDER BY {REPORT_TIME}, r.created, r.uuid, rb.iteration",
            conditions.where_clause()
        );
        let rows: Vec<DetailRow> = conditions
            .bind_all(sqlx::query_as(&sql))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from)?;
        rows.into_iter()
            .map(|row| {
                let detail = row.decode()?;
                Ok(PerfPoint {
                    branch: detail.branch.uuid,
                    testbed: detail.testbed.uuid,
                    benchmark: detail.benchmark.uuid,
                    measure: detail.measure.uuid,
                    point: JsonPerfPoint {
                        report: detail.report,
                        iteration: detail.iteration,
                        version: detail.version,
                        spec: detail.spec,
                        time: detail.time,
                        metric: detail.metric,
                        boundary: detail.boundary,
                        alert: detail.alert,
                    },
                })
            })
            .collect::<Result<_, StoreError>>()
            .map_err(PerfError::from)
    }

    /// One page of a project's alerts, newest first unless `Asc`.
    pub async fn list_alerts(
        &self,
        project: ProjectUuid,
        query: &AlertQuery,
        direction: Direction,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<JsonAlert>, u64), StoreError> {
        let mut conditions = Conditions::default();
        conditions.text("a.project_uuid = ?", project.to_string());
        if let Some(status) = query.status {
            conditions.text("a.status = ?", status.as_str());
        }
        let total = conditions.count(self, "alert a").await?;
        let d = sql_direction(direction);
        let n = conditions.next();
        let sql = format!(
            "SELECT {DETAIL_COLUMNS} FROM {}{} ORDER BY a.created {d}, a.uuid {d} \
             LIMIT ${n} OFFSET ${}",
            detail_from("JOIN"),
            conditions.where_clause(),
            n + 1
        );
        let rows: Vec<DetailRow> = conditions
            .bind_all(sqlx::query_as(&sql))
            .bind(i64::from(limit_offset.0))
            .bind(i64::try_from(limit_offset.1).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let alerts = rows
            .into_iter()
            .map(|row| row.decode()?.into_alert())
            .collect::<Result<_, _>>()?;
        Ok((alerts, total))
    }

    pub async fn get_alert(
        &self,
        project: ProjectUuid,
        alert: AlertUuid,
    ) -> Result<JsonAlert, StoreError> {
        let row: Option<DetailRow> = sqlx::query_as(&format!(
            "SELECT {DETAIL_COLUMNS} FROM {} WHERE a.uuid = $1 AND a.project_uuid = $2",
            detail_from("JOIN")
        ))
        .bind(alert.to_string())
        .bind(project.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::NotFound(format!("alert `{alert}`")))?
            .decode()?
            .into_alert()
    }

    /// Dismisses or re-activates an alert; setting the status it has changes nothing.
    pub async fn set_alert_status(
        &self,
        project: ProjectUuid,
        alert: AlertUuid,
        status: AlertStatus,
        now: DateTime<Utc>,
    ) -> Result<JsonAlert, StoreError> {
        // Conditional on the status changing, so `modified` says when it last changed.
        sqlx::query(
            "UPDATE alert SET status = $1, modified = $2 \
             WHERE uuid = $3 AND project_uuid = $4 AND status <> $1",
        )
        .bind(status.as_str())
        .bind(to_millis(now))
        .bind(alert.to_string())
        .bind(project.to_string())
        .execute(&self.pool)
        .await?;
        self.get_alert(project, alert).await
    }

    /// One page of a project's thresholds, oldest first unless `Desc`.
    pub async fn list_thresholds(
        &self,
        project: ProjectUuid,
        filter: &ThresholdFilter,
        direction: Direction,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<JsonThreshold>, u64), StoreError> {
        let mut conditions = Conditions::default();
        conditions.text("t.project_uuid = ?", project.to_string());
        for (uuid, column) in [
            (&filter.branch, "t.branch_uuid"),
            (&filter.testbed, "t.testbed_uuid"),
            (&filter.measure, "t.measure_uuid"),
        ] {
            if let Some(uuid) = uuid {
                conditions.text(&format!("{column} = ?"), uuid.clone());
            }
        }
        let total = conditions.count(self, THRESHOLD_FROM).await?;
        let d = sql_direction(direction);
        let n = conditions.next();
        let sql = format!(
            "SELECT {THRESHOLD_COLUMNS} FROM {THRESHOLD_FROM}{} ORDER BY t.created {d}, t.uuid {d} \
             LIMIT ${n} OFFSET ${}",
            conditions.where_clause(),
            n + 1
        );
        let rows: Vec<ThresholdRow> = conditions
            .bind_all(sqlx::query_as(&sql))
            .bind(i64::from(limit_offset.0))
            .bind(i64::try_from(limit_offset.1).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let thresholds = rows
            .into_iter()
            .map(ThresholdRow::into_json)
            .collect::<Result<_, _>>()?;
        Ok((thresholds, total))
    }

    pub async fn get_threshold(
        &self,
        project: ProjectUuid,
        threshold: ThresholdUuid,
    ) -> Result<JsonThreshold, StoreError> {
        let row: Option<ThresholdRow> = sqlx::query_as(&format!(
            "SELECT {THRESHOLD_COLUMNS} FROM {THRESHOLD_FROM} WHERE t.uuid = $1 AND t.project_uuid = $2"
        ))
        .bind(threshold.to_string())
        .bind(project.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::NotFound(format!("threshold `{threshold}`")))?
            .into_json()
    }

    /// Creates a threshold with its first model, in one transaction. The branch and
    /// testbed must exist; a built-in measure is created on first use. A second threshold
    /// on the same branch, testbed and measure is a conflict.
    pub async fn create_threshold(
        &self,
        new: &NewThreshold<'_>,
        now: DateTime<Utc>,
    ) -> Result<JsonThreshold, StoreError> {
        let mut tx = self.begin_write().await?;
        let branch = find_named(&mut tx, Named::Branch, new.project, new.branch)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("branch `{}`", new.branch)))?;
        let testbed = find_named(&mut tx, Named::Testbed, new.project, new.testbed)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("testbed `{}`", new.testbed)))?;
        let measure = find_or_create_measure(&mut tx, new.project, new.measure, now)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("measure `{}`", new.measure)))?;
        let uuid = uuid::Uuid::new_v4().to_string();
        let inserted = sqlx::query(
            "INSERT INTO threshold (uuid, project_uuid, branch_uuid, testbed_uuid, measure_uuid, \
             model_uuid, created, modified) VALUES ($1, $2, $3, $4, $5, NULL, $6, $6) \
             ON CONFLICT DO NOTHING",
        )
        .bind(uuid.clone())
        .bind(new.project.to_string())
        .bind(branch.uuid.to_string())
        .bind(testbed.uuid.to_string())
        .bind(measure.uuid.to_string())
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(StoreError::Conflict(format!(
                "branch `{}`, testbed `{}` and measure `{}` already have a threshold; update it instead",
                branch.slug, testbed.slug, measure.slug
            )));
        }
        insert_model(&mut tx, &uuid, &new.model, now).await?;
        tx.commit().await?;
        self.get_threshold(new.project, parse_column("threshold", "uuid", &uuid)?)
            .await
    }

    /// Replaces a threshold's model with a new version; the old one stays, `replaced`.
    pub async fn update_threshold(
        &self,
        project: ProjectUuid,
        threshold: ThresholdUuid,
        model: &NewModel,
        now: DateTime<Utc>,
    ) -> Result<JsonThreshold, StoreError> {
        let mut tx = self.begin_write().await?;
        let found: Option<String> =
            sqlx::query_scalar("SELECT uuid FROM threshold WHERE uuid = $1 AND project_uuid = $2")
                .bind(threshold.to_string())
                .bind(project.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let Some(uuid) = found else {
            tx.rollback().await?;
            return Err(StoreError::NotFound(format!("threshold `{threshold}`")));
        };
        insert_model(&mut tx, &uuid, model, now).await?;
        tx.commit().await?;
        self.get_threshold(project, threshold).await
    }

    /// Deletes a threshold with its models, and the boundaries and alerts they gave.
    pub async fn delete_threshold(
        &self,
        project: ProjectUuid,
        threshold: ThresholdUuid,
    ) -> Result<(), StoreError> {
        let deleted = sqlx::query("DELETE FROM threshold WHERE uuid = $1 AND project_uuid = $2")
            .bind(threshold.to_string())
            .bind(project.to_string())
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("threshold `{threshold}`")));
        }
        Ok(())
    }

    /// Every model version of a threshold, oldest first.
    pub async fn threshold_models(
        &self,
        threshold: ThresholdUuid,
    ) -> Result<Vec<JsonModel>, StoreError> {
        let rows: Vec<ModelRow> = sqlx::query_as(&format!(
            "SELECT {MODEL_COLUMNS} FROM model WHERE threshold_uuid = $1 ORDER BY created, uuid"
        ))
        .bind(threshold.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(model_json).collect()
    }

    /// One page of a project's measures.
    pub async fn list_measures(
        &self,
        project: ProjectUuid,
        pagination: &Pagination,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<JsonMeasure>, u64), StoreError> {
        let mut list = super::ListQuery::default();
        list.condition("project_uuid = ?", &[&project.to_string()]);
        let (rows, total) = self
            .fetch_page::<MeasureRow>(
                "measure",
                "uuid, project_uuid, name, slug, units, created, modified",
                &list,
                pagination,
                limit_offset,
            )
            .await?;
        let measures = rows
            .into_iter()
            .map(|row| {
                const T: &str = "measure";
                Ok(JsonMeasure {
                    uuid: parse_column(T, "uuid", &row.uuid)?,
                    project: parse_column(T, "project_uuid", &row.project_uuid)?,
                    name: row.name,
                    slug: row.slug,
                    units: row.units,
                    created: from_millis(T, row.created)?,
                    modified: from_millis(T, row.modified)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((measures, total))
    }

    /// One page of a project's benchmarks.
    pub async fn list_benchmarks(
        &self,
        project: ProjectUuid,
        pagination: &Pagination,
        limit_offset: (u32, u64),
    ) -> Result<(Vec<JsonBenchmark>, u64), StoreError> {
        let mut list = super::ListQuery::default();
        list.condition("project_uuid = ?", &[&project.to_string()]);
        let (rows, total) = self
            .fetch_page::<BenchmarkRow>(
                "benchmark",
                "uuid, project_uuid, name, slug, created, modified",
                &list,
                pagination,
                limit_offset,
            )
            .await?;
        let benchmarks = rows
            .into_iter()
            .map(|row| {
                const T: &str = "benchmark";
                Ok(JsonBenchmark {
                    uuid: parse_column(T, "uuid", &row.uuid)?,
                    project: parse_column(T, "project_uuid", &row.project_uuid)?,
                    name: row.name,
                    slug: row.slug,
                    created: from_millis(T, row.created)?,
                    modified: from_millis(T, row.modified)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((benchmarks, total))
    }
}

/// Groups perf points into one series per branch × testbed × benchmark × measure, in
/// the order of the selection's lists; points keep their (time) order.
pub fn group_perf(
    selection: &PerfSelection,
    points: Vec<PerfPoint>,
) -> Vec<bencher_types::JsonPerfSeries> {
    let mut series = Vec::new();
    let mut index = HashMap::new();
    for branch in &selection.branches {
        for testbed in &selection.testbeds {
            for benchmark in &selection.benchmarks {
                for measure in &selection.measures {
                    index.insert(
                        (branch.uuid, testbed.uuid, benchmark.uuid, measure.uuid),
                        series.len(),
                    );
                    series.push(bencher_types::JsonPerfSeries {
                        branch: branch.clone(),
                        testbed: testbed.clone(),
                        benchmark: benchmark.clone(),
                        measure: measure.clone(),
                        metrics: Vec::new(),
                    });
                }
            }
        }
    }
    for point in points {
        if let Some(&i) = index.get(&(point.branch, point.testbed, point.benchmark, point.measure))
        {
            series[i].metrics.push(point.point);
        }
    }
    series
}

/// Which sort keys the report, alert and threshold lists accept: time only.
pub fn created_only(pagination: &Pagination) -> Result<(), String> {
    if pagination.sort == Some(SortBy::Name) {
        return Err("this list has no names to sort by: sort it by `created`".into());
    }
    Ok(())
}
