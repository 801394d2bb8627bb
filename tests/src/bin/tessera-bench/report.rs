//! Results: one row per scenario, metric and size, printed as a table and as JSON
//! (`scenario`, `metric`, `unit`, `value`, `baseline`, `ratio`, `target`, `met`).

use serde_json::{json, Value};

/// What a row must reach. Ratios are always `value / baseline`.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// `ratio <= x`.
    RatioAtMost(f64),
    /// `ratio >= x`.
    RatioAtLeast(f64),
    /// `value <= x`, in the row's unit (no baseline).
    AtMost(f64),
    /// Measured and reported; no target.
    Report,
}

impl Target {
    fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtMost(x) => format!("<= {x}x baseline"),
            Target::RatioAtLeast(x) => format!(">= {x}x baseline"),
            Target::AtMost(x) => format!("<= {x} {unit}"),
            Target::Report => "report".into(),
        }
    }

    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        match (self, ratio) {
            (Target::RatioAtMost(x), Some(r)) => Some(r <= x),
            (Target::RatioAtLeast(x), Some(r)) => Some(r >= x),
            (Target::AtMost(x), _) => Some(value <= x),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub unit: &'static str,
    pub value: f64,
    pub baseline: Option<f64>,
    pub target: Target,
}

impl Row {
    pub fn new(scenario: &str, metric: &str, unit: &'static str, value: f64) -> Row {
        Row {
            scenario: scenario.into(),
            metric: metric.into(),
            unit,
            value,
            baseline: None,
            target: Target::Report,
        }
    }

    /// An absolute target, in the row's unit.
    pub fn at_most(mut self, x: f64) -> Row {
        self.target = Target::AtMost(x);
        self
    }

    pub fn against(mut self, baseline: f64, target: Target) -> Row {
        self.baseline = Some(baseline);
        self.target = target;
        self
    }

    fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b > 0.0).map(|b| self.value / b)
    }
}

pub fn json(rows: &[Row]) -> String {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "scenario": r.scenario,
                "metric": r.metric,
                "unit": r.unit,
                "value": r.value,
                "baseline": r.baseline,
                "ratio": r.ratio(),
                "target": r.target.describe(r.unit),
                "met": r.target.met(r.value, r.ratio()),
            })
        })
        .collect();
    let mut s = Value::Array(rows).to_string();
    s.push('\n');
    s
}

pub fn table(rows: &[Row]) -> String {
    let num = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.2}")
        }
    };
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.metric.clone(),
                format!("{} {}", num(r.value), r.unit),
                r.baseline
                    .map_or("-".into(), |b| format!("{} {}", num(b), r.unit)),
                r.ratio().map_or("-".into(), |x| format!("{x:.3}")),
                r.target.describe(r.unit),
                match r.target.met(r.value, r.ratio()) {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => "-".into(),
                },
            ]
        })
        .collect();
    let head = [
        "scenario", "metric", "value", "baseline", "ratio", "target", "met",
    ];
    let mut width = head.map(str::len);
    for c in &cells {
        for (w, s) in width.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let padded: Vec<String> = c
            .iter()
            .zip(width)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(&head.map(String::from));
    for c in &cells {
        out.push_str(&line(c));
    }
    out
}
