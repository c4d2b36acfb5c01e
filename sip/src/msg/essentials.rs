//! The header fields every request must carry (RFC 3261 §8.1.1), checked
//! and typed in one place.
//!
//! The checks run in the order that gives the RFC 4475 answers: framing and
//! start line were checked by the parser; here come Via, CSeq, Call-ID,
//! From, To and Max-Forwards, each present exactly once where the RFC says
//! single-valued (§3.3.8 of RFC 4475 sends two of each) and well-formed.

use super::grammar::is_word_char;
use super::typed::parse_max_forwards;
use super::{CSeq, HeaderName, MAGIC_COOKIE, NameAddr, Request, Via};

/// Why a request lacks a usable essential header; always answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EssentialsError {
    /// A mandatory header is absent.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// A single-valued header appears more than once.
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    /// A header does not parse.
    #[error("malformed {0} header")]
    Malformed(&'static str),
    /// The top Via branch is the bare magic cookie (RFC 4475 §3.2.1).
    #[error("Via branch has no transaction identifier after z9hG4bK")]
    EmptyBranch,
}

/// The typed essentials of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Essentials {
    /// The top Via.
    pub top_via: Via,
    /// The top Via as written (RFC 2543 transaction matching compares it).
    pub top_via_raw: String,
    /// From.
    pub from: NameAddr,
    /// To.
    pub to: NameAddr,
    /// Call-ID.
    pub call_id: String,
    /// CSeq.
    pub cseq: CSeq,
    /// Max-Forwards, when present (RFC 2543 requests may lack it).
    pub max_forwards: Option<u8>,
}

fn single<'a>(
    req: &'a Request,
    name: HeaderName,
    label: &'static str,
) -> Result<&'a [u8], EssentialsError> {
    let mut it = req.headers.all(&name);
    let v = it.next().ok_or(EssentialsError::Missing(label))?;
    if it.next().is_some() {
        return Err(EssentialsError::Duplicate(label));
    }
    Ok(v)
}

impl Essentials {
    /// Extracts and checks the essentials.
    pub fn extract(req: &Request) -> Result<Essentials, EssentialsError> {
        let vias = req
            .headers
            .list(&HeaderName::Via)
            .ok_or(EssentialsError::Malformed("Via"))?;
        let top_raw = *vias.first().ok_or(EssentialsError::Missing("Via"))?;
        for v in &vias {
            Via::parse(v).map_err(|_| EssentialsError::Malformed("Via"))?;
        }
        let top_via = Via::parse(top_raw).map_err(|_| EssentialsError::Malformed("Via"))?;
        if top_via.branch() == Some(MAGIC_COOKIE) {
            return Err(EssentialsError::EmptyBranch);
        }
        let cseq = CSeq::parse(single(req, HeaderName::CSeq, "CSeq")?)
            .ok_or(EssentialsError::Malformed("CSeq"))?;
        let call_id = single(req, HeaderName::CallId, "Call-ID")?;
        if call_id.is_empty() || !call_id.iter().all(|&b| is_word_char(b) || b == b'@') {
            return Err(EssentialsError::Malformed("Call-ID"));
        }
        let from = NameAddr::parse(single(req, HeaderName::From, "From")?)
            .map_err(|_| EssentialsError::Malformed("From"))?;
        let to = NameAddr::parse(single(req, HeaderName::To, "To")?)
            .map_err(|_| EssentialsError::Malformed("To"))?;
        let max_forwards = match req.headers.count(&HeaderName::MaxForwards) {
            0 => None,
            1 => Some(
                parse_max_forwards(
                    req.headers
                        .first(&HeaderName::MaxForwards)
                        .unwrap_or_default(),
                )
                .ok_or(EssentialsError::Malformed("Max-Forwards"))?,
            ),
            _ => return Err(EssentialsError::Duplicate("Max-Forwards")),
        };
        Ok(Essentials {
            top_via,
            top_via_raw: String::from_utf8_lossy(top_raw).into_owned(),
            from,
            to,
            call_id: super::grammar::ascii(call_id),
            cseq,
            max_forwards,
        })
    }
}
