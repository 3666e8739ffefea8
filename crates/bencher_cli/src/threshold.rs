//! `bencher threshold …`: create, list, view, update (a new model version) and delete
//! a project's thresholds.

use bencher_types::{
    JsonNewThreshold, JsonThreshold, JsonUpdateThreshold, ResourceId, ResourceName, ThresholdQuery,
    ThresholdTest, ThresholdUuid,
};
use std::str::FromStr;

use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::output::{self, Format};
use crate::pagination::TimePaginationArgs;
use crate::report::number;

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ThresholdCommand {
    /// Create a threshold for a branch, testbed and measure
    Create(CreateArgs),
    /// List a project's thresholds, oldest first unless `--direction desc`
    List(ListArgs),
    /// Show one threshold with its current model
    View(ThresholdArgs),
    /// Replace a threshold's model (the old model is kept for past boundaries)
    Update(UpdateArgs),
    /// Delete a threshold, with the boundaries and alerts it gave
    Delete(ThresholdArgs),
}

/// A boundary flag's value: a finite number (the server checks the rest against the
/// test). Compared by its bits so the commands can stay `Eq`.
#[derive(Debug, Clone, Copy)]
pub struct BoundaryArg(pub f64);

impl PartialEq for BoundaryArg {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for BoundaryArg {}

impl FromStr for BoundaryArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Self(value)),
            _ => Err(format!("`{s}` is not a finite number")),
        }
    }
}

/// A threshold's model as flags.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ModelArgs {
    /// The test: static, percentage, z_score, t_test, log_normal, iqr or delta_iqr
    #[arg(long)]
    pub test: ThresholdTest,
    /// Fewer history values than this: the test does not run
    #[arg(long)]
    pub min_sample_size: Option<u32>,
    /// Only the newest this many history values are used
    #[arg(long)]
    pub max_sample_size: Option<u32>,
    /// Seconds back from each report's time; older values are left out
    #[arg(long)]
    pub window: Option<u32>,
    /// Lower boundary (its meaning depends on the test)
    #[arg(long, allow_negative_numbers = true)]
    pub lower_boundary: Option<BoundaryArg>,
    /// Upper boundary (its meaning depends on the test)
    #[arg(long, allow_negative_numbers = true)]
    pub upper_boundary: Option<BoundaryArg>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CreateArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// Branch name, slug or UUID
    #[arg(long)]
    pub branch: ResourceName,
    /// Testbed name, slug or UUID
    #[arg(long)]
    pub testbed: ResourceName,
    /// Measure name, slug or UUID (latency, throughput, build-time, file-size, or one
    /// your results named)
    #[arg(long)]
    pub measure: ResourceName,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// Only thresholds of this branch (name, slug or UUID)
    #[arg(long)]
    pub branch: Option<String>,
    /// Only thresholds of this testbed
    #[arg(long)]
    pub testbed: Option<String>,
    /// Only thresholds of this measure
    #[arg(long)]
    pub measure: Option<String>,
    #[command(flatten)]
    pub pagination: TimePaginationArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ThresholdArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// UUID of the threshold
    pub threshold: ThresholdUuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct UpdateArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// UUID of the threshold
    pub threshold: ThresholdUuid,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub async fn run(ctx: &Context, command: ThresholdCommand) -> anyhow::Result<()> {
    match command {
        ThresholdCommand::Create(args) => {
            let m = args.model;
            let body = JsonNewThreshold {
                branch: args.branch,
                testbed: args.testbed,
                measure: args.measure,
                test: m.test,
                min_sample_size: m.min_sample_size,
                max_sample_size: m.max_sample_size,
                window: m.window,
                lower_boundary: m.lower_boundary.map(|b| b.0),
                upper_boundary: m.upper_boundary.map(|b| b.0),
            };
            let threshold = ctx.client.create_threshold(&args.project, &body).await?;
            emit_one(ctx, "Created threshold", &threshold)
        }
        ThresholdCommand::List(args) => {
            let query = ThresholdQuery {
                branch: args.branch,
                testbed: args.testbed,
                measure: args.measure,
            };
            let page = ctx
                .client
                .list_thresholds(&args.project, &query, &(&args.pagination).into())
                .await?;
            output::emit_page(ctx.format, &page, table, "threshold", "thresholds")
        }
        ThresholdCommand::View(args) => {
            let threshold = ctx
                .client
                .get_threshold(&args.project, args.threshold)
                .await?;
            match ctx.format {
                Format::Json => output::emit_json(&threshold),
                Format::Human => output::emit(&view(&threshold)),
            }
        }
        ThresholdCommand::Update(args) => {
            let m = args.model;
            let body = JsonUpdateThreshold {
                test: m.test,
                min_sample_size: m.min_sample_size,
                max_sample_size: m.max_sample_size,
                window: m.window,
                lower_boundary: m.lower_boundary.map(|b| b.0),
                upper_boundary: m.upper_boundary.map(|b| b.0),
            };
            let threshold = ctx
                .client
                .update_threshold(&args.project, args.threshold, &body)
                .await?;
            emit_one(ctx, "Updated threshold", &threshold)
        }
        ThresholdCommand::Delete(args) => {
            ctx.client
                .delete_threshold(&args.project, args.threshold)
                .await?;
            match ctx.format {
                Format::Json => output::emit_json(&serde_json::json!({
                    "deleted": args.threshold,
                })),
                Format::Human => output::emit(&format!("Deleted threshold {}.", args.threshold)),
            }
        }
    }
}

fn emit_one(ctx: &Context, what: &str, threshold: &JsonThreshold) -> anyhow::Result<()> {
    match ctx.format {
        Format::Json => output::emit_json(threshold),
        Format::Human => output::emit(&format!(
            "{what} {}.\n\n{}",
            threshold.uuid,
            view(threshold)
        )),
    }
}

fn optional<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn table(thresholds: &[JsonThreshold]) -> comfy_table::Table {
    let mut table = output::table([
        "UUID", "BRANCH", "TESTBED", "MEASURE", "TEST", "LOWER", "UPPER", "MODIFIED",
    ]);
    for threshold in thresholds {
        table.add_row([
            threshold.uuid.to_string(),
            threshold.branch.slug.clone(),
            threshold.testbed.slug.clone(),
            threshold.measure.slug.clone(),
            threshold.model.test.to_string(),
            number(threshold.model.lower_boundary),
            number(threshold.model.upper_boundary),
            output::time(&threshold.modified),
        ]);
    }
    table
}

fn view(threshold: &JsonThreshold) -> String {
    let model = &threshold.model;
    output::view(&[
        ("uuid", threshold.uuid.to_string()),
        ("project", threshold.project.to_string()),
        ("branch", threshold.branch.name.clone()),
        ("testbed", threshold.testbed.name.clone()),
        ("measure", threshold.measure.name.clone()),
        ("test", model.test.to_string()),
        ("min sample size", optional(model.min_sample_size)),
        ("max sample size", optional(model.max_sample_size)),
        ("window", optional(model.window.map(|w| format!("{w} s")))),
        ("lower boundary", number(model.lower_boundary)),
        ("upper boundary", number(model.upper_boundary)),
        ("model", model.uuid.to_string()),
        ("model since", output::time(&model.created)),
        ("created", output::time(&threshold.created)),
        ("modified", output::time(&threshold.modified)),
    ])
}
