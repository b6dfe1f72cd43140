//! What the tcpdump test needs: two network namespaces joined by a veth
//! pair (removed on drop), tcpdump on one end (stopped on drop), and TCP
//! SYNs sent from the other namespace with a chosen source address. The
//! traffic stays between the two namespaces.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Two namespaces joined by a veth pair, removed on drop (deleting a
/// namespace deletes its end of the pair, and so the pair).
pub struct Veth {
    /// The client namespace.
    pub client: String,
    /// The host namespace.
    pub host: String,
    /// The host end of the pair.
    pub host_if: String,
}

impl Veth {
    /// Creates the namespaces and the pair: client 203.0.113.10 and .20,
    /// host 203.0.113.1, all /24.
    pub fn new() -> Veth {
        let id = std::process::id() % 100_000;
        let veth = Veth {
            client: format!("vfwchk-c-{id}"),
            host: format!("vfwchk-h-{id}"),
            host_if: format!("vfwh{id}"),
        };
        let client_if = format!("vfwc{id}");
        ip(&["netns", "add", &veth.client]);
        ip(&["netns", "add", &veth.host]);
        ip(&[
            "link",
            "add",
            &client_if,
            "netns",
            &veth.client,
            "type",
            "veth",
            "peer",
            "name",
            &veth.host_if,
            "netns",
            &veth.host,
        ]);
        for (ns, dev, addrs) in [
            (
                &veth.client,
                &client_if,
                &["203.0.113.10/24", "203.0.113.20/24"][..],
            ),
            (&veth.host, &veth.host_if, &["203.0.113.1/24"][..]),
        ] {
            for addr in addrs {
                ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            }
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        veth
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        for ns in [&self.client, &self.host] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// tcpdump, stopped (and its file flushed) on drop.
pub struct Tcpdump(Child);

impl Tcpdump {
    /// Starts tcpdump in `ns` on `iface` (incoming frames only, each
    /// written as it arrives: without immediate mode, frames still in the
    /// capture ring when tcpdump stops are lost) and waits until it listens.
    pub fn start(ns: &str, iface: &str, file: &Path) -> Tcpdump {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-i",
                iface,
                "-Q",
                "in",
                "--immediate-mode",
                "-U",
                "-n",
                "-w",
            ])
            .arg(file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tcpdump");
        // tcpdump says "listening on IFACE" on stderr once the capture runs.
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!("tcpdump did not start listening within 10s");
                }
            }
        }
        Tcpdump(child)
    }

    /// Stops tcpdump; the file is complete afterwards.
    pub fn stop(mut self) {
        self.interrupt();
    }

    fn interrupt(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        // `ip netns exec` execs tcpdump, so the pid is tcpdump's own.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let _ = self.0.wait();
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.interrupt();
        }
    }
}

/// Sends a TCP SYN from `src` to `dst:port` inside network namespace `ns`
/// (a refused or unanswered connect is fine: only the SYN matters).
pub fn connect_from(ns: &str, src: [u8; 4], dst: [u8; 4], port: u16) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        let netns = std::fs::File::open(format!("/run/netns/{ns}")).expect("open the namespace");
        // Only this thread enters the namespace.
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .expect("socket");
        use std::os::fd::AsRawFd;
        bind(
            fd.as_raw_fd(),
            &SockaddrIn::new(src[0], src[1], src[2], src[3], 0),
        )
        .expect("bind the source");
        let _ = connect(
            fd.as_raw_fd(),
            &SockaddrIn::new(dst[0], dst[1], dst[2], dst[3], port),
        );
        // Let the SYN (and the ARP exchange before it) leave.
        std::thread::sleep(Duration::from_millis(300));
    })
    .join()
    .expect("the connect thread");
}
