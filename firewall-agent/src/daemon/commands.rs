//! Control-socket commands, handled one at a time by the daemon loop.
//! Every change is validated as the whole policy file it would produce,
//! applied to the kernel, then written back to the file; a refusal at any
//! step changes nothing (an unwritable file undoes the kernel change).

use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::compile::RuleKind;
use crate::control::protocol::{Command, ErrorKind, Response, RuleSpec};
use crate::control::replies::{
    ChangeReply, ConfirmReply, DataPlaneShown, DetachReply, InterfaceStats, IpRuleShown,
    LimitsShown, RuleListReply, ShowReply, StatsReply, TrustedServiceShown, VnetPrefixShown,
    WaitingRule,
};
use crate::dataplane::{ApplyReport, Confirmation};
use crate::persist::Edit;
use crate::policy::{self, WriteBack, shown};
use crate::telemetry::audit::Caller;

use super::audit::{Request, change_request, outcome_of};
use super::observe::{rule_hits, verdict_counts};
use super::reconcile::{Change, ChangeError};
use super::state::{
    Daemon, PendingApply, RolledBack, endpoint_interfaces, refuse_missing_endpoints,
};

/// What a command produced, and whether the daemon stops after answering.
pub struct Outcome {
    /// The answer.
    pub response: Response,
    /// Stop the daemon (after `detach`).
    pub stop: bool,
}

/// A command's reply, or the error response to send instead.
type Handled<T = ChangeReply> = Result<T, Response>;

impl Daemon {
    /// Handles one command from `caller`; a change request gets one
    /// audit record, whatever its outcome.
    pub fn handle(&mut self, command: Command, caller: &Caller) -> Outcome {
        tracing::debug!(?command, "control command");
        let audited = change_request(&command)
            .map(|(action, request)| (action, request, self.audit_snapshot()));
        let outcome = self.handle_command(command);
        if let Some((action, request, before)) = audited {
            let request = Request {
                action,
                caller,
                cause: None,
                request: Some(request),
            };
            self.audit(request, &before, Some(outcome_of(&outcome.response)));
        }
        outcome
    }

    fn handle_command(&mut self, command: Command) -> Outcome {
        let mut stop = false;
        let result = match command {
            Command::Show => {
                // The file may have changed since the last change (no watch).
                self.refresh_policy_sync();
                Ok(Response::reply(&self.show()))
            }
            Command::Stats => self.stats().map(|r| Response::reply(&r)),
            Command::RuleList => self.rule_list().map(|r| Response::reply(&r)),
            Command::RuleAdd {
                rule,
                if_generation,
            } => self
                .check_generation(if_generation)
                .and_then(|()| self.rule_add(rule))
                .map(|r| Response::reply(&r)),
            Command::RuleRemove {
                rule,
                if_generation,
            } => self
                .check_generation(if_generation)
                .and_then(|()| self.rule_remove(rule))
                .map(|r| Response::reply(&r)),
            Command::Update {
                default_action,
                bypass,
                if_generation,
            } => self
                .check_generation(if_generation)
                .and_then(|()| self.update(default_action, bypass))
                .map(|r| Response::reply(&r)),
            Command::Apply {
                file,
                format,
                text,
                subnet_map,
                confirm_within_s,
                if_generation,
            } => self
                .check_generation(if_generation)
                .and_then(|()| {
                    let map = subnet_map.map(|m| policy::FileText {
                        path: m.file.into(),
                        text: m.text,
                    });
                    let applied = policy::PolicyText::received(file.into(), format, text, map);
                    self.apply_file(&applied, confirm_within_s)
                })
                .map(|r| Response::reply(&r)),
            Command::Confirm => self.confirm().map(|r| Response::reply(&r)),
            // The access log belongs to the daemon loop, which answers this
            // itself (see `observe::Observer::logs`).
            Command::Logs { .. } => Err(Response::error(
                ErrorKind::Internal,
                "the access log is answered by the daemon loop",
            )),
            Command::Detach => {
                stop = true;
                self.detach()
                    .map(|()| {
                        Response::reply(&DetachReply {
                            detached: true,
                            daemon_running: None,
                            unpinned: None,
                        })
                    })
                    .map_err(|e| Response::error(ErrorKind::KernelRefused, e.to_string()))
            }
        };
        let response = result.unwrap_or_else(|error| error);
        Outcome { response, stop }
    }

    fn check_generation(&self, expected: Option<u64>) -> Result<(), Response> {
        if let Some(expected) = expected.filter(|g| *g != self.generation) {
            return Err(Response::error(
                ErrorKind::Conflict,
                format!(
                    "--if-generation {expected} refused: the daemon serves generation {}; \
                     re-read the policy (`vaultfw show`) and retry",
                    self.generation
                ),
            ));
        }
        if self.pending.is_some() {
            return Err(Response::error(
                ErrorKind::Conflict,
                "an apply awaits `vaultfw confirm`; confirm it or let it roll back first",
            ));
        }
        Ok(())
    }

    fn show(&self) -> ShowReply {
        let report = self.interface_report();
        let readiness = super::health::readiness(&report, &self.health);
        let mut warnings = notes(&self.policy);
        warnings.extend(report.warnings());
        let p = &self.policy;
        ShowReply {
            generation: self.generation,
            protected: report.protected,
            iface: self.options.interfaces.to_string(),
            interfaces: report.filtered,
            interfaces_not_attached: report.not_attached,
            unfiltered_interfaces: report.unfiltered,
            missing_interfaces: report.missing,
            unmanaged_links: report.unmanaged_links,
            on_exit: self.options.on_exit.name().to_owned(),
            pin_dir: self.options.pin_dir.clone(),
            policy_file: self.options.source.path.clone(),
            default_action: p.default_action.name().to_owned(),
            bypass: p.bypass.name().to_owned(),
            mode: p.mode.name().to_owned(),
            ipv6: p.ipv6.name().to_owned(),
            public_network_access: p.public_network_access.name().to_owned(),
            private_endpoints: p.private_endpoints.len(),
            limits: LimitsShown {
                profile: p.limits.profile.name().to_owned(),
                ip_rules: p.limits.ip_rules,
                virtual_network_rules: p.limits.virtual_network_rules,
                ipv6_rules: p.limits.ipv6_rules,
            },
            data_plane: DataPlaneShown {
                tcp_ports: p.data_plane.tcp_ports.clone(),
                udp_ports: p.data_plane.udp_ports.clone(),
                guard_control_ports: p.data_plane.guard_control_ports.clone(),
            },
            ip_rules: p.ip_rules.len() + p.ipv6_rules.len(),
            virtual_network_rules: p.virtual_network_rules.len(),
            trusted_service_prefixes: p.trusted_services.prefixes.len()
                + p.trusted_services.prefixes_v6.len(),
            awaiting_confirmation_until: self.pending.as_ref().map(|pa| rfc3339(pa.deadline)),
            health: self.health.shown(readiness),
            forwarded_traffic: if self.options.pass_forwarded {
                "passed"
            } else {
                "judged"
            }
            .to_owned(),
            lookup: self.dataplane.served_lookup(),
            warnings,
        }
    }

    fn stats(&self) -> Handled<StatsReply> {
        let sample = self
            .counter_sample()
            .map_err(|e| Response::error(ErrorKind::KernelRefused, e.to_string()))?;
        Ok(StatsReply {
            generation: self.generation,
            counters: verdict_counts(&sample.totals),
            interfaces: sample
                .interfaces
                .iter()
                .map(|i| InterfaceStats {
                    name: i.name.clone(),
                    ifindex: i.ifindex,
                    counters: verdict_counts(&i.totals),
                })
                .collect(),
            events: sample.events.into(),
        })
    }

    /// The rules as the kernel serves them (read back from the maps),
    /// described from the policy, each with its hits (packets, bytes, last
    /// hit): an IP rule's slot is its trie value; the prefixes of one
    /// subnet rule share the rule's slot; each trusted service has one.
    fn rule_list(&self) -> Handled<RuleListReply> {
        let kernel = |e: crate::dataplane::DataplaneError| {
            Response::error(ErrorKind::KernelRefused, e.to_string())
        };
        let hits = self.dataplane.rule_hits().map_err(kernel)?;
        // The policy rule behind a hit slot, as the compiler resolved it.
        let owners = self.rule_owners();
        let ip: Vec<IpRuleShown> = self
            .dataplane
            .active_ip_rules()
            .map_err(kernel)?
            .into_iter()
            .map(|(network, slot)| {
                let rule = owners
                    .owner_index(slot, RuleKind::Ip)
                    .map(|i| &self.policy.ip_rules[i]);
                IpRuleShown {
                    rule: shown(network),
                    comment: rule.and_then(|r| r.comment.clone()),
                    expires_at: rule.and_then(|r| r.expires_at).map(rfc3339),
                    hits: rule_hits(&hits, slot),
                }
            })
            .collect();
        let ip6 = self
            .dataplane
            .active_ip6_rules()
            .map_err(kernel)?
            .into_iter()
            .map(|(network, slot)| {
                let rule = owners
                    .owner_index(slot, RuleKind::Ip6)
                    .map(|i| &self.policy.ipv6_rules[i]);
                IpRuleShown {
                    rule: policy::shown6(network),
                    comment: rule.and_then(|r| r.comment.clone()),
                    expires_at: rule.and_then(|r| r.expires_at).map(rfc3339),
                    hits: rule_hits(&hits, slot),
                }
            });
        let ip: Vec<IpRuleShown> = ip.into_iter().chain(ip6).collect();
        let vnet6 = self
            .dataplane
            .active_vnet6_rules()
            .map_err(kernel)?
            .into_iter()
            .map(|(key, slot)| {
                let prefix = ipnet::Ipv6Net::from(key.prefix);
                let rule = owners
                    .owner_index(slot, RuleKind::Vnet)
                    .map(|i| &self.policy.virtual_network_rules[i]);
                VnetPrefixShown {
                    id: rule.map(|r| r.id.clone()),
                    subnet: policy::shown6(prefix),
                    endpoint: rule.map(|r| r.endpoint.to_string()),
                    ignore_missing_endpoint: rule.is_some_and(|r| r.ignore_missing_endpoint),
                    ifindex: key.ifindex,
                    vlan: (key.vlan != firewall_common::VLAN_ANY).then_some(key.vlan),
                    hits: rule_hits(&hits, slot),
                }
            })
            .collect::<Vec<_>>();
        let vnet: Vec<VnetPrefixShown> = self
            .dataplane
            .active_vnet_rules()
            .map_err(kernel)?
            .into_iter()
            .map(|(key, slot)| {
                let prefix = ipnet::Ipv4Net::from(key.prefix);
                let rule = owners
                    .owner_index(slot, RuleKind::Vnet)
                    .map(|i| &self.policy.virtual_network_rules[i]);
                // A private endpoint's entries share the table.
                let private = owners
                    .owner_index(slot, RuleKind::PrivateEndpoint)
                    .map(|i| &self.policy.private_endpoints[i]);
                let (id, endpoint) = match (rule, private) {
                    (Some(r), _) => (Some(r.id.clone()), Some(r.endpoint.to_string())),
                    (None, Some(p)) => (
                        Some(format!("private endpoint {}", p.interface)),
                        Some(format!("interface {}", p.interface)),
                    ),
                    (None, None) => (None, None),
                };
                VnetPrefixShown {
                    id,
                    subnet: shown(prefix),
                    endpoint,
                    ignore_missing_endpoint: rule.is_some_and(|r| r.ignore_missing_endpoint),
                    ifindex: key.ifindex,
                    vlan: (key.vlan != firewall_common::VLAN_ANY).then_some(key.vlan),
                    // The whole rule's (its prefixes share them).
                    hits: rule_hits(&hits, slot),
                }
            })
            .collect();
        let waiting: Vec<WaitingRule> = self
            .policy
            .virtual_network_rules
            .iter()
            .filter(|r| {
                r.endpoint
                    .interface
                    .as_ref()
                    .is_some_and(|i| !self.interfaces.contains_key(i))
            })
            .map(|r| WaitingRule {
                id: r.id.clone(),
                endpoint: r.endpoint.to_string(),
                state: "interface missing: matches nothing".to_owned(),
            })
            .collect();
        let vnet: Vec<VnetPrefixShown> = vnet.into_iter().chain(vnet6).collect();
        let trusted = self.dataplane.active_trusted().map_err(kernel)?.len()
            + self.dataplane.active_trusted6().map_err(kernel)?.len();
        let slots = self.dataplane.hit_slots();
        let bypass_on = self.policy.bypass == policy::Bypass::AzureServices;
        let services: Vec<TrustedServiceShown> = policy::catalogue()
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                self.policy
                    .trusted_services
                    .enabled
                    .iter()
                    .any(|e| e.name == s.name)
            })
            .map(|(index, s)| {
                let prefixes = self
                    .policy
                    .trusted_services
                    .prefixes
                    .iter()
                    .filter(|p| p.service == s.name)
                    .count()
                    + self
                        .policy
                        .trusted_services
                        .prefixes_v6
                        .iter()
                        .filter(|p| p.service == s.name)
                        .count();
                TrustedServiceShown {
                    service: s.name.to_owned(),
                    prefixes,
                    active: bypass_on,
                    hits: rule_hits(&hits, slots.trusted(index as u32)),
                }
            })
            .collect();
        Ok(RuleListReply {
            generation: self.generation,
            ip_rules: ip,
            virtual_network_rules: vnet,
            virtual_network_rules_waiting: waiting,
            trusted_service_prefixes: trusted,
            trusted_services: services,
        })
    }

    fn rule_add(&mut self, rule: RuleSpec) -> Handled {
        match rule {
            RuleSpec::Ip {
                address,
                more,
                comment,
                expires_at,
            } => {
                let networks = ip_networks(&address, &more)?;
                let mut expires = None;
                if let Some(at) = &expires_at {
                    let when = crate::clock::parse_rfc3339(at).map_err(|reason| {
                        refuse(policy::PolicyError::new(
                            "--expires-at",
                            at.as_str(),
                            reason,
                            crate::clock::EXPIRES_AT_FORMS,
                        ))
                    })?;
                    // A rule born expired would be written and never served.
                    let now = SystemTime::now();
                    if when <= now {
                        return Err(refuse(policy::PolicyError::new(
                            "--expires-at",
                            at.as_str(),
                            format!("it is in the past (now is {})", rfc3339(now)),
                            "give a future RFC 3339 time or a duration (8h), or leave \
                             --expires-at out for a rule that does not expire",
                        )));
                    }
                    expires = Some(when);
                }
                let held: Vec<Option<HeldFields<'_>>> = networks
                    .iter()
                    .map(|n| ip_rule_fields(&self.policy, *n))
                    .collect();
                let new: Vec<IpNet> = networks
                    .iter()
                    .zip(&held)
                    .filter(|(_, held)| held.is_none())
                    .map(|(n, _)| *n)
                    .collect();
                // A rule already present whose comment or expiry the
                // command gives anew is declared again with them (one
                // atomic change: extending a temporary rule never lets it
                // lapse); what the command leaves out is kept.
                let renewed: Vec<(IpNet, Option<String>, Option<String>)> = networks
                    .iter()
                    .zip(&held)
                    .filter_map(|(n, held)| {
                        let (held_comment, held_expiry) = (*held)?;
                        let new_comment = comment.as_ref().filter(|c| held_comment != Some(*c));
                        let new_expiry = expires.filter(|e| held_expiry != Some(*e));
                        if new_comment.is_none() && new_expiry.is_none() {
                            return None;
                        }
                        Some((
                            *n,
                            comment.clone().or_else(|| held_comment.cloned()),
                            expires_at.clone().or_else(|| held_expiry.map(rfc3339)),
                        ))
                    })
                    .collect();
                if new.is_empty() && renewed.is_empty() {
                    return Ok(unchanged(
                        self.generation,
                        format!("{} already present", shown_all(&networks)),
                    ));
                }
                let limit = &self.policy.limits;
                let new_v6 = new.iter().filter(|n| matches!(n, IpNet::V6(_))).count();
                for (count, added, max, noun, key) in [
                    (
                        self.policy.ip_rules.len(),
                        new.len() - new_v6,
                        limit.ip_rules,
                        "IP rules",
                        "limits",
                    ),
                    (
                        self.policy.ipv6_rules.len(),
                        new_v6,
                        limit.ipv6_rules,
                        "IPv6 IP rules",
                        "limits.ipv6_rules",
                    ),
                ] {
                    if added > 0 && count + added > max {
                        return Err(invalid(format!(
                            "limit of {max} {noun} reached (profile {}); remove a rule first, or \
                             raise `{key}` in the policy file; nothing changed",
                            limit.profile.name()
                        )));
                    }
                }
                let declared = new
                    .iter()
                    .map(|n| (*n, comment.clone(), expires_at.clone()))
                    .chain(renewed.iter().cloned());
                // The file may still hold the network as an entry past its
                // expiry (not served: left out when parsed), or holds the
                // rule renewed: the new entry takes its place, with its
                // comments (`Edit::AddIpRule`).
                let edits: Vec<Edit> = declared
                    .map(|(n, comment, expires_at)| {
                        if comment.is_none() && expires_at.is_none() {
                            Edit::AddIpRule(policy::shown_any(n))
                        } else {
                            Edit::AddIpRuleWith {
                                value: policy::shown_any(n),
                                comment,
                                expires_at,
                            }
                        }
                    })
                    .collect();
                let report = self.commit(&edits, "network-rule add")?;
                // Of the policy now served, which holds every network added.
                let notes = policy::added_ip_rule_notes(&self.policy, &new);
                let renewed: Vec<IpNet> = renewed.iter().map(|(n, _, _)| *n).collect();
                let message = match (new.is_empty(), renewed.is_empty()) {
                    (false, true) => format!("added {}", shown_all(&new)),
                    (true, false) => format!("renewed {} (comment, expiry)", shown_all(&renewed)),
                    _ => format!(
                        "added {}; renewed {} (comment, expiry)",
                        shown_all(&new),
                        shown_all(&renewed)
                    ),
                };
                Ok(ChangeReply {
                    notes,
                    ..changed(&report, message)
                })
            }
            RuleSpec::Vnet {
                id,
                subnet,
                endpoint,
                ignore_missing_endpoint,
            } => {
                let subnet = subnet.ok_or_else(|| {
                    invalid("--subnet-prefix is required to add a subnet rule prefix")
                })?;
                let prefix =
                    policy::parse_any_subnet_prefix("--subnet-prefix", &subnet).map_err(refuse)?;
                let endpoint = endpoint
                    .as_deref()
                    .map(|text| policy::parse_endpoint("--endpoint", text))
                    .transpose()
                    .map_err(refuse)?;
                let existing = self.find_vnet_rule(&id)?;
                match existing {
                    Some(rule) if has_prefix(rule, prefix) => {
                        return Ok(unchanged(
                            self.generation,
                            format!("{prefix} is already in {}", rule.id),
                        ));
                    }
                    Some(rule) if endpoint.as_ref().is_some_and(|e| *e != rule.endpoint) => {
                        return Err(invalid(format!(
                            "subnet rule {} has endpoint {}; a rule has one endpoint — use another rule id for {}",
                            rule.id,
                            rule.endpoint,
                            endpoint.expect("checked by the guard")
                        )));
                    }
                    None if endpoint.is_none() => {
                        return Err(invalid(format!(
                            "subnet rule {id:?} is new: give its service endpoint with --endpoint IFACE, vlan:N or IFACE,vlan:N"
                        )));
                    }
                    _ => {}
                }
                // The rule as the file writes it, however the CLI named it.
                let id = existing.map_or(id, |rule| rule.id.clone());
                let edit = Edit::AddVnetPrefix {
                    id: id.clone(),
                    prefix: prefix.to_string(),
                    endpoint,
                    ignore_missing_endpoint,
                };
                let prefix = policy::shown_any(prefix);
                let report = self.commit(&[edit], "network-rule add")?;
                Ok(changed(&report, format!("added {prefix} to {id}")))
            }
        }
    }

    /// The subnet rule `id` names: the same subnet short or full, in any
    /// case ([`policy::subnet_id::same_subnet`]). A short id that several
    /// full ids end with is ambiguous: an error naming them.
    fn find_vnet_rule(&self, id: &str) -> Result<Option<&policy::VnetRule>, Response> {
        let found: Vec<&policy::VnetRule> = self
            .policy
            .virtual_network_rules
            .iter()
            .filter(|r| policy::subnet_id::same_subnet(&r.id, id))
            .collect();
        if let Some(exact) = found
            .iter()
            .find(|r| policy::subnet_id::canonical(&r.id) == policy::subnet_id::canonical(id))
        {
            return Ok(Some(exact));
        }
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            several => Err(invalid(format!(
                "{id:?} names {} subnet rules ({}); give the full ARM id; nothing changed",
                several.len(),
                several
                    .iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn rule_remove(&mut self, rule: RuleSpec) -> Handled {
        match rule {
            RuleSpec::Ip { address, more, .. } => {
                let networks = ip_networks(&address, &more)?;
                let missing: Vec<IpNet> = networks
                    .iter()
                    .copied()
                    .filter(|n| !has_ip_rule(&self.policy, *n))
                    .collect();
                if !missing.is_empty() {
                    return Err(invalid(format!(
                        "IP rule {} not found; nothing changed (`vaultfw network-rule list` shows \
                         the rules)",
                        shown_all(&missing)
                    )));
                }
                let edits: Vec<Edit> = networks.iter().map(|n| Edit::RemoveIpRule(*n)).collect();
                let report = self.commit(&edits, "network-rule remove")?;
                Ok(changed(
                    &report,
                    format!("removed {}", shown_all(&networks)),
                ))
            }
            RuleSpec::Vnet { id, subnet, .. } => {
                let rule = self.find_vnet_rule(&id)?.ok_or_else(|| {
                    invalid(format!(
                        "subnet rule {id:?} not found; nothing changed (`vaultfw network-rule \
                         list` shows the rules; ids compare case-insensitively, short or full)"
                    ))
                })?;
                let (edit, message) = match subnet {
                    None => (
                        Edit::RemoveVnetRule(rule.id.clone()),
                        format!("removed subnet rule {}", rule.id),
                    ),
                    Some(subnet) => {
                        let prefix = policy::parse_any_subnet_prefix("--subnet-prefix", &subnet)
                            .map_err(refuse)?;
                        if !has_prefix(rule, prefix) {
                            return Err(invalid(format!(
                                "{prefix} is not in subnet rule {}; nothing changed",
                                rule.id
                            )));
                        }
                        (
                            Edit::RemoveVnetPrefix {
                                id: rule.id.clone(),
                                prefix,
                            },
                            format!("removed {prefix} from subnet rule {}", rule.id),
                        )
                    }
                };
                let report = self.commit(&[edit], "network-rule remove")?;
                Ok(changed(&report, message))
            }
        }
    }

    fn update(&mut self, default_action: Option<String>, bypass: Option<String>) -> Handled {
        let mut edits = Vec::new();
        if let Some(value) = default_action {
            let value = policy::parse_default_action("--default-action", &value).map_err(refuse)?;
            edits.push(Edit::SetString("default_action", value.name().to_owned()));
        }
        if let Some(value) = bypass {
            let value = policy::parse_bypass("--bypass", &value).map_err(refuse)?;
            edits.push(Edit::SetString("bypass", value.name().to_owned()));
        }
        if edits.is_empty() {
            return Err(invalid(
                "nothing to update: give --default-action and/or --bypass",
            ));
        }
        let already = edits.iter().all(|edit| match edit {
            Edit::SetString("default_action", v) => self.policy.default_action.name() == v,
            Edit::SetString("bypass", v) => self.policy.bypass.name() == v,
            _ => false,
        });
        if already {
            return Ok(unchanged(
                self.generation,
                "already so; nothing changed".to_owned(),
            ));
        }
        let report = self.commit(&edits, "update")?;
        Ok(changed(&report, "updated".to_owned()))
    }

    /// Applies a whole policy that arrived over the socket (its files
    /// are the operator's, perhaps out of this daemon's sight). What the
    /// daemon's own files will hold is settled before the kernel is
    /// touched.
    fn apply_file(
        &mut self,
        applied: &policy::PolicyText,
        confirm_within_s: Option<u64>,
    ) -> Handled {
        let validated = applied.validate().map_err(|e| match &e {
            // One refused value: apart, as the CLI's own check gives it.
            policy::LoadError::Invalid { errors, .. } if errors.len() == 1 => {
                refuse(errors.0[0].clone())
            }
            _ => invalid(e.to_string()),
        })?;
        let interfaces = endpoint_interfaces(&validated.policy);
        refuse_missing_endpoints(&validated.policy, &interfaces).map_err(invalid)?;
        let files = self
            .options
            .source
            .write_back(applied, &validated.policy)
            .map_err(refuse)?;
        // What the reply's `changed` says: the declared policy, not the
        // tables (under `public_network_access = Disabled` an IP rule
        // changes the policy and no map entry).
        let policy_changed = validated.policy != self.policy;
        match confirm_within_s {
            Some(seconds) => {
                let previous = (self.policy.clone(), self.interfaces.clone());
                // The kernel rolls back at the deadline by itself, daemon
                // or not.
                let deadline = SystemTime::now() + Duration::from_secs(seconds);
                let change = Change {
                    fallback: Some(deadline),
                    ..Change::declared(validated.policy, interfaces, "apply")
                };
                let report = self.reconcile(change).map_err(refused)?;
                self.rolled_back = None;
                let file_before = self.options.source.file_text().ok();
                self.pending = Some(PendingApply {
                    previous: previous.0,
                    previous_interfaces: previous.1,
                    deadline,
                    files,
                    file_before,
                });
                Ok(ChangeReply {
                    changed: policy_changed,
                    awaiting_confirmation_until: Some(rfc3339(deadline)),
                    ..changed(
                        &report,
                        format!(
                            "applied; run `vaultfw confirm` within {seconds} s or it rolls back"
                        ),
                    )
                })
            }
            None => {
                let change = Change {
                    declare: Some(&files),
                    ..Change::declared(validated.policy, interfaces, "apply")
                };
                let report = self.reconcile(change).map_err(refused)?;
                self.rolled_back = None;
                Ok(ChangeReply {
                    changed: policy_changed,
                    ..changed(&report, "applied".to_owned())
                })
            }
        }
    }

    /// Writes the applied policy to the file; until that succeeds the apply
    /// stays unconfirmed (and rolls back at its deadline).
    fn confirm(&mut self) -> Handled<ConfirmReply> {
        let Some(pending) = self.pending.as_ref() else {
            // An apply that was rolled back cannot be confirmed: saying
            // "nothing awaits" would read as success.
            if let Some(rolled_back) = self.rolled_back {
                return Err(rolled_back_refusal(rolled_back));
            }
            // Idempotent: a second confirm, or one after a script's retry,
            // finds the state it wants.
            return Ok(ConfirmReply {
                generation: self.generation,
                confirmed: false,
                message: "nothing awaits confirmation".to_owned(),
            });
        };
        let (files, deadline) = (pending.files.clone(), pending.deadline);
        if SystemTime::now() >= deadline {
            return Err(self.too_late());
        }
        let before = self.files_now(&files);
        self.write_files(&files).map_err(|error| {
            // Not "nothing changed": the applied generation is served, on
            // probation, until its deadline.
            let why = match &error {
                ChangeError::File { path, error } => {
                    format!("cannot write the policy file {}: {error}", path.display())
                }
                other => other.to_string(),
            };
            Response::error(
                ErrorKind::Internal,
                format!(
                    "{why}; not confirmed: the kernel serves the applied generation {} on \
                     probation and returns to the previous one at {} unless a confirm succeeds",
                    self.generation,
                    rfc3339(deadline)
                ),
            )
        })?;
        // Then the kernel: clear its fallback deadline.
        let kept = self.dataplane.confirm();
        if !matches!(
            kept,
            Ok(Confirmation::Confirmed | Confirmation::NothingPending)
        ) {
            // The kernel did not keep it (its deadline passed while the
            // files were written, or it refused the write): the files go
            // back to what is served.
            if let Err(error) = before.and_then(|before| self.write_files(&before)) {
                tracing::error!(%error, "the confirm failed in the kernel and the policy file could not be put back: it holds a policy that is not served");
            }
            return Err(match kept {
                Err(e) => Response::error(
                    ErrorKind::KernelRefused,
                    format!(
                        "{e}; not confirmed: the apply still rolls back at {}",
                        rfc3339(deadline)
                    ),
                ),
                _ => self.too_late(),
            });
        }
        self.pending = None;
        // Confirmed: interfaces only the previous policy named go now.
        self.detach_unwanted();
        Ok(ConfirmReply {
            generation: self.generation,
            confirmed: true,
            message: "confirmed; the policy file now holds the applied policy".to_owned(),
        })
    }

    /// A confirm after the deadline: the kernel serves (or is about to
    /// serve) the previous generation; the rollback is made official.
    fn too_late(&mut self) -> Response {
        self.roll_back_pending("confirmed after its deadline");
        match self.rolled_back {
            Some(rolled_back) if self.pending.is_none() => rolled_back_refusal(rolled_back),
            _ => invalid(format!(
                "too late: the deadline passed; the kernel serves generation {} again; apply it \
                 again",
                self.dataplane.generation()
            )),
        }
    }

    /// Validates `edits` as the whole resulting file, writes the file, then
    /// serves it ([`Daemon::reconcile`]): a refusal at any step
    /// changes nothing.
    fn commit(&mut self, edits: &[Edit], cause: &str) -> Result<ApplyReport, Response> {
        let edited = self.edited(edits).map_err(|e| match e {
            // The one value this edit made invalid: apart.
            super::state::EditRefused::Invalid(errors) if errors.len() == 1 => {
                refuse(errors.0[0].clone())
            }
            other => invalid(other.to_string()),
        })?;
        let super::edit::Edited {
            text,
            validated,
            split,
            ip_change,
            file_before,
        } = edited;
        let interfaces = endpoint_interfaces(&validated.policy);
        refuse_missing_endpoints(&validated.policy, &interfaces).map_err(invalid)?;
        let files = WriteBack {
            policy: text,
            subnet_map: None,
        };
        let change = Change {
            declare: Some(&files),
            ip_change,
            file_before,
            ..Change::declared(validated.policy, interfaces, cause)
        };
        let report = self.reconcile(change).map_err(refused)?;
        // The file now holds `files.policy`, served by this generation:
        // the next change edits it without parsing it again.
        self.native_file = split.map(|split| super::edit::NativeFile {
            text: files.policy,
            split,
            generation: report.generation,
            kept_at: std::time::Instant::now(),
        });
        Ok(report)
    }
}

/// The answer to a `confirm` of an apply that was rolled back
/// (`invalid_input`: there is nothing left to confirm; docs/output.md).
fn rolled_back_refusal(rolled_back: RolledBack) -> Response {
    invalid(format!(
        "the apply of generation {} was rolled back at {}; apply it again",
        rolled_back.generation,
        rfc3339(rolled_back.at)
    ))
}

/// The answer to a change refused by the disk or the kernel.
fn refused(error: ChangeError) -> Response {
    let kind = match error {
        ChangeError::File { .. } => ErrorKind::Internal,
        ChangeError::Kernel(_) => ErrorKind::KernelRefused,
        ChangeError::Limits { .. } => ErrorKind::InvalidInput,
    };
    Response::error(kind, error.to_string())
}

/// Notes an operator should see with `show` (DESIGN.md: rules without
/// effect are said, not silently kept).
fn notes(p: &policy::Policy) -> Vec<String> {
    let mut notes = Vec::new();
    if p.effective_default_action() == policy::DefaultAction::Allow
        && (!p.ip_rules.is_empty() || !p.virtual_network_rules.is_empty())
    {
        notes.push("default_action = Allow: the rules have no effect".to_owned());
    }
    if p.effective_default_action() != p.default_action {
        notes.push(format!(
            "default_action = Allow does not apply: {}; sources no subnet rule, private \
             endpoint or trusted service admits are refused",
            policy::PUBLIC_ACCESS_DISABLED
        ));
    }
    if p.bypass == policy::Bypass::None && !p.trusted_services.prefixes.is_empty() {
        notes.push("bypass = None: the trusted-services catalogue is inactive".to_owned());
    }
    if !p.ip_rules_apply() && !p.ip_rules.is_empty() {
        notes.push(format!(
            "public_network_access = Disabled: the {} IP rules admit nothing (reason: {})",
            p.ip_rules.len(),
            policy::PUBLIC_ACCESS_DISABLED
        ));
    }
    notes
}

/// The networks of `--ip-address`, IPv4 or IPv6 (every value checked;
/// each once, in the order given). The first invalid value is the error.
fn ip_networks(first: &str, more: &[String]) -> Result<Vec<IpNet>, Response> {
    let mut networks = Vec::with_capacity(1 + more.len());
    for text in std::iter::once(first).chain(more.iter().map(String::as_str)) {
        let network = policy::parse_any_ip_rule("--ip-address", text).map_err(refuse)?;
        if !networks.contains(&network) {
            networks.push(network);
        }
    }
    Ok(networks)
}

/// `networks` as rules are shown, comma-separated.
fn shown_all(networks: &[IpNet]) -> String {
    networks
        .iter()
        .map(|n| policy::shown_any(*n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The comment and expiry of the IP rule for exactly `network`, if the
/// policy has one (either family).
fn ip_rule_fields(policy: &policy::Policy, network: IpNet) -> Option<HeldFields<'_>> {
    match network {
        IpNet::V4(n) => policy
            .ip_rules
            .iter()
            .find(|r| r.network == n)
            .map(|r| (r.comment.as_ref(), r.expires_at)),
        IpNet::V6(n) => policy
            .ipv6_rules
            .iter()
            .find(|r| r.network == n)
            .map(|r| (r.comment.as_ref(), r.expires_at)),
    }
}

/// An IP rule's comment and expiry.
type HeldFields<'a> = (Option<&'a String>, Option<SystemTime>);

/// Whether `policy` has an IP rule for exactly `network` (either family).
fn has_ip_rule(policy: &policy::Policy, network: IpNet) -> bool {
    ip_rule_fields(policy, network).is_some()
}

/// Whether subnet rule `rule` holds `prefix` (either family).
fn has_prefix(rule: &policy::VnetRule, prefix: IpNet) -> bool {
    match prefix {
        IpNet::V4(p) => rule.address_prefixes.contains(&p),
        IpNet::V6(p) => rule.address_prefixes_v6.contains(&p),
    }
}

fn invalid(message: impl Into<String>) -> Response {
    Response::error(ErrorKind::InvalidInput, message)
}

/// A value the validator refused: its field, value and fix apart.
fn refuse(error: policy::PolicyError) -> Response {
    Response::refused(&error, "; nothing changed")
}

/// A time as replies carry it: RFC 3339, UTC, seconds.
fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The answer to a change that was not needed: nothing was written.
fn unchanged(generation: u64, message: String) -> ChangeReply {
    ChangeReply {
        changed: false,
        generation,
        message,
        map_writes: None,
        awaiting_confirmation_until: None,
        notes: Vec::new(),
    }
}

/// The answer to a change of the declared policy that the kernel serves
/// now. `changed` is true whatever the tables did: the callers commit only
/// a real edit of the policy, and under `public_network_access = Disabled`
/// an IP rule changes the policy and no map entry (`map_writes` 0).
fn changed(report: &ApplyReport, message: String) -> ChangeReply {
    ChangeReply {
        changed: true,
        generation: report.generation,
        message,
        map_writes: Some(report.map_writes),
        awaiting_confirmation_until: None,
        notes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> policy::Policy {
        policy::parse_toml(text).expect("valid policy").policy
    }

    #[test]
    fn show_notes_rules_without_effect_under_allow_and_no_bypass() {
        let open = policy("default_action = \"Allow\"\nip_rules = [\"198.51.100.7\"]\n");
        assert_eq!(
            notes(&open),
            ["default_action = Allow: the rules have no effect"]
        );
        let closed = policy("default_action = \"Deny\"\nip_rules = [\"198.51.100.7\"]\n");
        assert!(notes(&closed).is_empty());
    }

    #[test]
    fn an_unwritable_policy_file_is_an_internal_error_with_its_path() {
        let file = ChangeError::File {
            path: "/etc/vaultfw/policy.toml".into(),
            error: "disk full".into(),
        };
        let error = refused(file).error.unwrap();
        assert_eq!(error.kind, ErrorKind::Internal);
        assert!(
            error.message.contains("/etc/vaultfw/policy.toml")
                && error.message.contains("disk full"),
            "{}",
            error.message
        );
    }
}
