//! `bencher spec …`: create, list, view, update and delete Specs, and how a Spec is shown.

use bencher_types::{
    Architecture, ByteSize, Cpu, JsonNewSpec, JsonSpec, JsonUpdateSpec, Os, ResourceId,
    ResourceName, Sandbox, Slug, SpecQuery,
};
use clap::{ArgGroup, Args, Subcommand};

use crate::cli::{Context, flag_pair};
use crate::output::{self, Format};
use crate::pagination::PaginationArgs;

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum SpecCommand {
    /// Create a Spec: the hardware a runner provides
    Create(CreateArgs),
    /// List Specs
    List(ListArgs),
    /// Show one Spec
    View(ViewArgs),
    /// Rename a Spec, make it the fallback, or archive it (hardware never changes)
    Update(UpdateArgs),
    /// Delete a Spec (refused while a runner or a job uses it)
    Delete(ViewArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CreateArgs {
    /// Display name, such as "Intel v1"
    #[arg(long)]
    pub name: ResourceName,
    /// URL-safe id [default: derived from the name]
    #[arg(long)]
    pub slug: Option<Slug>,
    /// Operating system: linux, macos or windows
    #[arg(long)]
    pub os: Os,
    /// CPU architecture: x86_64 or aarch64
    #[arg(long)]
    pub architecture: Architecture,
    /// Sandbox: firecracker, qemu, gvisor or container [default: none, jobs run on the
    /// host and only on runners started with --danger-allow-no-sandbox]
    #[arg(long)]
    pub sandbox: Option<Sandbox>,
    /// Number of CPUs
    #[arg(long)]
    pub cpu: Cpu,
    /// Memory, in bytes or with a unit (48GiB)
    #[arg(long)]
    pub memory: ByteSize,
    /// Disk, in bytes or with a unit (128GiB)
    #[arg(long)]
    pub disk: ByteSize,
    /// Let jobs on this Spec use the network
    #[arg(long)]
    pub network: bool,
    /// Make this the fallback Spec, used by jobs that name none
    #[arg(long)]
    pub fallback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// Only the Spec with exactly this name
    #[arg(long)]
    pub name: Option<String>,
    /// Only Specs whose name or slug contains this (case-insensitive)
    #[arg(long)]
    pub search: Option<String>,
    /// List archived Specs instead of active ones
    #[arg(long)]
    pub archived: bool,
    #[command(flatten)]
    pub pagination: PaginationArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ViewArgs {
    /// UUID or slug of the Spec
    pub spec: ResourceId,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(group(
    ArgGroup::new("change")
        .required(true)
        .multiple(true)
        .args(["name", "slug", "fallback", "no_fallback", "archive", "unarchive"])
))]
pub struct UpdateArgs {
    /// UUID or slug of the Spec
    pub spec: ResourceId,
    /// New display name
    #[arg(long)]
    pub name: Option<ResourceName>,
    /// New slug
    #[arg(long)]
    pub slug: Option<Slug>,
    /// Make this the fallback Spec
    #[arg(long, conflicts_with = "no_fallback")]
    pub fallback: bool,
    /// Stop this Spec being the fallback
    #[arg(long)]
    pub no_fallback: bool,
    /// Archive the Spec: no new jobs are scheduled on it
    #[arg(long, conflicts_with = "unarchive")]
    pub archive: bool,
    /// Bring an archived Spec back
    #[arg(long)]
    pub unarchive: bool,
}

impl From<CreateArgs> for JsonNewSpec {
    fn from(args: CreateArgs) -> Self {
        Self {
            name: args.name,
            slug: args.slug,
            os: args.os,
            architecture: args.architecture,
            sandbox: args.sandbox,
            cpu: args.cpu,
            memory: args.memory,
            disk: args.disk,
            network: args.network,
            fallback: args.fallback,
        }
    }
}

impl From<UpdateArgs> for JsonUpdateSpec {
    fn from(args: UpdateArgs) -> Self {
        Self {
            name: args.name,
            slug: args.slug,
            fallback: flag_pair(args.fallback, args.no_fallback),
            archived: flag_pair(args.archive, args.unarchive),
        }
    }
}

pub async fn run(ctx: &Context, command: SpecCommand) -> anyhow::Result<()> {
    match command {
        SpecCommand::Create(args) => {
            let spec = ctx.client.create_spec(&args.into()).await?;
            show(ctx.format, &spec, "Created spec")
        }
        SpecCommand::List(args) => {
            let query = SpecQuery {
                name: args.name,
                search: args.search,
                archived: args.archived.then_some(true),
            };
            let page = ctx
                .client
                .list_specs(&query, &(&args.pagination).into())
                .await?;
            output::emit_page(ctx.format, &page, table, "spec", "specs")
        }
        SpecCommand::View(args) => {
            let spec = ctx.client.get_spec(&args.spec).await?;
            match ctx.format {
                Format::Json => output::emit_json(&spec),
                Format::Human => output::emit(&view(&spec)),
            }
        }
        SpecCommand::Update(args) => {
            let id = args.spec.clone();
            let spec = ctx.client.update_spec(&id, &args.into()).await?;
            show(ctx.format, &spec, "Updated spec")
        }
        SpecCommand::Delete(args) => {
            ctx.client.delete_spec(&args.spec).await?;
            match ctx.format {
                // The server answers 204 with no body, so there is no JSON to pass on.
                Format::Json => Ok(()),
                Format::Human => output::emit(&format!("Deleted spec `{}`.", args.spec)),
            }
        }
    }
}

fn show(format: Format, spec: &JsonSpec, done: &str) -> anyhow::Result<()> {
    match format {
        Format::Json => output::emit_json(spec),
        Format::Human => output::emit(&format!("{done} `{}`.\n\n{}", spec.slug, view(spec))),
    }
}

pub fn sandbox(spec: &JsonSpec) -> String {
    spec.sandbox
        .map_or_else(|| "none (runs on the host)".to_owned(), |s| s.to_string())
}

/// `linux x86_64, firecracker, 4 CPU, 48 GiB memory, 128 GiB disk`: one line per Spec
/// where a full table would be too much, such as inside a runner's view.
pub fn summary(spec: &JsonSpec) -> String {
    format!(
        "{} {}, {}, {} CPU, {} memory, {} disk{}",
        spec.os,
        spec.architecture,
        spec.sandbox.map_or("no sandbox", Sandbox::as_str),
        spec.cpu,
        spec.memory.human(),
        spec.disk.human(),
        if spec.network { ", network" } else { "" },
    )
}

pub fn view(spec: &JsonSpec) -> String {
    output::view(&[
        ("name", spec.name.to_string()),
        ("slug", spec.slug.to_string()),
        ("uuid", spec.uuid.to_string()),
        ("os", spec.os.to_string()),
        ("architecture", spec.architecture.to_string()),
        ("sandbox", sandbox(spec)),
        ("cpu", spec.cpu.to_string()),
        ("memory", spec.memory.human()),
        ("disk", spec.disk.human()),
        ("network", output::yes_no(spec.network)),
        ("fallback", output::yes_no(spec.fallback)),
        ("archived", output::time_or(spec.archived.as_ref(), "no")),
        ("created", output::time(&spec.created)),
        ("modified", output::time(&spec.modified)),
    ])
}

pub fn table(specs: &[JsonSpec]) -> comfy_table::Table {
    let mut table = output::table([
        "SLUG", "NAME", "OS", "ARCH", "SANDBOX", "CPU", "MEMORY", "DISK", "NETWORK", "FALLBACK",
    ]);
    for spec in specs {
        table.add_row([
            spec.slug.to_string(),
            spec.name.to_string(),
            spec.os.to_string(),
            spec.architecture.to_string(),
            spec.sandbox.map_or("none", Sandbox::as_str).to_owned(),
            spec.cpu.to_string(),
            spec.memory.human(),
            spec.disk.human(),
            output::yes_no(spec.network),
            output::yes_no(spec.fallback),
        ]);
    }
    table
}
