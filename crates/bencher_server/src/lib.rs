//! The Bencher API server as a library: `App::open` prepares the data directory, the
//! store and the first admin token; `App::serve` runs the REST API on a listener the
//! caller bound, until the caller's shutdown signal. The `bencher-server` binary is a
//! thin wrapper, and tests run the same code on `127.0.0.1:0`.

mod auth;
mod bootstrap;
mod clock;
pub mod config;
mod http;
pub mod store;

use std::future::Future;

pub use auth::hash_secret;
pub use clock::Clock;
pub use config::Config;
pub use http::error::error_chain;
pub use http::openapi;
use store::{OpenError, Store};
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot prepare the data directory")]
    DataDir(#[source] bootstrap::BootstrapFailed),
    #[error("cannot open the database")]
    Store(#[from] OpenError),
    #[error("cannot bootstrap the server")]
    Bootstrap(#[source] bootstrap::BootstrapFailed),
}

/// A server ready to serve: data directory, database and admin token in place.
pub struct App {
    config: Config,
    store: Store,
    clock: Clock,
}

impl App {
    pub async fn open(config: Config, clock: Clock) -> Result<Self, StartError> {
        bootstrap::create_data_dir(&config.data_dir).map_err(StartError::DataDir)?;
        let store = Store::open(&config.database_url()).await?;
        tracing::info!(backend = %store.backend(), "database ready");
        bootstrap::admin_token(&store, &config, &clock)
            .await
            .map_err(StartError::Bootstrap)?;
        Ok(Self {
            config,
            store,
            clock,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The HTTP application, for serving or for driving in-process.
    pub fn router(&self) -> axum::Router {
        let limit = usize::try_from(self.config.request_limit.bytes()).unwrap_or(usize::MAX);
        http::router(self.store.clone(), self.clock.clone(), limit)
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish and closes
    /// the database.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        self.store.close().await;
        Ok(())
    }
}
