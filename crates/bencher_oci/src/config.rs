//! The image config blob (OCI, and Docker's, which has the same shape): platform, the
//! default run settings (entrypoint, cmd, env, working dir, user) and the layers'
//! uncompressed digests. Pure; no IO.
//!
//! Only what running an image needs is kept; history, creation times and Docker's
//! many legacy fields are ignored. `null` is accepted wherever Go producers write it
//! for an absent list or map.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;
use crate::platform::Platform;

/// The only rootfs type the OCI spec defines.
const ROOTFS_LAYERS: &str = "layers";

/// A parsed image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawImageConfig", into = "RawImageConfig")]
pub struct ImageConfig {
    pub architecture: String,
    pub os: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
    pub config: RunConfig,
    /// The digests of the layers' uncompressed tars, in order (`rootfs.diff_ids`).
    pub diff_ids: Vec<Digest>,
}

/// The run defaults of an image (`config` in the JSON), empty where the image sets
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` entries split at the first `=`, in image order.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `port/protocol`, e.g. `8080/tcp`.
    pub exposed_ports: BTreeSet<String>,
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("image config is not valid JSON for an OCI or Docker image config")]
    Json(#[source] serde_json::Error),
    #[error("image config environment entry `{0}` has no `=`; expected KEY=VALUE")]
    EnvWithoutEquals(String),
    #[error("image config environment entry `{0}` has an empty name")]
    EnvEmptyName(String),
    #[error("image config rootfs type is `{0}`; only `layers` is supported")]
    RootfsType(String),
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawImageConfig = serde_json::from_slice(bytes).map_err(ConfigError::Json)?;
        raw.try_into()
    }

    pub fn entrypoint(&self) -> &[String] {
        &self.config.entrypoint
    }

    pub fn cmd(&self) -> &[String] {
        &self.config.cmd
    }

    pub fn env(&self) -> Vec<(String, String)> {
        self.config.env.clone()
    }

    pub fn working_dir(&self) -> Option<&str> {
        self.config.working_dir.as_deref()
    }

    pub fn user(&self) -> Option<&str> {
        self.config.user.as_deref()
    }

    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.config.labels
    }

    pub fn stop_signal(&self) -> Option<&str> {
        self.config.stop_signal.as_deref()
    }

    pub fn exposed_ports(&self) -> &BTreeSet<String> {
        &self.config.exposed_ports
    }

    pub fn diff_ids(&self) -> &[Digest] {
        &self.diff_ids
    }

    /// The platform the image was built for, to check against the host even when the
    /// image was not picked from an index.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            os_version: self.os_version.clone(),
            os_features: Vec::new(),
            variant: self.variant.clone(),
        }
    }

    /// The argv to run, with Docker's override rule: a given entrypoint replaces the
    /// image's and also drops the image's cmd (which was written as arguments to the
    /// image's entrypoint); a given cmd replaces only the image's cmd.
    pub fn command(&self, entrypoint: Option<&[String]>, cmd: Option<&[String]>) -> Vec<String> {
        let (entrypoint, image_cmd) = match entrypoint {
            Some(entrypoint) => (entrypoint, &[][..]),
            None => (self.entrypoint(), self.cmd()),
        };
        let cmd = cmd.unwrap_or(image_cmd);
        entrypoint.iter().chain(cmd).cloned().collect()
    }
}

/// The JSON shape, separate from `ImageConfig` so parsing can give typed errors for
/// what serde cannot check (env entries, the rootfs type).
#[derive(Serialize, Deserialize)]
struct RawImageConfig {
    architecture: String,
    os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    os_version: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    config: RawRunConfig,
    rootfs: RawRootFs,
}

#[derive(Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawRunConfig {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_or_list"
    )]
    entrypoint: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_or_list"
    )]
    cmd: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    env: Vec<String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    working_dir: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    user: String,
    /// Values are always `{}`; only the keys mean anything.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    labels: BTreeMap<String, String>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_as_default"
    )]
    stop_signal: String,
}

#[derive(Serialize, Deserialize)]
struct RawRootFs {
    #[serde(rename = "type")]
    fs_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    diff_ids: Vec<Digest>,
}

impl TryFrom<RawImageConfig> for ImageConfig {
    type Error = ConfigError;

    fn try_from(raw: RawImageConfig) -> Result<Self, Self::Error> {
        if raw.rootfs.fs_type != ROOTFS_LAYERS {
            return Err(ConfigError::RootfsType(raw.rootfs.fs_type));
        }
        let env = raw
            .config
            .env
            .into_iter()
            .map(|entry| match entry.split_once('=') {
                None => Err(ConfigError::EnvWithoutEquals(entry)),
                Some(("", _)) => Err(ConfigError::EnvEmptyName(entry)),
                Some((key, value)) => Ok((key.to_owned(), value.to_owned())),
            })
            .collect::<Result<_, _>>()?;
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Ok(Self {
            architecture: raw.architecture,
            os: raw.os,
            variant: raw.variant,
            os_version: raw.os_version,
            config: RunConfig {
                entrypoint: raw.config.entrypoint,
                cmd: raw.config.cmd,
                env,
                working_dir: non_empty(raw.config.working_dir),
                user: non_empty(raw.config.user),
                exposed_ports: raw.config.exposed_ports.into_keys().collect(),
                labels: raw.config.labels,
                stop_signal: non_empty(raw.config.stop_signal),
            },
            diff_ids: raw.rootfs.diff_ids,
        })
    }
}

impl From<ImageConfig> for RawImageConfig {
    fn from(config: ImageConfig) -> Self {
        let run = config.config;
        Self {
            architecture: config.architecture,
            os: config.os,
            variant: config.variant,
            os_version: config.os_version,
            config: RawRunConfig {
                entrypoint: run.entrypoint,
                cmd: run.cmd,
                env: run
                    .env
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
                working_dir: run.working_dir.unwrap_or_default(),
                user: run.user.unwrap_or_default(),
                exposed_ports: run
                    .exposed_ports
                    .into_iter()
                    .map(|port| (port, serde_json::Value::Object(Default::default())))
                    .collect(),
                labels: run.labels,
                stop_signal: run.stop_signal.unwrap_or_default(),
            },
            rootfs: RawRootFs {
                fs_type: ROOTFS_LAYERS.to_owned(),
                diff_ids: config.diff_ids,
            },
        }
    }
}

/// Go producers write a nil list or map as `null`; it means empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Docker reads `Entrypoint` and `Cmd` as a list, a single string (one argument) or
/// `null`; accept the same.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringOrList {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<StringOrList>::deserialize(d)? {
        None => Vec::new(),
        Some(StringOrList::One(s)) => vec![s],
        Some(StringOrList::Many(v)) => v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::mutations;

    /// What `docker build` (classic builder) writes for `FROM ubuntu`: Docker's legacy
    /// fields, `null`s, an empty WorkingDir, and history.
    const DOCKER_CONFIG: &str = r##"{
      "architecture": "amd64",
      "config": {
        "Hostname": "",
        "Domainname": "",
        "User": "",
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": ["/bin/bash"],
        "Image": "sha256:e67d23e7820c49a8051dac2831f38290f5e72f66c8db5079eeb60d82f14894c0",
        "Volumes": null,
        "WorkingDir": "",
        "Entrypoint": null,
        "OnBuild": null,
        "Labels": {
          "org.opencontainers.image.ref.name": "ubuntu",
          "org.opencontainers.image.version": "24.04"
        }
      },
      "container": "4e8bd3d6c8f2f4b5b6a3bde5c2f2f3d1e0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5",
      "container_config": {
        "Hostname": "4e8bd3d6c8f2",
        "Cmd": ["/bin/sh", "-c", "#(nop) ", "CMD [\"/bin/bash\"]"],
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Labels": null
      },
      "created": "2025-01-08T18:11:15.849391622Z",
      "docker_version": "24.0.7",
      "history": [
        { "created": "2025-01-08T18:11:13Z", "created_by": "/bin/sh -c #(nop)  ARG RELEASE", "empty_layer": true },
        { "created": "2025-01-08T18:11:15Z", "created_by": "/bin/sh -c #(nop) ADD file:1b6c8c9518be42fa2afe5e241ca31677fce58d27cdfa88baa91a65a259be3637 in / " },
        { "created": "2025-01-08T18:11:15Z", "created_by": "/bin/sh -c #(nop)  CMD [\"/bin/bash\"]", "empty_layer": true }
      ],
      "os": "linux",
      "rootfs": {
        "type": "layers",
        "diff_ids": ["sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740"]
      }
    }"##;

    /// What buildx writes for a benchmark image: OCI, arm64/v8, entrypoint and cmd, a
    /// user, a working dir, exposed ports, and env values containing `=`.
    const OCI_CONFIG: &str = r#"{
      "architecture": "arm64",
      "variant": "v8",
      "created": "2025-02-10T09:30:00.000000000Z",
      "config": {
        "User": "bench:bench",
        "ExposedPorts": { "8080/tcp": {}, "9090/udp": {} },
        "Env": [
          "PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
          "RUSTFLAGS=-C target-cpu=native",
          "EMPTY="
        ],
        "Entrypoint": ["/usr/local/bin/bench"],
        "Cmd": ["--iterations", "10"],
        "WorkingDir": "/work",
        "Labels": { "org.opencontainers.image.source": "https://example.com/bench" },
        "StopSignal": "SIGINT",
        "ArgsEscaped": true
      },
      "history": [
        { "created": "2025-02-10T09:29:00Z", "created_by": "COPY bench /usr/local/bin/bench # buildkit", "comment": "buildkit.dockerfile.v0" }
      ],
      "os": "linux",
      "rootfs": {
        "type": "layers",
        "diff_ids": [
          "sha256:2804bad6fe94a55f18b2b37e300919a5fd517b95aa81e95db574c0ba069a3740",
          "sha256:8a1cee436cbac1489a1883c9d886fcfc46f302c55ed4106ae31729e4f4eb9041"
        ]
      }
    }"#;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_docker_config() {
        let c = ImageConfig::parse(DOCKER_CONFIG.as_bytes()).unwrap();
        assert_eq!(c.platform().to_string(), "linux/amd64");
        assert!(c.entrypoint().is_empty());
        assert_eq!(c.cmd(), ["/bin/bash"]);
        assert_eq!(
            c.env(),
            [(
                "PATH".to_owned(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()
            )]
        );
        assert_eq!(c.working_dir(), None);
        assert_eq!(c.user(), None);
        assert_eq!(c.stop_signal(), None);
        assert_eq!(c.labels()["org.opencontainers.image.version"], "24.04");
        assert_eq!(c.diff_ids().len(), 1);
        assert_eq!(c.command(None, None), ["/bin/bash"]);
    }

    #[test]
    fn parses_oci_config() {
        let c = ImageConfig::parse(OCI_CONFIG.as_bytes()).unwrap();
        assert_eq!(c.platform().to_string(), "linux/arm64/v8");
        assert!(c.platform().runs_on(&Platform::linux("aarch64")));
        assert!(!c.platform().runs_on(&Platform::linux("x86_64")));
        assert_eq!(c.entrypoint(), ["/usr/local/bin/bench"]);
        assert_eq!(c.cmd(), ["--iterations", "10"]);
        let env = c.env();
        assert_eq!(env[1], ("RUSTFLAGS".into(), "-C target-cpu=native".into()));
        assert_eq!(env[2], ("EMPTY".into(), String::new()));
        assert_eq!(c.working_dir(), Some("/work"));
        assert_eq!(c.user(), Some("bench:bench"));
        assert_eq!(c.stop_signal(), Some("SIGINT"));
        assert_eq!(
            c.exposed_ports().iter().collect::<Vec<_>>(),
            ["8080/tcp", "9090/udp"]
        );
        assert_eq!(c.diff_ids()[1].hex()[..8], *"8a1cee43");
    }

    #[test]
    fn command_follows_docker_override_rules() {
        let c = ImageConfig::parse(OCI_CONFIG.as_bytes()).unwrap();
        assert_eq!(
            c.command(None, None),
            ["/usr/local/bin/bench", "--iterations", "10"]
        );
        let cmd = strings(&["--iterations", "3"]);
        assert_eq!(
            c.command(None, Some(&cmd)),
            ["/usr/local/bin/bench", "--iterations", "3"]
        );
        // A new entrypoint drops the image's cmd.
        let entrypoint = strings(&["/bin/sh", "-c"]);
        assert_eq!(c.command(Some(&entrypoint), None), ["/bin/sh", "-c"]);
        let cmd = strings(&["echo hi"]);
        assert_eq!(
            c.command(Some(&entrypoint), Some(&cmd)),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert!(c.command(Some(&[]), Some(&[])).is_empty());
    }

    #[test]
    fn minimal_and_null_configs() {
        let minimal =
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::parse(minimal.as_bytes()).unwrap();
        assert_eq!(c.config, RunConfig::default());
        let nulls = r#"{"architecture":"amd64","os":"linux","config":null,"rootfs":{"type":"layers","diff_ids":null}}"#;
        assert_eq!(ImageConfig::parse(nulls.as_bytes()).unwrap(), c);
        let inner_nulls = r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":null,"Cmd":null,"Env":null,"WorkingDir":null,"User":null,"ExposedPorts":null,"Labels":null,"StopSignal":null},"rootfs":{"type":"layers"}}"#;
        assert_eq!(ImageConfig::parse(inner_nulls.as_bytes()).unwrap(), c);
        // A single string is one argument, as Docker reads it.
        let strings_form = r#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":"/bin/sh","Cmd":"-c"},"rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = ImageConfig::parse(strings_form.as_bytes()).unwrap();
        assert_eq!(c.command(None, None), ["/bin/sh", "-c"]);
    }

    #[test]
    fn rejects_bad_configs() {
        let with_env = |env: &str| {
            format!(
                r#"{{"architecture":"amd64","os":"linux","config":{{"Env":[{env}]}},"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
            )
        };
        assert!(matches!(
            ImageConfig::parse(with_env(r#""A=1","NOEQUALS""#).as_bytes()),
            Err(ConfigError::EnvWithoutEquals(e)) if e == "NOEQUALS"
        ));
        assert!(matches!(
            ImageConfig::parse(with_env(r#""=x""#).as_bytes()),
            Err(ConfigError::EnvEmptyName(_))
        ));
        assert!(matches!(
            ImageConfig::parse(with_env("1").as_bytes()),
            Err(ConfigError::Json(_))
        ));

        let rootfs = OCI_CONFIG.replace(r#""type": "layers""#, r#""type": "overlay""#);
        assert!(matches!(
            ImageConfig::parse(rootfs.as_bytes()),
            Err(ConfigError::RootfsType(t)) if t == "overlay"
        ));
        let bad_digest = OCI_CONFIG.replace("sha256:2804bad6", "sha256:2804BAD6");
        assert!(matches!(
            ImageConfig::parse(bad_digest.as_bytes()),
            Err(ConfigError::Json(_))
        ));
        for missing in [r#""architecture": "arm64","#, r#""os": "linux","#] {
            let body = OCI_CONFIG.replace(missing, "");
            assert_ne!(body, OCI_CONFIG);
            assert!(
                matches!(
                    ImageConfig::parse(body.as_bytes()),
                    Err(ConfigError::Json(_))
                ),
                "{missing}"
            );
        }
        // The OCI empty config `{}` that artifacts carry is no image config.
        assert!(matches!(
            ImageConfig::parse(b"{}"),
            Err(ConfigError::Json(_))
        ));
        let err = ImageConfig::parse(with_env(r#""X""#).as_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "image config environment entry `X` has no `=`; expected KEY=VALUE"
        );
    }

    #[test]
    fn serializes_and_reparses() {
        for sample in [DOCKER_CONFIG, OCI_CONFIG] {
            let c = ImageConfig::parse(sample.as_bytes()).unwrap();
            let json = serde_json::to_vec(&c).unwrap();
            assert_eq!(ImageConfig::parse(&json).unwrap(), c);
            assert_eq!(serde_json::from_slice::<ImageConfig>(&json).unwrap(), c);
        }
        let c = ImageConfig::parse(OCI_CONFIG.as_bytes()).unwrap();
        let value = serde_json::to_value(&c).unwrap();
        assert_eq!(
            value["config"]["ExposedPorts"]["8080/tcp"],
            serde_json::json!({})
        );
        assert_eq!(value["rootfs"]["type"], "layers");
        assert_eq!(value["config"]["Env"][2], "EMPTY=");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut parsed = 0usize;
        for sample in [DOCKER_CONFIG, OCI_CONFIG] {
            for bytes in mutations(sample.as_bytes()) {
                match ImageConfig::parse(&bytes) {
                    Ok(c) => {
                        let json = serde_json::to_vec(&c).unwrap();
                        assert_eq!(ImageConfig::parse(&json).unwrap(), c);
                        parsed += 1;
                    }
                    Err(e) => {
                        let _ = e.to_string();
                    }
                }
            }
        }
        assert!(parsed > 0);
        assert!(ImageConfig::parse(&b"[".repeat(100_000)).is_err());
        for junk in [&b""[..], b"null", b"[]", b"\xff"] {
            assert!(ImageConfig::parse(junk).is_err());
        }
    }
}
