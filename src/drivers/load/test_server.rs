//! A tiny HTTP server for the load client's tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A tiny serial server on loopback for the tests: it answers the
/// connections it accepts one after another with `answer`, except that
/// before answering the `stall_at`-th (from 0) it stalls for `stall`
/// (frozen: the kernel queues the connections meanwhile). It ends after
/// `max` connections, or on a request for `/quit`; its result is when
/// the stall began and ended.
pub(super) fn serial_server(
    answer: &'static [u8],
    stall_at: usize,
    stall: Duration,
    max: usize,
) -> (SocketAddr, JoinHandle<Option<(Instant, Instant)>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut stalled = None;
        for i in 0..max {
            let Ok((mut c, _)) = l.accept() else { break };
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            if req.starts_with(b"GET /quit ") {
                break;
            }
            if i == stall_at {
                let began = Instant::now();
                std::thread::sleep(stall);
                stalled = Some((began, Instant::now()));
            }
            let _ = c.write_all(answer);
        }
        stalled
    });
    (addr, t)
}

/// Ends a [`serial_server`] that still waits for connections.
pub(super) fn quit(
    addr: SocketAddr,
    server: JoinHandle<Option<(Instant, Instant)>>,
) -> Option<(Instant, Instant)> {
    if let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        let _ = c.write_all(b"GET /quit HTTP/1.1\r\n\r\n");
    }
    server.join().unwrap()
}

pub(super) const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\npid=1\n";
