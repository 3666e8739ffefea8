//! `bencher-server`: reads the configuration, sets up logging, binds the listener and
//! serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use bencher_server::config::{LogFormat, ServerArgs};
use bencher_server::{App, Clock, Config, error_chain};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = ServerArgs::parse();
    let config = match Config::resolve(args, std::env::var("BENCHER_ADMIN_TOKEN").ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %error_chain(error.as_ref()), "server stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let listen = config.listen;
    // Installed before anything else, so a signal that arrives while starting up still
    // stops the server gracefully instead of killing it.
    let shutdown = shutdown_signal()?;
    let app = App::open(config, Clock::default()).await?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), "listening");
    app.serve(listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// A future that completes on the first SIGINT or SIGTERM; the handlers are installed
/// at once.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight requests"),
            _ = int.recv() => tracing::info!("SIGINT: finishing in-flight requests"),
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("BENCHER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
