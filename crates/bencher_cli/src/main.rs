//! `bencher`: the command-line interface of a self-hosted Bencher API server.

mod alert;
mod cli;
mod image;
mod job;
mod output;
mod pagination;
mod perf;
mod project;
mod report;
mod run;
mod runner;
mod server;
mod spec;
mod threshold;
mod token;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let hints = cli.hints();
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = hints.for_error(&err) {
                eprintln!("hint: {hint}");
            }
            if err.is::<run::Interrupted>() {
                // What a shell reports for a command stopped by SIGINT.
                return ExitCode::from(130);
            }
            ExitCode::FAILURE
        }
    }
}
