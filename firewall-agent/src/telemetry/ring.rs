//! Reading the kernel's access-log ring buffer (`VFW_EVENTS`): the ring's
//! fd is registered with tokio ([`AsyncFd`]), as aya's ring buffer
//! documentation suggests, so the daemon loop wakes when the kernel has
//! written events and drains them in bounded batches.

use aya::maps::{MapData, RingBuf};
use firewall_common::AccessEvent;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Events taken from the ring per wake-up at most, so a full ring never
/// keeps the daemon loop from answering commands.
pub const MAX_BATCH: usize = 1024;

/// The ring buffer, registered with the async runtime.
pub struct EventRing {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records shorter than an [`AccessEvent`] (a kernel/agent mismatch).
    malformed: u64,
}

impl EventRing {
    /// Registers `ring` with the runtime (call inside it).
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the fd is the ring map's, owned by `ring`, which the
        // AsyncFd owns from here on: it stays open and the same for the
        // AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(EventRing { fd, malformed: 0 })
    }

    /// Waits until the kernel has written events, then takes up to
    /// [`MAX_BATCH`] of them. Cancel-safe: nothing is taken before the
    /// wait ends.
    pub async fn next_batch(&mut self) -> std::io::Result<Vec<AccessEvent>> {
        let mut guard = self.fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        let mut events = Vec::new();
        let mut malformed = 0;
        let mut drained = true;
        while events.len() < MAX_BATCH {
            let Some(item) = ring.next() else { break };
            if item.len() < size_of::<AccessEvent>() {
                malformed += 1;
                continue;
            }
            // SAFETY: the record holds at least one AccessEvent (checked
            // above), a repr(C) type of plain integers valid for any bits;
            // read_unaligned does not require the ring's alignment.
            events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<AccessEvent>()) });
            if events.len() == MAX_BATCH {
                drained = false;
            }
        }
        if drained {
            // Only once the ring is empty: a partial drain must wake us
            // again at once.
            guard.clear_ready();
        }
        if malformed > 0 {
            self.malformed += malformed;
            tracing::warn!(
                malformed,
                total = self.malformed,
                "access-log ring held records of an unexpected size (agent and program from different builds?)"
            );
        }
        Ok(events)
    }
}
