//! Self-update between jobs: downloads the runner binary the server offers (within
//! `--max-download-size`), verifies its SHA-256 and its ed25519 signature against the
//! public key configured on this runner, runs the new binary's `self-check`, then
//! swaps it in atomically, keeping the previous binary beside it, for `runner up` to
//! re-execute itself with the same arguments. A new binary that fails to start `up`
//! rolls back to the previous one (`roll_back_if_pending`).
//!
//! IO: the download (HTTP), the binary's directory (the staged file, `<exe>.previous`
//! and the `<exe>.update` marker), and the self-check process.
//!
//! # What holds
//!
//! - Nothing replaces the binary unless its checksum, its signature and its self-check
//!   all passed; any failure leaves the running binary as it was and the staged file
//!   gone.
//! - The swap is one `rename(2)` in the binary's own directory: at every moment the
//!   path holds either the old or the new binary, complete.
//! - The runner key goes only to the server it runs against: a download from another
//!   origin is made without it.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bencher_types::RunnerKey;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use url::Url;

/// This build's version: `BENCHER_RUNNER_VERSION` when set at build time (a release
/// stamps it; the self-update tests build a second runner with another one), else the
/// crate's version.
pub const VERSION: &str = match option_env!("BENCHER_RUNNER_VERSION") {
    Some(version) => version,
    None => env!("CARGO_PKG_VERSION"),
};

/// The staged download's name in the runner's directory, before the swap.
const STAGING_PREFIX: &str = ".runner-update-";
/// How long the new binary's `self-check` may take.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the download may stall between chunks, and connect.
const DOWNLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// An update the server offered (`update`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub version: String,
    /// Absolute, or relative to the server's URL.
    pub url: String,
    /// SHA-256 hex.
    pub checksum: String,
    /// Base64 of the ed25519 signature over the artifact.
    pub signature: Option<String>,
}

/// The ed25519 public key updates must be signed with (`--update-public-key`): base64
/// of its 32 bytes, as `openssl pkey -pubout -outform DER | tail -c 32 | base64`
/// prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct UpdateKey(VerifyingKey);

impl FromStr for UpdateKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!("an ed25519 public key is 32 bytes, this is {}", bytes.len())
        })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| format!("not an ed25519 public key: {e}"))?;
        // A small-order key verifies forged signatures.
        if key.is_weak() {
            return Err("a weak (small-order) ed25519 key cannot be trusted".to_owned());
        }
        Ok(Self(key))
    }
}

impl std::fmt::Debug for UpdateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpdateKey({})", BASE64.encode(self.0.as_bytes()))
    }
}

/// Why an update was not installed. The running binary is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("the update's URL `{url}` is not valid: {source}")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the update is not signed; only signed updates are installed")]
    Unsigned,
    #[error("the update's signature is not base64 of 64 bytes")]
    SignatureEncoding,
    #[error("the update's signature does not verify with the configured public key")]
    BadSignature,
    #[error("the update's SHA-256 is {actual}, the server said {expected}")]
    Checksum { expected: String, actual: String },
    #[error("the update is larger than --max-download-size ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error("cannot download the update from {url}")]
    Download {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status {
        url: Url,
        status: reqwest::StatusCode,
    },
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the new binary failed its self-check: {0}")]
    SelfCheck(String),
    #[error("installing the update failed: {0}")]
    Install(String),
    #[error(
        "version {version} with this checksum was installed before and failed to start; \
         it is not installed again"
    )]
    Rejected { version: String },
}

fn io_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> UpdateError + use<'a> {
    move |source| UpdateError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Downloads, verifies and installs updates for the binary at `exe`.
pub struct Updater {
    client: reqwest::Client,
    host: Url,
    key: RunnerKey,
    public_key: UpdateKey,
    max_download_size: u64,
    exe: PathBuf,
}

impl Updater {
    /// `exe`: the running binary, canonical (`current_exe`).
    pub fn new(
        tls: rustls::ClientConfig,
        host: Url,
        key: RunnerKey,
        public_key: UpdateKey,
        max_download_size: u64,
        exe: PathBuf,
    ) -> Result<Self, String> {
        // Redirects are followed (release hosts use them), but never from https to
        // http: reqwest keeps the Authorization header on a same-host redirect.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let downgrade = attempt.url().scheme() != "https"
                && attempt
                    .previous()
                    .last()
                    .is_some_and(|previous| previous.scheme() == "https");
            if downgrade {
                attempt.error("refusing a redirect from https to http")
            } else if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(redirects)
            .connect_timeout(DOWNLOAD_IDLE_TIMEOUT)
            .read_timeout(DOWNLOAD_IDLE_TIMEOUT)
            .build()
            .map_err(|e| format!("cannot set up the update client: {e}"))?;
        remove_stale_staging(parent(&exe));
        Ok(Self {
            client,
            host,
            key,
            public_key,
            max_download_size,
            exe,
        })
    }

    /// Downloads, verifies, self-checks and installs `offer`. On success the new
    /// binary is at the runner's path and the previous one at `<exe>.previous`; the
    /// caller re-executes.
    pub async fn apply(&self, offer: &Offer) -> Result<(), UpdateError> {
        // Checked before the download: an unsigned offer is refused without costing one.
        let signature = decode_signature(offer.signature.as_deref())?;
        if fs::read_to_string(rejected_path(&self.exe))
            .is_ok_and(|rejected| rejected.trim().eq_ignore_ascii_case(offer.checksum.trim()))
        {
            return Err(UpdateError::Rejected {
                version: offer.version.clone(),
            });
        }
        let url = resolve(&self.host, &offer.url).map_err(|source| UpdateError::Url {
            url: offer.url.clone(),
            source,
        })?;
        let bytes = self.download(&url).await?;
        verify(&bytes, &offer.checksum, &signature, &self.public_key)?;
        let staged = stage(&self.exe, &bytes)?;
        self_check(&staged, &offer.version).await?;
        let exe = self.exe.clone();
        let version = offer.version.clone();
        let checksum = offer.checksum.trim().to_ascii_lowercase();
        tokio::task::spawn_blocking(move || install(&exe, staged, &version, &checksum))
            .await
            .map_err(|e| UpdateError::Install(format!("the install task failed: {e}")))?
    }

    async fn download(&self, url: &Url) -> Result<Vec<u8>, UpdateError> {
        let download = |source| UpdateError::Download {
            url: url.clone(),
            source,
        };
        let mut request = self.client.get(url.clone());
        if url.origin() == self.host.origin() {
            request = request.bearer_auth(self.key.expose_secret());
        }
        let mut response = request.send().await.map_err(download)?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpdateError::Status {
                url: url.clone(),
                status,
            });
        }
        let limit = self.max_download_size;
        if response
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Err(UpdateError::TooLarge { limit });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(download)? {
            if bytes.len() as u64 + chunk.len() as u64 > limit {
                return Err(UpdateError::TooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

/// An absolute URL as it is; a server-relative one (`/v0/…`) under the host's URL,
/// keeping a path prefix the API is served under, as the channel's URL does.
fn resolve(host: &Url, url: &str) -> Result<Url, url::ParseError> {
    let Some(relative) = url.strip_prefix('/') else {
        return host.join(url);
    };
    let mut base = host.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(relative)
}

fn decode_signature(signature: Option<&str>) -> Result<Signature, UpdateError> {
    let text = signature.ok_or(UpdateError::Unsigned)?;
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| UpdateError::SignatureEncoding)?;
    let bytes: [u8; 64] = bytes
        .try_into()
        .map_err(|_| UpdateError::SignatureEncoding)?;
    Ok(Signature::from_bytes(&bytes))
}

/// The checksum first (it says which artifact this is), then the signature (whether to
/// trust it).
fn verify(
    bytes: &[u8],
    checksum: &str,
    signature: &Signature,
    key: &UpdateKey,
) -> Result<(), UpdateError> {
    let actual = sha256_hex(bytes);
    if !actual.eq_ignore_ascii_case(checksum.trim()) {
        return Err(UpdateError::Checksum {
            expected: checksum.to_owned(),
            actual,
        });
    }
    key.0
        .verify_strict(bytes, signature)
        .map_err(|_| UpdateError::BadSignature)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The SHA-256 of the running binary, which canary offers compare; `None` when it
/// cannot be read.
pub fn own_checksum() -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    let mut file = fs::File::open(exe).ok()?;
    let mut hasher = Sha256::new();
    io::copy(&mut file, &mut hasher).ok()?;
    Some(format!("{:x}", hasher.finalize()))
}

/// Writes the verified binary executable into the runner's directory (so the swap is
/// a rename on one filesystem); removed when dropped before `install` keeps it.
fn stage(exe: &Path, bytes: &[u8]) -> Result<tempfile::TempPath, UpdateError> {
    let dir = parent(exe);
    let mut file = tempfile::Builder::new()
        .prefix(STAGING_PREFIX)
        .tempfile_in(dir)
        .map_err(io_error("create a file for the update in", dir))?;
    // Made executable only once written, and explicitly: a mode given at creation
    // would be reduced by the umask (the service's is 0077).
    file.write_all(bytes)
        .and_then(|()| {
            file.as_file()
                .set_permissions(fs::Permissions::from_mode(0o755))
        })
        .and_then(|()| file.as_file().sync_all())
        .map_err(io_error("write the update to", file.path()))?;
    // Closed before it runs: Linux refuses to execute a file open for writing.
    Ok(file.into_temp_path())
}

/// Staged files a runner killed mid-update left behind.
fn remove_stale_staging(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Runs `<binary> self-check -- <this runner's arguments>`, which parses those
/// arguments (and the environment) as `runner` would and prints the binary's version:
/// it must start on this host (architecture, libraries, not truncated), accept how
/// this runner is started (a flag a new version dropped fails here, not at the
/// restart), and be the version offered. Its signature is verified by now, so it sees
/// the same environment, key included.
async fn self_check(binary: &Path, version: &str) -> Result<(), UpdateError> {
    let mut command = tokio::process::Command::new(binary);
    command
        .arg("self-check")
        .arg("--")
        .args(std::env::args_os().skip(1))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SELF_CHECK_TIMEOUT, command.output())
        .await
        .map_err(|_| {
            UpdateError::SelfCheck(format!(
                "no answer within {} s",
                SELF_CHECK_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| UpdateError::SelfCheck(format!("cannot start it: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr: String = stderr.trim().chars().take(500).collect();
        return Err(UpdateError::SelfCheck(format!(
            "it exited with {}: {stderr}",
            output.status
        )));
    }
    let reported = stdout.trim();
    if reported != version {
        return Err(UpdateError::SelfCheck(format!(
            "it reports version `{}`, the server offered `{version}`",
            reported.chars().take(100).collect::<String>()
        )));
    }
    Ok(())
}

/// `<exe>.update`: written just before the swap, removed by the new binary once `up`
/// started (`confirm_started`), read by `roll_back_if_pending` when it did not.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    from: String,
    to: String,
    /// The new binary's SHA-256: recorded as rejected when it fails to start.
    checksum: String,
}

fn with_suffix(exe: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = exe.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    exe.with_file_name(name)
}

fn previous_path(exe: &Path) -> PathBuf {
    with_suffix(exe, ".previous")
}

fn pending_path(exe: &Path) -> PathBuf {
    with_suffix(exe, ".update")
}

/// The checksum of a binary that failed to start after an update, so the same offer
/// does not install it again (an update loop); a fixed build has another checksum.
fn rejected_path(exe: &Path) -> PathBuf {
    with_suffix(exe, ".rejected")
}

/// Keeps the running binary as `<exe>.previous`, writes the marker, then renames the
/// staged binary over `exe`.
fn install(
    exe: &Path,
    staged: tempfile::TempPath,
    version: &str,
    checksum: &str,
) -> Result<(), UpdateError> {
    let previous = previous_path(exe);
    // A copy, not a rename, so `exe` never goes missing; the copy itself is renamed
    // into place, so `.previous` is never half-written either.
    let copy = with_suffix(exe, ".previous.tmp");
    fs::copy(exe, &copy)
        .and_then(|_| fs::File::open(&copy)?.sync_all())
        .map_err(io_error("keep a copy of the running binary at", &copy))?;
    fs::rename(&copy, &previous).map_err(io_error("keep the previous binary at", &previous))?;
    let pending = pending_path(exe);
    let marker = serde_json::to_vec(&Pending {
        from: VERSION.to_owned(),
        to: version.to_owned(),
        checksum: checksum.to_owned(),
    })
    .map_err(|e| UpdateError::Install(format!("cannot encode the update marker: {e}")))?;
    // Durable before the swap: a swap that survives a power loss without its marker
    // could not be rolled back.
    fs::File::create(&pending)
        .and_then(|mut file| {
            file.write_all(&marker)?;
            file.sync_all()
        })
        .map_err(io_error("write the update marker", &pending))?;
    sync_dir(parent(exe));
    staged.persist(exe).map_err(|e| UpdateError::Io {
        what: "replace the runner binary at",
        path: exe.to_owned(),
        source: e.error,
    })?;
    sync_dir(parent(exe));
    Ok(())
}

/// Durability of the renames; a failure only weakens crash safety, so it is not fatal.
fn sync_dir(dir: &Path) {
    if let Err(error) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), %error, "cannot sync the runner's directory");
    }
}

/// Called by a `runner up` that started: an update that brought it is confirmed, and
/// the marker removed. Returns the version it replaced, for the log.
pub fn confirm_started(exe: &Path) -> Option<String> {
    let path = pending_path(exe);
    let pending: Pending = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
    // A marker for another version is stale (a rollback happened): forget it too.
    let _ = fs::remove_file(&path);
    (pending.to == VERSION).then_some(pending.from)
}

/// Called when `runner up` failed to start: if this binary was just installed by an
/// update, puts the previous binary back and returns its path for the caller to
/// re-execute. `None` when no update is pending (the failure is the operator's).
pub fn roll_back_if_pending(exe: &Path) -> Result<Option<PathBuf>, UpdateError> {
    let path = pending_path(exe);
    let Ok(marker) = fs::read(&path) else {
        return Ok(None);
    };
    let pending: Option<Pending> = serde_json::from_slice(&marker).ok();
    let previous = previous_path(exe);
    let Some(pending) = pending.filter(|p| p.to == VERSION && previous.exists()) else {
        let _ = fs::remove_file(&path);
        return Ok(None);
    };
    let rejected = rejected_path(exe);
    fs::write(&rejected, &pending.checksum)
        .map_err(io_error("record the rejected update in", &rejected))?;
    fs::rename(&previous, exe).map_err(io_error("put the previous binary back at", exe))?;
    fs::remove_file(&path).map_err(io_error("remove the update marker", &path))?;
    sync_dir(parent(exe));
    Ok(Some(exe.to_owned()))
}

/// Replaces this process with `exe` and the same arguments and environment; returns
/// only on failure.
pub fn reexec(exe: &Path) -> io::Error {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn keys() -> (SigningKey, UpdateKey) {
        let signing = SigningKey::from_bytes(&[7; 32]);
        let public = BASE64.encode(signing.verifying_key().as_bytes());
        (signing, public.parse().unwrap())
    }

    #[test]
    fn server_relative_urls_keep_the_hosts_path_prefix() {
        let resolved = |host: &str, url: &str| {
            resolve(&Url::parse(host).unwrap(), url)
                .unwrap()
                .to_string()
        };
        let path = "/v0/runners/r/update/linux/x86_64";
        assert_eq!(
            resolved("http://127.0.0.1:6610", path),
            "http://127.0.0.1:6610/v0/runners/r/update/linux/x86_64"
        );
        assert_eq!(
            resolved("https://example.com/api", path),
            "https://example.com/api/v0/runners/r/update/linux/x86_64"
        );
        assert_eq!(
            resolved("https://example.com/api/", "https://cdn.example.org/runner"),
            "https://cdn.example.org/runner"
        );
    }

    #[test]
    fn a_public_key_is_base64_of_32_bytes() {
        assert!("not base64!".parse::<UpdateKey>().is_err());
        let short = BASE64.encode([1u8; 31]);
        assert!(short.parse::<UpdateKey>().unwrap_err().contains("32 bytes"));
        let (_, key) = keys();
        assert_eq!(format!("{key:?}").len(), "UpdateKey()".len() + 44);
    }

    #[test]
    fn checksum_and_signature_are_both_required() {
        let (signing, key) = keys();
        let artifact = b"#!/bin/sh\necho 9.9.9\n";
        let signature = signing.sign(artifact);
        let checksum = sha256_hex(artifact);
        verify(artifact, &checksum, &signature, &key).unwrap();
        verify(artifact, &checksum.to_uppercase(), &signature, &key).unwrap();
        assert!(matches!(
            verify(artifact, &"0".repeat(64), &signature, &key),
            Err(UpdateError::Checksum { .. })
        ));
        let other = signing.sign(b"something else");
        assert!(matches!(
            verify(artifact, &checksum, &other, &key),
            Err(UpdateError::BadSignature)
        ));
        let (_, wrong_key) = {
            let signing = SigningKey::from_bytes(&[8; 32]);
            let public = BASE64.encode(signing.verifying_key().as_bytes());
            (signing, public.parse::<UpdateKey>().unwrap())
        };
        assert!(matches!(
            verify(artifact, &checksum, &signature, &wrong_key),
            Err(UpdateError::BadSignature)
        ));
        assert!(matches!(decode_signature(None), Err(UpdateError::Unsigned)));
        assert!(matches!(
            decode_signature(Some("AAAA")),
            Err(UpdateError::SignatureEncoding)
        ));
        let encoded = BASE64.encode(signature.to_bytes());
        assert_eq!(decode_signature(Some(&encoded)).unwrap(), signature);
    }

    #[tokio::test]
    async fn install_keeps_the_previous_binary_and_a_failed_start_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("runner");
        fs::write(&exe, b"old binary").unwrap();
        let staged = stage(&exe, format!("#!/bin/sh\necho {VERSION}\n").as_bytes()).unwrap();
        self_check(&staged, VERSION).await.unwrap();
        let staged_path = staged.to_path_buf();
        install(&exe, staged, VERSION, &"ab".repeat(32)).unwrap();
        assert!(!staged_path.exists());
        assert_eq!(fs::read(previous_path(&exe)).unwrap(), b"old binary");
        assert!(fs::read_to_string(&exe).unwrap().starts_with("#!/bin/sh"));
        assert_eq!(
            fs::metadata(&exe).unwrap().permissions().mode() & 0o777,
            0o755
        );

        // The new binary failed to start `up`: the old one is back.
        assert_eq!(roll_back_if_pending(&exe).unwrap(), Some(exe.clone()));
        assert_eq!(fs::read(&exe).unwrap(), b"old binary");
        assert!(!pending_path(&exe).exists());
        assert_eq!(
            fs::read_to_string(rejected_path(&exe)).unwrap(),
            "ab".repeat(32)
        );
        // Nothing pending any more: a later failure is not an update's.
        assert_eq!(roll_back_if_pending(&exe).unwrap(), None);
    }

    #[test]
    fn a_confirmed_start_forgets_the_update() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("runner");
        fs::write(&exe, b"new binary").unwrap();
        fs::write(previous_path(&exe), b"old binary").unwrap();
        let marker = serde_json::to_vec(&Pending {
            from: "0.0.1".into(),
            to: VERSION.into(),
            checksum: "ab".repeat(32),
        })
        .unwrap();
        fs::write(pending_path(&exe), marker).unwrap();
        assert_eq!(confirm_started(&exe).as_deref(), Some("0.0.1"));
        assert_eq!(roll_back_if_pending(&exe).unwrap(), None);
        assert_eq!(fs::read(&exe).unwrap(), b"new binary");
    }

    #[tokio::test]
    async fn a_binary_that_does_not_report_the_offered_version_fails_its_self_check() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("runner");
        for (script, expected) in [
            ("#!/bin/sh\necho 1.2.3\n", "reports version `1.2.3`"),
            ("#!/bin/sh\necho broken >&2\nexit 3\n", "broken"),
            ("\x7fELF truncated", "cannot start it"),
        ] {
            let staged = stage(&exe, script.as_bytes()).unwrap();
            let error = self_check(&staged, "9.9.9").await.unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
        }
    }
}
