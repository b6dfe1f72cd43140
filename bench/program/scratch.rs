//! A scratch network namespace with veth pairs, only to keep each program
//! under test attached to an interface for the whole bench.
//!
//! Why: BPF_PROG_TEST_RUN with `repeat > 1` adds the program to the kernel's
//! XDP dispatcher and removes it again, and each change waits for an RCU
//! grace period (~25 ms here): every call costs ~50 ms of wall time unless
//! the program is already in the dispatcher. A program attached to an
//! interface is, and the test run then calls it exactly as a driver does
//! (direct call through the dispatcher). No traffic is sent; the namespace
//! and everything in it is deleted on drop.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::Command;

use anyhow::{Context, Result, bail};
use nix::sched::{CloneFlags, setns};

const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// The scratch namespace; interfaces `a0 b0 a1 b1 ...` inside.
pub struct Scratch {
    name: String,
    free: Vec<String>,
}

/// An XDP link: the program stays attached until this is dropped.
pub struct Attached {
    _link: OwnedFd,
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Scratch {
    /// A namespace `vfwbench-<pid>-<tag>` with `pairs` veth pairs.
    pub fn new(tag: &str, pairs: usize) -> Result<Scratch> {
        let name = format!("vfwbench-{}-{tag}", std::process::id());
        ip(&["netns", "add", &name])?;
        // Quiet interfaces: no IPv6 (no router solicitations or MLD), so
        // the attached programs see no frame but the test runs.
        for key in ["all", "default"] {
            let out = Command::new("ip")
                .args(["netns", "exec", &name, "sysctl", "-qw"])
                .arg(format!("net.ipv6.conf.{key}.disable_ipv6=1"))
                .output();
            if !out.is_ok_and(|o| o.status.success()) {
                eprintln!("warning: could not disable IPv6 in {name}");
            }
        }
        let mut scratch = Scratch {
            name,
            free: Vec::new(),
        };
        for i in 0..pairs {
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            ip(&[
                "-n",
                &scratch.name,
                "link",
                "add",
                &a,
                "type",
                "veth",
                "peer",
                "name",
                &b,
            ])?;
            for dev in [&a, &b] {
                ip(&["-n", &scratch.name, "link", "set", dev, "up"])?;
            }
            scratch.free.extend([a, b]);
        }
        Ok(scratch)
    }

    /// Attaches `prog` (native XDP) to the next free interface.
    pub fn attach(&mut self, prog: BorrowedFd<'_>) -> Result<Attached> {
        let dev = self.free.pop().context("no free scratch interface left")?;
        let ns = File::open(format!("/run/netns/{}", self.name)).context("opening the netns")?;
        let prog = prog.as_raw_fd();
        // setns on a helper thread only: the ifindex is resolved in the
        // caller's namespace; the link fd is process-wide.
        let link = std::thread::scope(|s| {
            s.spawn(|| -> Result<OwnedFd> {
                setns(&ns, CloneFlags::CLONE_NEWNET).context("setns into the scratch netns")?;
                let ifindex = nix::net::if_::if_nametoindex(dev.as_str())
                    .with_context(|| format!("no interface {dev}"))?;
                link_create(prog, ifindex)
            })
            .join()
            .expect("attach thread panicked")
        })?;
        Ok(Attached { _link: link })
    }
}

fn link_create(prog_fd: i32, ifindex: u32) -> Result<OwnedFd> {
    // union bpf_attr's link_create: prog_fd, target_ifindex, attach_type,
    // flags, then fields we leave zero.
    let mut attr = [0u32; 16];
    attr[0] = prog_fd as u32;
    attr[1] = ifindex;
    attr[2] = BPF_XDP;
    attr[3] = XDP_FLAGS_DRV_MODE;
    // SAFETY: a zeroed bpf_attr prefix of the size passed; the kernel
    // returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as u32,
        )
    };
    if fd < 0 {
        bail!(
            "BPF_LINK_CREATE (XDP, native): {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: the kernel just returned this fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(err) = ip(&["netns", "delete", &self.name]) {
            eprintln!("warning: deleting the scratch namespace: {err:#}");
        }
    }
}
