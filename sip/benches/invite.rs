//! Signalling cost: parsing an INVITE, handling it in the endpoint (parse,
//! validate, transaction, dialog, 100 Trying, event), and a whole call
//! (INVITE, 200, ACK, BYE, 200) through the endpoint on virtual time.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use voxtrunk_sip::endpoint::{Endpoint, EndpointConfig, Event, Output};
use voxtrunk_sip::msg::parse_datagram;

fn invite(call: u64) -> Vec<u8> {
    let sdp = "v=0\r\no=- 3921 3921 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 96 9 0 8 101\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n\
               a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
               a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";
    format!(
        "INVITE sip:agent@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK{call:x}a;rport\r\n\
         Max-Forwards: 70\r\nFrom: \"Alice\" <sip:+14155550100@carrier.example.com>;tag=a{call:x}\r\n\
         To: <sip:agent@192.0.2.1>\r\nCall-ID: {call:x}-bench@198.51.100.7\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:+14155550100@198.51.100.7:5062>\r\nRecord-Route: <sip:198.51.100.2;lr>\r\n\
         Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE\r\nSupported: timer, replaces\r\n\
         User-Agent: bench\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn in_dialog(method: &str, call: u64, tag: &str, cseq: u32) -> Vec<u8> {
    format!(
        "{method} sip:voxtrunk@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bK{call:x}{method}\r\n\
         Max-Forwards: 70\r\nFrom: \"Alice\" <sip:+14155550100@carrier.example.com>;tag=a{call:x}\r\n\
         To: <sip:agent@192.0.2.1>;tag={tag}\r\nCall-ID: {call:x}-bench@198.51.100.7\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[allow(clippy::disallowed_methods)] // the origin of virtual time
fn epoch() -> Instant {
    Instant::now()
}

fn drain(ep: &mut Endpoint) -> (Option<voxtrunk_sip::endpoint::LegId>, Option<Vec<u8>>) {
    let (mut leg, mut last) = (None, None);
    loop {
        match ep.poll_output() {
            Output::Transmit(t) => last = Some(t.payload),
            Output::Event(Event::IncomingCall(c)) => leg = Some(c.leg),
            Output::Event(_) => {}
            Output::Timeout(_) => return (leg, last),
        }
    }
}

fn bench(c: &mut Criterion) {
    let peer: SocketAddr = "198.51.100.7:5062".parse().unwrap();
    let bytes = invite(1);
    c.bench_function("parse INVITE with SDP", |b| {
        b.iter(|| parse_datagram(black_box(&bytes), 65_535).unwrap())
    });

    let now = epoch();
    let mut ep = Endpoint::new(EndpointConfig::default(), 1);
    let mut n = 0u64;
    c.bench_function("handle INVITE (parse, validate, txn, 100, event)", |b| {
        b.iter_batched(
            || {
                n += 1;
                invite(n)
            },
            |msg| {
                ep.handle_datagram(now, peer, &msg);
                drain(&mut ep)
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let mut ep = Endpoint::new(EndpointConfig::default(), 2);
    let mut n = 0u64;
    let mut t = now;
    c.bench_function("whole call: INVITE 200 ACK BYE 200", |b| {
        b.iter_batched(
            || {
                n += 1;
                n
            },
            |call| {
                ep.handle_datagram(t, peer, &invite(call));
                let (leg, _) = drain(&mut ep);
                let leg = leg.expect("incoming call");
                ep.answer(t, leg, b"v=0\r\n".to_vec()).unwrap();
                let (_, ok) = drain(&mut ep);
                let ok = String::from_utf8(ok.unwrap()).unwrap();
                let tag = ok
                    .split(";tag=")
                    .nth(2)
                    .unwrap()
                    .split("\r\n")
                    .next()
                    .unwrap()
                    .to_owned();
                ep.handle_datagram(t, peer, &in_dialog("ACK", call, &tag, 1));
                ep.handle_datagram(t, peer, &in_dialog("BYE", call, &tag, 2));
                drain(&mut ep);
                // Let transaction timers expire so state does not pile up.
                t += Duration::from_millis(40);
                ep.handle_timeout(t);
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
