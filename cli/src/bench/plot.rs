//! `--plot FILE.svg`: checkpoint size, checkpoint time and restore time
//! against state size, one line per backend (and value size, when a sweep
//! varies it), as an SVG a person can open in a browser.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use plotters::prelude::*;

use super::state_size::StateSizeReport;

type Panel = (
    &'static str,
    &'static str,
    fn(&StateSizeReport) -> Option<f64>,
);

const MIB: f64 = 1024.0 * 1024.0;

/// The three panels: title, y-axis label, and the figure of a run.
const PANELS: [Panel; 3] = [
    ("Full checkpoint size", "MiB", |r| {
        r.checkpoints.first().map(|c| c.full_bytes as f64 / MIB)
    }),
    ("Full checkpoint time (sync + async)", "ms", |r| {
        r.checkpoints
            .first()
            .and_then(|c| Some(c.sync_ms? + c.async_ms?))
    }),
    ("Restore time from storage", "ms", |r| {
        Some(r.restore_storage_ms)
    }),
];

/// Draws the runs of a sweep into `path`.
pub(super) fn draw(path: &Path, reports: &[StateSizeReport]) -> anyhow::Result<()> {
    let sizes: std::collections::BTreeSet<usize> = reports.iter().map(|r| r.value_size).collect();
    let mut series: BTreeMap<String, Vec<&StateSizeReport>> = BTreeMap::new();
    for r in reports {
        let name = if sizes.len() > 1 {
            format!("{} ({} B values)", r.backend, r.value_size)
        } else {
            r.backend.to_owned()
        };
        series.entry(name).or_default().push(r);
    }
    for runs in series.values_mut() {
        runs.sort_by_key(|r| r.raw_bytes);
    }
    let shown = format!("--plot {}", path.display());
    let root = SVGBackend::new(path, (900, 1100)).into_drawing_area();
    root.fill(&WHITE)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context(shown.clone())?;
    let max_x = reports
        .iter()
        .map(|r| r.raw_bytes as f64 / MIB)
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.05;
    for (area, (title, unit, figure)) in root.split_evenly((3, 1)).iter().zip(PANELS) {
        let max_y = reports
            .iter()
            .filter_map(figure)
            .fold(0.0, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..max_x, 0f64..max_y)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context(shown.clone())?;
        chart
            .configure_mesh()
            .x_desc("state size (MiB of keys and values)")
            .y_desc(unit)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context(shown.clone())?;
        for (i, (name, runs)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let points: Vec<(f64, f64)> = runs
                .iter()
                .filter_map(|r| Some((r.raw_bytes as f64 / MIB, figure(r)?)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context(shown.clone())?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context(shown.clone())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .context(shown.clone())?;
    }
    root.present()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context(shown)?;
    Ok(())
}
