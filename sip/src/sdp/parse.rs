//! SDP text to [`SessionDescription`].

use super::model::{
    AddrType, Attribute, Bandwidth, Connection, ConnectionAddress, MediaDescription, Origin,
    SessionDescription, Timing,
};
use super::printable;

/// Why an SDP body was rejected.
///
/// `Display` reads `line <n>: <problem>` with `n` counted from 1 over the
/// body's physical lines (blank ones included), is ASCII and holds no double
/// quote, so it can go verbatim into a `Warning: 399` header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// A line that must be read is not UTF-8 (RFC 8866 §5).
    #[error("line {line}: not valid UTF-8")]
    InvalidUtf8 {
        /// 1-based line number.
        line: usize,
    },
    /// The body does not start with `v=0`.
    #[error("line {line}: expected v=0")]
    ExpectedVersion {
        /// 1-based line number.
        line: usize,
    },
    /// The line is not a one-letter type, `=`, and a value.
    #[error("line {line}: a line must look like <type>=<value>")]
    MalformedLine {
        /// 1-based line number.
        line: usize,
    },
    /// An `o=`, `c=` or `m=` line is too short.
    #[error("line {line}: {kind}= line needs at least {needed} fields")]
    TooFewFields {
        /// 1-based line number.
        line: usize,
        /// The line type letter.
        kind: char,
        /// How many space-separated fields it needs.
        needed: usize,
    },
    /// The `m=` port (or port count) is not a number from 0 to 65535.
    #[error("line {line}: m= port '{value}' is not a number from 0 to 65535")]
    InvalidPort {
        /// 1-based line number.
        line: usize,
        /// The offending text, sanitised.
        value: String,
    },
    /// A `c=` address type other than IP4 or IP6.
    #[error("line {line}: c= address type '{value}' is neither IP4 nor IP6")]
    UnknownAddrType {
        /// 1-based line number.
        line: usize,
        /// The offending text, sanitised.
        value: String,
    },
    /// A `c=` address written as an IP literal that is not a valid one.
    #[error("line {line}: c= address '{value}' is not a valid {addr_type} address")]
    InvalidAddress {
        /// 1-based line number.
        line: usize,
        /// The family the `c=` line claims.
        addr_type: AddrType,
        /// The offending text, sanitised.
        value: String,
    },
    /// There is no `o=` line; `line` is where it was expected (after `v=`).
    #[error("line {line}: missing o= line")]
    MissingOrigin {
        /// 1-based line number.
        line: usize,
    },
    /// A media section with a non-zero port has no `c=` of its own and the
    /// session has none either, so there is nowhere to send media.
    #[error("line {line}: m={media} has no c= connection address at media or session level")]
    MissingConnection {
        /// 1-based line number of the `m=` line.
        line: usize,
        /// The media type, sanitised.
        media: String,
    },
}

impl SdpError {
    /// The 1-based line number the error refers to.
    pub fn line(&self) -> usize {
        match self {
            SdpError::InvalidUtf8 { line }
            | SdpError::ExpectedVersion { line }
            | SdpError::MalformedLine { line }
            | SdpError::TooFewFields { line, .. }
            | SdpError::InvalidPort { line, .. }
            | SdpError::UnknownAddrType { line, .. }
            | SdpError::InvalidAddress { line, .. }
            | SdpError::MissingOrigin { line }
            | SdpError::MissingConnection { line, .. } => *line,
        }
    }

    /// The SIP status to reject the request with: 400 Bad Request, since
    /// the body itself is malformed.
    pub fn sip_status(&self) -> u16 {
        400
    }

    /// The RFC 3261 §20.43 warn-code for a `Warning` header: 399
    /// (miscellaneous), with `Display` as the warn-text.
    pub fn warning_code(&self) -> u16 {
        399
    }
}

/// Parses an SDP body; see the [module docs](super) for what is tolerated.
///
/// # Errors
///
/// [`SdpError`] when the body is not SDP or leaves the session unusable: no
/// `v=0` first, a line not shaped `<type>=<value>`, non-UTF-8 text in a line
/// that is interpreted, a short or malformed `o=`/`c=`/`m=` line, no `o=`,
/// or a media section with a port but no connection address.
pub fn parse(bytes: &[u8]) -> Result<SessionDescription, SdpError> {
    let mut parser = Parser::default();
    for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        parser.line(index + 1, raw.strip_suffix(b"\r").unwrap_or(raw))?;
    }
    parser.finish()
}

#[derive(Default)]
struct Parser {
    version_line: Option<usize>,
    origin: Option<Origin>,
    session_name: Option<String>,
    connection: Option<Connection>,
    bandwidths: Vec<Bandwidth>,
    timing: Option<Timing>,
    attributes: Vec<Attribute>,
    /// Each media section with the line number of its `m=`.
    media: Vec<(usize, MediaDescription)>,
}

impl Parser {
    fn line(&mut self, line: usize, raw: &[u8]) -> Result<(), SdpError> {
        if raw.trim_ascii().is_empty() {
            return Ok(());
        }
        if self.version_line.is_none() {
            if raw.trim_ascii() != b"v=0" {
                return Err(SdpError::ExpectedVersion { line });
            }
            self.version_line = Some(line);
            return Ok(());
        }
        let (kind, value) = match raw {
            [kind, b'=', value @ ..] if kind.is_ascii_alphabetic() => (*kind, value),
            _ => return Err(SdpError::MalformedLine { line }),
        };
        // Only lines that get interpreted must be UTF-8; skipped ones and a
        // Latin-1 session name are no reason to refuse a call.
        let text = || std::str::from_utf8(value).map_err(|_| SdpError::InvalidUtf8 { line });
        let media = self.media.last_mut().map(|(_, m)| m);
        match kind {
            b'o' if self.origin.is_none() => self.origin = Some(parse_origin(line, text()?)?),
            b's' if self.session_name.is_none() => {
                self.session_name = Some(String::from_utf8_lossy(value).into_owned());
            }
            b'c' => {
                let connection = parse_connection(line, text()?)?;
                // Several c= lines only occur for layered multicast; the
                // first is the one to use.
                match media {
                    Some(m) => m.connection.get_or_insert(connection),
                    None => self.connection.get_or_insert(connection),
                };
            }
            b'b' => {
                if let Some(bandwidth) = parse_bandwidth(text()?) {
                    match media {
                        Some(m) => m.bandwidths.push(bandwidth),
                        None => self.bandwidths.push(bandwidth),
                    }
                }
            }
            b't' if self.timing.is_none() => self.timing = parse_timing(text()?),
            b'm' => self.media.push((line, parse_media(line, text()?)?)),
            b'a' => {
                let attribute = parse_attribute(text()?);
                match media {
                    Some(m) => m.attributes.push(attribute),
                    None => self.attributes.push(attribute),
                }
            }
            // i, u, e, p, z, r, k, repeated o/s/t/v and unknown types carry
            // nothing the offer/answer exchange depends on.
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<SessionDescription, SdpError> {
        let Some(version_line) = self.version_line else {
            return Err(SdpError::ExpectedVersion { line: 1 });
        };
        let origin = self.origin.ok_or(SdpError::MissingOrigin {
            line: version_line + 1,
        })?;
        if self.connection.is_none() {
            let unreachable = self
                .media
                .iter()
                .find(|(_, m)| m.port != 0 && m.connection.is_none());
            if let Some((line, m)) = unreachable {
                return Err(SdpError::MissingConnection {
                    line: *line,
                    media: printable(&m.media),
                });
            }
        }
        Ok(SessionDescription {
            version: 0,
            origin,
            session_name: self.session_name.unwrap_or_default(),
            connection: self.connection,
            bandwidths: self.bandwidths,
            timing: self.timing.unwrap_or_default(),
            attributes: self.attributes,
            media: self.media.into_iter().map(|(_, m)| m).collect(),
        })
    }
}

fn parse_origin(line: usize, value: &str) -> Result<Origin, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    // A username with spaces (seen in the wild) is recovered by reading the
    // five fixed fields from the end.
    match fields.as_slice() {
        [username @ .., id, version, net_type, addr_type, address] if !username.is_empty() => {
            Ok(Origin {
                username: username.join(" "),
                session_id: (*id).to_owned(),
                session_version: (*version).to_owned(),
                net_type: (*net_type).to_owned(),
                addr_type: (*addr_type).to_owned(),
                address: (*address).to_owned(),
            })
        }
        _ => Err(SdpError::TooFewFields {
            line,
            kind: 'o',
            needed: 6,
        }),
    }
}

fn parse_connection(line: usize, value: &str) -> Result<Connection, SdpError> {
    let mut fields = value.split_ascii_whitespace();
    let (Some(net_type), Some(addr_type), Some(address)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err(SdpError::TooFewFields {
            line,
            kind: 'c',
            needed: 3,
        });
    };
    let addr_type = AddrType::from_token(addr_type).ok_or_else(|| SdpError::UnknownAddrType {
        line,
        value: printable(addr_type),
    })?;
    let address =
        ConnectionAddress::parse(addr_type, address).ok_or_else(|| SdpError::InvalidAddress {
            line,
            addr_type,
            value: printable(address),
        })?;
    Ok(Connection {
        net_type: net_type.to_owned(),
        addr_type,
        address,
    })
}

fn parse_media(line: usize, value: &str) -> Result<MediaDescription, SdpError> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [media, port_field, proto, formats @ ..] = fields.as_slice() else {
        return Err(too_few_media_fields(line));
    };
    if formats.is_empty() {
        return Err(too_few_media_fields(line));
    }
    let invalid_port = || SdpError::InvalidPort {
        line,
        value: printable(port_field),
    };
    let (port, port_count) = match port_field.split_once('/') {
        Some((port, count)) => (port, Some(count.parse().map_err(|_| invalid_port())?)),
        None => (*port_field, None),
    };
    Ok(MediaDescription {
        media: (*media).to_owned(),
        port: port.parse().map_err(|_| invalid_port())?,
        port_count,
        proto: (*proto).to_owned(),
        formats: formats.iter().map(|f| (*f).to_owned()).collect(),
        connection: None,
        bandwidths: Vec::new(),
        attributes: Vec::new(),
    })
}

fn too_few_media_fields(line: usize) -> SdpError {
    SdpError::TooFewFields {
        line,
        kind: 'm',
        needed: 4,
    }
}

/// Unreadable bandwidth lines are dropped: they are advisory.
fn parse_bandwidth(value: &str) -> Option<Bandwidth> {
    let (kind, amount) = value.trim().split_once(':')?;
    Some(Bandwidth {
        kind: kind.to_owned(),
        value: amount.trim().parse().ok()?,
    })
}

/// Unreadable timing is dropped: SIP sessions are unbounded (`t=0 0`)
/// whatever the peer writes.
fn parse_timing(value: &str) -> Option<Timing> {
    let mut fields = value.split_ascii_whitespace();
    Some(Timing {
        start: fields.next()?.parse().ok()?,
        stop: fields.next()?.parse().ok()?,
    })
}

fn parse_attribute(value: &str) -> Attribute {
    match value.split_once(':') {
        Some((name, value)) => Attribute::new(name, value),
        None => Attribute::flag(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::{ConnectionAddress, Direction};

    const ASTERISK: &str = "v=0\r\n\
        o=- 1999418212 1999418212 IN IP4 203.0.113.5\r\n\
        s=Asterisk\r\n\
        c=IN IP4 203.0.113.5\r\n\
        b=AS:64\r\n\
        t=0 0\r\n\
        m=audio 14554 RTP/AVP 8 0 101\r\n\
        a=rtpmap:8 PCMA/8000\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=maxptime:150\r\n\
        a=sendrecv\r\n";

    fn err(text: &str) -> SdpError {
        match parse(text.as_bytes()) {
            Ok(sdp) => panic!("expected an error for {text:?}, parsed {sdp:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_typed_fields() {
        let sdp = parse(ASTERISK.as_bytes()).expect("valid SDP");
        assert_eq!(sdp.origin.username, "-");
        assert_eq!(sdp.origin.session_version, "1999418212");
        assert_eq!(sdp.session_name, "Asterisk");
        assert_eq!(
            sdp.connection.as_ref().and_then(Connection::ip),
            Some("203.0.113.5".parse().expect("ip"))
        );
        assert_eq!(
            sdp.bandwidths,
            [Bandwidth {
                kind: "AS".into(),
                value: 64
            }]
        );
        let m = &sdp.media[0];
        assert_eq!(
            (m.media.as_str(), m.port, m.proto.as_str()),
            ("audio", 14554, "RTP/AVP")
        );
        assert_eq!(m.formats, ["8", "0", "101"]);
        assert_eq!(
            m.rtpmap(101).map(|r| r.encoding()).as_deref(),
            Some("telephone-event/8000")
        );
        assert_eq!(m.fmtp(101), Some("0-16"));
        assert_eq!(m.ptime(), Some(20));
        assert_eq!(
            m.attribute("maxptime").and_then(|a| a.value.as_deref()),
            Some("150")
        );
        assert_eq!(m.direction(), Some(Direction::SendRecv));
    }

    #[test]
    fn prints_what_it_parsed_with_crlf() {
        let sdp = parse(ASTERISK.as_bytes()).expect("valid SDP");
        assert_eq!(sdp.to_string(), ASTERISK);
        let lf_only = ASTERISK.replace("\r\n", "\n");
        assert_eq!(parse(lf_only.as_bytes()), Ok(sdp));
    }

    #[test]
    fn prints_in_rfc_order_whatever_the_input_order() {
        let sdp = parse(
            b"v=0\nt=0 0\na=tool:x\nc=IN IP4 192.0.2.1\ns=-\no=- 1 2 IN IP4 192.0.2.1\n\
              m=audio 4000 RTP/AVP 0\na=ptime:20\nc=IN IP4 192.0.2.2\n",
        )
        .expect("valid SDP");
        assert_eq!(
            sdp.to_string(),
            "v=0\r\no=- 1 2 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\na=tool:x\r\n\
             m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.2\r\na=ptime:20\r\n"
        );
    }

    #[test]
    fn tolerates_what_peers_send() {
        let sdp = parse(
            "\r\nv=0\r\n\
             o=Cisco SIP UA 1 2 IN IP6 2001:db8::10\r\n\
             s=\r\n\
             i=caf\u{e9}\r\n\
             u=http://example.com/\r\n\
             e=ops@example.com\r\n\
             p=+1 555 0100\r\n\
             b=CT:junk\r\n\
             t=3034423619 3042462419\r\n\
             r=7d 1h 0 25h\r\n\
             z=2882844526 -1h\r\n\
             k=prompt\r\n\
             y=0123456789\r\n\
             a=X-unknown\r\n\
             m=audio 4000/2 RTP/AVP 0 dynamic\r\n\
             c=IN IP6 2001:db8::20\r\n\
             i=audio\r\n\
             m=video 0 RTP/AVP 31\r\n\
             \r\n"
                .as_bytes(),
        )
        .expect("tolerated");
        assert_eq!(sdp.origin.username, "Cisco SIP UA");
        assert_eq!(sdp.origin.address, "2001:db8::10");
        assert_eq!(sdp.session_name, "");
        assert!(sdp.bandwidths.is_empty());
        assert_eq!(
            sdp.timing,
            Timing {
                start: 3034423619,
                stop: 3042462419
            }
        );
        assert_eq!(sdp.attributes, [Attribute::flag("X-unknown")]);
        assert_eq!(sdp.media.len(), 2);
        assert_eq!(sdp.media[0].port_count, Some(2));
        assert_eq!(sdp.media[0].formats, ["0", "dynamic"]);
        assert_eq!(
            sdp.media[0].connection.as_ref().map(|c| &c.address),
            Some(&ConnectionAddress::Ip("2001:db8::20".parse().expect("ip")))
        );
        assert!(sdp.to_string().contains("\r\ns=-\r\n"));
    }

    #[test]
    fn latin1_session_name_is_kept_lossily_but_attributes_must_be_utf8() {
        let mut body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=Sesi\xf3n\r\nt=0 0\r\n".to_vec();
        let sdp = parse(&body).expect("lossy s=");
        assert_eq!(sdp.session_name, "Sesi\u{fffd}n");
        body.extend_from_slice(b"a=tool:\xff\r\n");
        assert_eq!(parse(&body), Err(SdpError::InvalidUtf8 { line: 5 }));
    }

    #[test]
    fn rejections_name_the_line() {
        let base = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n";
        let cases: &[(String, &str)] = &[
            (String::new(), "line 1: expected v=0"),
            ("v=1\r\n".into(), "line 1: expected v=0"),
            (
                "o=- 1 1 IN IP4 192.0.2.1\r\n".into(),
                "line 1: expected v=0",
            ),
            (
                "\r\n\r\nv=0\r\ns=-\r\nt=0 0\r\n".into(),
                "line 4: missing o= line",
            ),
            (
                "v=0\r\no=- 1 IN IP4 192.0.2.1\r\n".into(),
                "line 2: o= line needs at least 6 fields",
            ),
            (
                format!("{base}c=IN IP4 999.1.1.1\r\n"),
                "line 4: c= address '999.1.1.1' is not a valid IP4 address",
            ),
            (
                format!("{base}c=IN IP6 192.0.2.1\r\n"),
                "line 4: c= address '192.0.2.1' is not a valid IP6 address",
            ),
            (
                format!("{base}c=IN IP5 192.0.2.1\r\n"),
                "line 4: c= address type 'IP5' is neither IP4 nor IP6",
            ),
            (
                format!("{base}c=IN IP4\r\n"),
                "line 4: c= line needs at least 3 fields",
            ),
            (
                format!("{base}t=0 0\r\nm=audio 4000 RTP/AVP\r\n"),
                "line 5: m= line needs at least 4 fields",
            ),
            (
                format!("{base}m=audio x RTP/AVP 0\r\n"),
                "line 4: m= port 'x' is not a number from 0 to 65535",
            ),
            (
                format!("{base}m=audio 70000 RTP/AVP 0\r\n"),
                "line 4: m= port '70000' is not a number from 0 to 65535",
            ),
            (
                format!("{base}m=audio 4000/x RTP/AVP 0\r\n"),
                "line 4: m= port '4000/x' is not a number from 0 to 65535",
            ),
            (
                format!("{base}t=0 0\r\n\r\nnonsense\r\n"),
                "line 6: a line must look like <type>=<value>",
            ),
            (
                format!("{base} a=sendrecv\r\n"),
                "line 4: a line must look like <type>=<value>",
            ),
            (
                format!("{base}=x\r\n"),
                "line 4: a line must look like <type>=<value>",
            ),
            (
                format!("{base}t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"),
                "line 5: m=audio has no c= connection address at media or session level",
            ),
        ];
        for (text, expected) in cases {
            let e = err(text);
            assert_eq!(e.to_string(), *expected, "{text:?}");
            assert!(expected.starts_with(&format!("line {}:", e.line())));
            assert_eq!(e.sip_status(), 400);
        }
    }

    #[test]
    fn port_zero_media_needs_no_connection_and_media_level_c_suffices() {
        let base = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";
        assert!(parse(format!("{base}m=video 0 RTP/AVP 31\r\n").as_bytes()).is_ok());
        assert!(
            parse(format!("{base}m=audio 4000 RTP/AVP 0\r\nc=IN IP4 192.0.2.9\r\n").as_bytes())
                .is_ok()
        );
    }

    #[test]
    fn error_text_is_safe_for_a_warning_header() {
        let e = err("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 1\"2\\3.4\r\n");
        let text = e.to_string();
        assert_eq!(
            text,
            "line 4: c= address '1?2?3.4' is not a valid IP4 address"
        );
        assert!(text.is_ascii() && !text.contains('"'));
    }

    #[test]
    fn random_bytes_and_truncations_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5d9);
        for _ in 0..5000 {
            let len = rng.usize(0..200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            check_no_panic(&bytes);
        }
        let valid = ASTERISK.as_bytes();
        for end in 0..=valid.len() {
            check_no_panic(&valid[..end]);
        }
        let alphabet = b"vocsmta=:/ 0123456789.IPN\r\n";
        for _ in 0..5000 {
            let mut bytes = valid.to_vec();
            for _ in 0..rng.usize(1..6) {
                let at = rng.usize(..bytes.len());
                match rng.u8(0..3) {
                    0 => bytes[at] = alphabet[rng.usize(..alphabet.len())],
                    1 => {
                        bytes.remove(at);
                    }
                    _ => bytes.insert(at, rng.u8(..)),
                }
            }
            check_no_panic(&bytes);
        }
    }

    fn check_no_panic(bytes: &[u8]) {
        match parse(bytes) {
            Ok(sdp) => {
                let printed = sdp.to_string();
                let local = crate::sdp::LocalMedia {
                    address: "192.0.2.50".parse().expect("ip"),
                    port: 20000,
                    codecs: vec![crate::sdp::AudioCodec::Pcma, crate::sdp::AudioCodec::Opus],
                    prefer: crate::sdp::CodecPreference::Offerer,
                    telephone_event: true,
                };
                let mut session = crate::sdp::SdpSession::new(1, "voxtrunk");
                if let Err(e) = session.answer(&sdp, &local) {
                    let text = e.to_string();
                    assert!(text.is_ascii() && !text.contains('"'), "{text}");
                }
                let mut offerer = crate::sdp::SdpSession::new(2, "voxtrunk");
                offerer.offer(&local, Direction::SendRecv);
                if let Err(e) = offerer.accept_answer(&sdp) {
                    let text = e.to_string();
                    assert!(text.is_ascii() && !text.contains('"'), "{text}");
                }
                assert!(parse(printed.as_bytes()).is_ok(), "{printed}");
            }
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.is_ascii() && !text.contains('"') && !text.contains('\\'),
                    "{text}"
                );
            }
        }
    }
}
