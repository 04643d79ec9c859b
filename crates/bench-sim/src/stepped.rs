//! The stepped clock: modelled time that moves from one engine step to the next, whatever the
//! machine's speed, for a client in the same process that says what it read.
//!
//! In real time (scaled or not) the batching engine sleeps until each step's planned end, and a
//! machine that wakes it late, hands its tokens over late or turns the client's closed loop
//! around slowly changes the schedule: requests join later steps, tokens reach the client late.
//! The stepped clock takes the wall clock out of the model. The engine computes a step, hands its
//! tokens over, and then *waits*, in a **window**, until
//!
//! - every token it emitted has been handed over to its connection, and the client has read
//!   every event handed over (the client reports each read: [`SteppedClock::event_read`]), and
//! - every request the client's closed loop owes has arrived: the first requests of a phase (as
//!   many as its concurrency), and one for each request of the phase that ended while the phase
//!   has requests left ([`crate::SimHandle::closed_loop`] says what the phases are);
//!
//! then it plans the next step at the modelled instant the last one ended. Requests that arrive
//! during a window arrive, in modelled time, just after the step that follows it began (a
//! nanosecond apart, in their order), as a request sent when a token arrives does in real time:
//! they join the step after next, never the next one. A window that waits longer than
//! [`WINDOW_TIMEOUT`] goes on without what it waited for and is counted
//! ([`SteppedClock::timeouts`]): a client that did not do what it announced.
//!
//! Every window is logged with the wall instant it opened and the modelled instant it stands for.
//! Anything the client stamped during a window (a token's arrival, a request's send, a stream's
//! end) happened, in modelled time, at that window's instant: [`SteppedClock::modelled`] maps a
//! wall instant to it. A client's records mapped through it are the model's timeline, with the
//! client's own per-request cost (a fraction of a millisecond of wall time) taken out, as it is
//! nearly nothing against a real deployment's steps. The wall time a stepped run takes is what
//! the machine needs to hand tokens over and have them read, not the model's time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a window waits for reads and owed arrivals before it goes on without them.
pub const WINDOW_TIMEOUT: Duration = Duration::from_secs(2);

/// One phase of a closed loop: `requests` sent, at most `concurrency` at a time, the next one
/// as soon as one ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub requests: u64,
    pub concurrency: u64,
}

/// The phases of the latest announcement, by announced position.
#[derive(Debug, Clone, Default)]
pub(crate) struct Phases {
    /// Bumped by every [`SteppedClock::closed_loop`]: the engine's counts start again.
    pub(crate) generation: u64,
    /// The announced position of the first phase's first request.
    pub(crate) first: u64,
    pub(crate) list: Vec<Phase>,
}

impl Phases {
    /// The phase the request at announced `position` belongs to.
    pub(crate) fn of(&self, position: u64) -> Option<usize> {
        let mut start = self.first;
        for (i, p) in self.list.iter().enumerate() {
            if position >= start && position < start + p.requests {
                return Some(i);
            }
            start += p.requests;
        }
        None
    }
}

/// The clock shared by the engine thread, the replies and the client.
#[derive(Debug, Default)]
pub struct SteppedClock {
    /// Tokens the engine sent to live streams.
    pub(crate) emitted: AtomicU64,
    /// Tokens the replies took from the engine.
    pub(crate) consumed: AtomicU64,
    /// Events carrying output the replies handed over to their connections.
    pub(crate) handed: AtomicU64,
    /// Output events the client read.
    read: AtomicU64,
    /// (wall instant a window opened, the modelled instant it stands for), in order.
    windows: Mutex<Vec<(Instant, Instant)>>,
    phases: Mutex<Phases>,
    engine: OnceLock<Thread>,
    timeouts: AtomicU64,
}

impl SteppedClock {
    /// The client read one event that carried output. Call it once per such event, after the
    /// event's arrival was stamped.
    pub fn event_read(&self) {
        let read = self.read.fetch_add(1, Ordering::SeqCst) + 1;
        // The engine waits for the last event handed over; earlier ones need not wake it.
        if read >= self.handed.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    /// The latest announcement ([`crate::SimHandle::pretokenize`]) is a closed loop of these
    /// phases, in announced order: the engine waits for the requests they owe.
    pub(crate) fn closed_loop(&self, first: u64, phases: &[Phase]) {
        if let Ok(mut p) = self.phases.lock() {
            p.generation += 1;
            p.first = first;
            p.list = phases.to_vec();
        }
        self.wake();
    }

    /// The closed loop is over (its client stopped sending): nothing is owed any more, and
    /// windows wait only for reads.
    pub fn end_loop(&self) {
        if let Ok(mut p) = self.phases.lock() {
            p.generation += 1;
            p.list.clear();
        }
        self.wake();
    }

    pub(crate) fn phases(&self) -> Phases {
        self.phases.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The modelled instant of the window open at `wall`: when the client did something at
    /// `wall`, in modelled time. Before the first window, the first window's instant.
    pub fn modelled(&self, wall: Instant) -> Instant {
        let Ok(windows) = self.windows.lock() else {
            return wall;
        };
        let after = windows.partition_point(|(w, _)| *w <= wall);
        match after.checked_sub(1).and_then(|i| windows.get(i)) {
            Some((_, v)) => *v,
            None => windows.first().map_or(wall, |(_, v)| *v),
        }
    }

    /// Windows that went on without what they waited for.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }

    /// Windows opened so far (one per step, and the first).
    pub fn windows(&self) -> usize {
        self.windows.lock().map_or(0, |w| w.len())
    }

    pub(crate) fn attach(&self, engine: Thread) {
        let _ = self.engine.set(engine);
    }

    pub(crate) fn wake(&self) {
        if let Some(t) = self.engine.get() {
            t.unpark();
        }
    }

    /// Opens the window of modelled instant `modelled`, from now.
    pub(crate) fn open_window(&self, modelled: Instant) {
        if let Ok(mut w) = self.windows.lock() {
            w.push((Instant::now(), modelled));
        }
    }

    /// Every token emitted was handed over and every event handed over was read.
    pub(crate) fn all_read(&self) -> bool {
        // Consumed, then handed, then read: a reply counts an event handed over before it counts
        // its token consumed, so a token seen consumed has its event counted as handed.
        let consumed = self.consumed.load(Ordering::SeqCst);
        let handed = self.handed.load(Ordering::SeqCst);
        let read = self.read.load(Ordering::SeqCst);
        consumed >= self.emitted.load(Ordering::SeqCst) && read >= handed
    }

    /// A window went on without the client: what it had not read by now is not waited for
    /// again (a stream the client dropped is never read to its end).
    pub(crate) fn note_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
        self.consumed
            .fetch_max(self.emitted.load(Ordering::SeqCst), Ordering::SeqCst);
        self.read
            .fetch_max(self.handed.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_instant_maps_to_the_window_open_at_it() {
        let clock = SteppedClock::default();
        let before = Instant::now();
        let base = before + Duration::from_secs(100);
        clock.open_window(base);
        std::thread::sleep(Duration::from_millis(2));
        let during_first = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        clock.open_window(base + Duration::from_millis(30));
        let during_second = Instant::now();
        assert_eq!(clock.modelled(before), base, "before any window: the first");
        assert_eq!(clock.modelled(during_first), base);
        assert_eq!(
            clock.modelled(during_second),
            base + Duration::from_millis(30)
        );
        assert_eq!(clock.windows(), 2);
    }

    #[test]
    fn a_window_that_timed_out_waits_no_more_for_what_was_unread_then() {
        // A stream the client dropped: tokens sent that its reply never took, events handed
        // over that the client never read.
        let clock = SteppedClock::default();
        clock.emitted.store(5, Ordering::SeqCst);
        clock.consumed.store(3, Ordering::SeqCst);
        clock.handed.store(3, Ordering::SeqCst);
        clock.event_read();
        assert!(!clock.all_read());
        clock.note_timeout();
        assert!(
            clock.all_read(),
            "the next window does not wait for them again"
        );
        assert_eq!(clock.timeouts(), 1);
        // What comes after is waited for as before.
        clock.emitted.fetch_add(1, Ordering::SeqCst);
        assert!(!clock.all_read());
        clock.consumed.fetch_add(1, Ordering::SeqCst);
        clock.handed.fetch_add(1, Ordering::SeqCst);
        assert!(!clock.all_read());
        clock.event_read();
        assert!(clock.all_read());
    }

    #[test]
    fn phases_give_each_announced_position_its_phase() {
        let phases = Phases {
            generation: 1,
            first: 10,
            list: vec![
                Phase {
                    requests: 2,
                    concurrency: 2,
                },
                Phase {
                    requests: 3,
                    concurrency: 2,
                },
            ],
        };
        let of: Vec<_> = (9..16).map(|p| phases.of(p)).collect();
        assert_eq!(
            of,
            [None, Some(0), Some(0), Some(1), Some(1), Some(1), None]
        );
    }
}
