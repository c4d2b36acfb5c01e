//! Outgoing calls (UAC legs), REFER and refer NOTIFYs on virtual time.

use super::*;

const HUMAN: &str = "sip:human@203.0.113.5:5090";
const HUMAN_ADDR: &str = "203.0.113.5:5090";

fn dial_to(target: &str) -> Dial {
    Dial {
        target: Uri::parse(target.as_bytes()).unwrap(),
        from: "sip:+4930123@192.0.2.1".to_owned(),
        transport: Transport::Udp,
        sdp: SDP.as_bytes().to_vec(),
        headers: vec![(
            HeaderName::Other("X-Original-Call-ID".into()),
            "call-1".to_owned(),
        )],
    }
}

fn text(r: &Request, name: HeaderName) -> String {
    String::from_utf8_lossy(r.headers.first(&name).unwrap_or_default()).into_owned()
}

fn branch(r: &Request) -> String {
    Essentials::extract(r)
        .unwrap()
        .top_via
        .branch()
        .unwrap()
        .to_owned()
}

fn tag_of(value: &str) -> String {
    NameAddr::parse(value.as_bytes())
        .unwrap()
        .tag()
        .unwrap()
        .to_owned()
}

/// The response the human's UA sends to `req`: Via, From, To (with tag
/// `to_tag` unless it has one), Call-ID and CSeq copied, then `extra`
/// header lines and an SDP body when `sdp`.
fn reply(req: &Request, status: u16, to_tag: &str, extra: &str, sdp: bool) -> String {
    let mut h = String::new();
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        for v in req.headers.all(&name) {
            let v = String::from_utf8_lossy(v);
            h.push_str(&format!("{name}: {v}"));
            if name == HeaderName::To && !v.contains("tag=") {
                h.push_str(&format!(";tag={to_tag}"));
            }
            h.push_str("\r\n");
        }
    }
    let (ctype, body) = if sdp {
        ("Content-Type: application/sdp\r\n", SDP)
    } else {
        ("", "")
    };
    format!(
        "SIP/2.0 {status} {}\r\n{h}{extra}{ctype}\r\n{body}",
        crate::msg::reason_phrase(status)
    )
}

/// A NOTIFY from the peer of a confirmed incoming call.
fn notify(branch: &str, tag: &str, cseq: u32, event: &str, state: &str, body: &str) -> String {
    format!(
        "NOTIFY sip:voxtrunk@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:echo@192.0.2.1>;tag={tag}\r\n\
         Call-ID: call-1\r\nCSeq: {cseq} NOTIFY\r\nContact: <sip:alice@198.51.100.7:5062>\r\n\
         Event: {event}\r\nSubscription-State: {state}\r\nContent-Type: message/sipfrag\r\n\r\n{body}"
    )
}

impl Harness {
    /// Requests sent since the last call, with when and where.
    fn requests_to(&mut self) -> Vec<(Duration, SocketAddr, Request)> {
        std::mem::take(&mut self.sent)
            .into_iter()
            .filter_map(|(at, t)| match parse_datagram(&t.payload, 65535) {
                Ok(Message::Request(r)) => Some((at, t.destination, r)),
                _ => None,
            })
            .collect()
    }

    /// Dials the human and returns the leg and the INVITE sent.
    fn dial_human(&mut self) -> (LegId, Request) {
        let leg = self.ep.dial(self.now, dial_to(HUMAN)).unwrap();
        self.drain();
        let mut sent = self.requests_to();
        assert_eq!(sent.len(), 1);
        let (_, dest, invite) = sent.remove(0);
        assert_eq!(dest, HUMAN_ADDR.parse().unwrap());
        (leg, invite)
    }

    /// Dials, gets 200 from the human (tag h1): a confirmed outgoing leg.
    fn answered_dial(&mut self) -> (LegId, Request) {
        let (leg, invite) = self.dial_human();
        self.recv(&reply(
            &invite,
            200,
            "h1",
            "Contact: <sip:human@203.0.113.6:5070>\r\n",
            true,
        ));
        assert!(matches!(
            self.events.as_slice(),
            [Event::Answered { sdp: Ok(_), .. }]
        ));
        self.events.clear();
        self.sent.clear();
        (leg, invite)
    }
}

#[test]
fn dial_progress_answer_ack_once_then_bye_along_the_route_set() {
    let mut h = Harness::new();
    let (leg, invite) = h.dial_human();
    assert_eq!(invite.method, Method::Invite);
    assert_eq!(invite.uri.to_string(), HUMAN);
    assert_eq!(text(&invite, HeaderName::To), format!("<{HUMAN}>"));
    let from = text(&invite, HeaderName::From);
    assert!(from.starts_with("<sip:+4930123@192.0.2.1>;tag="), "{from}");
    let our_tag = tag_of(&from);
    let cseq = Essentials::extract(&invite).unwrap().cseq;
    assert_eq!(cseq.method, Method::Invite);
    assert_eq!(text(&invite, HeaderName::MaxForwards), "70");
    assert_eq!(text(&invite, HeaderName::ContentType), "application/sdp");
    assert_eq!(invite.body, SDP.as_bytes());
    assert_eq!(text(&invite, HeaderName::Allow), ALLOW);
    assert!(text(&invite, HeaderName::Contact).starts_with("<sip:voxtrunk@"));
    assert_eq!(
        text(&invite, HeaderName::Other("X-Original-Call-ID".into())),
        "call-1"
    );
    assert!(branch(&invite).starts_with("z9hG4bK"));

    h.recv(&reply(&invite, 100, "h1", "", false));
    assert!(h.events.is_empty(), "100 is not reported");
    h.advance_to(ms(5000));
    assert!(h.sent.is_empty(), "no timer A after a provisional");
    h.recv(&reply(&invite, 180, "h1", "", false));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Progress { leg: l, status: 180 }] if *l == leg
    ));
    h.events.clear();

    let ok = reply(
        &invite,
        200,
        "h1",
        "Record-Route: <sip:10.0.0.1;lr>, <sip:10.0.0.2;lr>\r\nContact: <sip:human@203.0.113.6:5070>\r\n",
        true,
    );
    h.recv(&ok);
    assert!(matches!(
        h.events.as_slice(),
        [Event::Answered { leg: l, sdp: Ok(_) }] if *l == leg
    ));
    h.events.clear();
    let mut acks = h.requests_to();
    assert_eq!(acks.len(), 1);
    let (_, dest, ack) = acks.remove(0);
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(dest, "10.0.0.2:5060".parse().unwrap(), "the first route");
    assert_eq!(ack.uri.to_string(), "sip:human@203.0.113.6:5070");
    assert_eq!(text(&ack, HeaderName::CSeq), format!("{} ACK", cseq.seq));
    assert_eq!(tag_of(&text(&ack, HeaderName::To)), "h1");
    assert_eq!(tag_of(&text(&ack, HeaderName::From)), our_tag);
    assert_ne!(
        branch(&ack),
        branch(&invite),
        "the 2xx ACK is its own transaction"
    );
    let routes: Vec<_> = ack.headers.all(&HeaderName::Route).collect();
    assert_eq!(routes, [&b"<sip:10.0.0.2;lr>"[..], b"<sip:10.0.0.1;lr>"]);

    h.recv(&ok);
    let again = h.requests_to();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].2, ack, "the same ACK for the retransmitted 2xx");
    assert!(h.events.is_empty(), "no second Answered");

    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    let mut byes = h.requests_to();
    assert_eq!(byes.len(), 1);
    let (_, dest, bye) = byes.remove(0);
    assert_eq!(bye.method, Method::Bye);
    assert_eq!(dest, "10.0.0.2:5060".parse().unwrap());
    assert_eq!(bye.uri.to_string(), "sip:human@203.0.113.6:5070");
    assert_eq!(tag_of(&text(&bye, HeaderName::From)), our_tag);
    assert_eq!(tag_of(&text(&bye, HeaderName::To)), "h1");
    assert_eq!(
        text(&bye, HeaderName::CallId),
        text(&invite, HeaderName::CallId)
    );
    assert_eq!(
        text(&bye, HeaderName::CSeq),
        format!("{} BYE", cseq.seq + 1)
    );
    let routes: Vec<_> = bye.headers.all(&HeaderName::Route).collect();
    assert_eq!(routes, [&b"<sip:10.0.0.2;lr>"[..], b"<sip:10.0.0.1;lr>"]);
    h.recv(&reply(&bye, 200, "h1", "", false));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended { leg: l, reason: EndReason::LocalHangup }] if *l == leg
    ));
    assert_eq!(h.ep.leg_count(), 0);
}

#[test]
fn dial_rejected_486_is_acked_by_the_transaction() {
    let mut h = Harness::new();
    let (leg, invite) = h.dial_human();
    h.recv(&reply(&invite, 486, "h1", "", false));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended { leg: l, reason: EndReason::Failed(486) }] if *l == leg
    ));
    h.events.clear();
    let acks = h.requests_to();
    assert_eq!(acks.len(), 1);
    let (_, dest, ack) = &acks[0];
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(*dest, HUMAN_ADDR.parse().unwrap());
    assert_eq!(branch(ack), branch(&invite), "non-2xx ACK: same branch");
    assert_eq!(tag_of(&text(ack, HeaderName::To)), "h1");
    h.recv(&reply(&invite, 486, "h1", "", false));
    assert_eq!(
        h.requests_to().len(),
        1,
        "a retransmitted 486 is ACKed again"
    );
    assert!(h.events.is_empty());
    assert_eq!(
        h.ep.hangup(h.now, leg),
        Err(CommandError::UnknownLeg),
        "the leg is gone"
    );
}

#[test]
fn dial_unanswered_retransmits_on_timer_a_and_fails_408_at_timer_b() {
    let mut h = Harness::new();
    let (leg, _) = h.dial_human();
    h.advance_to(ms(31999));
    let times: Vec<u64> = h
        .requests_to()
        .iter()
        .map(|(t, _, r)| {
            assert_eq!(r.method, Method::Invite);
            t.as_millis() as u64
        })
        .collect();
    assert_eq!(times, [500, 1500, 3500, 7500, 15500, 31500]);
    assert!(h.events.is_empty());
    h.advance_to(ms(32000));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended { leg: l, reason: EndReason::Failed(408) }] if *l == leg
    ));
}

#[test]
fn hangup_while_ringing_sends_cancel_and_ends_on_487() {
    let mut h = Harness::new();
    let (leg, invite) = h.dial_human();
    h.recv(&reply(&invite, 180, "h1", "", false));
    h.events.clear();
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    let mut sent = h.requests_to();
    assert_eq!(sent.len(), 1);
    let (_, dest, cancel) = sent.remove(0);
    assert_eq!(cancel.method, Method::Cancel);
    assert_eq!(dest, HUMAN_ADDR.parse().unwrap());
    assert_eq!(cancel.uri, invite.uri);
    assert_eq!(
        text(&cancel, HeaderName::Via),
        text(&invite, HeaderName::Via)
    );
    let seq = Essentials::extract(&invite).unwrap().cseq.seq;
    assert_eq!(text(&cancel, HeaderName::CSeq), format!("{seq} CANCEL"));
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        assert_eq!(text(&cancel, name.clone()), text(&invite, name));
    }
    h.recv(&reply(&cancel, 200, "h1", "", false));
    assert!(h.events.is_empty(), "the INVITE's final response decides");
    h.recv(&reply(&invite, 487, "h1", "", false));
    let acks = h.requests_to();
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].2.method, Method::Ack);
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended { leg: l, reason: EndReason::LocalHangup }] if *l == leg
    ));
}

#[test]
fn hangup_before_any_provisional_waits_for_one_to_cancel() {
    let mut h = Harness::new();
    let (leg, invite) = h.dial_human();
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    assert!(h.requests_to().is_empty(), "no CANCEL before a provisional");
    h.advance_to(ms(600));
    let sent = h.requests_to();
    assert!(sent.iter().all(|(_, _, r)| r.method == Method::Invite));
    h.recv(&reply(&invite, 100, "h1", "", false));
    let sent = h.requests_to();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.method, Method::Cancel);
    assert_eq!(branch(&sent[0].2), branch(&invite));
    h.recv(&reply(&invite, 180, "h1", "", false));
    assert!(h.events.is_empty(), "no Progress once hung up");
    assert!(h.requests_to().is_empty(), "one CANCEL only");
    h.recv(&reply(&invite, 487, "h1", "", false));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended { leg: l, reason: EndReason::LocalHangup }] if *l == leg
    ));
}

#[test]
fn answer_winning_the_race_with_cancel_is_acked_then_byed() {
    let mut h = Harness::new();
    let (leg, invite) = h.dial_human();
    h.recv(&reply(&invite, 180, "h1", "", false));
    h.events.clear();
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    h.sent.clear();
    h.recv(&reply(
        &invite,
        200,
        "h1",
        "Contact: <sip:human@203.0.113.6:5070>\r\n",
        true,
    ));
    let sent = h.requests_to();
    let methods: Vec<_> = sent.iter().map(|(_, _, r)| r.method.clone()).collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
    assert!(h.events.is_empty(), "no Answered after hangup");
    h.recv(&reply(&sent[1].2, 200, "h1", "", false));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended { leg: l, reason: EndReason::LocalHangup }] if *l == leg
    ));
}

#[test]
fn cancelled_call_without_final_response_ends_64_t1_after_cancel() {
    let mut h = Harness::new();
    let (leg, invite) = h.dial_human();
    h.recv(&reply(&invite, 180, "h1", "", false));
    h.events.clear();
    h.advance_to(ms(1000));
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    let cancel = h.requests_to().remove(0).2;
    h.recv(&reply(&cancel, 200, "h1", "", false));
    h.advance_to(ms(32999));
    assert!(h.events.is_empty());
    h.advance_to(ms(33000));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended { leg: l, reason: EndReason::LocalHangup }] if *l == leg
    ));
    h.advance_to(ms(100_000));
    assert_eq!(h.ep.transaction_count(), 0, "nothing left behind");
}

#[test]
fn bye_from_the_human_ends_the_dialled_leg() {
    let mut h = Harness::new();
    let (leg, invite) = h.answered_dial();
    let from = text(&invite, HeaderName::From);
    let bye = format!(
        "BYE sip:voxtrunk@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.6:5070;branch=z9hG4bKhb1\r\n\
         Max-Forwards: 70\r\nFrom: <{HUMAN}>;tag=h1\r\nTo: {from}\r\nCall-ID: {}\r\nCSeq: 1 BYE\r\n\r\n",
        text(&invite, HeaderName::CallId)
    );
    h.recv(&bye);
    assert_eq!(h.statuses(), [200]);
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended { leg: l, reason: EndReason::RemoteBye }] if *l == leg
    ));
}

#[test]
fn forked_second_2xx_is_acked_and_byed() {
    let mut h = Harness::new();
    let (leg, invite) = h.answered_dial();
    let fork = reply(
        &invite,
        200,
        "h2",
        "Contact: <sip:other@203.0.113.9:5080>\r\n",
        true,
    );
    h.recv(&fork);
    let sent = h.requests_to();
    let methods: Vec<_> = sent.iter().map(|(_, _, r)| r.method.clone()).collect();
    assert_eq!(methods, [Method::Ack, Method::Bye]);
    for (_, dest, r) in &sent {
        assert_eq!(*dest, "203.0.113.9:5080".parse().unwrap());
        assert_eq!(tag_of(&text(r, HeaderName::To)), "h2");
    }
    assert!(h.events.is_empty(), "the leg keeps its first dialog");
    h.recv(&fork);
    let again: Vec<_> = h
        .requests_to()
        .into_iter()
        .map(|(_, _, r)| r.method)
        .collect();
    assert_eq!(
        again,
        [Method::Ack],
        "a retransmitted fork 2xx is only ACKed"
    );
    h.recv(&reply(&sent[1].2, 200, "h2", "", false));
    assert!(h.events.is_empty());
    assert_eq!(h.ep.leg_count(), 1);
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    let bye = h.requests_to().remove(0).2;
    assert_eq!(tag_of(&text(&bye, HeaderName::To)), "h1");
}

#[test]
fn bare_responses_do_not_break_the_leg() {
    let mut h = Harness::new();
    let (leg, invite) = h.dial_human();
    let via = text(&invite, HeaderName::Via);
    let cseq = text(&invite, HeaderName::CSeq);
    h.recv("SIP/2.0 180 Ringing\r\n\r\n");
    h.recv(&format!("SIP/2.0 180 Ringing\r\nVia: {via}\r\n\r\n"));
    assert!(h.events.is_empty(), "no CSeq: not matched");
    h.recv(&format!(
        "SIP/2.0 200 OK\r\nVia: {via}\r\nCSeq: {cseq}\r\nContact: <mailto:x@y>\r\n\r\nnot sdp"
    ));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Answered { leg: l, sdp: Err(_) }] if *l == leg
    ));
    let sent = h.requests_to();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].1,
        HUMAN_ADDR.parse().unwrap(),
        "ACK to the Request-URI"
    );
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    assert_eq!(h.requests_to()[0].2.method, Method::Bye);
}

#[test]
fn uas_commands_are_refused_on_a_dialled_leg() {
    let mut h = Harness::new();
    let (leg, invite) = h.dial_human();
    assert_eq!(h.ep.ring(leg), Err(CommandError::WrongState));
    assert_eq!(
        h.ep.answer(h.now, leg, Vec::new()),
        Err(CommandError::WrongState)
    );
    assert_eq!(
        h.ep.reject(h.now, leg, 486, &[]),
        Err(CommandError::WrongState)
    );
    assert_eq!(
        h.ep.refer(h.now, leg, HUMAN),
        Err(CommandError::WrongState),
        "not confirmed"
    );
    // A CANCEL from outside naming our INVITE's branch finds no UAS leg.
    let cancel = format!(
        "CANCEL {HUMAN} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: <{HUMAN}>\r\n\
         Call-ID: {}\r\nCSeq: 1 CANCEL\r\n\r\n",
        text(&invite, HeaderName::Via),
        text(&invite, HeaderName::From),
        text(&invite, HeaderName::CallId),
    );
    h.recv(&cancel);
    assert_eq!(h.statuses(), [481]);
    assert!(h.events.is_empty());
}

#[test]
fn dial_needs_an_ip_literal_host() {
    let mut h = Harness::new();
    for target in ["sip:human@pbx.example.com", "tel:+4930123"] {
        assert_eq!(
            h.ep.dial(h.now, dial_to(target)).map(|_| ()),
            Err(CommandError::NoRoute),
            "{target}"
        );
    }
    h.drain();
    assert!(h.sent.is_empty());
    assert_eq!(h.ep.leg_count(), 0);
}

#[test]
fn dial_over_tcp_has_no_timer_a() {
    let mut h = Harness::new();
    let mut d = dial_to("sip:human@203.0.113.5");
    d.transport = Transport::Tcp;
    h.ep.dial(h.now, d).unwrap();
    h.drain();
    let (_, t) = h.sent.remove(0);
    assert_eq!(t.transport, Transport::Tcp);
    assert_eq!(t.destination, "203.0.113.5:5060".parse().unwrap());
    let Ok(Message::Request(inv)) = parse_datagram(&t.payload, 65535) else {
        panic!("not a request");
    };
    assert!(text(&inv, HeaderName::Via).starts_with("SIP/2.0/TCP "));
    h.advance_to(ms(31999));
    assert!(h.sent.is_empty());
    h.advance_to(ms(32000));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended {
            reason: EndReason::Failed(408),
            ..
        }]
    ));
}

// --- REFER and NOTIFY ----------------------------------------------------

#[test]
fn refer_then_notifies_report_the_transfer() {
    let mut h = Harness::new();
    let (leg, tag) = h.confirmed_call();
    h.take_sent();
    h.ep.refer(h.now, leg, HUMAN).unwrap();
    h.drain();
    let mut sent = h.requests_to();
    assert_eq!(sent.len(), 1);
    let (_, dest, refer) = sent.remove(0);
    assert_eq!(refer.method, Method::Refer);
    assert_eq!(dest, PEER.parse().unwrap());
    assert_eq!(refer.uri.to_string(), "sip:alice@198.51.100.7:5062");
    assert_eq!(text(&refer, HeaderName::ReferTo), format!("<{HUMAN}>"));
    assert_eq!(text(&refer, HeaderName::ReferredBy), "<sip:echo@192.0.2.1>");
    assert!(text(&refer, HeaderName::Contact).starts_with("<sip:voxtrunk@"));
    assert_eq!(tag_of(&text(&refer, HeaderName::From)), tag);
    assert_eq!(tag_of(&text(&refer, HeaderName::To)), "a1");
    let seq = Essentials::extract(&refer).unwrap().cseq.seq;

    h.recv(&reply(&refer, 202, "a1", "", false));
    assert!(matches!(
        h.events.as_slice(),
        [Event::ReferAnswered { leg: l, status: 202 }] if *l == leg
    ));
    h.events.clear();

    h.recv(&notify(
        "n1",
        &tag,
        2,
        "refer",
        "active;expires=60",
        "SIP/2.0 100 Trying\r\n",
    ));
    assert_eq!(h.statuses(), [200]);
    assert!(matches!(
        h.events.as_slice(),
        [Event::ReferNotify { leg: l, status: Some(100), terminated: false }] if *l == leg
    ));
    h.events.clear();
    h.recv(&notify(
        "n2",
        &tag,
        3,
        "refer",
        "terminated;reason=noresource",
        "SIP/2.0 200 OK\r\n",
    ));
    assert_eq!(h.statuses(), [200]);
    assert!(matches!(
        h.events.as_slice(),
        [Event::ReferNotify { leg: l, status: Some(200), terminated: true }] if *l == leg
    ));

    // The next request in the dialog takes the next CSeq.
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    let bye = h.requests_to().remove(0).2;
    assert_eq!(text(&bye, HeaderName::CSeq), format!("{} BYE", seq + 1));
}

#[test]
fn refer_refused_is_reported_and_the_call_goes_on() {
    let mut h = Harness::new();
    let (leg, _) = h.confirmed_call();
    h.take_sent();
    for status in [405, 603, 501] {
        h.ep.refer(h.now, leg, HUMAN).unwrap();
        h.drain();
        let refer = h.requests_to().remove(0).2;
        h.recv(&reply(&refer, status, "a1", "", false));
        assert!(
            matches!(
                h.events.as_slice(),
                [Event::ReferAnswered { leg: l, status: s }] if *l == leg && *s == status
            ),
            "{status}: {:?}",
            h.events
        );
        h.events.clear();
        assert!(h.requests_to().is_empty(), "no BYE after {status}");
    }
    assert_eq!(h.ep.leg_count(), 1);
}

#[test]
fn refer_without_answer_reports_408_at_timer_f() {
    let mut h = Harness::new();
    let (leg, _) = h.confirmed_call();
    h.take_sent();
    h.ep.refer(h.now, leg, HUMAN).unwrap();
    h.drain();
    h.advance_to(ms(31999));
    assert!(h.events.is_empty());
    let refers = h.requests_to();
    assert!(refers.len() > 1, "REFER retransmitted on timer E");
    assert!(refers.iter().all(|(_, _, r)| r.method == Method::Refer));
    h.advance_to(ms(32000));
    assert!(matches!(
        h.events.as_slice(),
        [Event::ReferAnswered { leg: l, status: 408 }] if *l == leg
    ));
    // §12.2.1.2: a 408 means the dialog is gone.
    let sent = h.requests_to();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].2.method, Method::Bye);
}

#[test]
fn refer_needs_a_confirmed_leg_and_no_refer_pending() {
    let mut h = Harness::new();
    assert_eq!(
        h.ep.refer(h.now, LegId(999), HUMAN),
        Err(CommandError::UnknownLeg)
    );
    h.recv(&invite("b1", SDP));
    let ringing = h.incoming_leg();
    assert_eq!(
        h.ep.refer(h.now, ringing, HUMAN),
        Err(CommandError::WrongState)
    );
    h.ep.reject(h.now, ringing, 486, &[]).unwrap();
    h.events.clear();

    let mut h = Harness::new();
    let (leg, _) = h.confirmed_call();
    h.take_sent();
    h.ep.refer(h.now, leg, HUMAN).unwrap();
    assert_eq!(h.ep.refer(h.now, leg, HUMAN), Err(CommandError::WrongState));
    h.drain();
    let refer = h.requests_to().remove(0).2;
    h.recv(&reply(&refer, 202, "a1", "", false));
    h.ep.refer(h.now, leg, "<sip:other@203.0.113.7>")
        .expect("free again after the final response");
    h.drain();
    let second = h.requests_to().remove(0).2;
    assert_eq!(
        text(&second, HeaderName::ReferTo),
        "<sip:other@203.0.113.7>"
    );
}

#[test]
fn refer_works_on_a_dialled_leg() {
    let mut h = Harness::new();
    let (leg, invite) = h.answered_dial();
    h.ep.refer(h.now, leg, "sip:queue@203.0.113.8").unwrap();
    h.drain();
    let (_, dest, refer) = h.requests_to().remove(0);
    assert_eq!(dest, "203.0.113.6:5070".parse().unwrap());
    assert_eq!(
        text(&refer, HeaderName::ReferredBy),
        "<sip:+4930123@192.0.2.1>"
    );
    assert_eq!(tag_of(&text(&refer, HeaderName::To)), "h1");
    let from = text(&invite, HeaderName::From);
    let notify = format!(
        "NOTIFY sip:voxtrunk@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.6:5070;branch=z9hG4bKhn1\r\n\
         Max-Forwards: 70\r\nFrom: <{HUMAN}>;tag=h1\r\nTo: {from}\r\nCall-ID: {}\r\nCSeq: 5 NOTIFY\r\n\
         Event: refer\r\nSubscription-State: terminated\r\nContent-Type: message/sipfrag\r\n\r\nSIP/2.0 486 Busy Here\r\n",
        text(&invite, HeaderName::CallId)
    );
    h.recv(&notify);
    assert_eq!(h.statuses(), [200]);
    assert!(matches!(
        h.events.as_slice(),
        [Event::ReferNotify { leg: l, status: Some(486), terminated: true }] if *l == leg
    ));
}

#[test]
fn notify_checks_event_subscription_and_sipfrag() {
    let mut h = Harness::new();
    let (leg, tag) = h.confirmed_call();
    h.take_sent();
    h.recv(&notify(
        "n1",
        &tag,
        2,
        "refer",
        "active",
        "SIP/2.0 100 Trying\r\n",
    ));
    assert_eq!(h.statuses(), [481], "no REFER was sent in this dialog");
    assert!(h.events.is_empty());

    h.ep.refer(h.now, leg, HUMAN).unwrap();
    h.drain();
    h.take_sent();
    h.recv(&notify("n2", &tag, 3, "presence", "active", ""));
    assert_eq!(h.statuses(), [489]);
    h.recv(&notify("n3", &tag, 4, "refer;id=7", "active", "hello\r\n"));
    assert_eq!(h.statuses(), [200]);
    assert!(matches!(
        h.events.as_slice(),
        [Event::ReferNotify { leg: l, status: None, terminated: false }] if *l == leg
    ));
    h.events.clear();
    h.recv(&notify("n4", &tag, 5, "refer", "active", ""));
    assert_eq!(h.statuses(), [200]);
    assert!(matches!(
        h.events.as_slice(),
        [Event::ReferNotify { status: None, .. }]
    ));
}

#[test]
fn incoming_refer_gets_405_and_stray_notify_481() {
    let mut h = Harness::new();
    h.recv(
        &invite("r1", "")
            .replace("INVITE sip", "REFER sip")
            .replace("1 INVITE", "1 REFER"),
    );
    let r = h.take_sent().pop().unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(header(&r, HeaderName::Allow), ALLOW);
    assert!(ALLOW.contains("NOTIFY") && !ALLOW.contains("REFER"));
    h.recv(
        &invite("r2", "")
            .replace("INVITE sip", "NOTIFY sip")
            .replace("1 INVITE", "1 NOTIFY"),
    );
    assert_eq!(h.statuses(), [481], "no subscription outside a dialog");
}

#[test]
fn sipfrag_status_lines() {
    assert_eq!(sipfrag_status(b"SIP/2.0 200 OK\r\n"), Some(200));
    assert_eq!(sipfrag_status(b"SIP/2.0 180 Ringing"), Some(180));
    assert_eq!(
        sipfrag_status(b"sip/2.0 603 Declined\r\nX: y\r\n"),
        Some(603)
    );
    assert_eq!(sipfrag_status(b"SIP/2.0 2000 OK\r\n"), None);
    assert_eq!(sipfrag_status(b"SIP/2.0 099 Low\r\n"), None);
    assert_eq!(sipfrag_status(b"INVITE sip:a@b SIP/2.0\r\n"), None);
    assert_eq!(sipfrag_status(b""), None);
    assert_eq!(sipfrag_status(b"\xff\xfe"), None);
}
