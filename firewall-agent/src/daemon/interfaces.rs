//! Which interfaces the daemon filters, and keeping the kernel there
//! (`docs/reconciler.md`, "Interfaces: the host, not a list").
//!
//! The set is computed in one place, [`desired`]: the `--iface` names, every
//! endpoint interface the policy names (a subnet rule's traffic must be
//! judged where it arrives, or that interface is an open path to the data
//! plane), and with `--iface all` every interface but `lo`. Each gets the
//! entry point its framing needs: Ethernet devices the L2 program, L3
//! devices (ipip, gre, sit, wireguard, tun) the L3 one.
//!
//! Every path that changes what is filtered uses it: the start, a policy
//! change (the interfaces a new policy names are attached *before* its
//! generation serves; the ones it no longer names are detached after), and
//! a link event (an interface appears, vanishes or comes back).

use std::collections::{BTreeMap, BTreeSet};

use crate::control::replies::{
    FilterReason, FilteredInterface, UnattachedInterface, UnfilteredInterface, UnmanagedLink,
};
use crate::dataplane::{
    AttachKind, AttachOutcome, Dataplane, DataplaneError, XdpModeRequest, xdp_attachment,
};
use crate::links::{self, LinkInfo};
use crate::paths::PinDir;
use crate::policy::Policy;

use super::RunError;
use super::state::Daemon;

/// What `--iface` selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfaceSelection {
    /// `--iface all`: every interface but `lo`, including ones that appear
    /// later.
    All,
    /// These interfaces (each once, in command-line order).
    Named(Vec<String>),
}

impl IfaceSelection {
    /// The `--iface` value that selects every interface.
    pub const ALL: &'static str = "all";

    /// Reads the `--iface` values: `all` alone, or interface names, each
    /// once.
    ///
    /// Errors (a sentence naming the value and the fix): `all` together
    /// with names, a name given twice, an invalid interface name, no value.
    pub fn parse(values: &[String]) -> Result<Self, String> {
        if values.iter().any(|v| v == Self::ALL) {
            if values.len() > 1 {
                let others: Vec<&str> = values
                    .iter()
                    .filter(|v| *v != Self::ALL)
                    .map(String::as_str)
                    .collect();
                return Err(format!(
                    "--iface all already selects every interface; drop --iface {} (or drop \
                     --iface all to filter only the named ones)",
                    others.join(" --iface ")
                ));
            }
            return Ok(IfaceSelection::All);
        }
        if values.is_empty() {
            return Err("give --iface IFACE (repeat for several) or --iface all".to_owned());
        }
        let mut seen = BTreeSet::new();
        for value in values {
            if !seen.insert(value.as_str()) {
                return Err(format!(
                    "--iface {value} is given twice; name each interface once"
                ));
            }
            crate::policy::check_interface_name("--iface", value).map_err(|e| e.to_string())?;
        }
        Ok(IfaceSelection::Named(values.to_vec()))
    }

    /// The named interfaces (none for `all`).
    pub fn names(&self) -> &[String] {
        match self {
            IfaceSelection::All => &[],
            IfaceSelection::Named(names) => names,
        }
    }
}

impl std::fmt::Display for IfaceSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IfaceSelection::All => f.write_str(Self::ALL),
            IfaceSelection::Named(names) => f.write_str(&names.join(",")),
        }
    }
}

/// An interface the daemon must filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Its ifindex now.
    pub ifindex: u32,
    /// Its `ARPHRD_*` link type.
    pub link_type: u16,
    /// The entry point its framing needs; `None` for a link type the
    /// program cannot parse (attaching it fails with a clear error).
    pub kind: Option<AttachKind>,
    /// Why it is filtered.
    pub reason: FilterReason,
    /// [`LinkInfo::stack_level`]: lower devices are attached first.
    pub stack_level: u8,
}

/// Interface name → what it must run.
pub type Desired = BTreeMap<String, Wanted>;

/// `ARPHRD_*` link types (linux/if_arp.h) and the entry point each needs.
mod arphrd {
    pub const ETHER: u16 = 1;
    pub const TUNNEL: u16 = 768;
    pub const TUNNEL6: u16 = 769;
    pub const LOOPBACK: u16 = 772;
    pub const SIT: u16 = 776;
    pub const IPGRE: u16 = 778;
    pub const IP6GRE: u16 = 823;
    /// wireguard and tun.
    pub const NONE: u16 = 65534;
}

/// The entry point for a link type: Ethernet framing (vxlan, geneve and
/// gretap are Ethernet too) or a bare IP packet; `None` for another
/// framing, which the program cannot parse.
pub fn kind_for_link_type(link_type: u16) -> Option<AttachKind> {
    match link_type {
        arphrd::ETHER | arphrd::LOOPBACK => Some(AttachKind::L2),
        arphrd::TUNNEL
        | arphrd::TUNNEL6
        | arphrd::SIT
        | arphrd::IPGRE
        | arphrd::IP6GRE
        | arphrd::NONE => Some(AttachKind::L3),
        _ => None,
    }
}

/// The interfaces the daemon must filter: the `--iface` names ∪ every
/// endpoint interface `policy` names ∪ (with `--iface all`) every
/// interface but `lo` whose framing the program parses — each only if it
/// exists in `links`.
pub fn desired(selection: &IfaceSelection, policy: &Policy, links: &[LinkInfo]) -> Desired {
    let named: BTreeSet<&str> = selection.names().iter().map(String::as_str).collect();
    let endpoints = policy.endpoint_interfaces();
    links
        .iter()
        .filter_map(|link| {
            let kind = kind_for_link_type(link.link_type);
            let reason = if named.contains(link.name.as_str()) {
                FilterReason::Iface
            } else if endpoints.contains(link.name.as_str()) {
                FilterReason::Endpoint
            } else if *selection == IfaceSelection::All
                && link.link_type != arphrd::LOOPBACK
                && kind.is_some()
            {
                FilterReason::All
            } else {
                return None;
            };
            let wanted = Wanted {
                ifindex: link.ifindex,
                link_type: link.link_type,
                kind,
                reason,
                stack_level: link.stack_level,
            };
            Some((link.name.clone(), wanted))
        })
        .collect()
}

/// Refuses, before anything touches the kernel, a start whose `--iface`
/// names an interface that does not exist, or one (or an endpoint of
/// `policy`) whose framing the program cannot parse: invalid input (exit
/// 2), nothing loaded.
pub(super) fn preflight(
    selection: &IfaceSelection,
    policy: &Policy,
    links: &[LinkInfo],
) -> Result<(), RunError> {
    let missing: Vec<&str> = selection
        .names()
        .iter()
        .filter(|name| !links.iter().any(|l| l.name == **name))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(RunError::InvalidArguments(format!(
            "--iface {}: no such interface (see `ip link`); name existing interfaces, or use \
             --iface all to filter every interface as it appears; nothing was loaded or changed",
            missing.join(", --iface ")
        )));
    }
    for (name, wanted) in desired(selection, policy, links) {
        if wanted.kind.is_none() {
            let error = unsupported(&name, &wanted);
            return Err(RunError::InvalidArguments(format!(
                "{error}\nnothing was loaded or attached"
            )));
        }
    }
    Ok(())
}

fn unsupported(name: &str, wanted: &Wanted) -> DataplaneError {
    DataplaneError::Attach {
        interface: name.to_owned(),
        mode: "any",
        reason: format!(
            "its link type {} (ARPHRD, see /usr/include/linux/if_arp.h) is neither Ethernet nor \
             a bare IP device (ipip, gre, sit, wireguard, tun), so the program cannot read its \
             frames; filter the Ethernet or IP device it runs over instead",
            wanted.link_type
        ),
        errno: None,
    }
}

/// What [`attach_wanted`] did.
#[derive(Debug, Default)]
pub(super) struct Attaching {
    /// Interfaces that got a new link now and were not filtered before (not
    /// held, no pinned link adopted): what undoing this attach detaches.
    pub attached: Vec<String>,
    /// Interfaces that could not be attached.
    pub failed: Vec<(String, FilterReason, DataplaneError)>,
}

/// Attaches every interface of `wanted` the dataplane does not hold as it
/// should (absent, re-created with another ifindex, or on the other entry
/// point). Logs each attach; the caller judges the failures.
pub(super) fn attach_wanted(
    dataplane: &mut Dataplane,
    wanted: &Desired,
    mode: XdpModeRequest,
    cause: &str,
) -> Attaching {
    let mut done = Attaching::default();
    // Lower devices first: XDP on a device whose upper device already has
    // a program is refused (a vxlan over its NIC, a vlan, a bond's ports).
    let mut in_order: Vec<(&String, &Wanted)> = wanted.iter().collect();
    in_order.sort_by_key(|(name, want)| (want.stack_level, *name));
    for (name, want) in in_order {
        let held = dataplane.attached().iter().find(|a| a.name == *name);
        let came_back = match held {
            Some(a) if a.ifindex == want.ifindex && Some(a.program) == want.kind => continue,
            // Re-created (the old link died with it) or re-typed: start over.
            Some(_) => {
                let _ = dataplane.detach(name);
                true
            }
            None => false,
        };
        let Some(kind) = want.kind else {
            done.failed
                .push((name.clone(), want.reason, unsupported(name, want)));
            continue;
        };
        match dataplane.attach(name, kind, mode) {
            Ok(a) => {
                let message = match (cause, want.reason) {
                    ("start", _) => "attached",
                    (_, FilterReason::Iface) => "interface is back: attached again",
                    _ if came_back => "interface is back: attached again",
                    (_, FilterReason::Endpoint) => "endpoint interface attached",
                    (_, FilterReason::All) => "new interface attached (--iface all)",
                };
                tracing::info!(
                    interface = %name,
                    ifindex = a.ifindex,
                    mode = a.mode,
                    program = %a.program,
                    outcome = a.outcome.name(),
                    reason = want.reason.name(),
                    cause,
                    "{message}"
                );
                if !came_back && a.outcome == AttachOutcome::Attached {
                    done.attached.push(name.clone());
                }
            }
            Err(error) => done.failed.push((name.clone(), want.reason, error)),
        }
    }
    done
}

/// Detaches every interface the dataplane holds that `wanted` no longer
/// has: it vanished (its link died with it), or nothing names it any more.
pub(super) fn detach_unwanted(dataplane: &mut Dataplane, wanted: &Desired, links: &[LinkInfo]) {
    let unwanted: Vec<String> = dataplane
        .attached()
        .iter()
        .filter(|a| !wanted.contains_key(&a.name))
        .map(|a| a.name.clone())
        .collect();
    for name in unwanted {
        let vanished = !links.iter().any(|l| l.name == name);
        match dataplane.detach(&name) {
            Ok(_) if vanished => tracing::warn!(
                interface = %name,
                "filtered interface vanished; it is filtered again when it returns"
            ),
            Ok(_) => tracing::info!(
                interface = %name,
                "interface no longer named (by --iface or an endpoint of the policy): detached"
            ),
            Err(error) => tracing::error!(interface = %name, %error, "detaching failed"),
        }
    }
}

/// Detaches `names` (undoing an attach whose change was refused).
fn detach_names(dataplane: &mut Dataplane, names: &[String]) {
    for name in names {
        if let Err(error) = dataplane.detach(name) {
            tracing::error!(interface = %name, %error, "detaching failed");
        }
    }
}

/// The start's attach: every wanted interface. A failure on an interface
/// named by `--iface` or by the policy fails the start (the caller undoes
/// what this run attached and keeps what it adopted); one only `--iface
/// all` selects is logged and reported by `show` (one odd device must not
/// leave every other interface unfiltered).
pub(super) fn attach_at_start(
    dataplane: &mut Dataplane,
    selection: &IfaceSelection,
    policy: &Policy,
    mode: XdpModeRequest,
) -> Result<(), DataplaneError> {
    let links = links::list().map_err(list_failed)?;
    let wanted = desired(selection, policy, &links);
    let done = attach_wanted(dataplane, &wanted, mode, "start");
    let mut fatal = None;
    for (name, reason, error) in done.failed {
        if reason == FilterReason::All {
            tracing::error!(interface = %name, %error, "attaching failed; this interface is NOT filtered (see `vaultfw show`)");
        } else {
            fatal.get_or_insert(error);
        }
    }
    fatal.map_or(Ok(()), Err)
}

fn list_failed(source: std::io::Error) -> DataplaneError {
    DataplaneError::Attach {
        interface: "*".to_owned(),
        mode: "any",
        reason: format!("cannot list the interfaces (netlink): {source}"),
        errno: source.raw_os_error(),
    }
}

impl Daemon {
    /// Before `policy` serves: attaches the interfaces it needs filtered
    /// that are not (its new endpoint interfaces). Returns what it attached,
    /// for [`Daemon::detach_attached`] if the change is refused later.
    ///
    /// Errors: an interface this policy names anew cannot be attached (what
    /// this call attached is detached again); the running policy stays.
    pub(super) fn attach_for(&mut self, policy: &Policy) -> Result<Vec<String>, DataplaneError> {
        let links = links::list().map_err(list_failed)?;
        let before = desired(&self.options.interfaces, &self.policy, &links);
        let wanted = desired(&self.options.interfaces, policy, &links);
        let done = attach_wanted(
            &mut self.dataplane,
            &wanted,
            self.options.xdp_mode,
            "policy change",
        );
        let mut fatal = None;
        for (name, _, error) in done.failed {
            if before.contains_key(&name) {
                tracing::error!(interface = %name, %error, "attaching failed; this interface is NOT filtered (see `vaultfw show`)");
            } else {
                fatal.get_or_insert(error);
            }
        }
        match fatal {
            Some(error) => {
                detach_names(&mut self.dataplane, &done.attached);
                Err(error)
            }
            None => Ok(done.attached),
        }
    }

    /// What must be filtered now: what `--iface` and the running policy
    /// name, and, while an apply awaits confirmation, what the policy it
    /// replaced names too (the kernel serves that one again at the
    /// deadline, daemon or not).
    fn wanted_now(&self, links: &[LinkInfo]) -> Desired {
        let mut wanted = desired(&self.options.interfaces, &self.policy, links);
        if let Some(pending) = &self.pending {
            for (name, want) in desired(&self.options.interfaces, &pending.previous, links) {
                wanted.entry(name).or_insert(want);
            }
        }
        wanted
    }

    /// Undoes [`Daemon::attach_for`] for a change that was refused.
    pub(super) fn detach_attached(&mut self, names: &[String]) {
        detach_names(&mut self.dataplane, names);
    }

    /// After a change serves: detaches what the running policy and
    /// `--iface` no longer name.
    pub(super) fn detach_unwanted(&mut self) {
        match links::list() {
            Ok(links) => {
                let wanted = self.wanted_now(&links);
                detach_unwanted(&mut self.dataplane, &wanted, &links);
            }
            Err(error) => tracing::error!(%error, "cannot list the interfaces; nothing detached"),
        }
    }

    /// A link event: attaches what appeared or came back, detaches what
    /// vanished. Failures are logged (and shown by `show`), never fatal.
    pub(super) fn reconcile_links(&mut self) {
        let links = match links::list() {
            Ok(links) => links,
            Err(error) => {
                tracing::error!(%error, "cannot list the interfaces after a link event");
                return;
            }
        };
        let wanted = self.wanted_now(&links);
        detach_unwanted(&mut self.dataplane, &wanted, &links);
        let done = attach_wanted(
            &mut self.dataplane,
            &wanted,
            self.options.xdp_mode,
            "link change",
        );
        for (name, _, error) in done.failed {
            tracing::error!(interface = %name, %error, "interface present but attaching failed; it is NOT filtered");
        }
    }

    /// On the stats tick: retries attaching what must be filtered and is
    /// not (an attach refused at a link event, a listing that failed for
    /// lack of file descriptors): a failure is never final.
    pub(super) fn retry_unattached(&mut self) {
        let Ok(links) = links::list() else {
            return;
        };
        let missing = self.wanted_now(&links).into_iter().any(|(name, want)| {
            want.kind.is_some()
                && !self
                    .dataplane
                    .attached()
                    .iter()
                    .any(|a| a.name == name && a.ifindex == want.ifindex)
        });
        if missing {
            self.reconcile_links();
        }
    }

    /// What `show` says about the interfaces: each filtered one with its
    /// program, every interface with an address left unfiltered, every
    /// pinned link this daemon does not hold, and whether every interface
    /// it must filter is filtered.
    pub(super) fn interface_report(&self) -> InterfaceReport {
        let links = links::list().unwrap_or_else(|error| {
            tracing::error!(%error, "cannot list the interfaces");
            Vec::new()
        });
        let wanted = self.wanted_now(&links);
        report(
            &self.dataplane,
            &wanted,
            &links,
            &self.options.interfaces,
            &self.options.pin_dir,
        )
    }
}

/// See [`Daemon::interface_report`].
#[derive(Debug)]
pub(super) struct InterfaceReport {
    /// Each filtered interface.
    pub filtered: Vec<FilteredInterface>,
    /// Interfaces the daemon must filter and does not (failed attaches).
    pub not_attached: Vec<UnattachedInterface>,
    /// Interfaces with an address that nothing filters (`lo` aside: it
    /// carries only the host's own traffic).
    pub unfiltered: Vec<UnfilteredInterface>,
    /// `--iface` names that do not exist now.
    pub missing: Vec<String>,
    /// Pinned links in the pin directory this daemon does not hold.
    pub unmanaged_links: Vec<UnmanagedLink>,
    /// Every interface the daemon must filter is attached (and at least
    /// one is), and every `--iface` name exists.
    pub protected: bool,
}

impl InterfaceReport {
    /// Warnings for an operator, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for i in &self.not_attached {
            warnings.push(format!(
                "interface {} must be filtered but is not (attaching failed; see the log)",
                i.name
            ));
        }
        for i in &self.unfiltered {
            warnings.push(format!(
                "interface {} has an address and is NOT filtered: traffic arriving there reaches \
                 the data plane unjudged (add --iface {0}, or run with --iface all)",
                i.name
            ));
        }
        for name in &self.missing {
            warnings.push(format!(
                "--iface {name} does not exist now; it is filtered when it appears"
            ));
        }
        for l in &self.unmanaged_links {
            warnings.push(format!(
                "a vaultfw link pinned for {} (live: {}) is not managed by this daemon: left by \
                 an earlier run, it may serve stale rules; add the interface to --iface, or \
                 remove every pin with `vaultfw detach`",
                l.interface,
                // As the JSON says it.
                l.live
                    .map_or("null", |live| if live { "true" } else { "false" })
            ));
        }
        warnings
    }
}

fn report(
    dataplane: &Dataplane,
    wanted: &Desired,
    links: &[LinkInfo],
    selection: &IfaceSelection,
    pin_dir: &std::path::Path,
) -> InterfaceReport {
    let held: BTreeMap<&str, _> = dataplane
        .attached()
        .iter()
        .map(|a| (a.name.as_str(), a))
        .collect();
    let filtered: Vec<FilteredInterface> = dataplane
        .attached()
        .iter()
        .map(|a| {
            let kernel = xdp_attachment(a.ifindex).unwrap_or_default();
            FilteredInterface {
                name: a.name.clone(),
                ifindex: a.ifindex,
                mode: kernel.mode.map(str::to_owned),
                prog_id: kernel.prog_id,
                program: a.program,
                attach: a.outcome,
                reason: wanted.get(&a.name).map(|w| w.reason),
            }
        })
        .collect();
    let attached_ok = |name: &str, want: &Wanted| {
        held.get(name).is_some_and(|a| {
            a.ifindex == want.ifindex
                && Some(a.program) == want.kind
                && xdp_attachment(a.ifindex).is_ok_and(|k| k.mode.is_some())
        })
    };
    let not_attached: Vec<UnattachedInterface> = wanted
        .iter()
        .filter(|(name, want)| !attached_ok(name, want))
        .map(|(name, want)| UnattachedInterface {
            name: name.clone(),
            reason: want.reason,
            link_type: want.link_type,
        })
        .collect();
    let unmanaged: Vec<_> = crate::dataplane::pins::inspect(&PinDir::new(pin_dir))
        .interfaces
        .into_iter()
        .filter(|p| !held.contains_key(p.interface.as_str()))
        .collect();
    // An interface under a live unmanaged link runs a vaultfw program: it
    // is reported as unmanaged, not as unfiltered.
    let unfiltered: Vec<UnfilteredInterface> = links
        .iter()
        .filter(|l| {
            l.has_address && l.link_type != arphrd::LOOPBACK && !held.contains_key(l.name.as_str())
        })
        .filter(|l| {
            !unmanaged
                .iter()
                .any(|p| p.interface == l.name && p.live == Some(true))
        })
        .map(|l| UnfilteredInterface {
            name: l.name.clone(),
            ifindex: l.ifindex,
            link_type: l.link_type,
        })
        .collect();
    let missing: Vec<String> = selection
        .names()
        .iter()
        .filter(|n| !links.iter().any(|l| l.name == **n))
        .cloned()
        .collect();
    let unmanaged_links: Vec<UnmanagedLink> = unmanaged
        .into_iter()
        .map(|p| UnmanagedLink {
            interface: p.interface,
            ifindex: p.ifindex,
            mode: p.mode.map(str::to_owned),
            live: p.live,
        })
        .collect();
    InterfaceReport {
        protected: !wanted.is_empty() && not_attached.is_empty() && missing.is_empty(),
        filtered,
        not_attached,
        unfiltered,
        missing,
        unmanaged_links,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, ifindex: u32, link_type: u16) -> LinkInfo {
        LinkInfo {
            name: name.to_owned(),
            ifindex,
            link_type,
            has_address: true,
            stack_level: 0,
        }
    }

    /// lo, two NICs, a vxlan (Ethernet), an ipip, a gre, a wireguard and an
    /// InfiniBand device (32: a framing the program cannot parse).
    fn host() -> Vec<LinkInfo> {
        vec![
            link("lo", 1, arphrd::LOOPBACK),
            link("eth0", 2, arphrd::ETHER),
            link("eth1", 3, arphrd::ETHER),
            link("vx0", 4, arphrd::ETHER),
            link("ipip0", 5, arphrd::TUNNEL),
            link("gre0", 6, arphrd::IPGRE),
            link("wg0", 7, arphrd::NONE),
            link("ib0", 8, 32),
        ]
    }

    fn policy(endpoints: &[&str]) -> Policy {
        let mut text = String::from("default_action = \"Deny\"\n");
        for (i, interface) in endpoints.iter().enumerate() {
            text.push_str(&format!(
                "[[virtual_network_rules]]\nid = \"vnet/subnets/s{i}\"\naddress_prefixes = [\"10.{i}.0.0/16\"]\nendpoint = {{ interface = \"{interface}\" }}\nignore_missing_endpoint = true\n"
            ));
        }
        crate::policy::parse_toml(&text)
            .expect("valid test policy")
            .policy
    }

    fn named(names: &[&str]) -> IfaceSelection {
        IfaceSelection::Named(names.iter().map(|n| (*n).to_owned()).collect())
    }

    fn summary(desired: &Desired) -> Vec<(&str, Option<AttachKind>, FilterReason)> {
        desired
            .iter()
            .map(|(n, w)| (n.as_str(), w.kind, w.reason))
            .collect()
    }

    #[test]
    fn named_interfaces_only_without_endpoints() {
        let d = desired(&named(&["eth0"]), &policy(&[]), &host());
        assert_eq!(
            summary(&d),
            [("eth0", Some(AttachKind::L2), FilterReason::Iface)]
        );
        assert_eq!(d["eth0"].ifindex, 2);
    }

    #[test]
    fn an_endpoint_interface_not_given_with_iface_is_filtered_too() {
        let d = desired(&named(&["eth0"]), &policy(&["eth1"]), &host());
        assert_eq!(
            summary(&d),
            [
                ("eth0", Some(AttachKind::L2), FilterReason::Iface),
                ("eth1", Some(AttachKind::L2), FilterReason::Endpoint)
            ]
        );
    }

    #[test]
    fn an_endpoint_that_is_also_named_counts_as_named_and_appears_once() {
        let d = desired(
            &named(&["eth0", "eth1"]),
            &policy(&["eth1", "eth1"]),
            &host(),
        );
        assert_eq!(
            summary(&d),
            [
                ("eth0", Some(AttachKind::L2), FilterReason::Iface),
                ("eth1", Some(AttachKind::L2), FilterReason::Iface)
            ]
        );
    }

    #[test]
    fn missing_interfaces_are_left_out() {
        let d = desired(&named(&["eth9"]), &policy(&["eth8"]), &host());
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn an_l3_endpoint_gets_the_l3_program() {
        let d = desired(&named(&["eth0"]), &policy(&["wg0", "gre0"]), &host());
        assert_eq!(
            summary(&d),
            [
                ("eth0", Some(AttachKind::L2), FilterReason::Iface),
                ("gre0", Some(AttachKind::L3), FilterReason::Endpoint),
                ("wg0", Some(AttachKind::L3), FilterReason::Endpoint),
            ]
        );
    }

    #[test]
    fn all_is_every_interface_but_lo_each_with_the_program_of_its_framing() {
        let d = desired(&IfaceSelection::All, &policy(&[]), &host());
        assert_eq!(
            summary(&d),
            [
                ("eth0", Some(AttachKind::L2), FilterReason::All),
                ("eth1", Some(AttachKind::L2), FilterReason::All),
                ("gre0", Some(AttachKind::L3), FilterReason::All),
                ("ipip0", Some(AttachKind::L3), FilterReason::All),
                ("vx0", Some(AttachKind::L2), FilterReason::All),
                ("wg0", Some(AttachKind::L3), FilterReason::All),
            ]
        );
    }

    #[test]
    fn all_keeps_the_endpoint_reason_and_an_unparseable_device_only_when_named() {
        let d = desired(&IfaceSelection::All, &policy(&["eth1", "ib0"]), &host());
        assert_eq!(d["eth1"].reason, FilterReason::Endpoint);
        assert_eq!(
            d["ib0"].kind, None,
            "named, so wanted; its attach fails with a clear error"
        );
        assert_eq!(d["ib0"].reason, FilterReason::Endpoint);
        let without = desired(&IfaceSelection::All, &policy(&[]), &host());
        assert!(
            !without.contains_key("ib0"),
            "all skips what it cannot parse"
        );
    }

    #[test]
    fn all_covers_an_interface_that_appears_later() {
        let mut links = host();
        let before = desired(&IfaceSelection::All, &policy(&[]), &links);
        links.push(link("tun7", 9, arphrd::NONE));
        let after = desired(&IfaceSelection::All, &policy(&[]), &links);
        assert!(!before.contains_key("tun7"));
        assert_eq!(after["tun7"].kind, Some(AttachKind::L3));
        assert_eq!(after.len(), before.len() + 1);
    }

    #[test]
    fn removing_an_endpoint_drops_it_unless_otherwise_named() {
        let links = host();
        let with = desired(&named(&["eth0"]), &policy(&["eth1", "vx0"]), &links);
        let without = desired(&named(&["eth0"]), &policy(&["vx0"]), &links);
        assert!(with.contains_key("eth1") && !without.contains_key("eth1"));
        // Named by --iface as well: it stays.
        let named_too = desired(&named(&["eth0", "eth1"]), &policy(&["vx0"]), &links);
        assert_eq!(named_too["eth1"].reason, FilterReason::Iface);
        // With --iface all, it stays (for all).
        let all = desired(&IfaceSelection::All, &policy(&["vx0"]), &links);
        assert_eq!(all["eth1"].reason, FilterReason::All);
    }

    #[test]
    fn a_re_created_interface_is_wanted_with_its_new_ifindex() {
        let mut links = host();
        links[1].ifindex = 42;
        assert_eq!(
            desired(&named(&["eth0"]), &policy(&[]), &links)["eth0"].ifindex,
            42
        );
    }

    #[test]
    fn link_types_map_to_the_program_of_their_framing() {
        for (link_type, kind) in [
            (1, Some(AttachKind::L2)),
            (772, Some(AttachKind::L2)),
            (768, Some(AttachKind::L3)),
            (769, Some(AttachKind::L3)),
            (776, Some(AttachKind::L3)),
            (778, Some(AttachKind::L3)),
            (823, Some(AttachKind::L3)),
            (65534, Some(AttachKind::L3)),
            (32, None),
            (512, None),
        ] {
            assert_eq!(kind_for_link_type(link_type), kind, "link type {link_type}");
        }
    }

    #[test]
    fn iface_all_stands_alone() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(IfaceSelection::parse(&v(&["all"])), Ok(IfaceSelection::All));
        assert_eq!(
            IfaceSelection::parse(&v(&["eth0", "eth1"])),
            Ok(named(&["eth0", "eth1"]))
        );
        let mixed = IfaceSelection::parse(&v(&["eth0", "all"])).unwrap_err();
        assert!(
            mixed.contains("--iface all") && mixed.contains("--iface eth0"),
            "{mixed}"
        );
        let twice = IfaceSelection::parse(&v(&["eth0", "eth0"])).unwrap_err();
        assert!(twice.contains("given twice"), "{twice}");
        let bad = IfaceSelection::parse(&v(&["a/b"])).unwrap_err();
        assert!(bad.contains("--iface"), "{bad}");
        assert!(IfaceSelection::parse(&[]).is_err());
    }

    #[test]
    fn preflight_refuses_a_missing_or_unparseable_named_interface() {
        let links = host();
        assert!(preflight(&named(&["eth0"]), &policy(&["eth1"]), &links).is_ok());
        let missing = preflight(&named(&["eth9"]), &policy(&[]), &links).unwrap_err();
        assert!(
            matches!(missing, RunError::InvalidArguments(ref text)
                if text.starts_with("--iface eth9: no such interface") && text.contains("nothing was loaded")),
            "{missing}"
        );
        let odd = preflight(&named(&["eth0"]), &policy(&["ib0"]), &links).unwrap_err();
        assert!(
            odd.to_string().contains("ib0") && odd.to_string().contains("link type 32"),
            "{odd}"
        );
        assert!(preflight(&IfaceSelection::All, &policy(&[]), &links).is_ok());
    }
}
