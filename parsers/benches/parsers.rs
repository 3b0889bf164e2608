//! Delineation throughput per parser at 64 B, 1 KiB and 64 KiB messages, and
//! the BPF Thrift program (interpreter, JIT) against the native Thrift parser.
//! Each iteration delineates a whole buffer of back-to-back messages from
//! cached memory, the way the mux walks its ring (parse, then reset).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ukcm_parsers::{
    BpfParser, BpfProgram, Exec, Grpc, Http1, Http2, LengthField, Memcached, Mqtt, Parse, Parser, Resp, Tls,
};

const SIZES: [usize; 3] = [64, 1024, 64 * 1024];
/// Bytes of messages per buffer (~256 KiB: fits L2, so headers are cached).
const BUF: usize = 256 * 1024;

/// Walk `buf` message by message; returns the number of messages.
fn delineate(p: &mut dyn Parser, buf: &[u8]) -> usize {
    let mut at = 0;
    let mut n = 0;
    while at < buf.len() {
        match p.parse(&buf[at..]) {
            Ok(Parse::Message(len)) => {
                at += len;
                n += 1;
                p.reset();
            }
            other => panic!("{}: {other:?} at {at}", p.name()),
        }
    }
    n
}

fn message(proto: &str, size: usize) -> Vec<u8> {
    match proto {
        "thrift" | "kafka" => [((size - 4) as u32).to_be_bytes().to_vec(), vec![0xab; size - 4]].concat(),
        "dns" => [((size.min(65537) - 2) as u16).to_be_bytes().to_vec(), vec![0xab; size.min(65537) - 2]].concat(),
        "grpc" => [vec![0], ((size - 5) as u32).to_be_bytes().to_vec(), vec![0xab; size - 5]].concat(),
        "memcached" => {
            let mut h = vec![0x80, 0x01, 0, 3, 0, 0, 0, 0];
            h.extend_from_slice(&((size - 24) as u32).to_be_bytes());
            h.extend_from_slice(&[0; 12]);
            [h, vec![b'k'; size - 24]].concat()
        }
        "http2" => {
            let l = ((size - 9) as u32).to_be_bytes();
            [vec![l[1], l[2], l[3], 0, 0, 0, 0, 0, 1], vec![0xab; size - 9]].concat()
        }
        "tls" => {
            let size = size.min(5 + (1 << 14));
            [vec![23, 3, 3], ((size - 5) as u16).to_be_bytes().to_vec(), vec![0xab; size - 5]].concat()
        }
        "mqtt" => {
            // PUBLISH with a remaining length encoded in 1..=3 bytes.
            let mut rem = size - 2;
            while rem + 1 + varint_len(rem) != size {
                rem -= 1;
            }
            let mut v = vec![0x30];
            let mut n = rem;
            loop {
                let b = (n % 128) as u8;
                n /= 128;
                v.push(if n > 0 { b | 0x80 } else { b });
                if n == 0 {
                    break;
                }
            }
            [v, vec![0xab; rem]].concat()
        }
        "resp" => {
            // *2 $3 SET $N <value>: a SET command of about `size` bytes.
            let value = size.saturating_sub(30).max(1);
            [format!("*2\r\n$3\r\nSET\r\n${value}\r\n").into_bytes(), vec![b'v'; value], b"\r\n".to_vec()].concat()
        }
        "http1" => {
            let head = b"POST /api HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/json\r\nContent-Length: ";
            let body = size.saturating_sub(head.len() + 10).max(1);
            [head.to_vec(), format!("{body}\r\n\r\n").into_bytes(), vec![b'x'; body]].concat()
        }
        _ => unreachable!(),
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn parser(proto: &str) -> Box<dyn Parser> {
    match proto {
        "thrift" => Box::new(LengthField::thrift()),
        "kafka" => Box::new(LengthField::kafka()),
        "dns" => Box::new(LengthField::dns()),
        "grpc" => Box::new(Grpc::new()),
        "memcached" => Box::new(Memcached::new()),
        "http2" => Box::new(Http2::new().max_frame_size(1 << 20)),
        "tls" => Box::new(Tls::new()),
        "mqtt" => Box::new(Mqtt::new()),
        "resp" => Box::new(Resp::new()),
        "http1" => Box::new(Http1::new()),
        _ => unreachable!(),
    }
}

fn stream(proto: &str, size: usize) -> (Vec<u8>, usize) {
    let m = message(proto, size);
    let count = (BUF / m.len()).max(4);
    (m.repeat(count), count)
}

fn protocols(c: &mut Criterion) {
    for proto in ["thrift", "kafka", "dns", "grpc", "memcached", "http2", "tls", "mqtt", "resp", "http1"] {
        let mut g = c.benchmark_group(format!("delineate/{proto}"));
        for size in SIZES {
            let (buf, count) = stream(proto, size);
            let mut p = parser(proto);
            assert_eq!(delineate(&mut *p, &buf), count);
            g.throughput(Throughput::Elements(count as u64));
            g.bench_with_input(BenchmarkId::from_parameter(message(proto, size).len()), &buf, |b, buf| {
                b.iter(|| delineate(&mut *p, black_box(buf)))
            });
        }
        g.finish();
    }
}

fn bpf_vs_native(c: &mut Criterion) {
    let obj = include_bytes!("../bpf/thrift.o");
    let mut g = c.benchmark_group("thrift-bpf");
    for size in SIZES {
        let (buf, count) = stream("thrift", size);
        let mut variants: Vec<(&str, Box<dyn Parser>)> = vec![
            ("native", Box::new(LengthField::thrift())),
            ("interp", Box::new(BpfParser::new(Arc::new(BpfProgram::load(obj, Exec::Interpreter).unwrap())))),
        ];
        if Exec::best() == Exec::Jit {
            variants.push(("jit", Box::new(BpfParser::new(Arc::new(BpfProgram::load(obj, Exec::Jit).unwrap())))));
        }
        g.throughput(Throughput::Elements(count as u64));
        for (name, mut p) in variants {
            assert_eq!(delineate(&mut *p, &buf), count);
            g.bench_with_input(BenchmarkId::new(name, size), &buf, |b, buf| {
                b.iter(|| delineate(&mut *p, black_box(buf)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, protocols, bpf_vs_native);
criterion_main!(benches);
