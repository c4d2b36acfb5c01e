//! Handing an agent call to a person.
//!
//! When the agent escalates, the call task asks the caller's side to
//! transfer the call with REFER (RFC 3515) and follows the NOTIFYs. A 2xx
//! in a NOTIFY means the caller's side now talks to the person: the agent
//! hangs up. When the REFER is refused (405, 501, 603...), times out, or a
//! NOTIFY reports that the transfer failed, the agent calls the person
//! itself on a second leg and relays the media between both legs through
//! two media sessions (decoded to 16 kHz and encoded again, so the legs
//! may use different codecs). When the person cannot be reached either,
//! the agent takes the call back and says so.
//!
//! [`Transfer`] is the state of that hand-over; the call task drives it
//! with the signals of both legs and its deadline.

use tokio::net::UdpSocket;
use tokio::time::Instant as TokioInstant;
use voxtrunk_media::rtp::Ssrc;
use voxtrunk_media::session::MediaSession;
use voxtrunk_sip::endpoint::LegId;
use voxtrunk_sip::sdp::SdpSession;

use crate::net::RtpLease;

/// The second leg's media: its ports, its SDP state and, once the person
/// answered, its media session.
pub struct Relay {
    /// The leased port pair, held for the leg's life (returned to the
    /// pool when dropped).
    pub _lease: RtpLease,
    /// RTP socket of the second leg.
    pub rtp: UdpSocket,
    /// RTCP socket of the second leg.
    pub rtcp: Option<UdpSocket>,
    /// Offer/answer state of the second leg.
    pub sdp: SdpSession,
    /// Our SSRC towards the person.
    pub ssrc: Ssrc,
    /// Up once the person answered.
    pub media: Option<MediaSession>,
    /// The second leg hung up (RTP inactivity) and was told to.
    pub hung_up: bool,
}

impl Relay {
    /// Moves one direction's decoded frames into the other's playout. A
    /// full playout queue (200 ms) drops the frame: delay stays bounded.
    /// Returns how many frames with sound (not silence) went each way:
    /// caller → person, person → caller.
    pub fn exchange(caller: &mut MediaSession, person: &mut MediaSession) -> (u64, u64) {
        let mut moved = (0, 0);
        while let Some(f) = caller.pop_frame() {
            if person.push_audio(&f) == f.len() && audible(&f) {
                moved.0 += 1;
            }
        }
        while let Some(f) = person.pop_frame() {
            if caller.push_audio(&f) == f.len() && audible(&f) {
                moved.1 += 1;
            }
        }
        moved
    }
}

/// Where the hand-over stands.
pub enum Transfer {
    /// REFER sent to the caller's side.
    Referring {
        /// When to give up waiting and bridge instead.
        deadline: TokioInstant,
        /// The REFER got a 2xx.
        accepted: bool,
    },
    /// The person is being called on a second leg.
    Dialing {
        /// The second leg, once the signalling task created it.
        leg: Option<LegId>,
        /// Its media.
        relay: Box<Relay>,
        /// How long it may ring.
        deadline: TokioInstant,
    },
    /// Both legs are up and media is relayed.
    Bridged {
        /// The second leg.
        leg: LegId,
        /// Its media.
        relay: Box<Relay>,
        /// Frames relayed caller → person and person → caller.
        frames: (u64, u64),
    },
}

impl Transfer {
    /// The deadline to wake up for, if any.
    pub fn deadline(&self) -> Option<TokioInstant> {
        match self {
            Transfer::Referring { deadline, .. } | Transfer::Dialing { deadline, .. } => {
                Some(*deadline)
            }
            Transfer::Bridged { .. } => None,
        }
    }

    /// The second leg's media session, when bridged.
    pub fn relay_mut(&mut self) -> Option<&mut Relay> {
        match self {
            Transfer::Bridged { relay, .. } => Some(relay),
            _ => None,
        }
    }

    /// The second leg's RTP and RTCP sockets, when bridged.
    pub fn sockets(&self) -> (Option<&UdpSocket>, Option<&UdpSocket>) {
        match self {
            Transfer::Bridged { relay, .. } => (Some(&relay.rtp), relay.rtcp.as_ref()),
            _ => (None, None),
        }
    }
}

/// A frame louder than about -50 dBFS somewhere.
fn audible(frame: &[i16]) -> bool {
    frame.iter().any(|&s| s.unsigned_abs() > 100)
}
