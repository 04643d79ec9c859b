//! The timing model: how long one engine step takes, and the presets.
//!
//! A step runs one decode token for every running sequence that has finished its prefill, plus
//! prefill chunks for others, up to a token budget. Its duration (docs/simulator.md) is
//!
//! ```text
//! step_ms = base_ms + (prefill_ms_per_token * P + decode_ms_per_seq * D + context_ms_per_token * C) / tp
//! ```
//!
//! with P the prefill tokens in the step, D the decoding sequences and C the context (prompt plus
//! generated tokens) those sequences attend to. `base_ms` is what a step costs however small
//! (weight reads, launch and communication overhead); the rest is compute shared across `tp`
//! GPUs. The whole schedule runs `time_scale` times faster than real time when asked.

use serde::Serialize;
use std::time::Duration;

/// Coefficients of the step-time formula and the scheduler's limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineParams {
    pub base_ms: f64,
    pub prefill_ms_per_token: f64,
    pub decode_ms_per_seq: f64,
    pub context_ms_per_token: f64,
    pub tp: u32,
    /// Tokens one step may process (vLLM's `max_num_batched_tokens`).
    pub max_num_batched_tokens: u64,
    /// Sequences running at once (vLLM's `max_num_seqs`).
    pub max_num_seqs: usize,
    /// KV-cache capacity in tokens; a sequence reserves prompt + max_tokens when admitted.
    pub kv_cache_tokens: u64,
}

impl EngineParams {
    /// Duration of a step with `prefill` tokens, `decode` sequences and `context` attended tokens,
    /// before time scaling.
    pub fn step_time(&self, prefill: u64, decode: u64, context: u64) -> Duration {
        let compute = self.prefill_ms_per_token * prefill as f64
            + self.decode_ms_per_seq * decode as f64
            + self.context_ms_per_token * context as f64;
        let ms = self.base_ms + compute / f64::from(self.tp.max(1));
        Duration::from_secs_f64(ms / 1e3)
    }
}

/// How token timing is decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timing {
    /// Continuous batching with the step-time formula.
    Batching(EngineParams),
    /// Every request on its own: first token `ttft` after arrival, then one every `itl`,
    /// whatever the load. For measuring a client against exactly known timing.
    Fixed {
        #[serde(with = "millis")]
        ttft: Duration,
        #[serde(with = "millis")]
        itl: Duration,
    },
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1e3)
    }
}

impl Timing {
    /// The shortest step the engine takes (one sequence decoding with no context), or the
    /// fixed gap between tokens (before time scaling).
    pub fn shortest_step(&self) -> Duration {
        match self {
            Self::Fixed { itl, .. } => *itl,
            Self::Batching(p) => p.step_time(0, 1, 0),
        }
    }

    /// The modelled TTFT of a request alone on the engine with `prompt` tokens: its prefill
    /// chunks back to back (before time scaling).
    pub fn lone_ttft(&self, prompt: u64) -> Duration {
        match self {
            Self::Fixed { ttft, .. } => *ttft,
            Self::Batching(p) => {
                let budget = p.max_num_batched_tokens.max(1);
                let mut left = prompt.max(1);
                let mut total = Duration::ZERO;
                while left > 0 {
                    let chunk = left.min(budget);
                    total += p.step_time(chunk, 0, 0);
                    left -= chunk;
                }
                total
            }
        }
    }
}

/// Named presets.
pub const PRESETS: &[&str] = &["minimax-m2-tp4", "minimax-m2-tp8", "small-tp1", "fixed"];

/// A large MoE model on 4 GPUs at TP4.
const MINIMAX_M2_TP4: EngineParams = EngineParams {
    base_ms: 23.0,
    prefill_ms_per_token: 0.19,
    decode_ms_per_seq: 0.9,
    context_ms_per_token: 1.3e-4,
    tp: 4,
    max_num_batched_tokens: 8192,
    max_num_seqs: 256,
    kv_cache_tokens: 2_000_000,
};

/// The preset called `name`.
pub fn preset(name: &str) -> Option<Timing> {
    Some(match name {
        // A large MoE model on 4 GPUs at TP4: ~40 tok/s per user at low concurrency and short
        // context, slowing with concurrency and context; prefill ~5,000 tok/s per GPU.
        "minimax-m2-tp4" => Timing::Batching(MINIMAX_M2_TP4),
        // The same model on 8 GPUs at TP8: the compute shared by twice the GPUs (the fixed part
        // per step stays), twice the KV cache.
        "minimax-m2-tp8" => Timing::Batching(EngineParams {
            tp: 8,
            kv_cache_tokens: 4_000_000,
            ..MINIMAX_M2_TP4
        }),
        // A small dense model on one GPU: fast decode, quick prefill.
        "small-tp1" => Timing::Batching(EngineParams {
            base_ms: 8.0,
            prefill_ms_per_token: 0.05,
            decode_ms_per_seq: 0.08,
            context_ms_per_token: 2.0e-5,
            tp: 1,
            max_num_batched_tokens: 8192,
            max_num_seqs: 256,
            kv_cache_tokens: 1_000_000,
        }),
        "fixed" => Timing::Fixed {
            ttft: Duration::from_millis(50),
            itl: Duration::from_millis(10),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimax() -> EngineParams {
        match preset("minimax-m2-tp4") {
            Some(Timing::Batching(p)) => p,
            other => panic!("unexpected preset {other:?}"),
        }
    }

    #[test]
    fn minimax_preset_looks_like_the_real_deployment() {
        let p = minimax();
        // One user, 1k context: ~40 tok/s.
        let one = p.step_time(0, 1, 1024).as_secs_f64();
        assert!((1.0 / one - 40.0).abs() < 4.0, "{} tok/s", 1.0 / one);
        // 64 users at 14k context decode slower per user.
        let busy = p.step_time(0, 64, 64 * 14_336).as_secs_f64();
        assert!(
            1.0 / busy < 25.0 && 1.0 / busy > 10.0,
            "{} tok/s",
            1.0 / busy
        );
        // A full prefill chunk: several thousand tokens per second per GPU.
        let chunk = p.step_time(8192, 0, 0).as_secs_f64();
        let per_gpu = 8192.0 / chunk / f64::from(p.tp);
        assert!((3000.0..8000.0).contains(&per_gpu), "{per_gpu} tok/s/GPU");
    }

    #[test]
    fn step_time_grows_with_each_term_and_shrinks_with_tp() {
        let p = minimax();
        let base = p.step_time(0, 1, 100);
        assert!(p.step_time(100, 1, 100) > base);
        assert!(p.step_time(0, 2, 100) > base);
        assert!(p.step_time(0, 1, 100_000) > base);
        let mut wide = p.clone();
        wide.tp = 8;
        assert!(wide.step_time(8192, 0, 0) < p.step_time(8192, 0, 0));
    }

    #[test]
    fn the_tp8_preset_is_the_tp4_model_on_twice_the_gpus() {
        let Some(Timing::Batching(tp8)) = preset("minimax-m2-tp8") else {
            panic!("minimax-m2-tp8 is a batching preset");
        };
        let tp4 = minimax();
        assert_eq!((tp8.tp, tp8.kv_cache_tokens), (8, 2 * tp4.kv_cache_tokens));
        // Faster per step, but less than twice as fast: the fixed part per step stays, so the
        // throughput per GPU falls.
        let (a, b) = (
            tp4.step_time(8192, 64, 64 * 4096).as_secs_f64(),
            tp8.step_time(8192, 64, 64 * 4096).as_secs_f64(),
        );
        assert!(b < a && b > a / 2.0, "tp4 {a} s, tp8 {b} s per step");
    }

    #[test]
    fn a_lone_request_waits_for_its_prefill_chunks() {
        let t = Timing::Batching(minimax());
        let one = minimax().step_time(1024, 0, 0);
        assert_eq!(t.lone_ttft(1024), one);
        let two = minimax().step_time(8192, 0, 0) + minimax().step_time(1808, 0, 0);
        assert_eq!(t.lone_ttft(10_000), two);
        let fixed = preset("fixed").expect("preset");
        assert_eq!(fixed.lone_ttft(123), Duration::from_millis(50));
    }

    #[test]
    fn every_named_preset_exists() {
        assert!(PRESETS.iter().all(|n| preset(n).is_some()));
        assert!(preset("nope").is_none());
    }
}
