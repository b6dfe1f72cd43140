//! Real traffic between namespaces: TCP servers that greet and hang up, a TCP
//! client that binds its source address, UDP senders of exactly N datagrams,
//! and UDP receivers that count. Sockets are created inside a namespace with
//! [`in_netns`] and then used from ordinary threads.
//!
//! The client's connect timeout defaults to [`CONNECT_TIMEOUT`] (800 ms):
//! shorter than the kernel's first SYN retransmission (1 s), so a denied
//! attempt sends exactly one SYN, and a denied test stays quick.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::{NetNs, in_netns};

/// Default TCP connect timeout: below the kernel's 1 s initial SYN
/// retransmission timeout, so a dropped attempt is exactly one SYN, and long
/// enough that an allowed handshake completes on a loaded machine.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// How often server threads look at their stop flag.
const POLL_MS: i32 = 50;

/// What a TCP connection attempt came to.
#[derive(Debug)]
pub enum Connect {
    /// The handshake completed; `greeting` is what the server sent (empty if
    /// it sent nothing before the read timeout).
    Established { greeting: String },
    /// No answer within the timeout: the SYN was dropped.
    TimedOut,
    /// RST: nothing listens on the port.
    Refused,
    /// Anything else.
    Failed(io::Error),
}

impl Connect {
    /// Whether the handshake completed.
    pub fn is_established(&self) -> bool {
        matches!(self, Connect::Established { .. })
    }
}

/// Connect from `src` (bound before connecting) in `ns` to `dst`, within
/// `timeout`; after the handshake, read the server's greeting.
pub fn connect(ns: &NetNs, src: Ipv4Addr, dst: SocketAddrV4, timeout: Duration) -> Connect {
    in_netns(ns, || {
        let socket = match Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) {
            Ok(s) => s,
            Err(err) => return Connect::Failed(err),
        };
        if let Err(err) = socket.bind(&SocketAddr::from(SocketAddrV4::new(src, 0)).into()) {
            return Connect::Failed(err);
        }
        match socket.connect_timeout(&SocketAddr::from(dst).into(), timeout) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::TimedOut => return Connect::TimedOut,
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => return Connect::Refused,
            Err(err) => return Connect::Failed(err),
        }
        let mut stream: std::net::TcpStream = socket.into();
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut greeting = String::new();
        let _ = stream.read_to_string(&mut greeting);
        Connect::Established { greeting }
    })
}

/// [`connect`] reduced to "did the handshake complete".
pub fn connect_from(ns: &NetNs, src: Ipv4Addr, dst: SocketAddrV4, timeout: Duration) -> bool {
    connect(ns, src, dst, timeout).is_established()
}

/// A TCP server in a namespace: accepts, writes `vaultfw-test <port>\n`, and
/// closes; runs until dropped.
pub struct TcpServer {
    addr: SocketAddrV4,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listen on `addr` inside `ns`; returns once the socket is listening.
    pub fn start(ns: &NetNs, addr: SocketAddrV4) -> Self {
        let listener = in_netns(ns, || {
            TcpListener::bind(addr).unwrap_or_else(|err| panic!("listening on {addr}: {err}"))
        });
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("tcp-server-{}", addr.port()))
                .spawn(move || serve_greetings(listener, addr.port(), &accepted, &stop))
                .expect("spawning a server thread")
        };
        TcpServer {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn serve_greetings(listener: TcpListener, port: u16, accepted: &AtomicUsize, stop: &AtomicBool) {
    use std::io::Write;
    while !stop.load(Ordering::SeqCst) {
        if !readable(listener.as_raw_fd()) {
            continue;
        }
        match listener.accept() {
            Ok((mut stream, _)) => {
                accepted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nonblocking(false);
                let _ = stream.write_all(format!("vaultfw-test {port}\n").as_bytes());
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => eprintln!("tcp server on port {port}: accept: {err}"),
        }
    }
}

/// Wait up to [`POLL_MS`] for `fd` to become readable.
fn readable(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let n = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
    n > 0 && pfd.revents & libc::POLLIN != 0
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Send exactly `count` UDP datagrams from `src` in `ns` to `dst`.
pub fn send_udp(ns: &NetNs, src: Ipv4Addr, dst: SocketAddrV4, count: usize) {
    in_netns(ns, || {
        let socket = UdpSocket::bind(SocketAddrV4::new(src, 0))
            .unwrap_or_else(|err| panic!("binding UDP to {src}: {err}"));
        for i in 0..count {
            let payload = format!("vaultfw-test {i}");
            let sent = socket
                .send_to(payload.as_bytes(), dst)
                .unwrap_or_else(|err| panic!("UDP {src} -> {dst} #{i}: {err}"));
            assert_eq!(sent, payload.len(), "short UDP send");
        }
    });
}

/// A UDP socket in a namespace that counts the datagrams it receives;
/// runs until dropped.
pub struct UdpReceiver {
    addr: SocketAddrV4,
    count: Arc<(Mutex<usize>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpReceiver {
    /// Bind `addr` inside `ns`; returns once bound.
    pub fn start(ns: &NetNs, addr: SocketAddrV4) -> Self {
        let socket = in_netns(ns, || {
            UdpSocket::bind(addr).unwrap_or_else(|err| panic!("binding UDP {addr}: {err}"))
        });
        socket
            .set_read_timeout(Some(Duration::from_millis(POLL_MS as u64)))
            .expect("UDP read timeout");
        let count = Arc::new((Mutex::new(0usize), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (count, stop) = (count.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("udp-recv-{}", addr.port()))
                .spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::SeqCst) {
                        if socket.recv_from(&mut buf).is_ok() {
                            let (n, changed) = &*count;
                            *n.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                            changed.notify_all();
                        }
                    }
                })
                .expect("spawning a UDP receiver thread")
        };
        UdpReceiver {
            addr,
            count,
            stop,
            thread: Some(thread),
        }
    }

    /// The address it is bound to.
    pub fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    /// Datagrams received so far.
    pub fn count(&self) -> usize {
        *self.count.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait until at least `n` datagrams have arrived, or `timeout`; returns
    /// the count at that moment.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> usize {
        let (count, changed) = &*self.count;
        let deadline = Instant::now() + timeout;
        let mut guard = count.lock().unwrap_or_else(PoisonError::into_inner);
        while *guard < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            guard = changed
                .wait_timeout(guard, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *guard
    }
}

impl Drop for UdpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET path` over HTTP/1.0 on `addr` (e.g. the agent's metrics address),
/// from inside `ns` (the agent's loopback is that namespace's); the whole
/// answer, status line and headers included.
pub fn http_get(ns: &NetNs, addr: &str, path: &str) -> String {
    use std::io::Write;
    let addr = addr.to_owned();
    let path = path.to_owned();
    in_netns(ns, move || {
        let mut stream = std::net::TcpStream::connect(&addr)
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("sending the request");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("reading the answer");
        answer
    })
}
