//! A [`Policy`] written out. Azure JSON: `{"properties": {"networkAcls":
//! …}}`, the shape `az keyvault update` and ARM templates take, plus the
//! subnet map that carries what the JSON has no field for; reading the two
//! back with [`parse_azure_json`](super::parse_azure_json) gives the same
//! policy. Native TOML: [`export_native`], read back with
//! [`parse_toml`](super::parse_toml) to the same policy. Both round trips
//! are tested.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::model::{Ipv6Action, LimitProfile, Mode, Policy, VnetRule, shown};
use super::trusted::catalogue;

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
                "bypass": policy.bypass.name(),
                "defaultAction": policy.default_action.name(),
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
    let mut out = Lines::default();
    out.line("# vaultfw subnet map: what Azure's networkAcls JSON has no field for.");
    out.line("# Read with the JSON it was exported with (vaultfw validate --subnet-map).");
    settings(&mut out, policy);
    out.line("");
    tables(&mut out, policy);
    for rule in &policy.ip_rules {
        if rule.comment.is_none() && rule.expires_at.is_none() {
            continue;
        }
        out.line("");
        out.line("[[ip_rule]]");
        out.line(format!("value = {}", quote(&shown(rule.network))));
        if let Some(c) = &rule.comment {
            out.line(format!("comment = {}", quote(c)));
        }
        if let Some(t) = rule.expires_at {
            out.line(format!("expires_at = {}", time(t)));
        }
    }
    for rule in &policy.virtual_network_rules {
        out.line("");
        out.line("[[subnet]]");
        vnet_rule(&mut out, rule);
    }
    out.0
}

/// `policy` in the native TOML format (DESIGN.md section 1): every setting
/// written explicitly, each IP rule (a table item when it has a comment or
/// an expiry), `[trusted_services]` when it differs from the default, one
/// `[[virtual_network_rules]]` per subnet rule. Reading it back with
/// [`parse_toml`](super::parse_toml) gives the same policy (the round trip
/// is tested); a daemon serving a native file writes a policy applied as
/// Azure JSON into it this way.
pub fn export_native(policy: &Policy) -> String {
    let mut out = Lines::default();
    out.line("# vaultfw policy (native format), written by vaultfw from an applied policy.");
    out.line(format!(
        "default_action = {}",
        quote(policy.default_action.name())
    ));
    out.line(format!("bypass = {}", quote(policy.bypass.name())));
    settings(&mut out, policy);
    out.line("ip_rules = [");
    for rule in &policy.ip_rules {
        let value = quote(&shown(rule.network));
        if rule.comment.is_none() && rule.expires_at.is_none() {
            out.line(format!("    {value},"));
            continue;
        }
        let mut item = vec![format!("value = {value}")];
        if let Some(c) = &rule.comment {
            item.push(format!("comment = {}", quote(c)));
        }
        if let Some(t) = rule.expires_at {
            item.push(format!("expires_at = {}", time(t)));
        }
        out.line(format!("    {{ {} }},", item.join(", ")));
    }
    out.line("]");
    out.line("");
    tables(&mut out, policy);
    for rule in &policy.virtual_network_rules {
        out.line("");
        out.line("[[virtual_network_rules]]");
        vnet_rule(&mut out, rule);
        if rule.ignore_missing_endpoint {
            out.line("ignore_missing_endpoint = true");
        }
    }
    out.0
}

/// Text built line by line.
#[derive(Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, line: impl AsRef<str>) {
        self.0.push_str(line.as_ref());
        self.0.push('\n');
    }
}

/// `mode`, `ipv6` and `limits` (top-level keys of both TOML forms).
fn settings(out: &mut Lines, policy: &Policy) {
    out.line(format!(
        "mode = {}",
        quote(match policy.mode {
            Mode::Enforce => "Enforce",
            Mode::Audit => "Audit",
        })
    ));
    out.line(format!(
        "ipv6 = {}",
        quote(match policy.ipv6 {
            Ipv6Action::Deny => "Deny",
            Ipv6Action::Allow => "Allow",
        })
    ));
    out.line(match policy.limits.profile {
        LimitProfile::Kv2020 | LimitProfile::KvCurrent => {
            format!("limits = {}", quote(policy.limits.profile.name()))
        }
        LimitProfile::Explicit => format!(
            "limits = {{ ip_rules = {}, virtual_network_rules = {} }}",
            policy.limits.ip_rules, policy.limits.virtual_network_rules
        ),
    });
}

/// `[data_plane]`, and `[trusted_services]` when it differs from the
/// default (tables of both TOML forms).
fn tables(out: &mut Lines, policy: &Policy) {
    out.line("[data_plane]");
    out.line(format!(
        "tcp_ports = {}",
        list(&policy.data_plane.tcp_ports)
    ));
    out.line(format!(
        "udp_ports = {}",
        list(&policy.data_plane.udp_ports)
    ));
    if !policy.data_plane.guard_control_ports.is_empty() {
        out.line(format!(
            "guard_control_ports = {}",
            list(&policy.data_plane.guard_control_ports)
        ));
    }
    let trusted = &policy.trusted_services;
    let whole_catalogue = trusted.enabled.len() == catalogue().len();
    if trusted.service_tags_file.is_some() || !whole_catalogue {
        out.line("");
        out.line("[trusted_services]");
        if let Some(file) = &trusted.service_tags_file {
            out.line(format!(
                "service_tags_file = {}",
                quote(&file.display().to_string())
            ));
        }
        if !whole_catalogue {
            let names: Vec<String> = trusted.enabled.iter().map(|s| quote(s.name)).collect();
            out.line(format!("enabled = [{}]", names.join(", ")));
        }
    }
}

/// The keys of one subnet rule that both TOML forms share: id, prefixes,
/// endpoint, comment, expiry.
fn vnet_rule(out: &mut Lines, rule: &VnetRule) {
    out.line(format!("id = {}", quote(&rule.id)));
    let prefixes: Vec<String> = rule
        .address_prefixes
        .iter()
        .map(|p| quote(&shown(*p)))
        .collect();
    out.line(format!("address_prefixes = [{}]", prefixes.join(", ")));
    let mut endpoint = Vec::new();
    if let Some(i) = &rule.endpoint.interface {
        endpoint.push(format!("interface = {}", quote(i)));
    }
    if let Some(v) = rule.endpoint.vlan {
        endpoint.push(format!("vlan = {v}"));
    }
    out.line(format!("endpoint = {{ {} }}", endpoint.join(", ")));
    if let Some(c) = &rule.comment {
        out.line(format!("comment = {}", quote(c)));
    }
    if let Some(t) = rule.expires_at {
        out.line(format!("expires_at = {}", time(t)));
    }
}

/// An expiry as a quoted RFC 3339 time.
fn time(t: std::time::SystemTime) -> String {
    quote(&humantime::format_rfc3339(t).to_string())
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
