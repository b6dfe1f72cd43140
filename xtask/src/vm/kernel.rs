//! The guest kernels: which Debian package is each series' current cloud
//! kernel (asked of apt-cache through the series' meta-package), downloaded
//! with `apt-get download` and extracted with `dpkg-deb -x` once into
//! `target/vm/cache/`, and the modules the guest loads, ordered by the
//! `modules.dep` that `depmod` writes for the extracted tree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::bootstrap::run;

/// A kernel series operators run, and where Debian publishes it.
#[derive(Debug)]
pub struct Series {
    /// What `--kernel` calls it.
    pub name: &'static str,
    /// The meta-package that depends on the current image of the series.
    meta: &'static str,
    /// How the current image's package name starts.
    prefix: &'static str,
    /// Where the package comes from (for error messages).
    origin: &'static str,
}

/// The series `vm-test` knows, oldest first.
pub const SERIES: &[Series] = &[
    Series {
        name: "6.1",
        meta: "linux-image-cloud-amd64",
        prefix: "linux-image-6.1.0-",
        origin: "Debian 12 (bookworm)",
    },
    Series {
        name: "6.12",
        meta: "linux-image-6.12-cloud-amd64",
        prefix: "linux-image-6.12.",
        origin: "Debian 12's updates (bookworm-security here; bookworm-backports on older mirrors)",
    },
];

/// The modules the guest loads, with their dependencies: veth (the harness's
/// links), 8021q (VLAN sub-interfaces), dummy and ifb (devices without
/// native XDP, for the XDP mode tests), and the tunnels the tunnel tests
/// build (vxlan, ipip, ip_gre, wireguard, tun).
pub const GUEST_MODULES: &[&str] = &[
    "veth",
    "8021q",
    "dummy",
    "ifb",
    "vxlan",
    "ipip",
    "ip_gre",
    "wireguard",
    "tun",
];

/// An extracted kernel package.
#[derive(Debug)]
pub struct Kernel {
    pub series: &'static Series,
    pub package: String,
    pub version: String,
    /// `uname -r` of the kernel (the directory under `lib/modules/`).
    pub release: String,
    /// Where the package is extracted.
    pub root: PathBuf,
    pub vmlinuz: PathBuf,
    /// Module files, relative to `root`, in the order to load them.
    pub modules: Vec<PathBuf>,
}

/// The current kernel of `series`, extracted under `cache` (downloaded only
/// when it is not there yet). Offline, the newest cached one of the series.
pub fn prepare(series: &'static Series, cache: &Path) -> Result<Kernel> {
    let (package, version) = match resolve(series) {
        Ok(found) => found,
        Err(err) => match newest_cached(series, cache) {
            Some(found) => {
                eprintln!(
                    "xtask: vm-test: warning: {err:#}; using the cached {} {}",
                    found.0, found.1
                );
                found
            }
            None => return Err(err),
        },
    };
    let root = cache.join(format!("{package}_{version}"));
    if root.join(COMPLETE).exists() {
        println!(
            "xtask: vm-test: kernel {}: {package} {version} (cached)",
            series.name
        );
    } else {
        println!(
            "xtask: vm-test: kernel {}: downloading {package} {version}",
            series.name
        );
        download_and_extract(&package, &version, cache, &root)?;
    }
    let release = release_of(&root)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{package} has no {}", vmlinuz.display());
    }
    let modules_dir = root.join("lib/modules").join(&release);
    let dep = read(&modules_dir.join("modules.dep"))?;
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let order = load_order(&dep, &builtin, GUEST_MODULES)
        .with_context(|| format!("the modules {GUEST_MODULES:?} of {package}"))?;
    let modules = order
        .into_iter()
        .map(|m| Path::new("lib/modules").join(&release).join(m))
        .collect();
    Ok(Kernel {
        series,
        package,
        version,
        release,
        root,
        vmlinuz,
        modules,
    })
}

/// The stamp that says an extracted tree is complete (depmod ran).
const COMPLETE: &str = ".vm-test-complete";

/// The package and version of the series' current image, from apt-cache.
fn resolve(series: &Series) -> Result<(String, String)> {
    let depends = output(Command::new("apt-cache").args(["depends", series.meta]))
        .with_context(|| format!("looking up {} ({})", series.meta, series.origin))?;
    let signed = image_dependency(&depends, series.prefix).with_context(|| {
        format!(
            "{} names no {}* package (apt-cache depends said:\n{depends})",
            series.meta, series.prefix
        )
    })?;
    // The unsigned image holds the same kernel and modules without the
    // Secure Boot signature; the signed one is the fallback.
    for package in [format!("{signed}-unsigned"), signed] {
        let policy = output(Command::new("apt-cache").args(["policy", &package]))?;
        if let Some(version) = candidate(&policy) {
            return Ok((package, version));
        }
    }
    bail!(
        "no installable package for kernel {} in the apt sources; it comes from {}",
        series.name,
        series.origin
    )
}

/// The `Depends:` line of `apt-cache depends` output naming the image.
fn image_dependency(depends: &str, prefix: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let name = line.trim().strip_prefix("Depends: ")?.trim();
        (name.starts_with(prefix) && name.ends_with("-cloud-amd64")).then(|| name.to_owned())
    })
}

/// The `Candidate:` version of `apt-cache policy` output, if there is one.
fn candidate(policy: &str) -> Option<String> {
    policy.lines().find_map(|line| {
        let version = line.trim().strip_prefix("Candidate: ")?.trim();
        (version != "(none)").then(|| version.to_owned())
    })
}

/// The newest complete extracted tree of `series` in the cache.
fn newest_cached(series: &Series, cache: &Path) -> Option<(String, String)> {
    let entries = std::fs::read_dir(cache).ok()?;
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join(COMPLETE).exists())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (package, version) = name.split_once('_')?;
            let modified = e.metadata().ok()?.modified().ok()?;
            package
                .starts_with(series.prefix)
                .then(|| (modified, (package.to_owned(), version.to_owned())))
        })
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, found)| found)
}

/// `apt-get download` into a scratch directory, `dpkg-deb -x` into `root`,
/// then `depmod` (Debian's packages do not ship `modules.dep`: their
/// postinst writes it), then the stamp.
fn download_and_extract(package: &str, version: &str, cache: &Path, root: &Path) -> Result<()> {
    let scratch = super::fresh_dir(&cache.join("download"))?;
    run(Command::new("apt-get")
        // Root's apt drops to the `_apt` user to download; that user may
        // not write to the workspace.
        .args(["-o", "APT::Sandbox::User=root", "download"])
        .arg(format!("{package}={version}"))
        .current_dir(&scratch))
    .with_context(|| format!("downloading {package} {version}"))?;
    let deb = std::fs::read_dir(&scratch)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download left no .deb in {}", scratch.display()))?;
    let mut unpacking = root.as_os_str().to_owned();
    unpacking.push(".unpacking");
    let unpacking = super::fresh_dir(Path::new(&unpacking))?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacking))
        .with_context(|| format!("extracting {}", deb.display()))?;
    let release = release_of(&unpacking)?;
    run(Command::new("depmod")
        .arg("-b")
        .arg(&unpacking)
        .arg(&release))
    .with_context(|| format!("depmod for {release}"))?;
    std::fs::write(unpacking.join(COMPLETE), format!("{package} {version}\n"))?;
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    std::fs::rename(&unpacking, root)?;
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// The kernel release: the one directory under `lib/modules/`.
fn release_of(root: &Path) -> Result<String> {
    let dir = root.join("lib/modules");
    let mut releases: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        _ => bail!(
            "expected one kernel release in {}, found {releases:?}",
            dir.display()
        ),
    }
}

/// `modules.dep` paths of `wanted` and of everything they depend on, each
/// after its dependencies, each once. A module built into the kernel
/// (listed in `modules.builtin`) needs no file.
fn load_order(modules_dep: &str, modules_builtin: &str, wanted: &[&str]) -> Result<Vec<String>> {
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in modules_dep.lines() {
        let Some((path, rest)) = line.split_once(':') else {
            continue;
        };
        let needs = rest.split_whitespace().map(module_name).collect();
        deps.insert(module_name(path), (path.to_owned(), needs));
    }
    let builtin: BTreeSet<String> = modules_builtin.lines().map(module_name).collect();
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        visit(&module_name(name), &deps, &builtin, &mut seen, &mut order)?;
    }
    Ok(order)
}

fn visit(
    name: &str,
    deps: &BTreeMap<String, (String, Vec<String>)>,
    builtin: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) -> Result<()> {
    if !seen.insert(name.to_owned()) || builtin.contains(name) {
        return Ok(());
    }
    let Some((path, needs)) = deps.get(name) else {
        bail!("module {name} is neither in modules.dep nor built in");
    };
    for need in needs {
        visit(need, deps, builtin, seen, order)?;
    }
    order.push(path.clone());
    Ok(())
}

/// `kernel/net/8021q/8021q.ko.xz` → `8021q`; `-` and `_` are the same in
/// module names.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Run a command; its stdout, or an error with its stderr.
fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_read_from_the_meta_packages_dependencies() {
        let depends = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-57-cloud-amd64\n";
        assert_eq!(
            image_dependency(depends, "linux-image-6.1.0-").as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64")
        );
        // A meta-package that moved to another series is not taken.
        assert_eq!(image_dependency(depends, "linux-image-6.12."), None);
        let backports =
            "linux-image-6.12-cloud-amd64\n  Depends: linux-image-6.12.117+deb12-cloud-amd64\n";
        assert_eq!(
            image_dependency(backports, "linux-image-6.12.").as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
    }

    #[test]
    fn a_package_without_candidate_is_not_installable() {
        let some = "p:\n  Installed: (none)\n  Candidate: 6.12.117-1~deb12u1\n  Version table:\n";
        assert_eq!(candidate(some).as_deref(), Some("6.12.117-1~deb12u1"));
        assert_eq!(
            candidate("p:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
        assert_eq!(candidate(""), None);
    }

    #[test]
    fn modules_load_after_their_dependencies_each_once() {
        let dep = "kernel/drivers/net/veth.ko.xz:\n\
                   kernel/net/8021q/8021q.ko.xz: kernel/net/802/garp.ko.xz kernel/net/802/stp.ko.xz kernel/net/802/mrp.ko.xz kernel/net/llc/llc.ko.xz\n\
                   kernel/net/802/garp.ko.xz: kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz\n\
                   kernel/net/802/stp.ko.xz: kernel/net/llc/llc.ko.xz\n\
                   kernel/net/802/mrp.ko.xz:\n\
                   kernel/net/llc/llc.ko.xz:\n";
        let order = load_order(dep, "", &["veth", "8021q"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/net/veth.ko.xz",
                "kernel/net/llc/llc.ko.xz",
                "kernel/net/802/stp.ko.xz",
                "kernel/net/802/garp.ko.xz",
                "kernel/net/802/mrp.ko.xz",
                "kernel/net/8021q/8021q.ko.xz",
            ]
        );
    }

    #[test]
    fn built_in_modules_need_no_file_and_unknown_ones_are_an_error() {
        let builtin = "kernel/drivers/net/veth.ko\n";
        assert_eq!(
            load_order("", builtin, &["veth"]).unwrap(),
            Vec::<String>::new()
        );
        let err = load_order("", "", &["8021q"]).unwrap_err();
        assert!(err.to_string().contains("8021q"), "{err}");
    }

    #[test]
    fn module_names_drop_directories_compression_and_dashes() {
        assert_eq!(module_name("kernel/net/8021q/8021q.ko.xz"), "8021q");
        assert_eq!(module_name("kernel/drivers/net/veth.ko"), "veth");
        assert_eq!(
            module_name("kernel/crypto/crc32c-intel.ko.zst"),
            "crc32c_intel"
        );
        assert_eq!(module_name("veth"), "veth");
    }
}
