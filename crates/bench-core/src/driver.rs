//! The load driver: one loop for every mode, composed from an optional arrival schedule and an
//! optional concurrency limit.
//!
//! For each request in order it waits for the request's arrival time (rate mode), then for a
//! concurrency slot, then spawns the request. This is `vllm bench serve`'s order, so a rate run
//! with a limit queues exactly as it does there. Arrival gaps are gamma-distributed with shape
//! `burstiness` and scale `1 / (rate * burstiness)` (mean gap `1 / rate`; burstiness 1 is a
//! Poisson process), drawn from a seeded generator.
//!
//! Stopping: when `stop` fires the driver sends nothing more, lets requests in flight finish for
//! the grace period, then aborts the rest; aborted requests come back as `Interrupted` failures.

use crate::client::Client;
use crate::config::RequestRate;
use crate::progress::Progress;
use crate::record::RequestRecord;
use crate::request::RequestPlan;
use crate::tokenizer::PromptTokenizer;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How requests are released.
#[derive(Debug, Clone)]
pub struct Driver {
    pub max_concurrency: Option<NonZeroUsize>,
    pub rate: RequestRate,
    pub burstiness: f64,
    pub seed: u64,
    pub grace: Duration,
}

/// What a phase produced.
#[derive(Debug)]
pub struct PhaseOutcome {
    /// One record per request that was sent, ordered by index.
    pub records: Vec<RequestRecord>,
    /// Requests never sent because the run was stopped.
    pub not_sent: usize,
}

/// Offsets from the start of the phase at which requests are due.
#[derive(Debug)]
pub struct ArrivalSchedule {
    gamma: Option<Gamma<f64>>,
    rng: ChaCha8Rng,
    next: Duration,
}

impl ArrivalSchedule {
    pub fn new(rate: RequestRate, burstiness: f64, seed: u64) -> Self {
        let gamma = match rate {
            RequestRate::Infinite => None,
            RequestRate::PerSecond(r) => Gamma::new(burstiness, 1.0 / (r * burstiness)).ok(),
        };
        Self {
            gamma,
            rng: ChaCha8Rng::seed_from_u64(seed),
            next: Duration::ZERO,
        }
    }

    /// The due offset of the next request; `None` in infinite-rate mode.
    pub fn next_due(&mut self) -> Option<Duration> {
        let gamma = self.gamma.as_ref()?;
        let due = self.next;
        self.next += Duration::from_secs_f64(gamma.sample(&mut self.rng));
        Some(due)
    }
}

/// Sends every plan under `driver`'s rules and collects the records.
pub async fn drive(
    client: &Client,
    plans: &Arc<Vec<RequestPlan>>,
    driver: &Driver,
    tokenizer: &Arc<PromptTokenizer>,
    stop: &CancellationToken,
    progress: &Progress,
) -> PhaseOutcome {
    let abort = CancellationToken::new();
    let slots = driver
        .max_concurrency
        .map(|n| Arc::new(Semaphore::new(n.get())));
    let mut schedule = ArrivalSchedule::new(driver.rate, driver.burstiness, driver.seed);
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let mut sent = 0;
    for i in 0..plans.len() {
        let scheduled = schedule.next_due().map(|d| start + d);
        if let Some(at) = scheduled {
            tokio::select! {
                () = tokio::time::sleep_until(at.into()) => {}
                () = stop.cancelled() => break,
            }
        }
        let permit = match &slots {
            Some(s) => tokio::select! {
                p = s.clone().acquire_owned() => p.ok(),
                () = stop.cancelled() => break,
            },
            None => None,
        };
        if stop.is_cancelled() {
            break;
        }
        let (client, plans, tokenizer, abort, progress) = (
            client.clone(),
            Arc::clone(plans),
            Arc::clone(tokenizer),
            abort.clone(),
            progress.clone(),
        );
        tasks.spawn(async move {
            let record = client
                .send(&plans[i], scheduled, Some(&tokenizer), &abort)
                .await;
            drop(permit);
            progress.inc(record.is_success());
            record
        });
        sent += 1;
    }
    let records = collect(tasks, stop, &abort, driver.grace).await;
    PhaseOutcome {
        records,
        not_sent: plans.len() - sent,
    }
}

/// Waits for every task; after `stop`, gives them `grace` and then aborts the rest.
async fn collect(
    mut tasks: JoinSet<RequestRecord>,
    stop: &CancellationToken,
    abort: &CancellationToken,
    grace: Duration,
) -> Vec<RequestRecord> {
    let mut records = Vec::with_capacity(tasks.len());
    let mut grace_ends: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(record)) => records.push(record),
                Some(Err(e)) => tracing::error!("a request task failed: {e}"),
                None => break,
            },
            () = stop.cancelled(), if grace_ends.is_none() => {
                grace_ends = Some(tokio::time::Instant::now() + grace);
            }
            () = sleep_until_opt(grace_ends), if grace_ends.is_some() && !abort.is_cancelled() => {
                abort.cancel();
            }
        }
    }
    records.sort_by_key(|r| r.index);
    records
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinite_rate_has_no_schedule() {
        assert_eq!(
            ArrivalSchedule::new(RequestRate::Infinite, 1.0, 0).next_due(),
            None
        );
    }

    #[test]
    fn poisson_schedule_has_the_requested_mean_rate_and_is_seeded() {
        let mut a = ArrivalSchedule::new(RequestRate::PerSecond(20.0), 1.0, 42);
        let dues: Vec<Duration> = (0..20_001).filter_map(|_| a.next_due()).collect();
        assert_eq!(dues[0], Duration::ZERO);
        let mean_gap = dues[20_000].as_secs_f64() / 20_000.0;
        assert!((mean_gap - 0.05).abs() < 0.002, "mean gap {mean_gap}");
        let mut b = ArrivalSchedule::new(RequestRate::PerSecond(20.0), 1.0, 42);
        assert!((0..100).all(|i| b.next_due() == Some(dues[i])));
    }

    #[test]
    fn burstiness_changes_the_spread_not_the_mean() {
        let gaps = |burstiness: f64| {
            let mut s = ArrivalSchedule::new(RequestRate::PerSecond(10.0), burstiness, 1);
            let d: Vec<f64> = (0..20_000)
                .filter_map(|_| s.next_due())
                .map(|d| d.as_secs_f64())
                .collect();
            let g: Vec<f64> = d.windows(2).map(|w| w[1] - w[0]).collect();
            let mean = g.iter().sum::<f64>() / g.len() as f64;
            let var = g.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / g.len() as f64;
            (mean, var.sqrt() / mean)
        };
        let (m1, cv1) = gaps(1.0);
        let (m4, cv4) = gaps(4.0);
        assert!((m1 - 0.1).abs() < 0.005 && (m4 - 0.1).abs() < 0.005);
        // Gamma CV is 1/sqrt(shape): 1 for Poisson, 0.5 for burstiness 4.
        assert!(
            (cv1 - 1.0).abs() < 0.05 && (cv4 - 0.5).abs() < 0.05,
            "{cv1} {cv4}"
        );
    }
}
