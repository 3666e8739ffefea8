//! The Bencher API server as a library: `App::open` prepares the data directory, the
//! store and the first admin token; `App::serve` runs the REST API, the registry and the
//! runner channels on a listener the caller bound, with the background tasks (upload
//! sweeper, job timeouts, report processing, and on PostgreSQL the notification
//! listener), until the
//! caller's shutdown signal. The `bencher-server` binary is a thin wrapper, and tests run
//! the same code on `127.0.0.1:0`.

pub mod adapter;
mod auth;
pub mod blobs;
mod bootstrap;
pub mod channel;
mod clock;
pub mod config;
mod http;
pub mod queue;
pub mod registry;
pub mod report;
pub mod store;
pub mod threshold;
pub mod update;

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
    #[error("cannot open blob storage")]
    Blobs(#[from] blobs::BlobError),
    #[error("cannot load the registry token key")]
    TokenKey(#[source] store::StoreError),
    #[error("cannot load the runner update artifacts")]
    Update(#[source] update::UpdateLoadError),
}

/// A server ready to serve: data directory, database and admin token in place.
pub struct App {
    config: Config,
    store: Store,
    clock: Clock,
    blobs: blobs::BlobStore,
    oci_tokens: registry::token::RegistryTokens,
    hub: channel::Hub,
    /// What runners are offered to update to; `None` without `[update]`.
    releases: Option<std::sync::Arc<update::Releases>>,
}

impl App {
    pub async fn open(config: Config, clock: Clock) -> Result<Self, StartError> {
        let releases = match config.update.clone() {
            None => None,
            // First, so a bad artifact stops the start before anything is created. Hashing
            // reads whole binaries: off the runtime's threads.
            Some(update) => {
                let releases = tokio::task::spawn_blocking(move || update::Releases::load(&update))
                    .await
                    .expect("loading the update artifacts does not panic")
                    .map_err(StartError::Update)?;
                tracing::info!(
                    version = %releases.version, channel = ?releases.channel,
                    platforms = releases.artifacts.len(), "runner updates offered"
                );
                Some(std::sync::Arc::new(releases))
            }
        };
        bootstrap::create_data_dir(&config.data_dir).map_err(StartError::DataDir)?;
        let store = Store::open(&config.database_url()).await?;
        tracing::info!(backend = %store.backend(), "database ready");
        bootstrap::admin_token(&store, &config, &clock)
            .await
            .map_err(StartError::Bootstrap)?;
        let blobs = blobs::BlobStore::open(&config.blob_config()).await?;
        tracing::info!(storage = %blobs.describe(), "blob storage ready");
        let oci_tokens = registry::token::RegistryTokens::new(
            store
                .registry_token_key()
                .await
                .map_err(StartError::TokenKey)?,
        );
        let hub = channel::Hub::new(store.clone());
        Ok(Self {
            config,
            store,
            clock,
            blobs,
            oci_tokens,
            hub,
            releases,
        })
    }

    pub fn blobs(&self) -> &blobs::BlobStore {
        &self.blobs
    }

    /// Issues registry tokens; the jobs issue hands per-job pull tokens to runners.
    pub fn registry_tokens(&self) -> &registry::token::RegistryTokens {
        &self.oci_tokens
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The live runner channels of this process.
    pub fn hub(&self) -> &channel::Hub {
        &self.hub
    }

    fn timeouts(&self) -> queue::Timeouts {
        queue::Timeouts {
            heartbeat: self.config.heartbeat_timeout,
            grace: self.config.job_grace_period,
        }
    }

    /// The HTTP application, for serving or for driving in-process.
    pub fn router(&self) -> axum::Router {
        http::router(http::Services {
            store: self.store.clone(),
            clock: self.clock.clone(),
            blobs: self.blobs.clone(),
            oci_tokens: self.oci_tokens.clone(),
            limits: registry::RegistryLimits {
                max_manifest_size: self.config.max_manifest_size.bytes(),
                max_blob_size: self.config.max_blob_size.bytes(),
            },
            request_limit: usize::try_from(self.config.request_limit.bytes()).unwrap_or(usize::MAX),
            hub: self.hub.clone(),
            timeouts: self.timeouts(),
            max_output_size: self.config.max_output_size.bytes(),
            releases: self.releases.clone(),
        })
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish and closes
    /// the database.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        self.serve_router(router, listener, shutdown).await
    }

    /// `serve` with a router the caller derived from `router()`, for embedders and tests
    /// that add their own layers (a request log, say).
    pub async fn serve_router(
        self,
        router: axum::Router,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let mut tasks = vec![
            tokio::spawn(sweep_uploads_forever(
                self.store.clone(),
                self.blobs.clone(),
                self.clock.clone(),
            )),
            tokio::spawn(channel::timeouts::enforce_forever(
                self.store.clone(),
                self.hub.clone(),
                self.clock.clone(),
                self.timeouts(),
            )),
        ];
        tasks.push(tokio::spawn(report::process_forever(
            self.store.clone(),
            self.blobs.clone(),
            self.clock.clone(),
            self.hub.clone(),
            self.config.max_output_size.bytes(),
        )));
        if self.store.backend() == store::Backend::Postgres {
            tasks.push(tokio::spawn(channel::notify::listen_forever(
                self.config.database_url(),
                self.hub.clone(),
            )));
        }
        let hub = self.hub.clone();
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Upgraded connections are not requests the graceful shutdown waits
                // for: close the runner channels so they end before the store does.
                hub.shut_down();
            })
            .await;
        for task in &tasks {
            task.abort();
        }
        self.hub.shut_down();
        self.hub
            .wait_closed(std::time::Duration::from_secs(5))
            .await;
        self.store.close().await;
        served
    }
}

/// Every few minutes, cancels upload sessions abandoned for a day, so interrupted pushes
/// never fill the disk.
async fn sweep_uploads_forever(store: Store, blobs: blobs::BlobStore, clock: Clock) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        interval.tick().await;
        match registry::gc::sweep_uploads(
            &store,
            &blobs,
            clock.now(),
            registry::gc::UPLOAD_MAX_IDLE,
        )
        .await
        {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "abandoned upload sessions removed"),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "sweeping upload sessions failed")
            }
        }
    }
}
