//! Toolchain bootstrap: what the BPF build and the tests need, checked before
//! every command, installed when missing (and said so), or a clear error when
//! it cannot be installed from here. Versions are those of DESIGN.md section 5.

use std::env;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The bpf-linker release that links against the nightly toolchain's LLVM.
/// Newer releases want a system LLVM the machines do not have.
pub const BPF_LINKER_VERSION: &str = "0.10.3";
/// The toolchain that builds the BPF crate (`-Z build-std=core`).
pub const NIGHTLY: &str = "nightly";

/// Make sure the nightly toolchain has `rust-src`, that `bpf-linker` is at
/// [`BPF_LINKER_VERSION`], and that iproute2 is installed.
pub fn ensure_toolchain() -> Result<()> {
    ensure_nightly()?;
    ensure_rust_src()?;
    ensure_bpf_linker()?;
    ensure_iproute2()?;
    Ok(())
}

fn ensure_nightly() -> Result<()> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running `rustup toolchain list` (is rustup installed?)")?;
    let list = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !has_nightly(&list) {
        bail!(
            "the `{NIGHTLY}` toolchain is not installed (rustup lists:\n{list}). The BPF program \
             needs it (`-Z build-std=core --target bpfel-unknown-none`), and a toolchain cannot \
             be downloaded on these machines: use a machine image that carries nightly beside \
             stable (DESIGN.md section 5)"
        );
    }
    Ok(())
}

/// Whether `rustup toolchain list` output names the undated nightly channel
/// (`nightly-<host>`; a dated `nightly-2024-01-01-<host>` is not `+nightly`).
fn has_nightly(list: &str) -> bool {
    list.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or("");
        name == NIGHTLY
            || name
                .strip_prefix(NIGHTLY)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|host| host.starts_with(|c: char| c.is_ascii_alphabetic()))
    })
}

fn ensure_rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--toolchain", NIGHTLY, "--installed"])
        .output()
        .context("running `rustup component list`")?;
    if out.status.success() && has_rust_src(&String::from_utf8_lossy(&out.stdout)) {
        println!("xtask: toolchain: {NIGHTLY} with rust-src: present");
        return Ok(());
    }
    println!("xtask: installing: rust-src for the {NIGHTLY} toolchain (build-std needs it)");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))
        .context("installing rust-src")
}

/// Whether `rustup component list --installed` output names rust-src.
fn has_rust_src(list: &str) -> bool {
    list.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or("");
        name == "rust-src" || name.starts_with("rust-src-")
    })
}

fn ensure_bpf_linker() -> Result<()> {
    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => {
            println!("xtask: bpf-linker {v}: present");
            return Ok(());
        }
        Some(v) => println!(
            "xtask: installing: bpf-linker {BPF_LINKER_VERSION} (found {v}, which does not \
             match the nightly toolchain's LLVM)"
        ),
        None => println!(
            "xtask: installing: bpf-linker {BPF_LINKER_VERSION} (not found; `cargo install` \
             takes about a minute)"
        ),
    }
    run(Command::new(cargo()).args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]))
    .context("installing bpf-linker")?;
    put_cargo_bin_on_path();
    match bpf_linker_version() {
        Some(v) if v == BPF_LINKER_VERSION => Ok(()),
        other => bail!(
            "bpf-linker {BPF_LINKER_VERSION} was installed but `bpf-linker --version` reports \
             {other:?}: is another bpf-linker earlier on PATH?"
        ),
    }
}

/// The version `bpf-linker --version` reports, if it runs.
fn bpf_linker_version() -> Option<String> {
    let out = Command::new("bpf-linker").arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_bpf_linker_version(&String::from_utf8_lossy(&out.stdout))
}

/// `bpf-linker 0.10.3` → `0.10.3`.
fn parse_bpf_linker_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let mut words = line.split_whitespace();
    (words.next()? == "bpf-linker").then_some(())?;
    words.next().map(str::to_owned)
}

/// `cargo install` puts binaries in `$CARGO_HOME/bin`, which may not be on
/// PATH (e.g. in CI): add it for this process and its children.
fn put_cargo_bin_on_path() {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let Some(bin) = cargo_home.map(|home| home.join("bin")) else {
        return;
    };
    let path = env::var_os("PATH").unwrap_or_default();
    if env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined = env::join_paths(std::iter::once(bin).chain(env::split_paths(&path)))
        .expect("CARGO_HOME/bin is a valid PATH entry");
    // SAFETY: xtask is single-threaded here; no other thread reads the environment.
    unsafe { env::set_var("PATH", joined) };
}

fn ensure_iproute2() -> Result<()> {
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!(
            "`ip` (iproute2) is not installed; the tests and the demo build network \
             namespaces with it. Install it: `apt-get install iproute2`"
        ),
    }
}

/// Install the Debian packages of `packages` (name, why) that dpkg does not
/// list as installed, saying which and why, after one `apt-get update`.
/// `purpose` names the command in the messages (`package`). Needs root when
/// something is missing.
pub fn ensure_debian_packages(purpose: &str, packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&(&str, &str)> = packages
        .iter()
        .filter(|(p, _)| !debian_package_installed(p))
        .collect();
    if missing.is_empty() {
        println!("xtask: {purpose}: Debian packages: present");
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(p, _)| *p).collect();
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{purpose} needs these Debian packages, and installing them needs root: \
             `apt-get install {}`",
            names.join(" ")
        );
    }
    for (package, why) in &missing {
        println!("xtask: {purpose}: installing: {package} ({why})");
    }
    run(Command::new("apt-get").args(["update", "-qq"])).context("apt-get update")?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&names)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .with_context(|| format!("installing {purpose}'s Debian packages"))
}

/// Whether dpkg says `package` is installed.
fn debian_package_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout == b"installed")
}

/// The cargo that runs xtask (so nested builds use the same toolchain).
pub fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Run a command with inherited stdio; an error if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_is_found_in_rustup_toolchain_list() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(!has_nightly("stable-x86_64-unknown-linux-gnu (default)\n"));
        assert!(!has_nightly(
            "nightly-2024-01-01-x86_64-unknown-linux-gnu\n"
        ));
    }

    #[test]
    fn rust_src_is_found_in_installed_components() {
        assert!(has_rust_src(
            "cargo-x86_64-unknown-linux-gnu\nrust-src\nrustc-x86_64\n"
        ));
        assert!(!has_rust_src(
            "cargo-x86_64-unknown-linux-gnu\nrust-std-x86_64\n"
        ));
    }

    #[test]
    fn bpf_linker_version_is_parsed() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.10.3\n").as_deref(),
            Some("0.10.3")
        );
        assert_eq!(parse_bpf_linker_version("something else 1\n"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
    }
}
