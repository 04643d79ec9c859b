//! Descriptive statistics over exact samples, defined to match numpy.
//!
//! Reported figures come from every sample, never from a lossy histogram:
//! - mean: arithmetic mean (`numpy.mean`);
//! - std: population standard deviation, ddof 0 (`numpy.std`);
//! - percentiles: numpy's default `method="linear"` (Hyndman & Fan type 7). For q in 0..=100 and
//!   sorted samples `x[0..n]`, the virtual index is `h = (q / 100) * (n - 1)`; with `i = floor(h)`
//!   and `g = h - i` the value is `lerp(x[i], x[i + 1], g)`, computed the way numpy's `_lerp` does
//!   (`b - (b - a) * (1 - g)` when g >= 0.5) so that the same samples give the same bits.

/// Summary of one metric's samples.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Distribution {
    pub count: usize,
    pub mean: f64,
    pub median: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// `(q, value)` for each requested percentile q in [0, 100].
    pub percentiles: Vec<(f64, f64)>,
}

impl Distribution {
    /// Summarises `samples` (any order); an empty slice gives all zeros, as vLLM reports.
    pub fn from_samples(samples: &[f64], percentiles: &[f64]) -> Self {
        if samples.is_empty() {
            return Self {
                percentiles: percentiles.iter().map(|&q| (q, 0.0)).collect(),
                ..Self::default()
            };
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mean = mean(&sorted);
        Self {
            count: sorted.len(),
            mean,
            median: percentile_sorted(&sorted, 50.0),
            std: std_dev(&sorted, mean),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            percentiles: percentiles
                .iter()
                .map(|&q| (q, percentile_sorted(&sorted, q)))
                .collect(),
        }
    }

    /// The value of percentile `q` if it was requested.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        self.percentiles
            .iter()
            .find(|(p, _)| *p == q)
            .map(|(_, v)| *v)
    }
}

/// Arithmetic mean; 0 for no samples.
pub fn mean(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().sum::<f64>() / samples.len() as f64
}

/// Population standard deviation (ddof 0) around a known mean, two-pass like numpy.
fn std_dev(samples: &[f64], mean: f64) -> f64 {
    let n = samples.len() as f64;
    let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    var.sqrt()
}

/// Percentile `q` (0..=100) of already sorted samples, numpy `method="linear"`.
///
/// Panics never: an empty slice gives 0 and q is clamped to [0, 100].
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    match n {
        0 => return 0.0,
        1 => return sorted[0],
        _ => {}
    }
    let h = (q.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
    let lo = h.floor();
    let g = h - lo;
    let i = lo as usize;
    if i + 1 >= n {
        return sorted[n - 1];
    }
    lerp(sorted[i], sorted[i + 1], g)
}

/// numpy's `_lerp`: exact at both ends and monotone.
fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let diff = b - a;
    if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Expected values computed with numpy 1.26:
    //   x = [12.5, 3.0, 7.25, 100.0, 41.0, 0.5, 9.0]
    //   np.percentile(x, [0, 10, 25, 50, 90, 95, 99, 99.9, 100]), np.mean(x), np.std(x)
    const SAMPLES: [f64; 7] = [12.5, 3.0, 7.25, 100.0, 41.0, 0.5, 9.0];

    #[test]
    fn percentiles_match_numpy_linear() {
        let d = Distribution::from_samples(
            &SAMPLES,
            &[0.0, 10.0, 25.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0],
        );
        let expected = [
            0.5,
            2.0,
            5.125,
            9.0,
            64.60000000000002,
            82.29999999999995,
            96.45999999999997,
            99.64600000000004,
            100.0,
        ];
        for ((q, got), want) in d.percentiles.iter().zip(expected) {
            assert_eq!(*got, want, "p{q} differs from numpy");
        }
        assert_eq!(d.median, 9.0);
        assert!((d.mean - 24.75).abs() < 1e-12);
        assert!((d.std - 33.14928355183562).abs() < 1e-9, "std {}", d.std);
        assert_eq!((d.min, d.max, d.count), (0.5, 100.0, 7));
    }

    #[test]
    fn even_count_median_interpolates() {
        assert_eq!(percentile_sorted(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile_sorted(&[5.0], 99.0), 5.0);
        assert_eq!(percentile_sorted(&[], 50.0), 0.0);
    }

    #[test]
    fn empty_samples_report_zeros_for_requested_percentiles() {
        let d = Distribution::from_samples(&[], &[50.0, 99.0]);
        assert_eq!(d.percentiles, vec![(50.0, 0.0), (99.0, 0.0)]);
        assert_eq!(d.percentile(99.0), Some(0.0));
        assert_eq!(d.percentile(90.0), None);
    }

    /// Naive reference: the textbook type-7 definition, written independently.
    fn reference_percentile(xs: &[f64], q: f64) -> f64 {
        let mut v = xs.to_vec();
        v.sort_by(f64::total_cmp);
        let pos = q / 100.0 * (v.len() - 1) as f64;
        let below = v[pos.floor() as usize];
        let above = v[pos.ceil() as usize];
        below + (above - below) * (pos - pos.floor())
    }

    proptest! {
        #[test]
        fn percentile_agrees_with_reference_and_is_bounded(
            xs in prop::collection::vec(-1e6f64..1e6, 1..200),
            q in 0.0f64..=100.0,
        ) {
            let mut sorted = xs.clone();
            sorted.sort_by(f64::total_cmp);
            let got = percentile_sorted(&sorted, q);
            let want = reference_percentile(&xs, q);
            prop_assert!((got - want).abs() <= 1e-9 * (1.0 + want.abs()));
            prop_assert!(got >= sorted[0] && got <= sorted[sorted.len() - 1]);
        }

        #[test]
        fn percentiles_are_monotone_in_q(xs in prop::collection::vec(0f64..1e3, 1..100)) {
            let mut sorted = xs.clone();
            sorted.sort_by(f64::total_cmp);
            let mut last = f64::NEG_INFINITY;
            for q in 0..=100 {
                let v = percentile_sorted(&sorted, q as f64);
                prop_assert!(v >= last);
                last = v;
            }
        }
    }
}
