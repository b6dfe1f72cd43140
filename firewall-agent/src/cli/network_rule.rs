//! `vaultfw network-rule add|remove|list`: the `az keyvault network-rule`
//! flags turned into the rule the daemon changes, and `list`'s tables.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::OutputFormat;
use super::output::{ErrorDetail, fail};
use super::remote::{SocketArgs, client_error, print_response, request};
use crate::control::client;
use crate::control::protocol::{Command, RuleSpec};
use crate::exit::Failure;

/// `network-rule list`'s verb name in JSON documents.
const LIST: &str = "network-rule list";

/// `vaultfw network-rule`.
#[derive(Debug, Args)]
pub struct NetworkRuleArgs {
    #[command(subcommand)]
    pub verb: NetworkRuleVerb,
}

/// `add`, `remove`, `list`.
#[derive(Debug, Subcommand)]
pub enum NetworkRuleVerb {
    /// Add IP rules, or a prefix of a subnet rule (creating the rule).
    ///
    /// As `az keyvault network-rule add`: `--ip-address` takes several
    /// addresses (`--ip-address a b` or `a,b`), added as one atomic
    /// change; `--vnet-name NAME --subnet NAME` (or `--subnet` with the
    /// full ARM id) names the subnet rule. Where it differs from `az`: a
    /// subnet rule here needs the subnet's prefix (`--subnet-prefix`) and
    /// service endpoint (`--endpoint`), which Azure knows and a host does
    /// not; `--comment` and `--expires-at` exist because vaultfw keeps
    /// them with the rule (Key Vault has no such fields).
    ///
    /// Example: vaultfw network-rule add --ip-address 203.0.113.7 198.51.100.0/24 --comment "build agents" --expires-at 8h
    ///
    /// Example: vaultfw network-rule add --vnet-name vnet-prod --subnet app --subnet-prefix 10.1.2.0/24 --endpoint eth1
    Add(AddRuleArgs),
    /// Remove IP rules, a prefix of a subnet rule, or a whole subnet rule
    /// (named short, `vnet/subnets/s`, or by its full ARM id, in any case).
    ///
    /// Example: vaultfw network-rule remove --subnet /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.Network/virtualNetworks/vnet-prod/subnets/app
    Remove(RuleArgs),
    /// List the rules the kernel serves (read back from the maps).
    List(SocketArgs),
}

impl NetworkRuleVerb {
    /// The verb as JSON documents name it (`"verb"`).
    fn name(&self) -> &'static str {
        match self {
            NetworkRuleVerb::Add(_) => "network-rule add",
            NetworkRuleVerb::Remove(_) => "network-rule remove",
            NetworkRuleVerb::List(_) => LIST,
        }
    }
}

/// `network-rule add`: a rule and what only adding takes.
#[derive(Debug, Args)]
pub struct AddRuleArgs {
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Free text kept with the IP rules (not in `az`: Key Vault rules
    /// have no comment).
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
    /// When the IP rules expire and are removed by the daemon: an RFC 3339
    /// time (`2027-01-31T00:00:00Z`) or a duration from now (`8h`, `30m`).
    /// Not in `az`.
    #[arg(long, value_name = "TIME|DURATION")]
    pub expires_at: Option<String>,
    /// As in `az`: accept the subnet rule while its service endpoint is
    /// missing. Here the endpoint is a host interface: the rule is kept
    /// (`ignore_missing_endpoint = true`) and matches nothing until the
    /// interface appears, instead of the change being refused.
    #[arg(long)]
    pub ignore_missing_vnet_service_endpoint: bool,
}

/// A rule on the command line.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Public IPv4 or IPv6 addresses or CIDR ranges (`203.0.113.7`,
    /// `203.0.113.0/24`, `2001:db8::/48`): several after one flag,
    /// comma-separated, or the flag repeated. IPv6 ones join the same
    /// `ip_rules` list and count against `limits.ipv6_rules` (README,
    /// "IPv6 rules").
    #[arg(long, value_name = "ADDRESS", num_args = 1.., value_delimiter = ',')]
    pub ip_address: Vec<String>,
    /// The subnet's virtual network (with `--subnet NAME`), as in `az`.
    #[arg(long, value_name = "NAME", requires = "subnet")]
    pub vnet_name: Option<String>,
    /// The subnet: its name (with `--vnet-name`) or its full ARM id, as in
    /// `az`. (Before, `--subnet` was the prefix: that form still works
    /// with `--vnet-rule` when the value is a prefix; use `--subnet-prefix`.)
    #[arg(long, value_name = "NAME|ID")]
    pub subnet: Option<String>,
    /// A subnet rule id, short (`vnet-prod/subnets/app`) or a full ARM
    /// id, in any case (vaultfw's form of `--vnet-name`/`--subnet`).
    #[arg(long, value_name = "ID")]
    pub vnet_rule: Option<String>,
    /// A prefix of the subnet rule (`10.1.2.0/24`): required to add (a
    /// host cannot look the subnet up as Azure does); to remove, absent
    /// means the whole rule.
    #[arg(long, value_name = "PREFIX")]
    pub subnet_prefix: Option<String>,
    /// The subnet's service endpoint: `IFACE`, `vlan:N` or `IFACE,vlan:N`.
    #[arg(long, value_name = "ENDPOINT")]
    pub endpoint: Option<String>,
    /// Refuse unless the daemon serves this generation (no lost update).
    #[arg(long, value_name = "N")]
    pub if_generation: Option<u64>,
    #[command(flatten)]
    pub socket: SocketArgs,
}

impl RuleArgs {
    /// The rule the flags name; the error names the flags and the fix.
    fn spec(&self, ignore_missing_endpoint: bool) -> Result<RuleSpec, String> {
        let subnet_flags = self.vnet_rule.is_some()
            || self.vnet_name.is_some()
            || self.subnet.is_some()
            || self.subnet_prefix.is_some()
            || self.endpoint.is_some();
        if let Some((first, more)) = self.ip_address.split_first() {
            if subnet_flags {
                return Err(
                    "--ip-address names IP rules: give the subnet flags (--vnet-name, \
                            --subnet, --vnet-rule, --subnet-prefix, --endpoint) in another call"
                        .into(),
                );
            }
            return Ok(RuleSpec::Ip {
                address: first.clone(),
                more: more.to_vec(),
                comment: None,
                expires_at: None,
            });
        }
        let mut prefix = self.subnet_prefix.clone();
        let id = match (&self.vnet_rule, &self.vnet_name, &self.subnet) {
            (Some(_), Some(_), _) => {
                return Err(
                    "give --vnet-rule ID or --vnet-name NAME --subnet NAME, not both".into(),
                );
            }
            (None, Some(vnet), Some(subnet)) => {
                // Names, as `az` takes them: one ARM path segment each.
                for (flag, name) in [("--vnet-name", vnet), ("--subnet", subnet)] {
                    if name.is_empty() || name.contains('/') {
                        return Err(format!(
                            "{flag} {name:?} is not a name: with --vnet-name give the virtual \
                             network's and the subnet's names (no `/`), or give the full ARM \
                             id alone with --subnet"
                        ));
                    }
                }
                format!("{vnet}/subnets/{subnet}")
            }
            (Some(id), None, None) => id.clone(),
            // The old meaning of --subnet (a prefix), kept while unambiguous.
            (Some(id), None, Some(subnet)) => {
                if prefix.is_some() || crate::policy::parse_subnet_prefix("", subnet).is_err() {
                    return Err(format!(
                        "--subnet {subnet:?} with --vnet-rule is ambiguous: give a prefix with \
                         --subnet-prefix, or name the subnet with --vnet-name NAME --subnet NAME"
                    ));
                }
                prefix = Some(subnet.clone());
                id.clone()
            }
            (None, None, Some(subnet)) if subnet.starts_with('/') => subnet.clone(),
            (None, None, Some(subnet)) => {
                return Err(format!(
                    "--subnet {subnet:?} is a subnet name: give its --vnet-name as well (or the \
                     full ARM id); for a prefix use --subnet-prefix"
                ));
            }
            (None, _, None) => {
                return Err(
                    "give --ip-address ADDRESS..., or the subnet rule: --vnet-name NAME \
                            --subnet NAME, --subnet FULL_ARM_ID or --vnet-rule ID"
                        .into(),
                );
            }
        };
        Ok(RuleSpec::Vnet {
            id,
            subnet: prefix,
            endpoint: self.endpoint.clone(),
            ignore_missing_endpoint,
        })
    }
}

/// `--expires-at` as the daemon takes it: RFC 3339 (a duration counts
/// from now).
fn expiry(text: &str) -> Result<String, crate::policy::PolicyError> {
    if let Ok(after) = humantime::parse_duration(text) {
        let at = std::time::SystemTime::now() + after;
        return Ok(humantime::format_rfc3339_seconds(at).to_string());
    }
    crate::clock::parse_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|reason| {
            // Without a digit it was meant as neither form.
            let reason = if text.bytes().any(|b| b.is_ascii_digit()) {
                reason
            } else {
                "it is neither a duration nor an RFC 3339 time".to_owned()
            };
            crate::policy::PolicyError::new(
                "--expires-at",
                text,
                reason,
                crate::clock::EXPIRES_AT_FORMS,
            )
        })
}

/// Runs `vaultfw network-rule ...`.
pub fn network_rule(args: &NetworkRuleArgs) -> ExitCode {
    let verb = args.verb.name();
    let refuse = |output: OutputFormat, message: String| {
        fail(
            output,
            verb,
            ErrorDetail::new(Failure::InvalidInput, message),
        )
    };
    match &args.verb {
        NetworkRuleVerb::Add(add) => {
            let rule = &add.rule;
            let mut spec = match rule.spec(add.ignore_missing_vnet_service_endpoint) {
                Ok(spec) => spec,
                Err(message) => return refuse(rule.socket.output, message),
            };
            match &mut spec {
                RuleSpec::Ip {
                    comment,
                    expires_at,
                    ..
                } => {
                    *comment = add.comment.clone();
                    *expires_at = match add.expires_at.as_deref().map(expiry).transpose() {
                        Ok(at) => at,
                        Err(error) => {
                            return fail(rule.socket.output, verb, ErrorDetail::field(&error));
                        }
                    };
                }
                RuleSpec::Vnet { .. } if add.comment.is_some() || add.expires_at.is_some() => {
                    return refuse(
                        rule.socket.output,
                        "--comment and --expires-at apply to IP rules; a subnet rule's are set \
                         in the policy file"
                            .into(),
                    );
                }
                RuleSpec::Vnet { .. } => {}
            }
            request(
                &rule.socket,
                verb,
                Command::RuleAdd {
                    rule: spec,
                    if_generation: rule.if_generation,
                },
            )
        }
        NetworkRuleVerb::Remove(rule) => match rule.spec(false) {
            Ok(spec) => request(
                &rule.socket,
                verb,
                Command::RuleRemove {
                    rule: spec,
                    if_generation: rule.if_generation,
                },
            ),
            Err(message) => refuse(rule.socket.output, message),
        },
        NetworkRuleVerb::List(socket) => list(socket),
    }
}

/// `network-rule list`: JSON as replied, or the tables of
/// [`super::rule_table`].
fn list(socket: &SocketArgs) -> ExitCode {
    if socket.output == OutputFormat::Json {
        return request(socket, LIST, Command::RuleList);
    }
    match client::send(&socket.socket, Command::RuleList) {
        Ok(response) if response.error.is_none() => {
            match response.result_as::<crate::control::replies::RuleListReply>() {
                Some(Ok(reply)) => {
                    print!("{}", super::rule_table::render(&reply));
                    ExitCode::SUCCESS
                }
                _ => print_response(socket.output, LIST, &response),
            }
        }
        Ok(response) => print_response(socket.output, LIST, &response),
        Err(error) => client_error(socket.output, LIST, &error),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command as Verb};

    /// The rule `vaultfw network-rule add|remove ARGS` sends, or the refusal.
    fn spec(args: &str) -> Result<RuleSpec, String> {
        let cli = Cli::try_parse_from(format!("vaultfw network-rule {args}").split_whitespace())
            .map_err(|e| e.to_string())?;
        let Verb::NetworkRule(NetworkRuleArgs { verb }) = cli.command else {
            unreachable!("parsed as network-rule")
        };
        match verb {
            NetworkRuleVerb::Add(add) => add.rule.spec(add.ignore_missing_vnet_service_endpoint),
            NetworkRuleVerb::Remove(rule) => rule.spec(false),
            NetworkRuleVerb::List(_) => Err("list".into()),
        }
    }

    fn addresses(spec: RuleSpec) -> Vec<String> {
        match spec {
            RuleSpec::Ip { address, more, .. } => std::iter::once(address).chain(more).collect(),
            other => panic!("not an IP rule: {other:?}"),
        }
    }

    #[test]
    fn ip_addresses_come_space_or_comma_separated_or_repeated() {
        let want = ["203.0.113.7", "198.51.100.0/24", "192.0.2.9"];
        for args in [
            "add --ip-address 203.0.113.7 198.51.100.0/24 192.0.2.9",
            "add --ip-address 203.0.113.7,198.51.100.0/24,192.0.2.9",
            "remove --ip-address 203.0.113.7 --ip-address 198.51.100.0/24,192.0.2.9",
        ] {
            assert_eq!(addresses(spec(args).expect(args)), want, "{args}");
        }
    }

    #[test]
    fn a_subnet_is_named_as_az_names_it_and_its_prefix_with_subnet_prefix() {
        let vnet = |s: RuleSpec| match s {
            RuleSpec::Vnet {
                id,
                subnet,
                ignore_missing_endpoint,
                ..
            } => (id, subnet, ignore_missing_endpoint),
            other => panic!("not a subnet rule: {other:?}"),
        };
        assert_eq!(
            vnet(spec("add --vnet-name vnet-prod --subnet app --subnet-prefix 10.1.2.0/24 --endpoint eth1 --ignore-missing-vnet-service-endpoint").unwrap()),
            ("vnet-prod/subnets/app".to_owned(), Some("10.1.2.0/24".to_owned()), true)
        );
        let full = "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s";
        assert_eq!(
            vnet(spec(&format!("remove --subnet {full}")).unwrap()),
            (full.to_owned(), None, false)
        );
        // The old form: --subnet PREFIX with --vnet-rule, kept while unambiguous.
        assert_eq!(
            vnet(spec("add --vnet-rule v/subnets/s --subnet 10.1.2.0/24 --endpoint eth1").unwrap())
                .1,
            Some("10.1.2.0/24".to_owned())
        );
        let e = spec("add --vnet-rule v/subnets/s --subnet app").unwrap_err();
        assert!(
            e.contains("--subnet-prefix") && e.contains("--vnet-name"),
            "{e}"
        );
        let e = spec("remove --subnet app").unwrap_err();
        assert!(e.contains("--vnet-name"), "{e}");
        let e = spec("add --ip-address 203.0.113.7 --vnet-name v --subnet s").unwrap_err();
        assert!(e.contains("another call"), "{e}");
        // Names are one segment each: a full id or a path with --vnet-name
        // would make an id that names no subnet.
        for args in [
            format!("add --vnet-name other --subnet {full} --subnet-prefix 10.1.2.0/24"),
            "add --vnet-name v --subnet sub/x --subnet-prefix 10.1.2.0/24".to_owned(),
            "remove --vnet-name v/subnets/a --subnet s".to_owned(),
        ] {
            let e = spec(&args).unwrap_err();
            assert!(
                e.contains("is not a name") && e.contains("no `/`"),
                "{args}: {e}"
            );
        }
    }

    #[test]
    fn expires_at_takes_a_time_or_a_duration_and_names_both_when_neither() {
        assert_eq!(
            expiry("2027-01-31T00:00:00Z").as_deref(),
            Ok("2027-01-31T00:00:00Z")
        );
        let at = expiry("8h").expect("a duration");
        let parsed = crate::clock::parse_rfc3339(&at).expect("RFC 3339");
        let ahead = parsed
            .duration_since(std::time::SystemTime::now())
            .expect("in the future");
        assert!(ahead > std::time::Duration::from_secs(7 * 3600), "{at}");
        let e = expiry("tomorrow").unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.value.as_str()),
            ("--expires-at", "tomorrow")
        );
        assert!(e.reason.contains("neither a duration nor"), "{e}");
        assert!(e.fix.contains("RFC 3339") && e.fix.contains("8h"), "{e}");
        let e = expiry("2027-01-31T00:00:00").unwrap_err();
        assert!(e.reason.contains("no time zone"), "{e}");
    }
}
