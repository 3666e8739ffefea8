//! Server configuration: command-line flags, each with an environment variable, over an
//! optional TOML file, over defaults. Reading the file is the only IO here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bencher_types::{ApiToken, ByteSize};
use serde::{Deserialize, Deserializer};

use crate::blobs::{BlobConfig, BlobConfigError};
use crate::update::{UpdateConfig, UpdateConfigError};

pub const DEFAULT_PORT: u16 = 6610;
/// Largest request body the REST API accepts unless configured otherwise.
pub const DEFAULT_REQUEST_LIMIT: u64 = 16 << 20;
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_JOB_GRACE_PERIOD: Duration = Duration::from_secs(60);
/// Manifests are small JSON documents; 4 MiB is what the reference registry accepts.
pub const DEFAULT_MAX_MANIFEST_SIZE: u64 = 4 << 20;
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 64 << 30;
/// Largest uploaded job output document by default.
pub const DEFAULT_MAX_OUTPUT_SIZE: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines for a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `bencher-server` flags. Every flag has an environment variable; both override the
/// configuration file.
#[derive(Debug, Default, clap::Parser)]
#[command(name = "bencher-server", version, about = "The Bencher API server")]
pub struct ServerArgs {
    /// TOML configuration file; flags and environment variables override its values.
    #[arg(long, env = "BENCHER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the SQLite database, blobs and the bootstrap admin token.
    #[arg(long, env = "BENCHER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:6610]. Use 0.0.0.0:6610 to serve runners
    /// on other machines, preferably behind a TLS-terminating proxy.
    #[arg(long, env = "BENCHER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB` [default: SQLite in the data
    /// directory].
    #[arg(long, env = "BENCHER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Largest accepted request body: bytes or a size like 16MiB [default: 16MiB].
    #[arg(long, env = "BENCHER_REQUEST_LIMIT")]
    pub request_limit: Option<ByteSize>,
    /// Log format [default: human]. The level comes from `BENCHER_LOG` (e.g. `info`,
    /// `bencher_server=debug`).
    #[arg(long, env = "BENCHER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds without a runner message before its job fails [default: 90].
    #[arg(long, env = "BENCHER_HEARTBEAT_TIMEOUT", value_parser = parse_seconds)]
    pub heartbeat_timeout: Option<Duration>,
    /// Seconds a job may run past its own timeout before the server cancels it
    /// [default: 60].
    #[arg(long, env = "BENCHER_JOB_GRACE_PERIOD", value_parser = parse_seconds)]
    pub job_grace_period: Option<Duration>,
    /// Where registry blobs are stored: `s3://BUCKET[/PREFIX]` for S3-compatible object
    /// storage, or a directory (absolute path) [default: `blobs` in the data directory].
    /// For S3, credentials and endpoint come from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT, AWS_REGION and AWS_ALLOW_HTTP.
    #[arg(long, env = "BENCHER_BLOB_STORE", value_name = "URL")]
    pub blob_store: Option<String>,
    /// Largest manifest the registry accepts [default: 4MiB].
    #[arg(long, env = "BENCHER_MAX_MANIFEST_SIZE")]
    pub max_manifest_size: Option<ByteSize>,
    /// Largest blob (image layer) the registry accepts [default: 64GiB].
    #[arg(long, env = "BENCHER_MAX_BLOB_SIZE")]
    pub max_blob_size: Option<ByteSize>,
    /// Largest job output document a runner may upload [default: 256MiB].
    #[arg(long, env = "BENCHER_MAX_OUTPUT_SIZE")]
    pub max_output_size: Option<ByteSize>,
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: u64 = s
        .parse()
        .map_err(|_| format!("expected a whole number of seconds, got `{s}`"))?;
    if secs == 0 {
        return Err("must be at least 1 second".into());
    }
    Ok(Duration::from_secs(secs))
}

/// The configuration file. Unknown keys are an error, so a typo never goes unnoticed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    #[serde(default, deserialize_with = "size_or_number")]
    pub request_limit: Option<ByteSize>,
    pub log_format: Option<LogFormat>,
    #[serde(default, deserialize_with = "seconds")]
    pub heartbeat_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "seconds")]
    pub job_grace_period: Option<Duration>,
    pub blob_store: Option<String>,
    #[serde(default, deserialize_with = "size_or_number")]
    pub max_manifest_size: Option<ByteSize>,
    #[serde(default, deserialize_with = "size_or_number")]
    pub max_blob_size: Option<ByteSize>,
    #[serde(default, deserialize_with = "size_or_number")]
    pub max_output_size: Option<ByteSize>,
    /// Runner self-update: the offered version and its artifacts. Absent: no offers.
    pub update: Option<UpdateConfig>,
}

fn size_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    let size = match Raw::deserialize(d)? {
        Raw::Bytes(bytes) => ByteSize::new(bytes).map_err(serde::de::Error::custom)?,
        Raw::Text(text) => text.parse().map_err(serde::de::Error::custom)?,
    };
    Ok(Some(size))
}

fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let secs = u64::deserialize(d)?;
    if secs == 0 {
        return Err(serde::de::Error::custom("must be at least 1 second"));
    }
    Ok(Some(Duration::from_secs(secs)))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {}", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("BENCHER_ADMIN_TOKEN is not a valid API token")]
    AdminToken(#[source] bencher_types::KeyError),
    #[error("invalid blob store")]
    BlobStore(#[source] BlobConfigError),
    #[error("invalid [update] section")]
    Update(#[source] UpdateConfigError),
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `None`: SQLite in the data directory.
    pub database_url: Option<String>,
    pub request_limit: ByteSize,
    pub log_format: LogFormat,
    pub heartbeat_timeout: Duration,
    pub job_grace_period: Duration,
    /// Used as the first admin token instead of a generated one (`BENCHER_ADMIN_TOKEN`,
    /// read only at the first start of a fresh database).
    pub admin_token: Option<ApiToken>,
    /// `None`: blobs in the data directory. Otherwise a `--blob-store` value, checked by
    /// `resolve`.
    pub blob_store: Option<String>,
    pub max_manifest_size: ByteSize,
    pub max_blob_size: ByteSize,
    pub max_output_size: ByteSize,
    /// `[update]`, checked without IO; `App::open` loads its artifacts.
    pub update: Option<UpdateConfig>,
}

impl Config {
    /// Defaults with the given data directory; what tests and embedders start from.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            database_url: None,
            request_limit: ByteSize::new(DEFAULT_REQUEST_LIMIT).expect("non-zero default"),
            log_format: LogFormat::Human,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            job_grace_period: DEFAULT_JOB_GRACE_PERIOD,
            admin_token: None,
            blob_store: None,
            max_manifest_size: ByteSize::new(DEFAULT_MAX_MANIFEST_SIZE).expect("non-zero default"),
            max_blob_size: ByteSize::new(DEFAULT_MAX_BLOB_SIZE).expect("non-zero default"),
            max_output_size: ByteSize::new(DEFAULT_MAX_OUTPUT_SIZE).expect("non-zero default"),
            update: None,
        }
    }

    /// Flags (with their environment variables) over the file over defaults.
    /// `admin_token` is the raw `BENCHER_ADMIN_TOKEN`, if set.
    pub fn resolve(args: ServerArgs, admin_token: Option<String>) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => ConfigFile::default(),
        };
        let mut config = Self::new(
            args.data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "data".into()),
        );
        if let Some(listen) = args.listen.or(file.listen) {
            config.listen = listen;
        }
        config.database_url = args.database_url.or(file.database_url);
        if let Some(limit) = args.request_limit.or(file.request_limit) {
            config.request_limit = limit;
        }
        if let Some(format) = args.log_format.or(file.log_format) {
            config.log_format = format;
        }
        if let Some(timeout) = args.heartbeat_timeout.or(file.heartbeat_timeout) {
            config.heartbeat_timeout = timeout;
        }
        if let Some(size) = args.max_manifest_size.or(file.max_manifest_size) {
            config.max_manifest_size = size;
        }
        if let Some(size) = args.max_blob_size.or(file.max_blob_size) {
            config.max_blob_size = size;
        }
        if let Some(size) = args.max_output_size.or(file.max_output_size) {
            config.max_output_size = size;
        }
        if let Some(grace) = args.job_grace_period.or(file.job_grace_period) {
            config.job_grace_period = grace;
        }
        config.blob_store = args.blob_store.or(file.blob_store);
        if let Some(value) = &config.blob_store {
            BlobConfig::parse(value).map_err(ConfigError::BlobStore)?;
        }
        if let Some(update) = &file.update {
            update.validate().map_err(ConfigError::Update)?;
        }
        config.update = file.update;
        config.admin_token = admin_token
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().map_err(ConfigError::AdminToken))
            .transpose()?;
        Ok(config)
    }

    /// The database URL to connect to: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.sqlite_path().display()),
        }
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("bencher.db")
    }

    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    /// Where blobs are stored: the configured store, or `blobs` in the data directory.
    /// `resolve` already refused a value that does not parse; one set by hand that does
    /// not is taken as an object store URL, which `BlobStore::open` then refuses.
    pub fn blob_config(&self) -> BlobConfig {
        match &self.blob_store {
            None => BlobConfig::Local {
                dir: self.data_dir.join("blobs"),
            },
            Some(value) => BlobConfig::parse(value)
                .unwrap_or_else(|_| BlobConfig::ObjectStore { url: value.clone() }),
        }
    }
}

fn read_file(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn flags_override_file_override_defaults() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "data_dir = \"/srv/bencher\"\nlisten = \"0.0.0.0:7000\"\nrequest_limit = \"1MiB\"\nheartbeat_timeout = 30"
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(file.path().to_owned()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let config = Config::resolve(args, None).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/bencher"));
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.request_limit.bytes(), 1 << 20);
        assert_eq!(config.heartbeat_timeout, Duration::from_secs(30));
        assert_eq!(config.job_grace_period, DEFAULT_JOB_GRACE_PERIOD);
        assert_eq!(
            config.database_url(),
            "sqlite:///srv/bencher/bencher.db?mode=rwc"
        );
    }

    #[test]
    fn file_typos_and_bad_values_are_errors() {
        for (text, why) in [
            ("listen_addr = \"0.0.0.0:1\"", "unknown field"),
            ("request_limit = 0", "at least 1 byte"),
            ("heartbeat_timeout = 0", "at least 1 second"),
            ("log_format = \"xml\"", "unknown variant"),
            (
                "[update]\nversion = \"1\"\ndirectory = \"/r\"\nsigned = true",
                "unknown field",
            ),
            (
                "[update]\nversion = \"1\"\nchannel = \"beta\"\ndirectory = \"/r\"",
                "unknown variant",
            ),
            ("[update]\nversion = \"1\"", "either `directory`"),
            (
                "[update]\nversion = \"1\"\ndirectory = \"releases\"",
                "absolute path",
            ),
        ] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            writeln!(file, "{text}").unwrap();
            let args = ServerArgs {
                config: Some(file.path().to_owned()),
                ..Default::default()
            };
            let err = Config::resolve(args, None).unwrap_err();
            let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(chain.contains(why), "{text}: {chain}");
        }
    }

    #[test]
    fn blob_store_flag_over_file_over_data_dir() {
        let config = Config::new("/srv/bencher");
        assert_eq!(
            config.blob_config(),
            BlobConfig::Local {
                dir: PathBuf::from("/srv/bencher/blobs")
            }
        );

        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "blob_store = \"/mnt/blobs\"").unwrap();
        let from_file = ServerArgs {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(from_file, None).unwrap().blob_config(),
            BlobConfig::Local {
                dir: PathBuf::from("/mnt/blobs")
            }
        );
        let flag = ServerArgs {
            config: Some(file.path().to_owned()),
            blob_store: Some("s3://bucket/registry".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::resolve(flag, None).unwrap().blob_config(),
            BlobConfig::ObjectStore {
                url: "s3://bucket/registry".into()
            }
        );

        let bad = ServerArgs {
            blob_store: Some("gs://bucket".into()),
            ..Default::default()
        };
        let err = Config::resolve(bad, None).unwrap_err();
        assert!(matches!(err, ConfigError::BlobStore(_)), "{err:?}");
    }

    #[test]
    fn admin_token_is_validated() {
        let err = Config::resolve(ServerArgs::default(), Some("hunter2".into())).unwrap_err();
        assert!(matches!(err, ConfigError::AdminToken(_)));
    }
}
