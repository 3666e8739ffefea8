//! Around each job's execution: tune the host (`crate::tuning`), run the short noise
//! probe and log its figures with the environment fingerprint (both then go with the
//! job's result, `completed.environment`), and restore the host afterwards. IO: through
//! `tuning` and `noise`; nothing of its own.

use std::path::PathBuf;

use bencher_types::protocol::JobEnvironment;
use tokio_util::sync::CancellationToken;

use super::error_chain;
use crate::executor::Placement;
use crate::noise::{self, ProbeSize, TuningFingerprint};
use crate::tuning::cpuset;
use crate::tuning::{Applied, ApplyError, JobCpus, Tuning, TuningState};

/// The host as tuned for one job; [`Tuned::after_job`] restores it.
pub struct Tuned {
    applied: Option<Applied>,
    environment: Option<JobEnvironment>,
    placement: Option<Placement>,
}

/// The job was canceled while waiting for another runner's benchmark.
pub struct Canceled;

impl Tuned {
    /// The verified tuning state, for the job's record (`None` when not tuned).
    pub fn state(&self) -> Option<&TuningState> {
        self.applied.as_ref().map(Applied::state)
    }

    /// Where the job runs: the cpuset partition's first CPUs, as many as its Spec has
    /// (`None` without a partition).
    pub fn placement(&self) -> Option<Placement> {
        self.placement.clone()
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

/// Tunes the host (unless `tuning` is `None`: `--no-tuning`), places a job of
/// `spec_cpus` CPUs on the cpuset partition, and probes the noise there.
/// A host that cannot be tuned runs the job untuned, logged; only a cancel stops it.
pub async fn before_job(
    tuning: Option<&Tuning>,
    sandbox: &str,
    spec_cpus: u32,
    cancel: &CancellationToken,
) -> Result<Tuned, Canceled> {
    let mut applied = match tuning {
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
    // Before the fingerprint, which records the job's CPUs with the tuning state.
    let job_cpus = applied.as_mut().and_then(|a| a.place_job(spec_cpus));
    let placement = job_cpus.as_ref().map(JobCpus::placement);
    if let Some(applied) = &applied {
        let state = applied.state();
        tracing::info!(knobs = %state.summary(), "host tuned");
        if let Some(detail) = state.cpuset() {
            tracing::info!(
                benchmark = %detail.benchmark_cpus,
                housekeeping = %detail.housekeeping_cpus,
                job = ?detail.job_cpus,
                exclusivity = ?detail.exclusivity,
                "cpuset partition"
            );
            if let Some(asked) = detail.spec_cpus_capped {
                tracing::warn!(
                    spec_cpus = asked,
                    benchmark = %detail.benchmark_cpus,
                    "the Spec asks for more CPUs than the benchmark CPUs; the job gets the \
                     benchmark CPUs only (CPU quota and vCPUs included)"
                );
            }
        }
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
    let probe_on = job_cpus.as_ref().and_then(|job| cpuset::cpu_set(&job.cpus));
    let probed = tokio::task::spawn_blocking(move || {
        // The probe measures the CPUs the job gets; then its thread (a runner thread)
        // goes back to the affinity it had, the housekeeping CPUs while tuned.
        let prior = probe_on.and_then(|set| {
            let prior = rustix::thread::sched_getaffinity(None).ok()?;
            rustix::thread::sched_setaffinity(None, &set).ok()?;
            Some(prior)
        });
        let noise = noise::probe(ProbeSize::SHORT);
        if let Some(prior) = &prior {
            let _ = rustix::thread::sched_setaffinity(None, prior);
        }
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
        placement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::Settings;
    use crate::tuning::knob::{CPUS_ONLINE, Knob};

    /// A fake host of 2 CPUs without a cpuset hierarchy: the job is placed by affinity
    /// on the one benchmark CPU, and a 4-CPU Spec is capped there, in the record too.
    #[tokio::test]
    async fn a_job_is_placed_on_the_benchmark_cpus_and_a_larger_spec_is_capped() {
        let root = tempfile::tempdir().unwrap();
        let online = root.path().join(CPUS_ONLINE);
        std::fs::create_dir_all(online.parent().unwrap()).unwrap();
        std::fs::write(&online, "0-1\n").unwrap();
        std::fs::create_dir_all(root.path().join(cpuset::SELF_TASKS)).unwrap();
        let tuning = Tuning::new(root.path().to_owned())
            .with_settings(Settings::only(Knob::Cpuset, "partition"));
        let Ok(tuned) = before_job(Some(&tuning), "none", 4, &CancellationToken::new()).await
        else {
            panic!("not canceled");
        };
        let placement = tuned.placement().expect("placed");
        assert_eq!(placement.cpus, vec![1]);
        assert_eq!(
            (placement.cgroup.as_ref(), placement.oci_parent.as_ref()),
            (None, None)
        );
        let detail = tuned.state().and_then(TuningState::cpuset).unwrap().clone();
        assert_eq!(detail.job_cpus.as_deref(), Some("1"));
        assert_eq!(detail.spec_cpus_capped, Some(4));
        // The record the job's result carries says so too.
        let environment = tuned.environment().expect("fingerprint");
        assert!(
            environment
                .fingerprint
                .to_string()
                .contains("spec_cpus_capped")
        );
        tuned.after_job().await;

        // `--cpuset`: nothing placed.
        let kept =
            Tuning::new(root.path().to_owned()).with_settings(Settings::only(Knob::Aslr, "0"));
        let Ok(tuned) = before_job(Some(&kept), "none", 1, &CancellationToken::new()).await else {
            panic!("not canceled");
        };
        assert_eq!(tuned.placement(), None);
        tuned.after_job().await;
    }
}
