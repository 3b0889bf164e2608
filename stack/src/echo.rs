//! TCP echo from the rx ring into the tx ring, on the engine thread: the inline echo of
//! the dev loop and of the kernel-peer tests (the mux has its own, message-wise one).

use smoltcp::socket::tcp;

use crate::engine::consume_rx;

/// Moves as many received bytes as the tx ring has room for back out (through a 4 KiB
/// stack buffer), and closes the sending side once the peer has closed and everything
/// was echoed. Returns the bytes echoed.
pub fn echo_in_place(s: &mut tcp::Socket<'_>) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let room = (s.send_capacity() - s.send_queue()).min(buf.len());
        let n = match s.peek_slice(&mut buf[..room]) {
            Ok(n) if n > 0 => s.send_slice(&buf[..n]).unwrap_or(0),
            _ => 0,
        };
        if n == 0 {
            break;
        }
        total += consume_rx(s, n);
    }
    if !s.may_recv() && s.recv_queue() == 0 && s.may_send() {
        s.close();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_socket_echoes_nothing() {
        let mut s = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; 64]), tcp::SocketBuffer::new(vec![0; 64]));
        assert_eq!(echo_in_place(&mut s), 0);
        assert_eq!(s.state(), tcp::State::Closed);
    }
}
