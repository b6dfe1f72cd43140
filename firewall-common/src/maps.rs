//! Map names and the layout of every key and value the program and the
//! agent share.
//!
//! Policy changes are double-buffered (DESIGN.md section 2): there are two
//! *table sets*, 0 and 1, each with its own config slot, port bitmap and
//! rule tries. The program reads [`ACTIVE_SET`] once per frame and judges the
//! whole frame with that set; the agent fills the inactive set and then
//! flips the index with one array write, so no frame sees half a policy.

/// Array<u32, 1>: slot 0 holds the active table set, 0 or 1.
pub const ACTIVE_SET: &str = "VFW_ACTIVE";
/// Array<[`PolicyConfig`], 2>: slot N is table set N's settings.
pub const POLICY_CONFIG: &str = "VFW_CONFIG";
/// Array<u32, [`PORT_BITMAP_WORDS`]>: data-plane destination ports.
pub const DATA_PLANE_PORTS: &str = "VFW_PORTS";
/// LpmTrie<[`Ipv4Key`], [`RuleValue`]> of table set 0's IP rules.
pub const IP_RULES_0: &str = "VFW_IP_RULES_0";
/// LpmTrie<[`Ipv4Key`], [`RuleValue`]> of table set 1's IP rules.
pub const IP_RULES_1: &str = "VFW_IP_RULES_1";
/// PerCpuArray<u64, [`crate::Verdict::COUNT`]>: frames per verdict.
pub const VERDICT_COUNTERS: &str = "VFW_VERDICTS";

/// Number of table sets (double buffering).
pub const TABLE_SETS: u32 = 2;

/// The name of the XDP program in the object file.
pub const PROGRAM_NAME: &str = "vaultfw";

/// Entries in each IP-rule trie when the agent does not resize it. The
/// agent sizes the tries from the policy's limits before load.
pub const DEFAULT_IP_RULE_CAPACITY: u32 = 127;

/// [`PolicyConfig::flags`]: `default_action = "Allow"`.
pub const FLAG_DEFAULT_ALLOW: u32 = 1 << 0;
/// [`PolicyConfig::flags`]: `bypass = "AzureServices"`.
pub const FLAG_BYPASS_TRUSTED: u32 = 1 << 1;
/// [`PolicyConfig::flags`]: `mode = "Audit"`.
pub const FLAG_AUDIT: u32 = 1 << 2;
/// [`PolicyConfig::flags`]: `ipv6 = "Allow"`.
pub const FLAG_IPV6_ALLOW: u32 = 1 << 3;
/// [`PolicyConfig::flags`]: set once the agent has written this slot. A
/// slot without it (a freshly loaded program before the first apply) judges
/// data-plane frames as `default_action = "Deny"` with no rules: closed.
pub const FLAG_VALID: u32 = 1 << 31;

/// The settings of one table set. 16 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
    /// Policy generation this set was written for (1, 2, ...).
    pub generation: u64,
}

/// Transport protocols the data plane can guard, as port-bitmap rows.
pub const PORT_PROTO_TCP: u32 = 0;
/// See [`PORT_PROTO_TCP`].
pub const PORT_PROTO_UDP: u32 = 1;
/// u32 words per (table set, protocol) row: 65536 ports / 32 bits.
pub const PORT_WORDS_PER_ROW: u32 = 65536 / 32;
/// Total words in the [`DATA_PLANE_PORTS`] array: 2 sets × 2 protocols.
pub const PORT_BITMAP_WORDS: u32 = TABLE_SETS * 2 * PORT_WORDS_PER_ROW;

/// The [`DATA_PLANE_PORTS`] slot and bit for `port` (host byte order) of
/// protocol row `proto` in table set `set`: bit `port % 32` of word
/// `set * 4096 + proto * 2048 + port / 32`.
#[inline(always)]
pub const fn port_slot(set: u32, proto: u32, port: u16) -> (u32, u32) {
    let word = (set * 2 + proto) * PORT_WORDS_PER_ROW + (port as u32 >> 5);
    (word, 1u32 << (port as u32 & 31))
}

/// The data of an IPv4 LPM-trie key: the address octets in network byte
/// order. The kernel matches the first `prefix_len` bits of these bytes,
/// most significant bit of byte 0 first — which is why the octets must be
/// in network byte order (case K1).
pub type Ipv4Key = [u8; 4];

/// The value of an IP-rule trie entry: the rule's id, its slot in the
/// agent's rule table (for per-rule reporting).
pub type RuleValue = u32;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only integer fields, no implicit padding.
    unsafe impl aya::Pod for super::PolicyConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_slot_rows_do_not_overlap() {
        assert_eq!(port_slot(0, PORT_PROTO_TCP, 0), (0, 1));
        assert_eq!(port_slot(0, PORT_PROTO_TCP, 443), (13, 1 << 27));
        assert_eq!(port_slot(0, PORT_PROTO_UDP, 0).0, 2048);
        assert_eq!(port_slot(1, PORT_PROTO_TCP, 0).0, 4096);
        assert_eq!(port_slot(1, PORT_PROTO_UDP, 65535), (PORT_BITMAP_WORDS - 1, 1 << 31));
    }

    #[test]
    fn policy_config_has_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<PolicyConfig>(), 16);
    }
}
