//! The UAS request checks of RFC 3261 §8.2, in the order that gives each
//! RFC 4475 torture message its expected answer.
//!
//! 1. essentials (Via, CSeq, Call-ID, From, To, Max-Forwards) → 400
//! 2. method known → 501 with Allow (before the CSeq match, so an unknown
//!    method with a mismatched CSeq still gets 501, RFC 4475 §3.1.2.18)
//! 3. method allowed → 405 with Allow (we are not a registrar, and take no
//!    REFER or SUBSCRIBE, §8.2.1)
//! 4. CSeq method equals the request method → 400
//! 5. Request-URI scheme sip/sips/tel → 416 (§8.2.2.1), no `?headers` → 400
//! 6. Require → 420 with Unsupported (§8.2.2.3; not for ACK/CANCEL)
//! 7. Max-Forwards 0 → 483, except OPTIONS, which a UAS answers as the final
//!    recipient (RFC 3261 §16.3 item 2, RFC 4475 §3.3.11)
//! 8. body: Content-Encoding → 415 with Accept-Encoding, Content-Type other
//!    than SDP on session methods → 415 with Accept (§8.2.3)
//! 9. INVITE Accept that excludes SDP → 406 (RFC 4475 §3.3.15)
//! 10. INVITE without a usable Contact → 400 (§8.1.1.8); an RFC 2543 INVITE
//!     (no magic cookie) may omit it and is reached at its From URI

use crate::msg::typed::option_tags;
use crate::msg::{
    Essentials, HeaderName, MediaType, Method, NameAddr, Request, Uri, grammar::split_commas,
};

/// Methods this user agent accepts, for Allow headers. NOTIFY is taken
/// inside a dialog where we sent REFER (and answered 481 elsewhere); REFER
/// itself is only sent, never accepted.
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, NOTIFY";

/// Option tags this UAS supports (Require checks, Supported headers).
pub const SUPPORTED: &[&str] = &[];

/// The text and warn-code of a `Warning` header (RFC 3261 §20.43).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// 3xx warn-code: 399 for miscellaneous, 30x for SDP problems.
    pub code: u16,
    /// What is wrong, for a human.
    pub text: String,
}

impl Warning {
    /// A warning with an explicit code.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Warning {
            code,
            text: text.into(),
        }
    }

    /// A 399 (miscellaneous) warning.
    pub fn misc(text: impl Into<String>) -> Self {
        Warning {
            code: 399,
            text: text.into(),
        }
    }
}

/// A request the UAS refuses before any transaction or dialog exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Status code.
    pub status: u16,
    /// A `Warning` header saying what was wrong.
    pub warning: Option<Warning>,
    /// Headers the status requires (Allow, Unsupported, Accept...).
    pub headers: Vec<(HeaderName, String)>,
}

impl Rejection {
    fn new(status: u16, warning: impl Into<Option<String>>) -> Self {
        Rejection {
            status,
            warning: warning.into().map(Warning::misc),
            headers: Vec::new(),
        }
    }

    fn with(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// What the checks extracted from an acceptable request.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The essentials.
    pub ess: Essentials,
    /// The Contact of an INVITE (or of another target-refresh request).
    pub contact: Option<NameAddr>,
}

fn is_session_method(m: &Method) -> bool {
    matches!(
        m,
        Method::Invite | Method::Ack | Method::Update | Method::Prack
    )
}

/// Runs the checks in order.
pub fn check(req: &Request) -> Result<Checked, Rejection> {
    let ess = Essentials::extract(req).map_err(|e| Rejection::new(400, e.to_string()))?;
    match &req.method {
        Method::Extension(m) => {
            return Err(
                Rejection::new(501, format!("method {m} is not implemented"))
                    .with(HeaderName::Allow, ALLOW),
            );
        }
        Method::Register
        | Method::Message
        | Method::Subscribe
        | Method::Publish
        | Method::Refer => {
            return Err(Rejection::new(
                405,
                format!("{} is not accepted by this user agent", req.method),
            )
            .with(HeaderName::Allow, ALLOW));
        }
        _ => {}
    }
    if ess.cseq.method != req.method {
        return Err(Rejection::new(
            400,
            format!(
                "CSeq method {} does not match request method {}",
                ess.cseq.method, req.method
            ),
        ));
    }
    match &req.uri {
        Uri::Sip(u) if u.headers.is_some() => {
            return Err(Rejection::new(
                400,
                "Request-URI must not contain headers".to_owned(),
            ));
        }
        Uri::Sip(_) | Uri::Tel(_) => {}
        Uri::Other { scheme, .. } => {
            return Err(Rejection::new(
                416,
                format!("URI scheme {scheme} is not supported"),
            ));
        }
    }
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<String> = option_tags(req.headers.all(&HeaderName::Require))
            .into_iter()
            .filter(|t| !SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            return Err(
                Rejection::new(420, format!("unsupported extension: {list}"))
                    .with(HeaderName::Unsupported, list),
            );
        }
    }
    if ess.max_forwards == Some(0) && !matches!(req.method, Method::Options | Method::Ack) {
        return Err(Rejection::new(483, None));
    }
    check_body(req)?;
    let contact = match req.method {
        // RFC 2543 did not require Contact; its peers are reached at From.
        Method::Invite
            if !req.headers.contains(&HeaderName::Contact)
                && !ess.top_via.has_rfc3261_branch()
                && ess.from.uri.as_sip().is_some() =>
        {
            Some(NameAddr::new(ess.from.uri.clone()))
        }
        Method::Invite => Some(check_contact(req)?),
        Method::Update => match req.headers.count(&HeaderName::Contact) {
            0 => None,
            _ => Some(check_contact(req)?),
        },
        _ => None,
    };
    Ok(Checked { ess, contact })
}

fn check_body(req: &Request) -> Result<(), Rejection> {
    if let Some(enc) = req.headers.first(&HeaderName::ContentEncoding) {
        let enc = String::from_utf8_lossy(enc).trim().to_ascii_lowercase();
        if enc != "identity" && !req.body.is_empty() {
            return Err(
                Rejection::new(415, format!("Content-Encoding {enc} is not supported"))
                    .with(HeaderName::AcceptEncoding, "identity"),
            );
        }
    }
    if is_session_method(&req.method) && !req.body.is_empty() {
        let ctype = req
            .headers
            .first(&HeaderName::ContentType)
            .and_then(MediaType::parse);
        match ctype {
            Some(t) if t.is_sdp() => {}
            Some(t) => {
                return Err(Rejection::new(
                    415,
                    format!("body type {}/{} is not supported", t.kind, t.subtype),
                )
                .with(HeaderName::Accept, "application/sdp"));
            }
            None => {
                return Err(
                    Rejection::new(415, "body has no valid Content-Type".to_owned())
                        .with(HeaderName::Accept, "application/sdp"),
                );
            }
        }
    }
    if req.method == Method::Invite && req.headers.contains(&HeaderName::Accept) {
        let admits_sdp = req
            .headers
            .all(&HeaderName::Accept)
            .flat_map(|v| split_commas(v).unwrap_or_default())
            .filter_map(MediaType::parse)
            .any(|t| t.admits("application", "sdp"));
        if !admits_sdp {
            return Err(Rejection::new(
                406,
                "Accept does not include application/sdp".to_owned(),
            ));
        }
    }
    Ok(())
}

fn check_contact(req: &Request) -> Result<NameAddr, Rejection> {
    let bad = |what: &str| Rejection::new(400, format!("Contact {what}"));
    let values = req
        .headers
        .list(&HeaderName::Contact)
        .ok_or_else(|| bad("is malformed"))?;
    match values.as_slice() {
        [] => Err(bad("is missing")),
        [one] => {
            let c = NameAddr::parse(one).map_err(|e| bad(&format!("is malformed: {e}")))?;
            if c.uri.as_sip().is_none() {
                return Err(bad("must be a SIP URI"));
            }
            Ok(c)
        }
        _ => Err(bad("must have exactly one value")),
    }
}
