//! The log files the agent appends records to (`--access-log`,
//! `--audit-log`), handled so that nothing else is ever written through
//! them and they never hold half a record.
//!
//! It is opened with `O_NOFOLLOW` (a link at its path is refused: one
//! planted there would make the agent append to any file) and created with
//! mode [`FILE_MODE`]. Each record is one `write(2)` of the whole line; a
//! write that fails or is short (a full disk) is taken back with
//! `ftruncate` to the file's length before it, so the file never holds a
//! partial line. The record is kept and written, in order, before the next
//! one ([`UNWRITTEN_MAX`] at most; older ones are then counted as lost).
//! vaultfw must be the file's only writer.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Records held for the file while writes to it fail (a full disk); the
/// oldest go beyond this, counted in [`FileHealth::lost`].
pub const UNWRITTEN_MAX: usize = 1_000;

/// Which log file a [`FileSink`] writes: the option that names it and
/// what messages call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogFileKind {
    /// The command-line option that gives its path (`--access-log`).
    pub option: &'static str,
    /// What messages call it (`access log`).
    pub name: &'static str,
}

/// The `--access-log` file.
pub const ACCESS_LOG: LogFileKind = LogFileKind {
    option: "--access-log",
    name: "access log",
};

/// The `--audit-log` file.
pub const AUDIT_LOG: LogFileKind = LogFileKind {
    option: "--audit-log",
    name: "audit log",
};

/// Mode of a log file the agent creates: the owner writes, a log
/// reader group reads, nobody else.
pub const FILE_MODE: u32 = 0o640;

/// A log file and what could not be written to it yet.
#[derive(Debug)]
pub struct FileSink {
    kind: LogFileKind,
    path: PathBuf,
    file: File,
    /// Whole lines not written yet, oldest first.
    unwritten: VecDeque<Vec<u8>>,
    /// A length the file must be cut back to before anything else is
    /// written (a partial record whose removal failed).
    truncate_to: Option<u64>,
    health: FileHealth,
    /// What was last logged about the file's health.
    reported: FileHealth,
    last_error: Option<String>,
}

/// How writing a log file goes (counted since the agent started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileHealth {
    /// Writes of a record that failed or were short (each undone).
    pub failed_writes: u64,
    /// Records waiting to be written.
    pub pending: u64,
    /// Records never written: more than [`UNWRITTEN_MAX`] were waiting.
    pub lost: u64,
}

impl FileSink {
    /// Opens `path` ([`open_append`]) with nothing held back.
    pub fn open(kind: LogFileKind, path: &Path) -> io::Result<Self> {
        Ok(FileSink {
            kind,
            path: path.to_path_buf(),
            file: open_append(kind, path)?,
            unwritten: VecDeque::new(),
            truncate_to: None,
            health: FileHealth::default(),
            reported: FileHealth::default(),
            last_error: None,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How writing the file goes.
    pub fn health(&self) -> FileHealth {
        self.health
    }

    /// Opens the file again at its path (after logrotate moved it away);
    /// keeps the old handle when that fails.
    pub fn reopen(&mut self) {
        let name = self.kind.name;
        match open_append(self.kind, &self.path) {
            Ok(new) => {
                self.file = new;
                // A partial record to cut belongs to the old file.
                self.truncate_to = None;
                tracing::info!(file.path = %self.path.display(), "{name} reopened");
                self.flush();
            }
            Err(error) => {
                tracing::error!(%error, file.path = %self.path.display(), "cannot reopen the {name}; still writing to the old file")
            }
        }
    }

    /// Queues `line` and writes every queued line that the file takes.
    pub fn push(&mut self, line: Vec<u8>) {
        self.unwritten.push_back(line);
        if self.unwritten.len() > UNWRITTEN_MAX {
            self.unwritten.pop_front();
            self.health.lost += 1;
        }
        self.flush();
    }

    /// Writes the queued lines, oldest first, until one fails.
    pub fn flush(&mut self) {
        while !self.unwritten.is_empty() {
            let written = self
                .cut_back()
                .and_then(|()| append_whole(&self.file, &self.unwritten[0]));
            match written {
                Ok(()) => {
                    self.unwritten.pop_front();
                }
                Err(WriteFailure { error, partial_at }) => {
                    self.health.failed_writes += 1;
                    self.truncate_to = partial_at;
                    self.last_error = Some(error.to_string());
                    break;
                }
            }
        }
        self.health.pending = self.unwritten.len() as u64;
    }

    /// Removes a partial record that an earlier attempt could not remove.
    fn cut_back(&mut self) -> Result<(), WriteFailure> {
        if let Some(len) = self.truncate_to {
            self.file.set_len(len).map_err(|error| WriteFailure {
                error,
                partial_at: Some(len),
            })?;
            self.truncate_to = None;
        }
        Ok(())
    }

    /// Logs how writing went since the last call, when something failed
    /// (the daemon calls it once per counter interval, so a full disk
    /// costs one line per interval, not one per record).
    pub fn report(&mut self) {
        let (now, before) = (self.health, self.reported);
        let name = self.kind.name;
        // docs/logging.md says what happens to the held records.
        if now.failed_writes > before.failed_writes || now.lost > before.lost {
            tracing::warn!(
                file.path = %self.path.display(),
                error.message = self.last_error.as_deref().unwrap_or(""),
                failed_writes = now.failed_writes,
                failed_writes_delta = now.failed_writes - before.failed_writes,
                records_pending = now.pending,
                records_lost = now.lost,
                "writing the {name} failed"
            );
        } else if before.pending > 0 && now.pending == 0 {
            tracing::info!(file.path = %self.path.display(), "{name} writable again; every held record was written");
        }
        self.reported = now;
    }
}

/// A write that did not put a whole record in the file.
#[derive(Debug)]
struct WriteFailure {
    error: io::Error,
    /// Set when part of the record stayed in the file: the length to cut
    /// it back to.
    partial_at: Option<u64>,
}

/// Appends `line` with one `write(2)`; when the write fails or is short,
/// cuts the file back to its length before it. Regular files only take
/// the cut; other files (`/dev/null`) are written as they are.
fn append_whole(file: &File, line: &[u8]) -> Result<(), WriteFailure> {
    let failure = |error| WriteFailure {
        error,
        partial_at: None,
    };
    let meta = file.metadata().map_err(failure)?;
    let before = meta.len();
    let written = loop {
        match (&*file).write(line) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    let error = match written {
        Ok(n) if n == line.len() => return Ok(()),
        Ok(n) => io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "short write: {n} of {} bytes (the disk is full?)",
                line.len()
            ),
        ),
        Err(error) => error,
    };
    if !meta.is_file() {
        return Err(failure(error));
    }
    // Whole records or nothing: take back what part of this one got in.
    match file.metadata() {
        Ok(now) if now.len() <= before => Err(failure(error)),
        _ => match file.set_len(before) {
            Ok(()) => Err(failure(error)),
            Err(cut) => Err(WriteFailure {
                error: io::Error::new(
                    error.kind(),
                    format!("{error}; cutting the partial record off failed too: {cut}"),
                ),
                partial_at: Some(before),
            }),
        },
    }
}

/// Opens the log file at `path` for appending, never through a
/// link: a missing file is created with mode [`FILE_MODE`]; an existing
/// regular file (or character device such as `/dev/null`) is used as it
/// is. A symbolic link, a directory, a FIFO or a socket at `path` is
/// refused with an error that names the path and the fix.
pub fn open_append(kind: LogFileKind, path: &Path) -> io::Result<File> {
    let options = |create: bool| {
        let mut options = OpenOptions::new();
        // O_NONBLOCK: a FIFO at the path fails the open instead of
        // blocking the agent; regular files ignore it.
        options
            .append(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
        if create {
            options.create_new(true).mode(FILE_MODE);
        }
        options
    };
    let refused = |error: io::Error| explain_open_error(kind, path, error);
    let file = match options(true).open(path) {
        Ok(file) => {
            // Ours: its mode is ours to set, whatever the umask took away.
            file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
                .map_err(refused)?;
            file
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            options(false).open(path).map_err(refused)?
        }
        Err(error) => return Err(refused(error)),
    };
    let file_type = file.metadata().map_err(refused)?.file_type();
    if !(file_type.is_file() || file_type.is_char_device()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} {}: it is not a regular file (a directory, FIFO or socket); give \
                 the path of a file",
                kind.option,
                path.display()
            ),
        ));
    }
    Ok(file)
}

/// An open error of a log file as a sentence with the path and a fix.
fn explain_open_error(kind: LogFileKind, path: &Path, error: io::Error) -> io::Error {
    let LogFileKind { option, name } = kind;
    if error.raw_os_error() == Some(libc::ELOOP) {
        let target = std::fs::read_link(path)
            .map(|t| format!(" (it points to {})", t.display()))
            .unwrap_or_default();
        return io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{option} {} is a symbolic link{target}: the {name} is never written \
                 through a link, since one planted there would make vaultfw append to any file; \
                 give {option} the path of the real file, or remove the link",
                path.display()
            ),
        );
    }
    io::Error::new(
        error.kind(),
        format!("{option} {}: {error}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_created_0640_and_a_link_at_its_path_is_refused() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("access.log");
        open_append(ACCESS_LOG, &path).expect("created");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, FILE_MODE);
        // An existing file keeps the mode it has.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        open_append(ACCESS_LOG, &path).expect("opened");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret").unwrap();
        let link = dir.path().join("link.log");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let error = open_append(ACCESS_LOG, &link).expect_err("a link is refused");
        let message = error.to_string();
        assert!(
            message.contains(&link.display().to_string()) && message.contains("symbolic link"),
            "{message}"
        );
        assert!(
            message.contains("give --access-log the path of the real file"),
            "{message}"
        );
        let dangling = dir.path().join("dangling.log");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        assert!(
            open_append(ACCESS_LOG, &dangling).is_err(),
            "a dangling link is refused"
        );
        assert!(
            !dir.path().join("nothing").exists(),
            "a dangling link's target was created"
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "secret");
    }
}
