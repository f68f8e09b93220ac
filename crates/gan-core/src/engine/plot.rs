//! Curves of a run as PNG plots, drawn from its logs: the losses and the discriminator's
//! accuracies of `metrics.jsonl` (one line per step), and the judge's scores of
//! `eval.jsonl` (one line per `gan-cli eval`).
//!
//! The engine redraws them at the end of every epoch, so a run's `curves/` folder shows
//! the training as it goes; `gan-cli report` redraws them too. Text is set in DejaVu
//! Sans, embedded in the binary, so plotting needs no system font library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use anyhow::{bail, Context, Result};
use image::ImageEncoder;
use plotters::prelude::*;

/// Folder of a run that holds the plots.
pub const CURVES_DIR: &str = "curves";

/// Most points drawn per curve: steps are averaged in windows down to about this many,
/// which also smooths the per-batch noise of GAN losses.
const MAX_POINTS: usize = 400;

/// Size of every plot, in pixels.
const SIZE: (u32, u32) = (900, 420);

/// One line of a plot: a name and its (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// Redraws every plot of the run in `run_dir` into `run_dir/curves/`, returning the
/// files written:
///
/// - `losses.png`: every logged loss (`*loss*`, `l_*`, `g_adv`) against the step;
/// - `accuracy.png`: the discriminator's accuracies (`*acc*`);
/// - `other.png`: any other logged number (InfoGAN's mutual-information bound, ...);
/// - `eval.png`: MNIST-FID and the judge's Inception-Score analogue at each step
///   `gan-cli eval` was run, when it was.
///
/// A run with no metrics yet is an error; a torn last line (the log is being written)
/// is skipped.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let log = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&log).with_context(|| {
        format!(
            "{} has no readable metrics.jsonl: is it a run folder?",
            run_dir.display()
        )
    })?;
    let rows = parse_jsonl(&text);
    if rows.is_empty() {
        bail!("{} holds no metrics yet", log.display());
    }
    let window = window_for(rows.len());
    let mut groups: BTreeMap<&str, Vec<Series>> = BTreeMap::new();
    for (key, points) in columns(&rows, "step") {
        if key == "epoch" {
            continue;
        }
        let group = if key.contains("acc") {
            "accuracy"
        } else if key.contains("loss") || key.starts_with("l_") || key == "g_adv" {
            "losses"
        } else {
            "other"
        };
        groups
            .entry(group)
            .or_default()
            .push((key, window_means(&points, window)));
    }
    let dir = run_dir.join(CURVES_DIR);
    let caption = |what: &str| {
        let note = if window > 1 {
            format!(" (mean of every {window} steps)")
        } else {
            String::new()
        };
        format!("{what}{note}")
    };
    let mut written = Vec::new();
    for (group, series) in &groups {
        let title = match *group {
            "losses" => caption("Losses"),
            "accuracy" => caption("Discriminator accuracy"),
            _ => caption("Other metrics"),
        };
        let path = dir.join(format!("{group}.png"));
        save_plot(&path, &[(title, series.clone())], "step", false)?;
        written.push(path);
    }
    if let Ok(text) = std::fs::read_to_string(run_dir.join("eval.jsonl")) {
        let evals = parse_jsonl(&text);
        let cols = columns(&evals, "step");
        let pick = |k: &str| cols.iter().find(|(n, _)| n == k).cloned();
        let panels: Vec<(String, Vec<Series>)> = [
            ("fid", "MNIST-FID vs test (lower is better)"),
            ("inception_score", "Judge Inception-Score analogue (max 10)"),
        ]
        .into_iter()
        .filter_map(|(k, title)| pick(k).map(|s| (title.to_string(), vec![s])))
        .collect();
        if !panels.is_empty() {
            let path = dir.join("eval.png");
            save_plot(&path, &panels, "step", true)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Draws one or more panels side by side (each with its own y axis) into a PNG at
/// `path`, atomically, so a report reading it while training redraws it never sees half
/// a file. `markers` draws a dot at every point, for sparse series.
pub fn save_plot(
    path: &Path,
    panels: &[(String, Vec<Series>)],
    x_label: &str,
    markers: bool,
) -> Result<()> {
    if panels.is_empty() {
        bail!("nothing to plot into {}", path.display());
    }
    let (w, h) = (SIZE.0 * (panels.len() as u32).clamp(1, 2), SIZE.1);
    draw_png(path, (w, h), |root| {
        let areas = root.split_evenly((1, panels.len()));
        for ((title, series), area) in panels.iter().zip(areas.iter()) {
            draw_panel(area, title, series, x_label, markers)?;
        }
        Ok(())
    })
}

/// Draws groups of points, a colour each, into a PNG at `path`: a 2-D projection of
/// features, say, coloured by where they came from.
pub fn save_scatter(path: &Path, title: &str, groups: &[Series]) -> Result<()> {
    let points = groups.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 >= x1 || y0 >= y1 {
        bail!(
            "nothing to scatter into {}: no spread of finite points",
            path.display()
        );
    }
    let (px, py) = ((x1 - x0) * 0.05, (y1 - y0) * 0.05);
    draw_png(path, (640, 560), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .label_style(("sans-serif", 12))
            .draw()
            .map_err(plot_err)?;
        for (i, (name, points)) in groups.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, 2, color.mix(0.6).filled())),
                )
                .map_err(plot_err)?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

/// A white `size` canvas drawn by `draw`, written as a PNG at `path` atomically.
fn draw_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, plotters::coord::Shift>) -> Result<()>,
) -> Result<()> {
    register_fonts();
    let (w, h) = size;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(&buf, w, h, image::ExtendedColorType::Rgb8)
        .context("encoding the plot as PNG")?;
    crate::engine::checkpoint::atomic_write(path, &png)
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    title: &str,
    series: &[Series],
    x_label: &str,
    markers: bool,
) -> Result<()> {
    let finite = series
        .iter()
        .flat_map(|(_, p)| p.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in finite {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6 * y1.abs().max(1.0));
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        if markers {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(plot_err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing a plot: {e}")
}

/// Gives plotters its one font (DejaVu Sans, compiled in) under the family name the
/// plots use.
fn register_fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped by the dejavu crate; were they not,
        // text would fail to draw and report it then.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// The JSON objects of a JSONL text; lines that do not parse (a torn last line while the
/// log is written) are skipped.
fn parse_jsonl(text: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| match v {
            serde_json::Value::Object(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// Every numeric field of `rows` but `x` as (x, value) points, in order of appearance.
fn columns(rows: &[serde_json::Map<String, serde_json::Value>], x: &str) -> Vec<Series> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let xv = row.get(x).and_then(|v| v.as_f64()).unwrap_or(i as f64);
        for (k, v) in row {
            if k == x {
                continue;
            }
            if let Some(y) = v.as_f64() {
                out.entry(k.clone()).or_default().push((xv, y));
            }
        }
    }
    out.into_iter().collect()
}

/// Steps per averaging window so that `rows` steps give at most [`MAX_POINTS`] points.
fn window_for(rows: usize) -> usize {
    rows.div_ceil(MAX_POINTS).max(1)
}

/// Means of consecutive windows of `window` points, at the mean x of each window.
fn window_means(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    points
        .chunks(window.max(1))
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_log(dir: &Path, steps: usize) {
        let mut text = String::new();
        for s in 1..=steps {
            let x = s as f64;
            text.push_str(&format!(
                "{{\"step\":{s},\"epoch\":0,\"d_loss\":{},\"g_loss\":{},\"d_real_acc\":{},\"mi_lower_bound\":{}}}\n",
                1.0 / x,
                2.0 - 1.0 / x,
                0.5 + 0.4 * (x / steps as f64),
                x.ln()
            ));
        }
        text.push_str("{\"step\": 99"); // torn last line
        std::fs::write(dir.join("metrics.jsonl"), text).unwrap();
    }

    #[test]
    fn plots_every_group_as_png() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 1000);
        let files = plot_run(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(names, ["accuracy.png", "losses.png", "other.png"]);
        for f in &files {
            let img = image::open(f).unwrap().to_rgb8();
            assert_eq!((img.width(), img.height()), SIZE);
            // Something besides the white background was drawn (axes, lines, text).
            let dark = img
                .pixels()
                .filter(|p| p.0.iter().all(|&c| c < 100))
                .count();
            assert!(dark > 500, "{} has {dark} dark pixels", f.display());
        }
        // Scores of `gan-cli eval` add a two-panel plot.
        std::fs::write(
            dir.path().join("eval.jsonl"),
            "{\"step\":500,\"fid\":40.0,\"inception_score\":7.5}\n{\"step\":1000,\"fid\":20.0,\"inception_score\":8.5}\n",
        )
        .unwrap();
        let files = plot_run(dir.path()).unwrap();
        let eval = files.iter().find(|p| p.ends_with("eval.png")).unwrap();
        let img = image::open(eval).unwrap();
        assert_eq!((img.width(), img.height()), (2 * SIZE.0, SIZE.1));
    }

    #[test]
    fn averages_down_to_a_few_hundred_points() {
        let pts: Vec<(f64, f64)> = (0..1000).map(|i| (i as f64, (i % 2) as f64)).collect();
        let w = window_for(pts.len());
        assert_eq!(w, 3);
        let m = window_means(&pts, 2);
        assert_eq!(m.len(), 500);
        assert_eq!(m[0], (0.5, 0.5));
    }

    #[test]
    fn missing_or_empty_logs_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = plot_run(dir.path()).unwrap_err().to_string();
        assert!(err.contains("metrics.jsonl"), "{err}");
        std::fs::write(dir.path().join("metrics.jsonl"), "garbage\n").unwrap();
        assert!(plot_run(dir.path())
            .unwrap_err()
            .to_string()
            .contains("no metrics"));
    }
}
