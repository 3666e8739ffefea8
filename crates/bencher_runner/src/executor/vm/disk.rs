//! The guest's disks: the image's root filesystem as a read-only ext4 image built with
//! `mkfs.ext4 -d` (no mount needed), cached beside the image's cached root filesystem
//! (so the image cache's eviction removes it with the tree), and a fresh sparse scratch
//! disk per job for the writable layers. IO: walks the root filesystem, runs
//! `mkfs.ext4`, writes the disk files.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Bumped when the root disk's layout or options change, so cached ones are rebuilt.
const ROOT_DISK_FORMAT: u32 = 1;
const MIB: u64 = 1 << 20;

/// The cached root disk of `rootfs` (built if missing): `<rootfs>/../vm-root-v<N>-<MiB>.ext4`.
/// A root filesystem's content never changes once cached, so its size names the disk.
pub(super) fn root_disk(rootfs: &Path) -> Result<PathBuf, String> {
    let (bytes, entries) =
        usage(rootfs).map_err(|e| format!("cannot measure {}: {e}", rootfs.display()))?;
    // Room for ext4's metadata and an inode (and a block) per entry, with slack.
    let size = ((bytes + entries * 4096) * 5 / 4 + 64 * MIB).div_ceil(MIB) * MIB;
    let inodes = entries * 2 + 1024;
    let parent = rootfs
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", rootfs.display()))?;
    let disk = parent.join(format!("vm-root-v{ROOT_DISK_FORMAT}-{}.ext4", size / MIB));
    if disk.is_file() {
        return Ok(disk);
    }
    let building = tempfile::Builder::new()
        .prefix(".vm-root-")
        .tempfile_in(parent)
        .map_err(|e| format!("cannot create a file in {}: {e}", parent.display()))?;
    building
        .as_file()
        .set_len(size)
        .map_err(|e| format!("cannot size the root disk: {e}"))?;
    mkfs(
        building.path(),
        &[
            "-d",
            &rootfs.to_string_lossy(),
            "-N",
            &inodes.to_string(),
            "-L",
            "bencher-root",
        ],
    )?;
    building
        .persist(&disk)
        .map_err(|e| format!("cannot publish {}: {e}", disk.display()))?;
    Ok(disk)
}

/// A sparse, empty ext4 scratch disk of `size` bytes at `path`. Without a journal (its
/// contents die with the job) and with lazily initialised inode tables, so building it
/// writes a few MiB whatever its size; the guest mounts it with `noinit_itable`, so no
/// kernel thread finishes that work during the benchmark.
pub(in crate::executor) fn scratch_disk(path: &Path, size: u64) -> Result<(), String> {
    let file =
        fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.set_len(size.max(64 * MIB))
        .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
    drop(file);
    mkfs(
        path,
        &[
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1",
            "-m",
            "0",
            "-L",
            "bencher-scratch",
        ],
    )
}

fn mkfs(image: &Path, options: &[&str]) -> Result<(), String> {
    let output = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .args(options)
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run mkfs.ext4 (install e2fsprogs): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mkfs.ext4 failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Bytes allocated and entries in a tree, not following symlinks.
fn usage(root: &Path) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut entries) = (0, 0);
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            entries += 1;
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok((bytes, entries))
}

/// Whether `mkfs.ext4` is installed, for the sandbox check.
pub(super) fn check_mkfs() -> Result<(), String> {
    match Command::new("mkfs.ext4").arg("-V").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!("`mkfs.ext4 -V` failed ({})", output.status)),
        Err(e) => Err(format!(
            "VM sandboxes build disks with mkfs.ext4, which cannot run ({e}); install e2fsprogs"
        )),
    }
}
