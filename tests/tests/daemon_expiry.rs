//! A rule with `expires_at` is removed on time: it
//! admits its source until then, the daemon logs the removal, the source is
//! refused from then on, and the policy file no longer holds the rule, so a
//! reload or a restart agrees.

use std::time::{Duration, SystemTime};

use vaultfw_tests::reach::{assert_connects, assert_dropped};
use vaultfw_tests::{
    ALLOWED_SRC, Agent, DEADLINE_LEAD, DENIED_SRC, OFFICE_POLICY, PolicyFile, TcpServer, Topology,
};

#[test]
fn an_expiring_rule_admits_until_its_time_then_is_removed_from_kernel_and_file() {
    let topo = Topology::new();
    let _https = TcpServer::start(&topo.server, topo.server_addr(443));
    let mut agent = Agent::start(&topo.server, topo.server_veth(), OFFICE_POLICY);
    agent.wait_ready();
    // Declared once the agent serves, so the check before the expiry never
    // races the start.
    let expires = SystemTime::now() + DEADLINE_LEAD;
    let with_contractor = PolicyFile::named(
        "contractor.toml",
        &format!(
            r#"default_action = "Deny"
ip_rules = [
    "203.0.113.0/24", # office
    {{ value = "{DENIED_SRC}", comment = "contractor", expires_at = "{}" }},
]
"#,
            humantime::format_rfc3339_seconds(expires)
        ),
    );
    agent.cli_json(&["apply", with_contractor.path_str()]).ok();
    let mark = agent.log_mark();
    assert_connects(&topo, &agent, DENIED_SRC, 443, "before its expiry");
    agent.wait_message(
        mark,
        "rule expired and was removed",
        DEADLINE_LEAD + Duration::from_secs(15),
    );
    assert_dropped(&topo, &agent, DENIED_SRC, 443, "after its expiry");
    assert_connects(&topo, &agent, ALLOWED_SRC, 443, "the other rule stays");
    let file = std::fs::read_to_string(agent.policy().path()).expect("policy file");
    assert!(
        !file.contains(&DENIED_SRC.to_string()),
        "the expired rule is still in the file:\n{file}"
    );
    assert!(
        file.contains("# office"),
        "the operator's comment went:\n{file}"
    );
    agent.stop();
}
