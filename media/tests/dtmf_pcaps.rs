//! Replays the RFC 2833 captures shipped with Debian's `sip-tester` (SIPp)
//! package through `DtmfReceiver`: each must yield exactly its digit, once.
//!
//! The captures are classic libpcap files (Ethernet, IPv4, UDP, RTP) with one
//! telephone-event (payload type 101, 8 kHz) per file: a start packet with the
//! marker bit, updates every 20 ms and three end packets. The pcap reader
//! below is written for this test (classic format only, either byte order,
//! micro- or nanosecond timestamps; link types Ethernet, Linux cooked v1/v2
//! and raw IP).

use std::path::Path;

use voxtrunk_media::dtmf::{Digit, DtmfReceiver, TelephoneEvent};
use voxtrunk_media::rtp::RtpPacket;

const DIR: &str = "/usr/share/sip-tester";

/// The telephone-event payload type the captures use (and
/// `sipp-scenarios/uac-dtmf.xml` offers).
const PT: u8 = 101;

const CAPTURES: [(&str, char); 12] = [
    ("dtmf_2833_0.pcap", '0'),
    ("dtmf_2833_1.pcap", '1'),
    ("dtmf_2833_2.pcap", '2'),
    ("dtmf_2833_3.pcap", '3'),
    ("dtmf_2833_4.pcap", '4'),
    ("dtmf_2833_5.pcap", '5'),
    ("dtmf_2833_6.pcap", '6'),
    ("dtmf_2833_7.pcap", '7'),
    ("dtmf_2833_8.pcap", '8'),
    ("dtmf_2833_9.pcap", '9'),
    ("dtmf_2833_pound.pcap", '#'),
    ("dtmf_2833_star.pcap", '*'),
];

const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_LINUX_SLL2: u32 = 276;

/// One UDP datagram of a capture.
struct Datagram {
    /// Capture time in microseconds since the first record.
    at_us: u64,
    src_port: u16,
    dst_port: u16,
    payload: Vec<u8>,
}

fn read_capture(name: &str) -> Vec<Datagram> {
    let path = Path::new(DIR).join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. These captures come with SIPp's Debian package: \
             install it with `apt-get install sip-tester`.",
            path.display()
        )
    });
    parse_pcap(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse_pcap(b: &[u8]) -> Result<Vec<Datagram>, String> {
    let header = b.get(..24).ok_or("no pcap global header")?;
    let magic = [header[0], header[1], header[2], header[3]];
    let (big_endian, nanos) = match magic {
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        _ => return Err(format!("not a classic pcap file (magic {magic:02x?})")),
    };
    let u32_at = |s: &[u8], i: usize| {
        let w = [s[i], s[i + 1], s[i + 2], s[i + 3]];
        if big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    };
    let major = if big_endian {
        u16::from_be_bytes([header[4], header[5]])
    } else {
        u16::from_le_bytes([header[4], header[5]])
    };
    if major != 2 {
        return Err(format!("pcap version {major} is not 2"));
    }
    // The low 28 bits of the last field: the link type (upper bits: FCS info).
    let linktype = u32_at(header, 20) & 0x0fff_ffff;
    let mut out = Vec::new();
    let mut off = 24;
    let mut first_us = None;
    while off < b.len() {
        let rec = b.get(off..off + 16).ok_or("truncated record header")?;
        let secs = u64::from(u32_at(rec, 0));
        let frac = u64::from(u32_at(rec, 4));
        let incl = u32_at(rec, 8) as usize;
        let frame = b.get(off + 16..off + 16 + incl).ok_or("truncated record")?;
        off += 16 + incl;
        let us = secs * 1_000_000 + if nanos { frac / 1000 } else { frac };
        let at_us = us - *first_us.get_or_insert(us);
        let ip = match linktype {
            LINKTYPE_ETHERNET => {
                let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
                let mut start = 14;
                while ethertype == 0x8100 || ethertype == 0x88a8 {
                    ethertype = u16::from_be_bytes([frame[start + 2], frame[start + 3]]);
                    start += 4;
                }
                (ethertype == 0x0800).then(|| &frame[start..])
            }
            LINKTYPE_LINUX_SLL => {
                (u16::from_be_bytes([frame[14], frame[15]]) == 0x0800).then(|| &frame[16..])
            }
            LINKTYPE_LINUX_SLL2 => {
                (u16::from_be_bytes([frame[0], frame[1]]) == 0x0800).then(|| &frame[20..])
            }
            LINKTYPE_RAW => Some(frame),
            other => return Err(format!("unsupported link type {other}")),
        };
        let Some(ip) = ip else { continue };
        if let Some(d) = udp_in_ipv4(ip) {
            out.push(Datagram { at_us, ..d });
        }
    }
    Ok(out)
}

/// The UDP datagram in an unfragmented IPv4 packet.
fn udp_in_ipv4(ip: &[u8]) -> Option<Datagram> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
    let flags_offset = u16::from_be_bytes([ip[6], ip[7]]);
    if flags_offset & 0x3fff != 0 {
        return None; // a fragment
    }
    let udp = ip.get(ihl..total)?;
    let len = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    Some(Datagram {
        at_us: 0,
        src_port: u16::from_be_bytes([udp[0], udp[1]]),
        dst_port: u16::from_be_bytes([udp[2], udp[3]]),
        payload: udp.get(8..len)?.to_vec(),
    })
}

/// Feeds every RTP packet of `datagrams` to `rx` (checking the payload type
/// and, if `verbose`, printing what it carries); returns the digits.
fn replay(name: &str, datagrams: &[Datagram], rx: &mut DtmfReceiver, verbose: bool) -> Vec<Digit> {
    let mut digits = Vec::new();
    for d in datagrams {
        let rtp = RtpPacket::parse(&d.payload).unwrap_or_else(|e| {
            panic!("{name}: UDP {}->{} is not RTP: {e}", d.src_port, d.dst_port)
        });
        assert_eq!(rtp.payload_type, PT, "{name}: payload type");
        let ev = TelephoneEvent::parse(rtp.payload).expect("telephone-event payload");
        if !verbose {
            digits.extend(rx.handle(rtp.timestamp, rtp.marker, rtp.payload));
            digits.extend(std::iter::from_fn(|| rx.poll_digit()));
            continue;
        }
        println!(
            "  {name} +{:>6} us  PT {} M={} seq {} ts {} ssrc {}  event {} end={} vol {} duration {}",
            d.at_us,
            rtp.payload_type,
            u8::from(rtp.marker),
            rtp.seq.0,
            rtp.timestamp.0,
            rtp.ssrc,
            ev.event,
            u8::from(ev.end),
            ev.volume,
            ev.duration,
        );
        digits.extend(rx.handle(rtp.timestamp, rtp.marker, rtp.payload));
        digits.extend(std::iter::from_fn(|| rx.poll_digit()));
    }
    digits
}

#[test]
fn each_capture_yields_its_digit_once() {
    for (name, expected) in CAPTURES {
        let datagrams = read_capture(name);
        assert!(!datagrams.is_empty(), "{name}: no UDP packets");
        let mut rx = DtmfReceiver::new(8000);
        let mut digits = replay(name, &datagrams, &mut rx, true);
        // Nothing may be left over: the end packet reported it.
        digits.extend(rx.flush());
        println!(
            "{name}: PT {PT}, {} packets -> {:?}",
            datagrams.len(),
            digits
                .iter()
                .map(|d| (d.digit, d.duration_ms))
                .collect::<Vec<_>>()
        );
        assert_eq!(digits.len(), 1, "{name}: {digits:?}");
        assert_eq!(digits[0].digit, expected, "{name}");
        // 2240 units at 8 kHz.
        assert_eq!(digits[0].duration_ms, 280, "{name}");
    }
}

#[test]
fn captures_in_sequence_yield_each_digit_once() {
    // One stream, as SIPp plays them one after another (same SSRC), in the
    // order of their timestamps, then again in digit order: no digit is lost
    // or repeated, even where a timestamp steps back ('0' is at 17632, '1'
    // at 13280).
    let mut by_ts: Vec<_> = CAPTURES
        .iter()
        .map(|&(name, digit)| {
            let d = read_capture(name);
            let ts = RtpPacket::parse(&d[0].payload).unwrap().timestamp.0;
            (ts, name, digit, d)
        })
        .collect();
    by_ts.sort_by_key(|c| c.0);
    let mut rx = DtmfReceiver::new(8000);
    let mut got = String::new();
    for (_, name, _, d) in &by_ts {
        got.extend(replay(name, d, &mut rx, false).iter().map(|d| d.digit));
    }
    let want: String = by_ts.iter().map(|c| c.2).collect();
    assert_eq!(got, want);
    println!("timestamp order: {got}");

    let mut rx = DtmfReceiver::new(8000);
    let mut got = String::new();
    for (name, _) in CAPTURES {
        got.extend(
            replay(name, &read_capture(name), &mut rx, false)
                .iter()
                .map(|d| d.digit),
        );
    }
    got.extend(rx.flush().map(|d| d.digit));
    assert_eq!(got, "0123456789#*");
}

/// The same captures through a whole media session (PCMU + telephone-event
/// 101), as a call would receive them: each digit comes out once as a
/// `MediaEvent::Dtmf`, and none is decoded as audio.
#[test]
fn captures_replayed_into_a_media_session_raise_dtmf_events() {
    use std::time::{Duration, Instant};
    use voxtrunk_media::codec::CodecKind;
    use voxtrunk_media::rtp::{MediaTime, SeqNo, Ssrc};
    use voxtrunk_media::session::{MediaConfig, MediaEvent, MediaSession, Output};

    #[allow(clippy::disallowed_methods)] // the origin of virtual time
    let base = Instant::now();
    let config = MediaConfig {
        codec: CodecKind::Pcmu,
        payload_type: 0,
        telephone_event: Some(PT),
        remote: Some("198.51.100.7:40000".parse().unwrap()),
        send: true,
        receive: true,
        symmetric_rtp: true,
        inactivity_timeout: None,
        send_silence: true,
        ssrc: Ssrc(1),
        first_seq: SeqNo(1),
        first_timestamp: MediaTime(0),
        playout_frames: 10,
        jitter_max_frames: 10,
        turn: None,
        rtcp: None,
    };
    let mut session = MediaSession::new(config, base).unwrap();
    let from = "198.51.100.7:49176".parse().unwrap();
    let mut digits = Vec::new();
    let mut now = base;
    for (name, _) in CAPTURES {
        for (i, d) in read_capture(name).iter().enumerate() {
            session.handle_receive(now, from, &d.payload);
            // Packets 20 ms apart, then 300 ms between captures.
            now += Duration::from_millis(20);
            session.handle_timeout(now);
            if i == 9 {
                now += Duration::from_millis(300);
                session.handle_timeout(now);
            }
            loop {
                match session.poll_output() {
                    Output::Event(MediaEvent::Dtmf(d)) => digits.push(d.digit),
                    Output::Timeout(_) => break,
                    _ => {}
                }
            }
            while session.pop_frame().is_some() {}
        }
    }
    let expected: Vec<char> = CAPTURES.iter().map(|(_, d)| *d).collect();
    assert_eq!(digits, expected);
    let st = session.stats();
    assert_eq!(st.dtmf_received, 12);
    assert_eq!(
        st.rx_packets, 0,
        "no telephone-event packet was taken for audio"
    );
}
