//! Image manifests and indexes (OCI, and Docker v2 schema 2 manifests and manifest
//! lists, which share the OCI JSON shape under Docker media types): media type names,
//! descriptors, and `Manifest::parse` for what a registry receives or serves. Pure; no
//! IO.
//!
//! Parsing is strict where confusion would be dangerous (the media type in the body
//! and the one in the Content-Type must agree, a document must not be both an image
//! manifest and an index, duplicate JSON keys are rejected, digests and sizes are
//! validated) and lenient where producers differ harmlessly (`null` for an absent list
//! or map, unknown fields).

use std::collections::BTreeMap;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Digest;
use crate::platform::Platform;

/// OCI image manifest.
pub const OCI_IMAGE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_IMAGE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, version 2, schema 2.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list (the multi-platform predecessor of the OCI index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 manifest, unsigned and signed; recognized only to reject them.
pub const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Every manifest media type this crate parses, e.g. for an `Accept` header.
pub const MANIFEST_MEDIA_TYPES: [&str; 4] = [
    OCI_IMAGE_MANIFEST,
    OCI_IMAGE_INDEX,
    DOCKER_MANIFEST_V2,
    DOCKER_MANIFEST_LIST,
];

/// OCI image config.
pub const OCI_IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_IMAGE_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// The empty descriptor (`{}`), used as config or layer by artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Non-distributable ("foreign") layers, deprecated by OCI but still found in images.
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_LAYER_TAR_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// Content types that say nothing about which manifest a body is (clients that send
/// JSON without the specific type); treated as if no Content-Type was given.
const GENERIC_CONTENT_TYPES: [&str; 2] = ["application/json", "application/octet-stream"];

/// How a layer blob is compressed, known from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerCompression {
    Uncompressed,
    Gzip,
    Zstd,
}

impl LayerCompression {
    /// The compression of a layer media type; `None` for anything that is not a
    /// filesystem layer (artifact blobs, configs, unknown types).
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            OCI_LAYER_TAR | OCI_LAYER_NONDISTRIBUTABLE_TAR | DOCKER_LAYER_TAR => {
                Some(Self::Uncompressed)
            }
            OCI_LAYER_TAR_GZIP
            | OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP
            | DOCKER_LAYER_TAR_GZIP
            | DOCKER_FOREIGN_LAYER_TAR_GZIP => Some(Self::Gzip),
            OCI_LAYER_TAR_ZSTD | OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD => Some(Self::Zstd),
            _ => None,
        }
    }
}

/// A reference to content by digest, with its media type and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    /// Bytes of the content. OCI defines it as int64, so it is non-negative and at
    /// most `i64::MAX`.
    #[serde(deserialize_with = "descriptor_size")]
    pub size: u64,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub urls: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: None,
            artifact_type: None,
        }
    }
}

/// A parsed manifest: one image (or artifact), or an index of manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "a manifest is parsed once per pull or push; plain variants keep matching simple"
)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// An OCI image manifest or Docker v2 schema 2 manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    /// The resolved media type: from the body, else the Content-Type, else
    /// `OCI_IMAGE_MANIFEST`.
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageIndex {
    /// The resolved media type: from the body, else the Content-Type, else
    /// `OCI_IMAGE_INDEX`.
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
    pub subject: Option<Descriptor>,
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON for an OCI or Docker manifest")]
    Json(#[source] serde_json::Error),
    #[error(
        "Docker schema 1 manifests are not supported; push the image again with a current client, which writes schema 2 or OCI manifests"
    )]
    Schema1,
    #[error("manifest has no schemaVersion")]
    MissingSchemaVersion,
    #[error("manifest schemaVersion {0} is not supported; expected 2")]
    UnsupportedSchemaVersion(String),
    #[error(
        "unsupported manifest media type `{0}`; expected an OCI image manifest or index, or a Docker v2 manifest or manifest list"
    )]
    UnsupportedMediaType(String),
    #[error("Content-Type `{content_type}` disagrees with the manifest's mediaType `{media_type}`")]
    MediaTypeMismatch {
        content_type: String,
        media_type: String,
    },
    #[error(
        "cannot tell an image manifest from an index: there is no mediaType or Content-Type, and the manifest has {0}"
    )]
    UnknownKind(&'static str),
    #[error("a manifest of type `{media_type}` must have a `{field}` field")]
    MissingField {
        media_type: String,
        field: &'static str,
    },
    #[error("a manifest of type `{media_type}` must not have a `{field}` field")]
    UnexpectedField {
        media_type: String,
        field: &'static str,
    },
}

/// Every top-level field of either kind, all optional, so one pass reads any manifest
/// and the checks below decide what it is with clear errors. Deserializing straight
/// from the bytes (not via `serde_json::Value`) keeps serde's rejection of duplicate
/// keys, which different parsers would otherwise resolve differently.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<serde_json::Value>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default, deserialize_with = "present")]
    layers: Option<Vec<Descriptor>>,
    #[serde(default, deserialize_with = "present")]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
    #[serde(default)]
    artifact_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    annotations: BTreeMap<String, String>,
    /// Schema 1 only; its presence identifies one even without a schemaVersion.
    #[serde(default, rename = "fsLayers")]
    fs_layers: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Image,
    Index,
}

impl Manifest {
    /// Parses a manifest body. `content_type` is the HTTP Content-Type it came with, if
    /// any; parameters such as `; charset=utf-8` and generic JSON types are ignored.
    ///
    /// The media type is the body's `mediaType`, else the Content-Type; both present
    /// and different is an error. With neither, the shape decides: `manifests` means an
    /// index, `config` an image manifest.
    pub fn parse(content_type: Option<&str>, bytes: &[u8]) -> Result<Self, ManifestError> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(ManifestError::Json)?;
        let header = content_type
            .map(|ct| ct.split(';').next().unwrap_or_default().trim())
            .filter(|ct| !ct.is_empty() && !GENERIC_CONTENT_TYPES.contains(ct));

        let is_schema1 = |t: &str| t == DOCKER_MANIFEST_V1 || t == DOCKER_MANIFEST_V1_SIGNED;
        if header.is_some_and(is_schema1)
            || raw.media_type.as_deref().is_some_and(is_schema1)
            || raw.fs_layers.is_some()
        {
            return Err(ManifestError::Schema1);
        }
        match &raw.schema_version {
            None => return Err(ManifestError::MissingSchemaVersion),
            Some(v) if v.as_u64() == Some(2) => {}
            Some(v) if v.as_u64() == Some(1) => return Err(ManifestError::Schema1),
            Some(v) => return Err(ManifestError::UnsupportedSchemaVersion(v.to_string())),
        }

        let media_type = match (header, raw.media_type.as_deref()) {
            (Some(header), Some(body)) if header != body => {
                return Err(ManifestError::MediaTypeMismatch {
                    content_type: header.to_owned(),
                    media_type: body.to_owned(),
                });
            }
            (_, Some(media_type)) | (Some(media_type), None) => media_type.to_owned(),
            (None, None) => match (raw.config.is_some(), raw.manifests.is_some()) {
                (true, false) => OCI_IMAGE_MANIFEST.to_owned(),
                (false, true) => OCI_IMAGE_INDEX.to_owned(),
                (true, true) => {
                    return Err(ManifestError::UnknownKind("both `config` and `manifests`"));
                }
                (false, false) => {
                    return Err(ManifestError::UnknownKind(
                        "neither `config` nor `manifests`",
                    ));
                }
            },
        };
        let kind = match media_type.as_str() {
            OCI_IMAGE_MANIFEST | DOCKER_MANIFEST_V2 => Kind::Image,
            OCI_IMAGE_INDEX | DOCKER_MANIFEST_LIST => Kind::Index,
            _ => return Err(ManifestError::UnsupportedMediaType(media_type)),
        };

        match kind {
            Kind::Image => {
                if raw.manifests.is_some() {
                    return Err(ManifestError::UnexpectedField {
                        media_type,
                        field: "manifests",
                    });
                }
                let Some(config) = raw.config else {
                    return Err(ManifestError::MissingField {
                        media_type,
                        field: "config",
                    });
                };
                Ok(Self::Image(ImageManifest {
                    media_type,
                    config,
                    // Required by the spec, but Go producers write a nil list as `null`
                    // and an absent one means the same: no layers.
                    layers: raw.layers.unwrap_or_default(),
                    subject: raw.subject,
                    artifact_type: raw.artifact_type,
                    annotations: raw.annotations,
                }))
            }
            Kind::Index => {
                for (present, field) in [
                    (raw.config.is_some(), "config"),
                    (raw.layers.is_some(), "layers"),
                ] {
                    if present {
                        return Err(ManifestError::UnexpectedField { media_type, field });
                    }
                }
                let Some(manifests) = raw.manifests else {
                    return Err(ManifestError::MissingField {
                        media_type,
                        field: "manifests",
                    });
                };
                Ok(Self::Index(ImageIndex {
                    media_type,
                    manifests,
                    subject: raw.subject,
                    artifact_type: raw.artifact_type,
                    annotations: raw.annotations,
                }))
            }
        }
    }

    pub fn media_type(&self) -> &str {
        match self {
            Self::Image(m) => &m.media_type,
            Self::Index(i) => &i.media_type,
        }
    }

    /// The manifest this one refers to (signatures, SBOMs), for the referrers API.
    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            Self::Image(m) => m.subject.as_ref(),
            Self::Index(i) => i.subject.as_ref(),
        }
    }

    /// The artifact type the referrers API reports: `artifactType`, else for an image
    /// manifest the config's media type (as the distribution spec requires).
    pub fn artifact_type(&self) -> Option<&str> {
        match self {
            Self::Image(m) => Some(
                m.artifact_type
                    .as_deref()
                    .unwrap_or(m.config.media_type.as_str()),
            ),
            Self::Index(i) => i.artifact_type.as_deref(),
        }
    }

    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            Self::Image(m) => &m.annotations,
            Self::Index(i) => &i.annotations,
        }
    }

    /// The blobs an image manifest needs (config, then layers in order); empty for an
    /// index, whose children are manifests, not blobs.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match self {
            Self::Image(m) => std::iter::once(&m.config).chain(&m.layers).collect(),
            Self::Index(_) => Vec::new(),
        }
    }

    /// The manifests an index lists; empty for an image manifest.
    pub fn children(&self) -> &[Descriptor] {
        match self {
            Self::Image(_) => &[],
            Self::Index(i) => &i.manifests,
        }
    }
}

/// Serializes as the manifest JSON (with `schemaVersion: 2`), ready to push.
impl Serialize for Manifest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Image(m) => m.serialize(serializer),
            Self::Index(i) => i.serialize(serializer),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageManifestJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    config: &'a Descriptor,
    layers: &'a [Descriptor],
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

impl Serialize for ImageManifest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ImageManifestJson {
            schema_version: 2,
            media_type: &self.media_type,
            artifact_type: self.artifact_type.as_deref(),
            config: &self.config,
            layers: &self.layers,
            subject: self.subject.as_ref(),
            annotations: &self.annotations,
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageIndexJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_type: Option<&'a str>,
    manifests: &'a [Descriptor],
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a Descriptor>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: &'a BTreeMap<String, String>,
}

impl Serialize for ImageIndex {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ImageIndexJson {
            schema_version: 2,
            media_type: &self.media_type,
            artifact_type: self.artifact_type.as_deref(),
            manifests: &self.manifests,
            subject: self.subject.as_ref(),
            annotations: &self.annotations,
        }
        .serialize(serializer)
    }
}

/// OCI sizes are int64: reading them as `i64` rejects values Go clients could not
/// represent, and the sign check gives negative sizes a clear message.
fn descriptor_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let size = i64::deserialize(d)?;
    u64::try_from(size)
        .map_err(|_| D::Error::custom(format!("descriptor size must not be negative, got {size}")))
}

/// Go producers write a nil list or map as `null`; it means empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Like `null_as_default`, but remembers that the key was there at all (`Some`), which
/// decides a manifest's kind; an absent key stays `None` through `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Some(Option::<T>::deserialize(d)?.unwrap_or_default()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Inputs derived from a valid sample for "never panics" loops: every prefix, and
    /// every byte replaced by a few characters that matter to JSON and to our
    /// validators.
    pub(crate) fn mutations(sample: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
        const REPLACEMENTS: &[u8] = b"\0\"{}[]:,-9aA/.\\\xff";
        let prefixes = (0..sample.len()).map(|n| sample[..n].to_vec());
        let replaced = (0..sample.len()).flat_map(move |i| {
            REPLACEMENTS.iter().map(move |&b| {
                let mut v = sample.to_vec();
                v[i] = b;
                v
            })
        });
        let dropped = (0..sample.len()).map(move |i| {
            let mut v = sample.to_vec();
            v.remove(i);
            v
        });
        prefixes.chain(replaced).chain(dropped)
    }

    /// What `docker push` of a locally built image sends: a Docker v2 schema 2
    /// manifest with gzip layers.
    pub(crate) const DOCKER_V2: &str = r#"{
       "schemaVersion": 2,
       "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
       "config": {
          "mediaType": "application/vnd.docker.container.image.v1+json",
          "size": 7023,
          "digest": "sha256:e67d23e7820c49a8051dac2831f38290f5e72f66c8db5079eeb60d82f14894c0"
       },
       "layers": [
          {
             "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
             "size": 32654,
             "digest": "sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740"
          },
          {
             "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
             "size": 16724,
             "digest": "sha256:8a1cee436cbac1489a1883c9d886fcfc46f302c55ed4106ae31729e4f4eb9041"
          },
          {
             "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
             "size": 73109,
             "digest": "sha256:10dacdccfe877dc064d57442e6fa7a4e3085dc94e11a29819c2290fc3d788724"
          }
       ]
    }"#;

    /// An older `library/ubuntu` tag: a Docker manifest list.
    pub(crate) const DOCKER_LIST: &str = r#"{
       "manifests": [
          {
             "digest": "sha256:5861314d7fccb39c2192173240eab44fa35ca66426201ca2acd0630a6258dd51",
             "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "platform": { "architecture": "amd64", "os": "linux" },
             "size": 529
          },
          {
             "digest": "sha256:ddf7ff5ebd9d66ce161466c1c0262430fa04de32b0e420ee3f489e2e2112e386",
             "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "platform": { "architecture": "arm", "os": "linux", "variant": "v7" },
             "size": 529
          },
          {
             "digest": "sha256:f69162950f235e3cdbbad33f1f912d1a504be90d8a37d002c735d6f3e3882265",
             "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "platform": { "architecture": "arm64", "os": "linux", "variant": "v8" },
             "size": 529
          },
          {
             "digest": "sha256:6ff39ad64fc78addfe205e809111bee54caf0f35447e077658ed3c9b7025c3af",
             "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "platform": { "architecture": "ppc64le", "os": "linux" },
             "size": 529
          },
          {
             "digest": "sha256:63772c7d09b61ea69f32b73395e37d68169cde91299c84828dafd87e54f18b47",
             "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "platform": { "architecture": "s390x", "os": "linux", "features": [] },
             "size": 529
          }
       ],
       "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
       "schemaVersion": 2
    }"#;

    /// A current `library/*` image index as buildx pushes it: OCI types, annotations,
    /// and an attestation manifest next to each image.
    pub(crate) const OCI_INDEX: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "manifests": [
        {
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "digest": "sha256:57d503f5f9286f4169e7d11ec1563b2f63d284265449cd80d1eba234e0b67cd2",
          "size": 1035,
          "annotations": {
            "com.docker.official-images.bashbrew.arch": "amd64",
            "org.opencontainers.image.base.name": "scratch",
            "org.opencontainers.image.created": "2025-01-08T18:11:16Z",
            "org.opencontainers.image.version": "24.04"
          },
          "platform": { "architecture": "amd64", "os": "linux" }
        },
        {
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "digest": "sha256:35143e7a5239313ee73b81f2f99b785aaed42d9572d1f797dc19fa14aa6b081f",
          "size": 567,
          "annotations": {
            "vnd.docker.reference.digest": "sha256:57d503f5f9286f4169e7d11ec1563b2f63d284265449cd80d1eba234e0b67cd2",
            "vnd.docker.reference.type": "attestation-manifest"
          },
          "platform": { "architecture": "unknown", "os": "unknown" }
        },
        {
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "digest": "sha256:ddf7ff5ebd9d66ce161466c1c0262430fa04de32b0e420ee3f489e2e2112e386",
          "size": 1035,
          "annotations": { "com.docker.official-images.bashbrew.arch": "arm32v7" },
          "platform": { "architecture": "arm", "os": "linux", "variant": "v7" }
        },
        {
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "digest": "sha256:8e7bbfbd93d2603dd508963c49e0addba874e02446ef08d9bc36485b95677b0d",
          "size": 1035,
          "annotations": { "com.docker.official-images.bashbrew.arch": "arm64v8" },
          "platform": { "architecture": "arm64", "os": "linux", "variant": "v8" }
        },
        {
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "digest": "sha256:dd86e2310bdf3ab45816029e264c4745a2a028961719031597877887a8f6f1df",
          "size": 567,
          "annotations": {
            "vnd.docker.reference.digest": "sha256:8e7bbfbd93d2603dd508963c49e0addba874e02446ef08d9bc36485b95677b0d",
            "vnd.docker.reference.type": "attestation-manifest"
          },
          "platform": { "architecture": "unknown", "os": "unknown" }
        }
      ],
      "annotations": { "org.opencontainers.image.ref.name": "24.04" }
    }"#;

    /// One platform's OCI image manifest from that index.
    pub(crate) const OCI_MANIFEST: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": "sha256:c026327a274b4b603f170c41ee6b81c2e58d776d5f95886e439d089b9beefccf",
        "size": 2296
      },
      "layers": [
        {
          "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
          "digest": "sha256:e0d6bb544be39d5c916044680de3704f2e9a3ccb0a8ec554fd03c0b85441e43f",
          "size": 29754290
        }
      ],
      "annotations": {
        "com.docker.official-images.bashbrew.arch": "amd64",
        "org.opencontainers.image.base.name": "scratch",
        "org.opencontainers.image.created": "2025-01-08T18:11:16Z"
      }
    }"#;

    /// An OCI 1.1 artifact (a signature) referring to an image through `subject`.
    pub(crate) const OCI_ARTIFACT: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.manifest.v1+json",
      "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
      "config": {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
        "data": "e30="
      },
      "layers": [
        {
          "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
          "digest": "sha256:a543997d84f12798350c09bdef2cdb171bf41ed3e4a5f808af2feb0c56263009",
          "size": 4217
        }
      ],
      "subject": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": "sha256:ceaeee3c0f91c6c853bda5200efb5a1b94c85fd8bb21171047cbd19059c15722",
        "size": 1035
      },
      "annotations": { "org.opencontainers.image.created": "2025-02-01T10:00:00Z" }
    }"#;

    /// A signed Docker schema 1 manifest (abridged), as very old registries serve.
    const SCHEMA1: &str = r#"{
       "schemaVersion": 1,
       "name": "library/hello-world",
       "tag": "latest",
       "architecture": "amd64",
       "fsLayers": [
          { "blobSum": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4" }
       ],
       "history": [ { "v1Compatibility": "{\"id\":\"1\"}" } ],
       "signatures": [ { "header": { "alg": "ES256" }, "signature": "abc", "protected": "def" } ]
    }"#;

    fn parse(content_type: Option<&str>, json: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(content_type, json.as_bytes())
    }

    fn image(m: Manifest) -> ImageManifest {
        match m {
            Manifest::Image(m) => m,
            Manifest::Index(_) => panic!("expected an image manifest"),
        }
    }

    fn index(m: Manifest) -> ImageIndex {
        match m {
            Manifest::Index(i) => i,
            Manifest::Image(_) => panic!("expected an index"),
        }
    }

    #[test]
    fn parses_docker_v2_manifest() {
        let m = parse(Some(DOCKER_MANIFEST_V2), DOCKER_V2).unwrap();
        assert_eq!(m.media_type(), DOCKER_MANIFEST_V2);
        assert_eq!(m.artifact_type(), Some(DOCKER_IMAGE_CONFIG));
        assert!(m.children().is_empty());
        let blobs: Vec<u64> = m.blobs().iter().map(|d| d.size).collect();
        assert_eq!(blobs, [7023, 32654, 16724, 73109]);
        let m = image(m);
        assert_eq!(m.config.media_type, DOCKER_IMAGE_CONFIG);
        assert_eq!(m.layers.len(), 3);
        assert!(m.layers.iter().all(|l| {
            LayerCompression::from_media_type(&l.media_type) == Some(LayerCompression::Gzip)
        }));
        assert_eq!(m.subject, None);
    }

    #[test]
    fn parses_docker_manifest_list() {
        let m = parse(None, DOCKER_LIST).unwrap();
        assert_eq!(m.media_type(), DOCKER_MANIFEST_LIST);
        assert!(m.blobs().is_empty());
        assert_eq!(m.children().len(), 5);
        assert_eq!(m.artifact_type(), None);
        let i = index(m);
        let platforms: Vec<String> = i
            .manifests
            .iter()
            .map(|d| d.platform.as_ref().unwrap().to_string())
            .collect();
        assert_eq!(
            platforms,
            [
                "linux/amd64",
                "linux/arm/v7",
                "linux/arm64/v8",
                "linux/ppc64le",
                "linux/s390x"
            ]
        );
    }

    #[test]
    fn parses_oci_index_and_manifest() {
        let i = index(parse(Some(OCI_IMAGE_INDEX), OCI_INDEX).unwrap());
        assert_eq!(i.manifests.len(), 5);
        assert_eq!(i.annotations["org.opencontainers.image.ref.name"], "24.04");
        assert_eq!(
            i.manifests[1].annotations["vnd.docker.reference.type"],
            "attestation-manifest"
        );
        let m = image(parse(Some(OCI_IMAGE_MANIFEST), OCI_MANIFEST).unwrap());
        assert_eq!(m.layers[0].size, 29_754_290);
        assert_eq!(
            LayerCompression::from_media_type(&m.layers[0].media_type),
            Some(LayerCompression::Gzip)
        );
    }

    #[test]
    fn parses_artifact_with_subject() {
        let m = parse(None, OCI_ARTIFACT).unwrap();
        assert_eq!(
            m.artifact_type(),
            Some("application/vnd.dev.cosign.artifact.sig.v1+json")
        );
        let subject = m.subject().unwrap();
        assert!(subject.digest.hex().starts_with("ceaeee3c"));
        let m = image(m);
        assert_eq!(m.config.media_type, OCI_EMPTY);
        assert_eq!(m.config.digest, Digest::sha256_of(b"{}"));
        assert_eq!(
            LayerCompression::from_media_type(&m.layers[0].media_type),
            None
        );
    }

    #[test]
    fn media_type_from_header_body_or_shape() {
        // Header parameters and generic types are ignored.
        let m = parse(
            Some("application/vnd.oci.image.manifest.v1+json; charset=utf-8"),
            OCI_MANIFEST,
        );
        assert_eq!(m.unwrap().media_type(), OCI_IMAGE_MANIFEST);
        let m = parse(Some("application/json"), DOCKER_V2).unwrap();
        assert_eq!(m.media_type(), DOCKER_MANIFEST_V2);

        // No mediaType in the body: the header decides...
        let bare = DOCKER_V2.replace(
            r#""mediaType": "application/vnd.docker.distribution.manifest.v2+json","#,
            "",
        );
        assert_ne!(bare, DOCKER_V2);
        let m = parse(Some(DOCKER_MANIFEST_V2), &bare).unwrap();
        assert_eq!(m.media_type(), DOCKER_MANIFEST_V2);
        // ...or, without one, the shape.
        assert_eq!(parse(None, &bare).unwrap().media_type(), OCI_IMAGE_MANIFEST);
        let bare_index = OCI_INDEX.replace(
            r#""mediaType": "application/vnd.oci.image.index.v1+json","#,
            "",
        );
        assert_ne!(bare_index, OCI_INDEX);
        assert_eq!(
            parse(None, &bare_index).unwrap().media_type(),
            OCI_IMAGE_INDEX
        );
        assert_eq!(
            parse(Some(DOCKER_MANIFEST_LIST), &bare_index)
                .unwrap()
                .media_type(),
            DOCKER_MANIFEST_LIST
        );
    }

    #[test]
    fn rejects_disagreeing_media_types() {
        let err = parse(Some(OCI_IMAGE_MANIFEST), DOCKER_V2).unwrap_err();
        assert!(
            matches!(&err, ManifestError::MediaTypeMismatch { content_type, media_type }
                if content_type == OCI_IMAGE_MANIFEST && media_type == DOCKER_MANIFEST_V2),
            "{err:?}"
        );
        assert!(err.to_string().contains("disagrees"));
        // A header naming an index on an image manifest body without mediaType.
        let bare = OCI_MANIFEST.replace(
            r#""mediaType": "application/vnd.oci.image.manifest.v1+json","#,
            "",
        );
        assert!(matches!(
            parse(Some(OCI_IMAGE_INDEX), &bare),
            Err(ManifestError::UnexpectedField {
                field: "layers",
                ..
            }) | Err(ManifestError::UnexpectedField {
                field: "config",
                ..
            })
        ));
        // Body claims index, shape is an image.
        let lying = OCI_MANIFEST.replace(OCI_IMAGE_MANIFEST, OCI_IMAGE_INDEX);
        assert!(matches!(
            parse(None, &lying),
            Err(ManifestError::UnexpectedField { .. })
        ));
        // Body claims image, but has no config.
        let lying = OCI_INDEX.replace(OCI_IMAGE_INDEX, OCI_IMAGE_MANIFEST);
        assert!(matches!(
            parse(None, &lying),
            Err(ManifestError::UnexpectedField {
                field: "manifests",
                ..
            })
        ));
        let no_config = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        assert!(matches!(
            parse(None, no_config),
            Err(ManifestError::MissingField {
                field: "config",
                ..
            })
        ));
        let no_manifests =
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}"#;
        assert!(matches!(
            parse(None, no_manifests),
            Err(ManifestError::MissingField {
                field: "manifests",
                ..
            })
        ));
    }

    #[test]
    fn rejects_unknown_kinds_and_types() {
        assert!(matches!(
            parse(None, r#"{"schemaVersion":2}"#),
            Err(ManifestError::UnknownKind(_))
        ));
        let both = r#"{"schemaVersion":2,"manifests":[],"config":{"mediaType":"a","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}}"#;
        assert!(matches!(
            parse(None, both),
            Err(ManifestError::UnknownKind(_))
        ));
        for media_type in [
            "application/vnd.oci.artifact.manifest.v1+json",
            OCI_IMAGE_CONFIG,
            OCI_LAYER_TAR_GZIP,
        ] {
            let body = OCI_MANIFEST.replace(OCI_IMAGE_MANIFEST, media_type);
            assert!(
                matches!(parse(None, &body), Err(ManifestError::UnsupportedMediaType(t)) if t == media_type),
                "{media_type}"
            );
            assert!(matches!(
                parse(
                    Some(media_type),
                    &OCI_MANIFEST.replace(
                        r#""mediaType": "application/vnd.oci.image.manifest.v1+json","#,
                        ""
                    )
                ),
                Err(ManifestError::UnsupportedMediaType(_))
            ));
        }
    }

    #[test]
    fn rejects_schema1_and_other_versions() {
        assert!(matches!(parse(None, SCHEMA1), Err(ManifestError::Schema1)));
        assert!(matches!(
            parse(Some(DOCKER_MANIFEST_V1_SIGNED), SCHEMA1),
            Err(ManifestError::Schema1)
        ));
        assert!(matches!(
            parse(Some(DOCKER_MANIFEST_V1), DOCKER_V2),
            Err(ManifestError::Schema1)
        ));
        let err = parse(None, SCHEMA1).unwrap_err().to_string();
        assert!(err.contains("schema 1"), "{err}");
        let no_version = OCI_MANIFEST.replace(r#""schemaVersion": 2,"#, "");
        assert!(matches!(
            parse(None, &no_version),
            Err(ManifestError::MissingSchemaVersion)
        ));
        for (version, shown) in [
            ("3", "3"),
            ("\"2\"", "\"2\""),
            ("2.0", "2.0"),
            ("-2", "-2"),
            ("null", "null"),
        ] {
            let body = OCI_MANIFEST.replace(
                r#""schemaVersion": 2"#,
                &format!(r#""schemaVersion": {version}"#),
            );
            match parse(None, &body) {
                Err(ManifestError::UnsupportedSchemaVersion(v)) => assert_eq!(v, shown),
                Err(ManifestError::MissingSchemaVersion) if version == "null" => {}
                other => panic!("{version}: {other:?}"),
            }
        }
    }

    #[test]
    fn validates_descriptors() {
        let negative = OCI_MANIFEST.replace(r#""size": 2296"#, r#""size": -1"#);
        let err = parse(None, &negative).unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("must not be negative"), "{source}");
        for size in ["1.5", "\"12\"", "18446744073709551615", "null"] {
            let body = OCI_MANIFEST.replace(r#""size": 2296"#, &format!(r#""size": {size}"#));
            assert!(
                matches!(parse(None, &body), Err(ManifestError::Json(_))),
                "{size}"
            );
        }
        let max = OCI_MANIFEST.replace(r#""size": 2296"#, &format!(r#""size": {}"#, i64::MAX));
        assert_eq!(
            image(parse(None, &max).unwrap()).config.size,
            i64::MAX as u64
        );

        let upper = OCI_MANIFEST.replace("c026327a274b", "C026327A274B");
        let err = parse(None, &upper).unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("lowercase"), "{source}");
        let short = OCI_MANIFEST.replace("c026327a274b", "c0");
        assert!(matches!(parse(None, &short), Err(ManifestError::Json(_))));
        let missing = OCI_MANIFEST.replace(r#""size": 2296"#, r#""urls": null"#);
        assert!(matches!(parse(None, &missing), Err(ManifestError::Json(_))));
    }

    #[test]
    fn tolerates_nulls_and_unknown_fields() {
        let body = r#"{
          "schemaVersion": 2,
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                     "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                     "size": 2, "annotations": null, "urls": null, "somethingNew": [1, 2]},
          "layers": null,
          "annotations": null,
          "futureField": {"x": 1}
        }"#;
        let m = image(parse(None, body).unwrap());
        assert!(m.layers.is_empty() && m.annotations.is_empty());
        let body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}"#;
        assert!(index(parse(None, body).unwrap()).manifests.is_empty());
    }

    #[test]
    fn rejects_duplicate_keys() {
        let dup = OCI_MANIFEST.replacen(
            r#""schemaVersion": 2,"#,
            r#""schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json","#,
            1,
        );
        assert!(matches!(parse(None, &dup), Err(ManifestError::Json(_))));
    }

    #[test]
    fn serializes_and_reparses() {
        for (content_type, sample) in [
            (None, DOCKER_V2),
            (None, DOCKER_LIST),
            (None, OCI_INDEX),
            (None, OCI_MANIFEST),
            (None, OCI_ARTIFACT),
        ] {
            let m = parse(content_type, sample).unwrap();
            let json = serde_json::to_vec(&m).unwrap();
            let again = Manifest::parse(Some(m.media_type()), &json).unwrap();
            assert_eq!(again, m);
            let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(value["schemaVersion"], 2);
        }
        let built = Manifest::Image(ImageManifest {
            media_type: OCI_IMAGE_MANIFEST.into(),
            config: Descriptor::new(OCI_IMAGE_CONFIG, Digest::sha256_of(b"config"), 6),
            layers: vec![Descriptor::new(
                OCI_LAYER_TAR,
                Digest::sha256_of(b"layer"),
                5,
            )],
            subject: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        });
        let json = serde_json::to_string(&built).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_IMAGE_MANIFEST}","config":{{"mediaType":"{OCI_IMAGE_CONFIG}","digest":"{}","size":6}},"layers":[{{"mediaType":"{OCI_LAYER_TAR}","digest":"{}","size":5}}]}}"#,
                Digest::sha256_of(b"config"),
                Digest::sha256_of(b"layer")
            )
        );
    }

    #[test]
    fn layer_compression_of_every_layer_type() {
        use LayerCompression::*;
        let cases = [
            (OCI_LAYER_TAR, Some(Uncompressed)),
            (OCI_LAYER_TAR_GZIP, Some(Gzip)),
            (OCI_LAYER_TAR_ZSTD, Some(Zstd)),
            (OCI_LAYER_NONDISTRIBUTABLE_TAR, Some(Uncompressed)),
            (OCI_LAYER_NONDISTRIBUTABLE_TAR_GZIP, Some(Gzip)),
            (OCI_LAYER_NONDISTRIBUTABLE_TAR_ZSTD, Some(Zstd)),
            (DOCKER_LAYER_TAR, Some(Uncompressed)),
            (DOCKER_LAYER_TAR_GZIP, Some(Gzip)),
            (DOCKER_FOREIGN_LAYER_TAR_GZIP, Some(Gzip)),
            (OCI_IMAGE_CONFIG, None),
            (OCI_EMPTY, None),
        ];
        for (media_type, want) in cases {
            assert_eq!(
                LayerCompression::from_media_type(media_type),
                want,
                "{media_type}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let content_types = [
            None,
            Some(OCI_IMAGE_MANIFEST),
            Some(DOCKER_MANIFEST_LIST),
            Some("text/plain; x"),
        ];
        let mut parsed = 0usize;
        let mut rejected = 0usize;
        for sample in [
            DOCKER_V2,
            DOCKER_LIST,
            OCI_INDEX,
            OCI_MANIFEST,
            OCI_ARTIFACT,
            SCHEMA1,
        ] {
            for (n, bytes) in mutations(sample.as_bytes()).enumerate() {
                let content_type = content_types[n % content_types.len()];
                match Manifest::parse(content_type, &bytes) {
                    Ok(m) => {
                        // Whatever parses must also serialize and read back the same.
                        let json = serde_json::to_vec(&m).unwrap();
                        assert_eq!(Manifest::parse(Some(m.media_type()), &json).unwrap(), m);
                        parsed += 1;
                    }
                    Err(e) => {
                        let _ = e.to_string();
                        rejected += 1;
                    }
                }
            }
        }
        assert!(
            parsed > 0 && rejected > 0,
            "{parsed} parsed, {rejected} rejected"
        );
        // Deep nesting hits serde_json's recursion limit instead of the stack.
        for open in [b"[".repeat(100_000), b"{\"a\":".repeat(100_000)] {
            assert!(Manifest::parse(None, &open).is_err());
        }
        for junk in [
            &b""[..],
            b"null",
            b"[]",
            b"2",
            b"\"x\"",
            b"\xff\xfe",
            b"{\"schemaVersion\":2,",
        ] {
            assert!(Manifest::parse(None, junk).is_err());
        }
    }
}
