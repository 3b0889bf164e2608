//! One line saying where the process's pinned memory came from — 2 MiB hugepages or 4 KiB
//! pages, locked or not — and, when it is not what it should be, how to fix it. The apps
//! print it at startup: a region that silently fell back to 4 KiB pages (no hugepages
//! reserved) or stayed unlocked (an 8 MiB `RLIMIT_MEMLOCK`) is otherwise invisible.

use ukcm_nic::{memlock_limit, page_use, PageUse};

/// The line for the memory the process holds now (see the module doc).
pub fn describe() -> String {
    describe_use(&page_use(), memlock_limit())
}

fn mib(b: u64) -> String {
    let m = b as f64 / f64::from(1 << 20);
    if m >= 10.0 {
        format!("{m:.0} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

fn describe_use(u: &PageUse, memlock: Option<u64>) -> String {
    if u.huge_bytes + u.small_bytes == 0 {
        return "memory: no pinned memory in use (kernel sockets only)".into();
    }
    let mut parts = Vec::new();
    if u.huge_bytes > 0 {
        parts.push(format!("{} in 2 MiB hugepages", mib(u.huge_bytes)));
    }
    if u.small_bytes > 0 {
        parts.push(format!("{} in 4 KiB pages", mib(u.small_bytes)));
    }
    let mut line = format!("memory: {}", parts.join(", "));
    if u.huge_fell_back {
        line.push_str(
            "; no hugepages were free, so frames and rings fell back to 4 KiB pages (more TLB misses): reserve some with `scripts/hugepages.sh reserve 256` or `sysctl vm.nr_hugepages=256`",
        );
    }
    if u.unlocked_bytes > 0 {
        let limit = memlock.map_or("unlimited".into(), |b| format!("{} KiB", b / 1024));
        line.push_str(&format!(
            "; {} not locked (RLIMIT_MEMLOCK {limit}): raise it with `ulimit -l unlimited`, systemd `LimitMEMLOCK=infinity`, or CAP_IPC_LOCK",
            mib(u.unlocked_bytes)
        ));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_the_page_size_and_the_fix() {
        let huge = PageUse { huge_bytes: 8 << 20, small_bytes: 0, unlocked_bytes: 0, huge_fell_back: false };
        assert_eq!(describe_use(&huge, None), "memory: 8.0 MiB in 2 MiB hugepages");
        let small = PageUse { huge_bytes: 0, small_bytes: 32 << 20, unlocked_bytes: 32 << 20, huge_fell_back: true };
        let l = describe_use(&small, Some(8 << 20));
        assert!(l.starts_with("memory: 32 MiB in 4 KiB pages; no hugepages"), "{l}");
        assert!(l.contains("vm.nr_hugepages") && l.contains("scripts/hugepages.sh"), "{l}");
        assert!(l.contains("32 MiB not locked (RLIMIT_MEMLOCK 8192 KiB)") && l.contains("ulimit -l"), "{l}");
        assert!(describe_use(&PageUse::default(), None).contains("no pinned memory"));
    }
}
