//! Sleeping until a port has frames: an idle engine waits on the port's file descriptor
//! (the AF_XDP socket, the TAP device) instead of sleeping blind, so the first frame after
//! a quiet spell wakes it at once and an idle engine costs (almost) no CPU; and the
//! [`Bell`] other threads ring to wake it (a message sent from a worker).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Blocks until `fd` is readable or `timeout` has passed, with microsecond resolution
/// (`ppoll`; `poll` counts in milliseconds). Returns whether it is readable; an interrupted
/// wait returns `Ok(false)` (callers poll the port either way).
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    wait_any_readable(&[fd], timeout)
}

/// [`wait_readable`] for several descriptors (the port's and a doorbell's, at most 4):
/// returns whether any of them is readable.
pub fn wait_any_readable(fds: &[RawFd], timeout: Duration) -> io::Result<bool> {
    let mut pfds = [libc::pollfd { fd: -1, events: libc::POLLIN, revents: 0 }; 4];
    let n = fds.len().min(pfds.len());
    for (p, &fd) in pfds.iter_mut().zip(&fds[..n]) {
        p.fd = fd;
    }
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pfds[..n]` are valid pollfds we own for the duration of the call, `ts` a
    // valid timespec; a null signal mask leaves the thread's mask unchanged.
    let r = unsafe { libc::ppoll(pfds.as_mut_ptr(), n as libc::nfds_t, &ts, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(e) };
    }
    Ok(r > 0 && pfds[..n].iter().any(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0))
}

/// A doorbell a sleeping thread waits on with [`wait_any_readable`], rung by other threads
/// only while it sleeps.
///
/// The sleeper announces that it sleeps ([`Bell::arm`]), re-checks for news and only then
/// waits on [`Bell::fd`] (with its other descriptors); a notifier, after publishing its
/// news, writes the eventfd only if the sleeper announced a sleep ([`Bell::ring`]), so a
/// busy sleeper costs notifiers no system call. The SeqCst fences make the
/// store-then-load handshake sound: either the sleeper sees the news, or the notifier sees
/// it asleep (or both).
#[derive(Debug)]
pub struct Bell {
    fd: OwnedFd,
    sleeping: AtomicBool,
    /// Rings that took a sleep and whose write was not read yet (the sleeper's own count).
    owed: AtomicU64,
}

impl Bell {
    /// A bell over a fresh non-blocking eventfd.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory arguments; a negative return is an error.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        Ok(Bell { fd: unsafe { OwnedFd::from_raw_fd(fd) }, sleeping: AtomicBool::new(false), owed: AtomicU64::new(0) })
    }

    /// The descriptor that polls readable once rung.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The sleeper announces a sleep; it re-checks for news after this and before waiting.
    pub fn arm(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The sleeper is awake again: no more rings needed, and a pending one is consumed.
    ///
    /// A ring that took this sleep (it cleared the flag) writes 1, perhaps only after this
    /// read: the writes owed are counted and consumed as they land, so a late one cannot
    /// leave the descriptor readable for ever (a level-triggered sleep on it would then
    /// never sleep again). Sleeps nobody rang cost no system call.
    pub fn disarm(&self) {
        let mut owed = self.owed.load(Ordering::Relaxed);
        if !self.sleeping.swap(false, Ordering::AcqRel) {
            owed += 1;
        }
        if owed > 0 {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into `v`, which is 8 bytes; EAGAIN (not landed yet) is fine.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            if n == 8 {
                owed = owed.saturating_sub(v);
            }
        }
        self.owed.store(owed, Ordering::Relaxed);
    }

    /// A notifier, after publishing its news: wakes the sleeper if it announced a sleep.
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel) {
            let one = 1u64;
            // SAFETY: writes 8 bytes from `one`; a full counter (EAGAIN) is still readable.
            let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn readable_when_data_is_waiting_and_not_before() {
        let (mut a, b) = UnixStream::pair().unwrap();
        assert!(!wait_readable(b.as_raw_fd(), Duration::ZERO).unwrap(), "nothing sent yet");
        a.write_all(b"x").unwrap();
        assert!(wait_readable(b.as_raw_fd(), Duration::from_secs(10)).unwrap());
    }

    #[test]
    fn a_writer_on_another_thread_wakes_a_long_wait() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            a.write_all(b"x").unwrap();
            a
        });
        // A 60 s wait that returns readable can only have been woken by the write.
        assert!(wait_readable(b.as_raw_fd(), Duration::from_secs(60)).unwrap());
        drop(t.join().unwrap());
    }

    #[test]
    fn any_of_several_descriptors_wakes_the_wait() {
        let (_a, b) = UnixStream::pair().unwrap();
        let (mut c, d) = UnixStream::pair().unwrap();
        assert!(!wait_any_readable(&[b.as_raw_fd(), d.as_raw_fd()], Duration::ZERO).unwrap());
        c.write_all(b"x").unwrap();
        assert!(wait_any_readable(&[b.as_raw_fd(), d.as_raw_fd()], Duration::from_secs(60)).unwrap());
    }

    #[test]
    fn a_bad_descriptor_is_an_error_or_reported_not_readable() {
        // ppoll reports a closed fd as POLLNVAL, which is not readable.
        assert!(!wait_readable(-1, Duration::ZERO).unwrap());
    }

    #[test]
    fn a_ring_wakes_only_an_armed_engine_and_disarm_consumes_it() {
        let b = Bell::new().unwrap();
        b.ring();
        assert!(!wait_readable(b.fd(), Duration::ZERO).unwrap(), "not asleep: no system call, nothing to read");
        b.arm();
        b.ring();
        assert!(wait_readable(b.fd(), Duration::from_secs(60)).unwrap(), "asleep: woken");
        b.disarm();
        assert!(!wait_readable(b.fd(), Duration::ZERO).unwrap(), "consumed");
    }

    #[test]
    fn a_ring_whose_write_lands_after_the_wakeup_is_consumed_at_the_next_disarm() {
        let b = Bell::new().unwrap();
        b.arm();
        // The ringer's half before its write: it takes the sleep.
        assert!(b.sleeping.swap(false, Ordering::AcqRel));
        b.disarm(); // the write has not landed: owed
        assert_eq!(b.owed.load(Ordering::Relaxed), 1);
        // The write lands late.
        let one = 1u64;
        // SAFETY: writes the 8 bytes of `one`.
        assert_eq!(unsafe { libc::write(b.fd(), (&one as *const u64).cast(), 8) }, 8);
        b.arm();
        b.disarm(); // nobody rang this sleep, but the owed write is read
        assert!(!wait_readable(b.fd(), Duration::ZERO).unwrap(), "the late write still polls readable");
        assert_eq!(b.owed.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_sender_on_another_thread_ends_a_long_sleep() {
        let b = std::sync::Arc::new(Bell::new().unwrap());
        b.arm();
        let s = std::sync::Arc::clone(&b);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s.ring();
        });
        assert!(wait_readable(b.fd(), Duration::from_secs(60)).unwrap());
        b.disarm();
        t.join().unwrap();
    }
}
