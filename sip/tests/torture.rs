//! RFC 4475 and RFC 5118 torture messages through the sans-IO endpoint.
//!
//! The messages and the expected answers are conformance data kept outside
//! the project: `VOXTRUNK_CONFORMANCE_DIR` names the folder holding
//! `rfc4475/` and `rfc5118/` (CI sets it; the default is `../shared/` beside
//! the checkout). The expectations are read from the machine-readable table
//! in `rfc4475/EXPECTED.md`, so this test asserts exactly what that file says.
//! The same corpus is replayed against the running binary by the server's
//! own integration test; this one pins the protocol logic on virtual time.

mod conformance;

use std::net::SocketAddr;
use std::time::Instant;

use conformance::{conformance_dir, expectations};

use voxtrunk_sip::Transport;
use voxtrunk_sip::endpoint::{Endpoint, EndpointConfig, Event, Output};
use voxtrunk_sip::msg::{HeaderName, Message, Response, StreamFramer, parse_datagram};

/// The origin of virtual time; the endpoint never reads a clock itself.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

const PEER: &str = "127.0.0.1:40000";

struct Outcome {
    responses: Vec<Response>,
    calls: usize,
}

fn drive(ep: &mut Endpoint, now: Instant, transport: Transport, bytes: &[u8]) -> Outcome {
    let peer: SocketAddr = PEER.parse().unwrap();
    match transport {
        Transport::Udp => ep.handle_datagram(now, peer, bytes),
        Transport::Tcp => {
            let mut f = StreamFramer::new(65535);
            f.push(bytes);
            while let Ok(Some(item)) = f.next_item() {
                ep.handle_stream_item(now, transport, peer, item);
            }
        }
    }
    let mut out = Outcome {
        responses: Vec::new(),
        calls: 0,
    };
    let mut legs = Vec::new();
    loop {
        match ep.poll_output() {
            Output::Transmit(t) => {
                assert_eq!(t.destination, peer, "responses go to the real source");
                if let Ok(Message::Response(r)) = parse_datagram(&t.payload, 65535) {
                    out.responses.push(r);
                }
            }
            Output::Event(Event::IncomingCall(c)) => {
                out.calls += 1;
                legs.push(c.leg);
            }
            Output::Event(_) => {}
            Output::Timeout(_) => break,
        }
        // Act as the call logic: answer every call, so INVITEs get a final.
        for leg in legs.drain(..) {
            ep.answer(now, leg, b"v=0\r\n".to_vec()).unwrap();
        }
    }
    out
}

fn matches(token: &str, o: &Outcome) -> bool {
    let finals: Vec<u16> = o
        .responses
        .iter()
        .map(|r| r.status)
        .filter(|s| *s >= 200)
        .collect();
    match token {
        "none" => o.responses.is_empty(),
        "INV" => finals.len() == 1 && [200, 403, 404, 480, 486, 488, 603].contains(&finals[0]),
        "non400final" => finals.len() == 1 && finals[0] != 400 && finals[0] < 500,
        n => finals.len() == 1 && n.parse::<u16>().ok() == Some(finals[0]),
    }
}

fn options(n: usize) -> Vec<u8> {
    format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bKlive{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:probe@127.0.0.1>\r\n\
         Call-ID: live-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn rfc4475_every_message_answered_as_expected() {
    let dir = conformance_dir().join("rfc4475");
    let table = expectations();
    assert_eq!(table.len(), 49, "EXPECTED.md lists 49 messages");
    let mut ep = Endpoint::new(EndpointConfig::default(), 1);
    let now = epoch();
    let mut failures = Vec::new();
    for (n, e) in table.iter().enumerate() {
        let bytes = std::fs::read(dir.join(&e.file)).unwrap();
        // No TLS listener yet: the TLS message goes over UDP, as EXPECTED.md allows.
        let transport = if e.transport == "tcp" {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let o = drive(&mut ep, now, transport, &bytes);
        let got: Vec<u16> = o.responses.iter().map(|r| r.status).collect();
        if !e.accepted.iter().any(|t| matches(t, &o)) {
            failures.push(format!(
                "{}: sent {got:?}, expected one of {:?}",
                e.file, e.accepted
            ));
        }
        if !e.call_allowed && o.calls > 0 {
            failures.push(format!("{}: created a call", e.file));
        }
        let live = drive(&mut ep, now, Transport::Udp, &options(n));
        if live.responses.iter().map(|r| r.status).collect::<Vec<_>>() != [200] {
            failures.push(format!("{}: OPTIONS afterwards not answered 200", e.file));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 49 wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn response_for(file: &str, transport: Transport) -> Response {
    let bytes = std::fs::read(conformance_dir().join("rfc4475").join(file)).unwrap();
    let mut ep = Endpoint::new(EndpointConfig::default(), 1);
    let mut o = drive(&mut ep, epoch(), transport, &bytes);
    o.responses.pop().expect("a response")
}

fn raw(r: &Response, h: HeaderName) -> Vec<Vec<u8>> {
    r.headers.all(&h).map(<[u8]>::to_vec).collect()
}

#[test]
fn intmeth_501_copies_to_and_from_byte_for_byte() {
    let bytes = std::fs::read(conformance_dir().join("rfc4475/intmeth.sip")).unwrap();
    let r = response_for("intmeth.sip", Transport::Tcp);
    assert_eq!(r.status, 501);
    assert!(r.headers.contains(&HeaderName::Allow));
    for name in ["To: ", "From: "] {
        let start = bytes
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap()
            + name.len();
        let end = start
            + bytes[start..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .unwrap();
        let sent = &bytes[start..end];
        let h = if name == "To: " {
            HeaderName::To
        } else {
            HeaderName::From
        };
        let got = &raw(&r, h)[0];
        assert!(got.starts_with(sent), "{name} not copied exactly");
    }
}

#[test]
fn vias_are_copied_in_order() {
    for (file, transport, count) in [
        ("wsinv.sip", Transport::Udp, 3),
        ("transports.sip", Transport::Udp, 5),
        ("longreq.sip", Transport::Tcp, 34),
    ] {
        let r = response_for(file, transport);
        let values: usize = raw(&r, HeaderName::Via)
            .iter()
            .map(|v| voxtrunk_sip::msg::grammar::split_commas(v).unwrap().len())
            .sum();
        assert_eq!(values, count, "{file}");
    }
    let r = response_for("longreq.sip", Transport::Tcp);
    let last = raw(&r, HeaderName::Via).pop().unwrap();
    assert!(
        String::from_utf8(last)
            .unwrap()
            .contains("received=192.0.2.5;branch=verylong")
    );
}

#[test]
fn bext01_lists_unsupported_extensions() {
    let r = response_for("bext01.sip", Transport::Udp);
    assert_eq!(r.status, 420);
    assert_eq!(
        raw(&r, HeaderName::Unsupported),
        [b"nothingSupportsThis, nothingSupportsThisEither".to_vec()]
    );
}

#[test]
fn invut_415_offers_sdp() {
    let r = response_for("invut.sip", Transport::Udp);
    assert_eq!(r.status, 415);
    assert_eq!(raw(&r, HeaderName::Accept), [b"application/sdp".to_vec()]);
}

#[test]
fn rfc5118_ipv6_messages() {
    let dir = conformance_dir().join("rfc5118");
    // Primary answers from rfc5118/EXPECTED.md; 488 is the no-common-codec
    // answer the call logic would give, here any INVITE is simply answered.
    for (file, accepted) in [
        ("ipv6-good.sip", &[405][..]),
        ("ipv6-bad.sip", &[400]),
        ("port-ambiguous.sip", &[405]),
        ("port-unambiguous.sip", &[405]),
        ("via-received-param-with-delim.sip", &[481, 400]),
        ("via-received-param-no-delim.sip", &[200]),
        ("mult-ip-in-header.sip", &[481]),
        ("ipv6-correct-abnf-2-colons.sip", &[200]),
        ("ipv6-bug-abnf-3-colons.sip", &[200, 400]),
        ("ipv6-in-sdp.sip", &[200, 488]),
        ("mult-ip-in-sdp.sip", &[200, 488]),
        ("ipv4-mapped-ipv6.sip", &[200, 488]),
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let mut ep = Endpoint::new(EndpointConfig::default(), 1);
        let o = drive(&mut ep, epoch(), Transport::Udp, &bytes);
        let last = o.responses.last().map(|r| r.status);
        assert!(
            last.is_some_and(|s| accepted.contains(&s)),
            "{file}: got {last:?}, expected {accepted:?}"
        );
    }
}
