//! One iteration's OCI runtime bundle: a directory holding `config.json`, the job's
//! root (an overlay of the image's root filesystem, mounted here in the runner's mount
//! namespace) whose upper and work directories are on the job's scratch filesystem,
//! and the directory the container's init writes its reports to. IO: creates and
//! deletes the directory and the iteration's layer on the scratch, mounts and
//! unmounts the overlay and the report tmpfs, writes `config.json`.
//!
//! The image's root filesystem is shared by every job of the image and never
//! modified: it is the overlay's read-only lower layer, and each iteration gets a fresh
//! upper directory on the job's scratch filesystem of the Spec's disk size (see
//! `scratch`), deleted with the bundle.
//!
//! Layout: `config.json`; `rootfs/` (the overlay); `report/` (a tiny tmpfs); the
//! layer is `<job scratch>/<container id>/{upper,work}`. Every place that removes a
//! bundle (or a job's scratch directory) unmounts first, through [`remove_leftover`]
//! or [`Bundle::remove`].

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder, get_default_maskedpaths, get_default_mounts, get_default_readonly_paths,
};
use rustix::fs::{Mode, OFlags, open};
use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

use super::scratch;
use crate::executor::Resources;
use crate::executor::plan::Credentials;

/// Where the init binary is mounted in the container (read-only). Under `/dev`, the
/// runtime's own tmpfs, so the image's root gets no extra entry.
pub(super) const INIT_PATH: &str = "/dev/.bencher-init";
/// Where the init writes its reports in the container (see `oci-init/main.rs`).
pub(super) const REPORT_PATH: &str = "/dev/.bencher-report";
/// The CFS period the CPU quota is a multiple of: the kernel's default, 100 ms.
const CPU_PERIOD_US: u64 = 100_000;
/// The report directory's tmpfs. Root in the container (an image whose user is root)
/// may write there: on the host's disk it would be a way around the scratch's limit,
/// so it is a tmpfs far larger than init's few short reports and far smaller than
/// anything that matters to the host's memory.
const REPORT_TMPFS: &std::ffi::CStr = c"size=1m,nr_inodes=64,mode=0700";

/// Docker's default capability set: what root in the container may do. The
/// benchmark, when the image's user is not root, has none of them (init's `setuid`
/// drops them).
const DOCKER_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// What the container runs, decided once per job.
#[derive(Debug)]
pub(super) struct Process {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: String,
    pub credentials: Credentials,
    pub grace_ms: u64,
}

/// A bundle directory with its overlay mounted on `rootfs`.
pub(super) struct Bundle {
    pub dir: PathBuf,
    pub rootfs: PathBuf,
    pub report: PathBuf,
    /// The iteration's upper and work directories, on the job's scratch.
    layer: PathBuf,
    removed: bool,
}

impl Bundle {
    /// Creates `dir` (0700) with the overlay of `image_rootfs` mounted in it, its
    /// writable layer a new directory of the job's scratch filesystem mounted at
    /// `scratch`, named like `dir`. On error nothing stays mounted and both are gone.
    pub(super) fn create(
        dir: PathBuf,
        image_rootfs: &Path,
        scratch: &Path,
    ) -> Result<Bundle, String> {
        let io_error = |what: &str, path: &Path, e: io::Error| {
            format!("cannot {what} {}: {e}", path.display())
        };
        fs::create_dir(&dir).map_err(|e| io_error("create the bundle directory", &dir, e))?;
        let mut bundle = Bundle {
            rootfs: dir.join("rootfs"),
            report: dir.join("report"),
            layer: scratch.join(dir.file_name().unwrap_or_default()),
            dir,
            removed: false,
        };
        let created = (|| {
            fs::set_permissions(&bundle.dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error("set the mode of", &bundle.dir, e))?;
            for path in [&bundle.rootfs, &bundle.report, &bundle.layer] {
                fs::create_dir(path).map_err(|e| io_error("create", path, e))?;
            }
            // Only init (root) writes reports; the job's user cannot forge them.
            mount(
                c"tmpfs",
                &bundle.report,
                c"tmpfs",
                MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
                Some(REPORT_TMPFS),
            )
            .map_err(|e| io_error("mount the report tmpfs on", &bundle.report, e.into()))?;
            let (upper, work) = (bundle.layer.join("upper"), bundle.layer.join("work"));
            for path in [&upper, &work] {
                fs::create_dir(path).map_err(|e| io_error("create", path, e))?;
            }
            mount_overlay(image_rootfs, &upper, &work, &bundle.rootfs)
        })();
        match created {
            Ok(()) => Ok(bundle),
            Err(error) => {
                bundle.remove();
                Err(error)
            }
        }
    }

    /// Unmounts everything and deletes the directory and the layer, whose blocks
    /// return to the job's scratch for the next iteration. Idempotent.
    pub(super) fn remove(&mut self) {
        if !self.removed {
            remove_leftover(&self.dir);
            remove_dir(&self.layer);
            self.removed = true;
        }
    }
}

/// Unmounts what a bundle or a job's scratch directory may have mounted, the overlay
/// first (it holds the scratch), then deletes the directory: for one whose runner is
/// gone, or whose creation failed halfway. A leftover layer goes with its scratch.
/// Lazily: a mount still in use (by a dying container) is detached
/// from the tree at once, so the removal below never crosses into it, and the
/// scratch's loop device detaches itself when the last user is gone.
pub(super) fn remove_leftover(dir: &Path) {
    match unmount(dir.join("rootfs"), UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(error) => {
            tracing::warn!(path = %dir.display(), %error, "cannot unmount a job's root filesystem");
        }
    }
    scratch::unmount_lazily(&dir.join("scratch"));
    let _ = unmount(dir.join("report"), UnmountFlags::DETACH);
    remove_dir(dir);
}

/// Deletes a bundle directory that nothing is mounted on any more, without crossing
/// into a mount that is still there (a lazily unmounted overlay is already detached).
pub(super) fn remove_dir(dir: &Path) {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            tracing::warn!(path = %dir.display(), %error, "cannot remove a job's bundle directory");
        }
    }
}

/// Mounts the overlay of `lower` with `upper` and `work` on `target`. The layers are
/// named by `/proc/self/fd/N` links to fds opened here, so their paths need no
/// escaping for overlayfs's option syntax (`,` and `:`).
fn mount_overlay(lower: &Path, upper: &Path, work: &Path, target: &Path) -> Result<(), String> {
    let io_error =
        |what: &str, path: &Path, e: io::Error| format!("cannot {what} {}: {e}", path.display());
    // The merged root has the upper directory's owner and mode: make them the image's.
    let meta = fs::metadata(lower).map_err(|e| {
        format!(
            "cannot open the image's root filesystem {}: {e}",
            lower.display()
        )
    })?;
    fs::set_permissions(upper, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(|e| io_error("set the mode of", upper, e))?;
    std::os::unix::fs::chown(upper, Some(meta.uid()), Some(meta.gid()))
        .map_err(|e| io_error("set the owner of", upper, e))?;
    let open_dir = |path: &Path| -> Result<OwnedFd, String> {
        open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error("open", path, e.into()))
    };
    let (lower_fd, upper_fd, work_fd) = (open_dir(lower)?, open_dir(upper)?, open_dir(work)?);
    let options = format!(
        "lowerdir=/proc/self/fd/{},upperdir=/proc/self/fd/{},workdir=/proc/self/fd/{}",
        lower_fd.as_raw_fd(),
        upper_fd.as_raw_fd(),
        work_fd.as_raw_fd()
    );
    let options = CString::new(options).map_err(|e| e.to_string())?;
    mount(
        c"overlay",
        target,
        c"overlay",
        MountFlags::empty(),
        Some(options.as_c_str()),
    )
    .map_err(|e| {
        format!(
            "cannot mount the job's overlay of {} on {}: {e}",
            lower.display(),
            target.display()
        )
    })
}

/// A job's network: the job's network namespace (`super::super::network`), which the
/// runtime also starts in (runsc refuses a namespace path while it runs in the host's).
pub(super) struct Network {
    pub netns: PathBuf,
    /// Bound read-only over the image's `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// The container's `config.json`: see the module documentation of `oci_runtime` for
/// what each part gives the job.
pub(super) fn spec(
    id: &str,
    bundle: &Bundle,
    init: &Path,
    process: &Process,
    resources: &Resources,
    tmp_bind: bool,
    network: Option<&Network>,
) -> Result<Spec, oci_spec::OciSpecError> {
    let credentials = &process.credentials;
    let groups = if credentials.groups.is_empty() {
        "-".to_owned()
    } else {
        credentials
            .groups
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = vec![
        INIT_PATH.to_owned(),
        process.grace_ms.to_string(),
        credentials.uid.to_string(),
        credentials.gid.to_string(),
        groups,
        REPORT_PATH.to_owned(),
        "--".to_owned(),
    ];
    args.extend(process.argv.iter().cloned());
    let capabilities: oci_spec::runtime::Capabilities = DOCKER_CAPABILITIES.into_iter().collect();
    let process_spec = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(
            process
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
        )
        .cwd(process.working_dir.clone())
        // Init runs as root and gives the benchmark the image's user (see the init).
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .effective(capabilities.clone())
                .permitted(capabilities)
                .inheritable(oci_spec::runtime::Capabilities::new())
                .ambient(oci_spec::runtime::Capabilities::new())
                .build()?,
        )
        .no_new_privileges(true)
        .build()?;

    let bind = |source: &Path, destination: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ("bind")
            .source(source)
            .options(
                ["rbind"]
                    .iter()
                    .chain(options)
                    .map(|o| (*o).to_owned())
                    .collect::<Vec<_>>(),
            )
            .build()
    };
    // The runtime's defaults (proc, a minimal /dev tmpfs with devpts, shm and mqueue,
    // read-only sysfs and cgroup), the init and its report directory.
    let mut mounts = get_default_mounts();
    mounts.push(bind(init, INIT_PATH, &["ro", "nosuid", "nodev"])?);
    mounts.push(bind(
        &bundle.report,
        REPORT_PATH,
        &["rw", "nosuid", "nodev", "noexec"],
    )?);
    if tmp_bind {
        // gVisor mounts a tmpfs on an empty /tmp; the job's /tmp must be the overlay's,
        // where output files are collected. For runc this is the same directory again.
        mounts.push(bind(
            &bundle.rootfs.join("tmp"),
            "/tmp",
            &["rw", "nosuid", "nodev"],
        )?);
    }

    if let Some(network) = network {
        mounts.push(bind(
            &network.resolv_conf,
            "/etc/resolv.conf",
            &["ro", "nosuid", "nodev", "noexec"],
        )?);
    }
    let mut namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    // A new network namespace has only `lo`; with network, the job's (runsc is also
    // told `--network=host` or `--network=none` to match, see `Runtime`).
    let mut network_namespace = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(network) = network {
        network_namespace = network_namespace.path(network.netns.clone());
    }
    namespaces.push(network_namespace.build()?);
    let cpu = LinuxCpuBuilder::default()
        .quota(i64::from(resources.cpus) * CPU_PERIOD_US as i64)
        .period(CPU_PERIOD_US)
        .build()?;
    let memory = LinuxMemoryBuilder::default()
        .limit(i64::try_from(resources.memory).unwrap_or(i64::MAX))
        .build()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(format!("/bencher/{id}"))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![
                    LinuxDeviceCgroupBuilder::default()
                        .allow(false)
                        .access("rwm")
                        .build()?,
                ])
                .cpu(cpu)
                .memory(memory)
                .pids(
                    LinuxPidsBuilder::default()
                        .limit(i64::from(resources.tasks))
                        .build()?,
                )
                .build()?,
        )
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()?;
    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(&bundle.rootfs)
                .readonly(false)
                .build()?,
        )
        .hostname("bencher")
        .process(process_spec)
        .mounts(mounts)
        .linux(linux)
        .build()
}

/// Puts the container on the benchmark CPUs (`linux.resources.cpu.cpus`, which runc
/// and runsc write to the container's cpuset), and on cgroup v2 below the partition's
/// cgroup, outside which its CPUs cannot be had. Kept apart from `spec` so the CPU
/// quota and every other limit stay where they are.
pub(super) fn place(spec: &mut Spec, id: &str, placement: &super::super::Placement) {
    let Some(linux) = spec.linux_mut() else {
        return;
    };
    if let Some(parent) = &placement.oci_parent {
        linux.set_cgroups_path(Some(format!("{parent}/{id}").into()));
    }
    let resources = linux.resources_mut().get_or_insert_with(Default::default);
    let cpu = resources.cpu_mut().get_or_insert_with(Default::default);
    cpu.set_cpus(Some(placement.cpu_list()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::Placement;

    #[test]
    fn placing_sets_the_cpus_and_on_cgroup_v2_the_parent() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = Bundle {
            dir: dir.path().to_owned(),
            rootfs: dir.path().join("rootfs"),
            report: dir.path().join("report"),
            layer: dir.path().join("layer"),
            // Nothing is mounted: dropping it must not try to unmount.
            removed: true,
        };
        let process = Process {
            argv: vec!["true".to_owned()],
            env: Vec::new(),
            working_dir: "/".to_owned(),
            credentials: crate::executor::plan::Credentials {
                uid: 0,
                gid: 0,
                groups: Vec::new(),
                home: None,
            },
            grace_ms: 0,
        };
        let resources = Resources::RUN_DEFAULT;
        let mut spec = spec(
            "c1",
            &bundle,
            Path::new("/init"),
            &process,
            &resources,
            false,
            None,
        )
        .unwrap();
        let network_namespace = |spec: &Spec| {
            spec.linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .as_ref()
                .unwrap()
                .iter()
                .find(|n| n.typ() == LinuxNamespaceType::Network)
                .map(|n| n.path().clone())
        };
        let resolv_conf = |spec: &Spec| {
            spec.mounts()
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.destination() == Path::new("/etc/resolv.conf"))
        };
        // Without network, a new namespace (only `lo`) and the image's resolv.conf.
        assert_eq!(network_namespace(&spec), Some(None));
        assert!(!resolv_conf(&spec));
        let networked = super::spec(
            "c1",
            &bundle,
            Path::new("/init"),
            &process,
            &resources,
            false,
            Some(&Network {
                netns: "/proc/1/fd/9".into(),
                resolv_conf: dir.path().join("resolv.conf"),
            }),
        )
        .unwrap();
        assert_eq!(
            network_namespace(&networked),
            Some(Some("/proc/1/fd/9".into()))
        );
        assert!(resolv_conf(&networked));
        let quota = |spec: &Spec| {
            let linux = spec.linux().as_ref().unwrap();
            let cpu = linux.resources().as_ref().unwrap().cpu().as_ref().unwrap();
            (
                cpu.quota(),
                cpu.cpus().clone(),
                linux.cgroups_path().clone(),
            )
        };
        let (before_quota, ..) = quota(&spec);
        place(
            &mut spec,
            "c1",
            &Placement {
                cpus: vec![1, 2, 3],
                cgroup: Some("/sys/fs/cgroup/cpuset/bencher-runner".into()),
                oci_parent: None,
            },
        );
        let (after_quota, cpus, path) = quota(&spec);
        assert_eq!(after_quota, before_quota, "the quota stays the Spec's");
        assert_eq!(cpus.as_deref(), Some("1-3"));
        assert_eq!(path, Some("/bencher/c1".into()));
        place(
            &mut spec,
            "c1",
            &Placement {
                cpus: vec![2],
                cgroup: Some("/sys/fs/cgroup/bencher-runner".into()),
                oci_parent: Some("/bencher-runner".to_owned()),
            },
        );
        let (_, cpus, path) = quota(&spec);
        assert_eq!(cpus.as_deref(), Some("2"));
        assert_eq!(path, Some("/bencher-runner/c1".into()));
    }
}
