//! Listening on the control socket. Each connection carries one request;
//! the request goes to the daemon loop through a channel with a reply slot,
//! so requests are handled strictly one at a time by the code that owns the
//! dataplane.
//!
//! Clients cannot starve it: a connection has [`READ_DEADLINE`] to send its
//! whole request and [`WRITE_DEADLINE`] to take the answer; at most
//! [`MAX_CONNECTIONS`] are served at once, and one more is answered at once
//! with an error and closed (never held open). When accepting fails — out
//! of file descriptors (EMFILE/ENFILE) — the loop waits before it tries
//! again, from [`ACCEPT_BACKOFF_MIN`] doubling to [`ACCEPT_BACKOFF_MAX`],
//! and logs one line per [`ACCEPT_LOG_EVERY`] at most, with the number of
//! failures it did not log.
//!
//! Each request carries its client's credentials (`SO_PEERCRED`: uid, gid,
//! pid, and the command name read at once), for the audit trail.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::protocol::{Command, ErrorKind, MAX_REQUEST_BYTES, Response, parse_request};
use crate::telemetry::audit::Caller;

/// A request waiting for the daemon: the command, the slot for its answer,
/// and a signal that fires once the answer was written to the client (so
/// a daemon that stops after answering — `detach` — does not exit before
/// the client has its answer).
pub struct Pending {
    /// What was asked.
    pub command: Command,
    /// Who asked: the client's credentials.
    pub caller: Caller,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
    /// Resolves when the answer has been written (or the client is gone).
    pub delivered: oneshot::Receiver<()>,
}

/// Connections served at once (the CLI opens one per command).
pub const MAX_CONNECTIONS: usize = 64;
/// Time a connection has, from its accept, to send its whole request line.
pub const READ_DEADLINE: Duration = Duration::from_secs(5);
/// Time a connection has to take its answer.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// First wait after a failed accept.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait after failed accepts in a row.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per this long about failed or refused connections.
pub const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(5);

/// Errors setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon answers on the socket.
    #[error(
        "another vaultfw daemon is listening on {0}; stop it first, or give this one its own \
         --socket and --pin-dir"
    )]
    InUse(PathBuf),
    /// The socket's path may not be written by this user.
    #[error(
        "cannot {operation} {path}: {source}; vaultfw run needs root (or CAP_BPF, \
         CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN, with a --socket path this user may \
         create)"
    )]
    PermissionDenied {
        /// What was being done.
        operation: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A filesystem or socket operation failed.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the control socket at `path`: the parent directory is created with
/// mode 0700, a stale socket file (nobody listening) is replaced, and the
/// socket gets mode 0600 (root only).
pub async fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let io = |operation, source: std::io::Error| match source.kind() {
        std::io::ErrorKind::PermissionDenied => ServerError::PermissionDenied {
            operation,
            path: path.to_path_buf(),
            source,
        },
        _ => ServerError::Io {
            operation,
            path: path.to_path_buf(),
            source,
        },
    };
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|e| io("create the directory of", e))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServerError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| io("remove the stale socket", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io("listen on", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("restrict the permissions of", e))?;
    Ok(listener)
}

/// The bound socket's file, removed when dropped (a stale socket would
/// make the CLI wait on nobody and the next daemon replace it anyway).
pub struct SocketFile(pub PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Accepts connections forever, forwarding each request to `requests`.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut accept_failures = Throttle::new(ACCEPT_LOG_EVERY);
    let mut refusals = Throttle::new(ACCEPT_LOG_EVERY);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    refuse_busy(&stream);
                    if let Some(suppressed) = refusals.allow() {
                        tracing::warn!(
                            limit = MAX_CONNECTIONS,
                            suppressed,
                            "refused a control connection: {MAX_CONNECTIONS} are open already \
                             (each has {}s to send its request); is a client opening connections \
                             and not using them?",
                            READ_DEADLINE.as_secs()
                        );
                    }
                    continue;
                };
                let requests = requests.clone();
                tokio::spawn(async move {
                    if let Err(error) = handle(stream, requests).await {
                        tracing::debug!(%error, "control connection failed");
                    }
                    drop(slot);
                });
            }
            Err(error) => {
                if let Some(suppressed) = accept_failures.allow() {
                    let hint = match error.raw_os_error() {
                        Some(libc::EMFILE) => {
                            "; the process is out of file descriptors (raise LimitNOFILE)"
                        }
                        Some(libc::ENFILE) => {
                            "; the system is out of file descriptors (fs.file-max)"
                        }
                        _ => "",
                    };
                    tracing::warn!(
                        %error,
                        suppressed,
                        retry_in_ms = backoff.as_millis() as u64,
                        "accepting a control connection failed{hint}; retrying after a pause \
                         (at most one such line every {}s; `suppressed` counts the others)",
                        ACCEPT_LOG_EVERY.as_secs()
                    );
                }
                // The connection stays queued in the kernel: trying again at
                // once would fail again at once (a busy loop).
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// The answer to a connection over [`MAX_CONNECTIONS`].
fn busy_response() -> Response {
    Response::error(
        ErrorKind::Internal,
        format!("too many concurrent control connections ({MAX_CONNECTIONS}); retry"),
    )
}

/// Answers a connection over the limit and lets it go (the caller drops
/// it). The answer is one small line into an empty socket buffer: it is
/// written without waiting, or not at all.
fn refuse_busy(stream: &UnixStream) {
    if let Ok(mut line) = serde_json::to_vec(&busy_response()) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

/// Lets one event through per interval and counts the ones it held back.
struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events held back since the last one let through)` when this
    /// one may be logged.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

async fn handle(stream: UnixStream, requests: mpsc::Sender<Pending>) -> std::io::Result<()> {
    // Read at accept: the client may be gone by the time it is answered.
    let caller = match stream.peer_cred() {
        Ok(cred) => Caller::peer(cred.uid(), cred.gid(), cred.pid()),
        Err(_) => Caller::UnknownPeer,
    };
    let (reader, mut writer) = stream.into_split();
    // Dropped (firing the daemon's `delivered`) when this function returns.
    let mut delivered_guard: Option<oneshot::Sender<()>> = None;
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(reader, MAX_REQUEST_BYTES));
    let read = tokio::time::timeout(READ_DEADLINE, reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => Some(Response::error(
            ErrorKind::InvalidInput,
            format!(
                "no complete request within {}s of connecting (a request is one line of JSON); \
                 the connection is closed",
                READ_DEADLINE.as_secs()
            ),
        )),
        Ok(Err(error)) => return Err(error),
        // Nothing sent before the end: nobody to answer.
        Ok(Ok(0)) => return Ok(()),
        Ok(Ok(_)) => None,
    };
    let response = match response {
        Some(response) => response,
        None => match parse_request(&line) {
            Err(refused) => refused,
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                let (delivered_tx, delivered) = oneshot::channel();
                delivered_guard = Some(delivered_tx);
                let pending = Pending {
                    command: request.command,
                    caller,
                    reply,
                    delivered,
                };
                if requests.send(pending).await.is_err() {
                    Response::error(ErrorKind::Internal, "the daemon is shutting down")
                } else {
                    answer.await.unwrap_or_else(|_| {
                        Response::error(ErrorKind::Internal, "the daemon dropped the request")
                    })
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    let written = tokio::time::timeout(WRITE_DEADLINE, async {
        writer.write_all(&out).await?;
        writer.shutdown().await
    })
    .await;
    drop(delivered_guard);
    written.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the client did not take its answer within {}s",
                WRITE_DEADLINE.as_secs()
            ),
        ))
    })
}
