//! `bencher project …`: create, list and view projects (each also a registry repository).

use bencher_types::{JsonNewProject, JsonProject, ProjectQuery, ResourceId, ResourceName, Slug};
use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::output::{self, Format};
use crate::pagination::PaginationArgs;

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ProjectCommand {
    /// Create a project
    Create(CreateArgs),
    /// List projects
    List(ListArgs),
    /// Show one project
    View(ViewArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CreateArgs {
    /// Display name, such as "My Project"
    #[arg(long)]
    pub name: ResourceName,
    /// URL-safe id, also the registry repository name [default: derived from the name]
    #[arg(long)]
    pub slug: Option<Slug>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// Only the project with exactly this name
    #[arg(long)]
    pub name: Option<String>,
    /// Only projects whose name or slug contains this (case-insensitive)
    #[arg(long)]
    pub search: Option<String>,
    #[command(flatten)]
    pub pagination: PaginationArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ViewArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
}

pub async fn run(ctx: &Context, command: ProjectCommand) -> anyhow::Result<()> {
    match command {
        ProjectCommand::Create(args) => {
            let body = JsonNewProject {
                name: args.name,
                slug: args.slug,
            };
            let project = ctx.client.create_project(&body).await?;
            match ctx.format {
                Format::Json => output::emit_json(&project),
                Format::Human => output::emit(&format!(
                    "Created project `{}`.\n\n{}",
                    project.slug,
                    view(ctx, &project)
                )),
            }
        }
        ProjectCommand::List(args) => {
            let query = ProjectQuery {
                name: args.name,
                search: args.search,
            };
            let page = ctx
                .client
                .list_projects(&query, &(&args.pagination).into())
                .await?;
            output::emit_page(ctx.format, &page, table, "project", "projects")
        }
        ProjectCommand::View(args) => {
            let project = ctx.client.get_project(&args.project).await?;
            match ctx.format {
                Format::Json => output::emit_json(&project),
                Format::Human => output::emit(&view(ctx, &project)),
            }
        }
    }
}

fn table(projects: &[JsonProject]) -> comfy_table::Table {
    let mut table = output::table(["SLUG", "NAME", "UUID", "CREATED"]);
    for project in projects {
        table.add_row([
            project.slug.to_string(),
            project.name.to_string(),
            project.uuid.to_string(),
            output::time(&project.created),
        ]);
    }
    table
}

fn view(ctx: &Context, project: &JsonProject) -> String {
    let host = ctx.client.host();
    let registry = match (host.host_str(), host.port_or_known_default()) {
        (Some(name), Some(port)) => format!("{name}:{port}/{}", project.slug),
        _ => project.slug.to_string(),
    };
    output::view(&[
        ("name", project.name.to_string()),
        ("slug", project.slug.to_string()),
        ("uuid", project.uuid.to_string()),
        ("images", registry),
        ("created", output::time(&project.created)),
        ("modified", output::time(&project.modified)),
    ])
}
