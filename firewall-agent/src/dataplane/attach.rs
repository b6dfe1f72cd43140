//! Attaching the program to an interface in the mode the operator asked for,
//! with errors that say what the driver lacks instead of a bare errno.
//!
//! Each interface runs the entry point its framing needs ([`AttachKind`]);
//! a pinned link from a previous run is compared with that very program.

use std::path::{Path, PathBuf};

use aya::programs::{
    ProgramError, ProgramFd, Xdp, XdpMode,
    links::{FdLink, PinnedLink},
    loaded_programs,
    xdp::{XdpLink, XdpLinkId},
};
use serde::{Deserialize, Serialize};

use super::DataplaneError;
use super::netlink::xdp_attachment;

/// The XDP mode an operator asks for (`vaultfw run --xdp-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpModeRequest {
    /// Native (driver) XDP where the driver has it, else generic with a
    /// warning.
    Auto,
    /// Native XDP only; fail when the driver lacks it.
    Native,
    /// Generic (skb) XDP: works on every interface, slower.
    Generic,
}

/// Which entry point of the object an interface runs: the one for its
/// framing. Serialized as `"l2"` / `"l3"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachKind {
    /// Ethernet devices (`firewall_common::PROGRAM_NAME`): Ethernet header,
    /// then up to two VLAN tags.
    L2,
    /// L3 devices (`firewall_common::PROGRAM_NAME_L3`: ipip, gre, sit,
    /// wireguard, tun): the frame starts at the IP header.
    L3,
}

impl AttachKind {
    /// The program's name in the object (and in `bpftool prog`).
    pub fn program_name(self) -> &'static str {
        match self {
            AttachKind::L2 => firewall_common::PROGRAM_NAME,
            AttachKind::L3 => firewall_common::PROGRAM_NAME_L3,
        }
    }

    /// `"l2"` or `"l3"`, as `show` and the logs say it.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachKind::L2 => "l2",
            AttachKind::L3 => "l3",
        }
    }
}

impl std::fmt::Display for AttachKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an attachment came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachOutcome {
    /// A new XDP link.
    Attached,
    /// A pinned link already ran this very program: kept as it was.
    Adopted,
    /// A pinned link ran another build: its program was swapped with one
    /// link update (no moment without a filter).
    Replaced,
}

impl AttachOutcome {
    /// The value as `show` and the logs spell it (`"attached"`,
    /// `"adopted"`, `"replaced"`).
    pub const fn name(self) -> &'static str {
        match self {
            AttachOutcome::Attached => "attached",
            AttachOutcome::Adopted => "adopted",
            AttachOutcome::Replaced => "replaced",
        }
    }
}

/// An attachment the agent holds.
#[derive(Debug, Serialize)]
pub struct AttachedInterface {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// The mode the kernel reports for the interface after the attach
    /// (`"native"`, `"generic"`, ...), not the one requested.
    pub mode: &'static str,
    /// How the attachment came about.
    pub outcome: AttachOutcome,
    /// The entry point the interface runs.
    pub program: AttachKind,
    #[serde(skip)]
    link: HeldLink,
    /// The link's pin, when the agent pins.
    #[serde(skip)]
    pin: Option<PathBuf>,
    /// For [`AttachOutcome::Replaced`]: the program the link ran before, held
    /// so a failed start can move the link back to it.
    #[serde(skip)]
    replaced: Option<ProgramFd>,
}

/// The handle that keeps a link alive while the agent runs.
#[derive(Debug)]
enum HeldLink {
    /// Owned by the program object (detach through it).
    Program(XdpLinkId),
    /// A link fd held directly (a pinned link; dropping it leaves the pin).
    Fd(#[allow(dead_code)] FdLink),
}

/// Attaches `program` (the `kind` entry point) to `interface`. With `pin`,
/// an existing link pinned there is adopted (same program) or updated in
/// place (another build, or the other entry point), and a new link is
/// pinned there, so the filter outlives the agent.
pub(super) fn attach(
    program: &mut Xdp,
    kind: AttachKind,
    interface: &str,
    request: XdpModeRequest,
    pin: Option<&Path>,
    adopt: bool,
) -> Result<AttachedInterface, DataplaneError> {
    let ifindex =
        nix::net::if_::if_nametoindex(interface).map_err(|_| DataplaneError::NoSuchInterface {
            interface: interface.to_owned(),
        })?;
    if let Some(pin) = pin
        && let Some(attached) = reuse_pinned_link(program, kind, interface, ifindex, pin, adopt)?
    {
        let asked = match request {
            XdpModeRequest::Native => Some("native"),
            XdpModeRequest::Generic => Some("generic"),
            XdpModeRequest::Auto => None,
        };
        if let Some(asked) = asked.filter(|asked| *asked != attached.mode) {
            // A link's mode is fixed at attach: changing it means a moment
            // without a filter, which a restart never takes on its own.
            tracing::warn!(
                interface,
                running = attached.mode,
                asked,
                "--xdp-mode differs from the pinned link's mode, which is kept (no moment without a \
                 filter); to change it, `vaultfw detach` and start again (the interface is \
                 unfiltered in between)"
            );
        }
        return Ok(attached);
    }
    let link_id = attach_requested(program, kind, interface, request)?;
    let (link, pin) = match pin {
        None => (HeldLink::Program(link_id), None),
        Some(path) => {
            let fd_link = take_fd_link(program, link_id)?;
            let pinned = fd_link.pin(path).map_err(|e| DataplaneError::Pins {
                path: path.to_path_buf(),
                operation: "pin the XDP link at",
                source: std::io::Error::other(e.to_string()),
            })?;
            (HeldLink::Fd(pinned.into()), Some(path.to_path_buf()))
        }
    };
    Ok(AttachedInterface {
        name: interface.to_owned(),
        ifindex,
        mode: kernel_mode(ifindex),
        outcome: AttachOutcome::Attached,
        program: kind,
        link,
        pin,
        replaced: None,
    })
}

/// A pinned link at `pin` that is live on `ifindex`, adopted or updated to
/// `program`; `None` when there is none (a stale pin is removed).
fn reuse_pinned_link(
    program: &mut Xdp,
    kind: AttachKind,
    interface: &str,
    ifindex: u32,
    pin: &Path,
    adopt: bool,
) -> Result<Option<AttachedInterface>, DataplaneError> {
    if !pin.exists() {
        return Ok(None);
    }
    let live = PinnedLink::from_pin(pin).ok().and_then(|pinned| {
        let fd_link: FdLink = pinned.into();
        let link_prog = fd_link.info().ok()?.program_id();
        let on_interface = xdp_attachment(ifindex).ok()?.prog_id == Some(link_prog);
        on_interface.then_some((fd_link, link_prog))
    });
    let Some((fd_link, link_prog)) = live else {
        // The interface went away (and maybe came back): the link is dead.
        tracing::warn!(interface, pin = %pin.display(), "removing a stale XDP link pin");
        std::fs::remove_file(pin).map_err(|source| DataplaneError::Pins {
            path: pin.to_path_buf(),
            operation: "remove the stale link pin",
            source,
        })?;
        return Ok(None);
    };
    let ours = program.info().map_err(|source| DataplaneError::Program {
        operation: "read the loaded program's tag",
        source,
    })?;
    // Adopt only the very same program over the very same maps (the tag
    // also tells the Ethernet entry from the L3 one): a map
    // re-created at this start (new limits, a new layout) is one the
    // attached program does not read, so it must be swapped even when the
    // instructions are equal (the tag does not cover map references).
    // Maps each load creates (the aya-log ring, the `.rodata` holding the
    // log level) never match by id: the data sections must match by
    // content instead (same log level), and a program that logs is never
    // adopted (`adopt` false), so its records reach this agent's reader.
    let theirs = linked_program(link_prog);
    let same = adopt
        && theirs.as_ref().is_some_and(|theirs| {
            theirs.tag() == ours.tag() && program_maps(theirs) == program_maps(&ours)
        });
    let mut replaced = None;
    let (link, outcome) = if same {
        (HeldLink::Fd(fd_link), AttachOutcome::Adopted)
    } else {
        replaced = theirs.and_then(|theirs| theirs.fd().ok());
        let xdp_link = XdpLink::try_from(fd_link).map_err(|e| DataplaneError::Attach {
            interface: interface.to_owned(),
            mode: "pinned",
            reason: format!("the pinned link is not an XDP link: {e}"),
            errno: None,
        })?;
        let id = program
            .attach_to_link(xdp_link)
            .map_err(|source| DataplaneError::Program {
                operation: "swap the program behind the pinned XDP link",
                source,
            })?;
        (HeldLink::Program(id), AttachOutcome::Replaced)
    };
    Ok(Some(AttachedInterface {
        name: interface.to_owned(),
        ifindex,
        mode: kernel_mode(ifindex),
        outcome,
        program: kind,
        link,
        pin: Some(pin.to_path_buf()),
        replaced,
    }))
}

/// The loaded program with id `id`.
fn linked_program(id: u32) -> Option<aya::programs::ProgramInfo> {
    loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
}

/// What makes two loads of one object the same program: the ids of the
/// shared (pinned) maps it uses, sorted, and the contents of its data
/// sections (`.rodata`: the aya-log level); the aya-log ring each load
/// owns is left out. Kernels since 4.15 list a program's maps.
fn program_maps(program: &aya::programs::ProgramInfo) -> (Vec<u32>, Vec<Vec<u8>>) {
    let mut shared = Vec::new();
    let mut data = Vec::new();
    for id in program.map_ids().ok().flatten().unwrap_or_default() {
        let info = aya::maps::MapInfo::from_id(id).ok();
        let name = info.as_ref().and_then(|i| i.name_as_str()).unwrap_or("");
        if name == firewall_common::BPF_LOGS {
            continue;
        }
        if name.contains('.') {
            data.push(info.and_then(|i| data_section(&i)).unwrap_or_default());
        } else {
            shared.push(id);
        }
    }
    shared.sort_unstable();
    data.sort_unstable();
    (shared, data)
}

/// The bytes of a data-section map (an array of one value): its slot 0.
fn data_section(info: &aya::maps::MapInfo) -> Option<Vec<u8>> {
    use std::os::fd::{AsFd, AsRawFd};
    /// `union bpf_attr` as BPF_MAP_LOOKUP_ELEM reads it.
    #[repr(C)]
    struct LookupAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let fd = info.fd().ok()?;
    let key = 0u32;
    let mut value = vec![0u8; info.value_size() as usize];
    let attr = LookupAttr {
        map_fd: fd.as_fd().as_raw_fd() as u32,
        _pad: 0,
        key: std::ptr::from_ref(&key) as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: the kernel reads `attr` (its size given) and the 4 key
    // bytes, and writes value_size bytes into `value`, which holds them.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_ELEM,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<LookupAttr>(),
        )
    };
    (ret == 0).then_some(value)
}

fn take_fd_link(program: &mut Xdp, link_id: XdpLinkId) -> Result<FdLink, DataplaneError> {
    let link = program
        .take_link(link_id)
        .map_err(|source| DataplaneError::Program {
            operation: "take the XDP link",
            source,
        })?;
    FdLink::try_from(link).map_err(|e| DataplaneError::Attach {
        interface: String::new(),
        mode: "link",
        reason: format!(
            "the kernel attached without a bpf_link (netlink fallback), which cannot be pinned: {e}"
        ),
        errno: None,
    })
}

/// The mode the kernel reports for `ifindex` ("unknown" if it cannot say).
fn kernel_mode(ifindex: u32) -> &'static str {
    xdp_attachment(ifindex)
        .ok()
        .and_then(|a| a.mode)
        .unwrap_or("unknown")
}

/// Attaches in the requested mode, falling back for `auto`. An L3 device
/// always gets generic XDP: ipip, gre, sit and wireguard have no native
/// XDP, and tun's is for tap-mode devices (6.18 refuses it on a tun-mode
/// one), so generic is the mode that judges their packets everywhere.
fn attach_requested(
    program: &mut Xdp,
    kind: AttachKind,
    interface: &str,
    request: XdpModeRequest,
) -> Result<XdpLinkId, DataplaneError> {
    if kind == AttachKind::L3 {
        if request == XdpModeRequest::Native {
            return Err(DataplaneError::Attach {
                interface: interface.to_owned(),
                mode: "native",
                reason: format!(
                    "{interface} is an L3 device (ipip, gre, sit, wireguard, tun): only generic \
                     XDP judges its packets; use --xdp-mode auto (or generic)"
                ),
                errno: None,
            });
        }
        tracing::info!(
            interface,
            "L3 device: generic XDP, the mode that judges its packets"
        );
        return attach_in(program, interface, XdpMode::Skb);
    }
    match request {
        XdpModeRequest::Native => attach_in(program, interface, XdpMode::Driver),
        XdpModeRequest::Generic => attach_in(program, interface, XdpMode::Skb),
        XdpModeRequest::Auto => match attach_in(program, interface, XdpMode::Driver) {
            Ok(link) => Ok(link),
            Err(error @ DataplaneError::Attach { .. }) if error.native_unsupported() => {
                let DataplaneError::Attach { reason, .. } = error else {
                    unreachable!("matched just above")
                };
                tracing::warn!(
                    interface,
                    reason,
                    "native XDP unavailable; falling back to generic XDP (slower: frames are \
                     judged after the kernel allocates an skb)"
                );
                attach_in(program, interface, XdpMode::Skb)
            }
            Err(other) => Err(other),
        },
    }
}

fn mode_name(mode: XdpMode) -> &'static str {
    match mode {
        XdpMode::Driver => "native",
        XdpMode::Skb => "generic",
        XdpMode::Hardware => "offload",
        XdpMode::Default => "kernel-chosen",
    }
}

fn attach_in(
    program: &mut Xdp,
    interface: &str,
    mode: XdpMode,
) -> Result<XdpLinkId, DataplaneError> {
    program
        .attach(interface, mode)
        .map_err(|error| match error {
            ProgramError::UnknownInterface { name } => {
                DataplaneError::NoSuchInterface { interface: name }
            }
            error => DataplaneError::Attach {
                interface: interface.to_owned(),
                mode: mode_name(mode),
                reason: explain_attach_error(interface, mode, &error),
                errno: errno_of(&error),
            },
        })
}

/// Turns an attach errno into a sentence with a fix.
fn explain_attach_error(interface: &str, mode: XdpMode, error: &ProgramError) -> String {
    let errno = errno_of(error);
    match (mode, errno) {
        (XdpMode::Driver, Some(libc::EOPNOTSUPP)) | (XdpMode::Driver, Some(libc::EINVAL)) => {
            format!(
                "the driver of {interface} lacks native XDP ({error}); use --xdp-mode generic \
                 (or auto)"
            )
        }
        (XdpMode::Driver, Some(libc::ERANGE)) => {
            let mtu = nix::net::if_::if_nametoindex(interface)
                .ok()
                .and_then(|index| super::netlink::link_mtu(index).ok().flatten())
                .map_or_else(|| "unknown".to_owned(), |mtu| mtu.to_string());
            format!(
                "the MTU of {interface} ({mtu}) is larger than a native-XDP frame can hold \
                 (one page: about 3500 bytes of MTU on veth); lower the MTU or use \
                 --xdp-mode generic"
            )
        }
        (_, Some(libc::EBUSY)) | (_, Some(libc::EEXIST)) => format!(
            "another XDP program is already attached to {interface} ({error}); see it with \
             `bpftool net show dev {interface}`; a vaultfw filter left pinned is removed with \
             `vaultfw detach --pin-dir DIR`, a netlink-attached one with `ip link set dev \
             {interface} xdp off`"
        ),
        (_, Some(libc::EPERM)) => {
            format!("permission denied ({error}); run as root (CAP_BPF and CAP_NET_ADMIN)")
        }
        _ => error.to_string(),
    }
}

/// The OS error code somewhere in `error`'s source chain.
fn errno_of(error: &ProgramError) -> Option<i32> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(code) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
        {
            return Some(code);
        }
        source = e.source();
    }
    None
}

/// Moves a link this run switched to its program ([`AttachOutcome::Replaced`])
/// back to the program it ran before, with one link update: the interface
/// is never without a filter. The link stays pinned.
pub(super) fn restore_replaced(attached: AttachedInterface) -> Result<(), DataplaneError> {
    let (Some(pin), Some(previous)) = (&attached.pin, &attached.replaced) else {
        return Err(DataplaneError::Attach {
            interface: attached.name.clone(),
            mode: "pinned",
            reason: "the program the link ran before is unknown; it keeps the new one".to_owned(),
            errno: None,
        });
    };
    super::link::update_pinned(pin, previous).map_err(|source| DataplaneError::Pins {
        path: pin.clone(),
        operation: "move the XDP link back to its previous program",
        source,
    })?;
    // Our handle goes with the program object; the pin keeps the link.
    Ok(())
}

/// Detaches one attachment: removes its pin (if any), then lets go of it.
pub(super) fn detach(program: &mut Xdp, attached: AttachedInterface) -> Result<(), DataplaneError> {
    if let Some(pin) = &attached.pin {
        match std::fs::remove_file(pin) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DataplaneError::Pins {
                    path: pin.clone(),
                    operation: "unpin the XDP link",
                    source,
                });
            }
        }
    }
    match attached.link {
        HeldLink::Program(id) => program
            .detach(id)
            .map_err(|source| DataplaneError::Program {
                operation: "detach the XDP program",
                source,
            }),
        // Dropping the last fd of an unpinned link detaches it.
        HeldLink::Fd(link) => {
            drop(link);
            Ok(())
        }
    }
}
