//! What the kernel must offer, checked before anything is loaded, so a
//! kernel that lacks a feature gets a sentence naming it and the release
//! that brought it — not a verifier log or a bare errno.

use aya::maps::MapType;
use aya::programs::ProgramType;

/// One kernel feature the program needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// BTF of the running kernel (`/sys/kernel/btf/vmlinux`).
    Btf,
    /// XDP programs.
    Xdp,
    /// `BPF_MAP_TYPE_LPM_TRIE`.
    LpmTrie,
    /// `BPF_MAP_TYPE_RINGBUF`.
    RingBuf,
    /// BPF links for XDP (pinnable attachments).
    XdpLink,
    /// `bpf_ktime_get_coarse_ns`.
    CoarseClock,
}

impl Feature {
    /// Every feature, in the order they are checked.
    pub const ALL: [Feature; 6] = [
        Feature::Btf,
        Feature::Xdp,
        Feature::LpmTrie,
        Feature::RingBuf,
        Feature::XdpLink,
        Feature::CoarseClock,
    ];

    /// What it is, and the Linux release that brought it.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Feature::Btf => ("kernel BTF (CONFIG_DEBUG_INFO_BTF)", "5.4"),
            Feature::Xdp => ("XDP programs", "4.8"),
            Feature::LpmTrie => ("LPM-trie maps (BPF_MAP_TYPE_LPM_TRIE)", "4.11"),
            Feature::RingBuf => ("ring buffer maps (BPF_MAP_TYPE_RINGBUF)", "5.8"),
            Feature::XdpLink => ("BPF links for XDP", "5.9"),
            Feature::CoarseClock => ("the bpf_ktime_get_coarse_ns helper", "5.11"),
        }
    }
}

/// Asks the running kernel whether it has `feature`.
pub fn kernel_has(feature: Feature) -> bool {
    match feature {
        Feature::Btf => std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        Feature::Xdp => aya::sys::is_program_supported(ProgramType::Xdp).unwrap_or(false),
        Feature::LpmTrie => aya::sys::is_map_supported(MapType::LpmTrie).unwrap_or(false),
        Feature::RingBuf => aya::sys::is_map_supported(MapType::RingBuf).unwrap_or(false),
        // Neither can be probed without attaching; the release tells.
        Feature::XdpLink => release_at_least(5, 9),
        Feature::CoarseClock => release_at_least(5, 11),
    }
}

/// The features `has` reports missing, as one message naming each with
/// the release that brought it and the running kernel's release.
pub fn missing(has: impl Fn(Feature) -> bool, release: &str) -> Option<String> {
    let lacking: Vec<String> = Feature::ALL
        .into_iter()
        .filter(|f| !has(*f))
        .map(|f| {
            let (what, since) = f.describe();
            format!("{what} needs Linux {since}")
        })
        .collect();
    (!lacking.is_empty()).then(|| {
        format!(
            "the running kernel (release {release}) lacks what vaultfw needs: {}; run a newer \
             kernel (Debian 12's 6.1 and later are tested)",
            lacking.join("; ")
        )
    })
}

/// Whether the running kernel's release is at least `major.minor`.
fn release_at_least(major: u32, minor: u32) -> bool {
    let release = super::error::kernel_release();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true, // unknown: let the load say
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ring_buffer_is_named_with_its_release_and_the_kernels() {
        let message = missing(|f| f != Feature::RingBuf, "5.4.0-test").expect("one missing");
        assert!(message.contains("ring buffer maps (BPF_MAP_TYPE_RINGBUF) needs Linux 5.8"), "{message}");
        assert!(message.contains("release 5.4.0-test"), "{message}");
        assert!(!message.contains("LPM"), "{message}");
    }

    #[test]
    fn nothing_missing_is_no_message() {
        assert_eq!(missing(|_| true, "6.18"), None);
    }
}
