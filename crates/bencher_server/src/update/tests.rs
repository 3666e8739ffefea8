//! `[update]` parsing and validation, loading a signed artifact directory, the offer
//! decision, and openssl-made signatures verifying with ed25519-dalek.

use std::process::Command;

use bencher_types::protocol::RunnerMetadata;
use ed25519_dalek::{Signer, SigningKey};

use super::*;

fn parse(text: &str) -> Result<UpdateConfig, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        update: UpdateConfig,
    }
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    file.update.validate().map_err(|e| e.to_string())?;
    Ok(file.update)
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

fn public(key: &SigningKey) -> String {
    BASE64.encode(key.verifying_key().to_bytes())
}

const CHECKSUM: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn url_config(channel: &str) -> UpdateConfig {
    let signature = BASE64.encode([7u8; 64]);
    parse(&format!(
        "[update]\nversion = \"0.2.0\"\nchannel = \"{channel}\"\n\
         [[update.artifacts]]\nos = \"linux\"\narch = \"x86_64\"\n\
         url = \"https://releases.example.com/runner-linux-x86_64\"\n\
         checksum = \"{CHECKSUM}\"\nsignature = \"{signature}\"\n"
    ))
    .unwrap()
}

#[test]
fn parses_both_modes_with_stable_by_default() {
    let config =
        parse("[update]\nversion = \"0.2.0\"\ndirectory = \"/srv/runner-releases\"\n").unwrap();
    assert_eq!(config.channel, UpdateChannel::Stable);
    assert_eq!(
        config.directory.as_deref(),
        Some(Path::new("/srv/runner-releases"))
    );
    let config = url_config("canary");
    assert_eq!(config.channel, UpdateChannel::Canary);
    assert_eq!(config.artifacts.len(), 1);
}

#[test]
fn bad_configurations_are_refused_with_their_reason() {
    let signature = BASE64.encode([7u8; 64]);
    let artifact = |os: &str, url: &str, checksum: &str, signature: &str| {
        format!(
            "[[update.artifacts]]\nos = \"{os}\"\narch = \"x86_64\"\nurl = \"{url}\"\n\
             checksum = \"{checksum}\"\nsignature = \"{signature}\"\n"
        )
    };
    let good_url = "https://example.com/runner";
    for (text, why) in [
        (
            "[update]\nversion = \"\"\ndirectory = \"/r\"".to_owned(),
            "version is empty",
        ),
        ("[update]\nversion = \"1\"".to_owned(), "either `directory`"),
        (
            "[update]\nversion = \"1\"\ndirectory = \"r\"".to_owned(),
            "absolute path",
        ),
        (
            "[update]\nversion = \"1\"\ndirectory = \"/r\"\npublic_key = \"AAAA\"".to_owned(),
            "public_key",
        ),
        (
            "[update]\nversion = \"1\"\ndirectory = \"/r\"\nkey = \"x\"".to_owned(),
            "unknown field",
        ),
        (
            format!(
                "[update]\nversion = \"1\"\ndirectory = \"/r\"\n{}",
                artifact("linux", good_url, CHECKSUM, &signature)
            ),
            "both",
        ),
        (
            format!(
                "[update]\nversion = \"1\"\n{}",
                artifact("Linux", good_url, CHECKSUM, &signature)
            ),
            "[a-z0-9_]+",
        ),
        (
            format!(
                "[update]\nversion = \"1\"\n{}{}",
                artifact("linux", good_url, CHECKSUM, &signature),
                artifact("linux", good_url, CHECKSUM, &signature)
            ),
            "listed twice",
        ),
        (
            format!(
                "[update]\nversion = \"1\"\n{}",
                artifact("linux", "/v0/runner", CHECKSUM, &signature)
            ),
            "absolute http(s) URL",
        ),
        (
            format!(
                "[update]\nversion = \"1\"\n{}",
                artifact("linux", good_url, &CHECKSUM.to_uppercase(), &signature)
            ),
            "64 lowercase hex",
        ),
        (
            format!(
                "[update]\nversion = \"1\"\n{}",
                artifact("linux", good_url, CHECKSUM, "c2ln")
            ),
            "base64 of 64 bytes",
        ),
    ] {
        let err = parse(&text).unwrap_err();
        assert!(err.contains(why), "{text}: {err}");
    }
}

/// Writes `runner-<os>-<arch>` with `contents` and its signature (raw or base64).
fn write_artifact(dir: &Path, platform: &str, contents: &[u8], key: &SigningKey, raw: bool) {
    let path = dir.join(format!("runner-{platform}"));
    std::fs::write(&path, contents).unwrap();
    let signature = key.sign(contents).to_bytes();
    let sig_path = dir.join(format!("runner-{platform}.sig"));
    if raw {
        std::fs::write(sig_path, signature).unwrap();
    } else {
        std::fs::write(sig_path, format!("{}\n", BASE64.encode(signature))).unwrap();
    }
}

fn dir_config(dir: &Path, public_key: Option<String>) -> UpdateConfig {
    UpdateConfig {
        version: "0.2.0".into(),
        channel: UpdateChannel::Stable,
        directory: Some(dir.to_owned()),
        artifacts: vec![],
        public_key,
    }
}

#[test]
fn a_directory_loads_hashed_and_verified_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let key = key();
    // Larger than one read buffer, so hashing and verification span several chunks.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    write_artifact(dir.path(), "linux-x86_64", &big, &key, true);
    write_artifact(dir.path(), "linux-aarch64", b"arm", &key, false);
    std::fs::write(dir.path().join("README"), "not an artifact").unwrap();

    let releases = Releases::load(&dir_config(dir.path(), Some(public(&key)))).unwrap();
    assert_eq!(releases.artifacts.len(), 2);
    let x86 = releases.artifact("linux", "x86_64").unwrap();
    assert_eq!(x86.checksum, hex(&Sha256::digest(&big)));
    assert_eq!(x86.signature, BASE64.encode(key.sign(&big).to_bytes()));
    assert_eq!(
        x86.source,
        ArtifactSource::File(dir.path().join("runner-linux-x86_64"))
    );
    let arm = releases.artifact("linux", "aarch64").unwrap();
    assert_eq!(arm.signature, BASE64.encode(key.sign(b"arm").to_bytes()));
    // Without a public key the signatures are only read.
    Releases::load(&dir_config(dir.path(), None)).unwrap();
}

#[test]
fn unsigned_or_badly_signed_artifacts_stop_the_start() {
    let key = key();
    let dir = tempfile::tempdir().unwrap();
    let err = Releases::load(&dir_config(dir.path(), None)).unwrap_err();
    assert!(matches!(err, UpdateLoadError::Empty(_)), "{err:?}");

    std::fs::write(dir.path().join("runner-linux-x86_64"), b"bin").unwrap();
    let err = Releases::load(&dir_config(dir.path(), None)).unwrap_err();
    assert!(
        matches!(err, UpdateLoadError::MissingSignature(_)),
        "{err:?}"
    );

    std::fs::write(
        dir.path().join("runner-linux-x86_64.sig"),
        b"not a signature",
    )
    .unwrap();
    let err = Releases::load(&dir_config(dir.path(), None)).unwrap_err();
    assert!(matches!(err, UpdateLoadError::BadSignature(_)), "{err:?}");

    // Signed by another key than the configured one.
    write_artifact(dir.path(), "linux-x86_64", b"bin", &self::key(), true);
    let err = Releases::load(&dir_config(dir.path(), Some(public(&key)))).unwrap_err();
    assert!(matches!(err, UpdateLoadError::Verify(_)), "{err:?}");

    // Signed by the right key over other bytes.
    write_artifact(dir.path(), "linux-x86_64", b"bin", &key, true);
    std::fs::write(dir.path().join("runner-linux-x86_64"), b"bin, tampered").unwrap();
    let err = Releases::load(&dir_config(dir.path(), Some(public(&key)))).unwrap_err();
    assert!(matches!(err, UpdateLoadError::Verify(_)), "{err:?}");

    let missing = dir_config(&dir.path().join("nowhere"), None);
    let err = Releases::load(&missing).unwrap_err();
    assert!(matches!(err, UpdateLoadError::Directory { .. }), "{err:?}");
}

fn ready(features: &[&str], meta: Option<(&str, &str, Option<&str>)>) -> RunnerMessage {
    RunnerMessage::Ready {
        poll_timeout: None,
        runner: meta.map(|(arch, version, checksum)| RunnerMetadata {
            os: "linux".into(),
            arch: arch.into(),
            version: version.into(),
            channel: None,
            checksum: checksum.map(str::to_owned),
        }),
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        capabilities: None,
    }
}

#[test]
fn stable_offers_when_the_version_differs() {
    let releases = Releases::load(&url_config("stable")).unwrap();
    let runner = RunnerUuid::from(uuid::Uuid::new_v4());
    let offer = releases
        .offer(runner, &ready(&["update"], Some(("x86_64", "0.1.0", None))))
        .unwrap();
    assert_eq!(
        offer,
        ServerMessage::Update {
            version: "0.2.0".into(),
            url: "https://releases.example.com/runner-linux-x86_64".into(),
            checksum: CHECKSUM.into(),
            signature: Some(BASE64.encode([7u8; 64])),
        }
    );
    for (why, message) in [
        (
            "same version",
            ready(&["update"], Some(("x86_64", "0.2.0", None))),
        ),
        (
            "no update feature",
            ready(&["upload"], Some(("x86_64", "0.1.0", None))),
        ),
        ("no metadata", ready(&["update"], None)),
        (
            "no artifact for the platform",
            ready(&["update"], Some(("aarch64", "0.1.0", None))),
        ),
        ("not a ready", RunnerMessage::Heartbeat),
    ] {
        assert_eq!(releases.offer(runner, &message), None, "{why}");
    }
}

#[test]
fn canary_offers_when_the_checksum_differs() {
    let releases = Releases::load(&url_config("canary")).unwrap();
    let runner = RunnerUuid::from(uuid::Uuid::new_v4());
    let other = "f".repeat(64);
    for (checksum, offered) in [
        (None, true),
        (Some(other.as_str()), true),
        (Some(CHECKSUM), false),
    ] {
        let message = ready(&["update"], Some(("x86_64", "0.2.0", checksum)));
        assert_eq!(
            releases.offer(runner, &message).is_some(),
            offered,
            "{checksum:?}"
        );
    }
}

#[test]
fn directory_offers_name_the_download_path() {
    let dir = tempfile::tempdir().unwrap();
    write_artifact(dir.path(), "linux-x86_64", b"bin", &key(), true);
    let releases = Releases::load(&dir_config(dir.path(), None)).unwrap();
    let runner = RunnerUuid::from(uuid::Uuid::new_v4());
    let Some(ServerMessage::Update { url, .. }) =
        releases.offer(runner, &ready(&["update"], Some(("x86_64", "0.1.0", None))))
    else {
        panic!("no offer");
    };
    assert_eq!(url, format!("/v0/runners/{runner}/update/linux/x86_64"));
}

/// The README's openssl commands: the signature they write and the public key they print
/// verify here.
#[test]
fn openssl_signatures_verify() {
    let available = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        eprintln!("SKIPPED openssl_signatures_verify: no openssl binary on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sh = |script: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    std::fs::write(dir.path().join("runner-linux-x86_64"), b"a runner binary\n").unwrap();
    sh("openssl genpkey -algorithm ed25519 -out key.pem");
    sh(
        "openssl pkeyutl -sign -rawin -inkey key.pem -in runner-linux-x86_64 -out runner-linux-x86_64.sig",
    );
    let public_key = sh("openssl pkey -in key.pem -pubout -outform DER | tail -c 32 | base64");
    let releases = Releases::load(&dir_config(dir.path(), Some(public_key.trim().into()))).unwrap();
    assert_eq!(releases.artifacts.len(), 1);
}
