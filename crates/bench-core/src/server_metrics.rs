//! The server's own view of a run, from its `/metrics` page.
//!
//! The page is scraped before the warm-up, when the measured phase starts, every `interval` while
//! it runs, and when it ends ([`Watch`]). Counters are differenced between the measured phase's
//! first and last scrape, gauges are kept at their peak over every scrape, and latency
//! histograms give the server's own means over the phase (`_sum` / `_count` deltas), to set
//! beside the client's: the difference is the network and the HTTP front end.
//!
//! Names (`Names`) are vLLM's (checked against a running vLLM 0.32 in the conformance tests),
//! SGLang's (from its documentation and source; not checked against a running server here), and
//! the simulator's `inferperf_sim:` schedule counters. Every engine's and model's series are
//! summed. A counter that went backwards means the server restarted: its deltas are dropped and
//! the view says so. Another client using the same server during the run adds to these counts;
//! nothing here can tell.

use crate::exposition::{self, Exposition, ExpositionError, Histogram};
pub use bench_result::sections::{
    Peaks, ServerKind, ServerSection as ServerReport, ServerView, SimSchedule,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The metric names of one server kind; the first name present is used.
struct Names {
    prompt_tokens: &'static [&'static str],
    generation_tokens: &'static [&'static str],
    prefix_queries: &'static [&'static str],
    prefix_hits: &'static [&'static str],
    preemptions: &'static [&'static str],
    requests: &'static [&'static str],
    running: &'static [&'static str],
    waiting: &'static [&'static str],
    kv_usage: &'static [&'static str],
    ttft: &'static [&'static str],
    itl: &'static [&'static str],
    e2el: &'static [&'static str],
}

const VLLM: Names = Names {
    prompt_tokens: &["vllm:prompt_tokens_total"],
    generation_tokens: &["vllm:generation_tokens_total"],
    prefix_queries: &["vllm:prefix_cache_queries_total"],
    prefix_hits: &["vllm:prefix_cache_hits_total"],
    preemptions: &["vllm:num_preemptions_total"],
    requests: &["vllm:request_success_total"],
    running: &["vllm:num_requests_running"],
    waiting: &["vllm:num_requests_waiting"],
    // `gpu_cache_usage_perc` before vLLM 0.10.
    kv_usage: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
    ttft: &["vllm:time_to_first_token_seconds"],
    itl: &[
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
    ],
    e2el: &["vllm:e2e_request_latency_seconds"],
};

const SGLANG: Names = Names {
    prompt_tokens: &["sglang:prompt_tokens_total"],
    generation_tokens: &["sglang:generation_tokens_total"],
    // SGLang counts cached prompt tokens (by source); every prompt token is a lookup.
    prefix_queries: &["sglang:prompt_tokens_total"],
    prefix_hits: &["sglang:cached_tokens_total"],
    preemptions: &["sglang:num_retracted_requests_total"],
    requests: &["sglang:num_requests_total"],
    running: &["sglang:num_running_reqs"],
    waiting: &["sglang:num_queue_reqs"],
    kv_usage: &["sglang:token_usage"],
    ttft: &["sglang:time_to_first_token_seconds"],
    itl: &[
        "sglang:inter_token_latency_seconds",
        "sglang:time_per_output_token_seconds",
    ],
    e2el: &["sglang:e2e_request_latency_seconds"],
};

/// Which server's names `page` carries, and where its names are read.
fn kind_of(page: &Exposition) -> ServerKind {
    let has = |prefix: &str| page.samples.iter().any(|s| s.name.starts_with(prefix));
    if has("inferperf_sim:") {
        ServerKind::InferperfSim
    } else if has("vllm:") {
        ServerKind::Vllm
    } else if has("sglang:") {
        ServerKind::Sglang
    } else {
        ServerKind::Unknown
    }
}

fn names(kind: ServerKind) -> Option<&'static Names> {
    match kind {
        ServerKind::Vllm | ServerKind::InferperfSim => Some(&VLLM),
        ServerKind::Sglang => Some(&SGLANG),
        ServerKind::Unknown => None,
    }
}

/// Why a page could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("GET {url}: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: {source}")]
    NotPrometheus {
        url: String,
        source: ExpositionError,
    },
}

/// Fetches one server's `/metrics`.
#[derive(Debug, Clone)]
pub struct Scraper {
    http: reqwest::Client,
    base: crate::config::BaseUrl,
}

impl Scraper {
    /// A scraper of `<base_url>/metrics`, trusting `ca_cert` too for `https://`.
    pub fn new(
        base_url: &crate::config::BaseUrl,
        ca_cert: Option<&std::path::Path>,
    ) -> std::io::Result<Self> {
        let http = crate::tls::http_client(ca_cert)?
            .timeout(Duration::from_secs(10))
            .no_proxy();
        Ok(Self {
            http: http.build().map_err(std::io::Error::other)?,
            base: base_url.clone(),
        })
    }

    /// The model names `<base_url>/v1/models` lists (sent with `api_key` as a bearer token, as
    /// vLLM's API routes may require); `None` when it cannot be had.
    pub async fn models(&self, api_key: Option<&str>) -> Option<Vec<String>> {
        let url = self.base.join("/v1/models");
        let mut req = self.http.get(url);
        if let Some(key) = api_key {
            req = req.bearer_auth(key);
        }
        let body = req.send().await.ok()?.bytes().await.ok()?;
        let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let ids = value["data"]
            .as_array()?
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect();
        Some(ids)
    }

    pub async fn scrape(&self) -> Result<Exposition, ScrapeError> {
        let url = self.base.join("/metrics").to_string();
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| ScrapeError::Request {
                url: url.clone(),
                source,
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(ScrapeError::Status { url, status });
        }
        let text = resp.text().await.map_err(|source| ScrapeError::Request {
            url: url.clone(),
            source,
        })?;
        exposition::parse(&text).map_err(|source| ScrapeError::NotPrometheus { url, source })
    }
}

/// The scrapes of one run: before its warm-up, when its measured phase starts, every interval
/// while it runs, and when it ends. Without a scraper (`--no-server-metrics`) it takes none.
#[derive(Debug)]
pub struct RunScrapes {
    scraper: Option<Scraper>,
    interval: Option<Duration>,
    before_warmup: Option<Exposition>,
    start: Option<Result<Exposition, ScrapeError>>,
    watch: Option<Watch>,
}

impl RunScrapes {
    pub fn new(scraper: Option<Scraper>, interval: Option<Duration>) -> Self {
        Self {
            scraper: scraper.filter(|_| interval.is_some()),
            interval,
            before_warmup: None,
            start: None,
            watch: None,
        }
    }

    pub async fn before_warmup(&mut self) {
        if let Some(s) = &self.scraper {
            self.before_warmup = s.scrape().await.ok();
        }
    }

    /// The measured phase's first scrape, and the watch that scrapes while it runs.
    pub async fn measured_starts(&mut self) {
        if let (Some(s), Some(every)) = (&self.scraper, self.interval) {
            self.start = Some(s.scrape().await);
            self.watch = Some(Watch::start(s.clone(), every));
        }
    }

    /// The last scrape, and the view from the first to it.
    pub async fn measured_ended(self) -> ServerReport {
        let (peaks, between) = match self.watch {
            Some(w) => w.finish().await,
            None => (Peaks::default(), 0),
        };
        let end = match &self.scraper {
            Some(s) => Some(s.scrape().await),
            None => None,
        };
        let unavailable = |why: String| ServerReport {
            unavailable: Some(why),
            ..ServerReport::default()
        };
        match (self.start, end) {
            (Some(Ok(a)), Some(Ok(b))) => ServerReport {
                view: Some(view_from_pages(
                    self.before_warmup.as_ref(),
                    &a,
                    &b,
                    peaks,
                    between + 2,
                )),
                ..ServerReport::default()
            },
            (Some(Err(e)), _) | (_, Some(Err(e))) => unavailable(e.to_string()),
            _ => unavailable("not scraped (--no-server-metrics)".into()),
        }
    }
}

/// Raises `peaks` to the gauges of `page` where they are higher.
fn take_peaks(peaks: &mut Peaks, page: &Exposition) {
    let Some(names) = names(kind_of(page)) else {
        return;
    };
    let max = |old: Option<f64>, new: Option<f64>| match (old, new) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    peaks.running = max(peaks.running, first_sum(page, names.running));
    peaks.waiting = max(peaks.waiting, first_sum(page, names.waiting));
    peaks.kv_cache_usage = max(peaks.kv_cache_usage, first_sum(page, names.kv_usage));
}

/// Scrapes every `interval` until finished, keeping gauge peaks (never the pages).
#[derive(Debug)]
pub struct Watch {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(Peaks, usize)>,
}

impl Watch {
    pub fn start(scraper: Scraper, interval: Duration) -> Self {
        let stop = CancellationToken::new();
        let until = stop.clone();
        let task = tokio::spawn(async move {
            let mut peaks = Peaks::default();
            let mut taken = 0;
            loop {
                tokio::select! {
                    () = until.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
                if let Ok(page) = scraper.scrape().await {
                    take_peaks(&mut peaks, &page);
                    taken += 1;
                }
            }
            (peaks, taken)
        });
        Self { stop, task }
    }

    /// The peaks seen and how many scrapes succeeded.
    pub async fn finish(self) -> (Peaks, usize) {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

fn first_sum(page: &Exposition, names: &[&str]) -> Option<f64> {
    names.iter().find_map(|n| page.sum(n))
}

fn first_histogram(page: &Exposition, names: &[&str]) -> Option<Histogram> {
    names.iter().find_map(|n| page.histogram(n))
}

/// The view from the page before the warm-up (if any), the measured phase's first and last,
/// and the peaks in between.
pub fn view_from_pages(
    before_warmup: Option<&Exposition>,
    start: &Exposition,
    end: &Exposition,
    peaks: Peaks,
    scrapes: usize,
) -> ServerView {
    let kind = kind_of(end);
    let mut view = ServerView {
        kind: Some(kind),
        scrapes: scrapes as u64,
        ..ServerView::default()
    };
    view.peaks = peaks;
    take_peaks(&mut view.peaks, start);
    take_peaks(&mut view.peaks, end);
    let Some(names) = names(kind) else {
        return view;
    };
    let delta = |n: &[&str]| Some(first_sum(end, n)? - first_sum(start, n)?);
    let counters = [
        delta(names.prompt_tokens),
        delta(names.generation_tokens),
        delta(names.prefix_queries),
        delta(names.prefix_hits),
        delta(names.preemptions),
        delta(names.requests),
    ];
    if counters.iter().flatten().any(|d| *d < 0.0) {
        view.counters_reset = true;
        return view;
    }
    [
        view.prompt_tokens,
        view.generation_tokens,
        view.prefix_cache_queries,
        view.prefix_cache_hits,
        view.preemptions,
        view.requests,
    ] = counters;
    view.warmup_prefix_cache_hits = before_warmup.and_then(|before| {
        let d = first_sum(start, names.prefix_hits)? - first_sum(before, names.prefix_hits)?;
        (d >= 0.0).then_some(d)
    });
    let mean_ms = |n: &[&str]| {
        let (a, b) = (first_histogram(start, n)?, first_histogram(end, n)?);
        let count = b.count - a.count;
        (count > 0.0).then(|| (b.sum - a.sum) / count * 1e3)
    };
    view.ttft_mean_ms = mean_ms(names.ttft);
    view.itl_mean_ms = mean_ms(names.itl);
    view.e2el_mean_ms = mean_ms(names.e2el);
    if kind == ServerKind::InferperfSim {
        view.sim = sim_from_pages(start, end);
    }
    view
}

/// The simulator's schedule between two pages: how late its steps and token events were, and
/// how much modelled time it lost (see `bench_sim::lateness`).
fn sim_from_pages(start: &Exposition, end: &Exposition) -> Option<SimSchedule> {
    let d = |n: &str| Some(end.sum(n)? - start.sum(n).unwrap_or(0.0));
    let counted = d("inferperf_sim:prompts_counted_total").unwrap_or(0.0);
    let counting = d("inferperf_sim:prompt_counting_seconds_total").unwrap_or(0.0);
    let steps = delta_histogram(start, end, "inferperf_sim:step_lateness_seconds");
    let events = delta_histogram(start, end, "inferperf_sim:event_lateness_seconds");
    let event_max = events.as_ref().and_then(|h| {
        let top = h.top_bound()?;
        let exact = end.sum("inferperf_sim:event_lateness_max_seconds");
        Some(match exact {
            Some(m) if m <= top => m,
            _ => top,
        })
    });
    Some(SimSchedule {
        time_scale: end.sum("inferperf_sim:time_scale")?,
        steps: steps.as_ref().map_or(0.0, |h| h.count),
        late_steps: d("inferperf_sim:late_steps_total").unwrap_or(0.0),
        step_lateness_p99_ms: steps
            .as_ref()
            .and_then(|h| h.quantile(0.99))
            .map(|s| s * 1e3),
        events: events.as_ref().map_or(0.0, |h| h.count),
        late_events: d("inferperf_sim:late_events_total").unwrap_or(0.0),
        event_lateness_p99_ms: events
            .as_ref()
            .and_then(|h| h.quantile(0.99))
            .map(|s| s * 1e3),
        event_lateness_max_ms: event_max.map(|s| s * 1e3),
        lost_seconds: d("inferperf_sim:schedule_lost_seconds_total").unwrap_or(0.0),
        prompts_counted: counted,
        prompt_counting_mean_ms: (counted > 0.0).then(|| counting / counted * 1e3),
        stepped_windows: d("inferperf_sim:stepped_windows_total"),
        stepped_timeouts: d("inferperf_sim:stepped_window_timeouts_total"),
    })
}

/// `end - start` of histogram `name`.
fn delta_histogram(start: &Exposition, end: &Exposition, name: &str) -> Option<Histogram> {
    let b = end.histogram(name)?;
    let Some(a) = start.histogram(name) else {
        return Some(b);
    };
    let buckets = b
        .buckets
        .iter()
        .map(|&(le, n)| {
            let before = a.buckets.iter().find(|x| x.0 == le).map_or(0.0, |x| x.1);
            (le, n - before)
        })
        .collect();
    Some(Histogram {
        buckets,
        sum: b.sum - a.sum,
        count: b.count - a.count,
    })
}

impl Histogram {
    /// The `q`-quantile, interpolated linearly inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count;
        let mut prev = (0.0, 0.0);
        for &(le, cumulative) in &self.buckets {
            if cumulative >= rank && cumulative > prev.1 {
                if le.is_infinite() {
                    return Some(prev.0);
                }
                let within = (rank - prev.1) / (cumulative - prev.1);
                return Some(prev.0 + (le - prev.0) * within);
            }
            prev = (le, cumulative);
        }
        Some(prev.0)
    }

    /// The upper bound of the highest bucket holding an observation (the last finite bound for
    /// `+Inf`); `None` when empty.
    pub fn top_bound(&self) -> Option<f64> {
        let mut prev = (0.0, 0.0);
        let mut top = None;
        for &(le, cumulative) in &self.buckets {
            if cumulative > prev.1 {
                top = Some(if le.is_infinite() { prev.0 } else { le });
            }
            prev = (le, cumulative);
        }
        top
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(text: &str) -> Exposition {
        exposition::parse(text).expect("valid page")
    }

    fn vllm(prompt: f64, hits: f64, ttft_sum: f64, ttft_count: f64, running: f64) -> Exposition {
        page(&format!(
            "vllm:prompt_tokens_total{{engine=\"0\"}} {prompt}\n\
             vllm:generation_tokens_total{{engine=\"0\"}} 10\n\
             vllm:prefix_cache_queries_total{{engine=\"0\"}} {prompt}\n\
             vllm:prefix_cache_hits_total{{engine=\"0\"}} {hits}\n\
             vllm:num_requests_running{{engine=\"0\"}} {running}\n\
             vllm:time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {ttft_count}\n\
             vllm:time_to_first_token_seconds_sum {ttft_sum}\n\
             vllm:time_to_first_token_seconds_count {ttft_count}\n"
        ))
    }

    #[test]
    fn counters_are_differenced_and_latency_means_come_from_histogram_deltas() {
        let before = vllm(100.0, 0.0, 1.0, 2.0, 0.0);
        let start = vllm(200.0, 16.0, 1.0, 2.0, 0.0);
        let end = vllm(1200.0, 16.0, 4.0, 12.0, 3.0);
        let peaks = Peaks {
            running: Some(8.0),
            ..Peaks::default()
        };
        let v = view_from_pages(Some(&before), &start, &end, peaks, 5);
        assert_eq!(v.kind, Some(ServerKind::Vllm));
        assert_eq!(v.prompt_tokens, Some(1000.0));
        assert_eq!(v.prefix_cache_hits, Some(0.0));
        assert_eq!(v.warmup_prefix_cache_hits, Some(16.0));
        assert_eq!(v.prefix_cache_hit_share(), Some(0.0));
        assert_eq!(v.peaks.running, Some(8.0));
        // 10 requests' TTFTs summing to 3 s: 300 ms each on average.
        assert!((v.ttft_mean_ms.expect("histogram") - 300.0).abs() < 1e-9);
        assert!(!v.counters_reset);
    }

    #[test]
    fn a_counter_going_backwards_drops_every_delta() {
        let start = vllm(5000.0, 0.0, 1.0, 2.0, 0.0);
        let end = vllm(100.0, 0.0, 0.1, 1.0, 0.0);
        let v = view_from_pages(None, &start, &end, Peaks::default(), 2);
        assert!(v.counters_reset);
        assert_eq!((v.prompt_tokens, v.ttft_mean_ms), (None, None));
    }

    #[test]
    fn sglang_names_are_read_too() {
        let p = |prompt: f64, cached: f64| {
            page(&format!(
                "sglang:prompt_tokens_total{{model_name=\"m\"}} {prompt}\n\
                 sglang:cached_tokens_total{{model_name=\"m\",cache_source=\"device\"}} {cached}\n\
                 sglang:num_queue_reqs{{model_name=\"m\"}} 4\n"
            ))
        };
        let v = view_from_pages(None, &p(10.0, 0.0), &p(110.0, 25.0), Peaks::default(), 2);
        assert_eq!(v.kind, Some(ServerKind::Sglang));
        assert_eq!(v.prefix_cache_hit_share(), Some(0.25));
        assert_eq!(v.peaks.waiting, Some(4.0));
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let h = Histogram {
            buckets: vec![
                (0.1, 0.0),
                (0.2, 50.0),
                (0.5, 100.0),
                (f64::INFINITY, 100.0),
            ],
            sum: 0.0,
            count: 100.0,
        };
        assert_eq!(h.quantile(0.5), Some(0.2));
        assert!((h.quantile(0.75).expect("q") - 0.35).abs() < 1e-12);
        assert_eq!(h.top_bound(), Some(0.5));
    }
}
