//! The control plane of the agent itself: a root-only Unix socket through
//! which the CLI asks the running daemon to show, count, and change the
//! policy. One JSON request per line, one JSON response per line; the
//! daemon handles requests one at a time, so concurrent CLI calls are
//! serialized and each gets a definite answer.
//!
//! Layout: `protocol` (the versioned requests and the response envelope),
//! `replies` (the typed result of each command, shared by daemon and CLI),
//! `server` (listening and handing requests to the daemon loop), `client`
//! (what the CLI uses).

pub mod client;
pub mod protocol;
pub mod replies;
pub mod server;
