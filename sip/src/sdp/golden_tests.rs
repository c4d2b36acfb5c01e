//! Offer/answer scenarios with offers as real peers send them. Golden SDP
//! texts live in `testdata/` with LF line ends; generated SDP is compared
//! after turning its CRLF into LF.

use std::net::SocketAddr;

use super::*;

const SIPP_OFFER: &str = include_str!("testdata/sipp_offer.sdp");
const SIPP_ANSWER: &str = include_str!("testdata/sipp_answer.sdp");
const BARESIP_OFFER: &str = include_str!("testdata/baresip_offer.sdp");
const BARESIP_ANSWER: &str = include_str!("testdata/baresip_answer.sdp");
const LINPHONE_OFFER: &str = include_str!("testdata/linphone_offer.sdp");
const LINPHONE_ANSWER: &str = include_str!("testdata/linphone_answer.sdp");
const ASTERISK_OFFER: &str = include_str!("testdata/asterisk_offer.sdp");
const ASTERISK_ANSWER: &str = include_str!("testdata/asterisk_answer.sdp");
const ASTERISK_HOLD_OFFER: &str = include_str!("testdata/asterisk_hold_offer.sdp");
const ASTERISK_HOLD_ANSWER: &str = include_str!("testdata/asterisk_hold_answer.sdp");
const RFC5118_OFFER: &str = include_str!("testdata/rfc5118_mixed_offer.sdp");
const RFC5118_ANSWER: &str = include_str!("testdata/rfc5118_mixed_answer.sdp");
const OUR_OFFER: &str = include_str!("testdata/voxtrunk_offer.sdp");

fn local() -> LocalMedia {
    LocalMedia {
        address: "198.51.100.10".parse().expect("ip"),
        port: 30000,
        codecs: vec![
            AudioCodec::Opus,
            AudioCodec::G722,
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
        ],
        prefer: CodecPreference::Offerer,
        telephone_event: true,
    }
}

fn narrowband() -> LocalMedia {
    LocalMedia {
        codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
        ..local()
    }
}

fn sdp(text: &str) -> SessionDescription {
    parse(text.as_bytes()).expect("test SDP parses")
}

fn session() -> SdpSession {
    SdpSession::new(4242, "voxtrunk")
}

fn answer(session: &mut SdpSession, offer: &str, local: &LocalMedia) -> Answer {
    session.answer(&sdp(offer), local).expect("offer accepted")
}

fn answer_err(offer: &str, local: &LocalMedia) -> NegotiationError {
    session()
        .answer(&sdp(offer), local)
        .expect_err("offer refused")
}

/// Compares with a golden text and checks the output is well-formed SDP.
fn assert_golden(actual: &SessionDescription, golden: &str) {
    let text = actual.to_string();
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text:?}"
    );
    assert_eq!(text.replace("\r\n", "\n"), golden);
    assert_eq!(&sdp(&text), actual, "printed SDP parses back");
}

fn remote(addr: &str) -> Option<SocketAddr> {
    Some(addr.parse().expect("socket address"))
}

#[test]
fn sipp_default_offer_gets_pcmu() {
    let a = answer(&mut session(), SIPP_OFFER, &local());
    assert_golden(&a.sdp, SIPP_ANSWER);
    assert_eq!(
        a.audio,
        NegotiatedAudio {
            codec: AudioCodec::Pcmu,
            payload_type: 0,
            rtp_clock_rate: 8000,
            channels: 1,
            telephone_event: None,
            remote: remote("127.0.0.1:6000"),
            direction: Direction::SendRecv,
            remote_ptime: None,
            fmtp: None,
        }
    );
}

#[test]
fn baresip_offer_gets_opus_with_its_fmtp_and_8k_telephone_event() {
    let a = answer(&mut session(), BARESIP_OFFER, &local());
    assert_golden(&a.sdp, BARESIP_ANSWER);
    assert_eq!(
        (a.audio.codec, a.audio.payload_type),
        (AudioCodec::Opus, 96)
    );
    assert_eq!((a.audio.rtp_clock_rate, a.audio.channels), (48000, 2));
    assert_eq!(a.audio.fmtp.as_deref(), Some("stereo=1;sprop-stereo=1"));
    assert_eq!(a.audio.remote_ptime, Some(20));
    // Only an 8 kHz telephone-event is offered, so it is used with Opus.
    assert_eq!(
        a.audio.telephone_event,
        Some(TelephoneEvent {
            payload_type: 101,
            clock_rate: 8000
        })
    );
}

#[test]
fn linphone_offer_gets_telephone_event_at_the_codec_clock_rate() {
    let a = answer(&mut session(), LINPHONE_OFFER, &local());
    assert_golden(&a.sdp, LINPHONE_ANSWER);
    assert_eq!(
        (a.audio.codec, a.audio.payload_type),
        (AudioCodec::Opus, 96)
    );
    assert_eq!(
        a.audio.telephone_event,
        Some(TelephoneEvent {
            payload_type: 101,
            clock_rate: 48000
        })
    );

    let a = answer(&mut session(), LINPHONE_OFFER, &narrowband());
    assert_eq!((a.audio.codec, a.audio.payload_type), (AudioCodec::Pcmu, 0));
    assert_eq!(
        a.audio.telephone_event,
        Some(TelephoneEvent {
            payload_type: 100,
            clock_rate: 8000
        })
    );
    assert_eq!(a.sdp.media[0].formats, ["0", "100"]);
}

#[test]
fn asterisk_offer_with_local_preference() {
    let prefer_local = LocalMedia {
        prefer: CodecPreference::Local,
        ..narrowband()
    };
    let a = answer(&mut session(), ASTERISK_OFFER, &prefer_local);
    assert_golden(&a.sdp, ASTERISK_ANSWER);
    assert_eq!(a.audio.codec, AudioCodec::Pcmu);
    assert_eq!(a.audio.remote_ptime, Some(20));

    let a = answer(&mut session(), ASTERISK_OFFER, &narrowband());
    assert_eq!((a.audio.codec, a.audio.payload_type), (AudioCodec::Pcma, 8));
}

#[test]
fn telephone_event_is_left_out_when_disabled_or_not_offered() {
    let no_dtmf = LocalMedia {
        telephone_event: false,
        ..narrowband()
    };
    let a = answer(&mut session(), ASTERISK_OFFER, &no_dtmf);
    assert_eq!(a.audio.telephone_event, None);
    assert_eq!(a.sdp.media[0].formats, ["8"]);
    assert!(!a.sdp.to_string().contains("telephone-event"));
}

#[test]
fn hold_and_unhold_reoffers() {
    let mut s = session();
    let first = answer(&mut s, ASTERISK_OFFER, &narrowband());
    assert_eq!(first.audio.direction, Direction::SendRecv);

    let hold = answer(&mut s, ASTERISK_HOLD_OFFER, &narrowband());
    assert_golden(&hold.sdp, ASTERISK_HOLD_ANSWER);
    assert_eq!(hold.audio.direction, Direction::RecvOnly);
    assert_eq!(hold.audio.remote, remote("203.0.113.5:14554"));

    let inactive = ASTERISK_OFFER.replace("a=sendrecv", "a=inactive");
    let a = answer(&mut s, &inactive, &narrowband());
    assert_eq!(a.audio.direction, Direction::Inactive);
    assert!(a.sdp.to_string().contains("\r\na=inactive\r\n"));

    // RFC 2543 hold: the offer says sendrecv but gives no address.
    let zero = ASTERISK_OFFER.replace("c=IN IP4 203.0.113.5", "c=IN IP4 0.0.0.0");
    let a = answer(&mut s, &zero, &narrowband());
    assert_eq!(a.audio.direction, Direction::RecvOnly);
    assert_eq!(a.audio.remote, None);
    assert!(a.sdp.to_string().contains("\r\na=recvonly\r\n"));

    let zero_recvonly = zero.replace("a=sendrecv", "a=recvonly");
    let a = answer(&mut s, &zero_recvonly, &narrowband());
    assert_eq!(a.audio.direction, Direction::Inactive);

    let unhold = answer(&mut s, ASTERISK_OFFER, &narrowband());
    assert_eq!(unhold.audio.direction, Direction::SendRecv);
    assert_eq!(unhold.audio.remote, remote("203.0.113.5:14554"));
    assert_eq!(unhold.sdp.origin.session_id, first.sdp.origin.session_id);
}

#[test]
fn session_level_direction_applies_to_media() {
    let offer = ASTERISK_OFFER
        .replace("a=sendrecv\n", "")
        .replace("t=0 0\n", "t=0 0\na=sendonly\n");
    let a = answer(&mut session(), &offer, &narrowband());
    assert_eq!(a.audio.direction, Direction::RecvOnly);
}

#[test]
fn version_increments_only_when_the_answer_changes() {
    let mut s = session();
    let versions: Vec<String> = [
        ASTERISK_OFFER,
        ASTERISK_OFFER, // session refresh: identical answer
        ASTERISK_HOLD_OFFER,
        ASTERISK_HOLD_OFFER,
        ASTERISK_OFFER,
    ]
    .iter()
    .map(|offer| {
        answer(&mut s, offer, &narrowband())
            .sdp
            .origin
            .session_version
    })
    .collect();
    assert_eq!(versions, ["1", "1", "2", "2", "3"]);
    assert_eq!(s.version(), 3);

    // A failed negotiation changes nothing.
    let g729 = ASTERISK_OFFER.replace("RTP/AVP 8 0 3 101", "RTP/AVP 18");
    assert!(s.answer(&sdp(&g729), &narrowband()).is_err());
    assert_eq!(s.version(), 3);
    assert_eq!(s.negotiated().map(|n| n.codec), Some(AudioCodec::Pcma));
}

#[test]
fn reoffer_keeps_the_codec_in_use() {
    let mut s = session();
    let a = answer(&mut s, ASTERISK_OFFER, &narrowband());
    assert_eq!(a.audio.codec, AudioCodec::Pcma);
    // The peer now lists PCMU first and we prefer it, yet PCMA stays.
    let reordered = ASTERISK_HOLD_OFFER.replace("RTP/AVP 8 0 3 101", "RTP/AVP 0 8 3 101");
    let prefer_pcmu = LocalMedia {
        prefer: CodecPreference::Local,
        ..narrowband()
    };
    let a = answer(&mut s, &reordered, &prefer_pcmu);
    assert_eq!(a.audio.codec, AudioCodec::Pcma);
    // Once PCMA is no longer offered the choice is free again.
    let pcmu_only = ASTERISK_OFFER.replace("RTP/AVP 8 0 3 101", "RTP/AVP 0 101");
    let a = answer(&mut s, &pcmu_only, &prefer_pcmu);
    assert_eq!(a.audio.codec, AudioCodec::Pcmu);
}

#[test]
fn dynamic_payload_types_of_the_offer_are_reused() {
    let offer = BARESIP_OFFER.replace("96", "111").replace("101", "126");
    let a = answer(&mut session(), &offer, &local());
    assert_eq!(a.sdp.media[0].formats, ["111", "126"]);
    let text = a.sdp.to_string();
    assert!(text.contains("a=rtpmap:111 opus/48000/2\r\n"), "{text}");
    assert!(text.contains("a=rtpmap:126 telephone-event/8000\r\na=fmtp:126 0-16\r\n"));
}

#[test]
fn static_payload_types_need_no_rtpmap_and_names_match_any_case() {
    let offer = "v=0\no=- 1 1 IN IP4 192.0.2.7\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n\
                 m=audio 5004 RTP/AVP 9 0\n";
    let a = answer(&mut session(), offer, &narrowband());
    assert_eq!((a.audio.codec, a.audio.payload_type), (AudioCodec::Pcmu, 0));
    assert!(a.sdp.to_string().contains("a=rtpmap:0 PCMU/8000\r\n"));
    let a = answer(&mut session(), offer, &local());
    assert_eq!(a.audio.codec, AudioCodec::G722);

    let lower = offer.replace("9 0\n", "97\na=rtpmap:97 OPUS/48000\n");
    let a = answer(&mut session(), &lower, &local());
    assert_eq!(
        (a.audio.codec, a.audio.payload_type, a.audio.channels),
        (AudioCodec::Opus, 97, 2)
    );
    // The answer echoes the peer's spelling so that it recognises it.
    assert!(a.sdp.to_string().contains("a=rtpmap:97 OPUS/48000\r\n"));
}

#[test]
fn rfc5118_mixed_offer_accepts_ipv4_audio_and_declines_ipv6_video() {
    let a = answer(&mut session(), RFC5118_OFFER, &local());
    assert_golden(&a.sdp, RFC5118_ANSWER);
    assert_eq!(a.audio.remote, remote("192.0.2.1:22334"));
}

#[test]
fn every_other_stream_is_declined_in_order() {
    let offer = "v=0\no=- 1 1 IN IP4 192.0.2.7\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n\
                 m=audio 5000 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\n\
                 m=video 5002 RTP/AVP 34\n\
                 m=audio 5004 RTP/AVP 0\n\
                 m=audio 5006 RTP/AVP 8\n\
                 m=application 5008 udp bfcp\n";
    let a = answer(&mut session(), offer, &narrowband());
    let lines: Vec<String> = a.sdp.media.iter().map(|m| format!("{m}")).collect();
    assert_eq!(
        lines,
        [
            "m=audio 0 RTP/SAVP 0\r\n",
            "m=video 0 RTP/AVP 34\r\n",
            "m=audio 30000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
            "m=audio 0 RTP/AVP 8\r\n",
            "m=application 0 udp bfcp\r\n",
        ]
    );
    assert_eq!(a.audio.remote, remote("192.0.2.7:5004"));
}

#[test]
fn ipv6_offer_is_answered_over_ipv6() {
    let offer = "v=0\no=- 1 1 IN IP6 2001:db8::20\ns=-\nc=IN IP6 2001:db8::20\nt=0 0\n\
                 m=audio 5004 RTP/AVP 8\n";
    let v6 = LocalMedia {
        address: "2001:db8::10".parse().expect("ip"),
        ..narrowband()
    };
    let a = answer(&mut session(), offer, &v6);
    let text = a.sdp.to_string();
    assert!(
        text.contains("o=voxtrunk 4242 1 IN IP6 2001:db8::10\r\n"),
        "{text}"
    );
    assert!(text.contains("c=IN IP6 2001:db8::10\r\n"), "{text}");
    assert_eq!(a.audio.remote, remote("[2001:db8::20]:5004"));

    let e = answer_err(offer, &narrowband());
    assert_eq!(
        e,
        NegotiationError::AddressFamilyMismatch {
            offered: AddrType::Ip6,
            local: AddrType::Ip4
        }
    );
    assert_eq!((e.sip_status(), e.warning_code()), (488, 301));
}

#[test]
fn ipv6_offer_of_g726_and_h263_has_no_common_codec() {
    let offer = "v=0\no=nasa1 971731711378798081 0 IN IP6 2001:db8::20\ns=-\n\
                 c=IN IP6 2001:db8::20\nt=0 0\n\
                 m=audio 6000 RTP/AVP 2\na=rtpmap:2 G726-32/8000\n\
                 m=video 6024 RTP/AVP 34\n";
    let e = answer_err(offer, &local());
    assert_eq!(
        e.to_string(),
        "no common audio codec (offered: G726-32/8000)"
    );
    assert_eq!((e.sip_status(), e.warning_code()), (488, 305));
}

#[test]
fn g729_only_offer_is_refused_with_488() {
    let offer = ASTERISK_OFFER.replace("RTP/AVP 8 0 3 101", "RTP/AVP 18 3");
    let e = answer_err(&offer, &local());
    assert_eq!(
        e.to_string(),
        "no common audio codec (offered: G729/8000, GSM/8000)"
    );
    assert_eq!((e.sip_status(), e.warning_code()), (488, 305));
}

#[test]
fn srtp_only_offer_names_the_rejected_transports() {
    let offer = "v=0\no=- 1 1 IN IP4 192.0.2.7\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n\
                 m=audio 5000 RTP/SAVP 0\nm=audio 5002 UDP/TLS/RTP/SAVPF 111\n";
    let e = answer_err(offer, &local());
    assert_eq!(
        e.to_string(),
        "unsupported audio transport RTP/SAVP, UDP/TLS/RTP/SAVPF \
         (only RTP/AVP and RTP/AVPF are accepted)"
    );
    assert_eq!((e.sip_status(), e.warning_code()), (488, 302));
}

#[test]
fn avpf_is_accepted_and_echoed() {
    let offer = SIPP_OFFER.replace("RTP/AVP", "RTP/AVPF");
    let a = answer(&mut session(), &offer, &local());
    assert!(a.sdp.to_string().contains("m=audio 30000 RTP/AVPF 0\r\n"));
}

#[test]
fn offers_without_usable_audio() {
    let video_only = "v=0\no=- 1 1 IN IP4 192.0.2.7\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n\
                      m=video 5002 RTP/AVP 34\nm=audio 0 RTP/AVP 0\n";
    let e = answer_err(video_only, &local());
    assert_eq!(
        (e.to_string().as_str(), e.warning_code()),
        ("no audio stream offered", 304)
    );

    let host_name = SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 media.example.com");
    let e = answer_err(&host_name, &local());
    assert_eq!(
        e.to_string(),
        "audio connection address 'media.example.com' is not a unicast IP address"
    );
}

#[test]
fn our_offer_lists_every_codec_and_telephone_event_per_clock_rate() {
    let mut s = session();
    let offer = s.offer(&local(), Direction::SendRecv);
    assert_golden(&offer, OUR_OFFER);
    assert!(s.offer_pending());
    // Offering the same again (e.g. a retried re-INVITE) keeps the version.
    assert_eq!(s.offer(&local(), Direction::SendRecv), offer);
    let held = s.offer(&local(), Direction::SendOnly);
    assert_eq!(held.origin.session_version, "2");
}

#[test]
fn answer_to_our_offer_from_ack() {
    let mut s = session();
    s.offer(&local(), Direction::SendRecv);
    let answer = "v=0\no=peer 7 7 IN IP4 192.0.2.7\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n\
                  m=audio 5004 RTP/AVP 8 101\na=rtpmap:8 PCMA/8000\n\
                  a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\na=ptime:30\n\
                  a=recvonly\n";
    let audio = s.accept_answer(&sdp(answer)).expect("answer accepted");
    assert_eq!(
        audio,
        NegotiatedAudio {
            codec: AudioCodec::Pcma,
            payload_type: 8,
            rtp_clock_rate: 8000,
            channels: 1,
            telephone_event: Some(TelephoneEvent {
                payload_type: 101,
                clock_rate: 8000
            }),
            remote: remote("192.0.2.7:5004"),
            direction: Direction::SendOnly,
            remote_ptime: Some(30),
            fmtp: None,
        }
    );
    assert!(!s.offer_pending());
    assert_eq!(s.negotiated(), Some(&audio));
    assert_eq!(
        s.accept_answer(&sdp(answer)),
        Err(NegotiationError::NoPendingOffer)
    );
}

#[test]
fn answer_may_omit_rtpmap_for_our_dynamic_payload_types() {
    let mut s = session();
    s.offer(&local(), Direction::SendRecv);
    let answer = "v=0\no=peer 7 7 IN IP4 192.0.2.7\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n\
                  m=audio 5004 RTP/AVP 96 102\n";
    let audio = s.accept_answer(&sdp(answer)).expect("answer accepted");
    assert_eq!((audio.codec, audio.payload_type), (AudioCodec::Opus, 96));
    assert_eq!(
        audio.telephone_event,
        Some(TelephoneEvent {
            payload_type: 102,
            clock_rate: 48000
        })
    );
}

#[test]
fn unacceptable_answers_to_our_offer() {
    let base = "v=0\no=peer 7 7 IN IP4 192.0.2.7\ns=-\nc=IN IP4 192.0.2.7\nt=0 0\n";
    let cases: [(&str, NegotiationError); 5] = [
        (
            "m=audio 5004 RTP/AVP 18\na=rtpmap:18 G729/8000\n",
            NegotiationError::AnswerMismatch {
                answered: vec!["G729/8000".into()],
            },
        ),
        (
            // Our payload type 96 remapped to another codec.
            "m=audio 5004 RTP/AVP 96\na=rtpmap:96 AMR/8000\n",
            NegotiationError::AnswerMismatch {
                answered: vec!["AMR/8000".into()],
            },
        ),
        ("m=audio 0 RTP/AVP 0\n", NegotiationError::AnswerRejected),
        (
            "m=audio 5004 RTP/SAVP 0\n",
            NegotiationError::UnsupportedProto {
                protos: vec!["RTP/SAVP".into()],
            },
        ),
        (
            "m=audio 5004 RTP/AVP 0\nm=video 0 RTP/AVP 34\n",
            NegotiationError::MediaCountMismatch {
                offered: 1,
                answered: 2,
            },
        ),
    ];
    for (media, expected) in cases {
        let mut s = session();
        s.offer(&local(), Direction::SendRecv);
        assert_eq!(
            s.accept_answer(&sdp(&format!("{base}{media}"))),
            Err(expected),
            "{media}"
        );
        assert!(
            s.offer_pending(),
            "a bad answer leaves the offer outstanding"
        );
    }
    assert_eq!(
        session().accept_answer(&sdp(SIPP_OFFER)),
        Err(NegotiationError::NoPendingOffer)
    );
}

#[test]
fn our_reoffer_keeps_codec_payload_types_and_declined_streams() {
    let mut s = session();
    let offer = LINPHONE_OFFER
        .replace("96", "111")
        .replace("m=audio 7078", "m=video 9078 RTP/AVP 99\nm=audio 7078");
    let first = answer(&mut s, &offer, &narrowband());
    assert_eq!(
        first.audio.telephone_event.map(|t| t.payload_type),
        Some(100)
    );
    let mut wideband = local();
    wideband.codecs.push(AudioCodec::Pcmu);
    let reoffer = s.offer(&wideband, Direction::SendOnly);
    let text = reoffer.to_string().replace("\r\n", "\n");
    assert!(
        text.contains("m=video 0 RTP/AVP 99\nm=audio 30000 RTP/AVP 0 96 9 8 100 102\n"),
        "{text}"
    );
    assert!(
        text.contains("a=rtpmap:100 telephone-event/8000\n"),
        "{text}"
    );
    assert!(
        text.contains("a=rtpmap:102 telephone-event/48000\n"),
        "{text}"
    );
    assert_eq!(reoffer.origin.session_version, "2");

    s.cancel_offer();
    assert!(!s.offer_pending());
    assert_eq!(s.negotiated().map(|n| n.codec), Some(AudioCodec::Pcmu));
}
