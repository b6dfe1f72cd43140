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
