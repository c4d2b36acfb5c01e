//! Dialogs (RFC 3261 §12), on both sides of the INVITE.
//!
//! A [`Dialog`] holds the state §12.1 says a user agent keeps — Call-ID, both
//! tags, the remote target, the route set and both CSeq counters — and builds
//! the requests sent inside the call (BYE, re-INVITE, REFER, the ACK of a
//! 2xx) following §12.2.1.1, loose and strict routing both.
//!
//! * [`Dialog::for_invite`]: the UAS side, built from a received INVITE
//!   (§12.1.1).
//! * [`Dialog::for_uac`]: the UAC side, built from our INVITE and the 2xx
//!   that answered it (§12.1.2).
//! * [`Dialog::outgoing`]: the state before a dialog exists on an INVITE we
//!   send; it builds that INVITE and its destination, and is replaced by
//!   [`Dialog::for_uac`] when the 2xx arrives. Early dialogs (1xx with a To
//!   tag) are not kept.
//!
//! Deliberate deviation: the next hop must be an IP literal. When the first
//! route or the remote target names a host, the request goes back along the
//! flow the dialog was set up on instead of through RFC 3263 DNS resolution
//! (the peers this server meets — trunks, PBXs, softphones behind NAT — all
//! accept that, and it keeps the library free of I/O).

use std::net::SocketAddr;

use crate::Transport;
use crate::msg::{
    Essentials, HeaderName, Headers, Method, NameAddr, Request, Response, Uri,
    grammar::{Param, find_param},
};

/// Identity of a dialog from our point of view (§12): a request from the
/// peer carries our tag in To and theirs in From, on either side.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag (UAS: the To tag of our responses to the INVITE; UAC: the
    /// From tag of our INVITE).
    pub local_tag: String,
    /// The peer's tag (UAS: the INVITE's From tag, empty for RFC 2543 peers;
    /// UAC: the To tag of the 2xx).
    pub remote_tag: String,
}

/// The state of one dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Call-ID and tags.
    pub id: DialogId,
    /// Our URI with our tag, written as From in our requests.
    pub local_party: String,
    /// The peer's address with its tag, written as To in our requests (UAS:
    /// the INVITE's From; UAC: the 2xx's To).
    pub remote_party: String,
    /// Where in-dialog requests go (the peer's Contact; §12.2 target refresh
    /// updates it).
    pub remote_target: Uri,
    /// The route set: Record-Route of the INVITE in order (UAS), or of the
    /// 2xx in reverse order (UAC).
    pub route_set: Vec<NameAddr>,
    /// The last CSeq number we used.
    pub local_cseq: u32,
    /// The highest CSeq number received from the peer (0: none yet).
    pub remote_cseq: u32,
    /// The transport and address the dialog was set up over: where the
    /// INVITE came from (UAS), or where we sent ours (UAC).
    pub flow: (Transport, SocketAddr),
}

/// Why an in-dialog request was refused by the dialog itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// CSeq not higher than the last one received (§12.2.2 answers 500).
    #[error("CSeq is lower than a previous request in this dialog")]
    CSeqOutOfOrder,
}

impl Dialog {
    /// Builds the UAS dialog state for an INVITE (§12.1.1). `contact` is
    /// the INVITE's validated Contact.
    pub fn for_invite(
        req: &Request,
        ess: &Essentials,
        contact: &NameAddr,
        local_tag: &str,
        flow: (Transport, SocketAddr),
        local_cseq: u32,
    ) -> Dialog {
        let route_set = req
            .headers
            .list(&HeaderName::RecordRoute)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| NameAddr::parse(v).ok())
            .collect();
        let lossy = |name: &HeaderName| {
            String::from_utf8_lossy(req.headers.first(name).unwrap_or_default()).into_owned()
        };
        Dialog {
            id: DialogId {
                call_id: ess.call_id.clone(),
                local_tag: local_tag.to_owned(),
                remote_tag: ess.from.tag().unwrap_or_default().to_owned(),
            },
            local_party: format!("{};tag={local_tag}", lossy(&HeaderName::To)),
            remote_party: lossy(&HeaderName::From),
            remote_target: contact.uri.clone(),
            route_set,
            local_cseq,
            remote_cseq: ess.cseq.seq,
            flow,
        }
    }

    /// The state before a dialog exists on an INVITE we send: Request-URI
    /// and To are `target` (no tag), From is `local_party` (which carries
    /// `local_tag`), no route set. [`request`](Self::request) with
    /// [`Method::Invite`] then builds the INVITE with CSeq `local_cseq + 1`,
    /// and [`next_hop`](Self::next_hop) gives its destination.
    pub fn outgoing(
        call_id: &str,
        local_party: String,
        local_tag: &str,
        target: &Uri,
        flow: (Transport, SocketAddr),
        local_cseq: u32,
    ) -> Dialog {
        Dialog {
            id: DialogId {
                call_id: call_id.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: String::new(),
            },
            local_party,
            remote_party: format!("<{target}>"),
            remote_target: target.clone(),
            route_set: Vec::new(),
            local_cseq,
            remote_cseq: 0,
            flow,
        }
    }

    /// Builds the UAC dialog state from our INVITE and a 2xx answering it
    /// (§12.1.2): the remote tag and party from the 2xx's To, the remote
    /// target from its Contact (the INVITE's Request-URI when the Contact is
    /// missing or unusable), the route set from its Record-Route reversed,
    /// and the INVITE's CSeq as the local CSeq.
    pub fn for_uac(
        invite: &Request,
        response: &Response,
        flow: (Transport, SocketAddr),
        local_tag: &str,
    ) -> Dialog {
        let mut route_set: Vec<NameAddr> = response
            .headers
            .list(&HeaderName::RecordRoute)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| NameAddr::parse(v).ok())
            .collect();
        route_set.reverse();
        let lossy = |h: &Headers, name: &HeaderName| {
            String::from_utf8_lossy(h.first(name).unwrap_or_default()).into_owned()
        };
        let remote_tag = response
            .headers
            .first(&HeaderName::To)
            .and_then(|v| NameAddr::parse(v).ok())
            .and_then(|a| a.tag().map(str::to_owned))
            .unwrap_or_default();
        let remote_target = response
            .headers
            .first(&HeaderName::Contact)
            .and_then(|v| NameAddr::parse(v).ok())
            .filter(|c| c.uri.as_sip().is_some())
            .map_or_else(|| invite.uri.clone(), |c| c.uri);
        let local_cseq = invite
            .headers
            .first(&HeaderName::CSeq)
            .and_then(crate::msg::CSeq::parse)
            .map_or(0, |c| c.seq);
        Dialog {
            id: DialogId {
                call_id: lossy(&invite.headers, &HeaderName::CallId),
                local_tag: local_tag.to_owned(),
                remote_tag,
            },
            local_party: lossy(&invite.headers, &HeaderName::From),
            remote_party: lossy(&response.headers, &HeaderName::To),
            remote_target,
            route_set,
            local_cseq,
            remote_cseq: 0,
            flow,
        }
    }

    /// Accepts the CSeq of a new in-dialog request from the peer (§12.2.2).
    pub fn check_remote_cseq(&mut self, seq: u32) -> Result<(), DialogError> {
        if seq <= self.remote_cseq {
            return Err(DialogError::CSeqOutOfOrder);
        }
        self.remote_cseq = seq;
        Ok(())
    }

    /// Takes a new remote target from a target-refresh request or response.
    pub fn refresh_target(&mut self, contact: &NameAddr) {
        self.remote_target = contact.uri.clone();
    }

    fn first_route_is_loose(&self) -> bool {
        self.route_set.first().is_none_or(|r| {
            r.uri
                .as_sip()
                .is_some_and(|u| find_param(&u.params, "lr").is_some())
        })
    }

    /// Builds an in-dialog request (§12.2.1.1). `cseq` is `None` to take the
    /// next local CSeq, or the number to reuse (the ACK of a 2xx uses the
    /// INVITE's). The caller supplies the Via (with a fresh branch) and
    /// Contact, and any extra headers and body.
    pub fn request(
        &mut self,
        method: Method,
        cseq: Option<u32>,
        via: String,
        contact: Option<String>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Request {
        let seq = cseq.unwrap_or_else(|| {
            self.local_cseq = self.local_cseq.wrapping_add(1).max(1);
            self.local_cseq
        });
        let (uri, routes): (Uri, Vec<String>) = if self.first_route_is_loose() {
            (
                self.remote_target.clone(),
                self.route_set.iter().map(ToString::to_string).collect(),
            )
        } else {
            // Strict router: its URI becomes the Request-URI and the remote
            // target goes last in the Route set.
            let mut uri = self.route_set[0].uri.clone();
            if let Uri::Sip(u) = &mut uri {
                u.headers = None;
                u.params
                    .retain(|p: &Param| !p.name.eq_ignore_ascii_case("method"));
            }
            let mut routes: Vec<String> = self.route_set[1..]
                .iter()
                .map(ToString::to_string)
                .collect();
            routes.push(format!("<{}>", self.remote_target));
            (uri, routes)
        };
        let mut h = Headers::new();
        h.push(HeaderName::Via, via);
        h.push(HeaderName::MaxForwards, "70");
        for r in routes {
            h.push(HeaderName::Route, r);
        }
        h.push(HeaderName::From, self.local_party.clone());
        h.push(HeaderName::To, self.remote_party.clone());
        h.push(HeaderName::CallId, self.id.call_id.clone());
        h.push(HeaderName::CSeq, format!("{seq} {method}"));
        if let Some(c) = contact {
            h.push(HeaderName::Contact, c);
        }
        let body = match body {
            Some((ctype, bytes)) => {
                h.push(HeaderName::ContentType, ctype);
                bytes
            }
            None => Vec::new(),
        };
        Request {
            method,
            uri,
            headers: h,
            body,
        }
    }

    /// Where a request built by [`request`](Self::request) must be sent:
    /// the first route if any, else the remote target; over the transport
    /// the URI names, else the one the dialog arrived on. Falls back to the
    /// dialog's flow when that URI does not carry an IP address, or when
    /// `to_source` asks to always answer along the flow (NAT peers).
    pub fn next_hop(&self, to_source: bool) -> (Transport, SocketAddr) {
        // Over a stream the peer's connection is reused (RFC 5923 style):
        // many TCP clients do not accept connections on their Contact port.
        if to_source || self.flow.0.is_reliable() {
            return self.flow;
        }
        let hop = self
            .route_set
            .first()
            .map_or(&self.remote_target, |r| &r.uri);
        let Some(sip) = hop.as_sip() else {
            return self.flow;
        };
        let transport = match sip.transport().as_deref() {
            Some("tcp") => Transport::Tcp,
            Some("udp") => Transport::Udp,
            _ if sip.secure => Transport::Tcp,
            _ => self.flow.0,
        };
        match sip.host.ip() {
            Some(ip) => {
                let port = sip.port.unwrap_or(if sip.secure { 5061 } else { 5060 });
                (transport, SocketAddr::new(ip, port))
            }
            None => self.flow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Message, parse_datagram};

    fn invite(extra: &str) -> Request {
        let text = format!(
            "INVITE sip:agent@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK1\r\n\
             From: \"Alice\" <sip:alice@example.com>;tag=a1\r\nTo: <sip:agent@192.0.2.1>\r\n\
             Call-ID: c1\r\nCSeq: 7 INVITE\r\nContact: <sip:alice@198.51.100.7:5062>\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match parse_datagram(text.as_bytes(), 65535).unwrap() {
            Message::Request(r) => r,
            _ => unreachable!(),
        }
    }

    fn dialog(req: &Request) -> Dialog {
        let ess = Essentials::extract(req).unwrap();
        let contact = NameAddr::parse(req.headers.first(&HeaderName::Contact).unwrap()).unwrap();
        let flow = (Transport::Udp, "198.51.100.7:5060".parse().unwrap());
        Dialog::for_invite(req, &ess, &contact, "l1", flow, 100)
    }

    #[test]
    fn bye_without_routes_goes_to_contact() {
        let req = invite("");
        let mut d = dialog(&req);
        let bye = d.request(
            Method::Bye,
            None,
            "SIP/2.0/UDP me;branch=z9hG4bKx".into(),
            None,
            None,
        );
        assert_eq!(bye.uri.to_string(), "sip:alice@198.51.100.7:5062");
        assert_eq!(bye.headers.first(&HeaderName::CSeq), Some(&b"101 BYE"[..]));
        assert_eq!(
            bye.headers.first(&HeaderName::To),
            Some(&b"\"Alice\" <sip:alice@example.com>;tag=a1"[..])
        );
        assert_eq!(
            bye.headers.first(&HeaderName::From),
            Some(&b"<sip:agent@192.0.2.1>;tag=l1"[..])
        );
        assert!(!bye.headers.contains(&HeaderName::Route));
        assert_eq!(
            d.next_hop(false),
            (Transport::Udp, "198.51.100.7:5062".parse().unwrap())
        );
        assert_eq!(
            d.next_hop(true),
            (Transport::Udp, "198.51.100.7:5060".parse().unwrap())
        );
    }

    #[test]
    fn loose_route_set_kept_in_order() {
        let req = invite(
            "Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr;transport=tcp>\r\nRecord-Route: <sip:10.0.0.3;lr>\r\n",
        );
        let mut d = dialog(&req);
        let bye = d.request(Method::Bye, None, "v".into(), None, None);
        let routes: Vec<_> = bye.headers.all(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            [
                &b"<sip:10.0.0.1;lr>"[..],
                b"<sip:10.0.0.2;lr;transport=tcp>",
                b"<sip:10.0.0.3;lr>"
            ]
        );
        assert_eq!(bye.uri.to_string(), "sip:alice@198.51.100.7:5062");
        assert_eq!(
            d.next_hop(false),
            (Transport::Udp, "10.0.0.1:5060".parse().unwrap())
        );
    }

    #[test]
    fn strict_route_moves_target_to_the_end() {
        let req = invite("Record-Route: <sip:10.0.0.9:5070>, <sip:10.0.0.2;lr>\r\n");
        let mut d = dialog(&req);
        let bye = d.request(Method::Bye, None, "v".into(), None, None);
        assert_eq!(bye.uri.to_string(), "sip:10.0.0.9:5070");
        let routes: Vec<_> = bye.headers.all(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            [&b"<sip:10.0.0.2;lr>"[..], b"<sip:alice@198.51.100.7:5062>"]
        );
        assert_eq!(d.next_hop(false).1, "10.0.0.9:5070".parse().unwrap());
    }

    #[test]
    fn tcp_dialogs_reuse_the_connection() {
        let req = invite("Record-Route: <sip:10.0.0.1;lr>\r\n");
        let mut d = dialog(&req);
        d.flow = (Transport::Tcp, "198.51.100.7:40123".parse().unwrap());
        assert_eq!(d.next_hop(false), d.flow);
    }

    #[test]
    fn hostname_hop_falls_back_to_flow() {
        let req = invite("Record-Route: <sip:proxy.example.com;lr>\r\n");
        let d = dialog(&req);
        assert_eq!(d.next_hop(false), d.flow);
    }

    #[test]
    fn remote_cseq_must_increase() {
        let mut d = dialog(&invite(""));
        assert_eq!(d.check_remote_cseq(7), Err(DialogError::CSeqOutOfOrder));
        assert_eq!(d.check_remote_cseq(8), Ok(()));
        assert_eq!(d.check_remote_cseq(8), Err(DialogError::CSeqOutOfOrder));
    }

    #[test]
    fn ack_reuses_invite_cseq() {
        let mut d = dialog(&invite(""));
        let inv = d.request(Method::Invite, None, "v".into(), None, None);
        let ack = d.request(Method::Ack, Some(101), "v2".into(), None, None);
        assert_eq!(
            inv.headers.first(&HeaderName::CSeq),
            Some(&b"101 INVITE"[..])
        );
        assert_eq!(ack.headers.first(&HeaderName::CSeq), Some(&b"101 ACK"[..]));
        assert_eq!(d.local_cseq, 101);
    }

    fn parse_response(text: &str) -> Response {
        match parse_datagram(text.as_bytes(), 65535).unwrap() {
            Message::Response(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn uac_dialog_from_invite_and_2xx() {
        let target = Uri::parse(b"sip:human@203.0.113.5:5090").unwrap();
        let flow = (Transport::Udp, "203.0.113.5:5090".parse().unwrap());
        let mut pre = Dialog::outgoing(
            "c9",
            "<sip:+4930123@192.0.2.1>;tag=l9".into(),
            "l9",
            &target,
            flow,
            41,
        );
        let inv = pre.request(Method::Invite, None, "v".into(), None, None);
        assert_eq!(inv.uri, target);
        assert_eq!(
            inv.headers.first(&HeaderName::CSeq),
            Some(&b"42 INVITE"[..])
        );
        assert_eq!(
            inv.headers.first(&HeaderName::To),
            Some(&b"<sip:human@203.0.113.5:5090>"[..])
        );
        assert_eq!(pre.next_hop(false), flow);
        let ok = parse_response(
            "SIP/2.0 200 OK\r\nVia: v\r\nFrom: <sip:+4930123@192.0.2.1>;tag=l9\r\n\
             To: <sip:human@203.0.113.5:5090>;tag=r9\r\nCall-ID: c9\r\nCSeq: 42 INVITE\r\n\
             Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>\r\nRecord-Route: <sip:10.0.0.3;lr>\r\n\
             Contact: <sip:human@203.0.113.6:5070>\r\nContent-Length: 0\r\n\r\n",
        );
        let mut d = Dialog::for_uac(&inv, &ok, flow, "l9");
        assert_eq!(
            d.id,
            DialogId {
                call_id: "c9".into(),
                local_tag: "l9".into(),
                remote_tag: "r9".into()
            }
        );
        assert_eq!(d.local_cseq, 42);
        let bye = d.request(Method::Bye, None, "v".into(), None, None);
        assert_eq!(bye.uri.to_string(), "sip:human@203.0.113.6:5070");
        assert_eq!(bye.headers.first(&HeaderName::CSeq), Some(&b"43 BYE"[..]));
        assert_eq!(
            bye.headers.first(&HeaderName::From),
            Some(&b"<sip:+4930123@192.0.2.1>;tag=l9"[..])
        );
        assert_eq!(
            bye.headers.first(&HeaderName::To),
            Some(&b"<sip:human@203.0.113.5:5090>;tag=r9"[..])
        );
        let routes: Vec<_> = bye.headers.all(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            [
                &b"<sip:10.0.0.3;lr>"[..],
                b"<sip:10.0.0.2;lr>",
                b"<sip:10.0.0.1;lr>"
            ]
        );
        assert_eq!(d.next_hop(false).1, "10.0.0.3:5060".parse().unwrap());
    }

    #[test]
    fn uac_dialog_survives_a_bare_2xx() {
        let target = Uri::parse(b"sip:human@203.0.113.5").unwrap();
        let flow = (Transport::Udp, "203.0.113.5:5060".parse().unwrap());
        let mut pre = Dialog::outgoing("c", "<sip:a@b>;tag=l".into(), "l", &target, flow, 0);
        let inv = pre.request(Method::Invite, None, "v".into(), None, None);
        let ok = parse_response("SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        let d = Dialog::for_uac(&inv, &ok, flow, "l");
        assert_eq!(d.id.remote_tag, "");
        assert_eq!(d.remote_target, target);
        assert_eq!(d.next_hop(false), flow);
    }
}
