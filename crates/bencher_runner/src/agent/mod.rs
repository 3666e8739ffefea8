//! The runner agent behind `runner up`: one WebSocket to the API server, over which it
//! claims Jobs, runs them and reports their results (the Runner Protocol,
//! `shared/design/protocol.md`).
//!
//! - `core`: the protocol as a pure state machine (`step(state, input) -> effects`): no
//!   IO, no clock reads; unit-tested transition by transition.
//! - `driver`: performs the core's effects (IO: the spool, job tasks, timers) and feeds
//!   it inputs; generic over the [`JobBackend`](driver::JobBackend) that runs jobs, so
//!   tests drive it with fakes.
//! - `link`: the WebSocket task (IO: the network): connect, reconnect with backoff, a
//!   401 stops the runner.
//! - `host`: the real backend (IO: the image cache, the registry, the executor) and the
//!   capability check at start.
//! - `tuned`: host tuning and the noise probe around each job's execution.
//! - `backoff`: reconnect delays (pure).
//!
//! Results survive everything but the disk: see `crate::spool`.

mod backoff;
pub mod core;
pub mod driver;
pub mod host;
pub mod link;
pub mod tuned;

use std::sync::Arc;
use std::time::Duration;

use bencher_types::protocol::RunnerMetadata;
use tokio::sync::mpsc;

use crate::cli::UpArgs;
use crate::image::{ImageCache, ImageError};
use crate::spool::{Spool, SpoolError};
use crate::tuning::{Leftover, Settings, Tuning};

pub use self::core::Exit;
use self::link::{LinkConfig, LinkSetupError};

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("{0}")]
    Dirs(String),
    #[error("cannot open the image cache")]
    Cache(#[source] ImageError),
    #[error("cannot open the spool")]
    Spool(#[source] SpoolError),
    #[error("cannot set up the connection to the server")]
    Link(#[source] LinkSetupError),
    #[error("cannot restore the host tuning left by a previous run")]
    Tuning(#[source] crate::tuning::TuningError),
    #[error(transparent)]
    Agent(#[from] driver::AgentError),
    #[error("this build fails to start on purpose (BENCHER_RUNNER_TEST_FAIL_START={0})")]
    TestFailStart(&'static str),
}

/// Link timings for a real server; tests use shorter ones.
pub fn link_config(args: &UpArgs) -> Result<LinkConfig, LinkSetupError> {
    Ok(LinkConfig {
        url: link::channel_url(&args.host, &args.runner)?,
        key: args.key.clone(),
        tls: link::tls_config()?,
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(30),
        send_timeout: Duration::from_secs(30),
        ping_interval: Duration::from_secs(15),
        silence_limit: Duration::from_secs(45),
        close_timeout: Duration::from_secs(5),
    })
}

/// What this runner says about itself in `ready`.
pub fn metadata() -> RunnerMetadata {
    RunnerMetadata {
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        version: crate::update::VERSION.to_owned(),
        channel: None,
        checksum: crate::update::own_checksum(),
    }
}

/// `runner up`: checks what this host can run, opens the cache and the spool, and runs
/// the agent until a signal drains it or the server refuses the key.
pub async fn up(args: UpArgs, signals: mpsc::UnboundedReceiver<()>) -> Result<Exit, UpError> {
    // Set only for the build tests/update.rs makes to see an update that cannot start
    // rolled back; never in a release build.
    if let Some(reason) = option_env!("BENCHER_RUNNER_TEST_FAIL_START") {
        return Err(UpError::TestFailStart(reason));
    }
    let capabilities = tokio::task::spawn_blocking(host::Capabilities::detect)
        .await
        .map_err(driver::AgentError::Task)?;
    capabilities.log(args.danger_allow_no_sandbox);

    let (cache_dir, spool_dir) = match (args.cache_dir.clone(), args.spool_dir.clone()) {
        (Some(cache), Some(spool)) => (cache, spool),
        (cache, spool) => {
            let defaults = crate::cli::default_dirs().map_err(UpError::Dirs)?;
            (
                cache.unwrap_or(defaults.cache),
                spool.unwrap_or(defaults.spool),
            )
        }
    };
    let cache = {
        let dir = cache_dir.clone();
        let max = args.max_cache_size.bytes();
        tokio::task::spawn_blocking(move || ImageCache::open(&dir, max))
            .await
            .map_err(driver::AgentError::Task)?
            .map_err(UpError::Cache)?
    };
    let spool = {
        let dir = spool_dir.clone();
        tokio::task::spawn_blocking(move || Spool::open(&dir))
            .await
            .map_err(driver::AgentError::Task)?
            .map_err(UpError::Spool)?
    };
    tracing::info!(
        cache = %cache_dir.display(),
        spool = %spool_dir.display(),
        host = %args.host,
        runner = %args.runner,
        "starting"
    );

    let machine = {
        let capabilities = capabilities.clone();
        let dir = cache_dir.clone();
        tokio::task::spawn_blocking(move || capabilities.machine(&dir))
            .await
            .map_err(driver::AgentError::Task)?
    };
    let link_config = link_config(&args).map_err(UpError::Link)?;
    let updater = updater(&args, &link_config);
    let core_config = core::Config {
        poll_timeout: args.poll_timeout,
        metadata: metadata(),
        auto_update: updater.is_some(),
        // `upload`: large output goes over HTTP first (see `link`). `capabilities`:
        // `ready` says what this runner can run.
        features: vec!["upload".to_owned(), "capabilities".to_owned()],
        os: capabilities.os,
        architecture: capabilities.architecture,
        no_sandbox: capabilities.no_sandbox(args.danger_allow_no_sandbox),
        sandboxes: capabilities.sandboxes(),
        sandboxes_without_network: capabilities.sandboxes_without_network(),
        machine,
        timing: core::Timing {
            drain: args.drain_timeout(),
            ..core::Timing::default()
        },
    };
    // Which Specs this runner serves, said once at start; an unreachable server only
    // delays this (the link keeps retrying), and the server applies the same rule.
    match link::fetch_specs(&link_config).await {
        Ok(specs) => host::log_specs(&specs, &core_config.capabilities()),
        Err(error) => tracing::warn!(%error, "cannot read this runner's Specs now"),
    }
    let tuning = restore_leftover_tuning(&args).await?;
    let backend = Arc::new(host::HostBackend::new(cache, &args).with_tuning(tuning));
    // Started: an update that brought this binary is confirmed (no rollback now).
    if let Ok(exe) = std::env::current_exe()
        && let Some(from) = crate::update::confirm_started(&exe)
    {
        tracing::info!(from = %from, to = crate::update::VERSION, "update confirmed");
    }
    Ok(driver::run(core_config, link_config, backend, spool, updater, signals).await?)
}

/// The updater, when this runner updates itself: auto-update on and a public key to
/// check signatures with. Without a key, offers are declined (an unsigned binary is
/// never installed), and the log says how to turn it on.
fn updater(args: &UpArgs, link: &LinkConfig) -> Option<Arc<crate::update::Updater>> {
    if args.no_auto_update {
        tracing::info!("self-update off (--no-auto-update)");
        return None;
    }
    let Some(public_key) = args.update_public_key.clone() else {
        tracing::info!(
            "self-update off: no --update-public-key (BENCHER_UPDATE_PUBLIC_KEY) to verify \
             signed updates with"
        );
        return None;
    };
    let exe = match std::env::current_exe().and_then(std::fs::canonicalize) {
        Ok(exe) => exe,
        Err(error) => {
            tracing::warn!(%error, "self-update off: cannot find this runner's binary");
            return None;
        }
    };
    match crate::update::Updater::new(
        (*link.tls).clone(),
        args.host.clone(),
        args.key.clone(),
        public_key,
        args.max_download_size(),
        exe,
    ) {
        Ok(updater) => Some(Arc::new(updater)),
        Err(error) => {
            tracing::warn!(%error, "self-update off");
            None
        }
    }
}

/// The host tuning of `--no-tuning` and friends; first restores what a runner that
/// stopped mid-benchmark left tuned, and says so.
async fn restore_leftover_tuning(args: &UpArgs) -> Result<Option<Tuning>, UpError> {
    let Some(settings) = Settings::from_args(&args.tuning) else {
        tracing::info!("host tuning disabled (--no-tuning)");
        return Ok(None);
    };
    let tuning = Tuning::new(args.tuning.tuning_root.clone()).with_settings(settings);
    let leftover = {
        let tuning = tuning.clone();
        tokio::task::spawn_blocking(move || tuning.restore_leftover())
            .await
            .map_err(driver::AgentError::Task)?
    };
    let leftover = match leftover {
        Ok(leftover) => leftover,
        // Only root can tune; a user's runner still runs jobs, untuned.
        Err(error) if !rustix::process::geteuid().is_root() => {
            tracing::warn!(
                error = %error_chain(&error),
                "host tuning needs root; jobs run untuned (--no-tuning silences this)"
            );
            return Ok(None);
        }
        Err(error) => return Err(UpError::Tuning(error)),
    };
    match leftover {
        Leftover::None => {}
        Leftover::Busy => tracing::info!(
            "another runner on this host holds the tuning lock; it restores its own changes"
        ),
        Leftover::Restored { pid, restored } => tracing::warn!(
            pid,
            written = restored.written.len(),
            unchanged = restored.unchanged,
            failed = ?restored.failed,
            "restored host tuning left behind by a runner that stopped mid-benchmark"
        ),
        Leftover::PreviousBoot { pid } => tracing::info!(
            pid,
            "discarded host tuning state from before the last reboot (the kernel reset it)"
        ),
    }
    Ok(Some(tuning))
}

pub use bencher_client::error_chain;
