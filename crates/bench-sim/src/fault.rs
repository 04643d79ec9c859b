//! Fault injection: each fault has a rate, and whether a request gets it is decided from the
//! simulator's seed and the request's number, so a run is reproducible.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Duration;

/// Fault rates (each in [0, 1]) and their parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Faults {
    /// Reply HTTP 500 with an error body instead of streaming.
    pub http_500: f64,
    /// Send an `error` event mid-stream, then `[DONE]`.
    pub error_event: f64,
    /// Cut the connection mid-stream.
    pub cut: f64,
    /// Send one event that is not valid JSON mid-stream.
    pub malformed: f64,
    /// Stall the stream once for `stall_for`.
    pub stall: f64,
    pub stall_for: Duration,
    /// Send no usage event even when asked.
    pub no_usage: f64,
    /// Group tokens `tokens_per_event` to an event.
    pub multi_token: f64,
    pub tokens_per_event: u32,
    /// Without `ignore_eos`, the chance a request stops early at a random point.
    pub early_eos: f64,
    /// Liberties a server may take with a stream that still completes, which a client must
    /// count rather than pass over.
    pub liberties: Liberties,
}

/// Rates (each in [0, 1]) of a completed stream breaking the protocol's promises.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Liberties {
    /// The last token's event has `finish_reason: null`.
    pub no_finish_reason: f64,
    /// Stop early with `finish_reason: "length"` even under `ignore_eos`: a server that silently
    /// shortens output.
    pub shorten: f64,
    /// Send one more token event after `[DONE]`.
    pub event_after_done: f64,
    /// Report one prompt token more than it counted in `usage.prompt_tokens`.
    pub prompt_miscount: f64,
}

/// Which liberties one request gets (see [`Liberties`]); `shorten_after` is the token count a
/// shortened request stops at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLiberties {
    pub no_finish_reason: bool,
    pub shorten_after: Option<u64>,
    pub event_after_done: bool,
    pub prompt_miscount: bool,
}

impl RequestLiberties {
    /// Their names, as the truth records them.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.no_finish_reason, "no_finish_reason"),
            (self.shorten_after.is_some(), "shortened"),
            (self.event_after_done, "event_after_done"),
            (self.prompt_miscount, "prompt_miscount"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect()
    }
}

/// A mid-stream fault and the output token after which it strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MidStream {
    ErrorEvent(u64),
    Cut(u64),
    Malformed(u64),
    Stall(u64, Duration),
}

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestFaults {
    pub http_500: bool,
    pub mid: Option<MidStream>,
    pub no_usage: bool,
    pub tokens_per_event: u32,
    /// End of sequence after this many tokens (only without `ignore_eos`, unless shortened).
    pub eos_after: Option<u64>,
    pub liberties: RequestLiberties,
}

impl Faults {
    /// Decides request `id`'s faults. Mid-stream faults strike after a token in
    /// [1, max_tokens - 1], so at least one token arrives first.
    pub fn decide(&self, seed: u64, id: u64, max_tokens: u64, ignore_eos: bool) -> RequestFaults {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let http_500 = hit(&mut rng, self.http_500);
        let kinds = [
            (hit(&mut rng, self.error_event), 0),
            (hit(&mut rng, self.cut), 1),
            (hit(&mut rng, self.malformed), 2),
            (hit(&mut rng, self.stall), 3),
        ];
        let no_usage = hit(&mut rng, self.no_usage);
        let multi = hit(&mut rng, self.multi_token);
        let early = !ignore_eos && hit(&mut rng, self.early_eos);
        let after = rng.random_range(1..max_tokens.max(2));
        let mid = kinds.iter().find(|(on, _)| *on).map(|(_, k)| match k {
            0 => MidStream::ErrorEvent(after),
            1 => MidStream::Cut(after),
            2 => MidStream::Malformed(after),
            _ => MidStream::Stall(after, self.stall_for),
        });
        let eos_after = early.then(|| rng.random_range(1..max_tokens.max(2)));
        // Drawn after every other decision, so adding liberties changes none of those.
        let l = &self.liberties;
        let liberties = RequestLiberties {
            no_finish_reason: hit(&mut rng, l.no_finish_reason),
            shorten_after: hit(&mut rng, l.shorten).then(|| rng.random_range(1..max_tokens.max(2))),
            event_after_done: hit(&mut rng, l.event_after_done),
            prompt_miscount: hit(&mut rng, l.prompt_miscount),
        };
        RequestFaults {
            http_500,
            mid,
            no_usage,
            tokens_per_event: if multi {
                self.tokens_per_event.max(2)
            } else {
                1
            },
            eos_after: liberties.shorten_after.or(eos_after),
            liberties,
        }
    }
}

/// Whether a fault of `rate` strikes; draws nothing at rate 0.
fn hit(rng: &mut ChaCha8Rng, rate: f64) -> bool {
    rate > 0.0 && rng.random_bool(rate.min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_respected_and_decisions_are_reproducible() {
        let f = Faults {
            http_500: 0.25,
            ..Faults::default()
        };
        let hits = (0..4000)
            .filter(|i| f.decide(1, *i, 10, true).http_500)
            .count();
        assert!((900..1100).contains(&hits), "{hits}");
        assert_eq!(f.decide(1, 7, 10, true), f.decide(1, 7, 10, true));
        let none = Faults::default().decide(1, 7, 10, true);
        assert_eq!(
            none,
            RequestFaults {
                http_500: false,
                mid: None,
                no_usage: false,
                tokens_per_event: 1,
                eos_after: None,
                liberties: RequestLiberties::default(),
            }
        );
    }

    #[test]
    fn mid_stream_faults_strike_after_at_least_one_token() {
        let f = Faults {
            cut: 1.0,
            ..Faults::default()
        };
        for id in 0..200 {
            match f.decide(3, id, 5, true).mid {
                Some(MidStream::Cut(after)) => assert!((1..5).contains(&after)),
                other => panic!("expected a cut, got {other:?}"),
            }
        }
    }
}
