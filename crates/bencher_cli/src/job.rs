//! `bencher job …`: list a project's jobs, view one (config with environment values
//! redacted by the server, and its output once recorded), and cancel one; and how a Job
//! is shown, which `bencher run` shares.

use bencher_types::protocol::IterationResult;
use bencher_types::{Direction, JobQuery, JobStatus, JobUuid, JsonJob, Pagination, ResourceId};
use clap::{Args, Subcommand};

use crate::cli::Context;
use crate::output::{self, Format};
use crate::pagination::Order;
use crate::spec;

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum JobCommand {
    /// List a project's jobs, oldest first unless `--direction desc`
    List(ListArgs),
    /// Show one job: status, Spec, runner, times, config and output
    View(JobArgs),
    /// Cancel a pending, claimed or running job
    Cancel(JobArgs),
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// Only jobs in this status: pending, claimed, running, completed, processed, failed
    /// or canceled
    #[arg(long)]
    pub status: Option<JobStatus>,
    #[command(flatten)]
    pub pagination: JobPaginationArgs,
}

/// The shared pagination flags without `--sort`: jobs have no name, so they sort by
/// submission time only (the server refuses `sort=name`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct JobPaginationArgs {
    /// Items per page, 1 to 255 [default: 25]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(bencher_types::MAX_PER_PAGE)))]
    pub per_page: Option<u32>,
    /// Page number, from 1 [default: 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: Option<u32>,
    /// Order by submission time [default: asc, oldest first]
    #[arg(long, value_enum)]
    pub direction: Option<Order>,
}

impl From<&JobPaginationArgs> for Pagination {
    fn from(args: &JobPaginationArgs) -> Self {
        Self {
            per_page: args.per_page,
            page: args.page,
            sort: None,
            direction: args.direction.map(|order| match order {
                Order::Asc => Direction::Asc,
                Order::Desc => Direction::Desc,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct JobArgs {
    /// UUID or slug of the project
    pub project: ResourceId,
    /// UUID of the job (printed by `bencher run`, listed by `bencher job list`)
    pub job: JobUuid,
}

pub async fn run(ctx: &Context, command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::List(args) => {
            let query = JobQuery {
                status: args.status,
            };
            let page = ctx
                .client
                .list_jobs(&args.project, &query, &(&args.pagination).into())
                .await?;
            match ctx.format {
                Format::Json => output::emit_json(&page.items),
                Format::Human => {
                    if !page.items.is_empty() {
                        output::emit(&table(&page.items).to_string())?;
                    }
                    output::emit(&output::footer(page.items.len(), page.total, "job", "jobs"))
                }
            }
        }
        JobCommand::View(args) => {
            let job = ctx.client.get_job(&args.project, args.job).await?;
            match ctx.format {
                Format::Json => output::emit_json(&job),
                Format::Human => {
                    output::emit(&view(&job))?;
                    if job.status.is_finished() {
                        output::emit(&format!("\n{}", iterations(&job)))?;
                    }
                    Ok(())
                }
            }
        }
        JobCommand::Cancel(args) => {
            let job = ctx.client.cancel_job(&args.project, args.job).await?;
            match ctx.format {
                Format::Json => output::emit_json(&job),
                Format::Human => {
                    output::emit(&format!("Canceled job {}.\n\n{}", job.uuid, view(&job)))
                }
            }
        }
    }
}

pub fn table(jobs: &[JsonJob]) -> comfy_table::Table {
    let mut table = output::table(["UUID", "STATUS", "SPEC", "IMAGE", "CREATED", "ENDED"]);
    for job in jobs {
        table.add_row([
            job.uuid.to_string(),
            job.status.to_string(),
            job.spec.slug.to_string(),
            image(job),
            output::time(&job.created),
            output::time_or(job.ended.as_ref(), "-"),
        ]);
    }
    table
}

/// The reference as submitted, or the digest it resolved to when the server kept none.
fn image(job: &JsonJob) -> String {
    job.config
        .image
        .clone()
        .unwrap_or_else(|| job.config.digest.clone())
}

/// Every field of a job but its output, aligned.
pub fn view(job: &JsonJob) -> String {
    let config = &job.config;
    let mut rows = vec![
        ("uuid", job.uuid.to_string()),
        ("status", job.status.to_string()),
    ];
    if let Some(error) = &job.error {
        rows.push(("error", error.clone()));
    }
    rows.extend([
        ("project", job.project.to_string()),
        ("report", job.report.to_string()),
        (
            "spec",
            format!("{} ({})", job.spec.slug, spec::summary(&job.spec)),
        ),
        (
            "runner",
            match job.runner {
                Some(runner) => runner.to_string(),
                None if job.status.is_finished() => "none".to_owned(),
                None => "none yet".to_owned(),
            },
        ),
        ("priority", job.priority.to_string()),
        ("image", image(job)),
        ("digest", config.digest.clone()),
        (
            "entrypoint",
            argv_or(config.entrypoint.as_deref(), "image's"),
        ),
        ("cmd", argv_or(config.cmd.as_deref(), "image's")),
        ("env", env(job)),
        ("timeout", format!("{} s", config.timeout)),
        ("iterations", config.iter.unwrap_or(1).to_string()),
        (
            "files",
            match config.file_paths.as_deref() {
                Some(paths) if !paths.is_empty() => paths.join(", "),
                _ => "none".to_owned(),
            },
        ),
        (
            "build time",
            output::yes_no(config.build_time == Some(true)),
        ),
        ("file size", output::yes_no(config.file_size == Some(true))),
        (
            "allow failure",
            output::yes_no(config.allow_failure == Some(true)),
        ),
        ("created", output::time(&job.created)),
        ("claimed", output::time_or(job.claimed.as_ref(), "-")),
        ("started", output::time_or(job.started.as_ref(), "-")),
        ("ended", output::time_or(job.ended.as_ref(), "-")),
        (
            "last heartbeat",
            output::time_or(job.last_heartbeat.as_ref(), "-"),
        ),
        ("modified", output::time(&job.modified)),
    ]);
    output::view(&rows)
}

/// `NAME=***, …` as the server sent it: it replaces every value, since any may be a
/// secret, so the CLI has nothing to hide itself.
fn env(job: &JsonJob) -> String {
    match &job.config.env {
        Some(env) if !env.is_empty() => env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_owned(),
    }
}

/// An argv as a shell would take it back, or `(the <whose>)` when the image's own
/// applies.
fn argv_or(argv: Option<&[String]>, whose: &str) -> String {
    match argv {
        Some(argv) => argv
            .iter()
            .map(|item| shell_quote(item))
            .collect::<Vec<_>>()
            .join(" "),
        None => format!("({whose})"),
    }
}

/// `item` unchanged when a POSIX shell would read it as one word, otherwise in single
/// quotes, so `sh -c 'echo hi'` is not shown as four words.
fn shell_quote(item: &str) -> String {
    let plain = !item.is_empty()
        && item
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        item.to_owned()
    } else {
        format!("'{}'", item.replace('\'', r"'\''"))
    }
}

/// Each iteration's exit code, stdout, stderr and collected files, or a sentence saying
/// there is nothing.
pub fn iterations(job: &JsonJob) -> String {
    let results = match job.output.as_deref() {
        Some(results) if !results.is_empty() => results,
        _ => return "No output recorded.".to_owned(),
    };
    let count = results.len();
    results
        .iter()
        .enumerate()
        .map(|(index, result)| iteration(index + 1, count, result))
        .collect::<Vec<_>>()
        .join("\n")
}

fn iteration(number: usize, count: usize, result: &IterationResult) -> String {
    let mut text = format!(
        "Iteration {number} of {count}: exit code {}\n",
        result.exit_code
    );
    let mut section = |title: &str, body: Option<&str>| match body {
        Some(body) if !body.is_empty() => {
            text.push_str(&format!("--- {title} ---\n{body}"));
            if !body.ends_with('\n') {
                text.push('\n');
            }
        }
        _ => text.push_str(&format!("--- {title} (empty) ---\n")),
    };
    section("stdout", result.stdout.as_deref());
    section("stderr", result.stderr.as_deref());
    for (path, contents) in result.output.iter().flatten() {
        section(&format!("file {path}"), Some(contents));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        let argv = [
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            "echo 'hi' > out".to_owned(),
            String::new(),
            "KEY=v,w".to_owned(),
        ];
        assert_eq!(
            argv_or(Some(&argv), "image's"),
            r#"/bin/sh -c 'echo '\''hi'\'' > out' '' KEY=v,w"#
        );
        assert_eq!(argv_or(None, "image's"), "(image's)");
    }

    #[test]
    fn iterations_show_every_stream() {
        let result = IterationResult {
            exit_code: 3,
            stdout: Some("12 ns/iter".to_owned()),
            stderr: None,
            output: Some(BTreeMap::from([(
                "/out/result.json".to_owned(),
                "{}\n".to_owned(),
            )])),
            ..Default::default()
        };
        assert_eq!(
            iteration(2, 5, &result),
            "Iteration 2 of 5: exit code 3\n\
             --- stdout ---\n12 ns/iter\n\
             --- stderr (empty) ---\n\
             --- file /out/result.json ---\n{}\n"
        );
    }
}
