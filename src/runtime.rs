//! What every task of the running server shares.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use dashmap::DashMap;
use serde::Serialize;
use voxtrunk_sip::endpoint::LegId;

use crate::agent::runtime::AgentRuntime;
use crate::config::Config;
use crate::inference::Inference;
use crate::net::RtpPorts;

/// The current time for the sans-IO cores. Read through tokio so that
/// tests on tokio's paused clock drive the cores on virtual time too.
pub fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// A live call, as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct CallInfo {
    /// Leg id.
    pub leg: u64,
    /// SIP Call-ID.
    pub call_id: String,
    /// Dialplan route.
    pub route: String,
    /// Application.
    pub app: &'static str,
    /// From URI.
    pub from: String,
    /// To URI.
    pub to: String,
    /// Signalling source.
    pub source: String,
    /// Negotiated codec, once known.
    pub codec: Option<String>,
    /// Seconds since the Unix epoch when the call was answered.
    pub started_unix: u64,
    /// Media statistics, refreshed every second.
    pub media: Option<CallMediaStats>,
}

/// A call's media statistics as the admin API shows them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CallMediaStats {
    /// Audio packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Packets the peer's sequence numbers say we lost (RTCP, RFC 3550 A.3).
    pub lost: i64,
    /// Interarrival jitter of the peer's stream, ms (RFC 3550 A.8).
    pub jitter_ms: f64,
    /// Round-trip time from the peer's RTCP reports, ms.
    pub rtt_ms: Option<f64>,
    /// Loss of our stream as the peer reports it (0–1).
    pub remote_fraction_lost: Option<f32>,
    /// Jitter-buffer depth and target, frames.
    pub jitter_buffer_frames: usize,
    /// Target depth, frames.
    pub jitter_buffer_target: usize,
    /// Frames concealed (loss, underrun).
    pub concealed_frames: u64,
    /// DTMF digits received over RTP.
    pub dtmf_received: u64,
}

impl CallMediaStats {
    /// A snapshot of a media session.
    pub fn from_session(m: &voxtrunk_media::session::MediaSession) -> Self {
        let s = m.stats();
        let r = m.rtcp_stats().unwrap_or_default();
        CallMediaStats {
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            lost: r.packets_lost,
            jitter_ms: r.jitter_ms,
            rtt_ms: r.rtt.map(|d| d.as_secs_f64() * 1000.0),
            remote_fraction_lost: r.remote_fraction_lost,
            jitter_buffer_frames: s.jitter_depth_frames,
            jitter_buffer_target: s.jitter_target_frames,
            concealed_frames: s.concealed_frames,
            dtmf_received: s.dtmf_received,
        }
    }
}

/// State shared with the admin API.
#[derive(Debug, Default)]
pub struct Shared {
    /// Live calls.
    pub calls: DashMap<LegId, CallInfo>,
    /// Set once shutdown began.
    pub draining: AtomicBool,
    /// Agent calls up (kept by the signalling task).
    pub agent_calls: AtomicUsize,
}

/// The server's resolved settings and shared resources.
#[derive(Debug)]
pub struct Runtime {
    /// The configuration.
    pub config: Config,
    /// Address written in Via/Contact.
    pub sip_advertise: IpAddr,
    /// Address written in SDP `c=`.
    pub rtp_advertise: IpAddr,
    /// RTP port pool.
    pub ports: Arc<RtpPorts>,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The agents of the dialplan, by definition file, built at start.
    pub agents: HashMap<PathBuf, Arc<AgentRuntime>>,
    /// The inference pools every agent shares.
    pub inference: Inference,
}

/// The address to advertise for a listen address: itself, or when it is
/// unspecified (0.0.0.0 / ::) the address of the interface that holds the
/// default route, found without sending anything; loopback as last resort.
pub fn advertise_for(listen: IpAddr) -> IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    let probe = |bind: &str, target: &str| {
        let s = UdpSocket::bind(bind).ok()?;
        s.connect(target).ok()?;
        s.local_addr().ok().map(|a: SocketAddr| a.ip())
    };
    let found = if listen.is_ipv4() {
        probe("0.0.0.0:0", "192.0.2.1:9")
    } else {
        probe("[::]:0", "[2001:db8::1]:9")
    };
    found.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}
