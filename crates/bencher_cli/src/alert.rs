//! `bencher alert …`: list a project's alerts (newest first, by status), view one, and
//! dismiss one (or make it active again).

use bencher_types::{AlertQuery, AlertStatus, AlertUuid, JsonAlert, JsonUpdateAlert, ResourceId};
use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::output::{self, Format};
use crate::pagination::TimePaginationArgs;
use crate::report::{limits, number, version};

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AlertCommand {
    /// List a project's alerts, newest first unless `--direction asc`
    List(ListArgs),
    /// Show one alert: the metric, the boundary it crossed, where and when
    View(AlertArgs),
    /// Dismiss an alert (`--undo` makes it active again)
    Dismiss(DismissArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// Only alerts in this status: active or dismissed
    #[arg(long)]
    pub status: Option<AlertStatus>,
    #[command(flatten)]
    pub pagination: TimePaginationArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AlertArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// UUID of the alert
    pub alert: AlertUuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct DismissArgs {
    #[command(flatten)]
    pub alert: AlertArgs,
    /// Make a dismissed alert active again
    #[arg(long)]
    pub undo: bool,
}

pub async fn run(ctx: &Context, command: AlertCommand) -> anyhow::Result<()> {
    match command {
        AlertCommand::List(args) => {
            let query = AlertQuery {
                status: args.status,
            };
            let page = ctx
                .client
                .list_alerts(&args.project, &query, &(&args.pagination).into())
                .await?;
            output::emit_page(ctx.format, &page, table, "alert", "alerts")
        }
        AlertCommand::View(args) => {
            let alert = ctx.client.get_alert(&args.project, args.alert).await?;
            match ctx.format {
                Format::Json => output::emit_json(&alert),
                Format::Human => output::emit(&view(&alert)),
            }
        }
        AlertCommand::Dismiss(args) => {
            let status = if args.undo {
                AlertStatus::Active
            } else {
                AlertStatus::Dismissed
            };
            let alert = ctx
                .client
                .update_alert(
                    &args.alert.project,
                    args.alert.alert,
                    &JsonUpdateAlert { status },
                )
                .await?;
            match ctx.format {
                Format::Json => output::emit_json(&alert),
                Format::Human => output::emit(&format!(
                    "Alert {} is now {}.\n\n{}",
                    alert.uuid,
                    alert.status,
                    view(&alert)
                )),
            }
        }
    }
}

/// The limit on the side the alert is on.
fn crossed(alert: &JsonAlert) -> Option<f64> {
    match alert.side {
        bencher_types::AlertSide::Lower => alert.boundary.lower_limit,
        bencher_types::AlertSide::Upper => alert.boundary.upper_limit,
    }
}

fn table(alerts: &[JsonAlert]) -> comfy_table::Table {
    let mut table = output::table([
        "UUID",
        "STATUS",
        "BENCHMARK",
        "MEASURE",
        "BRANCH",
        "TESTBED",
        "VALUE",
        "SIDE",
        "LIMIT",
        "CREATED",
    ]);
    for alert in alerts {
        table.add_row([
            alert.uuid.to_string(),
            alert.status.to_string(),
            alert.benchmark.name.clone(),
            alert.measure.slug.clone(),
            alert.branch.slug.clone(),
            alert.testbed.slug.clone(),
            alert.metric.value.to_string(),
            alert.side.to_string(),
            number(crossed(alert)),
            output::time(&alert.created),
        ]);
    }
    table
}

fn view(alert: &JsonAlert) -> String {
    let [baseline, lower, upper] = limits(Some(&alert.boundary));
    output::view(&[
        ("uuid", alert.uuid.to_string()),
        ("status", alert.status.to_string()),
        ("side", alert.side.to_string()),
        ("benchmark", alert.benchmark.name.clone()),
        ("measure", alert.measure.name.clone()),
        ("value", alert.metric.value.to_string()),
        ("baseline", baseline),
        ("lower limit", lower),
        ("upper limit", upper),
        ("test", alert.boundary.model.test.to_string()),
        ("threshold", alert.boundary.threshold.to_string()),
        ("branch", alert.branch.name.clone()),
        ("testbed", alert.testbed.name.clone()),
        ("spec", alert.spec.slug.clone()),
        ("version", version(alert.version.as_ref())),
        ("report", alert.report.to_string()),
        ("iteration", (alert.iteration + 1).to_string()),
        ("created", output::time(&alert.created)),
        ("modified", output::time(&alert.modified)),
    ])
}
