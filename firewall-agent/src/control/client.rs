//! The CLI's side of the control socket: one request, one response.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Command, MAX_REQUEST_BYTES, Request, Response};

/// How long the CLI waits for the daemon's answer (an apply of a large
/// policy takes well under this).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error(
        "the vaultfw daemon is not running (no one listens on {path}: {source}); start it with \
         `vaultfw run`, or pass --socket if it uses another path"
    )]
    NotRunning {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The socket exists but only root may use it.
    #[error("permission denied on {0}: the control socket is root-only; run as root (sudo)")]
    PermissionDenied(PathBuf),
    /// The request is larger than the daemon reads.
    #[error(
        "the request is {bytes} bytes, more than the {max} bytes the daemon reads; nothing was \
         sent (split the policy, or check that it is the right file)"
    )]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// [`MAX_REQUEST_BYTES`].
        max: u64,
    },
    /// The exchange failed midway.
    #[error("talking to the daemon on {path} failed: {message}")]
    Exchange {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Sends `command` to the daemon listening on `socket` and returns its
/// response.
pub fn send(socket: &Path, command: Command) -> Result<Response, ClientError> {
    let request = Request {
        version: command.version(),
        command,
    };
    let mut line = serde_json::to_vec(&request).map_err(|e| ClientError::Exchange {
        path: socket.into(),
        message: e.to_string(),
    })?;
    line.push(b'\n');
    if line.len() as u64 > MAX_REQUEST_BYTES {
        return Err(ClientError::TooLarge {
            bytes: line.len(),
            max: MAX_REQUEST_BYTES,
        });
    }
    let mut stream = UnixStream::connect(socket).map_err(|source| match source.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::PermissionDenied(socket.into()),
        _ => ClientError::NotRunning {
            path: socket.into(),
            source,
        },
    })?;
    let exchange = |message: String| ClientError::Exchange {
        path: socket.into(),
        message,
    };
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| exchange(e.to_string()))?;
    stream
        .write_all(&line)
        .map_err(|e| exchange(e.to_string()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| exchange(e.to_string()))?;
    serde_json::from_str(&answer)
        .map_err(|e| exchange(format!("unreadable answer ({e}): {answer:?}")))
}
