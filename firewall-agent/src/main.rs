//! The `vaultfw` binary: parses the command line and dispatches. Exit
//! codes: 0 success, 1 other failure, 2 invalid input (policy or flags),
//! 4 the kernel refused (load or attach).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vaultfw::cli::remote;
use vaultfw::cli::{
    Cli, Command, ConvertArgs, ExportArgs, ExportFormat, OutputFormat, RunArgs, ValidateArgs,
};
use vaultfw::daemon::{self, PolicySource, RunError, RunOptions};
use vaultfw::{exit, policy};

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Check(args) => vaultfw::check::main(&args.request()),
        Command::NetworkRule(args) => vaultfw::cli::network_rule::network_rule(&args),
        Command::Update(args) => remote::update(&args),
        Command::Apply(args) => remote::apply(&args),
        Command::Confirm(args) => remote::confirm(&args),
        Command::Show(args) => remote::show(&args),
        Command::Stats(args) => vaultfw::cli::observe::stats(&args),
        Command::Logs(args) => vaultfw::cli::observe::logs(&args),
        Command::Detach(args) => remote::detach(&args),
        Command::Completions(args) => remote::completions(&args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    vaultfw::telemetry::init_json_logs();
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
        stats_interval: Duration::from_secs(args.stats_interval),
        pin_dir: args.pin_dir,
        socket: args.socket,
        on_exit: args.on_exit.into(),
        watch_policy: !args.no_watch,
        event_rate: args.event_rate,
        log_allowed: args.log_allowed,
        pass_forwarded: args.pass_forwarded,
        access_log: args.access_log,
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
            match error {
                RunError::Policy(_)
                | RunError::MissingEndpoint(_)
                | RunError::InvalidArguments(_)
                | RunError::Dataplane(vaultfw::dataplane::DataplaneError::NoSuchInterface {
                    ..
                }) => ExitCode::from(exit::INVALID_INPUT),
                RunError::Dataplane(e) if e.is_kernel_refusal() => {
                    ExitCode::from(exit::KERNEL_REFUSED)
                }
                // A missing privilege exits as the kernel's refusal does (README).
                RunError::Socket(vaultfw::control::server::ServerError::PermissionDenied {
                    ..
                }) => ExitCode::from(exit::KERNEL_REFUSED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn export(args: ExportArgs) -> ExitCode {
    if args.format == ExportFormat::Native {
        return convert(&ConvertArgs {
            file: args.file,
            subnet_map: args.subnet_map,
            out: None,
        });
    }
    let validated = match PolicySource::new(&args.file, args.subnet_map.clone()).load() {
        Ok(v) => v,
        Err(error) => {
            eprintln!("vaultfw: {error}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    let policy = &validated.policy;
    let exported = match policy::export_azure(policy, args.allow_short_ids) {
        Ok(exported) => exported,
        Err(error) => {
            eprintln!("vaultfw: {}: {error}", args.file.display());
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    for id in &exported.short_ids {
        eprintln!(
            "vaultfw: WARNING: virtual network rule {id:?} is written with its short id \
             (--allow-short-ids): ARM rejects it; give the policy [defaults] subscription and \
             resource_group to write its full ARM id"
        );
    }
    match &args.subnet_map_out {
        Some(path) => {
            let map = policy::export_subnet_map(policy);
            if let Err(error) = vaultfw::persist::write_atomically(path, &map) {
                eprintln!("vaultfw: {error}");
                return ExitCode::FAILURE;
            }
        }
        None => {
            // The JSON alone must read back as this policy: nothing is
            // dropped silently.
            let text = exported.json.to_string();
            let alone = policy::parse_azure_json(&text, None).map(|v| v.policy);
            let uncommented = without_comments(policy);
            match alone {
                Ok(read) if read == *policy => {}
                Ok(read) if read == uncommented => eprintln!(
                    "vaultfw: warning: the IP rules' comments and expiry are not in Azure's JSON; \
                     give --subnet-map-out FILE to keep them"
                ),
                _ => {
                    eprintln!(
                        "vaultfw: {}: the JSON alone would not read back as this policy: {} \
                         and vaultfw's own settings are in the subnet map; give --subnet-map-out \
                         FILE; nothing written",
                        args.file.display(),
                        policy::needs_subnet_map(policy).unwrap_or("its settings")
                    );
                    return ExitCode::from(exit::INVALID_INPUT);
                }
            }
        }
    }
    println!("{:#}", exported.json);
    ExitCode::SUCCESS
}

/// `policy` without rule comments and expiry (what Azure's JSON has no
/// field for).
fn without_comments(policy: &policy::Policy) -> policy::Policy {
    let mut bare = policy.clone();
    for rule in &mut bare.ip_rules {
        rule.comment = None;
        rule.expires_at = None;
    }
    bare
}

/// `vaultfw convert` (and `export --format native`): the policy in the
/// native format, with a comment naming its source.
fn convert(args: &ConvertArgs) -> ExitCode {
    let source = PolicySource::new(&args.file, args.subnet_map.clone());
    let text = match source.read() {
        Ok(text) => text,
        Err(error) => {
            eprintln!("vaultfw: {error}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
    };
    let validated = match text.validate() {
        Ok(v) => v,
        Err(error) => {
            eprintln!("vaultfw: {error}");
            return ExitCode::from(exit::INVALID_INPUT);
        }
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
    match &args.out {
        Some(path) => {
            if let Err(error) = vaultfw::persist::write_atomically(path, &native) {
                eprintln!("vaultfw: {error}");
                return ExitCode::FAILURE;
            }
        }
        None => print!("{native}"),
    }
    ExitCode::SUCCESS
}

fn validate(args: ValidateArgs) -> ExitCode {
    match PolicySource::new(&args.file, args.subnet_map.clone()).load() {
        Ok(validated) => {
            if !args.force
                && let Some(port) = vaultfw::cli::session::session_port()
                && let Some(refusal) =
                    vaultfw::cli::session::guards_session_port(&validated.policy, port)
            {
                eprintln!("vaultfw: {}: {refusal}", args.file.display());
                return ExitCode::from(exit::INVALID_INPUT);
            }
            match args.output {
                OutputFormat::Json => {
                    let mut policy = serde_json::to_value(&validated.policy).unwrap_or_default();
                    // Thousands of trusted prefixes say less than their count.
                    let trusted = &validated.policy.trusted_services;
                    policy["trusted_services"]["prefixes"] =
                        serde_json::json!(trusted.prefixes.len());
                    let doc = serde_json::json!({
                        "valid": true,
                        "policy": policy,
                        "warnings": validated.warnings,
                    });
                    println!("{doc:#}");
                }
                OutputFormat::Table => print_validated(&args, &validated),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            match (args.output, &error) {
                (OutputFormat::Json, policy::LoadError::Invalid { errors, .. }) => {
                    let doc = serde_json::json!({ "valid": false, "errors": errors.0 });
                    println!("{doc:#}");
                }
                (OutputFormat::Json, error) => {
                    let doc = serde_json::json!({ "valid": false, "errors": [{ "path": "", "value": args.file, "reason": error.to_string(), "fix": "give the path of a readable policy file" }] });
                    println!("{doc:#}");
                }
                _ => eprintln!("vaultfw: {error}"),
            }
            ExitCode::from(exit::INVALID_INPUT)
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
    for rule in &p.virtual_network_rules {
        let prefixes: Vec<String> = rule
            .address_prefixes
            .iter()
            .map(|n| n.to_string())
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
            "  trusted services ({}): {} IPv4 prefixes, {} IPv6 skipped{}",
            names.join(", "),
            trusted.prefixes.len(),
            trusted.ipv6_skipped,
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
