//! `vaultfw network-rule list` for people: the columns `az keyvault
//! network-rule list` shows for each rule (`value` of an IP rule; `id` and
//! `ignoreMissingVnetServiceEndpoint` of a virtual network rule), plus what
//! a host adds: each subnet rule's prefix and endpoint, the comment and
//! expiry vaultfw keeps, and the hits the kernel counted.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use crate::control::replies::{RuleHits, RuleListReply};

/// The reply as tables (IP rules, virtual network rules, waiting rules,
/// trusted services), each left out when empty.
pub fn render(reply: &RuleListReply) -> String {
    let mut out = format!("generation {}\n", reply.generation);
    let table = |header: &[&str]| {
        let mut t = Table::new();
        t.load_style(UTF8_FULL_CONDENSED);
        t.set_header(header.to_vec());
        t
    };
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
    let hits = |h: &RuleHits| h.packets.to_string();
    let last = |h: &RuleHits| dash(&h.last_hit);

    if !reply.ip_rules.is_empty() {
        let mut t = table(&["Value", "Comment", "ExpiresAt", "Hits", "LastHit"]);
        for r in &reply.ip_rules {
            t.add_row(vec![
                r.rule.clone(),
                dash(&r.comment),
                dash(&r.expires_at),
                hits(&r.hits),
                last(&r.hits),
            ]);
        }
        out.push_str(&format!("IP rules:\n{t}\n"));
    }
    if !reply.virtual_network_rules.is_empty() {
        let mut t = table(&[
            "Id",
            "IgnoreMissingVnetServiceEndpoint",
            "AddressPrefix",
            "Endpoint",
            "Hits",
            "LastHit",
        ]);
        for r in &reply.virtual_network_rules {
            t.add_row(vec![
                dash(&r.id),
                r.ignore_missing_endpoint.to_string(),
                r.subnet.clone(),
                dash(&r.endpoint),
                hits(&r.hits),
                last(&r.hits),
            ]);
        }
        out.push_str(&format!("Virtual network rules:\n{t}\n"));
    }
    if !reply.virtual_network_rules_waiting.is_empty() {
        let mut t = table(&["Id", "Endpoint", "State"]);
        for r in &reply.virtual_network_rules_waiting {
            t.add_row(vec![r.id.clone(), r.endpoint.clone(), r.state.clone()]);
        }
        out.push_str(&format!("Waiting for their endpoint:\n{t}\n"));
    }
    if !reply.trusted_services.is_empty() {
        let mut t = table(&["Service", "Prefixes", "Active", "Hits", "LastHit"]);
        for s in &reply.trusted_services {
            t.add_row(vec![
                s.service.clone(),
                s.prefixes.to_string(),
                s.active.to_string(),
                hits(&s.hits),
                last(&s.hits),
            ]);
        }
        out.push_str(&format!("Trusted services:\n{t}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::replies::{IpRuleShown, VnetPrefixShown};

    #[test]
    fn the_table_has_azs_columns_plus_hits() {
        let reply = RuleListReply {
            generation: 7,
            ip_rules: vec![IpRuleShown {
                rule: "203.0.113.7".into(),
                comment: Some("office".into()),
                expires_at: None,
                hits: RuleHits {
                    packets: 42,
                    bytes: 0,
                    last_hit: None,
                },
            }],
            virtual_network_rules: vec![VnetPrefixShown {
                id: Some("vnet/subnets/app".into()),
                subnet: "10.1.2.0/24".into(),
                endpoint: Some("interface eth1".into()),
                ifindex: 3,
                vlan: None,
                ignore_missing_endpoint: true,
                hits: RuleHits::default(),
            }],
            virtual_network_rules_waiting: Vec::new(),
            trusted_service_prefixes: 0,
            trusted_services: Vec::new(),
        };
        let text = render(&reply);
        for cell in [
            "Value",
            "IgnoreMissingVnetServiceEndpoint",
            "203.0.113.7",
            "office",
            "42",
            "vnet/subnets/app",
            "true",
            "interface eth1",
        ] {
            assert!(text.contains(cell), "{cell:?} missing:\n{text}");
        }
        assert!(!text.contains("Trusted services"), "{text}");
    }
}
