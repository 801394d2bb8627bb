//! What one peer, or all of them together, may take from the authority:
//! connections (caps, handshake and idle timeouts, and no connection past the
//! client certificate that opened it) and concurrent attestations.

pub mod conn;
pub mod gate;

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
        if limits.handshake_timeout > Duration::from_secs(300) {
            return Err("limits.handshake_timeout: longer than 5m".into());
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
