//! Typed views of the scalar and list headers the UAS interprets.

use super::Method;
use super::grammar::{is_token, is_token_char, parse_u32, skip_wsp, split_commas, trim};

/// The CSeq header (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    /// The sequence number; RFC 3261 §8.1.1.5 keeps it below 2^31, we
    /// accept the full 32 bits and reject anything larger.
    pub seq: u32,
    /// The method.
    pub method: Method,
}

impl CSeq {
    /// Parses `1*DIGIT LWS Method`.
    pub fn parse(s: &[u8]) -> Option<CSeq> {
        let s = trim(s);
        let digits = s
            .iter()
            .position(|&b| !b.is_ascii_digit())
            .unwrap_or(s.len());
        let seq = parse_u32(&s[..digits])?;
        let m_start = skip_wsp(s, digits);
        if m_start == digits || !is_token(&s[m_start..]) {
            return None;
        }
        Some(CSeq {
            seq,
            method: Method::from_token(&s[m_start..]),
        })
    }
}

/// Parses Max-Forwards: `1*DIGIT`, at most 255 (RFC 3261 §20.22 examples
/// and RFC 4475 §3.1.2.4 treat larger values as malformed).
pub fn parse_max_forwards(s: &[u8]) -> Option<u8> {
    parse_u32(trim(s)).and_then(|v| u8::try_from(v).ok())
}

/// A `type/subtype;params` media type (Content-Type, Accept entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// Top-level type, lower-cased.
    pub kind: String,
    /// Subtype, lower-cased.
    pub subtype: String,
}

impl MediaType {
    /// Parses `type "/" subtype *(; param)`; parameters are ignored.
    pub fn parse(s: &[u8]) -> Option<MediaType> {
        let s = trim(s);
        let end = s.iter().position(|&b| b == b';').unwrap_or(s.len());
        let main = trim(&s[..end]);
        let slash = main.iter().position(|&b| b == b'/')?;
        let (k, st) = (trim(&main[..slash]), trim(&main[slash + 1..]));
        if !(is_token(k) && is_token(st)) {
            return None;
        }
        Some(MediaType {
            kind: super::grammar::ascii(k).to_ascii_lowercase(),
            subtype: super::grammar::ascii(st).to_ascii_lowercase(),
        })
    }

    /// True for `application/sdp`.
    pub fn is_sdp(&self) -> bool {
        self.kind == "application" && self.subtype == "sdp"
    }

    /// True when this Accept entry admits `kind/subtype` (wildcards allowed).
    pub fn admits(&self, kind: &str, subtype: &str) -> bool {
        (self.kind == "*" || self.kind == kind) && (self.subtype == "*" || self.subtype == subtype)
    }
}

/// Option tags of Require / Supported / Proxy-Require (comma-separated tokens).
pub fn option_tags<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|v| split_commas(v).unwrap_or_default())
        .filter(|t| !t.is_empty() && t.iter().all(|&b| is_token_char(b)))
        .map(super::grammar::ascii)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq() {
        assert_eq!(
            CSeq::parse(b"0009 INVITE"),
            Some(CSeq {
                seq: 9,
                method: Method::Invite
            })
        );
        assert_eq!(CSeq::parse(b"36893488147419103232 REGISTER"), None);
        assert_eq!(CSeq::parse(b"1INVITE"), None);
        assert_eq!(CSeq::parse(b"1 "), None);
        assert!(matches!(
            CSeq::parse(b"8 NEWMETHOD"),
            Some(CSeq {
                method: Method::Extension(_),
                ..
            })
        ));
    }

    #[test]
    fn max_forwards() {
        assert_eq!(parse_max_forwards(b"0068"), Some(68));
        assert_eq!(parse_max_forwards(b"300"), None);
        assert_eq!(parse_max_forwards(b""), None);
    }

    #[test]
    fn media_types() {
        assert!(
            MediaType::parse(b"Application/SDP ; charset=x")
                .unwrap()
                .is_sdp()
        );
        assert!(
            MediaType::parse(b"*/*")
                .unwrap()
                .admits("application", "sdp")
        );
        assert!(
            !MediaType::parse(b"text/nobodyKnowsThis")
                .unwrap()
                .admits("application", "sdp")
        );
        assert!(MediaType::parse(b"sdp").is_none());
    }

    #[test]
    fn tags() {
        let t = option_tags(
            [
                &b"nothingSupportsThis, nothingSupportsThisEither"[..],
                b"100rel",
            ]
            .into_iter(),
        );
        assert_eq!(
            t,
            ["nothingSupportsThis", "nothingSupportsThisEither", "100rel"]
        );
    }
}
