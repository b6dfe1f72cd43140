//! `cargo xtask`: the developer's entry point for vaultfw.
//!
//! Every command first makes sure the toolchain the BPF program needs is
//! present ([`bootstrap`]), then does its job through ordinary `cargo`
//! invocations ([`tasks`]). The alias lives in `.cargo/config.toml`.
//!
//! Exit codes: 0 success, 1 a step failed (the message says which).

// The bench driver lives with the bench programs it builds and runs.
#[path = "../../bench/driver.rs"]
mod bench;
mod bootstrap;
mod fuzz;
mod package;
mod tasks;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Build, test and demo vaultfw.
#[derive(Parser)]
#[command(name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what the BPF build needs, then build the `vaultfw` binary
    /// (its build script compiles and embeds the XDP program).
    ///
    /// Example: cargo xtask build
    Build,
    /// Build, run the unit tests, then (as root) the integration tests in
    /// network namespaces, one at a time.
    ///
    /// Arguments after `--` go to the integration test binaries.
    ///
    /// Example: cargo xtask test -- denied_source
    Test {
        /// Passed to the integration test binaries (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build, then (as root) run the demo: two namespaces, a veth pair, the
    /// agent with the example policy, an allowed and a denied client.
    ///
    /// Example: cargo xtask demo
    Demo,
    /// Run the same test binaries as root inside QEMU VMs booted on Debian's
    /// cloud kernels (6.1, 6.12): one result line per binary and a summary
    /// per kernel. Installs QEMU, busybox and cpio with apt-get if missing;
    /// caches the kernels under target/vm/cache.
    ///
    /// Arguments after `--` go to every test binary in the VM.
    ///
    /// Example: cargo xtask vm-test --kernel 6.1 -- denied_source
    VmTest(vm::VmTestArgs),
    /// Long runs: the differential test of the XDP program against the
    /// reference model on many generated frames (root), or, with
    /// `--policy-parser`, cargo-fuzz on the policy parser (installs
    /// cargo-fuzz if missing).
    ///
    /// Example: cargo xtask fuzz --frames 1000000 --seed 0x1234
    ///
    /// Example: cargo xtask fuzz --policy-parser --seconds 600
    Fuzz(fuzz::FuzzArgs),
    /// As root: vaultfw's cost per frame, receive cost on a veth pair,
    /// policy apply latency and agent memory, beside nftables, iptables
    /// with ipset and a one-lookup XDP program, in one run. Prints a
    /// Markdown table and writes target/bench/results.json. Installs clang,
    /// libbpf-dev, nftables, ipset, iptables and netsniff-ng with apt-get
    /// if missing. About 9 minutes.
    ///
    /// Example: cargo xtask bench
    Bench {
        /// Fewer runs and 1-second windows: a quick look, not for the README.
        #[arg(long)]
        quick: bool,
    },
    /// Build what an operator installs, under target/package/: the
    /// statically linked `vaultfw`, a .deb (binary, systemd unit,
    /// /etc/default/vaultfw, example policy, man pages, completions;
    /// checked by lintian) and an OCI image FROM scratch (an OCI archive,
    /// built with buildah). Installs file, lintian, buildah and podman with
    /// apt-get if missing. With --test (root), also tests them.
    ///
    /// Example: cargo xtask package --test
    Package(package::PackageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C reaches the whole foreground process group: the child we wait
    // for cleans up after itself (the demo removes its namespaces), so xtask
    // must not die first and hand the terminal back mid-cleanup. A no-op
    // handler (unlike SIG_IGN) is reset to the default in children on exec.
    tasks::keep_running_on_sigint();
    let result = match cli.command {
        Command::Build => tasks::build().map(|bin| {
            println!("xtask: built {}", bin.display());
        }),
        Command::Test { args } => tasks::test(&args),
        Command::Demo => tasks::demo(),
        Command::VmTest(args) => vm::vm_test(args),
        Command::Fuzz(args) => fuzz::fuzz(args),
        Command::Bench { quick } => bench::bench(&bench::BenchOptions { quick }),
        Command::Package(args) => package::package(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
