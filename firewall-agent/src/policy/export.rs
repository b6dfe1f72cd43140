//! Azure JSON out: a [`Policy`] as `{"properties": {"networkAcls": …}}`,
//! the shape `az keyvault update` and ARM templates take, plus the subnet
//! map that carries what the JSON has no field for. Reading the two back
//! with [`parse_azure_json`](super::parse_azure_json) gives the same
//! policy (the round trip is tested).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::catalogue;
use super::ipv4::shown;
use super::model::{Bypass, DefaultAction, Ipv6Action, LimitProfile, Mode, Policy};

/// `policy` as Azure JSON: `{"properties": {"networkAcls": {"bypass",
/// "defaultAction", "ipRules": [{"value"}], "virtualNetworkRules": [{"id",
/// "ignoreMissingVnetServiceEndpoint"}]}}}`. Single addresses are written
/// `a.b.c.d/32`, as Key Vault stores them; subnet ids as the rules hold
/// them (an ARM id stays an ARM id). The subnets' prefixes and endpoints,
/// rule comments and expiry, and vaultfw's own settings are in
/// [`export_subnet_map`].
pub fn export_azure(policy: &Policy) -> Value {
    let ip_rules: Vec<Value> = policy
        .ip_rules
        .iter()
        .map(|r| json!({ "value": r.network.to_string() }))
        .collect();
    let vnet_rules: Vec<Value> = policy
        .virtual_network_rules
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "ignoreMissingVnetServiceEndpoint": r.ignore_missing_endpoint,
            })
        })
        .collect();
    json!({
        "properties": {
            "networkAcls": {
                "bypass": match policy.bypass {
                    Bypass::AzureServices => "AzureServices",
                    Bypass::None => "None",
                },
                "defaultAction": match policy.default_action {
                    DefaultAction::Allow => "Allow",
                    DefaultAction::Deny => "Deny",
                },
                "ipRules": ip_rules,
                "virtualNetworkRules": vnet_rules,
            }
        }
    })
}

/// The subnet map (TOML text, see the `subnet_map` module) that, read with
/// [`export_azure`]'s JSON, reproduces `policy`: every setting written
/// explicitly, `[trusted_services]` when it differs from the default, one
/// `[[ip_rule]]` per IP rule with a comment or expiry, and one `[[subnet]]`
/// per virtual network rule (its full id, prefixes, endpoint, comment and
/// expiry).
pub fn export_subnet_map(policy: &Policy) -> String {
    let mut out = String::new();
    let mut w = |line: String| {
        out.push_str(&line);
        out.push('\n');
    };
    w("# vaultfw subnet map: what Azure's networkAcls JSON has no field for.".into());
    w("# Read with the JSON it was exported with (vaultfw validate --subnet-map).".into());
    w(format!(
        "mode = {}",
        quote(match policy.mode {
            Mode::Enforce => "Enforce",
            Mode::Audit => "Audit",
        })
    ));
    w(format!(
        "ipv6 = {}",
        quote(match policy.ipv6 {
            Ipv6Action::Deny => "Deny",
            Ipv6Action::Allow => "Allow",
        })
    ));
    w(match policy.limits.profile {
        LimitProfile::Kv2020 | LimitProfile::KvCurrent => {
            format!("limits = {}", quote(policy.limits.profile.name()))
        }
        LimitProfile::Explicit => format!(
            "limits = {{ ip_rules = {}, virtual_network_rules = {} }}",
            policy.limits.ip_rules, policy.limits.virtual_network_rules
        ),
    });
    w(String::new());
    w("[data_plane]".into());
    w(format!(
        "tcp_ports = {}",
        list(&policy.data_plane.tcp_ports)
    ));
    w(format!(
        "udp_ports = {}",
        list(&policy.data_plane.udp_ports)
    ));
    if !policy.data_plane.guard_control_ports.is_empty() {
        w(format!(
            "guard_control_ports = {}",
            list(&policy.data_plane.guard_control_ports)
        ));
    }

    let trusted = &policy.trusted_services;
    let whole_catalogue = trusted.enabled.len() == catalogue().len();
    if trusted.service_tags_file.is_some() || !whole_catalogue {
        w(String::new());
        w("[trusted_services]".into());
        if let Some(file) = &trusted.service_tags_file {
            w(format!(
                "service_tags_file = {}",
                quote(&file.display().to_string())
            ));
        }
        if !whole_catalogue {
            let names: Vec<String> = trusted.enabled.iter().map(|s| quote(s.name)).collect();
            w(format!("enabled = [{}]", names.join(", ")));
        }
    }

    for rule in &policy.ip_rules {
        if rule.comment.is_none() && rule.expires_at.is_none() {
            continue;
        }
        w(String::new());
        w("[[ip_rule]]".into());
        w(format!("value = {}", quote(&shown(rule.network))));
        if let Some(c) = &rule.comment {
            w(format!("comment = {}", quote(c)));
        }
        if let Some(t) = rule.expires_at {
            w(format!(
                "expires_at = {}",
                quote(&humantime::format_rfc3339(t).to_string())
            ));
        }
    }

    for rule in &policy.virtual_network_rules {
        w(String::new());
        w("[[subnet]]".into());
        w(format!("id = {}", quote(&rule.id)));
        let prefixes: Vec<String> = rule
            .address_prefixes
            .iter()
            .map(|p| quote(&shown(*p)))
            .collect();
        w(format!("address_prefixes = [{}]", prefixes.join(", ")));
        let mut endpoint = Vec::new();
        if let Some(i) = &rule.endpoint.interface {
            endpoint.push(format!("interface = {}", quote(i)));
        }
        if let Some(v) = rule.endpoint.vlan {
            endpoint.push(format!("vlan = {v}"));
        }
        w(format!("endpoint = {{ {} }}", endpoint.join(", ")));
        if let Some(c) = &rule.comment {
            w(format!("comment = {}", quote(c)));
        }
        if let Some(t) = rule.expires_at {
            w(format!(
                "expires_at = {}",
                quote(&humantime::format_rfc3339(t).to_string())
            ));
        }
    }
    out
}

/// A TOML basic string, escaped.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn list(ports: &std::collections::BTreeSet<u16>) -> String {
    let mut s = String::from("[");
    for (i, p) in ports.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{p}");
    }
    s.push(']');
    s
}
