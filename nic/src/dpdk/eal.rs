//! The DPDK Environment Abstraction Layer: initialised at most once per process.
//!
//! DPDK allows one `rte_eal_init` per process, and none after `rte_eal_cleanup`. [`Eal`] is
//! a cloneable handle; the first [`Eal::init`] runs `rte_eal_init`, any later call is
//! [`DpdkError::EalAlreadyUsed`], and the EAL is cleaned up when the last handle (held by
//! every port, mempool and mbuf-backed frame) drops. Tests that need a fresh EAL therefore
//! run in a process of their own.
//!
//! Arguments are checked in Rust first where DPDK would not return: `-h`/`--help` and
//! `-v` make `rte_eal_init` print and `exit()`, so they are refused; an `iface=` of an
//! `af_packet`/`af_xdp` vdev that does not exist is reported before DPDK is touched (DPDK
//! would fail too, but then the EAL could not be initialised again in this process).

use std::ffi::{c_char, CStr, CString};
use std::sync::{Arc, Mutex};

use ukcm_dpdk_sys as sys;

use super::DpdkError;

/// Where this process is in the EAL's one life.
enum State {
    Fresh,
    Running(std::sync::Weak<EalInner>),
    Used,
}

static STATE: Mutex<State> = Mutex::new(State::Fresh);

#[derive(Debug)]
struct EalInner {
    args: Vec<String>,
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: the last handle is gone: every port, mempool and mbuf-backed frame held
        // one, so nothing uses DPDK any more.
        let rc = unsafe { sys::rte_eal_cleanup() };
        if rc != 0 {
            tracing::warn!(rc, "rte_eal_cleanup failed");
        }
        if let Ok(mut s) = STATE.lock() {
            *s = State::Used;
        }
    }
}

/// A handle on the initialised EAL (cloning is cheap; the last drop cleans up).
#[derive(Debug, Clone)]
pub struct Eal {
    inner: Arc<EalInner>,
}

impl Eal {
    /// Runs `rte_eal_init` with `args` (EAL arguments without the program name), once per
    /// process. The calling thread's CPU affinity is restored afterwards (the EAL pins it
    /// to the main lcore, which would pin every thread spawned later too).
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        check_args(&args)?;
        let mut state = STATE.lock().map_err(|_| DpdkError::EalAlreadyUsed("EAL state lock poisoned".into()))?;
        match &*state {
            State::Fresh => {}
            State::Running(w) if w.strong_count() > 0 => {
                return Err(DpdkError::EalAlreadyUsed(
                    "the EAL is already initialised in this process (clone the Eal handle instead)".into(),
                ))
            }
            _ => {
                return Err(DpdkError::EalAlreadyUsed(
                    "the EAL was initialised (or tried) once in this process and DPDK allows it only once".into(),
                ))
            }
        }
        // From here on DPDK has seen the arguments: win or lose, no second attempt.
        *state = State::Used;

        let mut cargs: Vec<CString> = Vec::with_capacity(args.len() + 1);
        cargs.push(CString::new("ukcm").expect("no NUL"));
        for a in &args {
            cargs.push(CString::new(a.as_str()).map_err(|_| DpdkError::BadArgs(format!("{a:?} contains a NUL byte")))?);
        }
        // The EAL may keep pointers into argv (saved arguments, telemetry): leak the
        // strings, once per process, a few hundred bytes.
        let mut argv: Vec<*mut c_char> = cargs.into_iter().map(|c| c.into_raw()).collect();
        let argv_len = argv.len();
        argv.push(std::ptr::null_mut());
        let argv: &'static mut [*mut c_char] = Vec::leak(argv);

        let affinity = Affinity::save();
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL and lives
        // forever; this is the only call in the process (guarded by STATE).
        let rc = unsafe { sys::rte_eal_init(argv_len as i32, argv.as_mut_ptr()) };
        if let Some(a) = affinity {
            a.restore();
        }
        if rc < 0 {
            return Err(DpdkError::EalInit { errno: errno(), args: args.join(" ") });
        }
        let inner = Arc::new(EalInner { args });
        *state = State::Running(Arc::downgrade(&inner));
        Ok(Eal { inner })
    }

    /// The arguments the EAL was started with.
    pub fn args(&self) -> &[String] {
        &self.inner.args
    }

    /// Ethernet ports the EAL probed (vdevs and bound PCI devices).
    pub fn port_count(&self) -> u16 {
        // SAFETY: the EAL is initialised (self exists).
        unsafe { sys::rte_eth_dev_count_avail() }
    }

    /// DPDK's version string, e.g. `DPDK 22.11.11`.
    pub fn version(&self) -> String {
        // SAFETY: rte_version returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(sys::rte_version()) }.to_string_lossy().into_owned()
    }
}

/// `rte_errno` of this thread.
pub(crate) fn errno() -> i32 {
    // SAFETY: reads a thread-local integer.
    unsafe { sys::ukcm_errno() }
}

/// DPDK's text for an errno value (covers DPDK's own codes too).
pub(crate) fn strerror(e: i32) -> String {
    // SAFETY: rte_strerror returns a NUL-terminated string valid until the next call on
    // this thread; it is copied at once.
    unsafe { CStr::from_ptr(sys::rte_strerror(e)) }.to_string_lossy().into_owned()
}

/// Refuses what would make `rte_eal_init` exit the process or fail in a way we can name
/// better: help/version flags, empty arguments, vdevs over interfaces that do not exist.
pub(crate) fn check_args(args: &[String]) -> Result<(), DpdkError> {
    for (i, a) in args.iter().enumerate() {
        if a.is_empty() {
            return Err(DpdkError::BadArgs(format!("argument {i} is empty")));
        }
        if matches!(a.as_str(), "-h" | "--help" | "-v") {
            return Err(DpdkError::BadArgs(format!("{a}: the EAL would print and exit the process")));
        }
        let vdev = a
            .strip_prefix("--vdev=")
            .or_else(|| (a == "--vdev").then(|| args.get(i + 1)).flatten().map(String::as_str));
        if let Some(v) = vdev {
            check_vdev(v)?;
        }
    }
    Ok(())
}

fn check_vdev(v: &str) -> Result<(), DpdkError> {
    let mut parts = v.split(',');
    let name = parts.next().unwrap_or("");
    if name.is_empty() {
        return Err(DpdkError::BadArgs(format!("--vdev={v}: no device name")));
    }
    if name.starts_with("net_af_packet") || name.starts_with("net_af_xdp") || name.starts_with("eth_af_packet") {
        let iface = parts.find_map(|kv| kv.strip_prefix("iface="));
        let Some(iface) = iface else {
            return Err(DpdkError::BadArgs(format!("--vdev={v}: {name} needs iface=<interface>")));
        };
        let c = CString::new(iface).map_err(|_| DpdkError::BadArgs(format!("--vdev={v}: NUL in iface")))?;
        // SAFETY: c is a valid NUL-terminated string.
        if unsafe { libc::if_nametoindex(c.as_ptr()) } == 0 {
            return Err(DpdkError::NoSuchInterface(iface.to_owned()));
        }
    }
    Ok(())
}

/// The calling thread's CPU set, to undo the EAL's pinning.
struct Affinity(libc::cpu_set_t);

impl Affinity {
    fn save() -> Option<Affinity> {
        // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a valid cpu_set_t of the size passed; pid 0 is this thread.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        (rc == 0).then_some(Affinity(set))
    }

    fn restore(&self) {
        // SAFETY: self.0 is a cpu set read by sched_getaffinity; pid 0 is this thread.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        if rc != 0 {
            tracing::warn!("could not restore the CPU affinity after rte_eal_init");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn exiting_and_empty_arguments_are_refused_before_dpdk_sees_them() {
        assert!(matches!(check_args(&s(&["--help"])), Err(DpdkError::BadArgs(_))));
        assert!(matches!(check_args(&s(&["-v"])), Err(DpdkError::BadArgs(_))));
        assert!(matches!(check_args(&s(&["--no-huge", ""])), Err(DpdkError::BadArgs(_))));
        assert!(check_args(&s(&["--no-huge", "-m", "256", "--no-pci", "--vdev=net_null0"])).is_ok());
    }

    #[test]
    fn vdevs_over_missing_interfaces_are_named() {
        let e = check_args(&s(&["--vdev=net_af_packet0,iface=ukcm-no-such-if"])).unwrap_err();
        assert!(matches!(&e, DpdkError::NoSuchInterface(i) if i == "ukcm-no-such-if"), "{e}");
        let e = check_args(&s(&["--vdev", "net_af_xdp0,iface=ukcm-nope"])).unwrap_err();
        assert!(matches!(e, DpdkError::NoSuchInterface(_)));
        assert!(matches!(check_args(&s(&["--vdev=net_af_packet0"])), Err(DpdkError::BadArgs(_))));
        assert!(check_args(&s(&["--vdev=net_af_packet0,iface=lo"])).is_ok());
    }
}
