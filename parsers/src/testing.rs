//! Test doubles for the [`Parser`] contract: drive a parser over a stream the
//! way the mux does (the message start fixed, the available bytes growing) and
//! report the message lengths. Used by this crate's tests, the fuzz targets,
//! and reusable by the mux's tests.
//!
//! Contract violations (`NeedMore(n)` with `n <= buf.len()`, `Message(0)`,
//! `Message(len > max_message())`) panic: they are bugs in the parser, and the
//! fuzzer should report them.

use crate::contract::{Parse, ParseError, Parser};

/// Delineate `bytes` with everything available at once. Returns the lengths
/// of the complete messages; trailing bytes of an incomplete message are left
/// (the mux would wait for more).
pub fn split_stream<P: Parser + ?Sized>(parser: &mut P, bytes: &[u8]) -> Result<Vec<usize>, ParseError> {
    split_chunks(parser, bytes, &[])
}

/// Delineate `bytes` as if they arrived in pieces ending at each of `cuts`
/// (absolute offsets, any order; `bytes.len()` is always the last). Honours
/// the `NeedMore(n)` hint and the early `Message(len)` exactly like the mux:
/// no call is made until the promised number of bytes is there.
pub fn split_chunks<P: Parser + ?Sized>(
    parser: &mut P,
    bytes: &[u8],
    cuts: &[usize],
) -> Result<Vec<usize>, ParseError> {
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    ends.dedup();

    parser.new_stream();
    let mut out = Vec::new();
    let mut start = 0usize;
    // Bytes (from `start`) the parser asked for, or the known message length.
    let mut need = 0usize;
    let mut known_len: Option<usize> = None;
    for avail in ends {
        loop {
            let have = avail - start;
            if have == 0 || have < need {
                break;
            }
            if let Some(len) = known_len {
                if have < len {
                    break;
                }
                out.push(len);
                start += len;
                known_len = None;
                need = 0;
                parser.reset();
                continue;
            }
            match parser.parse(&bytes[start..avail])? {
                Parse::NeedMore(n) => {
                    assert!(n > have, "{}: NeedMore({n}) with {have} bytes buffered", parser.name());
                    need = n;
                }
                Parse::Message(len) => {
                    assert!(len >= 1, "{}: Message(0)", parser.name());
                    assert!(
                        len <= parser.max_message(),
                        "{}: Message({len}) over max {}",
                        parser.name(),
                        parser.max_message()
                    );
                    known_len = Some(len);
                }
            }
        }
    }
    Ok(out)
}

/// Delineate `bytes` fed one byte at a time: every split point of the stream
/// is presented to the parser.
pub fn split_bytewise<P: Parser + ?Sized>(parser: &mut P, bytes: &[u8]) -> Result<Vec<usize>, ParseError> {
    let cuts: Vec<usize> = (1..bytes.len()).collect();
    split_chunks(parser, bytes, &cuts)
}

/// Check that `parser` recovers exactly `lens` from the concatenation of the
/// messages, fed all at once, byte by byte, and split at `cuts`. Panics with
/// the way of feeding that failed.
pub fn assert_boundaries<P: Parser + ?Sized>(parser: &mut P, stream: &[u8], lens: &[usize], cuts: &[usize]) {
    let whole = split_stream(parser, stream);
    assert_eq!(whole.as_deref(), Ok(lens), "{}: whole stream", parser.name());
    let bytewise = split_bytewise(parser, stream);
    assert_eq!(bytewise.as_deref(), Ok(lens), "{}: byte by byte", parser.name());
    let chunked = split_chunks(parser, stream, cuts);
    assert_eq!(chunked.as_deref(), Ok(lens), "{}: cuts {cuts:?}", parser.name());
}

/// Concatenate messages into one stream, returning it with their lengths.
pub fn concat(msgs: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
    let mut stream = Vec::new();
    let mut lens = Vec::new();
    for m in msgs {
        stream.extend_from_slice(m);
        lens.push(m.len());
    }
    (stream, lens)
}

/// For fuzz targets: delineate `bytes` whole and in pieces (cut points taken
/// from the bytes themselves) and, where both succeed, demand the same
/// boundaries. Panics on a contract violation or a disagreement.
pub fn fuzz_splits<P: Parser + ?Sized>(parser: &mut P, bytes: &[u8]) {
    let whole = split_stream(parser, bytes);
    let cuts: Vec<usize> = bytes.iter().step_by(7).map(|&b| b as usize * 3).collect();
    let chunked = split_chunks(parser, bytes, &cuts);
    if let (Ok(a), Ok(b)) = (&whole, &chunked) {
        assert_eq!(a, b, "{}: whole vs chunked at {cuts:?}", parser.name());
    }
    if let Ok(a) = &whole {
        assert!(a.iter().sum::<usize>() <= bytes.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One-byte length prefix counting itself; a length of 0 is an error.
    struct Tiny;
    impl Parser for Tiny {
        fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
            match buf.first() {
                None => Ok(Parse::NeedMore(1)),
                Some(0) => Err(ParseError::Malformed("zero")),
                Some(&n) => Ok(Parse::Message(n as usize)),
            }
        }
        fn max_message(&self) -> usize {
            255
        }
        fn name(&self) -> &'static str {
            "tiny"
        }
    }

    #[test]
    fn harness_splits_and_leaves_incomplete_tail() {
        let stream = [2, 9, 3, 9, 9, 4, 9];
        assert_eq!(split_stream(&mut Tiny, &stream), Ok(vec![2, 3]));
        assert_eq!(split_bytewise(&mut Tiny, &stream), Ok(vec![2, 3]));
        assert_eq!(split_chunks(&mut Tiny, &stream, &[1, 4]), Ok(vec![2, 3]));
        assert_eq!(split_stream(&mut Tiny, &[1, 0]), Err(ParseError::Malformed("zero")));
    }

    #[test]
    #[should_panic(expected = "NeedMore")]
    fn harness_catches_contract_violation() {
        struct Liar;
        impl Parser for Liar {
            fn parse(&mut self, buf: &[u8]) -> Result<Parse, ParseError> {
                Ok(Parse::NeedMore(buf.len()))
            }
            fn max_message(&self) -> usize {
                1
            }
            fn name(&self) -> &'static str {
                "liar"
            }
        }
        let _ = split_stream(&mut Liar, &[1, 2]);
    }
}
