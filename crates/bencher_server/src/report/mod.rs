//! Results become Reports: a job's stored output is parsed with its adapter
//! (`crate::adapter`), joined by what the runner measured when the job asked for it
//! (`build-time`, `file-size`; see [`Measures`]), folded when asked, written as
//! metrics, and each metric is checked
//! against the thresholds of its branch, testbed and measure (`crate::threshold`) over
//! the history of the same benchmark on the same Spec; a value past a limit raises an
//! alert. IO: the store and blob storage (the stored output); `metrics_of` is pure.
//!
//! Processing happens after the runner's terminal message is acknowledged, in a
//! background task woken when a job completes and every [`RESCAN`] (which also finds
//! jobs completed before a restart or on another server process). Everything a report
//! gets is written in one transaction with the job's `completed → processed`, so a crash
//! midway leaves nothing and the next pass writes the same report again; a second
//! process racing for the same job writes nothing.

use std::time::Duration;

use bencher_types::protocol::{IterationResult, JobConfig};
use bencher_types::{
    Adapter, DEFAULT_BRANCH, DEFAULT_TESTBED, Fold, JobUuid, JsonNewResults, JsonResultsReport,
    ProjectUuid, ResourceName,
};
use chrono::{DateTime, TimeDelta, Utc};

use crate::adapter::{self, AdapterResults, BenchmarkName, MAX_BENCHMARK_NAME_LEN, Metric};
use crate::blobs::BlobStore;
use crate::channel::Hub;
use crate::channel::output::{OutputDocument, OutputError, read_output};
use crate::clock::Clock;
use crate::http::error::error_chain;
use crate::queue::JobEvent;
use crate::store::jobs::{CreateRunError, JobChange, ReportShell, TransitionError};
use crate::store::report_queries::RunThreshold;
use crate::store::reports::{
    self, HistoryPlace, HistoryQuery, JobReport, NewBoundary, NewMetric, ReportWrite,
    ThresholdModel,
};
use crate::store::{Store, StoreError};
use crate::threshold::{self, Model, ModelParameters, Outcome, Side};

/// How often the task looks for completed jobs when nothing wakes it.
pub const RESCAN: Duration = Duration::from_secs(30);

/// Benchmarks whose name ends with this are recorded but never alert.
pub const IGNORE_SUFFIX: &str = "-bencher-ignore";

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read the job's output")]
    Output(#[from] OutputError),
    #[error("cannot record the job's failure")]
    Transition(#[source] TransitionError),
    #[error("the job's stored configuration is unreadable")]
    Config(#[source] serde_json::Error),
}

/// What processing did with one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Processed {
    /// Its report has `metrics` metrics and raised `alerts` alerts.
    Report { metrics: usize, alerts: usize },
    /// Its output could not be parsed; the job is `failed` with this message.
    Failed(String),
    /// Not `completed` (any more): processed elsewhere, or never finished.
    Skipped,
}

/// Runs until aborted: processes every completed job, then waits for a wake-up or
/// [`RESCAN`].
pub(crate) async fn process_forever(
    store: Store,
    blobs: BlobStore,
    clock: Clock,
    hub: Hub,
    max_output_size: u64,
) {
    loop {
        match store.completed_jobs().await {
            Ok(jobs) => {
                for job in jobs {
                    if let Err(error) =
                        process_job(&store, &blobs, &clock, job, max_output_size).await
                    {
                        // Left `completed`: the next pass retries.
                        tracing::warn!(%job, error = %error_chain(&error), "processing a job's results failed");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot list completed jobs");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RESCAN) => {}
            () = hub.reports_woken() => {}
        }
    }
}

/// Processes one completed job's output into its report.
pub async fn process_job(
    store: &Store,
    blobs: &BlobStore,
    clock: &Clock,
    job: JobUuid,
    max_output_size: u64,
) -> Result<Processed, ProcessError> {
    let Some(report) = store.job_report(job).await? else {
        return Ok(Processed::Skipped);
    };
    let Some(digest) = report.output_digest.as_deref() else {
        return fail(
            store,
            clock,
            job,
            "the job completed without output".to_owned(),
        )
        .await;
    };
    let Some(output) = read_output(blobs, digest, max_output_size).await? else {
        return fail(
            store,
            clock,
            job,
            format!("the job's output `{digest}` is missing"),
        )
        .await;
    };
    let config: JobConfig = serde_json::from_str(&report.config).map_err(ProcessError::Config)?;
    let settings = Settings::of(&report);
    let files = config.file_paths.as_deref().unwrap_or_default();
    let measures = Measures::of(&config);
    let metrics = match metrics_of(&settings, files, &measures, &output) {
        Ok(metrics) => metrics,
        Err(message) => return fail(store, clock, job, message).await,
    };
    let report_time = report.ended.unwrap_or(report.created);
    let place = Place {
        report: &report.report,
        branch: &report.branch,
        testbed: &report.testbed,
        spec: &report.spec,
        head: report.head.as_deref(),
    };
    let (boundaries, environment_changed) = {
        let mut conn = store.connection().await?;
        let boundaries = boundaries(&mut conn, &place, report_time, &metrics.metrics).await?;
        let changed = match (report.environment.as_deref(), report.head.as_deref()) {
            (Some(environment), Some(head)) => {
                let baseline = reports::baseline_environment(
                    &mut conn,
                    &HistoryPlace {
                        report: &report.report,
                        head,
                        testbed: &report.testbed,
                        spec: &report.spec,
                    },
                    report_time,
                )
                .await?;
                baseline.and_then(|baseline| environment_changed(&baseline, environment))
            }
            _ => None,
        };
        (boundaries, changed)
    };
    let alerts = boundaries.iter().filter(|b| b.alert.is_some()).count();
    let written = store
        .write_report(
            &ReportWrite {
                report: &report.report,
                project: report.project,
                job: Some(job),
                start_time: report.started,
                end_time: report.ended,
                iterations: metrics.iterations,
                metrics: &metrics.metrics,
                boundaries: &boundaries,
                environment: report.environment.as_deref(),
                environment_changed,
            },
            clock.now(),
        )
        .await?;
    if !written {
        return Ok(Processed::Skipped);
    }
    tracing::info!(
        %job, report = %report.report, adapter = %metrics.adapter,
        metrics = metrics.metrics.len(), alerts, "report processed"
    );
    Ok(Processed::Report {
        metrics: metrics.metrics.len(),
        alerts,
    })
}

/// Why submitted results did not become a report. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The results cannot be read: the client's mistake, with the adapter's message.
    #[error("{0}")]
    Unreadable(String),
    #[error(transparent)]
    Place(#[from] CreateRunError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Turns results submitted directly (a local `bencher run`) into a report, in one
/// transaction: parsed and folded like a job's output, checked against the thresholds.
pub async fn report_results(
    store: &Store,
    clock: &Clock,
    project: ProjectUuid,
    new: &JsonNewResults,
    thresholds: &[RunThreshold],
) -> Result<JsonResultsReport, ResultsError> {
    let settings = Settings {
        adapter: new.adapter,
        fold: new.fold,
    };
    // The same shape as a job's output, so the same code reads both (lengths were
    // checked by `JsonNewResults::validate`).
    let output = OutputDocument {
        results: new
            .results
            .iter()
            .enumerate()
            .map(|(i, text)| IterationResult {
                exit_code: 0,
                stdout: Some(text.clone()),
                build_time_ns: new
                    .build_time
                    .as_ref()
                    .and_then(|b| b.iterations_ns.get(i).copied()),
                file_sizes: new
                    .file_size
                    .as_ref()
                    .and_then(|f| f.iterations.get(i).cloned()),
                ..IterationResult::default()
            })
            .collect(),
        error: None,
    };
    let measures = Measures {
        build_time: new
            .build_time
            .as_ref()
            .map(|b| Measures::command_name(&b.command).unwrap_or_else(|| "command".to_owned())),
        file_size: new.file_size.is_some(),
    };
    let files = new
        .file_size
        .as_ref()
        .map_or(&[][..], |f| f.paths.as_slice());
    // Parsed before anything is written: unreadable results write nothing.
    let metrics =
        metrics_of(&settings, files, &measures, &output).map_err(ResultsError::Unreadable)?;
    let (branch, testbed) = (
        new.branch
            .clone()
            .unwrap_or_else(|| default_name(DEFAULT_BRANCH)),
        new.testbed
            .clone()
            .unwrap_or_else(|| default_name(DEFAULT_TESTBED)),
    );
    let now = clock.now();
    let shell = ReportShell {
        project,
        branch: &branch,
        testbed: &testbed,
        spec: new.spec.as_ref(),
        adapter: Some(metrics.adapter),
        hash: new.hash.as_ref(),
        fold: new.fold,
        job: None,
        thresholds,
    };
    let mut local = store.begin_local_report(&shell, now).await?;
    let placed = local.placed.clone();
    let spec = placed.spec.uuid.to_string();
    let place = Place {
        report: &placed.report,
        branch: &placed.branch,
        testbed: &placed.testbed,
        spec: &spec,
        head: Some(&placed.head),
    };
    let boundaries = boundaries(local.connection(), &place, new.end_time, &metrics.metrics).await?;
    let report = local.placed.report.clone();
    let alerts = boundaries.iter().filter(|b| b.alert.is_some()).count();
    local
        .finish(
            &ReportWrite {
                report: &report,
                project,
                job: None,
                start_time: Some(new.start_time),
                end_time: Some(new.end_time),
                iterations: metrics.iterations,
                metrics: &metrics.metrics,
                boundaries: &boundaries,
                environment: None,
                environment_changed: None,
            },
            now,
        )
        .await?;
    Ok(JsonResultsReport {
        report: report
            .parse()
            .map_err(|e| StoreError::corrupt("report", format!("uuid `{report}`: {e}")))?,
        adapter: metrics.adapter,
        iterations: metrics.iterations,
        metrics: metrics.metrics.len() as u64,
        alerts: alerts as u64,
    })
}

/// A default branch or testbed name; both are valid names.
fn default_name(name: &str) -> ResourceName {
    name.parse()
        .expect("the default branch and testbed names are valid")
}

/// `completed → failed` with the reason; a job no longer `completed` is left alone.
async fn fail(
    store: &Store,
    clock: &Clock,
    job: JobUuid,
    message: String,
) -> Result<Processed, ProcessError> {
    let change = JobChange {
        error: Some(message.clone()),
        ..JobChange::default()
    };
    match store
        .transition_job(job, JobEvent::ProcessingFailed, &change, clock.now())
        .await
    {
        Ok(_) => {
            tracing::warn!(%job, error = %message, "the job's output cannot be turned into a report");
            Ok(Processed::Failed(message))
        }
        Err(TransitionError::Invalid(_) | TransitionError::NotFound(_)) => Ok(Processed::Skipped),
        Err(error) => Err(ProcessError::Transition(error)),
    }
}

/// How a report's results are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `None`: `magic`.
    pub adapter: Option<Adapter>,
    pub fold: Option<Fold>,
}

impl Settings {
    fn of(report: &JobReport) -> Self {
        Self {
            // Stored values were validated on the way in; an unknown one reads as magic.
            adapter: report.adapter.as_deref().and_then(|a| a.parse().ok()),
            fold: report.fold.as_deref().and_then(|f| f.parse().ok()),
        }
    }
}

/// A job's results as metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    /// The adapter that parsed them (the one `magic` chose, with `magic`).
    pub adapter: Adapter,
    /// Iterations recorded: 1 when folded.
    pub iterations: u32,
    pub metrics: Vec<NewMetric>,
}

/// The measure slug of a command's wall time, in seconds.
pub const BUILD_TIME: &str = "build-time";
/// The measure slug of an output file's size, in bytes.
pub const FILE_SIZE: &str = "file-size";

/// What the runner measured for a job besides its output, as the job asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measures {
    /// `build_time`: each iteration's `build_time_ns` becomes a `build-time` metric
    /// (seconds) of this benchmark (see [`Measures::command_benchmark`]).
    pub build_time: Option<String>,
    /// `file_size`: each of the job's `file_paths` becomes a `file-size` metric (bytes)
    /// of a benchmark named after the path, and the files are not parsed (results, if
    /// any, are on stdout).
    pub file_size: bool,
}

impl Measures {
    pub fn of(config: &JobConfig) -> Self {
        Self {
            build_time: (config.build_time == Some(true)).then(|| Self::command_benchmark(config)),
            file_size: config.file_size == Some(true),
        }
    }

    fn any(&self) -> bool {
        self.build_time.is_some() || self.file_size
    }

    /// The benchmark a job's build time is recorded under: the command as the job gave
    /// it (entrypoint then cmd, joined by spaces), which stays the same from commit to
    /// commit where an image tag would not; for a job that runs the image's own
    /// command, the image's repository (its reference without tag or digest), else its
    /// digest. Control characters become spaces and the name is cut to the benchmark
    /// name limit, so every job gets a valid, stable name.
    pub fn command_benchmark(config: &JobConfig) -> String {
        if let Some(command) =
            Self::command_name(config.entrypoint.iter().chain(config.cmd.iter()).flatten())
        {
            return command;
        }
        let repository = config.image.as_deref().map(|image| {
            let image = image.split_once('@').map_or(image, |(name, _)| name);
            // A tag is a last `:` after the last `/` (before it, a `:` is a port).
            match image.rfind(':') {
                Some(colon) if !image[colon..].contains('/') => &image[..colon],
                _ => image,
            }
        });
        match repository.map(benchmark_name_of) {
            Some(name) if !name.trim().is_empty() => name,
            _ => benchmark_name_of(&config.digest),
        }
    }

    /// A command's words joined by spaces as a benchmark name; `None` when blank.
    pub fn command_name<'a>(command: impl IntoIterator<Item = &'a String>) -> Option<String> {
        let words: Vec<&str> = command.into_iter().map(String::as_str).collect();
        let name = benchmark_name_of(&words.join(" "));
        (!name.trim().is_empty()).then_some(name)
    }
}

/// Whether a report's environment (`completed.environment` JSON) was measured on another
/// machine state than its baseline's: their `fingerprint`s differ. The noise figures
/// are not compared (they vary from run to run by nature). `None` when either cannot be
/// read, so a mark is never made up.
pub fn environment_changed(baseline: &str, environment: &str) -> Option<bool> {
    let fingerprint = |text: &str| {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|mut value| value.get_mut("fingerprint").map(serde_json::Value::take))
    };
    Some(fingerprint(baseline)? != fingerprint(environment)?)
}

/// `text` as a valid benchmark name: control characters become spaces, cut to
/// [`MAX_BENCHMARK_NAME_LEN`] characters.
fn benchmark_name_of(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_BENCHMARK_NAME_LEN)
        .collect()
}

/// Parses every successful iteration's results: the output files when the job names
/// some and does not measure their sizes (each parsed on its own, then merged), else
/// stdout; then adds what the runner measured (`measures`). Iterations that failed
/// (kept by `allow_failure`) are left out; a job with none left, whose output the
/// adapter cannot read, or with nothing at all to report, gets the reason as an error.
/// Empty output is results only for a job with measures: a build has nothing to print.
pub fn metrics_of(
    settings: &Settings,
    files: &[String],
    measures: &Measures,
    output: &OutputDocument,
) -> Result<Metrics, String> {
    let succeeded: Vec<(usize, &IterationResult)> = output
        .results
        .iter()
        .enumerate()
        .filter(|(_, result)| result.exit_code == 0)
        .collect();
    if succeeded.is_empty() {
        return Err(format!(
            "no iteration succeeded ({} ran), so there are no results to report",
            output.results.len()
        ));
    }
    let mut used = settings.adapter.unwrap_or(Adapter::Magic);
    let mut parsed = Vec::with_capacity(succeeded.len());
    for (index, result) in &succeeded {
        let texts: Vec<(String, &str)> = if files.is_empty() || measures.file_size {
            vec![(
                "stdout".to_owned(),
                result.stdout.as_deref().unwrap_or_default(),
            )]
        } else {
            files
                .iter()
                .map(|path| {
                    let text = result
                        .output
                        .as_ref()
                        .and_then(|files| files.get(path))
                        .ok_or_else(|| {
                            format!(
                                "iteration {}: output file `{path}` was not collected",
                                index + 1
                            )
                        })?;
                    Ok((format!("`{path}`"), text.as_str()))
                })
                .collect::<Result<_, String>>()?
        };
        let mut merged: Option<AdapterResults> = None;
        for (source, text) in texts {
            if measures.any() && text.trim().is_empty() {
                continue;
            }
            let (adapter, results) = parse(settings.adapter, text).map_err(|e| {
                let hint = if measures.any() {
                    " (the job measures build-time or file-size; its stdout must be empty \
                     or benchmark output: send other output to stderr)"
                } else {
                    ""
                };
                format!("iteration {}, {source}: {e}{hint}", index + 1)
            })?;
            used = adapter;
            merged = Some(match merged {
                None => results,
                Some(earlier) => merge(earlier, results).map_err(|benchmark| {
                    format!(
                        "iteration {}: benchmark `{benchmark}` appears in more than one output file",
                        index + 1
                    )
                })?,
            });
        }
        let measured = add_measures(merged.unwrap_or_default(), files, measures, result)
            .map_err(|e| format!("iteration {}: {e}", index + 1))?;
        parsed.push(measured);
    }
    if parsed.iter().all(AdapterResults::is_empty) {
        return Err(
            "the job's output is empty and it measured nothing, so there are no results to report"
                .to_owned(),
        );
    }
    let (iterations, parsed) = match settings.fold {
        Some(how) => (vec![0], vec![adapter::fold(&parsed, how)]),
        None => ((0..parsed.len()).collect(), parsed),
    };
    let recorded = u32::try_from(iterations.len()).unwrap_or(u32::MAX);
    let mut metrics = Vec::new();
    for (iteration, results) in iterations.into_iter().zip(parsed) {
        for (benchmark, measures) in results.into_inner() {
            for (measure, metric) in measures {
                metrics.push(NewMetric {
                    iteration: u32::try_from(iteration).unwrap_or(u32::MAX),
                    benchmark: benchmark.as_str().to_owned(),
                    measure: measure.to_string(),
                    value: metric.value(),
                    lower_value: metric.lower_value(),
                    upper_value: metric.upper_value(),
                });
            }
        }
    }
    Ok(Metrics {
        adapter: used,
        iterations: recorded,
        metrics,
    })
}

fn parse(
    adapter: Option<Adapter>,
    text: &str,
) -> Result<(Adapter, AdapterResults), adapter::AdapterError> {
    match adapter.unwrap_or(Adapter::Magic) {
        Adapter::Magic => adapter::magic(text),
        adapter => adapter::parse(adapter, text).map(|results| (adapter, results)),
    }
}

/// One iteration's results with its `build-time` and `file-size` metrics added.
fn add_measures(
    results: AdapterResults,
    files: &[String],
    measures: &Measures,
    result: &IterationResult,
) -> Result<AdapterResults, String> {
    if !measures.any() {
        return Ok(results);
    }
    let mut all = results.into_inner();
    let mut add = |benchmark: &str, measure: &str, value: f64| -> Result<(), String> {
        let name = BenchmarkName::new(&benchmark_name_of(benchmark))
            .map_err(|e| format!("`{benchmark}`: {e}"))?;
        let slug = measure
            .parse()
            .map_err(|e| format!("measure `{measure}`: {e}"))?;
        let metric =
            Metric::new(value, None, None).map_err(|e| format!("`{benchmark}` {measure}: {e}"))?;
        if all.entry(name).or_default().insert(slug, metric).is_some() {
            return Err(format!(
                "benchmark `{benchmark}` has a `{measure}` metric twice (from the output and \
                 from the measure, or from two file paths)"
            ));
        }
        Ok(())
    };
    if let Some(benchmark) = &measures.build_time {
        // An older runner (or another implementation) that ignores `build_time` sends
        // none: the job fails rather than silently lack what it asked for.
        let nanos = result.build_time_ns.ok_or(
            "the job asked for build-time but the runner sent no build time \
             (`build_time_ns`); the runner predates it: update the runner",
        )?;
        add(benchmark, BUILD_TIME, nanos as f64 / 1e9)?;
    }
    if measures.file_size {
        let sizes = result.file_sizes.as_ref().ok_or(
            "the job asked for file-size but the runner sent no file sizes \
             (`file_sizes`); the runner predates it: update the runner",
        )?;
        for path in files {
            let size = sizes.get(path).ok_or_else(|| {
                format!("output file `{path}` does not exist, so its size cannot be reported")
            })?;
            add(path, FILE_SIZE, *size as f64)?;
        }
    }
    Ok(AdapterResults::from(all))
}

/// Two files' results as one; `Err(benchmark)` when both name a benchmark.
fn merge(earlier: AdapterResults, later: AdapterResults) -> Result<AdapterResults, String> {
    let mut all = earlier.into_inner();
    for (benchmark, measures) in later.into_inner() {
        if all.contains_key(&benchmark) {
            return Err(benchmark.as_str().to_owned());
        }
        all.insert(benchmark, measures);
    }
    Ok(AdapterResults::from(all))
}

/// Where a report sits: what its metrics are compared within.
struct Place<'a> {
    report: &'a str,
    branch: &'a str,
    testbed: &'a str,
    spec: &'a str,
    /// `None` for reports made before heads existed: no history to compare with.
    head: Option<&'a str>,
}

/// Checks every metric against the thresholds of its measure on the report's branch and
/// testbed.
async fn boundaries(
    conn: &mut sqlx::AnyConnection,
    report: &Place<'_>,
    report_time: DateTime<Utc>,
    metrics: &[NewMetric],
) -> Result<Vec<NewBoundary>, StoreError> {
    let Some(head) = report.head else {
        return Ok(Vec::new());
    };
    let thresholds = reports::thresholds_for(conn, report.branch, report.testbed).await?;
    let mut boundaries = Vec::new();
    for (index, metric) in metrics.iter().enumerate() {
        for threshold in thresholds
            .iter()
            .filter(|t| t.measure_slug == metric.measure)
        {
            let Some(model) = model_of(threshold) else {
                continue;
            };
            let since = model
                .window()
                .map(|seconds| report_time - TimeDelta::seconds(seconds.into()));
            let mut history: Vec<f64> = reports::history(
                conn,
                &HistoryQuery {
                    head,
                    testbed: report.testbed,
                    spec: report.spec,
                    benchmark: &metric.benchmark,
                    measure: &metric.measure,
                    before: report_time,
                    since,
                    limit: model.max_sample_size(),
                    exclude_report: report.report,
                },
            )
            .await?
            .into_iter()
            .map(|(_, value)| value)
            .collect();
            history.reverse();
            let boundary = match threshold::boundary(&model, &history, metric.value) {
                Ok(boundary) => boundary,
                Err(error) => {
                    tracing::warn!(benchmark = %metric.benchmark, %error, "a metric cannot be checked");
                    continue;
                }
            };
            let ignored = metric.benchmark.ends_with(IGNORE_SUFFIX);
            let alert = match boundary.outcome {
                Outcome::Alert { side, .. } if !ignored => Some(match side {
                    Side::Lower => "lower",
                    Side::Upper => "upper",
                }),
                _ => None,
            };
            boundaries.push(NewBoundary {
                metric: index,
                threshold: threshold.threshold.clone(),
                model: threshold.model.clone(),
                baseline: boundary.baseline,
                lower_limit: boundary.lower_limit,
                upper_limit: boundary.upper_limit,
                alert,
            });
        }
    }
    Ok(boundaries)
}

/// A stored model, validated again (it was on the way in); an invalid one is skipped
/// with a warning rather than failing every report of the branch.
fn model_of(threshold: &ThresholdModel) -> Option<Model> {
    let parameters = ModelParameters {
        test: threshold::Test::from_name(&threshold.test)?,
        min_sample_size: threshold.min_sample_size,
        max_sample_size: threshold.max_sample_size,
        window: threshold.window_seconds.and_then(|w| u32::try_from(w).ok()),
        lower_boundary: threshold.lower_boundary,
        upper_boundary: threshold.upper_boundary,
    };
    match Model::new(parameters) {
        Ok(model) => Some(model),
        Err(error) => {
            tracing::warn!(threshold = %threshold.threshold, %error, "skipping an invalid stored threshold model");
            None
        }
    }
}

#[cfg(test)]
mod tests;
