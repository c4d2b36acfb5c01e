//! SIP messages (RFC 3261 §7): parsing, typed header views, writing.
//!
//! The parser is our own rather than a crate's: the maintained Rust SIP
//! parsers we measured reject extension methods (so RFC 4475 §3.1.1.2 could
//! not get its 501), accept `<...>` around a Request-URI and empty Via
//! parameters (§3.1.2.1, §3.1.2.7), and the one with a no-tokio mode no
//! longer builds without a runtime. Ours keeps header values as raw bytes so
//! responses can copy them exactly, and reports every error with the status
//! code the server must send.

pub mod essentials;
pub mod grammar;
pub mod header;
pub mod name_addr;
pub mod parse;
pub mod typed;
pub mod uri;
pub mod via;

use std::fmt;

pub use essentials::{Essentials, EssentialsError};
pub use header::{Header, HeaderName, Headers};
pub use name_addr::{NameAddr, NameAddrError};
pub use parse::{Framed, FramingError, ParseError, ParseErrorKind, StreamFramer, parse_datagram};
pub use typed::{CSeq, MediaType};
pub use uri::{Host, SipUri, Uri, UriError};
pub use via::{MAGIC_COOKIE, Via, ViaError};

/// A request method. Methods are case-sensitive (RFC 3261 §7.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    /// Any other token.
    Extension(String),
}

impl Method {
    /// Recognises a method token (the caller has checked it is a token).
    pub fn from_token(s: &[u8]) -> Method {
        match s {
            b"INVITE" => Method::Invite,
            b"ACK" => Method::Ack,
            b"BYE" => Method::Bye,
            b"CANCEL" => Method::Cancel,
            b"OPTIONS" => Method::Options,
            b"REGISTER" => Method::Register,
            b"INFO" => Method::Info,
            b"UPDATE" => Method::Update,
            b"PRACK" => Method::Prack,
            b"SUBSCRIBE" => Method::Subscribe,
            b"NOTIFY" => Method::Notify,
            b"REFER" => Method::Refer,
            b"MESSAGE" => Method::Message,
            b"PUBLISH" => Method::Publish,
            other => Method::Extension(grammar::ascii(other)),
        }
    }

    /// The method token.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Options => "OPTIONS",
            Method::Register => "REGISTER",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SIP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The Request-URI.
    pub uri: Uri,
    /// Header fields in wire order (Content-Length included when parsed;
    /// it is recomputed when written).
    pub headers: Headers,
    /// The body, framed by Content-Length.
    pub body: Vec<u8>,
}

/// A SIP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, 100 to 699.
    pub status: u16,
    /// The reason phrase (any UTF-8; lossy for invalid bytes).
    pub reason: String,
    /// Header fields in wire order.
    pub headers: Headers,
    /// The body.
    pub body: Vec<u8>,
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
}

fn write_message(out: &mut Vec<u8>, headers: &Headers, body: &[u8]) {
    for h in headers {
        if h.name == HeaderName::ContentLength {
            continue;
        }
        out.extend_from_slice(h.name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
}

impl Request {
    /// Writes the request with a correct Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(format!("{} {} SIP/2.0\r\n", self.method, self.uri).as_bytes());
        write_message(&mut out, &self.headers, &self.body);
        out
    }
}

impl Response {
    /// Writes the response with a correct Content-Length.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512 + self.body.len());
        out.extend_from_slice(format!("SIP/2.0 {} {}\r\n", self.status, self.reason).as_bytes());
        write_message(&mut out, &self.headers, &self.body);
        out
    }
}

/// The reason phrase RFC 3261 §21 (and extensions) give a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        181 => "Call Is Being Forwarded",
        182 => "Queued",
        183 => "Session Progress",
        200 => "OK",
        202 => "Accepted",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Moved Temporarily",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        421 => "Extension Required",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        491 => "Request Pending",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        606 => "Not Acceptable",
        s if s < 200 => "Session Progress",
        s if s < 300 => "OK",
        s if s < 400 => "Redirection",
        s if s < 500 => "Request Failure",
        s if s < 600 => "Server Error",
        _ => "Global Failure",
    }
}
