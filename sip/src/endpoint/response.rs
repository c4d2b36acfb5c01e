//! Building responses from requests (RFC 3261 §8.2.6).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;

use crate::msg::{
    HeaderName, Headers, NameAddr, Response, Via, grammar::split_commas, reason_phrase,
};

/// Copies Via (all values, in order, the top one stamped with `received`
/// and `rport` per RFC 3581), From, To (with `to_tag` added when the request
/// had none), Call-ID and CSeq into a new response. Works on partial header
/// sets too, so a broken request can still be answered (RFC 4475 §3.3.1).
pub fn response_to(
    req: &Headers,
    status: u16,
    to_tag: Option<&str>,
    source: SocketAddr,
    server: &str,
) -> Response {
    let mut h = Headers::new();
    let mut first_via = true;
    for v in req.all(&HeaderName::Via) {
        if first_via {
            first_via = false;
            h.push(HeaderName::Via, stamp_top_via(v, source));
        } else {
            h.push(HeaderName::Via, v);
        }
    }
    if let Some(v) = req.first(&HeaderName::From) {
        h.push(HeaderName::From, v);
    }
    if let Some(v) = req.first(&HeaderName::To) {
        let needs_tag =
            status > 100 && to_tag.is_some() && NameAddr::parse(v).is_ok_and(|a| a.tag().is_none());
        let mut v = v.to_vec();
        if let (true, Some(tag)) = (needs_tag, to_tag) {
            v.extend_from_slice(b";tag=");
            v.extend_from_slice(tag.as_bytes());
        }
        h.push(HeaderName::To, v);
    }
    for name in [HeaderName::CallId, HeaderName::CSeq] {
        if let Some(v) = req.first(&name) {
            h.push(name, v);
        }
    }
    h.push(HeaderName::Server, server);
    Response {
        status,
        reason: reason_phrase(status).to_owned(),
        headers: h,
        body: Vec::new(),
    }
}

fn stamp_top_via(value: &[u8], source: SocketAddr) -> Vec<u8> {
    let Some(values) = split_commas(value) else {
        return value.to_vec();
    };
    let Some(Ok(mut top)) = values.first().map(|v| Via::parse(v)) else {
        return value.to_vec();
    };
    top.stamp_source(source.ip(), source.port());
    let mut out = top.to_string().into_bytes();
    for rest in &values[1..] {
        out.extend_from_slice(b", ");
        out.extend_from_slice(rest);
    }
    out
}

/// A `Warning: code host "text"` value (RFC 3261 §20.43); the text is made
/// safe to quote.
pub fn warning(code: u16, host: &str, text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '\''
            } else {
                c
            }
        })
        .collect();
    format!("{code} {host} \"{clean}\"")
}

/// A To tag that is the same for every retransmission of a request answered
/// without a transaction, so the peer sees one consistent response.
pub fn stateless_tag(req: &Headers, salt: u64) -> String {
    let mut hasher = DefaultHasher::new();
    salt.hash(&mut hasher);
    for name in [
        HeaderName::Via,
        HeaderName::CallId,
        HeaderName::CSeq,
        HeaderName::From,
    ] {
        req.first(&name).hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_vias_in_order_and_stamps_the_top() {
        let mut req = Headers::new();
        req.push(
            HeaderName::Via,
            "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport, SIP/2.0/TCP p2;branch=z9hG4bK2",
        );
        req.push(HeaderName::Via, "SIP/2.0/UDP p3;branch=z9hG4bK3");
        req.push(HeaderName::To, "<sip:a@b>");
        let r = response_to(
            &req,
            200,
            Some("t1"),
            "192.0.2.9:4000".parse().unwrap(),
            "vt",
        );
        let vias: Vec<_> = r.headers.all(&HeaderName::Via).collect();
        assert_eq!(
            vias,
            [
                &b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;rport=4000;received=192.0.2.9, SIP/2.0/TCP p2;branch=z9hG4bK2"[..],
                b"SIP/2.0/UDP p3;branch=z9hG4bK3"
            ]
        );
        assert_eq!(
            r.headers.first(&HeaderName::To),
            Some(&b"<sip:a@b>;tag=t1"[..])
        );
    }

    #[test]
    fn keeps_existing_to_tag_and_raw_bytes() {
        let mut req = Headers::new();
        req.push(HeaderName::To, &b"\"NUL:\\\0\" <sip:a@b>;tag=x"[..]);
        let r = response_to(
            &req,
            481,
            Some("t1"),
            "192.0.2.9:4000".parse().unwrap(),
            "vt",
        );
        assert_eq!(
            r.headers.first(&HeaderName::To),
            Some(&b"\"NUL:\\\0\" <sip:a@b>;tag=x"[..])
        );
    }

    #[test]
    fn warning_text_is_quotable() {
        assert_eq!(warning(399, "h", "bad \"x\"\n"), "399 h \"bad 'x''\"");
    }
}
