//! The job executor in every sandbox this runner has (`none`, `container` with runc,
//! `gvisor` with runsc) and `runner run`, with real processes, real namespaces, a real
//! overlay, chroot and containers. The sandbox-independent scenarios are one suite,
//! run once per sandbox (`none::…`, `container::…`, `gvisor::…`); a sandbox that
//! `executor::check` says this host cannot run is skipped, except under `CI` for
//! `container` and `gvisor`, whose runtimes CI installs. The image's root filesystem is built here
//! from the host's own binaries (dash, coreutils) and the shared libraries `ldd` lists,
//! so no network or package is needed. IO: a root filesystem and scratch directories
//! under the target's temp dir, the jobs' processes, `/proc` to look for leftovers.
//!
//! Needs root. Not root: each test prints why it is skipped, and under `CI` fails.
//! The container tests that look for leftovers (containers, mounts, bundles) run alone:
//! every container test holds `OCI_LOCK` shared, those hold it exclusively.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bencher_oci::config::ImageConfig;
use bencher_runner::executor::{self, ExecOutcome, ExecRequest, OutputLimits, Resources, Sandbox};
use bencher_types::protocol::{IterationResult, JobConfig};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------
// The test image.

/// Host programs copied into the test root filesystem, by their name there.
mod host_service;

const PROGRAMS: &[&str] = &[
    "sh", "sleep", "cat", "env", "id", "head", "ls", "ln", "rm", "mkdir", "echo", "pwd", "tr", "wc",
];

/// The base root filesystem, built once per test binary and shared, read-only, by every
/// test, as the image cache shares one tree between jobs.
fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        // Named by this process's id, so the next run can delete what earlier runs
        // left (a static is never dropped).
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in fs::read_dir(base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("executor-rootfs-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let root = base
            .join(format!("executor-rootfs-{}", std::process::id()))
            .join("root");
        build_rootfs(&root);
        root
    })
}

fn build_rootfs(root: &Path) {
    // 0700 around the root: images carry setuid files; no other host user may reach them.
    fs::create_dir_all(root.parent().unwrap()).unwrap();
    fs::set_permissions(root.parent().unwrap(), fs::Permissions::from_mode(0o700)).unwrap();
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("home/bench")).unwrap();
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
    for program in PROGRAMS {
        let host = which(program);
        copy_with_libraries(&host, &root.join("bin").join(program), root);
    }
    // Copies of sleep under names unique to this test run and test, to find their
    // processes in the host's /proc.
    for tag in MARKERS {
        fs::copy(root.join("bin/sleep"), root.join("bin").join(marker(tag))).unwrap();
    }
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbench:x:1234:2345:Bench:/home/bench:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        root.join("etc/group"),
        "root:x:0:\nbench:x:2345:\nextra:x:3456:bench\n",
    )
    .unwrap();
    fs::write(root.join("etc/image-file"), "from the image\n").unwrap();
    std::os::unix::fs::chown(root.join("home/bench"), Some(1234), Some(2345)).unwrap();
    // Static: `nc` for the network test, where the host has it.
    if Path::new("/bin/busybox").is_file() {
        fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    }
}

fn which(program: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let path = Path::new(dir).join(program);
        if path.exists() {
            return path.canonicalize().unwrap();
        }
    }
    panic!("{program} is not installed on this host");
}

/// Copies `binary` to `dest`, and every library `ldd` lists to the same path in `root`.
fn copy_with_libraries(binary: &Path, dest: &Path, root: &Path) {
    fs::copy(binary, dest).unwrap();
    let ldd = Command::new("ldd").arg(binary).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let path = line
            .split_whitespace()
            .find(|word| word.starts_with('/'))
            .map(PathBuf::from);
        let Some(library) = path else { continue };
        let target = root.join(library.strip_prefix("/").unwrap());
        if target.exists() {
            continue;
        }
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(&library, &target).unwrap();
    }
}

/// The tests that look for leftover processes, each with its own marker.
const MARKERS: &[&str] = &[
    "timeout", "leftover", "cancel", "runner", "crash", "stopped", "bomb",
];

/// A name unique to this test process and `tag`, for processes to look for.
fn marker(tag: &str) -> String {
    format!("bencher-marker-{}-{tag}", std::process::id())
}

/// Every file, directory and link of a tree with its metadata and content digest, to
/// compare before and after.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let detail = if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            String::new()
        } else if meta.file_type().is_symlink() {
            fs::read_link(&path).unwrap().display().to_string()
        } else {
            let bytes = fs::read(&path).unwrap();
            format!(
                "{} {}",
                bytes.len(),
                bencher_oci::digest::Digest::sha256_of(&bytes)
            )
        };
        out.insert(
            path.strip_prefix(root).unwrap().to_owned(),
            format!(
                "{:o} {}:{} {} {detail}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime()
            ),
        );
    }
    out
}

// ---------------------------------------------------------------------------------
// Running jobs.

/// Whether the test can run; prints why not. Under CI not being root is a failure.
fn privileged() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "the executor tests need root (namespaces, mounts, chroot), and CI must run them"
    );
    eprintln!("SKIPPED: the executor tests need root (namespaces, mounts, chroot)");
    false
}

fn image(config: serde_json::Value) -> ImageConfig {
    let json = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    ImageConfig::parse(&serde_json::to_vec(&json).unwrap()).unwrap()
}

fn job(cmd: &[&str]) -> JobConfig {
    let mut config: JobConfig = serde_json::from_value(serde_json::json!({
        "registry": "http://localhost:6610",
        "project": "00000000-0000-4000-8000-000000000000",
        "digest": format!("sha256:{}", "a".repeat(64)),
        "timeout": 60,
    }))
    .unwrap();
    config.cmd = Some(cmd.iter().map(|s| (*s).to_owned()).collect());
    config
}

/// `sh -c SCRIPT` as the job's command.
fn shell(script: &str) -> JobConfig {
    job(&["/bin/sh", "-c", script])
}

fn request(config: JobConfig) -> ExecRequest {
    request_with(image(serde_json::json!({"Env": ["PATH=/bin"]})), config)
}

fn request_with(image: ImageConfig, config: JobConfig) -> ExecRequest {
    ExecRequest {
        rootfs: rootfs().to_owned(),
        image,
        config,
        resources: Resources::RUN_DEFAULT,
        limits: OutputLimits::default(),
        grace_period: Duration::from_millis(200),
        placement: None,
    }
}

async fn run(sandbox: Sandbox, request: ExecRequest) -> ExecOutcome {
    executor::execute(sandbox, request, CancellationToken::new()).await
}

fn completed(outcome: ExecOutcome) -> Vec<IterationResult> {
    match outcome {
        ExecOutcome::Completed { results } => results,
        other => panic!("expected completed, got {other:#?}"),
    }
}

fn only(outcome: ExecOutcome) -> IterationResult {
    let mut results = completed(outcome);
    assert_eq!(results.len(), 1, "{results:#?}");
    results.remove(0)
}

fn stdout(result: &IterationResult) -> &str {
    result.stdout.as_deref().unwrap_or_default()
}

fn stderr(result: &IterationResult) -> &str {
    result.stderr.as_deref().unwrap_or_default()
}

/// Host processes whose command line contains the marker of `tag`.
fn marked_processes(tag: &str) -> Vec<String> {
    let marker = marker(tag);
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&marker)
        {
            found.push(format!(
                "{}: {}",
                name.to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

// ---------------------------------------------------------------------------------
// Sandboxes.

/// Held shared by every container test, exclusively by those that look for leftovers.
static OCI_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// What a test of `sandbox` holds while it runs.
enum Permit {
    Host,
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

/// Whether `sandbox` works here (checked once per test binary); prints why not. Under
/// `CI` a container sandbox that does not work is a failure: CI installs runc and runsc.
async fn available(sandbox: Sandbox, exclusive: bool) -> Option<Permit> {
    if !privileged() {
        return None;
    }
    if sandbox == Sandbox::None {
        return Some(Permit::Host);
    }
    static CHECKS: OnceLock<std::sync::Mutex<BTreeMap<String, Result<(), String>>>> =
        OnceLock::new();
    let checks = CHECKS.get_or_init(Default::default);
    let cached = checks.lock().unwrap().get(sandbox.as_str()).cloned();
    let checked = match cached {
        Some(checked) => checked,
        None => {
            let checked = tokio::task::spawn_blocking(move || executor::check(sandbox))
                .await
                .unwrap()
                .map(|_| ());
            checks
                .lock()
                .unwrap()
                .insert(sandbox.as_str().to_owned(), checked.clone());
            checked
        }
    };
    if let Err(reason) = checked {
        assert!(
            std::env::var_os("CI").is_none(),
            "sandbox `{sandbox}` must work in CI: {reason}"
        );
        eprintln!("SKIPPED: sandbox `{sandbox}` is not available here: {reason}");
        return None;
    }
    Some(if exclusive {
        Permit::Exclusive(OCI_LOCK.write().await)
    } else {
        Permit::Shared(OCI_LOCK.read().await)
    })
}

/// The runtime binary and its directories, as `executor::oci_runtime::state` lays
/// them out under `$TMPDIR/bencher-oci/`.
fn runtime_of(sandbox: Sandbox) -> (&'static str, PathBuf) {
    let name = match sandbox {
        Sandbox::Container => "runc",
        Sandbox::Gvisor => "runsc",
        other => panic!("{other} has no OCI runtime"),
    };
    (name, std::env::temp_dir().join("bencher-oci").join(name))
}

/// The container ids in the runtime's state directory.
fn containers(sandbox: Sandbox) -> Vec<String> {
    let (runtime, dir) = runtime_of(sandbox);
    let output = Command::new(runtime)
        .arg("--root")
        .arg(dir.join("state"))
        .args(["list", "--quiet"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The bundle directories.
fn bundles(sandbox: Sandbox) -> Vec<String> {
    let (_, dir) = runtime_of(sandbox);
    fs::read_dir(dir.join("bundles"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Mounts of job roots still on the host.
fn job_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains("bencher-oci/"))
        .map(str::to_owned)
        .collect()
}

/// Host processes whose command line contains `text`.
fn processes_with(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(text)
        {
            found.push(format!(
                "{}: {}",
                name.to_string_lossy(),
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// The job's processes marked with `tag`. gVisor's are not host processes: they are
/// asked from runsc (`ps`) for the containers whose command has the marker.
fn job_processes(sandbox: Sandbox, tag: &str) -> Vec<String> {
    if sandbox != Sandbox::Gvisor {
        return marked_processes(tag);
    }
    let (runtime, dir) = runtime_of(sandbox);
    let marker = marker(tag);
    let mut found = Vec::new();
    for id in bundles(sandbox) {
        let config = fs::read_to_string(dir.join("bundles").join(&id).join("config.json"));
        if !config.is_ok_and(|config| config.contains(&marker)) {
            continue;
        }
        let Ok(ps) = Command::new(runtime)
            .arg("--root")
            .arg(dir.join("state"))
            .args(["ps", &id])
            .output()
        else {
            continue;
        };
        // `ps` shows the command's name, cut to 15 characters.
        found.extend(
            String::from_utf8_lossy(&ps.stdout)
                .lines()
                .filter(|line| line.contains("bencher-marker"))
                .map(|line| format!("{id}: {line}")),
        );
    }
    found
}

/// The shared suite, once per sandbox: `mod none`, `mod container`, `mod gvisor`. A
/// test marked `(exclusive)` holds `OCI_LOCK` exclusively: it looks for leftovers.
macro_rules! suite {
    ($($test:ident $(($exclusive:ident))?),* $(,)?) => {
        suite!(@sandbox none, Sandbox::None, $($test $(($exclusive))?),*);
        suite!(@sandbox container, Sandbox::Container, $($test $(($exclusive))?),*);
        suite!(@sandbox gvisor, Sandbox::Gvisor, $($test $(($exclusive))?),*);
    };
    (@sandbox $module:ident, $sandbox:expr, $($test:ident $(($exclusive:ident))?),*) => {
        mod $module {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    let exclusive = false $(|| stringify!($exclusive) == "exclusive")?;
                    if let Some(_permit) = available($sandbox, exclusive).await {
                        super::$test($sandbox).await;
                    }
                }
            )*
        }
    };
}

suite!(
    captures_stdout_stderr_and_exit_codes,
    death_by_signal_is_128_plus_n,
    iterations_and_allow_failure,
    entrypoint_and_cmd_follow_dockers_rule,
    environment_is_the_images_then_the_jobs,
    working_directory_is_the_images,
    runs_as_the_images_user,
    the_chroot_and_namespaces_isolate_the_job,
    the_shared_root_filesystem_is_never_modified,
    output_files_are_collected_inside_the_root,
    output_files_are_capped_by_count_before_anything_runs,
    build_time_and_file_sizes_are_measured_when_asked,
    output_is_truncated_with_a_marker_and_never_blocks,
    a_timeout_kills_the_whole_process_tree,
    leftovers_get_the_grace_period_then_die,
    a_cancel_stops_the_job_within_a_second,
    an_image_that_cannot_be_prepared_fails_the_job,
    the_job_runs_on_the_benchmark_cpus,
    without_network_a_job_sees_only_loopback,
    filling_the_disk_ends_in_enospc_and_the_host_keeps_its_space(exclusive),
);

/// Tests of the container sandboxes only, once for runc and once for runsc.
macro_rules! container_suite {
    ($($test:ident: $exclusive:expr),* $(,)?) => {
        mod container_only {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    if let Some(_permit) = available(Sandbox::Container, $exclusive).await {
                        super::$test(Sandbox::Container).await;
                    }
                }
            )*
        }
        mod gvisor_only {
            use super::*;
            $(
                #[tokio::test]
                async fn $test() {
                    if let Some(_permit) = available(Sandbox::Gvisor, $exclusive).await {
                        super::$test(Sandbox::Gvisor).await;
                    }
                }
            )*
        }
    };
}

container_suite!(
    check_reports_what_a_container_gives: false,
    the_memory_limit_is_enforced: false,
    a_fork_bomb_runs_out_of_tasks: false,
    nothing_is_left_after_a_timeout_or_cancel: true,
    a_crashed_runners_leftovers_are_cleaned: true,
);

async fn check_reports_what_a_container_gives(sandbox: Sandbox) {
    let capability = tokio::task::spawn_blocking(move || executor::check(sandbox))
        .await
        .unwrap()
        .expect("checked above");
    assert_eq!(capability.sandbox, sandbox);
    assert!(capability.enforces_resources);
    assert!(capability.isolates_network);
    assert!(
        capability
            .detail
            .contains("its disk as the size of an ext4 scratch filesystem per job"),
        "{}",
        capability.detail
    );
}

async fn without_network_a_job_sees_only_loopback(sandbox: Sandbox) {
    if sandbox == Sandbox::None {
        eprintln!(
            "SKIPPED: sandbox `none` shares the host's network by design (its check says \
             `isolates_network: false`)"
        );
        return;
    }
    let script = "cat /proc/net/dev";
    let result = only(run(sandbox, request(shell(script))).await);
    let interfaces: Vec<&str> = stdout(&result)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim())
        .collect();
    assert_eq!(interfaces, ["lo"], "{result:?}");

    with_network_a_job_reaches_the_host_but_not_its_loopback(sandbox).await;
}

/// With network: the job's own namespace, where slirp4netns's tap is its interface; the
/// host's network is reached by the host's address, the host's loopback is not, and
/// names resolve through slirp's forwarder.
async fn with_network_a_job_reaches_the_host_but_not_its_loopback(sandbox: Sandbox) {
    let service = match host_service::start(rootfs()) {
        Ok(service) => service,
        Err(reason) => return host_service::skip(&format!("{sandbox} with network: {reason}")),
    };
    let script = format!(
        "cat /proc/net/dev; cat /etc/resolv.conf\n{}",
        service.script()
    );
    let mut with_network = request(shell(&script));
    with_network.resources.network = true;
    let result = only(run(sandbox, with_network).await);
    let out = stdout(&result);
    let interfaces: Vec<&str> = out
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim())
        .filter(|name| !name.contains(' '))
        .collect();
    assert!(interfaces.contains(&"slirp0"), "{result:?}");
    assert!(
        interfaces.iter().all(|i| ["lo", "slirp0"].contains(i)),
        "{result:?}"
    );
    assert!(out.contains("nameserver 10.0.2.3\n"), "{result:?}");
    assert!(out.contains(host_service::GREETING), "{result:?}");
    assert!(out.contains(host_service::LOOPBACK_REFUSED), "{result:?}");
}

async fn the_memory_limit_is_enforced(sandbox: Sandbox) {
    // 300 MB in a shell variable, with 64 MiB of memory.
    let mut hog = request(shell(
        "echo start; x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived",
    ));
    hog.resources.memory = 64 << 20;
    let outcome = run(sandbox, hog).await;
    let ExecOutcome::Failed { results, error } = &outcome else {
        panic!("expected failed: {outcome:#?}");
    };
    assert!(!results.is_empty(), "{outcome:#?}");
    assert_ne!(results[0].exit_code, 0, "{outcome:#?}");
    assert!(!stdout(&results[0]).contains("survived"), "{outcome:#?}");
    assert!(!error.is_empty());
    // The same job fits in the default gigabyte.
    let fits = request(shell(
        "x=$(head -c 30000000 /dev/zero | tr '\\0' a); echo survived",
    ));
    assert_eq!(stdout(&only(run(sandbox, fits).await)), "survived\n");
}

async fn a_fork_bomb_runs_out_of_tasks(sandbox: Sandbox) {
    if sandbox == Sandbox::Gvisor {
        // runsc applies the pids limit to the sandbox's own host threads (the Sentry and
        // gofer: 32 do not even start it), not to the job's tasks, which the Sentry
        // keeps; there the memory limit is what bounds a fork bomb.
        eprintln!("SKIPPED: gVisor's pids limit counts the Sentry's threads, not the job's tasks");
        return;
    }
    // More background processes than the job's task limit allows: forks start failing
    // at the limit, inside the container, long before anything on the host notices.
    let sleeper = marker("bomb");
    let script =
        format!("i=0; while [ $i -lt 200 ]; do {sleeper} 30 & i=$((i+1)); done; echo spawned $i");
    let mut bomb = request(shell(&script));
    bomb.resources.tasks = 32;
    bomb.config.timeout = 20;
    bomb.grace_period = Duration::ZERO;
    let outcome = run(sandbox, bomb).await;
    let results = match &outcome {
        ExecOutcome::Completed { results } | ExecOutcome::Failed { results, .. } => results,
        other => panic!("unexpected outcome {other:#?}"),
    };
    let Some(result) = results.first() else {
        panic!("no iteration ran: {outcome:#?}");
    };
    assert!(!stdout(result).contains("spawned 200"), "{outcome:#?}");
    assert!(
        stderr(result).to_lowercase().contains("fork"),
        "the shell says it cannot fork: {outcome:#?}"
    );
    // And the whole tree is gone with the job.
    assert_eq!(marked_processes("bomb"), Vec::<String>::new());
}

/// No container, bundle, mount or runtime process of this test process remains.
fn assert_nothing_left(sandbox: Sandbox) {
    let ours = format!("bencher-{}-", std::process::id());
    let containers: Vec<String> = containers(sandbox)
        .into_iter()
        .filter(|id| id.starts_with(&ours))
        .collect();
    assert_eq!(containers, Vec::<String>::new());
    let bundles: Vec<String> = bundles(sandbox)
        .into_iter()
        .filter(|name| name.starts_with(&ours))
        .collect();
    assert_eq!(bundles, Vec::<String>::new());
    // Only ours: other runners (other test processes) share the directories.
    let mounts: Vec<String> = job_mounts()
        .into_iter()
        .filter(|line| line.contains(&ours))
        .collect();
    assert_eq!(mounts, Vec::<String>::new());
    assert_eq!(processes_with(&ours), Vec::<String>::new());
    assert_no_loop_devices(&ours);
}

/// The loop devices whose backing file (a job's scratch image, unlinked once attached,
/// so shown `(deleted)`) has `text` in its path.
fn loop_devices(text: &str) -> Vec<String> {
    fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("loop"))
        .filter_map(|entry| {
            let backing = fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            backing.contains(text).then(|| {
                format!(
                    "{}: {}",
                    entry.file_name().to_string_lossy(),
                    backing.trim()
                )
            })
        })
        .collect()
}

/// No loop device is attached to a scratch image of a bundle named `bencher-…` with
/// `prefix`. A loop device detaches itself once its filesystem is unmounted, which the
/// kernel may finish a moment later, and a `none` job started meanwhile holds a copy of
/// the host's mounts until it ends: polled for up to ten seconds.
fn assert_no_loop_devices(prefix: &str) {
    for _ in 0..1000 {
        if loop_devices(prefix).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(loop_devices(prefix), Vec::<String>::new());
}

/// Bytes available to unprivileged users on the filesystem holding the bundles.
fn free_space() -> u64 {
    let stat = rustix::fs::statvfs(std::env::temp_dir()).unwrap();
    stat.f_bavail * stat.f_frsize
}

async fn filling_the_disk_ends_in_enospc_and_the_host_keeps_its_space(sandbox: Sandbox) {
    if sandbox == Sandbox::None {
        eprintln!(
            "SKIPPED: sandbox `none` runs on the host's disk and limits no disk (its check \
             says `enforces_resources: false`)"
        );
        return;
    }
    const DISK: u64 = 64 << 20;
    let before = free_space();
    // As root (the image has no user): a gigabyte to the root until the disk is full,
    // a megabyte more to /tmp, then 10 MB to init's report directory, which root in the container may write
    // too; then the job exits with the first write's status.
    // (`wc` rather than `ls -l`: the gVisor release in Debian 12 fails `ls`.)
    let script = "head -c 1000000000 /dev/zero > /fill; status=$?; echo fill $(wc -c < /fill); \
                  head -c 1000000 /dev/zero > /tmp/more; echo tmp $?; \
                  head -c 10000000 /dev/zero > /dev/.bencher-report/fill; echo report $?; \
                  echo report-fill $(wc -c < /dev/.bencher-report/fill); \
                  rm -f /dev/.bencher-report/fill; exit $status";
    let mut config = shell(script);
    // Two iterations: the second gets the whole disk again, none of the first's writes.
    config.iter = Some(2);
    config.allow_failure = Some(true);
    let mut fill = request(config);
    fill.resources.disk = DISK;
    let results = completed(run(sandbox, fill).await);
    assert_eq!(results.len(), 2, "{results:#?}");
    let size_of = |out: &str, what: &str| -> u64 {
        out.lines()
            .find_map(|line| line.strip_prefix(what)?.strip_prefix(' '))
            .and_then(|size| size.trim().parse().ok())
            .unwrap_or_else(|| panic!("no size of {what} in {out}"))
    };
    for result in &results {
        // The write failed inside, with the error visible, and the job ended normally.
        assert_eq!(result.exit_code, 1, "{result:#?}");
        assert!(
            stderr(result).contains("No space left on device"),
            "{result:#?}"
        );
        // Most of the disk was written, never more than the disk.
        let written = size_of(stdout(result), "fill");
        assert!(
            written > DISK / 2 && written <= DISK,
            "{written}: {result:#?}"
        );
        // /tmp is the same full disk (gVisor's own /tmp would be a tmpfs in memory).
        assert!(stdout(result).contains("tmp 1\n"), "{result:#?}");
        // The report directory is a tiny tmpfs, not the host's disk.
        assert!(
            stdout(result).contains(
                "report 1
"
            ),
            "{result:#?}"
        );
        assert!(
            size_of(stdout(result), "report-fill") <= 1 << 20,
            "{result:#?}"
        );
    }

    // Nothing is left: no bundle, mount or loop device of this process, and the
    // host's free space is what it was (a leaked image would hold the 64 MiB; other
    // processes writing meanwhile are the tolerance's reason).
    assert_nothing_left(sandbox);
    let after = free_space();
    assert!(
        after + DISK / 2 >= before,
        "free space before {before}, after {after}"
    );
}

async fn nothing_is_left_after_a_timeout_or_cancel(sandbox: Sandbox) {
    let sleeper = marker("stopped");
    let mut config = shell(&format!("{sleeper} 1000 & {sleeper} 1001"));
    config.timeout = 1;
    let outcome = run(sandbox, request(config.clone())).await;
    assert!(
        matches!(outcome, ExecOutcome::TimedOut { .. }),
        "{outcome:#?}"
    );
    assert_nothing_left(sandbox);

    config.timeout = 60;
    let cancel = CancellationToken::new();
    let task = tokio::spawn(executor::execute(sandbox, request(config), cancel.clone()));
    assert!(wait_for(|| !bundles(sandbox).is_empty()).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    cancel.cancel();
    let outcome = task.await.unwrap();
    assert!(
        matches!(outcome, ExecOutcome::Canceled { .. }),
        "{outcome:#?}"
    );
    assert_nothing_left(sandbox);
    assert_eq!(marked_processes("stopped"), Vec::<String>::new());
}

async fn a_crashed_runners_leftovers_are_cleaned(sandbox: Sandbox) {
    let Some(runner) = option_env!("CARGO_BIN_EXE_runner") else {
        eprintln!("SKIPPED: this crate has no `runner` binary");
        return;
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let layout = dir.path().join("layout");
    oci_image(serde_json::json!({"Env": ["PATH=/bin"]})).write_layout(&layout);
    let sleeper = marker("crash");
    let mut child = Command::new(runner)
        .args(["run", "--image", layout.to_str().unwrap()])
        .args(["--sandbox", sandbox.as_str(), "--", &sleeper, "1000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let theirs = format!("bencher-{}-", child.id());
    // Under runc, also wait for the benchmark itself (beside the runner, whose command
    // line names it too): killed while `runc create` is still at work, the runner may
    // leave no container at all, which this test is not about.
    let running = wait_for(|| {
        containers(sandbox).iter().any(|id| id.starts_with(&theirs))
            && (sandbox != Sandbox::Container || marked_processes("crash").len() >= 2)
    })
    .await;
    // The runner dies without cleaning up: its container, bundle and mount stay.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(running, "the runner's container never showed up");
    // runsc's sandbox may end with its runner; runc's container runs on.
    if sandbox == Sandbox::Container {
        assert!(containers(sandbox).iter().any(|id| id.starts_with(&theirs)));
    }
    assert!(
        bundles(sandbox)
            .iter()
            .any(|name| name.starts_with(&theirs))
    );
    assert!(job_mounts().iter().any(|line| line.contains(&theirs)));
    assert!(!loop_devices(&theirs).is_empty());

    // The next start's check removes them.
    tokio::task::spawn_blocking(move || executor::check(sandbox))
        .await
        .unwrap()
        .unwrap();
    assert!(!containers(sandbox).iter().any(|id| id.starts_with(&theirs)));
    assert!(
        !bundles(sandbox)
            .iter()
            .any(|name| name.starts_with(&theirs))
    );
    assert!(!job_mounts().iter().any(|line| line.contains(&theirs)));
    // Unmounting the scratch detaches its loop device, which held the only reference
    // to the unlinked image.
    assert_no_loop_devices(&theirs);
    // The orphaned `run` process ends once its container is gone.
    assert!(
        wait_for(|| processes_with(&theirs).is_empty()).await,
        "{:?}",
        processes_with(&theirs)
    );
    assert_eq!(job_processes(sandbox, "crash"), Vec::<String>::new());
    if sandbox == Sandbox::Container {
        assert_eq!(marked_processes("crash"), Vec::<String>::new());
    }
}

// ---------------------------------------------------------------------------------
// Tests.

async fn captures_stdout_stderr_and_exit_codes(sandbox: Sandbox) {
    let result = only(run(sandbox, request(shell("echo out; echo err >&2"))).await);
    assert_eq!(result.exit_code, 0);
    assert_eq!(stdout(&result), "out\n");
    assert_eq!(stderr(&result), "err\n");
    assert_eq!(result.output, None);

    let outcome = run(sandbox, request(shell("echo partial; exit 3"))).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("expected failed: {outcome:#?}");
    };
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].exit_code, 3);
    assert_eq!(stdout(&results[0]), "partial\n");
    assert!(error.contains("exited with code 3"), "{error}");
}

#[tokio::test]
async fn check_reports_what_sandbox_none_gives() {
    if !privileged() {
        return;
    }
    let capability = executor::check(Sandbox::None).expect("this host runs sandbox none");
    assert_eq!(capability.sandbox, Sandbox::None);
    assert!(!capability.enforces_resources);
    assert!(!capability.isolates_network);
}

async fn death_by_signal_is_128_plus_n(sandbox: Sandbox) {
    for (signal, code) in [("SEGV", 139), ("KILL", 137), ("TERM", 143)] {
        let mut config = shell(&format!("echo before; kill -{signal} $$; echo after"));
        config.allow_failure = Some(true);
        let result = only(run(sandbox, request(config)).await);
        assert_eq!(result.exit_code, code, "SIG{signal}: {result:?}");
        assert_eq!(stdout(&result), "before\n");
    }
}

async fn iterations_and_allow_failure(sandbox: Sandbox) {
    let mut config = shell("echo run");
    config.iter = Some(3);
    let results = completed(run(sandbox, request(config)).await);
    assert_eq!(results.len(), 3);
    assert!(
        results
            .iter()
            .all(|r| r.exit_code == 0 && stdout(r) == "run\n")
    );

    // A failure stops the job after that iteration.
    let mut config = shell("echo run; exit 1");
    config.iter = Some(3);
    let outcome = run(sandbox, request(config.clone())).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("expected failed: {outcome:#?}");
    };
    assert_eq!(results.len(), 1);
    assert!(error.starts_with("iteration 1 of 3:"), "{error}");

    // Allowed, every iteration runs and the job completes.
    config.allow_failure = Some(true);
    let results = completed(run(sandbox, request(config)).await);
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r.exit_code == 1));

    // Every iteration starts from the image as it was.
    let mut config = shell("cat /left-behind 2>/dev/null || echo clean; echo x > /left-behind");
    config.iter = Some(2);
    let results = completed(run(sandbox, request(config)).await);
    assert!(
        results.iter().all(|r| stdout(r) == "clean\n"),
        "{results:#?}"
    );
}

async fn entrypoint_and_cmd_follow_dockers_rule(sandbox: Sandbox) {
    let img = || {
        image(serde_json::json!({
            "Env": ["PATH=/bin"],
            "Entrypoint": ["/bin/echo", "entry"],
            "Cmd": ["default"],
        }))
    };
    let mut config = job(&[]);
    config.cmd = None;
    assert_eq!(
        stdout(&only(
            run(sandbox, request_with(img(), config.clone())).await
        )),
        "entry default\n"
    );
    config.cmd = Some(vec!["given".into()]);
    assert_eq!(
        stdout(&only(
            run(sandbox, request_with(img(), config.clone())).await
        )),
        "entry given\n"
    );
    // A new entrypoint drops the image's cmd.
    config.entrypoint = Some(vec!["echo".into(), "new".into()]);
    config.cmd = None;
    assert_eq!(
        stdout(&only(
            run(sandbox, request_with(img(), config.clone())).await
        )),
        "new\n"
    );
    config.cmd = Some(vec!["and".into(), "cmd".into()]);
    assert_eq!(
        stdout(&only(run(sandbox, request_with(img(), config)).await)),
        "new and cmd\n"
    );

    // A bare name is looked up in the image's PATH, inside the image.
    let outcome = run(sandbox, request(job(&["no-such-program"]))).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("expected failed: {outcome:#?}");
    };
    assert!(results.is_empty());
    assert!(
        error.contains("`no-such-program`: not found in the image's PATH (/bin)"),
        "{error}"
    );
    let outcome = run(sandbox, request(job(&["/usr/bin/env"]))).await;
    let ExecOutcome::Failed { error, .. } = outcome else {
        panic!("the host's /usr/bin/env is not the image's: {outcome:#?}");
    };
    assert!(error.contains("does not exist in the image"), "{error}");
    // Nothing to run at all.
    let mut config = job(&[]);
    config.cmd = None;
    let outcome = run(sandbox, request(config)).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { error, .. } if error.contains("nothing to run")),
        "{outcome:#?}"
    );
}

async fn environment_is_the_images_then_the_jobs(sandbox: Sandbox) {
    let img = image(serde_json::json!({"Env": ["A=1", "B=2", "PATH=/bin"]}));
    let mut config = job(&["env"]);
    config.env = Some(BTreeMap::from([
        ("B".to_owned(), "3".to_owned()),
        ("C".to_owned(), "x=y".to_owned()),
    ]));
    let result = only(run(sandbox, request_with(img, config)).await);
    let mut lines: Vec<&str> = stdout(&result).lines().collect();
    lines.sort_unstable();
    // Nothing of the runner's environment leaks in.
    assert_eq!(lines, ["A=1", "B=3", "C=x=y", "HOME=/root", "PATH=/bin"]);

    // Without a PATH in the image, Docker's default.
    let result = only(
        run(
            sandbox,
            request_with(image(serde_json::json!({})), job(&["/bin/env"])),
        )
        .await,
    );
    assert!(
        stdout(&result)
            .contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{result:?}"
    );
}

async fn working_directory_is_the_images(sandbox: Sandbox) {
    let img = image(serde_json::json!({"Env": ["PATH=/bin"], "WorkingDir": "/work/dir"}));
    let mut config = shell("pwd; echo relative > rel.txt");
    config.file_paths = Some(vec!["rel.txt".into(), "/work/dir/rel.txt".into()]);
    let result = only(run(sandbox, request_with(img, config)).await);
    assert_eq!(stdout(&result), "/work/dir\n");
    let output = result.output.expect("output files");
    assert_eq!(output["rel.txt"], "relative\n");
    assert_eq!(output["/work/dir/rel.txt"], "relative\n");
}

async fn runs_as_the_images_user(sandbox: Sandbox) {
    let as_user = |user: &str| image(serde_json::json!({"Env": ["PATH=/bin"], "User": user}));
    let script = shell(
        "id -u; id -g; id -G; echo $HOME; echo > /tmp/ok && echo tmp-writable; \
         echo x > /etc/nope || echo root-only; \
         cat /proc/1/environ > /dev/null 2>&1 || echo init-environ-denied",
    );
    // The init's environment is the job's own except with sandbox `none`, whose init
    // is a fork of the runner: there it must be out of the job's reach. gVisor lets the
    // job read it (its init is `bencher-oci-init`, which holds nothing of the runner).
    let denied = if sandbox == Sandbox::Gvisor {
        ""
    } else {
        "init-environ-denied\n"
    };
    let result = only(run(sandbox, request_with(as_user("bench"), script.clone())).await);
    assert_eq!(
        stdout(&result),
        format!("1234\n2345\n2345 3456\n/home/bench\ntmp-writable\nroot-only\n{denied}"),
        "{result:?}"
    );
    let result = only(run(sandbox, request_with(as_user("4242:77"), script.clone())).await);
    assert_eq!(
        stdout(&result),
        format!("4242\n77\n77\n/\ntmp-writable\nroot-only\n{denied}"),
        "{result:?}"
    );
    let result = only(
        run(
            sandbox,
            request_with(as_user(""), shell("id -u; id -G; echo $HOME")),
        )
        .await,
    );
    assert_eq!(stdout(&result), "0\n0\n/root\n");

    let outcome = run(sandbox, request_with(as_user("nobody"), script)).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("expected failed: {outcome:#?}");
    };
    assert!(results.is_empty());
    assert_eq!(
        error,
        "the image's user `nobody` is not in the image's /etc/passwd"
    );
}

async fn the_chroot_and_namespaces_isolate_the_job(sandbox: Sandbox) {
    // A file on the host, outside the image's root.
    let host = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let sentinel = host.path().join("sentinel");
    fs::write(&sentinel, "HOST").unwrap();
    let script = format!(
        "cat {} || echo no-host-file; echo /*; echo pid $$; echo /dev/*; \
         echo > /dev/null && echo dev-null; cat /proc/sys/kernel/hostname > /dev/null && \
         (echo x > /proc/sys/kernel/hostname 2>/dev/null || echo proc-sys-read-only)",
        sentinel.display()
    );
    let result = only(run(sandbox, request(shell(&script))).await);
    let out = stdout(&result);
    assert!(
        out.starts_with("no-host-file\n"),
        "{out}\n{}",
        stderr(&result)
    );
    assert!(!out.contains("HOST"), "{out}");
    // The image's own root, with the mount points the job gets.
    // (Globs rather than `ls`: the gVisor release in Debian 12 fails coreutils' `ls`
    // with EINVAL.)
    assert!(
        out.contains("\n/bin /dev /etc /home /lib /lib64 /proc /sys /tmp\n"),
        "{out}"
    );
    // Its own PID namespace: init is 1, the benchmark a small pid after it (2 with
    // sandbox `none`; runc's own setup threads take a few first).
    let pid: u32 = out
        .lines()
        .find_map(|line| line.strip_prefix("pid "))
        .and_then(|pid| pid.parse().ok())
        .expect("the benchmark's pid");
    assert!((2..=32).contains(&pid), "{out}");
    if sandbox == Sandbox::None {
        assert_eq!(pid, 2);
    }
    // A minimal /dev; containers add what their runtime mounts (pts, mqueue).
    for dev in [
        "fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom",
        "zero",
    ] {
        let listed = out
            .lines()
            .find(|line| line.starts_with("/dev/"))
            .unwrap_or_default();
        assert!(
            listed.split(' ').any(|path| path == format!("/dev/{dev}")),
            "/dev/{dev}: {out}"
        );
    }
    assert!(out.ends_with("dev-null\nproc-sys-read-only\n"), "{out}");
    // Nothing the job mounted is visible on the host.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("bencher-job-"), "{mounts}");
}

async fn the_shared_root_filesystem_is_never_modified(sandbox: Sandbox) {
    let before = snapshot(rootfs());
    let script = "echo new > /new-file; echo more >> /etc/passwd; rm /etc/image-file; \
                  rm -r /home; mkdir -p /a/b; ln -s /etc /a/link; chmod 700 /bin 2>/dev/null; \
                  echo done";
    let result = only(run(sandbox, request(shell(script))).await);
    assert_eq!(stdout(&result), "done\n", "{result:?}");
    assert_eq!(snapshot(rootfs()), before);
}

async fn output_files_are_collected_inside_the_root(sandbox: Sandbox) {
    let host = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let sentinel = host.path().join("sentinel");
    fs::write(&sentinel, "HOST").unwrap();
    let sentinel = sentinel.display().to_string();
    let deep = "../".repeat(20);
    let script = format!(
        "mkdir -p /out && echo '{{\"ok\":true}}' > /out/results.json && echo tmp > /tmp/t.txt && \
         ln -s {sentinel} /out/abs && ln -s {deep}{sentinel} /out/rel && \
         ln -s /out/loop /out/loop && ln -s results.json /out/link"
    );
    let mut config = shell(&script);
    config.file_paths = Some(vec![
        "/out/results.json".into(),
        "/tmp/t.txt".into(),
        "/out/link".into(),
    ]);
    let output = only(run(sandbox, request(config.clone())).await)
        .output
        .unwrap();
    assert_eq!(output["/out/results.json"], "{\"ok\":true}\n");
    assert_eq!(output["/tmp/t.txt"], "tmp\n");
    assert_eq!(output["/out/link"], "{\"ok\":true}\n");

    // Links to the host's file resolve inside the root, where it does not exist.
    for link in ["/out/abs", "/out/rel"] {
        config.file_paths = Some(vec![link.into()]);
        let outcome = run(sandbox, request(config.clone())).await;
        let ExecOutcome::Failed { results, error } = outcome else {
            panic!("expected failed: {outcome:#?}");
        };
        assert_eq!(
            error,
            format!("iteration 1 of 1: output file `{link}` does not exist")
        );
        assert!(results[0].output.is_none());
    }
    // Once that path exists inside the root, that is what is read, never the host's.
    let mirror = format!(
        "mkdir -p {} && echo INSIDE > {sentinel} && {script}",
        host.path().display()
    );
    let mut mirrored = shell(&mirror);
    mirrored.file_paths = Some(vec!["/out/abs".into(), "/out/rel".into()]);
    let output = only(run(sandbox, request(mirrored)).await).output.unwrap();
    assert_eq!(output["/out/abs"], "INSIDE\n");
    assert_eq!(output["/out/rel"], "INSIDE\n");

    // A loop, or more links than allowed.
    config.file_paths = Some(vec!["/out/loop".into()]);
    let outcome = run(sandbox, request(config.clone())).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { error, .. } if error.contains("more than 40 symbolic links")),
        "{outcome:#?}"
    );
    config.file_paths = Some(vec!["/out/link".into()]);
    let mut strict = request(config.clone());
    strict.limits.max_symlinks = 0;
    let outcome = run(sandbox, strict).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { error, .. } if error.contains("more than 0 symbolic links")),
        "{outcome:#?}"
    );

    // Binary and oversized files are refused, a missing one too after a success but
    // not after a failure.
    let mut binary = shell("printf '\\377\\376' > /bin.dat");
    binary.file_paths = Some(vec!["/bin.dat".into()]);
    let outcome = run(sandbox, request(binary)).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { error, .. } if error.contains("not UTF-8")),
        "{outcome:#?}"
    );
    let mut big = shell("head -c 2000 /dev/zero > /big");
    big.file_paths = Some(vec!["/big".into()]);
    let mut small = request(big);
    small.limits.max_output_size = 1000;
    let outcome = run(sandbox, small).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { error, .. } if error.contains("larger than 1000 bytes")),
        "{outcome:#?}"
    );
    let mut missing = shell("exit 0");
    missing.file_paths = Some(vec!["/missing".into()]);
    let outcome = run(sandbox, request(missing.clone())).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { error, .. } if error.contains("`/missing` does not exist")),
        "{outcome:#?}"
    );
    missing.cmd = Some(vec!["/bin/sh".into(), "-c".into(), "exit 2".into()]);
    missing.allow_failure = Some(true);
    let result = only(run(sandbox, request(missing)).await);
    assert_eq!(result.exit_code, 2);
    assert_eq!(result.output, Some(BTreeMap::new()));
}

async fn build_time_and_file_sizes_are_measured_when_asked(sandbox: Sandbox) {
    // A binary file, a file past the output limit, a link, a relative path (from the
    // image's working directory, `/`), and a file that is not there.
    let script = "sleep 0.2 && mkdir -p out && head -c 3000 /dev/zero > out/app && \
                  printf '\\377\\376x' > /bin.dat && ln -s app out/link && \
                  echo measured";
    let mut config = shell(script);
    config.iter = Some(2);
    config.build_time = Some(true);
    config.file_size = Some(true);
    config.file_paths = Some(vec![
        "out/app".into(),
        "/bin.dat".into(),
        "/out/link".into(),
        "/missing".into(),
    ]);
    let mut asked = request(config.clone());
    // Sizes are not contents: the output limit does not apply to them.
    asked.limits.max_output_size = 1000;
    let results = completed(run(sandbox, asked).await);
    assert_eq!(results.len(), 2, "{results:#?}");
    for result in &results {
        assert_eq!(
            stdout(result),
            "measured
"
        );
        // The command slept 0.2 s: its time is at least that. Only a lower bound; how
        // much more a loaded machine takes is not this test's business.
        let nanos = result.build_time_ns.expect("a build time");
        assert!(nanos >= 200_000_000, "{nanos} ns");
        assert_eq!(
            result.file_sizes,
            Some(BTreeMap::from([
                ("out/app".to_owned(), 3000),
                ("/bin.dat".to_owned(), 3),
                ("/out/link".to_owned(), 3000),
            ]))
        );
        // Measured, not read.
        assert_eq!(result.output, None);
    }

    // A failed command that exited is measured too (kept by allow_failure).
    let mut failed = shell("sleep 0.2 && head -c 5 /dev/zero > /f && exit 3");
    failed.build_time = Some(true);
    failed.file_size = Some(true);
    failed.allow_failure = Some(true);
    failed.file_paths = Some(vec!["/f".into()]);
    let result = only(run(sandbox, request(failed.clone())).await);
    assert_eq!(result.exit_code, 3);
    assert!(result.build_time_ns.is_some_and(|n| n >= 200_000_000));
    assert_eq!(
        result.file_sizes,
        Some(BTreeMap::from([("/f".to_owned(), 5)]))
    );

    // What is not a regular file fails the job.
    failed.file_paths = Some(vec!["/etc".into()]);
    let outcome = run(sandbox, request(failed)).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { error, .. } if error.contains("`/etc` is not a regular file")),
        "{outcome:#?}"
    );

    // Not asked: neither field, and the files are read as before.
    let mut plain = shell("sleep 0.2 && echo x > /f");
    plain.file_paths = Some(vec!["/f".into()]);
    let result = only(run(sandbox, request(plain)).await);
    assert_eq!(result.build_time_ns, None);
    assert_eq!(result.file_sizes, None);
    assert_eq!(
        result.output,
        Some(BTreeMap::from([("/f".to_owned(), "x\n".to_owned())]))
    );

    // A command killed at the timeout never exited: it has no build time.
    let mut slow = shell("sleep 30");
    slow.build_time = Some(true);
    slow.timeout = 1;
    let outcome = run(sandbox, request(slow)).await;
    let ExecOutcome::TimedOut { results } = outcome else {
        panic!("expected timed out: {outcome:#?}");
    };
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].build_time_ns, None);
}

async fn output_files_are_capped_by_count_before_anything_runs(sandbox: Sandbox) {
    let mut config = shell("echo ran");
    config.file_paths = Some(vec!["/a".into(), "/b".into(), "/c".into()]);
    let mut request = request(config);
    request.limits.max_file_count = 2;
    let outcome = run(sandbox, request).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("expected failed: {outcome:#?}");
    };
    assert!(results.is_empty());
    assert_eq!(
        error,
        "the job asks for 3 output files; this runner collects at most 2 (--max-file-count)"
    );
}

async fn output_is_truncated_with_a_marker_and_never_blocks(sandbox: Sandbox) {
    // 50 MiB on stdout, then a line on stderr once the shared budget is spent.
    let result = only(
        run(
            sandbox,
            request(shell(
                "head -c 52428800 /dev/zero; echo late >&2; echo done",
            )),
        )
        .await,
    );
    assert_eq!(result.exit_code, 0);
    let out = stdout(&result);
    let limit = 25 << 20;
    assert!(out.as_bytes()[..limit].iter().all(|b| *b == 0));
    let marker = &out[limit..];
    assert_eq!(
        marker,
        format!(
            "\n[bencher: output truncated after {limit} bytes; {} more bytes discarded \
             (stdout and stderr share a limit of {limit} bytes per iteration)]\n",
            (50 << 20) - limit + "done\n".len()
        )
    );
    assert!(
        stderr(&result).starts_with("\n[bencher: output truncated after 0 bytes; 5 more"),
        "{}",
        stderr(&result)
    );
}

async fn a_timeout_kills_the_whole_process_tree(sandbox: Sandbox) {
    let sleeper = marker("timeout");
    // A background sleeper, one in a new session (a daemon), and one in the foreground.
    let mut config = shell(&format!(
        "echo started; {sleeper} 1000 & (cd / && exec {sleeper} 1001 </dev/null >/dev/null 2>&1 &) ; {sleeper} 1002"
    ));
    config.timeout = 2;
    let task = tokio::spawn(run(sandbox, request(config)));
    // The sleepers are seen from the host while they run (so the check below can see
    // them), then the timeout hits.
    let seen = wait_for(|| job_processes(sandbox, "timeout").len() >= 3).await;
    assert!(seen, "the job's sleepers never showed up in /proc");
    let outcome = task.await.unwrap();
    let ExecOutcome::TimedOut { results } = outcome else {
        panic!("expected timed out: {outcome:#?}");
    };
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].exit_code, 137);
    assert_eq!(stdout(&results[0]), "started\n");
    assert_eq!(job_processes(sandbox, "timeout"), Vec::<String>::new());
}

async fn leftovers_get_the_grace_period_then_die(sandbox: Sandbox) {
    let sleeper = marker("leftover");
    // The benchmark exits at once; a background writer finishes within the grace
    // period, a background sleeper does not.
    let mut config = shell(&format!(
        "mkdir /out; (sleep 0.2; echo late > /out/late) & {sleeper} 1000 & echo done"
    ));
    config.file_paths = Some(vec!["/out/late".into()]);
    let mut request = request(config);
    request.grace_period = Duration::from_secs(2);
    let result = only(run(sandbox, request).await);
    assert_eq!(stdout(&result), "done\n");
    assert_eq!(result.output.unwrap()["/out/late"], "late\n");
    assert_eq!(job_processes(sandbox, "leftover"), Vec::<String>::new());
}

async fn a_cancel_stops_the_job_within_a_second(sandbox: Sandbox) {
    let sleeper = marker("cancel");
    let cancel = CancellationToken::new();
    let mut config = shell(&format!("echo started; {sleeper} 1000 & {sleeper} 1001"));
    config.iter = Some(3);
    let task = tokio::spawn(executor::execute(sandbox, request(config), cancel.clone()));
    assert!(wait_for(|| job_processes(sandbox, "cancel").len() >= 2).await);
    let canceled_at = Instant::now();
    cancel.cancel();
    let outcome = task.await.unwrap();
    let took = canceled_at.elapsed();
    println!("cancel took {took:?}");
    let ExecOutcome::Canceled { results } = outcome else {
        panic!("expected canceled: {outcome:#?}");
    };
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].exit_code, 137);
    assert_eq!(stdout(&results[0]), "started\n");
    assert_eq!(job_processes(sandbox, "cancel"), Vec::<String>::new());
    // The contract, with a wide margin over the milliseconds it takes.
    assert!(took < Duration::from_secs(1), "cancel took {took:?}");
}

/// Polls `condition` for up to ten seconds.
async fn wait_for(condition: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

// ---------------------------------------------------------------------------------
// `runner run`.

/// The test root filesystem as an OCI image: one uncompressed layer, its config, its
/// manifest.
struct OciImage {
    layer: Vec<u8>,
    config: Vec<u8>,
    manifest: Vec<u8>,
}

fn oci_image(run_config: serde_json::Value) -> OciImage {
    use bencher_oci::digest::Digest;
    use bencher_oci::manifest::{OCI_IMAGE_CONFIG, OCI_IMAGE_MANIFEST, OCI_LAYER_TAR};
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.append_dir_all(".", rootfs()).unwrap();
    let layer = builder.into_inner().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": bencher_oci::platform::Platform::host().architecture,
        "os": "linux",
        "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(&layer).to_string()]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_MANIFEST,
        "config": {
            "mediaType": OCI_IMAGE_CONFIG,
            "digest": Digest::sha256_of(&config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": OCI_LAYER_TAR,
            "digest": Digest::sha256_of(&layer).to_string(),
            "size": layer.len(),
        }],
    }))
    .unwrap();
    OciImage {
        layer,
        config,
        manifest,
    }
}

impl OciImage {
    /// Writes an OCI image layout directory.
    fn write_layout(&self, dir: &Path) {
        use bencher_oci::digest::Digest;
        use bencher_oci::manifest::OCI_IMAGE_MANIFEST;
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        for blob in [&self.layer, &self.config, &self.manifest] {
            fs::write(blobs.join(Digest::sha256_of(blob).hex()), blob).unwrap();
        }
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_IMAGE_MANIFEST,
                "digest": Digest::sha256_of(&self.manifest).to_string(),
                "size": self.manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }],
        });
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

fn run_args(args: &[&str]) -> bencher_runner::run_local::RunArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: bencher_runner::run_local::RunArgs,
    }
    let mut argv = vec!["runner-run"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).unwrap().args
}

/// `runner run` through its handler, with `--format json`: the exit code and the JSON.
async fn run_local(args: &[&str]) -> (std::process::ExitCode, serde_json::Value) {
    let mut argv = vec!["--format", "json"];
    argv.extend_from_slice(args);
    let mut out = Vec::new();
    let code = bencher_runner::run_local::run_to(run_args(&argv), &mut out)
        .await
        .expect("runner run");
    let json = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out));
    });
    (code, json)
}

#[tokio::test]
async fn runner_run_executes_an_oci_layout() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let layout = dir.path().join("layout");
    let image = oci_image(serde_json::json!({
        "Env": ["PATH=/bin", "FROM_IMAGE=yes"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo default"],
        "WorkingDir": "/work",
    }));
    image.write_layout(&layout);
    let layout = layout.to_str().unwrap();

    let (code, json) = run_local(&[
        "--image",
        layout,
        "--danger-allow-no-sandbox",
        "--iter",
        "2",
        "--env",
        "FROM_JOB=1",
        "--output",
        "out.txt",
        "--",
        "echo $FROM_IMAGE $FROM_JOB; pwd > out.txt",
    ])
    .await;
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(json["outcome"], "completed", "{json:#}");
    assert_eq!(json["error"], serde_json::Value::Null);
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for result in results {
        assert_eq!(result["exit_code"], 0);
        assert_eq!(result["stdout"], "yes 1\n");
        assert_eq!(result["output"]["out.txt"], "/work\n");
        assert!(result.get("build_time_ns").is_none(), "{result:#}");
    }

    // The measures, as a job would ask for them.
    let (code, json) = run_local(&[
        "--image",
        layout,
        "--danger-allow-no-sandbox",
        "--build-time",
        "--file-size",
        "--output",
        "out.txt",
        "--",
        "sleep 0.2; pwd > out.txt",
    ])
    .await;
    assert_eq!(code, std::process::ExitCode::SUCCESS, "{json:#}");
    let result = &json["results"][0];
    assert!(
        result["build_time_ns"]
            .as_u64()
            .is_some_and(|n| n >= 200_000_000),
        "{result:#}"
    );
    assert_eq!(result["file_sizes"]["out.txt"], 6, "{result:#}");

    // The image's default command; a failure is exit code 1.
    let (code, json) = run_local(&["--image", layout, "--danger-allow-no-sandbox"]).await;
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    assert_eq!(json["results"][0]["stdout"], "default\n");
    let (code, json) = run_local(&[
        "--image",
        layout,
        "--danger-allow-no-sandbox",
        "--entrypoint",
        "/bin/sh",
        "--cmd",
        "-c",
        "--cmd",
        "exit 3",
    ])
    .await;
    assert_eq!(code, std::process::ExitCode::FAILURE);
    assert_eq!(json["outcome"], "failed");
    assert_eq!(json["results"][0]["exit_code"], 3);
    let (code, json) = run_local(&[
        "--image",
        layout,
        "--danger-allow-no-sandbox",
        "--timeout",
        "1",
        "--",
        "sleep 30",
    ])
    .await;
    assert_eq!(code, std::process::ExitCode::from(124));
    assert_eq!(json["outcome"], "timed_out");

    // Without the flag: refused, naming the flag, before anything is unpacked or run.
    let sleeper = marker("runner");
    let script = format!("{sleeper} 1000");
    let mut out = Vec::new();
    let error =
        bencher_runner::run_local::run_to(run_args(&["--image", layout, "--", &script]), &mut out)
            .await
            .unwrap_err();
    assert!(
        error.to_string().contains("--danger-allow-no-sandbox"),
        "{error}"
    );
    assert!(out.is_empty());
    assert_eq!(marked_processes("runner"), Vec::<String>::new());
}

#[tokio::test]
async fn runner_run_pulls_from_a_registry() {
    if !privileged() {
        return;
    }
    use bencher_oci::digest::Digest;
    use bencher_oci::manifest::OCI_IMAGE_MANIFEST;
    use bencher_test_support::reqwest::Method;
    use bencher_test_support::{Backend, TestServer};

    let server = TestServer::start(Backend::Sqlite).await;
    let image = oci_image(serde_json::json!({"Env": ["PATH=/bin"], "Cmd": ["echo", "pulled"]}));
    for blob in [&image.config, &image.layer] {
        let digest = Digest::sha256_of(blob);
        let response = server
            .request(
                Method::POST,
                &format!("/v2/bench/blobs/uploads/?digest={digest}"),
            )
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    let response = server
        .request(Method::PUT, "/v2/bench/manifests/v1")
        .header("content-type", OCI_IMAGE_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let cache = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let reference = format!(
        "{}:{}/bench:v1",
        server.url.host_str().unwrap(),
        server.url.port().unwrap()
    );
    let (code, json) = run_local(&[
        "--image",
        &reference,
        "--token",
        server.admin_token.expose_secret(),
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--danger-allow-no-sandbox",
    ])
    .await;
    assert_eq!(code, std::process::ExitCode::SUCCESS, "{json:#}");
    assert_eq!(json["results"][0]["stdout"], "pulled\n");
}

#[tokio::test]
async fn runner_binary_runs_and_refuses() {
    if !privileged() {
        return;
    }
    let Some(runner) = option_env!("CARGO_BIN_EXE_runner") else {
        eprintln!("SKIPPED: this crate has no `runner` binary yet");
        return;
    };
    let help = Command::new(runner)
        .args(["run", "--help"])
        .output()
        .unwrap();
    if !help.status.success() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the runner binary has no `run` subcommand"
        );
        eprintln!(
            "SKIPPED: the runner binary has no `run` subcommand yet (the handler is tested above)"
        );
        return;
    }
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let layout = dir.path().join("layout");
    oci_image(serde_json::json!({"Env": ["PATH=/bin"]})).write_layout(&layout);
    let layout = layout.to_str().unwrap();

    let output = Command::new(runner)
        .args(["run", "--image", layout, "--danger-allow-no-sandbox"])
        .args(["--output", "/tmp/f", "--", "/bin/sh", "-c"])
        .arg("echo hello; echo oops >&2; echo content > /tmp/f")
        .env_remove("BENCHER_DANGER_ALLOW_NO_SANDBOX")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout,
        "== iteration 1 of 1: exit code 0\n-- stdout\nhello\n-- stderr\noops\n\
         -- file /tmp/f\ncontent\n== completed\n"
    );
    // The environment variable allows it too; a failing job exits 1.
    let output = Command::new(runner)
        .args(["run", "--image", layout, "--", "/bin/sh", "-c", "exit 4"])
        .env("BENCHER_DANGER_ALLOW_NO_SANDBOX", "true")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");

    // Refused without it: the flag named, nothing run.
    let sleeper = marker("runner");
    let output = Command::new(runner)
        .args(["run", "--image", layout, "--", &sleeper, "1000"])
        .env_remove("BENCHER_DANGER_ALLOW_NO_SANDBOX")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--danger-allow-no-sandbox"), "{stderr}");
    assert_eq!(marked_processes("runner"), Vec::<String>::new());
}

async fn an_image_that_cannot_be_prepared_fails_the_job(sandbox: Sandbox) {
    let img = image(serde_json::json!({"Env": ["PATH=/bin"], "WorkingDir": "/etc/passwd"}));
    let outcome = run(sandbox, request_with(img, shell("echo never"))).await;
    let ExecOutcome::Failed { results, error } = outcome else {
        panic!("expected failed: {outcome:#?}");
    };
    assert!(results.is_empty());
    assert_eq!(
        error,
        "iteration 1 of 1: cannot prepare a directory in the image's root filesystem: \
         `/etc/passwd` is not a directory, or a component on its way is not"
    );

    let mut missing = request(shell("echo never"));
    missing.rootfs = rootfs().join("no-such-dir");
    let outcome = run(sandbox, missing).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { results, error }
            if results.is_empty() && error.starts_with("cannot open the image's root filesystem")),
        "{outcome:#?}"
    );

    let mut invalid = shell("echo never");
    invalid.timeout = 0;
    let outcome = run(sandbox, request(invalid)).await;
    assert!(
        matches!(&outcome, ExecOutcome::Failed { error, .. } if error.starts_with("invalid job")),
        "{outcome:#?}"
    );
}

/// Host tuning's cpuset partition on this real host, alone (no other knob changes):
/// the job sees only its CPUs, the runner's (this test's) thread sits on the
/// housekeeping CPUs meanwhile, and everything is back afterwards. Safe to run on a
/// shared machine: it makes one cgroup of its own and moves only this process's threads,
/// both undone at the end (and by the next start after a crash). Never timed.
async fn the_job_runs_on_the_benchmark_cpus(sandbox: Sandbox) {
    use bencher_runner::tuning::knob::Knob;
    use bencher_runner::tuning::{Settings, Tuning};

    let online = fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    let cpus = bencher_runner::tuning::knob::parse_cpu_list(&online).unwrap_or_default();
    if cpus.len() < 2 {
        eprintln!(
            "SKIPPED: the cpuset partition needs 2 online CPUs; this host has `{}`",
            online.trim()
        );
        return;
    }
    let affinity = || {
        let set = rustix::thread::sched_getaffinity(None).unwrap();
        (0..1024u32)
            .filter(|&c| set.is_set(c as usize))
            .collect::<Vec<_>>()
    };
    // One variant at a time: each moves every thread of this process (the runner's
    // stand-in), so another variant's "before" would be this one's "during".
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let before = affinity();
    let tuning = Tuning::new("/".into()).with_settings(Settings::only(Knob::Cpuset, "partition"));
    // Waits while a runner on this host holds the tuning lock.
    let mut applied = tuning.apply(&CancellationToken::new()).await.unwrap();
    // This test's thread, the runner's stand-in, is where tuning put the runner.
    let on_housekeeping = affinity();
    let detail = applied
        .state()
        .cpuset()
        .cloned()
        .expect("the partition is made");
    eprintln!("cpuset: {detail:?}");
    let job = applied.place_job(1).expect("a placement");
    let mut request = request(shell("cat /proc/self/status; cat /proc/self/cgroup"));
    request.placement = Some(job.placement());
    let outcome = run(sandbox, request).await;
    let restored = applied.restore_async().await.unwrap();
    let after = affinity();

    let result = only(outcome);
    let text = stdout(&result);
    let allowed = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    assert!(restored.failed.is_empty(), "{restored:?}");
    assert_eq!(
        bencher_runner::tuning::knob::parse_cpu_list(&detail.housekeeping_cpus).unwrap(),
        on_housekeeping,
        "the runner's threads were on the housekeeping CPUs during the job"
    );
    assert_eq!(
        after, before,
        "the runner's threads are back where they were"
    );
    assert!(!Path::new("/sys/fs/cgroup/cpuset/bencher-runner").exists());
    match sandbox {
        // gVisor's /proc is the Sentry's own and has no `Cpus_allowed_list`: the job
        // cannot see host CPUs. What runsc is given (config.json's cpus) is checked by
        // `oci_runtime::bundle`'s unit test; here only that the placed job ran.
        Sandbox::Gvisor => assert_eq!(result.exit_code, 0, "{text}"),
        _ => assert_eq!(
            bencher_runner::tuning::knob::parse_cpu_list(&allowed),
            Some(job.cpus.clone()),
            "{text}"
        ),
    }
    if sandbox == Sandbox::None && detail.cgroup.is_some() {
        // The init joined the partition's cgroup, and the benchmark is its child.
        assert!(
            text.lines()
                .any(|l| l.contains(":cpuset:/bencher-runner")
                    || l.starts_with("0::/bencher-runner")),
            "{text}"
        );
    }
}
