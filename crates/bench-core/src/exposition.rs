//! The Prometheus text exposition format (version 0.0.4), as a server's `/metrics` answers.
//!
//! A line is a comment (`# HELP`, `# TYPE` or any other `#` line), blank, or a sample:
//!
//! ```text
//! name{label="value",...} value [timestamp]
//! ```
//!
//! where a name matches `[a-zA-Z_:][a-zA-Z0-9_:]*` (vLLM's and SGLang's carry a colon:
//! `vllm:prompt_tokens_total`), label values escape `\\`, `\"` and `\n`, and a value is a float,
//! `NaN`, `+Inf` or `-Inf`. Histograms arrive as their `_bucket{le="..."}`, `_sum` and `_count`
//! samples. The parser is strict: a page that is not this format (an HTML error page, a proxy's
//! login form) is an error naming the first line that is not, rather than a page of nothing.
//!
//! Written here rather than taken from a crate: `prometheus-parse` cannot read names with a colon,
//! and `nom-openmetrics` rejects valid pages (a family with no samples, a timestamp) and prints
//! to standard output while parsing.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    pub samples: Vec<Sample>,
}

/// Why a page is not Prometheus text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpositionError {
    #[error("line {line} is not a Prometheus sample ({what}): `{excerpt}`")]
    Line {
        line: usize,
        what: &'static str,
        excerpt: String,
    },
}

/// A histogram summed over every label set but `le`: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// (upper bound, cumulative count), ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Exposition {
    /// Samples named `name` (any labels).
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sum of every sample named `name` (over engines, models, reasons); `None` if absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.named(name).map(|s| s.value).reduce(|a, b| a + b)
    }

    /// The histogram `name` (its `_bucket`, `_sum` and `_count` samples), summed over label
    /// sets; `None` if absent.
    pub fn histogram(&self, name: &str) -> Option<Histogram> {
        let mut buckets: BTreeMap<OrderedBound, f64> = BTreeMap::new();
        let bucket_name = format!("{name}_bucket");
        for s in self.named(&bucket_name) {
            let le = s.label("le").and_then(parse_value)?;
            *buckets.entry(OrderedBound(le)).or_default() += s.value;
        }
        let sum = self.sum(&format!("{name}_sum"))?;
        let count = self.sum(&format!("{name}_count"))?;
        Some(Histogram {
            buckets: buckets.into_iter().map(|(b, c)| (b.0, c)).collect(),
            sum,
            count,
        })
    }
}

/// An `f64` bucket bound that sorts (bounds are never NaN once parsed as `le`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct OrderedBound(f64);

impl Eq for OrderedBound {}

impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Parses a whole page.
pub fn parse(text: &str) -> Result<Exposition, ExpositionError> {
    let mut samples = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |what| ExpositionError::Line {
            line: i + 1,
            what,
            excerpt: line.chars().take(80).collect(),
        };
        samples.push(sample(line).map_err(fail)?);
    }
    Ok(Exposition { samples })
}

fn sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = label_set(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .and_then(parse_value)
        .ok_or("no number after the name")?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| "a timestamp that is not an integer")?;
    }
    if fields.next().is_some() {
        return Err("text after the value");
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Reads `name="value",...}` and returns what follows the closing brace.
fn label_set<'a>(mut s: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("a label without `=`")?;
        let name = s[..eq].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("a malformed label name");
        }
        let (value, rest) = quoted(s[eq + 1..].trim_start())?;
        out.push((name.to_string(), value));
        s = rest.trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

/// Reads a double-quoted label value with its escapes; returns it and what follows.
fn quoted(s: &str) -> Result<(String, &str), &'static str> {
    let body = s.strip_prefix('"').ok_or("a label value without quotes")?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, e)) => value.push(e),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("an unterminated label value")
}

/// A sample value: a float, `NaN`, `+Inf`, `-Inf` (Go's spellings included).
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        other => other.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_names_with_colons_labels_escapes_and_special_values() {
        let page = "# HELP vllm:x help\n# TYPE vllm:x counter\n\
                    vllm:x{engine=\"0\",model_name=\"a \\\"b\\\"\\\\c\"} 12.0\n\
                    vllm:x{engine=\"1\",model_name=\"m\",} 3\n\
                    up NaN\nlat_bucket{le=\"+Inf\"} 4 1700000000000\n";
        let e = parse(page).expect("valid");
        assert_eq!(e.samples.len(), 4);
        assert_eq!(e.samples[0].label("model_name"), Some("a \"b\"\\c"));
        assert_eq!(e.sum("vllm:x"), Some(15.0));
        assert!(e.sum("up").is_some_and(f64::is_nan));
        assert_eq!(e.sum("absent"), None);
    }

    #[test]
    fn histograms_sum_over_label_sets_by_bound() {
        let page = "h_bucket{engine=\"0\",le=\"0.1\"} 1\nh_bucket{engine=\"0\",le=\"+Inf\"} 2\n\
                    h_bucket{engine=\"1\",le=\"0.1\"} 3\nh_bucket{engine=\"1\",le=\"+Inf\"} 5\n\
                    h_sum{engine=\"0\"} 0.5\nh_sum{engine=\"1\"} 1.5\nh_count{engine=\"0\"} 2\n\
                    h_count{engine=\"1\"} 5\n";
        let h = parse(page).expect("valid").histogram("h").expect("present");
        assert_eq!(h.buckets, vec![(0.1, 4.0), (f64::INFINITY, 7.0)]);
        assert_eq!((h.sum, h.count), (2.0, 7.0));
    }

    #[test]
    fn a_page_that_is_not_prometheus_text_names_its_first_bad_line() {
        let err = parse("# ok\n<html><body>Login</body></html>\n").expect_err("not metrics");
        assert_eq!(
            err.to_string(),
            "line 2 is not a Prometheus sample (no metric name): `<html><body>Login</body></html>`"
        );
        assert!(parse("x{a=\"1\" 2\n").is_err());
        assert!(parse("x 1 2 3\n").is_err());
        assert!(parse("x one\n").is_err());
        assert_eq!(parse("").map(|e| e.samples.len()), Ok(0));
    }

    #[test]
    fn the_real_vllm_page_parses() {
        let raw = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../testdata/transcripts/vllm-metrics.txt"),
        )
        .expect("transcript");
        let body = raw.split_once("\r\n\r\n").map_or(raw.as_str(), |(_, b)| b);
        let e = parse(body).expect("vLLM's own page");
        assert!(e.sum("vllm:prompt_tokens_total").is_some());
        let ttft = e
            .histogram("vllm:time_to_first_token_seconds")
            .expect("TTFT histogram");
        assert_eq!(ttft.buckets.last().map(|b| b.1), Some(ttft.count));
    }

    proptest! {
        /// Any text: an error or a page, never a panic.
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        /// Rendered samples come back as they were.
        #[test]
        fn round_trips(value in -1e12f64..1e12, label in "[ -~]{0,12}") {
            let escaped = label.replace('\\', "\\\\").replace('"', "\\\"");
            let page = format!("m:a_b{{k=\"{escaped}\"}} {value:?}\n");
            let e = parse(&page).expect("valid");
            prop_assert_eq!(e.samples[0].label("k"), Some(label.as_str()));
            prop_assert_eq!(e.samples[0].value, value);
        }
    }
}
