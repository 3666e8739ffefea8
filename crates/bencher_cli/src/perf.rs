//! `bencher perf`: the history of branches × testbeds × benchmarks × measures, one row
//! per point, or the server's JSON.

use bencher_types::{JsonPerf, PerfQuery, ResourceId};
use chrono::{DateTime, Utc};
use clap::Args;

use crate::cli::Context;
use crate::output::{self, Format};
use crate::report::{limits, version};

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PerfArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// Branches (names, slugs or UUIDs), comma-separated or repeated
    #[arg(
        long = "branch",
        alias = "branches",
        required = true,
        value_delimiter = ','
    )]
    pub branches: Vec<String>,
    /// Testbeds, comma-separated or repeated
    #[arg(
        long = "testbed",
        alias = "testbeds",
        required = true,
        value_delimiter = ','
    )]
    pub testbeds: Vec<String>,
    /// Benchmarks, comma-separated or repeated
    #[arg(
        long = "benchmark",
        alias = "benchmarks",
        required = true,
        value_delimiter = ','
    )]
    pub benchmarks: Vec<String>,
    /// Measures (latency, throughput, …), comma-separated or repeated
    #[arg(
        long = "measure",
        alias = "measures",
        required = true,
        value_delimiter = ','
    )]
    pub measures: Vec<String>,
    /// Only results measured on these Specs, comma-separated or repeated
    #[arg(long = "spec", alias = "specs", value_delimiter = ',')]
    pub specs: Vec<String>,
    /// Only reports at or after this time (RFC 3339)
    #[arg(long)]
    pub start_time: Option<DateTime<Utc>>,
    /// Only reports at or before this time (RFC 3339)
    #[arg(long)]
    pub end_time: Option<DateTime<Utc>>,
}

pub async fn run(ctx: &Context, args: PerfArgs) -> anyhow::Result<()> {
    let query = PerfQuery {
        branches: args.branches.join(","),
        testbeds: args.testbeds.join(","),
        benchmarks: args.benchmarks.join(","),
        measures: args.measures.join(","),
        specs: (!args.specs.is_empty()).then(|| args.specs.join(",")),
        start_time: args.start_time,
        end_time: args.end_time,
    };
    let perf = ctx.client.get_perf(&args.project, &query).await?;
    match ctx.format {
        Format::Json => output::emit_json(&perf),
        Format::Human => {
            let points: usize = perf.results.iter().map(|s| s.metrics.len()).sum();
            if points > 0 {
                output::emit(&table(&perf).to_string())?;
            }
            let series = perf.results.len();
            let noun = if points == 1 { "point" } else { "points" };
            output::emit(&format!("{points} {noun} in {series} series"))
        }
    }
}

fn table(perf: &JsonPerf) -> comfy_table::Table {
    let mut table = output::table([
        "BRANCH",
        "TESTBED",
        "BENCHMARK",
        "MEASURE",
        "VERSION",
        "TIME",
        "SPEC",
        "VALUE",
        "BASELINE",
        "LOWER",
        "UPPER",
        "ALERT",
    ]);
    for series in &perf.results {
        for point in &series.metrics {
            let [baseline, lower, upper] = limits(point.boundary.as_ref());
            table.add_row([
                series.branch.slug.clone(),
                series.testbed.slug.clone(),
                series.benchmark.name.clone(),
                series.measure.slug.clone(),
                version(point.version.as_ref()),
                output::time(&point.time),
                point.spec.slug.clone(),
                point.metric.value.to_string(),
                baseline,
                lower,
                upper,
                point
                    .alert
                    .as_ref()
                    .map_or_else(String::new, |a| format!("{} ({})", a.side, a.status)),
            ]);
        }
    }
    table
}
