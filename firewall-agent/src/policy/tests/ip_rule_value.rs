//! One IP-rule value on its own: `parse_ip_rule` (the CLI's check) and the
//! special-range table.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::super::ipv4::{Conflict, SPECIAL_RANGES, VALID_FORM, conflict};
use super::super::{PolicyError, parse_ip_rule};

fn net(text: &str) -> Ipv4Net {
    text.parse().expect("test network")
}

fn refused(text: &str) -> PolicyError {
    match parse_ip_rule("--ip-address", text) {
        Ok(n) => panic!("{text:?} was accepted as {n}"),
        Err(e) => {
            assert_eq!(e.path, "--ip-address", "the error names the given path");
            assert_eq!(e.value, text, "the error carries the value as written");
            assert!(!e.reason.is_empty() && !e.fix.is_empty(), "{e}");
            e
        }
    }
}

#[test]
fn single_address_is_a_slash_32() {
    assert_eq!(parse_ip_rule("p", "203.0.113.7"), Ok(net("203.0.113.7/32")));
}

#[test]
fn slash_32_is_the_same_network_as_the_bare_address() {
    assert_eq!(
        parse_ip_rule("p", "203.0.113.10/32"),
        parse_ip_rule("p", "203.0.113.10")
    );
}

#[test]
fn documentation_ranges_are_accepted() {
    for r in [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "198.51.100.200",
    ] {
        assert_eq!(
            parse_ip_rule("p", r),
            Ok(net(if r.contains('/') {
                r
            } else {
                "198.51.100.200/32"
            })),
            "{r}"
        );
    }
}

#[test]
fn public_ranges_of_every_legal_size_are_accepted() {
    for r in [
        "8.8.8.8",
        "20.0.0.0/8",
        "1.0.0.0/8",
        "52.0.0.0/30",
        "11.0.0.0/8",
        "128.0.0.0/3",
    ] {
        assert!(
            parse_ip_rule("p", r).is_ok(),
            "{r} refused: {:?}",
            parse_ip_rule("p", r)
        );
    }
}

#[test]
fn malformed_prefixes_are_refused_with_the_valid_form_and_range() {
    for text in [
        "203.0.113.0/33",
        "203.0.113.0/",
        "/24",
        "203.0.113/24",
        "203.0.113.0/-1",
    ] {
        let e = refused(text);
        assert_eq!(e.fix, VALID_FORM, "{e}");
        let shown = e.to_string();
        assert!(shown.contains("a.b.c.d or a.b.c.d/N"), "{shown}");
        assert!(shown.contains("0–32"), "{shown}");
    }
}

#[test]
fn each_malformed_prefix_says_what_is_wrong() {
    assert!(
        refused("203.0.113.0/33")
            .reason
            .contains("33 is outside 0–32")
    );
    assert!(refused("203.0.113.0/").reason.contains("missing"));
    assert!(refused("/24").reason.contains("no address"));
    assert!(refused("203.0.113/24").reason.contains("3 octets"));
    assert!(
        refused("203.0.113.0/-1")
            .reason
            .contains("\"-1\" is not a whole number")
    );
}

#[test]
fn other_malformed_values_are_refused_as_syntax_errors() {
    for text in [
        "",
        " 203.0.113.7",
        "203.0.113.7 ",
        "203.0.113. 7",
        "203.0.113.256",
        "203.0.113.1000",
        "203.0.113.x",
        "203.0.113.+7",
        "203..113.7",
        "203.0.113.7.",
        "203.0.113.7.1",
        "203.0.113.0/24/8",
        "203.0.113.0/999999999999",
        "0x7f.0.0.1",
        "3405803783",
    ] {
        let e = refused(text);
        assert_eq!(e.fix, VALID_FORM, "{text:?}: {e}");
    }
    assert!(refused("").reason.contains("empty"));
    assert!(refused(" 203.0.113.7").reason.contains("whitespace"));
    assert!(refused("203.0.113.256").reason.contains("256 is above 255"));
}

#[test]
fn a_dash_range_is_refused_listing_the_prefixes_that_cover_it_exactly() {
    for (text, fix) in [
        (
            "203.0.113.1-203.0.113.9",
            "write the 6 prefixes that cover it exactly, one value each: 203.0.113.1, \
             203.0.113.2, 203.0.113.3, 203.0.113.4/30, 203.0.113.8, 203.0.113.9",
        ),
        ("203.0.113.0 - 203.0.113.255", "write 203.0.113.0/24"),
        ("203.0.113.7-203.0.113.7", "write 203.0.113.7"),
    ] {
        let e = refused(text);
        assert!(e.reason.contains("is a range of addresses"), "{e}");
        assert_eq!(e.fix, fix, "{text}");
    }
    let reversed = refused("203.0.113.9-203.0.113.1");
    assert!(
        reversed
            .reason
            .contains("203.0.113.1–203.0.113.9 (its first address is after its last"),
        "{reversed}"
    );
    // A wide cover: 50 prefixes, its two /31s as their addresses, every
    // one listed.
    let wide = refused("4.0.0.1-7.255.255.254");
    assert!(
        wide.fix.starts_with("write the 52 prefixes") && wide.fix.ends_with(", 7.255.255.254"),
        "{wide}"
    );
}

#[test]
fn a_suggested_prefix_the_validator_refuses_is_left_out_or_refused_with_its_own_fix() {
    // Private space: the one prefix is refused with the private range's fix.
    let private = refused("10.0.0.0-10.0.0.255");
    assert!(
        private.reason.contains("10.0.0.0/24 is refused too"),
        "{private}"
    );
    assert!(private.fix.contains("virtual network rule"), "{private}");
    // The whole space: a /0, whose fix is default_action = "Allow".
    let all = refused("0.0.0.0-255.255.255.255");
    assert!(all.fix.contains("default_action = \"Allow\""), "{all}");
    // A cover crossing private space keeps the public prefixes and names
    // the one left out.
    let crossing = refused("9.255.255.255-11.0.0.0");
    assert_eq!(
        crossing.fix,
        "write the 2 prefixes of it that can be held, one value each: 9.255.255.255, \
         11.0.0.0; left out: 10.0.0.0/8 (10.0.0.0/8 is the private range \
         10.0.0.0–10.255.255.255 (RFC 1918): IP rules admit public address space only)"
    );
    // A netmask on an address with host bits: the host-bits fix.
    let host = refused("203.0.113.5/255.255.255.0");
    assert_eq!(
        host.fix,
        "write 203.0.113.0/24 for the whole network, or 203.0.113.5 if one host was meant"
    );
    // A /31 netmask: its two addresses, as for a /31.
    assert_eq!(
        refused("203.0.113.0/255.255.255.254").fix,
        "write the 2 prefixes that cover it exactly, one value each: 203.0.113.0, 203.0.113.1"
    );
}

#[test]
fn a_cover_is_exactly_the_range_for_generated_ranges() {
    let mut state = 0x2545_f491_u32;
    for _ in 0..2_000 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Public space only, so that every prefix of the cover is listed.
        let low = 0x0400_0000 | (state & 0x03ff_ff00);
        let high = low + (state >> 24) * 3;
        let e = refused(&format!("{}-{}", Ipv4Addr::from(low), Ipv4Addr::from(high)));
        let listed = e
            .fix
            .rsplit(": ")
            .next()
            .unwrap()
            .trim_start_matches("write ");
        // Adjacent, ascending, starting at `low` and ending at `high`.
        let mut next = u64::from(low);
        for item in listed.split(", ") {
            let n: Ipv4Net = item
                .parse()
                .unwrap_or_else(|_| Ipv4Net::from(item.parse::<Ipv4Addr>().unwrap()));
            assert_ne!(n.prefix_len(), 31, "{e}");
            assert_eq!(u64::from(u32::from(n.network())), next, "{e}");
            next = u64::from(u32::from(n.broadcast())) + 1;
        }
        assert_eq!(next, u64::from(high) + 1, "{e}");
    }
}

#[test]
fn a_netmask_or_a_wildcard_is_refused_naming_the_prefix_length() {
    let e = refused("203.0.113.0/255.255.255.0");
    assert!(e.reason.contains("netmask 255.255.255.0"), "{e}");
    assert_eq!(e.fix, "write 203.0.113.0/24");
    assert!(
        refused("203.0.113.0/255.0.255.0")
            .reason
            .contains("not a netmask")
    );
    for (text, fix) in [
        ("203.0.113.*", "write 203.0.113.0/24"),
        ("203.0.*.*", "write 203.0.0.0/16"),
    ] {
        let e = refused(text);
        assert!(e.reason.contains("is a wildcard"), "{e}");
        assert_eq!(e.fix, fix);
    }
    // Not a wildcard: a star in the middle, or one with a prefix length.
    assert_eq!(refused("203.*.113.7").fix, VALID_FORM);
    assert_eq!(refused("203.0.113.*/8").fix, VALID_FORM);
}

#[test]
fn a_host_name_is_refused_naming_both_address_families() {
    for text in [
        "localhost",
        "vault-client",
        "gateway/24",
        "vault.example.com",
        "www.kv.example.com",
        // A first label of hex letters: the top-level domain tells.
        "cafe.example.com",
        "ad.example.co.uk",
    ] {
        let e = refused(text);
        assert!(e.reason.contains("is a name, not an IP address"), "{e}");
        assert!(e.fix.contains("203.0.113.0/24"), "{e}");
        assert!(e.fix.contains("2001:db8::/48"), "{e}");
        // Where either family is taken, the same explanation.
        assert_eq!(
            super::super::parse_any_ip_rule("--ip-address", text),
            Err(e)
        );
    }
    let e = super::super::parse_any_subnet_prefix("--subnet-prefix", "gateway")
        .expect_err("a name is no prefix");
    assert!(e.reason.contains("a subnet prefix holds addresses"), "{e}");
    assert!(
        e.fix.contains("10.1.0.0/24") && e.fix.contains("fd00:1::/64"),
        "{e}"
    );
    // The examples the fixes give are accepted.
    for example in [
        "203.0.113.7",
        "203.0.113.0/24",
        "2001:db8::7",
        "2001:db8::/48",
    ] {
        assert!(
            super::super::parse_any_ip_rule("p", example).is_ok(),
            "{example}"
        );
    }
    for example in ["10.1.0.0/24", "fd00:1::/64"] {
        assert!(
            super::super::parse_any_subnet_prefix("p", example).is_ok(),
            "{example}"
        );
    }
    // Not names: the one-number and hexadecimal forms of an IPv4 address,
    // an exponent, an IPv6 group, a placeholder octet. Each keeps its own
    // reason.
    for text in ["3405803783", "0x7f000001", "1e3", "fe80", "203.0.113.x"] {
        assert_eq!(refused(text).fix, VALID_FORM, "{text:?}");
    }
}

#[test]
fn leading_zero_in_an_octet_is_refused_never_read_as_octal_or_decimal() {
    let e = refused("010.1.1.1");
    assert!(e.reason.contains("\"010\" has a leading zero"), "{e}");
    assert!(e.reason.contains("octal"), "{e}");
    assert!(e.fix.contains("10.1.1.1"), "{e}");
    let e = refused("203.0.113.07");
    assert!(e.fix.contains("203.0.113.7"), "{e}");
    // A lone zero is fine.
    assert!(parse_ip_rule("p", "203.0.113.0/24").is_ok());
}

#[test]
fn leading_zero_in_the_prefix_length_is_refused() {
    let e = refused("203.0.113.0/08");
    assert!(e.reason.contains("leading zero"), "{e}");
    assert_eq!(e.fix, VALID_FORM);
}

#[test]
fn ipv6_addresses_and_ranges_are_refused_pointing_to_the_ipv6_setting() {
    for text in [
        "2001:db8::1",
        "2001:db8::/32",
        "::1",
        "::ffff:203.0.113.7",
        "::/0",
    ] {
        let e = refused(text);
        assert!(e.reason.contains("IPv6"), "{e}");
        assert!(e.reason.contains("only IPv4"), "{e}");
        assert!(e.fix.contains("ipv6 = \"Allow\""), "{e}");
        assert!(e.fix.contains("ipv6 = \"Deny\""), "{e}");
    }
    assert!(refused("2001:db8::/32").reason.contains("IPv6 range"));
    assert!(refused("2001:db8::1").reason.contains("IPv6 address"));
}

#[test]
fn an_address_with_a_port_is_refused_pointing_to_the_data_plane() {
    let e = refused("203.0.113.7:443");
    assert!(e.reason.contains("port"), "{e}");
    assert!(
        e.fix.contains("203.0.113.7") && e.fix.contains("[data_plane]"),
        "{e}"
    );
    // Where either family is taken (a policy's list, `network-rule add`),
    // the IPv6 parser sees the ':' first: the same reason, both families.
    for (text, host) in [
        ("203.0.113.7:443", "203.0.113.7"),
        ("[2001:db8::7]:443", "2001:db8::7"),
    ] {
        let e = super::super::parse_any_ip_rule("--ip-address", text).expect_err("a port");
        assert_eq!(e.reason, "a port is not part of an IP rule", "{e}");
        assert!(e.fix.contains(&format!("({host})")), "{e}");
    }
}

#[test]
fn slash_31_is_refused_naming_the_two_addresses() {
    let e = refused("203.0.113.10/31");
    assert!(e.reason.contains("/31 is not supported as a range"), "{e}");
    assert!(e.fix.contains("203.0.113.10 and 203.0.113.11"), "{e}");
    // Written with the upper address, the same pair is named.
    let e = refused("203.0.113.11/31");
    assert!(e.fix.contains("203.0.113.10 and 203.0.113.11"), "{e}");
}

#[test]
fn slash_31_inside_private_space_names_the_range_not_the_pair() {
    let e = refused("10.0.0.0/31");
    assert!(
        e.reason.contains("10.0.0.0/8") && e.reason.contains("RFC 1918"),
        "{e}"
    );
}

#[test]
fn host_bits_are_refused_suggesting_the_network_or_the_host() {
    let e = refused("203.0.113.77/24");
    assert!(e.reason.contains("host bits"), "{e}");
    assert!(e.reason.contains("203.0.113.0/24"), "{e}");
    assert!(e.fix.contains("203.0.113.0/24"), "{e}");
    assert!(e.fix.contains("203.0.113.77 if one host was meant"), "{e}");
}

#[test]
fn host_bits_whose_network_is_not_public_suggest_only_the_host() {
    let e = refused("203.0.113.77/4");
    assert!(e.reason.contains("host bits"), "{e}");
    assert!(e.fix.contains("203.0.113.77 if one host was meant"), "{e}");
    assert!(e.fix.contains("192.0.0.0/4 would be refused too"), "{e}");
    assert!(e.fix.contains("192.168.0.0/16"), "{e}");
}

#[test]
fn host_bits_inside_private_space_name_the_private_range() {
    let e = refused("10.1.2.3/24");
    assert!(
        e.reason
            .contains("10.1.2.0/24 lies inside the private range 10.0.0.0/8"),
        "{e}"
    );
    assert!(e.fix.contains("virtual network rule"), "{e}");
}

#[test]
fn everything_slash_0_is_refused_pointing_to_default_action_allow() {
    for text in ["0.0.0.0/0", "203.0.113.7/0"] {
        let e = refused(text);
        assert!(e.reason.contains("every IPv4 address"), "{e}");
        assert!(e.reason.contains("non-public"), "{e}");
        assert!(e.fix.contains("default_action = \"Allow\""), "{e}");
    }
}

/// (input, the range the message must name, its RFC, a word of its purpose)
const SPECIAL_VALUES_REFUSED: [(&str, &str, &str, &str); 13] = [
    (
        "10.0.0.0/8",
        "10.0.0.0–10.255.255.255",
        "RFC 1918",
        "private",
    ),
    ("10.1.2.0/24", "10.0.0.0/8", "RFC 1918", "private"),
    ("172.31.255.0/24", "172.16.0.0/12", "RFC 1918", "private"),
    (
        "172.16.0.0/12",
        "172.16.0.0–172.31.255.255",
        "RFC 1918",
        "private",
    ),
    ("192.168.1.0/24", "192.168.0.0/16", "RFC 1918", "private"),
    ("127.0.0.1", "127.0.0.0/8", "RFC 1122", "loopback"),
    ("169.254.1.0/24", "169.254.0.0/16", "RFC 3927", "link-local"),
    (
        "100.64.0.0/10",
        "100.64.0.0–100.127.255.255",
        "RFC 6598",
        "shared address space",
    ),
    ("224.0.0.1", "224.0.0.0/4", "RFC 5771", "multicast"),
    (
        "255.255.255.255",
        "limited broadcast",
        "RFC 919",
        "broadcast",
    ),
    ("0.1.2.3", "0.0.0.0/8", "RFC 1122", "this network"),
    ("240.0.0.1", "240.0.0.0/4", "RFC 1112", "reserved"),
    (
        "100.127.255.0/24",
        "100.64.0.0/10",
        "RFC 6598",
        "carrier-grade NAT",
    ),
];

#[test]
fn private_and_special_addresses_are_refused_naming_their_range_and_rfc() {
    for (text, range, rfc, purpose) in SPECIAL_VALUES_REFUSED {
        let e = refused(text);
        assert!(
            e.reason.contains(range),
            "{text}: range {range} not named: {e}"
        );
        assert!(e.reason.contains(rfc), "{text}: {rfc} not named: {e}");
        assert!(
            e.reason.contains(purpose),
            "{text}: {purpose} not named: {e}"
        );
        assert!(e.reason.contains("public"), "{text}: {e}");
    }
}

#[test]
fn private_ranges_point_to_virtual_network_rules() {
    for text in ["10.0.0.0/8", "172.31.255.0/24", "192.168.1.0/24"] {
        let e = refused(text);
        assert!(e.fix.contains("virtual network rule"), "{e}");
    }
    // Other special ranges do not: a vnet rule would not help there.
    assert!(!refused("127.0.0.1").fix.contains("virtual network"));
}

#[test]
fn limited_broadcast_is_named_as_such_not_as_reserved() {
    let e = refused("255.255.255.255");
    assert!(
        e.reason.contains("limited broadcast address (RFC 919)"),
        "{e}"
    );
    assert!(!e.reason.contains("reserved"), "{e}");
}

#[test]
fn an_address_in_172_32_is_public_and_accepted() {
    assert_eq!(
        parse_ip_rule("p", "172.32.0.0/24"),
        Ok(net("172.32.0.0/24"))
    );
    assert!(parse_ip_rule("p", "172.15.255.255").is_ok());
}

#[test]
fn a_range_containing_private_space_names_the_range_inside_it() {
    let e = refused("8.0.0.0/6");
    assert!(
        e.reason
            .contains("8.0.0.0/6 contains the private range 10.0.0.0/8"),
        "{e}"
    );
    assert!(e.reason.contains("RFC 1918"), "{e}");
    assert!(
        e.fix.contains("8.0.0.0/7, 11.0.0.0/8"),
        "the fix gives the public parts: {e}"
    );
}

#[test]
fn a_range_containing_several_special_ranges_names_them_all() {
    let e = refused("0.0.0.0/1");
    for range in ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8"] {
        assert!(e.reason.contains(range), "{range} missing: {e}");
    }
    let e = refused("255.255.255.0/24");
    assert!(e.reason.contains("240.0.0.0/4"), "{e}");
}

#[test]
fn special_ranges_are_canonical_sorted_and_cite_an_rfc() {
    for pair in SPECIAL_RANGES.windows(2) {
        assert!(pair[0].network.addr() < pair[1].network.addr());
    }
    for s in &SPECIAL_RANGES {
        assert_eq!(s.network, s.network.trunc(), "{}", s.network);
        assert!(s.rfc.starts_with("RFC "), "{}", s.network);
        assert_eq!(s.private, s.rfc == "RFC 1918");
    }
}

#[test]
fn conflict_prefers_the_most_specific_range_containing_the_network() {
    let bcast = Ipv4Net::from(Ipv4Addr::BROADCAST);
    match conflict(bcast) {
        Some(Conflict::Inside(s)) => assert_eq!(s.network, bcast),
        other => panic!("{other:?}"),
    }
    assert_eq!(conflict(net("203.0.113.0/24")), None);
}
