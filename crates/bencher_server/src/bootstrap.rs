//! First start of a fresh server: the data directory and the first admin token.
//! The token's secret goes to `DATA_DIR/admin-token` (mode 0600) and never to a log.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use bencher_types::ApiToken;

use crate::auth::{generate_api_token, hash_secret};
use crate::clock::Clock;
use crate::config::Config;
use crate::store::tokens::BootstrapError;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapFailed {
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the first admin token")]
    Token(#[from] BootstrapError<std::io::Error>),
}

/// Creates the data directory (mode 0700) if needed.
pub fn create_data_dir(path: &Path) -> Result<(), BootstrapFailed> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| BootstrapFailed::DataDir {
            path: path.to_owned(),
            source,
        })
}

/// Creates the first admin token when the database has never had one: the configured
/// `BENCHER_ADMIN_TOKEN`, or a generated one written to the admin-token file. The file
/// is written before the token's row commits, so a valid token is never lost.
pub async fn admin_token(
    store: &Store,
    config: &Config,
    clock: &Clock,
) -> Result<(), BootstrapFailed> {
    let path = config.admin_token_path();
    let (token, write_file): (ApiToken, bool) = match &config.admin_token {
        Some(token) => (token.clone(), false),
        None => (generate_api_token(), true),
    };
    let created = store
        .bootstrap_admin_token(&hash_secret(token.expose_secret()), clock.now(), || {
            if write_file {
                write_secret_file(&path, token.expose_secret())
            } else {
                Ok(())
            }
        })
        .await?;
    match (created, write_file) {
        (true, true) => {
            tracing::info!(path = %path.display(), "created the first admin token; it is in this file (mode 0600)")
        }
        (true, false) => tracing::info!("created the first admin token from BENCHER_ADMIN_TOKEN"),
        (false, _) => {
            if config.admin_token.is_some() {
                tracing::warn!(
                    "BENCHER_ADMIN_TOKEN is ignored: this database already has its admin token"
                );
            }
        }
    }
    Ok(())
}

/// Writes `secret` to `path` atomically with mode 0600: a temporary file in the same
/// directory, synced, then renamed over the target.
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl From<StoreError> for BootstrapFailed {
    fn from(error: StoreError) -> Self {
        Self::Token(BootstrapError::Store(error))
    }
}
