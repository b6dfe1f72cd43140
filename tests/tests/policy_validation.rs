//! `vaultfw validate` and `vaultfw run` with bad policies: every invalid IP
//! rule kind (private and special-purpose ranges, host bits, /31, leading
//! zeros, non-global IPv6, bad syntax, too many rules) is refused (exit 2) with its own
//! message naming the path, the value and the fix, each error on its own
//! line; a valid file passes; and `run` with a bad policy exits non-zero
//! without attaching anything.

use std::time::Duration;

use vaultfw_tests::agent::{run_in_netns, xdp_attached};
use vaultfw_tests::cli::exit;
use vaultfw_tests::{PolicyFile, Topology, vaultfw};

fn policy_with_rules(rules: &[&str]) -> String {
    let quoted: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    format!(
        "default_action = \"Deny\"\nbypass = \"None\"\nip_rules = [{}]\n\n[data_plane]\ntcp_ports = [443]\n",
        quoted.join(", ")
    )
}

struct Validated {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn validate(contents: &str) -> Validated {
    let file = PolicyFile::new(contents);
    let out = vaultfw(&["validate", file.path_str()]);
    Validated {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One invalid rule kind: the rule, and what its message must name besides
/// the path and the value (the reason or the fix), case-insensitively; any
/// one of the alternatives is enough.
struct Kind {
    name: &'static str,
    rule: &'static str,
    mentions: &'static [&'static [&'static str]],
}

const KINDS: &[Kind] = &[
    Kind {
        name: "private range",
        rule: "10.0.0.0/8",
        mentions: &[&["virtual network", "virtual_network"]],
    },
    Kind {
        name: "contains a private range",
        rule: "8.0.0.0/6",
        mentions: &[&["10.0.0.0/8"]],
    },
    Kind {
        name: "loopback",
        rule: "127.0.0.1",
        mentions: &[&["loopback", "127.0.0.0/8"]],
    },
    Kind {
        name: "CGNAT",
        rule: "100.64.0.0/10",
        mentions: &[&["100.64.0.0/10", "cgnat", "shared"]],
    },
    Kind {
        name: "everything",
        rule: "0.0.0.0/0",
        mentions: &[&["default_action"]],
    },
    Kind {
        name: "host bits",
        rule: "203.0.113.77/24",
        mentions: &[&["203.0.113.0/24"]],
    },
    Kind {
        name: "/31",
        rule: "203.0.113.10/31",
        mentions: &[&["203.0.113.11"]],
    },
    Kind {
        name: "leading zero",
        rule: "203.0.113.05",
        mentions: &[&["zero"]],
    },
    Kind {
        name: "IPv6 unique-local",
        rule: "fd00::/8",
        mentions: &[&["rfc 4193"], &["virtual_network_rules"]],
    },
    Kind {
        name: "IPv6 link-local",
        rule: "fe80::1",
        mentions: &[&["rfc 4291"]],
    },
    Kind {
        name: "bad syntax",
        rule: "203.0.113.0/33",
        mentions: &[&["32"]],
    },
];

#[test]
fn each_invalid_ip_rule_kind_is_refused_with_its_own_message() {
    let mut reasons: Vec<(&str, String)> = Vec::new();
    for kind in KINDS {
        // At index 1, after a valid rule: the path must point at the bad one.
        let v = validate(&policy_with_rules(&["198.51.100.0/24", kind.rule]));
        let context = format!(
            "{} ({:?}): exit {:?}\nstdout:\n{}\nstderr:\n{}",
            kind.name, kind.rule, v.code, v.stdout, v.stderr
        );
        assert_eq!(v.code, Some(exit::INVALID_INPUT), "{context}");
        let line = v
            .stderr
            .lines()
            .find(|l| l.contains("ip_rules[1]"))
            .unwrap_or_else(|| panic!("no error line names ip_rules[1]: {context}"));
        assert!(
            line.contains(kind.rule),
            "the error line does not show the value: {context}"
        );
        assert!(
            !v.stderr.contains("ip_rules[0]"),
            "the valid rule was blamed: {context}"
        );
        let lower = line.to_lowercase();
        for alternatives in kind.mentions {
            assert!(
                alternatives
                    .iter()
                    .any(|a| lower.contains(&a.to_lowercase())),
                "the message does not mention any of {alternatives:?}: {context}"
            );
        }
        // What the message says besides the path and the value.
        reasons.push((
            kind.name,
            line.replace("ip_rules[1]", "").replace(kind.rule, ""),
        ));
    }
    for (i, (a, reason_a)) in reasons.iter().enumerate() {
        for (b, reason_b) in &reasons[i + 1..] {
            assert_ne!(
                reason_a, reason_b,
                "kinds {a:?} and {b:?} share one message"
            );
        }
    }
}

#[test]
fn malformed_prefixes_are_refused_with_the_valid_form() {
    // One kind (bad syntax), several spellings.
    for rule in [
        "203.0.113.0/33",
        "203.0.113.0/",
        "/24",
        "203.0.113/24",
        "203.0.113.0/-1",
        "not-an-ip",
    ] {
        let v = validate(&policy_with_rules(&[rule]));
        assert_eq!(
            v.code,
            Some(exit::INVALID_INPUT),
            "{rule:?}: stdout:\n{}\nstderr:\n{}",
            v.stdout,
            v.stderr
        );
        let line = v.stderr.lines().find(|l| l.contains("ip_rules[0]"));
        let line =
            line.unwrap_or_else(|| panic!("{rule:?}: no line names ip_rules[0]:\n{}", v.stderr));
        assert!(line.contains(rule), "{rule:?}: {line}");
    }
}

#[test]
fn more_than_127_ip_rules_are_refused_under_the_default_limits() {
    let rules: Vec<String> = (1..=128).map(|i| format!("203.0.113.{i}")).collect();
    let refs: Vec<&str> = rules.iter().map(String::as_str).collect();
    let v = validate(&policy_with_rules(&refs));
    assert_eq!(
        v.code,
        Some(exit::INVALID_INPUT),
        "stdout:\n{}\nstderr:\n{}",
        v.stdout,
        v.stderr
    );
    assert!(v.stderr.contains("ip_rules"), "{}", v.stderr);
    assert!(
        v.stderr.contains("128") && v.stderr.contains("127"),
        "{}",
        v.stderr
    );

    let v = validate(&policy_with_rules(&refs[..127]));
    assert_eq!(
        v.code,
        Some(0),
        "exactly 127 rules load\n{}{}",
        v.stdout,
        v.stderr
    );
}

#[test]
fn each_error_is_on_its_own_line_naming_its_path() {
    let v = validate(&policy_with_rules(&[
        "10.0.0.0/8",
        "203.0.113.0/24",
        "203.0.113.77/24",
        "fe80::1",
    ]));
    assert_eq!(v.code, Some(exit::INVALID_INPUT), "{}", v.stderr);
    for (path, value) in [
        ("ip_rules[0]", "10.0.0.0/8"),
        ("ip_rules[2]", "203.0.113.77/24"),
        ("ip_rules[3]", "fe80::1"),
    ] {
        let line = v.stderr.lines().find(|l| l.contains(path));
        let line = line.unwrap_or_else(|| panic!("no line names {path}:\n{}", v.stderr));
        assert!(line.contains(value), "{line}");
    }
    assert!(
        !v.stderr.contains("ip_rules[1]"),
        "the valid rule was blamed:\n{}",
        v.stderr
    );
}

#[test]
fn a_missing_default_action_is_refused() {
    let v = validate("ip_rules = [\"203.0.113.0/24\"]\n");
    assert_eq!(
        v.code,
        Some(exit::INVALID_INPUT),
        "{}{}",
        v.stdout,
        v.stderr
    );
    assert!(v.stderr.contains("default_action"), "{}", v.stderr);
}

#[test]
fn valid_policies_are_accepted() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml");
    if example.exists() {
        let out = vaultfw(&["validate", example.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "examples/policy.toml: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for rules in [
        vec!["203.0.113.0/24"],
        vec!["203.0.113.10/32", "198.51.100.0/23"],
        vec!["172.32.0.0/24"],
        vec![],
    ] {
        let v = validate(&policy_with_rules(&rules));
        assert_eq!(
            v.code,
            Some(0),
            "{rules:?}\nstdout:\n{}\nstderr:\n{}",
            v.stdout,
            v.stderr
        );
    }
}

#[test]
fn run_with_an_invalid_policy_exits_nonzero_and_attaches_nothing() {
    let topo = Topology::new();
    let file = PolicyFile::new(&policy_with_rules(&["203.0.113.0/24", "10.0.0.0/8"]));
    // Its own pin directory and socket: never the host's default ones.
    let paths = vaultfw_tests::AgentPaths::new(&file);
    let mut args = vec![
        "run".to_owned(),
        "--iface".to_owned(),
        topo.server_veth().to_owned(),
        "--policy".to_owned(),
        file.path_str().to_owned(),
        "--stats-interval".to_owned(),
        "1".to_owned(),
    ];
    args.extend(paths.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_in_netns(&topo.server, &args, Duration::from_secs(30));
    assert!(!paths.socket.exists(), "the socket was left behind");
    paths.remove_pins();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        code.is_some_and(|c| c != 0),
        "exit {:?}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains("ip_rules[1]"),
        "the error does not name the rule:\n{stderr}"
    );
    assert!(
        !xdp_attached(&topo.server, topo.server_veth()),
        "a program was attached"
    );
}
