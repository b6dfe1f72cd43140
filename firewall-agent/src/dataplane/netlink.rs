//! What the kernel says is attached to an interface: one RTM_GETLINK
//! request, its IFLA_XDP attributes read back. `show` reports this, not
//! the mode that was requested, and the agent uses the program id
//! to tell a live pinned link from one whose interface went away.

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use serde::Serialize;

/// The XDP state of one interface as the kernel holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct XdpAttachment {
    /// `"native"`, `"generic"`, `"offload"`, `"multiple"`; `None` when no
    /// XDP program is attached.
    pub mode: Option<&'static str>,
    /// The id of the attached program (`bpftool prog show id N`).
    pub prog_id: Option<u32>,
}

/// Asks the kernel what XDP program, in which mode, `ifindex` runs.
///
/// Errors: the netlink socket failed, or the kernel answered with an error
/// (ENODEV when the interface is gone).
pub fn xdp_attachment(ifindex: u32) -> std::io::Result<XdpAttachment> {
    get_link(ifindex).map(|link| from_link(&link))
}

/// The MTU of `ifindex`, as the kernel holds it (read through netlink:
/// the agent may share only the network namespace of the interface, not
/// the `/sys` that shows it).
pub fn link_mtu(ifindex: u32) -> std::io::Result<Option<u32>> {
    Ok(get_link(ifindex)?.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    }))
}

/// One RTM_GETLINK request for `ifindex`.
fn get_link(ifindex: u32) -> std::io::Result<LinkMessage> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    let mut request = LinkMessage::default();
    request.header.index = ifindex;
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(request)),
    );
    packet.header.flags = NLM_F_REQUEST;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut buffer = vec![0; packet.buffer_len()];
    packet.serialize(&mut buffer);
    socket.send(&buffer, 0)?;

    let (reply, _) = socket.recv_from_full()?;
    let message: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(&reply)
        .map_err(|e| std::io::Error::other(format!("unreadable netlink reply: {e}")))?;
    match message.payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => Ok(link),
        NetlinkPayload::Error(error) => Err(error.to_io()),
        other => Err(std::io::Error::other(format!(
            "unexpected netlink reply to RTM_GETLINK: {other:?}"
        ))),
    }
}

fn from_link(link: &LinkMessage) -> XdpAttachment {
    let mut state = XdpAttachment::default();
    for attribute in &link.attributes {
        let LinkAttribute::Xdp(xdp) = attribute else {
            continue;
        };
        for nla in xdp {
            match nla {
                LinkXdp::Attached(attached) => {
                    state.mode = match attached {
                        XdpAttached::None => None,
                        XdpAttached::Driver => Some("native"),
                        XdpAttached::SocketBuffer => Some("generic"),
                        XdpAttached::Hardware => Some("offload"),
                        XdpAttached::Multiple => Some("multiple"),
                        XdpAttached::Other(_) => Some("unknown"),
                        _ => Some("unknown"),
                    }
                }
                LinkXdp::ProgId(id) => state.prog_id = Some(*id),
                _ => {}
            }
        }
    }
    state
}
