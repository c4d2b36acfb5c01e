//! Framing and parsing of SIP messages from datagrams (RFC 3261 §18.3) and
//! byte streams (TCP/TLS), RFC 3261 §7.
//!
//! Errors carry what was salvaged of the header section, so the server can
//! still answer a broken request with 400 built from its Via, From, To,
//! Call-ID and CSeq (RFC 4475 §3.3.1). Responses that fail to parse are
//! simply dropped: nobody waits for an answer to a response.
//!
//! Deliberate leniency: bare LF line ends are accepted in the header section
//! and CRLFs before the start line are skipped (RFC 3261 §7.5). A datagram
//! with no empty line after the headers is taken to end its header section
//! at the end of the datagram (RFC 4475 §3.1.2.15 ships such a message).

use super::grammar::{is_token, is_token_char, is_wsp, parse_u32, trim};
use super::header::{HeaderName, Headers};
use super::uri::{Uri, UriError};
use super::{Message, Method, Request, Response};

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// Nothing but line breaks (a keep-alive).
    #[error("empty message")]
    Empty,
    /// The Request-Line is not `Method SP Request-URI SP SIP-Version`.
    #[error("malformed Request-Line: {0}")]
    RequestLine(&'static str),
    /// The Request-URI does not parse.
    #[error("malformed Request-URI: {0}")]
    RequestUri(UriError),
    /// A SIP version other than 2.0 (RFC 3261 §8.2.6 answers 505).
    #[error("SIP version {0} is not supported")]
    Version(String),
    /// The Status-Line of a response is malformed.
    #[error("malformed Status-Line: {0}")]
    StatusLine(&'static str),
    /// A header line has no colon or its name is not a token.
    #[error("malformed header field on line {0}")]
    HeaderLine(usize),
    /// Content-Length is not a non-negative decimal number.
    #[error("Content-Length is not a valid number")]
    ContentLength,
    /// More than one Content-Length.
    #[error("more than one Content-Length")]
    ContentLengthConflict,
    /// Content-Length declares more bytes than the datagram holds.
    #[error("Content-Length {declared} is larger than the {available} bytes of body received")]
    ContentLengthExceeds {
        /// The declared length.
        declared: u32,
        /// The bytes present after the header section.
        available: usize,
    },
    /// The message is larger than the configured limit.
    #[error("message of {0} bytes is too large")]
    TooLarge(usize),
}

/// What was salvaged of a message that failed to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Salvage {
    /// True when the start line looked like a request.
    pub is_request: bool,
    /// The method, when the start line got that far.
    pub method: Option<Method>,
    /// The header fields that did parse.
    pub headers: Headers,
}

/// A parse failure, with what the server can still use to answer it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    /// What went wrong.
    pub kind: ParseErrorKind,
    /// The header section, when the message got that far.
    pub salvage: Option<Box<Salvage>>,
}

impl ParseError {
    fn bare(kind: ParseErrorKind) -> Self {
        ParseError {
            kind,
            salvage: None,
        }
    }

    /// The status the server answers with, or `None` when the message must
    /// be dropped silently (responses, keep-alives, unsalvageable input).
    pub fn status(&self) -> Option<u16> {
        let salvage = self.salvage.as_ref()?;
        if !salvage.is_request || salvage.method == Some(Method::Ack) {
            return None;
        }
        Some(match self.kind {
            ParseErrorKind::Version(_) => 505,
            ParseErrorKind::TooLarge(_) => 513,
            _ => 400,
        })
    }
}

/// Parses one message from a UDP datagram. Messages longer than
/// `max_size` bytes are refused with [`ParseErrorKind::TooLarge`].
pub fn parse_datagram(bytes: &[u8], max_size: usize) -> Result<Message, ParseError> {
    if bytes.len() > max_size {
        // Parse the header section only, so a 513 can still be addressed.
        let head_len = find_head_end(bytes)
            .map_or(bytes.len(), |(h, _)| h)
            .min(max_size);
        let salvage = parse(&bytes[..head_len])
            .err()
            .and_then(|e| e.salvage)
            .or_else(|| salvage_of(&bytes[..head_len]));
        return Err(ParseError {
            kind: ParseErrorKind::TooLarge(bytes.len()),
            salvage,
        });
    }
    parse(bytes)
}

fn salvage_of(head: &[u8]) -> Option<Box<Salvage>> {
    let (start, headers, _) = split_head(head).ok()?;
    let is_request = !start.starts_with(b"SIP/");
    let method = start
        .split(|&b| b == b' ')
        .next()
        .filter(|m| is_token(m))
        .map(Method::from_token);
    Some(Box::new(Salvage {
        is_request,
        method,
        headers,
    }))
}

/// Returns (end of header section, start of body): the header section ends
/// at the first empty line, written CRLF CRLF or (leniently) LF LF.
fn find_head_end(b: &[u8]) -> Option<(usize, usize)> {
    (0..b.len()).find_map(|i| {
        if b[i] != b'\n' {
            return None;
        }
        match (b.get(i + 1), b.get(i + 2)) {
            (Some(b'\n'), _) => Some((i, i + 2)),
            (Some(b'\r'), Some(b'\n')) => Some((i, i + 3)),
            _ => None,
        }
    })
}

fn skip_leading_crlf(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .position(|&c| c != b'\r' && c != b'\n')
        .unwrap_or(b.len());
    &b[n..]
}

/// Splits the header section into start line and unfolded headers.
/// Returns the first broken header line number (1-based, start line = 1).
fn split_head(head: &[u8]) -> Result<(&[u8], Headers, Option<usize>), ()> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let start = lines.next().ok_or(())?;
    let mut headers = Headers::new();
    let mut bad_line = None;
    let mut last_ok = false;
    for (n, line) in lines.enumerate() {
        let line_no = n + 2;
        if line.is_empty() {
            continue;
        }
        if is_wsp(line[0]) {
            // Folded continuation (RFC 3261 §7.3.1): join with one space.
            if last_ok {
                if let Some(h) = headers.as_mut_slice().last_mut() {
                    let cont = trim(line);
                    if !cont.is_empty() {
                        if !h.value.is_empty() {
                            h.value.push(b' ');
                        }
                        h.value.extend_from_slice(cont);
                    }
                    continue;
                }
            }
            bad_line.get_or_insert(line_no);
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            bad_line.get_or_insert(line_no);
            last_ok = false;
            continue;
        };
        let name = trim(&line[..colon]);
        if !is_token(name) {
            bad_line.get_or_insert(line_no);
            last_ok = false;
            continue;
        }
        headers.push(HeaderName::from_bytes(name), trim(&line[colon + 1..]));
        last_ok = true;
    }
    Ok((start, headers, bad_line))
}

/// Reads the single Content-Length, if any.
fn content_length(headers: &Headers) -> Result<Option<u32>, ParseErrorKind> {
    let mut values = headers.all(&HeaderName::ContentLength);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ParseErrorKind::ContentLengthConflict);
    }
    parse_u32(first)
        .map(Some)
        .ok_or(ParseErrorKind::ContentLength)
}

/// Parses one message. Without Content-Length the body is the rest of the
/// input (UDP, RFC 3261 §18.3); bytes after a declared body are ignored
/// (RFC 4475 §3.1.1.8). The stream framer always passes exact messages.
fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let bytes = skip_leading_crlf(bytes);
    if bytes.is_empty() {
        return Err(ParseError::bare(ParseErrorKind::Empty));
    }
    let (head, body_start) = find_head_end(bytes).unwrap_or((bytes.len(), bytes.len()));
    let Ok((start, headers, bad_line)) = split_head(&bytes[..head]) else {
        return Err(ParseError::bare(ParseErrorKind::Empty));
    };
    let is_request = !start.starts_with(b"SIP/");
    let method_token = start.split(|&b| b == b' ').next().unwrap_or_default();
    let method = (is_request && is_token(method_token)).then(|| Method::from_token(method_token));
    let fail = |kind: ParseErrorKind, headers: Headers| ParseError {
        kind,
        salvage: Some(Box::new(Salvage {
            is_request,
            method: method.clone(),
            headers,
        })),
    };

    let available = bytes.len() - body_start;
    let body_len = match content_length(&headers) {
        Err(kind) => return Err(fail(kind, headers)),
        Ok(Some(declared)) if declared as usize > available => {
            return Err(fail(
                ParseErrorKind::ContentLengthExceeds {
                    declared,
                    available,
                },
                headers,
            ));
        }
        Ok(Some(declared)) => declared as usize,
        Ok(None) => available,
    };
    let body = bytes[body_start..body_start + body_len].to_vec();

    if !is_request {
        return match parse_status_line(start) {
            Ok((status, reason)) => Ok(Message::Response(Response {
                status,
                reason,
                headers,
                body,
            })),
            Err(kind) => Err(fail(kind, headers)),
        };
    }
    let (method, uri) = match parse_request_line(start) {
        Ok(v) => v,
        Err(kind) => return Err(fail(kind, headers)),
    };
    if let Some(line) = bad_line {
        return Err(fail(ParseErrorKind::HeaderLine(line), headers));
    }
    Ok(Message::Request(Request {
        method,
        uri,
        headers,
        body,
    }))
}

fn parse_request_line(line: &[u8]) -> Result<(Method, Uri), ParseErrorKind> {
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(ParseErrorKind::RequestLine(
            "expected exactly `Method SP Request-URI SP SIP-Version` separated by single spaces",
        ));
    }
    if !parts[0].iter().all(|&b| is_token_char(b)) {
        return Err(ParseErrorKind::RequestLine("method is not a token"));
    }
    check_version(parts[2])?;
    let uri = Uri::parse(parts[1]).map_err(ParseErrorKind::RequestUri)?;
    Ok((Method::from_token(parts[0]), uri))
}

fn check_version(v: &[u8]) -> Result<(), ParseErrorKind> {
    if v.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let numeric = v.len() > 4
        && v[..4].eq_ignore_ascii_case(b"SIP/")
        && v[4..].iter().all(|&b| b.is_ascii_digit() || b == b'.')
        && v[4..].iter().filter(|&&b| b == b'.').count() == 1;
    if numeric {
        Err(ParseErrorKind::Version(super::grammar::ascii(&v[4..])))
    } else {
        Err(ParseErrorKind::RequestLine("SIP-Version is malformed"))
    }
}

fn parse_status_line(line: &[u8]) -> Result<(u16, String), ParseErrorKind> {
    let rest = line
        .strip_prefix(b"SIP/2.0 ")
        .ok_or(ParseErrorKind::StatusLine("version is not SIP/2.0"))?;
    if rest.len() < 3
        || !rest[..3].iter().all(u8::is_ascii_digit)
        || rest.get(3).is_some_and(|&b| b != b' ')
    {
        return Err(ParseErrorKind::StatusLine(
            "status code must be exactly three digits",
        ));
    }
    let status = u16::from(rest[0] - b'0') * 100
        + u16::from(rest[1] - b'0') * 10
        + u16::from(rest[2] - b'0');
    if !(100..=699).contains(&status) {
        return Err(ParseErrorKind::StatusLine("status code out of range"));
    }
    let reason = rest.get(4..).unwrap_or_default();
    Ok((status, String::from_utf8_lossy(reason).into_owned()))
}

/// Why a stream must be closed: its framing cannot be recovered
/// (RFC 4475 §3.1.2.3, §3.3.9 over TCP).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// A message on a stream without Content-Length (RFC 3261 §18.3).
    #[error("message on a stream transport has no Content-Length")]
    MissingContentLength,
    /// Content-Length is negative, non-numeric or given twice.
    #[error("{0}")]
    ContentLength(ParseErrorKind),
    /// Header section or body larger than the limit.
    #[error("message exceeds {0} bytes")]
    TooLarge(usize),
}

/// One item cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// A complete message.
    Message(Message),
    /// A complete message that does not parse; answer it if `status()` says so.
    Invalid(ParseError),
    /// A CRLFCRLF keep-alive ping; answer with one CRLF (RFC 5626 §3.5.1).
    Ping,
}

/// Cuts SIP messages out of a TCP/TLS byte stream. Never allocates more than
/// `max_size` bytes for one message, whatever Content-Length claims.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max_size: usize,
}

impl StreamFramer {
    /// A framer that refuses messages larger than `max_size` bytes.
    pub fn new(max_size: usize) -> Self {
        StreamFramer {
            buf: Vec::new(),
            max_size,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet framed.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete item, `Ok(None)` when more bytes are needed, or an
    /// error after which the connection must be closed.
    pub fn next_item(&mut self) -> Result<Option<Framed>, FramingError> {
        if self.buf.starts_with(b"\r\n\r\n") {
            self.buf.drain(..4);
            return Ok(Some(Framed::Ping));
        }
        let lead = self
            .buf
            .iter()
            .position(|&c| c != b'\r' && c != b'\n')
            .unwrap_or(self.buf.len());
        if lead == self.buf.len() {
            // Only line breaks so far: keep at most a partial ping.
            if lead > 4 {
                self.buf.drain(..lead - 3);
            }
            return Ok(None);
        }
        if lead > 0 {
            self.buf.drain(..lead);
        }
        let Some((head_end, body_start)) = find_head_end(&self.buf) else {
            if self.buf.len() > self.max_size {
                return Err(FramingError::TooLarge(self.max_size));
            }
            return Ok(None);
        };
        let (_, headers, _) =
            split_head(&self.buf[..head_end]).map_err(|_| FramingError::MissingContentLength)?;
        let len = match content_length(&headers) {
            Ok(Some(n)) => n as usize,
            Ok(None) => return Err(FramingError::MissingContentLength),
            Err(kind) => return Err(FramingError::ContentLength(kind)),
        };
        if body_start + len > self.max_size {
            return Err(FramingError::TooLarge(self.max_size));
        }
        if self.buf.len() < body_start + len {
            return Ok(None);
        }
        let msg: Vec<u8> = self.buf.drain(..body_start + len).collect();
        Ok(Some(match parse(&msg) {
            Ok(m) => Framed::Message(m),
            Err(e) => Framed::Invalid(e),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    fn req(bytes: &[u8]) -> Request {
        match parse_datagram(bytes, 65535).unwrap() {
            Message::Request(r) => r,
            m => panic!("not a request: {m:?}"),
        }
    }

    #[test]
    fn folded_headers_are_unfolded() {
        let r = req(b"INVITE sip:a@b SIP/2.0\r\nTO :\r\n sip:x@y ;   tag    = 1\r\ncseq: 0009\r\n  INVITE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            r.headers.first(&HeaderName::To),
            Some(&b"sip:x@y ;   tag    = 1"[..])
        );
        assert_eq!(
            r.headers.first(&HeaderName::CSeq),
            Some(&b"0009 INVITE"[..])
        );
    }

    #[test]
    fn datagram_trailing_bytes_ignored() {
        let mut d = OPTIONS.to_vec();
        d.extend_from_slice(b"INVITE sip:x@y SIP/2.0\r\n\r\n");
        assert_eq!(req(&d).body, b"");
    }

    #[test]
    fn datagram_without_content_length_takes_rest() {
        let r = req(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\nv=0\r\n");
        assert_eq!(r.body, b"v=0\r\n");
    }

    #[test]
    fn content_length_errors_are_400_with_salvage() {
        for (bytes, kind) in [
            (&b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\nContent-Length: 9999\r\n\r\nabc"[..], "exceeds"),
            (b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\nContent-Length: -999\r\n\r\n", "number"),
            (b"INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\nl: 5\r\nContent-Length: 13\r\n\r\nabcdefghijklm", "conflict"),
        ] {
            let e = parse_datagram(bytes, 65535).unwrap_err();
            assert_eq!(e.status(), Some(400), "{kind}");
            assert!(e.salvage.unwrap().headers.contains(&HeaderName::CSeq));
        }
    }

    #[test]
    fn request_line_strictness() {
        for bad in [
            &b"INVITE  sip:a@b  SIP/2.0\r\n\r\n"[..],
            b"OPTIONS sip:a@b SIP/2.0  \r\n\r\n",
            b"INVITE sip:a@b; lr SIP/2.0\r\n\r\n",
            b"INVITE <sip:a@b> SIP/2.0\r\n\r\n",
        ] {
            assert_eq!(parse_datagram(bad, 65535).unwrap_err().status(), Some(400));
        }
        let e = parse_datagram(b"OPTIONS sip:a@b SIP/7.0\r\n\r\n", 65535).unwrap_err();
        assert_eq!(e.status(), Some(505));
    }

    #[test]
    fn status_lines() {
        assert!(
            matches!(parse_datagram(b"SIP/2.0 100 \r\n\r\n", 65535), Ok(Message::Response(r)) if r.status == 100 && r.reason.is_empty())
        );
        let e = parse_datagram(
            b"SIP/2.0 4294967301 better not break the receiver\r\n\r\n",
            65535,
        )
        .unwrap_err();
        assert_eq!(e.status(), None);
    }

    #[test]
    fn oversized_gets_513() {
        let e = parse_datagram(OPTIONS, 40).unwrap_err();
        assert_eq!(e.status(), Some(513));
    }

    #[test]
    fn stream_framing() {
        let mut f = StreamFramer::new(65535);
        f.push(b"\r\n\r\n");
        assert_eq!(f.next_item().unwrap(), Some(Framed::Ping));
        let (a, b) = OPTIONS.split_at(30);
        f.push(a);
        assert_eq!(f.next_item().unwrap(), None);
        f.push(b);
        f.push(OPTIONS);
        assert!(matches!(f.next_item().unwrap(), Some(Framed::Message(_))));
        assert!(matches!(f.next_item().unwrap(), Some(Framed::Message(_))));
        assert_eq!(f.next_item().unwrap(), None);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn stream_waits_for_declared_body_and_never_preallocates() {
        let mut f = StreamFramer::new(65535);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 9999\r\n\r\nabc");
        assert_eq!(f.next_item().unwrap(), None);
        let mut f = StreamFramer::new(65535);
        f.push(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 4000000000\r\n\r\n");
        assert!(matches!(f.next_item(), Err(FramingError::TooLarge(_))));
    }

    #[test]
    fn stream_framing_errors_close() {
        for bad in [
            &b"INVITE sip:a@b SIP/2.0\r\nContent-Length: -999\r\n\r\n"[..],
            b"INVITE sip:a@b SIP/2.0\r\nl: 5\r\nContent-Length: 13\r\n\r\n",
            b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\nv=0",
        ] {
            let mut f = StreamFramer::new(65535);
            f.push(bad);
            assert!(f.next_item().is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..300);
            let mut b: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if rng.bool() {
                let cut = rng.usize(0..=OPTIONS.len());
                b.splice(0..0, OPTIONS[..cut].iter().copied());
            }
            let _ = parse_datagram(&b, 65535);
            let mut f = StreamFramer::new(4096);
            f.push(&b);
            for _ in 0..10 {
                if !matches!(f.next_item(), Ok(Some(_))) {
                    break;
                }
            }
        }
    }
}
