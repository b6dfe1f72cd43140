//! Command-line types (clap). Parsing only; `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::paths::{DEFAULT_PIN_DIR, DEFAULT_SOCKET};

pub mod man_pages;
pub mod network_rule;
pub mod observe;
pub mod output;
pub mod remote;
pub mod rule_table;
pub mod session;

pub use network_rule::{NetworkRuleArgs, NetworkRuleVerb};
pub use observe::{LogsArgs, StatsArgs};
pub use remote::{
    ApplyArgs, CompletionsArgs, DetachArgs, ShowArgs, ShowCmd, SocketArgs, UpdateArgs,
};

/// vaultfw: Azure Key Vault's network firewall for any Linux service host,
/// enforced by an XDP program on the host's NIC.
#[derive(Debug, Parser)]
#[command(name = "vaultfw", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the firewall daemon: load the XDP program, apply the policy,
    /// attach to the interfaces, log verdict counters.
    ///
    /// Example: vaultfw run --iface all --policy /etc/vaultfw/policy.toml
    ///
    /// Example: vaultfw run --iface eth0 --iface eth1 --policy /etc/vaultfw/policy.toml
    Run(RunArgs),
    /// Check a policy file without touching the kernel. Exit 0 when valid,
    /// 2 when not (each error names the value's path, the value, the reason
    /// and the fix).
    ///
    /// Example: vaultfw validate /etc/vaultfw/policy.toml
    Validate(ValidateArgs),
    /// Write a policy in Azure's JSON (plus the subnet map), to apply to a
    /// real vault or to round-trip back; or (`--format native`, the same as
    /// `vaultfw convert`) in the native TOML format.
    ///
    /// Subnet ids are written as full ARM ids (short ones expanded with the
    /// policy's `[defaults]`); a short id that cannot be expanded is refused
    /// unless --allow-short-ids. Without --subnet-map-out, an export whose
    /// JSON alone would not read back as the same policy (subnet rules,
    /// private endpoints, vaultfw's own settings) is refused; one that
    /// would lose only rule comments and expiry warns.
    ///
    /// Example: vaultfw export policy.toml --format azure --subnet-map-out subnets.toml > vault.json
    Export(ExportArgs),
    /// Convert a vault's Azure JSON (`az keyvault show`, with its subnet
    /// map) to the native TOML format, losslessly, with a comment naming
    /// the vault; `export --format native` does the same. A daemon serving
    /// Azure JSON refuses CLI changes and names this command: convert once,
    /// then run on the native file.
    ///
    /// Example: vaultfw convert vault.json --subnet-map subnets.toml --out /etc/vaultfw/policy.toml
    Convert(ConvertArgs),
    /// IP flow verify: run frames through the real XDP program with
    /// BPF_PROG_TEST_RUN against a policy (nothing is attached) and print
    /// each verdict, its reason (the counter name) and the rule that matched.
    /// Frames come from flags or from a pcap/pcapng capture. Exit 0 when
    /// every frame was judged, 1 when the kernel and the reference model
    /// disagree, 2 on invalid input, 4 when the kernel refuses the program.
    ///
    /// Example: vaultfw check --policy policy.toml --src 198.51.100.7 --dst 203.0.113.10 --proto tcp --dport 443
    ///
    /// Example: vaultfw check --policy policy.toml --pcap capture.pcap --output json --explain
    Check(CheckArgs),
    /// Add, remove or list network rules of the running daemon (the
    /// `az keyvault network-rule` verbs). Changes are validated, applied
    /// atomically, and written back to the policy file.
    ///
    /// Example: vaultfw network-rule add --ip-address 203.0.113.7
    ///
    /// Example: vaultfw network-rule add --vnet-name vnet-prod --subnet app --subnet-prefix 10.1.2.0/24 --endpoint eth1
    ///
    /// Example: vaultfw network-rule remove --ip-address 203.0.113.7/32
    ///
    /// Example: vaultfw network-rule list --output json
    NetworkRule(NetworkRuleArgs),
    /// Change the default action and/or the trusted-services bypass.
    ///
    /// Example: vaultfw update --default-action Deny --bypass None
    Update(UpdateArgs),
    /// Apply a whole policy file; with --confirm-within it rolls back by
    /// itself unless `vaultfw confirm` arrives in time (a lockout guard).
    ///
    /// Example: vaultfw apply new-policy.toml --confirm-within 60s
    Apply(ApplyArgs),
    /// Confirm a pending `apply --confirm-within`. Idempotent: with
    /// nothing pending it exits 0 and says so (`"confirmed": false`).
    ///
    /// Example: vaultfw confirm
    Confirm(SocketArgs),
    /// Show the policy in force, its generation, and each interface's XDP
    /// mode as the kernel reports it; says whether the host is filtered even
    /// when no daemon runs.
    ///
    /// Example: vaultfw show --output json
    Show(ShowCmd),
    /// Verdict counter totals (in total and per interface) and the access
    /// log's accounting; with --watch, a live view of the rates per second.
    /// With no daemon running, the pinned counters (exit 3).
    ///
    /// Example: vaultfw stats
    ///
    /// Example: vaultfw stats --watch --interval 2
    Stats(StatsArgs),
    /// The deny access log the daemon keeps in memory (its last 10,000
    /// records): one line per refused connection attempt — time, interface,
    /// VLAN, addresses, ports, protocol, reason. --output json prints one
    /// JSON object per line, as the --access-log file holds them.
    ///
    /// Example: vaultfw logs --since 10m
    ///
    /// Example: vaultfw logs --follow --output json
    Logs(LogsArgs),
    /// Remove the filter from every interface and unpin everything (through
    /// the daemon if it runs, which then stops; directly otherwise).
    ///
    /// Example: vaultfw detach
    Detach(DetachArgs),
    /// Print a shell completion script.
    ///
    /// Example: vaultfw completions bash > /etc/bash_completion.d/vaultfw
    Completions(CompletionsArgs),
    /// Write the man pages into DIR (for packaging).
    #[command(hide = true)]
    ManPages(man_pages::ManPagesArgs),
}

/// `vaultfw run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Interface whose ingress traffic is filtered (repeat for several), or
    /// `all`: every interface but lo, including tunnel devices and
    /// interfaces that appear later. The endpoint interfaces of the
    /// policy's subnet rules are filtered in any case.
    ///
    /// Example: --iface all
    #[arg(long = "iface", value_name = "IFACE|all", required = true)]
    pub interfaces: Vec<String>,
    /// Policy file: native TOML, or a vault's Azure JSON (with
    /// --subnet-map).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// XDP attach mode: auto tries native and falls back to generic with a
    /// warning.
    #[arg(long, value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeArg,
    /// The XDP program's own diagnostics, forwarded into the daemon log
    /// (target `vaultfw::bpf`): `error` reports map lookups that cannot
    /// fail but did, `debug` also every malformed frame denied (one record
    /// per frame: for diagnosis). `off` costs the hot path nothing.
    #[arg(long, value_enum, default_value = "off")]
    pub bpf_log_level: BpfLogLevelArg,
    /// Seconds between verdict-counter log lines.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub stats_interval: u64,
    /// For an Azure JSON policy: the subnet map (TOML) giving each ARM
    /// subnet id its prefixes and service endpoint.
    #[arg(long, value_name = "FILE")]
    pub subnet_map: Option<PathBuf>,
    /// Pin directory on bpffs (links and maps; created 0700).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Control socket (root only).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// What stopping the daemon does: keep the pinned filter in force
    /// (a crash, stop or upgrade never opens the vault), or detach it.
    #[arg(long, value_enum, default_value = "keep")]
    pub on_exit: OnExitArg,
    /// Do not reload when the policy file changes (SIGHUP still does).
    #[arg(long)]
    pub no_watch: bool,
    /// Access-log events per second per CPU, enforced in the kernel (token
    /// bucket); the rest are counted as events_dropped. 0 turns the access
    /// log off.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub event_rate: u32,
    /// Also log allowed connection attempts (for audits), under the same
    /// rate limit.
    #[arg(long)]
    pub log_allowed: bool,
    /// Let pass traffic this host forwards (it is not addressed to the
    /// host's data plane): a data-plane frame the policy would drop passes,
    /// counted as pass_forwarded, when the kernel's routing would forward
    /// it out of the host. For hosts that route for pods or containers
    /// (with --iface all their own HTTPS to elsewhere crosses the filter).
    ///
    /// Off by default, so nothing passes by a path the filter cannot see:
    /// the routing lookup runs before netfilter, so traffic that a DNAT
    /// sends to this host (a Kubernetes Service in iptables mode in front
    /// of a host-network data plane, TPROXY) looks forwarded and would pass
    /// unjudged. Leave it off where that can happen.
    ///
    /// Example: vaultfw run --iface all --pass-forwarded --policy /etc/vaultfw/policy.toml
    #[arg(long)]
    pub pass_forwarded: bool,
    /// How the data plane finds an IPv4 source's rules: `compiled` walks a
    /// compiled prefix table (a direct array indexed by the source's top
    /// bits, then a short binary search: one walk answers every table of a
    /// scope); `trie` walks the kernel's LPM tries (one per table, up to
    /// 32 nodes each), allocated per entry where the compiled table is
    /// allocated for the worst case of `limits`. Both give the same
    /// verdicts; IPv6 always uses the tries. A restart with the other
    /// value keeps the pins and rewrites the tables.
    ///
    /// Example: vaultfw run --lookup trie --policy /etc/vaultfw/policy.toml
    #[arg(long, value_enum, default_value_t = Lookup::DEFAULT)]
    pub lookup: Lookup,
    /// Append the access log (one JSON object per line) to FILE instead of
    /// stdout; SIGHUP reopens it (for logrotate).
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// Also append the audit trail (one JSON record per change request:
    /// who, what, generations, outcome) to FILE; it always goes to the
    /// daemon log too. Never written through a link; created 0640; SIGHUP
    /// reopens it (for logrotate).
    ///
    /// Example: --audit-log /var/log/vaultfw/audit.log
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Form of the daemon log: JSON lines (ECS field names), text for
    /// people, or native journal entries. Default: journald when stderr
    /// is the journal (a systemd unit), json otherwise.
    ///
    /// Example: --log-format text
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// Serve Prometheus metrics on http://ADDR/metrics (off by default).
    /// Only loopback addresses unless --metrics-allow-remote.
    ///
    /// Example: --metrics-addr 127.0.0.1:9464
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Allow --metrics-addr to be a non-loopback address (the metrics show
    /// the rules and who hits them).
    #[arg(long, requires = "metrics_addr")]
    pub metrics_allow_remote: bool,
}

/// `vaultfw validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Policy file to check: native TOML, or a vault's Azure JSON
    /// (`az keyvault show`, or its `properties.networkAcls`).
    pub file: PathBuf,
    /// For Azure JSON: the subnet map giving each ARM subnet id its
    /// prefixes and service endpoint.
    #[arg(long, value_name = "FILE")]
    pub subnet_map: Option<PathBuf>,
    /// Accept a policy that guards the port this SSH session came in on.
    #[arg(long)]
    pub force: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// `vaultfw export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The policy to convert (native TOML or Azure JSON).
    pub file: PathBuf,
    /// For Azure JSON input: its subnet map.
    #[arg(long, value_name = "FILE")]
    pub subnet_map: Option<PathBuf>,
    /// What to write.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// With `--format azure`: also write the subnet map (prefixes and
    /// endpoints ARM ids do not carry, comments and expiry) to this file.
    #[arg(long, value_name = "FILE")]
    pub subnet_map_out: Option<PathBuf>,
    /// Output format: `table` prints the exported document itself (to
    /// redirect into a file); `json` wraps it as `{"ok":true,"verb":"export",
    /// "document":...}` like every verb's JSON.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// With `--format azure`: write a short subnet id (`vnet/subnets/s`)
    /// that the policy's `[defaults]` cannot expand as it is, with a
    /// warning (ARM rejects it; the subnet map reads it back).
    #[arg(long)]
    pub allow_short_ids: bool,
}

/// `vaultfw convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// The policy to convert: a vault's Azure JSON (or a native policy,
    /// rewritten in canonical form).
    pub file: PathBuf,
    /// For Azure JSON input: its subnet map.
    #[arg(long, value_name = "FILE")]
    pub subnet_map: Option<PathBuf>,
    /// Write the native policy to this file (atomically) instead of
    /// standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Output format: `table` prints the native policy itself; `json`
    /// wraps it as `{"ok":true,"verb":"convert","document":"..."}`.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

pub use crate::compile::cpt::Lookup;

/// `vaultfw export --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// `{"properties":{"publicNetworkAccess":...,"networkAcls":{...}}}` as
    /// the ARM API takes it.
    Azure,
    /// The native TOML format (what `vaultfw convert` writes).
    Native,
}

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable text.
    Table,
    /// JSON (docs/output.md): one document `{"ok":true,"verb":...}` or
    /// `{"ok":false,"error":...}`; JSON lines, one record a line, for the
    /// streams (`logs`, `stats --watch`, `check`).
    Json,
}

/// One address of a synthesized frame (`check --src`, `--dst`): IPv4 or
/// IPv6 text as `std::net::IpAddr` reads it. Anything else is refused with
/// what it is and the fix: a zone id, a range (CIDR or dash), an address
/// with a port, a host name (no name is resolved, as for a policy's rules).
fn frame_address(text: &str) -> Result<std::net::IpAddr, String> {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let fix = "give one address, e.g. 203.0.113.7 or 2001:db8::7";
    let address = |t: &str| t.trim().parse::<IpAddr>().ok();
    if let Some((addr, zone)) = text.split_once('%')
        && addr.parse::<Ipv6Addr>().is_ok()
    {
        Err(format!(
            "a zone id (%{zone}) is not part of an address; fix: write {addr}, and give the \
             interface the frame arrives on with --iface"
        ))
    } else if let Some(first) = text
        .split_once('/')
        .and_then(|(a, _)| address(a))
        .or_else(|| {
            text.split_once('-')
                .and_then(|(a, b)| address(b).and(address(a)))
        })
    {
        Err(format!(
            "a range, not an address: a frame has one source and one destination; fix: {fix} \
             (one of the range, e.g. {first})"
        ))
    } else if let Ok(socket) = text.parse::<SocketAddr>() {
        Err(format!(
            "an address with a port; fix: give the address alone ({}) and the port with \
             --sport or --dport",
            socket.ip()
        ))
    } else if crate::policy::ipv4::is_host_name(text) {
        Err(format!(
            "a name, not an IP address: check judges a frame's addresses and resolves no name; \
             fix: {fix} (the name's address as `getent ahosts NAME` prints it)"
        ))
    } else {
        Err(format!("not an IPv4 or IPv6 address; fix: {fix}"))
    }
}

/// `vaultfw check`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("frames").required(true).args(["src", "pcap"])))]
pub struct CheckArgs {
    /// Policy file to judge the frames against: native TOML, or a vault's
    /// Azure JSON.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// For an Azure JSON policy: the subnet map.
    #[arg(long, value_name = "FILE")]
    pub subnet_map: Option<PathBuf>,
    /// Source address of a synthesized frame (IPv4 or IPv6).
    #[arg(long, value_name = "IP", requires_all = ["dst", "proto"], conflicts_with = "pcap", value_parser = frame_address)]
    pub src: Option<std::net::IpAddr>,
    /// Destination address of the synthesized frame (same IP version).
    #[arg(long, value_name = "IP", requires = "src", value_parser = frame_address)]
    pub dst: Option<std::net::IpAddr>,
    /// Protocol of the synthesized frame: a TCP SYN, a UDP datagram or an
    /// ICMP echo request.
    #[arg(long, value_enum, requires = "src")]
    pub proto: Option<CheckProto>,
    /// Destination port (TCP/UDP).
    #[arg(long, value_name = "N", requires = "src")]
    pub dport: Option<u16>,
    /// Source port (TCP/UDP; default 40000).
    #[arg(long, value_name = "N", requires = "src")]
    pub sport: Option<u16>,
    /// Put the synthesized frame behind an 802.1Q tag with this VLAN id.
    #[arg(long, value_name = "N", requires = "src", value_parser = clap::value_parser!(u16).range(1..=4094))]
    pub vlan: Option<u16>,
    /// Judge the frames as received on this interface (its ifindex is what
    /// interface-bound virtual network rules match).
    #[arg(long, value_name = "NAME")]
    pub iface: Option<String>,
    /// Judge every packet of this capture (pcap or pcapng, Ethernet).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Output format: a table, or JSON lines (one JSON object per frame
    /// and line; a failure is the error document of docs/output.md).
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// Also print the reference model's steps for each frame.
    #[arg(long)]
    pub explain: bool,
    /// How the program looks up IPv4 sources, as `vaultfw run --lookup`
    /// (`compiled` or `trie`): judge the frames through that data path
    /// (give the daemon's own when it runs with `--lookup trie`). Verdicts
    /// are the same; IPv6 always uses the tries.
    ///
    /// Example: vaultfw check --lookup trie --policy policy.toml --src 203.0.113.7 --dst 10.0.0.1 --proto tcp --dport 443
    #[arg(long, value_enum, default_value_t = Lookup::DEFAULT)]
    pub lookup: Lookup,
}

/// `vaultfw check --proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckProto {
    /// A TCP SYN.
    Tcp,
    /// A UDP datagram.
    Udp,
    /// An ICMP (ICMPv6 for IPv6) echo request.
    Icmp,
}

impl From<CheckProto> for crate::check::FlowProto {
    fn from(proto: CheckProto) -> Self {
        match proto {
            CheckProto::Tcp => Self::Tcp,
            CheckProto::Udp => Self::Udp,
            CheckProto::Icmp => Self::Icmp,
        }
    }
}

impl From<OutputFormat> for crate::check::ReportFormat {
    fn from(output: OutputFormat) -> Self {
        match output {
            OutputFormat::Table => Self::Table,
            OutputFormat::Json => Self::Json,
        }
    }
}

impl CheckArgs {
    /// The flags as `check` takes them.
    pub fn request(&self) -> crate::check::CheckRequest {
        crate::check::CheckRequest {
            policy: self.policy.clone(),
            subnet_map: self.subnet_map.clone(),
            src: self.src,
            dst: self.dst,
            proto: self.proto.map(Into::into),
            dport: self.dport,
            sport: self.sport,
            vlan: self.vlan,
            iface: self.iface.clone(),
            pcap: self.pcap.clone(),
            output: self.output.into(),
            explain: self.explain,
            lookup: self.lookup,
        }
    }
}

/// `vaultfw run --log-format`: clap's mirror of
/// [`crate::telemetry::logging::LogFormat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// One JSON object per line (Elastic Common Schema field names; see
    /// docs/logging.md) on stdout.
    Json,
    /// Human-readable lines on stdout.
    Text,
    /// Native journal entries with their priority (the default when
    /// stderr is the journal).
    Journald,
}

impl From<LogFormatArg> for crate::telemetry::logging::LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Json => Self::Json,
            LogFormatArg::Text => Self::Text,
            LogFormatArg::Journald => Self::Journald,
        }
    }
}

/// `vaultfw run --xdp-mode`: clap's mirror of
/// [`crate::dataplane::XdpModeRequest`] (clap types stay in `cli/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) XDP where the driver has it, else generic with a
    /// warning.
    Auto,
    /// Native XDP only; fail when the driver lacks it.
    Native,
    /// Generic (skb) XDP: works on every interface, slower.
    Generic,
}

impl From<XdpModeArg> for crate::dataplane::XdpModeRequest {
    fn from(arg: XdpModeArg) -> Self {
        match arg {
            XdpModeArg::Auto => Self::Auto,
            XdpModeArg::Native => Self::Native,
            XdpModeArg::Generic => Self::Generic,
        }
    }
}

/// `vaultfw run --bpf-log-level`: clap's mirror of
/// [`crate::dataplane::BpfLogLevel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BpfLogLevelArg {
    /// No records (default).
    Off,
    /// Map lookups that cannot fail but did.
    Error,
    /// As error (no warn records yet).
    Warn,
    /// As error (no info records yet).
    Info,
    /// Also every malformed frame denied.
    Debug,
}

impl From<BpfLogLevelArg> for crate::dataplane::BpfLogLevel {
    fn from(arg: BpfLogLevelArg) -> Self {
        match arg {
            BpfLogLevelArg::Off => Self::Off,
            BpfLogLevelArg::Error => Self::Error,
            BpfLogLevelArg::Warn => Self::Warn,
            BpfLogLevelArg::Info => Self::Info,
            BpfLogLevelArg::Debug => Self::Debug,
        }
    }
}

/// `vaultfw run --on-exit`: clap's mirror of [`crate::daemon::OnExit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExitArg {
    /// Leave the pinned program and policy in force (default).
    Keep,
    /// Detach and remove every pin.
    Detach,
}

impl From<OnExitArg> for crate::daemon::OnExit {
    fn from(arg: OnExitArg) -> Self {
        match arg {
            OnExitArg::Keep => Self::Keep,
            OnExitArg::Detach => Self::Detach,
        }
    }
}
