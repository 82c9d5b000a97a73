//! Repeated measurements (min / median / max), targets with PASS/MISS, and the printed report.

use std::fmt::Write as _;
use std::time::Duration;

/// How a figure is printed.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    Seconds,
    Millis,
    Bytes,
    Count,
    Percent,
}

impl Unit {
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Seconds => format!("{v:.2} s"),
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Bytes => {
                if v >= 1024.0 * 1024.0 {
                    format!("{:.1} MiB", v / (1024.0 * 1024.0))
                } else if v >= 1024.0 {
                    format!("{:.1} KiB", v / 1024.0)
                } else {
                    format!("{v:.0} B")
                }
            }
            Unit::Count => format!("{v:.0}"),
            Unit::Percent => format!("{v:.2} %"),
        }
    }
}

/// One figure measured `n` times.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub unit: Unit,
    pub values: Vec<f64>,
}

impl Series {
    pub fn new(name: impl Into<String>, unit: Unit) -> Self {
        Self {
            name: name.into(),
            unit,
            values: Vec::new(),
        }
    }

    pub fn push(&mut self, v: f64) {
        self.values.push(v);
    }

    pub fn push_duration(&mut self, d: Duration) {
        match self.unit {
            Unit::Millis => self.push(d.as_secs_f64() * 1000.0),
            _ => self.push(d.as_secs_f64()),
        }
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    pub fn median(&self) -> f64 {
        percentile(&self.values, 50.0)
    }
}

/// Nearest-rank percentile of unsorted values (NaN when empty).
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A target: `value` must stay at or below `limit`.
#[derive(Clone, Debug)]
pub struct Check {
    pub what: String,
    pub value: f64,
    pub limit: f64,
    pub unit: Unit,
    /// Shown instead of the unit when the value is a ratio.
    pub ratio: bool,
}

impl Check {
    pub fn pass(&self) -> bool {
        self.value <= self.limit
    }
}

/// Everything measured in one run, printed at the end as one report.
#[derive(Default)]
pub struct Report {
    pub sections: Vec<(String, Vec<Series>, Vec<String>)>,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn section(&mut self, title: &str, series: Vec<Series>, notes: Vec<String>) {
        self.sections.push((title.to_string(), series, notes));
    }

    pub fn check(&mut self, what: &str, value: f64, limit: f64, unit: Unit) {
        self.checks.push(Check {
            what: what.into(),
            value,
            limit,
            unit,
            ratio: false,
        });
    }

    pub fn check_ratio(&mut self, what: &str, value: f64, limit: f64) {
        self.checks.push(Check {
            what: what.into(),
            value,
            limit,
            unit: Unit::Count,
            ratio: true,
        });
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (title, series, notes) in &self.sections {
            let _ = writeln!(out, "\n## {title}");
            if !series.is_empty() {
                let w = series
                    .iter()
                    .map(|s| s.name.len())
                    .max()
                    .unwrap_or(10)
                    .max(10);
                let _ = writeln!(
                    out,
                    "{:<w$}  {:>12}  {:>12}  {:>12}  {:>3}",
                    "figure", "min", "median", "max", "n"
                );
                for s in series {
                    let _ = writeln!(
                        out,
                        "{:<w$}  {:>12}  {:>12}  {:>12}  {:>3}",
                        s.name,
                        s.unit.show(s.min()),
                        s.unit.show(s.median()),
                        s.unit.show(s.max()),
                        s.values.len()
                    );
                }
            }
            for n in notes {
                let _ = writeln!(out, "  {n}");
            }
        }
        let _ = writeln!(out, "\n## Targets");
        let w = self.checks.iter().map(|c| c.what.len()).max().unwrap_or(10);
        for c in &self.checks {
            let show = |v: f64| {
                if c.ratio {
                    format!("{v:.3}x")
                } else {
                    c.unit.show(v)
                }
            };
            let _ = writeln!(
                out,
                "{:<w$}  {:>12}  target <= {:>12}  {:>6.2} of target  {}",
                c.what,
                show(c.value),
                show(c.limit),
                c.value / c.limit,
                if c.pass() { "PASS" } else { "MISS" }
            );
        }
        out
    }
}
