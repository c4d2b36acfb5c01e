//! What every task of the running server shares.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use dashmap::DashMap;
use serde::Serialize;
use voxtrunk_sip::endpoint::LegId;

use crate::config::Config;
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
}

/// State shared with the admin API.
#[derive(Debug, Default)]
pub struct Shared {
    /// Live calls.
    pub calls: DashMap<LegId, CallInfo>,
    /// Set once shutdown began.
    pub draining: AtomicBool,
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
