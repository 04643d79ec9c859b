//! Announced requests reach the engine in the order they were announced.
//!
//! A client that announces its requests ahead ([`crate::SimHandle::pretokenize`]) sends them in
//! that order, but requests sent together reach the server in whichever order the machine
//! delivers them, microseconds apart. When their prompts differ in length, which one an idle
//! engine starts with, or which one gets a step's prefill budget first, changes the whole
//! schedule after it: the same requests run twice could differ by 5% in median TTFT. So an
//! announced request waits for its turn, until every request announced before it has been handed
//! to the engine (at most [`MAX_WAIT`]), and the engine takes it as arriving no earlier than just
//! after them. The schedule then follows the announced order, not the machine's delivery order.
//! Requests that were not announced keep their own arrival.

use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a request waits for one announced before it. Past that the earlier request is taken
/// as never coming (its client did not send it) and the order goes on without it.
pub const MAX_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Positions handed out so far.
    announced: u64,
    /// The latest announcement's first position.
    first: u64,
    /// The position whose turn it is.
    next: u64,
    /// When the engine takes the last request handed over in turn as arriving.
    last: Option<Instant>,
}

/// The order of the latest announcement; an announcement replaces the one before it.
#[derive(Debug)]
pub struct AnnouncedOrder {
    progress: watch::Sender<Progress>,
}

impl Default for AnnouncedOrder {
    fn default() -> Self {
        Self {
            progress: watch::Sender::new(Progress::default()),
        }
    }
}

impl AnnouncedOrder {
    /// Starts a new order of `n` requests; returns the first one's position (the others follow).
    /// Requests of earlier announcements that have not come yet go ahead without waiting.
    pub fn announce(&self, n: u64) -> u64 {
        let mut first = 0;
        self.progress.send_modify(|p| {
            first = p.announced;
            p.first = first;
            p.announced += n;
            p.next = first;
            p.last = None;
        });
        first
    }

    /// The latest announcement's first position.
    pub fn latest(&self) -> u64 {
        self.progress.borrow().first
    }

    /// Waits until it is the turn of the request at `position`, which reached the server at
    /// `arrival`; the returned turn passes to the next position when dropped, so drop it right
    /// after handing the request to the engine (or refusing it).
    pub async fn turn(&self, position: u64, arrival: Instant) -> Turn<'_> {
        let mut rx = self.progress.subscribe();
        let waited = tokio::time::timeout(MAX_WAIT, rx.wait_for(|p| p.next >= position)).await;
        if waited.is_err() {
            tracing::warn!(
                "announced request {position} waited {MAX_WAIT:?} for one announced before it \
                 and goes ahead: the order of this run's requests is the machine's"
            );
            self.progress.send_if_modified(|p| {
                let skip = p.next < position;
                p.next = p.next.max(position);
                skip
            });
        }
        let p = *self.progress.borrow();
        if p.next != position {
            // Its announcement was replaced, or it came after the order went on without it.
            return Turn {
                order: self,
                position: None,
                arrival,
            };
        }
        let after = p
            .last
            .map_or(arrival, |last| arrival.max(last + Duration::from_nanos(1)));
        Turn {
            order: self,
            position: Some(position),
            arrival: after,
        }
    }
}

/// A request's turn in the announced order.
#[derive(Debug)]
pub struct Turn<'a> {
    order: &'a AnnouncedOrder,
    /// `None` when the request is out of the order.
    position: Option<u64>,
    arrival: Instant,
}

impl Turn<'_> {
    /// When the engine is to take the request as arriving: its own arrival, or just after the
    /// request before it, whichever is later.
    pub fn arrival(&self) -> Instant {
        self.arrival
    }

    /// Its place in the announced order; `None` when it came out of the order.
    pub fn position(&self) -> Option<u64> {
        self.position
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(position) = self.position else {
            return;
        };
        let arrival = self.arrival;
        self.order.progress.send_if_modified(|p| {
            let mine = p.next == position;
            if mine {
                p.next += 1;
                p.last = Some(arrival);
            }
            mine
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn requests_that_come_swapped_are_handed_over_in_the_announced_order() {
        let order = Arc::new(AnnouncedOrder::default());
        let first = order.announce(3);
        // The third request comes first, then the second, then the first.
        let handed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (k, delay_ms) in [(2u64, 0u64), (1, 5), (0, 10)] {
            let (order, handed) = (Arc::clone(&order), Arc::clone(&handed));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let arrival = Instant::now();
                let turn = order.turn(first + k, arrival).await;
                handed
                    .lock()
                    .expect("lock")
                    .push((k, turn.arrival(), arrival));
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let handed = handed.lock().expect("lock").clone();
        let positions: Vec<u64> = handed.iter().map(|h| h.0).collect();
        assert_eq!(positions, [0, 1, 2], "handed over in the announced order");
        // The engine sees them arrive in that order, strictly after each other, and never
        // before they reached the server.
        for pair in handed.windows(2) {
            assert!(pair[1].1 > pair[0].1);
        }
        for (_, engine_arrival, own) in &handed {
            assert!(engine_arrival >= own);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_announced_but_never_sent_holds_the_others_back_at_most_max_wait() {
        let order = AnnouncedOrder::default();
        let first = order.announce(3);
        // Position `first` never comes.
        let started = tokio::time::Instant::now();
        let second = order.turn(first + 1, Instant::now()).await;
        assert_eq!(started.elapsed(), MAX_WAIT);
        drop(second);
        // The one after it has its turn at once.
        let before = tokio::time::Instant::now();
        let third = order.turn(first + 2, Instant::now()).await;
        assert_eq!(before.elapsed(), Duration::ZERO);
        drop(third);
        // And the missing one, if it comes late, goes ahead without waiting.
        let late = order.turn(first, Instant::now()).await;
        assert!(late.position.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_announcement_replaces_the_old_order() {
        let order = AnnouncedOrder::default();
        let old = order.announce(2);
        let new = order.announce(2);
        assert_eq!(new, old + 2);
        let before = tokio::time::Instant::now();
        // Neither waits for the first announcement's requests, which never came.
        drop(order.turn(new, Instant::now()).await);
        drop(order.turn(new + 1, Instant::now()).await);
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}
