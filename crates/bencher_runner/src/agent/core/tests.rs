//! Unit tests of the protocol core, transition by transition. Pure: no IO, no clock.

use std::time::Duration;

use bencher_types::protocol::{IterationResult, RunnerMessage, RunnerMetadata, ServerMessage};
use bencher_types::{Architecture, Capabilities, JobUuid, Os, Sandbox};
use serde_json::json;

use super::*;

const TIMING: Timing = Timing {
    drain: Duration::from_secs(60),
    linger: Duration::from_secs(10),
    abort: Duration::from_secs(5),
    resend: Duration::from_secs(30),
    ack_window: Duration::from_secs(10),
    resend_limit: 3,
    update_backoff: Duration::from_secs(60),
    update_backoff_max: Duration::from_secs(600),
};

fn metadata() -> RunnerMetadata {
    RunnerMetadata {
        os: "linux".into(),
        arch: "x86_64".into(),
        version: "0.1.0".into(),
        channel: None,
        checksum: None,
    }
}

fn config() -> Config {
    Config {
        poll_timeout: 55,
        metadata: metadata(),
        features: vec![],
        auto_update: false,
        os: Some(Os::Linux),
        architecture: Some(Architecture::X86_64),
        no_sandbox: NoSandbox::Refused,
        sandboxes: vec![Sandbox::Firecracker],
        sandboxes_without_network: vec![],
        // The seed's example Spec (4 CPUs, 48 GiB, 128 GiB) fits.
        machine: Machine {
            cpus: 8,
            memory: 64 << 30,
            disk: 256 << 30,
        },
        timing: TIMING,
    }
}

fn ready() -> Effect {
    Effect::Send(RunnerMessage::Ready {
        poll_timeout: Some(55),
        runner: Some(metadata()),
        features: vec![],
        capabilities: Some(Capabilities {
            os: "linux".into(),
            arch: "x86_64".into(),
            no_sandbox: false,
            sandboxes: vec!["firecracker".into()],
            sandboxes_without_network: vec![],
            cpus: 8,
            memory: 64 << 30,
            disk: 256 << 30,
        }),
    })
}

/// A `job` message as a server sends it.
fn job_message(job: JobUuid, sandbox: Option<&str>, arch: &str) -> ServerMessage {
    let mut spec = json!({
        "uuid": "6f1c2a57-6a43-4c4c-9a39-6b7d8f1e2a10",
        "name": "Intel v1",
        "slug": "intel-v1",
        "os": "linux",
        "architecture": arch,
        "cpu": 4,
        "memory": 51539607552u64,
        "disk": 137438953472u64,
        "network": false,
        "fallback": false,
        "created": "2026-01-01T00:00:00Z",
        "modified": "2026-01-01T00:00:00Z",
    });
    if let Some(sandbox) = sandbox {
        spec["sandbox"] = json!(sandbox);
    }
    let text = json!({
        "event": "job",
        "uuid": job,
        "spec": spec,
        "config": {
            "registry": "https://api.bencher.example.com",
            "project": "0b7c2d1e-5f6a-4b3c-8d9e-0f1a2b3c4d5e",
            "digest": format!("sha256:{}", "a".repeat(64)),
            "cmd": ["bench"],
            "timeout": 60,
        },
        "oci_token": "secret-token",
        "timeout": 60,
        "created": "2026-01-01T00:00:00Z",
    })
    .to_string();
    ServerMessage::parse(&text).unwrap()
}

fn sandboxed_job(job: JobUuid) -> Input {
    Input::Message(job_message(job, Some("firecracker"), "x86_64"))
}

fn ack(job: Option<JobUuid>) -> Input {
    Input::Message(ServerMessage::Ack { job })
}

fn tick(secs: u64) -> Input {
    Input::Tick {
        now: Duration::from_secs(secs),
    }
}

fn results() -> Vec<IterationResult> {
    vec![IterationResult {
        exit_code: 0,
        stdout: Some("bench 42 ns/iter".into()),
        ..Default::default()
    }]
}

fn completed(job: JobUuid) -> RunnerMessage {
    RunnerMessage::Completed {
        job,
        results: results(),
        output: None,
        environment: None,
    }
}

/// The effects without the notes.
fn acts(effects: Vec<Effect>) -> Vec<Effect> {
    effects
        .into_iter()
        .filter(|e| !matches!(e, Effect::Note(_)))
        .collect()
}

fn notes(effects: &[Effect]) -> Vec<Note> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Note(note) => Some(note.clone()),
            _ => None,
        })
        .collect()
}

/// Connected and polling.
fn polling() -> State {
    let mut state = State::new(config(), vec![]);
    assert_eq!(acts(step(&mut state, Input::Connected)), vec![ready()]);
    state
}

/// Connected, with `job` executing (its `running` acknowledged).
fn executing(job: JobUuid) -> State {
    let mut state = polling();
    let fx = acts(step(&mut state, sandboxed_job(job)));
    assert!(matches!(fx.as_slice(), [Effect::Prepare(a)] if a.job == job));
    assert_eq!(
        acts(step(&mut state, Input::Prepared { job })),
        vec![
            Effect::Send(RunnerMessage::Running { job: Some(job) }),
            Effect::Execute(job)
        ]
    );
    assert_eq!(acts(step(&mut state, ack(Some(job)))), vec![]);
    state
}

fn finish(state: &mut State, job: JobUuid, outcome: JobOutcome) -> Vec<Effect> {
    acts(step(state, Input::Finished { job, outcome }))
}

// ---- connecting and polling ----

#[test]
fn connect_sends_ready_with_metadata() {
    let mut state = State::new(config(), vec![]);
    let fx = step(&mut state, Input::Connected);
    assert_eq!(notes(&fx), vec![Note::Connected { resending: 0 }]);
    assert_eq!(acts(fx), vec![ready()]);
}

#[test]
fn ready_on_the_wire() {
    let Effect::Send(message) = ready() else {
        unreachable!()
    };
    let wire: serde_json::Value = serde_json::to_value(&message).unwrap();
    assert_eq!(
        wire,
        json!({
            "event": "ready",
            "poll_timeout": 55,
            "runner": {"os": "linux", "arch": "x86_64", "version": "0.1.0"},
            "capabilities": {
                "os": "linux", "arch": "x86_64", "no_sandbox": false,
                "sandboxes": ["firecracker"], "cpus": 8, "memory": 68719476736u64,
                "disk": 274877906944u64,
            },
        })
    );
}

#[test]
fn nothing_is_sent_while_disconnected() {
    let mut state = State::new(config(), vec![]);
    assert_eq!(acts(step(&mut state, tick(1))), vec![]);
    assert!(!state.is_connected());
}

#[test]
fn no_job_asks_again_and_ready_is_never_doubled() {
    let mut state = polling();
    // Still polling: ticks send nothing.
    assert_eq!(acts(step(&mut state, tick(1))), vec![]);
    assert_eq!(
        acts(step(&mut state, Input::Message(ServerMessage::NoJob))),
        vec![ready()]
    );
    assert_eq!(acts(step(&mut state, tick(2))), vec![]);
}

#[test]
fn a_new_connection_polls_again() {
    let mut state = polling();
    assert_eq!(acts(step(&mut state, Input::Disconnected)), vec![]);
    assert_eq!(acts(step(&mut state, Input::Connected)), vec![ready()]);
}

// ---- a job from start to acknowledgement ----

#[test]
fn job_lifecycle() {
    let job = JobUuid::new_v4();
    let mut state = polling();

    let fx = step(&mut state, sandboxed_job(job));
    assert_eq!(notes(&fx), vec![Note::JobAssigned { job }]);
    let fx = acts(fx);
    let [Effect::Prepare(assignment)] = fx.as_slice() else {
        panic!("expected Prepare, got {fx:?}");
    };
    assert_eq!(assignment.job, job);
    assert_eq!(assignment.oci_token.expose_secret(), "secret-token");
    assert!(!format!("{assignment:?}").contains("secret-token"));
    assert_eq!(state.job(), Some(job));

    // A claimed job is kept alive while its image is pulled.
    assert_eq!(
        acts(step(&mut state, tick(1))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );

    assert_eq!(
        acts(step(&mut state, Input::Prepared { job })),
        vec![
            Effect::Send(RunnerMessage::Running { job: Some(job) }),
            Effect::Execute(job)
        ]
    );
    assert_eq!(acts(step(&mut state, ack(Some(job)))), vec![]);
    assert_eq!(
        acts(step(&mut state, tick(2))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );
    assert_eq!(
        acts(step(&mut state, tick(3))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );

    // Spooled before it is sent; no `ready` until it is acknowledged.
    assert_eq!(
        finish(
            &mut state,
            job,
            JobOutcome::Completed {
                results: results(),
                environment: None
            }
        ),
        vec![
            Effect::Release(job),
            Effect::Spool(completed(job)),
            Effect::Send(completed(job)),
        ]
    );
    assert_eq!(state.job(), None);
    assert_eq!(state.unacknowledged(), vec![job]);
    // No heartbeats once the job is over.
    assert_eq!(acts(step(&mut state, tick(4))), vec![]);

    let fx = step(&mut state, ack(Some(job)));
    assert_eq!(notes(&fx), vec![Note::Acknowledged { job }]);
    assert_eq!(acts(fx), vec![Effect::Unspool(job), ready()]);
    assert!(state.unacknowledged().is_empty());
}

#[test]
fn outcomes_become_terminal_messages() {
    let cases = [
        (
            JobOutcome::Failed {
                results: results(),
                error: "exit code 1".into(),
            },
            "exit code 1".to_owned(),
        ),
        (
            JobOutcome::TimedOut { results: results() },
            "the job timed out after 60 s".to_owned(),
        ),
        (
            JobOutcome::Canceled { results: results() },
            "the job was canceled by the runner".to_owned(),
        ),
    ];
    for (outcome, error) in cases {
        let job = JobUuid::new_v4();
        let mut state = executing(job);
        let failed = RunnerMessage::Failed {
            job,
            results: results(),
            error,
            output: None,
        };
        assert_eq!(
            finish(&mut state, job, outcome),
            vec![
                Effect::Release(job),
                Effect::Spool(failed.clone()),
                Effect::Send(failed)
            ]
        );
    }
}

#[test]
fn a_failed_preparation_is_reported() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    step(&mut state, sandboxed_job(job));
    let failed = RunnerMessage::Failed {
        job,
        results: vec![],
        error: "pulling the image failed".into(),
        output: None,
    };
    assert_eq!(
        finish(
            &mut state,
            job,
            JobOutcome::Failed {
                results: vec![],
                error: "pulling the image failed".into()
            }
        ),
        vec![
            Effect::Release(job),
            Effect::Spool(failed.clone()),
            Effect::Send(failed)
        ]
    );
}

#[test]
fn stale_job_inputs_are_ignored() {
    let job = JobUuid::new_v4();
    let other = JobUuid::new_v4();
    let mut state = executing(job);
    let fx = step(
        &mut state,
        Input::Finished {
            job: other,
            outcome: JobOutcome::Completed {
                results: vec![],
                environment: None,
            },
        },
    );
    assert_eq!(notes(&fx), vec![Note::StaleJobInput { job: other }]);
    assert_eq!(acts(fx), vec![]);
    assert_eq!(
        acts(step(&mut state, Input::Prepared { job })),
        vec![],
        "a second Prepared does not execute twice"
    );
    assert_eq!(state.job(), Some(job));
}

// ---- acknowledgements ----

#[test]
fn the_ack_of_running_is_not_taken_for_the_terminal_message() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    step(&mut state, sandboxed_job(job));
    step(&mut state, Input::Prepared { job });
    // The job ends before the server acknowledged `running`.
    finish(
        &mut state,
        job,
        JobOutcome::Completed {
            results: results(),
            environment: None,
        },
    );
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![],
        "this ack is running's"
    );
    assert_eq!(state.unacknowledged(), vec![job]);
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), ready()]
    );
}

#[test]
fn acks_without_a_job_are_taken_in_order() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    step(&mut state, sandboxed_job(job));
    step(&mut state, Input::Prepared { job });
    finish(
        &mut state,
        job,
        JobOutcome::Completed {
            results: results(),
            environment: None,
        },
    );
    assert_eq!(acts(step(&mut state, ack(None))), vec![]);
    assert_eq!(
        acts(step(&mut state, ack(None))),
        vec![Effect::Unspool(job), ready()]
    );
}

#[test]
fn a_server_that_does_not_ack_running() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    step(&mut state, sandboxed_job(job));
    step(&mut state, Input::Prepared { job });
    for second in 1..=11 {
        step(&mut state, tick(second));
    }
    // `running` was never acknowledged and has been given up on.
    finish(
        &mut state,
        job,
        JobOutcome::Completed {
            results: results(),
            environment: None,
        },
    );
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), ready()]
    );
}

#[test]
fn a_server_that_acks_heartbeats_is_learned() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, tick(1));
    // An ack when nothing is outstanding: the heartbeat's.
    let fx = step(&mut state, ack(None));
    assert!(notes(&fx).contains(&Note::ServerAcksEverything));
    assert_eq!(acts(fx), vec![]);
    // From now on heartbeats are tracked, so the ack of a heartbeat sent just before the
    // terminal message is not taken for the terminal message's.
    step(&mut state, tick(2));
    finish(
        &mut state,
        job,
        JobOutcome::Completed {
            results: results(),
            environment: None,
        },
    );
    assert_eq!(acts(step(&mut state, ack(None))), vec![]);
    assert_eq!(state.unacknowledged(), vec![job]);
    let fx = acts(step(&mut state, ack(None)));
    assert_eq!(fx, vec![Effect::Unspool(job), ready()]);
    // Its ack of `ready` comes before the answer; neither is confused with anything.
    assert_eq!(acts(step(&mut state, ack(None))), vec![]);
    assert_eq!(
        acts(step(&mut state, Input::Message(ServerMessage::NoJob))),
        vec![ready()]
    );
}

#[test]
fn unacknowledged_terminal_messages_are_sent_again() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, tick(1));
    finish(
        &mut state,
        job,
        JobOutcome::Completed {
            results: results(),
            environment: None,
        },
    );
    assert_eq!(acts(step(&mut state, tick(30))), vec![]);
    let fx = step(&mut state, tick(31));
    assert_eq!(notes(&fx), vec![Note::Resending { job }]);
    assert_eq!(acts(fx), vec![Effect::Send(completed(job))]);
    // The first ack clears it; the second (for the copy) is harmless.
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), ready()]
    );
    assert_eq!(acts(step(&mut state, ack(Some(job)))), vec![]);
}

#[test]
fn a_terminal_message_never_acknowledged_is_parked() {
    let job = JobUuid::new_v4();
    let mut state = State::new(config(), vec![completed(job)]);
    assert_eq!(
        acts(step(&mut state, Input::Connected)),
        vec![Effect::Send(completed(job))]
    );
    assert_eq!(
        acts(step(&mut state, tick(30))),
        vec![Effect::Send(completed(job))]
    );
    // Reconnects do not count: only periods without an ack over a live connection.
    step(&mut state, Input::Disconnected);
    assert_eq!(
        acts(step(&mut state, Input::Connected)),
        vec![Effect::Send(completed(job))]
    );
    assert_eq!(
        acts(step(&mut state, tick(60))),
        vec![Effect::Send(completed(job))]
    );
    let fx = step(&mut state, tick(90));
    assert!(notes(&fx).contains(&Note::Parked { job }));
    // Set aside, and the runner goes back to work.
    assert_eq!(acts(fx), vec![Effect::Park(job), ready()]);
    assert!(state.unacknowledged().is_empty());
    // A late ack changes nothing.
    assert_eq!(acts(step(&mut state, ack(Some(job)))), vec![]);
}

// ---- spool and reconnects ----

#[test]
fn spooled_messages_are_resent_before_ready() {
    let (a, b) = (JobUuid::new_v4(), JobUuid::new_v4());
    let canceled = RunnerMessage::Canceled { job: b };
    let mut state = State::new(
        config(),
        vec![completed(a), canceled.clone(), RunnerMessage::Heartbeat],
    );
    assert_eq!(state.unacknowledged(), vec![a, b]);
    let fx = step(&mut state, Input::Connected);
    assert_eq!(notes(&fx), vec![Note::Connected { resending: 2 }]);
    assert_eq!(
        acts(fx),
        vec![Effect::Send(completed(a)), Effect::Send(canceled)]
    );
    assert_eq!(
        acts(step(&mut state, ack(Some(a)))),
        vec![Effect::Unspool(a)]
    );
    assert_eq!(
        acts(step(&mut state, ack(Some(b)))),
        vec![Effect::Unspool(b), ready()]
    );
}

#[test]
fn a_connection_lost_before_the_ack_resends_on_the_next() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    finish(
        &mut state,
        job,
        JobOutcome::Completed {
            results: results(),
            environment: None,
        },
    );
    assert_eq!(acts(step(&mut state, Input::Disconnected)), vec![]);
    // An ack cannot arrive without a connection; a stray one changes nothing.
    assert_eq!(acts(step(&mut state, ack(Some(job)))), vec![]);
    assert_eq!(
        acts(step(&mut state, Input::Connected)),
        vec![Effect::Send(completed(job))]
    );
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), ready()]
    );
}

#[test]
fn a_job_outlives_a_lost_connection() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, Input::Disconnected);
    // No heartbeats without a connection.
    assert_eq!(acts(step(&mut state, tick(1))), vec![]);
    // Back: `running` again refreshes the server's liveness, then heartbeats resume.
    assert_eq!(
        acts(step(&mut state, Input::Connected)),
        vec![Effect::Send(RunnerMessage::Running { job: Some(job) })]
    );
    assert_eq!(
        acts(step(&mut state, tick(2))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );
    // It ends while disconnected: spooled now, sent on the next connection.
    step(&mut state, Input::Disconnected);
    assert_eq!(
        finish(
            &mut state,
            job,
            JobOutcome::Completed {
                results: results(),
                environment: None
            }
        ),
        vec![Effect::Release(job), Effect::Spool(completed(job))]
    );
    assert_eq!(
        acts(step(&mut state, Input::Connected)),
        vec![Effect::Send(completed(job))]
    );
}

#[test]
fn a_job_still_preparing_is_not_running_after_a_reconnect() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    step(&mut state, sandboxed_job(job));
    step(&mut state, Input::Disconnected);
    assert_eq!(acts(step(&mut state, Input::Connected)), vec![]);
    assert_eq!(
        acts(step(&mut state, tick(1))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );
}

// ---- refusals ----

fn refused(state: &mut State, message: ServerMessage) -> String {
    let fx = step(state, Input::Message(message));
    let pair: [Effect; 2] = acts(fx.clone())
        .try_into()
        .unwrap_or_else(|fx: Vec<Effect>| panic!("expected Spool and Send, got {fx:?}"));
    let [Effect::Spool(spooled), Effect::Send(sent)] = pair else {
        panic!("expected Spool and Send, got {fx:?}");
    };
    assert_eq!(spooled, sent, "spooled before sent, the same message");
    let RunnerMessage::Failed {
        job,
        results,
        error,
        ..
    } = sent
    else {
        panic!("expected failed, got {sent:?}");
    };
    assert!(results.is_empty());
    assert!(notes(&fx).contains(&Note::JobRefused {
        job,
        reason: error.clone()
    }));
    error
}

#[test]
fn a_job_without_sandbox_is_refused_without_the_flag() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    let error = refused(&mut state, job_message(job, None, "x86_64"));
    assert!(error.contains("--danger-allow-no-sandbox"), "{error}");
    assert!(error.contains("intel-v1"), "{error}");
    // Nothing runs; the refusal is acknowledged like any result, then polling resumes.
    assert_eq!(state.job(), None);
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), ready()]
    );
}

#[test]
fn a_job_without_sandbox_runs_with_the_flag() {
    let job = JobUuid::new_v4();
    let mut state = State::new(
        Config {
            no_sandbox: NoSandbox::Allowed,
            ..config()
        },
        vec![],
    );
    step(&mut state, Input::Connected);
    let fx = acts(step(
        &mut state,
        Input::Message(job_message(job, None, "x86_64")),
    ));
    assert!(matches!(fx.as_slice(), [Effect::Prepare(a)] if a.job == job));
}

#[test]
fn a_job_without_sandbox_is_refused_when_the_host_cannot_run_it() {
    let mut state = State::new(
        Config {
            no_sandbox: NoSandbox::Unavailable("not root".into()),
            ..config()
        },
        vec![],
    );
    step(&mut state, Input::Connected);
    let error = refused(&mut state, job_message(JobUuid::new_v4(), None, "x86_64"));
    assert!(error.contains("not root"), "{error}");
}

#[test]
fn a_job_for_a_missing_sandbox_is_refused() {
    let mut state = polling();
    let error = refused(
        &mut state,
        job_message(JobUuid::new_v4(), Some("qemu"), "x86_64"),
    );
    assert!(error.contains("qemu"), "{error}");
    assert!(error.contains("available: firecracker"), "{error}");
}

#[test]
fn a_job_allowing_network_is_refused_by_a_sandbox_without_it() {
    let mut state = State::new(
        Config {
            sandboxes_without_network: vec![Sandbox::Firecracker],
            ..config()
        },
        vec![],
    );
    step(&mut state, Input::Connected);
    let mut message = job_message(JobUuid::new_v4(), Some("firecracker"), "x86_64");
    if let ServerMessage::Job { spec, .. } = &mut message {
        spec.network = true;
    }
    let error = refused(&mut state, message);
    assert_eq!(
        error,
        "this runner cannot run the job's spec `intel-v1`: the Spec allows network, and \
         this runner's firecracker sandbox gives jobs no network"
    );
}

#[test]
fn a_job_for_a_spec_larger_than_the_host_is_refused() {
    let mut state = State::new(
        Config {
            machine: Machine {
                cpus: 2,
                memory: 64 << 30,
                disk: 256 << 30,
            },
            ..config()
        },
        vec![],
    );
    step(&mut state, Input::Connected);
    let error = refused(
        &mut state,
        job_message(JobUuid::new_v4(), Some("firecracker"), "x86_64"),
    );
    assert_eq!(
        error,
        "this runner cannot run the job's spec `intel-v1`: the Spec has 4 CPUs, and this \
         runner has 2"
    );
}

#[test]
fn a_job_for_another_architecture_is_refused() {
    let mut state = polling();
    let error = refused(
        &mut state,
        job_message(JobUuid::new_v4(), Some("firecracker"), "aarch64"),
    );
    assert!(error.contains("linux/aarch64"), "{error}");
    assert!(error.contains("linux/x86_64"), "{error}");
}

#[test]
fn a_job_beyond_the_protocol_limits_is_refused() {
    let job = JobUuid::new_v4();
    let mut message = job_message(job, Some("firecracker"), "x86_64");
    if let ServerMessage::Job { config, .. } = &mut message {
        config.cmd = Some(vec!["x".into(); 65]);
    }
    let mut state = polling();
    let error = refused(&mut state, message);
    assert!(error.contains("invalid job configuration"), "{error}");
}

#[test]
fn a_second_job_while_busy_is_refused_and_the_first_goes_on() {
    let (first, second) = (JobUuid::new_v4(), JobUuid::new_v4());
    let mut state = executing(first);
    let error = refused(
        &mut state,
        job_message(second, Some("firecracker"), "x86_64"),
    );
    assert!(error.contains(&first.to_string()), "{error}");
    assert_eq!(state.job(), Some(first));
    assert_eq!(
        acts(step(&mut state, tick(1))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );
}

// ---- cancel ----

#[test]
fn cancel_stops_the_job_and_answers_canceled() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    let fx = step(&mut state, Input::Message(ServerMessage::Cancel));
    assert_eq!(notes(&fx), vec![Note::CancelRequested { job }]);
    assert_eq!(acts(fx), vec![Effect::Cancel(job)]);
    // A second cancel does not cancel twice.
    assert_eq!(
        acts(step(&mut state, Input::Message(ServerMessage::Cancel))),
        vec![]
    );
    let canceled = RunnerMessage::Canceled { job };
    assert_eq!(
        finish(&mut state, job, JobOutcome::Canceled { results: results() }),
        vec![
            Effect::Release(job),
            Effect::Spool(canceled.clone()),
            Effect::Send(canceled)
        ]
    );
}

#[test]
fn cancel_answers_canceled_even_when_the_job_just_completed() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, Input::Message(ServerMessage::Cancel));
    let canceled = RunnerMessage::Canceled { job };
    assert_eq!(
        finish(
            &mut state,
            job,
            JobOutcome::Completed {
                results: results(),
                environment: None
            }
        ),
        vec![
            Effect::Release(job),
            Effect::Spool(canceled.clone()),
            Effect::Send(canceled)
        ]
    );
}

#[test]
fn cancel_while_preparing_never_executes() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    step(&mut state, sandboxed_job(job));
    assert_eq!(
        acts(step(&mut state, Input::Message(ServerMessage::Cancel))),
        vec![Effect::Cancel(job)]
    );
    // The pull finished just as the cancel came: no Execute.
    let canceled = RunnerMessage::Canceled { job };
    assert_eq!(
        acts(step(&mut state, Input::Prepared { job })),
        vec![
            Effect::Release(job),
            Effect::Spool(canceled.clone()),
            Effect::Send(canceled)
        ]
    );
}

#[test]
fn a_job_that_ignores_cancel_is_aborted() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, tick(10));
    step(&mut state, Input::Message(ServerMessage::Cancel));
    assert_eq!(
        acts(step(&mut state, tick(14))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );
    let fx = step(&mut state, tick(15));
    assert!(notes(&fx).contains(&Note::JobAborted { job }));
    assert_eq!(
        acts(fx),
        vec![Effect::Send(RunnerMessage::Heartbeat), Effect::Abort(job)]
    );
    // Only once.
    assert_eq!(
        acts(step(&mut state, tick(16))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );
}

#[test]
fn cancel_without_a_job_is_ignored() {
    let mut state = polling();
    let fx = step(&mut state, Input::Message(ServerMessage::Cancel));
    assert_eq!(notes(&fx), vec![Note::CancelWithoutJob]);
    assert_eq!(acts(fx), vec![]);
}

// ---- unknown and ignored messages ----

#[test]
fn unknown_events_are_logged_and_ignored() {
    let mut state = polling();
    let unknown = ServerMessage::parse(r#"{"event":"dance"}"#).unwrap_err();
    let fx = step(&mut state, Input::Unreadable(unknown));
    assert_eq!(fx, vec![Effect::Note(Note::UnknownEvent("dance".into()))]);
    let malformed = ServerMessage::parse(r#"{"event":"job"}"#).unwrap_err();
    let fx = step(&mut state, Input::Unreadable(malformed));
    assert!(matches!(fx.as_slice(), [Effect::Note(Note::Malformed(_))]));
    // Still polling, still connected.
    assert!(state.is_connected());
    assert_eq!(
        acts(step(&mut state, Input::Message(ServerMessage::NoJob))),
        vec![ready()]
    );
}

fn offer(version: &str) -> ServerMessage {
    ServerMessage::Update {
        version: version.into(),
        url: "/v0/runners/r/update/linux/x86_64".into(),
        checksum: "0".repeat(64),
        signature: Some("c2ln".into()),
    }
}

fn ready_with(features: &[&str]) -> Effect {
    let Effect::Send(RunnerMessage::Ready {
        poll_timeout,
        runner,
        capabilities,
        ..
    }) = ready()
    else {
        unreachable!()
    };
    Effect::Send(RunnerMessage::Ready {
        poll_timeout,
        runner,
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        capabilities,
    })
}

#[test]
fn without_auto_update_an_offer_is_logged_and_answered_like_no_job() {
    let mut state = polling();
    let fx = step(&mut state, Input::Message(offer("9.9.9")));
    assert_eq!(
        fx,
        vec![
            Effect::Note(Note::UpdateIgnored {
                version: "9.9.9".into(),
                reason: "self-update is off (--no-auto-update, or no --update-public-key)",
            }),
            ready()
        ]
    );
}

fn updating_state() -> State {
    let mut state = State::new(
        Config {
            auto_update: true,
            ..config()
        },
        vec![],
    );
    assert_eq!(
        acts(step(&mut state, Input::Connected)),
        vec![ready_with(&["update"])]
    );
    state
}

#[test]
fn an_installed_update_exits_to_re_execute_and_no_ready_goes_out_meanwhile() {
    let mut state = updating_state();
    let fx = acts(step(&mut state, Input::Message(offer("9.9.9"))));
    let Effect::Update(update) = &fx[..][0] else {
        panic!("no update: {fx:?}");
    };
    assert_eq!(update.version, "9.9.9");
    assert_eq!(fx.len(), 1, "nothing else while updating: {fx:?}");
    // Ticks keep the connection, but ask for no job.
    assert!(
        acts(step(
            &mut state,
            Input::Tick {
                now: Duration::from_secs(5)
            }
        ))
        .is_empty()
    );
    // A second offer while busy is declined.
    let fx = step(&mut state, Input::Message(offer("9.9.9")));
    assert!(matches!(
        fx.as_slice(),
        [Effect::Note(Note::UpdateIgnored { reason, .. })] if reason.contains("in progress")
    ));
    let fx = acts(step(
        &mut state,
        Input::UpdateInstalled {
            version: "9.9.9".into(),
        },
    ));
    assert_eq!(fx, vec![Effect::Exit(Exit::Updated)]);
}

#[test]
fn a_failed_update_backs_off_and_jobs_keep_coming() {
    let mut state = updating_state();
    let fx = acts(step(&mut state, Input::Message(offer("9.9.9"))));
    assert!(matches!(fx.as_slice(), [Effect::Update(_)]));
    let failed = |state: &mut State| {
        step(
            state,
            Input::UpdateFailed {
                version: "9.9.9".into(),
                error: "bad signature".into(),
            },
        )
    };
    // Ready again, without the feature: the server sends jobs, not the offer.
    let fx = failed(&mut state);
    assert_eq!(
        fx,
        vec![
            Effect::Note(Note::UpdateFailed {
                version: "9.9.9".into(),
                error: "bad signature".into(),
                retry_in: Duration::from_secs(60),
            }),
            ready_with(&[])
        ]
    );
    let job = JobUuid::new_v4();
    let fx = acts(step(&mut state, sandboxed_job(job)));
    assert!(matches!(fx.as_slice(), [Effect::Prepare(a)] if a.job == job));
    // Past the pause, the next `ready` asks for updates again.
    let fx = acts(step(
        &mut state,
        Input::Tick {
            now: Duration::from_secs(61),
        },
    ));
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::Send(RunnerMessage::Ready { .. })))
    );
    let mut state = updating_state();
    step(&mut state, Input::Message(offer("9.9.9")));
    failed(&mut state);
    step(&mut state, Input::Message(ServerMessage::NoJob));
    step(
        &mut state,
        Input::Tick {
            now: Duration::from_secs(61),
        },
    );
    let fx = acts(step(&mut state, Input::Message(ServerMessage::NoJob)));
    assert_eq!(fx, vec![ready_with(&["update"])]);
    // The second failure in a row pauses twice as long.
    step(&mut state, Input::Message(offer("9.9.9")));
    let fx = failed(&mut state);
    assert!(matches!(
        fx.as_slice(),
        [Effect::Note(Note::UpdateFailed { retry_in, .. }), _] if *retry_in == Duration::from_secs(120)
    ));
}

#[test]
fn an_offer_during_a_job_is_not_acted_on() {
    let job = JobUuid::new_v4();
    let mut state = updating_state();
    step(&mut state, sandboxed_job(job));
    let fx = step(&mut state, Input::Message(offer("9.9.9")));
    assert!(matches!(
        fx.as_slice(),
        [Effect::Note(Note::UpdateIgnored { reason, .. })] if reason.contains("busy")
    ));
}

// ---- drain and stop ----

#[test]
fn drain_while_polling_closes_then_exits() {
    let mut state = polling();
    let fx = step(&mut state, Input::Signal);
    assert!(matches!(notes(&fx).as_slice(), [Note::Draining { .. }]));
    assert_eq!(acts(fx), vec![Effect::Close]);
    assert_eq!(
        acts(step(&mut state, Input::Disconnected)),
        vec![Effect::Exit(Exit::Drained)]
    );
    assert!(state.has_exited());
    assert_eq!(step(&mut state, Input::Connected), vec![]);
}

#[test]
fn drain_while_disconnected_and_idle_exits_at_once() {
    let mut state = State::new(config(), vec![]);
    assert_eq!(
        acts(step(&mut state, Input::Signal)),
        vec![Effect::Exit(Exit::Drained)]
    );
}

#[test]
fn drain_lets_the_job_finish_and_reports_it() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    assert_eq!(acts(step(&mut state, Input::Signal)), vec![]);
    assert_eq!(
        acts(step(&mut state, tick(30))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );
    assert_eq!(
        finish(
            &mut state,
            job,
            JobOutcome::Completed {
                results: results(),
                environment: None
            }
        ),
        vec![
            Effect::Release(job),
            Effect::Spool(completed(job)),
            Effect::Send(completed(job))
        ]
    );
    // Acknowledged: no `ready`, exit.
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), Effect::Exit(Exit::Drained)]
    );
}

#[test]
fn drain_cancels_the_job_at_the_deadline() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, Input::Signal);
    assert_eq!(
        acts(step(&mut state, tick(59))),
        vec![Effect::Send(RunnerMessage::Heartbeat)]
    );
    let fx = step(&mut state, tick(60));
    assert!(notes(&fx).contains(&Note::DrainTimedOut));
    assert_eq!(
        acts(fx),
        vec![Effect::Send(RunnerMessage::Heartbeat), Effect::Cancel(job)]
    );
    let failed = RunnerMessage::Failed {
        job,
        results: results(),
        error: "the runner was stopped before the job finished".into(),
        output: None,
    };
    assert_eq!(
        finish(&mut state, job, JobOutcome::Canceled { results: results() }),
        vec![
            Effect::Release(job),
            Effect::Spool(failed.clone()),
            Effect::Send(failed)
        ]
    );
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), Effect::Exit(Exit::Drained)]
    );
}

#[test]
fn a_second_signal_cancels_at_once() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, Input::Signal);
    let fx = step(&mut state, Input::Signal);
    assert!(notes(&fx).contains(&Note::Stopping));
    assert_eq!(acts(fx), vec![Effect::Cancel(job)]);
    let fx = finish(&mut state, job, JobOutcome::Canceled { results: vec![] });
    assert!(matches!(
        fx.as_slice(),
        [
            Effect::Release(_),
            Effect::Spool(RunnerMessage::Failed { .. }),
            Effect::Send(RunnerMessage::Failed { .. })
        ]
    ));
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), Effect::Exit(Exit::Drained)]
    );
}

#[test]
fn a_stopping_runner_exits_with_its_result_spooled_when_the_server_is_gone() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, Input::Signal);
    step(&mut state, Input::Signal);
    step(&mut state, Input::Disconnected);
    finish(&mut state, job, JobOutcome::Canceled { results: vec![] });
    // Waits for a reconnect to deliver it, up to the linger bound.
    assert_eq!(acts(step(&mut state, tick(9))), vec![]);
    let fx = step(&mut state, tick(10));
    assert!(notes(&fx).contains(&Note::ExitingWithUnacknowledged { jobs: vec![job] }));
    assert_eq!(acts(fx), vec![Effect::Exit(Exit::Drained)]);
}

#[test]
fn a_job_that_raced_the_close_is_run_and_reported() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    assert_eq!(acts(step(&mut state, Input::Signal)), vec![Effect::Close]);
    // The server had sent the job before it saw our Close.
    let fx = acts(step(&mut state, sandboxed_job(job)));
    assert!(matches!(fx.as_slice(), [Effect::Prepare(_)]));
    // Nothing is sent on a closing connection.
    assert_eq!(acts(step(&mut state, tick(1))), vec![]);
    assert_eq!(acts(step(&mut state, Input::Disconnected)), vec![]);
    // A new connection: no `ready`, but the job is reported over it.
    assert_eq!(acts(step(&mut state, Input::Connected)), vec![]);
    assert_eq!(
        acts(step(&mut state, Input::Prepared { job })),
        vec![
            Effect::Send(RunnerMessage::Running { job: Some(job) }),
            Effect::Execute(job)
        ]
    );
    finish(
        &mut state,
        job,
        JobOutcome::Completed {
            results: results(),
            environment: None,
        },
    );
    step(&mut state, ack(Some(job)));
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), Effect::Exit(Exit::Drained)]
    );
}

#[test]
fn a_job_after_a_second_signal_is_refused() {
    let job = JobUuid::new_v4();
    let mut state = polling();
    step(&mut state, Input::Signal);
    step(&mut state, Input::Signal);
    let fx = acts(step(&mut state, sandboxed_job(job)));
    // Spooled; the connection is closing, so it goes out on the next one.
    assert!(matches!(
        fx.as_slice(),
        [Effect::Spool(RunnerMessage::Failed { error, .. })] if error.contains("shutting down")
    ));
}

#[test]
fn drain_waits_for_spooled_messages_to_be_acknowledged() {
    let job = JobUuid::new_v4();
    let mut state = State::new(config(), vec![completed(job)]);
    assert_eq!(acts(step(&mut state, Input::Signal)), vec![]);
    assert_eq!(
        acts(step(&mut state, Input::Connected)),
        vec![Effect::Send(completed(job))]
    );
    assert_eq!(
        acts(step(&mut state, ack(Some(job)))),
        vec![Effect::Unspool(job), Effect::Exit(Exit::Drained)]
    );
}

// ---- a refused key ----

#[test]
fn unauthorized_while_idle_exits() {
    let mut state = State::new(config(), vec![]);
    let fx = step(&mut state, Input::Unauthorized);
    assert_eq!(notes(&fx), vec![Note::Unauthorized]);
    assert_eq!(acts(fx), vec![Effect::Exit(Exit::Unauthorized)]);
}

#[test]
fn unauthorized_with_a_job_cancels_it_and_spools_the_result() {
    let job = JobUuid::new_v4();
    let mut state = executing(job);
    step(&mut state, Input::Disconnected);
    assert_eq!(
        acts(step(&mut state, Input::Unauthorized)),
        vec![Effect::Cancel(job)]
    );
    let fx = finish(&mut state, job, JobOutcome::Canceled { results: vec![] });
    assert!(matches!(
        fx.as_slice(),
        [
            Effect::Release(_),
            Effect::Spool(RunnerMessage::Failed { .. }),
            Effect::Exit(Exit::Unauthorized)
        ]
    ));
}
