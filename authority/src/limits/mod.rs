//! What one peer, or all of them together, may take from the authority:
//! connections (caps, handshake and idle timeouts, and no connection past the
//! client certificate that opened it), concurrent attestations and agent
//! calls (shed with a retry hint), and JWT-SVID minting per agent.

pub mod conn;
pub mod gate;
pub mod jwt;
pub mod shed;

use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;
use tessera_common::duration;

/// Largest gRPC message the node API decodes: an Attest `begin` carries the
/// firmware event log (agents send at most 4 MiB, `evidence::MAX_EVENT_LOG`)
/// plus EK certificates, AK public and a CSR. Larger messages are refused
/// from their length prefix, before their body is buffered.
pub const MAX_MESSAGE: usize = 5 << 20;

/// The `[limits]` section as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsRaw {
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    max_attestations: Option<usize>,
    max_attestations_per_address: Option<usize>,
    handshake_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_in_flight: Option<usize>,
    retry_after: Option<String>,
    jwt_per_second_per_agent: Option<usize>,
    jwt_burst_per_agent: Option<usize>,
    jwt_audit_per_agent: Option<usize>,
    jwt_audit_window: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Open TLS connections (and handshakes in progress), all peers.
    pub max_connections: usize,
    /// The same, per peer address (IPv6: per /64).
    pub max_connections_per_address: usize,
    /// Attest exchanges in progress, all peers.
    pub max_attestations: usize,
    pub max_attestations_per_address: usize,
    pub handshake_timeout: Duration,
    /// A connection that received nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Agent calls (RenewAgent, SyncEntries, BatchSignX509, SignJwt) in
    /// progress, all agents; past it calls are shed with a retry hint.
    pub max_in_flight: usize,
    /// The retry hint's base: refused clients are told 1x to 2x this.
    pub retry_after: Duration,
    pub jwt_per_second_per_agent: u32,
    pub jwt_burst_per_agent: u32,
    /// JWT-SVIDs with an audit row of their own, per agent and window.
    pub jwt_audit_per_agent: u32,
    pub jwt_audit_window: Duration,
}

impl LimitsRaw {
    pub fn validate(self) -> Result<Limits, String> {
        let count = |name: &str, v: Option<usize>, default: usize| match v {
            None => Ok(default),
            Some(n) if (1..=1_000_000).contains(&n) => Ok(n),
            Some(n) => Err(format!("limits.{name}: {n} is not between 1 and 1000000")),
        };
        let limits = Limits {
            max_connections: count("max_connections", self.max_connections, 4096)?,
            max_connections_per_address: count(
                "max_connections_per_address",
                self.max_connections_per_address,
                64,
            )?,
            max_attestations: count("max_attestations", self.max_attestations, 64)?,
            max_attestations_per_address: count(
                "max_attestations_per_address",
                self.max_attestations_per_address,
                4,
            )?,
            handshake_timeout: duration::field(
                "limits.handshake_timeout",
                self.handshake_timeout.as_deref(),
            )?
            .unwrap_or(Duration::from_secs(10)),
            idle_timeout: duration::field("limits.idle_timeout", self.idle_timeout.as_deref())?
                .unwrap_or(Duration::from_secs(300)),
            max_in_flight: count("max_in_flight", self.max_in_flight, 256)?,
            retry_after: duration::field("limits.retry_after", self.retry_after.as_deref())?
                .unwrap_or(Duration::from_secs(1)),
            // `count` keeps these at most 1,000,000: they fit a u32.
            jwt_per_second_per_agent: count(
                "jwt_per_second_per_agent",
                self.jwt_per_second_per_agent,
                20,
            )? as u32,
            jwt_burst_per_agent: count("jwt_burst_per_agent", self.jwt_burst_per_agent, 200)?
                as u32,
            jwt_audit_per_agent: count("jwt_audit_per_agent", self.jwt_audit_per_agent, 100)?
                as u32,
            jwt_audit_window: duration::field(
                "limits.jwt_audit_window",
                self.jwt_audit_window.as_deref(),
            )?
            .unwrap_or(Duration::from_secs(60)),
        };
        for (per, per_v, all, all_v) in [
            (
                "max_connections_per_address",
                limits.max_connections_per_address,
                "max_connections",
                limits.max_connections,
            ),
            (
                "max_attestations_per_address",
                limits.max_attestations_per_address,
                "max_attestations",
                limits.max_attestations,
            ),
        ] {
            if per_v > all_v {
                return Err(format!(
                    "limits.{per}: {per_v} is more than limits.{all} ({all_v})"
                ));
            }
        }
        for (name, d) in [
            ("handshake_timeout", limits.handshake_timeout),
            ("retry_after", limits.retry_after),
        ] {
            if d > Duration::from_secs(300) {
                return Err(format!("limits.{name}: longer than 5m"));
            }
        }
        if limits.jwt_audit_window > Duration::from_secs(86400) {
            return Err("limits.jwt_audit_window: longer than 24h".into());
        }
        Ok(limits)
    }
}

/// The per-address key: the address itself, or an IPv6 /64 (one host
/// usually has a whole /64 to pick addresses from).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Limits, String> {
        tessera_common::config::from_toml::<LimitsRaw>(text)?.validate()
    }

    #[test]
    fn defaults_and_errors_name_the_field() {
        let d = parse("").unwrap();
        assert_eq!(
            (d.max_connections, d.max_connections_per_address),
            (4096, 64)
        );
        assert_eq!(
            (d.max_attestations, d.max_attestations_per_address),
            (64, 4)
        );
        assert_eq!(d.handshake_timeout, Duration::from_secs(10));
        assert_eq!(d.idle_timeout, Duration::from_secs(300));
        let e = parse("max_connections = 0").unwrap_err();
        assert!(e.starts_with("limits.max_connections:"), "{e}");
        let e = parse("max_connections = 10\nmax_connections_per_address = 11").unwrap_err();
        assert!(
            e.starts_with("limits.max_connections_per_address: 11 is more than"),
            "{e}"
        );
        let e = parse("max_attestations_per_address = 65").unwrap_err();
        assert!(e.starts_with("limits.max_attestations_per_address:"), "{e}");
        let e = parse("idle_timeout = \"0s\"").unwrap_err();
        assert!(e.starts_with("limits.idle_timeout:"), "{e}");
        let e = parse("handshake_timeout = \"1h\"").unwrap_err();
        assert!(e.starts_with("limits.handshake_timeout:"), "{e}");
        assert_eq!(
            (d.max_in_flight, d.retry_after),
            (256, Duration::from_secs(1))
        );
        assert_eq!(
            (d.jwt_per_second_per_agent, d.jwt_burst_per_agent),
            (20, 200)
        );
        assert_eq!(d.jwt_audit_per_agent, 100);
        assert_eq!(d.jwt_audit_window, Duration::from_secs(60));
        let e = parse("max_in_flight = 0").unwrap_err();
        assert!(e.starts_with("limits.max_in_flight:"), "{e}");
        let e = parse("retry_after = \"10m\"").unwrap_err();
        assert!(e.starts_with("limits.retry_after:"), "{e}");
        let e = parse("jwt_audit_window = \"2d\"").unwrap_err();
        assert!(e.starts_with("limits.jwt_audit_window:"), "{e}");
    }

    #[test]
    fn ipv6_peers_are_counted_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        let m: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(peer_key(m), "192.0.2.1".parse::<IpAddr>().unwrap());
    }
}
