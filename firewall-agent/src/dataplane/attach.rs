//! Attaching the program to an interface in the mode the operator asked for,
//! with errors that say what the driver lacks instead of a bare errno.

use aya::programs::{ProgramError, Xdp, XdpMode, xdp::XdpLinkId};
use serde::Serialize;

use super::DataplaneError;

/// The `--xdp-mode` an operator asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeRequest {
    /// Native (driver) XDP where the driver has it, else generic with a
    /// warning.
    Auto,
    /// Native XDP only; fail when the driver lacks it.
    Native,
    /// Generic (skb) XDP: works on every interface, slower.
    Generic,
}

/// An attachment the agent holds.
#[derive(Debug, Serialize)]
pub struct AttachedInterface {
    /// Interface name.
    pub name: String,
    /// `"native"` or `"generic"`: the mode the attach succeeded in.
    pub mode: &'static str,
    #[serde(skip)]
    link: XdpLinkId,
}

/// Attaches `program` to `interface`.
pub(super) fn attach(
    program: &mut Xdp,
    interface: &str,
    request: XdpModeRequest,
) -> Result<AttachedInterface, DataplaneError> {
    match request {
        XdpModeRequest::Native => attach_in(program, interface, XdpMode::Driver),
        XdpModeRequest::Generic => attach_in(program, interface, XdpMode::Skb),
        XdpModeRequest::Auto => match attach_in(program, interface, XdpMode::Driver) {
            Ok(attached) => Ok(attached),
            Err(DataplaneError::Attach { reason, .. }) => {
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
) -> Result<AttachedInterface, DataplaneError> {
    match program.attach(interface, mode) {
        Ok(link) => Ok(AttachedInterface {
            name: interface.to_owned(),
            mode: mode_name(mode),
            link,
        }),
        Err(ProgramError::UnknownInterface { name }) => {
            Err(DataplaneError::NoSuchInterface { interface: name })
        }
        Err(error) => Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            mode: mode_name(mode),
            reason: explain_attach_error(interface, mode, &error),
        }),
    }
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
            let mtu = std::fs::read_to_string(format!("/sys/class/net/{interface}/mtu"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned());
            format!(
                "the MTU of {interface} ({mtu}) is larger than a native-XDP frame can hold \
                 (one page: about 3500 bytes of MTU on veth); lower the MTU or use \
                 --xdp-mode generic"
            )
        }
        (_, Some(libc::EBUSY)) | (_, Some(libc::EEXIST)) => format!(
            "another XDP program is already attached to {interface} ({error}); detach it \
             first (`ip link set dev {interface} xdp off`)"
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
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(code) = io.raw_os_error() {
                return Some(code);
            }
        }
        source = e.source();
    }
    None
}

/// Detaches one attachment.
pub(super) fn detach(program: &mut Xdp, attached: AttachedInterface) -> Result<(), DataplaneError> {
    program
        .detach(attached.link)
        .map_err(|source| DataplaneError::Program {
            operation: "detach the XDP program",
            source,
        })
}
