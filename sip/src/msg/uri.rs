//! SIP, SIPS and tel URIs (RFC 3261 §19.1 and §25, RFC 3966, RFC 5118).
//!
//! Parsing is strict where a mistake would change meaning (brackets around
//! IPv6 hosts, port range, escapes, no whitespace) and keeps every part as
//! written, escapes included: `%` sequences are decoded only on request
//! (`user_unescaped`), once, never recursively (RFC 3261 §19.1.2).
//! Other schemes (`isbn:`, `http:`) are kept opaque so that From and To can
//! carry them (RFC 4475 §3.3.4); the Request-URI check turns them into 416.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::grammar::{Param, find_param, is_escaped_with, is_unreserved, unescape};

/// Why a URI did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// No `scheme:` prefix, or the scheme has characters RFC 3986 forbids.
    #[error("URI has no valid scheme")]
    Scheme,
    /// Characters outside the URI alphabet (space, `<`, `"`, non-ASCII...).
    #[error("URI contains characters that are not allowed")]
    Characters,
    /// The user or password part has an illegal character or a broken escape.
    #[error("URI user part is malformed")]
    User,
    /// The host is empty, not a hostname, or an IPv6 address without brackets.
    #[error("URI host is malformed")]
    Host,
    /// The port is not a number from 0 to 65535.
    #[error("URI port is malformed")]
    Port,
    /// A `;name=value` parameter is empty or has illegal characters.
    #[error("URI parameter is malformed")]
    Param,
    /// The `?headers` part is malformed.
    #[error("URI headers part is malformed")]
    Headers,
}

/// The host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name, as written.
    Name(String),
    /// A literal IPv4 address.
    V4(Ipv4Addr),
    /// A literal IPv6 address (written in brackets).
    V6(Ipv6Addr),
}

impl Host {
    /// Parses a host: hostname, IPv4 address or `[IPv6]` reference.
    pub fn parse(s: &str) -> Result<Host, UriError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(UriError::Host)?;
            return inner.parse().map(Host::V6).map_err(|_| UriError::Host);
        }
        if s.is_empty() || s.contains(':') {
            return Err(UriError::Host);
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s.parse().map(Host::V4).map_err(|_| UriError::Host);
        }
        let labels_ok = s
            .trim_end_matches('.')
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if labels_ok {
            Ok(Host::Name(s.to_owned()))
        } else {
            Err(UriError::Host)
        }
    }

    /// The address, when the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
            Host::Name(_) => None,
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(a) => write!(f, "{a}"),
            Host::V6(a) => write!(f, "[{a}]"),
        }
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    /// True for `sips:`.
    pub secure: bool,
    /// The user part as written (escapes kept).
    pub user: Option<String>,
    /// The password part as written.
    pub password: Option<String>,
    /// The host.
    pub host: Host,
    /// The port, when given.
    pub port: Option<u16>,
    /// URI parameters in order.
    pub params: Vec<Param>,
    /// The `?headers` part without the `?`, as written.
    pub headers: Option<String>,
}

impl SipUri {
    /// A plain `sip:user@host:port` URI.
    pub fn new(user: Option<&str>, host: Host, port: Option<u16>) -> Self {
        SipUri {
            secure: false,
            user: user.map(str::to_owned),
            password: None,
            host,
            port,
            params: Vec::new(),
            headers: None,
        }
    }

    /// The user part with `%HH` escapes decoded once (lossy UTF-8).
    pub fn user_unescaped(&self) -> Option<String> {
        self.user
            .as_ref()
            .map(|u| String::from_utf8_lossy(&unescape(u.as_bytes())).into_owned())
    }

    /// A URI parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&Param> {
        find_param(&self.params, name)
    }

    /// The `transport=` parameter, lower-cased.
    pub fn transport(&self) -> Option<String> {
        self.param("transport")
            .and_then(|p| p.value.as_ref())
            .map(|v| v.to_ascii_lowercase())
    }

    fn parse(secure: bool, rest: &str) -> Result<SipUri, UriError> {
        let (before_headers, headers) = match rest.split_once('?') {
            // A `?` may legally appear in the user part; headers start at the
            // first `?` after the host.
            Some(_) => split_headers(rest)?,
            None => (rest, None),
        };
        let (userinfo, hostpart) = match before_headers.find('@') {
            Some(at) => (Some(&before_headers[..at]), &before_headers[at + 1..]),
            None => (None, before_headers),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (ui, None),
                };
                if u.is_empty() || !is_escaped_with(u.as_bytes(), is_user_char) {
                    return Err(UriError::User);
                }
                if let Some(p) = p {
                    if !is_escaped_with(p.as_bytes(), is_password_char) {
                        return Err(UriError::User);
                    }
                }
                (Some(u.to_owned()), p.map(str::to_owned))
            }
        };
        let (hostport, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], &hostpart[i..]),
            None => (hostpart, ""),
        };
        let (host, port) = split_host_port(hostport)?;
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params: parse_uri_params(params)?,
            headers: headers.map(str::to_owned),
        })
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = &self.user {
            f.write_str(u)?;
            if let Some(p) = &self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        let mut s = String::new();
        super::grammar::write_params(&mut s, &self.params);
        f.write_str(&s)?;
        if let Some(h) = &self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

/// Any URI this library meets in a request line or a name-addr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// `sip:` or `sips:`.
    Sip(SipUri),
    /// `tel:` (RFC 3966), kept as written after the scheme.
    Tel(String),
    /// Any other absolute URI, kept opaque.
    Other {
        /// The scheme, lower-cased.
        scheme: String,
        /// Everything after the first `:`.
        rest: String,
    },
}

impl Uri {
    /// Parses an absolute URI. Only `sip`/`sips` are parsed in depth.
    pub fn parse(s: &[u8]) -> Result<Uri, UriError> {
        if !s.iter().all(|&b| b.is_ascii_graphic()) || s.is_empty() {
            return Err(UriError::Characters);
        }
        let s = std::str::from_utf8(s).map_err(|_| UriError::Characters)?;
        let (scheme, rest) = s.split_once(':').ok_or(UriError::Scheme)?;
        let scheme_ok = scheme
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok || rest.bytes().any(|b| b"<>\"".contains(&b)) {
            return Err(UriError::Scheme);
        }
        match scheme.to_ascii_lowercase().as_str() {
            "sip" => SipUri::parse(false, rest).map(Uri::Sip),
            "sips" => SipUri::parse(true, rest).map(Uri::Sip),
            "tel" if !rest.is_empty() => Ok(Uri::Tel(rest.to_owned())),
            other if !rest.is_empty() => Ok(Uri::Other {
                scheme: other.to_owned(),
                rest: rest.to_owned(),
            }),
            _ => Err(UriError::Scheme),
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The user part for routing: the unescaped SIP user, or the tel number.
    pub fn user(&self) -> Option<String> {
        match self {
            Uri::Sip(u) => u.user_unescaped(),
            Uri::Tel(t) => Some(t.split(';').next().unwrap_or_default().to_owned()),
            Uri::Other { .. } => None,
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => write!(f, "{u}"),
            Uri::Tel(t) => write!(f, "tel:{t}"),
            Uri::Other { scheme, rest } => write!(f, "{scheme}:{rest}"),
        }
    }
}

fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || b"&=+$,;?/".contains(&b)
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || b"&=+$,".contains(&b)
}

fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || b"[]/:&+$".contains(&b)
}

fn is_header_char(b: u8) -> bool {
    is_unreserved(b) || b"[]/?:+$".contains(&b)
}

/// Splits off `?headers`, taking the first `?` after the `@` (or in the
/// host part when there is no user part).
fn split_headers(rest: &str) -> Result<(&str, Option<&str>), UriError> {
    let host_start = rest.find('@').map_or(0, |i| i + 1);
    match rest[host_start..].find('?') {
        None => Ok((rest, None)),
        Some(q) => {
            let (a, h) = rest.split_at(host_start + q);
            let h = &h[1..];
            let ok = !h.is_empty()
                && h.split('&').all(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    !k.is_empty()
                        && is_escaped_with(k.as_bytes(), is_header_char)
                        && is_escaped_with(v.as_bytes(), is_header_char)
                });
            if ok {
                Ok((a, Some(h)))
            } else {
                Err(UriError::Headers)
            }
        }
    }
}

/// Splits `host[:port]`, where host may be an `[IPv6]` reference.
pub fn split_host_port(s: &str) -> Result<(Host, Option<u16>), UriError> {
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').ok_or(UriError::Host)?;
        let (h, rest) = s.split_at(end + 1);
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':').ok_or(UriError::Port)?),
        };
        (h, port)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UriError::Port);
            }
            Some(p.parse::<u16>().map_err(|_| UriError::Port)?)
        }
    };
    Ok((Host::parse(host)?, port))
}

fn parse_uri_params(s: &str) -> Result<Vec<Param>, UriError> {
    let mut out = Vec::new();
    if s.is_empty() {
        return Ok(out);
    }
    for p in s[1..].split(';') {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        };
        let good = |x: &str| !x.is_empty() && is_escaped_with(x.as_bytes(), is_param_char);
        if !good(name) || value.is_some_and(|v| !good(v)) {
            return Err(UriError::Param);
        }
        out.push(Param::new(name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s.as_bytes()).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("not sip: {other:?}"),
        }
    }

    #[test]
    fn parses_and_prints_round_trip() {
        for s in [
            "sip:alice@example.com",
            "sips:bob:secret@[2001:db8::10]:5071;transport=tcp;lr",
            "sip:192.0.2.1:5060",
            "sip:user;par=u%40example.net@example.com",
            "sip:user@example.com?Route=%3Csip:example.com%3E",
        ] {
            assert_eq!(Uri::parse(s.as_bytes()).unwrap().to_string(), s);
        }
    }

    #[test]
    fn unusual_user_and_password_characters() {
        // RFC 4475 §3.1.1.2
        let u = sip(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        );
        assert_eq!(
            u.user.as_deref(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password.as_deref(),
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host, Host::Name("example.com".into()));
    }

    #[test]
    fn escapes_decoded_once_for_routing() {
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user_unescaped().as_deref(), Some("sips:user@example.com"));
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_unescaped().unwrap().as_bytes(), b"null-\0-null");
    }

    #[test]
    fn ipv6_needs_brackets_and_port_is_outside_them() {
        // RFC 5118 §4.2, §4.3, §4.4
        assert!(Uri::parse(b"sip:2001:db8::10").is_err());
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.port, None);
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.host.ip(), Some("2001:db8::10".parse().unwrap()));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:",
            "sip:user@",
            "sip:user@host:99999",
            "sip:user@host:",
            "sip:us%zzer@host",
            "sip:user@ex ample.com",
            "sip:user@host;;lr",
            "1sip:user@host",
        ] {
            assert!(Uri::parse(bad.as_bytes()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn other_schemes_are_opaque() {
        assert_eq!(
            Uri::parse(b"nobodyKnowsThisScheme:totallyopaquecontent").unwrap(),
            Uri::Other {
                scheme: "nobodyknowsthisscheme".into(),
                rest: "totallyopaquecontent".into()
            }
        );
        assert!(matches!(
            Uri::parse(b"soap.beep://192.0.2.103:3002"),
            Ok(Uri::Other { .. })
        ));
        assert!(matches!(
            Uri::parse(b"tel:+1-201-555-0123"),
            Ok(Uri::Tel(_))
        ));
    }
}
