//! The `vaultfw` binary: parses the command line and dispatches. Exit
//! codes are [`vaultfw::exit`]'s; `--output json` documents are
//! [`vaultfw::cli::output`]'s (docs/output.md).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vaultfw::cli::output::{ErrorDetail, fail, print_failure, print_success};
use vaultfw::cli::remote;
use vaultfw::cli::{
    Cli, Command, ConvertArgs, ExportArgs, ExportFormat, OutputFormat, RunArgs, ValidateArgs,
};
use vaultfw::daemon::{self, PolicySource, RunError, RunOptions};
use vaultfw::exit::{self, Failure};
use vaultfw::policy;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(&error),
    };
    if !matches!(cli.command, Command::Run(_)) {
        // A CLI verb piped into `head` ends quietly, like other Unix tools,
        // instead of panicking on EPIPE. The daemon keeps Rust's default.
        // SAFETY: setting a signal disposition before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Run(args) => run(args),
        Command::Validate(args) => validate(args),
        Command::Export(args) => export(args),
        Command::Convert(args) => convert(&args),
        Command::Check(args) => check(&args),
        Command::NetworkRule(args) => vaultfw::cli::network_rule::network_rule(&args),
        Command::Update(args) => remote::update(&args),
        Command::Apply(args) => remote::apply(&args),
        Command::Confirm(args) => remote::confirm(&args),
        Command::Show(args) => remote::show(&args),
        Command::Stats(args) => vaultfw::cli::observe::stats(&args),
        Command::Logs(args) => vaultfw::cli::observe::logs(&args),
        Command::Detach(args) => remote::detach(&args),
        Command::Completions(args) => remote::completions(&args),
        Command::ManPages(args) => vaultfw::cli::man_pages::man_pages(&args),
    }
}

/// A command line clap refuses: under `--output json`, the error document
/// (`invalid_input`, exit 2); otherwise clap's own text (help and version
/// included).
fn usage_error(error: &clap::Error) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args
        .windows(2)
        .any(|pair| pair[0] == "--output" && pair[1] == "json")
        || args.iter().any(|arg| arg == "--output=json");
    if !error.use_stderr() || !json {
        error.exit();
    }
    // The verb as typed: its word, and the sub-verb of `network-rule`.
    let words: Vec<&str> = args
        .iter()
        .take_while(|arg| !arg.starts_with('-'))
        .map(String::as_str)
        .collect();
    let verb = match words.as_slice() {
        ["network-rule", sub, ..] => format!("network-rule {sub}"),
        [word, ..] => (*word).to_owned(),
        [] => String::new(),
    };
    let rendered = error.render().to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let mut detail = ErrorDetail::new(Failure::InvalidInput, message);
    detail.fix = Some(format!("see `vaultfw {verb} --help`").replace("  ", " "));
    fail(OutputFormat::Json, &verb, detail)
}

fn run(args: RunArgs) -> ExitCode {
    vaultfw::telemetry::logging::init(
        args.log_format
            .map_or_else(vaultfw::telemetry::logging::LogFormat::detect, Into::into),
    );
    let interfaces = match daemon::IfaceSelection::parse(&args.interfaces) {
        Ok(selection) => selection,
        Err(message) => {
            tracing::error!(error = %message, "vaultfw run failed");
            eprintln!("vaultfw: {message}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    let options = RunOptions {
        interfaces,
        source: PolicySource::new(args.policy, args.subnet_map),
        xdp_mode: args.xdp_mode.into(),
        bpf_log_level: args.bpf_log_level.into(),
        stats_interval: Duration::from_secs(args.stats_interval),
        pin_dir: args.pin_dir,
        socket: args.socket,
        on_exit: args.on_exit.into(),
        watch_policy: !args.no_watch,
        event_rate: args.event_rate,
        log_allowed: args.log_allowed,
        pass_forwarded: args.pass_forwarded,
        lookup: args.lookup,
        access_log: args.access_log,
        audit_log: args.audit_log,
        metrics_addr: args.metrics_addr,
        metrics_allow_remote: args.metrics_allow_remote,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("vaultfw: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "vaultfw run failed");
            eprintln!("vaultfw: {error}");
            ExitCode::from(run_failure(&error).exit_code())
        }
    }
}

/// The class of a start-up failure (its exit code).
fn run_failure(error: &RunError) -> Failure {
    use vaultfw::control::server::ServerError;
    use vaultfw::dataplane::DataplaneError;
    match error {
        // A privilege, not the path, is what is missing.
        RunError::UnusablePath { source, .. }
        | RunError::Socket(ServerError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Failure::KernelRefused
        }
        // The operator's path names no usable file or socket (a link, a
        // directory, a missing or non-directory parent, too long a name).
        RunError::UnusablePath { source, .. }
        | RunError::Socket(ServerError::Io { source, .. })
            if unusable_path(source) =>
        {
            Failure::InvalidInput
        }
        RunError::Policy(_)
        | RunError::MissingEndpoint(_)
        | RunError::InvalidArguments(_)
        | RunError::Dataplane(DataplaneError::NoSuchInterface { .. }) => Failure::InvalidInput,
        // Another daemon holds the pins: someone else has what this needs.
        RunError::Dataplane(DataplaneError::PinDirInUse { .. }) => Failure::Conflict,
        RunError::Dataplane(e) if e.is_kernel_refusal() => Failure::KernelRefused,
        // A missing privilege exits as the kernel's refusal does (README).
        RunError::Socket(ServerError::PermissionDenied { .. }) => Failure::KernelRefused,
        _ => Failure::Internal,
    }
}

/// Whether an OS error says the path given is unusable as given (rather
/// than that the system failed).
fn unusable_path(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::NotFound
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory
            | ErrorKind::AlreadyExists
            | ErrorKind::InvalidInput
            | ErrorKind::InvalidFilename
            | ErrorKind::AddrInUse
    ) || matches!(
        error.raw_os_error(),
        Some(libc::ELOOP | libc::ENAMETOOLONG | libc::ENOTSOCK)
    )
}

fn export(args: ExportArgs) -> ExitCode {
    let output = args.output;
    if args.format == ExportFormat::Native {
        return convert(&ConvertArgs {
            file: args.file,
            subnet_map: args.subnet_map,
            out: None,
            output,
        });
    }
    let validated = match PolicySource::new(&args.file, args.subnet_map.clone()).load() {
        Ok(v) => v,
        Err(error) => return print_failure(output, "export", ErrorDetail::load(&error)),
    };
    let policy = &validated.policy;
    let exported = match policy::export_azure(policy, args.allow_short_ids) {
        Ok(exported) => exported,
        Err(error) => {
            let mut detail = ErrorDetail::new(Failure::InvalidInput, error.to_string());
            detail.field = Some("virtual_network_rules".to_owned());
            detail.value = Some(serde_json::json!(error.id));
            detail.fix = Some(policy::ShortIdError::FIX.to_owned());
            return fail(output, "export", detail);
        }
    };
    let mut warnings: Vec<String> = exported
        .short_ids
        .iter()
        .map(|id| {
            format!(
                "virtual network rule {id:?} is written with its short id (--allow-short-ids): \
                 ARM rejects it; give the policy [defaults] subscription and resource_group to \
                 write its full ARM id"
            )
        })
        .collect();
    // Loudly, and before any refusal below: ARM will reject these ids.
    for warning in &warnings {
        eprintln!("vaultfw: WARNING: {warning}");
    }
    match &args.subnet_map_out {
        Some(path) => {
            let map = policy::export_subnet_map(policy);
            if let Err(error) = vaultfw::persist::write_atomically(path, &map) {
                let mut detail = ErrorDetail::new(Failure::Internal, error.to_string());
                detail.field = Some("--subnet-map-out".to_owned());
                detail.value = Some(serde_json::json!(path));
                return fail(output, "export", detail);
            }
        }
        None => {
            // The JSON alone must read back as this policy: nothing is
            // dropped silently.
            let text = exported.json.to_string();
            let alone = policy::parse_azure_json(&text, None).map(|v| v.policy);
            match alone {
                Ok(read) if read == *policy => {}
                Ok(read) if read == without_comments(policy) => {
                    let lost = "the IP rules' comments and expiry are not in Azure's JSON; give \
                                --subnet-map-out FILE to keep them";
                    eprintln!("vaultfw: warning: {lost}");
                    warnings.push(lost.to_owned());
                }
                _ => {
                    let lost = policy::needs_subnet_map(policy).unwrap_or("its settings");
                    let mut detail = ErrorDetail::new(
                        Failure::InvalidInput,
                        format!(
                            "the JSON alone would not read back as this policy: {lost} and \
                             vaultfw's own settings are in the subnet map; nothing written"
                        ),
                    );
                    detail.field = Some("--subnet-map-out".to_owned());
                    detail.fix = Some("give --subnet-map-out FILE".to_owned());
                    return fail(output, "export", detail);
                }
            }
        }
    }
    let doc = serde_json::json!({
        "format": "azure",
        "document": exported.json,
        "subnet_map_written": args.subnet_map_out,
        "warnings": warnings,
    });
    // The human form is the document itself, to redirect into a file.
    print_success(output, "export", &doc, || println!("{:#}", exported.json))
}

/// `policy` without rule comments and expiry (what Azure's JSON has no
/// field for).
fn without_comments(policy: &policy::Policy) -> policy::Policy {
    let mut bare = policy.clone();
    for rule in &mut bare.ip_rules {
        rule.comment = None;
        rule.expires_at = None;
    }
    for rule in &mut bare.ipv6_rules {
        rule.comment = None;
        rule.expires_at = None;
    }
    bare
}

/// `vaultfw convert` (and `export --format native`): the policy in the
/// native format, with a comment naming its source.
fn convert(args: &ConvertArgs) -> ExitCode {
    let output = args.output;
    let source = PolicySource::new(&args.file, args.subnet_map.clone());
    let validated_text = source
        .read()
        .and_then(|text| text.validate().map(|validated| (text, validated)));
    let (text, validated) = match validated_text {
        Ok(both) => both,
        Err(error) => return print_failure(output, "convert", ErrorDetail::load(&error)),
    };
    for warning in &validated.warnings {
        eprintln!("vaultfw: warning: {warning}");
    }
    let (vault_name, vault_id) = policy::vault_identity(text.text());
    let native = policy::export_native_from(
        &validated.policy,
        &policy::NativeSource {
            file: args.file.display().to_string(),
            vault_name,
            vault_id,
        },
    );
    // What is written must mean what was read: a policy that reads back
    // otherwise is a bug here, and nothing is written.
    let base = args.file.parent().unwrap_or(std::path::Path::new("."));
    let read_back = policy::parse_toml_with_base(&native, base).map(|v| v.policy);
    if read_back.as_ref() != Ok(&validated.policy) {
        let detail = ErrorDetail::new(
            Failure::Internal,
            "the converted policy does not read back as the source policy (a bug in vaultfw); \
             nothing written",
        );
        return fail(output, "convert", detail);
    }
    if let Some(path) = &args.out
        && let Err(error) = vaultfw::persist::write_atomically(path, &native)
    {
        let mut detail = ErrorDetail::new(Failure::Internal, error.to_string());
        detail.field = Some("--out".to_owned());
        detail.value = Some(serde_json::json!(path));
        return fail(output, "convert", detail);
    }
    let doc = serde_json::json!({
        "format": "native",
        "document": native,
        "written_to": args.out,
    });
    // The human form is the policy itself (unless it went to --out).
    print_success(output, "convert", &doc, || {
        if args.out.is_none() {
            print!("{native}");
        }
    })
}

fn validate(args: ValidateArgs) -> ExitCode {
    let output = args.output;
    let validated = match PolicySource::new(&args.file, args.subnet_map.clone()).load() {
        Ok(validated) => validated,
        Err(error) => return print_failure(output, "validate", ErrorDetail::load(&error)),
    };
    if !args.force
        && let Some(port) = vaultfw::cli::session::session_port()
        && let Some(refusal) = vaultfw::cli::session::guards_session_port(&validated.policy, port)
    {
        let detail = ErrorDetail::new(
            Failure::InvalidInput,
            format!("{}: {refusal}", args.file.display()),
        );
        return fail(output, "validate", detail);
    }
    let mut policy = serde_json::to_value(&validated.policy).unwrap_or_default();
    // Thousands of trusted prefixes say less than their count.
    let trusted = &validated.policy.trusted_services;
    policy["trusted_services"]["prefixes"] = serde_json::json!(trusted.prefixes.len());
    let missing = vaultfw::compile::missing_endpoint_interfaces(&validated.policy);
    let doc = serde_json::json!({
        "valid": true,
        "policy": policy,
        "warnings": validated.warnings,
        "missing_interfaces": missing,
    });
    print_success(output, "validate", &doc, || {
        print_validated(&args, &validated);
        for name in &missing {
            println!(
                "note: {}",
                vaultfw::compile::missing_endpoint_note(&validated.policy, name)
            );
        }
    })
}

/// `vaultfw check`: with `--output json`, its failures are the error
/// document; its frames are JSON lines (`check` prints them). An invalid
/// policy is refused in `validate`'s words, one error per field.
fn check(args: &vaultfw::cli::CheckArgs) -> ExitCode {
    let request = args.request();
    match vaultfw::check::check(&request) {
        Ok(results) => vaultfw::check::report(&request, &results),
        Err(vaultfw::check::CheckError::Policy { source }) => {
            print_failure(args.output, "check", ErrorDetail::load(&source))
        }
        Err(error) => {
            let class = match error.exit_code() {
                exit::INVALID_INPUT => Failure::InvalidInput,
                exit::KERNEL_REFUSED => Failure::KernelRefused,
                _ => Failure::Internal,
            };
            match args.output {
                OutputFormat::Json => fail(
                    args.output,
                    "check",
                    ErrorDetail::new(class, error.to_string()),
                ),
                OutputFormat::Table => {
                    eprintln!("vaultfw check: {error}");
                    ExitCode::from(class.exit_code())
                }
            }
        }
    }
}

/// The human form of a valid policy: settings, every rule, warnings.
fn print_validated(args: &ValidateArgs, validated: &policy::Validated) {
    let p = &validated.policy;
    println!(
        "{}: valid — default_action {:?}, bypass {:?}, mode {:?}, ipv6 {:?}, {} IP rule(s) \
         (limit {}), {} virtual network rule(s) (limit {}), profile {}",
        args.file.display(),
        p.default_action,
        p.bypass,
        p.mode,
        p.ipv6,
        p.ip_rules.len(),
        p.limits.ip_rules,
        p.virtual_network_rules.len(),
        p.limits.virtual_network_rules,
        p.limits.profile.name(),
    );
    println!(
        "  data plane: tcp {:?}, udp {:?}",
        p.data_plane.tcp_ports, p.data_plane.udp_ports
    );
    for rule in &p.ip_rules {
        println!("  allow {rule}");
    }
    for rule in &p.ipv6_rules {
        println!("  allow {rule} (IPv6, limit {})", p.limits.ipv6_rules);
    }
    for rule in &p.virtual_network_rules {
        let prefixes: Vec<String> = rule
            .address_prefixes
            .iter()
            .map(|n| n.to_string())
            .chain(rule.address_prefixes_v6.iter().map(|n| n.to_string()))
            .collect();
        println!(
            "  allow subnet {} ({}) through {}",
            rule.id,
            prefixes.join(", "),
            rule.endpoint
        );
    }
    let trusted = &p.trusted_services;
    if !trusted.prefixes.is_empty() || p.bypass == policy::Bypass::AzureServices {
        let names: Vec<&str> = trusted.enabled.iter().map(|s| s.name).collect();
        println!(
            "  trusted services ({}): {} IPv4 prefixes, {} IPv6 prefixes{}",
            names.join(", "),
            trusted.prefixes.len(),
            trusted.prefixes_v6.len(),
            if p.bypass == policy::Bypass::None {
                " — inactive (bypass = None)"
            } else {
                ""
            }
        );
    }
    for warning in &validated.warnings {
        println!("warning: {warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};
    use vaultfw::control::server::ServerError;

    #[test]
    fn an_unusable_path_the_operator_gave_run_is_invalid_input() {
        let log = |source: Error| RunError::UnusablePath {
            flag: "--audit-log",
            source,
        };
        let socket = |source: Error| {
            RunError::Socket(ServerError::Io {
                operation: "bind",
                path: "/run/x/vaultfw.sock".into(),
                source,
            })
        };
        for unusable in [
            || Error::from_raw_os_error(libc::ELOOP),
            || Error::from(ErrorKind::NotFound),
            || Error::from(ErrorKind::NotADirectory),
            || Error::from(ErrorKind::IsADirectory),
            || Error::from(ErrorKind::InvalidInput),
            || Error::from_raw_os_error(libc::ENAMETOOLONG),
        ] {
            assert_eq!(run_failure(&log(unusable())), Failure::InvalidInput);
            assert_eq!(run_failure(&socket(unusable())), Failure::InvalidInput);
        }
        let denied = || Error::from(ErrorKind::PermissionDenied);
        assert_eq!(run_failure(&log(denied())), Failure::KernelRefused);
        let full = || Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(run_failure(&log(full())), Failure::Internal);
        assert_eq!(run_failure(&socket(full())), Failure::Internal);
    }

    #[test]
    fn tables_the_maps_cannot_hold_fail_a_start_as_the_kernels_refusal() {
        use vaultfw::dataplane::DataplaneError;
        let compiled = DataplaneError::CompiledTable {
            set: 0,
            reason: "the policy needs 10 cells but the table holds 9".into(),
        };
        assert_eq!(
            run_failure(&RunError::Dataplane(compiled)),
            Failure::KernelRefused,
            "as a CLI change refused for it is (exit 4)"
        );
    }
}
