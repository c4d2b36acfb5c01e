//! The typed session description and its serialisation.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A session description (RFC 8866 §5).
///
/// Lines the parser skips (`i=`, `u=`, `e=`, `p=`, `z=`, `r=`, `k=` and
/// unknown types) are not represented; everything voxtrunk acts on is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// Protocol version from `v=`; always 0.
    pub version: u32,
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` text; may be empty as RFC 5118 tolerates (printed as `-`).
    pub session_name: String,
    /// Session-level `c=`, the default for media without their own.
    pub connection: Option<Connection>,
    /// Session-level `b=` lines.
    pub bandwidths: Vec<Bandwidth>,
    /// The first `t=` line (`0 0` when absent or unreadable).
    pub timing: Timing,
    /// Session-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
    /// The media sections, in order.
    pub media: Vec<MediaDescription>,
}

/// The `o=` line (RFC 8866 §5.2).
///
/// Fields are kept as text: the origin only identifies the description, and
/// peers fill it with values (hostnames, oversized numbers) not worth
/// rejecting a call over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `<username>`, `-` when the peer has none.
    pub username: String,
    /// `<sess-id>`.
    pub session_id: String,
    /// `<sess-version>`; RFC 3264 §8 has it grow with every change.
    pub session_version: String,
    /// `<nettype>`, normally `IN`.
    pub net_type: String,
    /// `<addrtype>`, normally `IP4` or `IP6`.
    pub addr_type: String,
    /// `<unicast-address>`, an address or a host name.
    pub address: String,
}

/// A `c=` line (RFC 8866 §5.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `<nettype>`, normally `IN`.
    pub net_type: String,
    /// `<addrtype>`.
    pub addr_type: AddrType,
    /// `<connection-address>`.
    pub address: ConnectionAddress,
}

/// The address family named in `c=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrType {
    /// `IP4`.
    Ip4,
    /// `IP6`.
    Ip6,
}

/// The address of a `c=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionAddress {
    /// A unicast IP address literal.
    Ip(IpAddr),
    /// A host name, or a multicast address with `/ttl` or `/count`,
    /// kept as written.
    Raw(String),
}

/// A `b=<bwtype>:<bandwidth>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bandwidth {
    /// `<bwtype>`, e.g. `AS` or `TIAS`.
    pub kind: String,
    /// `<bandwidth>`, in the unit `kind` defines (kbit/s for `AS`).
    pub value: u64,
}

/// A `t=<start-time> <stop-time>` line; SIP uses `0 0`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timing {
    /// `<start-time>` in NTP seconds, 0 for unbounded.
    pub start: u64,
    /// `<stop-time>` in NTP seconds, 0 for unbounded.
    pub stop: u64,
}

/// A media section: the `m=` line and the lines under it (RFC 8866 §5.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `<media>`, e.g. `audio` or `video`.
    pub media: String,
    /// `<port>`; 0 means the stream is disabled or rejected (RFC 3264 §5.1).
    pub port: u16,
    /// The `/<number of ports>` suffix, if given.
    pub port_count: Option<u16>,
    /// `<proto>`, e.g. `RTP/AVP`.
    pub proto: String,
    /// `<fmt>` list; RTP payload type numbers for RTP protos.
    pub formats: Vec<String>,
    /// Media-level `c=`, overriding the session one.
    pub connection: Option<Connection>,
    /// Media-level `b=` lines.
    pub bandwidths: Vec<Bandwidth>,
    /// Media-level `a=` lines, in order.
    pub attributes: Vec<Attribute>,
}

/// An `a=<name>` or `a=<name>:<value>` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute name.
    pub name: String,
    /// Everything after the first `:`, untrimmed; `None` for flags.
    pub value: Option<String>,
}

/// An `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<channels>]`
/// value (RFC 8866 §6.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// RTP payload type number.
    pub payload_type: u8,
    /// Encoding name as written; compare it case-insensitively.
    pub encoding_name: String,
    /// RTP timestamp clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count for audio, if given (RFC 8866 says absent means 1).
    pub channels: Option<u8>,
}

/// Stream direction attribute (RFC 8866 §6.7, RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv`, the default when no direction attribute is present.
    #[default]
    SendRecv,
    /// `a=sendonly`.
    SendOnly,
    /// `a=recvonly`.
    RecvOnly,
    /// `a=inactive`.
    Inactive,
}

impl SessionDescription {
    /// The session-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        Direction::from_attributes(&self.attributes)
    }

    /// The direction that applies to `media`: its own attribute, else the
    /// session one, else sendrecv (RFC 3264 §5.1).
    pub fn media_direction(&self, media: &MediaDescription) -> Direction {
        media
            .direction()
            .or_else(|| self.direction())
            .unwrap_or_default()
    }

    /// The `c=` that applies to `media`: its own, else the session one.
    pub fn connection_for<'a>(&'a self, media: &'a MediaDescription) -> Option<&'a Connection> {
        media.connection.as_ref().or(self.connection.as_ref())
    }

    /// The first session-level attribute called `name` (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        find_attribute(&self.attributes, name)
    }

    /// The description as SDP text with CRLF line ends.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl MediaDescription {
    /// The first attribute called `name` (case-insensitive).
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        find_attribute(&self.attributes, name)
    }

    /// Formats that are RTP payload type numbers (0-127), in offer order.
    pub fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats
            .iter()
            .filter_map(|f| f.parse::<u8>().ok())
            .filter(|pt| *pt <= 127)
    }

    /// The mapping of payload type `pt`: its `a=rtpmap`, or the RFC 3551
    /// static assignment when the peer left the rtpmap out.
    pub fn rtpmap(&self, pt: u8) -> Option<RtpMap> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("rtpmap"))
            .filter_map(|a| RtpMap::parse(a.value.as_deref()?))
            .find(|map| map.payload_type == pt)
            .or_else(|| RtpMap::static_payload(pt))
    }

    /// The `a=fmtp` parameters of payload type `pt`, trimmed.
    pub fn fmtp(&self, pt: u8) -> Option<&str> {
        self.attributes
            .iter()
            .filter(|a| a.name.eq_ignore_ascii_case("fmtp"))
            .filter_map(|a| a.value.as_deref()?.trim().split_once(char::is_whitespace))
            .find(|(format, _)| format.parse::<u8>() == Ok(pt))
            .map(|(_, params)| params.trim())
    }

    /// The `a=ptime` in milliseconds; a fraction such as `20.0` is truncated.
    pub fn ptime(&self) -> Option<u32> {
        let value = self.attribute("ptime")?.value.as_deref()?.trim();
        value.split('.').next()?.parse().ok()
    }

    /// This section's own direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        Direction::from_attributes(&self.attributes)
    }
}

impl Connection {
    /// `IN IP4 <ip>` or `IN IP6 <ip>`.
    pub fn new(ip: IpAddr) -> Self {
        Connection {
            net_type: "IN".to_owned(),
            addr_type: AddrType::of(ip),
            address: ConnectionAddress::Ip(ip),
        }
    }

    /// The address when it is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self.address {
            ConnectionAddress::Ip(ip) => Some(ip),
            ConnectionAddress::Raw(_) => None,
        }
    }
}

impl AddrType {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddrType::Ip4,
            IpAddr::V6(_) => AddrType::Ip6,
        }
    }

    /// `IP4` or `IP6`; case-insensitive because some peers send `ip4`.
    pub fn from_token(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("IP4") {
            Some(AddrType::Ip4)
        } else if token.eq_ignore_ascii_case("IP6") {
            Some(AddrType::Ip6)
        } else {
            None
        }
    }

    /// The SDP token.
    pub fn as_str(self) -> &'static str {
        match self {
            AddrType::Ip4 => "IP4",
            AddrType::Ip6 => "IP6",
        }
    }
}

impl ConnectionAddress {
    /// Reads a `c=` address of family `addr_type`; `None` when it is
    /// neither a valid IP literal nor a host name (anything with a colon or
    /// made of digits and dots is taken as a literal), since sending media
    /// there cannot work.
    pub fn parse(addr_type: AddrType, text: &str) -> Option<Self> {
        let (base, ttl_or_count) = match text.split_once('/') {
            Some((base, rest)) => (base, Some(rest)),
            None => (text, None),
        };
        let ip = match addr_type {
            AddrType::Ip4 => parse_ip4(base).map(IpAddr::V4),
            // RFC 5118 §4.3 forbids brackets here, yet some stacks add them.
            AddrType::Ip6 => base
                .strip_prefix('[')
                .and_then(|b| b.strip_suffix(']'))
                .unwrap_or(base)
                .parse::<Ipv6Addr>()
                .ok()
                .map(IpAddr::V6),
        };
        let looks_literal =
            base.contains(':') || base.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        let host_name = base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        match (ip, ttl_or_count) {
            (Some(ip), None) => Some(ConnectionAddress::Ip(ip)),
            (Some(_), Some(_)) => Some(ConnectionAddress::Raw(text.to_owned())),
            (None, _) if host_name && !looks_literal => {
                Some(ConnectionAddress::Raw(text.to_owned()))
            }
            (None, _) => None,
        }
    }
}

/// Dotted quad, also with the leading zeros (`010.000.000.001`) that the
/// standard parser refuses but some peers emit.
fn parse_ip4(text: &str) -> Option<Ipv4Addr> {
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    let mut octets = [0u8; 4];
    let mut parts = text.split('.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 {
            return None;
        }
        *octet = part.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

impl Attribute {
    /// A flag attribute such as `sendrecv`.
    pub fn flag(name: &str) -> Self {
        Attribute {
            name: name.to_owned(),
            value: None,
        }
    }

    /// A `name:value` attribute.
    pub fn new(name: &str, value: impl Into<String>) -> Self {
        Attribute {
            name: name.to_owned(),
            value: Some(value.into()),
        }
    }
}

/// RFC 3551 §6 static payload types, so that offers without `a=rtpmap`
/// (allowed for these) are still understood and can be named in errors.
const STATIC_PAYLOAD_TYPES: &[(u8, &str, u32, Option<u8>)] = &[
    (0, "PCMU", 8000, None),
    (3, "GSM", 8000, None),
    (4, "G723", 8000, None),
    (5, "DVI4", 8000, None),
    (6, "DVI4", 16000, None),
    (7, "LPC", 8000, None),
    (8, "PCMA", 8000, None),
    (9, "G722", 8000, None),
    (10, "L16", 44100, Some(2)),
    (11, "L16", 44100, None),
    (12, "QCELP", 8000, None),
    (13, "CN", 8000, None),
    (14, "MPA", 90000, None),
    (15, "G728", 8000, None),
    (16, "DVI4", 11025, None),
    (17, "DVI4", 22050, None),
    (18, "G729", 8000, None),
    (25, "CelB", 90000, None),
    (26, "JPEG", 90000, None),
    (28, "nv", 90000, None),
    (31, "H261", 90000, None),
    (32, "MPV", 90000, None),
    (33, "MP2T", 90000, None),
    (34, "H263", 90000, None),
];

impl RtpMap {
    /// Parses an rtpmap attribute value such as `96 opus/48000/2`.
    pub fn parse(value: &str) -> Option<Self> {
        let (pt, encoding) = value.trim().split_once(char::is_whitespace)?;
        let mut parts = encoding.trim().split('/');
        let encoding_name = parts.next().filter(|n| !n.is_empty())?.to_owned();
        let clock_rate = parts.next()?.trim().parse().ok()?;
        let channels = parts.next().map(|c| c.trim().parse()).transpose().ok()?;
        Some(RtpMap {
            payload_type: pt.parse().ok().filter(|pt| *pt <= 127)?,
            encoding_name,
            clock_rate,
            channels,
        })
    }

    /// The RFC 3551 static mapping of `pt`, if it has one.
    pub fn static_payload(pt: u8) -> Option<Self> {
        let &(_, name, clock_rate, channels) =
            STATIC_PAYLOAD_TYPES.iter().find(|entry| entry.0 == pt)?;
        Some(RtpMap {
            payload_type: pt,
            encoding_name: name.to_owned(),
            clock_rate,
            channels,
        })
    }

    /// `<encoding name>/<clock rate>[/<channels>]`, as used in error texts.
    pub fn encoding(&self) -> String {
        match self.channels {
            Some(channels) => format!("{}/{}/{channels}", self.encoding_name, self.clock_rate),
            None => format!("{}/{}", self.encoding_name, self.clock_rate),
        }
    }
}

impl Direction {
    /// The direction an answerer must use for an offered direction
    /// (RFC 3264 §6.1): sending and receiving swap roles.
    pub fn answer(self) -> Self {
        Direction::from_flags(self.receives(), self.sends())
    }

    /// The direction allowing only what both `self` and `other` allow.
    pub fn intersect(self, other: Direction) -> Self {
        Direction::from_flags(
            self.sends() && other.sends(),
            self.receives() && other.receives(),
        )
    }

    /// Whether media is sent in this direction.
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether media is received in this direction.
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction that sends and/or receives as given.
    pub fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// The attribute name, e.g. `sendonly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an attribute name stands for.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| name.eq_ignore_ascii_case(d.as_str()))
    }

    /// The first direction attribute in `attributes`.
    pub fn from_attributes(attributes: &[Attribute]) -> Option<Self> {
        attributes
            .iter()
            .filter(|a| a.value.is_none())
            .find_map(|a| Direction::from_name(&a.name))
    }
}

fn find_attribute<'a>(attributes: &'a [Attribute], name: &str) -> Option<&'a Attribute> {
    attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

impl fmt::Display for SessionDescription {
    /// RFC 8866 §5 order: v, o, s, c, b, t, a, then per media m, c, b, a.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v={}\r\no={}\r\n", self.version, self.origin)?;
        // RFC 8866 §5.3: s= must not be empty; "-" is its recommended filler.
        let name = if self.session_name.is_empty() {
            "-"
        } else {
            &self.session_name
        };
        write!(f, "s={name}\r\n")?;
        write_lines(f, 'c', self.connection.iter())?;
        write_lines(f, 'b', &self.bandwidths)?;
        write!(f, "t={} {}\r\n", self.timing.start, self.timing.stop)?;
        write_lines(f, 'a', &self.attributes)?;
        self.media.iter().try_for_each(|m| write!(f, "{m}"))
    }
}

impl fmt::Display for MediaDescription {
    /// The `m=` line and the lines under it, each ending in CRLF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m={} {}", self.media, self.port)?;
        if let Some(count) = self.port_count {
            write!(f, "/{count}")?;
        }
        write!(f, " {}", self.proto)?;
        self.formats
            .iter()
            .try_for_each(|fmt| write!(f, " {fmt}"))?;
        f.write_str("\r\n")?;
        write_lines(f, 'c', self.connection.iter())?;
        write_lines(f, 'b', &self.bandwidths)?;
        write_lines(f, 'a', &self.attributes)
    }
}

fn write_lines<T: fmt::Display>(
    f: &mut fmt::Formatter<'_>,
    kind: char,
    items: impl IntoIterator<Item = T>,
) -> fmt::Result {
    items
        .into_iter()
        .try_for_each(|item| write!(f, "{kind}={item}\r\n"))
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {} {}",
            self.username,
            self.session_id,
            self.session_version,
            self.net_type,
            self.addr_type,
            self.address
        )
    }
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.net_type, self.addr_type, self.address)
    }
}

impl fmt::Display for AddrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ConnectionAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionAddress::Ip(ip) => write!(f, "{ip}"),
            ConnectionAddress::Raw(raw) => f.write_str(raw),
        }
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}:{value}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl fmt::Display for RtpMap {
    /// The attribute value, e.g. `96 opus/48000/2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.payload_type, self.encoding())
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_direction_follows_rfc3264_section_6_1() {
        assert_eq!(Direction::SendOnly.answer(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.answer(), Direction::SendOnly);
        assert_eq!(Direction::Inactive.answer(), Direction::Inactive);
        assert_eq!(Direction::SendRecv.answer(), Direction::SendRecv);
    }

    #[test]
    fn media_direction_overrides_session_and_defaults_to_sendrecv() {
        let mut sdp = crate::sdp::parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
              a=sendonly\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\nm=audio 4002 RTP/AVP 0\r\n",
        )
        .expect("valid SDP");
        assert_eq!(sdp.media_direction(&sdp.media[0]), Direction::Inactive);
        assert_eq!(sdp.media_direction(&sdp.media[1]), Direction::SendOnly);
        sdp.attributes.clear();
        assert_eq!(sdp.media_direction(&sdp.media[1]), Direction::SendRecv);
    }

    #[test]
    fn rtpmap_parses_explicit_and_static_mappings() {
        let map = RtpMap::parse("96 opus/48000/2").expect("valid rtpmap");
        assert_eq!(
            (
                map.payload_type,
                map.encoding_name.as_str(),
                map.clock_rate,
                map.channels
            ),
            (96, "opus", 48000, Some(2))
        );
        assert_eq!(map.to_string(), "96 opus/48000/2");
        assert_eq!(
            RtpMap::static_payload(9).map(|m| m.encoding()).as_deref(),
            Some("G722/8000")
        );
        assert_eq!(RtpMap::static_payload(96), None);
        for bad in [
            "",
            "96",
            "96 opus",
            "96 /8000",
            "x PCMU/8000",
            "200 PCMU/8000",
            "96 a/b",
        ] {
            assert_eq!(RtpMap::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn connection_address_keeps_host_names_and_multicast_raw() {
        let parse = ConnectionAddress::parse;
        assert_eq!(
            parse(AddrType::Ip4, "010.000.000.001"),
            Some(ConnectionAddress::Ip("10.0.0.1".parse().expect("ip")))
        );
        assert_eq!(
            parse(AddrType::Ip6, "[2001:db8::1]"),
            Some(ConnectionAddress::Ip("2001:db8::1".parse().expect("ip")))
        );
        assert_eq!(
            parse(AddrType::Ip4, "media.example.com"),
            Some(ConnectionAddress::Raw("media.example.com".into()))
        );
        assert_eq!(
            parse(AddrType::Ip4, "224.2.1.1/127"),
            Some(ConnectionAddress::Raw("224.2.1.1/127".into()))
        );
        for bad in [
            "999.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "2001:db8::1",
            "1..2.3",
            "a_b",
            "x\"y",
        ] {
            assert_eq!(parse(AddrType::Ip4, bad), None, "{bad}");
        }
        assert_eq!(parse(AddrType::Ip6, "192.0.2.1"), None);
        assert_eq!(parse(AddrType::Ip6, "2001:db8::g"), None);
    }

    #[test]
    fn fmtp_and_ptime_helpers() {
        let media = MediaDescription {
            media: "audio".into(),
            port: 4000,
            port_count: None,
            proto: "RTP/AVP".into(),
            formats: vec!["96".into(), "101".into()],
            connection: None,
            bandwidths: vec![],
            attributes: vec![
                Attribute::new("fmtp", "96 useinbandfec=1; stereo=0 "),
                Attribute::new("FMTP", "101 0-16"),
                Attribute::new("ptime", "20.0"),
            ],
        };
        assert_eq!(media.fmtp(96), Some("useinbandfec=1; stereo=0"));
        assert_eq!(media.fmtp(101), Some("0-16"));
        assert_eq!(media.fmtp(0), None);
        assert_eq!(media.ptime(), Some(20));
    }
}
