//! `bencher`: the command-line interface of a self-hosted Bencher API server.

mod cli;
mod image;
mod output;
mod pagination;
mod project;
mod runner;
mod server;
mod spec;
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
            ExitCode::FAILURE
        }
    }
}
