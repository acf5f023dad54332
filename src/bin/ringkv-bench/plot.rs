//! Latency-percentile plots (SVG): one file per strategy, one panel per connection count, one
//! line per WAL mechanism. The x axis is in "nines" (p90 = 1, p99 = 2, ...) so that the tail gets
//! as much room as the median; the y axis is logarithmic.

use std::path::Path;

use plotters::prelude::*;

use crate::matrix::MatrixRun;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// -log10(1 - p): 0 for p0, 1 for p90, 2 for p99, ...
fn nines(percentile: f64) -> f64 {
    -(1.0 - percentile / 100.0).log10()
}

fn nines_label(x: &f64) -> String {
    match crate::recorder::whole(*x) {
        0 => "p0".into(),
        1 => "p90".into(),
        2 => "p99".into(),
        n => format!("p99.{}", "9".repeat(ringkv::coding::to_usize(n) - 2)),
    }
}

pub fn percentiles(
    path: &Path,
    strategy: &str,
    runs: &[&MatrixRun],
    connection_counts: &[usize],
) -> Result<(), String> {
    let failed = |error: &dyn std::fmt::Display| format!("cannot draw {}: {error}", path.display());
    let panels = connection_counts.len().max(1);
    let root =
        SVGBackend::new(path, (420 * u32::try_from(panels).expect("a few panels"), 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let root = root
        .titled(
            &format!("ringkv --fsync {strategy}: latency by percentile"),
            ("sans-serif", 20),
        )
        .map_err(|e| failed(&e))?;
    let points = |run: &MatrixRun| -> Vec<(f64, f64)> {
        run.report
            .total
            .percentiles
            .iter()
            .filter(|(p, _)| *p < 100.0)
            .map(|&(p, micros)| (nines(p), micros.max(1) as f64))
            .collect()
    };
    let all: Vec<f64> = runs.iter().flat_map(|run| points(run)).map(|(_, y)| y).collect();
    let low = all.iter().cloned().fold(f64::MAX, f64::min).max(1.0) / 1.5;
    let high = all.iter().cloned().fold(1.0, f64::max) * 1.5;
    for (area, &connections) in root.split_evenly((1, panels)).iter().zip(connection_counts) {
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "{connections} connection{}",
                    if connections == 1 { "" } else { "s" }
                ),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..5.0f64, (low..high).log_scale())
            .map_err(|e| failed(&e))?;
        chart
            .configure_mesh()
            .x_labels(6)
            .x_label_formatter(&nines_label)
            .y_desc("latency (µs)")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(|e| failed(&e))?;
        for (index, run) in runs.iter().filter(|r| r.connections == connections).enumerate() {
            let color = COLORS[index % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points(run), color.stroke_width(2)))
                .map_err(|e| failed(&e))?
                .label(run.mechanism.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| failed(&e))?;
    }
    root.present().map_err(|e| failed(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_put_each_decade_of_the_tail_one_step_apart() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(nines_label(&3.0), "p99.9");
        assert_eq!(nines_label(&1.0), "p90");
    }
}
