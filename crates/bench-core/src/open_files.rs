//! Enough file descriptors for the asked concurrency, checked before the first request.
//!
//! Every request in flight holds a socket, and a run at 10,000 concurrent streams needs more
//! descriptors than the 1,024 most shells allow by default. Running out midway would fail
//! requests with "too many open files" and count them as the server's failures; instead the
//! soft limit is raised to what is needed (up to the hard limit, as any process may), and when
//! even the hard limit is too low the run does not start and says how to raise it.

/// Descriptors a run needs besides its sockets: the runtime, the tokenizer, the log, the result
/// file, the metrics scraper and what the simulator serves when it runs in the same process.
pub const RESERVED: u64 = 64;

/// The hard limit is below what the concurrency needs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{concurrency} requests in flight need about {needed} open files, and this process may \
     open at most {hard} (ulimit -n {hard}); raise the limit (`ulimit -n {needed}` in the job \
     script, or `nofile` in /etc/security/limits.conf, or LimitNOFILE for a service) or lower \
     --max-concurrency"
)]
pub struct TooFewFiles {
    pub concurrency: u64,
    pub needed: u64,
    pub hard: u64,
}

/// Makes sure `concurrency` requests (plus [`RESERVED`]) can be open at once: raises the soft
/// limit when it is lower and the hard limit allows. Returns the soft limit now in force.
#[cfg(unix)]
#[allow(unsafe_code)]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 here but not on every Unix.
pub fn ensure(concurrency: u64) -> Result<u64, TooFewFiles> {
    let needed = concurrency.saturating_add(RESERVED);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Ok(u64::MAX); // Unknown: let the run find out.
    }
    let (soft, hard) = (lim.rlim_cur as u64, lim.rlim_max as u64);
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed {
        return Err(TooFewFiles {
            concurrency,
            needed,
            hard,
        });
    }
    lim.rlim_cur = needed as libc::rlim_t;
    // SAFETY: setrlimit reads the struct we own; a soft limit at or below the hard one is
    // always allowed.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Ok(soft);
    }
    Ok(needed)
}

/// Without `getrlimit`, nothing to check.
#[cfg(not(unix))]
pub fn ensure(_concurrency: u64) -> Result<u64, TooFewFiles> {
    Ok(u64::MAX)
}

#[cfg(all(test, unix))]
#[allow(unsafe_code)]
#[allow(clippy::unnecessary_cast)]
mod tests {
    use super::*;

    #[test]
    fn a_concurrency_above_the_hard_limit_is_refused_naming_both() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `ensure`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let hard = lim.rlim_max as u64;
        if hard == libc::RLIM_INFINITY as u64 {
            return; // Nothing is above an unlimited hard limit.
        }
        let err = ensure(hard).expect_err("hard + reserve is above the hard limit");
        assert_eq!(err.hard, hard);
        assert_eq!(err.needed, hard + RESERVED);
        let text = err.to_string();
        assert!(
            text.contains("ulimit -n") && text.contains("--max-concurrency"),
            "{text}"
        );
    }

    #[test]
    fn a_concurrency_within_the_hard_limit_raises_the_soft_one() {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `ensure`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let hard = (lim.rlim_max as u64).min(1 << 20);
        let want = hard.saturating_sub(RESERVED).min(4096);
        let soft = ensure(want).expect("within the hard limit");
        assert!(soft >= want + RESERVED);
        // SAFETY: as in `ensure`.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert!(lim.rlim_cur as u64 >= want + RESERVED);
    }
}
