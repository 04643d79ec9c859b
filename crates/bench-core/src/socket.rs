//! A TCP connection whose reads carry the moment the data reached this machine.
//!
//! A client that timestamps a read when it returns measures its own delays along with the
//! server's: when a thousand streams' tokens land at once, the last one read is stamped as late
//! as the client took to get to it. On Linux the kernel records when each packet arrived
//! (`SO_TIMESTAMPNS`, a software receive timestamp taken as the packet enters the network stack)
//! and hands it back with the read, so an event's time no longer depends on how busy the client
//! was. A read returns the arrival of the newest packet it consumed, which is never earlier than
//! any byte in it arrived and never later than the read. So stamps are exact while the client
//! keeps up with each stream to within the gap between that stream's events (thousands of
//! streams whose tokens land together each hold one event); a client further behind reads several
//! events of a stream at once, and they share the newest one's time, which is still earlier than
//! the read's.
//!
//! Elsewhere, or if the kernel gives no timestamp, the read's own return time is used. (The first
//! socket on a machine to ask for timestamps turns them on through a deferred kernel job, so the
//! very first packets after it may come unstamped.) Either way the read's return time is kept
//! too, so the client can report how long data waited for it ([`Arrival::waited`]).

use std::io::{self, IoSlice, Write};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::unix::AsyncFd;

/// When a read's bytes arrived, and when the read returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The kernel's arrival time for the newest bytes in the read, else the read's return.
    pub at: Instant,
    pub read_at: Instant,
    /// Whether `at` came from the kernel.
    pub kernel: bool,
}

impl Arrival {
    /// Now, as a read that got no kernel stamp.
    pub fn read_now() -> Self {
        let now = Instant::now();
        Self {
            at: now,
            read_at: now,
            kernel: false,
        }
    }

    /// How long the bytes waited in the socket for the client: zero without a kernel stamp.
    pub fn waited(&self) -> Duration {
        self.read_at.saturating_duration_since(self.at)
    }

    /// Never before `floor` (the request's send or the previous read's arrival): a wall-clock
    /// step between the kernel's stamp and the read cannot move an event before its cause.
    pub fn not_before(self, floor: Instant) -> Self {
        Self {
            at: self.at.max(floor).min(self.read_at),
            ..self
        }
    }
}

/// What a connection holds when looked at without waiting ([`StampedStream::peek_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Open, nothing to read.
    Quiet,
    /// Bytes are waiting.
    Data,
    /// The peer closed or reset it.
    Gone,
}

/// A connected, non-blocking TCP stream registered with the runtime.
#[derive(Debug)]
pub struct StampedStream {
    fd: AsyncFd<std::net::TcpStream>,
}

impl StampedStream {
    /// Connects with `TCP_NODELAY` and, where the platform has them, kernel receive timestamps.
    #[allow(unsafe_code)]
    pub async fn connect(authority: &str) -> io::Result<Self> {
        let stream = tokio::net::TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let std = stream.into_std()?;
        // Best effort: without timestamps, reads are stamped when they return.
        let _ = sys::enable_timestamps(&std);
        // SAFETY: the std stream owns its descriptor, which stays open and the same until the
        // `AsyncFd` (which owns the stream) is dropped.
        let fd = unsafe { AsyncFd::register(std) }?;
        Ok(Self { fd })
    }

    /// Writes every byte of `parts`, in order.
    pub async fn write_all(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|s| s.get_ref().write_vectored(slices)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => IoSlice::advance_slices(&mut slices, n),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// What the connection holds right now, looked at without waiting or consuming anything.
    pub fn peek_state(&self) -> PeerState {
        let mut probe = [0u8; 1];
        match self.fd.get_ref().peek(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => PeerState::Quiet,
            Ok(n) if n > 0 => PeerState::Data,
            Ok(_) | Err(_) => PeerState::Gone,
        }
    }

    /// Reads what is available and hands the bytes (empty at the end of the stream) and when
    /// they arrived to `take`, whose result it returns.
    ///
    /// The bytes live in a buffer shared by every stream on this thread: a read and its parsing
    /// happen in one go, so thousands of open streams need no buffer each.
    pub async fn read_with<R>(&self, mut take: impl FnMut(&[u8], Arrival) -> R) -> io::Result<R> {
        loop {
            let mut guard = self.fd.readable().await?;
            let outcome = READ_BUFFER.with_borrow_mut(|buf| {
                match guard.try_io(|s| sys::recv_stamped(s.get_ref(), buf)) {
                    Ok(Ok((n, stamp))) => {
                        let arrival = stamp.map_or_else(Arrival::read_now, from_wall_clock);
                        Some(Ok((n, take(&buf[..n], arrival))))
                    }
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => None,
                    Ok(Err(e)) => Some(Err(e)),
                    Err(_would_block) => None,
                }
            });
            match outcome {
                Some(Ok((n, result))) => {
                    // A read that did not fill the buffer drained the socket: wait for the next
                    // readiness event instead of paying for a read that would block.
                    if n > 0 && n < READ_BUFFER_BYTES {
                        guard.clear_ready();
                    }
                    return Ok(result);
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    }
}

/// Bytes taken by one read.
const READ_BUFFER_BYTES: usize = 64 * 1024;

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(vec![0; READ_BUFFER_BYTES]);
}

/// Converts the kernel's wall-clock stamp (time since the Unix epoch) to an `Instant` through a
/// paired reading of both clocks now: they advance together over the milliseconds involved.
fn from_wall_clock(stamp: Duration) -> Arrival {
    let (read_at, wall_now) = paired_now();
    let age = wall_now.saturating_sub(stamp);
    Arrival {
        at: read_at.checked_sub(age).unwrap_or(read_at),
        read_at,
        kernel: true,
    }
}

/// The monotonic and wall clocks read at (nearly) the same moment. A thread preempted between
/// the two reads would shift every stamp by the pause, so the pair is taken between two
/// monotonic reads and retaken if they are far apart.
fn paired_now() -> (Instant, Duration) {
    let wall = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
    };
    let mut best = None;
    for _ in 0..4 {
        let before = Instant::now();
        let w = wall();
        let after = Instant::now();
        let spread = after - before;
        let pair = (before + spread / 2, w, spread);
        if spread < PAIR_SPREAD {
            return (pair.0, pair.1);
        }
        if best.is_none_or(|(_, _, s)| spread < s) {
            best = Some(pair);
        }
    }
    best.map_or_else(|| (Instant::now(), wall()), |(m, w, _)| (m, w))
}

/// Widest gap between the monotonic reads around a wall-clock read taken as simultaneous.
const PAIR_SPREAD: Duration = Duration::from_micros(20);

/// How far a kernel stamp converted to an `Instant` may be from the true moment: half the
/// widest pairing accepted (the wall-clock read lies somewhere between the two monotonic ones).
/// A thread preempted inside a pairing retakes it, up to four times, then keeps the narrowest.
pub const CONVERSION_ERROR: Duration = Duration::from_micros(10);

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::net::TcpStream;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    pub fn enable_timestamps(stream: &TcpStream) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a c_int option value of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_TIMESTAMPNS,
                std::ptr::from_ref(&on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `recvmsg` into `buf`, returning the byte count and the `SCM_TIMESTAMPNS` stamp if any.
    pub fn recv_stamped(
        stream: &TcpStream,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<Duration>)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for a few control messages, aligned for `cmsghdr`.
        let mut control = [0u64; 16];
        // SAFETY: msghdr is plain data; all-zero is its empty value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: iov points at `buf` (writable for its length) and msg_control at `control`,
        // both alive for the call.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut stamp = None;
        // SAFETY: the CMSG_* walk stays within the msg_controllen bytes the kernel filled in.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    if let (Ok(s), Ok(ns)) = (u64::try_from(ts.tv_sec), u32::try_from(ts.tv_nsec)) {
                        stamp = Some(Duration::new(s, ns));
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok((n as usize, stamp))
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io::{self, Read};
    use std::net::TcpStream;
    use std::time::Duration;

    pub fn enable_timestamps(_: &TcpStream) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub fn recv_stamped(
        mut stream: &TcpStream,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<Duration>)> {
        stream.read(buf).map(|n| (n, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn reads_carry_the_arrival_not_the_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (stream, accepted) = tokio::join!(StampedStream::connect(&addr), listener.accept());
        let stream = stream.expect("connect");
        let (mut server, _) = accepted.expect("accept");
        // The kernel turns packet timestamping on shortly after the first socket asks for it (a
        // deferred job): until then reads come back unstamped.
        for _ in 0..100 {
            server.write_all(b".").await.expect("write");
            let stamped = stream
                .read_with(|_, arrival| arrival.kernel)
                .await
                .expect("read");
            if stamped || !cfg!(target_os = "linux") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.write_all(b"hello").await.expect("write");
        let written = Instant::now();
        // The client is busy elsewhere while the bytes wait in its socket.
        std::thread::sleep(Duration::from_millis(60));
        let (bytes, arrival) = stream
            .read_with(|b, arrival| (b.to_vec(), arrival))
            .await
            .expect("read");
        assert_eq!(bytes, b"hello");
        if cfg!(target_os = "linux") {
            assert!(arrival.kernel, "no kernel timestamp on Linux");
            assert!(
                arrival.at < written + Duration::from_millis(10),
                "stamped {:?} after the write",
                arrival.at - written
            );
            assert!(arrival.waited() >= Duration::from_millis(50));
        }
        server.write_all(b" world").await.expect("write");
        drop(server);
        let mut rest = Vec::new();
        loop {
            let n = stream
                .read_with(|b, _| {
                    rest.extend_from_slice(b);
                    b.len()
                })
                .await
                .expect("read");
            if n == 0 {
                break;
            }
        }
        assert_eq!(rest, b" world");
    }

    #[test]
    fn an_arrival_is_held_between_its_floor_and_the_read() {
        let read_at = Instant::now();
        let floor = read_at - Duration::from_millis(5);
        let stepped = Arrival {
            at: read_at - Duration::from_secs(60),
            read_at,
            kernel: true,
        };
        assert_eq!(stepped.not_before(floor).at, floor);
        let fine = Arrival {
            at: read_at - Duration::from_millis(1),
            ..stepped
        };
        assert_eq!(fine.not_before(floor), fine);
        assert_eq!(Arrival::read_now().waited(), Duration::ZERO);
    }
}
