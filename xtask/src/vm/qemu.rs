//! QEMU: which accelerator works here, and one boot of a kernel with an
//! initramfs, its serial console echoed, logged and returned as lines.
//!
//! KVM is tried only when `/dev/kvm` opens and a tiny guest boots on it
//! within [`PROBE_TIMEOUT`]: on the project's machines `/dev/kvm` exists but
//! a nested KVM guest hangs at boot, and TCG (plain emulation) is the way.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::AccelChoice;
use super::kernel::Kernel;

/// What the probe guest prints when it has booted.
pub const PROBE_MARKER: &str = "VAULTFW-VM probe ok";
/// How long the KVM probe may take (a TCG boot takes about 3 s here).
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// The guest's size: the suite uses two CPUs (one test pins threads to each).
const MEMORY: &str = "2G";
const CPUS: &str = "2";
/// Serial console on ttyS0; a panic powers the VM off (with `-no-reboot`);
/// only kernel errors and worse interleave with the suite's output.
const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 loglevel=4";

/// How QEMU runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl Accel {
    fn args(self) -> [&'static str; 4] {
        match self {
            Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => ["-accel", "tcg", "-cpu", "max"],
        }
    }
}

/// The accelerator to use: as chosen, or for `auto` KVM if a probe guest
/// boots on it in time, else TCG.
pub fn choose_accel(choice: AccelChoice, kernel: &Kernel, probe: &Path) -> Result<Accel> {
    match choice {
        AccelChoice::Kvm => return Ok(Accel::Kvm),
        AccelChoice::Tcg => return Ok(Accel::Tcg),
        AccelChoice::Auto => {}
    }
    if let Err(err) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        println!("xtask: vm-test: accelerator: tcg (/dev/kvm: {err})");
        return Ok(Accel::Tcg);
    }
    let console = run(kernel, probe, Accel::Kvm, "512M", PROBE_TIMEOUT, None)?;
    if console.lines.iter().any(|l| l.contains(PROBE_MARKER)) {
        println!("xtask: vm-test: accelerator: kvm (a probe guest booted on it)");
        Ok(Accel::Kvm)
    } else {
        println!(
            "xtask: vm-test: accelerator: tcg (a probe guest did not boot on KVM within {} s; \
             nested KVM can hang)",
            PROBE_TIMEOUT.as_secs()
        );
        Ok(Accel::Tcg)
    }
}

/// What a boot printed on its serial console.
#[derive(Debug)]
pub struct Console {
    pub lines: Vec<String>,
    /// The VM did not power off in time and was killed.
    pub timed_out: bool,
}

/// Boot `kernel` with `initrd`, echoing the console (each line behind
/// `echo_prefix`, which tells guests running side by side apart) and
/// writing it to `log`, killing the VM after `timeout`.
pub fn boot(
    kernel: &Kernel,
    initrd: &Path,
    accel: Accel,
    timeout: Duration,
    log: &Path,
    echo_prefix: &str,
) -> Result<Console> {
    std::fs::create_dir_all(log.parent().expect("the log has a directory"))?;
    let mut file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    run(
        kernel,
        initrd,
        accel,
        MEMORY,
        timeout,
        Some((&mut file, echo_prefix)),
    )
}

fn run(
    kernel: &Kernel,
    initrd: &Path,
    accel: Accel,
    memory: &str,
    timeout: Duration,
    mut echo: Option<(&mut File, &str)>,
) -> Result<Console> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(accel.args())
        .args(["-m", memory, "-smp", CPUS])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", KERNEL_CMDLINE])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if tx.send(clean_line(&line)).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut lines = Vec::new();
    let mut timed_out = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some((file, prefix)) = echo.as_mut() {
                    println!("{prefix}{line}");
                    writeln!(file, "{line}")?;
                }
                lines.push(line);
            }
            Err(RecvTimeoutError::Timeout) => {
                timed_out = true;
                let _ = child.kill();
                break;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    child.wait().context("waiting for qemu")?;
    Ok(Console { lines, timed_out })
}

/// A console line as text: lossy UTF-8 without terminal escape sequences
/// (the firmware clears the screen) or control characters.
fn clean_line(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                // CSI: parameters up to a final byte in '@'..='~'.
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_lose_escape_sequences_and_carriage_returns() {
        assert_eq!(
            clean_line(b"\x1bc\x1b[?7l\x1b[2JVAULTFW-VM kernel release=6.1\r"),
            "VAULTFW-VM kernel release=6.1"
        );
        assert_eq!(clean_line(b"test a ... ok\r"), "test a ... ok");
        assert_eq!(clean_line(b"a\tb"), "a\tb");
    }
}
