//! `vaultfw check`: IP flow verify. Loads the embedded XDP program, applies
//! a policy to it (nothing is attached), runs each frame through it with
//! BPF_PROG_TEST_RUN and reads which verdict counter moved: that counter is
//! the reason. The source is then looked up in the policy to name the rule
//! that matched, and the reference model ([`crate::reference`]) judges the
//! same frame: its steps are the explanation (`--explain`), and a frame on
//! which the two disagree is reported loudly — it is a bug in vaultfw.
//!
//! Exit codes: 0 every frame judged and agreed on, 1 a disagreement (or the
//! counters did not move as they must), 2 invalid input (policy, flags,
//! capture), 4 the kernel refused the program or a test run.

mod input;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use firewall_common::Verdict;

pub use input::{FlowFlags, FlowProto, Frame, read_capture, synthesize};
pub use report::{FrameResult, describe_rule};

use crate::compile::{CompiledTables, RuleTable, compile, hit_slots_for, rule_table};
use crate::dataplane::{Capacity, Dataplane, DataplaneError};
use crate::policy::{LoadError, Policy};
use crate::{exit, links, reference};

/// The ifindex BPF_PROG_TEST_RUN reports as `ingress_ifindex` when it is
/// not given one: the loopback device's, which is 1 in every network
/// namespace (`LOOPBACK_IFINDEX`).
pub const TEST_RUN_IFINDEX: u32 = 1;

/// The shortest frame BPF_PROG_TEST_RUN accepts for XDP (an Ethernet
/// header); no NIC hands over a shorter one.
pub const MIN_TEST_RUN_FRAME: usize = 14;

/// The longest frame BPF_PROG_TEST_RUN hands to an XDP program in one
/// buffer: a 4096-byte page less the 256-byte XDP headroom and the 320
/// bytes of `skb_shared_info`. The rest of a longer frame goes to fragments
/// the program (not built for multi-buffer XDP) never sees, so it would be
/// judged cut. No NIC hands such a frame to single-buffer XDP either: a
/// capture holds one when GRO or TSO merged segments before tcpdump saw
/// them.
pub const MAX_TEST_RUN_FRAME: usize = 3520;

/// What `vaultfw check` is asked to do (the command line's flags, as
/// `cli` read them).
#[derive(Clone, Debug)]
pub struct CheckRequest {
    /// The policy file: native TOML or a vault's Azure JSON.
    pub policy: PathBuf,
    /// For an Azure JSON policy: the subnet map.
    pub subnet_map: Option<PathBuf>,
    /// Source address of a synthesized frame.
    pub src: Option<std::net::IpAddr>,
    /// Destination address of the synthesized frame.
    pub dst: Option<std::net::IpAddr>,
    /// The synthesized frame's kind.
    pub proto: Option<FlowProto>,
    /// Destination port (TCP/UDP).
    pub dport: Option<u16>,
    /// Source port (TCP/UDP).
    pub sport: Option<u16>,
    /// An 802.1Q tag (1–4094) for the synthesized frame.
    pub vlan: Option<u16>,
    /// The interface the frames are judged as received on.
    pub iface: Option<String>,
    /// A capture whose every packet is judged.
    pub pcap: Option<PathBuf>,
    /// How the results are printed.
    pub output: ReportFormat,
    /// Also print the reference model's steps.
    pub explain: bool,
    /// How the program looks up IPv4 sources (`--lookup`).
    pub lookup: crate::compile::cpt::Lookup,
}

/// How `check` prints its results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// Human-readable text.
    Table,
    /// One JSON object per frame and line.
    Json,
}

/// Why `check` could not judge the frames.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The policy file cannot be read or is invalid.
    #[error("{source}")]
    Policy {
        /// What the loader said (names the file and every error).
        #[from]
        source: LoadError,
    },
    /// The flags do not describe a frame.
    #[error("{message}")]
    Flags {
        /// What is wrong and what to give instead.
        message: String,
    },
    /// The capture file cannot be read.
    #[error("cannot read the capture {}: {source}", path.display())]
    CaptureIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The capture file is not one `check` can use.
    #[error("{}: {reason}; {fix}", path.display())]
    Capture {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// What to do.
        fix: String,
    },
    /// `--iface` names no interface, or cannot be honoured.
    #[error("--iface {name}: {reason}")]
    Interface {
        /// The name given.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Loading, applying or running the program failed.
    #[error("cannot {operation}: {source}")]
    Dataplane {
        /// What was being done.
        operation: &'static str,
        /// The dataplane's error.
        #[source]
        source: DataplaneError,
    },
    /// A test run did not move exactly one verdict counter by one.
    #[error(
        "frame {index}: the test run moved the verdict counters {moved} instead of exactly one \
         by one (is another process running frames through the same program?)"
    )]
    Counters {
        /// The frame.
        index: usize,
        /// The counters that moved, with their deltas.
        moved: String,
    },
}

impl CheckError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckError::Policy { .. }
            | CheckError::Flags { .. }
            | CheckError::CaptureIo { .. }
            | CheckError::Capture { .. }
            | CheckError::Interface { .. } => exit::INVALID_INPUT,
            CheckError::Dataplane { source, .. } if source.is_kernel_refusal() => {
                exit::KERNEL_REFUSED
            }
            CheckError::Dataplane { .. } | CheckError::Counters { .. } => 1,
        }
    }
}

/// `vaultfw check`: judges, prints, and returns the exit code.
pub fn main(args: &CheckRequest) -> ExitCode {
    match check(args) {
        Ok(results) => report(args, &results),
        Err(error) => {
            eprintln!("vaultfw check: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Prints the results of [`check`] and returns the exit code: 0, or
/// [`exit::DISAGREEMENT`] when the kernel and the model disagree on a
/// frame (each disagreement is also said on stderr).
pub fn report(args: &CheckRequest, results: &[FrameResult]) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let printed = match args.output {
        ReportFormat::Table => report::print_table(&mut out, results, args.explain, args.lookup),
        ReportFormat::Json => report::print_json(&mut out, results, args.explain, args.lookup),
    };
    if let Err(error) = printed {
        eprintln!("vaultfw: cannot write the report: {error}");
        return ExitCode::FAILURE;
    }
    let disagreements: Vec<&FrameResult> = results.iter().filter(|r| !r.agrees()).collect();
    for result in &disagreements {
        eprintln!("{}", report::disagreement_message(result));
    }
    if disagreements.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::DISAGREEMENT)
    }
}

/// Loads the policy and the frames, runs every frame through the kernel
/// program and the model, and returns one result per frame.
pub fn check(args: &CheckRequest) -> Result<Vec<FrameResult>, CheckError> {
    let validated =
        crate::policy::PolicySource::new(&args.policy, args.subnet_map.clone()).load()?;
    let policy = validated.policy;
    let frames = match (&args.pcap, args.src) {
        (Some(path), _) => read_capture(path)?,
        (None, Some(src)) => {
            let flow = FlowFlags {
                src,
                dst: args.dst.ok_or_else(|| flag_missing("--dst"))?,
                proto: args.proto.ok_or_else(|| flag_missing("--proto"))?,
                dport: args.dport,
                sport: args.sport,
                vlan: args.vlan,
            };
            vec![synthesize(&flow)?]
        }
        (None, None) => return Err(flag_missing("--src ... or --pcap")),
    };
    let ingress_ifindex = match &args.iface {
        Some(name) => resolve_interface(name)?,
        None => TEST_RUN_IFINDEX,
    };
    let interfaces = links::endpoint_interfaces(&policy);
    let tables = compile(&policy, &interfaces, &crate::clock::MonotonicClock::now())
        .with_compiled_lookup(args.lookup == crate::compile::cpt::Lookup::Compiled);
    // Sized like the daemon sizes them, so the rule-hit slots `compile`
    // lays out for the policy's limits all exist.
    let limit = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut dataplane = Dataplane::load(
        Capacity::for_limits(
            limit(policy.limits.ip_rules),
            limit(policy.limits.virtual_network_rules),
        )
        .with_ipv6_rules(limit(policy.limits.ipv6_rules))
        .with_lookup(args.lookup),
    )
    .map_err(|source| CheckError::Dataplane {
        operation: "load the XDP program",
        source,
    })?;
    dataplane
        .apply(&tables, 1)
        .map_err(|source| CheckError::Dataplane {
            operation: "apply the policy to the program's maps",
            source,
        })?;
    let rules = rule_table(&policy, &interfaces, &tables, hit_slots_for(&policy));
    let context = Context {
        policy: &policy,
        tables: &tables,
        rules: &rules,
        interfaces: &interfaces,
        ingress_ifindex,
        ingress_name: args.iface.as_deref(),
    };
    frames
        .into_iter()
        .enumerate()
        .map(|(index, frame)| judge_frame(&dataplane, &context, index, frame))
        .collect()
}

/// What every frame is judged against.
struct Context<'a> {
    policy: &'a Policy,
    tables: &'a CompiledTables,
    rules: &'a RuleTable,
    interfaces: &'a links::InterfaceIndex,
    ingress_ifindex: u32,
    /// `--iface`, when given.
    ingress_name: Option<&'a str>,
}

/// Why a refused IPv4 `source` that a subnet rule lists was not admitted:
/// a subnet rule admits only frames received on its endpoint (Key
/// Vault's service endpoint), and this frame was judged as received
/// elsewhere — on the loopback device unless `--iface` names one. One
/// sentence per such rule, naming the way to judge it on the endpoint, or
/// that its endpoint interface does not exist on this host.
fn off_endpoint_notes<'a>(
    context: &'a Context<'_>,
    source: std::net::Ipv4Addr,
) -> impl Iterator<Item = String> + 'a {
    let judged_on = match context.ingress_name {
        Some(name) => format!("interface {name}"),
        None => "the loopback device (no --iface)".to_owned(),
    };
    context
        .policy
        .virtual_network_rules
        .iter()
        .filter_map(move |rule| {
            let prefix = rule.address_prefixes.iter().find(|p| p.contains(&source))?;
            let how = match rule.endpoint.interface.as_deref() {
                Some(name) if !context.interfaces.contains_key(name) => {
                    crate::compile::missing_endpoint_note(context.policy, name)
                }
                _ => "give the endpoint's --iface and --vlan to judge it there".to_owned(),
            };
            Some(format!(
                "source {source} is in subnet rule {} ({prefix}), which admits it only as \
                 received on its endpoint ({}); this frame was judged as received on \
                 {judged_on}: {how}",
                rule.id, rule.endpoint
            ))
        })
}

fn judge_frame(
    dataplane: &Dataplane,
    context: &Context<'_>,
    index: usize,
    frame: Frame,
) -> Result<FrameResult, CheckError> {
    // Judged at the kernel's clock, so a rule's expiry reads the same in
    // the model as in the program.
    let model = reference::judge(
        &frame.data,
        context.ingress_ifindex,
        context.tables,
        crate::clock::kernel_now_ns(),
    );
    let mut notes = Vec::new();
    if let Some(original) = frame.cut_from {
        notes.push(format!(
            "the capture kept {} of {original} bytes (snaplen): judged as cut",
            frame.data.len()
        ));
    }
    let unrunnable = if frame.data.len() < MIN_TEST_RUN_FRAME {
        Some(format!(
            "{} bytes: shorter than an Ethernet header, which no NIC delivers and the test run \
             refuses; not run",
            frame.data.len()
        ))
    } else if frame.data.len() > MAX_TEST_RUN_FRAME {
        Some(format!(
            "{} bytes: longer than a frame XDP sees in one buffer ({MAX_TEST_RUN_FRAME}); \
             segments merged by GRO/TSO before the capture (capture with `ethtool -K IFACE gro \
             off tso off`, or on the receiving side's NIC); not run",
            frame.data.len()
        ))
    } else {
        None
    };
    if let Some(note) = unrunnable {
        notes.push(note);
        return Ok(FrameResult {
            index,
            kernel: None,
            kernel_slots: Vec::new(),
            model,
            rule: None,
            notes,
            frame: frame.data,
        });
    }
    let kernel_error = |source| CheckError::Dataplane {
        operation: "run the frame through the program (BPF_PROG_TEST_RUN)",
        source,
    };
    let before = dataplane.verdict_totals().map_err(kernel_error)?;
    let hits_before = dataplane.rule_hits().map_err(kernel_error)?;
    let code = dataplane
        .test_run_on(&frame.data, context.ingress_ifindex)
        .map_err(kernel_error)?;
    let after = dataplane.verdict_totals().map_err(kernel_error)?;
    let hits_after = dataplane.rule_hits().map_err(kernel_error)?;
    // The per-rule counter that moved: the trie value the kernel matched.
    let moved_slots: Vec<u32> = hits_after
        .iter()
        .filter(|(slot, hits)| {
            hits.packets != hits_before.get(slot).map_or(0, |before| before.packets)
        })
        .map(|(slot, _)| *slot)
        .collect();
    let moved: Vec<(Verdict, u64)> = Verdict::ALL
        .iter()
        .map(|v| {
            let i = v.index() as usize;
            (*v, after[i].wrapping_sub(before[i]))
        })
        .filter(|(_, delta)| *delta != 0)
        .collect();
    let verdict = match moved.as_slice() {
        [(verdict, 1)] => *verdict,
        _ => {
            let moved = moved
                .iter()
                .map(|(v, d)| format!("{} +{d}", v.name()))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CheckError::Counters {
                index,
                moved: if moved.is_empty() {
                    "not at all".to_owned()
                } else {
                    moved
                },
            });
        }
    };
    if verdict.drops() || verdict == Verdict::AuditWouldDeny {
        let listed = reference::ipv4_source(&frame.data)
            .and_then(|source| Some((source, context.policy.refused_by_public_access(source)?)));
        if let Some((source, rule)) = listed {
            let why = format!(
                "source {source} is listed by ip rule {rule}, which does not apply: {}",
                crate::policy::PUBLIC_ACCESS_DISABLED
            );
            notes.push(why);
        } else if !context.policy.ip_rules_apply()
            && context.policy.default_action == crate::policy::DefaultAction::Allow
        {
            notes.push(format!(
                "default_action = Allow does not apply: {}",
                crate::policy::PUBLIC_ACCESS_DISABLED
            ));
        }
        if let Some(source) = reference::ipv4_source(&frame.data) {
            notes.extend(off_endpoint_notes(context, source));
        }
    }
    let rule = model
        .matched
        .filter(|m| m.kind.verdict() == verdict)
        .map(|m| describe_rule(context.policy, context.interfaces, context.rules, &m));
    Ok(FrameResult {
        index,
        kernel: Some((code, verdict)),
        kernel_slots: moved_slots,
        model,
        rule,
        notes,
        frame: frame.data,
    })
}

fn flag_missing(flag: &str) -> CheckError {
    CheckError::Flags {
        message: format!("{flag} is required to describe a frame"),
    }
}

fn resolve_interface(name: &str) -> Result<u32, CheckError> {
    nix::net::if_::if_nametoindex(name).map_err(|errno| CheckError::Interface {
        name: name.to_owned(),
        reason: format!("no such interface ({errno}); `ip link` lists them"),
    })
}
