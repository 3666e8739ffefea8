//! A job's writable scratch: a sparse ext4 image of the Spec's disk size, attached to
//! a loop device and mounted under the bundles directory
//! (`bundles/bencher-<runner pid>-<random>-scratch/scratch`); each iteration's overlay
//! upper and work directories are a directory of it, deleted when the iteration's
//! bundle is removed, so everything the job writes to its root is bounded by the
//! Spec's disk, a job writing forever gets ENOSPC inside its container, and the host's
//! disk keeps its free space. IO: creates and unlinks the image file, runs
//! `mkfs.ext4`, `/dev/loop-control` and `/dev/loopN` ioctls, mounts.
//!
//! Why this design:
//! - An image file works on any host filesystem; XFS project quotas would need XFS
//!   under `$TMPDIR`, and a tmpfs with `size=` is memory, wrong for large disks.
//! - Sparse and journal-less, with lazily initialised inode tables (the VM sandbox's
//!   scratch disk, built by the same function): `mkfs.ext4` writes a few MiB whatever
//!   the size. Mounted with `noinit_itable`, so no kernel thread zeroes inode tables
//!   during the benchmark (the sparse file reads as zeros anyway).
//! - Once per job, not per iteration, as the VM sandbox does: `mkfs`, mount and the
//!   unmount's flush cost 10–15 ms on an idle host and several times that on a busy
//!   one, per iteration, while a directory per iteration costs what the old upper
//!   directory on the host's disk cost. Iterations still see nothing of each other:
//!   each has its own directory, deleted (its blocks freed) before the next starts.
//! - The loop device is attached with `LOOP_CONFIGURE` directly (no `losetup`
//!   process) and `LO_FLAGS_AUTOCLEAR`, and the image is unlinked as soon as it is
//!   attached: the loop device holds the only reference, the kernel detaches it when
//!   the filesystem is unmounted, and the image's blocks go with it. Nothing on disk
//!   has a name to leak; a crashed runner's leftovers need only the unmount that the
//!   next `check` does (see `state`).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

use crate::executor::vm::disk::scratch_disk;

/// `LOOP_CTL_GET_FREE`, `LOOP_CONFIGURE` and `LO_FLAGS_AUTOCLEAR` of `linux/loop.h`
/// (libc has none of them). `LOOP_CONFIGURE` needs Linux 5.8.
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// How often a free loop device may be taken by another process between
/// `LOOP_CTL_GET_FREE` and `LOOP_CONFIGURE` before giving up.
const ATTEMPTS: u32 = 16;

/// `struct loop_info64` of `linux/loop.h`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of `linux/loop.h`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

// The kernel's sizes: a mistake here would make the ioctl read the wrong bytes.
const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// Creating a scratch filesystem failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ScratchError {
    #[error("cannot create the job's scratch disk: {0}")]
    Image(String),
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot get a free loop device from /dev/loop-control: {0}")]
    FreeLoop(io::Error),
    #[error("cannot attach the scratch disk to {} (loop devices need Linux 5.8 or later): {source}", device.display())]
    Attach { device: PathBuf, source: io::Error },
    #[error("every free loop device was taken by another process ({ATTEMPTS} attempts)")]
    Busy,
    #[error("cannot unlink the attached scratch image {}: {source}", path.display())]
    Unlink { path: PathBuf, source: io::Error },
    #[error("cannot mount the scratch disk {} on {}: {source}", device.display(), target.display())]
    Mount {
        device: PathBuf,
        target: PathBuf,
        source: io::Error,
    },
}

/// A job's scratch filesystem, mounted at `mount`; [`JobScratch::remove`] unmounts it
/// and deletes its directory, and dropping it unremoved does so on a thread of its own.
pub(super) struct JobScratch {
    dir: PathBuf,
    pub mount: PathBuf,
    removed: bool,
}

impl JobScratch {
    /// Creates `dir` (0700) with a scratch filesystem of `size` bytes mounted on
    /// `dir/scratch`. On error nothing stays mounted and `dir` is gone. Blocking.
    pub(super) fn create(dir: PathBuf, size: u64) -> Result<JobScratch, String> {
        use std::os::unix::fs::PermissionsExt;
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut scratch = JobScratch {
            mount: dir.join("scratch"),
            dir,
            removed: false,
        };
        let created = fs::set_permissions(&scratch.dir, fs::Permissions::from_mode(0o700))
            .and_then(|()| fs::create_dir(&scratch.mount))
            .map_err(|e| format!("cannot create {}: {e}", scratch.mount.display()))
            .and_then(|()| {
                create(&scratch.dir.join("scratch.img"), size, &scratch.mount)
                    .map_err(|e| e.to_string())
            });
        match created {
            Ok(()) => Ok(scratch),
            Err(error) => {
                scratch.remove();
                Err(error)
            }
        }
    }

    /// Unmounts (lazily: an iteration's overlay still above it keeps it alive until it
    /// goes too) and deletes the directory. Idempotent. Blocking.
    pub(super) fn remove(&mut self) {
        if !self.removed {
            super::bundle::remove_leftover(&self.dir);
            self.removed = true;
        }
    }
}

impl Drop for JobScratch {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        self.removed = true;
        let dir = self.dir.clone();
        let _ = std::thread::Builder::new()
            .name("bencher-scratch-cleanup".to_owned())
            .spawn(move || super::bundle::remove_leftover(&dir));
    }
}

/// Builds a sparse ext4 image of `size` bytes at `image` (at least 64 MiB: ext4's
/// practical minimum, as for the VM's scratch disk), attaches it to a loop device,
/// unlinks it and mounts it on `target` (an existing empty directory). On error,
/// nothing stays attached or mounted; `image` may remain, inside the bundle that is
/// removed with it. Blocking.
fn create(image: &Path, size: u64, target: &Path) -> Result<(), ScratchError> {
    scratch_disk(image, size).map_err(ScratchError::Image)?;
    let device = attach(image)?;
    // Attached with autoclear: from here the loop device owns the image's blocks.
    fs::remove_file(image).map_err(|source| ScratchError::Unlink {
        path: image.to_owned(),
        source,
    })?;
    mount(
        &device.path,
        target,
        c"ext4",
        MountFlags::empty(),
        Some(c"noinit_itable"),
    )
    .map_err(|e| ScratchError::Mount {
        device: device.path.clone(),
        target: target.to_owned(),
        source: e.into(),
    })?;
    // Closing our fd leaves the mount as the device's only user: its unmount detaches
    // it (and an unmounted device is detached by this close).
    drop(device);
    Ok(())
}

/// Unmounts a scratch filesystem lazily; the loop device detaches itself once the
/// overlay above it is gone too. Not mounted is fine.
pub(super) fn unmount_lazily(target: &Path) {
    match unmount(target, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOENT) => {}
        Err(error) => {
            tracing::warn!(path = %target.display(), %error, "cannot unmount a job's scratch disk");
        }
    }
}

/// An attached loop device, open.
struct Device {
    path: PathBuf,
    _file: File,
}

/// Attaches `image` to a free loop device with autoclear.
fn attach(image: &Path) -> Result<Device, ScratchError> {
    let open_rw = |path: &Path| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| ScratchError::Open {
                path: path.to_owned(),
                source,
            })
    };
    let backing = open_rw(image)?;
    let control = open_rw(Path::new("/dev/loop-control"))?;
    for _ in 0..ATTEMPTS {
        // SAFETY: an ioctl without argument on an fd we own.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(ScratchError::FreeLoop(io::Error::last_os_error()));
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let file = open_rw(&path)?;
        let config = LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).unwrap_or(u32::MAX),
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `config` is (its
        // size is asserted above) and which outlives the call.
        let result = unsafe { libc::ioctl(file.as_raw_fd(), LOOP_CONFIGURE, &raw const config) };
        if result == 0 {
            return Ok(Device { path, _file: file });
        }
        let error = io::Error::last_os_error();
        // Another process attached it first: ask for the next free one.
        if error.raw_os_error() != Some(libc::EBUSY) {
            return Err(ScratchError::Attach {
                device: path,
                source: error,
            });
        }
    }
    Err(ScratchError::Busy)
}
