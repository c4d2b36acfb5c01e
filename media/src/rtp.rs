//! RTP packets (RFC 3550 §5.1) and the newtypes for their fields.
//!
//! Written here rather than taken from `rtc-rtp`: that crate's shared
//! dependency brings URL/IDNA/ICU and `nix` into a library that only needs
//! to read and write a 12-byte header, and the legacy `rtp` crate is the
//! tokio-bound line. Parsing borrows the payload from the datagram.

use std::fmt;

/// Synchronisation source identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// RTP sequence number (wraps at 2^16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqNo(pub u16);

impl SeqNo {
    /// The next sequence number.
    pub fn next(self) -> SeqNo {
        SeqNo(self.0.wrapping_add(1))
    }

    /// Signed distance from `self` to `other` in sequence space
    /// (positive when `other` is newer), valid within ±2^15.
    pub fn delta(self, other: SeqNo) -> i32 {
        i32::from(other.0.wrapping_sub(self.0) as i16)
    }
}

/// RTP timestamp in units of the payload's clock rate (wraps at 2^32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaTime(pub u32);

impl MediaTime {
    /// Advances by `ticks` clock units.
    pub fn advance(self, ticks: u32) -> MediaTime {
        MediaTime(self.0.wrapping_add(ticks))
    }

    /// Signed distance from `self` to `other` (positive when later).
    pub fn delta(self, other: MediaTime) -> i64 {
        i64::from(other.0.wrapping_sub(self.0) as i32)
    }
}

/// Why a datagram is not an RTP packet we can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Shorter than the fixed header, CSRC list or extension it declares.
    #[error("packet truncated")]
    Truncated,
    /// Version field is not 2.
    #[error("RTP version {0} is not 2")]
    Version(u8),
    /// Padding length larger than the payload.
    #[error("invalid padding")]
    Padding,
    /// Payload type 72–76 collides with RTCP (RFC 5761 §4): an RTCP packet.
    #[error("an RTCP packet, not RTP")]
    Rtcp,
}

/// A parsed RTP packet borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// Marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub seq: SeqNo,
    /// Timestamp.
    pub timestamp: MediaTime,
    /// SSRC.
    pub ssrc: Ssrc,
    /// The payload, padding removed.
    pub payload: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses a datagram; skips CSRCs and a header extension.
    pub fn parse(b: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        if b.len() < 12 {
            return Err(RtpError::Truncated);
        }
        let version = b[0] >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let pt = b[1] & 0x7f;
        if (72..=76).contains(&pt) {
            return Err(RtpError::Rtcp);
        }
        let csrc = usize::from(b[0] & 0x0f);
        let mut start = 12 + 4 * csrc;
        if b.len() < start {
            return Err(RtpError::Truncated);
        }
        if b[0] & 0x10 != 0 {
            let ext = b.get(start + 2..start + 4).ok_or(RtpError::Truncated)?;
            start += 4 + 4 * usize::from(u16::from_be_bytes([ext[0], ext[1]]));
            if b.len() < start {
                return Err(RtpError::Truncated);
            }
        }
        let mut end = b.len();
        if b[0] & 0x20 != 0 {
            let pad = usize::from(b[end - 1]);
            if pad == 0 || pad > end - start {
                return Err(RtpError::Padding);
            }
            end -= pad;
        }
        Ok(RtpPacket {
            marker: b[1] & 0x80 != 0,
            payload_type: pt,
            seq: SeqNo(u16::from_be_bytes([b[2], b[3]])),
            timestamp: MediaTime(u32::from_be_bytes([b[4], b[5], b[6], b[7]])),
            ssrc: Ssrc(u32::from_be_bytes([b[8], b[9], b[10], b[11]])),
            payload: &b[start..end],
        })
    }

    /// Writes the packet (no CSRC, no extension, no padding) into `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.reserve(12 + self.payload.len());
        out.push(0x80);
        out.push(u8::from(self.marker) << 7 | (self.payload_type & 0x7f));
        out.extend_from_slice(&self.seq.0.to_be_bytes());
        out.extend_from_slice(&self.timestamp.0.to_be_bytes());
        out.extend_from_slice(&self.ssrc.0.to_be_bytes());
        out.extend_from_slice(self.payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = RtpPacket {
            marker: true,
            payload_type: 0,
            seq: SeqNo(65535),
            timestamp: MediaTime(0xdead_beef),
            ssrc: Ssrc(0x1234_5678),
            payload: &[1, 2, 3],
        };
        let mut b = Vec::new();
        p.write(&mut b);
        assert_eq!(b.len(), 15);
        assert_eq!(RtpPacket::parse(&b).unwrap(), p);
    }

    #[test]
    fn csrc_extension_and_padding_are_skipped() {
        let mut b = vec![0x80 | 0x20 | 0x10 | 0x01, 8, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9];
        b.extend_from_slice(&[0, 0, 0, 7]); // one CSRC
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 1, 2, 3, 4]); // extension, 1 word
        b.extend_from_slice(&[0xaa, 0xbb]); // payload
        b.extend_from_slice(&[0, 2]); // padding of 2
        let p = RtpPacket::parse(&b).unwrap();
        assert_eq!(p.payload, &[0xaa, 0xbb]);
        assert_eq!(p.payload_type, 8);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(RtpPacket::parse(&[0x80; 5]), Err(RtpError::Truncated));
        assert_eq!(RtpPacket::parse(&[0x40; 12]), Err(RtpError::Version(1)));
        let mut rtcp = vec![0x80, 200];
        rtcp.extend_from_slice(&[0; 10]);
        assert_eq!(RtpPacket::parse(&rtcp), Err(RtpError::Rtcp));
        let mut pad = vec![0xa0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 50];
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::Padding));
        pad[13] = 0;
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::Padding));
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..10_000 {
            let v: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
            let _ = RtpPacket::parse(&v);
        }
    }

    #[test]
    fn sequence_and_time_arithmetic_wraps() {
        assert_eq!(SeqNo(65535).next(), SeqNo(0));
        assert_eq!(SeqNo(65535).delta(SeqNo(2)), 3);
        assert_eq!(SeqNo(2).delta(SeqNo(65535)), -3);
        assert_eq!(MediaTime(u32::MAX - 79).advance(160), MediaTime(80));
        assert_eq!(MediaTime(u32::MAX - 79).delta(MediaTime(80)), 160);
    }
}
