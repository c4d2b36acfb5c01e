//! Whole call flows through the endpoint on virtual time.

use super::*;
use crate::msg::{Message, parse_datagram};

const PEER: &str = "198.51.100.7:5062";
const SDP: &str = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

struct Harness {
    ep: Endpoint,
    base: Instant,
    now: Instant,
    sent: Vec<(Duration, Transmit)>,
    events: Vec<Event>,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

impl Harness {
    fn new() -> Self {
        let base = crate::test_epoch();
        Harness {
            ep: Endpoint::new(EndpointConfig::default(), 42),
            base,
            now: base,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn drain(&mut self) {
        loop {
            match self.ep.poll_output() {
                Output::Transmit(t) => self.sent.push((self.now - self.base, t)),
                Output::Event(e) => self.events.push(e),
                Output::Timeout(_) => break,
            }
        }
    }

    fn recv(&mut self, text: &str) {
        self.recv_over(Transport::Udp, text);
    }

    fn recv_over(&mut self, transport: Transport, text: &str) {
        let text = fix_length(text);
        match transport {
            Transport::Udp => {
                self.ep
                    .handle_datagram(self.now, PEER.parse().unwrap(), text.as_bytes())
            }
            Transport::Tcp => {
                let mut f = crate::msg::StreamFramer::new(65535);
                f.push(text.as_bytes());
                let item = f.next_item().unwrap().unwrap();
                self.ep
                    .handle_stream_item(self.now, Transport::Tcp, PEER.parse().unwrap(), item);
            }
        }
        self.drain();
    }

    /// Advances virtual time to `t` after the start, firing timers on the way.
    fn advance_to(&mut self, t: Duration) {
        let target = self.base + t;
        loop {
            let next = match self.ep.poll_output() {
                Output::Timeout(Some(at)) if at <= target => at,
                Output::Timeout(_) => break,
                other => panic!("undrained output {other:?}"),
            };
            self.now = next;
            self.ep.handle_timeout(next);
            self.drain();
        }
        self.now = target;
    }

    fn take_sent(&mut self) -> Vec<Response> {
        std::mem::take(&mut self.sent)
            .into_iter()
            .filter_map(|(_, t)| match parse_datagram(&t.payload, 65535) {
                Ok(Message::Response(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn statuses(&mut self) -> Vec<u16> {
        self.take_sent().iter().map(|r| r.status).collect()
    }

    fn sent_requests(&mut self) -> Vec<(Duration, Request)> {
        std::mem::take(&mut self.sent)
            .into_iter()
            .filter_map(|(at, t)| match parse_datagram(&t.payload, 65535) {
                Ok(Message::Request(r)) => Some((at, r)),
                _ => None,
            })
            .collect()
    }

    fn incoming_leg(&mut self) -> LegId {
        let leg = self.events.iter().find_map(|e| match e {
            Event::IncomingCall(c) => Some(c.leg),
            _ => None,
        });
        self.events.clear();
        leg.expect("an IncomingCall event")
    }

    /// INVITE, answer, ACK: a confirmed call. Returns the leg and our tag.
    fn confirmed_call(&mut self) -> (LegId, String) {
        self.recv(&invite("b1", SDP));
        let leg = self.incoming_leg();
        self.ep.answer(self.now, leg, b"v=0\r\n".to_vec()).unwrap();
        self.drain();
        let ok = self.take_sent().pop().unwrap();
        let tag = to_tag(&ok);
        self.recv(&ack("b2", &tag, 1));
        self.events.clear();
        (leg, tag)
    }
}

fn fix_length(text: &str) -> String {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len())
}

fn to_tag(r: &Response) -> String {
    NameAddr::parse(r.headers.first(&HeaderName::To).unwrap())
        .unwrap()
        .tag()
        .unwrap()
        .to_owned()
}

fn header(r: &Response, name: HeaderName) -> String {
    String::from_utf8_lossy(r.headers.first(&name).unwrap_or_default()).into_owned()
}

fn invite(branch: &str, body: &str) -> String {
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "INVITE sip:echo@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK{branch};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:echo@192.0.2.1>\r\nCall-ID: call-1\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:alice@198.51.100.7:5062>\r\n{ctype}\r\n{body}"
    )
}

fn in_dialog(method: &str, branch: &str, tag: &str, cseq: u32, body: &str) -> String {
    let ctype = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!(
        "{method} sip:voxtrunk@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:echo@192.0.2.1>;tag={tag}\r\n\
         Call-ID: call-1\r\nCSeq: {cseq} {method}\r\nContact: <sip:alice@198.51.100.7:5062>\r\n{ctype}\r\n{body}"
    )
}

fn ack(branch: &str, tag: &str, cseq: u32) -> String {
    in_dialog("ACK", branch, tag, cseq, "")
}

fn response_to_request(req: &Request, status: u16) -> String {
    let mut h = String::new();
    for name in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
        HeaderName::CSeq,
    ] {
        for v in req.headers.all(&name) {
            h.push_str(&format!("{}: {}", name, String::from_utf8_lossy(v)));
            if name == HeaderName::To {
                h.push_str(";tag=a1");
            }
            h.push_str("\r\n");
        }
    }
    format!(
        "SIP/2.0 {status} {}\r\n{h}\r\n",
        crate::msg::reason_phrase(status)
    )
}

fn response_with_sdp(req: &Request, status: u16) -> String {
    response_to_request(req, status)
        .replace("\r\n\r\n", "\r\nContent-Type: application/sdp\r\n\r\n")
        + SDP
}

#[test]
fn invite_gets_trying_then_answer_then_ack_confirms() {
    let mut h = Harness::new();
    h.recv(&invite("b1", SDP));
    assert_eq!(h.statuses(), [100]);
    let leg = h.incoming_leg();
    h.ep.ring(leg).unwrap();
    h.ep.answer(h.now, leg, b"v=0\r\n".to_vec()).unwrap();
    h.drain();
    let sent = h.take_sent();
    assert_eq!(
        sent.iter().map(|r| r.status).collect::<Vec<_>>(),
        [180, 200]
    );
    let ok = &sent[1];
    assert_eq!(to_tag(&sent[0]), to_tag(ok), "one dialog, one tag");
    assert!(header(ok, HeaderName::Contact).starts_with("<sip:voxtrunk@"));
    assert_eq!(
        header(ok, HeaderName::Via),
        "SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKb1;rport=5062;received=198.51.100.7"
    );
    h.recv(&ack("b2", &to_tag(ok), 1));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Acked {
            sdp: AckSdp::None,
            ..
        }]
    ));
    h.advance_to(Duration::from_secs(40));
    assert!(h.sent.is_empty(), "no 2xx retransmission after the ACK");
}

#[test]
fn invite_retransmit_absorbed() {
    let mut h = Harness::new();
    h.recv(&invite("b1", SDP));
    h.recv(&invite("b1", SDP));
    assert_eq!(h.statuses(), [100, 100]);
    assert_eq!(
        h.events
            .iter()
            .filter(|e| matches!(e, Event::IncomingCall(_)))
            .count(),
        1
    );
}

#[test]
fn answer_retransmitted_on_timer_g_until_ack() {
    let mut h = Harness::new();
    h.recv(&invite("b1", SDP));
    let leg = h.incoming_leg();
    h.ep.answer(h.now, leg, b"v=0\r\n".to_vec()).unwrap();
    h.drain();
    h.advance_to(ms(9000));
    let times: Vec<u64> = h.sent.iter().map(|(t, _)| t.as_millis() as u64).collect();
    assert_eq!(
        times,
        [0, 0, 500, 1500, 3500, 7500],
        "100, 200, then G: T1, 2T1, 4T1, T2..."
    );
    let tag = to_tag(&h.take_sent()[1]);
    h.recv(&ack("b2", &tag, 1));
    h.advance_to(ms(30000));
    assert!(h.sent.is_empty());
}

#[test]
fn timer_h_without_ack_sends_bye() {
    let mut h = Harness::new();
    h.recv(&invite("b1", SDP));
    let leg = h.incoming_leg();
    h.ep.answer(h.now, leg, b"v=0\r\n".to_vec()).unwrap();
    h.drain();
    h.advance_to(ms(32000));
    let byes: Vec<_> = h
        .sent_requests()
        .into_iter()
        .filter(|(_, r)| r.method == Method::Bye)
        .collect();
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].0, ms(32000), "timer H = 64·T1");
    let (_, bye) = &byes[0];
    assert_eq!(bye.uri.to_string(), "sip:alice@198.51.100.7:5062");
    h.recv(&response_to_request(bye, 200));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended {
            reason: EndReason::AckTimeout,
            ..
        }]
    ));
}

#[test]
fn cancel_before_answer_gets_200_and_487() {
    let mut h = Harness::new();
    h.recv(&invite("b1", SDP));
    let leg = h.incoming_leg();
    h.take_sent();
    h.recv(
        &invite("b1", SDP)
            .replace("INVITE sip", "CANCEL sip")
            .replace("1 INVITE", "1 CANCEL"),
    );
    let sent = h.take_sent();
    assert_eq!(
        sent.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 487]
    );
    assert_eq!(header(&sent[0], HeaderName::CSeq), "1 CANCEL");
    assert_eq!(header(&sent[1], HeaderName::CSeq), "1 INVITE");
    assert_eq!(to_tag(&sent[0]), to_tag(&sent[1]));
    assert!(
        matches!(h.events.as_slice(), [Event::Ended { reason: EndReason::Cancelled, leg: l }] if *l == leg)
    );
    assert_eq!(
        h.ep.answer(h.now, leg, Vec::new()),
        Err(CommandError::UnknownLeg)
    );
    // 487 is retransmitted until the ACK, which has the INVITE's branch.
    h.advance_to(ms(600));
    assert_eq!(h.statuses(), [487]);
    h.recv(&ack("b1", &to_tag(&sent[1]), 1));
    h.advance_to(ms(20000));
    assert!(h.sent.is_empty());
}

#[test]
fn cancel_loses_race_with_answer() {
    let mut h = Harness::new();
    h.recv(&invite("b1", SDP));
    let leg = h.incoming_leg();
    h.ep.answer(h.now, leg, b"v=0\r\n".to_vec()).unwrap();
    h.drain();
    h.take_sent();
    h.recv(
        &invite("b1", SDP)
            .replace("INVITE sip", "CANCEL sip")
            .replace("1 INVITE", "1 CANCEL"),
    );
    assert_eq!(h.statuses(), [200], "CANCEL gets 200, INVITE keeps its 200");
    assert!(h.events.is_empty(), "the call goes on; the caller will BYE");
}

#[test]
fn cancel_without_invite_gets_481() {
    let mut h = Harness::new();
    h.recv(
        &invite("zz", SDP)
            .replace("INVITE sip", "CANCEL sip")
            .replace("1 INVITE", "1 CANCEL"),
    );
    assert_eq!(h.statuses(), [481]);
}

#[test]
fn bye_from_peer_ends_call_and_retransmission_gets_same_200() {
    let mut h = Harness::new();
    let (leg, tag) = h.confirmed_call();
    h.take_sent();
    h.recv(&in_dialog("BYE", "b3", &tag, 2, ""));
    h.recv(&in_dialog("BYE", "b3", &tag, 2, ""));
    let sent = h.take_sent();
    assert_eq!(
        sent.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200]
    );
    assert_eq!(sent[0], sent[1]);
    assert!(
        matches!(h.events.as_slice(), [Event::Ended { reason: EndReason::RemoteBye, leg: l }] if *l == leg)
    );
    h.recv(&in_dialog("BYE", "b4", &tag, 3, ""));
    assert_eq!(h.statuses(), [481], "the dialog is gone");
}

#[test]
fn hangup_sends_bye_retransmitted_on_timer_e() {
    let mut h = Harness::new();
    let (leg, _) = h.confirmed_call();
    h.take_sent();
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    h.advance_to(ms(4000));
    let byes = h.sent_requests();
    let times: Vec<u64> = byes.iter().map(|(t, _)| t.as_millis() as u64).collect();
    assert_eq!(times, [0, 500, 1500, 3500]);
    assert!(
        byes.windows(2).all(|w| w[0].1 == w[1].1),
        "identical retransmissions"
    );
    h.recv(&response_to_request(&byes[0].1, 200));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Ended {
            reason: EndReason::LocalHangup,
            ..
        }]
    ));
}

#[test]
fn bye_timer_f_still_ends_the_leg() {
    let mut h = Harness::new();
    let (leg, _) = h.confirmed_call();
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    h.advance_to(ms(31999));
    assert!(h.events.is_empty());
    h.advance_to(ms(32000));
    assert!(matches!(h.events.as_slice(), [Event::Ended { leg: l, .. }] if *l == leg));
}

#[test]
fn hangup_before_ack_waits_for_ack() {
    let mut h = Harness::new();
    h.recv(&invite("b1", SDP));
    let leg = h.incoming_leg();
    h.ep.answer(h.now, leg, b"v=0\r\n".to_vec()).unwrap();
    h.drain();
    let tag = to_tag(&h.take_sent()[1]);
    h.ep.hangup(h.now, leg).unwrap();
    h.drain();
    assert!(h.sent_requests().is_empty(), "no BYE before the ACK (§15)");
    h.recv(&ack("b2", &tag, 1));
    assert_eq!(
        h.sent_requests()
            .iter()
            .filter(|(_, r)| r.method == Method::Bye)
            .count(),
        1
    );
}

#[test]
fn hold_reinvite_answered_by_tu_and_acked() {
    let mut h = Harness::new();
    let (leg, tag) = h.confirmed_call();
    h.take_sent();
    let hold = SDP.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
    );
    h.recv(&in_dialog("INVITE", "b5", &tag, 2, &hold));
    assert_eq!(h.statuses(), [100]);
    let offer = match h.events.as_slice() {
        [
            Event::OfferReceived {
                leg: l,
                method: Method::Invite,
                offer: Some(o),
            },
        ] if *l == leg => o.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        offer.media_direction(&offer.media[0]),
        crate::sdp::Direction::SendOnly
    );
    h.events.clear();
    h.ep.answer_offer(h.now, leg, Ok(b"v=0\r\na=recvonly\r\n".to_vec()))
        .unwrap();
    h.drain();
    let ok = h.take_sent();
    assert_eq!(ok[0].status, 200);
    assert_eq!(header(&ok[0], HeaderName::CSeq), "2 INVITE");
    h.advance_to(ms(600));
    assert_eq!(
        h.statuses(),
        [200],
        "2xx to a re-INVITE is retransmitted too"
    );
    h.recv(&ack("b6", &tag, 2));
    assert!(matches!(h.events.as_slice(), [Event::Acked { .. }]));
    h.advance_to(ms(10000));
    assert!(h.sent.is_empty());
}

#[test]
fn reinvite_glare_gets_491() {
    let mut h = Harness::new();
    let (leg, tag) = h.confirmed_call();
    h.take_sent();
    h.ep.reinvite(h.now, leg, b"v=0\r\n".to_vec()).unwrap();
    h.drain();
    let ours = h.sent_requests();
    assert_eq!(ours[0].1.method, Method::Invite);
    h.recv(&in_dialog("INVITE", "b7", &tag, 2, SDP));
    assert_eq!(h.statuses(), [491]);
    h.recv(&in_dialog("UPDATE", "b8", &tag, 3, SDP));
    assert_eq!(h.statuses(), [491]);
}

#[test]
fn our_reinvite_refused_with_491_is_retried_within_two_seconds() {
    let mut h = Harness::new();
    let (leg, _) = h.confirmed_call();
    h.take_sent();
    h.ep.reinvite(h.now, leg, b"v=0\r\n".to_vec()).unwrap();
    h.drain();
    let (_, first) = h.sent_requests().remove(0);
    h.recv(&response_to_request(&first, 491));
    let acks = h.sent_requests();
    assert_eq!(acks.len(), 1);
    assert_eq!(
        acks[0].1.method,
        Method::Ack,
        "non-2xx ACK from the transaction"
    );
    h.advance_to(ms(2001));
    let mut retry: Vec<_> = h
        .sent_requests()
        .into_iter()
        .filter(|(_, r)| r.method == Method::Invite)
        .collect();
    retry.dedup_by(|a, b| a.1 == b.1); // timer A retransmissions of the retry
    assert_eq!(retry.len(), 1);
    assert_ne!(
        retry[0].1.headers.first(&HeaderName::CSeq),
        first.headers.first(&HeaderName::CSeq),
        "a new transaction"
    );
    h.recv(&response_with_sdp(&retry[0].1, 200));
    assert!(
        h.sent_requests()
            .iter()
            .any(|(_, r)| r.method == Method::Ack)
    );
    assert!(matches!(
        h.events.as_slice(),
        [Event::OfferAnswered { result: Ok(_), .. }]
    ));
}

#[test]
fn second_offer_while_one_is_pending_gets_500_with_retry_after() {
    let mut h = Harness::new();
    let (_, tag) = h.confirmed_call();
    h.take_sent();
    h.recv(&in_dialog("INVITE", "b5", &tag, 2, SDP));
    h.recv(&in_dialog("UPDATE", "b6", &tag, 3, SDP));
    let sent = h.take_sent();
    assert_eq!(
        sent.iter().map(|r| r.status).collect::<Vec<_>>(),
        [100, 500]
    );
    assert!(sent[1].headers.contains(&HeaderName::RetryAfter));
}

#[test]
fn bye_while_reinvite_pending_terminates_it_with_487() {
    let mut h = Harness::new();
    let (_, tag) = h.confirmed_call();
    h.recv(&in_dialog("INVITE", "b5", &tag, 2, SDP));
    h.take_sent();
    h.recv(&in_dialog("BYE", "b6", &tag, 3, ""));
    let mut st = h.statuses();
    st.sort();
    assert_eq!(st, [200, 487]);
}

#[test]
fn invite_without_sdp_gets_offer_and_answer_comes_in_ack() {
    let mut h = Harness::new();
    h.recv(&invite("b1", ""));
    let offer = h.events.iter().find_map(|e| match e {
        Event::IncomingCall(c) => Some(c.offer.is_none()),
        _ => None,
    });
    assert_eq!(offer, Some(true));
    let leg = h.incoming_leg();
    h.ep.answer(h.now, leg, SDP.as_bytes().to_vec()).unwrap();
    h.drain();
    let tag = to_tag(&h.take_sent()[1]);
    h.recv(&in_dialog("ACK", "b2", &tag, 1, SDP));
    assert!(matches!(
        h.events.as_slice(),
        [Event::Acked {
            sdp: AckSdp::Answer(_),
            ..
        }]
    ));
}

#[test]
fn options_lists_allow_accept_supported() {
    let mut h = Harness::new();
    h.recv(
        &invite("o1", "")
            .replace("INVITE sip", "OPTIONS sip")
            .replace("1 INVITE", "1 OPTIONS"),
    );
    let r = h.take_sent().pop().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, HeaderName::Allow), ALLOW);
    assert_eq!(header(&r, HeaderName::Accept), "application/sdp");
    assert!(r.headers.contains(&HeaderName::Supported));
}

#[test]
fn draining_refuses_new_calls_with_503_retry_after() {
    let mut h = Harness::new();
    let (leg, tag) = h.confirmed_call();
    h.take_sent();
    h.ep.set_draining(true);
    h.recv(&invite("b9", SDP).replace("call-1", "call-2"));
    let r = h.take_sent().pop().unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(header(&r, HeaderName::RetryAfter), "5");
    assert_eq!(h.ep.leg_count(), 1, "the live call is untouched");
    h.recv(&in_dialog("BYE", "b3", &tag, 2, ""));
    assert!(matches!(h.events.as_slice(), [Event::Ended { leg: l, .. }] if *l == leg));
}

#[test]
fn methods_outside_the_ua_get_405_and_unknown_get_501() {
    let mut h = Harness::new();
    for (method, status) in [
        ("REGISTER", 405),
        ("MESSAGE", 405),
        ("SUBSCRIBE", 405),
        ("FOO", 501),
    ] {
        h.recv(
            &invite("m1", "")
                .replace("INVITE sip", &format!("{method} sip"))
                .replace("1 INVITE", &format!("1 {method}")),
        );
        let r = h.take_sent().pop().unwrap();
        assert_eq!(r.status, status, "{method}");
        assert_eq!(header(&r, HeaderName::Allow), ALLOW);
    }
}

#[test]
fn max_forwards_zero() {
    let mut h = Harness::new();
    h.recv(&invite("m1", SDP).replace("Max-Forwards: 70", "Max-Forwards: 0"));
    assert_eq!(h.statuses(), [483]);
    h.recv(
        &invite("m2", "")
            .replace("INVITE sip", "OPTIONS sip")
            .replace("1 INVITE", "1 OPTIONS")
            .replace("Max-Forwards: 70", "Max-Forwards: 0"),
    );
    assert_eq!(
        h.statuses(),
        [200],
        "OPTIONS is answered by a UAS whatever Max-Forwards says"
    );
}

#[test]
fn malformed_sdp_gets_400_with_warning() {
    let mut h = Harness::new();
    h.recv(&invite("s1", "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 999.1.1.1\r\nt=0 0\r\nm=audio 1 RTP/AVP 0\r\n"));
    let r = h.take_sent().pop().unwrap();
    assert_eq!(r.status, 400);
    let w = header(&r, HeaderName::Warning);
    assert!(
        w.starts_with("399 ") && w.contains("malformed SDP: line 4"),
        "{w}"
    );
    assert!(h.events.is_empty(), "no call is created");
}

#[test]
fn tcp_has_no_retransmissions() {
    let mut h = Harness::new();
    h.recv_over(Transport::Tcp, &invite("t1", SDP).replace("UDP", "TCP"));
    let leg = h.incoming_leg();
    h.ep.answer(h.now, leg, b"v=0\r\n".to_vec()).unwrap();
    h.drain();
    assert!(h.sent.iter().all(|(_, t)| t.transport == Transport::Tcp));
    h.advance_to(ms(20000));
    assert_eq!(h.statuses(), [100, 200], "no timer G over TCP");
}

#[test]
fn same_seed_same_bytes() {
    let run = || {
        let mut h = Harness::new();
        h.confirmed_call();
        h.sent
            .into_iter()
            .map(|(_, t)| t.payload)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

mod uac;
