//! The floor: a minimal reader of the same streams that parses no JSON, in its own process pinned
//! like `bench`. One thread, epoll (through mio), one read per readiness event, a read that does
//! not fill the buffer taken as draining the socket. With a wake interval, it sleeps before each
//! poll until that long after the last one, so that one wake-up serves every socket ready by then.
//! It opens `streams` connections, runs one warm-up request on each, then one measured request on
//! each, all at once, and counts the CPU the measured round took the same way `bench` does.

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Stream {
    socket: TcpStream,
    /// The request is not written yet (the connection may still be opening).
    unsent: bool,
    /// The last bytes read, to spot the terminal chunk across reads.
    tail: Vec<u8>,
    done: bool,
}

/// Runs the floor reader and returns CPU seconds per 100,000 output events.
pub fn run(addr: SocketAddr, streams: usize, tokens: u64, wake: Duration) -> super::Result<f64> {
    let body = format!(
        r#"{{"model":"m","prompt":"hello","max_tokens":{tokens},"stream":true,"ignore_eos":true,"stream_options":{{"include_usage":true}}}}"#
    );
    let request = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut poll = Poll::new()?;
    let mut all = Vec::with_capacity(streams);
    for i in 0..streams {
        let mut socket = TcpStream::connect(addr)?;
        socket.set_nodelay(true)?;
        poll.registry().register(
            &mut socket,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        all.push(Stream {
            socket,
            unsent: true,
            tail: Vec::new(),
            done: false,
        });
    }
    round(&mut poll, &mut all, request.as_bytes(), wake)?;
    let before = bench_core::overhead::cpu_time().ok_or("no CPU time")?;
    round(&mut poll, &mut all, request.as_bytes(), wake)?;
    let after = bench_core::overhead::cpu_time().ok_or("no CPU time")?;
    let events = streams as f64 * tokens as f64;
    Ok((after - before).as_secs_f64() / events * 1e5)
}

/// Sends one request on every stream and reads every reply to its end, waking at most once
/// per `wake`.
fn round(poll: &mut Poll, all: &mut [Stream], request: &[u8], wake: Duration) -> super::Result<()> {
    for s in all.iter_mut() {
        s.unsent = true;
        s.done = false;
        s.tail.clear();
        send(s, request)?;
    }
    let mut left = all.len();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut woke = Instant::now();
    while left > 0 {
        std::thread::sleep(wake.saturating_sub(woke.elapsed()));
        poll.poll(&mut events, None)?;
        woke = Instant::now();
        for e in &events {
            let s = &mut all[e.token().0];
            if s.unsent {
                send(s, request)?;
            }
            if s.done || !e.is_readable() {
                continue;
            }
            loop {
                match s.socket.read(&mut buf) {
                    Ok(0) => return Err("the simulator closed a connection".into()),
                    Ok(n) => {
                        s.tail.extend_from_slice(&buf[..n]);
                        let keep = s.tail.len().saturating_sub(5);
                        s.tail.drain(..keep);
                        if s.tail == b"0\r\n\r\n" {
                            s.done = true;
                            left -= 1;
                        }
                        if n < buf.len() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

fn send(s: &mut Stream, request: &[u8]) -> super::Result<()> {
    match s.socket.write(request) {
        Ok(n) if n == request.len() => {
            s.unsent = false;
            Ok(())
        }
        Ok(_) => Err("a short write of a small request".into()),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::NotConnected) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
