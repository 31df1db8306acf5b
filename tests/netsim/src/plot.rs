//! The WAN bench's plots: per profile, one SVG with three panels over the same time axis,
//! each carrier a line: goodput as the receiver saw it, the sender's congestion window,
//! and its pacing rate.

use std::path::Path;

use plotters::prelude::*;

use crate::trace::Series;

const COLOURS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Which of a series' lines a panel draws, and its axis label.
type Pick = fn(&Series) -> &[(f64, f64)];

/// Draws `series` to `file` (SVG) under `title`.
pub fn write_svg(file: &Path, title: &str, series: &[Series]) -> Result<(), String> {
    let root = SVGBackend::new(file, (900, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    // The time axis spans the second-longest download: one carrier far slower than the
    // others (CUBIC under random loss: 150 s against 5) would squeeze theirs into a sliver.
    let mut ends: Vec<f64> = series
        .iter()
        .map(|s| {
            s.goodput
                .iter()
                .chain(&s.window)
                .chain(&s.pacing)
                .map(|p| p.0)
                .fold(0.0, f64::max)
        })
        .collect();
    ends.sort_by(|a, b| b.total_cmp(a));
    let end = (ends.get(1).or(ends.first()).copied().unwrap_or(1.0) * 1.1).max(1.0);
    let title = match ends.first() {
        Some(&longest) if longest > end => format!("{title} (cut at {end:.0} s of {longest:.0})"),
        _ => title.to_string(),
    };
    let root = root
        .titled(&title, ("sans-serif", 18))
        .map_err(|e| e.to_string())?;
    let panels = root.split_evenly((3, 1));
    let picks: [(&str, Pick); 3] = [
        ("goodput, MB/s", |s| &s.goodput),
        ("window, KB", |s| &s.window),
        ("pacing rate, MB/s", |s| &s.pacing),
    ];
    for (panel, (label, pick)) in panels.iter().zip(picks) {
        let top = series
            .iter()
            .flat_map(|s| pick(s).iter().map(|p| p.1))
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds since the request")
            .y_desc(label)
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(
                    pick(s).iter().copied().filter(|p| p.0 <= end),
                    colour.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
