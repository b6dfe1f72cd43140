//! Log lines for operators: the periodic verdict-counter line (totals and
//! deltas since the previous line) and the logging setup.

use std::time::Instant;

use firewall_common::Verdict;

use crate::dataplane::VerdictTotals;

/// Installs the JSON log subscriber: one JSON object per line on stdout,
/// event fields at the top level. `RUST_LOG` overrides the `info` default.
pub fn init_json_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

/// Remembers the last totals so each line can report deltas.
pub struct StatsReporter {
    last: VerdictTotals,
    last_at: Instant,
}

impl StatsReporter {
    /// Starts from `baseline` (the counters at start: deltas count from it).
    pub fn new(baseline: VerdictTotals) -> Self {
        StatsReporter {
            last: baseline,
            last_at: Instant::now(),
        }
    }

    /// Logs one `verdict counters` line with every counter's total and its
    /// delta since the previous line. `is_final` marks the line at shutdown.
    pub fn report(&mut self, totals: VerdictTotals, is_final: bool) {
        let mut deltas = [0u64; Verdict::COUNT];
        for (i, delta) in deltas.iter_mut().enumerate() {
            // Counters only grow; saturate rather than wrap if a map was
            // replaced underneath us.
            *delta = totals[i].saturating_sub(self.last[i]);
        }
        let interval_s = self.last_at.elapsed().as_secs_f64();
        self.last = totals;
        self.last_at = Instant::now();
        log_counters(&totals, &deltas, interval_s, is_final);
    }
}

/// One tracing event whose fields are named exactly like the counters of
/// DESIGN.md section 2 (totals) and `<name>_delta` (deltas).
fn log_counters(t: &VerdictTotals, d: &VerdictTotals, interval_s: f64, is_final: bool) {
    use Verdict as V;
    let (t, d) = (|v: V| t[v.index() as usize], |v: V| d[v.index() as usize]);
    tracing::info!(
        target: "vaultfw::stats",
        interval_s,
        "final" = is_final,
        "pass_non_ip" = t(V::PassNonIp),
        "pass_non_ip_delta" = d(V::PassNonIp),
        "pass_control_plane" = t(V::PassControlPlane),
        "pass_control_plane_delta" = d(V::PassControlPlane),
        "pass_fragment" = t(V::PassFragment),
        "pass_fragment_delta" = d(V::PassFragment),
        "pass_ipv6" = t(V::PassIpv6),
        "pass_ipv6_delta" = d(V::PassIpv6),
        "allow_default" = t(V::AllowDefault),
        "allow_default_delta" = d(V::AllowDefault),
        "allow_ip_rule" = t(V::AllowIpRule),
        "allow_ip_rule_delta" = d(V::AllowIpRule),
        "allow_vnet_rule" = t(V::AllowVnetRule),
        "allow_vnet_rule_delta" = d(V::AllowVnetRule),
        "allow_trusted_service" = t(V::AllowTrustedService),
        "allow_trusted_service_delta" = d(V::AllowTrustedService),
        "audit_would_deny" = t(V::AuditWouldDeny),
        "audit_would_deny_delta" = d(V::AuditWouldDeny),
        "deny_no_match" = t(V::DenyNoMatch),
        "deny_no_match_delta" = d(V::DenyNoMatch),
        "deny_ipv6" = t(V::DenyIpv6),
        "deny_ipv6_delta" = d(V::DenyIpv6),
        "deny_malformed" = t(V::DenyMalformed),
        "deny_malformed_delta" = d(V::DenyMalformed),
        "verdict counters"
    );
}
