//! The real job backend of `runner up`, and what the host can run. IO: the registry and
//! the image cache (`prepare`), host tuning and the executor's processes or sandboxes
//! (`execute`), and
//! `/proc/meminfo` (the capability check).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use bencher_client::registry::{RegistryClient, RegistryCredential};
use bencher_oci::digest::Digest;
use bencher_oci::layer::UnpackLimits;
use bencher_oci::platform::Platform;
use bencher_oci::reference::ManifestRef;
use bencher_types::{Architecture, JsonSpec, Os, Sandbox};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::core::{ALLOW_NO_SANDBOX_FLAG, Assignment, JobOutcome, Machine, NoSandbox};
use super::driver::JobBackend;
use super::error_chain;
use super::tuned;
use crate::cli::UpArgs;
use crate::executor::{self, Capability, ExecOutcome, ExecRequest, OutputLimits, Resources};
use crate::image::{ImageCache, PulledImage};
use crate::tuning::Tuning;

/// Pulls with the job's token into the shared cache, then runs the executor.
pub struct HostBackend {
    cache: ImageCache,
    limits: OutputLimits,
    grace_period: Duration,
    /// `None` with `--no-tuning`.
    tuning: Option<Tuning>,
}

/// A job ready to run: its image stays pinned in the cache while this lives.
pub struct Prepared {
    assignment: Assignment,
    image: PulledImage,
    rootfs: PathBuf,
}

impl HostBackend {
    pub fn new(cache: ImageCache, args: &UpArgs) -> Self {
        Self {
            cache,
            limits: OutputLimits {
                max_output_size: args.max_output_size.bytes(),
                max_file_count: args.max_file_count,
                max_symlinks: args.max_symlinks,
            },
            grace_period: args.grace_period(),
            tuning: None,
        }
    }

    /// Tunes the host around each job's execution.
    pub fn with_tuning(mut self, tuning: Option<Tuning>) -> Self {
        self.tuning = tuning;
        self
    }
}

impl JobBackend for HostBackend {
    type Prepared = Prepared;

    async fn prepare(
        &self,
        assignment: Assignment,
        cancel: CancellationToken,
    ) -> Result<Prepared, String> {
        let config = &assignment.config;
        let registry = Url::parse(&config.registry)
            .map_err(|e| format!("the job's registry `{}` is not a URL: {e}", config.registry))?;
        let digest = Digest::from_str(&config.digest)
            .map_err(|e| format!("the job's digest `{}` is invalid: {e}", config.digest))?;
        let client = RegistryClient::new(
            registry,
            RegistryCredential::Bearer(assignment.oci_token.expose_secret().to_owned()),
        )
        .map_err(|e| format!("cannot reach the job's registry: {}", error_chain(&e)))?;
        // A project's repository is named by its UUID as well as its slug.
        let repository = config.project.to_string();
        // A cancel stops the pull between awaits; whatever it leaves in the cache's tmp/
        // is removed (see `image`).
        let (image, rootfs) = tokio::select! {
            () = cancel.cancelled() => Err("canceled while pulling the image".to_owned()),
            pulled = pull(&self.cache, &client, &repository, digest) => pulled,
        }?;
        Ok(Prepared {
            assignment,
            image,
            rootfs,
        })
    }

    async fn execute(&self, prepared: Prepared, cancel: CancellationToken) -> JobOutcome {
        // The core admits only sandboxes found working at start.
        let sandbox = executor::Sandbox::from_spec(prepared.assignment.spec.sandbox);
        let mut resources = Resources::from_spec(&prepared.assignment.spec);
        let sandbox_name = prepared
            .assignment
            .spec
            .sandbox
            .map_or("none", |s| s.as_str());
        let Ok(tuned) =
            tuned::before_job(self.tuning.as_ref(), sandbox_name, resources.cpus, &cancel).await
        else {
            return JobOutcome::Canceled {
                results: Vec::new(),
            };
        };
        let placement = tuned.placement();
        if let Some(placement) = &placement {
            // A Spec larger than the benchmark CPUs gets those only (the record says
            // so, `spec_cpus_capped`): a CPU quota or vCPUs beyond its CPUs would only
            // time-share them.
            let cpus = u32::try_from(placement.cpus.len()).unwrap_or(u32::MAX);
            resources.cpus = resources.cpus.min(cpus).max(1);
        }
        let request = ExecRequest {
            rootfs: prepared.rootfs.clone(),
            image: prepared.image.config.clone(),
            config: prepared.assignment.config.clone(),
            resources,
            limits: self.limits,
            grace_period: self.grace_period,
            placement,
        };
        let outcome = executor::execute(sandbox, request, cancel).await;
        let environment = tuned.environment();
        // Whatever the outcome, canceled included.
        tuned.after_job().await;
        // Held until here: the image stays pinned in the cache while the job runs.
        drop(prepared);
        match outcome {
            ExecOutcome::Completed { results } => JobOutcome::Completed {
                results,
                environment,
            },
            ExecOutcome::Failed { results, error } => JobOutcome::Failed { results, error },
            ExecOutcome::Canceled { results } => JobOutcome::Canceled { results },
            ExecOutcome::TimedOut { results } => JobOutcome::TimedOut { results },
        }
    }
}

/// Pulls the image into the cache and unpacks its root filesystem.
async fn pull(
    cache: &ImageCache,
    client: &RegistryClient,
    repository: &str,
    digest: Digest,
) -> Result<(PulledImage, PathBuf), String> {
    let image = cache
        .pull(
            client,
            repository,
            &ManifestRef::Digest(digest),
            &Platform::host(),
        )
        .await
        .map_err(|e| format!("cannot pull the image: {}", error_chain(&e)))?;
    let rootfs = cache
        .rootfs(&image, UnpackLimits::default())
        .await
        .map_err(|e| format!("cannot unpack the image: {}", error_chain(&e)))?;
    Ok((image, rootfs))
}

/// What the host offers, checked once at start.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub os: Option<Os>,
    pub architecture: Option<Architecture>,
    pub cpus: usize,
    /// Bytes of RAM (`MemTotal`).
    pub memory: Option<u64>,
    /// Jobs without a sandbox, on the host: whether the executor can run them here.
    pub host: Result<Capability, String>,
    /// Every sandbox a Spec can name, and whether it works here (else why not).
    pub sandboxes: Vec<(Sandbox, Result<Capability, String>)>,
}

impl Capabilities {
    /// Blocking: the executor's checks try what a job needs (namespaces, mounts).
    pub fn detect() -> Self {
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total(&text));
        let sandboxes = Sandbox::ALL
            .iter()
            .map(|&kind| {
                let check = executor::check(executor::Sandbox::from_spec(Some(kind)));
                (kind, check)
            })
            .collect();
        Self {
            os: Os::from_str(std::env::consts::OS).ok(),
            architecture: Architecture::from_str(std::env::consts::ARCH).ok(),
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            memory,
            host: executor::check(executor::Sandbox::None),
            sandboxes,
        }
    }

    /// The host's size: CPUs, memory, and the filesystem holding `cache_dir`, where
    /// jobs' root filesystems and disks live. Blocking (one `statvfs`).
    pub fn machine(&self, cache_dir: &Path) -> Machine {
        let disk = rustix::fs::statvfs(cache_dir)
            .map(|fs| fs.f_blocks.saturating_mul(fs.f_frsize))
            .unwrap_or_else(|error| {
                tracing::warn!(
                    cache = %cache_dir.display(), %error,
                    "cannot read the cache filesystem's size; Specs with a disk will be refused"
                );
                0
            });
        let machine = Machine {
            cpus: u32::try_from(self.cpus).unwrap_or(u32::MAX),
            memory: self.memory.unwrap_or(0),
            disk,
        };
        tracing::info!(
            cpus = machine.cpus,
            memory = machine.memory,
            disk = machine.disk,
            "host size, which a Spec must fit"
        );
        machine
    }

    /// The sandboxes that work here but give jobs no network.
    pub fn sandboxes_without_network(&self) -> Vec<Sandbox> {
        self.sandboxes
            .iter()
            .filter(|(_, check)| check.as_ref().is_ok_and(|c| !c.provides_network))
            .map(|(kind, _)| *kind)
            .collect()
    }

    /// The sandboxes that work here.
    pub fn sandboxes(&self) -> Vec<Sandbox> {
        self.sandboxes
            .iter()
            .filter(|(_, check)| check.is_ok())
            .map(|(kind, _)| *kind)
            .collect()
    }

    /// What the core does with jobs without a sandbox, given the operator's flag.
    pub fn no_sandbox(&self, allowed_by_operator: bool) -> NoSandbox {
        match (&self.host, allowed_by_operator) {
            (_, false) => NoSandbox::Refused,
            (Ok(_), true) => NoSandbox::Allowed,
            (Err(reason), true) => NoSandbox::Unavailable(reason.clone()),
        }
    }

    pub fn log(&self, allowed_by_operator: bool) {
        let available = self.sandboxes();
        let no_sandbox = match self.no_sandbox(allowed_by_operator) {
            NoSandbox::Refused => "refused".to_owned(),
            NoSandbox::Allowed => "allowed".to_owned(),
            NoSandbox::Unavailable(reason) => format!("unavailable: {reason}"),
        };
        tracing::info!(
            os = std::env::consts::OS,
            arch = std::env::consts::ARCH,
            cpus = self.cpus,
            memory = self.memory,
            sandboxes = ?available.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            no_sandbox = %no_sandbox,
            "what this runner can run"
        );
        for (kind, check) in &self.sandboxes {
            match check {
                Ok(capability) => {
                    tracing::info!(sandbox = %kind, detail = %capability.detail, "sandbox available");
                }
                Err(reason) => {
                    tracing::debug!(sandbox = %kind, reason = %reason, "sandbox unavailable");
                }
            }
        }
        if self.os.is_none() || self.architecture.is_none() {
            tracing::warn!(
                os = std::env::consts::OS,
                arch = std::env::consts::ARCH,
                "no Spec can name this platform; every job will be refused"
            );
        }
        match (&self.host, allowed_by_operator) {
            (Ok(capability), true) => tracing::warn!(
                detail = %capability.detail,
                "{ALLOW_NO_SANDBOX_FLAG}: jobs whose Spec has no sandbox run directly on this \
                 host; only run trusted workloads"
            ),
            (Err(reason), true) => tracing::warn!(
                reason = %reason,
                "{ALLOW_NO_SANDBOX_FLAG} is set, but this host cannot run jobs without a \
                 sandbox; they will be refused"
            ),
            (_, false) if available.is_empty() => tracing::warn!(
                "no sandbox works on this host and {ALLOW_NO_SANDBOX_FLAG} is not set: every \
                 job will be refused"
            ),
            (_, false) => {}
        }
    }
}

/// Logs, for each Spec linked to the runner, whether it serves it and why not: the
/// server dispatches only the Specs it serves (extension `capabilities`).
pub fn log_specs(specs: &[JsonSpec], capabilities: &bencher_types::Capabilities) {
    if specs.is_empty() {
        tracing::warn!("no Spec is linked to this runner: it will never get a job");
        return;
    }
    let mut served = 0;
    for spec in specs {
        match capabilities.serves(spec) {
            Ok(()) => {
                served += 1;
                tracing::info!(spec = %spec.slug, "serving this Spec");
            }
            Err(why) => tracing::warn!(
                spec = %spec.slug, reason = %why,
                "not serving this Spec: its jobs go to other runners"
            ),
        }
    }
    if served == 0 {
        tracing::warn!("this runner serves none of its Specs: it will never get a job");
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_total() {
        let meminfo = "MemTotal:        2030912 kB\nMemFree:          123456 kB\n";
        assert_eq!(mem_total(meminfo), Some(2_030_912 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total("MemTotal: lots kB\n"), None);
    }

    #[test]
    fn detects_this_host() {
        let capabilities = Capabilities::detect();
        assert!(capabilities.cpus >= 1);
        assert_eq!(capabilities.sandboxes.len(), Sandbox::ALL.len());
    }
}
