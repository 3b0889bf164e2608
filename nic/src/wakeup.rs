//! Sleeping until a port has frames: an idle engine waits on the port's file descriptor
//! (the AF_XDP socket, the TAP device) instead of sleeping blind, so the first frame after
//! a quiet spell wakes it at once and an idle engine costs (almost) no CPU.

use std::io;
use std::os::fd::RawFd;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
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
}
