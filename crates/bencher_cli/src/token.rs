//! `bencher token …`: create, list and revoke API tokens.

use bencher_types::{JsonCreatedToken, JsonNewToken, JsonToken, ResourceName, TokenUuid};
use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::output::{self, Format};
use crate::pagination::PaginationArgs;

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum TokenCommand {
    /// Create an API token and print it (shown only once)
    Create(CreateArgs),
    /// List API tokens (never their secrets)
    List(ListArgs),
    /// Revoke an API token: it stops working at once
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct CreateArgs {
    /// What the token is for, such as "CI"
    #[arg(long)]
    pub name: ResourceName,
    /// Allow the token to use admin endpoints (runners, specs, tokens)
    #[arg(long)]
    pub admin: bool,
    /// Lifetime in seconds [default: never expires]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub pagination: PaginationArgs,
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RevokeArgs {
    /// UUID of the token (from `bencher token list`)
    // Not named `token`: that id belongs to the global `--token`, and clap would mix them.
    #[arg(value_name = "UUID")]
    pub uuid: TokenUuid,
}

pub async fn run(ctx: &Context, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let body = JsonNewToken {
                name: args.name,
                admin: args.admin,
                ttl: args.ttl,
            };
            let created = ctx.client.create_token(&body).await?;
            match ctx.format {
                Format::Json => output::emit_json(&created),
                Format::Human => output::emit(&created_view(&created)),
            }
        }
        TokenCommand::List(args) => {
            let page = ctx.client.list_tokens(&(&args.pagination).into()).await?;
            output::emit_page(ctx.format, &page, table, "token", "tokens")
        }
        TokenCommand::Revoke(args) => {
            ctx.client.revoke_token(args.uuid).await?;
            match ctx.format {
                // The server answers 204 with no body, so there is no JSON to pass on.
                Format::Json => Ok(()),
                Format::Human => output::emit(&format!(
                    "Revoked API token {}: it no longer authenticates.",
                    args.uuid
                )),
            }
        }
    }
}

fn created_view(created: &JsonCreatedToken) -> String {
    let meta = &created.meta;
    let details = output::view(&[
        ("name", meta.name.to_string()),
        ("uuid", meta.uuid.to_string()),
        ("admin", output::yes_no(meta.admin)),
        ("expires", output::time_or(meta.expires.as_ref(), "never")),
        ("token", created.token.expose_secret().to_owned()),
    ]);
    format!(
        "Created API token `{}`.\n\n{details}\n\n{}\n\nUse it with --token or the BENCHER_API_TOKEN environment variable.",
        meta.name,
        output::shown_once("API token"),
    )
}

fn table(tokens: &[JsonToken]) -> comfy_table::Table {
    let mut table = output::table(["NAME", "UUID", "ADMIN", "CREATED", "EXPIRES", "REVOKED"]);
    for token in tokens {
        table.add_row([
            token.name.to_string(),
            token.uuid.to_string(),
            output::yes_no(token.admin),
            output::time(&token.created),
            output::time_or(token.expires.as_ref(), "never"),
            output::time_or(token.revoked.as_ref(), "no"),
        ]);
    }
    table
}
