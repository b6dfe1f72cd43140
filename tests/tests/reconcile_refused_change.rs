//! Declared first, then enforced: a change the disk refuses (the policy
//! file cannot be written) never reaches the kernel — the denied source
//! stays dropped, the generation stays, every rule keeps its hit counters,
//! the file keeps its text — and the same change goes through once the
//! disk has room again.

use vaultfw_tests::cli::exit;
use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, AgentOptions, AgentPaths, DEADLINE_LEAD, DENIED_SRC, PolicyFile, TcpServer,
    Topology,
};

// Deny by default; the office (203.0.113.0/24, ALLOWED_SRC's range) in.
use vaultfw_tests::OFFICE_POLICY as POLICY;

/// A daemon on `topo`'s server side serving [`POLICY`] from a file on a
/// 256 KiB tmpfs (to fill), run with `extra_args`.
fn serving_on_a_small_disk(topo: &Topology, extra_args: Vec<String>) -> Agent {
    let policy = PolicyFile::on_small_tmpfs(POLICY, 256);
    let paths = AgentPaths::new(&policy);
    let options = AgentOptions {
        extra_args,
        ..AgentOptions::iface(topo.server_veth())
    };
    let mut agent = Agent::spawn(&topo.server, policy, paths, options);
    agent.wait_ready();
    agent.wait_serving();
    agent
}

/// Sends `change` and checks that it is refused saying nothing changed
/// (`context` heads the failure message).
fn assert_refused(agent: &Agent, change: &[&str], context: &str) {
    let refused = agent.cli_json(change);
    assert_ne!(
        refused.code,
        Some(exit::OK),
        "{context} a full disk refuses {change:?}; {}",
        refused.context()
    );
    assert!(
        refused.error_message().contains("nothing changed"),
        "{context} the refusal says nothing changed; {}",
        refused.context()
    );
}

#[test]
fn change_refused_by_a_full_disk_never_reaches_the_kernel() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving_on_a_small_disk(&topo, Vec::new());
    for _ in 0..3 {
        assert_connects(&topo, &agent, ALLOWED_SRC, 443, "before the disk fills");
    }
    let generation = agent.generation();
    let hits = agent.rule_packets("203.0.113.0/24");
    assert!(hits > 0, "the allowed connections hit the rule");

    agent.policy().fill_disk();
    for change in [
        vec!["update", "--default-action", "Allow"],
        vec![
            "network-rule",
            "add",
            "--ip-address",
            &DENIED_SRC.to_string(),
        ],
        vec!["network-rule", "remove", "--ip-address", "203.0.113.0/24"],
    ] {
        assert_refused(&agent, &change, "");
        assert_dropped(&topo, &agent, DENIED_SRC, 443, "after a refused change");
    }
    assert_eq!(
        agent.generation(),
        generation,
        "a refused change costs no generation"
    );
    assert_eq!(
        agent.rule_packets("203.0.113.0/24"),
        hits,
        "a refused change keeps every counter"
    );
    let text = std::fs::read_to_string(agent.policy().path()).expect("reading the policy file");
    assert_eq!(text, POLICY, "the policy file keeps its text");
    assert_connects(
        &topo,
        &agent,
        ALLOWED_SRC,
        443,
        "the served policy is unchanged",
    );
    let hits = agent.rule_packets("203.0.113.0/24");

    std::fs::remove_file(agent.policy().path().with_file_name("filler")).expect("freeing the disk");
    agent
        .cli_json(&[
            "network-rule",
            "add",
            "--ip-address",
            &DENIED_SRC.to_string(),
        ])
        .ok();
    assert_connects(
        &topo,
        &agent,
        DENIED_SRC,
        443,
        "the change goes through once the disk has room",
    );
    assert_eq!(
        agent.generation(),
        generation + 1,
        "one generation for one change"
    );
    assert_eq!(
        agent.rule_packets("203.0.113.0/24"),
        hits,
        "the rule keeps its counters across a change of another rule"
    );
    agent.stop();
}

/// A rule that expires while the policy file cannot be written (a full
/// disk; a read-only ConfigMap does the same) leaves the kernel anyway —
/// the file reads without it, as an expired rule is left out when parsed
/// — once: the daemon does not spin retrying the write.
#[test]
fn a_rule_expiring_on_a_full_disk_leaves_the_kernel_once() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving_on_a_small_disk(&topo, Vec::new());
    let expires = std::time::SystemTime::now() + DEADLINE_LEAD;
    let added = agent.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        &DENIED_SRC.to_string(),
        "--expires-at",
        &humantime::format_rfc3339_seconds(expires).to_string(),
    ]);
    assert_eq!(added.ok()["changed"], true, "{}", added.context());
    assert_connects(&topo, &agent, DENIED_SRC, 443, "before its expiry");
    let mark = agent.log_mark();
    agent.policy().fill_disk();
    // Its removal from the maps is logged after the file's refusal; the
    // program's own deadline check reads a coarse clock, which may still
    // be a tick short of the deadline when the refusal is logged.
    for said in [
        "the expired rules stay in the policy file",
        "rule expired and was removed",
    ] {
        agent.wait_log(
            mark,
            said,
            DEADLINE_LEAD + std::time::Duration::from_secs(15),
            |l| l["message"].as_str().is_some_and(|m| m.starts_with(said)),
        );
    }
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after its expiry");
    assert_eq!(
        agent.show()["ip_rules"],
        1,
        "the daemon serves the policy without the expired rule"
    );
    let lines = agent.log_lines();
    let about = |needle: &str| {
        lines
            .iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)))
            .count()
    };
    assert_eq!(
        about("the expired rules stay in the policy file"),
        1,
        "said once:\n{}",
        agent.output()
    );
    assert_eq!(
        about("removing the expired rules failed"),
        0,
        "{}",
        agent.output()
    );
    agent.stop();
}

/// A CLI change of IP rules writes the policy file beside the spare table
/// set, and its flip waits for that write: on a full disk it is refused
/// like any other change — the spare set it wrote is never served, and a
/// change the tables do not show (a comment) is not acknowledged — and
/// the changes after it, written over that spare set, serve exactly what
/// they declare. Under both lookups.
#[test]
fn an_ip_rule_change_refused_by_a_full_disk_after_its_table_write_is_never_served() {
    for lookup in ["trie", "compiled"] {
        refused_beside_the_table_write(lookup);
    }
}

fn refused_beside_the_table_write(lookup: &str) {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving_on_a_small_disk(&topo, vec!["--lookup".into(), lookup.into()]);
    let filler = agent.policy().path().with_file_name("filler");
    let denied = DENIED_SRC.to_string();
    // After a change the daemon keeps the file it wrote: the next IP-rule
    // change is an edit of it, written beside the table write. (A refused
    // change drops the kept file: each refusal below follows a success.)
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "192.0.2.99"])
        .ok();
    let generation = agent.generation();
    let text = std::fs::read_to_string(agent.policy().path()).expect("reading the policy file");
    agent.policy().fill_disk();
    let under = format!("--lookup {lookup}");
    assert_refused(
        &agent,
        &["network-rule", "add", "--ip-address", &denied],
        &under,
    );
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after the refused change");
    assert_eq!(agent.generation(), generation, "--lookup {lookup}");
    let after = std::fs::read_to_string(agent.policy().path()).expect("reading the policy file");
    assert_eq!(
        after, text,
        "--lookup {lookup}: the policy file keeps its text"
    );

    // A change the tables do not show (a comment) is refused the same
    // way, not acknowledged with the file unwritten.
    std::fs::remove_file(&filler).expect("freeing the disk");
    agent
        .cli_json(&["network-rule", "add", "--ip-address", "192.0.2.98"])
        .ok();
    let text = std::fs::read_to_string(agent.policy().path()).expect("reading the policy file");
    agent.policy().fill_disk();
    assert_refused(
        &agent,
        &[
            "network-rule",
            "add",
            "--ip-address",
            "192.0.2.99",
            "--comment",
            "renewed",
        ],
        &under,
    );
    let after = std::fs::read_to_string(agent.policy().path()).expect("reading the policy file");
    assert_eq!(
        after, text,
        "--lookup {lookup}: the policy file keeps its text"
    );

    std::fs::remove_file(&filler).expect("freeing the disk");
    agent
        .cli_json(&["network-rule", "add", "--ip-address", &denied])
        .ok();
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the change goes through");
    agent
        .cli_json(&["network-rule", "remove", "--ip-address", &denied])
        .ok();
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after its removal");
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "the office stays in");
    assert_eq!(agent.generation(), generation + 3, "--lookup {lookup}");
    agent.stop();
}

/// A confirm the disk refuses leaves the apply on probation: the refusal
/// says the applied generation is served until its deadline (not that
/// nothing changed), the kernel keeps serving it, and a confirm once the
/// disk has room keeps it.
#[test]
fn a_confirm_refused_by_a_full_disk_leaves_the_apply_served_on_probation() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let agent = serving_on_a_small_disk(&topo, Vec::new());
    let admitting = POLICY.replace(
        "ip_rules = [\"203.0.113.0/24\"]",
        &format!("ip_rules = [\"203.0.113.0/24\", \"{DENIED_SRC}\"]"),
    );
    let applied_file = PolicyFile::named("applied.toml", &admitting);
    let applied = agent
        .cli_json(&["apply", applied_file.path_str(), "--confirm-within", "120s"])
        .ok();
    let generation = applied["generation"].as_u64().expect("a generation");
    assert_connects(&topo, &agent, DENIED_SRC, 443, "the applied policy");

    agent.policy().fill_disk();
    let refused = agent.cli_json(&["confirm"]);
    assert_ne!(refused.code, Some(exit::OK), "{}", refused.context());
    let message = refused.error_message();
    assert!(
        message.contains("not confirmed")
            && message.contains(&format!("applied generation {generation} on probation"))
            && !message.contains("nothing changed"),
        "{}",
        refused.context()
    );
    assert_connects(&topo, &agent, DENIED_SRC, 443, "still on probation");

    std::fs::remove_file(agent.policy().path().with_file_name("filler")).expect("freeing the disk");
    agent.cli_json(&["confirm"]).ok();
    let text = std::fs::read_to_string(agent.policy().path()).expect("reading the policy file");
    assert!(text.contains(&DENIED_SRC.to_string()), "{text}");
    assert_eq!(agent.generation(), generation);
    agent.stop();
}

/// [`POLICY`] with `ip_rules` more, limits of 10 IP rules and 5 subnet
/// rules, and a subnet rule of `addresses` single addresses (none
/// adjacent, so each takes the compiled table the same few cells).
fn filling_policy(addresses: usize, ip_rules: &[&str]) -> String {
    let singles: Vec<String> = (0..addresses as u32)
        .map(|i| {
            let [_, b, c, d] = (0x0A01_0000 + 2 * i).to_be_bytes();
            format!("\"10.{b}.{c}.{d}\"")
        })
        .collect();
    let rules: Vec<String> = ["203.0.113.0/24"]
        .iter()
        .chain(ip_rules)
        .map(|r| format!("\"{r}\""))
        .collect();
    format!(
        "default_action = \"Deny\"\nbypass = \"None\"\n\
         limits = {{ ip_rules = 10, virtual_network_rules = 5 }}\nip_rules = [{}]\n\n\
         [data_plane]\ntcp_ports = [443]\n\n[[virtual_network_rules]]\n\
         id = \"vnet/subnets/fill\"\naddress_prefixes = [{}]\nendpoint = {{ vlan = 10 }}\n",
        rules.join(", "),
        singles.join(", ")
    )
}

/// `Err((cells needed, cells held))` when `vaultfw check --lookup
/// compiled` finds that `policy`'s compiled table does not fit its maps.
fn compiled_room(policy: &str) -> Result<(), (u64, u64)> {
    let file = PolicyFile::new(policy);
    let src = DENIED_SRC.to_string();
    let mut args = vec!["check", "--policy", file.path_str(), "--src", &src];
    args.extend("--lookup compiled --dst 192.0.2.1 --proto tcp --dport 443".split(' '));
    let output = vaultfw_tests::agent::vaultfw(&args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let number_after = |word: &str| {
        let at = stderr.find(word)? + word.len();
        let digits: String = stderr[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u64>().ok()
    };
    match (number_after("needs "), number_after("table holds ")) {
        (Some(needs), Some(holds)) => Err((needs, holds)),
        _ => {
            assert!(output.status.success(), "vaultfw check: {stderr}");
            Ok(())
        }
    }
}

/// A CLI change of IP rules is staged (written and synced under a
/// temporary name) beside its compile and table write, and put in place
/// just before the flip: one the compiled table has no room for is
/// refused with nothing changed, and the policy file was never replaced —
/// same inode, same text, no temporary file — so a daemon killed at any
/// point of it restarts on the policy it served.
#[test]
fn a_cli_change_the_compiled_table_has_no_room_for_never_replaces_the_policy_file() {
    // Each subnet address takes the same cells: two sizes past the room
    // give the line, and the last size that fits follows.
    let over = |addresses| match compiled_room(&filling_policy(addresses, &[])) {
        Err(sizes) => sizes,
        Ok(()) => panic!("{addresses} subnet addresses fit: raise the probe"),
    };
    let ((needs_a, holds), (needs_b, _)) = (over(40_000), over(50_000));
    let per_address = (needs_b - needs_a) / 10_000;
    let fits = 40_000 - (needs_a - holds).div_ceil(per_address) as usize;
    let added = [
        "198.51.100.7",
        "198.51.100.9",
        "198.51.100.11",
        "198.51.100.13",
        "198.51.100.15",
        "198.51.100.17",
    ];
    assert_eq!(compiled_room(&filling_policy(fits, &[])), Ok(()));
    assert!(compiled_room(&filling_policy(fits, &added)).is_err());

    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let policy = filling_policy(fits, &[]);
    let options = AgentOptions {
        extra_args: vec!["--lookup".into(), "compiled".into()],
        ..AgentOptions::iface(topo.server_veth())
    };
    let mut agent = Agent::start_with(&topo.server, &policy, options);
    agent.wait_ready();
    agent.wait_serving();
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "before the change");
    let generation = agent.generation();
    let path = agent.policy().path().to_path_buf();
    // The file the path names, held open so that a replaced file's inode
    // cannot be reused by the one replacing it.
    let open = || std::fs::File::open(&path).expect("opening the policy file");
    let inode = |file: &std::fs::File| {
        use std::os::unix::fs::MetadataExt;
        file.metadata().expect("the policy file").ino()
    };

    let mut change = vec!["network-rule", "add", "--ip-address"];
    change.extend(added);
    let assert_untouched = |policy: &str, context: &str| {
        let held = open();
        let refused = agent.cli_json(&change);
        assert_eq!(
            refused.code,
            Some(exit::KERNEL_REFUSED),
            "{context}: {}",
            refused.context()
        );
        let message = refused.error_message();
        assert!(
            message.contains("cells") && message.contains("nothing changed"),
            "{context}: {message}"
        );
        assert_eq!(
            inode(&open()),
            inode(&held),
            "{context}: the policy file was replaced"
        );
        let text = std::fs::read_to_string(&path).expect("reading the policy file");
        assert_eq!(text, policy, "{context}: the policy file keeps its text");
        let names: Vec<String> = std::fs::read_dir(path.parent().expect("its directory"))
            .expect("listing its directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.contains(".vaultfw-"))
            .collect();
        assert!(
            names.is_empty(),
            "{context}: temporary files left: {names:?}"
        );
    };
    // The first change after a start reads the whole file; later ones edit
    // the file the daemon keeps and are staged beside the table write.
    assert_untouched(&policy, "the first change");
    let renewed = agent.cli_json(&[
        "network-rule",
        "add",
        "--ip-address",
        "203.0.113.0/24",
        "--comment",
        "office",
    ]);
    assert_eq!(renewed.code, Some(exit::OK), "{}", renewed.context());
    let policy = std::fs::read_to_string(&path).expect("reading the policy file");
    assert_untouched(&policy, "a change of the kept file");
    assert_eq!(
        agent.generation(),
        generation,
        "no generation for a refusal"
    );
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after the refused change");
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "after the refused change");
    agent.stop();
}
