//! Verdicts: the reason a frame was passed or dropped. Each frame increments
//! exactly one verdict counter (DESIGN.md section 2); the index of a verdict
//! is its slot in the [`crate::maps::VERDICT_COUNTERS`] per-CPU array.

/// Why a frame got its XDP action. `#[repr(u32)]`: the discriminant is the
/// counter slot, so the order is part of the kernel/user contract — append,
/// never reorder.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...): XDP_PASS.
    PassNonIp = 0,
    /// Not addressed to the data plane (another port or protocol): XDP_PASS.
    PassControlPlane = 1,
    /// A non-first IPv4 fragment (carries no ports): XDP_PASS.
    PassFragment = 2,
    /// IPv6 to the data plane with `ipv6 = "Allow"`: XDP_PASS.
    PassIpv6 = 3,
    /// `default_action = "Allow"`: XDP_PASS.
    AllowDefault = 4,
    /// The source matched an IP rule: XDP_PASS.
    AllowIpRule = 5,
    /// The source matched a virtual network rule through its endpoint: XDP_PASS.
    AllowVnetRule = 6,
    /// The source is a trusted service and `bypass = "AzureServices"`: XDP_PASS.
    AllowTrustedService = 7,
    /// `mode = "Audit"`: would have been denied, passed: XDP_PASS.
    AuditWouldDeny = 8,
    /// No rule matched under `default_action = "Deny"`: XDP_DROP.
    DenyNoMatch = 9,
    /// IPv6 to the data plane with `ipv6 = "Deny"`: XDP_DROP.
    DenyIpv6 = 10,
    /// A frame that could be data-plane traffic but cannot be parsed
    /// (truncated, bad header length, too many VLAN tags): XDP_DROP.
    DenyMalformed = 11,
    /// Would have been dropped (a `deny_*` or `audit_would_deny` verdict),
    /// but the kernel's routing would forward it out of the host, so it is
    /// not addressed to this host's data plane (only with
    /// [`crate::FLAG_PASS_FORWARDED`]): XDP_PASS.
    PassForwarded = 12,
}

impl Verdict {
    /// Number of verdicts, the size of the verdict counter array.
    pub const COUNT: usize = 13;

    /// Every verdict in counter-slot order.
    pub const ALL: [Verdict; Self::COUNT] = [
        Verdict::PassNonIp,
        Verdict::PassControlPlane,
        Verdict::PassFragment,
        Verdict::PassIpv6,
        Verdict::AllowDefault,
        Verdict::AllowIpRule,
        Verdict::AllowVnetRule,
        Verdict::AllowTrustedService,
        Verdict::AuditWouldDeny,
        Verdict::DenyNoMatch,
        Verdict::DenyIpv6,
        Verdict::DenyMalformed,
        Verdict::PassForwarded,
    ];

    /// The counter name used in logs, JSON and metrics (DESIGN.md section 2).
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::PassNonIp => "pass_non_ip",
            Verdict::PassControlPlane => "pass_control_plane",
            Verdict::PassFragment => "pass_fragment",
            Verdict::PassIpv6 => "pass_ipv6",
            Verdict::AllowDefault => "allow_default",
            Verdict::AllowIpRule => "allow_ip_rule",
            Verdict::AllowVnetRule => "allow_vnet_rule",
            Verdict::AllowTrustedService => "allow_trusted_service",
            Verdict::AuditWouldDeny => "audit_would_deny",
            Verdict::DenyNoMatch => "deny_no_match",
            Verdict::DenyIpv6 => "deny_ipv6",
            Verdict::DenyMalformed => "deny_malformed",
            Verdict::PassForwarded => "pass_forwarded",
        }
    }

    /// Whether the frame is dropped (`XDP_DROP`) rather than passed.
    pub const fn drops(self) -> bool {
        matches!(
            self,
            Verdict::DenyNoMatch | Verdict::DenyIpv6 | Verdict::DenyMalformed
        )
    }

    /// The counter slot of this verdict.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The verdict stored in counter slot `index`, if any.
    pub const fn from_index(index: u32) -> Option<Verdict> {
        if (index as usize) < Self::COUNT {
            Some(Self::ALL[index as usize])
        } else {
            None
        }
    }
}
