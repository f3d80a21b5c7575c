//! Broker addresses: `host:port` parsing, resolution, and the loopback test behind
//! "loopback development trust".

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::error::{ClientError, Result};

/// A broker's `host:port`, parsed once at validation time and resolved at each connect (so
/// that DNS changes are followed across reconnects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerAddress {
    host: String,
    port: u16,
}

impl BrokerAddress {
    /// Parses `host:port`, `ip:port` or `[ipv6]:port`.
    pub(crate) fn parse(address: &str) -> Result<Self> {
        let invalid = |why: &str| {
            ClientError::InvalidConfig(format!(
                "broker address {address:?} {why}; expected host:port"
            ))
        };
        let (host, port) = if let Some(rest) = address.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| invalid("has an unterminated [ipv6] part or no port"))?;
            host.parse::<std::net::Ipv6Addr>()
                .map_err(|_| invalid("has an invalid ipv6 address"))?;
            (host, port)
        } else {
            let (host, port) = address
                .rsplit_once(':')
                .ok_or_else(|| invalid("has no port"))?;
            if host.contains(':') {
                return Err(invalid("is an ipv6 address without brackets"));
            }
            (host, port)
        };
        if host.is_empty() || host.chars().any(char::is_whitespace) {
            return Err(invalid("has an empty or malformed host"));
        }
        let port: u16 = port.parse().map_err(|_| invalid("has an invalid port"))?;
        if port == 0 {
            return Err(invalid("has port 0"));
        }
        Ok(BrokerAddress {
            host: host.to_owned(),
            port,
        })
    }

    /// The host part, without brackets: the default TLS server name.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Whether the address names this machine by name or literal (`localhost`, 127.0.0.0/8,
    /// `::1`). The resolved socket address must be loopback as well before loopback
    /// development trust applies; see [`is_loopback_ip`].
    pub(crate) fn is_loopback_name(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<IpAddr>().is_ok_and(is_loopback_ip)
    }

    /// Resolves the address, IPv4 first: a development broker usually listens on 127.0.0.1
    /// while `localhost` often resolves to `::1` first, and QUIC over UDP gets no "connection
    /// refused" to move on quickly.
    pub(crate) async fn resolve(&self) -> Result<Vec<SocketAddr>> {
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| ClientError::Connection(format!("cannot resolve {self}: {e}")))?
            .collect();
        addrs.sort_by_key(SocketAddr::is_ipv6);
        addrs.dedup();
        if addrs.is_empty() {
            return Err(ClientError::Connection(format!(
                "{self} resolved to no address"
            )));
        }
        Ok(addrs)
    }
}

/// Loopback, including IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`).
pub(crate) fn is_loopback_ip(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_literals() {
        let a = BrokerAddress::parse("broker1.example.com:9092").unwrap();
        assert_eq!((a.host(), a.port), ("broker1.example.com", 9092));
        let a = BrokerAddress::parse("[::1]:9092").unwrap();
        assert_eq!((a.host(), a.port), ("::1", 9092));
        assert_eq!(a.to_string(), "[::1]:9092");
        assert_eq!(
            BrokerAddress::parse("127.0.0.1:1").unwrap().to_string(),
            "127.0.0.1:1"
        );
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "localhost",
            "localhost:",
            ":9092",
            "host:99999",
            "host:0",
            "::1:9092",
            "[::1:9092",
            "[nope]:1",
            "a b:1",
        ] {
            assert!(
                matches!(
                    BrokerAddress::parse(bad),
                    Err(ClientError::InvalidConfig(_))
                ),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn loopback_names() {
        for lo in [
            "localhost:1",
            "LOCALHOST:1",
            "127.0.0.1:1",
            "127.1.2.3:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(BrokerAddress::parse(lo).unwrap().is_loopback_name(), "{lo}");
        }
        for remote in [
            "example.com:1",
            "10.0.0.1:1",
            "[2001:db8::1]:1",
            "localhost.example.com:1",
        ] {
            assert!(
                !BrokerAddress::parse(remote).unwrap().is_loopback_name(),
                "{remote}"
            );
        }
    }

    #[tokio::test]
    async fn resolves_ipv4_first() {
        let addrs = BrokerAddress::parse("127.0.0.1:9092")
            .unwrap()
            .resolve()
            .await
            .unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:9092".parse().unwrap()]);
    }
}
