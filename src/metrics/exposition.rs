//! Writing the text exposition format: `# HELP` and `# TYPE` once per family, then its samples.

use std::io::Write;

use super::histogram::{Histogram, Unit};

/// The page being written.
#[derive(Default)]
pub struct Exposition {
    out: Vec<u8>,
}

/// A label set: (name, value) pairs. Values here never need escaping (they are keywords and
/// numbers), which `sample` asserts.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    pub fn into_bytes(self) -> Vec<u8> {
        self.out
    }

    /// Starts a family: its help text and type (`counter`, `gauge` or `histogram`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        debug_assert!(!help.contains('\n') && !help.contains('\\'));
        // Writing into a Vec cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn labels(&mut self, labels: Labels, le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push(b'{');
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        for (i, (name, value)) in all.enumerate() {
            assert!(
                !value.contains(['"', '\\', '\n']),
                "label value {value:?} would need escaping"
            );
            if i > 0 {
                self.out.push(b',');
            }
            let _ = write!(self.out, "{name}=\"{value}\"");
        }
        self.out.push(b'}');
    }

    pub fn sample(&mut self, name: &str, labels: Labels, value: u64) {
        self.out.extend_from_slice(name.as_bytes());
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    pub fn sample_f64(&mut self, name: &str, labels: Labels, value: f64) {
        self.out.extend_from_slice(name.as_bytes());
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// One family and one sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A histogram's `_bucket` series (cumulative, ending in `+Inf`), `_sum` and `_count`.
    /// Microsecond histograms are written in seconds.
    pub fn histogram(&mut self, name: &str, labels: Labels, histogram: &Histogram) {
        let (buckets, sum) = histogram.cumulative();
        let scale = |value: u64| match histogram.unit() {
            Unit::Micros => format!("{}", value as f64 / 1e6),
            Unit::Plain => value.to_string(),
        };
        let bucket_name = format!("{name}_bucket");
        for (bound, count) in &buckets {
            let le = bound.map_or_else(|| "+Inf".to_string(), scale);
            self.out.extend_from_slice(bucket_name.as_bytes());
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {count}");
        }
        self.out.extend_from_slice(format!("{name}_sum").as_bytes());
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", scale(sum));
        self.sample(&format!("{name}_count"), labels, histogram.count());
    }
}
