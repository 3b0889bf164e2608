//! A minimal ELF64 reader: just enough to find the program section of an
//! object built with `clang -target bpf -c`. Every offset and size is
//! bounds-checked; malformed input is an error, never a panic.

use super::BpfLoadError;

const EM_BPF: u16 = 247;
const SHT_PROGBITS: u32 = 1;
const SHT_REL: u32 = 9;
const SHF_EXECINSTR: u64 = 4;

/// Section names KCM / sockmap users put parser programs in, best first.
const PREFERRED: &[&str] = &["socket_kcm", "kcm", "sk_skb/stream_parser", "sk_skb", "socket"];

/// Is this an ELF file (by its magic)?
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

fn err(what: &'static str) -> BpfLoadError {
    BpfLoadError::Elf(what)
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BpfLoadError> {
    let s = b.get(off..off.checked_add(2).ok_or(err("offset overflow"))?).ok_or(err("truncated"))?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BpfLoadError> {
    let s = b.get(off..off.checked_add(4).ok_or(err("offset overflow"))?).ok_or(err("truncated"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, BpfLoadError> {
    let s = b.get(off..off.checked_add(8).ok_or(err("offset overflow"))?).ok_or(err("truncated"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_le_bytes(a))
}

fn usize_of(v: u64) -> Result<usize, BpfLoadError> {
    usize::try_from(v).map_err(|_| err("offset does not fit in memory"))
}

#[derive(Debug, Clone, Copy)]
struct Section {
    name: u32,
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
    info: u32,
}

/// The program found in an object: its section name and instruction bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfProgram<'a> {
    pub section: &'a str,
    pub code: &'a [u8],
}

/// Find the parser program: the first executable, non-empty section whose
/// name is one of the KCM/sockmap names (in `PREFERRED` order), else the
/// first executable non-empty section. Programs that need relocations (maps,
/// global data) are rejected: this VM has neither.
pub fn find_program(bytes: &[u8]) -> Result<ElfProgram<'_>, BpfLoadError> {
    if !is_elf(bytes) {
        return Err(err("not an ELF file"));
    }
    if bytes.len() < 64 {
        return Err(err("truncated ELF header"));
    }
    if bytes[4] != 2 {
        return Err(err("not a 64-bit ELF object"));
    }
    if bytes[5] != 1 {
        return Err(err("not a little-endian ELF object (bpfeb is not supported)"));
    }
    if u16_at(bytes, 18)? != EM_BPF {
        return Err(err("not a BPF object (e_machine != EM_BPF)"));
    }
    let shoff = usize_of(u64_at(bytes, 0x28)?)?;
    let shentsize = u16_at(bytes, 0x3a)? as usize;
    let shnum = u16_at(bytes, 0x3c)? as usize;
    let shstrndx = u16_at(bytes, 0x3e)? as usize;
    if shentsize != 64 {
        return Err(err("unexpected section header size"));
    }
    if shnum == 0 || shstrndx >= shnum {
        return Err(err("no section headers or bad string table index"));
    }
    let table_len = shnum * 64;
    let end = shoff.checked_add(table_len).ok_or(err("section table overflow"))?;
    if end > bytes.len() {
        return Err(err("section table past end of file"));
    }
    let section = |i: usize| -> Result<Section, BpfLoadError> {
        let h = shoff + i * 64;
        Ok(Section {
            name: u32_at(bytes, h)?,
            kind: u32_at(bytes, h + 4)?,
            flags: u64_at(bytes, h + 8)?,
            offset: u64_at(bytes, h + 0x18)?,
            size: u64_at(bytes, h + 0x20)?,
            info: u32_at(bytes, h + 0x2c)?,
        })
    };
    let data = |s: &Section| -> Result<&[u8], BpfLoadError> {
        let start = usize_of(s.offset)?;
        let end = start.checked_add(usize_of(s.size)?).ok_or(err("section size overflow"))?;
        bytes.get(start..end).ok_or(err("section data past end of file"))
    };
    let strtab = data(&section(shstrndx)?)?;
    let name_of = |s: &Section| -> Result<&str, BpfLoadError> {
        let tail = strtab.get(s.name as usize..).ok_or(err("section name out of range"))?;
        let len = tail.iter().position(|&c| c == 0).ok_or(err("unterminated section name"))?;
        core::str::from_utf8(&tail[..len]).map_err(|_| err("section name is not UTF-8"))
    };

    let mut candidates: Vec<(usize, Section, &str)> = Vec::new();
    for i in 0..shnum {
        let s = section(i)?;
        if s.kind == SHT_PROGBITS && s.flags & SHF_EXECINSTR != 0 && s.size > 0 {
            candidates.push((i, s, name_of(&s)?));
        }
    }
    let chosen = PREFERRED
        .iter()
        .find_map(|want| candidates.iter().find(|(_, _, n)| n == want))
        .or_else(|| candidates.first())
        .ok_or(BpfLoadError::NoProgram)?;
    let (index, s, name) = *chosen;
    for i in 0..shnum {
        let r = section(i)?;
        if r.kind == SHT_REL && r.info as usize == index && r.size > 0 {
            return Err(err("program needs relocations (maps or global data are not supported)"));
        }
    }
    Ok(ElfProgram { section: name, code: data(&s)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    static THRIFT_O: &[u8] = include_bytes!("../../bpf/thrift.o");

    #[test]
    fn finds_the_kcm_section_not_the_empty_text() {
        let p = find_program(THRIFT_O).unwrap();
        assert_eq!(p.section, "socket_kcm");
        assert_eq!(p.code.len(), 32);
        assert_eq!(p.code, include_bytes!("../../bpf/thrift.bin"));
    }

    #[test]
    fn malformed_elf_is_an_error() {
        assert!(find_program(b"\x7fELF").is_err());
        assert!(find_program(b"not elf at all").is_err());
        // Every truncation of a real object fails cleanly.
        for n in 0..THRIFT_O.len() {
            assert!(find_program(&THRIFT_O[..n]).is_err(), "truncated at {n}");
        }
        // Section table offset pointing past the end.
        let mut bad = THRIFT_O.to_vec();
        bad[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(find_program(&bad).is_err());
        // Wrong machine.
        let mut bad = THRIFT_O.to_vec();
        bad[18] = 62;
        assert_eq!(find_program(&bad), Err(BpfLoadError::Elf("not a BPF object (e_machine != EM_BPF)")));
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        // Flip each byte of the headers in turn; any result is fine but a panic.
        for i in 0..THRIFT_O.len() {
            for v in [0x00, 0xff, 0x7f] {
                let mut bad = THRIFT_O.to_vec();
                bad[i] = v;
                let _ = find_program(&bad);
            }
        }
    }
}
