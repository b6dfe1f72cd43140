//! The verbs that talk to the running daemon through the control socket,
//! and `detach`/`show`, which also work when no daemon runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::OutputFormat;
use super::output::{ErrorDetail, fail, print_failure, print_success};
use crate::control::client::{self, ClientError};
use crate::control::protocol::{Command, Response, SentFile};
use crate::control::replies::{DetachReply, Readiness, ShowReply, ShowView};
use crate::exit::{self, Failure};
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

/// `vaultfw show`.
#[derive(Debug, Args)]
pub struct ShowCmd {
    #[command(flatten)]
    pub show: ShowArgs,
    /// Exit 0 when the filter is in force as declared (every interface to
    /// filter attached, the policy file in sync, the last reload accepted),
    /// 1 when not or when no daemon runs; print why. For exec probes.
    ///
    /// Example: vaultfw show --check
    #[arg(long)]
    pub check: bool,
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
        "update",
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
    let refuse = |errors: Vec<ErrorDetail>| print_failure(output, "apply", errors);
    let absolute = |path: &PathBuf| std::path::absolute(path).unwrap_or_else(|_| path.clone());
    let source = PolicySource::new(absolute(&args.file), args.subnet_map.as_ref().map(absolute));
    let applied = match source.read() {
        Ok(text) => text.with_absolute_references(),
        Err(error) => return refuse(ErrorDetail::load(&error)),
    };
    let validated = match applied.validate() {
        Ok(v) => v,
        Err(error) => return refuse(ErrorDetail::load(&error)),
    };
    for warning in &validated.warnings {
        eprintln!("vaultfw: warning: {warning}");
    }
    if !args.force
        && let Some(port) = super::session::session_port()
        && let Some(refusal) = super::session::guards_session_port(&validated.policy, port)
    {
        return refuse(vec![ErrorDetail::new(
            Failure::InvalidInput,
            format!("{}: {refusal}", args.file.display()),
        )]);
    }
    request(
        &args.socket,
        "apply",
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
    request(args, "confirm", Command::Confirm)
}

/// Runs `vaultfw show`: from the daemon, or, when none runs, from the pins
/// (so a stopped host still says whether it is filtered). Both give a
/// [`ShowView`]; without a daemon the exit code is [`exit::NOT_RUNNING`].
/// With `--check`, only whether the daemon is ready.
pub fn show(cmd: &ShowCmd) -> ExitCode {
    let args = &cmd.show;
    if cmd.check {
        return check_ready(&args.socket);
    }
    let output = args.socket.output;
    match client::send(&args.socket.socket, Command::Show) {
        Ok(response) => match daemon_reply::<ShowReply>(&response, output, "show") {
            Ok(reply) => {
                let view = ShowView::from_daemon(&reply);
                print_success(output, "show", &view, || print_show(&view))
            }
            Err(exit) => exit,
        },
        Err(ClientError::NotRunning { .. }) => {
            let state = crate::dataplane::pins::inspect(&PinDir::new(&args.pin_dir));
            let view = ShowView::from_pins(state);
            print_success(output, "show", &view, || print_show(&view));
            ExitCode::from(exit::NOT_RUNNING)
        }
        Err(error) => client_error(output, "show", &error),
    }
}

/// `show` for people: the keys that say something (those a daemon did not
/// fill are left out).
fn print_show(view: &ShowView) {
    let mut value = serde_json::to_value(view).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.retain(|_, v| !v.is_null());
    }
    print_document(&value);
}

/// `vaultfw show --check`: the daemon's readiness (the one `/readyz`
/// answers) as the exit code, 0 ready, 1 not; the reasons on stdout.
fn check_ready(socket: &SocketArgs) -> ExitCode {
    let readiness = match client::send(&socket.socket, Command::Show) {
        Ok(response) => match response.result_as::<ShowReply>() {
            Some(Ok(show)) => show.health.readiness,
            Some(Err(error)) => Readiness {
                ready: false,
                reasons: vec![format!("the daemon's answer is unreadable: {error}")],
            },
            None => Readiness {
                ready: false,
                reasons: vec![format!(
                    "the daemon refused `show`: {}",
                    response
                        .error
                        .as_ref()
                        .map_or("no reason given", |e| &e.message)
                )],
            },
        },
        Err(error) => Readiness {
            ready: false,
            reasons: vec![error.to_string()],
        },
    };
    // Not ready is an answer, not a failure: the success document, exit 1.
    print_success(socket.output, "show", &readiness, || {
        if readiness.ready {
            println!("ready");
        } else {
            println!("not ready: {}", readiness.reasons.join("; "));
        }
    });
    if readiness.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `vaultfw detach`: through the daemon when it runs, else directly.
pub fn detach(args: &DetachArgs) -> ExitCode {
    let output = args.socket.output;
    match client::send(&args.socket.socket, Command::Detach) {
        Ok(response) => print_response(output, "detach", &response),
        Err(ClientError::NotRunning { .. }) => {
            match crate::dataplane::pins::remove_all(&PinDir::new(&args.pin_dir)) {
                Ok(removed) => {
                    let reply = DetachReply {
                        detached: true,
                        daemon_running: Some(false),
                        unpinned: Some(removed),
                    };
                    print_success(output, "detach", &reply, || print_value(&reply))
                }
                Err(error) => fail(
                    output,
                    "detach",
                    ErrorDetail::new(Failure::KernelRefused, error.to_string()),
                ),
            }
        }
        Err(error) => client_error(output, "detach", &error),
    }
}

/// Prints a completion script.
pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let full = <super::Cli as clap::CommandFactory>::command();
    // clap_complete offers hidden verbs too (`man-pages`, for packaging):
    // complete a copy that holds only what the help shows.
    let mut command = clap::Command::new("vaultfw")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(
            full.get_subcommands()
                .filter(|verb| !verb.is_hide_set())
                .cloned(),
        );
    clap_complete::generate(args.shell, &mut command, "vaultfw", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Sends `command` and prints the answer as `verb`'s.
pub(super) fn request(socket: &SocketArgs, verb: &str, command: Command) -> ExitCode {
    match client::send(&socket.socket, command) {
        Ok(response) => print_response(socket.output, verb, &response),
        Err(error) => client_error(socket.output, verb, &error),
    }
}

/// The socket could not be asked: no daemon ([`Failure::NotRunning`]), or
/// the exchange failed.
pub(super) fn client_error(output: OutputFormat, verb: &str, error: &ClientError) -> ExitCode {
    let class = match error {
        ClientError::NotRunning { .. } => Failure::NotRunning,
        _ => Failure::Internal,
    };
    fail(output, verb, ErrorDetail::new(class, error.to_string()))
}

/// Prints a response as `verb`'s and returns the exit code its outcome
/// maps to.
pub(super) fn print_response(output: OutputFormat, verb: &str, response: &Response) -> ExitCode {
    match (&response.error, &response.result) {
        (Some(error), _) => fail(output, verb, ErrorDetail::daemon(error)),
        (None, Some(result)) if response.ok => {
            print_success(output, verb, result, || print_value(result))
        }
        (None, _) => {
            let mut detail =
                ErrorDetail::new(Failure::Internal, "the daemon answered without a result");
            detail.fix = Some(OTHER_RELEASE_FIX.to_owned());
            fail(output, verb, detail)
        }
    }
}

/// The fix for an answer this CLI cannot read (a daemon of another release).
const OTHER_RELEASE_FIX: &str = "use the vaultfw binary of the daemon's release";

/// The reply of a successful response; `Err(exit)` when it is not one: the
/// daemon's refusal or an answer of another shape, printed (as the error
/// document with `--output json`).
pub(super) fn daemon_reply<T: DeserializeOwned>(
    response: &Response,
    output: OutputFormat,
    verb: &str,
) -> Result<T, ExitCode> {
    match response.result_as::<T>() {
        Some(Ok(reply)) => Ok(reply),
        Some(Err(error)) => Err(fail(output, verb, unreadable_answer(&error))),
        None => Err(print_response(output, verb, response)),
    }
}

/// The error of a daemon answer that does not read as the verb's reply.
fn unreadable_answer(error: &impl std::fmt::Display) -> ErrorDetail {
    let mut detail = ErrorDetail::new(
        Failure::Internal,
        format!("unreadable answer from the daemon ({error})"),
    );
    detail.fix = Some(OTHER_RELEASE_FIX.to_owned());
    detail
}

/// A document for people: indented `key: value` lines.
pub(super) fn print_value(value: &impl serde::Serialize) {
    print_document(&serde_json::to_value(value).unwrap_or(Value::Null));
}

fn print_document(value: &Value) {
    let mut out = String::new();
    write_table(&mut out, value, 0);
    print!("{out}");
}

/// `value` as indented `key: value` lines (YAML's block style): a list
/// item per line, an object in a list as `key=value` pairs on its line, and
/// a string of several lines (an error with its fix) as a block scalar
/// (`key: |-` then its lines, indented), so no line of it reads as a key.
fn write_table(out: &mut String, value: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::Object(_) | Value::Array(_) if !is_empty(value) => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_table(out, value, indent + 1);
                    }
                    _ => write_scalar(out, &format!("{pad}{key}:"), &pad, value),
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
                            .map(|(k, v)| format!("{k}={}", scalar(v).replace('\n', " ")))
                            .collect();
                        out.push_str(&format!("{pad}- {}\n", line.join("  ")));
                    }
                    other => write_scalar(out, &format!("{pad}-"), &pad, other),
                }
            }
        }
        other => write_scalar(out, &pad, &pad, other),
    }
}

/// `lead` (`pad` and a key or a list dash; just `pad` for a bare value)
/// then `value`: on one line, or a block scalar whose lines are indented
/// one step below `pad`.
fn write_scalar(out: &mut String, lead: &str, pad: &str, value: &Value) {
    let text = scalar(value);
    let sep = if lead.trim().is_empty() { "" } else { " " };
    if !text.contains('\n') {
        out.push_str(&format!("{lead}{sep}{text}\n"));
        return;
    }
    out.push_str(&format!("{lead}{sep}|-\n"));
    for line in text.lines() {
        out.push_str(&format!("{pad}  {line}\n"));
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

#[cfg(test)]
mod tests {
    use super::write_table;

    #[test]
    fn a_string_of_several_lines_is_a_block_scalar_under_its_key() {
        let document = serde_json::json!({
            "health": {
                "error": "policy file p.toml is invalid:\nip_rules[0]: refused. Fix: remove it",
                "success": false,
            },
            "reasons": ["one line", "first\nsecond"],
            "interfaces": [{ "name": "eth0", "note": "a\nb" }],
        });
        let mut out = String::new();
        write_table(&mut out, &document, 0);
        assert_eq!(
            out,
            "health:\n\
             \x20 error: |-\n\
             \x20   policy file p.toml is invalid:\n\
             \x20   ip_rules[0]: refused. Fix: remove it\n\
             \x20 success: false\n\
             interfaces:\n\
             \x20 - name=eth0  note=a b\n\
             reasons:\n\
             \x20 - one line\n\
             \x20 - |-\n\
             \x20   first\n\
             \x20   second\n"
        );
    }
}
