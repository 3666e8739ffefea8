//! `bencher run --image REF … -- CMD…`: submit a benchmark as a job for a runner, then
//! follow it until its report is made and print each iteration's output and the report
//! against its thresholds; or, with `--detach`, print the job and leave. Ctrl-C while
//! following cancels the job. Without `--image` the command runs here and its output is
//! reported. `--err` makes an alert fail the command. IO: the API through the client,
//! the local command, stdout/stderr, the clock, SIGINT.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{BuildHasher as _, RandomState};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bencher_client::ClientError;
use bencher_types::{
    Adapter, Fold, GitHash, Iterations, JobStatus, JobTimeout, JobUuid, JsonJob,
    JsonLocalBuildTime, JsonLocalFileSize, JsonNewJob, JsonNewResults, JsonNewRun, JsonReport,
    JsonRunThreshold, ResourceId, ResourceName, ThresholdTest,
};
use clap::Args;
use clap::error::ErrorKind;
use futures_util::FutureExt as _;

use crate::cli::Context;
use crate::job;
use crate::output::{self, Format};

/// Bounds of `--job-poll-interval`, in seconds: at most one poll a second per follower,
/// and never so slow that a finished job goes unnoticed for more than ten minutes.
const POLL_INTERVAL_SECS: std::ops::RangeInclusive<u64> = 1..=600;
/// While a job waits for a runner nothing else can change, so polls slow down by half
/// again each time, up to this (or the interval, if that is longer).
const PENDING_MAX_WAIT: Duration = Duration::from_secs(10);
/// Transient failures back off exponentially up to this.
const ERROR_MAX_WAIT: Duration = Duration::from_secs(30);
/// Consecutive transient failures before giving up on following (about four minutes).
const MAX_FAILURES: u32 = 10;
/// A `Retry-After` is honoured up to this; a proxy asking for hours would leave the
/// terminal looking hung.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RunArgs {
    /// Image in the project's repository on this server: `<project>:<tag>`,
    /// `HOST:PORT/<project>:<tag>` or `…@sha256:…` (push it with `bencher image push`).
    /// Without it the command after `--` runs here, and its output is reported.
    #[arg(long, value_name = "REF", requires = "project")]
    pub image: Option<String>,
    /// UUID or slug of the project
    #[arg(long, env = "BENCHER_PROJECT")]
    pub project: Option<ResourceId>,
    /// Name, slug or UUID of the branch; a new name creates it [default: main]
    #[arg(long)]
    pub branch: Option<ResourceName>,
    /// Name, slug or UUID of the testbed; a new name creates it [default: localhost]
    #[arg(long)]
    pub testbed: Option<ResourceName>,
    /// UUID or slug of the Spec to run on [default: the testbed's, else the fallback]
    #[arg(long)]
    pub spec: Option<ResourceId>,
    /// Adapter that parses the output into metrics, such as `json`
    #[arg(long)]
    pub adapter: Option<Adapter>,
    /// Git commit of the benchmarked code; a re-run of a commit reuses its version
    #[arg(long)]
    pub hash: Option<GitHash>,
    /// Fold the iterations into one result per benchmark: min, max, mean or median
    #[arg(long)]
    pub fold: Option<Fold>,
    /// Overrides the image's entrypoint; repeat it for more items
    /// (`--entrypoint /bin/sh --entrypoint -c`)
    #[arg(long, value_name = "E", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// An environment variable for the benchmark; repeatable. The API never shows the
    /// value again (but a shell history or process list may).
    #[arg(long, value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Seconds the whole job may take, every iteration included [default: 3600]
    #[arg(long, value_name = "SECS")]
    pub job_timeout: Option<JobTimeout>,
    /// Seconds between status checks while following the job (slower while it waits
    /// for a runner)
    #[arg(
        long,
        value_name = "SECS",
        default_value = "1",
        value_parser = parse_poll_interval,
        conflicts_with = "detach"
    )]
    pub job_poll_interval: Duration,
    /// Print the submitted job and exit instead of following it
    #[arg(long)]
    pub detach: bool,
    /// How many times the command runs [default: 1]
    #[arg(long, value_name = "N")]
    pub iter: Option<Iterations>,
    /// A file the benchmark writes, collected as output; repeatable
    #[arg(long, value_name = "PATH")]
    pub file: Vec<String>,
    /// Let the job succeed even when the command exits non-zero
    #[arg(long)]
    pub allow_failure: bool,
    /// Report the command's run time as a build-time metric
    #[arg(long)]
    pub build_time: bool,
    /// Report the sizes of the --file paths as a file-size metric
    #[arg(long)]
    pub file_size: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// Exit non-zero when the report raises an alert
    #[arg(long)]
    pub err: bool,
    /// Overrides the image's command: everything after `--`
    #[arg(last = true, value_name = "CMD")]
    pub cmd: Vec<String>,
}

/// `--threshold-*`: thresholds the run sets for its branch and testbed before its report
/// is compared (created, or given a new model version when different). Repeatable: the
/// n-th of each option belongs to the n-th `--threshold-measure`; `_` leaves one unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct ThresholdArgs {
    /// Measure of a threshold (name, slug or UUID); repeatable
    #[arg(long = "threshold-measure", value_name = "MEASURE")]
    pub measure: Vec<String>,
    /// Its test: static, percentage, z_score, t_test, log_normal, iqr or delta_iqr
    #[arg(long = "threshold-test", value_name = "TEST")]
    pub test: Vec<String>,
    /// Its minimum history size, or `_`
    #[arg(long = "threshold-min-sample-size", value_name = "N")]
    pub min_sample_size: Vec<String>,
    /// Its maximum history size, or `_`
    #[arg(long = "threshold-max-sample-size", value_name = "N")]
    pub max_sample_size: Vec<String>,
    /// Its history window in seconds, or `_`
    #[arg(long = "threshold-window", value_name = "SECONDS")]
    pub window: Vec<String>,
    /// Its lower boundary, or `_`
    #[arg(long = "threshold-lower-boundary", value_name = "X")]
    pub lower_boundary: Vec<String>,
    /// Its upper boundary, or `_`
    #[arg(long = "threshold-upper-boundary", value_name = "X")]
    pub upper_boundary: Vec<String>,
}

impl ThresholdArgs {
    /// The thresholds, or why the options do not line up.
    fn to_json(&self) -> Result<Vec<JsonRunThreshold>, String> {
        let count = self.measure.len();
        let lined_up = |flag: &str, values: &[String], required: bool| {
            if values.len() == count || (!required && values.is_empty()) {
                Ok(())
            } else {
                Err(format!(
                    "{flag} is given {} times for {count} --threshold-measure; give it once per measure{}",
                    values.len(),
                    if required {
                        ""
                    } else {
                        " (`_` leaves one unset)"
                    }
                ))
            }
        };
        lined_up("--threshold-test", &self.test, true)?;
        lined_up("--threshold-min-sample-size", &self.min_sample_size, false)?;
        lined_up("--threshold-max-sample-size", &self.max_sample_size, false)?;
        lined_up("--threshold-window", &self.window, false)?;
        lined_up("--threshold-lower-boundary", &self.lower_boundary, false)?;
        lined_up("--threshold-upper-boundary", &self.upper_boundary, false)?;
        let thresholds = (0..count)
            .map(|i| {
                let measure = self.measure[i]
                    .parse::<ResourceName>()
                    .map_err(|e| format!("--threshold-measure `{}`: {e}", self.measure[i]))?;
                let test = self.test[i]
                    .parse::<ThresholdTest>()
                    .map_err(|e| format!("--threshold-test: {e}"))?;
                Ok(JsonRunThreshold {
                    measure,
                    test,
                    min_sample_size: nth("--threshold-min-sample-size", &self.min_sample_size, i)?,
                    max_sample_size: nth("--threshold-max-sample-size", &self.max_sample_size, i)?,
                    window: nth("--threshold-window", &self.window, i)?,
                    lower_boundary: nth("--threshold-lower-boundary", &self.lower_boundary, i)?,
                    upper_boundary: nth("--threshold-upper-boundary", &self.upper_boundary, i)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        JsonRunThreshold::validate_all(&thresholds)?;
        Ok(thresholds)
    }
}

/// The `i`-th value of a repeatable `--threshold-*` option: absent or `_` is unset.
fn nth<T: std::str::FromStr>(flag: &str, values: &[String], i: usize) -> Result<Option<T>, String>
where
    T::Err: fmt::Display,
{
    match values.get(i).map(|v| v.trim()) {
        None | Some("_") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|e| format!("{flag} `{text}`: {e}")),
    }
}

/// `K=V`, split at the first `=` (values may contain more).
fn parse_env(text: &str) -> Result<(String, String), String> {
    let Some((name, value)) = text.split_once('=') else {
        return Err(format!(
            "`{}` has no `=`: write NAME=VALUE (use NAME= for an empty value)",
            text.escape_debug()
        ));
    };
    if name.is_empty() {
        return Err("the variable name before `=` is empty".to_owned());
    }
    if text.contains('\0') {
        return Err("environment variables cannot contain NUL characters".to_owned());
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn parse_poll_interval(text: &str) -> Result<Duration, String> {
    let (low, high) = (POLL_INTERVAL_SECS.start(), POLL_INTERVAL_SECS.end());
    match text.trim().parse::<u64>() {
        Ok(secs) if POLL_INTERVAL_SECS.contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "the poll interval must be a whole number of seconds between {low} and {high}, got `{text}`"
        )),
    }
}

/// A command-line mistake found after clap: printed like clap's own, exit status 2.
fn usage_error(message: &str) -> ! {
    clap::Error::raw(ErrorKind::ValueValidation, format!("{message}\n")).exit()
}

impl RunArgs {
    /// The request body, or why the command line cannot make one (a usage error: nothing
    /// was sent).
    fn into_body(self) -> Result<(JsonNewRun, FollowArgs), String> {
        let Some(image) = self.image else {
            return Err("a job on a runner needs --image".to_owned());
        };
        // clap's `requires` makes --image need --project (flag or BENCHER_PROJECT).
        let Some(project) = self.project else {
            return Err("--image needs --project (or BENCHER_PROJECT)".to_owned());
        };
        let mut env = BTreeMap::new();
        for (name, value) in self.env {
            if env.insert(name.clone(), value).is_some() {
                // Last-one-wins would silently drop a value the user typed.
                return Err(format!("--env {name} is given more than once"));
            }
        }
        let job = JsonNewJob {
            image,
            spec: self.spec,
            entrypoint: (!self.entrypoint.is_empty()).then_some(self.entrypoint),
            cmd: (!self.cmd.is_empty()).then_some(self.cmd),
            env: (!env.is_empty()).then_some(env),
            timeout: self.job_timeout,
            file_paths: (!self.file.is_empty()).then_some(self.file),
            build_time: self.build_time.then_some(true),
            file_size: self.file_size.then_some(true),
            iter: self.iter,
            allow_failure: self.allow_failure.then_some(true),
        };
        job.validate()?;
        let thresholds = self.thresholds.to_json()?;
        let follow = FollowArgs {
            project: project.clone(),
            interval: self.job_poll_interval,
            detach: self.detach,
            err: self.err,
        };
        let body = JsonNewRun {
            project,
            branch: self.branch,
            testbed: self.testbed,
            adapter: self.adapter,
            hash: self.hash,
            fold: self.fold,
            thresholds,
            job,
        };
        Ok((body, follow))
    }
}

/// `bencher run -- CMD` without `--image`: runs the command here `--iter` times (with
/// the `--env` variables), prints its output, and reports each iteration's stdout (or
/// the `--file` it wrote) to the server, which parses it into a report. A non-zero exit
/// stops, unless `--allow-failure` (that iteration is left out).
async fn run_here(ctx: &Context, args: RunArgs) -> anyhow::Result<()> {
    let Some(project) = args.project.clone() else {
        usage_error("bencher run needs --project (or BENCHER_PROJECT)");
    };
    let Some((program, arguments)) = args.cmd.split_first() else {
        usage_error("nothing to run: give the benchmark command after `--`");
    };
    let only_for_images = [
        ("--entrypoint", !args.entrypoint.is_empty()),
        ("--job-timeout", args.job_timeout.is_some()),
        ("--detach", args.detach),
    ];
    if let Some((flag, _)) = only_for_images.iter().find(|(_, given)| *given) {
        usage_error(&format!("{flag} applies to jobs on a runner: pass --image"));
    }
    // As for a job: with --file-size the files are measured and results come from
    // stdout; without, the one --file holds each iteration's results.
    if args.file_size && args.file.is_empty() {
        usage_error("--file-size measures the --file paths: give at least one");
    }
    if !args.file_size && args.file.len() > 1 {
        usage_error("a local run reads its results from one --file per iteration");
    }
    let thresholds = args
        .thresholds
        .to_json()
        .unwrap_or_else(|why| usage_error(&why));
    let iterations = args.iter.unwrap_or_default().get();
    let start_time = chrono::Utc::now();
    let mut results = Vec::new();
    let mut build_times = Vec::new();
    let mut file_sizes = Vec::new();
    for iteration in 1..=iterations {
        let started = std::time::Instant::now();
        let output = tokio::process::Command::new(program)
            .args(arguments)
            .envs(args.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .with_context(|| format!("cannot run `{program}`"))?;
        let elapsed = started.elapsed();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        // The benchmark's own output, as it would print it (stderr under --format json).
        note(ctx, stdout.trim_end())?;
        if !output.status.success() {
            let status = output.status;
            if args.allow_failure {
                note(
                    ctx,
                    &format!("iteration {iteration}: {status}; left out (--allow-failure)"),
                )?;
                continue;
            }
            anyhow::bail!(
                "iteration {iteration} of `{program}` failed: {status}; nothing was reported"
            );
        }
        let text = match args.file.first() {
            Some(path) if !args.file_size => std::fs::read_to_string(path)
                .with_context(|| format!("iteration {iteration}: cannot read --file {path}"))?,
            _ => stdout,
        };
        results.push(text);
        build_times.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        if args.file_size {
            file_sizes.push(measure_files(&args.file)?);
        }
    }
    if results.is_empty() {
        anyhow::bail!("no iteration succeeded; nothing was reported");
    }
    let body = JsonNewResults {
        branch: args.branch,
        testbed: args.testbed,
        spec: args.spec,
        hash: args.hash,
        adapter: args.adapter,
        fold: args.fold,
        thresholds,
        start_time,
        end_time: chrono::Utc::now(),
        results,
        build_time: args.build_time.then(|| JsonLocalBuildTime {
            command: args.cmd.clone(),
            iterations_ns: build_times,
        }),
        file_size: args.file_size.then(|| JsonLocalFileSize {
            paths: args.file.clone(),
            iterations: file_sizes,
        }),
    };
    let made = ctx.client.report_results(&project, &body).await?;
    let report = ctx.client.get_report(&project, made.report).await?;
    show_report(ctx, None, &report)?;
    alerts_fail(&report, args.err)
}

/// `--file-size`: the size of each path that is a regular file; a missing one is left
/// out (the server then says which), anything else at the path is an error.
fn measure_files(paths: &[String]) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut sizes = BTreeMap::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {
                sizes.insert(path.clone(), meta.len());
            }
            Ok(_) => bail!("--file-size {path}: not a regular file"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("--file-size {path}"))),
        }
    }
    Ok(sizes)
}

/// The report a run made: its results against their baselines and the alerts; with
/// `--format json`, the job (if any) and the report as one document.
fn show_report(ctx: &Context, job: Option<&JsonJob>, report: &JsonReport) -> anyhow::Result<()> {
    match ctx.format {
        Format::Json => output::emit_json(&serde_json::json!({ "job": job, "report": report })),
        Format::Human => {
            output::emit(&format!(
                "\nReport {} on branch `{}`, testbed `{}`, spec `{}`, alerts: {}\n{}",
                report.uuid,
                report.branch.name,
                report.testbed.name,
                report.spec.slug,
                report.alerts,
                crate::report::results(report)
            ))?;
            if report.environment_changed == Some(true) {
                output::emit(&format!(
                    "Note: the runner's environment changed since the baseline; see `bencher report view {} {}`.",
                    report.project, report.uuid
                ))?;
            }
            Ok(())
        }
    }
}

/// With `--err`, an alert fails the command (CI then fails on a regression); without,
/// alerts are only reported.
fn alerts_fail(report: &JsonReport, err: bool) -> anyhow::Result<()> {
    if err && report.alerts > 0 {
        bail!(
            "{} alert(s) in report {}: a benchmark moved past its threshold",
            report.alerts,
            report.uuid
        );
    }
    Ok(())
}

/// What following a submitted job needs.
struct FollowArgs {
    project: ResourceId,
    interval: Duration,
    detach: bool,
    /// `--err`: an alert fails the command.
    err: bool,
}

/// The user pressed Ctrl-C while the CLI followed a job; `main` exits with 130, as a
/// shell does for a command killed by SIGINT.
#[derive(Debug)]
pub struct Interrupted(String);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<()> {
    if args.image.is_none() {
        return run_here(ctx, args).await;
    }
    let (body, follow) = args.into_body().unwrap_or_else(|why| usage_error(&why));
    let submitted = ctx.client.create_run(&body).await?;
    let project = &follow.project;
    if follow.detach {
        return match ctx.format {
            Format::Json => output::emit_json(&submitted),
            Format::Human => output::emit(&format!(
                "{}\n\nFollow it with `bencher job view {project} {uuid}`; \
                 cancel it with `bencher job cancel {project} {uuid}`.",
                submitted_text(&submitted),
                uuid = submitted.uuid,
            )),
        };
    }
    let uuid = submitted.uuid;
    // `ctrl_c` installs its handler when first polled: poll it now, before telling the
    // user about a job they may then interrupt, so that Ctrl-C cancels it from here on.
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let early = (&mut ctrl_c).now_or_never();
    note(ctx, &submitted_text(&submitted))?;
    let signal = match early {
        Some(signal) => signal,
        None => tokio::select! {
            finished = follow_job(ctx, project, submitted, follow.interval) => {
                return finish(ctx, project, finished?, follow.err).await;
            }
            signal = &mut ctrl_c => signal,
        },
    };
    signal.map_err(|e| anyhow::anyhow!("cannot listen for Ctrl-C: {e}"))?;
    let (canceled, interrupted) = interrupt(ctx, project, uuid).await;
    if let Some(job) = canceled {
        match ctx.format {
            Format::Json => output::emit_json(&job)?,
            Format::Human => output::emit(&status_line(&job))?,
        }
    }
    Err(interrupted.into())
}

/// Prints a finished job's output and its report (or, with `--format json`, the job and
/// its report); an error when it failed or was canceled, or with `--err` raised alerts.
async fn finish(
    ctx: &Context,
    project: &ResourceId,
    finished: JsonJob,
    err: bool,
) -> anyhow::Result<()> {
    let uuid = finished.uuid;
    if ctx.format == Format::Human {
        output::emit(&format!("\n{}", job::iterations(&finished)))?;
    }
    match finished.status {
        JobStatus::Processed => {
            let report = ctx.client.get_report(project, finished.report).await?;
            show_report(ctx, Some(&finished), &report)?;
            alerts_fail(&report, err)
        }
        status => {
            if ctx.format == Format::Json {
                output::emit_json(&finished)?;
            }
            match status {
                JobStatus::Failed => bail!(
                    "job {uuid} failed: {}",
                    finished
                        .error
                        .as_deref()
                        .unwrap_or("the runner gave no reason")
                ),
                JobStatus::Canceled => match &finished.error {
                    Some(why) => bail!("job {uuid} was canceled: {why}"),
                    None => bail!("job {uuid} was canceled"),
                },
                _ => {
                    if ctx.format == Format::Human {
                        output::emit(&format!("Job {uuid} {status}."))?;
                    }
                    Ok(())
                }
            }
        }
    }
}

fn submitted_text(job: &JsonJob) -> String {
    format!(
        "Submitted job {} ({}).\n{}",
        job.uuid,
        job.status,
        output::view(&[
            ("image", pinned_image(job)),
            ("spec", job.spec.slug.to_string()),
            ("report", job.report.to_string()),
        ])
    )
}

/// The reference as submitted, pinned to the digest the server resolved it to (what the
/// runner will pull, whatever happens to the tag).
fn pinned_image(job: &JsonJob) -> String {
    let digest = &job.config.digest;
    match job.config.image.as_deref() {
        Some(image) => {
            let name = image.split_once('@').map_or(image, |(name, _)| name);
            format!("{name}@{digest}")
        }
        None => digest.clone(),
    }
}

/// A line about the job's progress: on stdout for people, on stderr with `--format json`
/// so stdout stays one JSON document.
fn note(ctx: &Context, text: &str) -> anyhow::Result<()> {
    match ctx.format {
        Format::Human => output::emit(text),
        Format::Json => {
            eprintln!("{text}");
            Ok(())
        }
    }
}

fn status_line(job: &JsonJob) -> String {
    match (job.status, job.runner) {
        (JobStatus::Claimed | JobStatus::Running, Some(runner)) => {
            format!("status: {} (runner {runner})", job.status)
        }
        _ => format!("status: {}", job.status),
    }
}

/// Polls the job until the runner is done with it, printing each status change.
async fn follow_job(
    ctx: &Context,
    project: &ResourceId,
    mut job: JsonJob,
    interval: Duration,
) -> anyhow::Result<JsonJob> {
    let mut pace = Pace::new(interval);
    let mut failures = 0;
    let mut next = pace.after(job.status);
    // `completed` is followed until processed (or failed by processing): the report is
    // made on the server right after, and is what the run is for.
    while !job.status.is_finished() || job.status == JobStatus::Completed {
        tokio::time::sleep(next).await;
        let (answer, retry_after) = ctx.client.poll_job(project, job.uuid).await;
        // Jittered too: every client told the same `Retry-After` would come back at once.
        let asked = jitter(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
        next = match answer {
            Ok(polled) => {
                failures = 0;
                if (polled.status, polled.runner) != (job.status, job.runner) {
                    note(ctx, &status_line(&polled))?;
                    pace.reset();
                }
                job = polled;
                pace.after(job.status).max(asked)
            }
            Err(error) if transient(&error) && failures < MAX_FAILURES => {
                failures += 1;
                let wait = pace.after_error(failures).max(asked);
                eprintln!(
                    "warning: cannot get the status of job {}: {error}; retrying in {} s",
                    job.uuid,
                    wait.as_secs_f64().round()
                );
                wait
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "stopped following job {uuid}, which goes on without this command; \
                     check it with `bencher job view {project} {uuid}`",
                    uuid = job.uuid
                )));
            }
        };
    }
    Ok(job)
}

/// Worth asking again: the request did not arrive, or the server (or a proxy) said it
/// is busy or briefly unavailable.
fn transient(error: &ClientError) -> bool {
    match error {
        ClientError::Transport { .. } => true,
        ClientError::Api { status, .. } => matches!(status, 429 | 502 | 503 | 504),
        _ => false,
    }
}

/// When to poll next: the interval while something may change soon, slower and slower
/// while the job waits for a runner, exponentially slower on errors; always a little
/// random, so many followers started together (a CI matrix) do not poll in step.
struct Pace {
    interval: Duration,
    pending: Duration,
}

impl Pace {
    fn new(interval: Duration) -> Self {
        Self {
            interval,
            pending: interval,
        }
    }

    /// Back to the interval: the job just moved, more may follow.
    fn reset(&mut self) {
        self.pending = self.interval;
    }

    fn after(&mut self, status: JobStatus) -> Duration {
        let wait = if status == JobStatus::Pending {
            let wait = self.pending;
            self.pending = (self.pending * 3 / 2).min(PENDING_MAX_WAIT.max(self.interval));
            wait
        } else {
            self.interval
        };
        jitter(wait)
    }

    fn after_error(&self, failures: u32) -> Duration {
        let doubled = self
            .interval
            .saturating_mul(1 << failures.min(16))
            .min(ERROR_MAX_WAIT.max(self.interval));
        jitter(doubled)
    }
}

/// `wait` plus up to a quarter more, at random. Never less: the interval is the
/// user's floor.
fn jitter(wait: Duration) -> Duration {
    // A fresh `RandomState` is randomly keyed: enough randomness for spreading polls
    // without another dependency.
    let random = RandomState::new().hash_one(0u8);
    let quarter = wait / 4;
    let extra = quarter.mul_f64((random % 1024) as f64 / 1024.0);
    wait + extra
}

/// Ctrl-C while following: ask the server to cancel the job and say what happened; the
/// canceled job, when the server canceled it. A second Ctrl-C stops waiting for the
/// server.
async fn interrupt(
    ctx: &Context,
    project: &ResourceId,
    uuid: JobUuid,
) -> (Option<JsonJob>, Interrupted) {
    eprintln!("Interrupted: canceling job {uuid}…");
    let cancel = ctx.client.cancel_job(project, uuid);
    let still_runs =
        format!("job {uuid} may still run: cancel it with `bencher job cancel {project} {uuid}`");
    tokio::select! {
        canceled = cancel => match canceled {
            Ok(job) => {
                let message = format!("interrupted: job {uuid} was canceled");
                (Some(job), Interrupted(message))
            }
            Err(ClientError::Api { status: 409, .. }) => {
                // The job finished (or was canceled) between the last poll and now.
                let message = match ctx.client.get_job(project, uuid).await {
                    Ok(job) => format!(
                        "interrupted: job {uuid} was already {}, nothing to cancel",
                        job.status
                    ),
                    Err(_) => format!("interrupted: job {uuid} can no longer be canceled"),
                };
                (None, Interrupted(message))
            }
            Err(error) => {
                let message = format!("interrupted, but the cancel failed ({error}); {still_runs}");
                (None, Interrupted(message))
            }
        },
        _ = tokio::signal::ctrl_c() => {
            let message = format!("interrupted twice: not waiting for the server; {still_runs}");
            (None, Interrupted(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(line: &[&str]) -> Result<RunArgs, String> {
        match Cli::try_parse_from(line) {
            Ok(Cli {
                command: Command::Run(args),
                ..
            }) => Ok(*args),
            Ok(other) => panic!("{line:?} parsed as {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    fn body(line: &[&str]) -> Result<JsonNewRun, String> {
        parse(line)?.into_body().map(|(body, _)| body)
    }

    #[test]
    fn threshold_options_line_up_by_position() {
        let base = [
            "bencher",
            "run",
            "--image",
            "p:v1",
            "--project",
            "p",
            "--threshold-measure",
            "latency",
            "--threshold-test",
            "t_test",
            "--threshold-upper-boundary",
            "0.99",
            "--threshold-max-sample-size",
            "64",
            "--threshold-measure",
            "instructions",
            "--threshold-test",
            "static",
            "--threshold-upper-boundary",
            "1000",
            "--threshold-max-sample-size",
            "_",
        ];
        let run = body(&base).unwrap();
        assert_eq!(run.thresholds.len(), 2);
        let (latency, custom) = (&run.thresholds[0], &run.thresholds[1]);
        assert_eq!(latency.measure.as_str(), "latency");
        assert_eq!(latency.test, ThresholdTest::TTest);
        assert_eq!(latency.upper_boundary, Some(0.99));
        assert_eq!(latency.max_sample_size, Some(64));
        assert_eq!(latency.lower_boundary, None);
        assert_eq!(custom.test, ThresholdTest::Static);
        assert_eq!(custom.upper_boundary, Some(1000.0));
        assert_eq!(custom.max_sample_size, None);

        let with = |extra: &[&str]| {
            let mut line = vec!["bencher", "run", "--image", "p:v1", "--project", "p"];
            line.extend_from_slice(extra);
            body(&line).map(|_| ()).unwrap_err()
        };
        let err = with(&["--threshold-measure", "latency"]);
        assert!(
            err.contains("--threshold-test is given 0 times for 1"),
            "{err}"
        );
        let err = with(&[
            "--threshold-measure",
            "latency",
            "--threshold-test",
            "static",
            "--threshold-upper-boundary",
            "1",
            "--threshold-upper-boundary",
            "2",
        ]);
        assert!(
            err.contains("--threshold-upper-boundary is given 2 times"),
            "{err}"
        );
        let err = with(&[
            "--threshold-measure",
            "latency",
            "--threshold-test",
            "median",
        ]);
        assert!(err.contains("--threshold-test"), "{err}");
        let err = with(&[
            "--threshold-measure",
            "latency",
            "--threshold-test",
            "static",
            "--threshold-window",
            "soon",
        ]);
        assert!(err.contains("--threshold-window `soon`"), "{err}");
        let err = with(&[
            "--threshold-measure",
            "latency",
            "--threshold-test",
            "static",
            "--threshold-measure",
            "latency",
            "--threshold-test",
            "z_score",
        ]);
        assert!(err.contains("more than one threshold"), "{err}");
    }

    #[test]
    fn changes_against_the_baseline() {
        assert_eq!(crate::report::change(120.0, Some(100.0)), "+20.00%");
        assert_eq!(crate::report::change(90.0, Some(100.0)), "-10.00%");
        assert_eq!(crate::report::change(1.0, Some(0.0)), "-");
        assert_eq!(crate::report::change(1.0, None), "-");
    }

    #[test]
    fn the_documented_line_becomes_the_body() {
        let run = body(&[
            "bencher",
            "run",
            "--image",
            "bench:v1",
            "--project",
            "bench",
            "--spec",
            "intel-v1",
            "--entrypoint",
            "/bin/sh",
            "--entrypoint",
            "-c",
            "--env",
            "A=1=2",
            "--env",
            "EMPTY=",
            "--job-timeout",
            "60",
            "--iter",
            "3",
            "--file",
            "/out/a.json",
            "--file",
            "/out/b.json",
            "--adapter",
            "json",
            "--branch",
            "feature x",
            "--testbed",
            "ci",
            "--allow-failure",
            "--",
            "echo",
            "--not-a-flag",
        ])
        .expect("valid line");
        let expected = serde_json::json!({
            "project": "bench",
            "branch": "feature x",
            "testbed": "ci",
            "adapter": "json",
            "job": {
                "image": "bench:v1",
                "spec": "intel-v1",
                "entrypoint": ["/bin/sh", "-c"],
                "cmd": ["echo", "--not-a-flag"],
                "env": {"A": "1=2", "EMPTY": ""},
                "timeout": 60,
                "file_paths": ["/out/a.json", "/out/b.json"],
                "iter": 3,
                "allow_failure": true,
            },
        });
        assert_eq!(serde_json::to_value(&run).expect("serializes"), expected);

        let minimal =
            body(&["bencher", "run", "--image", "p:v1", "--project", "p"]).expect("valid line");
        assert_eq!(
            serde_json::to_value(&minimal).expect("serializes"),
            serde_json::json!({"project": "p", "job": {"image": "p:v1"}})
        );
    }

    #[test]
    fn bad_lines_are_usage_errors() {
        let run = |extra: &[&str]| {
            let mut line = vec!["bencher", "run", "--image", "p:v1", "--project", "p"];
            line.extend(extra);
            match parse(&line) {
                Ok(args) => args.into_body().map(|_| ()),
                Err(e) => Err(e),
            }
            .expect_err("should be refused")
        };
        let err = run(&["--env", "TOKEN"]);
        assert!(err.contains("`TOKEN` has no `=`"), "{err}");
        let err = run(&["--env", "=x"]);
        assert!(err.contains("name before `=` is empty"), "{err}");
        let err = run(&["--env", "A=1", "--env", "A=2"]);
        assert!(err.contains("--env A is given more than once"), "{err}");
        for bad in ["0", "601", "0.5", "-1", "soon", ""] {
            let flag = format!("--job-poll-interval={bad}");
            let err = run(&[&flag]);
            assert!(err.contains("between 1 and 600"), "{bad}: {err}");
        }
        let err = run(&["--detach", "--job-poll-interval", "5"]);
        assert!(err.contains("cannot be used with"), "{err}");
        let err = run(&["--iter", "0"]);
        assert!(err.contains("between 1 and 255"), "{err}");
        let err = run(&["--job-timeout", "86401"]);
        assert!(err.contains("between 1 and 86400"), "{err}");
        let err = run(&["--adapter", "Rust"]);
        assert!(
            err.contains("unknown adapter `Rust`: expected one of json"),
            "{err}"
        );
        let err = run(&["echo"]);
        assert!(err.contains("unexpected argument"), "{err}");

        let err = parse(&["bencher", "run", "--image", "p:v1"]).expect_err("no project");
        assert!(err.contains("--project"), "{err}");
        let local = parse(&["bencher", "run", "--", "cargo", "bench"]).expect("parses");
        assert!(local.image.is_none() && local.cmd == ["cargo", "bench"]);
    }

    #[test]
    fn polls_slow_down_while_pending_and_never_beat_the_interval() {
        let second = Duration::from_secs(1);
        let mut pace = Pace::new(second);
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            let wait = pace.after(JobStatus::Pending);
            assert!(
                wait >= second && wait <= PENDING_MAX_WAIT * 5 / 4,
                "{wait:?}"
            );
            last = wait;
        }
        assert!(last >= PENDING_MAX_WAIT, "{last:?}");
        pace.reset();
        let wait = pace.after(JobStatus::Running);
        assert!(wait >= second && wait <= second * 5 / 4, "{wait:?}");
        let slow = pace.after_error(10);
        assert!(
            slow >= ERROR_MAX_WAIT && slow <= ERROR_MAX_WAIT * 5 / 4,
            "{slow:?}"
        );
        // An interval longer than the caps is kept.
        let mut pace = Pace::new(Duration::from_secs(60));
        assert!(pace.after(JobStatus::Pending) >= Duration::from_secs(60));
        assert!(pace.after_error(1) >= Duration::from_secs(60));
    }
}
