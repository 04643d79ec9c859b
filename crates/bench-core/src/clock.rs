//! Instants as CLOCK_MONOTONIC nanoseconds, so the client's timestamps can be set against another
//! process's log on the same machine (the simulator's truth log does the same).
//!
//! `std::time::Instant` is CLOCK_MONOTONIC on Linux but opaque; one paired reading of both at
//! start converts any later `Instant` exactly (up to the nanoseconds between the two reads).

use std::time::Instant;

/// Converts `Instant`s to CLOCK_MONOTONIC nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    base: Instant,
    base_ns: u64,
}

impl MonotonicClock {
    /// `None` where CLOCK_MONOTONIC cannot be read (not Linux).
    pub fn new() -> Option<Self> {
        let base = Instant::now();
        Some(Self {
            base,
            base_ns: monotonic_ns()?,
        })
    }

    pub fn ns(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.base) {
            Some(after) => self.base_ns + after.as_nanos() as u64,
            None => self.base_ns - (self.base - t).as_nanos() as u64,
        }
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn monotonic_ns() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (rc == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
fn monotonic_ns() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn conversion_keeps_order_and_spacing() {
        // Instants before the pairing convert as exactly as those after it.
        let early = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let c = MonotonicClock::new().expect("CLOCK_MONOTONIC is readable on Linux");
        let a = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(5));
        let b = Instant::now();
        let (ne, na, nb) = (c.ns(early), c.ns(a), c.ns(b));
        assert_eq!(nb - na, (b - a).as_nanos() as u64);
        assert_eq!(na - ne, (a - early).as_nanos() as u64);
        // Agrees with a fresh reading of the clock to well under a millisecond.
        let now = monotonic_ns().expect("linux");
        assert!(now.abs_diff(c.ns(Instant::now())) < 1_000_000);
    }

    /// Elsewhere there is no clock to convert to, and callers are told so.
    #[cfg(not(target_os = "linux"))]
    #[test]
    fn there_is_no_monotonic_clock_to_convert_to_off_linux() {
        assert!(MonotonicClock::new().is_none());
    }
}
