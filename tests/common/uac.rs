//! A small scripted SIP user agent client on UDP, for tests that need to
//! look at exact messages (SIPp covers the standard flows).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use voxtrunk_sip::msg::{HeaderName, Message, NameAddr, Request, Response, parse_datagram};

/// A PCMU offer with its media at `port`.
pub fn pcmu_offer(port: u16) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    )
}

/// A UAC bound to 127.0.0.1.
pub struct Uac {
    /// The signalling socket.
    pub sock: UdpSocket,
    /// The server.
    pub server: SocketAddr,
}

impl Uac {
    /// A new UAC talking to `server`.
    pub fn new(server: SocketAddr) -> Uac {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Uac { sock, server }
    }

    /// Sends raw text.
    pub fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.server).unwrap();
    }

    /// Builds a request for `user` in call `call`; `to_tag` is `""` or
    /// `";tag=…"`.
    pub fn request(
        &self,
        method: &str,
        user: &str,
        call: &str,
        cseq: u32,
        to_tag: &str,
        body: &str,
    ) -> String {
        let local = self.sock.local_addr().unwrap();
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} sip:{user}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call}{cseq}{method}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:qa@{local}>;tag=qa\r\nTo: <sip:{user}@{server}>{to_tag}\r\n\
             Call-ID: {call}\r\nCSeq: {cseq} {method}\r\nContact: <sip:qa@{local}>\r\n{ctype}\
             Content-Length: {}\r\n\r\n{body}",
            body.len(),
            server = self.server
        )
    }

    /// Waits for a message matching `pred`, up to `wait`.
    pub fn wait_for(
        &self,
        wait: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                if let Ok(m) = parse_datagram(&buf[..n], 65_535) {
                    if pred(&m) {
                        return Some(m);
                    }
                }
            }
        }
        None
    }

    /// The final response for a call, up to 5 s.
    pub fn final_response(&self, call: &str) -> Option<Response> {
        match self.wait_for(Duration::from_secs(5), |m| {
            matches!(m, Message::Response(r) if r.status >= 200
                && r.headers.first(&HeaderName::CallId) == Some(call.as_bytes()))
        })? {
            Message::Response(r) => Some(r),
            _ => None,
        }
    }

    /// A request from the server, up to `wait`.
    pub fn incoming(&self, method: &str, wait: Duration) -> Option<Request> {
        match self.wait_for(
            wait,
            |m| matches!(m, Message::Request(r) if r.method.as_str() == method),
        )? {
            Message::Request(r) => Some(r),
            _ => None,
        }
    }

    /// Answers a request from the server with a status.
    pub fn respond(&self, req: &Request, status: u16) {
        let mut h = String::new();
        for name in [
            HeaderName::Via,
            HeaderName::From,
            HeaderName::To,
            HeaderName::CallId,
            HeaderName::CSeq,
        ] {
            for v in req.headers.all(&name) {
                h.push_str(&format!("{name}: {}\r\n", String::from_utf8_lossy(v)));
            }
        }
        self.send(&format!(
            "SIP/2.0 {status} {}\r\n{h}Content-Length: 0\r\n\r\n",
            voxtrunk_sip::msg::reason_phrase(status)
        ));
    }
}

/// `;tag=…` of a response's To header.
pub fn to_tag(r: &Response) -> String {
    let to = r.headers.first(&HeaderName::To).unwrap();
    format!(";tag={}", NameAddr::parse(to).unwrap().tag().unwrap())
}

/// A header value as text.
pub fn header(r: &Response, name: HeaderName) -> String {
    String::from_utf8_lossy(r.headers.first(&name).unwrap_or_default()).into_owned()
}
