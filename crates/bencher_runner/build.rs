//! Builds `oci-init/main.rs` into a static executable, `$OUT_DIR/bencher-oci-init`,
//! which the executor embeds and bind-mounts into containers as their init (see that
//! file). Static, so it runs in any image whatever libc the image has (or none).
//! IO: runs `rustc` (the one building this crate) on that one file.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "oci-init/main.rs";
    println!("cargo::rerun-if-changed={source}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = std::env::var("TARGET").expect("cargo sets TARGET");
    let status = Command::new(rustc)
        .args(["--edition", "2024", "--crate-type", "bin", "--crate-name"])
        .arg("bencher_oci_init")
        .args([
            "-C",
            "opt-level=2",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
        ])
        // glibc's static libc.a (Debian: libc6-dev, which linking any Rust binary needs).
        .args(["-C", "target-feature=+crt-static", "--target", &target])
        .arg("-o")
        .arg(out.join("bencher-oci-init"))
        .arg(source)
        .status()
        .expect("cannot run rustc to build the container init");
    assert!(
        status.success(),
        "building the container init ({source}) failed"
    );
}
