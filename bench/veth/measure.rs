//! The flood and what it costs: trafgen in the client namespace sends
//! 64-byte TCP SYNs from random sources as fast as it can; each window
//! reads the packets the client veth handed to the receiver and the
//! softirq time of every CPU (/proc/stat), which is where the receiving
//! namespace's whole path runs on veth (the sender's `dev_direct_xmit`
//! raises NET_RX and runs it on the sender's CPU at `local_bh_enable`).

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vaultfw_tests::{NetNs, in_netns};

/// One measurement window.
#[derive(Clone, Debug)]
pub struct Window {
    pub seconds: f64,
    pub packets: u64,
    /// Softirq nanoseconds over all CPUs.
    pub softirq_ns: u64,
    /// Agent CPU (user + system) nanoseconds, when an agent is watched.
    pub agent_cpu_ns: Option<u64>,
    pub agent_rss_kib: Option<u64>,
}

impl Window {
    pub fn ns_per_packet(&self) -> f64 {
        self.softirq_ns as f64 / self.packets.max(1) as f64
    }
    pub fn mpps(&self) -> f64 {
        self.packets as f64 / self.seconds / 1e6
    }
}

/// Clock ticks per second of /proc/stat and /proc/PID/stat.
fn user_hz() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Softirq time of all CPUs, ns.
fn softirq_ns() -> u64 {
    let stat = fs::read_to_string("/proc/stat").expect("reading /proc/stat");
    let line = stat.lines().next().expect("/proc/stat has a cpu line");
    // cpu user nice system idle iowait irq softirq ...
    let ticks: u64 = line
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .expect("softirq field of /proc/stat");
    ticks * 1_000_000_000 / user_hz()
}

/// (user + system ns, VmRSS KiB) of `pid`.
pub fn process_usage(pid: u32) -> (u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("reading /proc/PID/stat");
    // The command name may hold spaces: fields count from after ')'.
    let after = &stat[stat.rfind(')').expect("comm ends with )") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime is field 14 of stat, i.e. index 11 after the comm.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).expect("reading /proc/PID/status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (ticks * 1_000_000_000 / user_hz(), rss)
}

/// tx_packets of `dev` in `ns` (from the namespace's /proc/net/dev).
pub fn tx_packets(ns: &NetNs, dev: &str) -> u64 {
    let dev = dev.to_owned();
    in_netns(ns, move || {
        let text = fs::read_to_string("/proc/thread-self/net/dev").expect("reading net/dev");
        text.lines()
            .find_map(|l| {
                let (name, rest) = l.split_once(':')?;
                (name.trim() == dev).then(|| {
                    // rx: 8 fields, then tx packets is the 10th value.
                    rest.split_whitespace().nth(9)?.parse::<u64>().ok()
                })?
            })
            .unwrap_or_else(|| panic!("no {dev} in /proc/net/dev"))
    })
}

/// The trafgen packet: Ethernet to `dst_mac`, IPv4 from a random source to
/// 192.0.2.1, TCP SYN from a random port to 443; 60 bytes (64 on a wire).
pub fn trafgen_config(src_mac: [u8; 6], dst_mac: [u8; 6]) -> String {
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("0x{b:02x}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{{\n  {}, {}, c16(0x0800),\n  \
         0x45, 0x00, c16(40), drnd(2), c16(0x4000), 64, 6, csumip(14, 33),\n  \
         drnd(4), 192, 0, 2, 1,\n  \
         drnd(2), c16(443), drnd(4), c32(0), 0x50, 0x02, c16(64240), csumtcp(14, 34), c16(0),\n  \
         fill(0x00, 6)\n}}\n",
        mac(dst_mac),
        mac(src_mac)
    )
}

/// A running trafgen; stopped (SIGINT, then SIGKILL) on drop. (On Ctrl-C
/// the harness's cleanup kills every process in the client namespace.)
pub struct Flood {
    child: Option<Child>,
}

impl Flood {
    /// `trafgen` on `dev` in `ns`, one process, no global sysctl or IRQ
    /// changes (`--no-sock-mem --notouch-irq`).
    pub fn start(ns: &NetNs, dev: &str, config: &Path) -> Flood {
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "trafgen"])
            .args([
                "--no-sock-mem",
                "--notouch-irq",
                "--no-cpu-stats",
                "--cpus",
                "1",
            ])
            .args(["--dev", dev, "--conf"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("starting trafgen (is netsniff-ng installed?)");
        Flood { child: Some(child) }
    }

    /// Fails if trafgen has already exited.
    pub fn check_running(&mut self) {
        let child = self.child.as_mut().expect("running");
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("trafgen exited early ({status}): {err}");
        }
    }
}

use std::os::unix::process::CommandExt;

impl Drop for Flood {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        let _ = kill(Pid::from_raw(-pid), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        let _ = child.wait();
    }
}

/// Floods for `warmup` then takes `runs` windows of `seconds` each.
pub fn flood_windows(
    client: &NetNs,
    client_dev: &str,
    config: &Path,
    agent: Option<u32>,
    seconds: f64,
    runs: usize,
) -> Vec<Window> {
    let mut flood = Flood::start(client, client_dev, config);
    std::thread::sleep(Duration::from_millis(700));
    flood.check_running();
    let windows = (0..runs)
        .map(|_| window(client, client_dev, agent, seconds))
        .collect();
    flood.check_running();
    windows
}

/// One window of `seconds` (with or without a flood running).
pub fn window(client: &NetNs, client_dev: &str, agent: Option<u32>, seconds: f64) -> Window {
    let p0 = tx_packets(client, client_dev);
    let s0 = softirq_ns();
    let a0 = agent.map(process_usage);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let p1 = tx_packets(client, client_dev);
    let s1 = softirq_ns();
    let a1 = agent.map(process_usage);
    let elapsed = t0.elapsed().as_secs_f64();
    Window {
        seconds: elapsed,
        packets: p1 - p0,
        softirq_ns: s1 - s0,
        agent_cpu_ns: a0.zip(a1).map(|(a, b)| b.0 - a.0),
        agent_rss_kib: a1.map(|a| a.1),
    }
}
