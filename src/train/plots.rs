//! PNG plots of a training run: the four-panel `curves.png` drawn from a run's `metrics.jsonl`, and
//! the mAP-per-epoch comparison of several methods.
//!
//! Drawn with `plotters` (bitmap backend only) and one embedded font (DejaVu Sans,
//! `assets/fonts/`), so no system font library (fontconfig, freetype) is needed. Every PNG is
//! rendered into memory, encoded with the `image` crate and written with
//! [`crate::io::write_atomic`], so a killed run never leaves a truncated plot.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use crate::io::write_atomic;

/// Errors of reading metrics and drawing plots; each names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("cannot {action} {path}: {error}")]
    Io {
        path: PathBuf,
        /// "read" or "write".
        action: &'static str,
        /// Kept out of `source()` on purpose: the message already includes it.
        error: std::io::Error,
    },
    #[error("{path}:{line}: not a JSON object: {message}")]
    Parse {
        path: PathBuf,
        /// 1-based line number in the file.
        line: usize,
        message: String,
    },
    /// A record or series holds a value of the wrong type or outside its range (for example a mAP
    /// logged as a percentage instead of a fraction).
    #[error("invalid plot input: {0}")]
    Input(String),
    #[error("cannot draw {path}: {message}")]
    Drawing { path: PathBuf, message: String },
}

/// Size of `curves.png` in pixels (width, height).
pub const CURVES_SIZE: (u32, u32) = (1600, 1000);
/// Size of the comparison plot in pixels (width, height).
pub const COMPARISON_SIZE: (u32, u32) = (1200, 800);

/// Reads a run's `metrics.jsonl`: one JSON object per line, blank lines skipped.
///
/// Errors: [`PlotError::Io`] if the file cannot be read, [`PlotError::Parse`] naming the file and
/// 1-based line of the first line that is not a JSON object (a run killed mid-line included).
pub fn read_metrics(path: &Path) -> Result<Vec<Value>, PlotError> {
    let text = std::fs::read_to_string(path).map_err(|error| PlotError::Io {
        path: path.to_path_buf(),
        action: "read",
        error,
    })?;
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parse_error = |message: String| PlotError::Parse {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let value: Value = serde_json::from_str(line).map_err(|e| parse_error(e.to_string()))?;
        if !value.is_object() {
            return Err(parse_error(format!("found {value}")));
        }
        records.push(value);
    }
    Ok(records)
}

/// Draws the four-panel training summary (about 1600x1000 pixels) to `out` as PNG:
///
/// 1. the total loss (`loss`) and every named term (`terms`) of `"kind":"step"` records against
///    the global step, on a log axis when the values span more than two decades, smoothed by a
///    centred moving average when there are many points (the raw values drawn faintly behind);
/// 2. the learning rate (`lr`) against the global step;
/// 3. target mAP and Rank-1 (%) of `"kind":"eval"` records against the (0-based) epoch, the best
///    mAP circled and named in the legend;
/// 4. pseudo-label clusters and outliers of `"kind":"relabel"` records against the epoch, with
///    NMI and ARI (x100, right axis) when logged.
///
/// Records of other kinds, unknown keys and absent or null fields are ignored; a panel without data
/// shows a note ("no relabelling in this run", ...). mAP / Rank-k are fractions in [0, 1].
///
/// Errors: [`PlotError::Input`] naming the record (0-based index in `records`) and key when a known
/// field is not a number or a fraction is outside [0, 1]; [`PlotError::Io`] / [`PlotError::Drawing`]
/// naming `out`. The parent folder of `out` must exist; `out` is replaced atomically.
pub fn plot_curves(records: &[Value], title: &str, out: &Path) -> Result<(), PlotError> {
    let data = CurveData::from_records(records)?;
    render_png(out, CURVES_SIZE, |root| {
        let body = root
            .margin(8, 0, 0, 0)
            .titled(title, (FONT, 30).into_font().color(&TEXT))?;
        let panels = body.split_evenly((2, 2));
        draw_loss_panel(&panels[0], &data)?;
        draw_lr_panel(&panels[1], &data)?;
        draw_eval_panel(&panels[2], &data)?;
        draw_relabel_panel(&panels[3], &data)?;
        Ok(())
    })
}

/// Draws target mAP (%) against epoch for several methods, one line per `(name, [(epoch, mAP)])`
/// run with mAP a fraction in [0, 1], and `baseline` (name, mAP fraction), typically direct
/// transfer, as a horizontal dashed line. About 1200x800 pixels, PNG, written atomically to `out`.
///
/// No runs and no baseline (or runs without points) give a plot with a note instead of curves.
/// Errors: [`PlotError::Input`] naming the run and epoch when a mAP is not finite or outside
/// [0, 1]; [`PlotError::Io`] / [`PlotError::Drawing`] naming `out`.
pub fn plot_comparison(
    runs: &[(String, Vec<(usize, f64)>)],
    baseline: Option<(String, f64)>,
    out: &Path,
) -> Result<(), PlotError> {
    for (name, points) in runs {
        for &(epoch, map) in points {
            check_fraction(map, || format!("run `{name}` epoch {epoch}: mAP"))?;
        }
    }
    if let Some((name, map)) = &baseline {
        check_fraction(*map, || format!("baseline `{name}`: mAP"))?;
    }
    let series: Vec<Series> = runs
        .iter()
        .enumerate()
        .map(|(i, (name, points))| Series {
            name: name.clone(),
            color: PALETTE[i % PALETTE.len()],
            points: points
                .iter()
                .map(|&(epoch, map)| (epoch as f64, 100.0 * map))
                .collect(),
        })
        .collect();
    let baseline = baseline.map(|(name, map)| (name, 100.0 * map));
    render_png(out, COMPARISON_SIZE, |root| {
        let area = root.margin(10, 10, 10, 20);
        let caption = "Target mAP per epoch";
        let Some((x_lo, x_hi)) = extent(series.iter().flat_map(|s| s.points.iter().map(|p| p.0)))
        else {
            let note = if baseline.is_some() {
                "no per-epoch mAP in these runs"
            } else {
                "no runs to compare"
            };
            return empty_panel(&area, caption, note);
        };
        let y_max = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(baseline.iter().map(|b| b.1))
            .fold(0.0, f64::max);
        let mut chart =
            percent_by_epoch_chart(&area, caption, "target mAP (%)", (x_lo, x_hi), y_max)?;
        if let Some((name, map)) = &baseline {
            let style = GREY_DARK.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x_lo - 0.3, *map), (x_hi + 0.3, *map)],
                    10,
                    6,
                    style,
                ))?
                .label(format!("{name} ({map:.1}%)"))
                .legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new(vec![(0, 0), (8, 0)], style)
                        + PathElement::new(vec![(13, 0), (21, 0)], style)
                });
        }
        for s in &series {
            draw_marked_line(&mut chart, &s.name, &s.points, s.color)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Data extraction

/// One named curve of (x, y) points.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

/// One evaluation: epoch, mAP (%), Rank-1 (%), either may be absent.
struct EvalPoint {
    epoch: f64,
    map: Option<f64>,
    rank1: Option<f64>,
}

/// One relabelling: epoch, cluster / outlier counts, NMI / ARI (x100), each may be absent.
struct RelabelPoint {
    epoch: f64,
    clusters: Option<f64>,
    outliers: Option<f64>,
    nmi: Option<f64>,
    ari: Option<f64>,
}

#[derive(Default)]
struct CurveData {
    /// (name, points): "total" first, then each loss term in first-seen order.
    losses: Vec<(String, Vec<(f64, f64)>)>,
    lr: Vec<(f64, f64)>,
    evals: Vec<EvalPoint>,
    relabels: Vec<RelabelPoint>,
}

impl CurveData {
    fn from_records(records: &[Value]) -> Result<Self, PlotError> {
        let mut data = CurveData::default();
        for (index, record) in records.iter().enumerate() {
            let kind = record.get("kind").and_then(Value::as_str).unwrap_or("");
            let field = |key: &str| number_field(record, index, kind, key);
            match kind {
                "step" => {
                    let Some(step) = field("step")? else { continue };
                    if let Some(loss) = field("loss")? {
                        data.push_loss("total", step, loss);
                    }
                    if let Some(terms) = record.get("terms").filter(|t| !t.is_null()) {
                        let terms = terms.as_object().ok_or_else(|| {
                            input_error(index, kind, "terms", terms, "an object of numbers")
                        })?;
                        for (name, value) in terms {
                            if let Some(v) = number(value).map_err(|()| {
                                input_error(
                                    index,
                                    kind,
                                    &format!("terms.{name}"),
                                    value,
                                    "a number",
                                )
                            })? {
                                data.push_loss(name, step, v);
                            }
                        }
                    }
                    if let Some(lr) = field("lr")? {
                        data.lr.push((step, lr));
                    }
                }
                "eval" => {
                    let Some(epoch) = field("epoch")? else {
                        continue;
                    };
                    let percent = |key: &str| -> Result<Option<f64>, PlotError> {
                        let Some(v) = field(key)? else {
                            return Ok(None);
                        };
                        check_fraction(v, || {
                            format!("metrics record {index} (kind `eval`): {key}")
                        })?;
                        Ok(Some(100.0 * v))
                    };
                    data.evals.push(EvalPoint {
                        epoch,
                        map: percent("mAP")?,
                        rank1: percent("rank1")?,
                    });
                }
                "relabel" => {
                    let Some(epoch) = field("epoch")? else {
                        continue;
                    };
                    let score = |key: &str| -> Result<Option<f64>, PlotError> {
                        Ok(field(key)?.map(|v| 100.0 * v))
                    };
                    data.relabels.push(RelabelPoint {
                        epoch,
                        clusters: field("clusters")?,
                        outliers: field("outliers")?,
                        nmi: score("nmi")?,
                        ari: score("ari")?,
                    });
                }
                _ => {}
            }
        }
        Ok(data)
    }

    fn push_loss(&mut self, name: &str, step: f64, value: f64) {
        match self.losses.iter_mut().find(|(n, _)| n == name) {
            Some((_, points)) => points.push((step, value)),
            None => self.losses.push((name.to_string(), vec![(step, value)])),
        }
    }
}

/// `Ok(None)` for null, `Ok(Some)` for a finite number, `Err` for anything else.
fn number(value: &Value) -> Result<Option<f64>, ()> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n.as_f64().filter(|v| v.is_finite()).map(Some).ok_or(()),
        _ => Err(()),
    }
}

/// Field `key` of a record as a finite number; absent or null gives `None`.
fn number_field(
    record: &Value,
    index: usize,
    kind: &str,
    key: &str,
) -> Result<Option<f64>, PlotError> {
    match record.get(key) {
        None => Ok(None),
        Some(value) => number(value).map_err(|()| input_error(index, kind, key, value, "a number")),
    }
}

fn input_error(index: usize, kind: &str, key: &str, value: &Value, expected: &str) -> PlotError {
    PlotError::Input(format!(
        "metrics record {index} (kind `{kind}`): `{key}` is {value}, expected {expected} or null"
    ))
}

/// mAP and Rank-k are logged as fractions; a value outside [0, 1] is most likely a percentage.
fn check_fraction(value: f64, what: impl FnOnce() -> String) -> Result<(), PlotError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(PlotError::Input(format!(
            "{} = {value} is not a fraction in [0, 1]",
            what()
        )))
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

type DrawResult = Result<(), Box<dyn StdError>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// The family name the embedded font is registered under (plotters' default family).
const FONT: &str = "sans-serif";
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

const TEXT: RGBColor = RGBColor(40, 40, 40);
const GREY_NOTE: RGBColor = RGBColor(130, 130, 130);
const GREY_DARK: RGBColor = RGBColor(90, 90, 90);
/// Tableau 10: distinguishable, also in grey-scale print.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Registers the embedded DejaVu Sans once per process as plotters' "sans-serif".
fn register_embedded_font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("the embedded DejaVu Sans font does not load".into())
    }
}

/// Renders `draw` on a white `size` canvas in memory, encodes it as PNG and writes it atomically.
fn render_png(
    out: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<(), PlotError> {
    let drawing = |message: String| PlotError::Drawing {
        path: out.to_path_buf(),
        message,
    };
    register_embedded_font().map_err(drawing)?;
    let (width, height) = size;
    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        let result = (|| -> DrawResult {
            root.fill(&WHITE)?;
            draw(&root)?;
            root.present()?;
            Ok(())
        })();
        result.map_err(|e| drawing(e.to_string()))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer)
        .ok_or_else(|| drawing("the pixel buffer does not match the canvas size".into()))?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| drawing(format!("PNG encoding failed: {e}")))?;
    write_atomic(out, &png).map_err(|error| PlotError::Io {
        path: out.to_path_buf(),
        action: "write",
        error,
    })
}

fn caption_font() -> TextStyle<'static> {
    (FONT, 22).into_font().color(&TEXT)
}

/// A framed panel with its caption and a centred grey note instead of an empty chart.
fn empty_panel(area: &Area<'_>, caption: &str, note: &str) -> DrawResult {
    let area = area.margin(10, 10, 10, 10);
    let inner = area.titled(caption, caption_font())?;
    let (w, h) = inner.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    inner.draw(&Rectangle::new(
        [(20, 10), (w - 20, h - 20)],
        BLACK.mix(0.25).stroke_width(1),
    ))?;
    let style = (FONT, 22)
        .into_font()
        .color(&GREY_NOTE)
        .pos(Pos::new(HPos::Center, VPos::Center));
    inner.draw(&Text::new(note.to_string(), (w / 2, h / 2 - 5), style))?;
    Ok(())
}

/// A chart builder for one panel: caption, margins, room for tick labels.
fn panel_builder<'a, 'c>(
    area: &'a DrawingArea<BitMapBackend<'c>, Shift>,
    caption: &str,
    y_label_area: u32,
) -> ChartBuilder<'a, 'static, BitMapBackend<'c>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, caption_font())
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(y_label_area);
    builder
}

/// A panel of percentages (0 to a little above `y_max`) against integer epochs in `epochs`,
/// axes drawn.
fn percent_by_epoch_chart<'a, 'c>(
    area: &'a DrawingArea<BitMapBackend<'c>, Shift>,
    caption: &str,
    y_desc: &str,
    (x_lo, x_hi): (f64, f64),
    y_max: f64,
) -> Result<
    ChartContext<'a, BitMapBackend<'c>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    Box<dyn StdError>,
> {
    let mut chart = panel_builder(area, caption, 75)
        .build_cartesian_2d((x_lo - 0.3)..(x_hi + 0.3), 0.0..percent_axis_top(y_max))?;
    configure_mesh(
        &mut chart,
        "epoch",
        y_desc,
        &integer_label,
        &|v| format!("{v:.0}"),
        (x_hi - x_lo) as usize + 1,
    )?;
    Ok(chart)
}

/// Axes, grid, tick labels and axis titles shared by every chart.
fn configure_mesh<Y>(
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    x_desc: &str,
    y_desc: &str,
    x_fmt: &dyn Fn(&f64) -> String,
    y_fmt: &dyn Fn(&f64) -> String,
    x_labels: usize,
) -> DrawResult
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(x_labels.clamp(2, 10))
        .y_labels(8)
        .x_label_formatter(x_fmt)
        .y_label_formatter(y_fmt)
        .label_style((FONT, 15).into_font().color(&TEXT))
        .axis_desc_style((FONT, 17).into_font().color(&TEXT))
        .bold_line_style(BLACK.mix(0.10))
        .light_line_style(BLACK.mix(0.04))
        .axis_style(BLACK.mix(0.5))
        .draw()?;
    Ok(())
}

fn draw_legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    position: SeriesLabelPosition,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(position)
        .margin(12)
        .label_font((FONT, 16).into_font().color(&TEXT))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// Min and max of the finite values, `None` when there are none.
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// The x range of a step axis, widened when all points share one step.
fn step_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if hi > lo {
        let pad = 0.01 * (hi - lo);
        (lo - pad)..(hi + pad)
    } else {
        (lo - 1.0)..(hi + 1.0)
    }
}

/// A linear y range around [lo, hi] with 6% padding (a band around a constant).
fn linear_range(lo: f64, hi: f64) -> std::ops::Range<f64> {
    if hi > lo {
        let pad = 0.06 * (hi - lo);
        (lo - pad)..(hi + pad)
    } else {
        let pad = if lo == 0.0 { 1.0 } else { 0.1 * lo.abs() };
        (lo - pad)..(hi + pad)
    }
}

/// The top of a 0-based percent axis: headroom above `max`, at most 100.
fn percent_axis_top(max: f64) -> f64 {
    (max * 1.15 + 2.0).clamp(5.0, 100.0)
}

/// Whether positive values spanning more than two decades are drawn on a log axis.
fn wants_log(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi / lo > 100.0
}

/// Compact tick label: plain for ordinary magnitudes, scientific otherwise.
fn compact_number(v: &f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-2..1e4).contains(&a) {
        format!("{v:.1e}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Tick label for an integer-valued axis (epochs, steps); off-integer ticks stay blank.
fn integer_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-6 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

/// Step tick label: thousands as "12k".
fn step_label(v: &f64) -> String {
    if (v - v.round()).abs() > 1e-6 {
        String::new()
    } else if v.abs() >= 10_000.0 && (v / 1000.0 - (v / 1000.0).round()).abs() < 1e-9 {
        format!("{}k", (v / 1000.0).round() as i64)
    } else {
        format!("{}", v.round() as i64)
    }
}

/// Centred moving average over an odd window (shrunk at the ends).
fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let half = window / 2;
    let mut prefix = Vec::with_capacity(points.len() + 1);
    prefix.push(0.0);
    for &(_, y) in points {
        prefix.push(prefix.last().copied().unwrap_or(0.0) + y);
    }
    (0..points.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(points.len());
            (points[i].0, (prefix[hi] - prefix[lo]) / (hi - lo) as f64)
        })
        .collect()
}

/// Loss series: colours, and the smoothing window (1 = raw only).
fn loss_series(data: &CurveData) -> Vec<Series> {
    let mut term_index = 0;
    data.losses
        .iter()
        .map(|(name, points)| {
            let color = if name == "total" {
                RGBColor(20, 20, 20)
            } else {
                term_index += 1;
                PALETTE[(term_index - 1) % PALETTE.len()]
            };
            Series {
                name: name.clone(),
                color,
                points: points.clone(),
            }
        })
        .collect()
}

fn draw_loss_panel(area: &Area<'_>, data: &CurveData) -> DrawResult {
    let caption = "Training loss";
    let series = loss_series(data);
    let all = || series.iter().flat_map(|s| s.points.iter().copied());
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) =
        (extent(all().map(|p| p.0)), extent(all().map(|p| p.1)))
    else {
        return empty_panel(area, caption, "no training steps logged");
    };
    let longest = series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    let window = if longest > 60 { (longest / 40) | 1 } else { 1 };
    let caption = if window > 1 {
        format!("Training loss (moving average over {window} logged steps)")
    } else {
        caption.to_string()
    };
    let log = wants_log(y_lo, y_hi);
    let y_desc = if log { "loss (log scale)" } else { "loss" };
    let builder = |area| panel_builder(area, &caption, 75);
    let x = step_range(x_lo, x_hi);
    if log {
        let y = (y_lo / 1.3..y_hi * 1.3).log_scale();
        let mut chart = builder(area).build_cartesian_2d(x, y)?;
        configure_mesh(
            &mut chart,
            "global step",
            y_desc,
            &step_label,
            &compact_number,
            8,
        )?;
        draw_line_series(&mut chart, &series, window)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
    } else {
        let mut chart = builder(area).build_cartesian_2d(x, linear_range(y_lo.min(0.0), y_hi))?;
        configure_mesh(
            &mut chart,
            "global step",
            y_desc,
            &step_label,
            &compact_number,
            8,
        )?;
        draw_line_series(&mut chart, &series, window)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
    }
}

/// Draws each series as a line with a legend entry; with `window > 1` the raw values are drawn
/// faintly and the moving average on top.
fn draw_line_series<Y>(
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    series: &[Series],
    window: usize,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    if window > 1 {
        for s in series {
            chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                s.color.mix(0.18).stroke_width(1),
            ))?;
        }
    }
    for s in series {
        let width = if s.name == "total" { 3 } else { 2 };
        let style = s.color.stroke_width(width);
        let points = if window > 1 {
            moving_average(&s.points, window)
        } else {
            s.points.clone()
        };
        let anno = chart.draw_series(LineSeries::new(points.iter().copied(), style))?;
        anno.label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        if points.len() == 1 {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, s.color.filled())))?;
        }
    }
    Ok(())
}

fn draw_lr_panel(area: &Area<'_>, data: &CurveData) -> DrawResult {
    let caption = "Learning rate";
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (
        extent(data.lr.iter().map(|p| p.0)),
        extent(data.lr.iter().map(|p| p.1)),
    ) else {
        return empty_panel(area, caption, "no learning rate logged");
    };
    let series = [Series {
        name: "lr".into(),
        color: PALETTE[0],
        points: data.lr.clone(),
    }];
    let log = wants_log(y_lo, y_hi);
    let y_desc = if log {
        "learning rate (log scale)"
    } else {
        "learning rate"
    };
    let builder = |area| panel_builder(area, caption, 85);
    let sci = |v: &f64| {
        if *v == 0.0 {
            "0".to_string()
        } else {
            format!("{v:.1e}")
        }
    };
    let x = step_range(x_lo, x_hi);
    if log {
        let mut chart =
            builder(area).build_cartesian_2d(x, (y_lo / 1.3..y_hi * 1.3).log_scale())?;
        configure_mesh(&mut chart, "global step", y_desc, &step_label, &sci, 8)?;
        draw_line_series(&mut chart, &series, 1)
    } else {
        let lo = if y_lo > 0.0 { 0.0 } else { y_lo };
        let mut chart = builder(area).build_cartesian_2d(x, linear_range(lo, y_hi))?;
        configure_mesh(&mut chart, "global step", y_desc, &step_label, &sci, 8)?;
        draw_line_series(&mut chart, &series, 1)
    }
}

fn draw_eval_panel(area: &Area<'_>, data: &CurveData) -> DrawResult {
    let caption = "Target-domain evaluation";
    let map: Vec<(f64, f64)> = data
        .evals
        .iter()
        .filter_map(|e| e.map.map(|v| (e.epoch, v)))
        .collect();
    let rank1: Vec<(f64, f64)> = data
        .evals
        .iter()
        .filter_map(|e| e.rank1.map(|v| (e.epoch, v)))
        .collect();
    let Some((x_lo, x_hi)) = extent(map.iter().chain(&rank1).map(|p| p.0)) else {
        return empty_panel(area, caption, "no evaluation in this run");
    };
    let y_max = map.iter().chain(&rank1).map(|p| p.1).fold(0.0, f64::max);
    let mut chart = percent_by_epoch_chart(area, caption, "mAP / Rank-1 (%)", (x_lo, x_hi), y_max)?;
    draw_marked_line(&mut chart, "mAP", &map, PALETTE[0])?;
    draw_marked_line(&mut chart, "Rank-1", &rank1, PALETTE[1])?;
    // The first maximum: the epoch the best checkpoint comes from.
    if let Some(&(epoch, best)) = map.iter().fold(None::<&(f64, f64)>, |acc, p| match acc {
        Some(a) if a.1 >= p.1 => Some(a),
        _ => Some(p),
    }) {
        let marker = PALETTE[3];
        chart
            .draw_series(std::iter::once(Circle::new(
                (epoch, best),
                9,
                marker.stroke_width(3),
            )))?
            .label(format!(
                "best mAP {best:.1}% (epoch {})",
                epoch.round() as i64
            ))
            .legend(move |(x, y)| Circle::new((x + 11, y), 6, marker.stroke_width(3)));
    }
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
}

fn draw_relabel_panel(area: &Area<'_>, data: &CurveData) -> DrawResult {
    let caption = "Pseudo labels";
    let pick = |f: fn(&RelabelPoint) -> Option<f64>| -> Vec<(f64, f64)> {
        data.relabels
            .iter()
            .filter_map(|r| f(r).map(|v| (r.epoch, v)))
            .collect()
    };
    let counts = [
        ("clusters", pick(|r| r.clusters), PALETTE[2]),
        ("outliers", pick(|r| r.outliers), PALETTE[7]),
    ];
    let scores = [
        ("NMI ×100", pick(|r| r.nmi), PALETTE[4]),
        ("ARI ×100", pick(|r| r.ari), PALETTE[1]),
    ];
    let has_scores = scores.iter().any(|s| !s.1.is_empty());
    let Some((x_lo, x_hi)) = extent(
        counts
            .iter()
            .chain(&scores)
            .flat_map(|s| s.1.iter().map(|p| p.0)),
    ) else {
        return empty_panel(area, caption, "no relabelling in this run");
    };
    let count_max = counts
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(caption, caption_font())
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(75);
    if has_scores {
        builder.right_y_label_area_size(75);
    }
    let x = (x_lo - 0.3)..(x_hi + 0.3);
    // Headroom above the data for the legend (upper right).
    let chart = builder.build_cartesian_2d(x.clone(), 0.0..(count_max * 1.5).max(1.0))?;
    let y_desc = "identities / images (count)";
    let x_labels = (x_hi - x_lo) as usize + 1;
    if !has_scores {
        let mut chart = chart;
        configure_mesh(
            &mut chart,
            "epoch",
            y_desc,
            &integer_label,
            &compact_number,
            x_labels,
        )?;
        for s in &counts {
            draw_marked_line(&mut chart, s.0, &s.1, s.2)?;
        }
        return draw_legend(&mut chart, SeriesLabelPosition::UpperRight);
    }
    // The secondary axis is set before the mesh so the primary labels stay on the left.
    let mut chart = chart.set_secondary_coord(x, 0.0..135.0);
    configure_mesh(
        &mut chart,
        "epoch",
        y_desc,
        &integer_label,
        &compact_number,
        x_labels,
    )?;
    chart
        .configure_secondary_axes()
        .y_desc("NMI / ARI (×100)")
        .y_labels(8)
        .y_label_formatter(&|v| {
            if *v <= 100.5 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .label_style((FONT, 15).into_font().color(&TEXT))
        .axis_desc_style((FONT, 17).into_font().color(&TEXT))
        .draw()?;
    for s in &counts {
        draw_marked_line(&mut chart, s.0, &s.1, s.2)?;
    }
    for (name, points, color) in &scores {
        if points.is_empty() {
            continue;
        }
        let style = color.stroke_width(2);
        chart
            .draw_secondary_series(DashedLineSeries::new(points.iter().copied(), 8, 5, style))?
            .label(*name)
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (8, 0)], style)
                    + PathElement::new(vec![(13, 0), (21, 0)], style)
            });
        chart.draw_secondary_series(
            points
                .iter()
                .map(|&p| TriangleMarker::new(p, 5, color.filled())),
        )?;
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// A solid line with a dot per point and a legend entry (nothing for no points).
fn draw_marked_line<'a, 'b: 'a, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
    name: &str,
    points: &[(f64, f64)],
    color: RGBColor,
) -> DrawResult
where
    Y: Ranged<ValueType = f64>,
{
    if points.is_empty() {
        return Ok(());
    }
    let style = color.stroke_width(3);
    chart
        .draw_series(LineSeries::new(points.iter().copied(), style))?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
    chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    Ok(())
}
