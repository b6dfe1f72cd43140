//! Network interfaces as the kernel names them: resolving names to
//! ifindexes, listing every link with its framing and whether it holds an
//! address, and a notification whenever any link appears, disappears or
//! changes (netlink `RTMGRP_LINK`), so service endpoints bound to an
//! interface follow it (`ignore_missing_endpoint`; README, "Running it")
//! and `--iface all` covers interfaces that appear later.
//!
//! Everything is read through netlink, never `/sys/class/net`: the agent
//! may share only the network namespace of its interfaces, not the `/sys`
//! that shows them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, SockaddrLike, bind,
    recv, socket,
};
use tokio::io::unix::AsyncFd;

/// Interface name → ifindex, for the names a policy refers to. A name that
/// does not exist right now is absent.
pub type InterfaceIndex = BTreeMap<String, u32>;

/// Resolves each of `names` with `if_nametoindex`; missing ones are left out.
pub fn resolve<'a>(names: impl IntoIterator<Item = &'a str>) -> InterfaceIndex {
    names
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|name| {
            nix::net::if_::if_nametoindex(name)
                .ok()
                .map(|index| (name.to_owned(), index))
        })
        .collect()
}

/// The endpoint interfaces `policy`'s virtual network rules name, resolved
/// now; a rule bound to a missing one matches nothing until it appears.
pub fn endpoint_interfaces(policy: &crate::policy::Policy) -> InterfaceIndex {
    resolve(policy.endpoint_interfaces())
}

/// A network interface as the kernel lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Its name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// Its `ARPHRD_*` link type (linux/if_arp.h, netlink `ifi_type`): 1
    /// for Ethernet, 768 ipip, 776 sit, 778 gre, 65534 wireguard and tun.
    pub link_type: u16,
    /// Whether it holds an IPv4 or IPv6 address.
    pub has_address: bool,
    /// Where it sits in a stack of devices, lowest first: 0 for a device
    /// with no kind (a NIC) or a veth; 1 for a master (bond, team, bridge,
    /// vrf) over its ports; 2 for devices over another one (vlan, macvlan,
    /// vxlan, tunnels, ...). The kernel refuses XDP on a device whose upper
    /// device already has a program, so lower devices are attached first.
    pub stack_level: u8,
}

/// [`LinkInfo::stack_level`] for an `IFLA_INFO_KIND` (`None`: no kind).
pub fn stack_level(kind: Option<&str>) -> u8 {
    match kind {
        None | Some("veth") => 0,
        Some("bond" | "team" | "bridge" | "vrf") => 1,
        Some(_) => 2,
    }
}

/// Every link of this network namespace (one RTM_GETLINK dump), with
/// whether each holds an address (`getifaddrs`).
///
/// Errors: the netlink socket failed or the kernel answered with an error.
pub fn list() -> std::io::Result<Vec<LinkInfo>> {
    let addressed: BTreeSet<String> = nix::ifaddrs::getifaddrs()?
        .filter(|a| {
            a.address.as_ref().is_some_and(|addr| {
                matches!(
                    addr.family(),
                    Some(AddressFamily::Inet | AddressFamily::Inet6)
                )
            })
        })
        .map(|a| a.interface_name)
        .collect();
    let mut links = dump_links()?;
    for link in &mut links {
        link.has_address = addressed.contains(&link.name);
    }
    Ok(links)
}

/// RTM_GETLINK with NLM_F_DUMP: every link's name, index and type.
fn dump_links() -> std::io::Result<Vec<LinkInfo>> {
    use netlink_packet_core::{
        NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut request = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    request.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    request.header.sequence_number = 1;
    request.finalize();
    let mut buffer = vec![0; request.buffer_len()];
    request.serialize(&mut buffer);
    socket.send(&buffer, 0)?;

    let unreadable = |e| std::io::Error::other(format!("unreadable netlink reply: {e}"));
    let mut links = Vec::new();
    loop {
        let (reply, _) = socket.recv_from_full()?;
        let mut offset = 0;
        while offset < reply.len() {
            let message: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&reply[offset..]).map_err(unreadable)?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    let name = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::IfName(name) => Some(name.clone()),
                        _ => None,
                    });
                    let kind = link.attributes.iter().find_map(|a| match a {
                        LinkAttribute::LinkInfo(infos) => {
                            infos.iter().find_map(|info| match info {
                                netlink_packet_route::link::LinkInfo::Kind(kind) => {
                                    Some(kind.to_string())
                                }
                                _ => None,
                            })
                        }
                        _ => None,
                    });
                    if let Some(name) = name {
                        links.push(LinkInfo {
                            name,
                            ifindex: link.header.index,
                            link_type: u16::from(link.header.link_layer_type),
                            has_address: false,
                            stack_level: stack_level(kind.as_deref()),
                        });
                    }
                }
                NetlinkPayload::Done(_) => return Ok(links),
                NetlinkPayload::Error(error) => return Err(error.to_io()),
                _ => {}
            }
            if length == 0 {
                return Err(std::io::Error::other("netlink message of length 0"));
            }
            offset += length;
        }
    }
}

/// The netlink multicast group of link events (`RTMGRP_LINK`, linux/rtnetlink.h).
const RTMGRP_LINK: u32 = 1;

/// A subscription to link events. Each [`LinkEvents::changed`] returns once
/// at least one link event arrived since the last call; callers re-resolve
/// the names they care about (events are coalesced, their content is not
/// needed).
pub struct LinkEvents {
    socket: AsyncFd<OwnedFd>,
}

impl LinkEvents {
    /// Subscribes (in the caller's network namespace).
    pub fn subscribe() -> std::io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, RTMGRP_LINK))?;
        // SAFETY: `fd` is an open socket that the AsyncFd owns (OwnedFd) for
        // its whole life, and OwnedFd::as_raw_fd always returns that fd.
        let socket =
            unsafe { AsyncFd::register(fd) }.map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(LinkEvents { socket })
    }

    /// Waits for the next batch of link events and drains it.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        let mut buffer = [0u8; 8192];
        loop {
            let mut guard = self.socket.readable().await?;
            let mut drained_any = false;
            loop {
                match recv(
                    guard.get_inner().as_raw_fd(),
                    &mut buffer,
                    MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(0) => break,
                    Ok(_) => drained_any = true,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    // ENOBUFS: events were lost; a re-resolve covers them.
                    Err(nix::errno::Errno::ENOBUFS) => drained_any = true,
                    Err(e) => return Err(e.into()),
                }
            }
            guard.clear_ready();
            if drained_any {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_finds_the_loopback_with_its_type() {
        let links = list().expect("list links");
        let lo = links.iter().find(|l| l.name == "lo").expect("lo listed");
        assert_eq!(lo.ifindex, 1);
        assert_eq!(lo.link_type, 772, "ARPHRD_LOOPBACK");
        let names: BTreeSet<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names.len(), links.len(), "each link once: {links:?}");
    }

    #[test]
    fn resolve_keeps_existing_names_and_drops_missing_ones() {
        let index = resolve(["lo", "vfw-no-such-if"]);
        assert_eq!(index.len(), 1);
        assert_eq!(index.get("lo"), Some(&1));
    }
}

#[cfg(test)]
mod stack_tests {
    use super::stack_level;

    #[test]
    fn nics_come_before_masters_and_masters_before_stacked_devices() {
        assert_eq!(stack_level(None), 0);
        assert_eq!(stack_level(Some("veth")), 0);
        assert_eq!(stack_level(Some("bond")), 1);
        assert_eq!(stack_level(Some("bridge")), 1);
        assert_eq!(stack_level(Some("vxlan")), 2);
        assert_eq!(stack_level(Some("vlan")), 2);
    }
}
