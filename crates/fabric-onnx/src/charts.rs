//! Small, dependency-free SVG charts for the evaluation report.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A line chart of `values` (x = 1…n).
pub fn line_chart(title: &str, values: &[f64]) -> String {
    if values.is_empty() {
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"480\" height=\"60\" font-family=\"sans-serif\" font-size=\"13\">\n<text x=\"10\" y=\"30\">{}: no training log given</text>\n</svg>\n",
            escape(title)
        );
    }
    let (width, height, margin) = (480.0, 260.0, 40.0);
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min).min(max - 1e-9);
    let x = |i: usize| margin + (width - 2.0 * margin) * i as f64 / (values.len().max(2) - 1) as f64;
    let y = |v: f64| height - margin - (height - 2.0 * margin) * (v - min) / (max - min);
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="{margin}" y="20" font-size="13">{}</text>
<line x1="{margin}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/>
<line x1="{margin}" y1="{margin}" x2="{margin}" y2="{b}" stroke="#888"/>
<text x="4" y="{ty:.1}">{max:.3}</text>
<text x="4" y="{b}">{min:.3}</text>
<text x="{r}" y="{lb}" text-anchor="end">epoch {n}</text>
<polyline fill="none" stroke="#3b6ea5" stroke-width="2" points="{}"/>
</svg>
"##,
        escape(title),
        points.join(" "),
        b = height - margin,
        r = width - margin,
        ty = margin + 4.0,
        lb = height - margin + 16.0,
        n = values.len(),
    );
    svg
}

/// A confusion matrix heat map: rows are the truth, columns the prediction.
pub fn confusion_matrix(counts: &BTreeMap<String, BTreeMap<String, usize>>) -> String {
    let classes: Vec<&String> = counts
        .keys()
        .chain(counts.values().flat_map(|row| row.keys()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cell = 28.0;
    let label = 170.0;
    // Room on the right for the last rotated column label.
    let size = label + cell * classes.len() as f64 + 60.0;
    let max = counts
        .values()
        .flat_map(|r| r.values())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" font-family="sans-serif" font-size="10">
<rect width="100%" height="100%" fill="white"/>
<text x="4" y="14" font-size="12">rows: what the user did; columns: what the model said</text>
"#
    );
    for (i, class) in classes.iter().enumerate() {
        let offset = label + cell * i as f64;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            label - 4.0,
            offset + cell * 0.65,
            escape(class)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate({:.1},{:.1}) rotate(-60)">{}</text>"#,
            offset + cell * 0.6,
            label - 4.0,
            escape(class)
        );
    }
    for (r, truth) in classes.iter().enumerate() {
        for (c, predicted) in classes.iter().enumerate() {
            let count = counts
                .get(*truth)
                .and_then(|row| row.get(*predicted))
                .copied()
                .unwrap_or(0);
            let shade = (count as f64 / max).sqrt();
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{cell}" height="{cell}" fill="#3b6ea5" fill-opacity="{shade:.3}" stroke="#ddd"/>"##,
                label + cell * c as f64,
                label + cell * r as f64,
            );
            if count > 0 {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{count}</text>"#,
                    label + cell * c as f64 + cell / 2.0,
                    label + cell * r as f64 + cell * 0.65
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}
