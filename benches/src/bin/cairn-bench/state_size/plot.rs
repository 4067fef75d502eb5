//! `--plot FILE.svg`: checkpoint size, checkpoint time and restore time
//! against state size, one line per backend (and value size, when a sweep
//! varies it), as an SVG a person can open in a browser.
//!
//! What a sizing user asks of it: how big a full checkpoint is, and, for
//! `--incremental` runs, how many bytes each incremental checkpoint wrote
//! beside it (a point per checkpoint, the line through their mean); the same
//! for the checkpoint times. An axis whose figures span more than
//! [`LOG_SPAN`] (largest ÷ smallest) is logarithmic, so a sweep over orders
//! of magnitude, or a 1% incremental beside its full size, stays readable.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use anyhow::Context as _;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

use super::measure::StateSizeReport;
use crate::report::CheckpointReport;

const MIB: f64 = 1024.0 * 1024.0;

/// An axis is logarithmic when its largest figure is more than this many
/// times its smallest.
pub(super) const LOG_SPAN: f64 = 100.0;

/// The legend label and the figure of each incremental checkpoint.
type PerCheckpoint = (&'static str, fn(&CheckpointReport) -> Option<f64>);

/// One panel: title, y-axis label, the figure of a run's first checkpoint
/// (or of the run), and for incremental runs the figure of each later
/// checkpoint, with the labels of both.
struct Panel {
    title: &'static str,
    unit: &'static str,
    first_label: &'static str,
    first: fn(&StateSizeReport) -> Option<f64>,
    incremental: Option<PerCheckpoint>,
}

/// Synchronous plus asynchronous phase of one checkpoint.
fn phases_ms(c: &CheckpointReport) -> Option<f64> {
    Some(c.sync_ms? + c.async_ms?)
}

/// The three panels.
const PANELS: [Panel; 3] = [
    Panel {
        title: "Checkpoint size",
        unit: "MiB",
        first_label: "full",
        first: |r| r.checkpoints.first().map(|c| c.full_bytes as f64 / MIB),
        incremental: Some(("written by each incremental checkpoint", |c| {
            Some(c.written_bytes as f64 / MIB)
        })),
    },
    Panel {
        title: "Checkpoint time (sync + async)",
        unit: "ms",
        first_label: "full (first checkpoint)",
        first: |r| r.checkpoints.first().and_then(phases_ms),
        incremental: Some(("each incremental checkpoint", phases_ms)),
    },
    Panel {
        title: "Restore time from storage",
        unit: "ms",
        first_label: "",
        first: |r| Some(r.restore_storage_ms),
        incremental: None,
    },
];

/// One legend entry: a line through `line`, a marker at each of `marks`.
struct Line {
    label: String,
    color: RGBAColor,
    line: Vec<(f64, f64)>,
    marks: Vec<(f64, f64)>,
    /// The incremental checkpoints' line (thin, triangles) beside the full one.
    incremental: bool,
}

/// The lines of `panel` for the runs of each series.
fn lines(panel: &Panel, series: &BTreeMap<String, Vec<&StateSizeReport>>) -> Vec<Line> {
    let mut out = Vec::new();
    for (i, (name, runs)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let x = |r: &StateSizeReport| r.raw_bytes as f64 / MIB;
        let points: Vec<(f64, f64)> = runs
            .iter()
            .filter_map(|r| Some((x(r), (panel.first)(r)?)))
            .collect();
        out.push(Line {
            label: if panel.first_label.is_empty() {
                name.clone()
            } else {
                format!("{name}: {}", panel.first_label)
            },
            color,
            marks: points.clone(),
            line: points,
            incremental: false,
        });
        let Some((label, figure)) = panel.incremental else {
            continue;
        };
        let (mut line, mut marks) = (Vec::new(), Vec::new());
        for r in runs.iter().filter(|r| r.incremental) {
            let each: Vec<f64> = r.checkpoints.iter().skip(1).filter_map(figure).collect();
            if each.is_empty() {
                continue;
            }
            marks.extend(each.iter().map(|&y| (x(r), y)));
            line.push((x(r), each.iter().sum::<f64>() / each.len() as f64));
        }
        if !marks.is_empty() {
            out.push(Line {
                label: format!("{name}: {label}"),
                color,
                line,
                marks,
                incremental: true,
            });
        }
    }
    out
}

/// A range over `values` and whether it is logarithmic (the values span more
/// than [`LOG_SPAN`]); a linear range starts at 0.
fn axis(values: impl Iterator<Item = f64>, headroom: f64) -> (Range<f64>, bool) {
    let (mut min, mut max) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        min = min.min(v);
        max = max.max(v);
    }
    if max > 0.0 && max / min > LOG_SPAN {
        (min / headroom..max * headroom, true)
    } else {
        (0.0..max.max(1e-3) * headroom, false)
    }
}

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
        .map_err(plot_error)
        .context(shown.clone())?;
    let (x_range, x_log) = axis(reports.iter().map(|r| r.raw_bytes as f64 / MIB), 1.05);
    for (area, panel) in root.split_evenly((3, 1)).iter().zip(&PANELS) {
        let lines = lines(panel, &series);
        let (y_range, y_log) = axis(lines.iter().flat_map(|l| l.marks.iter().map(|p| p.1)), 1.1);
        let x_desc = if x_log {
            "state size (MiB of keys and values, log scale)"
        } else {
            "state size (MiB of keys and values)"
        };
        let y_desc = if y_log {
            format!("{} (log scale)", panel.unit)
        } else {
            panel.unit.to_owned()
        };
        let labels = Labels {
            title: panel.title,
            x_desc,
            y_desc: &y_desc,
        };
        let (x, y) = (x_range.clone(), y_range);
        match (x_log, y_log) {
            (false, false) => draw_panel(area, x, y, &labels, &lines),
            (true, false) => draw_panel(area, x.log_scale(), y, &labels, &lines),
            (false, true) => draw_panel(area, x, y.log_scale(), &labels, &lines),
            (true, true) => draw_panel(area, x.log_scale(), y.log_scale(), &labels, &lines),
        }
        .context(shown.clone())?;
    }
    root.present().map_err(plot_error).context(shown)?;
    Ok(())
}

/// The texts of one panel.
struct Labels<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
}

/// Draws one panel's axes, lines and legend on `area`, over linear or
/// logarithmic axes `x` and `y`.
fn draw_panel<X, Y>(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    x: X,
    y: Y,
    labels: &Labels<'_>,
    lines: &[Line],
) -> anyhow::Result<()>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(labels.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc(labels.x_desc)
        .y_desc(labels.y_desc)
        .draw()
        .map_err(plot_error)?;
    for line in lines {
        let color = line.color;
        let width = if line.incremental { 1 } else { 2 };
        chart
            .draw_series(LineSeries::new(
                line.line.clone(),
                color.stroke_width(width),
            ))
            .map_err(plot_error)?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        if line.incremental {
            chart
                .draw_series(
                    line.marks
                        .iter()
                        .map(|&p| TriangleMarker::new(p, 5, color.filled())),
                )
                .map_err(plot_error)?;
        } else {
            chart
                .draw_series(
                    line.marks
                        .iter()
                        .map(|&p| Circle::new(p, 4, color.filled())),
                )
                .map_err(plot_error)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(plot_error)?;
    Ok(())
}

/// A plotters error as an `anyhow` error.
fn plot_error<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(id: u64, full_bytes: u64, written_bytes: u64) -> CheckpointReport {
        CheckpointReport {
            id,
            full_bytes,
            written_bytes,
            sync_ms: Some(1.0),
            async_ms: Some(2.0),
            duration_ms: Some(3.0),
            discard_ms: Some(0.5),
            storage_bytes: Some(full_bytes),
            rocks: None,
        }
    }

    /// A rocks `--incremental` run over `keys` keys of 100 B: a full first
    /// checkpoint, then two incremental ones writing about 1% of it.
    fn incremental_run(keys: u64) -> StateSizeReport {
        let full = keys * 111;
        StateSizeReport {
            backend: "rocks",
            storage: "file".to_owned(),
            incremental: true,
            keys,
            value_size: 100,
            update_fraction: 0.01,
            rounds: 2,
            parallelism: 1,
            seed: 42,
            raw_bytes: full,
            load_seconds: 0.1,
            settle_seconds: None,
            load_ops_per_sec: 1e6,
            update_ms: vec![1.0, 1.0],
            checkpoints: vec![
                checkpoint(1, full, full),
                checkpoint(2, full, full / 100),
                checkpoint(3, full, full / 90),
            ],
            restore_local_ms: Some(1.0),
            restore_storage_ms: 5.0,
            restored_keys: keys,
            restore_exact: true,
            peak_rss_bytes: None,
            memory: Vec::new(),
            io_read_bytes: None,
            io_write_bytes: None,
            savepoints: Vec::new(),
            dir: None,
        }
    }

    #[test]
    fn an_incremental_sweep_plots_the_written_bytes_on_log_axes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.svg");
        let reports: Vec<_> = [1_000, 100_000, 1_000_000]
            .into_iter()
            .map(incremental_run)
            .collect();
        draw(&path, &reports).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        for text in [
            "Checkpoint size",
            "rocks: full",
            "rocks: written by each incremental checkpoint",
            "rocks: each incremental checkpoint",
            "Restore time from storage",
            "state size (MiB of keys and values, log scale)",
            "MiB (log scale)",
        ] {
            assert!(svg.contains(text), "{text:?} missing from the plot");
        }
    }

    #[test]
    fn axes_turn_logarithmic_past_the_span() {
        let (range, log) = axis([1.0, 50.0].into_iter(), 1.0);
        assert!(!log);
        assert_eq!(range, 0.0..50.0);
        let (range, log) = axis([1.0, 101.0, 0.0].into_iter(), 1.0);
        assert!(log, "zero is left out of a log axis");
        assert_eq!(range, 1.0..101.0);
        assert!(!axis(std::iter::empty(), 1.0).1);
    }
}
