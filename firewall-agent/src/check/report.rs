//! What `vaultfw check` prints for each frame: a table or one JSON object
//! per line, the rule that matched in the policy's own words, and the
//! message for a frame the kernel and the reference model judge
//! differently.

use std::io::{self, Write};

use firewall_common::{IFINDEX_ANY, VLAN_ANY, Verdict};

use crate::compile::cpt::Lookup;
use crate::compile::{RuleKind, RuleTable};
use crate::links::InterfaceIndex;
use crate::policy::Policy;
use crate::reference::{Judgement, MatchedRule, XdpAction};

/// One judged frame.
#[derive(Clone, Debug)]
pub struct FrameResult {
    /// Position in the input, from 0.
    pub index: usize,
    /// The kernel's return code and the verdict counter that moved; `None`
    /// when the frame was not run (shorter than an Ethernet header, or
    /// longer than one XDP buffer).
    pub kernel: Option<(u32, Verdict)>,
    /// The per-rule hit counters the frame moved (the trie values the
    /// kernel matched): one for a rule verdict, none otherwise.
    pub kernel_slots: Vec<u32>,
    /// The reference model's judgement.
    pub model: Judgement,
    /// The matched rule as the policy names it.
    pub rule: Option<String>,
    /// Remarks on the frame (cut by the capture, not run).
    pub notes: Vec<String>,
    /// The frame, for the disagreement message.
    pub frame: Vec<u8>,
}

impl FrameResult {
    /// Whether the kernel and the model agree: on the verdict, the action
    /// and, for a rule verdict, the table entry (its hit slot). A frame
    /// that was not run agrees by definition.
    pub fn agrees(&self) -> bool {
        match self.kernel {
            None => true,
            Some((code, verdict)) => {
                let slots: Vec<u32> = self.model.matched.iter().map(|m| m.id).collect();
                verdict == self.model.verdict
                    && code == self.model.action.code()
                    && self.kernel_slots == slots
            }
        }
    }

    fn action_name(&self) -> &'static str {
        match self.kernel {
            None => "-",
            Some((code, _)) => XdpAction::from_code(code).map_or("XDP_?", XdpAction::name),
        }
    }

    fn reason(&self) -> &'static str {
        self.kernel.map_or("not_run", |(_, v)| v.name())
    }
}

/// The matched rule in the policy's words: `ip rule 203.0.113.0/24`,
/// `virtual network rule vnet-prod/subnets/app: 10.1.2.0/24 via interface
/// eth1`, `trusted service Sql (tag Sql): 192.0.2.128/29`. An IP or subnet
/// rule is the owner of the entry's hit slot in `rules` (the compiler's
/// [`crate::compile::rule_table`] for `policy`); a trusted prefix is found
/// by its network.
pub fn describe_rule(
    policy: &Policy,
    interfaces: &InterfaceIndex,
    rules: &RuleTable,
    matched: &MatchedRule,
) -> String {
    let prefix = crate::policy::shown_any(matched.prefix);
    let owner = rules.owner_index(matched.id, matched.kind);
    match matched.kind {
        RuleKind::Ip => match owner.map(|i| &policy.ip_rules[i]) {
            Some(rule) => match &rule.comment {
                Some(comment) => format!("ip rule {rule} ({comment:?})"),
                None => format!("ip rule {rule}"),
            },
            None => format!("ip rule {prefix}"),
        },
        RuleKind::Ip6 => match owner.map(|i| &policy.ipv6_rules[i]) {
            Some(rule) => match &rule.comment {
                Some(comment) => format!("ip rule {rule} ({comment:?})"),
                None => format!("ip rule {rule}"),
            },
            None => format!("ip rule {prefix}"),
        },
        RuleKind::Vnet | RuleKind::PrivateEndpoint => {
            let via = match matched.endpoint {
                Some((ifindex, vlan)) => endpoint_name(interfaces, ifindex, vlan),
                None => "its endpoint".to_owned(),
            };
            // The kernel's virtual-network table holds private endpoints too.
            let private = rules
                .owner_index(matched.id, RuleKind::PrivateEndpoint)
                .map(|i| &policy.private_endpoints[i]);
            if let Some(endpoint) = private {
                return format!(
                    "private endpoint on {}: {prefix} (not subject to the IP rules or \
                     public_network_access)",
                    endpoint.interface
                );
            }
            match owner.map(|i| &policy.virtual_network_rules[i]) {
                Some(rule) => format!("virtual network rule {}: {prefix} via {via}", rule.id),
                None => format!("virtual network rule {prefix} via {via}"),
            }
        }
        RuleKind::Trusted => {
            let trusted = match matched.prefix {
                ipnet::IpNet::V4(net) => policy
                    .trusted_services
                    .prefixes
                    .iter()
                    .find(|p| p.network == net)
                    .map(|p| (p.service, p.tag.as_str())),
                ipnet::IpNet::V6(net) => policy
                    .trusted_services
                    .prefixes_v6
                    .iter()
                    .find(|p| p.network == net)
                    .map(|p| (p.service, p.tag.as_str())),
            };
            match trusted {
                Some((service, tag)) => format!("trusted service {service} (tag {tag}): {prefix}"),
                None => format!("trusted service prefix {prefix}"),
            }
        }
    }
}

/// `interface eth1`, `VLAN 120`, `interface eth1, VLAN 7`, naming the
/// interface when the policy does.
fn endpoint_name(interfaces: &InterfaceIndex, ifindex: u32, vlan: u32) -> String {
    let interface = (ifindex != IFINDEX_ANY).then(|| {
        interfaces.iter().find(|(_, i)| **i == ifindex).map_or_else(
            || format!("ifindex {ifindex}"),
            |(name, _)| format!("interface {name}"),
        )
    });
    let vlan = (vlan != VLAN_ANY).then(|| format!("VLAN {vlan}"));
    match (interface, vlan) {
        (Some(i), Some(v)) => format!("{i}, {v}"),
        (Some(i), None) => i,
        (None, Some(v)) => v,
        (None, None) => "any endpoint".to_owned(),
    }
}

/// The table: one line per frame (index, verdict, reason, rule), notes and
/// — with `explain` — the model's steps indented below it; then the
/// `lookup` the program judged IPv4 sources through.
pub fn print_table(
    out: &mut impl Write,
    results: &[FrameResult],
    explain: bool,
    lookup: Lookup,
) -> io::Result<()> {
    let rows: Vec<[String; 4]> = results
        .iter()
        .map(|r| {
            [
                r.index.to_string(),
                r.action_name().to_owned(),
                r.reason().to_owned(),
                r.rule.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    let header = ["#", "VERDICT", "REASON", "RULE"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |row: &[String; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        )
    };
    writeln!(out, "{}", line(&header).trim_end())?;
    for (row, result) in rows.iter().zip(results) {
        writeln!(out, "{}", line(row).trim_end())?;
        let indent = " ".repeat(widths[0] + 2);
        for note in &result.notes {
            writeln!(out, "{indent}note: {note}")?;
        }
        if !result.agrees() {
            writeln!(out, "{indent}DISAGREEMENT: {}", result.difference())?;
        }
        if explain {
            for step in &result.model.explanation {
                writeln!(out, "{indent}{step}")?;
            }
        }
    }
    writeln!(out, "lookup: {}", lookup.name())
}

/// One frame of `--output json`, fields in this order.
#[derive(serde::Serialize)]
struct JsonFrame<'a> {
    index: usize,
    /// `XDP_PASS` / `XDP_DROP`; null when the frame was not run.
    verdict: Option<&'static str>,
    /// The counter that moved; null when the frame was not run.
    reason: Option<&'static str>,
    rule: Option<&'a str>,
    /// The `--lookup` the program judged IPv4 sources through.
    lookup: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<&'a [String]>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    notes: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    model_verdict: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_reason: Option<&'static str>,
}

/// One JSON object per frame and line: `index`, `verdict`, `reason`,
/// `rule` (null when none), `lookup`, `explanation` with `explain`; `notes`
/// when there are any, and `model_verdict` / `model_reason` on a
/// disagreement.
pub fn print_json(
    out: &mut impl Write,
    results: &[FrameResult],
    explain: bool,
    lookup: Lookup,
) -> io::Result<()> {
    for r in results {
        let disagrees = !r.agrees();
        let object = JsonFrame {
            index: r.index,
            verdict: r.kernel.map(|_| r.action_name()),
            reason: r.kernel.map(|(_, v)| v.name()),
            rule: r.rule.as_deref(),
            lookup: lookup.name(),
            explanation: explain.then_some(r.model.explanation.as_slice()),
            notes: &r.notes,
            model_verdict: disagrees.then(|| r.model.action.name()),
            model_reason: disagrees.then(|| r.model.verdict.name()),
        };
        serde_json::to_writer(&mut *out, &object).map_err(io::Error::other)?;
        writeln!(out)?;
    }
    Ok(())
}

impl FrameResult {
    /// How the kernel and the model differ, in words.
    fn difference(&self) -> String {
        let model_slot = self.model.matched.map(|m| m.id);
        if self.reason() == self.model.verdict.name()
            && self.action_name() == self.model.action.name()
        {
            format!(
                "both say {}, but the kernel counted rule hit slot(s) {:?} and the reference \
                 model matched slot {model_slot:?}",
                self.reason(),
                self.kernel_slots
            )
        } else {
            format!(
                "the kernel program says {} ({}), the reference model says {} ({})",
                self.reason(),
                self.action_name(),
                self.model.verdict.name(),
                self.model.action.name()
            )
        }
    }
}

/// The stderr message for a frame the kernel and the model disagree on.
pub fn disagreement_message(r: &FrameResult) -> String {
    let hex: String = r.frame.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "vaultfw check: DISAGREEMENT on frame {}: {}. One of them is wrong: this is a bug in \
         vaultfw, please report it with the frame: {hex}",
        r.index,
        r.difference()
    )
}
