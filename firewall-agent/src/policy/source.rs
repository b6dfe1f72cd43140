//! The one way a policy is read. A [`PolicySource`] names the files — the
//! policy (native TOML or Azure JSON, [`PolicyFormat::detect`]) and, for
//! Azure JSON, its subnet map — and reads them (bounded, regular files
//! only; see [`input`](super::input)) into a [`PolicyText`]: their
//! contents, their format, and where their relative file references
//! resolve (each file's own directory). [`PolicyText::validate`] turns it
//! into a [`Validated`] policy. `run`, reloads, CLI edits, `validate`,
//! `check`, `export`, `apply` and the SSH lockout guard all load policies
//! this way.
//!
//! `apply` carries a [`PolicyText`] over the control socket, so a daemon
//! that cannot see the operator's files (a systemd unit's PrivateTmp or
//! ProtectHome) still gets the policy. The CLI reads the files and makes
//! their file references absolute
//! ([`PolicyText::with_absolute_references`]: only those values are
//! rewritten, comments are kept). The daemon rebuilds the text with
//! [`PolicyText::received`]; validating it refuses a relative reference
//! (there is no directory to resolve it against) and a file the daemon
//! cannot read, each named with the field, the path and the fix.
//! [`PolicySource::write_back`] then says what the daemon's own files must
//! hold to serve the applied policy after a reload or a restart, and checks
//! that they would.
//!
//! A policy names one kind of file: `[trusted_services] service_tags_file`,
//! in a native policy or in the subnet map of an Azure JSON one.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use toml_edit::DocumentMut;

use super::error::{LoadError, PolicyError, PolicyErrors, PolicyWarning};
use super::export::{export_azure, export_native, export_subnet_map};
use super::input::{MAX_POLICY_BYTES, read_text_file};
use super::model::Policy;
use super::parse::{PolicyFormat, Validated, parse_azure_in, parse_toml_in};
use super::subnet_map;
use super::trusted::absolute_against;

/// The table and key of the one file reference a policy (or a subnet map)
/// holds.
const TAGS_FILE: (&str, &str) = ("trusted_services", "service_tags_file");

/// Where a policy comes from: its file and, for Azure JSON, its subnet map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    /// The policy file: native TOML, or a vault's Azure JSON.
    pub path: PathBuf,
    /// For Azure JSON: the subnet map giving prefixes and endpoints. Given
    /// with a native policy it is not read, and a warning says so.
    pub subnet_map: Option<PathBuf>,
}

/// A file's path and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileText {
    /// The path: for messages and, for a text read here, the directory its
    /// relative references resolve against.
    pub path: PathBuf,
    /// The contents (UTF-8, at most [`MAX_POLICY_BYTES`] when read from a
    /// file).
    pub text: String,
}

/// A policy's contents, ready to validate: read from files by
/// [`PolicySource::read`], or received over the control socket
/// ([`PolicyText::received`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyText {
    policy: FileText,
    format: PolicyFormat,
    /// For Azure JSON: the subnet map.
    subnet_map: Option<FileText>,
    origin: Origin,
    /// A subnet map given with a native policy (not read; warned about).
    unused_subnet_map: Option<PathBuf>,
}

/// Where a [`PolicyText`]'s relative references resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// Read from files here: against each file's directory.
    Read,
    /// Received without a directory: nowhere (refused), and every file it
    /// names must be readable by the receiver.
    Received,
}

/// A file a policy names, as written and as resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileReference {
    /// Where it is written: `trusted_services.service_tags_file`, or
    /// `map.toml:trusted_services.service_tags_file`.
    field: String,
    /// The path as written.
    written: String,
    /// `written` made absolute against its file's directory.
    resolved: PathBuf,
}

/// What a daemon's policy files must hold to serve an applied policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteBack {
    /// The policy file's new text.
    pub policy: String,
    /// The subnet map's new text, when the daemon reads one.
    pub subnet_map: Option<String>,
}

impl PolicySource {
    /// The policy at `path`, with `subnet_map` for Azure JSON.
    pub fn new(path: impl Into<PathBuf>, subnet_map: Option<PathBuf>) -> Self {
        PolicySource {
            path: path.into(),
            subnet_map,
        }
    }

    /// Reads the policy file (and, for Azure JSON, the subnet map).
    ///
    /// Errors: [`LoadError::Io`] naming the file that could not be read
    /// (missing, not a regular file, too large, not UTF-8).
    pub fn read(&self) -> Result<PolicyText, LoadError> {
        let text = read(&self.path)?;
        let format = PolicyFormat::detect(&self.path, &text);
        let (subnet_map, unused_subnet_map) = match (format, &self.subnet_map) {
            (PolicyFormat::AzureJson, Some(map)) => (
                Some(FileText {
                    path: map.clone(),
                    text: read(map)?,
                }),
                None,
            ),
            (PolicyFormat::Native, Some(map)) => (None, Some(map.clone())),
            (_, None) => (None, None),
        };
        Ok(PolicyText {
            policy: FileText {
                path: self.path.clone(),
                text,
            },
            format,
            subnet_map,
            origin: Origin::Read,
            unused_subnet_map,
        })
    }

    /// Reads and validates the policy.
    ///
    /// Errors: [`LoadError::Io`] (a file could not be read) or
    /// [`LoadError::Invalid`] with every error of the policy.
    pub fn load(&self) -> Result<Validated, LoadError> {
        self.read()?.validate()
    }

    /// The policy file's text alone (bounded, regular files only).
    pub fn file_text(&self) -> std::io::Result<String> {
        read_text_file(&self.path, MAX_POLICY_BYTES)
    }

    /// The policy file's format, as [`PolicySource::read`] decides it.
    pub fn format(&self) -> std::io::Result<PolicyFormat> {
        Ok(PolicyFormat::detect(&self.path, &self.file_text()?))
    }

    /// What this source's files must hold so that loading them gives
    /// `policy`, validated from `applied`. The files keep their format:
    ///
    /// - a native file takes a native `applied` as it is (comments kept),
    ///   an Azure JSON one rendered as native TOML ([`export_native`]);
    /// - an Azure JSON file takes an Azure JSON `applied`'s JSON, and its
    ///   subnet map (when this source has one) the applied map, or one
    ///   rendered from `policy` when the apply had none
    ///   ([`export_subnet_map`]); a native `applied` is rendered with
    ///   [`export_azure`] and [`export_subnet_map`].
    ///
    /// Anything but a native text into a native file is then loaded as this
    /// source would load it, and must give `policy`.
    ///
    /// Errors: the files cannot hold `policy` (an Azure JSON file read
    /// without a subnet map, for a policy that needs one), named with the
    /// fix.
    pub fn write_back(
        &self,
        applied: &PolicyText,
        policy: &Policy,
    ) -> Result<WriteBack, PolicyError> {
        // An unreadable file (removed meanwhile) keeps the format its name
        // says; the write recreates it.
        let served = self
            .format()
            .unwrap_or_else(|_| PolicyFormat::detect(&self.path, ""));
        let files = match (served, applied.format) {
            (PolicyFormat::Native, PolicyFormat::Native) => {
                return Ok(WriteBack {
                    policy: applied.policy.text.clone(),
                    subnet_map: None,
                });
            }
            (PolicyFormat::Native, PolicyFormat::AzureJson) => WriteBack {
                policy: export_native(policy),
                subnet_map: None,
            },
            (PolicyFormat::AzureJson, format) => {
                let applied_map = applied
                    .subnet_map
                    .as_ref()
                    .filter(|_| format == PolicyFormat::AzureJson);
                WriteBack {
                    policy: match format {
                        PolicyFormat::AzureJson => applied.policy.text.clone(),
                        // Short ids are kept short: the subnet map reads
                        // them back (checked below), and the file is read by
                        // this daemon, not ARM.
                        PolicyFormat::Native => match export_azure(policy, true) {
                            Ok(exported) => format!("{:#}\n", exported.json),
                            Err(error) => {
                                return Err(PolicyError::new(
                                    self.path.display().to_string(),
                                    &error.id,
                                    error.to_string(),
                                    "apply a policy whose subnet ids are full ARM ids",
                                ));
                            }
                        },
                    },
                    subnet_map: self.subnet_map.as_ref().map(|_| match applied_map {
                        Some(map) => map.text.clone(),
                        None => export_subnet_map(policy),
                    }),
                }
            }
        };
        let reread = PolicyText {
            policy: FileText {
                path: self.path.clone(),
                text: files.policy.clone(),
            },
            format: served,
            subnet_map: self
                .subnet_map
                .clone()
                .zip(files.subnet_map.clone())
                .map(|(path, text)| FileText { path, text }),
            origin: Origin::Read,
            unused_subnet_map: None,
        }
        .validate();
        if reread.is_ok_and(|v| v.policy == *policy) {
            return Ok(files);
        }
        let path = self.path.display().to_string();
        Err(
            if served == PolicyFormat::AzureJson && self.subnet_map.is_none() {
                PolicyError::new(
                    path,
                    "",
                    "the daemon reads this Azure JSON policy without a subnet map (it runs without \
                 --subnet-map), and the JSON alone cannot hold the applied policy (subnet \
                 prefixes and endpoints, settings, comments or expiry)",
                    "restart the daemon with --subnet-map FILE, or apply a policy that needs no \
                 subnet map; nothing changed",
                )
            } else {
                PolicyError::new(
                    path,
                    "",
                    format!(
                        "written into this file in its own format ({}), the applied policy would \
                     not load as applied",
                        format_name(served)
                    ),
                    format!(
                        "apply the policy in the file's format ({}); nothing changed (please report \
                     this)",
                        format_name(served)
                    ),
                )
            },
        )
    }
}

impl PolicyText {
    /// A policy that arrived without its files (over the control socket):
    /// `file` and the map's path are for messages only. Its file
    /// references must be absolute and readable here; validating it
    /// refuses any other.
    pub fn received(
        file: PathBuf,
        format: PolicyFormat,
        text: String,
        subnet_map: Option<FileText>,
    ) -> Self {
        let (subnet_map, unused_subnet_map) = match format {
            PolicyFormat::AzureJson => (subnet_map, None),
            PolicyFormat::Native => (None, subnet_map.map(|m| m.path)),
        };
        PolicyText {
            policy: FileText { path: file, text },
            format,
            subnet_map,
            origin: Origin::Received,
            unused_subnet_map,
        }
    }

    /// The policy file's path.
    pub fn file(&self) -> &Path {
        &self.policy.path
    }

    /// The policy's format.
    pub fn format(&self) -> PolicyFormat {
        self.format
    }

    /// The policy file's text.
    pub fn text(&self) -> &str {
        &self.policy.text
    }

    /// For Azure JSON: the subnet map.
    pub fn subnet_map(&self) -> Option<&FileText> {
        self.subnet_map.as_ref()
    }

    /// The same policy files with the policy file's text replaced (a CLI
    /// edit of it).
    pub fn with_text(&self, text: String) -> Self {
        PolicyText {
            policy: FileText {
                path: self.policy.path.clone(),
                text,
            },
            ..self.clone()
        }
    }

    /// Validates the policy.
    ///
    /// Errors: [`LoadError::Invalid`] with every error of the policy; for a
    /// received text, first a relative file reference, or one the caller
    /// cannot read (each named with the field, the path and the fix).
    pub fn validate(&self) -> Result<Validated, LoadError> {
        self.validate_at(SystemTime::now())
    }

    /// [`PolicyText::validate`] as of `now` (for `expires_at`).
    pub(crate) fn validate_at(&self, now: SystemTime) -> Result<Validated, LoadError> {
        let invalid = |errors| LoadError::Invalid {
            path: self.policy.path.clone(),
            errors,
        };
        if self.origin == Origin::Received {
            self.check_received_references().map_err(invalid)?;
        }
        let mut validated = match self.format {
            PolicyFormat::Native => {
                parse_toml_in(&self.policy.text, &dir_of(&self.policy.path), now)
            }
            PolicyFormat::AzureJson => {
                let map = self.subnet_map.as_ref();
                let base = dir_of(map.map_or(&self.policy.path, |m| &m.path));
                parse_azure_in(
                    &self.policy.text,
                    map.map(|m| (m.path.as_path(), m.text.as_str())),
                    &base,
                    now,
                )
            }
        }
        .map_err(invalid)?;
        if let Some(map) = &self.unused_subnet_map {
            validated.warnings.push(PolicyWarning::new(
                map.display().to_string(),
                format!(
                    "a subnet map applies only to an Azure JSON policy; {} is a native TOML \
                     policy, so the map is not read",
                    self.policy.path.display()
                ),
            ));
        }
        Ok(validated)
    }

    /// The same policy with every relative file reference made absolute
    /// against its file's directory, so that it means the same wherever it
    /// is read (sent to a daemon, written into the daemon's policy file).
    /// Only those values change; comments and layout are kept. A received
    /// text is returned as it is.
    pub fn with_absolute_references(mut self) -> Self {
        if self.origin == Origin::Received {
            return self;
        }
        let holder = match self.format {
            PolicyFormat::Native => Some(&mut self.policy),
            PolicyFormat::AzureJson => self.subnet_map.as_mut(),
        };
        if let Some(file) = holder
            && let Some(written) = written_reference(&file.text)
            && !Path::new(&written).is_absolute()
        {
            let resolved = absolute_against(&dir_of(&file.path), &written);
            if let Some(text) = replace_reference(&file.text, &resolved.display().to_string()) {
                file.text = text;
            }
        }
        self
    }

    /// The files the policy names.
    fn references(&self) -> Vec<FileReference> {
        let holder = match self.format {
            PolicyFormat::Native => Some((&self.policy, String::new())),
            PolicyFormat::AzureJson => self
                .subnet_map
                .as_ref()
                .map(|m| (m, subnet_map::prefix(&m.path))),
        };
        holder
            .and_then(|(file, prefix)| {
                let written = written_reference(&file.text)?;
                Some(FileReference {
                    field: format!("{prefix}{}.{}", TAGS_FILE.0, TAGS_FILE.1),
                    resolved: absolute_against(&dir_of(&file.path), &written),
                    written,
                })
            })
            .into_iter()
            .collect()
    }

    /// A received text's references: absolute (it has no directory) and
    /// readable here (the daemon may not see what the operator sees).
    fn check_received_references(&self) -> Result<(), PolicyErrors> {
        let mut errors = Vec::new();
        for reference in self.references() {
            let path = Path::new(&reference.written);
            if !path.is_absolute() {
                errors.push(PolicyError::new(
                    &reference.field,
                    &reference.written,
                    "a relative path in a policy sent to the daemon has no directory to resolve \
                     against",
                    "write it as an absolute path (the vaultfw CLI makes it absolute against the \
                     applied file's directory)",
                ));
            } else if let Err(error) = readable(path) {
                errors.push(PolicyError::new(
                    &reference.field,
                    reference.resolved.display().to_string(),
                    format!(
                        "the daemon cannot read it ({error}); a systemd unit's ProtectHome and \
                         PrivateTmp hide /home, /root and /tmp from the daemon"
                    ),
                    "put the file under /etc/vaultfw (or another directory the daemon sees) and \
                     apply again",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(PolicyErrors(errors))
        }
    }
}

/// Whether `path` is a regular file that can be opened for reading (the
/// type is checked first: opening a FIFO would block).
fn readable(path: &Path) -> std::io::Result<()> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    std::fs::File::open(path).map(drop)
}

/// The `service_tags_file` string of a TOML document, if it has one (a
/// document that does not parse has none: validation reports it).
fn written_reference(text: &str) -> Option<String> {
    let doc: DocumentMut = text.parse().ok()?;
    doc.get(TAGS_FILE.0)?
        .get(TAGS_FILE.1)?
        .as_str()
        .map(str::to_owned)
}

/// `text` with its `service_tags_file` string replaced by `path`, the
/// value's comments and spacing kept; `None` when it has no such string.
fn replace_reference(text: &str, path: &str) -> Option<String> {
    let mut doc: DocumentMut = text.parse().ok()?;
    let value = doc
        .get_mut(TAGS_FILE.0)?
        .get_mut(TAGS_FILE.1)?
        .as_value_mut()?;
    if !value.is_str() {
        return None;
    }
    let decor = value.decor().clone();
    *value = toml_edit::Value::from(path);
    *value.decor_mut() = decor;
    Some(doc.to_string())
}

/// The absolute directory of `path` (the current directory for a bare
/// file name).
fn dir_of(path: &Path) -> PathBuf {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

fn read(path: &Path) -> Result<String, LoadError> {
    read_text_file(path, MAX_POLICY_BYTES).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn format_name(format: PolicyFormat) -> &'static str {
    match format {
        PolicyFormat::Native => "native TOML",
        PolicyFormat::AzureJson => "Azure JSON",
    }
}
