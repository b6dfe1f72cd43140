//! The receivers: XDP programs (vaultfw's agent, and the C objects from
//! `bench/xdp/` loaded with aya), nftables with an interval set in a netdev
//! ingress hook, and iptables raw PREROUTING with an ipset hash:net; each
//! with its drop-everything floor. Everything lives in the server
//! namespace and goes with it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use aya::maps::LpmTrie;
use aya::maps::lpm_trie::Key;
use aya::programs::{Xdp, xdp::XdpMode};
use aya::{Ebpf, EbpfLoader};
use vaultfw_tests::{NetNs, in_netns};

/// Runs `cmd args` inside `ns` (`ip netns exec`), feeding `stdin`; panics
/// with its stderr on failure; returns the wall time in ms.
pub fn run_in(ns: &NetNs, cmd: &str, args: &[&str], stdin: Option<&str>) -> f64 {
    let t0 = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns.name(), cmd])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd}: {e}"));
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("feeding {cmd}: {e}"));
    }
    let out = child.wait_with_output().expect("waiting");
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    t0.elapsed().as_secs_f64() * 1e3
}

/// An XDP object from `bench/xdp/` attached natively to `dev` in `ns`;
/// detached on drop.
pub struct XdpPeer {
    _ebpf: Ebpf,
}

impl XdpPeer {
    /// `object` (`drop.o` or `one_lookup.o`), program `name`, with
    /// `prefixes` in BENCH_RULES when it has that map.
    pub fn attach(
        ns: &NetNs,
        dev: &str,
        object: &Path,
        name: &str,
        prefixes: &[(u32, [u8; 4])],
    ) -> XdpPeer {
        let mut loader = EbpfLoader::new();
        loader.map_max_entries("BENCH_RULES", (prefixes.len() as u32).max(1));
        let mut ebpf = loader
            .load_file(object)
            .unwrap_or_else(|e| panic!("loading {}: {e}", object.display()));
        if !prefixes.is_empty() {
            let mut trie: LpmTrie<_, [u8; 4], u32> =
                LpmTrie::try_from(ebpf.map_mut("BENCH_RULES").expect("BENCH_RULES"))
                    .expect("an LPM trie");
            for (i, (len, addr)) in prefixes.iter().enumerate() {
                trie.insert(&Key::new(*len, *addr), i as u32, 0)
                    .expect("filling BENCH_RULES");
            }
        }
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("{} has no {name}", object.display()))
            .try_into()
            .expect("an XDP program");
        prog.load().expect("loading the XDP program");
        in_netns(ns, || {
            prog.attach(dev, XdpMode::Driver)
                .unwrap_or_else(|e| panic!("attaching {name} to {dev} (native): {e}"))
        });
        XdpPeer { _ebpf: ebpf }
    }
}

/// The iptables binary: the legacy (x_tables) one when installed, which is
/// the classic ipset pairing; else Debian's default (nf_tables backend).
pub fn iptables() -> &'static str {
    let legacy = Command::new("iptables-legacy")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if legacy {
        "iptables-legacy"
    } else {
        "iptables"
    }
}

/// nftables: table `vfwbench`, netdev ingress on `dev`.
pub struct Nft<'a> {
    ns: &'a NetNs,
}

impl<'a> Nft<'a> {
    /// Drops everything at the hook (the floor).
    pub fn drop_all(ns: &'a NetNs, dev: &str) -> Nft<'a> {
        let script = format!(
            "table netdev vfwbench {{\n  chain ingress {{\n    type filter hook ingress device \"{dev}\" priority 0; policy accept;\n    counter drop\n  }}\n}}\n"
        );
        run_in(ns, "nft", &["-f", "-"], Some(&script));
        Nft { ns }
    }

    /// Drops TCP to 443 unless the source is in an interval set of
    /// `prefixes`; returns the load time (ms) too.
    pub fn with_set(ns: &'a NetNs, dev: &str, prefixes: &[String]) -> (Nft<'a>, f64) {
        let script = format!(
            "table netdev vfwbench {{\n  set allowed {{\n    type ipv4_addr; flags interval; auto-merge;\n    elements = {{ {} }}\n  }}\n  chain ingress {{\n    type filter hook ingress device \"{dev}\" priority 0; policy accept;\n    ip protocol tcp tcp dport 443 ip saddr != @allowed counter drop\n  }}\n}}\n",
            prefixes.join(", ")
        );
        let ms = run_in(ns, "nft", &["-f", "-"], Some(&script));
        (Nft { ns }, ms)
    }
}

impl Drop for Nft<'_> {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                self.ns.name(),
                "nft",
                "delete",
                "table",
                "netdev",
                "vfwbench",
            ])
            .output();
    }
}

/// iptables raw PREROUTING (+ ipset `vfwbench`).
pub struct Ipt<'a> {
    ns: &'a NetNs,
    ipset: bool,
}

impl<'a> Ipt<'a> {
    pub fn drop_all(ns: &'a NetNs) -> Ipt<'a> {
        run_in(
            ns,
            iptables(),
            &["-t", "raw", "-A", "PREROUTING", "-j", "DROP"],
            None,
        );
        Ipt { ns, ipset: false }
    }

    /// Drops TCP to 443 unless the source is in a hash:net set; returns
    /// the ipset load time (ms) too.
    pub fn with_ipset(ns: &'a NetNs, prefixes: &[String]) -> (Ipt<'a>, f64) {
        let ms = run_in(
            ns,
            "ipset",
            &["restore"],
            Some(&ipset_script("vfwbench", prefixes)),
        );
        run_in(
            ns,
            iptables(),
            &[
                "-t",
                "raw",
                "-A",
                "PREROUTING",
                "-p",
                "tcp",
                "--dport",
                "443",
                "-m",
                "set",
                "!",
                "--match-set",
                "vfwbench",
                "src",
                "-j",
                "DROP",
            ],
            None,
        );
        (Ipt { ns, ipset: true }, ms)
    }
}

/// `ipset restore` input creating `name` with `prefixes`.
pub fn ipset_script(name: &str, prefixes: &[String]) -> String {
    let mut text = format!(
        "create {name} hash:net family inet hashsize 4096 maxelem {}\n",
        (prefixes.len() * 2).max(65536)
    );
    for p in prefixes {
        text.push_str(&format!("add {name} {p}\n"));
    }
    text
}

impl Drop for Ipt<'_> {
    fn drop(&mut self) {
        let exec = |args: &[&str]| {
            let _ = Command::new("ip")
                .args(["netns", "exec", self.ns.name()])
                .args(args)
                .output();
        };
        exec(&[iptables(), "-t", "raw", "-F", "PREROUTING"]);
        if self.ipset {
            exec(&["ipset", "destroy", "vfwbench"]);
        }
    }
}

/// The prefix list the program bench wrote (`prefixes-N.txt`).
pub fn read_prefixes(dir: &Path, count: usize) -> Vec<String> {
    let path: PathBuf = dir.join(format!("prefixes-{count}.txt"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {} (run bench-program first): {e}", path.display()));
    let prefixes: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(
        prefixes.len(),
        count,
        "{} holds the wrong count",
        path.display()
    );
    prefixes
}

/// "a.b.c.d/len" → (len, octets).
pub fn parse_prefix(p: &str) -> (u32, [u8; 4]) {
    let (addr, len) = p.split_once('/').expect("a/len");
    let addr: std::net::Ipv4Addr = addr.parse().expect("an IPv4 address");
    (len.parse().expect("a prefix length"), addr.octets())
}
