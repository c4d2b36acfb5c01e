//! Call behaviour of the running binary that needs exact control of the
//! messages and of the RTP socket: INVITE without SDP, symmetric RTP,
//! RTP inactivity, limits, oversized messages, malformed SDP.

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::uac::{Uac, header, pcmu_offer, to_tag};
use common::{Options, Server};
use voxtrunk_media::codec::{CodecKind, Decoder, Encoder};
use voxtrunk_media::rtp::{MediaTime, RtpPacket, SeqNo, Ssrc};
use voxtrunk_sip::msg::{HeaderName, Message, Response};
use voxtrunk_sip::sdp;

fn rtp_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

/// RTP packets received on `sock` within `wait`, with their source.
fn receive_rtp(sock: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            out.push(buf[..n].to_vec());
        }
    }
    out
}

fn answer_port(body: &[u8]) -> u16 {
    let s = sdp::parse(body).expect("SDP in the 200");
    s.media[0].port
}

#[test]
fn invite_without_sdp_gets_an_offer_and_the_ack_carries_the_answer() {
    let server = Server::start();
    let uac = Uac::new(server.sip);
    let media = rtp_socket();
    uac.send(&uac.request("INVITE", "echo", "no-sdp", 1, "", ""));
    let ok = uac.final_response("no-sdp").expect("200");
    assert_eq!(ok.status, 200);
    let offer = sdp::parse(&ok.body).expect("an SDP offer in the 200");
    let formats = &offer.media[0].formats;
    assert!(
        formats.len() >= 4,
        "every enabled codec is offered: {formats:?}"
    );
    let server_rtp = answer_port(&ok.body);
    // Answer with PCMU only, media on our socket.
    let answer = format!(
        "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        media.local_addr().unwrap().port()
    );
    uac.send(&uac.request("ACK", "echo", "no-sdp", 1, &to_tag(&ok), &answer));
    let packets = receive_rtp(&media, Duration::from_millis(500));
    assert!(
        packets.len() >= 10,
        "RTP flows after the answer in the ACK ({} packets)",
        packets.len()
    );
    let p = RtpPacket::parse(&packets[0]).unwrap();
    assert_eq!(p.payload_type, 0, "the codec of the answer");
    assert!(server_rtp > 0);
    uac.send(&uac.request("BYE", "echo", "no-sdp", 2, &to_tag(&ok), ""));
    assert_eq!(uac.final_response("no-sdp").unwrap().status, 200);
    assert!(server.log_has_no_panic());
}

#[test]
fn malformed_sdp_gets_400_with_a_warning_naming_the_line() {
    let server = Server::start();
    let uac = Uac::new(server.sip);
    let bad = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio notaport RTP/AVP 0\r\n";
    uac.send(&uac.request("INVITE", "echo", "bad-sdp", 1, "", bad));
    let r = uac.final_response("bad-sdp").expect("a final response");
    assert_eq!(r.status, 400);
    let w = header(&r, HeaderName::Warning);
    assert!(w.starts_with("399 ") && w.contains("line 6"), "{w}");
}

#[test]
fn no_common_codec_gets_488_with_a_warning() {
    let server = Server::start();
    let uac = Uac::new(server.sip);
    let g729 = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
    uac.send(&uac.request("INVITE", "echo", "g729", 1, "", g729));
    let r = uac.final_response("g729").expect("a final response");
    assert_eq!(r.status, 488);
    assert!(
        header(&r, HeaderName::Warning).contains("G729"),
        "{}",
        header(&r, HeaderName::Warning)
    );
}

#[test]
fn echo_sends_back_what_it_receives_to_the_real_rtp_source() {
    let server = Server::start();
    let uac = Uac::new(server.sip);
    // SDP names one port, but RTP really comes from another (a NAT): the
    // server must answer to where the packets come from.
    let decoy = rtp_socket();
    let real = rtp_socket();
    uac.send(&uac.request(
        "INVITE",
        "echo",
        "echo-nat",
        1,
        "",
        &pcmu_offer(decoy.local_addr().unwrap().port()),
    ));
    let ok = uac.final_response("echo-nat").expect("200");
    let server_rtp = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), answer_port(&ok.body));
    uac.send(&uac.request("ACK", "echo", "echo-nat", 1, &to_tag(&ok), ""));
    let mut enc = Encoder::new(CodecKind::Pcmu).unwrap();
    let tone: Vec<i16> = (0..8000 * 2)
        .map(|i| (8000.0 * (2.0 * std::f32::consts::PI * 700.0 * i as f32 / 8000.0).sin()) as i16)
        .collect();
    let mut received = Vec::new();
    let mut buf = [0u8; 2048];
    real.set_read_timeout(Some(Duration::from_millis(5)))
        .unwrap();
    for (n, chunk) in tone.chunks(160).enumerate() {
        let mut payload = Vec::new();
        enc.encode(chunk, &mut payload).unwrap();
        let mut pkt = Vec::new();
        RtpPacket {
            marker: n == 0,
            payload_type: 0,
            seq: SeqNo(n as u16),
            timestamp: MediaTime(n as u32 * 160),
            ssrc: Ssrc(0xabc),
            payload: &payload,
        }
        .write(&mut pkt);
        real.send_to(&pkt, server_rtp).unwrap();
        // Pace roughly like a phone; exact timing is not what is tested.
        let until = Instant::now() + Duration::from_millis(20);
        while Instant::now() < until {
            if let Ok((len, _)) = real.recv_from(&mut buf) {
                received.push(buf[..len].to_vec());
            }
        }
    }
    received.extend(receive_rtp(&real, Duration::from_millis(200)));
    let decoy_got = receive_rtp(&decoy, Duration::from_millis(50));
    uac.send(&uac.request("BYE", "echo", "echo-nat", 2, &to_tag(&ok), ""));
    assert_eq!(uac.final_response("echo-nat").unwrap().status, 200);

    assert!(
        received.len() >= 80,
        "echo RTP reached the real source: {} packets",
        received.len()
    );
    let packets: Vec<RtpPacket<'_>> = received
        .iter()
        .map(|b| RtpPacket::parse(b).unwrap())
        .collect();
    let ssrc = packets[0].ssrc;
    for w in packets.windows(2) {
        assert_eq!(w[0].seq.next(), w[1].seq, "continuous sequence numbers");
        assert_eq!(
            w[0].timestamp.advance(160),
            w[1].timestamp,
            "continuous timestamps"
        );
        assert_eq!(w[1].ssrc, ssrc, "constant SSRC");
    }
    let mut dec = Decoder::new(CodecKind::Pcmu).unwrap();
    let mut pcm = Vec::new();
    for p in &packets {
        dec.decode(p.payload, &mut pcm).unwrap();
    }
    // The 700 Hz tone comes back: find the strongest frequency where it is
    // loud (a DFT scan, insensitive to the short gaps an echo without a
    // jitter buffer has when packets bunch up).
    let loud: Vec<f32> = pcm
        .iter()
        .skip_while(|s| s.abs() < 2000)
        .take(8000)
        .map(|&s| f32::from(s))
        .collect();
    assert!(loud.len() >= 4000, "the echo carries the tone");
    let power = |f: f32| {
        let (mut re, mut im) = (0.0f32, 0.0f32);
        for (i, x) in loud.iter().enumerate() {
            let ph = 2.0 * std::f32::consts::PI * f * i as f32 / 8000.0;
            re += x * ph.cos();
            im += x * ph.sin();
        }
        re * re + im * im
    };
    let peak = (100..200)
        .map(|k| k as f32 * 5.0)
        .max_by(|a, b| power(*a).total_cmp(&power(*b)))
        .unwrap();
    assert!(
        (peak - 700.0).abs() <= 10.0,
        "echoed tone peaks at {peak} Hz"
    );
    assert!(
        decoy_got.len() <= 2,
        "after latching nothing goes to the SDP address ({} packets)",
        decoy_got.len()
    );
}

#[test]
fn rtp_inactivity_ends_the_call_with_bye() {
    let server = Server::start_with(Options {
        config: Some("[rtp]\ninactivity_timeout_s = 1\n".into()),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    uac.send(&uac.request("INVITE", "echo", "silent", 1, "", &pcmu_offer(45000)));
    let ok = uac.final_response("silent").expect("200");
    uac.send(&uac.request("ACK", "echo", "silent", 1, &to_tag(&ok), ""));
    let bye = uac
        .incoming("BYE", Duration::from_secs(5))
        .expect("BYE after 1 s without RTP");
    uac.respond(&bye, 200);
    assert!(server.log_text().contains("no RTP: hanging up"));
}

#[test]
fn call_limit_answers_503_with_retry_after() {
    let server = Server::start_with(Options {
        config: Some("[limits]\nmax_calls = 1\nretry_after_s = 7\n".into()),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    uac.send(&uac.request("INVITE", "echo", "first", 1, "", &pcmu_offer(45002)));
    let first = uac.final_response("first").expect("200");
    assert_eq!(first.status, 200);
    uac.send(&uac.request("ACK", "echo", "first", 1, &to_tag(&first), ""));
    uac.send(&uac.request("INVITE", "echo", "second", 1, "", &pcmu_offer(45004)));
    let second = uac.final_response("second").expect("an answer");
    assert_eq!(second.status, 503);
    assert_eq!(header(&second, HeaderName::RetryAfter), "7");
    uac.send(&uac.request("ACK", "echo", "second", 1, &to_tag(&second), ""));
    uac.send(&uac.request("BYE", "echo", "first", 2, &to_tag(&first), ""));
    assert_eq!(uac.final_response("first").unwrap().status, 200);
}

/// `limits.max_cps` and a trunk's `max_calls`: the calls past a limit get
/// 503 with Retry-After and a Warning naming the limit, at once.
#[test]
fn call_rate_and_trunk_limits_answer_503_with_a_warning() {
    let server = Server::start_with(Options {
        config: Some("[limits]\nmax_cps = 3\nretry_after_s = 2\n".into()),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    let sent = Instant::now();
    for n in 0..5 {
        uac.send(&uac.request(
            "INVITE",
            "echo",
            &format!("rate-{n}"),
            1,
            "",
            &pcmu_offer(45010 + 2 * n),
        ));
    }
    let finals = final_responses(&uac, 5);
    assert_eq!(finals.len(), 5, "{}", server.log_text());
    let mut statuses = Vec::new();
    for (call, r) in &finals {
        if r.status == 503 {
            println!(
                "{call}: 503 {:?} {:?} after the INVITEs were sent",
                header(r, HeaderName::Warning),
                sent.elapsed()
            );
            assert_eq!(header(r, HeaderName::RetryAfter), "2");
            assert!(
                header(r, HeaderName::Warning)
                    .contains("call rate limit reached: 3 new calls a second"),
                "{r:?}"
            );
        }
        uac.send(&uac.request("ACK", "echo", call, 1, &to_tag(r), ""));
        if r.status == 200 {
            uac.send(&uac.request("BYE", "echo", call, 2, &to_tag(r), ""));
        }
        statuses.push(r.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 200, 503, 503]);

    let server = Server::start_with(Options {
        config: Some(
            "[[trunk]]\nname = \"loopback\"\nsources = [\"127.0.0.0/8\"]\nmax_calls = 1\n".into(),
        ),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    uac.send(&uac.request("INVITE", "echo", "trunk-1", 1, "", &pcmu_offer(45030)));
    let first = uac.final_response("trunk-1").expect("200");
    assert_eq!(first.status, 200);
    uac.send(&uac.request("ACK", "echo", "trunk-1", 1, &to_tag(&first), ""));
    uac.send(&uac.request("INVITE", "echo", "trunk-2", 1, "", &pcmu_offer(45032)));
    let second = uac.final_response("trunk-2").expect("503");
    assert_eq!(second.status, 503);
    assert!(
        header(&second, HeaderName::Warning)
            .contains("trunk loopback: call limit reached: 1 calls up"),
        "{second:?}"
    );
    uac.send(&uac.request("ACK", "echo", "trunk-2", 1, &to_tag(&second), ""));
    // The trunk's call ends: the next call from it is admitted.
    uac.send(&uac.request("BYE", "echo", "trunk-1", 2, &to_tag(&first), ""));
    assert_eq!(uac.final_response("trunk-1").unwrap().status, 200);
    uac.send(&uac.request("INVITE", "echo", "trunk-3", 1, "", &pcmu_offer(45034)));
    let third = uac.final_response("trunk-3").expect("200");
    assert_eq!(third.status, 200, "{}", server.log_text());
    uac.send(&uac.request("ACK", "echo", "trunk-3", 1, &to_tag(&third), ""));
    uac.send(&uac.request("BYE", "echo", "trunk-3", 2, &to_tag(&third), ""));
    assert_eq!(uac.final_response("trunk-3").unwrap().status, 200);
    let (_, metrics) = server.admin_get("/metrics");
    assert!(
        metrics.contains("voxtrunk_calls_refused_total{why=\"trunk_limit\"} 1"),
        "{metrics}"
    );
}

/// The final responses to `count` INVITEs sent at once, in whatever order
/// they come (at most 5 s), with their Call-IDs.
fn final_responses(uac: &Uac, count: usize) -> Vec<(String, Response)> {
    let mut finals: Vec<(String, Response)> = Vec::new();
    uac.wait_for(Duration::from_secs(5), |m| {
        if let Message::Response(r) = m
            && r.status >= 200
        {
            let call =
                String::from_utf8_lossy(r.headers.first(&HeaderName::CallId).unwrap_or_default())
                    .into_owned();
            if !finals.iter().any(|(c, _)| *c == call) {
                finals.push((call, r.clone()));
            }
        }
        finals.len() == count
    });
    finals
}

/// Agent admission before a call's load is known: a burst of agent
/// INVITEs at start-up gets `warmup_calls` calls in and a 503 for the rest
/// ("ramping up"). With a call's share kept from an earlier run
/// (`shares_file`), admission is right from the first call: a share of 10
/// recogniser threads refuses even that one.
#[test]
fn agent_calls_are_paced_until_their_share_is_known() {
    let plans = tempfile::tempdir().expect("temp dir");
    let dialplans = common::copy_dialplans(plans.path());
    // Target 100 %: only the ramp can refuse here.
    let server = Server::start_with(Options {
        dialplans: Some(dialplans.clone()),
        config: Some(
            "[inference]
warmup_calls = 2
target_utilization = 1.0
"
            .into(),
        ),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    for n in 0..3 {
        let call = format!("burst-{n}");
        uac.send(&uac.request("INVITE", "agent", &call, 1, "", &pcmu_offer(45050 + 2 * n)));
    }
    let finals = final_responses(&uac, 3);
    assert_eq!(finals.len(), 3, "{}", server.log_text());
    let mut statuses = Vec::new();
    for (call, r) in &finals {
        uac.send(&uac.request("ACK", "agent", call, 1, &to_tag(r), ""));
        if r.status == 503 {
            let warning = header(r, HeaderName::Warning);
            assert!(
                warning.contains(
                    "agents at capacity: ramping up: 2 agent calls admitted in the last 10 s"
                ),
                "{warning}"
            );
        } else {
            uac.send(&uac.request("BYE", "agent", call, 2, &to_tag(r), ""));
        }
        statuses.push(r.status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503]);
    drop(server);

    let shares = plans.path().join("var/shares.json");
    std::fs::create_dir_all(shares.parent().unwrap()).unwrap();
    std::fs::write(&shares, r#"{"stt": 10.0}"#).unwrap();
    let server = Server::start_with(Options {
        dialplans: Some(dialplans),
        config: Some(format!(
            "[inference]
target_utilization = 1.0
shares_file = {:?}
",
            shares.display().to_string()
        )),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    uac.send(&uac.request("INVITE", "agent", "first", 1, "", &pcmu_offer(45060)));
    let refused = uac.final_response("first").expect("an answer");
    assert_eq!(refused.status, 503, "{}", server.log_text());
    let warning = header(&refused, HeaderName::Warning);
    assert!(warning.contains("the stt pool would be"), "{warning}");
    uac.send(&uac.request("ACK", "agent", "first", 1, &to_tag(&refused), ""));
}

/// The default agent answers and greets: RTP with speech in it (µ-law
/// bytes away from the silence codes 0xFF/0x7F) within a few seconds.
#[test]
fn agent_answers_and_speaks_its_greeting() {
    let plans = tempfile::tempdir().expect("temp dir");
    let dialplans = common::copy_dialplans(plans.path());
    let server = Server::start_with(Options {
        dialplans: Some(dialplans),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    let media = rtp_socket();
    let port = media.local_addr().unwrap().port();
    uac.send(&uac.request("INVITE", "agent", "agent-call", 1, "", &pcmu_offer(port)));
    let ok = uac.final_response("agent-call").expect("an answer");
    assert_eq!(ok.status, 200, "{}", server.log_text());
    uac.send(&uac.request("ACK", "agent", "agent-call", 1, &to_tag(&ok), ""));
    let mut loud = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while loud < 10 && Instant::now() < deadline {
        for p in receive_rtp(&media, Duration::from_millis(100)) {
            let payload = &p[12.min(p.len())..];
            let speech = payload
                .iter()
                .filter(|&&b| !matches!(b, 0xFF | 0x7F | 0xFE | 0x7E))
                .count();
            if speech > payload.len() / 2 {
                loud += 1;
            }
        }
    }
    assert!(
        loud >= 10,
        "no greeting heard ({loud} packets with sound)\n{}",
        server.log_text()
    );
    uac.send(&uac.request("BYE", "agent", "agent-call", 2, &to_tag(&ok), ""));
    assert_eq!(uac.final_response("agent-call").unwrap().status, 200);
}

#[test]
fn unknown_user_gets_404() {
    let server = Server::start();
    let uac = Uac::new(server.sip);
    uac.send(&uac.request("INVITE", "nobody", "nobody-call", 1, "", &pcmu_offer(45008)));
    assert_eq!(uac.final_response("nobody-call").unwrap().status, 404);
}

#[test]
fn oversized_message_gets_513() {
    let server = Server::start_with(Options {
        config: Some("[sip]\nmax_message_bytes = 2000\n".into()),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    let mut big = uac.request("OPTIONS", "echo", "big", 1, "", "");
    let padding = format!("X-Padding: {}\r\n", "a".repeat(3000));
    big = big.replacen("Content-Length", &format!("{padding}Content-Length"), 1);
    uac.send(&big);
    assert_eq!(uac.final_response("big").expect("an answer").status, 513);
    uac.send(&uac.request("OPTIONS", "echo", "small", 1, "", ""));
    assert_eq!(uac.final_response("small").unwrap().status, 200);
}

#[test]
fn playback_of_an_8khz_wav_then_bye() {
    let plan = tempfile::tempdir().unwrap();
    let wav = plan.path().join("short.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for i in 0..4000 {
        w.write_sample((6000.0 * (i as f32 * 0.3).sin()) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
    std::fs::write(
        plan.path().join("p.toml"),
        "[[route]]\nname = \"short\"\napp = \"playback\"\nfile = \"short.wav\"\n",
    )
    .unwrap();
    let server = Server::start_with(Options {
        dialplans: Some(plan.path().to_owned()),
        config: Some("[rtp]\nsend_silence = false\n".into()),
        ..Options::default()
    });
    let uac = Uac::new(server.sip);
    let media = rtp_socket();
    uac.send(&uac.request(
        "INVITE",
        "x",
        "play",
        1,
        "",
        &pcmu_offer(media.local_addr().unwrap().port()),
    ));
    let ok = uac.final_response("play").expect("200");
    uac.send(&uac.request("ACK", "x", "play", 1, &to_tag(&ok), ""));
    let bye = uac
        .incoming("BYE", Duration::from_secs(5))
        .expect("BYE after the prompt");
    uac.respond(&bye, 200);
    // The packets wait in the socket buffer: 0.5 s of prompt is exactly 25
    // frames, and with silence off nothing else is sent.
    let packets = receive_rtp(&media, Duration::from_millis(100));
    assert_eq!(packets.len(), 25);
    let parsed: Vec<RtpPacket<'_>> = packets
        .iter()
        .map(|b| RtpPacket::parse(b).unwrap())
        .collect();
    assert!(parsed[0].marker, "the prompt starts a talkspurt");
    assert!(
        parsed
            .windows(2)
            .all(|w| w[0].seq.next() == w[1].seq && w[0].timestamp.advance(160) == w[1].timestamp)
    );
    assert!(
        server
            .log_lines()
            .iter()
            .any(|l| l.contains("application finished") && l.contains("playback"))
    );
}

#[test]
fn sip_info_dtmf_relay_reaches_the_call() {
    let server = Server::start();
    let uac = Uac::new(server.sip);
    uac.send(&uac.request("INVITE", "echo", "info-call", 1, "", &pcmu_offer(45010)));
    let ok = uac.final_response("info-call").expect("200");
    let tag = to_tag(&ok);
    uac.send(&uac.request("ACK", "echo", "info-call", 1, &tag, ""));
    let body = "Signal=7\r\nDuration=160\r\n";
    let info = uac
        .request("INFO", "echo", "info-call", 2, &tag, body)
        .replace(
            "Content-Type: application/sdp",
            "Content-Type: application/dtmf-relay",
        );
    uac.send(&info);
    assert_eq!(uac.final_response("info-call").unwrap().status, 200);
    uac.send(&uac.request("BYE", "echo", "info-call", 3, &tag, ""));
    assert_eq!(uac.final_response("info-call").unwrap().status, 200);
    // The call task logs the digit asynchronously; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    let digits = loop {
        let d: Vec<(String, String)> = server
            .log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "dtmf")
            .map(|v| {
                (
                    v["digit"].as_str().unwrap_or_default().to_owned(),
                    v["via"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        if !d.is_empty() || Instant::now() > deadline {
            break d;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(digits, [("7".to_owned(), "info".to_owned())]);
}
