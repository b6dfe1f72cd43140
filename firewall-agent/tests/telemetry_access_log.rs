//! The access log without a kernel: decoding the program's records, the
//! file sink reopened after a rotation, the in-memory tail that `vaultfw
//! logs` reads (cursor, time filter, eviction), and `--since` parsing.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use firewall_common::{AccessEvent, Verdict};
use vaultfw::clock::parse_since;
use vaultfw::compile::{RuleKind, RuleRef};
use vaultfw::telemetry::{AccessLog, AccessRecord};

/// A private directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vaultfw-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn numbering_continues_from_the_kernels_count_of_events_sent_so_a_cursor_survives_a_restart() {
    // A previous run numbered its records up to 41 (the kernel had sent
    // 41 events); a follower saw them all and holds cursor 41.
    let mut log = AccessLog::open(None, 10).unwrap();
    log.continue_after(41);
    assert_eq!(log.next_seq(), 42);
    let r = record(&log, &event(Verdict::DenyNoMatch, [198, 51, 100, 9], 443));
    log.push(r);
    let page = log.query(Some(41), None, None);
    assert_eq!(
        page.records
            .iter()
            .map(AccessRecord::seq)
            .collect::<Vec<_>>(),
        vec![42],
        "the follower gets exactly the new record"
    );
    assert_eq!(page.cursor, 42);
}

fn event(verdict: Verdict, src: [u8; 4], dport: u16) -> AccessEvent {
    let mut event = AccessEvent {
        ts_ns: 1_000_000_000,
        ifindex: 4,
        family: 4,
        proto: 6,
        sport: 40000,
        dport,
        verdict: verdict.index() as u8,
        rule_slot: u32::MAX,
        ..AccessEvent::default()
    };
    event.src[..4].copy_from_slice(&src);
    event.dst[..4].copy_from_slice(&[192, 0, 2, 1]);
    event
}

fn record(log: &AccessLog, event: &AccessEvent) -> AccessRecord {
    let boot = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    AccessRecord::decode(
        event,
        log.next_seq(),
        Some(boot),
        |i| (i == 4).then(|| "eth0".to_owned()),
        |_| None,
    )
}

#[test]
fn a_denied_syn_decodes_to_the_documented_fields() {
    let log = AccessLog::open(None, 10).unwrap();
    let r = record(&log, &event(Verdict::DenyNoMatch, [198, 51, 100, 7], 443));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "@timestamp": "2027-01-15T08:00:01.000000Z",
            "log": {"level": "info", "logger": "vaultfw::access"},
            "message": "connection denied",
            "event": {
                "kind": "event", "category": ["network"], "type": ["connection", "denied"],
                "action": "drop", "outcome": "success", "dataset": "vaultfw.access",
                "sequence": 1,
            },
            "source": {"ip": "198.51.100.7", "port": 40000},
            "destination": {"ip": "192.0.2.1", "port": 443},
            "network": {"transport": "tcp", "iana_number": "6", "type": "ipv4"},
            "observer": {"ingress": {"interface": {"name": "eth0", "id": "4"}}},
            "vaultfw": {"verdict": "deny_no_match"},
        })
    );
}

#[test]
fn allow_events_name_their_rule_and_vlan_and_ipv6_decode() {
    let mut allowed = event(Verdict::AllowVnetRule, [10, 1, 2, 3], 443);
    allowed.rule_slot = 130;
    allowed.vlan = 120;
    allowed.proto = 17;
    let rule = |slot: u32| {
        (slot == 130).then(|| RuleRef {
            kind: RuleKind::Vnet,
            index: 0,
            name: "vnet/subnets/a".into(),
        })
    };
    let r = AccessRecord::decode(&allowed, 1, None, |_| None, rule);
    assert_eq!(
        (
            r.event.action.as_str(),
            r.vaultfw.verdict.as_str(),
            r.network.transport.as_str()
        ),
        ("pass", "allow_vnet_rule", "udp")
    );
    let rule = r.rule.as_ref().expect("the rule");
    assert_eq!(
        (
            rule.name.as_str(),
            rule.category.as_str(),
            r.network.vlan.as_ref().map(|v| v.id.as_str()),
            r.observer.ingress.interface.name.as_deref()
        ),
        ("vnet/subnets/a", "vnet", Some("120"), None)
    );

    let mut v6 = event(Verdict::DenyIpv6, [0; 4], 443);
    v6.family = 6;
    v6.src = "2001:db8::7"
        .parse::<std::net::Ipv6Addr>()
        .unwrap()
        .octets();
    let r = AccessRecord::decode(&v6, 2, None, |_| None, |_| None);
    assert_eq!(
        (
            r.source.ip.to_string().as_str(),
            r.vaultfw.verdict.as_str(),
            r.network.family.as_str()
        ),
        ("2001:db8::7", "deny_ipv6", "ipv6")
    );
}

#[test]
fn the_file_gets_one_line_per_record_and_a_reopen_follows_a_rotation() {
    let dir = TempDir::new("access-rotate");
    let path = dir.0.join("access.log");
    let mut log = AccessLog::open(Some(&path), 100).unwrap();
    let first = record(&log, &event(Verdict::DenyNoMatch, [198, 51, 100, 7], 443));
    log.push(first.clone());
    std::fs::rename(&path, dir.0.join("access.log.1")).unwrap();
    log.reopen();
    let second = record(&log, &event(Verdict::DenyNoMatch, [198, 51, 100, 8], 443));
    log.push(second.clone());
    let read = |p: PathBuf| -> Vec<AccessRecord> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(read(dir.0.join("access.log.1")), vec![first]);
    assert_eq!(read(path.clone()), vec![second]);
    // Appends, never truncates: a second agent run adds to the file.
    drop(log);
    let mut again = AccessLog::open(Some(&path), 100).unwrap();
    let third = record(&again, &event(Verdict::DenyNoMatch, [198, 51, 100, 9], 443));
    again.push(third);
    assert_eq!(read(path).len(), 2);
}

#[test]
fn queries_follow_a_cursor_filter_by_time_and_say_what_was_evicted() {
    let dir = TempDir::new("access-query");
    let mut log = AccessLog::open(Some(&dir.0.join("access.log")), 3).unwrap();
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    for i in 0..5u8 {
        let mut e = event(Verdict::DenyNoMatch, [198, 51, 100, i], 443);
        e.ts_ns = u64::from(i) * 1_000_000_000;
        let r = AccessRecord::decode(&e, log.next_seq(), Some(base), |_| None, |_| None);
        log.push(r);
    }
    let all = log.query(None, None, None);
    assert_eq!(
        all.records
            .iter()
            .map(AccessRecord::seq)
            .collect::<Vec<_>>(),
        vec![3, 4, 5],
        "the last 3 are kept"
    );
    assert_eq!((all.cursor, all.evicted, all.capacity), (5, 2, 3));
    let after = log.query(Some(4), None, None);
    assert_eq!(
        after
            .records
            .iter()
            .map(AccessRecord::seq)
            .collect::<Vec<_>>(),
        vec![5]
    );
    let nothing_new = log.query(Some(5), None, None);
    assert!(nothing_new.records.is_empty());
    assert_eq!(nothing_new.cursor, 5);
    // A cursor from maps since replaced (numbering restarted) gets all.
    assert_eq!(log.query(Some(99), None, None).records.len(), 3);
    let since = log.query(None, Some(base + Duration::from_secs(4)), None);
    assert_eq!(
        since
            .records
            .iter()
            .map(AccessRecord::seq)
            .collect::<Vec<_>>(),
        vec![5]
    );
    // With nothing matching, the cursor still moves past what was looked at.
    let future = log.query(Some(3), Some(base + Duration::from_secs(60)), None);
    assert_eq!((future.records.len(), future.cursor), (0, 5));
    let limited = log.query(None, None, Some(2));
    assert_eq!((limited.records.len(), limited.cursor), (2, 4));
}

#[test]
fn since_takes_a_duration_ago_or_an_rfc3339_time() {
    let ago = parse_since("10m").unwrap();
    let elapsed = SystemTime::now().duration_since(ago).unwrap();
    assert!(elapsed >= Duration::from_secs(600) && elapsed < Duration::from_secs(660));
    assert_eq!(
        parse_since("2026-01-31T12:00:00Z").unwrap(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_769_860_800)
    );
    let error = parse_since("yesterday").unwrap_err();
    assert!(
        error.contains("RFC 3339") && error.contains("10m"),
        "{error}"
    );
}
