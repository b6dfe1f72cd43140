//! The operator's own session: a policy that would guard the port this SSH
//! session came in on is refused by `validate` and `apply` unless
//! `--force` (a lockout guard for remote operators; README, "The CLI").

use crate::policy::Policy;

/// The local port of the SSH session this command runs in
/// (`SSH_CONNECTION="client_ip client_port server_ip server_port"`).
pub fn session_port() -> Option<u16> {
    std::env::var("SSH_CONNECTION")
        .ok()?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// An error message when `policy` guards `port` (the session's) without
/// saying so in `guard_control_ports`.
pub fn guards_session_port(policy: &Policy, port: u16) -> Option<String> {
    let dp = &policy.data_plane;
    (dp.tcp_ports.contains(&port) && !dp.guard_control_ports.contains(&port)).then(|| {
        format!(
            "data_plane.tcp_ports: {port:?} is refused: this SSH session came in on TCP port \
             {port}; guarding it puts your own session behind the ACL. Fix: remove it, list it \
             in guard_control_ports after allowing your address, or pass --force"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_guarding_the_session_port_is_named() {
        let policy = crate::policy::parse_toml(
            "default_action = \"Deny\"\n[data_plane]\ntcp_ports = [443, 2222]\n",
        )
        .unwrap()
        .policy;
        assert!(guards_session_port(&policy, 2222).is_some_and(|m| m.contains("2222")));
        assert!(guards_session_port(&policy, 22).is_none());
    }
}
