//! `vaultfw-bench-veth`: the on-the-wire half of `cargo xtask bench` (root).
//!
//! Two namespaces joined by a veth pair (the harness's [`Topology`]); the
//! client floods 64-byte TCP SYNs to port 443 from random sources with
//! trafgen, and the server filters them with, in turn:
//!
//! - XDP: a drop-everything program (the floor), the C one-lookup program
//!   from `bench/xdp/`, and the real `vaultfw run` (native XDP);
//! - nftables: a netdev ingress `drop` (the floor), then an interval set;
//! - iptables raw PREROUTING: `-j DROP` (the floor), then an ipset hash:net.
//!
//! The figure is the receiver's CPU time per packet: softirq time over all
//! CPUs divided by the packets the client veth delivered, and the same
//! above the hook's own floor. It also reports the agent's memory and CPU
//! idle and under the flood, and how long the peers take to load and
//! replace their sets (beside vaultfw's apply latency from bench-program).
//!
//! Writes one JSON document to `--out`. Everything it creates (namespaces,
//! veth pair, rules, sets, the agent and its pins) is removed on success,
//! failure and Ctrl-C.

mod cli_change;
mod measure;
mod memory;
mod peers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use vaultfw_tests::agent::AgentOptions;
use vaultfw_tests::netns::leftover_namespaces;
use vaultfw_tests::{Agent, NetNs, Topology, cleanup};

use measure::Window;
use peers::{Ipt, Nft, XdpPeer};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

struct Args {
    objects: PathBuf,
    prefix_dir: PathBuf,
    out: PathBuf,
    seconds: f64,
    runs: usize,
    counts: Vec<usize>,
    apply_counts: Vec<usize>,
    /// `--only cli_change`: only the one-rule CLI change rows (a quick
    /// look while working on the apply path).
    only_cli_change: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        objects: PathBuf::from("target/bench/obj"),
        prefix_dir: PathBuf::from("target/bench"),
        out: PathBuf::from("target/bench/veth.json"),
        seconds: 3.0,
        runs: 3,
        counts: vec![1_000, 10_000, 100_000],
        apply_counts: vec![254, 10_000, 100_000],
        only_cli_change: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let counts = |v: &str| -> Result<Vec<usize>, String> {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().map_err(|_| format!("bad count {s:?}")))
                .collect()
        };
        match flag.as_str() {
            "--objects" => args.objects = value.into(),
            "--prefix-dir" => args.prefix_dir = value.into(),
            "--out" => args.out = value.into(),
            "--seconds" => args.seconds = value.parse().map_err(|_| "bad --seconds")?,
            "--runs" => args.runs = value.parse().map_err(|_| "bad --runs")?,
            "--counts" => args.counts = counts(&value)?,
            "--apply-counts" => args.apply_counts = counts(&value)?,
            "--only" if value == "cli_change" => args.only_cli_change = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    install_ctrl_c_cleanup();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("vaultfw-bench-veth needs root (namespaces, XDP, nftables)");
        return ExitCode::FAILURE;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vaultfw-bench-veth: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = std::panic::catch_unwind(|| run(&args));
    let leftovers = leftover_namespaces();
    if !leftovers.is_empty() {
        eprintln!("bench-veth: namespaces left behind: {leftovers:?}");
        return ExitCode::FAILURE;
    }
    match outcome {
        Ok(doc) => {
            std::fs::write(&args.out, serde_json::to_vec_pretty(&doc).expect("JSON"))
                .unwrap_or_else(|e| panic!("writing {}: {e}", args.out.display()));
            eprintln!("bench-veth: wrote {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!("bench-veth: stopped early (see the message above); everything removed");
            ExitCode::FAILURE
        }
    }
}

/// Median, min, max of runs.
fn summary(runs: &[f64]) -> Value {
    let mut s = runs.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    json!({ "median": median, "min": s[0], "max": s[n - 1], "runs": runs })
}

fn median(runs: &[f64]) -> f64 {
    summary(runs)["median"].as_f64().expect("number")
}

/// One receive row from its windows.
fn row(
    filter: &str,
    hook: &str,
    prefixes: Option<usize>,
    windows: &[Window],
    floor: Option<f64>,
) -> Value {
    let per_packet: Vec<f64> = windows.iter().map(Window::ns_per_packet).collect();
    let mpps: Vec<f64> = windows.iter().map(Window::mpps).collect();
    let m = median(&per_packet);
    let above = floor.map(|f| {
        let runs: Vec<f64> = per_packet.iter().map(|x| x - f).collect();
        summary(&runs)
    });
    eprintln!(
        "bench-veth: {filter:<24} {:>7} prefixes: {m:7.1} ns/packet{} at {:.2} Mpps",
        prefixes.map_or("-".to_owned(), |p| p.to_string()),
        floor.map_or(String::new(), |f| format!(
            " ({:+.1} above the floor)",
            m - f
        )),
        median(&mpps)
    );
    json!({
        "filter": filter,
        "hook": hook,
        "prefixes": prefixes,
        "ns_per_packet": summary(&per_packet),
        "above_floor": above,
        "mpps": summary(&mpps),
        "packets": windows.iter().map(|w| w.packets).sum::<u64>(),
    })
}

fn mac_of(ns: &NetNs, dev: &str) -> [u8; 6] {
    let json = ns.ip(&["-j", "link", "show", "dev", dev]);
    let links: Value = serde_json::from_str(&json).expect("ip -j output");
    let text = links[0]["address"].as_str().expect("a MAC address");
    let mut mac = [0u8; 6];
    for (i, part) in text.split(':').enumerate() {
        mac[i] = u8::from_str_radix(part, 16).expect("hex");
    }
    mac
}

/// The agent's policy: default Deny, `prefixes`, TCP 443.
fn policy(prefixes: &[String]) -> String {
    let mut text = format!(
        "default_action = \"Deny\"\nbypass = \"None\"\nlimits = {{ ip_rules = {}, virtual_network_rules = 1 }}\nip_rules = [\n",
        prefixes.len()
    );
    for p in prefixes {
        text.push_str(&format!("  \"{p}\",\n"));
    }
    text.push_str("]\n\n[data_plane]\ntcp_ports = [443]\n");
    text
}

fn run(args: &Args) -> Value {
    let topo = Topology::new();
    if args.only_cli_change {
        let sdev = topo.server_veth().to_owned();
        return json!({ "cli_change": cli_change::run(&topo.server, &sdev, args) });
    }
    // No route back to the random sources: an allowed SYN's RST is dropped
    // at the route lookup instead of resolving a neighbour per source.
    topo.server.ip(&["route", "del", "default"]);
    let (client, server) = (&topo.client, &topo.server);
    let (cdev, sdev) = (topo.client_veth().to_owned(), topo.server_veth().to_owned());
    let config_dir = tempfile::tempdir().expect("a temp dir");
    let config = config_dir.path().join("syn.trafgen");
    std::fs::write(
        &config,
        measure::trafgen_config(mac_of(client, &cdev), mac_of(server, &sdev)),
    )
    .expect("writing the trafgen config");
    let flood = |agent: Option<u32>| {
        measure::flood_windows(client, &cdev, &config, agent, args.seconds, args.runs)
    };
    let iptables = peers::iptables();
    let mut rows = Vec::new();
    let mut agent_rows = Vec::new();

    eprintln!("bench-veth: floors (drop everything at each hook)");
    let xdp_floor = {
        let _p = XdpPeer::attach(
            server,
            &sdev,
            &args.objects.join("drop.o"),
            "bench_drop",
            &[],
        );
        flood(None)
    };
    let nft_floor = {
        let _n = Nft::drop_all(server, &sdev);
        flood(None)
    };
    let ipt_floor = {
        let _i = Ipt::drop_all(server);
        flood(None)
    };
    let floors = [
        median(
            &xdp_floor
                .iter()
                .map(Window::ns_per_packet)
                .collect::<Vec<_>>(),
        ),
        median(
            &nft_floor
                .iter()
                .map(Window::ns_per_packet)
                .collect::<Vec<_>>(),
        ),
        median(
            &ipt_floor
                .iter()
                .map(Window::ns_per_packet)
                .collect::<Vec<_>>(),
        ),
    ];
    rows.push(row("xdp_drop_floor", "xdp", None, &xdp_floor, None));
    rows.push(row(
        "nft_drop_floor",
        "nft_netdev_ingress",
        None,
        &nft_floor,
        None,
    ));
    rows.push(row(
        &format!("{iptables}_drop_floor"),
        "iptables_raw_prerouting",
        None,
        &ipt_floor,
        None,
    ));

    for &count in &args.counts {
        let prefixes = peers::read_prefixes(&args.prefix_dir, count);
        let parsed: Vec<(u32, [u8; 4])> = prefixes.iter().map(|p| peers::parse_prefix(p)).collect();

        for (filter, lookup) in [("vaultfw", "trie"), ("vaultfw_compiled", "compiled")] {
            eprintln!("bench-veth: {count} prefixes: vaultfw run --lookup {lookup} (native XDP)");
            let options = AgentOptions {
                stats_interval_s: 10,
                extra_args: ["--xdp-mode", "native", "--lookup", lookup]
                    .map(str::to_owned)
                    .to_vec(),
                ..AgentOptions::iface(&sdev)
            };
            let mut agent = Agent::start_with(server, &policy(&prefixes), options);
            agent.wait_ready();
            let pid = agent.pid();
            std::thread::sleep(std::time::Duration::from_millis(500));
            let idle = measure::window(client, &cdev, Some(pid), args.seconds);
            let tables = memory::table_sets(&agent.paths().pin_dir);
            let windows = flood(Some(pid));
            let cpu = |w: &Window| w.agent_cpu_ns.unwrap_or(0) as f64 / (w.seconds * 1e9) * 100.0;
            let rss = |w: &Window| w.agent_rss_kib.unwrap_or(0) as f64 / 1024.0;
            agent_rows.push(json!({
                "prefixes": count,
                "lookup": lookup,
                "idle": { "rss_mib": rss(&idle), "cpu_percent": cpu(&idle), "seconds": idle.seconds },
                "table_memory": tables,
                "flood": {
                    "rss_mib": summary(&windows.iter().map(rss).collect::<Vec<_>>()),
                    "cpu_percent": summary(&windows.iter().map(cpu).collect::<Vec<_>>()),
                    "mpps": summary(&windows.iter().map(Window::mpps).collect::<Vec<_>>()),
                },
            }));
            eprintln!(
                "bench-veth: agent (--lookup {lookup}) at {count} prefixes: idle {:.1} MiB, {:.2}% CPU; flood {:.1} MiB, {:.2}% CPU",
                rss(&idle),
                cpu(&idle),
                median(&windows.iter().map(rss).collect::<Vec<_>>()),
                median(&windows.iter().map(cpu).collect::<Vec<_>>())
            );
            let stats = agent.stop();
            eprintln!(
                "bench-veth: agent counted deny_no_match {} allow_ip_rule {}",
                stats.get("deny_no_match"),
                stats.get("allow_ip_rule")
            );
            rows.push(row(filter, "xdp", Some(count), &windows, Some(floors[0])));
        }

        let windows = {
            let _p = XdpPeer::attach(
                server,
                &sdev,
                &args.objects.join("one_lookup.o"),
                "bench_one_lookup",
                &parsed,
            );
            flood(None)
        };
        rows.push(row(
            "one_lookup_c",
            "xdp",
            Some(count),
            &windows,
            Some(floors[0]),
        ));

        let windows = {
            let (_n, _) = Nft::with_set(server, &sdev, &prefixes);
            flood(None)
        };
        rows.push(row(
            "nft_interval_set",
            "nft_netdev_ingress",
            Some(count),
            &windows,
            Some(floors[1]),
        ));

        let windows = {
            let (_i, _) = Ipt::with_ipset(server, &prefixes);
            flood(None)
        };
        rows.push(row(
            &format!("{iptables}_ipset_hash_net"),
            "iptables_raw_prerouting",
            Some(count),
            &windows,
            Some(floors[2]),
        ));
    }

    let peer_apply = peer_apply(server, &sdev, args);
    let cli_change = cli_change::run(server, &sdev, args);
    json!({
        "cli_change": cli_change,
        "receive": { "seconds_per_window": args.seconds, "windows": args.runs, "rows": rows, "iptables": iptables },
        "agent": agent_rows,
        "peer_apply": peer_apply,
    })
}

/// How long nftables and ipset take to load a set of N prefixes and to
/// replace it (flush + add in one nft transaction; ipset restore into a
/// new set + swap).
fn peer_apply(server: &NetNs, sdev: &str, args: &Args) -> Vec<Value> {
    let mut out = Vec::new();
    for &count in &args.apply_counts {
        let prefixes = peers::read_prefixes(&args.prefix_dir, count);
        let runs = if count > 20_000 { 1 } else { args.runs };
        let (mut nft_load, mut nft_replace, mut ipset_load, mut ipset_replace) =
            (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            let (nft, ms) = Nft::with_set(server, sdev, &prefixes);
            nft_load.push(ms);
            let script = format!(
                "flush set netdev vfwbench allowed\nadd element netdev vfwbench allowed {{ {} }}\n",
                prefixes.join(", ")
            );
            nft_replace.push(peers::run_in(server, "nft", &["-f", "-"], Some(&script)));
            drop(nft);
            ipset_load.push(peers::run_in(
                server,
                "ipset",
                &["restore"],
                Some(&peers::ipset_script("vfwapply", &prefixes)),
            ));
            let script = format!(
                "{}swap vfwapply vfwapply2\ndestroy vfwapply2\n",
                peers::ipset_script("vfwapply2", &prefixes)
            );
            ipset_replace.push(peers::run_in(server, "ipset", &["restore"], Some(&script)));
            peers::run_in(server, "ipset", &["destroy", "vfwapply"], None);
        }
        eprintln!(
            "bench-veth: peers' apply at {count}: nft load {:.0} ms, replace {:.0} ms; ipset load {:.0} ms, replace {:.0} ms",
            median(&nft_load),
            median(&nft_replace),
            median(&ipset_load),
            median(&ipset_replace)
        );
        out.push(json!({
            "rules": count,
            "nft_load_ms": summary(&nft_load),
            "nft_replace_ms": summary(&nft_replace),
            "ipset_load_ms": summary(&ipset_load),
            "ipset_replace_ms": summary(&ipset_replace),
        }));
    }
    out
}

fn install_ctrl_c_cleanup() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !INTERRUPTED.load(Ordering::SeqCst) {
            default_hook(info);
        }
    }));
    let result = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            return;
        }
        eprintln!("\ninterrupted: cleaning up");
        for done in cleanup::cleanup_everything() {
            eprintln!("  {done}");
        }
        std::process::exit(130);
    });
    if let Err(err) = result {
        eprintln!("warning: no Ctrl-C handler ({err}); an interrupted bench may leave namespaces");
    }
}
