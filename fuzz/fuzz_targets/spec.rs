//! CLI specs: any string gives a parser or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        // Files would be read from disk: keep the BPF loader to its own targets.
        if !s.trim_start().starts_with("bpf") {
            let _ = ukcm_parsers::parser_from_spec(s);
        }
    }
});
