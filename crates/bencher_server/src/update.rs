//! Runner self-update, server side: the `[update]` configuration (checked without IO),
//! the releases loaded from it at start (`Releases::load` reads the artifact directory:
//! the only IO here), and the pure decision whether a runner's `ready` is answered with
//! `update` (`Releases::offer`).
//!
//! Two channels: `stable` offers when the runner's version differs from the offered one,
//! `canary` when its binary's checksum differs from the artifact's (same version, new
//! build). Nothing unsigned is ever offered: every artifact has a signature, and with a
//! `public_key` configured each one is verified before the server starts.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bencher_types::RunnerUuid;
use bencher_types::protocol::{RunnerMessage, ServerMessage};
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The feature a runner lists in `ready` when it can update itself.
pub const UPDATE_FEATURE: &str = "update";
/// Artifact file names in directory mode: `runner-<os>-<arch>`, and `<that>.sig`.
const ARTIFACT_PREFIX: &str = "runner-";
const SIGNATURE_SUFFIX: &str = ".sig";
/// A signature file is 64 raw bytes or 88 base64 characters (plus a newline); anything
/// much larger is not a signature, and is not read whole.
const MAX_SIGNATURE_FILE: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateChannel {
    /// Offer when the runner's version differs from `version`.
    #[default]
    Stable,
    /// Offer when the runner binary's checksum differs from the artifact's.
    Canary,
}

/// `[update]` in the server's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// The version offered.
    pub version: String,
    #[serde(default)]
    pub channel: UpdateChannel,
    /// Directory mode: holds `runner-<os>-<arch>` and `runner-<os>-<arch>.sig`, served
    /// by `GET /v0/runners/{runner}/update/{os}/{arch}`.
    pub directory: Option<PathBuf>,
    /// URL mode: artifacts hosted elsewhere, described here.
    #[serde(default)]
    pub artifacts: Vec<ArtifactConfig>,
    /// Base64 of the 32-byte ed25519 public key; directory mode verifies every signature
    /// with it at start.
    pub public_key: Option<String>,
}

/// `[[update.artifacts]]`: one platform's artifact hosted at an absolute URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactConfig {
    pub os: String,
    pub arch: String,
    pub url: String,
    /// SHA-256 hex of the artifact.
    pub checksum: String,
    /// Base64 of the 64-byte ed25519 signature over the artifact.
    pub signature: String,
}

/// Why `[update]` is refused before anything is read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateConfigError {
    #[error("update.version is empty")]
    EmptyVersion,
    #[error("[update] needs either `directory` or `[[update.artifacts]]`")]
    NoArtifacts,
    #[error("[update] has both `directory` and `[[update.artifacts]]`; use one")]
    BothModes,
    #[error("update.directory must be an absolute path, got {0}")]
    RelativeDirectory(String),
    #[error("update.public_key is not base64 of a 32-byte ed25519 public key")]
    PublicKey,
    #[error("update artifact {os}/{arch}: os and arch must be [a-z0-9_]+ (like linux/x86_64)")]
    Platform { os: String, arch: String },
    #[error("update artifact {os}/{arch} is listed twice")]
    Duplicate { os: String, arch: String },
    #[error("update artifact {os}/{arch}: url must be an absolute http(s) URL, got {url}")]
    Url {
        os: String,
        arch: String,
        url: String,
    },
    #[error("update artifact {os}/{arch}: checksum must be 64 lowercase hex digits (SHA-256)")]
    Checksum { os: String, arch: String },
    #[error("update artifact {os}/{arch}: signature must be base64 of 64 bytes (ed25519)")]
    Signature { os: String, arch: String },
}

impl UpdateConfig {
    /// Checks everything that needs no IO; `Config::resolve` calls it, so a bad
    /// `[update]` stops the server before it opens anything.
    pub fn validate(&self) -> Result<(), UpdateConfigError> {
        if self.version.trim().is_empty() {
            return Err(UpdateConfigError::EmptyVersion);
        }
        self.public_key()?;
        match (&self.directory, self.artifacts.is_empty()) {
            (None, true) => return Err(UpdateConfigError::NoArtifacts),
            (Some(_), false) => return Err(UpdateConfigError::BothModes),
            (Some(dir), true) if !dir.is_absolute() => {
                return Err(UpdateConfigError::RelativeDirectory(
                    dir.display().to_string(),
                ));
            }
            _ => {}
        }
        let mut seen = BTreeMap::new();
        for artifact in &self.artifacts {
            let (os, arch) = (artifact.os.clone(), artifact.arch.clone());
            if !is_platform_part(&os) || !is_platform_part(&arch) {
                return Err(UpdateConfigError::Platform { os, arch });
            }
            if seen.insert((os.clone(), arch.clone()), ()).is_some() {
                return Err(UpdateConfigError::Duplicate { os, arch });
            }
            let url = &artifact.url;
            let absolute = ["https://", "http://"]
                .iter()
                .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme));
            if !absolute || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(UpdateConfigError::Url {
                    os,
                    arch,
                    url: url.clone(),
                });
            }
            if !is_sha256_hex(&artifact.checksum) {
                return Err(UpdateConfigError::Checksum { os, arch });
            }
            if decode_signature_text(&artifact.signature).is_none() {
                return Err(UpdateConfigError::Signature { os, arch });
            }
        }
        Ok(())
    }

    fn public_key(&self) -> Result<Option<VerifyingKey>, UpdateConfigError> {
        let Some(text) = &self.public_key else {
            return Ok(None);
        };
        let bytes: [u8; 32] = BASE64
            .decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(UpdateConfigError::PublicKey)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| UpdateConfigError::PublicKey)?;
        // A small-order key "verifies" forged signatures; the streaming verifier does not
        // check for it, so it is refused here.
        if key.is_weak() {
            return Err(UpdateConfigError::PublicKey);
        }
        Ok(Some(key))
    }
}

fn is_platform_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn decode_signature_text(text: &str) -> Option<[u8; 64]> {
    BASE64.decode(text.trim()).ok()?.try_into().ok()
}

/// Why the releases cannot be loaded at start.
#[derive(Debug, thiserror::Error)]
pub enum UpdateLoadError {
    #[error(transparent)]
    Config(#[from] UpdateConfigError),
    #[error("cannot read the update directory {}", path.display())]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the update directory {} has no runner-<os>-<arch> artifact", .0.display())]
    Empty(PathBuf),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is missing: every artifact must be signed", .0.display())]
    MissingSignature(PathBuf),
    #[error("{} is not an ed25519 signature (64 raw bytes or their base64)", .0.display())]
    BadSignature(PathBuf),
    #[error("the signature of {} does not verify with update.public_key", .0.display())]
    Verify(PathBuf),
}

/// One platform's artifact as offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub checksum: String,
    /// Base64 of the 64-byte signature.
    pub signature: String,
    pub source: ArtifactSource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Served by this server from this file.
    File(PathBuf),
    /// Hosted elsewhere.
    Url(String),
}

/// What the server offers, loaded once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Releases {
    pub version: String,
    pub channel: UpdateChannel,
    /// By `(os, arch)`.
    pub artifacts: BTreeMap<(String, String), Artifact>,
}

impl Releases {
    /// Validates `config` and, in directory mode, hashes every artifact and reads (and
    /// with a public key, verifies) its signature. Blocking IO: call it off the runtime
    /// or at start.
    pub fn load(config: &UpdateConfig) -> Result<Self, UpdateLoadError> {
        config.validate()?;
        let key = config.public_key()?;
        let mut artifacts = BTreeMap::new();
        for artifact in &config.artifacts {
            artifacts.insert(
                (artifact.os.clone(), artifact.arch.clone()),
                Artifact {
                    checksum: artifact.checksum.clone(),
                    signature: artifact.signature.trim().to_owned(),
                    source: ArtifactSource::Url(artifact.url.clone()),
                },
            );
        }
        if let Some(dir) = &config.directory {
            artifacts = load_directory(dir, key.as_ref())?;
        }
        Ok(Self {
            version: config.version.clone(),
            channel: config.channel,
            artifacts,
        })
    }

    pub fn artifact(&self, os: &str, arch: &str) -> Option<&Artifact> {
        self.artifacts.get(&(os.to_owned(), arch.to_owned()))
    }

    /// The `update` answering `ready`, if it applies: the runner lists the `update`
    /// feature, says what it is, an artifact exists for its platform, and it differs
    /// from the offer (by version on `stable`, by checksum on `canary`; a runner that
    /// sends no checksum gets the canary offer).
    pub fn offer(&self, runner: RunnerUuid, ready: &RunnerMessage) -> Option<ServerMessage> {
        let RunnerMessage::Ready {
            runner: Some(meta),
            features,
            ..
        } = ready
        else {
            return None;
        };
        if !features.iter().any(|f| f == UPDATE_FEATURE) {
            return None;
        }
        let artifact = self.artifact(&meta.os, &meta.arch)?;
        let differs = match self.channel {
            UpdateChannel::Stable => meta.version != self.version,
            UpdateChannel::Canary => meta.checksum.as_deref() != Some(artifact.checksum.as_str()),
        };
        if !differs {
            return None;
        }
        let url = match &artifact.source {
            ArtifactSource::Url(url) => url.clone(),
            ArtifactSource::File(_) => download_path(runner, &meta.os, &meta.arch),
        };
        Some(ServerMessage::Update {
            version: self.version.clone(),
            url,
            checksum: artifact.checksum.clone(),
            signature: Some(artifact.signature.clone()),
        })
    }
}

/// The relative download path of a directory-mode artifact; the runner joins it to the
/// server's URL and authenticates with its key.
pub fn download_path(runner: RunnerUuid, os: &str, arch: &str) -> String {
    format!("/v0/runners/{runner}/update/{os}/{arch}")
}

fn load_directory(
    dir: &Path,
    key: Option<&VerifyingKey>,
) -> Result<BTreeMap<(String, String), Artifact>, UpdateLoadError> {
    let dir_error = |source| UpdateLoadError::Directory {
        path: dir.to_owned(),
        source,
    };
    let mut artifacts = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((os, arch)) = parse_artifact_name(name) else {
            // Signatures, notes, older builds under other names: not artifacts.
            continue;
        };
        let path = entry.path();
        let file_type = std::fs::metadata(&path).map_err(|source| UpdateLoadError::Read {
            path: path.clone(),
            source,
        })?;
        if !file_type.is_file() {
            continue;
        }
        let signature = read_signature(&path)?;
        let checksum = hash_and_verify(&path, &signature, key)?;
        tracing::info!(os, arch, %checksum, verified = key.is_some(), "runner update artifact loaded");
        artifacts.insert(
            (os.to_owned(), arch.to_owned()),
            Artifact {
                checksum,
                signature: BASE64.encode(signature.to_bytes()),
                source: ArtifactSource::File(path),
            },
        );
    }
    if artifacts.is_empty() {
        return Err(UpdateLoadError::Empty(dir.to_owned()));
    }
    Ok(artifacts)
}

/// `runner-<os>-<arch>` → `(os, arch)`; anything else (including `.sig` files) → `None`.
fn parse_artifact_name(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(ARTIFACT_PREFIX)?;
    let (os, arch) = rest.split_once('-')?;
    (is_platform_part(os) && is_platform_part(arch)).then_some((os, arch))
}

fn read_signature(artifact: &Path) -> Result<Signature, UpdateLoadError> {
    let mut path = artifact.as_os_str().to_owned();
    path.push(SIGNATURE_SUFFIX);
    let path = PathBuf::from(path);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(UpdateLoadError::MissingSignature(path));
        }
        Err(source) => return Err(UpdateLoadError::Read { path, source }),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SIGNATURE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| UpdateLoadError::Read {
            path: path.clone(),
            source,
        })?;
    let raw: Option<[u8; 64]> = match <[u8; 64]>::try_from(bytes.as_slice()) {
        // 64 bytes: what `openssl pkeyutl -sign -rawin` writes. Base64 of 64 bytes is
        // 88 characters, so the two forms never collide.
        Ok(raw) => Some(raw),
        Err(_) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(decode_signature_text),
    };
    raw.map(|raw| Signature::from_bytes(&raw))
        .ok_or(UpdateLoadError::BadSignature(path))
}

/// Streams the artifact once: its SHA-256 hex, and with a key, the signature checked.
fn hash_and_verify(
    path: &Path,
    signature: &Signature,
    key: Option<&VerifyingKey>,
) -> Result<String, UpdateLoadError> {
    let read_error = |source| UpdateLoadError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read_error)?;
    let mut verifier = match key {
        Some(key) => Some(
            key.verify_stream(signature)
                .map_err(|_| UpdateLoadError::Verify(path.to_owned()))?,
        ),
        None => None,
    };
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).map_err(read_error)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        if let Some(verifier) = &mut verifier {
            verifier.update(&buffer[..n]);
        }
    }
    if let Some(verifier) = verifier {
        verifier
            .finalize_and_verify()
            .map_err(|_| UpdateLoadError::Verify(path.to_owned()))?;
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
