//! The guest's root filesystem, as initramfs archives (cpio "newc"): a
//! common one — busybox, iproute2's `ip` and the other host programs the
//! tests run, the shared libraries `ldd` names for each, the workspace's
//! binaries at their host paths, the test binaries (debug info stripped), the
//! workspace's files at their host paths (tests find data through
//! `CARGO_MANIFEST_DIR`), and `vm/init` — then one per kernel with its
//! modules and one per guest with the list of test binaries it runs,
//! concatenated behind it (the kernel unpacks them in order).
//!
//! Guest layout: `/bin`, `/sbin`, `/lib`, `/lib64` link into `/usr`;
//! `/init`; `/usr/local/bin/vaultfw` (a link to the host path); `/vaultfw-vm/`
//! holds the test binaries and the lists `vm/init` reads (`tests`, `args`,
//! `timeout`, `modules`).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::fresh_dir;
use super::kernel::Kernel;
use super::payload::{Payload, TestBinary};
use crate::bootstrap::run;

/// Where the guest keeps the suite and its lists.
const GUEST_DIR: &str = "vaultfw-vm";
/// Where `vm/init` runs `vaultfw` from (its `VAULTFW_BIN`).
const GUEST_VAULTFW: &str = "usr/local/bin/vaultfw";
/// The guest's init script, relative to the workspace root.
const INIT_SCRIPT: &str = "vm/init";
/// Host programs copied to the same path in the guest, with their libraries:
/// iproute2's `ip` (the harness builds namespaces with it), bash (the
/// harness's stand-in agent is a bash script), coreutils' `readlink` (the
/// harness reads two links in one call; busybox's takes one), util-linux's
/// `setpriv` (a test drops capabilities with options busybox's lacks).
const HOST_PROGRAMS: &[&str] = &["ip", "bash", "readlink", "setpriv"];
/// Host programs copied when the host has them: a test that needs tcpdump
/// or wg skips itself without it, on the host and in the guest alike;
/// the metrics tests need promtool (`.ci/run` installs it on the host).
const OPTIONAL_HOST_PROGRAMS: &[&str] = &["tcpdump", "wg", "promtool"];
/// busybox applets left out: iproute2's `ip` is the real one. (Debian's
/// busybox shell still runs its own applet for a bare `ip`: `vm/init` calls
/// `/sbin/ip`; the tests run `ip` through PATH and get iproute2's.)
const SKIPPED_APPLETS: &[&str] = &["ip"];
/// Host configuration copied as it is.
const HOST_FILES: &[&str] = &["/etc/iproute2"];
/// Users and groups the guest's `/etc/passwd` and `/etc/group` take from the
/// host's: tcpdump drops root for its own user and exits without it.
const ACCOUNTS: &[&str] = &["root", "nobody", "nogroup", "tcpdump"];

/// Stage and pack the archive every kernel shares; returns its path.
pub fn build_common(
    stage: &Path,
    root: &Path,
    payload: &Payload,
    test_args: &[String],
    binary_timeout: Duration,
) -> Result<PathBuf> {
    println!("xtask: vm-test: staging the initramfs");
    let dir = fresh_dir(&stage.join("common"))?;
    merged_usr(&dir)?;
    for sub in [
        "proc", "sys", "dev", "run", "tmp", "var", "root", "etc", GUEST_DIR,
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let mut elves = add_busybox(&dir)?;
    let optional = OPTIONAL_HOST_PROGRAMS.iter().filter_map(|p| which(p).ok());
    for host in HOST_PROGRAMS
        .iter()
        .map(|p| which(p))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .chain(optional)
    {
        copy_file(&host, &under(&dir, &host))?;
        elves.push(host);
    }
    for path in HOST_FILES {
        let path = Path::new(path);
        if path.exists() {
            run(Command::new("cp")
                .arg("-a")
                .arg(path)
                .arg(under(&dir, path.parent().expect("HOST_FILES are absolute"))))?;
        }
    }
    for file in ["passwd", "group"] {
        let host = fs::read_to_string(Path::new("/etc").join(file)).unwrap_or_default();
        fs::write(dir.join("etc").join(file), accounts(&host))?;
    }
    copy_file(&root.join(INIT_SCRIPT), &dir.join("init"))?;
    let bins: BTreeSet<&PathBuf> = payload.bins.iter().chain([&payload.vaultfw]).collect();
    for bin in bins {
        strip_into(bin, &under(&dir, bin))?;
        elves.push(bin.clone());
    }
    replace(&dir.join(GUEST_VAULTFW))?;
    symlink(&payload.vaultfw, dir.join(GUEST_VAULTFW))?;

    for test in &payload.tests {
        strip_into(&test.path, &dir.join(guest_path(test)))?;
        elves.push(test.path.clone());
    }
    let args: String = test_args.iter().map(|a| format!("{a}\n")).collect();
    fs::write(dir.join(GUEST_DIR).join("args"), args)?;
    fs::write(
        dir.join(GUEST_DIR).join("timeout"),
        format!("{}\n", binary_timeout.as_secs()),
    )?;

    for lib in shared_libraries(&elves)? {
        copy_file(&lib, &under(&dir, &lib))?;
    }
    add_workspace_files(&dir, root, payload)?;
    packed(&dir, &stage.join("common.cpio"))
}

/// A tiny archive whose init prints [`super::qemu::PROBE_MARKER`] and powers
/// off: does this accelerator boot at all?
pub fn build_probe(stage: &Path) -> Result<PathBuf> {
    let dir = fresh_dir(&stage.join("probe"))?;
    merged_usr(&dir)?;
    fs::create_dir_all(dir.join("proc"))?;
    add_busybox(&dir)?;
    let init = dir.join("init");
    fs::write(
        &init,
        format!(
            "#!/bin/sh\necho {}\npoweroff -f\n",
            super::qemu::PROBE_MARKER
        ),
    )?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    pack(&dir, &stage.join("probe.cpio"))
}

/// Where a test binary lives in the guest, below its root.
fn guest_path(test: &TestBinary) -> PathBuf {
    Path::new(GUEST_DIR).join(test.name.replace('/', "-"))
}

/// `kernel`'s modules (decompressed: busybox `insmod` hands the file to the
/// kernel as it is) and their load order, packed once per kernel.
pub fn modules(stage: &Path, kernel: &Kernel) -> Result<PathBuf> {
    let name = kernel.series.name;
    let dir = fresh_dir(&stage.join(format!("modules-{name}")))?;
    let mut list = String::new();
    for module in &kernel.modules {
        let from = kernel.root.join(module);
        let to = dir.join(uncompressed_name(module));
        fs::create_dir_all(to.parent().expect("module paths have a directory"))?;
        decompress(&from, &to)?;
        list.push_str(&format!("/{}\n", uncompressed_name(module).display()));
    }
    fs::create_dir_all(dir.join(GUEST_DIR))?;
    fs::write(dir.join(GUEST_DIR).join("modules"), list)?;
    packed(&dir, &stage.join(format!("modules-{name}.cpio")))
}

/// One guest's archive: the common one, the kernel's `modules`, then the
/// list of the test binaries this guest runs (`vm/init`'s `tests`), named
/// `<label>`; the kernel unpacks all three.
pub fn for_guest(
    stage: &Path,
    common: &Path,
    modules: &Path,
    label: &str,
    tests: &[&TestBinary],
) -> Result<PathBuf> {
    let dir = fresh_dir(&stage.join(format!("tests-{label}")))?;
    fs::create_dir_all(dir.join(GUEST_DIR))?;
    let list: String = tests
        .iter()
        .map(|test| {
            format!(
                "{}\t{}\t/{}\n",
                test.name,
                test.package_dir.display(),
                guest_path(test).display()
            )
        })
        .collect();
    fs::write(dir.join(GUEST_DIR).join("tests"), list)?;
    let tests = packed(&dir, &stage.join(format!("tests-{label}.cpio")))?;
    let initrd = stage.join(format!("initramfs-{label}.cpio"));
    let mut out = fs::File::create(&initrd)?;
    for part in [common, modules, tests.as_path()] {
        out.write_all(&fs::read(part)?)?;
    }
    Ok(initrd)
}

/// `/bin`, `/sbin`, `/lib` and `/lib64` as links into `/usr`, as on Debian
/// 12: a program or library copied to either of its host paths is found at
/// both (the harness runs `#!/bin/bash`; `which` may find `/usr/bin/bash`).
fn merged_usr(dir: &Path) -> Result<()> {
    for name in ["bin", "sbin", "lib", "lib64"] {
        fs::create_dir_all(dir.join("usr").join(name))?;
        symlink(Path::new("usr").join(name), dir.join(name))?;
    }
    Ok(())
}

/// `/bin/busybox` and a link per applet; the busybox host path (for `ldd`).
fn add_busybox(dir: &Path) -> Result<Vec<PathBuf>> {
    let busybox = which("busybox")?;
    let bin = dir.join("usr/bin");
    copy_file(&busybox, &bin.join("busybox"))?;
    let out = Command::new(&busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet.is_empty() || applet == "busybox" || SKIPPED_APPLETS.contains(&applet) {
            continue;
        }
        symlink("busybox", bin.join(applet))
            .with_context(|| format!("linking the busybox applet {applet}"))?;
    }
    Ok(vec![busybox])
}

/// The workspace's tracked and untracked-but-not-ignored files at their
/// host paths, and every test package's directory (the working directory
/// of its tests).
fn add_workspace_files(dir: &Path, root: &Path, payload: &Payload) -> Result<()> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .current_dir(root)
        .output();
    match out {
        Ok(out) if out.status.success() => {
            for file in out.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
                let file = root.join(String::from_utf8_lossy(file).as_ref());
                if file.is_file() {
                    copy_file(&file, &under(dir, &file))?;
                }
            }
        }
        _ => eprintln!(
            "xtask: vm-test: warning: `git ls-files` failed in {}: the guest gets no source \
             files (tests that read them will fail)",
            root.display()
        ),
    }
    for test in &payload.tests {
        fs::create_dir_all(under(dir, &test.package_dir))?;
    }
    Ok(())
}

/// The lines of a host `/etc/passwd` or `/etc/group` for [`ACCOUNTS`].
fn accounts(host: &str) -> String {
    host.lines()
        .filter(|line| ACCOUNTS.iter().any(|a| line.split(':').next() == Some(a)))
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The shared libraries `ldd` names for each of `programs` (statically
/// linked ones have none), including the dynamic loader.
fn shared_libraries(programs: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for program in programs {
        let out = Command::new("ldd")
            .arg(program)
            .output()
            .context("running ldd")?;
        libs.extend(parse_ldd(&String::from_utf8_lossy(&out.stdout)));
    }
    Ok(libs)
}

/// The library paths of `ldd` output: `libc.so.6 => /lib/…/libc.so.6 (0x…)`
/// and the loader's `/lib64/ld-linux-x86-64.so.2 (0x…)`; not the vDSO.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// [`pack`], then remove the staged tree (the archive is what is kept).
fn packed(dir: &Path, out: &Path) -> Result<PathBuf> {
    let archive = pack(dir, out)?;
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    Ok(archive)
}

/// Pack `dir` into a newc cpio archive at `out`, every file owned by root.
fn pack(dir: &Path, out: &Path) -> Result<PathBuf> {
    let mut names = Vec::new();
    list_tree(dir, Path::new("."), &mut names)?;
    let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut child = Command::new("cpio")
        .args(["--quiet", "--null", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .context("starting cpio")?;
    {
        let mut stdin = child.stdin.take().expect("stdin is piped");
        for name in &names {
            stdin.write_all(name.as_os_str().as_encoded_bytes())?;
            stdin.write_all(b"\0")?;
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("cpio failed packing {} ({status})", dir.display());
    }
    Ok(out.to_owned())
}

/// Every entry under `base/rel`, parents before children, symlinks not
/// followed.
fn list_tree(base: &Path, rel: &Path, names: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(base.join(rel))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = rel.join(entry.file_name());
        names.push(name.clone());
        if entry.file_type()?.is_dir() {
            list_tree(base, &name, names)?;
        }
    }
    Ok(())
}

/// `root` joined with the absolute host path `path`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Copy a file (following symlinks), creating the parent directories and
/// keeping the mode; whatever was at `to` (a busybox applet link) goes.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    replace(to)?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Copy an executable without its debug info (the guest's memory holds the
/// whole archive).
fn strip_into(from: &Path, to: &Path) -> Result<()> {
    replace(to)?;
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(to)
        .arg(from))
    .with_context(|| format!("stripping {}", from.display()))
}

/// Make room for a new file at `to`: its directories exist, nothing is there.
fn replace(to: &Path) -> Result<()> {
    fs::create_dir_all(to.parent().expect("destination has a parent"))?;
    if to.symlink_metadata().is_ok() {
        fs::remove_file(to).with_context(|| format!("replacing {}", to.display()))?;
    }
    Ok(())
}

/// A program's path on the host's PATH (plus the sbin directories).
fn which(program: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("`{program}` is not installed on the host"))
}

/// `kernel/net/8021q/8021q.ko.xz` → `kernel/net/8021q/8021q.ko`.
fn uncompressed_name(module: &Path) -> PathBuf {
    let text = module.to_string_lossy();
    match text.rfind(".ko") {
        Some(end) => PathBuf::from(&text[..end + 3]),
        None => module.to_owned(),
    }
}

/// Write `from` to `to`, decompressing `.xz`, `.zst` and `.gz` modules.
fn decompress(from: &Path, to: &Path) -> Result<()> {
    let tool = match from.extension().and_then(|e| e.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        Some("gz") => "gzip",
        _ => return copy_file(from, to),
    };
    let out = fs::File::create(to)?;
    let status = Command::new(tool)
        .arg("-dc")
        .arg(from)
        .stdout(out)
        .status()
        .with_context(|| format!("starting {tool}"))?;
    if !status.success() {
        bail!("{tool} -dc {} failed ({status})", from.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader_not_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffa022c7000)\n\
                    \tlibbpf.so.1 => /lib/x86_64-linux-gnu/libbpf.so.1 (0x00007ffa02166000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007ffa01f3d000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007ffa022c9000)\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libbpf.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }

    #[test]
    fn only_the_named_accounts_are_kept() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                      tcpdump:x:104:110::/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(
            accounts(passwd),
            "root:x:0:0:root:/root:/bin/bash\ntcpdump:x:104:110::/nonexistent:/usr/sbin/nologin\n"
        );
    }

    #[test]
    fn compressed_module_names_lose_their_compression_suffix() {
        assert_eq!(
            uncompressed_name(Path::new("lib/modules/6.12/kernel/net/8021q/8021q.ko.xz")),
            Path::new("lib/modules/6.12/kernel/net/8021q/8021q.ko")
        );
        assert_eq!(
            uncompressed_name(Path::new("lib/modules/6.1/kernel/drivers/net/veth.ko")),
            Path::new("lib/modules/6.1/kernel/drivers/net/veth.ko")
        );
    }
}
