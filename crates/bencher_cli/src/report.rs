//! `bencher report …`: list a project's reports (newest first, by branch, testbed and
//! time) and view one with its results per iteration, benchmark and measure; and how
//! results are shown, which `bencher alert` and `bencher perf` share.

use bencher_types::{JsonBoundary, JsonReport, JsonVersion, ReportQuery, ReportUuid, ResourceId};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::output::{self, Format};
use crate::pagination::TimePaginationArgs;

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ReportCommand {
    /// List a project's reports, newest first unless `--direction asc`
    List(ListArgs),
    /// Show one report: where and on what it ran, and every metric with its boundary
    /// and alert
    View(ViewArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// Only reports of this branch (name, slug or UUID)
    #[arg(long)]
    pub branch: Option<String>,
    /// Only reports of this testbed (name, slug or UUID)
    #[arg(long)]
    pub testbed: Option<String>,
    /// Only reports at or after this time (RFC 3339, e.g. 2025-01-31T12:00:00Z)
    #[arg(long)]
    pub start_time: Option<DateTime<Utc>>,
    /// Only reports at or before this time (RFC 3339)
    #[arg(long)]
    pub end_time: Option<DateTime<Utc>>,
    #[command(flatten)]
    pub pagination: TimePaginationArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ViewArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// UUID of the report (listed by `bencher report list`)
    pub report: ReportUuid,
}

pub async fn run(ctx: &Context, command: ReportCommand) -> anyhow::Result<()> {
    match command {
        ReportCommand::List(args) => {
            let query = ReportQuery {
                branch: args.branch,
                testbed: args.testbed,
                start_time: args.start_time,
                end_time: args.end_time,
            };
            let page = ctx
                .client
                .list_reports(&args.project, &query, &(&args.pagination).into())
                .await?;
            output::emit_page(ctx.format, &page, table, "report", "reports")
        }
        ReportCommand::View(args) => {
            let report = ctx.client.get_report(&args.project, args.report).await?;
            match ctx.format {
                Format::Json => output::emit_json(&report),
                Format::Human => {
                    output::emit(&view(&report))?;
                    output::emit(&format!("\n{}", results(&report)))
                }
            }
        }
    }
}

fn table(reports: &[JsonReport]) -> comfy_table::Table {
    let mut table = output::table([
        "UUID", "BRANCH", "TESTBED", "SPEC", "VERSION", "TIME", "ALERTS",
    ]);
    for report in reports {
        table.add_row([
            report.uuid.to_string(),
            report.branch.slug.clone(),
            report.testbed.slug.clone(),
            report.spec.slug.clone(),
            version(report.version.as_ref()),
            output::time(report.end_time.as_ref().unwrap_or(&report.created)),
            report.alerts.to_string(),
        ]);
    }
    table
}

/// `3 (abc1234)`, `3`, or `-`.
pub fn version(version: Option<&JsonVersion>) -> String {
    match version {
        Some(JsonVersion {
            number,
            hash: Some(hash),
        }) => format!("{number} ({hash})"),
        Some(JsonVersion { number, hash: None }) => number.to_string(),
        None => "-".to_owned(),
    }
}

fn view(report: &JsonReport) -> String {
    let mut rows = vec![
        ("uuid", report.uuid.to_string()),
        ("project", report.project.to_string()),
        ("branch", report.branch.name.clone()),
        ("testbed", report.testbed.name.clone()),
        ("spec", report.spec.slug.clone()),
        ("version", version(report.version.as_ref())),
        (
            "adapter",
            report
                .adapter
                .map_or_else(|| "magic".to_owned(), |a| a.to_string()),
        ),
        (
            "fold",
            report
                .fold
                .map_or_else(|| "none".to_owned(), |f| f.to_string()),
        ),
        (
            "iterations",
            report
                .iterations
                .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        ),
        (
            "start time",
            output::time_or(report.start_time.as_ref(), "-"),
        ),
        ("end time", output::time_or(report.end_time.as_ref(), "-")),
        (
            "job",
            report
                .job
                .map_or_else(|| "none (local run)".to_owned(), |j| j.to_string()),
        ),
        (
            "processed",
            output::time_or(report.processed.as_ref(), "not yet"),
        ),
        ("alerts", report.alerts.to_string()),
        ("environment", environment(report)),
        ("noise", noise(report)),
        ("created", output::time(&report.created)),
    ];
    if report.processed.is_none() {
        rows.push((
            "note",
            "results arrive when the job is processed".to_owned(),
        ));
    }
    output::view(&rows)
}

/// Whether the report was measured on the same machine state as its baseline.
pub fn environment(report: &JsonReport) -> String {
    match report.environment_changed {
        Some(true) => "CHANGED from the baseline's (compare the fingerprints with \
                       --format json)"
            .to_owned(),
        Some(false) => "same as the baseline's".to_owned(),
        None if report.environment.is_some() => "recorded; no baseline to compare".to_owned(),
        None => "-".to_owned(),
    }
}

/// The runner's noise probe before the job: CPU jitter (coefficient of variation of a
/// fixed loop) and how late a short sleep woke up.
fn noise(report: &JsonReport) -> String {
    let Some(noise) = report.environment.as_ref().map(|e| &e.noise) else {
        return "-".to_owned();
    };
    match (
        noise["cpu"]["cv"].as_f64(),
        noise["timer"]["median_ns"].as_f64(),
        noise["timer"]["p99_ns"].as_f64(),
    ) {
        (Some(cv), Some(median), Some(p99)) => format!(
            "CPU loop CV {:.2}%, timer lateness median {:.1} µs, p99 {:.1} µs",
            cv * 100.0,
            median / 1000.0,
            p99 / 1000.0
        ),
        _ => "recorded (see --format json)".to_owned(),
    }
}

/// A number as Rust prints floats (shortest exact form), or `-`.
pub fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `+20.00%`: how far a value is from its baseline; `-` without a (non-zero) baseline.
pub fn change(value: f64, baseline: Option<f64>) -> String {
    match baseline {
        Some(baseline) if baseline != 0.0 => {
            format!("{:+.2}%", (value - baseline) / baseline.abs() * 100.0)
        }
        _ => "-".to_owned(),
    }
}

/// The limits of a boundary: `baseline`, `lower`, `upper`.
pub fn limits(boundary: Option<&JsonBoundary>) -> [String; 3] {
    match boundary {
        Some(b) => [
            number(b.baseline),
            number(b.lower_limit),
            number(b.upper_limit),
        ],
        None => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
    }
}

/// A report's metrics, one row per iteration, benchmark and measure, with the change
/// against the threshold's baseline, the limits and the alert.
pub fn results(report: &JsonReport) -> String {
    let iterations = match report.results.as_deref() {
        Some(iterations) if iterations.iter().any(|i| !i.is_empty()) => iterations,
        _ => return "No results.".to_owned(),
    };
    let mut table = output::table([
        "ITER",
        "BENCHMARK",
        "MEASURE",
        "VALUE",
        "BASELINE",
        "CHANGE",
        "LOWER",
        "UPPER",
        "ALERT",
    ]);
    for (index, benchmarks) in iterations.iter().enumerate() {
        for benchmark in benchmarks {
            for measure in &benchmark.measures {
                let [baseline, lower, upper] = limits(measure.boundary.as_ref());
                table.add_row([
                    (index + 1).to_string(),
                    benchmark.benchmark.name.clone(),
                    measure.measure.slug.clone(),
                    measure.metric.value.to_string(),
                    baseline,
                    change(
                        measure.metric.value,
                        measure.boundary.as_ref().and_then(|b| b.baseline),
                    ),
                    lower,
                    upper,
                    measure
                        .alert
                        .as_ref()
                        .map_or_else(String::new, |a| format!("{} ({})", a.side, a.status)),
                ]);
            }
        }
    }
    table.to_string()
}
