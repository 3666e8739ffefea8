//! Self-update end to end: a real server offering a signed runner build from its
//! artifact directory, and copies of the real `runner` binary (this build, and a second
//! build stamped `BENCHER_RUNNER_VERSION=9.9.9`) that refuse bad updates and keep
//! running jobs, or install a good one, re-execute themselves and run the next job as
//! the new version.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bencher_server::update::{UpdateChannel, UpdateConfig};
use bencher_test_support::{Backend, TestServer};
use common::{E2E_REPO, Runner, RunnerDirs, privileged, push_host_image, register_runner, run_job};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;

const NEW_VERSION: &str = "9.9.9";

/// The other builds: the same sources stamped `BENCHER_RUNNER_VERSION=9.9.9` at build
/// time, once as is and once also stamped to fail at start, built one after the other
/// in a target directory of their own (the binary the other tests run stays as it is)
/// and copied out.
struct Builds {
    new: PathBuf,
    fails_to_start: PathBuf,
}

fn builds() -> &'static Builds {
    static BUILDS: OnceLock<Builds> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let target = tmp.join("runner-builds");
        let build = |name: &str, fail_start: bool| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut command = std::process::Command::new(cargo);
            command
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "bencher_runner",
                    "--bin",
                    "runner",
                ])
                .arg("--manifest-path")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .env("BENCHER_RUNNER_VERSION", NEW_VERSION);
            if fail_start {
                command.env("BENCHER_RUNNER_TEST_FAIL_START", "1");
            } else {
                command.env_remove("BENCHER_RUNNER_TEST_FAIL_START");
            }
            let status = command.status().expect("run cargo build");
            assert!(status.success(), "building runner {name} failed");
            let copy = tmp.join(format!("runner-{name}"));
            std::fs::copy(target.join("debug/runner"), &copy).unwrap();
            copy
        };
        Builds {
            new: build("9.9.9", false),
            fails_to_start: build("9.9.9-fails-to-start", true),
        }
    })
}

fn platform_file() -> String {
    format!("runner-{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// A key pair: the signing key and the public key as `--update-public-key` takes it.
fn key_pair(seed: u8) -> (SigningKey, String) {
    let signing = SigningKey::from_bytes(&[seed; 32]);
    let public = BASE64.encode(signing.verifying_key().as_bytes());
    (signing, public)
}

/// Writes `artifact` and its raw signature (what `openssl pkeyutl -sign -rawin` writes)
/// into a fresh release directory.
fn release_dir(artifact: &[u8], signing: &SigningKey) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(platform_file());
    std::fs::write(&path, artifact).unwrap();
    let mut sig = path.clone().into_os_string();
    sig.push(".sig");
    std::fs::write(sig, signing.sign(artifact).to_bytes()).unwrap();
    dir
}

/// A server offering `version` from `releases` on the stable channel, with the host
/// image pushed and runner `e2e` registered; its key.
async fn server_offering(releases: &Path, version: &str) -> (TestServer, String) {
    let releases = releases.to_owned();
    let version = version.to_owned();
    let server = TestServer::start_with(Backend::Sqlite, move |config| {
        config.update = Some(UpdateConfig {
            version,
            channel: UpdateChannel::Stable,
            directory: Some(releases),
            artifacts: Vec::new(),
            public_key: None,
        });
    })
    .await;
    push_host_image(&server).await;
    let key = register_runner(&server).await;
    (server, key)
}

/// A copy of this build, which the runner may replace, in a directory of its own.
fn runner_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runner");
    std::fs::copy(env!("CARGO_BIN_EXE_runner"), &path).unwrap();
    (dir, path)
}

fn version_of(binary: &Path) -> String {
    let output = std::process::Command::new(binary)
        .arg("self-check")
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Starts a copy of the runner at `binary` with self-update on and `extra` flags, runs
/// one job (processed: a runner whose update failed still works), stops it (exit 0)
/// and returns its log.
async fn one_job(server: &TestServer, key: &str, binary: &Path, extra: &[&str]) -> String {
    let runner = Runner::start_updating(server, key, RunnerDirs::new(), binary, extra);
    let job = run_job(
        server,
        json!({ "image": format!("{E2E_REPO}:v1"), "spec": "host", "cmd": ["/bin/sh", "-c", common::print_bmf("update")] }),
        &["processed", "failed", "canceled"],
    )
    .await;
    assert_eq!(job["status"], "processed", "{job}\n{}", runner.log());
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_updates_are_refused_and_a_good_one_is_installed() {
    if !privileged() {
        return;
    }
    let new_build = std::fs::read(&builds().new).unwrap();
    let (signing, public) = key_pair(1);
    let (_, other_public) = key_pair(2);
    let releases = release_dir(&new_build, &signing);
    let (server, key) = server_offering(releases.path(), NEW_VERSION).await;
    let (_bin, binary) = runner_copy();
    let original = std::fs::read(&binary).unwrap();
    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read(&binary).unwrap(),
            original,
            "{what}: the binary is unchanged"
        );
    };

    // Signed with another key than the runner trusts.
    let log = one_job(
        &server,
        &key,
        &binary,
        &["--update-public-key", &other_public],
    )
    .await;
    assert!(
        log.contains("does not verify with the configured public key"),
        "{log}"
    );
    unchanged("a bad signature");

    // Larger than --max-download-size.
    let log = one_job(
        &server,
        &key,
        &binary,
        &[
            "--update-public-key",
            &public,
            "--max-download-size",
            "1KiB",
        ],
    )
    .await;
    assert!(log.contains("larger than --max-download-size"), "{log}");
    unchanged("a download over the cap");

    // The artifact changed after the server announced its checksum.
    let artifact = releases.path().join(platform_file());
    let mut tampered = new_build.clone();
    tampered.extend_from_slice(b"tampered");
    std::fs::write(&artifact, &tampered).unwrap();
    let log = one_job(&server, &key, &binary, &["--update-public-key", &public]).await;
    assert!(log.contains("the server said"), "{log}");
    unchanged("a bad checksum");
    std::fs::write(&artifact, &new_build).unwrap();

    // The good one: installed, the previous binary kept, re-executed as 9.9.9, which
    // confirms it and runs the next job without being offered the update again.
    let log = one_job(&server, &key, &binary, &["--update-public-key", &public]).await;
    assert_eq!(version_of(&binary), NEW_VERSION);
    let mut previous = binary.clone().into_os_string();
    previous.push(".previous");
    assert_eq!(std::fs::read(&previous).unwrap(), original);
    assert!(log.contains("runner binary updated"), "{log}");
    assert!(log.contains("update confirmed"), "{log}");
    assert_eq!(
        log.matches("updating the runner binary").count(),
        1,
        "{log}"
    );
    assert!(!log.contains(&key), "the key is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_binary_that_fails_its_self_check_is_not_installed() {
    if !privileged() {
        return;
    }
    // Signed and intact, but not a runner of the offered version.
    let (signing, public) = key_pair(3);
    let releases = release_dir(b"#!/bin/sh\necho 'cannot start' >&2\nexit 1\n", &signing);
    let (server, key) = server_offering(releases.path(), NEW_VERSION).await;
    let (_bin, binary) = runner_copy();
    let original = std::fs::read(&binary).unwrap();
    let log = one_job(&server, &key, &binary, &["--update-public-key", &public]).await;
    assert!(log.contains("failed its self-check"), "{log}");
    assert!(log.contains("cannot start"), "{log}");
    assert_eq!(std::fs::read(&binary).unwrap(), original);
    let leftovers: Vec<_> = std::fs::read_dir(binary.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, ["runner"], "nothing staged is left behind");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_binary_that_cannot_start_is_rolled_back() {
    if !privileged() {
        return;
    }
    // It passes the self-check (it reports 9.9.9), then fails to start `up`.
    let (signing, public) = key_pair(4);
    let broken = std::fs::read(&builds().fails_to_start).unwrap();
    let releases = release_dir(&broken, &signing);
    let (server, key) = server_offering(releases.path(), NEW_VERSION).await;
    let (_bin, binary) = runner_copy();
    let original = std::fs::read(&binary).unwrap();
    // The previous binary runs again and takes jobs; offered the same build again, it
    // declines it instead of updating in a loop.
    let log = one_job(&server, &key, &binary, &["--update-public-key", &public]).await;
    assert!(log.contains("runner binary updated"), "{log}");
    assert!(log.contains("fails to start on purpose"), "{log}");
    assert!(log.contains("rolling back to the previous binary"), "{log}");
    assert!(log.contains("it is not installed again"), "{log}");
    assert_eq!(log.matches("runner binary updated").count(), 1, "{log}");
    assert_eq!(std::fs::read(&binary).unwrap(), original);
}
