//! `cargo xtask package`: what an operator installs, built in one command
//! on a fresh Debian machine, under `target/package/`:
//!
//! - `vaultfw-<version>-x86_64-linux-static`: the agent, statically linked
//!   (glibc's static-pie through `-C target-feature=+crt-static`: no libc
//!   needed at run time);
//! - `vaultfw_<version>_amd64.deb`: that binary, the systemd unit,
//!   `/etc/default/vaultfw`, the example policy as a conffile, man pages,
//!   bash/zsh/fish completions, the copyright file; `lintian.txt` holds
//!   lintian's report (an error fails the command);
//! - `vaultfw-<version>-oci.tar`: an OCI image `FROM scratch` holding only
//!   the static binary (buildah, vfs storage under `target/package/`).
//!
//! The .deb is assembled with `dpkg-deb` from a staged tree: Debian's own
//! tool, present on every Debian machine, no build of a packaging tool.
//! Man pages and completions come from the binary itself (`vaultfw
//! man-pages`, `vaultfw completions`), i.e. from its clap definitions.
//!
//! With `--test`, [`package_test`] then proves the outputs work.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::bootstrap::{self, run};
use crate::tasks::{cargo_cmd, workspace_root};

#[path = "package_test.rs"]
mod package_test;

/// `cargo xtask package`.
#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// Then test the outputs (as root): install the .deb into a scratch
    /// root and run its binary, run the image with podman, check the
    /// systemd unit's hardening and the Kubernetes manifests.
    #[arg(long)]
    pub test: bool,
}

/// The only target the project's machines build for; the .deb's
/// architecture follows it.
const TARGET: &str = "x86_64-unknown-linux-gnu";
const DEB_ARCH: &str = "amd64";
/// Static linking for the agent only: the variable applies to the target's
/// crates, not to build scripts nor to the BPF build the agent's build
/// script runs (another target).
const STATIC_RUSTFLAGS: (&str, &str) = (
    "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    "-C target-feature=+crt-static -C strip=symbols",
);
/// Debian packages the packaging needs, and why.
const PACKAGES: &[(&str, &str)] = &[
    ("file", "tells a static executable from a dynamic one"),
    ("lintian", "checks the .deb"),
    ("buildah", "builds the OCI image FROM scratch"),
    ("podman", "runs the image in the package test"),
];
/// The package's maintainer field: a reserved domain until the project
/// has a mailing address of its own.
const MAINTAINER: &str = "The vaultfw authors <maintainers@vaultfw.invalid>";

/// What `cargo xtask package` built.
pub struct Outputs {
    pub dir: PathBuf,
    pub version: String,
    pub binary: PathBuf,
    pub deb: PathBuf,
    pub image: PathBuf,
}

/// Builds every output; with `args.test`, tests them.
pub fn package(args: &PackageArgs) -> Result<()> {
    let started = std::time::Instant::now();
    bootstrap::ensure_toolchain()?;
    bootstrap::ensure_debian_packages("package", PACKAGES)?;
    let dir = workspace_root().join("target/package");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let built = build_static()?;
    let version = binary_version(&built)?;
    let binary = dir.join(format!("vaultfw-{version}-x86_64-linux-static"));
    fs::copy(&built, &binary).with_context(|| format!("copying to {}", binary.display()))?;
    check_static(&binary)?;
    let deb = build_deb(&binary, &version, &dir)?;
    lintian(&deb, &dir)?;
    let image = build_image(&binary, &version, &dir)?;
    let outputs = Outputs {
        dir,
        version,
        binary,
        deb,
        image,
    };
    for file in [&outputs.binary, &outputs.deb, &outputs.image] {
        let size = fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        println!(
            "xtask: package: {} ({:.1} MiB)",
            file.display(),
            size as f64 / (1024.0 * 1024.0)
        );
    }
    println!(
        "xtask: package: built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if args.test {
        package_test::test(&outputs)?;
    }
    Ok(())
}

/// `cargo build --release` of the agent for [`TARGET`], statically linked;
/// returns the executable.
fn build_static() -> Result<PathBuf> {
    println!("xtask: package: building the static vaultfw ({TARGET}, release)");
    run(cargo_cmd()
        .args([
            "build",
            "--release",
            "--package",
            "firewall-agent",
            "--bin",
            "vaultfw",
            "--target",
            TARGET,
        ])
        // RUSTFLAGS would take precedence over the target's flags.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(STATIC_RUSTFLAGS.0, STATIC_RUSTFLAGS.1))
    .context("building the static vaultfw")?;
    Ok(workspace_root().join(format!("target/{TARGET}/release/vaultfw")))
}

/// `vaultfw --version` → `0.1.0`.
fn binary_version(binary: &Path) -> Result<String> {
    let text = output(Command::new(binary).arg("--version"))?;
    text.split_whitespace()
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("`vaultfw --version` printed {text:?}"))
}

/// Refuses a binary that `file` does not call static or that needs an
/// interpreter or libraries.
fn check_static(binary: &Path) -> Result<()> {
    let described = output(Command::new("file").arg("-b").arg(binary))?;
    ensure!(
        is_static_description(&described),
        "{} is not statically linked: file says {described:?}",
        binary.display()
    );
    println!("xtask: package: static: {}", described.trim());
    Ok(())
}

/// Whether `file -b` output describes a statically linked executable
/// (`static-pie linked` or `statically linked`, no interpreter).
fn is_static_description(described: &str) -> bool {
    (described.contains("static-pie linked") || described.contains("statically linked"))
        && !described.contains("interpreter")
}

/// One file of the .deb: where it comes from, where it goes, its mode.
struct Staged {
    dest: &'static str,
    mode: u32,
    content: Vec<u8>,
}

/// Assembles the .deb from a staged tree with `dpkg-deb`.
fn build_deb(binary: &Path, version: &str, dir: &Path) -> Result<PathBuf> {
    println!("xtask: package: assembling the .deb");
    let root = workspace_root();
    let stage = dir.join("deb-root");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    let read = |p: &str| fs::read(root.join(p)).with_context(|| format!("reading {p}"));
    let mut files = vec![
        Staged {
            dest: "usr/sbin/vaultfw",
            mode: 0o755,
            content: fs::read(binary)?,
        },
        Staged {
            dest: "lib/systemd/system/vaultfw.service",
            mode: 0o644,
            content: read("deploy/systemd/vaultfw.service")?,
        },
        Staged {
            dest: "etc/default/vaultfw",
            mode: 0o644,
            content: read("deploy/debian/default")?,
        },
        Staged {
            dest: "etc/vaultfw/policy.toml",
            mode: 0o644,
            content: read("examples/policy.toml")?,
        },
        Staged {
            dest: "usr/share/doc/vaultfw/copyright",
            mode: 0o644,
            content: copyright()?.into_bytes(),
        },
        Staged {
            dest: "usr/share/doc/vaultfw/changelog.gz",
            mode: 0o644,
            content: gzip(changelog(version)?.as_bytes())?,
        },
        Staged {
            dest: "usr/share/doc/vaultfw/README.md.gz",
            mode: 0o644,
            content: gzip(&read("README.md")?)?,
        },
        Staged {
            dest: "usr/share/doc/vaultfw/examples/policy-full.toml",
            mode: 0o644,
            content: read("examples/policy-full.toml")?,
        },
        Staged {
            dest: "usr/share/lintian/overrides/vaultfw",
            mode: 0o644,
            content: read("deploy/debian/lintian-overrides")?,
        },
    ];
    for (shell, dest) in [
        ("bash", "usr/share/bash-completion/completions/vaultfw"),
        ("zsh", "usr/share/zsh/vendor-completions/_vaultfw"),
        ("fish", "usr/share/fish/vendor_completions.d/vaultfw.fish"),
    ] {
        let script = Command::new(binary)
            .args(["completions", shell])
            .output()
            .context("running `vaultfw completions`")?;
        ensure!(
            script.status.success(),
            "`vaultfw completions {shell}` failed"
        );
        files.push(Staged {
            dest,
            mode: 0o644,
            content: script.stdout,
        });
    }
    write_staged(&stage, &files)?;
    write_man_pages(binary, &stage)?;

    let debian = stage.join("DEBIAN");
    fs::create_dir_all(&debian)?;
    let installed_kib = tree_size(&stage)?.div_ceil(1024);
    fs::write(debian.join("control"), control(version, installed_kib)?)?;
    fs::write(
        debian.join("conffiles"),
        "/etc/default/vaultfw\n/etc/vaultfw/policy.toml\n",
    )?;
    let postinst = debian.join("postinst");
    fs::write(&postinst, read("deploy/debian/postinst")?)?;
    fs::set_permissions(&postinst, fs::Permissions::from_mode(0o755))?;
    fs::write(debian.join("md5sums"), md5sums(&stage)?)?;

    let deb = dir.join(format!("vaultfw_{version}_{DEB_ARCH}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zxz"])
        .arg(&stage)
        .arg(&deb))
    .context("dpkg-deb --build")?;
    Ok(deb)
}

/// Writes each staged file under `stage`, creating its directories 0755.
fn write_staged(stage: &Path, files: &[Staged]) -> Result<()> {
    for file in files {
        let path = stage.join(file.dest);
        let parent = path.parent().expect("staged files have a directory");
        fs::create_dir_all(parent)?;
        fs::write(&path, &file.content).with_context(|| format!("writing {}", path.display()))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(file.mode))?;
    }
    Ok(())
}

/// `vaultfw man-pages` into the staged man directories, gzipped.
fn write_man_pages(binary: &Path, stage: &Path) -> Result<()> {
    let raw = stage.join("../man-pages");
    if raw.exists() {
        fs::remove_dir_all(&raw)?;
    }
    output(Command::new(binary).arg("man-pages").arg(&raw)).context("vaultfw man-pages")?;
    let mut count = 0;
    for entry in fs::read_dir(&raw)? {
        let path = entry?.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let section = name.rsplit('.').next().unwrap_or_default().to_owned();
        let dest_dir = stage.join(format!("usr/share/man/man{section}"));
        fs::create_dir_all(&dest_dir)?;
        let dest = dest_dir.join(format!("{name}.gz"));
        fs::write(&dest, gzip(&fs::read(&path)?)?)?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644))?;
        count += 1;
    }
    ensure!(count > 1, "vaultfw man-pages wrote {count} pages");
    println!("xtask: package: {count} man pages");
    Ok(())
}

/// `gzip -9n`: no name or time stamp, so the package is reproducible.
fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().context("running gzip")?;
    writer
        .join()
        .expect("the gzip writer does not panic")
        .context("feeding gzip")?;
    ensure!(out.status.success(), "gzip failed: {}", out.status);
    Ok(out.stdout)
}

/// The binary package's control file.
fn control(version: &str, installed_kib: u64) -> Result<String> {
    let glibc = output(Command::new("dpkg-query").args(["-W", "-f=${source:Version}", "libc6"]))?;
    Ok(format!(
        "Package: vaultfw\n\
         Version: {version}\n\
         Architecture: {DEB_ARCH}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {installed_kib}\n\
         Depends: procps\n\
         Built-Using: glibc (= {glibc})\n\
         Section: net\n\
         Priority: optional\n\
         Description: XDP firewall with Azure Key Vault's network ACL semantics\n \
         vaultfw gives a Linux service host the network firewall that Azure Key\n \
         Vault gives a vault: the data plane (TCP 443 by default) is denied by\n \
         default, and only public IPv4 ranges named by IP rules, virtual network\n \
         subnets arriving through their service endpoint, and (when opted in)\n \
         Azure's trusted services get in. An XDP program on the NIC enforces the\n \
         policy; the agent validates it, compiles it into BPF maps, counts every\n \
         verdict and keeps a rate-limited access log of denied attempts.\n \
         .\n \
         The binary is statically linked. The service is installed but not\n \
         started: edit /etc/vaultfw/policy.toml, then\n \
         systemctl enable --now vaultfw.\n"
    ))
}

/// The machine-readable copyright file (DEP-5), with the years of the
/// project's commits.
fn copyright() -> Result<String> {
    let mit = fs::read_to_string(workspace_root().join("LICENSE-MIT"))?;
    let years = output(Command::new("git").current_dir(workspace_root()).args([
        "log",
        "--format=%cd",
        "--date=format:%Y",
    ]))?;
    let (first, last) = (
        years.lines().last().unwrap_or("1970"),
        years.lines().next().unwrap_or("1970"),
    );
    let span = if first == last {
        first.to_owned()
    } else {
        format!("{first}-{last}")
    };
    let mut text = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: vaultfw\n\
         Comment: /usr/sbin/vaultfw is statically linked: it holds the GNU C\n \
         Library (see Built-Using; its licenses are in the libc6 package's\n \
         copyright file) and Rust crates under MIT, Apache-2.0 or both.\n \
         Its embedded XDP object declares \"Dual MIT/GPL\" to the kernel because\n \
         it calls the GPL-only helper bpf_fib_lookup; its source is under the\n \
         license below.\n\
         \n\
         Files: *\n\
         Copyright: YEARS the vaultfw authors\n\
         License: MIT or Apache-2.0\n\
         \n\
         License: MIT\n",
    );
    for line in mit.lines().skip_while(|l| !l.starts_with("Permission")) {
        if line.trim().is_empty() {
            text.push_str(" .\n");
        } else {
            writeln!(text, " {line}").unwrap();
        }
    }
    text = text.replace("YEARS", &span);
    text.push_str(
        "\nLicense: Apache-2.0\n \
         On Debian systems, the complete text of the Apache License, Version 2.0\n \
         can be found in /usr/share/common-licenses/Apache-2.0.\n",
    );
    Ok(text)
}

/// A Debian changelog entry for `version`, dated by the last commit (so
/// the package does not change with the time it is built).
fn changelog(version: &str) -> Result<String> {
    let date = output(Command::new("git").current_dir(workspace_root()).args([
        "log",
        "-1",
        "--format=%cD",
    ]))
    .unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".to_owned());
    Ok(format!(
        "vaultfw ({version}) unstable; urgency=medium\n\n  \
         * Release {version}: see /usr/share/doc/vaultfw/README.md.gz.\n\n \
         -- {MAINTAINER}  {}\n",
        date.trim()
    ))
}

/// The size in bytes of the regular files under `dir`.
fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            tree_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// `md5sum` lines of every file under `stage` but DEBIAN/, relative paths.
fn md5sums(stage: &Path) -> Result<String> {
    let out = output(Command::new("sh").current_dir(stage).args([
        "-c",
        "find . -path ./DEBIAN -prune -o -type f -printf '%P\\0' | sort -z | xargs -0 md5sum",
    ]))?;
    Ok(out)
}

/// Runs lintian on the .deb, writes its report to `lintian.txt`; an error
/// (an `E:` line) fails.
fn lintian(deb: &Path, dir: &Path) -> Result<()> {
    println!("xtask: package: lintian");
    let out = Command::new("lintian")
        .args(["--info", "--display-level", ">=info", "--fail-on", "none"])
        .arg(deb)
        .output()
        .context("running lintian")?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    fs::write(dir.join("lintian.txt"), &report)?;
    let tags: Vec<&str> = report
        .lines()
        .filter(|l| l.len() > 2 && l.as_bytes()[1] == b':' && !l.starts_with("N:"))
        .collect();
    for tag in &tags {
        println!("xtask: package: lintian: {tag}");
    }
    let errors: Vec<&&str> = tags.iter().filter(|l| l.starts_with("E:")).collect();
    if !errors.is_empty() || !out.status.success() {
        bail!(
            "lintian reports {} error(s) (status {}):\n{}",
            errors.len(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The container storage xtask uses (vfs: no overlay mounts needed),
/// private to the workspace so a build leaves the machine's own alone.
pub fn storage_args(dir: &Path) -> Vec<String> {
    vec![
        "--storage-driver".to_owned(),
        "vfs".to_owned(),
        "--root".to_owned(),
        dir.join("containers/storage").display().to_string(),
        "--runroot".to_owned(),
        dir.join("containers/run").display().to_string(),
    ]
}

/// Builds the OCI image FROM scratch with buildah and writes it as an OCI
/// archive.
fn build_image(binary: &Path, version: &str, dir: &Path) -> Result<PathBuf> {
    println!("xtask: package: building the OCI image (buildah, FROM scratch)");
    // Fresh storage each time: vfs keeps every layer of every build, and
    // the archive is the output anyway (vfs mounts nothing, so a plain
    // removal is enough).
    let containers = dir.join("containers");
    if containers.exists() {
        fs::remove_dir_all(&containers)
            .with_context(|| format!("clearing {}", containers.display()))?;
    }
    let storage = storage_args(dir);
    let buildah = || {
        let mut cmd = Command::new("buildah");
        cmd.args(&storage);
        cmd
    };
    let container = output(buildah().args(["from", "scratch"]))?;
    let container = container.trim();
    let result = (|| -> Result<PathBuf> {
        run(buildah()
            .args(["copy", "--chmod", "0755", container])
            .arg(binary)
            .arg("/usr/sbin/vaultfw"))?;
        let revision = output(
            Command::new("git")
                .current_dir(workspace_root())
                .args(["rev-parse", "HEAD"]),
        )
        .map(|r| r.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
        let mut config = buildah();
        config
            .arg("config")
            .args(["--entrypoint", r#"["/usr/sbin/vaultfw"]"#])
            .args([
                "--cmd",
                "run --iface all --policy /etc/vaultfw/policy.toml --on-exit keep",
            ])
            .args(["--workingdir", "/"]);
        for (key, value) in image_labels(version, &revision) {
            config.args(["--label", &format!("{key}={value}")]);
        }
        run(config.arg(container))?;
        let image = dir.join(format!("vaultfw-{version}-oci.tar"));
        if image.exists() {
            fs::remove_file(&image)?;
        }
        run(buildah()
            .args(["commit", "--format", "oci", "--rm", container])
            .arg(format!("oci-archive:{}:vaultfw:{version}", image.display())))?;
        Ok(image)
    })();
    if result.is_err() {
        let _ = buildah().args(["rm", container]).output();
    }
    result.context("building the OCI image")
}

/// The image's OCI annotations (labels). `source` is the `origin` remote's
/// URL when the clone has one.
pub fn image_labels(version: &str, revision: &str) -> Vec<(&'static str, String)> {
    let mut labels = vec![
        ("org.opencontainers.image.title", "vaultfw".to_owned()),
        (
            "org.opencontainers.image.description",
            "XDP firewall with Azure Key Vault's network ACL semantics".to_owned(),
        ),
        ("org.opencontainers.image.version", version.to_owned()),
        ("org.opencontainers.image.revision", revision.to_owned()),
        (
            "org.opencontainers.image.licenses",
            "MIT OR Apache-2.0".to_owned(),
        ),
    ];
    let source = std::env::var("VAULTFW_SOURCE_URL").ok().or_else(|| {
        output(
            Command::new("git")
                .current_dir(workspace_root())
                .args(["remote", "get-url", "origin"]),
        )
        .ok()
        .map(|u| u.trim().to_owned())
    });
    labels.push((
        "org.opencontainers.image.source",
        source.unwrap_or_else(|| "https://vaultfw.invalid/source".to_owned()),
    ));
    labels
}

/// A command's stdout; an error naming the command if it fails.
pub fn output(cmd: &mut Command) -> Result<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_executables_are_told_from_dynamic_ones_by_files_description() {
        assert!(is_static_description(
            "ELF 64-bit LSB pie executable, x86-64, version 1 (GNU/Linux), static-pie linked, \
             BuildID[sha1]=0, for GNU/Linux 3.2.0, stripped"
        ));
        assert!(is_static_description(
            "ELF 64-bit LSB executable, x86-64, version 1 (SYSV), statically linked, stripped"
        ));
        assert!(!is_static_description(
            "ELF 64-bit LSB pie executable, x86-64, version 1 (SYSV), dynamically linked, \
             interpreter /lib64/ld-linux-x86-64.so.2, for GNU/Linux 3.2.0, stripped"
        ));
    }
}
