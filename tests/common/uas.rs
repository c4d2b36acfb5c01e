//! A scripted person on the other end of a transfer: a SIP user agent
//! server on UDP that answers one INVITE with PCMU, sends a tone while
//! counting the loud RTP packets it receives, and hangs up.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use voxtrunk_media::codec::g711::{linear_to_ulaw, ulaw_to_linear};
use voxtrunk_sip::msg::{HeaderName, Message, Request, parse_datagram};

/// What the person saw.
#[derive(Debug, Default)]
pub struct Answered {
    /// The INVITE.
    pub invite: Option<String>,
    /// RTP packets received.
    pub rtp_packets: u64,
    /// Of those, packets whose audio is louder than -30 dBFS RMS.
    pub loud_packets: u64,
    /// Tone packets sent.
    pub sent: u64,
    /// Our BYE got a 200.
    pub bye_answered: bool,
}

/// A person listening on 127.0.0.1.
pub struct Person {
    sip: UdpSocket,
    rtp: UdpSocket,
}

fn header(req: &Request, name: &HeaderName) -> String {
    String::from_utf8_lossy(req.headers.first(name).unwrap_or_default()).into_owned()
}

/// The RTP address in an SDP body (`c=` and `m=audio`).
fn sdp_address(body: &[u8]) -> Option<SocketAddr> {
    let text = String::from_utf8_lossy(body);
    let ip = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))?
        .trim()
        .to_owned();
    let port = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))?
        .split(' ')
        .next()?
        .parse::<u16>()
        .ok()?;
    format!("{ip}:{port}").parse().ok()
}

impl Person {
    /// Binds the SIP and RTP sockets.
    pub fn new() -> Person {
        let sip = UdpSocket::bind("127.0.0.1:0").expect("bind SIP");
        sip.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let rtp = UdpSocket::bind("127.0.0.1:0").expect("bind RTP");
        rtp.set_read_timeout(Some(Duration::from_millis(5)))
            .expect("timeout");
        Person { sip, rtp }
    }

    /// The SIP address.
    pub fn sip_addr(&self) -> SocketAddr {
        self.sip.local_addr().expect("address")
    }

    fn respond(&self, to: SocketAddr, req: &Request, status: &str, extra: &str, body: &str) {
        let mut msg = format!("SIP/2.0 {status}\r\n");
        for v in req.headers.all(&HeaderName::Via) {
            msg.push_str(&format!("Via: {}\r\n", String::from_utf8_lossy(v)));
        }
        let mut to_header = header(req, &HeaderName::To);
        if !to_header.contains("tag=") {
            to_header.push_str(";tag=person1");
        }
        msg.push_str(&format!(
            "From: {}\r\nTo: {to_header}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            header(req, &HeaderName::From),
            header(req, &HeaderName::CallId),
            header(req, &HeaderName::CSeq),
            body.len()
        ));
        self.sip.send_to(msg.as_bytes(), to).expect("send");
    }

    fn next_request(&self, until: Instant) -> Option<(Request, SocketAddr)> {
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < until {
            if let Ok((n, from)) = self.sip.recv_from(&mut buf) {
                if let Ok(Message::Request(r)) = parse_datagram(&buf[..n], 65_535) {
                    return Some((r, from));
                }
            }
        }
        None
    }

    /// Waits up to `ring` for an INVITE, answers it, talks for `talk`
    /// (a 440 Hz tone out, loud packets counted in), then sends BYE.
    pub fn answer_once(&self, ring: Duration, talk: Duration) -> Answered {
        let mut out = Answered::default();
        let until = Instant::now() + ring;
        let Some((invite, from)) = self
            .next_request(until)
            .filter(|(r, _)| r.method.as_str() == "INVITE")
        else {
            return out;
        };
        out.invite = Some(String::from_utf8_lossy(&invite.to_bytes()).into_owned());
        let Some(remote_rtp) = sdp_address(&invite.body) else {
            return out;
        };
        let me = self.sip_addr();
        let rtp_port = self.rtp.local_addr().expect("address").port();
        let sdp = format!(
            "v=0\r\no=person 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        );
        let contact = format!("Contact: <sip:person@{me}>\r\nContent-Type: application/sdp\r\n");
        self.respond(from, &invite, "180 Ringing", "", "");
        self.respond(from, &invite, "200 OK", &contact, &sdp);
        // The ACK (a retransmitted INVITE gets the 200 again).
        let ack_until = Instant::now() + Duration::from_secs(5);
        loop {
            match self.next_request(ack_until) {
                Some((r, _)) if r.method.as_str() == "ACK" => break,
                Some((r, f)) if r.method.as_str() == "INVITE" => {
                    self.respond(f, &r, "200 OK", &contact, &sdp)
                }
                Some(_) => {}
                None => return out,
            }
        }
        // Talk: one tone packet every 20 ms, count what arrives.
        let started = Instant::now();
        let mut seq: u16 = 1;
        let mut buf = [0u8; 2048];
        // Enough heard both ways ends the talk early.
        while started.elapsed() < talk && !(out.loud_packets >= 50 && out.sent >= 150) {
            let mut pkt = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            for i in 0..160u32 {
                let t = f64::from(u32::from(seq) * 160 + i) / 8000.0;
                let s = (t * 440.0 * std::f64::consts::TAU).sin() * 8000.0;
                pkt.push(linear_to_ulaw(s as i16));
            }
            let _ = self.rtp.send_to(&pkt, remote_rtp);
            out.sent += 1;
            seq = seq.wrapping_add(1);
            let tick = Instant::now() + Duration::from_millis(20);
            while Instant::now() < tick {
                if let Ok((n, _)) = self.rtp.recv_from(&mut buf) {
                    if n > 12 {
                        out.rtp_packets += 1;
                        let payload = &buf[12..n];
                        let rms = (payload
                            .iter()
                            .map(|&b| f64::from(ulaw_to_linear(b)).powi(2))
                            .sum::<f64>()
                            / payload.len() as f64)
                            .sqrt();
                        if rms > 1000.0 {
                            out.loud_packets += 1;
                        }
                    }
                }
            }
        }
        // Hang up: BYE from our side of the dialog.
        let their_contact = header(&invite, &HeaderName::Contact);
        let target = their_contact
            .trim()
            .trim_start_matches('<')
            .split('>')
            .next()
            .unwrap_or_default()
            .to_owned();
        let to_header = header(&invite, &HeaderName::To);
        let bye = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKpersonbye\r\n\
             Max-Forwards: 70\r\nFrom: {to_header};tag=person1\r\nTo: {}\r\nCall-ID: {}\r\n\
             CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
            header(&invite, &HeaderName::From),
            header(&invite, &HeaderName::CallId),
        );
        let bye_until = Instant::now() + Duration::from_secs(5);
        let mut buf = vec![0u8; 65_536];
        let mut next_send = Instant::now();
        while Instant::now() < bye_until && !out.bye_answered {
            if Instant::now() >= next_send {
                self.sip.send_to(bye.as_bytes(), from).expect("send BYE");
                next_send = Instant::now() + Duration::from_millis(500);
            }
            if let Ok((n, _)) = self.sip.recv_from(&mut buf) {
                if let Ok(Message::Response(r)) = parse_datagram(&buf[..n], 65_535) {
                    out.bye_answered = r.status == 200
                        && String::from_utf8_lossy(
                            r.headers.first(&HeaderName::CSeq).unwrap_or_default(),
                        )
                        .contains("BYE");
                }
            }
        }
        out
    }
}
