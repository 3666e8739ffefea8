//! Around each job's execution: tune the host (`crate::tuning`), run the short noise
//! probe and log its figures with the environment fingerprint (both then go with the
//! job's result, `completed.environment`), and restore the host afterwards. IO: through
//! `tuning` and `noise`; nothing of its own.

use std::path::PathBuf;

use bencher_types::protocol::JobEnvironment;
use tokio_util::sync::CancellationToken;

use super::error_chain;
use crate::noise::{self, ProbeSize, TuningFingerprint};
use crate::tuning::{Applied, ApplyError, Tuning, TuningState};

/// The host as tuned for one job; [`Tuned::after_job`] restores it.
pub struct Tuned {
    applied: Option<Applied>,
    environment: Option<JobEnvironment>,
}

/// The job was canceled while waiting for another runner's benchmark.
pub struct Canceled;

impl Tuned {
    /// The verified tuning state, for the job's record (`None` when not tuned).
    pub fn state(&self) -> Option<&TuningState> {
        self.applied.as_ref().map(Applied::state)
    }

    /// The noise probe and fingerprint taken before the job, for its result.
    pub fn environment(&self) -> Option<JobEnvironment> {
        self.environment.clone()
    }

    /// Restores the host; failures are logged (a leftover state file is restored by
    /// the next benchmark or start).
    pub async fn after_job(self) {
        let Some(applied) = self.applied else { return };
        match applied.restore_async().await {
            Ok(restored) if restored.failed.is_empty() => {
                tracing::info!(written = restored.written.len(), "host tuning restored")
            }
            Ok(restored) => tracing::error!(
                failed = ?restored.failed,
                "some host tuning could not be restored"
            ),
            Err(error) => tracing::error!(
                error = %error_chain(&error),
                "cannot restore host tuning"
            ),
        }
    }
}

/// Tunes the host (unless `tuning` is `None`: `--no-tuning`) and probes its noise.
/// A host that cannot be tuned runs the job untuned, logged; only a cancel stops it.
pub async fn before_job(
    tuning: Option<&Tuning>,
    sandbox: &str,
    cancel: &CancellationToken,
) -> Result<Tuned, Canceled> {
    let applied = match tuning {
        None => None,
        Some(tuning) => match tuning.apply(cancel).await {
            Ok(applied) => Some(applied),
            Err(ApplyError::Canceled) => return Err(Canceled),
            Err(error) => {
                tracing::error!(
                    error = %error_chain(&error),
                    "cannot tune the host; this job runs untuned"
                );
                None
            }
        },
    };
    if let Some(applied) = &applied {
        let state = applied.state();
        tracing::info!(knobs = %state.summary(), "host tuned");
        for knob in &state.knobs {
            tracing::debug!(
                knob = %knob.knob,
                requested = ?knob.requested,
                original = ?knob.original,
                actual = ?knob.actual,
                status = ?knob.status,
                "tuning knob"
            );
        }
    }
    let root = tuning.map_or_else(|| PathBuf::from("/"), |t| t.root().to_owned());
    let tuning_print = match &applied {
        Some(applied) => TuningFingerprint::Applied {
            state: applied.state().clone(),
        },
        None => TuningFingerprint::Disabled,
    };
    let sandbox = sandbox.to_owned();
    let probed = tokio::task::spawn_blocking(move || {
        let noise = noise::probe(ProbeSize::SHORT);
        let print = noise::fingerprint(&root, Some(&sandbox), tuning_print);
        (noise, print)
    })
    .await;
    let environment = match &probed {
        Ok((noise, print)) => match (serde_json::to_value(noise), serde_json::to_value(print)) {
            (Ok(noise), Ok(fingerprint)) => Some(JobEnvironment { noise, fingerprint }),
            _ => None,
        },
        Err(_) => None,
    };
    match probed {
        Ok((noise, print)) => tracing::info!(
            timer_median_ns = noise.timer.median_ns,
            timer_p99_ns = noise.timer.p99_ns,
            timer_cv = noise.timer.cv,
            cpu_median_ns = noise.cpu.median_ns,
            cpu_p99_ns = noise.cpu.p99_ns,
            cpu_cv = noise.cpu.cv,
            cpu_model = ?print.cpu_model,
            microcode = ?print.microcode,
            kernel = ?print.kernel,
            governor = ?print.governor,
            smt = ?print.smt,
            sandbox = ?print.sandbox,
            "noise before the job"
        ),
        Err(error) => tracing::warn!(%error, "the noise probe failed"),
    }
    Ok(Tuned {
        applied,
        environment,
    })
}
