//! One-rule CLI changes end to end: `vaultfw network-rule add` and
//! `network-rule remove` against a running daemon that serves N IP rules,
//! timed from the CLI process's start to its exit. When it exits the
//! daemon has validated the change, written the policy file back
//! (atomically, fsync included), written the spare table set and flipped.
//!
//! Each change is timed alone (`add_ms`, `remove_ms`: the operator's
//! command, [`SETTLED`] after the one before) and in a burst of changes
//! sent back to back (`burst_add_ms`, `burst_remove_ms`): a change that
//! comes within an RCU grace period of the previous flip waits for that
//! grace period before it rewrites the spare set (docs/DESIGN.md,
//! "Double-buffered table sets").

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use vaultfw_tests::agent::AgentOptions;
use vaultfw_tests::{Agent, NetNs};

use crate::{Args, median, peers, summary};

/// Longer than an RCU grace period (a few ms to ~15 ms here): a change
/// after this pause finds the spare set free to write.
const SETTLED: Duration = Duration::from_millis(60);

/// Rows `{ lookup, rules, add_ms, remove_ms, burst_add_ms,
/// burst_remove_ms }` for each `--lookup` and each of `args.apply_counts`.
pub fn run(server: &NetNs, sdev: &str, args: &Args) -> Vec<Value> {
    let mut out = Vec::new();
    for lookup in ["trie", "compiled"] {
        for &count in &args.apply_counts {
            out.push(at_count(server, sdev, args, lookup, count));
        }
    }
    out
}

fn at_count(server: &NetNs, sdev: &str, args: &Args, lookup: &str, count: usize) -> Value {
    {
        let prefixes = peers::read_prefixes(&args.prefix_dir, count);
        let runs = args.runs.max(3) * 2;
        // Room for the rules added (TEST-NET-2: no random prefix is there).
        let added: Vec<String> = (1..=runs).map(|i| format!("198.51.100.{i}")).collect();
        let mut text = format!(
            "default_action = \"Deny\"\nbypass = \"None\"\n\
             limits = {{ ip_rules = {}, virtual_network_rules = 1 }}\nip_rules = [\n",
            count + runs + 1
        );
        for p in &prefixes {
            text.push_str(&format!("  \"{p}\",\n"));
        }
        text.push_str("]\n\n[data_plane]\ntcp_ports = [443]\n");
        eprintln!("bench-veth: {count} rules, --lookup {lookup}: one-rule CLI changes");
        let options = AgentOptions {
            stats_interval_s: 10,
            extra_args: vec!["--lookup".into(), lookup.into()],
            ..AgentOptions::iface(sdev)
        };
        let mut agent = Agent::start_with(server, &text, options);
        agent.wait_ready();
        let change = |verb: &str, address: &str| -> f64 {
            let t = Instant::now();
            let output = agent.cli(&["network-rule", verb, "--ip-address", address]);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            assert!(
                output.status.success(),
                "network-rule {verb} {address} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            ms
        };
        // The first change after a start reads and parses the whole file
        // (the daemon keeps it from then on): not measured.
        change("add", "198.51.100.254");
        change("remove", "198.51.100.254");
        let timed = |pause: Duration| {
            let (mut add, mut remove) = (Vec::new(), Vec::new());
            for address in &added {
                std::thread::sleep(pause);
                add.push(change("add", address));
            }
            for address in &added {
                std::thread::sleep(pause);
                remove.push(change("remove", address));
            }
            (add, remove)
        };
        let (add, remove) = timed(SETTLED);
        let (burst_add, burst_remove) = timed(Duration::ZERO);
        drop(agent);
        eprintln!(
            "bench-veth: one-rule CLI change at {count} rules, --lookup {lookup}: add {:.1} ms, \
             remove {:.1} ms; back to back add {:.1} ms, remove {:.1} ms",
            median(&add),
            median(&remove),
            median(&burst_add),
            median(&burst_remove)
        );
        json!({
            "lookup": lookup,
            "rules": count,
            "add_ms": summary(&add),
            "remove_ms": summary(&remove),
            "burst_add_ms": summary(&burst_add),
            "burst_remove_ms": summary(&burst_remove),
        })
    }
}
