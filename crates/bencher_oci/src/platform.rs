//! Platforms (`linux/arm64/v8`) and choosing the one manifest of an image index that
//! this machine can run. Pure; the only outside fact read is the compile-time target
//! architecture in `Platform::host`.
//!
//! Selection never crosses architectures or operating systems: picking the wrong one
//! would not fail loudly, it would run under emulation or crash inside the sandbox, so
//! when nothing fits the caller gets an error listing what the index offers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::manifest::{Descriptor, ImageIndex};

/// Annotation Docker's buildx puts on the index entries of attestation (SBOM,
/// provenance) manifests, which are not runnable images.
pub const DOCKER_REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
pub const DOCKER_ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// The OS and CPU an image is built for, as in an index entry or image config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_empty"
    )]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Go producers sometimes write `null` for an absent list; it means empty.
fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("the image has no manifest for platform {wanted}; it offers {}", PlatformList(.available))]
    NoMatch {
        /// Boxed to keep the `Result` small on the success path.
        wanted: Box<Platform>,
        /// Every runnable platform in the index (attestations left out), in index order.
        available: Vec<Platform>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform `{0}` must look like `os/architecture` or `os/architecture/variant`")]
pub struct PlatformParseError(String);

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Self {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            os_version: None,
            os_features: Vec::new(),
            variant: variant.map(str::to_owned),
        }
    }

    /// The platform of this machine's Linux guests: `linux` and the architecture this
    /// binary was built for, in OCI names.
    pub fn host() -> Self {
        let mut platform = Self::linux(std::env::consts::ARCH);
        // The names below depend on the build target, not only on the arch name.
        if cfg!(target_arch = "arm") {
            let variant = if cfg!(target_feature = "v7") {
                "v7"
            } else {
                "v6"
            };
            platform.variant = Some(variant.to_owned());
        }
        if cfg!(target_arch = "powerpc64") && cfg!(target_endian = "little") {
            platform.architecture = "ppc64le".into();
        }
        if cfg!(target_arch = "mips64") && cfg!(target_endian = "little") {
            platform.architecture = "mips64le".into();
        }
        platform
    }

    /// A Linux platform from an architecture name as Rust (`std::env::consts::ARCH`),
    /// `uname -m` or a runner spec spell it (`x86_64`, `aarch64`, `armv7l`), mapped to
    /// the OCI names (`amd64`, `arm64/v8`, `arm/v7`). OCI names pass through, and
    /// unknown names are kept as they are so they can only match themselves.
    pub fn linux(arch: &str) -> Self {
        let (architecture, variant) = match arch {
            "x86_64" | "amd64" => ("amd64", None),
            "x86" | "i386" | "i486" | "i586" | "i686" | "386" => ("386", None),
            "aarch64" | "arm64" => ("arm64", Some("v8")),
            "armv7l" | "armv7" => ("arm", Some("v7")),
            "armv6l" | "armv6" => ("arm", Some("v6")),
            "armv5tel" | "armv5" => ("arm", Some("v5")),
            "powerpc64le" | "ppc64le" => ("ppc64le", None),
            "powerpc64" | "ppc64" => ("ppc64", None),
            "riscv64" | "riscv64gc" => ("riscv64", None),
            "loongarch64" | "loong64" => ("loong64", None),
            other => (other, None),
        };
        Self::new("linux", architecture, variant)
    }

    /// Whether an image built for `self` runs on `host`: same OS and architecture, and a
    /// variant the host supports (the same one, or an older one of a family whose
    /// variants are backward compatible, such as `arm/v6` on `arm/v7`).
    pub fn runs_on(&self, host: &Platform) -> bool {
        self.rank_on(host).is_some()
    }

    /// How well an image for `self` fits `host`; `None` when it cannot run there.
    /// Higher is better: an exact variant beats a compatible older one, and among
    /// older ones the newest wins.
    fn rank_on(&self, host: &Platform) -> Option<Rank> {
        if self.os != host.os || self.architecture != host.architecture {
            return None;
        }
        let arch = host.architecture.as_str();
        let mine = normalized_variant(arch, self.variant.as_deref());
        let wanted = normalized_variant(arch, host.variant.as_deref());
        if mine == wanted {
            return Some(Rank::Exact);
        }
        match (mine, wanted) {
            (Some(mine), Some(wanted)) => {
                let (mine, wanted) = (variant_level(mine)?, variant_level(wanted)?);
                (mine < wanted).then_some(Rank::Compatible(mine))
            }
            // A generic build runs on any variant; any variant satisfies "don't care".
            _ => Some(Rank::Compatible(0)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Compatible(u32),
    Exact,
}

/// The variant with the defaults an absent one stands for, so `arm64` and `arm64/v8`
/// compare equal (as containerd treats them).
fn normalized_variant<'a>(arch: &str, variant: Option<&'a str>) -> Option<&'a str> {
    let variant = variant.filter(|v| !v.is_empty());
    match arch {
        "arm64" => Some(variant.unwrap_or("v8")),
        "arm" => Some(variant.unwrap_or("v7")),
        "amd64" => Some(variant.unwrap_or("v1")),
        _ => variant,
    }
}

/// `vN` as N, for the variant families (`arm/v5..v7`, `amd64/v1..v4`, `arm64/v8, v9`)
/// where a higher level runs the lower ones. Anything else only matches exactly.
fn variant_level(variant: &str) -> Option<u32> {
    let digits = variant.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Whether an index entry is an attestation rather than a runnable image.
fn is_attestation(descriptor: &Descriptor) -> bool {
    let annotated = descriptor
        .annotations
        .get(DOCKER_REFERENCE_TYPE_ANNOTATION)
        .is_some_and(|t| t == DOCKER_ATTESTATION_MANIFEST);
    let unknown_platform = descriptor
        .platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
    annotated || unknown_platform
}

/// The entry of `index` to run on `wanted`: exact OS and architecture, preferring the
/// exact variant, then the newest compatible older one; the first entry wins a tie.
/// Attestations and entries without a platform are never chosen.
pub fn select_manifest<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
) -> Result<&'a Descriptor, PlatformError> {
    let mut best: Option<(Rank, &Descriptor)> = None;
    for descriptor in &index.manifests {
        if is_attestation(descriptor) {
            continue;
        }
        let Some(rank) = descriptor.platform.as_ref().and_then(|p| p.rank_on(wanted)) else {
            continue;
        };
        if best.is_none_or(|(best_rank, _)| rank > best_rank) {
            best = Some((rank, descriptor));
        }
    }
    best.map(|(_, descriptor)| descriptor)
        .ok_or_else(|| PlatformError::NoMatch {
            wanted: Box::new(wanted.clone()),
            available: index
                .manifests
                .iter()
                .filter(|d| !is_attestation(d))
                .filter_map(|d| d.platform.clone())
                .collect(),
        })
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Parses `os/architecture[/variant]`, the `--platform` syntax of Docker.
impl FromStr for Platform {
    type Err = PlatformParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Self::new(os, arch, None)),
            [os, arch, variant] if valid(os) && valid(arch) && valid(variant) => {
                Ok(Self::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformParseError(s.to_owned())),
        }
    }
}

struct PlatformList<'a>(&'a [Platform]);

impl fmt::Display for PlatformList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no runnable platforms");
        }
        for (i, platform) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{platform}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    /// The shape of `docker.io/library/alpine`'s index: three images and, as buildx
    /// pushes them, an attestation manifest per image.
    const LIBRARY_INDEX: &str = r#"{
      "manifests": [
        {
          "annotations": {
            "com.docker.official-images.bashbrew.arch": "amd64",
            "org.opencontainers.image.base.name": "scratch",
            "org.opencontainers.image.created": "2025-02-14T03:28:36Z",
            "org.opencontainers.image.revision": "4e1b4d1ff7ab1a4b9e7e6ea4b3d9d0fa3a7cbd8b",
            "org.opencontainers.image.source": "https://github.com/alpinelinux/docker-alpine.git#4e1b4d1ff7ab1a4b9e7e6ea4b3d9d0fa3a7cbd8b:x86_64",
            "org.opencontainers.image.url": "https://hub.docker.com/_/alpine",
            "org.opencontainers.image.version": "3.21.3"
          },
          "digest": "sha256:1c4eef651f65e2f7daee7ee785882ac164b02b78fb74503052a26dc061c90474",
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "platform": { "architecture": "amd64", "os": "linux" },
          "size": 1022
        },
        {
          "annotations": {
            "vnd.docker.reference.digest": "sha256:1c4eef651f65e2f7daee7ee785882ac164b02b78fb74503052a26dc061c90474",
            "vnd.docker.reference.type": "attestation-manifest"
          },
          "digest": "sha256:3a6b2ea18e0a3b0e0ba14fd1f8f7e8b9ba4c4df0ecc9ac9b4a3f6fa2b6e1b0e2",
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "platform": { "architecture": "unknown", "os": "unknown" },
          "size": 839
        },
        {
          "annotations": { "com.docker.official-images.bashbrew.arch": "arm32v7" },
          "digest": "sha256:9d0d5d0d8a3c6e5b4c1b7a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d",
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "platform": { "architecture": "arm", "os": "linux", "variant": "v7" },
          "size": 1022
        },
        {
          "annotations": { "com.docker.official-images.bashbrew.arch": "arm64v8" },
          "digest": "sha256:757d680068d77be46fd1ea20fb21db16f150468c5e7079a08a2e4705aec096ac",
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "platform": { "architecture": "arm64", "os": "linux", "variant": "v8" },
          "size": 1022
        },
        {
          "annotations": {
            "vnd.docker.reference.digest": "sha256:757d680068d77be46fd1ea20fb21db16f150468c5e7079a08a2e4705aec096ac",
            "vnd.docker.reference.type": "attestation-manifest"
          },
          "digest": "sha256:5b7c0c0f2d4ab8d3c8c26c5f8d1b2a3e4f5061728394a5b6c7d8e9f0a1b2c3d4",
          "mediaType": "application/vnd.oci.image.manifest.v1+json",
          "platform": { "architecture": "unknown", "os": "unknown" },
          "size": 839
        }
      ],
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "schemaVersion": 2
    }"#;

    fn parse_index(json: &str) -> ImageIndex {
        match Manifest::parse(None, json.as_bytes()).unwrap() {
            Manifest::Index(index) => index,
            other => panic!("not an index: {other:?}"),
        }
    }

    fn pick<'a>(index: &'a ImageIndex, wanted: &str) -> Result<&'a Descriptor, PlatformError> {
        select_manifest(index, &wanted.parse().unwrap())
    }

    #[test]
    fn host_is_linux_in_oci_names() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(host.to_string(), "linux/amd64");
        }
        if cfg!(target_arch = "aarch64") {
            assert_eq!(host.to_string(), "linux/arm64/v8");
        }
    }

    #[test]
    fn maps_arch_names() {
        let cases = [
            ("x86_64", "linux/amd64"),
            ("amd64", "linux/amd64"),
            ("aarch64", "linux/arm64/v8"),
            ("arm64", "linux/arm64/v8"),
            ("armv7l", "linux/arm/v7"),
            ("armv6l", "linux/arm/v6"),
            ("i686", "linux/386"),
            ("riscv64", "linux/riscv64"),
            ("s390x", "linux/s390x"),
            ("ppc64le", "linux/ppc64le"),
        ];
        for (arch, want) in cases {
            assert_eq!(Platform::linux(arch).to_string(), want, "{arch}");
        }
    }

    #[test]
    fn selects_each_architecture_from_a_library_index() {
        let index = parse_index(LIBRARY_INDEX);
        let amd64 = pick(&index, "linux/amd64").unwrap();
        assert!(amd64.digest.hex().starts_with("1c4eef65"));
        let arm64 = pick(&index, "linux/arm64/v8").unwrap();
        assert!(arm64.digest.hex().starts_with("757d6800"));
        // arm64 without a variant means v8.
        assert_eq!(pick(&index, "linux/arm64").unwrap(), arm64);
        let arm = pick(&index, "linux/arm/v7").unwrap();
        assert!(arm.digest.hex().starts_with("9d0d5d0d"));
        // An armv8 32-bit host runs the v7 image.
        assert_eq!(pick(&index, "linux/arm/v8").unwrap(), arm);
        // From Rust's names, as the runner builds them.
        assert_eq!(
            select_manifest(&index, &Platform::linux("aarch64")).unwrap(),
            arm64
        );
        assert_eq!(
            select_manifest(&index, &Platform::linux("x86_64")).unwrap(),
            amd64
        );
    }

    #[test]
    fn never_selects_the_wrong_architecture() {
        let index = parse_index(LIBRARY_INDEX);
        for wanted in [
            "linux/riscv64",
            "linux/arm/v6",
            "linux/386",
            "windows/amd64",
            "linux/s390x",
            "unknown/unknown",
        ] {
            match pick(&index, wanted) {
                Err(PlatformError::NoMatch {
                    wanted: w,
                    available,
                }) => {
                    assert_eq!(w.to_string(), wanted);
                    let names: Vec<String> = available.iter().map(ToString::to_string).collect();
                    assert_eq!(names, ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]);
                }
                Ok(d) => panic!("{wanted} selected {:?}", d.platform),
            }
        }
        let err = pick(&index, "linux/riscv64").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image has no manifest for platform linux/riscv64; it offers linux/amd64, linux/arm/v7, linux/arm64/v8"
        );
    }

    #[test]
    fn prefers_exact_variant_then_newest_compatible() {
        let index = parse_index(&index_of(&[
            ("arm", Some("v5"), "01"),
            ("arm", Some("v6"), "02"),
            ("arm", Some("v7"), "03"),
            ("amd64", Some("v3"), "04"),
            ("amd64", None, "05"),
            ("amd64", Some("v2"), "06"),
        ]));
        let hex_of = |wanted: &str| pick(&index, wanted).unwrap().digest.hex()[..2].to_owned();
        assert_eq!(hex_of("linux/arm/v6"), "02");
        assert_eq!(hex_of("linux/arm/v7"), "03");
        assert_eq!(hex_of("linux/arm"), "03");
        assert_eq!(hex_of("linux/amd64"), "05");
        assert_eq!(hex_of("linux/amd64/v2"), "06");
        assert_eq!(hex_of("linux/amd64/v3"), "04");
        assert_eq!(hex_of("linux/amd64/v4"), "04");
        // A v2 image never goes to a v1 host.
        let only_v3 = parse_index(&index_of(&[("amd64", Some("v3"), "07")]));
        assert!(pick(&only_v3, "linux/amd64").is_err());
        assert!(pick(&only_v3, "linux/amd64/v2").is_err());
    }

    #[test]
    fn first_entry_wins_a_tie_and_attestations_are_skipped() {
        let mut json = index_of(&[("amd64", None, "aa"), ("amd64", None, "bb")]);
        assert_eq!(
            pick(&parse_index(&json), "linux/amd64")
                .unwrap()
                .digest
                .hex()[..2],
            *"aa"
        );
        // An attestation listed first with a real-looking platform is still skipped.
        json = json.replacen(
            r#""size": 1"#,
            r#""size": 1, "annotations": {"vnd.docker.reference.type": "attestation-manifest"}"#,
            1,
        );
        assert_eq!(
            pick(&parse_index(&json), "linux/amd64")
                .unwrap()
                .digest
                .hex()[..2],
            *"bb"
        );
    }

    #[test]
    fn entries_without_platform_are_not_chosen() {
        let json = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":5}}]}}"#,
            "a".repeat(64)
        );
        let err = pick(&parse_index(&json), "linux/amd64").unwrap_err();
        assert!(
            err.to_string().ends_with("it offers no runnable platforms"),
            "{err}"
        );
    }

    #[test]
    fn runs_on_checks_single_manifest_images() {
        let host: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(Platform::new("linux", "arm64", None).runs_on(&host));
        assert!(!Platform::new("linux", "amd64", None).runs_on(&host));
        assert!(!Platform::new("linux", "arm", Some("v7")).runs_on(&host));
        assert!(!Platform::new("windows", "arm64", None).runs_on(&host));
        // Unknown variant families only match exactly.
        let odd = Platform::new("linux", "ppc64le", Some("power9"));
        assert!(odd.runs_on(&odd));
        assert!(!odd.runs_on(&Platform::new("linux", "ppc64le", Some("power8"))));
        assert!(Platform::new("linux", "ppc64le", None).runs_on(&odd));
    }

    #[test]
    fn parses_and_serializes() {
        assert_eq!(
            "linux/arm64/v8".parse::<Platform>().unwrap(),
            Platform::new("linux", "arm64", Some("v8"))
        );
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "linux/amd 64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
        let json = r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1","os.features":["win32k"],"features":["sse4"]}"#;
        let p: Platform = serde_json::from_str(json).unwrap();
        assert_eq!(p.os_version.as_deref(), Some("10.0.17763.1"));
        assert_eq!(p.os_features, ["win32k"]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"architecture":"amd64","os":"windows","os.version":"10.0.17763.1","os.features":["win32k"]}"#
        );
        let p: Platform = serde_json::from_str(
            r#"{"architecture":"arm","os":"linux","os.features":null,"variant":"v7"}"#,
        )
        .unwrap();
        assert!(p.os_features.is_empty());
        assert!(serde_json::from_str::<Platform>(r#"{"os":"linux"}"#).is_err());
    }

    /// An OCI index whose entries have the given architecture, variant and the first
    /// two hex digits of their digest.
    fn index_of(entries: &[(&str, Option<&str>, &str)]) -> String {
        let manifests: Vec<String> = entries
            .iter()
            .map(|(arch, variant, hex)| {
                let variant = variant.map(|v| format!(r#","variant":"{v}""#)).unwrap_or_default();
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{hex}{}","size": 1,"platform":{{"architecture":"{arch}","os":"linux"{variant}}}}}"#,
                    "0".repeat(62)
                )
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            manifests.join(",")
        )
    }
}
