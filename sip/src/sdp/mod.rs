//! SDP parsing, printing and offer/answer for a single audio stream.
//!
//! * [`parse`] reads a session description as defined by RFC 8866 (which
//!   obsoletes RFC 4566) into a [`SessionDescription`]; its `Display` prints
//!   it back with CRLF line ends in the RFC 8866 §5 order.
//! * [`SdpSession`] runs the RFC 3264 offer/answer model for one dialog:
//!   it answers offers (§6) and makes offers (§5) for the audio codecs in
//!   [`AudioCodec`], keeps the `o=` line stable and bumps its version only when
//!   the local description changes (§8).
//!
//! Payload types follow RFC 3551 (static 0 PCMU, 8 PCMA, 9 G722 with an RTP
//! clock of 8000 although G.722 samples at 16 kHz), Opus follows RFC 7587
//! (`opus/48000/2`, dynamic payload type) and DTMF follows RFC 4733
//! (`telephone-event`, dynamic payload type, events `0-16`).
//!
//! The parser is deliberately tolerant where peers are known to deviate
//! (RFC 5118 lists several): bare LF line ends, an empty `s=`, IPv6 addresses
//! written with brackets, unknown line types and attributes (skipped or kept,
//! although RFC 8866 §5 says a parser should ignore the whole description),
//! and `o=`/`c=`/`b=`/`t=` lines in any order. It rejects only what leaves the
//! session unusable, and every [`SdpError`] names the 1-based line at fault.
//!
//! Error `Display` texts are ASCII without double quotes or backslashes so the
//! server can put them verbatim into `Warning: 399 host "..."` (RFC 3261
//! §20.43); any text taken from the peer is sanitised before it gets there.
#![warn(missing_docs)]

mod model;
mod negotiate;
mod parse;

#[cfg(test)]
mod golden_tests;

pub use model::{
    AddrType, Attribute, Bandwidth, Connection, ConnectionAddress, Direction, MediaDescription,
    Origin, RtpMap, SessionDescription, Timing,
};
pub use negotiate::{
    Answer, AudioCodec, CodecPreference, LocalMedia, NegotiatedAudio, NegotiationError, SdpSession,
    TelephoneEvent,
};
pub use parse::{SdpError, parse};

/// Makes peer-supplied text safe for an error message that ends up inside a
/// SIP quoted-string: printable ASCII only, no `"` or `\`, bounded length.
fn printable(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    let mut out: String = text
        .chars()
        .take(MAX_CHARS)
        .map(|c| match c {
            '"' | '\\' => '?',
            ' ' => ' ',
            c if c.is_ascii_graphic() => c,
            _ => '?',
        })
        .collect();
    if text.chars().nth(MAX_CHARS).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_strips_quotes_controls_and_non_ascii() {
        assert_eq!(printable("a\"b\\c\r\nd\u{e9}"), "a?b?c??d?");
        let long = "x".repeat(100);
        assert_eq!(printable(&long), format!("{}...", "x".repeat(40)));
    }
}
