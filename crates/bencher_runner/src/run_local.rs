//! `runner run`: executes one image on this machine with the same executor `runner up`
//! uses for Jobs, without a server. IO: reads an OCI image layout directory and unpacks
//! it into a temporary root filesystem, or pulls a registry image into the image cache;
//! runs the job (see `executor`); prints the results on stdout, notes on stderr;
//! listens for SIGINT and SIGTERM to cancel.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bencher_client::registry::{RegistryClient, RegistryCredential};

use crate::cli::SecretParser;
use bencher_oci::config::ImageConfig;
use bencher_oci::digest::{Digest, DigestVerifier};
use bencher_oci::layer::{UnpackLimits, Unpacker, decompress};
use bencher_oci::manifest::{ImageIndex, ImageManifest, Manifest, OCI_IMAGE_INDEX};
use bencher_oci::platform::{Platform, select_manifest};
use bencher_oci::reference::{ManifestRef, Reference, Target};
use bencher_types::protocol::{IterationResult, JobConfig, MAX_COMMAND_ITEMS};
use bencher_types::{ApiToken, ByteSize, Cpu, MAX_ITERATIONS, MAX_JOB_TIMEOUT, ProjectUuid};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::executor::{self, ExecOutcome, ExecRequest, OutputLimits, Resources, Sandbox};
use crate::image::{ImageCache, PulledImage};

/// The default job timeout of `runner run`, in seconds.
pub const DEFAULT_TIMEOUT: u32 = 3600;
/// Exit codes besides 0 (completed) and 1 (failed, or an error before the job ran).
pub const EXIT_TIMED_OUT: u8 = 124;
pub const EXIT_CANCELED: u8 = 130;
/// The largest `index.json` or manifest read from a layout.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest image config read from a layout.
const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// Image indexes nest, but never deeply; the bound keeps a malformed layout finite.
const MAX_INDEX_DEPTH: usize = 8;

/// Execute one image locally, as a Job would run
///
/// The image runs in the given sandbox with the same executor `runner up` uses, and
/// each iteration's exit code, stdout, stderr and output files are printed. Exit code:
/// 0 when every iteration succeeded (or --allow-failure), 1 when the job failed or
/// could not run, 124 when it timed out, 130 when it was interrupted.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Example:\n  runner run --danger-allow-no-sandbox --image ./oci-dir -- /bin/bench --quick"
)]
pub struct RunArgs {
    /// The image: an OCI image layout directory, or a registry reference such as
    /// `localhost:6610/my-project:v1` or `HOST/project@sha256:…`
    #[arg(long)]
    pub image: String,
    /// An API token (`bencher_user_…`) to pull from a Bencher registry
    #[arg(
        long,
        env = "BENCHER_API_TOKEN",
        hide_env_values = true,
        value_parser = SecretParser::<ApiToken>::new("--token", "BENCHER_API_TOKEN")
    )]
    pub token: Option<ApiToken>,
    /// The sandbox to run in: `none` (directly on this host, in a chroot of the image;
    /// needs --danger-allow-no-sandbox), `container` (runc), `gvisor` (runsc), `qemu` or
    /// `firecracker` (a microVM of its own)
    #[arg(long, value_enum, default_value_t = SandboxArg::None)]
    pub sandbox: SandboxArg,
    #[command(flatten)]
    pub vm: crate::cli::VmArgs,
    /// Seconds the whole job (every iteration) may run before it is killed
    #[arg(
        long,
        default_value_t = DEFAULT_TIMEOUT,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_JOB_TIMEOUT))
    )]
    pub timeout: u32,
    /// How many times to run the command
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_ITERATIONS))
    )]
    pub iter: u32,
    /// Keep going when the command exits non-zero, and succeed anyway
    #[arg(long)]
    pub allow_failure: bool,
    /// Replace the image's entrypoint (repeat for each argument); this also drops the
    /// image's cmd
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub entrypoint: Vec<String>,
    /// Replace the image's cmd (repeat for each argument), or give it after `--`
    #[arg(
        long = "cmd",
        value_name = "ARG",
        allow_hyphen_values = true,
        conflicts_with = "command"
    )]
    pub cmd: Vec<String>,
    /// The command's arguments, replacing the image's cmd
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    /// An environment variable for the job, over the image's (repeatable)
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Allow the job network access. Sandbox `none` always uses the host's network,
    /// with or without this flag
    #[arg(long)]
    pub network: bool,
    /// A file the job writes, to print after each iteration (repeatable); a relative
    /// path is taken from the image's working directory
    #[arg(long = "output", value_name = "PATH")]
    pub output: Vec<String>,
    /// Measure each iteration's command: its wall time from exec to exit, inside the
    /// sandbox (as a job's `build_time`)
    #[arg(long)]
    pub build_time: bool,
    /// Print the sizes of the --output files instead of their contents (as a job's
    /// `file_size`)
    #[arg(long)]
    pub file_size: bool,
    /// CPUs for the job (default 1), where the sandbox enforces it (sandbox `none` does
    /// not)
    #[arg(long)]
    pub vcpus: Option<Cpu>,
    /// Memory for the job, e.g. `4GiB` (default 1GiB), where the sandbox enforces it
    /// (sandbox `none` does not)
    #[arg(long)]
    pub memory: Option<ByteSize>,
    /// Writable disk for the job, e.g. `10GiB` (default 2GiB), where the sandbox
    /// enforces it (sandbox `none` does not)
    #[arg(long)]
    pub disk: Option<ByteSize>,
    /// The maximum size in bytes for collected stdout and stderr, per iteration
    #[arg(long, default_value = "25MiB")]
    pub max_output_size: ByteSize,
    /// The maximum number of output files
    #[arg(long, default_value_t = OutputLimits::DEFAULT_MAX_FILE_COUNT)]
    pub max_file_count: u32,
    /// The maximum number of symlinks to follow resolving an output file path
    #[arg(long, default_value_t = OutputLimits::DEFAULT_MAX_SYMLINKS)]
    pub max_symlinks: u32,
    /// The grace period in seconds after the benchmark exits before final output
    /// collection: processes it left running may finish until then
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub grace_period: u64,
    /// The image cache directory, for registry images [default: the one `runner up`
    /// uses: /var/lib/bencher-runner/cache as root, else $XDG_CACHE_HOME/bencher-runner]
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The size the image cache is kept within
    #[arg(long, default_value = "20GiB")]
    pub max_cache_size: ByteSize,
    /// Allow running without a sandbox, directly on this host. Only for trusted images
    #[arg(
        long,
        env = "BENCHER_DANGER_ALLOW_NO_SANDBOX",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub danger_allow_no_sandbox: bool,
    /// How to print the results
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// `--sandbox`: the Spec sandboxes, plus `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SandboxArg {
    None,
    Firecracker,
    Qemu,
    Gvisor,
    Container,
}

impl SandboxArg {
    fn sandbox(self) -> Sandbox {
        let spec = match self {
            SandboxArg::None => None,
            SandboxArg::Firecracker => Some(bencher_types::Sandbox::Firecracker),
            SandboxArg::Qemu => Some(bencher_types::Sandbox::Qemu),
            SandboxArg::Gvisor => Some(bencher_types::Sandbox::Gvisor),
            SandboxArg::Container => Some(bencher_types::Sandbox::Container),
        };
        Sandbox::from_spec(spec)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Runs the image and prints the results on stdout.
pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    run_to(args, &mut io::stdout()).await
}

/// [`run`], printing the results to `out`.
pub async fn run_to(args: RunArgs, out: &mut (dyn Write + Send)) -> anyhow::Result<ExitCode> {
    let sandbox = args.sandbox.sandbox();
    if sandbox.runs_on_host() && !args.danger_allow_no_sandbox {
        bail!(
            "sandbox `{sandbox}` runs the image directly on this host; pass \
             --danger-allow-no-sandbox (or set BENCHER_DANGER_ALLOW_NO_SANDBOX=true) to allow \
             it, for trusted images only. Nothing was run."
        );
    }
    let capability = tokio::task::spawn_blocking(move || executor::check(sandbox))
        .await?
        .map_err(|reason| anyhow::anyhow!("this host cannot run sandbox `{sandbox}`: {reason}"))?;
    if !capability.enforces_resources
        && (args.vcpus.is_some() || args.memory.is_some() || args.disk.is_some())
    {
        eprintln!("note: sandbox `{sandbox}` does not limit --vcpus, --memory or --disk");
    }
    if !capability.isolates_network && !args.network {
        eprintln!(
            "note: sandbox `{sandbox}` cannot keep the job off the network; it uses the host's"
        );
    }

    let image = Image::open(&args).await?;
    let request = ExecRequest {
        rootfs: image.rootfs.clone(),
        image: image.config.clone(),
        config: job_config(&args, &image.digest)?,
        resources: Resources {
            cpus: args.vcpus.map_or(Resources::RUN_DEFAULT.cpus, Cpu::get),
            memory: args
                .memory
                .map_or(Resources::RUN_DEFAULT.memory, ByteSize::bytes),
            disk: args
                .disk
                .map_or(Resources::RUN_DEFAULT.disk, ByteSize::bytes),
            network: args.network,
            tasks: Resources::tasks_for(args.vcpus.map_or(Resources::RUN_DEFAULT.cpus, Cpu::get)),
        },
        limits: OutputLimits {
            max_output_size: args.max_output_size.bytes(),
            max_file_count: args.max_file_count,
            max_symlinks: args.max_symlinks,
        },
        grace_period: Duration::from_secs(args.grace_period),
        // `runner run` does not tune the host, so there is no partition to place on.
        placement: None,
    };

    let cancel = CancellationToken::new();
    let signals = cancel_on_signals(cancel.clone()).context("cannot install signal handlers")?;
    let outcome = executor::execute(sandbox, request, cancel).await;
    signals.abort();
    drop(image);

    match args.format {
        Format::Human => print_human(out, &outcome, args.timeout)?,
        Format::Json => print_json(out, &outcome)?,
    }
    out.flush()?;
    Ok(match outcome {
        ExecOutcome::Completed { .. } => ExitCode::SUCCESS,
        ExecOutcome::Failed { .. } => ExitCode::FAILURE,
        ExecOutcome::TimedOut { .. } => ExitCode::from(EXIT_TIMED_OUT),
        ExecOutcome::Canceled { .. } => ExitCode::from(EXIT_CANCELED),
    })
}

/// The job a server would send for these flags.
fn job_config(args: &RunArgs, digest: &Digest) -> anyhow::Result<JobConfig> {
    let command = if args.command.is_empty() {
        &args.cmd
    } else {
        &args.command
    };
    let items = |list: &Vec<String>| (!list.is_empty()).then(|| list.clone());
    let config = JobConfig {
        // No registry and a throwaway project: the job never leaves this machine.
        registry: String::new(),
        project: ProjectUuid::new_v4(),
        digest: digest.to_string(),
        image: Some(args.image.clone()),
        entrypoint: items(&args.entrypoint),
        cmd: items(command),
        env: (!args.env.is_empty()).then(|| args.env.iter().cloned().collect::<BTreeMap<_, _>>()),
        timeout: args.timeout,
        file_paths: items(&args.output),
        build_time: args.build_time.then_some(true),
        file_size: args.file_size.then_some(true),
        iter: Some(args.iter),
        allow_failure: Some(args.allow_failure),
    };
    if let Err(error) = config.validate() {
        bail!("{error} (MAX_COMMAND_ITEMS is {MAX_COMMAND_ITEMS})");
    }
    Ok(config)
}

/// Cancels the job on SIGINT or SIGTERM.
fn cancel_on_signals(cancel: CancellationToken) -> io::Result<tokio::task::JoinHandle<()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        eprintln!("note: stopping the job");
        cancel.cancel();
    }))
}

fn print_human(
    out: &mut (dyn Write + Send),
    outcome: &ExecOutcome,
    timeout: u32,
) -> io::Result<()> {
    let results = outcome.results();
    for (index, result) in results.iter().enumerate() {
        writeln!(
            out,
            "== iteration {} of {}: exit code {}",
            index + 1,
            results.len(),
            result.exit_code
        )?;
        let mut section = |name: &str, text: &str| -> io::Result<()> {
            writeln!(out, "-- {name}")?;
            out.write_all(text.as_bytes())?;
            if !text.is_empty() && !text.ends_with('\n') {
                writeln!(out)?;
            }
            Ok(())
        };
        section("stdout", result.stdout.as_deref().unwrap_or_default())?;
        section("stderr", result.stderr.as_deref().unwrap_or_default())?;
        for (path, contents) in result.output.iter().flatten() {
            section(&format!("file {path}"), contents)?;
        }
        if let Some(nanos) = result.build_time_ns {
            writeln!(out, "-- build time: {:.6} s", nanos as f64 / 1e9)?;
        }
        for (path, size) in result.file_sizes.iter().flatten() {
            writeln!(out, "-- file size {path}: {size} bytes")?;
        }
    }
    match outcome {
        ExecOutcome::Completed { .. } => writeln!(out, "== completed"),
        ExecOutcome::Failed { error, .. } => writeln!(out, "== failed: {error}"),
        ExecOutcome::TimedOut { .. } => writeln!(out, "== timed out after {timeout} s"),
        ExecOutcome::Canceled { .. } => writeln!(out, "== canceled"),
    }
}

fn print_json(out: &mut (dyn Write + Send), outcome: &ExecOutcome) -> io::Result<()> {
    let error = match outcome {
        ExecOutcome::Failed { error, .. } => Some(error.as_str()),
        _ => None,
    };
    let results: &[IterationResult] = outcome.results();
    let json = serde_json::json!({
        "outcome": outcome.as_str(),
        "results": results,
        "error": error,
    });
    serde_json::to_writer_pretty(&mut *out, &json)?;
    writeln!(out)
}

/// The image to run.
struct Image {
    rootfs: PathBuf,
    config: ImageConfig,
    digest: Digest,
    /// Keeps the root filesystem alive.
    _keep: Keep,
}

/// Held only for its `Drop`.
#[expect(dead_code, reason = "the fields are held for their Drop, never read")]
enum Keep {
    /// Unpacked from a layout into a temporary directory, deleted on drop.
    TempDir(tempfile::TempDir),
    /// In the image cache, pinned against eviction while this lives.
    Pinned(Box<PulledImage>),
}

impl Image {
    async fn open(args: &RunArgs) -> anyhow::Result<Image> {
        let path = Path::new(&args.image);
        if path.join("oci-layout").is_file() {
            let dir = path.to_owned();
            return tokio::task::spawn_blocking(move || unpack_layout(&dir))
                .await?
                .with_context(|| format!("cannot use the OCI image layout {}", path.display()));
        }
        if path.is_dir() {
            bail!(
                "{} is a directory but not an OCI image layout (it has no oci-layout file)",
                path.display()
            );
        }
        pull(args)
            .await
            .with_context(|| format!("cannot pull {}", args.image))
    }
}

/// Pulls a registry image into the cache and prepares its root filesystem.
async fn pull(args: &RunArgs) -> anyhow::Result<Image> {
    let reference: Reference = args
        .image
        .parse()
        .context("it is neither an OCI image layout directory nor an image reference")?;
    let registry = registry_url(&reference)?;
    let credential = args
        .token
        .clone()
        .map_or(RegistryCredential::Anonymous, RegistryCredential::ApiToken);
    let client = RegistryClient::new(registry, credential)?;
    let cache_dir = match &args.cache_dir {
        Some(dir) => dir.clone(),
        None => {
            crate::cli::default_dirs()
                .map_err(anyhow::Error::msg)?
                .cache
        }
    };
    let cache = ImageCache::open(&cache_dir, args.max_cache_size.bytes())?;
    let target = match reference.target() {
        Target::Digest(digest) => ManifestRef::Digest(digest),
        Target::Tag(tag) => ManifestRef::Tag(tag.parse()?),
    };
    let image = cache
        .pull(&client, &reference.repository, &target, &Platform::host())
        .await?;
    let rootfs = cache.rootfs(&image, UnpackLimits::default()).await?;
    Ok(Image {
        rootfs,
        config: image.config.clone(),
        digest: image.manifest_digest.clone(),
        _keep: Keep::Pinned(Box::new(image)),
    })
}

/// The registry a reference names: over https, or http for this machine, as Docker
/// treats loopback registries (and as `bencher image push` does).
fn registry_url(reference: &Reference) -> anyhow::Result<Url> {
    let host = reference.registry_api_host();
    let https = Url::parse(&format!("https://{host}"))
        .with_context(|| format!("`{host}` is not a usable registry address"))?;
    let loopback = match https.host() {
        Some(url::Host::Domain(name)) => name == "localhost" || name.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if loopback {
        Ok(Url::parse(&format!("http://{host}"))?)
    } else {
        Ok(https)
    }
}

/// Reads an OCI image layout (`oci-layout`, `index.json`, `blobs/`), picks the image
/// for this platform, verifies what it reads against its digests, and unpacks the
/// layers with `bencher_oci::layer` into a fresh temporary root filesystem.
fn unpack_layout(dir: &Path) -> anyhow::Result<Image> {
    let index_path = dir.join("index.json");
    let index_bytes = read_capped(&index_path, MAX_MANIFEST_BYTES)?;
    // `index.json` often has no mediaType; it is an index by definition.
    let index = match Manifest::parse(Some(OCI_IMAGE_INDEX), &index_bytes)
        .with_context(|| format!("{} is not a valid image index", index_path.display()))?
    {
        Manifest::Index(index) => index,
        Manifest::Image(_) => bail!("{} is not an image index", index_path.display()),
    };
    let host = Platform::host();
    let (digest, manifest) = choose_image(dir, &index, &host, 0)?;
    let config_bytes = read_blob(dir, &manifest.config.digest, MAX_CONFIG_BYTES)?;
    let config = ImageConfig::parse(&config_bytes).context("the image config is invalid")?;
    let built_for = config.platform();
    if !built_for.runs_on(&host) {
        bail!("the image is built for {built_for}, which does not run on this {host} host");
    }
    if config.diff_ids().len() != manifest.layers.len() {
        bail!(
            "the manifest lists {} layers but the config {} diff IDs",
            manifest.layers.len(),
            config.diff_ids().len()
        );
    }

    // 0700: the barrier between the image's setuid files and other host users.
    let temp = tempfile::Builder::new()
        .prefix("bencher-run-")
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir()
        .context("cannot create a temporary directory for the root filesystem")?;
    let rootfs = temp.path().join("root");
    fs::create_dir(&rootfs)?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))?;
    let mut unpacker = Unpacker::new(&rootfs, UnpackLimits::default())?;
    for (layer, diff_id) in manifest.layers.iter().zip(config.diff_ids()) {
        let file = File::open(blob_path(dir, &layer.digest))
            .with_context(|| format!("layer {} is missing from the layout", layer.digest))?;
        // The blob's digest over the compressed bytes, the diff ID over the tar.
        let mut blob = Hashing::new(BufReader::new(file), layer.digest.verifier());
        let mut tar = Hashing::new(
            decompress(&layer.media_type, &mut blob)?,
            diff_id.verifier(),
        );
        unpacker
            .apply_layer(&mut tar)
            .with_context(|| format!("cannot unpack layer {}", layer.digest))?;
        tar.verify()
            .with_context(|| format!("layer {} does not match its diff ID", layer.digest))?;
        // Whatever the decompressor did not need is still part of the blob.
        io::copy(&mut blob, &mut io::sink())?;
        blob.verify()
            .with_context(|| format!("layer {} does not match its digest", layer.digest))?;
    }
    Ok(Image {
        rootfs,
        config,
        digest,
        _keep: Keep::TempDir(temp),
    })
}

/// The image manifest of `index` for `host`: its only entry, or the entry for the
/// platform; nested indexes are followed.
fn choose_image(
    dir: &Path,
    index: &ImageIndex,
    host: &Platform,
    depth: usize,
) -> anyhow::Result<(Digest, ImageManifest)> {
    if depth > MAX_INDEX_DEPTH {
        bail!("image indexes nest more than {MAX_INDEX_DEPTH} deep");
    }
    let descriptor = match index.manifests.as_slice() {
        [] => bail!("the layout holds no image"),
        [one] => one,
        _ => select_manifest(index, host)?,
    };
    let bytes = read_blob(dir, &descriptor.digest, MAX_MANIFEST_BYTES)?;
    match Manifest::parse(Some(&descriptor.media_type), &bytes)
        .with_context(|| format!("manifest {} is invalid", descriptor.digest))?
    {
        Manifest::Image(manifest) => Ok((descriptor.digest.clone(), manifest)),
        Manifest::Index(index) => choose_image(dir, &index, host, depth + 1),
    }
}

fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    // A `Digest` is validated: its algorithm and hex never step out of `blobs/`.
    dir.join("blobs")
        .join(digest.algorithm().as_str())
        .join(digest.hex())
}

/// A whole blob, checked against its digest.
fn read_blob(dir: &Path, digest: &Digest, max: u64) -> anyhow::Result<Vec<u8>> {
    let bytes = read_capped(&blob_path(dir, digest), max)?;
    digest
        .verify(&bytes)
        .with_context(|| format!("blob {digest} does not match its digest"))?;
    Ok(bytes)
}

fn read_capped(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("{} is larger than {max} bytes", path.display());
    }
    Ok(bytes)
}

/// Hashes what passes through, to check against a digest at the end.
struct Hashing<R> {
    inner: R,
    verifier: DigestVerifier,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R, verifier: DigestVerifier) -> Self {
        Self { inner, verifier }
    }

    fn verify(self) -> anyhow::Result<()> {
        Ok(self.verifier.verify()?)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.verifier.update(&buf[..n]);
        Ok(n)
    }
}

/// `KEY=VALUE`; the value may contain `=`.
fn parse_env(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{value}` is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["runner-run"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|cli| cli.args)
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let args = parse(&["--image", "./oci"]).unwrap();
        assert_eq!(args.sandbox, SandboxArg::None);
        assert_eq!(args.timeout, DEFAULT_TIMEOUT);
        assert_eq!(args.iter, 1);
        assert!(!args.allow_failure && !args.network && !args.danger_allow_no_sandbox);
        assert_eq!(args.max_output_size.bytes(), 25 << 20);
        assert_eq!(args.max_file_count, 255);
        assert_eq!(args.max_symlinks, 40);
        assert_eq!(args.grace_period, 1);
        assert_eq!(args.format, Format::Human);
    }

    #[test]
    fn every_flag() {
        let args = parse(&[
            "--image",
            "localhost:6610/proj:v1",
            "--token",
            "bencher_user_0123456789abcdefghijABCDEFGHIJ",
            "--sandbox",
            "none",
            "--timeout",
            "5",
            "--iter",
            "3",
            "--allow-failure",
            "--entrypoint",
            "/bin/sh",
            "--entrypoint",
            "-c",
            "--env",
            "A=1=2",
            "--env",
            "B=",
            "--network",
            "--output",
            "/out/a.json",
            "--output",
            "b.txt",
            "--vcpus",
            "2",
            "--memory",
            "4GiB",
            "--disk",
            "10GiB",
            "--max-output-size",
            "1MiB",
            "--max-file-count",
            "3",
            "--max-symlinks",
            "7",
            "--grace-period",
            "0",
            "--cache-dir",
            "/tmp/c",
            "--danger-allow-no-sandbox",
            "--format",
            "json",
            "--",
            "echo hi",
        ])
        .unwrap();
        assert_eq!(args.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(args.command, ["echo hi"]);
        assert_eq!(
            args.env,
            [("A".into(), "1=2".into()), ("B".into(), String::new())]
        );
        assert_eq!(args.output, ["/out/a.json", "b.txt"]);
        assert_eq!(args.memory.map(ByteSize::bytes), Some(4 << 30));
        assert_eq!(args.vcpus.map(Cpu::get), Some(2));
        let config = job_config(&args, &Digest::sha256_of(b"x")).unwrap();
        assert_eq!(config.cmd, Some(vec!["echo hi".to_owned()]));
        assert_eq!(config.iter, Some(3));
        assert_eq!(config.allow_failure, Some(true));
        assert_eq!(config.file_paths.map(|f| f.len()), Some(2));
        assert_eq!(config.env.map(|e| e["A"].clone()), Some("1=2".into()));

        let args = parse(&["--image", "x", "--cmd", "a", "--cmd", "-b"]).unwrap();
        assert_eq!(args.cmd, ["a", "-b"]);
        assert_eq!(
            job_config(&args, &Digest::sha256_of(b"x")).unwrap().cmd,
            Some(vec!["a".to_owned(), "-b".to_owned()])
        );
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--image", "x", "--cmd", "a", "--", "b"][..],
            &["--image", "x", "--env", "NOEQUALS"],
            &["--image", "x", "--env", "=v"],
            &["--image", "x", "--iter", "0"],
            &["--image", "x", "--timeout", "0"],
            &["--image", "x", "--sandbox", "docker"],
            &["--image", "x", "--token", "bencher_user_secretbutwrong"],
            &["--cmd", "a"],
        ] {
            let error = parse(bad).unwrap_err();
            assert!(!error.to_string().contains("secretbutwrong"), "{error}");
        }
    }

    #[tokio::test]
    async fn refuses_without_the_danger_flag_or_a_working_sandbox() {
        let mut out = Vec::new();
        let args = parse(&["--image", "/nonexistent"]).unwrap();
        let error = run_to(args, &mut out).await.unwrap_err();
        assert!(
            error.to_string().contains("--danger-allow-no-sandbox"),
            "{error}"
        );
        // These need no danger flag: refused by the host's check, or else by the image.
        for sandbox in ["gvisor", "container", "qemu", "firecracker"] {
            let args = parse(&["--image", "/nonexistent", "--sandbox", sandbox]).unwrap();
            let error = format!("{:#}", run_to(args, &mut out).await.unwrap_err());
            assert!(
                error.contains(&format!("sandbox `{sandbox}`")) || error.contains("/nonexistent"),
                "{error}"
            );
        }
        assert!(out.is_empty());
    }

    #[test]
    fn registry_urls() {
        let url = |r: &str| registry_url(&r.parse().unwrap()).unwrap().to_string();
        assert_eq!(url("localhost:6610/p:v1"), "http://localhost:6610/");
        assert_eq!(url("127.0.0.1:5000/p"), "http://127.0.0.1:5000/");
        assert_eq!(url("bench.example.com/p:v1"), "https://bench.example.com/");
        assert_eq!(url("ubuntu"), "https://registry-1.docker.io/");
    }
}
