//! Parsers from CLI strings, e.g. `thrift`, `mqtt,max=65536`,
//! `lenfield:offset=0,width=4,endian=big,adjust=4,includes_header=true`,
//! `bpf:/path/prog.o`.
//!
//! Grammar: `NAME[:OPTIONS]` where OPTIONS is `key=value,...`. Every parser
//! takes `max=N` (bytes); `lenfield` takes `offset`, `width` (1,2,3,4,8),
//! `endian` (big|little), `adjust` (signed), `includes_header`, `signed`;
//! `http2` takes `max_frame`; `resp` takes `depth` and `inline` (true: accept inline
//! commands, for request streams); `http1` takes `max_head`; `memcache-text` (requests),
//! `memcache-text-reply` and `memcache` (requests, text or binary per message) take `line`
//! (longest text line).
//! `bpf:FILE` runs the program under the JIT where available,
//! `bpf-interp:FILE` under the interpreter; FILE is an ELF object or raw
//! instructions. The whole text after `bpf:` is the path.

use std::sync::Arc;

use crate::bpf::{BpfLoadError, BpfParser, BpfProgram, Exec};
use crate::contract::Parser;
use crate::http1::Http1;
use crate::http2::Http2;
use crate::lenfield::{Endian, Grpc, LengthField};
use crate::memcache_any::MemcacheAny;
use crate::memcache_text::MemcacheText;
use crate::memcached::Memcached;
use crate::mqtt::Mqtt;
use crate::resp::Resp;
use crate::tls::Tls;

/// Names accepted by [`parser_from_spec`].
pub const NAMES: &[&str] = &[
    "thrift",
    "lenfield",
    "memcached",
    "memcache",
    "memcache-text",
    "memcache-text-reply",
    "http2",
    "dns",
    "tls",
    "mqtt",
    "kafka",
    "grpc",
    "resp",
    "http1",
    "bpf",
    "bpf-interp",
];

/// Why a parser spec is unusable; the message says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// No parser by that name.
    UnknownParser(String),
    /// An option this parser does not take.
    UnknownOption { parser: &'static str, key: String },
    /// An option without `=value`.
    MissingValue(String),
    /// An option with a value that does not parse or is out of range.
    BadValue { key: String, value: String, expected: &'static str },
    /// A required option was not given.
    MissingOption { parser: &'static str, key: &'static str },
    /// The same option twice.
    Duplicate(String),
    /// The BPF program could not be loaded.
    Bpf(BpfLoadError),
}

impl core::fmt::Display for SpecError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::UnknownParser(n) => write!(f, "unknown parser {n:?}; expected one of: {}", NAMES.join(", ")),
            Self::UnknownOption { parser, key } => write!(f, "parser {parser} has no option {key:?}"),
            Self::MissingValue(k) => write!(f, "option {k:?} needs a value (key=value)"),
            Self::BadValue { key, value, expected } => write!(f, "option {key}={value:?}: expected {expected}"),
            Self::MissingOption { parser, key } => write!(f, "parser {parser} needs option {key}="),
            Self::Duplicate(k) => write!(f, "option {k:?} given twice"),
            Self::Bpf(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SpecError {}

struct Options<'a> {
    parser: &'static str,
    pairs: Vec<(&'a str, &'a str, bool)>,
}

impl<'a> Options<'a> {
    fn parse(parser: &'static str, text: &'a str) -> Result<Self, SpecError> {
        let mut pairs: Vec<(&str, &str, bool)> = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| SpecError::MissingValue(item.to_owned()))?;
            let (k, v) = (k.trim(), v.trim());
            if pairs.iter().any(|(pk, _, _)| *pk == k) {
                return Err(SpecError::Duplicate(k.to_owned()));
            }
            pairs.push((k, v, false));
        }
        Ok(Options { parser, pairs })
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        self.pairs.iter_mut().find(|(k, _, _)| *k == key).map(|p| {
            p.2 = true;
            p.1
        })
    }

    fn num<T: core::str::FromStr>(&mut self, key: &str, expected: &'static str) -> Result<Option<T>, SpecError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| SpecError::BadValue {
                key: key.to_owned(),
                value: v.to_owned(),
                expected,
            }),
        }
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, SpecError> {
        self.num(key, "true or false")
    }

    fn max(&mut self) -> Result<Option<usize>, SpecError> {
        match self.num::<usize>("max", "a positive number of bytes")? {
            Some(0) => Err(SpecError::BadValue {
                key: "max".into(),
                value: "0".into(),
                expected: "a positive number of bytes",
            }),
            m => Ok(m),
        }
    }

    /// Every option must have been used.
    fn finish(self) -> Result<(), SpecError> {
        match self.pairs.iter().find(|p| !p.2) {
            Some((k, _, _)) => Err(SpecError::UnknownOption { parser: self.parser, key: (*k).to_owned() }),
            None => Ok(()),
        }
    }
}

/// The length-field parser a spec names (`thrift`, `dns`, `kafka`, `lenfield:…`), or `None`
/// for other parsers: for tools that must write the same framing (load generators) or key
/// on the bytes after the header (steering), so the options are parsed in one place.
pub fn length_field_from_spec(spec: &str) -> Result<Option<LengthField>, SpecError> {
    parser_from_spec(spec)?; // every error, in the same words
    let spec = spec.trim();
    let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let name = name.trim();
    if !matches!(name, "thrift" | "dns" | "kafka" | "lenfield") {
        return Ok(None);
    }
    let canonical = NAMES.iter().copied().find(|n| *n == name).expect("checked above");
    let mut o = Options::parse(canonical, rest)?;
    let max = o.max()?;
    length_field(canonical, &mut o, max).map(Some)
}

fn length_field(canonical: &'static str, o: &mut Options<'_>, max: Option<usize>) -> Result<LengthField, SpecError> {
    let p = match canonical {
        "thrift" => LengthField::thrift(),
        "dns" => LengthField::dns(),
        "kafka" => LengthField::kafka(),
        _ => {
            let offset = o
                .num::<usize>("offset", "a byte offset")?
                .ok_or(SpecError::MissingOption { parser: "lenfield", key: "offset" })?;
            let width = o
                .num::<usize>("width", "1, 2, 3, 4 or 8")?
                .ok_or(SpecError::MissingOption { parser: "lenfield", key: "width" })?;
            let endian = match o.take("endian") {
                None => return Err(SpecError::MissingOption { parser: "lenfield", key: "endian" }),
                Some("big" | "be") => Endian::Big,
                Some("little" | "le") => Endian::Little,
                Some(v) => {
                    return Err(SpecError::BadValue {
                        key: "endian".into(),
                        value: v.into(),
                        expected: "big or little",
                    })
                }
            };
            let adjust = o.num::<i64>("adjust", "a signed number")?.unwrap_or(0);
            let incl = o.bool("includes_header")?.unwrap_or(false);
            let signed = o.bool("signed")?.unwrap_or(false);
            let p = LengthField::new(offset, width, endian).map_err(|e| SpecError::BadValue {
                key: "width".into(),
                value: width.to_string(),
                expected: match e {
                    crate::lenfield::LengthFieldConfigError::Width(_) => "1, 2, 3, 4 or 8",
                    crate::lenfield::LengthFieldConfigError::Offset => "a smaller offset",
                },
            })?;
            p.adjust(adjust).includes_header(incl).signed(signed)
        }
    };
    Ok(if let Some(m) = max { p.max(m) } else { p })
}

/// Build a parser from a CLI spec (see the module docs for the grammar).
pub fn parser_from_spec(spec: &str) -> Result<Box<dyn Parser>, SpecError> {
    let spec = spec.trim();
    let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let name = name.trim();
    if name == "bpf" || name == "bpf-interp" {
        if rest.is_empty() {
            return Err(SpecError::MissingOption { parser: "bpf", key: "FILE (bpf:FILE)" });
        }
        let exec = if name == "bpf" { Exec::best() } else { Exec::Interpreter };
        let prog = BpfProgram::from_file(std::path::Path::new(rest), exec).map_err(SpecError::Bpf)?;
        return Ok(Box::new(BpfParser::new(Arc::new(prog))));
    }
    let canonical =
        NAMES.iter().copied().find(|n| *n == name).ok_or_else(|| SpecError::UnknownParser(name.to_owned()))?;
    let mut o = Options::parse(canonical, rest)?;
    let max = o.max()?;
    let parser: Box<dyn Parser> = match canonical {
        "thrift" | "dns" | "kafka" | "lenfield" => Box::new(length_field(canonical, &mut o, max)?),
        "grpc" => Box::new(max.map_or_else(Grpc::new, |m| Grpc::new().max(m))),
        "memcached" => Box::new(max.map_or_else(Memcached::new, |m| Memcached::new().max(m))),
        "memcache-text" | "memcache-text-reply" => {
            let mut p = if canonical == "memcache-text" { MemcacheText::requests() } else { MemcacheText::replies() };
            if let Some(m) = max {
                p = p.max(m);
            }
            if let Some(l) = o.num::<usize>("line", "a line length in bytes")? {
                p = p.max_line(l);
            }
            Box::new(p)
        }
        "memcache" => {
            let mut p = max.map_or_else(MemcacheAny::new, |m| MemcacheAny::new().max(m));
            if let Some(l) = o.num::<usize>("line", "a line length in bytes")? {
                p = p.max_line(l);
            }
            Box::new(p)
        }
        "http2" => {
            let frame = o.num::<usize>("max_frame", "a frame payload size")?;
            if max.is_some() {
                return Err(SpecError::UnknownOption { parser: "http2", key: "max (use max_frame=)".into() });
            }
            Box::new(frame.map_or_else(Http2::new, |f| Http2::new().max_frame_size(f)))
        }
        "tls" => {
            if max.is_some() {
                return Err(SpecError::UnknownOption { parser: "tls", key: "max (fixed by the protocol)".into() });
            }
            Box::new(Tls::new())
        }
        "mqtt" => Box::new(max.map_or_else(Mqtt::new, |m| Mqtt::new().max(m))),
        "resp" => {
            let mut p = Resp::new();
            if let Some(d) = o.num::<usize>("depth", "a nesting depth (1..=128)")? {
                if d == 0 || d > crate::resp::MAX_DEPTH_CAP {
                    return Err(SpecError::BadValue { key: "depth".into(), value: d.to_string(), expected: "1..=128" });
                }
                p = p.max_depth(d);
            }
            if let Some(yes) = o.bool("inline")? {
                p = p.inline(yes);
            }
            Box::new(if let Some(m) = max { p.max(m) } else { p })
        }
        "http1" => {
            let mut p = Http1::new();
            if let Some(h) = o.num::<usize>("max_head", "a head size in bytes")? {
                p = p.max_head(h);
            }
            Box::new(if let Some(m) = max { p.max(m) } else { p })
        }
        _ => unreachable!("all NAMES handled"),
    };
    o.finish()?;
    Ok(parser)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Parse;

    fn err(spec: &str) -> String {
        match parser_from_spec(spec) {
            Err(e) => e.to_string(),
            Ok(p) => panic!("{spec:?} built {}", p.name()),
        }
    }

    #[test]
    fn every_name_builds() {
        for n in NAMES.iter().filter(|n| !n.starts_with("bpf") && **n != "lenfield") {
            assert_eq!(parser_from_spec(n).unwrap().name(), *n);
        }
        let dir = env!("CARGO_MANIFEST_DIR");
        let mut p = parser_from_spec(&format!("bpf:{dir}/bpf/thrift.o")).unwrap();
        assert_eq!(p.parse(&[0, 0, 0, 1]), Ok(Parse::Message(5)));
        let mut p = parser_from_spec(&format!("bpf-interp:{dir}/bpf/thrift.bin")).unwrap();
        assert_eq!(p.parse(&[0, 0, 0, 1]), Ok(Parse::Message(5)));
    }

    #[test]
    fn lenfield_options() {
        let mut p =
            parser_from_spec("lenfield:offset=2,width=2,endian=little,adjust=-4,includes_header=true,max=100").unwrap();
        assert_eq!(p.parse(&[0, 0, 10, 0]), Ok(Parse::Message(6)));
        assert_eq!(p.max_message(), 100);
        let mut t = parser_from_spec("thrift:max=64").unwrap();
        assert!(t.parse(&[0, 0, 0, 61]).is_err());
        assert_eq!(parser_from_spec("resp:depth=2").unwrap().name(), "resp");
        assert_eq!(parser_from_spec("http2:max_frame=65536").unwrap().max_message(), 65536 + 9);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        assert!(err("thirft").contains("unknown parser \"thirft\"; expected one of: thrift"));
        assert_eq!(err("lenfield:offset=0,width=5,endian=big"), "option width=\"5\": expected 1, 2, 3, 4 or 8");
        assert_eq!(err("lenfield:offset=0,width=4"), "parser lenfield needs option endian=");
        assert_eq!(err("lenfield:offset=0,width=4,endian=middle"), "option endian=\"middle\": expected big or little");
        assert_eq!(err("lenfield:offset=x,width=4,endian=big"), "option offset=\"x\": expected a byte offset");
        assert_eq!(err("thrift:maxx=5"), "parser thrift has no option \"maxx\"");
        assert_eq!(err("thrift:max"), "option \"max\" needs a value (key=value)");
        assert_eq!(err("thrift:max=1,max=2"), "option \"max\" given twice");
        assert_eq!(err("thrift:max=0"), "option max=\"0\": expected a positive number of bytes");
        assert_eq!(err("resp:depth=1000"), "option depth=\"1000\": expected 1..=128");
        assert!(err("bpf:").contains("needs option FILE"));
        assert!(err("bpf:/nonexistent/prog.o").starts_with("cannot read BPF program: /nonexistent/prog.o"));
        let dir = env!("CARGO_MANIFEST_DIR");
        assert!(err(&format!("bpf:{dir}/bpf/thrift.c")).starts_with("BPF program rejected"));
    }
}
