//! Prometheus exposition (text format 0.0.4) of the service's counters:
//! a latency histogram per stream and a writer for the metric families.

use std::fmt::Write as _;

/// Upper bounds (milliseconds) of the end-to-end latency buckets.
pub const LATENCY_BUCKETS_MS: [f64; 12] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

/// A cumulative histogram as Prometheus keeps one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS_MS`].
    pub buckets: [u64; LATENCY_BUCKETS_MS.len()],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, value: f64) {
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&mut self.buckets) {
            if value <= *bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }
}

/// Writes metric families; each is declared once with its help and type,
/// then its samples follow.
#[derive(Default)]
pub struct Exposition {
    text: String,
}

impl Exposition {
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], histogram: &Histogram) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in LATENCY_BUCKETS_MS.iter().zip(histogram.buckets) {
            let le = format_value(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, count as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, histogram.count as f64);
        self.sample(&format!("{name}_sum"), labels, histogram.sum);
        self.sample(&format!("{name}_count"), labels, histogram.count as f64);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        for v in [3.0, 7.0, 60.0, 1e6] {
            h.observe(v);
        }
        assert_eq!(h.buckets[0], 1); // ≤ 5
        assert_eq!(h.buckets[1], 2); // ≤ 10
        assert_eq!(h.buckets[4], 3); // ≤ 100
        assert_eq!(h.buckets[11], 3); // ≤ 30 s: the 1e6 one is only in +Inf
        assert_eq!(h.count, 4);
        assert_eq!(h.sum, 1e6 + 70.0);
    }

    #[test]
    fn exposition_text_format() {
        let mut h = Histogram::default();
        h.observe(12.0);
        let mut e = Exposition::default();
        e.family("owltrack_up", "gauge", "Whether the server runs.");
        e.sample("owltrack_up", &[], 1.0);
        e.family("lat", "histogram", "Latency.");
        e.histogram("lat", &[("stream", "a\"b")], &h);
        let text = e.finish();
        assert!(text.starts_with("# HELP owltrack_up Whether the server runs.\n# TYPE owltrack_up gauge\nowltrack_up 1\n"));
        assert!(text.contains("lat_bucket{stream=\"a\\\"b\",le=\"10\"} 0\n"));
        assert!(text.contains("lat_bucket{stream=\"a\\\"b\",le=\"25\"} 1\n"));
        assert!(text.contains("lat_bucket{stream=\"a\\\"b\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("lat_sum{stream=\"a\\\"b\"} 12\n"));
        assert!(text.contains("lat_count{stream=\"a\\\"b\"} 1\n"));
    }
}
