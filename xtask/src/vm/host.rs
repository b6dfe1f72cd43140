//! The host's Debian packages: what `vm-test` runs on the host, checked with
//! dpkg and installed with apt-get (after `apt-get update`) when missing.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bootstrap::run;

/// Each package the host needs, and why.
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "boots the guest kernels"),
    ("busybox-static", "the guest's shell and tools"),
    ("cpio", "packs the initramfs"),
    ("kmod", "depmod: the order to load the guest's modules in"),
    ("xz-utils", "unpacks compressed kernel modules"),
    ("zstd", "unpacks compressed kernel modules"),
    ("binutils", "strip: smaller test binaries in the guest"),
    (
        "iproute2",
        "`ip`, copied into the guest for the test harness",
    ),
    (
        "bash",
        "copied into the guest (a harness test runs a bash script)",
    ),
    ("coreutils", "readlink, copied into the guest"),
    ("util-linux", "setpriv, copied into the guest"),
];

/// Refresh apt's package lists (the kernel lookups need them), then install
/// the packages of [`PACKAGES`] that are missing, saying which and why.
pub fn ensure_packages() -> Result<()> {
    apt_update();
    let missing: Vec<&(&str, &str)> = PACKAGES.iter().filter(|(p, _)| !installed(p)).collect();
    if missing.is_empty() {
        println!("xtask: vm-test: host packages: present");
        return Ok(());
    }
    for (package, why) in &missing {
        println!("xtask: vm-test: installing: {package} ({why})");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "vm-test needs these Debian packages, and installing them needs root: `apt-get \
             install {}`",
            missing
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(missing.iter().map(|(p, _)| *p))
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing vm-test's host packages")
}

/// `apt-get update`, once per run. A failure is only a warning: a kernel
/// package already in the cache still works offline.
fn apt_update() {
    println!("xtask: vm-test: apt-get update");
    let out = Command::new("apt-get").args(["update", "-qq"]).output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "xtask: vm-test: warning: `apt-get update` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => eprintln!("xtask: vm-test: warning: cannot run apt-get: {err}"),
    }
}

/// Whether dpkg says `package` is installed.
fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"installed")
}
