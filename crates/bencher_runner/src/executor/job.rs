//! What every sandbox does the same way around its own iterations: admit the job (valid
//! config, iteration count, output file count, one deadline), plan its process from the
//! image (`plan`, with the image's own passwd and group files), and run the iterations
//! under the job's deadline and cancel, turning each iteration's end into the job's
//! outcome. IO: reads the two account files inside the image's root (`rootfs`).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use bencher_oci::config::ImageConfig;
use bencher_types::protocol::{IterationResult, JobConfig};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::plan::{self, Credentials};
use super::rootfs::Root;
use super::{ExecOutcome, OutputLimits};

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_ACCOUNT_FILE: u64 = 16 << 20;

/// A job the executor accepted, before anything was prepared.
pub(super) struct Admitted {
    pub iterations: u32,
    pub allow_failure: bool,
    /// One deadline for the whole job, every iteration (and a VM's boot) included.
    pub deadline: Instant,
}

/// Checks what a job asks for against the protocol and this runner's limits; `Err` is
/// the job's error (nothing ran).
pub(super) fn admit(config: &JobConfig, limits: &OutputLimits) -> Result<Admitted, String> {
    config
        .validate()
        .map_err(|error| format!("invalid job: {error}"))?;
    let iterations = config.iter.unwrap_or(bencher_types::DEFAULT_ITERATIONS);
    if iterations == 0 {
        return Err("invalid job: iter must be at least 1".to_owned());
    }
    let files = config.file_paths.as_ref().map_or(0, Vec::len);
    if files > limits.max_file_count as usize {
        return Err(format!(
            "the job asks for {files} output files; this runner collects at most {} (--max-file-count)",
            limits.max_file_count
        ));
    }
    Ok(Admitted {
        iterations,
        allow_failure: config.allow_failure.unwrap_or(false),
        deadline: Instant::now() + Duration::from_secs(config.timeout.into()),
    })
}

/// The process a job runs, the same in every sandbox.
pub(super) struct Planned {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub credentials: Credentials,
}

/// Plans the job's process, looking the image's `User` up in the image's own
/// `/etc/passwd` and `/etc/group` (read confined to `rootfs`). Blocking.
pub(super) fn plan_process(
    rootfs: &Path,
    image: &ImageConfig,
    config: &JobConfig,
    max_symlinks: u32,
) -> Result<Planned, String> {
    let root = Root::open(rootfs, max_symlinks).map_err(|e| {
        format!(
            "cannot open the image's root filesystem {}: {e}",
            rootfs.display()
        )
    })?;
    let account_file = |path: &str| match root.read_file(path, MAX_ACCOUNT_FILE) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(format!("cannot read the image's {e}")),
    };
    let passwd = account_file("/etc/passwd")?;
    let group = account_file("/etc/group")?;
    let plan_error = |e: plan::PlanError| e.to_string();
    let credentials =
        plan::credentials(image.user(), passwd.as_deref(), group.as_deref()).map_err(plan_error)?;
    Ok(Planned {
        argv: plan::command(image, config).map_err(plan_error)?,
        env: plan::environment(image, config.env.as_ref(), credentials.home.as_deref())
            .map_err(plan_error)?,
        working_dir: plan::working_dir(image).map_err(plan_error)?,
        credentials,
    })
}

/// How one iteration ended.
pub(super) enum Ended {
    /// The benchmark exited; its output files (if any) were collected.
    Exited(IterationResult),
    /// The benchmark exited but its output files could not be collected.
    FilesFailed(IterationResult, String),
    TimedOut(IterationResult),
    Canceled(IterationResult),
    /// Nothing ran, or the iteration ended without a status.
    Failed(Option<IterationResult>, String),
}

/// Runs `iteration(index)` for each iteration (1-based) until the job is done, fails
/// (a non-zero exit unless `allow_failure`), times out or is canceled.
pub(super) async fn run_iterations<F, Fut>(
    job: &Admitted,
    cancel: &CancellationToken,
    mut iteration: F,
) -> ExecOutcome
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Ended>,
{
    let iterations = job.iterations;
    let mut results = Vec::new();
    for index in 1..=iterations {
        if cancel.is_cancelled() {
            return ExecOutcome::Canceled { results };
        }
        if Instant::now() >= job.deadline {
            return ExecOutcome::TimedOut { results };
        }
        let which = |error: String| format!("iteration {index} of {iterations}: {error}");
        match iteration(index).await {
            Ended::Exited(result) => {
                let code = result.exit_code;
                results.push(result);
                if code != 0 && !job.allow_failure {
                    return ExecOutcome::Failed {
                        results,
                        error: which(format!("the command exited with code {code}")),
                    };
                }
            }
            Ended::FilesFailed(result, error) => {
                results.push(result);
                return ExecOutcome::Failed {
                    results,
                    error: which(error),
                };
            }
            Ended::TimedOut(partial) => {
                results.push(partial);
                return ExecOutcome::TimedOut { results };
            }
            Ended::Canceled(partial) => {
                results.push(partial);
                return ExecOutcome::Canceled { results };
            }
            Ended::Failed(partial, error) => {
                results.extend(partial);
                return ExecOutcome::Failed {
                    results,
                    error: which(error),
                };
            }
        }
    }
    ExecOutcome::Completed { results }
}
