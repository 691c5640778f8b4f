//! One HTTP/1.1 exchange on a connection: connect, send the GET, read the
//! answer to its end (chunked or not) and judge the response.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::samples::{Answer, Kind, Sample};
use super::LoadOptions;

fn classify(e: &std::io::Error) -> Kind {
    match e.kind() {
        ErrorKind::ConnectionRefused => Kind::Refused,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            Kind::Reset
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Kind::Timeout,
        ErrorKind::UnexpectedEof => Kind::ShortRead,
        _ => Kind::Other,
    }
}

/// How one exchange ended: its kind, who answered (a completed one), what
/// went wrong (a failure) and how many body bytes arrived.
pub(super) struct ExchangeOutcome {
    pub(super) kind: Kind,
    answer: Option<Answer>,
    detail: Option<String>,
    bytes: u64,
}

impl ExchangeOutcome {
    /// A failure of `kind`, what went wrong, after `bytes` body bytes.
    fn failure(kind: Kind, detail: String, bytes: u64) -> ExchangeOutcome {
        ExchangeOutcome {
            kind,
            answer: None,
            detail: Some(detail),
            bytes,
        }
    }
}

pub(super) fn connect(
    opts: &LoadOptions,
    addr: SocketAddr,
    began: Instant,
) -> Result<TcpStream, ExchangeOutcome> {
    TcpStream::connect_timeout(&addr, opts.timeout)
        .map_err(|e| ExchangeOutcome::failure(classify(&e), format!("connect: {e}"), 0))
        .inspect(|c| {
            let left = opts
                .timeout
                .saturating_sub(began.elapsed())
                .max(Duration::from_millis(1));
            let _ = c.set_read_timeout(Some(left));
            let _ = c.set_write_timeout(Some(left));
            let _ = c.set_nodelay(true);
        })
}

/// How one exchange on a connection ended, besides its outcome.
pub(super) struct Exchanged {
    pub(super) outcome: ExchangeOutcome,
    /// The server keeps the connection open for the next request.
    pub(super) reusable: bool,
    /// Any byte of an answer arrived.
    pub(super) answered: bool,
    /// The answer said `Connection: close`.
    closed: bool,
}

impl Exchanged {
    /// The request's sample: it started at `start` and took `latency`.
    pub(super) fn sample(
        self,
        start: Duration,
        latency: Duration,
        reused: bool,
        retried: bool,
    ) -> Sample {
        let ExchangeOutcome {
            kind,
            answer,
            detail,
            bytes,
        } = self.outcome;
        Sample {
            start,
            latency,
            late: Duration::ZERO,
            kind,
            answer,
            detail,
            bytes,
            reused,
            retried,
            answered: self.answered,
            closed: self.closed,
        }
    }

    pub(super) fn failed(outcome: ExchangeOutcome, answered: bool) -> Exchanged {
        Exchanged {
            outcome,
            reusable: false,
            answered,
            closed: false,
        }
    }
}

/// Where a chunked body ends: walks the chunks as they arrive (a size line
/// with optional extensions, the data, CRLF; a zero-size chunk, then
/// trailer lines up to an empty one).
#[derive(Default)]
struct Chunks {
    /// Body bytes not yet walked.
    pending: Vec<u8>,
    /// Bytes of the current chunk (and its CRLF) still to skip.
    skip: usize,
    /// Past the zero-size chunk: reading trailer lines.
    trailers: bool,
    done: bool,
}

impl Chunks {
    fn feed(&mut self, more: &[u8]) {
        self.pending.extend_from_slice(more);
        while !self.done {
            if self.skip > 0 {
                let n = self.skip.min(self.pending.len());
                self.pending.drain(..n);
                self.skip -= n;
                if self.skip > 0 {
                    return;
                }
            }
            let Some(eol) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let line: Vec<u8> = self.pending.drain(..eol + 2).take(eol).collect();
            if self.trailers {
                self.done = line.is_empty();
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or_default().trim();
            match usize::from_str_radix(size, 16) {
                Ok(0) => self.trailers = true,
                Ok(n) => self.skip = n.saturating_add(2),
                // Not chunks after all: the answer then ends with the
                // connection (or the request times out).
                Err(_) => return,
            }
        }
    }
}

/// Sends one GET on `conn` and reads its answer: to the end of the
/// connection, or (`keep_alive`) to the end of the announced body
/// (Content-Length, or the last chunk).
pub(super) fn exchange(
    conn: &mut TcpStream,
    opts: &LoadOptions,
    addr: SocketAddr,
    began: Instant,
    keep_alive: bool,
) -> Exchanged {
    let left = opts
        .timeout
        .saturating_sub(began.elapsed())
        .max(Duration::from_millis(1));
    let _ = conn.set_read_timeout(Some(left));
    let _ = conn.set_write_timeout(Some(left));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: swaplab-load\r\nConnection: {}\r\n\r\n",
        opts.path,
        if keep_alive { "keep-alive" } else { "close" }
    );
    if let Err(e) = conn.write_all(req.as_bytes()) {
        let o = ExchangeOutcome::failure(classify(&e), format!("send: {e}"), 0);
        return Exchanged::failed(o, false);
    }
    // The head, then the body counted as it streams (downloads can be
    // large): only its first bytes are kept, to see who answered.
    let mut got = Vec::new();
    let mut body_bytes: u64 = 0;
    let mut head_len = None;
    let mut length: Option<u64> = None;
    let mut chunks: Option<Chunks> = None;
    let mut buf = [0u8; 65536];
    loop {
        let ended =
            length.is_some_and(|n| body_bytes >= n) || chunks.as_ref().is_some_and(|c| c.done);
        if keep_alive && ended {
            break;
        }
        if began.elapsed() > opts.timeout {
            let o = ExchangeOutcome::failure(
                Kind::Timeout,
                format!("answer: too slow ({body_bytes} body bytes in)"),
                body_bytes,
            );
            return Exchanged::failed(o, !got.is_empty());
        }
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => match head_len {
                Some(_) => {
                    body_bytes += n as u64;
                    let keep = 512usize.saturating_sub(got.len()).min(n);
                    got.extend_from_slice(&buf[..keep]);
                    if let Some(c) = chunks.as_mut() {
                        c.feed(&buf[..n]);
                    }
                }
                None => {
                    got.extend_from_slice(&buf[..n]);
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        head_len = Some(i + 4);
                        body_bytes = (got.len() - i - 4) as u64;
                        length = header(&got[..i], "content-length").and_then(|v| v.parse().ok());
                        let te = header(&got[..i], "transfer-encoding").unwrap_or_default();
                        if has_token(&te, "chunked") {
                            let mut c = Chunks::default();
                            c.feed(&got[i + 4..]);
                            chunks = Some(c);
                        }
                        got.truncate((i + 4 + 512).min(got.len()));
                    } else if got.len() > 65536 {
                        let o =
                            ExchangeOutcome::failure(Kind::Other, "a head over 64 KiB".into(), 0);
                        return Exchanged::failed(o, true);
                    }
                }
            },
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                let at = match head_len {
                    Some(_) => format!(" after {body_bytes} body bytes"),
                    None if got.is_empty() => " (no answer)".to_string(),
                    None => String::new(),
                };
                let o =
                    ExchangeOutcome::failure(classify(&e), format!("receive{at}: {e}"), body_bytes);
                return Exchanged::failed(o, !got.is_empty());
            }
        }
    }
    let cut = chunks.as_ref().is_some_and(|c| !c.done);
    let (kind, answer, detail) = parse_response(&got, body_bytes, cut);
    let head = head_len.map(|h| &got[..h]).unwrap_or_default();
    let connection = header(head, "connection").unwrap_or_default();
    let closed = has_token(&connection, "close");
    // HTTP/1.1 keeps a connection unless told otherwise; HTTP/1.0 only
    // when told so.
    let kept = if head.starts_with(b"HTTP/1.1 ") {
        !closed
    } else {
        has_token(&connection, "keep-alive")
    };
    let reusable = keep_alive
        && kind == Kind::Completed
        && kept
        && (length.is_some() || chunks.as_ref().is_some_and(|c| c.done));
    Exchanged {
        outcome: ExchangeOutcome {
            kind,
            answer,
            detail,
            bytes: body_bytes,
        },
        reusable,
        answered: !got.is_empty(),
        closed,
    }
}

/// Whether a comma-separated header value holds `token` (any case).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The value of header `name` in a response head (case-insensitive).
fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// One GET of `path` at `addr` on a connection of its own (a readiness
/// probe): who answered a whole 200 answer (if it said), or what went
/// wrong.
pub fn get_once(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Option<Answer>, String> {
    let mut opts = LoadOptions::new(addr);
    opts.path = path.to_string();
    opts.timeout = timeout;
    let began = Instant::now();
    let mut conn = connect(&opts, addr, began).map_err(|o| o.detail.unwrap_or_default())?;
    match exchange(&mut conn, &opts, addr, began, false).outcome {
        ExchangeOutcome {
            kind: Kind::Completed,
            answer,
            ..
        } => Ok(answer),
        ExchangeOutcome { kind, detail, .. } => {
            Err(format!("{}: {}", kind.name(), detail.unwrap_or_default()))
        }
    }
}

/// Judges a whole response: `got` holds the head and the first bytes of the
/// body, `body_bytes` how many body bytes arrived in all; `cut`: a chunked
/// body ended (EOF) before its last chunk.
fn parse_response(
    got: &[u8],
    body_bytes: u64,
    cut: bool,
) -> (Kind, Option<Answer>, Option<String>) {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (
            Kind::ShortRead,
            None,
            Some(format!(
                "EOF after {} bytes, before the headers ended",
                got.len()
            )),
        );
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return (Kind::Other, None, Some(format!("status line `{status}`")));
    }
    if cut {
        return (
            Kind::ShortRead,
            None,
            Some(format!(
                "EOF after {body_bytes} body bytes, before the last chunk"
            )),
        );
    }
    let length = header(head.as_bytes(), "content-length").and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if body_bytes < n => (
            Kind::ShortRead,
            None,
            Some(format!("EOF after {body_bytes} of {n} body bytes")),
        ),
        // Any server's whole 200 answer is complete; swaplab's servers and
        // the configurations it writes also say who answered.
        _ => (Kind::Completed, Answer::parse(body), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::load::test_server::serial_server;

    #[test]
    fn responses_are_classified() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npid=1\n";
        assert_eq!(parse_response(ok, 6, false).0, Kind::Completed);
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\npid=1\n";
        assert_eq!(parse_response(short, 6, false).0, Kind::ShortRead);
        assert_eq!(parse_response(b"HTTP/1.1 20", 0, false).0, Kind::ShortRead);
        let bad = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(bad, 0, false).0, Kind::Other);
        // A large body counted, not kept: 1 MiB announced, 1 MiB arrived.
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\npid=9 gen=3\n....";
        let (k, a, _) = parse_response(big, 1 << 20, false);
        assert_eq!((k, a.map(|a| a.gen)), (Kind::Completed, Some(Some(3))));
    }

    #[test]
    fn chunked_bodies_end_at_their_last_chunk() {
        let whole = |parts: &[&[u8]]| {
            let mut c = Chunks::default();
            for p in parts {
                c.feed(p);
            }
            c.done
        };
        assert!(whole(&[b"5\r\nhello\r\n0\r\n\r\n"]));
        // Data that looks like an end, cut anywhere, is data.
        assert!(!whole(&[b"7\r\nab0\r\n\r\n"]));
        assert!(whole(&[b"7\r\nab0\r", b"\n\r\n", b"\r\n0\r\n\r\n"]));
        // Extensions and trailers.
        assert!(whole(&[b"3;x=1\r\nabc\r\n0;end\r\nX-T: 1\r\n\r\n"]));
        assert!(!whole(&[b"3\r\nabc\r\n0\r\nX-T: 1\r\n"]));
    }

    #[test]
    fn tokens_in_header_lists() {
        assert!(has_token("gzip, chunked", "chunked"));
        assert!(has_token("Keep-Alive, Upgrade", "keep-alive"));
        assert!(!has_token("closed", "close"));
    }

    #[test]
    fn a_chunked_answer_cut_by_fin_is_a_short_read() {
        // The last chunk never comes: the server closes after the first.
        let cut: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\npid=1\n\r\n";
        let (addr, server) = serial_server(cut, usize::MAX, Duration::ZERO, 1);
        let got = get_once(addr, "/", Duration::from_secs(5));
        server.join().unwrap();
        let e = got.expect_err("a chunked answer without its last chunk");
        assert!(e.starts_with("short read"), "{e}");
        // The whole answer, last chunk and all, is complete.
        let whole: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\npid=1\n\r\n0\r\n\r\n";
        let (addr, server) = serial_server(whole, usize::MAX, Duration::ZERO, 1);
        let got = get_once(addr, "/", Duration::from_secs(5));
        server.join().unwrap();
        assert!(got.is_ok(), "{got:?}");
    }
}
