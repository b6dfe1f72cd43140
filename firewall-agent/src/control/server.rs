//! Listening on the control socket. Each connection carries one request;
//! the request goes to the daemon loop through a channel with a reply slot,
//! so requests are handled strictly one at a time by the code that owns the
//! dataplane.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::protocol::{Command, ErrorKind, MAX_REQUEST_BYTES, Response, parse_request};

/// A request waiting for the daemon: the command, the slot for its answer,
/// and a signal that fires once the answer was written to the client (so
/// a daemon that stops after answering — `detach` — does not exit before
/// the client has its answer).
pub struct Pending {
    /// What was asked.
    pub command: Command,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
    /// Resolves when the answer has been written (or the client is gone).
    pub delivered: oneshot::Receiver<()>,
}

/// Errors setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another daemon answers on the socket.
    #[error(
        "another vaultfw daemon is listening on {0}; stop it first, or give this one its own \
         --socket and --pin-dir"
    )]
    InUse(PathBuf),
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
    let io = |operation, source| ServerError::Io {
        operation,
        path: path.to_path_buf(),
        source,
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
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let requests = requests.clone();
                tokio::spawn(async move {
                    if let Err(error) = handle(stream, requests).await {
                        tracing::debug!(%error, "control connection failed");
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "accepting a control connection failed"),
        }
    }
}

async fn handle(stream: UnixStream, requests: mpsc::Sender<Pending>) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    // Dropped (firing the daemon's `delivered`) when this function returns.
    let mut delivered_guard: Option<oneshot::Sender<()>> = None;
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(reader, MAX_REQUEST_BYTES));
    reader.read_line(&mut line).await?;
    let response = match parse_request(&line) {
        Err(refused) => refused,
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            let (delivered_tx, delivered) = oneshot::channel();
            delivered_guard = Some(delivered_tx);
            let pending = Pending {
                command: request.command,
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
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    writer.write_all(&out).await?;
    let result = writer.shutdown().await;
    drop(delivered_guard);
    result
}
