//! Header fields as raw values, with the names this UAS interprets.
//!
//! Values are kept as the peer sent them (after unfolding, RFC 3261 §7.3.1),
//! so a response can copy Via, From, To, Call-ID and CSeq byte for byte
//! (RFC 4475 §3.1.1.2 checks that NUL inside a quoted string survives).
//! Typed views are parsed on demand by the modules that need them.

use std::fmt;

/// Header names this library interprets; everything else is `Other` and is
/// carried through untouched. Matching is case-insensitive and understands
/// the compact forms of RFC 3261 §7.3.3 and later RFCs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    Accept,
    AcceptEncoding,
    Allow,
    CallId,
    Contact,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Event,
    From,
    MaxForwards,
    ProxyRequire,
    Reason,
    RecordRoute,
    ReferTo,
    ReferredBy,
    Require,
    RetryAfter,
    Route,
    Server,
    SubscriptionState,
    Supported,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    /// Any other header; the name is kept as written.
    Other(String),
}

impl HeaderName {
    /// Recognises a header name (long or compact form, any case).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        use HeaderName::*;
        if name.len() == 1 {
            match name[0].to_ascii_lowercase() {
                b'i' => return CallId,
                b'm' => return Contact,
                b'e' => return ContentEncoding,
                b'l' => return ContentLength,
                b'c' => return ContentType,
                b'f' => return From,
                b'k' => return Supported,
                b't' => return To,
                b'v' => return Via,
                b'o' => return Event,
                b'r' => return ReferTo,
                b'b' => return ReferredBy,
                _ => {}
            }
        }
        const KNOWN: &[(&str, HeaderName)] = &[
            ("accept", Accept),
            ("accept-encoding", AcceptEncoding),
            ("allow", Allow),
            ("call-id", CallId),
            ("contact", Contact),
            ("content-encoding", ContentEncoding),
            ("content-length", ContentLength),
            ("content-type", ContentType),
            ("cseq", CSeq),
            ("event", Event),
            ("from", From),
            ("max-forwards", MaxForwards),
            ("proxy-require", ProxyRequire),
            ("reason", Reason),
            ("record-route", RecordRoute),
            ("refer-to", ReferTo),
            ("referred-by", ReferredBy),
            ("require", Require),
            ("retry-after", RetryAfter),
            ("route", Route),
            ("server", Server),
            ("subscription-state", SubscriptionState),
            ("supported", Supported),
            ("to", To),
            ("unsupported", Unsupported),
            ("user-agent", UserAgent),
            ("via", Via),
            ("warning", Warning),
        ];
        for (k, v) in KNOWN {
            if k.as_bytes().eq_ignore_ascii_case(name) {
                return v.clone();
            }
        }
        Other(super::grammar::ascii(name))
    }

    /// The canonical long form used when writing.
    pub fn as_str(&self) -> &str {
        use HeaderName::*;
        match self {
            Accept => "Accept",
            AcceptEncoding => "Accept-Encoding",
            Allow => "Allow",
            CallId => "Call-ID",
            Contact => "Contact",
            ContentEncoding => "Content-Encoding",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            CSeq => "CSeq",
            Event => "Event",
            From => "From",
            MaxForwards => "Max-Forwards",
            ProxyRequire => "Proxy-Require",
            Reason => "Reason",
            RecordRoute => "Record-Route",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            Require => "Require",
            RetryAfter => "Retry-After",
            Route => "Route",
            Server => "Server",
            SubscriptionState => "Subscription-State",
            Supported => "Supported",
            To => "To",
            Unsupported => "Unsupported",
            UserAgent => "User-Agent",
            Via => "Via",
            Warning => "Warning",
            Other(s) => s,
        }
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header field line: a name and its unfolded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name.
    pub name: HeaderName,
    /// The value with surrounding whitespace removed and folds replaced by a
    /// single space. May hold any octet except CR and LF.
    pub value: Vec<u8>,
}

impl Header {
    /// A header with a textual value.
    pub fn new(name: HeaderName, value: impl Into<Vec<u8>>) -> Self {
        Header {
            name,
            value: value.into(),
        }
    }
}

/// The header section of a message, in wire order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<Header>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    /// Appends a header field.
    pub fn push(&mut self, name: HeaderName, value: impl Into<Vec<u8>>) {
        self.0.push(Header::new(name, value));
    }

    /// Every field, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header> {
        self.0.iter()
    }

    /// Values of every field with this name, in order.
    pub fn all<'a: 'n, 'n>(&'a self, name: &'n HeaderName) -> impl Iterator<Item = &'a [u8]> + 'n {
        self.0
            .iter()
            .filter(move |h| &h.name == name)
            .map(|h| h.value.as_slice())
    }

    /// The first value with this name.
    pub fn first(&self, name: &HeaderName) -> Option<&[u8]> {
        self.all(name).next()
    }

    /// How many field lines carry this name.
    pub fn count(&self, name: &HeaderName) -> usize {
        self.all(name).count()
    }

    /// True when a field with this name exists.
    pub fn contains(&self, name: &HeaderName) -> bool {
        self.first(name).is_some()
    }

    /// Removes every field with this name.
    pub fn remove(&mut self, name: &HeaderName) {
        self.0.retain(|h| &h.name != name);
    }

    /// Replaces every field with this name by one field (appended if absent,
    /// otherwise at the position of the first one).
    pub fn set(&mut self, name: HeaderName, value: impl Into<Vec<u8>>) {
        let value = value.into();
        if let Some(pos) = self.0.iter().position(|h| h.name == name) {
            self.0[pos].value = value;
            let mut seen = false;
            self.0.retain(|h| {
                if h.name != name {
                    return true;
                }
                let keep = !seen;
                seen = true;
                keep
            });
        } else {
            self.push(name, value);
        }
    }

    /// Mutable access to the fields, for the few places that rewrite one in
    /// place (the top Via gets `received`/`rport`).
    pub fn as_mut_slice(&mut self) -> &mut [Header] {
        &mut self.0
    }

    /// Number of field lines.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values of all fields with this name, split at top-level commas,
    /// in order (for list headers such as Via, Route, Require, Accept).
    /// `None` when a value has an unterminated quote or angle bracket.
    pub fn list(&self, name: &HeaderName) -> Option<Vec<&[u8]>> {
        let mut out = Vec::new();
        for v in self.all(name) {
            out.extend(super::grammar::split_commas(v)?);
        }
        Some(out)
    }

    /// Writes every field as `Name: value\r\n`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        for h in &self.0 {
            out.extend_from_slice(h.name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(&h.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a Header;
    type IntoIter = std::slice::Iter<'a, Header>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_case_insensitive_names() {
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"ViA"), HeaderName::Via);
        assert_eq!(
            HeaderName::from_bytes(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_bytes(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"b"), HeaderName::ReferredBy);
        assert_eq!(
            HeaderName::from_bytes(b"subscription-STATE"),
            HeaderName::SubscriptionState
        );
        // RFC 4475 §3.1.1.5: an escaped name is just another extension header.
        assert_eq!(
            HeaderName::from_bytes(b"C%6Fntact"),
            HeaderName::Other("C%6Fntact".into())
        );
    }

    #[test]
    fn set_replaces_all_and_keeps_position() {
        let mut h = Headers::new();
        h.push(HeaderName::Via, "a");
        h.push(HeaderName::To, "b");
        h.push(HeaderName::To, "c");
        h.set(HeaderName::To, "d");
        assert_eq!(h.count(&HeaderName::To), 1);
        assert_eq!(h.first(&HeaderName::To), Some(&b"d"[..]));
        h.set(HeaderName::Server, "s");
        assert_eq!(h.iter().last().unwrap().name, HeaderName::Server);
    }
}
