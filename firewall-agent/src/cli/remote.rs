//! The verbs that talk to the running daemon through the control socket,
//! and `detach`/`show`, which also work when no daemon runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;

use super::OutputFormat;
use crate::control::client::{self, ClientError};
use crate::control::protocol::{Command, ErrorKind, Response, SentFile};
use crate::control::replies::DetachReply;
use crate::exit;
use crate::paths::{DEFAULT_PIN_DIR, DEFAULT_SOCKET, PinDir};
use crate::policy::PolicySource;

/// `--socket`.
#[derive(Debug, Args)]
pub struct SocketArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// `vaultfw show` / `vaultfw stats`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Pin directory to inspect when no daemon runs.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// `vaultfw detach`.
#[derive(Debug, Args)]
pub struct DetachArgs {
    #[command(flatten)]
    pub socket: SocketArgs,
    /// Pin directory to clear when no daemon runs.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// `vaultfw update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// `Allow` or `Deny`.
    #[arg(long, value_name = "ACTION")]
    pub default_action: Option<String>,
    /// `AzureServices` or `None`.
    #[arg(long, value_name = "BYPASS")]
    pub bypass: Option<String>,
    /// Refuse unless the daemon serves this generation.
    #[arg(long, value_name = "N")]
    pub if_generation: Option<u64>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `vaultfw apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The new policy: native TOML, or a vault's Azure JSON. Its content
    /// is sent to the daemon (which may not see this file); a relative
    /// `service_tags_file` is resolved against the file's directory.
    pub file: PathBuf,
    /// For Azure JSON: the subnet map giving each ARM subnet id its
    /// prefixes and service endpoint.
    #[arg(long, value_name = "FILE")]
    pub subnet_map: Option<PathBuf>,
    /// Roll back unless `vaultfw confirm` arrives within this time
    /// (`60s`, `5m`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub confirm_within: Option<std::time::Duration>,
    /// Refuse unless the daemon serves this generation.
    #[arg(long, value_name = "N")]
    pub if_generation: Option<u64>,
    /// Apply a policy that guards the port this SSH session came in on.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// `vaultfw completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Runs `vaultfw update`.
pub fn update(args: &UpdateArgs) -> ExitCode {
    request(
        &args.socket,
        Command::Update {
            default_action: args.default_action.clone(),
            bypass: args.bypass.clone(),
            if_generation: args.if_generation,
        },
    )
}

/// Runs `vaultfw apply`: reads and validates the policy here (where the
/// operator's files are), makes its file references absolute, and sends its
/// content. Nothing is sent when it is invalid or guards this SSH session's
/// port (unless `--force`).
pub fn apply(args: &ApplyArgs) -> ExitCode {
    let output = args.socket.output;
    let refuse = |message: String| {
        print_response(output, &Response::error(ErrorKind::InvalidInput, message))
    };
    let absolute = |path: &PathBuf| std::path::absolute(path).unwrap_or_else(|_| path.clone());
    let source = PolicySource::new(absolute(&args.file), args.subnet_map.as_ref().map(absolute));
    let applied = match source.read() {
        Ok(text) => text.with_absolute_references(),
        Err(error) => return refuse(error.to_string()),
    };
    let validated = match applied.validate() {
        Ok(v) => v,
        Err(error) => return refuse(error.to_string()),
    };
    for warning in &validated.warnings {
        eprintln!("vaultfw: warning: {warning}");
    }
    if !args.force
        && let Some(port) = super::session::session_port()
        && let Some(refusal) = super::session::guards_session_port(&validated.policy, port)
    {
        return refuse(format!("{}: {refusal}", args.file.display()));
    }
    request(
        &args.socket,
        Command::Apply {
            file: applied.file().display().to_string(),
            format: applied.format(),
            text: applied.text().to_owned(),
            subnet_map: applied.subnet_map().map(|m| SentFile {
                file: m.path.display().to_string(),
                text: m.text.clone(),
            }),
            confirm_within_s: args.confirm_within.map(|d| d.as_secs().max(1)),
            if_generation: args.if_generation,
        },
    )
}

/// Runs `vaultfw confirm`.
pub fn confirm(args: &SocketArgs) -> ExitCode {
    request(args, Command::Confirm)
}

/// Runs `vaultfw show`: from the daemon, or, when none runs, from the pins
/// (so a stopped host still says whether it is filtered).
pub fn show(args: &ShowArgs) -> ExitCode {
    match client::send(&args.socket.socket, Command::Show) {
        Ok(response) => print_response(args.socket.output, &response),
        Err(ClientError::NotRunning { .. }) => {
            let state = crate::dataplane::pins::inspect(&PinDir::new(&args.pin_dir));
            print_value(
                args.socket.output,
                &serde_json::to_value(&state).unwrap_or(Value::Null),
            );
            ExitCode::from(exit::NOT_RUNNING)
        }
        Err(error) => client_error(&error),
    }
}

/// Runs `vaultfw detach`: through the daemon when it runs, else directly.
pub fn detach(args: &DetachArgs) -> ExitCode {
    match client::send(&args.socket.socket, Command::Detach) {
        Ok(response) => print_response(args.socket.output, &response),
        Err(ClientError::NotRunning { .. }) => {
            match crate::dataplane::pins::remove_all(&PinDir::new(&args.pin_dir)) {
                Ok(removed) => {
                    let reply = DetachReply {
                        detached: true,
                        daemon_running: Some(false),
                        unpinned: Some(removed),
                    };
                    print_value(
                        args.socket.output,
                        &serde_json::to_value(&reply).unwrap_or(Value::Null),
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("vaultfw: {error}");
                    ExitCode::from(exit::KERNEL_REFUSED)
                }
            }
        }
        Err(error) => client_error(&error),
    }
}

/// Prints a completion script.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut command = <super::Cli as clap::CommandFactory>::command();
    clap_complete::generate(args.shell, &mut command, "vaultfw", &mut std::io::stdout());
    ExitCode::SUCCESS
}

pub(super) fn request(socket: &SocketArgs, command: Command) -> ExitCode {
    match client::send(&socket.socket, command) {
        Ok(response) => print_response(socket.output, &response),
        Err(error) => client_error(&error),
    }
}

pub(super) fn client_error(error: &ClientError) -> ExitCode {
    eprintln!("vaultfw: {error}");
    match error {
        ClientError::NotRunning { .. } => ExitCode::from(exit::NOT_RUNNING),
        _ => ExitCode::FAILURE,
    }
}

/// Prints a response and returns the exit code its outcome maps to.
pub(super) fn print_response(output: OutputFormat, response: &Response) -> ExitCode {
    if let Some(error) = &response.error {
        match output {
            OutputFormat::Json => print_value(
                output,
                &serde_json::to_value(response).unwrap_or(Value::Null),
            ),
            OutputFormat::Table => eprintln!("vaultfw: {}", error.message),
        }
        return ExitCode::from(match error.kind {
            ErrorKind::InvalidInput => exit::INVALID_INPUT,
            ErrorKind::Conflict => exit::CONFLICT,
            ErrorKind::KernelRefused => exit::KERNEL_REFUSED,
            ErrorKind::Internal => 1,
        });
    }
    print_value(output, response.result.as_ref().unwrap_or(&Value::Null));
    ExitCode::SUCCESS
}

/// JSON as a document, or as indented `key: value` lines for people.
fn print_value(output: OutputFormat, value: &Value) {
    match output {
        OutputFormat::Json => println!("{value:#}"),
        OutputFormat::Table => print_table(value, 0),
    }
}

fn print_table(value: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::Object(_) | Value::Array(_) if !is_empty(value) => {
                        println!("{pad}{key}:");
                        print_table(value, indent + 1);
                    }
                    _ => println!("{pad}{key}: {}", scalar(value)),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(map) => {
                        let line: Vec<String> = map
                            .iter()
                            .filter(|(_, v)| !v.is_null())
                            .map(|(k, v)| format!("{k}={}", scalar(v)))
                            .collect();
                        println!("{pad}- {}", line.join("  "));
                    }
                    other => println!("{pad}- {}", scalar(other)),
                }
            }
        }
        other => println!("{pad}{}", scalar(other)),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        Value::Array(a) if a.is_empty() => "[]".to_owned(),
        other => other.to_string(),
    }
}
