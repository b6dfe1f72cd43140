//! One golden wire form per reply: a renamed or retyped field fails
//! here before it breaks a script or an older CLI.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::*;
use crate::dataplane::pins::{PinnedLinkState, PinnedState};
use crate::telemetry::access::AccessRecord;

/// `reply` serializes to exactly `golden` and reads back to itself.
#[track_caller]
fn assert_wire<T>(reply: &T, golden: &str)
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let golden: Value = serde_json::from_str(golden).expect("golden JSON parses");
    let wire = serde_json::to_value(reply).unwrap();
    assert_eq!(wire, golden, "wire form changed");
    assert_eq!(&serde_json::from_value::<T>(golden).unwrap(), reply);
}

fn hits() -> RuleHits {
    RuleHits {
        packets: 3,
        bytes: 180,
        last_hit: Some("2026-01-31T12:00:00.000Z".into()),
    }
}

fn show_reply() -> ShowReply {
    ShowReply {
        generation: 4,
        protected: true,
        iface: "eth0".into(),
        interfaces: vec![FilteredInterface {
            name: "eth0".into(),
            ifindex: 2,
            mode: Some("native".into()),
            prog_id: Some(31),
            program: AttachKind::L2,
            attach: AttachOutcome::Adopted,
            reason: Some(FilterReason::Iface),
        }],
        interfaces_not_attached: vec![UnattachedInterface {
            name: "gre0".into(),
            reason: FilterReason::Endpoint,
            link_type: 778,
        }],
        unfiltered_interfaces: vec![UnfilteredInterface {
            name: "eth1".into(),
            ifindex: 3,
            link_type: 1,
        }],
        missing_interfaces: vec!["eth9".into()],
        unmanaged_links: vec![UnmanagedLink {
            interface: "eth5".into(),
            ifindex: None,
            mode: None,
            live: None,
        }],
        on_exit: "keep".into(),
        pin_dir: "/sys/fs/bpf/vaultfw".into(),
        policy_file: "/etc/vaultfw/policy.toml".into(),
        default_action: "Deny".into(),
        bypass: "None".into(),
        mode: "Enforce".into(),
        ipv6: "Deny".into(),
        public_network_access: "Enabled".into(),
        private_endpoints: 0,
        limits: LimitsShown {
            profile: "kv-2020".into(),
            ip_rules: 127,
            virtual_network_rules: 127,
            ipv6_rules: 127,
        },
        data_plane: DataPlaneShown {
            tcp_ports: BTreeSet::from([443]),
            udp_ports: BTreeSet::new(),
            guard_control_ports: BTreeSet::new(),
        },
        ip_rules: 2,
        virtual_network_rules: 1,
        trusted_service_prefixes: 0,
        awaiting_confirmation_until: None,
        health: HealthShown {
            policy: PolicySync::InSync,
            last_reload: Some(ReloadShown {
                at: "2026-01-31T12:00:00Z".into(),
                cause: "SIGHUP".into(),
                success: false,
                error: Some("line 3: bad".into()),
            }),
            control_socket_present: true,
            readiness: Readiness {
                ready: false,
                reasons: vec!["the last reload (SIGHUP) was refused: line 3: bad".into()],
            },
        },
        forwarded_traffic: "judged".into(),
        lookup: crate::compile::cpt::Lookup::Compiled,
        warnings: vec!["w".into()],
    }
}

#[test]
fn show_reply_has_a_stable_wire_form() {
    let reply = show_reply();
    assert_wire(
        &reply,
        r#"{"generation":4,"protected":true,"iface":"eth0",
                "interfaces":[{"name":"eth0","ifindex":2,"mode":"native","prog_id":31,
                               "program":"l2","attach":"adopted","reason":"iface"}],
                "interfaces_not_attached":[{"name":"gre0","reason":"endpoint","link_type":778}],
                "unfiltered_interfaces":[{"name":"eth1","ifindex":3,"link_type":1}],
                "missing_interfaces":["eth9"],
                "unmanaged_links":[{"interface":"eth5","ifindex":null,"mode":null,"live":null}],
                "on_exit":"keep","pin_dir":"/sys/fs/bpf/vaultfw",
                "policy_file":"/etc/vaultfw/policy.toml","default_action":"Deny",
                "bypass":"None","mode":"Enforce","ipv6":"Deny",
                "public_network_access":"Enabled","private_endpoints":0,
                "limits":{"profile":"kv-2020","ip_rules":127,"virtual_network_rules":127,"ipv6_rules":127},
                "data_plane":{"tcp_ports":[443],"udp_ports":[],"guard_control_ports":[]},
                "ip_rules":2,"virtual_network_rules":1,"trusted_service_prefixes":0,
                "awaiting_confirmation_until":null,
                "health":{"policy":{"state":"in_sync"},
                          "last_reload":{"at":"2026-01-31T12:00:00Z","cause":"SIGHUP",
                                         "success":false,"error":"line 3: bad"},
                          "control_socket_present":true,
                          "readiness":{"ready":false,"reasons":
                              ["the last reload (SIGHUP) was refused: line 3: bad"]}},
                "forwarded_traffic":"judged","lookup":"compiled","warnings":["w"]}"#,
    );
}

#[test]
fn show_health_states_and_a_first_reload_keep_their_wire_form() {
    let cases = [
        (PolicySync::InSync, r#"{"state":"in_sync"}"#),
        (
            PolicySync::AwaitingConfirmation,
            r#"{"state":"awaiting_confirmation"}"#,
        ),
        (PolicySync::Differs, r#"{"state":"differs"}"#),
        (
            PolicySync::Invalid {
                error: "line 3: bad".into(),
            },
            r#"{"state":"invalid","error":"line 3: bad"}"#,
        ),
    ];
    for (state, golden) in cases {
        assert_wire(&state, golden);
    }
    assert_wire(
        &HealthShown {
            policy: PolicySync::Differs,
            last_reload: None,
            control_socket_present: false,
            readiness: Readiness {
                ready: false,
                reasons: vec!["r".into()],
            },
        },
        r#"{"policy":{"state":"differs"},"last_reload":null,
                "control_socket_present":false,"readiness":{"ready":false,"reasons":["r"]}}"#,
    );
    assert_wire(
        &FilteredInterface {
            name: "gre0".into(),
            ifindex: 7,
            mode: None,
            prog_id: None,
            program: AttachKind::L3,
            attach: AttachOutcome::Replaced,
            reason: None,
        },
        r#"{"name":"gre0","ifindex":7,"mode":null,"prog_id":null,"program":"l3",
                "attach":"replaced","reason":null}"#,
    );
}

#[test]
fn stats_reply_has_a_stable_wire_form() {
    let counters = VerdictCounts::from([("allow_ip_rule".into(), 5), ("deny_no_match".into(), 7)]);
    let reply = StatsReply {
        generation: 2,
        counters: counters.clone(),
        interfaces: vec![InterfaceStats {
            name: "eth0".into(),
            ifindex: 2,
            counters,
        }],
        events: EventCounts::new(10, 2, 1),
    };
    assert_wire(
        &reply,
        r#"{"generation":2,"counters":{"allow_ip_rule":5,"deny_no_match":7},
                "interfaces":[{"name":"eth0","ifindex":2,
                               "counters":{"allow_ip_rule":5,"deny_no_match":7}}],
                "events":{"sent":10,"dropped":3,"rate_limited":2,"ring_full":1}}"#,
    );
}

#[test]
fn rule_list_reply_has_a_stable_wire_form_with_hits_beside_each_rule() {
    let reply = RuleListReply {
        generation: 3,
        ip_rules: vec![IpRuleShown {
            rule: "203.0.113.7".into(),
            comment: Some("office".into()),
            expires_at: None,
            hits: hits(),
        }],
        virtual_network_rules: vec![VnetPrefixShown {
            id: Some("vnet/subnets/app".into()),
            subnet: "10.1.2.0/24".into(),
            endpoint: Some("eth1".into()),
            ifindex: 3,
            vlan: None,
            ignore_missing_endpoint: false,
            hits: RuleHits::default(),
        }],
        virtual_network_rules_waiting: vec![WaitingRule {
            id: "vnet/subnets/db".into(),
            endpoint: "eth7".into(),
            state: "interface missing: matches nothing".into(),
        }],
        trusted_service_prefixes: 12,
        trusted_services: vec![TrustedServiceShown {
            service: "AzureBackup".into(),
            prefixes: 12,
            active: false,
            hits: RuleHits::default(),
        }],
    };
    assert_wire(
        &reply,
        r#"{"generation":3,
                "ip_rules":[{"rule":"203.0.113.7","comment":"office","expires_at":null,
                             "packets":3,"bytes":180,"last_hit":"2026-01-31T12:00:00.000Z"}],
                "virtual_network_rules":[{"id":"vnet/subnets/app","subnet":"10.1.2.0/24",
                    "endpoint":"eth1","ifindex":3,"vlan":null,
                    "ignore_missing_endpoint":false,"packets":0,"bytes":0,"last_hit":null}],
                "virtual_network_rules_waiting":[{"id":"vnet/subnets/db","endpoint":"eth7",
                    "state":"interface missing: matches nothing"}],
                "trusted_service_prefixes":12,
                "trusted_services":[{"service":"AzureBackup","prefixes":12,"active":false,
                    "packets":0,"bytes":0,"last_hit":null}]}"#,
    );
}

#[test]
fn change_replies_say_map_writes_only_when_the_kernel_was_written() {
    let unchanged = ChangeReply {
        changed: false,
        generation: 5,
        message: "203.0.113.7 is already present".into(),
        map_writes: None,
        awaiting_confirmation_until: None,
        notes: Vec::new(),
    };
    assert_wire(
        &unchanged,
        r#"{"changed":false,"generation":5,"message":"203.0.113.7 is already present"}"#,
    );
    let pending = ChangeReply {
        changed: true,
        generation: 6,
        message: "applied".into(),
        map_writes: Some(4),
        awaiting_confirmation_until: Some("2026-01-31T12:01:00Z".into()),
        notes: vec!["203.0.113.7 lies inside the IP rule 203.0.113.0/24".into()],
    };
    assert_wire(
        &pending,
        r#"{"changed":true,"generation":6,"message":"applied","map_writes":4,
                "awaiting_confirmation_until":"2026-01-31T12:01:00Z",
                "notes":["203.0.113.7 lies inside the IP rule 203.0.113.0/24"]}"#,
    );
}

#[test]
fn confirm_and_detach_replies_have_a_stable_wire_form() {
    assert_wire(
        &ConfirmReply {
            generation: 6,
            confirmed: true,
            message: "confirmed".into(),
        },
        r#"{"generation":6,"confirmed":true,"message":"confirmed"}"#,
    );
    // An older daemon's confirmation (no `confirmed` key) was a real one.
    let old: ConfirmReply =
        serde_json::from_str(r#"{"generation":6,"message":"confirmed"}"#).unwrap();
    assert!(old.confirmed);
    assert_wire(
        &DetachReply {
            detached: true,
            daemon_running: None,
            unpinned: None,
        },
        r#"{"detached":true}"#,
    );
    assert_wire(
        &DetachReply {
            detached: true,
            daemon_running: Some(false),
            unpinned: Some(vec!["link_eth0".into()]),
        },
        r#"{"detached":true,"daemon_running":false,"unpinned":["link_eth0"]}"#,
    );
}

#[test]
fn logs_reply_has_the_page_fields_at_its_top_level() {
    let mut event = firewall_common::AccessEvent {
        family: 4,
        proto: 6,
        verdict: firewall_common::Verdict::DenyNoMatch.index() as u8,
        rule_slot: u32::MAX,
        ifindex: 2,
        sport: 40000,
        dport: 443,
        vlan: firewall_common::VLAN_UNTAGGED,
        ..Default::default()
    };
    event.src[..4].copy_from_slice(&[198, 51, 100, 7]);
    event.dst[..4].copy_from_slice(&[203, 0, 113, 10]);
    let boot = humantime::parse_rfc3339("2026-01-31T12:00:00Z").ok();
    let record = AccessRecord::decode(&event, 9, boot, |_| Some("eth0".into()), |_| None);
    let reply = LogsReply {
        page: LogsPage {
            records: vec![record],
            cursor: 9,
            evicted: 0,
            capacity: 10_000,
        },
        events: EventCounts::new(9, 0, 0),
        event_rate: 100,
        log_allowed: false,
        file: None,
        file_health: None,
    };
    assert_wire(
        &reply,
        r#"{"records":[{"@timestamp":"2026-01-31T12:00:00.000000Z",
                  "log":{"level":"info","logger":"vaultfw::access"},
                  "message":"connection denied",
                  "event":{"kind":"event","category":["network"],"type":["connection","denied"],
                           "action":"drop","outcome":"success","dataset":"vaultfw.access",
                           "sequence":9},
                  "source":{"ip":"198.51.100.7","port":40000},
                  "destination":{"ip":"203.0.113.10","port":443},
                  "network":{"transport":"tcp","iana_number":"6","type":"ipv4"},
                  "observer":{"ingress":{"interface":{"name":"eth0","id":"2"}}},
                  "vaultfw":{"verdict":"deny_no_match"}}],
                "cursor":9,"evicted":0,"capacity":10000,
                "events":{"sent":9,"dropped":0,"rate_limited":0,"ring_full":0},
                "event_rate":100,"log_allowed":false,"file":null,"file_health":null}"#,
    );
}

/// The keys of a JSON object, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

#[test]
fn show_has_one_schema_whether_the_daemon_answered_or_the_pins_were_read() {
    let daemon = serde_json::to_value(ShowView::from_daemon(&show_reply())).unwrap();
    let pins = serde_json::to_value(ShowView::from_pins(PinnedState {
        daemon_running: false,
        pin_dir: "/sys/fs/bpf/vaultfw".into(),
        filtering: Some(true),
        interfaces: vec![PinnedLinkState {
            interface: "eth0".into(),
            ifindex: Some(2),
            mode: Some("native"),
            prog_id: Some(31),
            live: Some(true),
        }],
        generation: Some(4),
        lookup: Some(crate::compile::cpt::Lookup::Compiled),
        held_by_pid: None,
    }))
    .unwrap();
    assert_eq!(keys(&daemon), keys(&pins));
    assert_eq!(keys(&daemon["interfaces"][0]), keys(&pins["interfaces"][0]));
    assert_eq!(daemon["source"], "daemon");
    assert_eq!(pins["source"], "pins");
    for key in ["generation", "lookup", "filtering", "pin_dir"] {
        assert_eq!(daemon[key], pins[key], "{key}");
    }
    for key in ["name", "ifindex", "mode", "prog_id", "live"] {
        assert_eq!(
            daemon["interfaces"][0][key], pins["interfaces"][0][key],
            "{key}"
        );
    }
    // What only a daemon knows is null from the pins, never missing.
    assert_eq!(daemon["lookup"], "compiled");
    assert_eq!(daemon["default_action"], "Deny");
    assert!(pins["default_action"].is_null() && pins["health"].is_null());
    assert_eq!(daemon["daemon_running"], true);
    assert_eq!(pins["daemon_running"], false);
}

#[test]
fn the_names_logs_use_are_the_names_show_serializes() {
    use crate::dataplane::AttachOutcome;
    for reason in [
        FilterReason::Iface,
        FilterReason::Endpoint,
        FilterReason::All,
    ] {
        assert_eq!(serde_json::to_value(reason).unwrap(), reason.name());
    }
    for outcome in [
        AttachOutcome::Attached,
        AttachOutcome::Adopted,
        AttachOutcome::Replaced,
    ] {
        assert_eq!(serde_json::to_value(outcome).unwrap(), outcome.name());
    }
}

#[test]
fn a_show_reply_without_lookup_reads_as_the_tries() {
    // A daemon that predates `--lookup` had only the tries.
    let mut wire = serde_json::to_value(show_reply()).unwrap();
    wire.as_object_mut().unwrap().remove("lookup");
    let reply: ShowReply = serde_json::from_value(wire).unwrap();
    assert_eq!(reply.lookup, crate::compile::cpt::Lookup::Trie);
}
