//! Charts as inline SVG: line charts (one polyline per series) and stacked bar charts, with
//! axes, ticks and a legend. No script, no external asset: the page stays self-contained.

use std::fmt::Write;

/// Width and height of every chart, in CSS pixels.
const W: f64 = 640.0;
const H: f64 = 300.0;
/// Plot margins: left (tick labels), right, top (legend), bottom (round numbers).
const ML: f64 = 56.0;
const MR: f64 = 16.0;
const MT: f64 = 34.0;
const MB: f64 = 40.0;

/// Series colours (colour-blind-safe, Okabe–Ito).
const COLOURS: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..=12)
        .map(|i| first + step * i as f64)
        .take_while(|v| *v <= hi + step * 1e-9)
        .collect()
}

fn label(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The frame: axes, y ticks for `[lo, hi]`, x labels for `rounds`, legend. Returns the SVG
/// opening and the value-to-pixel mappings.
struct Frame {
    svg: String,
    lo: f64,
    hi: f64,
    n: usize,
}

impl Frame {
    fn new(title: &str, y_label: &str, rounds: &[u64], lo: f64, hi: f64, legend: &[&str]) -> Self {
        let (lo, hi) = if hi - lo < 1e-12 {
            (lo - 0.5, hi + 0.5)
        } else {
            let pad = (hi - lo) * 0.05;
            (
                if lo >= 0.0 && lo - pad < 0.0 {
                    0.0
                } else {
                    lo - pad
                },
                hi + pad,
            )
        };
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg"><title>{t}</title>"#,
            t = escape(title)
        );
        let mut f = Frame {
            svg,
            lo,
            hi,
            n: rounds.len(),
        };
        let (x0, x1, y0, y1) = (ML, W - MR, H - MB, MT);
        for t in ticks(lo, hi) {
            let y = f.y(t);
            let _ = write!(
                f.svg,
                r##"<line x1="{x0}" x2="{x1}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="#444">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                label(t)
            );
        }
        let every = rounds.len().div_ceil(16).max(1);
        for (i, r) in rounds.iter().enumerate() {
            if i % every == 0 || i + 1 == rounds.len() {
                let _ = write!(
                    f.svg,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#444">{r}</text>"##,
                    f.x(i),
                    y0 + 16.0
                );
            }
        }
        let _ = write!(
            f.svg,
            r##"<line x1="{x0}" x2="{x0}" y1="{y1}" y2="{y0}" stroke="#888"/><line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#888"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11" fill="#444">round</text><text x="12" y="{:.1}" font-size="11" fill="#444" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}</text>"##,
            (x0 + x1) / 2.0,
            H - 6.0,
            (y0 + y1) / 2.0,
            (y0 + y1) / 2.0,
            escape(y_label)
        );
        let mut lx = ML;
        for (i, name) in legend.iter().enumerate() {
            let _ = write!(
                f.svg,
                r##"<rect x="{lx:.1}" y="10" width="12" height="12" fill="{}"/><text x="{:.1}" y="20" font-size="12" fill="#222">{}</text>"##,
                COLOURS[i % COLOURS.len()],
                lx + 16.0,
                escape(name)
            );
            lx += 26.0 + 7.0 * name.chars().count() as f64;
        }
        f
    }

    /// The x pixel of the `i`-th round (slots centred).
    fn x(&self, i: usize) -> f64 {
        let slot = (W - ML - MR) / self.n.max(1) as f64;
        ML + slot * (i as f64 + 0.5)
    }

    fn slot(&self) -> f64 {
        (W - ML - MR) / self.n.max(1) as f64
    }

    fn y(&self, v: f64) -> f64 {
        let (y0, y1) = (H - MB, MT);
        y0 - (v - self.lo) / (self.hi - self.lo) * (y0 - y1)
    }

    /// Closes the chart; one without a single mark says so in its middle.
    fn finish(mut self, marks: usize) -> String {
        if marks == 0 {
            let _ = write!(
                self.svg,
                r##"<text class="note" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13" fill="#777">none in this run</text>"##,
                (ML + W - MR) / 2.0,
                (MT + H - MB) / 2.0
            );
        }
        self.svg.push_str("</svg>");
        self.svg
    }
}

/// A line chart: `series` are (name, one value per round, `None` where there is none).
pub fn lines(
    title: &str,
    y_label: &str,
    rounds: &[u64],
    series: &[(String, Vec<Option<f64>>)],
) -> String {
    let values = series.iter().flat_map(|(_, v)| v.iter().flatten().copied());
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    let mut f = Frame::new(title, y_label, rounds, lo, hi, &names);
    let mut marks = 0;
    for (k, (_, values)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let points: Vec<Option<(f64, f64)>> = values
            .iter()
            .enumerate()
            .map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| (f.x(i), f.y(v))))
            .collect();
        // A line joins consecutive rounds only: a missing value breaks it.
        for run in points.split(Option::is_none) {
            if run.len() > 1 {
                let d: Vec<String> = run
                    .iter()
                    .flatten()
                    .map(|(x, y)| format!("{x:.1},{y:.1}"))
                    .collect();
                let _ = write!(
                    f.svg,
                    r#"<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                    d.join(" ")
                );
            }
        }
        let points: Vec<(f64, f64)> = points.into_iter().flatten().collect();
        marks += points.len();
        for (x, y) in points {
            let _ = write!(
                f.svg,
                r#"<circle class="series" cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#
            );
        }
    }
    f.finish(marks)
}

/// A stacked bar chart: `stacks` are (name, one value per round), drawn bottom-up.
pub fn stacked_bars(
    title: &str,
    y_label: &str,
    rounds: &[u64],
    stacks: &[(String, Vec<f64>)],
) -> String {
    let totals: Vec<f64> = (0..rounds.len())
        .map(|i| {
            stacks
                .iter()
                .map(|(_, v)| v.get(i).copied().unwrap_or(0.0).max(0.0))
                .sum()
        })
        .collect();
    let hi = match totals.iter().copied().fold(0.0, f64::max) {
        h if h > 0.0 => h,
        _ => 1.0,
    };
    let names: Vec<&str> = stacks.iter().map(|(n, _)| n.as_str()).collect();
    let mut f = Frame::new(title, y_label, rounds, 0.0, hi, &names);
    let w = (f.slot() * 0.7).max(1.0);
    let mut marks = 0;
    for (i, round) in rounds.iter().enumerate() {
        let mut base = 0.0;
        for (k, (_, values)) in stacks.iter().enumerate() {
            let v = values.get(i).copied().unwrap_or(0.0).max(0.0);
            if v > 0.0 {
                marks += 1;
                let (top, bottom) = (f.y(base + v), f.y(base));
                let _ = write!(
                    f.svg,
                    r#"<rect class="series" x="{:.1}" y="{top:.1}" width="{w:.1}" height="{:.1}" fill="{}"><title>round {}: {} {}</title></rect>"#,
                    f.x(i) - w / 2.0,
                    (bottom - top).max(0.5),
                    COLOURS[k % COLOURS.len()],
                    round,
                    escape(&stacks[k].0),
                    label(v)
                );
            }
            base += v;
        }
    }
    f.finish(marks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let t = ticks(0.61, 0.78);
        assert!(
            t.first().unwrap() >= &0.61 && t.last().unwrap() <= &0.78,
            "{t:?}"
        );
        assert!(t.len() >= 3 && t.len() <= 7, "{t:?}");
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    }

    #[test]
    fn a_line_chart_draws_each_series_and_escapes_names() {
        let svg = lines(
            "AUC",
            "auc",
            &[1, 2, 3],
            &[
                ("<a>".into(), vec![Some(0.6), Some(0.7), None]),
                ("b".into(), vec![Some(0.5), None, Some(0.6)]),
            ],
        );
        assert_eq!(
            svg.matches("<polyline").count(),
            1,
            "b's line is broken at its gap"
        );
        assert_eq!(
            svg.matches("<circle").count(),
            4,
            "a missing value is not drawn"
        );
        assert!(svg.contains("&lt;a&gt;") && !svg.contains("<a>"));
    }

    #[test]
    fn bars_stack_and_skip_zeros() {
        let svg = stacked_bars(
            "t",
            "s",
            &[1, 2],
            &[
                ("train".into(), vec![1.0, 2.0]),
                ("overhead".into(), vec![0.5, 0.0]),
            ],
        );
        assert_eq!(svg.matches("<rect class=\"series\"").count(), 3);
        assert!(!svg.contains("none in this run"));
        let empty = stacked_bars("t", "s", &[1, 2], &[("refused".into(), vec![0.0, 0.0])]);
        assert!(empty.contains("none in this run"));
    }
}
