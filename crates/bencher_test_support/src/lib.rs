//! Dev-only helpers for integration tests: a real `bencher-server` (the same library the
//! binary runs) on `127.0.0.1:0`, with its own temporary data directory and, for
//! PostgreSQL, its own freshly created database that is dropped afterwards.
//!
//! Backends: every suite runs on SQLite; the PostgreSQL variant runs when
//! `BENCHER_TEST_POSTGRES_URL` points at a server whose user may create databases. Without
//! it the variant is skipped with a printed reason, except under `CI`, where a missing
//! database is a failure rather than a silent pass.

pub mod image;

use std::time::Duration;

use bencher_server::store::Store;
use bencher_server::{App, Clock, Config};
use bencher_types::ApiToken;
use reqwest::{Method, Url};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use reqwest;

/// Environment variable naming the PostgreSQL server for the PostgreSQL variants.
pub const POSTGRES_URL_VAR: &str = "BENCHER_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs `$test(backend)` on each backend: `#[tokio::test]` functions `sqlite` and
/// `postgres` inside a module named after the test.
#[macro_export]
macro_rules! backend_tests {
    ($($test:ident),+ $(,)?) => {
        $(
            mod $test {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$test($crate::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if $crate::postgres_available(concat!(module_path!(), "::postgres")) {
                        super::$test($crate::Backend::Postgres).await;
                    }
                }
            }
        )+
    };
}

/// Whether the PostgreSQL variant can run; prints why not when it cannot. Panics under
/// CI, where the database must be there.
pub fn postgres_available(test: &str) -> bool {
    if std::env::var_os(POSTGRES_URL_VAR).is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {POSTGRES_URL_VAR} must be set in CI");
    }
    eprintln!("SKIPPED {test}: {POSTGRES_URL_VAR} is not set (no PostgreSQL to test against)");
    false
}

/// A database created for one test and dropped when the test ends.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl PostgresDatabase {
    async fn create() -> (Self, String) {
        let admin_url = std::env::var(POSTGRES_URL_VAR).expect("checked by postgres_available");
        let name = format!("bencher_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let mut url = Url::parse(&admin_url).expect("valid PostgreSQL URL");
        url.set_path(&name);
        (Self { admin_url, name }, url.to_string())
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        // Drop may run inside the test's runtime, so the cleanup gets a thread and a
        // runtime of its own. FORCE ends connections the server left open.
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                if let Ok(mut conn) = sqlx::AnyConnection::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Method and path of every request a test server received, so tests can prove what a
/// client did not ask for (a cached pull makes no blob requests).
#[derive(Clone, Default)]
struct RequestLog(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl RequestLog {
    fn record(&self, method: &reqwest::Method, path: &str) {
        if let Ok(mut log) = self.0.lock() {
            log.push((method.to_string(), path.to_owned()));
        }
    }
}

/// A running server owned by one test.
pub struct TestServer {
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: Url,
    /// The admin token the server bootstrapped.
    pub admin_token: ApiToken,
    pub clock: Clock,
    config: Config,
    store: Store,
    blobs: bencher_server::blobs::BlobStore,
    registry_tokens: bencher_server::registry::token::RegistryTokens,
    database_url: Option<String>,
    data_dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    http: reqwest::Client,
    requests: RequestLog,
    // Declared last: dropped after the server stopped.
    _postgres: Option<PostgresDatabase>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server after `configure` adjusted its configuration.
    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let mut config = Config::new(data_dir.path().join("data"));
        let postgres = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let (database, url) = PostgresDatabase::create().await;
                config.database_url = Some(url);
                Some(database)
            }
        };
        configure(&mut config);
        Self::launch(config, data_dir, postgres, Clock::default()).await
    }

    /// Starts a second server process of the same deployment as `other`: the same
    /// database and blob storage, admin token and clock, its own data directory and port.
    /// `other` keeps owning the PostgreSQL test database, so drop this one first.
    pub async fn start_sharing(other: &TestServer) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let mut config = other.config.clone();
        config.data_dir = data_dir.path().join("data");
        config.database_url = Some(other.config.database_url());
        config.blob_store = Some(match other.config.blob_config() {
            bencher_server::blobs::BlobConfig::Local { dir } => dir.display().to_string(),
            bencher_server::blobs::BlobConfig::ObjectStore { url } => url,
        });
        config.admin_token = Some(other.admin_token.clone());
        Self::launch(config, data_dir, None, other.clock.clone()).await
    }

    /// The WebSocket URL of `path` on this server (`ws://127.0.0.1:…/path`).
    pub fn ws_url(&self, path: &str) -> String {
        let mut url = self.url.join(path).expect("valid path");
        url.set_scheme("ws")
            .expect("ws is a valid scheme for an http URL");
        url.to_string()
    }

    /// Stops the server gracefully and starts a new one on the same data directory and
    /// database, as an operator's restart would (the clock keeps its offset).
    pub async fn restart(mut self) -> Self {
        self.shutdown_now().await;
        let config = self.config.clone();
        let clock = self.clock.clone();
        let data_dir = std::mem::replace(
            &mut self.data_dir,
            tempfile::tempdir().expect("placeholder dir"),
        );
        let postgres = self._postgres.take();
        Self::launch(config, data_dir, postgres, clock).await
    }

    async fn launch(
        config: Config,
        data_dir: TempDir,
        postgres: Option<PostgresDatabase>,
        clock: Clock,
    ) -> Self {
        let database_url = config.database_url.clone();
        let app = App::open(config.clone(), clock.clone())
            .await
            .unwrap_or_else(|e| panic!("server start: {}", bencher_server::error_chain(&e)));
        let admin_token = match &config.admin_token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(config.admin_token_path())
                .expect("admin token file")
                .trim()
                .parse()
                .expect("valid admin token"),
        };
        let store = app.store().clone();
        let blobs = app.blobs().clone();
        let registry_tokens = app.registry_tokens().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let url = Url::parse(&format!(
            "http://{}",
            listener.local_addr().expect("local address")
        ))
        .expect("server URL");
        let (shutdown, stop) = oneshot::channel::<()>();
        let requests = RequestLog::default();
        let log = requests.clone();
        let router = app.router().layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                log.record(request.method(), request.uri().path());
                next.run(request)
            },
        ));
        let task = tokio::spawn(app.serve_router(router, listener, async {
            let _ = stop.await;
        }));
        Self {
            url,
            admin_token,
            config,
            clock,
            store,
            blobs,
            registry_tokens,
            database_url,
            data_dir,
            shutdown: Some(shutdown),
            task: Some(task),
            requests,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            _postgres: postgres,
        }
    }

    /// Every request the server received so far: method and path.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.requests.0.lock().expect("request log").clone()
    }

    /// How many requests matched `method` and a path containing `needle`.
    pub fn count_requests(&self, method: &str, needle: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(m, p)| m == method && p.contains(needle))
            .count()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn blobs(&self) -> &bencher_server::blobs::BlobStore {
        &self.blobs
    }

    pub fn registry_tokens(&self) -> &bencher_server::registry::token::RegistryTokens {
        &self.registry_tokens
    }

    /// The configured database URL; `None` for SQLite in the data directory.
    pub fn database_url(&self) -> Option<&str> {
        self.database_url.as_deref()
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.data_dir.path().join("data")
    }

    /// A request to `path` with the admin token.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request_as(method, path, Some(self.admin_token.expose_secret()))
    }

    /// A request to `path` with the given bearer token, or none.
    pub fn request_as(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let url = self.url.join(path).expect("valid path");
        let request = self.http.request(method, url);
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown_now().await;
    }

    async fn shutdown_now(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
