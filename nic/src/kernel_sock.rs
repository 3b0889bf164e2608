//! Safe wrappers for the few kernel socket queries the mux's kernel-TCP fallback needs.
//!
//! Kept here because ukcm's `unsafe` lives in this crate.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Bytes in the socket's send queue not yet acknowledged by the peer (`SIOCOUTQ`): the
/// stream has been acknowledged up to `bytes written - this`.
pub fn unacked_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (== TIOCOUTQ) writes one c_int through the pointer; fd is a live socket.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n as *mut libc::c_int) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n.max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn outq_drains_to_zero_once_the_peer_acks() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        c.write_all(&[5u8; 10_000]).unwrap();
        let mut buf = vec![0u8; 10_000];
        s.read_exact(&mut buf).unwrap();
        let mut left = usize::MAX;
        for _ in 0..200 {
            left = unacked_bytes(c.as_fd()).unwrap();
            if left == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(left, 0);
    }
}
