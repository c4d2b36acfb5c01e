//! The Via header (RFC 3261 §20.42, §18.2.1; RFC 3581 `rport`).

use std::fmt;
use std::net::IpAddr;

use super::grammar::{
    Param, find_param, is_token_char, parse_params, skip_wsp, trim, write_params,
};
use super::uri::{Host, split_host_port};

/// The RFC 3261 branch prefix; branches with it identify transactions alone.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Why a Via value did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ViaError {
    /// `protocol/version/transport` is malformed.
    #[error("malformed sent-protocol")]
    Protocol,
    /// The host or port of sent-by is malformed.
    #[error("malformed sent-by")]
    SentBy,
    /// A parameter is empty or malformed (`;;`, `branch=`).
    #[error("malformed parameter")]
    Param,
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// Protocol name and version, e.g. `SIP/2.0`.
    pub protocol: String,
    /// Transport token, upper-cased (`UDP`, `TCP`, `TLS`, `SCTP`, or any
    /// other token: unknown transports are not an error, RFC 4475 §3.1.1.10).
    pub transport: String,
    /// The sent-by host.
    pub host: Host,
    /// The sent-by port.
    pub port: Option<u16>,
    /// Parameters in order.
    pub params: Vec<Param>,
}

impl Via {
    /// Parses one Via value (not a comma-separated list).
    pub fn parse(s: &[u8]) -> Result<Via, ViaError> {
        let s = trim(s);
        let mut i = 0;
        let mut parts = Vec::with_capacity(3);
        for n in 0..3 {
            i = skip_wsp(s, i);
            let start = i;
            while i < s.len() && is_token_char(s[i]) {
                i += 1;
            }
            if i == start {
                return Err(ViaError::Protocol);
            }
            parts.push(super::grammar::ascii(&s[start..i]));
            if n < 2 {
                i = skip_wsp(s, i);
                if s.get(i) != Some(&b'/') {
                    return Err(ViaError::Protocol);
                }
                i += 1;
            }
        }
        if s.get(i).is_none_or(|&b| b != b' ' && b != b'\t') {
            return Err(ViaError::SentBy);
        }
        let rest = &s[i..];
        let semi = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
        let sent_by: String = rest[..semi]
            .iter()
            .filter(|&&b| b != b' ' && b != b'\t')
            .map(|&b| b as char)
            .collect();
        let (host, port) = split_host_port(&sent_by).map_err(|_| ViaError::SentBy)?;
        let params = parse_params(&rest[semi..]).map_err(|_| ViaError::Param)?;
        let via = Via {
            protocol: format!("{}/{}", parts[0], parts[1]),
            transport: parts[2].to_ascii_uppercase(),
            host,
            port,
            params,
        };
        if via.param("branch").is_some_and(|p| p.value.is_none()) {
            return Err(ViaError::Param);
        }
        Ok(via)
    }

    /// A parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The branch parameter.
    pub fn branch(&self) -> Option<&str> {
        self.param("branch").and_then(|p| p.value.as_deref())
    }

    /// True when the branch starts with the RFC 3261 magic cookie, so that
    /// it alone identifies the transaction (§17.2.3).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with(MAGIC_COOKIE))
    }

    /// `host:port` of sent-by, as used in transaction keys.
    pub fn sent_by(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// Adds `received` and fills `rport` the way RFC 3261 §18.2.1 and RFC
    /// 3581 §4 say a server must before it answers.
    pub fn stamp_source(&mut self, ip: IpAddr, port: u16) {
        let has_rport = self.param("rport").is_some();
        if has_rport {
            for p in &mut self.params {
                if p.name.eq_ignore_ascii_case("rport") {
                    p.value = Some(port.to_string());
                }
            }
        }
        if has_rport || self.host.ip() != Some(ip) {
            self.params
                .retain(|p| !p.name.eq_ignore_ascii_case("received"));
            self.params
                .push(Param::new("received", Some(&ip.to_string())));
        }
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} {}", self.protocol, self.transport, self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        let mut s = String::new();
        write_params(&mut s, &self.params);
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaced_protocol_and_params() {
        let v = Via::parse(b"SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v =
            Via::parse(b"SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host, Host::Name("spindle.example.com".into()));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn ipv6_sent_by_and_received() {
        let v = Via::parse(
            b"SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3-111;received=[2001:db8::9:255]",
        )
        .unwrap();
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.sent_by(), "[2001:db8::9:1]:5070");
    }

    #[test]
    fn unknown_transport_is_fine() {
        assert_eq!(
            Via::parse(b"SIP/2.0/UNKNOWN t3.example.com;branch=z9hG4bKx")
                .unwrap()
                .transport,
            "UNKNOWN"
        );
    }

    #[test]
    fn malformed() {
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP 192.0.2.15;;"),
            Err(ViaError::Param)
        );
        assert_eq!(
            Via::parse(b"SIP/2.0/UDP 192.0.2.15;branch"),
            Err(ViaError::Param)
        );
        assert_eq!(Via::parse(b"SIP/2.0 192.0.2.15"), Err(ViaError::Protocol));
        assert_eq!(Via::parse(b"SIP/2.0/UDP"), Err(ViaError::SentBy));
        assert_eq!(Via::parse(b"SIP/2.0/UDP host:99999"), Err(ViaError::SentBy));
    }

    #[test]
    fn stamping_rport_and_received() {
        let mut v = Via::parse(b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport").unwrap();
        v.stamp_source("203.0.113.9".parse().unwrap(), 40000);
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=40000;received=203.0.113.9"
        );
        let mut v = Via::parse(b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1").unwrap();
        v.stamp_source("10.0.0.1".parse().unwrap(), 5060);
        assert_eq!(v.to_string(), "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1");
    }
}
