//! `--clients N`: one sweep driven by N client processes at once (a sweep job's `srun` tasks, on
//! one machine or several), for loads one client machine cannot drive.
//!
//! Every client runs the same sweep. Per cell, each sends its share: concurrency C is split
//! as evenly as it goes (client k gets C/N, one more for the first C mod N clients) and the
//! prompts and warm-ups with it; each draws prompts of its own (its number is in the seed and in
//! every request id). After its warm-up a client waits at a barrier until every client is warm,
//! so the measured phases start together; each then writes its part
//! ([`bench_core::merge::ClientPart`]). Client 0 gathers every part, merges them
//! ([`bench_core::merge::merge`]) and writes the cell's result in the usual format, with its
//! per-request file; the others only send. The coordination files (`ready.<k>`, `part.<k>.json`)
//! live in `<results-dir>/clients/<cell>.<run id>/` on the storage every client shares, and are
//! kept. The run id (`--clients-id`, by default the Slurm job and step) keeps a resubmission's
//! barriers apart from an earlier one's.

use crate::cell::Cell;
use bench_core::merge::ClientPart;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Which of how many clients this process is, and the run they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clients {
    pub count: u32,
    pub index: u32,
    pub run_id: String,
}

/// How often a client looks for the others' files.
const POLL: Duration = Duration::from_millis(20);

impl Clients {
    /// Client 0 merges and writes each cell's result.
    pub fn is_merger(&self) -> bool {
        self.index == 0
    }

    /// This client's share of `cell`: its concurrency, and the prompts and warm-ups in
    /// proportion.
    pub fn share(&self, cell: &Cell) -> Cell {
        let (n, k) = (u64::from(self.count), u64::from(self.index));
        let concurrency = cell.concurrency / n + u64::from(k < cell.concurrency % n);
        let part = |whole: u64| whole * concurrency / cell.concurrency.max(1);
        Cell {
            concurrency,
            num_prompts: part(cell.num_prompts),
            num_warmups: part(cell.num_warmups),
            ..*cell
        }
    }

    /// The folder of `cell`'s coordination files, for the result named `stem`.
    pub fn dir(&self, results: &Path, stem: &str) -> PathBuf {
        results
            .join("clients")
            .join(format!("{stem}.{}", self.run_id))
    }

    /// Says this client is ready and waits for every other one; `Err` says who did not come.
    pub async fn barrier(
        &self,
        dir: &Path,
        stop: &CancellationToken,
        timeout: Duration,
    ) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        bench_result::atomic::write(&dir.join(format!("ready.{}", self.index)), b"")
            .map_err(|e| format!("writing into {}: {e}", dir.display()))?;
        let missing = self.wait_for(dir, "ready.", "", stop, timeout).await.err();
        match missing {
            None => Ok(()),
            Some(m) => Err(format!(
                "clients {m} did not reach the start of the measured phase within {} s (see {})",
                timeout.as_secs(),
                dir.display()
            )),
        }
    }

    /// Says this client's measured phase has ended; client 0 then waits for every other one's,
    /// so its reading of the server's counters covers every client's requests.
    pub async fn ended(
        &self,
        dir: &Path,
        stop: &CancellationToken,
        timeout: Duration,
    ) -> Result<(), String> {
        bench_result::atomic::write(&dir.join(format!("ended.{}", self.index)), b"")
            .map_err(|e| format!("writing into {}: {e}", dir.display()))?;
        if !self.is_merger() {
            return Ok(());
        }
        self.wait_for(dir, "ended.", "", stop, timeout)
            .await
            .map_err(|m| format!("clients {m} did not end their measured phase"))
    }

    /// Writes this client's part of the cell.
    pub fn write_part(&self, dir: &Path, part: &ClientPart) -> std::io::Result<()> {
        bench_result::atomic::write_json(&dir.join(format!("part.{}.json", self.index)), part)
    }

    /// Every client's part once all are there; the parts there and who is missing when `stop`
    /// or `timeout` comes first.
    pub async fn gather(
        &self,
        dir: &Path,
        stop: &CancellationToken,
        timeout: Duration,
    ) -> (Vec<ClientPart>, Option<String>) {
        let missing = self
            .wait_for(dir, "part.", ".json", stop, timeout)
            .await
            .err();
        let parts = (0..self.count)
            .filter_map(|k| {
                let bytes = std::fs::read(dir.join(format!("part.{k}.json"))).ok()?;
                serde_json::from_slice(&bytes).ok()
            })
            .collect();
        (parts, missing)
    }

    /// Waits until `<prefix><k><suffix>` is in `dir` for every client; `Err` lists the clients
    /// still missing when stopped or timed out.
    async fn wait_for(
        &self,
        dir: &Path,
        prefix: &str,
        suffix: &str,
        stop: &CancellationToken,
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let missing: Vec<String> = (0..self.count)
                .filter(|k| !dir.join(format!("{prefix}{k}{suffix}")).exists())
                .map(|k| k.to_string())
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            if stop.is_cancelled() || Instant::now() >= deadline {
                return Err(missing.join(", "));
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(concurrency: u64) -> Cell {
        Cell {
            input_len: 1024,
            output_len: 128,
            concurrency,
            num_prompts: 10 * concurrency,
            num_warmups: 2 * concurrency,
            run: 1,
        }
    }

    #[test]
    fn the_shares_add_up_to_the_cell() {
        for (count, concurrency) in [(2, 4), (3, 16), (4, 4), (3, 7)] {
            let shares: Vec<Cell> = (0..count)
                .map(|index| {
                    Clients {
                        count,
                        index,
                        run_id: "r".into(),
                    }
                    .share(&cell(concurrency))
                })
                .collect();
            let sum = |f: fn(&Cell) -> u64| shares.iter().map(f).sum::<u64>();
            assert_eq!(sum(|c| c.concurrency), concurrency);
            assert_eq!(sum(|c| c.num_prompts), 10 * concurrency);
            assert_eq!(sum(|c| c.num_warmups), 2 * concurrency);
            let most = shares.iter().map(|c| c.concurrency).max().unwrap_or(0);
            let least = shares.iter().map(|c| c.concurrency).min().unwrap_or(0);
            assert!(
                most - least <= 1,
                "{count} clients, concurrency {concurrency}"
            );
        }
    }

    #[tokio::test]
    async fn the_barrier_opens_when_every_client_is_there_and_names_who_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clients = |index| Clients {
            count: 2,
            index,
            run_id: "r".into(),
        };
        let stop = CancellationToken::new();
        let at = dir.path().join("cell.r");
        let lone = clients(0)
            .barrier(&at, &stop, Duration::from_millis(100))
            .await;
        assert!(lone.expect_err("alone").contains("clients 1 did not reach"));
        let (zero, one) = (clients(0), clients(1));
        let (a, b) = tokio::join!(
            zero.barrier(&at, &stop, Duration::from_secs(10)),
            one.barrier(&at, &stop, Duration::from_secs(10)),
        );
        assert_eq!((a, b), (Ok(()), Ok(())));
    }
}
