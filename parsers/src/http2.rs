//! HTTP/2 frames (RFC 9113 4.1): 24-bit BE payload length, type, flags,
//! stream id, payload. The 24-byte client connection preface is delineated as
//! a message of its own, and only as the first bytes of a stream: anywhere
//! else its bytes read as a frame header with a ~5 MB length, which the frame
//! size limit rejects.

use crate::contract::{checked_len, Parse, ParseError, Parser};

/// Frame header size.
pub const HEADER: usize = 9;
/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// SETTINGS_MAX_FRAME_SIZE's initial value.
pub const DEFAULT_MAX_FRAME: usize = 1 << 14;
/// The largest SETTINGS_MAX_FRAME_SIZE a peer may announce.
pub const PROTOCOL_MAX_FRAME: usize = (1 << 24) - 1;

/// HTTP/2 frame parser, with the preface rule.
#[derive(Debug, Clone)]
pub struct Http2 {
    max_payload: usize,
    at_stream_start: bool,
}

impl Http2 {
    /// Frames up to the initial SETTINGS_MAX_FRAME_SIZE (16 KiB payload).
    pub fn new() -> Self {
        Http2 { max_payload: DEFAULT_MAX_FRAME, at_stream_start: true }
    }

    /// Accept payloads up to `max` (the SETTINGS_MAX_FRAME_SIZE our side
    /// announced), capped at the protocol's 2^24 - 1.
    pub fn max_frame_size(mut self, max: usize) -> Self {
        self.max_payload = max.min(PROTOCOL_MAX_FRAME);
        self
    }
}

impl Default for Http2 {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser for Http2 {
    #[inline]
    fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
        if self.at_stream_start {
            let n = buf.len().min(PREFACE.len());
            if buf[..n] == PREFACE[..n] {
                return Ok(if n < PREFACE.len() {
                    Parse::NeedMore(PREFACE.len())
                } else {
                    Parse::Message(PREFACE.len())
                });
            }
        }
        let Some(h) = buf.get(..HEADER) else {
            return Ok(Parse::NeedMore(HEADER));
        };
        let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as u64;
        checked_len(HEADER as u64 + len, HEADER + self.max_payload)
    }

    /// The preface can only come first: after any message, it is over.
    fn reset(&mut self) {
        self.at_stream_start = false;
    }

    fn new_stream(&mut self) {
        self.at_stream_start = true;
    }

    fn max_message(&self) -> usize {
        HEADER + self.max_payload
    }

    fn name(&self) -> &'static str {
        "http2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_boundaries, concat, split_stream};
    use proptest::prelude::*;

    /// Empty SETTINGS frame.
    static SETTINGS: [u8; 9] = [0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00];
    /// SETTINGS with MAX_CONCURRENT_STREAMS = 100.
    static SETTINGS_MCS: [u8; 15] =
        [0x00, 0x00, 0x06, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x64];
    /// SETTINGS ACK.
    static SETTINGS_ACK: [u8; 9] = [0x00, 0x00, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00];
    /// WINDOW_UPDATE on stream 0, increment 0x0fff0001.
    static WINDOW_UPDATE: [u8; 13] = [0x00, 0x00, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0f, 0xff, 0x00, 0x01];

    #[test]
    fn client_stream_starts_with_preface() {
        let (stream, lens) =
            concat(&[PREFACE.to_vec(), SETTINGS_MCS.to_vec(), WINDOW_UPDATE.to_vec(), SETTINGS_ACK.to_vec()]);
        assert_eq!(lens, vec![24, 15, 13, 9]);
        assert_boundaries(&mut Http2::new(), &stream, &lens, &[5, 24, 30]);
        assert_eq!(Http2::new().parse(&PREFACE[..3]), Ok(Parse::NeedMore(24)));
    }

    #[test]
    fn server_stream_has_no_preface() {
        let (stream, lens) = concat(&[SETTINGS.to_vec(), SETTINGS_ACK.to_vec()]);
        assert_boundaries(&mut Http2::new(), &stream, &lens, &[1]);
    }

    #[test]
    fn preface_only_at_stream_start() {
        let (stream, _) = concat(&[SETTINGS.to_vec(), PREFACE.to_vec()]);
        // "PRI" read as a 24-bit length: 0x505249 bytes, over the limit.
        assert_eq!(
            split_stream(&mut Http2::new(), &stream),
            Err(ParseError::TooLarge { len: 0x50_5249 + 9, max: (HEADER + DEFAULT_MAX_FRAME) as u64 })
        );
        let mut p = Http2::new();
        p.reset();
        assert!(p.parse(PREFACE).is_err());
        p.new_stream();
        assert_eq!(p.parse(PREFACE), Ok(Parse::Message(24)));
    }

    #[test]
    fn frame_size_limits() {
        let big = [0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
        assert!(matches!(Http2::new().parse(&big), Err(ParseError::TooLarge { .. })));
        let mut p = Http2::new().max_frame_size(usize::MAX);
        assert_eq!(p.parse(&big), Ok(Parse::Message(HEADER + PROTOCOL_MAX_FRAME)));
    }

    proptest! {
        #[test]
        fn every_split(preface in any::<bool>(),
                       frames in prop::collection::vec((any::<u8>(), any::<u8>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..50)), 1..6),
                       cuts in prop::collection::vec(0usize..400, 0..8)) {
            let mut msgs = Vec::new();
            if preface {
                msgs.push(PREFACE.to_vec());
            }
            for (ty, flags, sid, payload) in &frames {
                let l = (payload.len() as u32).to_be_bytes();
                let mut v = vec![l[1], l[2], l[3], *ty, *flags];
                v.extend_from_slice(&sid.to_be_bytes());
                v.extend_from_slice(payload);
                msgs.push(v);
            }
            let (stream, lens) = concat(&msgs);
            assert_boundaries(&mut Http2::new(), &stream, &lens, &cuts);
        }
    }
}
