//! Builds the XDP program (`firewall-ebpf`) for the BPF target with the
//! nightly toolchain and bpf-linker (aya-build does the cargo invocation), so
//! the `vaultfw` binary embeds its own BPF object: the binary alone is what
//! an operator installs. `cargo xtask` makes sure the toolchain is present.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let workspace = Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow::anyhow!("firewall-agent has no parent directory"))?;
    let ebpf_dir = workspace.join("firewall-ebpf");
    // The program also compiles `firewall-common`; rebuild when it changes.
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("firewall-common").display()
    );
    commit(workspace);
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "firewall-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

/// Passes the git commit the binary is built from as `VAULTFW_COMMIT`
/// (`vaultfw_build_info`); outside a git checkout the variable stays unset
/// and the metric says "unknown".
fn commit(workspace: &Path) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(workspace)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    if let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=VAULTFW_COMMIT={commit}");
        // A new commit moves HEAD or the branch it names.
        for path in ["HEAD", "logs/HEAD"] {
            if let Some(file) = git(&["rev-parse", "--git-path", path]) {
                let file = Path::new(&file);
                let file = if file.is_absolute() {
                    file.to_owned()
                } else {
                    workspace.join(file)
                };
                println!("cargo:rerun-if-changed={}", file.display());
            }
        }
    }
}
