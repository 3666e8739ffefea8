//! Fault injection end to end, through real processes: a real server (SQLite and
//! PostgreSQL), the real `runner` binary, and faults from outside: `kill -9` of the
//! runner mid-job, a user cancel, a restart with the same spool, several runners racing
//! for many jobs, a key rotation and the hard timeout. The jobs' processes are found in
//! /proc by a unique `sleep` argument. No assertion on timings: deadlines only bound
//! failures.

mod common;

use std::time::Duration;

use bencher_test_support::{Backend, TestServer, backend_tests};
use common::{
    DONE, E2E_REPO, Runner, RunnerDirs, bmf, get, job, marker, marker_alive, post, print_bmf,
    privileged, push_host_image, register_named_runner, register_runner, register_spec, run_job,
    submit, wait_job, wait_marker_alive, wait_marker_gone,
};
use serde_json::{Value, json};

fn image() -> String {
    format!("{E2E_REPO}:v1")
}

/// Pushes the test image and registers the runner `e2e`; returns its key.
async fn setup(server: &TestServer) -> String {
    push_host_image(server).await;
    register_runner(server).await
}

/// Runs one trivial job to the end and checks its output: the runner is alive and serves.
async fn echo(server: &TestServer, text: &str) -> Value {
    let job = run_job(
        server,
        json!({ "image": image(), "spec": "host", "cmd": ["/bin/sh", "-c", print_bmf(text)] }),
        DONE,
    )
    .await;
    assert!(
        ["completed", "processed"].contains(&job["status"].as_str().unwrap()),
        "{job}"
    );
    assert_eq!(job["output"].as_array().map(Vec::len), Some(1), "{job}");
    assert_eq!(
        job["output"][0]["stdout"],
        format!("{}\n", bmf(text)),
        "{job}"
    );
    job
}

backend_tests!(
    kill_9_mid_job_fails_it_by_heartbeat_timeout,
    cancel_mid_job_kills_the_job_and_the_runner_goes_on,
    restart_after_kill_9_ends_the_job_once,
    spooled_result_survives_a_server_restart_and_a_kill_9,
    three_runners_run_twenty_jobs_exactly_once,
    key_rotation_stops_an_idle_runner,
    hard_timeout_ends_the_job_and_kills_it,
    hard_timeout_cancels_the_job_of_a_frozen_runner,
);

/// 1. `kill -9` of the runner while its job sleeps: after the heartbeat timeout the job
///    is `failed`, and stays so; the job's processes do not outlive the runner.
async fn kill_9_mid_job_fails_it_by_heartbeat_timeout(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(backend, |config| {
        config.heartbeat_timeout = Duration::from_secs(2);
    })
    .await;
    let key = setup(&server).await;
    let runner = Runner::start(&server, &key);
    let sleep = marker(30);
    let uuid = submit(
        &server,
        json!({ "image": image(), "spec": "host", "cmd": ["/bin/sleep", &sleep] }),
    )
    .await;
    wait_job(&server, &uuid, &["running"]).await;
    wait_marker_alive(&sleep).await;
    let dirs = runner.kill9().await;

    let failed = wait_job(&server, &uuid, DONE).await;
    assert_eq!(failed["status"], "failed", "{failed}\n{}", dirs.log());
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|error| error.contains("heartbeat")),
        "{failed}"
    );
    // The job's process tree dies with the runner (its init's parent-death signal).
    wait_marker_gone(&sleep).await;
    // Nothing else changes: a later look sees the same failed job, no output appears.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = job(&server, &uuid).await;
    assert_eq!(later["status"], "failed", "{later}");
    assert_eq!(later["output"], failed["output"], "{later}");
    let view = get(&server, "/v0/runners/e2e").await;
    assert_eq!(view["state"], "offline", "{view}");
    server.stop().await;
}

/// 2. A user cancels a running job: it ends `canceled`, its processes are gone, and the
///    runner takes the next job.
async fn cancel_mid_job_kills_the_job_and_the_runner_goes_on(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    let key = setup(&server).await;
    let runner = Runner::start(&server, &key);
    let sleep = marker(30);
    let uuid = submit(
        &server,
        json!({ "image": image(), "spec": "host", "cmd": ["/bin/sleep", &sleep] }),
    )
    .await;
    wait_job(&server, &uuid, &["running"]).await;
    wait_marker_alive(&sleep).await;

    post(
        &server,
        &format!("/v0/projects/{E2E_REPO}/jobs/{uuid}/cancel"),
        json!({}),
    )
    .await;
    let canceled = wait_job(&server, &uuid, DONE).await;
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    wait_marker_gone(&sleep).await;

    let next = echo(&server, "next").await;
    assert_eq!(next["runner"], canceled["runner"], "{next}");
    // The runner's acknowledgement does not turn the canceled job into anything else.
    assert_eq!(job(&server, &uuid).await["status"], "canceled");
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}

/// 3. `kill -9` of the runner while its job runs `sleep; echo done`, then a restart with
///    the same cache and spool: the job ends in one clear terminal state, once, with at
///    most one copy of its output, and the restarted runner serves again.
async fn restart_after_kill_9_ends_the_job_once(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(backend, |config| {
        config.heartbeat_timeout = Duration::from_secs(2);
    })
    .await;
    let key = setup(&server).await;
    let runner = Runner::start(&server, &key);
    let sleep = marker(2);
    let uuid = submit(
        &server,
        json!({ "image": image(), "spec": "host", "cmd": ["/bin/sh", "-c", format!("/bin/sleep {sleep}; {}", print_bmf("done"))] }),
    )
    .await;
    wait_job(&server, &uuid, &["running"]).await;
    wait_marker_alive(&sleep).await;
    let dirs = runner.kill9().await;
    let runner = Runner::start_as(&server, "e2e", &key, dirs);

    let ended = wait_job(&server, &uuid, DONE).await;
    // The restarted runner serves, and has re-sent whatever it had spooled by then.
    echo(&server, "after").await;
    let later = job(&server, &uuid).await;
    let status = later["status"].as_str().unwrap();
    assert!(
        ["failed", "completed", "processed"].contains(&status),
        "{later}"
    );
    if status == "failed" {
        assert_eq!(ended["status"], "failed", "{ended}");
    }
    if let Some(output) = later["output"].as_array() {
        assert!(output.len() <= 1, "one iteration, one output: {later}");
        if status != "failed" {
            assert_eq!(output[0]["stdout"], "done\n", "{later}");
        }
    }
    wait_marker_gone(&sleep).await;
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}

/// 3b. A result that is spooled for sure: the server goes away (restarted on a new port)
///    while the job runs `sleep; echo done`, the runner finishes it and cannot deliver
///    the result, so it is in the spool; then `kill -9` of the runner and a restart
///    against the new server with the same spool: the result is re-sent and the job ends
///    `completed` (after its heartbeat-timeout failure, if any), once, with one output.
async fn spooled_result_survives_a_server_restart_and_a_kill_9(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(backend, |config| {
        config.heartbeat_timeout = Duration::from_secs(2);
    })
    .await;
    let key = setup(&server).await;
    let runner = Runner::start(&server, &key);
    let sleep = marker(2);
    let uuid = submit(
        &server,
        json!({ "image": image(), "spec": "host", "cmd": ["/bin/sh", "-c", format!("/bin/sleep {sleep}; {}", print_bmf("done"))] }),
    )
    .await;
    wait_job(&server, &uuid, &["running"]).await;
    let server = server.restart().await;
    let mut spooled = false;
    for _ in 0..600 {
        spooled = runner.spooled(&uuid);
        if spooled {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(spooled, "the result is spooled: {}", runner.log());
    let dirs = runner.kill9().await;
    let runner = Runner::start_as(&server, "e2e", &key, dirs);

    let done = wait_job(&server, &uuid, &["completed", "processed"]).await;
    let output = done["output"]
        .as_array()
        .unwrap_or_else(|| panic!("{done}"));
    assert_eq!(output.len(), 1, "{done}");
    assert_eq!(output[0]["stdout"], format!("{}\n", bmf("done")), "{done}");
    assert_eq!(output[0]["exit_code"], 0, "{done}");
    // The restarted runner serves, and the re-sent result was acknowledged: the spool is
    // empty and the job did not change.
    echo(&server, "after").await;
    let later = job(&server, &uuid).await;
    assert_eq!(later["output"], done["output"], "{later}");
    assert!(
        ["completed", "processed"].contains(&later["status"].as_str().unwrap()),
        "{later}"
    );
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}

/// 4. Three runner binaries and twenty trivial jobs: every job completes exactly once,
///    each with its own output.
async fn three_runners_run_twenty_jobs_exactly_once(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    push_host_image(&server).await;
    register_spec(&server).await;
    let mut runners = Vec::new();
    for slug in ["f0", "f1", "f2"] {
        let key = register_named_runner(&server, slug).await;
        runners.push(Runner::start_as(&server, slug, &key, RunnerDirs::new()));
    }
    let mut uuids = Vec::new();
    for n in 0..20 {
        let uuid = submit(
            &server,
            json!({ "image": image(), "spec": "host", "cmd": ["/bin/sh", "-c", print_bmf(&n.to_string())] }),
        )
        .await;
        uuids.push(uuid);
    }
    let mut by_runner = std::collections::BTreeMap::<String, usize>::new();
    for (n, uuid) in uuids.iter().enumerate() {
        let job = wait_job(&server, uuid, DONE).await;
        assert!(
            ["completed", "processed"].contains(&job["status"].as_str().unwrap()),
            "{job}"
        );
        let output = job["output"].as_array().unwrap_or_else(|| panic!("{job}"));
        assert_eq!(output.len(), 1, "run once: {job}");
        assert_eq!(
            output[0]["stdout"],
            format!("{}\n", bmf(&n.to_string())),
            "{job}"
        );
        assert_eq!(output[0]["exit_code"], 0, "{job}");
        *by_runner.entry(job["runner"].to_string()).or_default() += 1;
    }
    assert_eq!(by_runner.values().sum::<usize>(), 20, "{by_runner:?}");
    for runner in runners {
        let (code, log) = runner.stop().await;
        assert_eq!(code, Some(0), "{log}");
    }
    server.stop().await;
}

/// 5. The runner's key is rotated while it is idle: its channel is closed, it is refused
///    (401) on reconnecting, stops with a non-zero exit and says why, and never claims
///    the job submitted right after the rotation.
async fn key_rotation_stops_an_idle_runner(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start(backend).await;
    let key = setup(&server).await;
    let runner = Runner::start(&server, &key);
    echo(&server, "idle").await;
    let view = get(&server, "/v0/runners/e2e").await;
    assert_eq!(view["state"], "idle", "{view}");

    let rotated = post(&server, "/v0/runners/e2e/key", json!({})).await;
    assert_ne!(rotated["key"].as_str(), Some(key.as_str()));
    let uuid = submit(
        &server,
        json!({ "image": image(), "spec": "host", "cmd": ["/bin/sh", "-c", "echo never"] }),
    )
    .await;
    let (code, log) = runner.wait().await;
    assert!(code.is_some_and(|code| code != 0), "{code:?}: {log}");
    assert!(log.contains("401"), "a clear message: {log}");
    assert!(!log.contains(&key), "the runner key must never be logged");
    let job = job(&server, &uuid).await;
    assert_eq!(job["status"], "pending", "{job}");
    assert!(job["runner"].is_null(), "{job}");
    server.stop().await;
}

/// 6. A job with `timeout: 2` sleeping 60 s and a 1 s grace period: it ends (`canceled`
///    by the server's hard timeout, or `failed` with SIGKILL's 137 by the runner's own
///    timeout, whichever comes first) and its process is gone; the runner goes on.
async fn hard_timeout_ends_the_job_and_kills_it(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(backend, |config| {
        config.job_grace_period = Duration::from_secs(1);
    })
    .await;
    let key = setup(&server).await;
    let runner = Runner::start(&server, &key);
    let sleep = marker(60);
    let uuid = submit(
        &server,
        json!({ "image": image(), "spec": "host", "cmd": ["/bin/sleep", &sleep], "timeout": 2 }),
    )
    .await;
    let ended = wait_job(&server, &uuid, DONE).await;
    match ended["status"].as_str().unwrap() {
        "canceled" => {}
        // What happens here: the runner's own timeout (2 s) comes before the server's
        // hard limit (2 s + 1 s grace) and it reports the kill.
        "failed" => {
            assert_eq!(ended["output"][0]["exit_code"], 137, "{ended}");
            assert!(
                ended["error"]
                    .as_str()
                    .is_some_and(|error| error.contains("timed out")),
                "{ended}"
            );
        }
        _ => panic!("the job must not complete: {ended}"),
    }
    wait_marker_gone(&sleep).await;
    assert!(!marker_alive(&sleep));
    echo(&server, "after").await;
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}

/// 6b. The server's own hard timeout, independent of the runner: the runner is frozen
///     (SIGSTOP, its connection stays open, the heartbeat timeout is long) while its job
///     (`timeout: 2`, grace 1 s) sleeps. The server cancels the job; once thawed
///     (SIGCONT) the runner kills it, the job stays `canceled`, and the runner goes on.
async fn hard_timeout_cancels_the_job_of_a_frozen_runner(backend: Backend) {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(backend, |config| {
        config.heartbeat_timeout = Duration::from_secs(600);
        config.job_grace_period = Duration::from_secs(1);
    })
    .await;
    let key = setup(&server).await;
    let runner = Runner::start(&server, &key);
    let sleep = marker(60);
    let uuid = submit(
        &server,
        json!({ "image": image(), "spec": "host", "cmd": ["/bin/sleep", &sleep], "timeout": 2 }),
    )
    .await;
    wait_job(&server, &uuid, &["running"]).await;
    wait_marker_alive(&sleep).await;
    runner.signal("STOP");
    let ended = wait_job(&server, &uuid, DONE).await;
    runner.signal("CONT");
    assert_eq!(ended["status"], "canceled", "{ended}");
    wait_marker_gone(&sleep).await;
    echo(&server, "after").await;
    let later = job(&server, &uuid).await;
    assert_eq!(later["status"], "canceled", "{later}");
    let (code, log) = runner.stop().await;
    assert_eq!(code, Some(0), "{log}");
    server.stop().await;
}
