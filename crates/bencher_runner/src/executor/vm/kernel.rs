//! The guest's kernel and base initramfs: the kernel from `BENCHER_VM_KERNEL` or the
//! newest installed distribution kernel (`/boot/vmlinuz-*` with `/lib/modules/<ver>`),
//! its uncompressed `vmlinux` (booted directly: its PVH entry skips the decompressor,
//! and Firecracker needs it anyway), and an initramfs holding `bencher-init` as `/init`
//! and the kernel modules the guest needs, in load order. Both are cached under the VM
//! cache by kernel identity and init version. IO: reads `/boot`, `/lib/modules`, runs
//! `xz`, writes the cache.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bencher_types::guest::GUEST_MODULES_PATH;
use sha2::{Digest, Sha256};

use super::cpio::NewcWriter;

/// The drivers the guest needs when the kernel has them as modules: virtio over MMIO,
/// block, ext4 (with `crc32c`, which `mkfs.ext4`'s metadata checksums need but ext4 does
/// not declare), overlayfs, the virtio-serial console and virtio vsock. Their
/// dependencies come from `modules.dep`, loaded first.
const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
    "overlay",
    "virtio_console",
    "vmw_vsock_virtio_transport",
];
/// Added when the Spec allows network.
pub(super) const NETWORK_MODULES: &[&str] = &["virtio_net"];
/// Bumped when the initramfs layout changes, so cached ones are rebuilt.
const INITRAMFS_FORMAT: u32 = 1;
/// The XZ stream magic inside a bzImage.
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ELF_MAGIC: &[u8] = b"\x7fELF";

/// A kernel found on the host.
#[derive(Debug, Clone)]
pub(super) struct KernelSource {
    /// A bzImage (XZ) or an uncompressed ELF vmlinux.
    pub image: PathBuf,
    pub version: String,
    /// `/lib/modules/<version>`, when the kernel has modules.
    pub modules: Option<PathBuf>,
}

/// What a VM boots.
#[derive(Debug, Clone)]
pub(super) struct PreparedKernel {
    pub vmlinux: PathBuf,
    /// `bencher-init` as `/init` and the modules; a job's config is appended.
    pub initramfs: PathBuf,
}

impl KernelSource {
    /// `BENCHER_VM_KERNEL` (with `BENCHER_VM_MODULES`, else `/lib/modules/<version>` when
    /// the file is named `vmlinuz-<version>`), else the newest `/boot/vmlinuz-*` whose
    /// modules are installed.
    pub(super) fn find() -> Result<KernelSource, String> {
        if let Some(image) = std::env::var_os("BENCHER_VM_KERNEL") {
            let image = PathBuf::from(image);
            if !image.is_file() {
                return Err(format!(
                    "BENCHER_VM_KERNEL={} is not a file",
                    image.display()
                ));
            }
            let name = image.file_name().unwrap_or_default().to_string_lossy();
            let version = name
                .strip_prefix("vmlinuz-")
                .or_else(|| name.strip_prefix("vmlinux-"))
                .unwrap_or(&name)
                .to_owned();
            let modules = match std::env::var_os("BENCHER_VM_MODULES") {
                Some(dir) => Some(PathBuf::from(dir)),
                None => Some(Path::new("/lib/modules").join(&version)).filter(|d| d.is_dir()),
            };
            return Ok(KernelSource {
                image,
                version,
                modules,
            });
        }
        let mut found: Vec<(String, PathBuf)> = fs::read_dir("/boot")
            .map_err(|e| format!("cannot list /boot for a kernel: {e}"))?
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let version = name.strip_prefix("vmlinuz-")?.to_owned();
                Path::new("/lib/modules")
                    .join(&version)
                    .is_dir()
                    .then(|| (version, entry.path()))
            })
            .collect();
        found.sort_by_key(|(version, _)| version_key(version));
        let Some((version, image)) = found.pop() else {
            return Err(
                "no kernel for VMs: set BENCHER_VM_KERNEL, or install a distribution \
                        kernel (/boot/vmlinuz-* with /lib/modules; Debian: linux-image-amd64)"
                    .to_owned(),
            );
        };
        Ok(KernelSource {
            modules: Some(Path::new("/lib/modules").join(&version)),
            image,
            version,
        })
    }

    /// The vmlinux and base initramfs, from the cache or built into it.
    pub(super) fn prepare(
        &self,
        init: &Path,
        cache: &Path,
        network: bool,
    ) -> Result<PreparedKernel, String> {
        let init_bytes =
            fs::read(init).map_err(|e| format!("cannot read {}: {e}", init.display()))?;
        let image_meta = fs::metadata(&self.image)
            .map_err(|e| format!("cannot read {}: {e}", self.image.display()))?;
        // The kernel by path, size and mtime (a package upgrade changes them), the init
        // by content, and what goes into the initramfs.
        let mut key = Sha256::new();
        key.update(self.image.as_os_str().as_encoded_bytes());
        key.update(image_meta.len().to_le_bytes());
        key.update(format!("{:?}", image_meta.modified().ok()).as_bytes());
        key.update(Sha256::digest(&init_bytes));
        key.update(INITRAMFS_FORMAT.to_le_bytes());
        key.update([u8::from(network)]);
        let key: String = key
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        let dir = cache
            .join("kernel")
            .join(format!("{}-{key}", self.version.replace('/', "_")));
        let prepared = PreparedKernel {
            vmlinux: dir.join("vmlinux"),
            initramfs: dir.join("initramfs.cpio"),
        };
        if prepared.vmlinux.is_file() && prepared.initramfs.is_file() {
            return Ok(prepared);
        }
        let parent = cache.join("kernel");
        fs::create_dir_all(&parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        let building = tempfile::Builder::new()
            .prefix(".building-")
            .tempdir_in(&parent)
            .map_err(|e| format!("cannot create a directory in {}: {e}", parent.display()))?;
        extract_vmlinux(&self.image, &building.path().join("vmlinux"))?;
        let modules = match &self.modules {
            Some(dir) => resolve_modules(dir, network)?,
            None => Vec::new(),
        };
        write_initramfs(
            &building.path().join("initramfs.cpio"),
            &init_bytes,
            &modules,
        )
        .map_err(|e| format!("cannot write the initramfs: {e}"))?;
        match fs::rename(building.path(), &dir) {
            Ok(()) => {
                let _ = building.keep();
            }
            // Another job built it first; theirs is as good.
            Err(_) if prepared.vmlinux.is_file() && prepared.initramfs.is_file() => {}
            Err(e) => return Err(format!("cannot publish {}: {e}", dir.display())),
        }
        Ok(prepared)
    }
}

/// Orders `6.1.0-48-amd64` after `6.1.0-9-amd64`: numbers compare as numbers.
fn version_key(version: &str) -> Vec<(u64, String)> {
    version
        .split(['.', '-', '+', '_'])
        .map(|part| (part.parse().unwrap_or(0), part.to_owned()))
        .collect()
}

/// Writes the uncompressed ELF kernel: the file itself if it is one, else the XZ
/// payload of a bzImage decompressed by `xz` (which stops at the end of the first
/// stream; the bytes after it are the bzImage's trailer).
fn extract_vmlinux(image: &Path, vmlinux: &Path) -> Result<(), String> {
    let bytes = fs::read(image).map_err(|e| format!("cannot read {}: {e}", image.display()))?;
    if bytes.starts_with(ELF_MAGIC) {
        return fs::write(vmlinux, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", vmlinux.display()));
    }
    let Some(start) = bytes.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) else {
        return Err(format!(
            "{} is neither an ELF vmlinux nor an XZ-compressed bzImage; set BENCHER_VM_KERNEL \
             to an uncompressed vmlinux",
            image.display()
        ));
    };
    let output = fs::File::create(vmlinux)
        .map_err(|e| format!("cannot create {}: {e}", vmlinux.display()))?;
    let mut xz = Command::new("xz")
        .args(["--decompress", "--stdout", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(output)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run `xz` to decompress the kernel (install xz-utils): {e}"))?;
    let mut stdin = xz.stdin.take().ok_or("xz has no stdin")?;
    let writer = std::thread::spawn(move || stdin.write_all(&bytes[start..]));
    let finished = xz
        .wait_with_output()
        .map_err(|e| format!("xz failed: {e}"))?;
    // xz may stop reading at the stream's end, so a broken pipe here is expected.
    let _ = writer.join();
    if !finished.status.success() {
        return Err(format!(
            "xz could not decompress {}: {}",
            image.display(),
            String::from_utf8_lossy(&finished.stderr).trim()
        ));
    }
    let head = fs::read(vmlinux)
        .map(|b| b.starts_with(ELF_MAGIC))
        .unwrap_or(false);
    if !head {
        return Err(format!(
            "the XZ payload of {} is not an ELF kernel",
            image.display()
        ));
    }
    Ok(())
}

/// The module files to load, dependencies first, from `modules.dep`; modules built
/// into the kernel (`modules.builtin`) are skipped.
fn resolve_modules(dir: &Path, network: bool) -> Result<Vec<PathBuf>, String> {
    let dep_file = dir.join("modules.dep");
    let index = ModuleIndex {
        deps: fs::read_to_string(&dep_file)
            .map_err(|e| format!("cannot read {}: {e}", dep_file.display()))?,
        builtin: fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default(),
    };
    let mut order = ModuleOrder::default();
    let wanted = GUEST_MODULES
        .iter()
        .chain(if network { NETWORK_MODULES } else { &[] });
    for name in wanted {
        order.add(&index, name, 0)?;
    }
    Ok(order.paths.into_iter().map(|path| dir.join(path)).collect())
}

/// `modules.dep` and `modules.builtin` of one kernel.
struct ModuleIndex {
    deps: String,
    builtin: String,
}

impl ModuleIndex {
    /// `kernel/fs/ext4/ext4.ko` → `ext4`; dashes and underscores are one to the kernel.
    fn name_of(path: &str) -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        file.strip_suffix(".ko").unwrap_or(file).replace('-', "_")
    }

    /// The module's path and the paths of everything it needs.
    fn lookup(&self, name: &str) -> Option<(String, Vec<String>)> {
        self.deps.lines().find_map(|line| {
            let (module, needs) = line.split_once(':')?;
            (Self::name_of(module) == name).then(|| {
                (
                    module.to_owned(),
                    needs.split_whitespace().map(str::to_owned).collect(),
                )
            })
        })
    }

    fn is_builtin(&self, name: &str) -> bool {
        self.builtin
            .lines()
            .any(|line| Self::name_of(line.trim()) == name)
    }
}

#[derive(Default)]
struct ModuleOrder {
    seen: BTreeSet<String>,
    paths: Vec<String>,
}

impl ModuleOrder {
    /// Depth-first: a module's dependencies before it, each once.
    fn add(&mut self, index: &ModuleIndex, name: &str, depth: u32) -> Result<(), String> {
        if depth > 32 || !self.seen.insert(name.to_owned()) {
            return Ok(());
        }
        let Some((path, needs)) = index.lookup(name) else {
            if index.is_builtin(name) {
                return Ok(());
            }
            return Err(format!(
                "the guest kernel has no module `{name}` (not in modules.dep or modules.builtin)"
            ));
        };
        if !path.ends_with(".ko") {
            return Err(format!(
                "module {path} is compressed; the guest loads only uncompressed .ko files"
            ));
        }
        for need in &needs {
            self.add(index, &ModuleIndex::name_of(need), depth + 1)?;
        }
        self.paths.push(path);
        Ok(())
    }
}

/// `/init`, `/bencher/modules` (the load order) and `/lib/bencher-modules/*.ko`.
fn write_initramfs(path: &Path, init: &[u8], modules: &[PathBuf]) -> io::Result<()> {
    let mut cpio = NewcWriter::new(io::BufWriter::new(fs::File::create(path)?));
    cpio.directory("bencher", 0o755)?;
    cpio.directory("lib", 0o755)?;
    cpio.directory("lib/bencher-modules", 0o755)?;
    cpio.file("init", 0o755, init)?;
    let mut list = String::new();
    for (index, module) in modules.iter().enumerate() {
        let name = module.file_name().unwrap_or_default().to_string_lossy();
        // Numbered: two modules of one name in different directories stay apart.
        let inside = format!("lib/bencher-modules/{index:02}-{name}");
        cpio.file(&inside, 0o644, &fs::read(module)?)?;
        list.push_str(&format!("/{inside}\n"));
    }
    let list_path = GUEST_MODULES_PATH.trim_start_matches('/');
    cpio.file(list_path, 0o644, list.as_bytes())?;
    let mut out = cpio.finish()?;
    out.flush()?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut versions = vec!["6.1.0-9-amd64", "6.1.0-48-amd64", "5.10.0-30-amd64"];
        versions.sort_by_key(|v| version_key(v));
        assert_eq!(
            versions,
            ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-48-amd64"]
        );
    }

    #[test]
    fn modules_come_after_their_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/a/virtio_mmio.ko: kernel/a/virtio_ring.ko kernel/a/virtio.ko\n\
             kernel/a/virtio_ring.ko:\nkernel/a/virtio.ko: kernel/a/virtio_ring.ko\n\
             kernel/b/virtio_blk.ko: kernel/a/virtio_ring.ko kernel/a/virtio.ko\n\
             kernel/c/ext4.ko: kernel/c/jbd2.ko\nkernel/c/jbd2.ko:\n\
             kernel/d/overlay.ko:\nkernel/e/virtio_console.ko:\n\
             kernel/f/vmw_vsock_virtio_transport.ko:\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/crypto/crc32c_generic.ko\n",
        )
        .unwrap();
        let order: Vec<String> = resolve_modules(dir.path(), false)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            order,
            [
                "kernel/a/virtio_ring.ko",
                "kernel/a/virtio.ko",
                "kernel/a/virtio_mmio.ko",
                "kernel/b/virtio_blk.ko",
                "kernel/c/jbd2.ko",
                "kernel/c/ext4.ko",
                "kernel/d/overlay.ko",
                "kernel/e/virtio_console.ko",
                "kernel/f/vmw_vsock_virtio_transport.ko",
            ]
        );
        // A module neither a file nor built in is an error naming it.
        let error = resolve_modules(dir.path(), true).unwrap_err();
        assert!(error.contains("`virtio_net`"), "{error}");
    }
}
