//! RFC 3264 offer/answer for one audio stream.

use std::net::{IpAddr, SocketAddr};

use super::model::{
    AddrType, Attribute, Connection, ConnectionAddress, Direction, MediaDescription, Origin,
    RtpMap, SessionDescription, Timing,
};
use super::printable;

/// Transports we answer: plain RTP. SRTP profiles (`RTP/SAVP`, `RTP/SAVPF`,
/// `UDP/TLS/RTP/SAVPF`) would need keying this server does not do.
const SUPPORTED_PROTOS: [&str; 2] = ["RTP/AVP", "RTP/AVPF"];
/// First choice of dynamic payload type for Opus in our offers.
const OPUS_PAYLOAD_TYPE: u8 = 96;
/// First choice of dynamic payload type for telephone-event in our offers.
const TELEPHONE_EVENT_PAYLOAD_TYPE: u8 = 101;
/// RFC 4733 §3.2 events 0-15 are DTMF digits, 16 is flash.
const TELEPHONE_EVENTS: &str = "0-16";
/// Packet time we send and ask for, in milliseconds.
const PTIME_MS: &str = "20";

/// Audio codecs voxtrunk negotiates (the media crate maps them to its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// G.711 mu-law, static payload type 0 (RFC 3551).
    Pcmu,
    /// G.711 A-law, static payload type 8 (RFC 3551).
    Pcma,
    /// G.722, static payload type 9; it samples at 16 kHz but its RTP clock
    /// is 8000 Hz for historical reasons (RFC 3551 §4.5.2).
    G722,
    /// Opus, dynamic payload type, always described as `opus/48000/2`
    /// whatever it actually carries (RFC 7587 §7).
    Opus,
}

impl AudioCodec {
    /// The rtpmap encoding name.
    pub fn encoding_name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::G722 => "G722",
            AudioCodec::Opus => "opus",
        }
    }

    /// The RTP timestamp clock rate in Hz.
    pub fn rtp_clock_rate(self) -> u32 {
        match self {
            AudioCodec::Opus => 48000,
            AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => 8000,
        }
    }

    /// The rtpmap channel count: 2 for Opus per RFC 7587, which signals
    /// mono/stereo preference through fmtp `stereo` instead.
    pub fn channels(self) -> u8 {
        match self {
            AudioCodec::Opus => 2,
            AudioCodec::Pcmu | AudioCodec::Pcma | AudioCodec::G722 => 1,
        }
    }

    /// The RFC 3551 static payload type, if the codec has one.
    pub fn static_payload_type(self) -> Option<u8> {
        match self {
            AudioCodec::Pcmu => Some(0),
            AudioCodec::Pcma => Some(8),
            AudioCodec::G722 => Some(9),
            AudioCodec::Opus => None,
        }
    }

    /// The codec an rtpmap describes. Names match case-insensitively; Opus
    /// is also recognised as `opus/48000` and `opus/48000/1`, which some
    /// peers send despite RFC 7587.
    pub fn from_rtpmap(map: &RtpMap) -> Option<Self> {
        let named = |name: &str| map.encoding_name.eq_ignore_ascii_case(name);
        match (map.clock_rate, map.channels.unwrap_or(1)) {
            (8000, 1) if named("PCMU") => Some(AudioCodec::Pcmu),
            (8000, 1) if named("PCMA") => Some(AudioCodec::Pcma),
            (8000, 1) if named("G722") => Some(AudioCodec::G722),
            (48000, 1 | 2) if named("opus") => Some(AudioCodec::Opus),
            _ => None,
        }
    }

    fn rtpmap(self, payload_type: u8) -> RtpMap {
        RtpMap {
            payload_type,
            encoding_name: self.encoding_name().to_owned(),
            clock_rate: self.rtp_clock_rate(),
            channels: (self == AudioCodec::Opus).then_some(2),
        }
    }
}

/// Whose codec order wins when several codecs are common.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CodecPreference {
    /// The first offered codec we support, as RFC 3264 §6.1 suggests.
    #[default]
    Offerer,
    /// Our first enabled codec that was offered.
    Local,
}

/// What this end offers or accepts for audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMedia {
    /// Our RTP address, put into `c=` and `o=`.
    pub address: IpAddr,
    /// Our RTP port.
    pub port: u16,
    /// Enabled codecs in local preference order.
    pub codecs: Vec<AudioCodec>,
    /// Whose order wins when answering.
    pub prefer: CodecPreference,
    /// Whether to negotiate RFC 4733 telephone-event.
    pub telephone_event: bool,
}

/// A negotiated RFC 4733 telephone-event payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// RTP payload type.
    pub payload_type: u8,
    /// RTP clock rate; may differ from the codec's when the peer offered no
    /// telephone-event at the codec's rate.
    pub clock_rate: u32,
}

/// The outcome of an offer/answer exchange for the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedAudio {
    /// The one codec to send and expect.
    pub codec: AudioCodec,
    /// Its payload type, as numbered by the offer.
    pub payload_type: u8,
    /// Its RTP clock rate (8000 for G.722).
    pub rtp_clock_rate: u32,
    /// Its rtpmap channel count (2 for Opus, see [`AudioCodec::channels`]).
    pub channels: u8,
    /// DTMF payload, when both sides want it.
    pub telephone_event: Option<TelephoneEvent>,
    /// Where to send RTP; `None` when the peer is on hold with `c=0.0.0.0`
    /// (RFC 2543 style) and so gives no address.
    pub remote: Option<SocketAddr>,
    /// Our direction: whether we send and/or receive.
    pub direction: Direction,
    /// The peer's `a=ptime`, the packet time it wants to receive.
    pub remote_ptime: Option<u32>,
    /// The peer's fmtp for the chosen codec (Opus parameters, RFC 7587 §6).
    pub fmtp: Option<String>,
}

/// Our answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The SDP to send.
    pub sdp: SessionDescription,
    /// What was agreed for audio.
    pub audio: NegotiatedAudio,
}

/// Why an offer or answer cannot be used.
///
/// `Display` is ASCII without double quotes (peer text is sanitised), fit for
/// a `Warning` header with [`warning_code`](Self::warning_code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NegotiationError {
    /// No audio stream with a non-zero port.
    #[error("no audio stream offered")]
    NoAudio,
    /// Audio is offered only over transports we do not accept (e.g. SRTP).
    #[error(
        "unsupported audio transport {} (only RTP/AVP and RTP/AVPF are accepted)",
        .protos.join(", ")
    )]
    UnsupportedProto {
        /// The rejected `m=` protos, sanitised.
        protos: Vec<String>,
    },
    /// None of the offered audio formats is an enabled codec.
    #[error("no common audio codec (offered: {})", .offered.join(", "))]
    NoCommonCodec {
        /// The offered formats as `name/rate[/channels]` (or the bare
        /// format when unmapped), sanitised.
        offered: Vec<String>,
    },
    /// The peer's audio address is of the other IP family than ours.
    #[error("audio is offered over {offered} but the local media address is {local}")]
    AddressFamilyMismatch {
        /// The peer's family.
        offered: AddrType,
        /// Ours.
        local: AddrType,
    },
    /// The peer's audio address is a host name or multicast group, or missing.
    #[error("audio connection address '{address}' is not a unicast IP address")]
    UnusableAddress {
        /// The address as written, sanitised.
        address: String,
    },
    /// The answer to our offer set the audio port to 0.
    #[error("the answer rejected the audio stream (port 0)")]
    AnswerRejected,
    /// The answer to our offer picked none of our codecs.
    #[error("the answer picks none of the offered codecs (answered: {})", .answered.join(", "))]
    AnswerMismatch {
        /// The answered formats, as in [`NegotiationError::NoCommonCodec`].
        answered: Vec<String>,
    },
    /// The answer has a different number of `m=` lines than our offer
    /// (RFC 3264 §6 requires the same).
    #[error("the answer has {answered} m= lines but the offer had {offered}")]
    MediaCountMismatch {
        /// `m=` lines in our offer.
        offered: usize,
        /// `m=` lines in the answer.
        answered: usize,
    },
    /// [`SdpSession::accept_answer`] was called with no offer outstanding.
    #[error("no local offer is awaiting an answer")]
    NoPendingOffer,
}

impl NegotiationError {
    /// The SIP status to reject an offer with: 488 Not Acceptable Here, or
    /// 500 for [`NegotiationError::NoPendingOffer`], which is a caller bug.
    pub fn sip_status(&self) -> u16 {
        match self {
            NegotiationError::NoPendingOffer => 500,
            _ => 488,
        }
    }

    /// The RFC 3261 §20.43 warn-code for the `Warning` header.
    pub fn warning_code(&self) -> u16 {
        match self {
            NegotiationError::NoAudio | NegotiationError::AnswerRejected => 304,
            NegotiationError::UnsupportedProto { .. } => 302,
            NegotiationError::NoCommonCodec { .. } | NegotiationError::AnswerMismatch { .. } => 305,
            NegotiationError::AddressFamilyMismatch { .. }
            | NegotiationError::UnusableAddress { .. } => 301,
            NegotiationError::MediaCountMismatch { .. } | NegotiationError::NoPendingOffer => 399,
        }
    }

    /// How far an m-line got before failing, so that the reported reason
    /// is the one from the stream that came closest to being usable.
    fn progress(&self) -> u8 {
        match self {
            NegotiationError::NoAudio => 0,
            NegotiationError::UnsupportedProto { .. } => 1,
            NegotiationError::NoCommonCodec { .. } => 2,
            _ => 3,
        }
    }

    fn most_specific(self, other: Self) -> Self {
        match (self, other) {
            (
                NegotiationError::UnsupportedProto { mut protos },
                NegotiationError::UnsupportedProto { protos: more },
            ) => {
                for proto in more {
                    if !protos.contains(&proto) {
                        protos.push(proto);
                    }
                }
                NegotiationError::UnsupportedProto { protos }
            }
            (current, other) if other.progress() > current.progress() => other,
            (current, _) => current,
        }
    }
}

/// Offer/answer state of one dialog.
///
/// It owns the `o=` line (RFC 3264 §5: same id and username for the whole
/// session, version bumped only when the description changes, §8) and
/// remembers what was negotiated so later exchanges keep codec and payload
/// type numbers stable.
#[derive(Debug, Clone)]
pub struct SdpSession {
    session_id: u64,
    username: String,
    version: u64,
    local: Option<SessionDescription>,
    audio_index: usize,
    negotiated: Option<NegotiatedAudio>,
    offer_pending: bool,
}

impl SdpSession {
    /// A session whose `o=` will carry `username` (characters that cannot
    /// appear in `o=` are replaced by `-`) and `session_id`.
    pub fn new(session_id: u64, username: &str) -> Self {
        let username: String = username
            .chars()
            .map(|c| if c.is_ascii_graphic() { c } else { '-' })
            .collect();
        SdpSession {
            session_id,
            username: if username.is_empty() {
                "-".to_owned()
            } else {
                username
            },
            version: 1,
            local: None,
            audio_index: 0,
            negotiated: None,
            offer_pending: false,
        }
    }

    /// The current `o=` session version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The last description we sent, offer or answer.
    pub fn local_description(&self) -> Option<&SessionDescription> {
        self.local.as_ref()
    }

    /// The audio parameters currently agreed.
    pub fn negotiated(&self) -> Option<&NegotiatedAudio> {
        self.negotiated.as_ref()
    }

    /// Whether [`offer`](Self::offer) was called and its answer not yet
    /// accepted.
    pub fn offer_pending(&self) -> bool {
        self.offer_pending
    }

    /// Forgets an outstanding offer that the peer rejected (e.g. 488 to our
    /// re-INVITE); the previous negotiation stays in force. The version is
    /// not rolled back: the peer has seen it.
    pub fn cancel_offer(&mut self) {
        self.offer_pending = false;
    }

    /// Answers `offer` (RFC 3264 §6): the first usable audio stream gets one
    /// codec (plus telephone-event), every other stream is declined with
    /// port 0.
    ///
    /// # Errors
    ///
    /// When no stream can carry our audio: none offered, only unsupported
    /// transports, no common codec, or an unusable address. Nothing changes
    /// then; reject the request with [`NegotiationError::sip_status`] and a
    /// `Warning` of [`NegotiationError::warning_code`].
    pub fn answer(
        &mut self,
        offer: &SessionDescription,
        local: &LocalMedia,
    ) -> Result<Answer, NegotiationError> {
        let mut failure = NegotiationError::NoAudio;
        let mut accepted = None;
        for (index, m) in offer.media.iter().enumerate() {
            match self.answer_stream(offer, m, local) {
                Ok(stream) => {
                    accepted = Some((index, stream));
                    break;
                }
                Err(e) => failure = failure.most_specific(e),
            }
        }
        let Some((index, (audio, answered))) = accepted else {
            return Err(failure);
        };
        let mut media: Vec<MediaDescription> = offer.media.iter().map(declined).collect();
        if let Some(slot) = media.get_mut(index) {
            *slot = answered;
        }
        let sdp = self.commit(local.address, media);
        self.audio_index = index;
        self.negotiated = Some(audio.clone());
        self.offer_pending = false;
        Ok(Answer { sdp, audio })
    }

    /// Makes an offer (RFC 3264 §5) with every enabled codec in local order,
    /// telephone-event at each codec clock rate, and `direction`.
    ///
    /// A re-offer keeps the m-line count of the previous description
    /// (§8: declined streams stay, with port 0), lists the codec in use first
    /// and keeps its payload type numbers (§8.3.2). An empty codec list
    /// offers PCMU, the RFC 3551 baseline, since an m= line needs a format.
    pub fn offer(&mut self, local: &LocalMedia, direction: Direction) -> SessionDescription {
        let in_use = self.negotiated.clone();
        let mut codecs: Vec<AudioCodec> = Vec::new();
        let current = in_use.as_ref().map(|n| n.codec);
        for codec in current.into_iter().chain(local.codecs.iter().copied()) {
            if local.codecs.contains(&codec) && !codecs.contains(&codec) {
                codecs.push(codec);
            }
        }
        if codecs.is_empty() {
            codecs.push(AudioCodec::Pcmu);
        }
        let kept_event = in_use.as_ref().and_then(|n| n.telephone_event);
        let mut used: Vec<u8> = in_use
            .iter()
            .map(|n| n.payload_type)
            .chain(kept_event.map(|t| t.payload_type))
            .collect();
        let mut formats = Vec::new();
        let mut attributes = Vec::new();
        for &codec in &codecs {
            let payload_type = match &in_use {
                Some(n) if n.codec == codec => n.payload_type,
                _ => allocate(
                    &mut used,
                    codec.static_payload_type().unwrap_or(OPUS_PAYLOAD_TYPE),
                ),
            };
            formats.push(payload_type.to_string());
            attributes.push(Attribute::new(
                "rtpmap",
                codec.rtpmap(payload_type).to_string(),
            ));
        }
        if local.telephone_event {
            // One per clock rate, so that DTMF can share the timestamp clock
            // of whichever codec the answerer picks (RFC 4733 §2.1).
            let mut clock_rates: Vec<u32> = Vec::new();
            for codec in &codecs {
                if !clock_rates.contains(&codec.rtp_clock_rate()) {
                    clock_rates.push(codec.rtp_clock_rate());
                }
            }
            let mut by_rate = clock_rates.clone();
            by_rate.sort_unstable();
            for &clock_rate in &clock_rates {
                // The conventional 101 goes to the lowest rate (8000 Hz).
                let rank = by_rate.iter().position(|r| *r == clock_rate).unwrap_or(0);
                let rank = u8::try_from(rank).unwrap_or(0);
                let wanted = TELEPHONE_EVENT_PAYLOAD_TYPE.saturating_add(rank);
                let payload_type = match kept_event {
                    Some(event) if event.clock_rate == clock_rate => event.payload_type,
                    _ => allocate(&mut used, wanted),
                };
                formats.push(payload_type.to_string());
                push_telephone_event(&mut attributes, payload_type, clock_rate);
            }
        }
        attributes.push(Attribute::new("ptime", PTIME_MS));
        attributes.push(Attribute::flag(direction.as_str()));
        let audio = MediaDescription {
            media: "audio".to_owned(),
            port: local.port,
            port_count: None,
            proto: SUPPORTED_PROTOS[0].to_owned(),
            formats,
            connection: None,
            bandwidths: Vec::new(),
            attributes,
        };
        let mut media = self
            .local
            .as_ref()
            .map(|previous| previous.media.clone())
            .unwrap_or_default();
        match media.get_mut(self.audio_index) {
            Some(slot) => *slot = audio,
            None => {
                self.audio_index = media.len();
                media.push(audio);
            }
        }
        self.offer_pending = true;
        self.commit(local.address, media)
    }

    /// Takes the peer's answer to our last [`offer`](Self::offer) (from a
    /// 200 OK, or from the ACK when the INVITE had no SDP). The answer must
    /// keep our payload types and pick at least one offered codec; when
    /// several are listed the first is used.
    ///
    /// # Errors
    ///
    /// When no offer is outstanding or the answer breaks RFC 3264 §6
    /// (different m-line count, port 0, other transport, no offered codec)
    /// or has an unusable address. The offer then stays outstanding. An
    /// unacceptable answer in an ACK cannot be refused: RFC 3261 §13.3.1.4
    /// has the UAS send BYE; after a 200 to our re-INVITE, send ACK then
    /// BYE or a new offer.
    pub fn accept_answer(
        &mut self,
        answer: &SessionDescription,
    ) -> Result<NegotiatedAudio, NegotiationError> {
        let offer = match &self.local {
            Some(offer) if self.offer_pending => offer,
            _ => return Err(NegotiationError::NoPendingOffer),
        };
        if answer.media.len() != offer.media.len() {
            return Err(NegotiationError::MediaCountMismatch {
                offered: offer.media.len(),
                answered: answer.media.len(),
            });
        }
        let (Some(ours), Some(theirs)) = (
            offer.media.get(self.audio_index),
            answer.media.get(self.audio_index),
        ) else {
            return Err(NegotiationError::NoAudio);
        };
        if !theirs.media.eq_ignore_ascii_case(&ours.media) {
            return Err(NegotiationError::NoAudio);
        }
        if theirs.port == 0 {
            return Err(NegotiationError::AnswerRejected);
        }
        if !theirs.proto.eq_ignore_ascii_case(&ours.proto) {
            return Err(NegotiationError::UnsupportedProto {
                protos: vec![printable(&theirs.proto)],
            });
        }
        let offered = formats(ours);
        // Answers may leave out rtpmap for our payload types, or add formats
        // of their own; only our payload types with an unchanged meaning count.
        let accepted: Vec<&Format> = theirs
            .payload_types()
            .filter_map(|pt| {
                let mine = offered.iter().find(|f| f.map.payload_type == pt)?;
                let same = theirs.rtpmap(pt).is_none_or(|map| {
                    classify(&map) == mine.payload && map.clock_rate == mine.map.clock_rate
                });
                same.then_some(mine)
            })
            .collect();
        let (codec, format) = accepted
            .iter()
            .find_map(|f| Some((f.codec()?, *f)))
            .ok_or_else(|| NegotiationError::AnswerMismatch {
                answered: describe_formats(theirs),
            })?;
        let event = choose_telephone_event(accepted.iter().copied(), codec.rtp_clock_rate());
        let our_family = offer.connection.as_ref().map(|c| c.addr_type);
        let (remote, peer_direction) = peer_endpoint(answer, theirs, our_family)?;
        let direction = offer
            .media_direction(ours)
            .intersect(peer_direction.answer());
        let audio = negotiated(codec, format, event, theirs, remote, direction);
        self.negotiated = Some(audio.clone());
        self.offer_pending = false;
        Ok(audio)
    }

    fn answer_stream(
        &self,
        offer: &SessionDescription,
        m: &MediaDescription,
        local: &LocalMedia,
    ) -> Result<(NegotiatedAudio, MediaDescription), NegotiationError> {
        if !m.media.eq_ignore_ascii_case("audio") || m.port == 0 {
            return Err(NegotiationError::NoAudio);
        }
        if !SUPPORTED_PROTOS
            .iter()
            .any(|p| m.proto.eq_ignore_ascii_case(p))
        {
            return Err(NegotiationError::UnsupportedProto {
                protos: vec![printable(&m.proto)],
            });
        }
        let offered = formats(m);
        let (codec, format) =
            self.choose_codec(&offered, local)
                .ok_or_else(|| NegotiationError::NoCommonCodec {
                    offered: describe_formats(m),
                })?;
        let event = if local.telephone_event {
            choose_telephone_event(offered.iter(), codec.rtp_clock_rate())
        } else {
            None
        };
        let (remote, peer_direction) = peer_endpoint(offer, m, Some(AddrType::of(local.address)))?;
        let direction = peer_direction.answer();

        // Echo the offer's rtpmap so that peers matching it literally
        // (case, channel count) recognise their own payload type.
        let mut formats = vec![format.map.payload_type.to_string()];
        let mut attributes = vec![Attribute::new("rtpmap", format.map.to_string())];
        if let Some(event) = event {
            formats.push(event.map.payload_type.to_string());
            push_telephone_event(
                &mut attributes,
                event.map.payload_type,
                event.map.clock_rate,
            );
        }
        attributes.push(Attribute::new("ptime", PTIME_MS));
        attributes.push(Attribute::flag(direction.as_str()));
        let answered = MediaDescription {
            media: m.media.clone(),
            port: local.port,
            port_count: None,
            proto: m.proto.clone(),
            formats,
            connection: None,
            bandwidths: Vec::new(),
            attributes,
        };
        Ok((
            negotiated(codec, format, event, m, remote, direction),
            answered,
        ))
    }

    fn choose_codec<'a>(
        &self,
        offered: &'a [Format],
        local: &LocalMedia,
    ) -> Option<(AudioCodec, &'a Format)> {
        let enabled = |codec: &AudioCodec| local.codecs.contains(codec);
        let find = |codec: AudioCodec| {
            offered
                .iter()
                .find(|f| f.codec() == Some(codec))
                .map(|f| (codec, f))
        };
        // Re-offers (hold, unhold, session refresh) keep the codec in use so
        // that neither side has to switch codecs mid-call.
        let in_use = self.negotiated.as_ref().map(|n| n.codec).filter(enabled);
        in_use.and_then(find).or_else(|| match local.prefer {
            CodecPreference::Offerer => offered
                .iter()
                .find_map(|f| Some((f.codec().filter(enabled)?, f))),
            CodecPreference::Local => local.codecs.iter().find_map(|&codec| find(codec)),
        })
    }

    /// Stamps `media` with our `o=`/`c=` and bumps the version only if the
    /// result differs from the last description we sent (RFC 3264 §8).
    fn commit(&mut self, address: IpAddr, media: Vec<MediaDescription>) -> SessionDescription {
        let mut sdp = SessionDescription {
            version: 0,
            origin: Origin {
                username: self.username.clone(),
                session_id: self.session_id.to_string(),
                session_version: self.version.to_string(),
                net_type: "IN".to_owned(),
                addr_type: AddrType::of(address).as_str().to_owned(),
                address: address.to_string(),
            },
            session_name: "-".to_owned(),
            connection: Some(Connection::new(address)),
            bandwidths: Vec::new(),
            timing: Timing::default(),
            attributes: Vec::new(),
            media,
        };
        if self.local.as_ref().is_some_and(|last| *last != sdp) {
            self.version = self.version.saturating_add(1);
            sdp.origin.session_version = self.version.to_string();
        }
        self.local = Some(sdp.clone());
        sdp
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    Codec(AudioCodec),
    TelephoneEvent,
}

/// One RTP payload type of an m-line with what we make of it.
#[derive(Debug)]
struct Format {
    map: RtpMap,
    payload: Option<Payload>,
}

impl Format {
    fn codec(&self) -> Option<AudioCodec> {
        match self.payload {
            Some(Payload::Codec(codec)) => Some(codec),
            _ => None,
        }
    }
}

fn classify(map: &RtpMap) -> Option<Payload> {
    if map.encoding_name.eq_ignore_ascii_case("telephone-event") {
        Some(Payload::TelephoneEvent)
    } else {
        AudioCodec::from_rtpmap(map).map(Payload::Codec)
    }
}

fn formats(m: &MediaDescription) -> Vec<Format> {
    m.payload_types()
        .filter_map(|pt| m.rtpmap(pt))
        .map(|map| Format {
            payload: classify(&map),
            map,
        })
        .collect()
}

fn describe_formats(m: &MediaDescription) -> Vec<String> {
    m.formats
        .iter()
        .map(|format| {
            let map = format.parse().ok().and_then(|pt| m.rtpmap(pt));
            printable(&map.map_or_else(|| format.clone(), |map| map.encoding()))
        })
        .collect()
}

/// Prefers the telephone-event sharing the codec's clock (RFC 4733 §2.1
/// lets events use the audio timestamp clock), else takes the first one.
fn choose_telephone_event<'a>(
    formats: impl Iterator<Item = &'a Format> + Clone,
    clock_rate: u32,
) -> Option<&'a Format> {
    let mut events = formats.filter(|f| f.payload == Some(Payload::TelephoneEvent));
    events
        .clone()
        .find(|f| f.map.clock_rate == clock_rate)
        .or_else(|| events.next())
}

fn push_telephone_event(attributes: &mut Vec<Attribute>, payload_type: u8, clock_rate: u32) {
    attributes.push(Attribute::new(
        "rtpmap",
        format!("{payload_type} telephone-event/{clock_rate}"),
    ));
    attributes.push(Attribute::new(
        "fmtp",
        format!("{payload_type} {TELEPHONE_EVENTS}"),
    ));
}

/// The peer's RTP address for `m` and the direction it asked for, reading
/// `c=0.0.0.0` as RFC 2543 hold: the peer does not want to receive.
fn peer_endpoint(
    sdp: &SessionDescription,
    m: &MediaDescription,
    our_family: Option<AddrType>,
) -> Result<(Option<SocketAddr>, Direction), NegotiationError> {
    let direction = sdp.media_direction(m);
    let ip = match sdp.connection_for(m).map(|c| &c.address) {
        Some(ConnectionAddress::Ip(ip)) => *ip,
        Some(ConnectionAddress::Raw(raw)) => {
            return Err(NegotiationError::UnusableAddress {
                address: printable(raw),
            });
        }
        None => {
            return Err(NegotiationError::UnusableAddress {
                address: String::new(),
            });
        }
    };
    if ip.is_unspecified() {
        return Ok((None, Direction::from_flags(direction.sends(), false)));
    }
    let family = AddrType::of(ip);
    if let Some(local) = our_family.filter(|local| *local != family) {
        return Err(NegotiationError::AddressFamilyMismatch {
            offered: family,
            local,
        });
    }
    Ok((Some(SocketAddr::new(ip, m.port)), direction))
}

fn negotiated(
    codec: AudioCodec,
    format: &Format,
    event: Option<&Format>,
    m: &MediaDescription,
    remote: Option<SocketAddr>,
    direction: Direction,
) -> NegotiatedAudio {
    NegotiatedAudio {
        codec,
        payload_type: format.map.payload_type,
        rtp_clock_rate: codec.rtp_clock_rate(),
        channels: codec.channels(),
        telephone_event: event.map(|e| TelephoneEvent {
            payload_type: e.map.payload_type,
            clock_rate: e.map.clock_rate,
        }),
        remote,
        direction,
        remote_ptime: m.ptime(),
        fmtp: m.fmtp(format.map.payload_type).map(str::to_owned),
    }
}

/// RFC 3264 §6: a declined stream keeps its media type and proto, gets
/// port 0, and lists at least one offered format.
fn declined(m: &MediaDescription) -> MediaDescription {
    MediaDescription {
        media: m.media.clone(),
        port: 0,
        port_count: None,
        proto: m.proto.clone(),
        formats: m.formats.iter().take(1).cloned().collect(),
        connection: None,
        bandwidths: Vec::new(),
        attributes: Vec::new(),
    }
}

/// `wanted` if free, else the first free dynamic payload type (RFC 3551
/// §3: 96-127).
fn allocate(used: &mut Vec<u8>, wanted: u8) -> u8 {
    let payload_type = if used.contains(&wanted) {
        (96..=127).find(|pt| !used.contains(pt)).unwrap_or(wanted)
    } else {
        wanted
    };
    used.push(payload_type);
    payload_type
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_recognised_from_rtpmaps() {
        let codec = |text: &str| RtpMap::parse(text).and_then(|m| AudioCodec::from_rtpmap(&m));
        assert_eq!(codec("0 pcmu/8000"), Some(AudioCodec::Pcmu));
        assert_eq!(codec("8 PCMA/8000/1"), Some(AudioCodec::Pcma));
        assert_eq!(codec("9 G722/8000"), Some(AudioCodec::G722));
        assert_eq!(codec("9 G722/16000"), None);
        assert_eq!(codec("111 OPUS/48000/2"), Some(AudioCodec::Opus));
        assert_eq!(codec("111 opus/48000"), Some(AudioCodec::Opus));
        assert_eq!(codec("111 opus/48000/1"), Some(AudioCodec::Opus));
        assert_eq!(codec("111 opus/16000/2"), None);
        assert_eq!(codec("0 PCMU/8000/2"), None);
        for c in [
            AudioCodec::Pcmu,
            AudioCodec::Pcma,
            AudioCodec::G722,
            AudioCodec::Opus,
        ] {
            assert_eq!(AudioCodec::from_rtpmap(&c.rtpmap(100)), Some(c));
        }
    }

    #[test]
    fn allocation_skips_used_payload_types() {
        let mut used = vec![0, 96];
        assert_eq!(allocate(&mut used, 8), 8);
        assert_eq!(allocate(&mut used, 0), 97);
        assert_eq!(allocate(&mut used, 96), 98);
        let mut full: Vec<u8> = (96..=127).collect();
        assert_eq!(allocate(&mut full, 101), 101);
    }

    #[test]
    fn failure_reason_comes_from_the_most_promising_stream() {
        let proto = |p: &str| NegotiationError::UnsupportedProto {
            protos: vec![p.into()],
        };
        let merged = NegotiationError::NoAudio
            .most_specific(proto("RTP/SAVP"))
            .most_specific(proto("UDP/TLS/RTP/SAVPF"))
            .most_specific(NegotiationError::NoAudio);
        assert_eq!(
            merged.to_string(),
            "unsupported audio transport RTP/SAVP, UDP/TLS/RTP/SAVPF \
             (only RTP/AVP and RTP/AVPF are accepted)"
        );
        let no_codec = NegotiationError::NoCommonCodec {
            offered: vec!["G729/8000".into()],
        };
        assert_eq!(merged.most_specific(no_codec.clone()), no_codec);
        assert_eq!(no_codec.clone().most_specific(proto("RTP/SAVP")), no_codec);
    }

    #[test]
    fn status_and_warning_codes() {
        let no_codec = NegotiationError::NoCommonCodec { offered: vec![] };
        assert_eq!((no_codec.sip_status(), no_codec.warning_code()), (488, 305));
        let proto = NegotiationError::UnsupportedProto { protos: vec![] };
        assert_eq!((proto.sip_status(), proto.warning_code()), (488, 302));
        assert_eq!(NegotiationError::NoAudio.warning_code(), 304);
        assert_eq!(NegotiationError::NoPendingOffer.sip_status(), 500);
    }
}
