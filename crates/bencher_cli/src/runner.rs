//! `bencher runner …`: register runners, list and update them, rotate their keys, and
//! link them to the Specs they serve.

use bencher_types::{
    JsonNewRunner, JsonNewRunnerSpec, JsonRunner, JsonRunnerKey, JsonUpdateRunner, ResourceId,
    ResourceName, RunnerQuery, RunnerState, Slug,
};
use clap::{ArgGroup, Args, Subcommand};

use crate::cli::{Context, flag_pair};
use crate::output::{self, Format};
use crate::pagination::PaginationArgs;
use crate::spec;

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum RunnerCommand {
    /// Register a runner and print its key (shown only once)
    Create(CreateArgs),
    /// List runners
    List(ListArgs),
    /// Show one runner
    View(RunnerArg),
    /// Rename or archive a runner
    Update(UpdateArgs),
    /// Rotate a runner's key: the old key stops working at once
    Key(RunnerArg),
    /// Manage the Specs a runner serves
    #[command(subcommand)]
    Spec(RunnerSpecCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum RunnerSpecCommand {
    /// Let a runner claim jobs of a Spec
    Add(AddSpecArgs),
    /// Stop a runner claiming jobs of a Spec
    Remove(RemoveSpecArgs),
    /// List the Specs a runner serves
    List(ListSpecsArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CreateArgs {
    /// Display name, such as "My Runner"
    #[arg(long)]
    pub name: ResourceName,
    /// URL-safe id [default: derived from the name]
    #[arg(long)]
    pub slug: Option<Slug>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// Only the runner with exactly this name
    #[arg(long)]
    pub name: Option<String>,
    /// Only runners whose name or slug contains this (case-insensitive)
    #[arg(long)]
    pub search: Option<String>,
    /// List archived runners instead of active ones
    #[arg(long)]
    pub archived: bool,
    #[command(flatten)]
    pub pagination: PaginationArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RunnerArg {
    /// UUID or slug of the runner
    pub runner: ResourceId,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["name", "slug", "archive", "unarchive"])
))]
pub struct UpdateArgs {
    /// UUID or slug of the runner
    pub runner: ResourceId,
    /// New display name
    #[arg(long)]
    pub name: Option<ResourceName>,
    /// New slug (update `runner up --runner` on the machine if it uses the slug)
    #[arg(long)]
    pub slug: Option<Slug>,
    /// Archive the runner: it can no longer authenticate
    #[arg(long, conflicts_with = "unarchive")]
    pub archive: bool,
    /// Bring an archived runner back
    #[arg(long)]
    pub unarchive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct AddSpecArgs {
    /// UUID or slug of the runner
    pub runner: ResourceId,
    /// UUID or slug of the Spec
    #[arg(long)]
    pub spec: ResourceId,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RemoveSpecArgs {
    /// UUID or slug of the runner
    pub runner: ResourceId,
    /// UUID or slug of the Spec
    pub spec: ResourceId,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListSpecsArgs {
    /// UUID or slug of the runner
    pub runner: ResourceId,
    #[command(flatten)]
    pub pagination: PaginationArgs,
}

impl From<UpdateArgs> for JsonUpdateRunner {
    fn from(args: UpdateArgs) -> Self {
        Self {
            name: args.name,
            slug: args.slug,
            archived: flag_pair(args.archive, args.unarchive),
        }
    }
}

pub async fn run(ctx: &Context, command: RunnerCommand) -> anyhow::Result<()> {
    match command {
        RunnerCommand::Create(args) => {
            let body = JsonNewRunner {
                name: args.name,
                slug: args.slug,
            };
            let created = ctx.client.create_runner(&body).await?;
            show_key(
                ctx,
                &created,
                &format!("Created runner `{}`.", created.slug),
            )
        }
        RunnerCommand::List(args) => {
            let query = RunnerQuery {
                name: args.name,
                search: args.search,
                archived: args.archived.then_some(true),
            };
            let page = ctx
                .client
                .list_runners(&query, &(&args.pagination).into())
                .await?;
            output::emit_page(ctx.format, &page, table, "runner", "runners")
        }
        RunnerCommand::View(args) => {
            let runner = ctx.client.get_runner(&args.runner).await?;
            match ctx.format {
                Format::Json => output::emit_json(&runner),
                Format::Human => output::emit(&view(&runner)),
            }
        }
        RunnerCommand::Update(args) => {
            let id = args.runner.clone();
            let runner = ctx.client.update_runner(&id, &args.into()).await?;
            match ctx.format {
                Format::Json => output::emit_json(&runner),
                Format::Human => output::emit(&format!(
                    "Updated runner `{}`.\n\n{}",
                    runner.slug,
                    view(&runner)
                )),
            }
        }
        RunnerCommand::Key(args) => {
            let rotated = ctx.client.rotate_runner_key(&args.runner).await?;
            show_key(
                ctx,
                &rotated,
                &format!(
                    "Rotated the key of runner `{}`.\n\
                     The previous key stopped working immediately.",
                    rotated.slug
                ),
            )
        }
        RunnerCommand::Spec(command) => run_spec(ctx, command).await,
    }
}

async fn run_spec(ctx: &Context, command: RunnerSpecCommand) -> anyhow::Result<()> {
    match command {
        RunnerSpecCommand::Add(args) => {
            let body = JsonNewRunnerSpec {
                spec: args.spec.clone(),
            };
            let added = ctx.client.add_runner_spec(&args.runner, &body).await?;
            match ctx.format {
                Format::Json => output::emit_json(&added),
                Format::Human => output::emit(&format!(
                    "Runner `{}` now serves spec `{}` ({}).",
                    args.runner,
                    added.slug,
                    spec::summary(&added)
                )),
            }
        }
        RunnerSpecCommand::Remove(args) => {
            ctx.client
                .remove_runner_spec(&args.runner, &args.spec)
                .await?;
            match ctx.format {
                // The server answers 204 with no body, so there is no JSON to pass on.
                Format::Json => Ok(()),
                Format::Human => output::emit(&format!(
                    "Runner `{}` no longer serves spec `{}`.",
                    args.runner, args.spec
                )),
            }
        }
        RunnerSpecCommand::List(args) => {
            let page = ctx
                .client
                .list_runner_specs(&args.runner, &(&args.pagination).into())
                .await?;
            output::emit_page(ctx.format, &page, spec::table, "spec", "specs")
        }
    }
}

/// Prints a freshly issued runner key, the one time anyone can see it.
fn show_key(ctx: &Context, key: &JsonRunnerKey, headline: &str) -> anyhow::Result<()> {
    match ctx.format {
        Format::Json => output::emit_json(key),
        Format::Human => {
            let details = output::view(&[
                ("uuid", key.uuid.to_string()),
                ("slug", key.slug.to_string()),
                ("key", key.key.expose_secret().to_owned()),
            ]);
            output::emit(&format!(
                "{headline}\n\n{details}\n\n{}\n\n\
                 Start it on your hardware with:\n  \
                 runner up --host {} --runner {} --key <KEY>",
                output::shown_once("runner key"),
                ctx.client.host().as_str().trim_end_matches('/'),
                key.slug,
            ))
        }
    }
}

fn state(state: RunnerState) -> &'static str {
    match state {
        RunnerState::Idle => "idle",
        RunnerState::Busy => "busy",
        RunnerState::Offline => "offline",
    }
}

fn spec_slugs(runner: &JsonRunner) -> String {
    if runner.specs.is_empty() {
        return "none".to_owned();
    }
    runner
        .specs
        .iter()
        .map(|spec| spec.slug.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn view(runner: &JsonRunner) -> String {
    let mut text = output::view(&[
        ("name", runner.name.to_string()),
        ("slug", runner.slug.to_string()),
        ("uuid", runner.uuid.to_string()),
        ("state", state(runner.state).to_owned()),
        (
            "current job",
            runner
                .current_job
                .map_or_else(|| "none".to_owned(), |job| job.to_string()),
        ),
        (
            "last seen",
            output::time_or(runner.last_seen.as_ref(), "never"),
        ),
        ("archived", output::time_or(runner.archived.as_ref(), "no")),
        ("created", output::time(&runner.created)),
        ("modified", output::time(&runner.modified)),
        ("specs", runner.specs.len().to_string()),
    ]);
    for spec in &runner.specs {
        text.push_str(&format!("\n  {}: {}", spec.slug, spec::summary(spec)));
    }
    text
}

fn table(runners: &[JsonRunner]) -> comfy_table::Table {
    let mut table = output::table(["SLUG", "NAME", "UUID", "STATE", "SPECS", "LAST SEEN"]);
    for runner in runners {
        table.add_row([
            runner.slug.to_string(),
            runner.name.to_string(),
            runner.uuid.to_string(),
            state(runner.state).to_owned(),
            spec_slugs(runner),
            output::time_or(runner.last_seen.as_ref(), "never"),
        ]);
    }
    table
}
