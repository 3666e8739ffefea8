//! Operating a runner through the real `runner` binary: `runner install` writing a
//! systemd unit and its 0600 environment file under a temporary root (never the host's
//! /etc, never systemctl), and `runner status` reading the spool, a fake tuning tree
//! and the status file of a real `runner up` connected to a real server.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use bencher_runner::spool::Spool;
use bencher_runner::tuning::knob::{Format, Knob};
use bencher_runner::tuning::state::{self, Original, SavedState};
use bencher_test_support::{Backend, TestServer};
use bencher_types::JobUuid;
use bencher_types::protocol::RunnerMessage;
use common::{Runner, register_runner};
use serde_json::Value;

const KEY: &str = "bencher_runner_0123456789abcdefghijABCDEFGHIJ";
const OTHER_KEY: &str = "bencher_runner_ZYXWVUTSRQPONMLKJIHGFEDCBA9876";
const UNIT: &str = "etc/systemd/system/bencher-runner.service";
const ENV: &str = "etc/bencher-runner/env";

/// Runs the `runner` binary with `args`, with no BENCHER_* variables but `env`.
fn runner(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runner"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("BENCHER_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("run the runner binary")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn install(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "install",
        "--root",
        root.to_str().unwrap(),
        "--host",
        "http://127.0.0.1:6610",
        "--runner",
        "my-runner",
    ];
    args.extend_from_slice(extra);
    runner(&args, env)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn install_writes_a_unit_and_a_private_environment_file() {
    let root = tempfile::tempdir().unwrap();
    let out = install(
        root.path(),
        &[
            "--key",
            KEY,
            "--drain-timeout",
            "90",
            "--danger-allow-no-sandbox",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        !text(&out).contains(KEY),
        "the key is never printed: {}",
        text(&out)
    );

    let unit = std::fs::read_to_string(root.path().join(UNIT)).unwrap();
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_runner")).unwrap();
    assert!(
        unit.contains(&format!(
            "\nExecStart={} up --drain-timeout 90\n",
            binary.display()
        )),
        "{unit}"
    );
    for line in [
        "EnvironmentFile=/etc/bencher-runner/env",
        "Restart=always",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "KillMode=mixed",
        // The drain bound plus the margin.
        "TimeoutStopSec=120",
        "After=network-online.target",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing:\n{unit}");
    }
    assert!(!unit.contains(KEY), "the key is never in the unit");
    assert_eq!(mode(&root.path().join(UNIT)), 0o644);

    let env_path = root.path().join(ENV);
    let env = std::fs::read_to_string(&env_path).unwrap();
    assert_eq!(mode(&env_path), 0o600);
    assert_eq!(mode(env_path.parent().unwrap()), 0o700);
    for line in [
        format!("BENCHER_RUNNER_KEY=\"{KEY}\""),
        "BENCHER_HOST=\"http://127.0.0.1:6610/\"".to_owned(),
        "BENCHER_RUNNER=\"my-runner\"".to_owned(),
        "BENCHER_DANGER_ALLOW_NO_SANDBOX=\"true\"".to_owned(),
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
    }
    // Nothing else (no temporary file left) in either directory.
    for dir in [
        root.path().join("etc/bencher-runner"),
        root.path().join("etc/systemd/system"),
    ] {
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "{}",
            dir.display()
        );
    }

    // The same settings again, the key from the environment this time: nothing changes.
    let out = install(
        root.path(),
        &["--drain-timeout", "90", "--danger-allow-no-sandbox"],
        &[("BENCHER_RUNNER_KEY", KEY)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches(": unchanged").count(), 2, "{}", text(&out));
    assert!(!text(&out).contains(KEY));
    assert_eq!(std::fs::read_to_string(&env_path).unwrap(), env);
    assert_eq!(
        std::fs::read_to_string(root.path().join(UNIT)).unwrap(),
        unit
    );
}

#[test]
fn install_refuses_files_that_differ_unless_forced() {
    let root = tempfile::tempdir().unwrap();
    let unit_path = root.path().join(UNIT);
    std::fs::create_dir_all(unit_path.parent().unwrap()).unwrap();
    let foreign = "[Service]\nExecStart=/usr/bin/someone-else\n";
    std::fs::write(&unit_path, foreign).unwrap();

    let out = install(root.path(), &["--key", KEY], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--force") && stderr.contains(UNIT),
        "{stderr}"
    );
    // Nothing was written: neither the unit nor the environment file.
    assert_eq!(std::fs::read_to_string(&unit_path).unwrap(), foreign);
    assert!(!root.path().join(ENV).exists());

    let out = install(root.path(), &["--key", KEY, "--force"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("replaced"),
        "{}",
        text(&out)
    );
    assert!(
        std::fs::read_to_string(&unit_path)
            .unwrap()
            .contains(" up --drain-timeout 60\n")
    );

    // A rotated key is a different environment file: refused without showing either key.
    let out = install(root.path(), &["--key", OTHER_KEY], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!text(&out).contains(KEY) && !text(&out).contains(OTHER_KEY));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("holds the key"),
        "{}",
        text(&out)
    );
    let out = install(root.path(), &["--key", OTHER_KEY, "--force"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let env = std::fs::read_to_string(root.path().join(ENV)).unwrap();
    assert!(env.contains(OTHER_KEY) && !env.contains(KEY));
    assert_eq!(mode(&root.path().join(ENV)), 0o600);
}

#[test]
fn install_dry_run_and_bad_keys_write_and_show_nothing_secret() {
    let root = tempfile::tempdir().unwrap();
    let out = install(root.path(), &["--key", KEY, "--dry-run"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("TimeoutStopSec=90") && stdout.contains("BENCHER_RUNNER_KEY=\"<hidden>\""),
        "{stdout}"
    );
    assert!(!text(&out).contains(KEY));
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        0,
        "a dry run writes nothing"
    );

    let secret = "bencher_runner_tooShortButSecret";
    let out = install(root.path(), &[], &[("BENCHER_RUNNER_KEY", secret)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!text(&out).contains("tooShortButSecret"), "{}", text(&out));
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);

    // --enable never touches this host's systemd from a test root.
    let out = install(root.path(), &["--key", KEY, "--enable"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--root"),
        "{}",
        text(&out)
    );
}

/// `runner status` on `spool` with the fake tuning tree `root`; exits 0 and returns its
/// JSON and its text.
fn status(spool: &Path, root: &Path) -> (Value, String) {
    let base = [
        "status",
        "--spool-dir",
        spool.to_str().unwrap(),
        "--tuning-root",
        root.to_str().unwrap(),
    ];
    let out = runner(&[&base[..], &["--json"]].concat(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = runner(&base, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    (json, String::from_utf8(out.stdout).unwrap())
}

#[test]
fn status_lists_the_spool_and_a_leftover_tuning_state() {
    let spool_dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let (json, text) = status(spool_dir.path(), root.path());
    assert_eq!(json["agent"]["running"], false, "{json}");
    assert!(
        text.contains("not running") && text.contains("not applied"),
        "{text}"
    );

    // An unacknowledged result, written as the agent writes it.
    let job = JobUuid::new_v4();
    {
        let spool = Spool::open(spool_dir.path()).unwrap();
        spool.write(&RunnerMessage::Canceled { job }).unwrap();
    }
    // A tuning state saved by a process that is gone: the runner died mid-benchmark.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let swappiness = "proc/sys/vm/swappiness";
    std::fs::create_dir_all(root.path().join("proc/sys/vm")).unwrap();
    std::fs::write(root.path().join(swappiness), "10\n").unwrap();
    let dir = root.path().join(bencher_runner::tuning::TUNING_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    let mut saved = SavedState::new(
        None,
        vec![Original {
            knob: Knob::Swappiness,
            path: swappiness.into(),
            value: "60".into(),
            format: Format::Plain,
        }],
        Vec::new(),
    );
    saved.pid = dead;
    state::save(&dir, &saved).unwrap();

    let (json, text) = status(spool_dir.path(), root.path());
    let entries = json["spool"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{json}");
    assert_eq!(entries[0]["job"], job.to_string());
    assert_eq!(entries[0]["kind"], "pending");
    assert_eq!(entries[0]["event"], "canceled");
    assert!(
        text.contains(&job.to_string()) && text.contains("1 result(s) wait"),
        "{text}"
    );
    assert_eq!(json["tuning"]["condition"], "left_unrestored", "{json}");
    assert_eq!(json["tuning"]["pid"], dead);
    assert_eq!(json["tuning"]["knobs"][0]["knob"], "swappiness", "{json}");
    assert_eq!(json["tuning"]["knobs"][0]["original"], "60");
    assert_eq!(json["tuning"]["knobs"][0]["current"], "10");
    assert!(
        text.contains("left unrestored") && text.contains("swappiness"),
        "{text}"
    );
}

/// Waits (a failure bound only) until `runner status` says `check`.
async fn wait_status(spool: &Path, root: &Path, check: impl Fn(&Value) -> bool) -> (Value, String) {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (json, text) = status(spool, root);
        if check(&json) {
            return (json, text);
        }
        last = json;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("runner status never matched: {last}");
}

#[tokio::test]
async fn status_follows_a_real_runner() {
    let server = TestServer::start(Backend::Sqlite).await;
    let key = register_runner(&server).await;
    let runner = Runner::start(&server, &key);
    let spool = runner.spool_path().to_owned();
    let root = tempfile::tempdir().unwrap();

    let (json, text) = wait_status(&spool, root.path(), |json| {
        json["agent"]["status"]["connection"]["state"] == "connected"
    })
    .await;
    assert_eq!(json["agent"]["running"], true, "{json}");
    let status = &json["agent"]["status"];
    assert!(
        status["channel"]
            .as_str()
            .unwrap()
            .ends_with("/v0/runners/e2e/channel"),
        "{json}"
    );
    assert_eq!(status["job"], Value::Null);
    assert!(
        text.contains("running (pid") && text.contains("connected since"),
        "{text}"
    );
    let file = std::fs::read_to_string(spool.join("status")).unwrap();
    assert!(!file.contains(&key), "the status file never holds the key");

    // Killed: the file stays, but its process is gone.
    let pid = status["pid"].clone();
    let dirs = runner.kill9().await;
    let (json, text) = wait_status(dirs.spool_path(), root.path(), |json| {
        json["agent"]["running"] == false
    })
    .await;
    assert_eq!(json["agent"]["status"]["pid"], pid);
    assert!(
        text.contains("not running") && text.contains("is gone"),
        "{text}"
    );
    server.stop().await;
}
