//! Bringing the guest up before the job: the pseudo filesystems, the kernel modules
//! from the initramfs, and the two disks (found by their virtio serial, never by name
//! order). IO: mounts, `finit_module`, `/sys/block`.

use std::ffi::{CStr, CString};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bencher_types::guest::{GUEST_MODULES_PATH, GuestDisks, GuestNetwork};

/// How long the disks may take to appear after their driver loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(10);
/// The image's root filesystem, read-only.
pub const LOWER: &str = "/mnt/lower";
/// The scratch disk: the writable layers live here, one directory per iteration.
pub const SCRATCH: &str = "/mnt/scratch";

/// Where the disks are mounted.
pub struct Disks {
    pub lower: PathBuf,
    pub scratch: PathBuf,
}

pub fn mount_basics() -> Result<(), String> {
    for (source, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ] {
        fs::create_dir_all(target).map_err(|e| format!("cannot create {target}: {e}"))?;
        mount(source, target, fstype, 0, None)
            .map_err(|e| format!("cannot mount {fstype} on {target}: {e}"))?;
    }
    Ok(())
}

/// Brings the loopback interface up: benchmarks talk to servers they start on
/// localhost, with or without network.
pub fn loopback_up() -> Result<(), String> {
    // SAFETY: an ioctl on a fresh socket with a zeroed, NUL-terminated `ifreq`.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(format!(
                "cannot open a socket to configure lo: {}",
                io::Error::last_os_error()
            ));
        }
        let mut request: libc::ifreq = std::mem::zeroed();
        request.ifr_name[0] = b'l' as libc::c_char;
        request.ifr_name[1] = b'o' as libc::c_char;
        request.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        let done = libc::ioctl(socket, libc::SIOCSIFFLAGS, &raw mut request);
        let error = io::Error::last_os_error();
        libc::close(socket);
        if done != 0 {
            return Err(format!("cannot bring lo up: {error}"));
        }
    }
    Ok(())
}

/// `struct rtentry` of `<linux/route.h>` (the `SIOCADDRT` argument), which the libc
/// crate has only for musl.
#[repr(C)]
struct RouteEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_tos: libc::c_uchar,
    rt_class: libc::c_uchar,
    rt_pad4: [libc::c_short; 3],
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// An IPv4 address as the `sockaddr` ioctls take.
fn sockaddr(address: std::net::Ipv4Addr) -> libc::sockaddr {
    // SAFETY: an all-zero sockaddr_in is valid; it has the size of a sockaddr.
    unsafe {
        let mut inet: libc::sockaddr_in = std::mem::zeroed();
        inet.sin_family = libc::AF_INET as libc::sa_family_t;
        inet.sin_addr.s_addr = u32::from(address).to_be();
        std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet)
    }
}

/// Configures the guest's one network device (the first interface that is not the
/// loopback, waited for like the disks): `network.address`, up, and a default route
/// through `network.gateway`.
pub fn network_up(network: &GuestNetwork) -> Result<(), String> {
    let started = Instant::now();
    let name = loop {
        let found = fs::read_dir("/sys/class/net")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name != "lo")
            .min();
        if let Some(name) = found {
            break name;
        }
        if started.elapsed() > DEVICE_WAIT {
            return Err(format!(
                "the Spec allows network, and no network device appeared within {DEVICE_WAIT:?}"
            ));
        }
        // Only while the guest boots, before the benchmark runs.
        std::thread::sleep(Duration::from_millis(10));
    };
    if name.len() >= libc::IFNAMSIZ {
        return Err(format!("the network device name {name} is too long"));
    }
    // SAFETY: ioctls on a fresh socket with zeroed, NUL-terminated requests built here.
    unsafe {
        let socket = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if socket < 0 {
            return Err(format!(
                "cannot open a socket to configure {name}: {}",
                io::Error::last_os_error()
            ));
        }
        let socket = <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(socket);
        let request = || {
            let mut request: libc::ifreq = std::mem::zeroed();
            for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
                *slot = byte as libc::c_char;
            }
            request
        };
        let ioctl = |what: &str, code: libc::c_ulong, arg: *mut libc::c_void| {
            if libc::ioctl(socket.as_raw_fd(), code, arg) != 0 {
                return Err(format!(
                    "cannot {what} of {name}: {}",
                    io::Error::last_os_error()
                ));
            }
            Ok(())
        };
        let mut address = request();
        address.ifr_ifru.ifru_addr = sockaddr(network.address);
        ioctl(
            "set the address",
            libc::SIOCSIFADDR,
            (&raw mut address).cast(),
        )?;
        let mut netmask = request();
        netmask.ifr_ifru.ifru_netmask = sockaddr(network.netmask());
        ioctl(
            "set the netmask",
            libc::SIOCSIFNETMASK,
            (&raw mut netmask).cast(),
        )?;
        let mut flags = request();
        ioctl(
            "read the flags",
            libc::SIOCGIFFLAGS,
            (&raw mut flags).cast(),
        )?;
        // The device's own flags (broadcast, multicast) stay as they are.
        flags.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        ioctl("bring up", libc::SIOCSIFFLAGS, (&raw mut flags).cast())?;
        let mut route: RouteEntry = std::mem::zeroed();
        route.rt_dst = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
        route.rt_genmask = sockaddr(std::net::Ipv4Addr::UNSPECIFIED);
        route.rt_gateway = sockaddr(network.gateway);
        route.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
        ioctl(
            "add the default route",
            libc::SIOCADDRT,
            (&raw mut route).cast(),
        )?;
    }
    Ok(())
}

/// Loads the modules listed in the initramfs, in order, each with its parameters from
/// the kernel command line (`virtio_mmio.device=…`, which Firecracker describes its
/// devices with, must reach a modular `virtio_mmio`; `modprobe` would do the same). A
/// module the kernel already has (built in, or loaded) is fine.
pub fn load_modules() -> Result<(), String> {
    let list = match fs::read_to_string(GUEST_MODULES_PATH) {
        Ok(list) => list,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {GUEST_MODULES_PATH}: {e}")),
    };
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    for module in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let file = File::open(module).map_err(|e| format!("cannot open module {module}: {e}"))?;
        let name = module_name(module);
        let params = CString::new(module_params(&cmdline, &name))
            .map_err(|_| format!("the kernel command line's parameters for {name} hold a NUL"))?;
        // SAFETY: finit_module with an open fd and a NUL-terminated parameter string
        // that outlives the call.
        let loaded = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                params.as_ptr(),
                0 as libc::c_int,
            )
        };
        if loaded != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("cannot load kernel module {module}: {error}"));
            }
        }
    }
    Ok(())
}

/// The module's name from its initramfs path, `/lib/bencher-modules/NN-name.ko`
/// (numbered by the runner in load order).
pub fn module_name(path: &str) -> String {
    let file = Path::new(path)
        .file_name()
        .unwrap_or_default()
        .to_string_lossy();
    let stem = file.split('.').next().unwrap_or_default();
    match stem.split_once('-') {
        Some((number, name))
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name.to_owned()
        }
        _ => stem.to_owned(),
    }
}

/// The `module.param=value` words of a kernel command line for `module`, as the
/// `param=value …` string `finit_module` takes (`-` and `_` are the same in module
/// names, as for the kernel).
pub fn module_params(cmdline: &str, module: &str) -> String {
    let normal = |name: &str| name.replace('-', "_");
    let module = normal(module);
    cmdline
        .split_whitespace()
        .filter_map(|word| {
            let (name, param) = word.split_once('.')?;
            (normal(name) == module && param.contains('=')).then_some(param)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn mount_disks(serials: &GuestDisks) -> Result<Disks, String> {
    let root = find_disk(&serials.root)?;
    let scratch = find_disk(&serials.scratch)?;
    for dir in [LOWER, SCRATCH] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
    }
    mount(
        &root.to_string_lossy(),
        LOWER,
        "ext4",
        libc::MS_RDONLY,
        Some(c"noload"),
    )
    .map_err(|e| format!("cannot mount the image disk {}: {e}", root.display()))?;
    // `noinit_itable`: no kernel thread initialising inode tables during the benchmark.
    mount(
        &scratch.to_string_lossy(),
        SCRATCH,
        "ext4",
        0,
        Some(c"noinit_itable"),
    )
    .map_err(|e| format!("cannot mount the scratch disk {}: {e}", scratch.display()))?;
    Ok(Disks {
        lower: LOWER.into(),
        scratch: SCRATCH.into(),
    })
}

/// The device node of the virtio disk whose serial is `serial`.
fn find_disk(serial: &str) -> Result<PathBuf, String> {
    let started = Instant::now();
    loop {
        for entry in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with("vd") {
                continue;
            }
            let found = fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
            let device = Path::new("/dev").join(&name);
            if found.trim_end() == serial && device.exists() {
                return Ok(device);
            }
        }
        if started.elapsed() > DEVICE_WAIT {
            return Err(format!(
                "no virtio disk with serial `{serial}` appeared within {DEVICE_WAIT:?}"
            ));
        }
        // Only while the guest boots, before the benchmark runs.
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let source = CString::new(source)?;
    let target = CString::new(target)?;
    let fstype = CString::new(fstype)?;
    // SAFETY: NUL-terminated strings that outlive the call.
    let mounted = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if mounted != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{module_name, module_params};

    #[test]
    fn module_names_drop_the_load_order_number() {
        assert_eq!(
            module_name("/lib/bencher-modules/00-virtio_mmio.ko"),
            "virtio_mmio"
        );
        assert_eq!(
            module_name("/lib/bencher-modules/12-crc32c-generic.ko"),
            "crc32c-generic"
        );
        assert_eq!(module_name("/lib/bencher-modules/03-ext4.ko.xz"), "ext4");
        assert_eq!(module_name("/lib/virtio_blk.ko"), "virtio_blk");
    }

    #[test]
    fn module_parameters_come_from_the_command_line() {
        let cmdline = "console=ttyS0 reboot=k virtio_mmio.device=4K@0xd0000000:5 \
                       virtio-mmio.device=4K@0xd0001000:6 virtio_mmio_x.y=1 ext4.z virtio_blk.q=2";
        assert_eq!(
            module_params(cmdline, "virtio_mmio"),
            "device=4K@0xd0000000:5 device=4K@0xd0001000:6"
        );
        assert_eq!(module_params(cmdline, "virtio_blk"), "q=2");
        assert_eq!(module_params(cmdline, "ext4"), "");
        assert_eq!(module_params("", "virtio_mmio"), "");
    }
}
