//! Where IP rules just added overlap the other rules of a policy: the
//! notes `network-rule add` answers with, in the words validation uses
//! for the same overlap (`ip_rules`), found without validating the whole
//! policy again. Overlaps are allowed: the longest prefix matches.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::model::{Policy, shown, shown6};

/// How many of the rules an added network contains a note names.
const NARROWER_NAMED: usize = 3;
/// How many notes an answer carries; one more line counts the rest.
const NOTES_SHOWN: usize = 16;

/// One note for each overlap of a network in `added` with the other IP
/// rules of `policy` (its family's list), which holds them all (the policy
/// after the change, so networks added together are seen together): the
/// narrowest other rule that contains it, and the other rules it contains.
/// At most [`NOTES_SHOWN`] notes, then a count of the rest. Each network
/// costs O(prefix bits × log rules): the lists are canonical and sorted by
/// (address, prefix length), as validation leaves them.
pub fn added_ip_rule_notes(policy: &Policy, added: &[IpNet]) -> Vec<String> {
    let mut notes = Vec::new();
    for net in added {
        match *net {
            IpNet::V4(n) => note_overlap(&policy.ip_rules, |r| r.network, n.trunc(), &mut notes),
            IpNet::V6(n) => note_overlap(&policy.ipv6_rules, |r| r.network, n.trunc(), &mut notes),
        }
    }
    if notes.len() > NOTES_SHOWN {
        let rest = notes.len() - NOTES_SHOWN;
        notes.truncate(NOTES_SHOWN);
        notes.push(format!(
            "and {rest} more notes of overlaps (`vaultfw validate` lists them all)"
        ));
    }
    notes
}

/// An IPv4 or IPv6 network as the overlap search needs it.
trait Prefix: Copy + Ord {
    /// The network one bit shorter, if any.
    fn supernet(self) -> Option<Self>;
    /// The network of the last address alone (`/32`, `/128`): after every
    /// network `self` contains, in (address, prefix length) order.
    fn last_address(self) -> Self;
    /// As rules are shown (`a.b.c.d` for a `/32`).
    fn shown(self) -> String;
}

impl Prefix for Ipv4Net {
    fn supernet(self) -> Option<Self> {
        Ipv4Net::supernet(&self)
    }
    fn last_address(self) -> Self {
        Ipv4Net::from(self.broadcast())
    }
    fn shown(self) -> String {
        shown(self)
    }
}

impl Prefix for Ipv6Net {
    fn supernet(self) -> Option<Self> {
        Ipv6Net::supernet(&self)
    }
    fn last_address(self) -> Self {
        Ipv6Net::from(self.broadcast())
    }
    fn shown(self) -> String {
        shown6(self)
    }
}

/// Pushes the notes for `added` against the other rules of `rules`
/// (sorted by `network`).
fn note_overlap<R, N: Prefix>(
    rules: &[R],
    network: impl Fn(&R) -> N,
    added: N,
    notes: &mut Vec<String>,
) {
    let holds = |n: N| rules.binary_search_by(|r| network(r).cmp(&n)).is_ok();
    let wider = std::iter::successors(added.supernet(), |n| n.supernet()).find(|n| holds(*n));
    if let Some(wider) = wider {
        notes.push(format!(
            "{} lies inside the IP rule {}: the wider rule already admits it (overlaps are \
             allowed; the longest prefix matches and counts the hit)",
            added.shown(),
            wider.shown()
        ));
    }
    // In (address, prefix length) order the networks `added` contains are
    // the ones after it up to its last address.
    let first = rules.partition_point(|r| network(r) <= added);
    let end = rules.partition_point(|r| network(r) <= added.last_address());
    let inside = &rules[first..end.max(first)];
    if !inside.is_empty() {
        let mut named: Vec<String> = inside
            .iter()
            .take(NARROWER_NAMED)
            .map(|r| network(r).shown())
            .collect();
        if inside.len() > NARROWER_NAMED {
            named.push(format!("and {} more", inside.len() - NARROWER_NAMED));
        }
        notes.push(format!(
            "{} contains {} IP rule{} ({}): each keeps admitting and counting its own sources, as \
             the longest prefix matches",
            added.shown(),
            inside.len(),
            if inside.len() == 1 { "" } else { "s" },
            named.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> Policy {
        let list = rules
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        super::super::parse_toml(&format!("default_action = \"Deny\"\nip_rules = [{list}]\n"))
            .expect("valid policy")
            .policy
    }

    /// The notes for `added` of the policy holding `rules` and `added`.
    fn notes(rules: &[&str], added: &[&str]) -> Vec<String> {
        let after: Vec<&str> = rules.iter().chain(added).copied().collect();
        let added: Vec<IpNet> = added
            .iter()
            .map(|a| {
                a.parse()
                    .or_else(|_| a.parse::<std::net::IpAddr>().map(IpNet::from))
                    .unwrap()
            })
            .collect();
        added_ip_rule_notes(&policy(&after), &added)
    }

    #[test]
    fn an_added_rule_inside_a_wider_one_names_the_narrowest_that_contains_it() {
        let rules = [
            "20.0.0.0/8",
            "20.1.0.0/16",
            "20.2.0.0/16",
            "198.51.100.0/24",
        ];
        assert_eq!(
            notes(&rules, &["20.1.2.3"]),
            [
                "20.1.2.3 lies inside the IP rule 20.1.0.0/16: the wider rule already admits it \
              (overlaps are allowed; the longest prefix matches and counts the hit)"
            ]
        );
        assert!(notes(&rules, &["21.0.0.0/8", "203.0.113.7"]).is_empty());
    }

    #[test]
    fn an_added_rule_over_narrower_ones_counts_them_and_names_the_first_three() {
        let rules = [
            "20.0.0.0/8",
            "20.1.0.0/16",
            "20.1.0.7",
            "20.1.9.0/24",
            "20.1.255.255",
            "20.2.0.0",
            "2001:db8::/48",
        ];
        let found = notes(&rules, &["20.1.0.0/17", "20.0.0.0/15", "2001:db8::/32"]);
        assert_eq!(found.len(), 5, "{found:#?}");
        assert!(found[0].starts_with("20.1.0.0/17 lies inside the IP rule 20.1.0.0/16"));
        assert!(
            found[1].starts_with("20.1.0.0/17 contains 2 IP rules (20.1.0.7, 20.1.9.0/24):"),
            "{}",
            found[1]
        );
        assert!(found[2].starts_with("20.0.0.0/15 lies inside the IP rule 20.0.0.0/8"));
        assert!(
            found[3].starts_with(
                "20.0.0.0/15 contains 5 IP rules (20.1.0.0/16, 20.1.0.0/17, 20.1.0.7, \
                 and 2 more):"
            ),
            "{}",
            found[3]
        );
        assert!(
            found[4].starts_with("2001:db8::/32 contains 1 IP rule (2001:db8::/48):"),
            "{}",
            found[4]
        );
    }

    #[test]
    fn the_notes_agree_with_a_scan_of_every_rule_on_nested_generated_sets() {
        // Deterministic generator (xorshift): nested prefixes in one /16.
        let mut state = 0x9e37_79b9_u32;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for _ in 0..200 {
            let mut net = || -> Ipv4Net {
                let addr = 0x1400_0000 | (next() & 0xffff);
                // Key Vault takes no /31 (`ipv4`): 16–30 and 32.
                let len = match 16 + next() % 16 {
                    31 => 32,
                    len => len,
                };
                Ipv4Net::new(addr.into(), len as u8).unwrap().trunc()
            };
            let rules: Vec<Ipv4Net> = (0..12).map(|_| net()).collect();
            let added = net();
            let texts: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            let found = notes(&texts, &[&added.to_string()]);
            // The others: every rule but the added network itself.
            let rules: Vec<Ipv4Net> = rules.into_iter().filter(|r| *r != added).collect();
            let wider = rules
                .iter()
                .filter(|r| r.contains(&added))
                .max_by_key(|r| r.prefix_len());
            let mut inside: Vec<&Ipv4Net> = rules.iter().filter(|r| added.contains(*r)).collect();
            inside.sort();
            inside.dedup();
            let said_wider = found.iter().find(|n| n.contains(" lies inside "));
            assert_eq!(
                said_wider.map(|n| n
                    .split(' ')
                    .nth(6)
                    .unwrap()
                    .trim_end_matches(':')
                    .to_owned()),
                wider.map(|w| shown(*w)),
                "{added} in {texts:?}: {found:#?}"
            );
            let counted = found
                .iter()
                .find_map(|n| n.split(" contains ").nth(1))
                .map_or(0, |rest| rest.split(' ').next().unwrap().parse().unwrap());
            assert_eq!(counted, inside.len(), "{added} in {texts:?}: {found:#?}");
        }
    }

    #[test]
    fn networks_added_together_are_noted_against_each_other() {
        let found = notes(&["20.0.0.0/8"], &["20.5.0.0/16", "20.5.6.7"]);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(found[0].starts_with("20.5.0.0/16 lies inside the IP rule 20.0.0.0/8"));
        assert!(found[1].starts_with("20.5.0.0/16 contains 1 IP rule (20.5.6.7)"));
        assert!(found[2].starts_with("20.5.6.7 lies inside the IP rule 20.5.0.0/16"));
    }

    #[test]
    fn past_sixteen_notes_one_line_counts_the_rest() {
        let added: Vec<String> = (0..20).map(|i| format!("20.{i}.0.0/16")).collect();
        let added: Vec<&str> = added.iter().map(String::as_str).collect();
        let found = notes(&["20.0.0.0/8"], &added);
        assert_eq!(found.len(), NOTES_SHOWN + 1);
        assert_eq!(
            found[NOTES_SHOWN],
            "and 4 more notes of overlaps (`vaultfw validate` lists them all)"
        );
    }
}
