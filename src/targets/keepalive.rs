//! Keep-alive connections of the hand-over server (`--keep-alive`, G08):
//! one connection carries request after request, and how a stopping
//! process ends the connections it still holds is its [`Drain`].
//!
//! Each connection has a thread of its own that waits for the client's next
//! request or for the drain to begin, whichever comes first. The drain
//! begins for every connection at once when the process closes the write
//! end of a pipe ([`DrainSignal`]): the read end, which each thread polls
//! beside its connection, then reads as the end of the file.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// How a stopping process ends its keep-alive connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Drain {
    /// What a server does when it never thought about it: answer the
    /// request in flight as usual (keep-alive), then close every idle
    /// connection at once.
    Close,
    /// Answer the request in flight with `Connection: close`; half-close
    /// every idle connection (`shutdown(SHUT_WR)`: a FIN) and linger,
    /// reading until the client closes too.
    HalfClose,
    /// Answer the request in flight with `Connection: close`; wait for each
    /// idle connection's next request (up to the idle timeout) and answer it
    /// with `Connection: close`; every close is a half-close and a linger.
    NextRequest,
}

impl Drain {
    pub const ALL: [Drain; 3] = [Drain::Close, Drain::HalfClose, Drain::NextRequest];

    /// Its name on the command line (`--drain NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Drain::Close => "close",
            Drain::HalfClose => "half-close",
            Drain::NextRequest => "next-request",
        }
    }
}

/// The drain's start, seen by every connection thread: the write end is
/// dropped when the process stops.
pub struct DrainSignal {
    rx: Arc<OwnedFd>,
    tx: Option<OwnedFd>,
}

impl DrainSignal {
    pub fn new() -> std::io::Result<DrainSignal> {
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(DrainSignal {
            rx: Arc::new(rx),
            tx: Some(tx),
        })
    }

    /// Begins the drain for every connection.
    pub fn begin(&mut self) {
        self.tx = None;
    }

    pub fn watcher(&self) -> Arc<OwnedFd> {
        Arc::clone(&self.rx)
    }
}

/// What a connection thread needs.
pub struct Conn {
    pub conn: TcpStream,
    pub me: i32,
    pub gen: u32,
    pub body: u64,
    pub drain: Drain,
    pub draining: Arc<OwnedFd>,
    /// How long an idle connection is kept (also while draining, for
    /// [`Drain::NextRequest`]).
    pub idle: Duration,
}

/// How long a closing connection reads what the client still sends, so
/// that closing never answers it with a reset.
const LINGER: Duration = Duration::from_secs(2);

enum Woke {
    Request,
    Drain,
    Idle,
}

impl Conn {
    /// Waits up to `limit` for the next request (readable) or, unless the
    /// drain has begun already, for the drain.
    fn wait(&self, limit: Duration, draining: bool) -> Woke {
        let ms = limit.as_millis().min(u16::MAX as u128) as u16;
        let mut fds = vec![PollFd::new(self.conn.as_fd(), PollFlags::POLLIN)];
        if !draining {
            fds.push(PollFd::new(self.draining.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => Woke::Idle,
            Ok(_) => {
                let ready = |i: usize| {
                    fds.get(i)
                        .and_then(|f| f.revents())
                        .is_some_and(|r| !r.is_empty())
                };
                if ready(0) {
                    Woke::Request
                } else if ready(1) {
                    Woke::Drain
                } else {
                    Woke::Idle
                }
            }
            Err(_) => Woke::Idle,
        }
    }

    fn drain_begun(&self) -> bool {
        let mut fds = [PollFd::new(self.draining.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
    }

    /// Serves the connection to its end.
    pub fn serve(mut self) {
        let mut draining = false;
        loop {
            let limit = if draining && self.drain != Drain::NextRequest {
                Duration::ZERO
            } else {
                self.idle
            };
            match self.wait(limit, draining) {
                Woke::Drain => {
                    draining = true;
                    continue;
                }
                Woke::Idle if draining => return self.end_idle(),
                Woke::Idle => return self.linger(),
                Woke::Request => {}
            }
            if !crate::targets::server::read_request_head(&mut self.conn) {
                return; // the client closed it (or sent garbage)
            }
            draining = draining || self.drain_begun();
            let close = draining && self.drain != Drain::Close;
            if !self.answer(close) || close {
                return self.linger();
            }
        }
    }

    /// An idle connection when the drain has begun (or, for
    /// [`Drain::NextRequest`], when it stayed idle through it).
    fn end_idle(self) {
        match self.drain {
            Drain::Close => drop(self.conn),
            Drain::HalfClose | Drain::NextRequest => self.linger(),
        }
    }

    /// Sends one answer: `pid=N gen=G`, padded to `body` bytes.
    fn answer(&mut self, close: bool) -> bool {
        let first = format!("pid={} gen={}\n", self.me, self.gen);
        let mut body = vec![b'.'; self.body as usize];
        let n = first.len().min(body.len());
        body[..n].copy_from_slice(&first.as_bytes()[..n]);
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\nServer: swaplab-handover\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: {}\r\n\r\n",
            body.len(),
            if close { "close" } else { "keep-alive" }
        )
        .into_bytes();
        // One write: a second small one would wait for the client's delayed
        // ACK (Nagle), 40 ms a request.
        answer.extend_from_slice(&body);
        self.conn.write_all(&answer).is_ok()
    }

    /// Half-closes, then reads (and drops) what the client still sends
    /// until it closes too, or for [`LINGER`] at most.
    fn linger(mut self) {
        let _ = self.conn.shutdown(Shutdown::Write);
        let until = Instant::now() + LINGER;
        let mut buf = [0u8; 4096];
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            let _ = self
                .conn
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            match self.conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}
