//! Network interfaces as the kernel names them: resolving names to
//! ifindexes, and a notification whenever any link appears, disappears or
//! changes (netlink `RTMGRP_LINK`), so service endpoints bound to an
//! interface follow it (DESIGN.md section 1, `ignore_missing_endpoint`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{
    AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, socket, MsgFlags,
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
        let socket = unsafe { AsyncFd::register(fd) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(LinkEvents { socket })
    }

    /// Waits for the next batch of link events and drains it.
    pub async fn changed(&mut self) -> std::io::Result<()> {
        let mut buffer = [0u8; 8192];
        loop {
            let mut guard = self.socket.readable().await?;
            let mut drained_any = false;
            loop {
                match recv(guard.get_inner().as_raw_fd(), &mut buffer, MsgFlags::MSG_DONTWAIT) {
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
    fn resolve_keeps_existing_names_and_drops_missing_ones() {
        let index = resolve(["lo", "vfw-no-such-if"]);
        assert_eq!(index.len(), 1);
        assert_eq!(index.get("lo"), Some(&1));
    }
}
