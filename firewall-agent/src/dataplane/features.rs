//! What the kernel must offer, checked before anything is loaded, so a
//! kernel that lacks a feature gets a sentence naming it and the release
//! that brought it — not a verifier log or a bare errno.

use aya::maps::MapType;
use aya::programs::ProgramType;

use super::error::DataplaneError;

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

/// Asks the running kernel whether it has `feature`. Errors: the probe's
/// bpf() call failed in a way that says nothing about the feature — EPERM
/// or EACCES when the process lacks the privilege to make it.
pub fn probe(feature: Feature) -> Result<bool, std::io::Error> {
    match feature {
        Feature::Btf => Ok(std::path::Path::new("/sys/kernel/btf/vmlinux").exists()),
        Feature::Xdp => {
            aya::sys::is_program_supported(ProgramType::Xdp).map_err(|error| match error {
                aya::programs::ProgramError::SyscallError(e) => e.io_error,
                other => std::io::Error::other(other.to_string()),
            })
        }
        Feature::LpmTrie => aya::sys::is_map_supported(MapType::LpmTrie).map_err(|e| e.io_error),
        Feature::RingBuf => aya::sys::is_map_supported(MapType::RingBuf).map_err(|e| e.io_error),
        // Neither can be probed without attaching; the release tells.
        Feature::XdpLink => Ok(release_at_least(5, 9)),
        Feature::CoarseClock => Ok(release_at_least(5, 11)),
    }
}

/// Probes every feature once: a probe refused for want of privilege is
/// [`DataplaneError::MissingPrivilege`] (never "the kernel lacks it"), and
/// missing features are [`DataplaneError::MissingFeatures`].
pub fn require(release: &str) -> Result<(), DataplaneError> {
    let mut has = Vec::with_capacity(Feature::ALL.len());
    for feature in Feature::ALL {
        match probe(feature) {
            Ok(yes) => has.push((feature, yes)),
            Err(source) if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) => {
                return Err(DataplaneError::MissingPrivilege {
                    operation: format!(
                        "probe for {} (bpf() with a trivial program or map)",
                        feature.describe().0
                    ),
                    lacking: super::error::lacking_capabilities(),
                    source,
                });
            }
            Err(_) => has.push((feature, false)),
        }
    }
    let has = |f: Feature| has.iter().any(|(g, yes)| *g == f && *yes);
    match missing(has, release) {
        Some(message) => Err(DataplaneError::MissingFeatures { message }),
        None => Ok(()),
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
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
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
        assert!(
            message.contains("ring buffer maps (BPF_MAP_TYPE_RINGBUF) needs Linux 5.8"),
            "{message}"
        );
        assert!(message.contains("release 5.4.0-test"), "{message}");
        assert!(!message.contains("LPM"), "{message}");
    }

    #[test]
    fn nothing_missing_is_no_message() {
        assert_eq!(missing(|_| true, "6.18"), None);
    }
}
