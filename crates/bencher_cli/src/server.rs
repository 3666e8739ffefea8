//! `bencher server …`: the API server's version and health.

use anyhow::bail;
use clap::Subcommand;

use crate::cli::Context;
use crate::output::{self, Format};

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ServerCommand {
    /// Show the API server's version
    Version,
    /// Check the API server and its database (exits 1 unless healthy)
    Health,
}

pub async fn run(ctx: &Context, command: ServerCommand) -> anyhow::Result<()> {
    match command {
        ServerCommand::Version => {
            let version = ctx.client.server_version().await?;
            match ctx.format {
                Format::Json => output::emit_json(&version),
                Format::Human => output::emit(&output::view(&[
                    ("server", version.version),
                    ("host", ctx.client.host().to_string()),
                    ("cli", env!("CARGO_PKG_VERSION").to_owned()),
                ])),
            }
        }
        ServerCommand::Health => {
            let health = ctx.client.server_health().await?;
            match ctx.format {
                Format::Json => output::emit_json(&health)?,
                Format::Human => output::emit(&output::view(&[
                    ("status", health.status.clone()),
                    ("database", health.database.clone()),
                ]))?,
            }
            // Scripts and probes read the exit status, not the text.
            if health.status != "ok" {
                bail!(
                    "the server at {} is {} (database: {})",
                    ctx.client.host(),
                    health.status,
                    health.database
                );
            }
            Ok(())
        }
    }
}
