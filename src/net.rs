//! Sockets: the SIP UDP socket and TCP listener on one address, TCP
//! connection tasks, and the RTP port pool.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use voxtrunk_sip::msg::{Framed, StreamFramer};

/// The SIP listening sockets.
pub struct SipSockets {
    /// UDP socket.
    pub udp: UdpSocket,
    /// TCP listener on the same address and port.
    pub tcp: TcpListener,
    /// The bound address (with the real port when 0 was asked for).
    pub local: SocketAddr,
}

/// Binds UDP and TCP on the same address. With port 0 the kernel picks a
/// UDP port and TCP is bound to the same number (retried if it is taken).
pub async fn bind_sip(addr: SocketAddr) -> io::Result<SipSockets> {
    let mut last_err = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await?;
        let local = udp.local_addr()?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok(SipSockets { udp, tcp, local }),
            Err(e) if addr.port() == 0 => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// What connection tasks tell the signalling task.
#[derive(Debug)]
pub enum StreamInput {
    /// An accepted connection and the sender that writes to it.
    Opened(SocketAddr, mpsc::Sender<Vec<u8>>),
    /// A framed item from a peer.
    Item(SocketAddr, Framed),
    /// The connection to this peer is gone.
    Closed(SocketAddr),
}

/// Bytes queued per TCP connection before new writes are dropped.
const WRITE_QUEUE: usize = 256;

/// Runs one TCP connection: frames what it reads into `input`, writes what
/// arrives on the returned sender. Closes on framing errors (RFC 4475
/// §3.1.2.3), when a partial message stalls for `partial_timeout`, and after
/// `idle` without traffic.
pub fn spawn_connection(
    stream: TcpStream,
    peer: SocketAddr,
    input: mpsc::Sender<StreamInput>,
    max_message: usize,
    idle: Duration,
) -> mpsc::Sender<Vec<u8>> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    tokio::spawn(run_connection(stream, peer, input, rx, max_message, idle));
    tx
}

/// Connects to `peer` and then runs it like an accepted connection; what is
/// written before the connection is up waits in the queue.
pub fn spawn_outbound(
    peer: SocketAddr,
    input: mpsc::Sender<StreamInput>,
    max_message: usize,
    idle: Duration,
) -> mpsc::Sender<Vec<u8>> {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    tokio::spawn(async move {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(peer)).await {
            Ok(Ok(stream)) => run_connection(stream, peer, input, rx, max_message, idle).await,
            _ => {
                tracing::warn!(%peer, "TCP connect failed");
                let _ = input.send(StreamInput::Closed(peer)).await;
            }
        }
    });
    tx
}

/// How long an incomplete message may wait for the rest of its bytes.
const PARTIAL_TIMEOUT: Duration = Duration::from_secs(32);

async fn run_connection(
    stream: TcpStream,
    peer: SocketAddr,
    input: mpsc::Sender<StreamInput>,
    mut writes: mpsc::Receiver<Vec<u8>>,
    max_message: usize,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let mut framer = StreamFramer::new(max_message);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let wait = if framer.pending() > 0 {
            PARTIAL_TIMEOUT
        } else {
            idle
        };
        tokio::select! {
            r = tokio::time::timeout(wait, rd.read(&mut buf)) => {
                let n = match r {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::debug!(%peer, pending = framer.pending(), "TCP read timeout, closing");
                        break;
                    }
                    Ok(Ok(n)) => n,
                };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_item() {
                        Ok(Some(item)) => {
                            if input.send(StreamInput::Item(peer, item)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(%peer, error = %e, "closing TCP connection: framing cannot be recovered");
                            let _ = input.send(StreamInput::Closed(peer)).await;
                            return;
                        }
                    }
                }
            }
            w = writes.recv() => match w {
                Some(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
    }
    let _ = input.send(StreamInput::Closed(peer)).await;
}

/// The pool of even RTP ports (RTCP on the odd port above).
#[derive(Debug)]
pub struct RtpPorts {
    ip: IpAddr,
    free: Mutex<VecDeque<u16>>,
}

/// An allocated RTP/RTCP pair; the ports go back to the pool on drop.
#[derive(Debug)]
pub struct RtpLease {
    /// The RTP port.
    pub port: u16,
    /// RTP socket.
    pub rtp: StdUdpSocket,
    /// RTCP socket (RTP port + 1).
    pub rtcp: StdUdpSocket,
    pool: Arc<RtpPorts>,
}

impl Drop for RtpLease {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.free.lock() {
            free.push_back(self.port);
        }
    }
}

impl RtpPorts {
    /// A pool over the even ports of `low..=high`.
    pub fn new(ip: IpAddr, low: u16, high: u16) -> Arc<Self> {
        let first = low + low % 2;
        Arc::new(RtpPorts {
            ip,
            free: Mutex::new((first..high).step_by(2).collect()),
        })
    }

    /// Ports still free.
    pub fn available(&self) -> usize {
        self.free.lock().map_or(0, |f| f.len())
    }

    /// Binds the next free pair; ports another program holds are skipped
    /// (and returned to the back of the pool).
    pub fn allocate(self: &Arc<Self>) -> Option<RtpLease> {
        let mut free = self.free.lock().ok()?;
        for _ in 0..free.len() {
            let port = free.pop_front()?;
            let rtp = StdUdpSocket::bind((self.ip, port));
            let rtcp = StdUdpSocket::bind((self.ip, port + 1));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp))
                    if rtp.set_nonblocking(true).is_ok() && rtcp.set_nonblocking(true).is_ok() =>
                {
                    return Some(RtpLease {
                        port,
                        rtp,
                        rtcp,
                        pool: Arc::clone(self),
                    });
                }
                _ => free.push_back(port),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_return_to_the_pool() {
        let pool = RtpPorts::new("127.0.0.1".parse().unwrap(), 41000, 41007);
        assert_eq!(pool.available(), 4);
        let a = pool.allocate().unwrap();
        assert_eq!(a.port % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.port + 1);
        assert_eq!(pool.available(), 3);
        drop(a);
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn busy_ports_are_skipped() {
        let hold = StdUdpSocket::bind("127.0.0.1:41100").unwrap();
        let pool = RtpPorts::new("127.0.0.1".parse().unwrap(), 41100, 41103);
        let a = pool.allocate().unwrap();
        assert_eq!(a.port, 41102);
        assert!(pool.allocate().is_none());
        drop(hold);
    }
}
