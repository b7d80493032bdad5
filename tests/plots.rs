//! Training plots: metrics.jsonl parsing errors, curves.png and the method comparison decode to
//! the right size and show data (coloured pixels) in the panels that have data and a note (grey
//! text only) in those that do not.
//!
//! Set UNREID_KEEP_PLOTS=1 to keep the PNGs (their folder is printed) for a look.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use unreid::train::plots::{plot_comparison, plot_curves, read_metrics, PlotError};

fn test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unreid-plots-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn done(dir: &Path) {
    if std::env::var_os("UNREID_KEEP_PLOTS").is_some() {
        eprintln!("plots kept in {}", dir.display());
    } else {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// A plausible run: 8 epochs x 50 steps (logged every 5), warm-up then step decay, losses falling
/// from ~6 to ~0.05 (so the loss axis is logarithmic), a relabel and an eval per epoch.
fn synthetic_run() -> Vec<Value> {
    let mut lines = Vec::new();
    let steps_per_epoch = 50;
    for epoch in 0..8usize {
        lines.push(json!({
            "kind": "relabel", "epoch": epoch, "step": epoch * steps_per_epoch,
            "clusters": 300 + 40 * epoch, "outliers": 400 - 35 * epoch, "kept": 900 + 35 * epoch,
            "nmi": 0.70 + 0.02 * epoch as f64, "ari": 0.35 + 0.05 * epoch as f64,
            "pairwise_precision": 0.6, "pairwise_recall": null,
        }));
        for i in (0..steps_per_epoch).step_by(5) {
            let step = epoch * steps_per_epoch + i;
            let t = step as f64 / 400.0;
            let wobble = 1.0 + 0.15 * ((step * 7919 % 97) as f64 / 97.0 - 0.5);
            let ce = 5.0 * (-4.0 * t).exp() * wobble + 0.02;
            let triplet = 0.9 * (-3.0 * t).exp() * wobble + 0.01;
            let lr = if step < 100 {
                3.5e-4 * (step + 1) as f64 / 100.0
            } else if step < 300 {
                3.5e-4
            } else {
                3.5e-5
            };
            lines.push(json!({
                "kind": "step", "epoch": epoch, "step": step, "iter": i, "lr": lr,
                "loss": ce + triplet, "terms": {"ce": ce, "triplet": triplet},
                "images_per_s": 80.0, "future_key": [1, 2],
            }));
        }
        let map = 0.12 + 0.05 * epoch as f64 - if epoch == 7 { 0.08 } else { 0.0 };
        lines.push(json!({
            "kind": "eval", "epoch": epoch, "step": (epoch + 1) * steps_per_epoch,
            "mAP": map, "mINP": map / 3.0, "rank1": map + 0.2, "rank5": map + 0.3,
            "rank10": map + 0.35, "best_mAP": map,
        }));
    }
    lines.push(json!({"kind": "summary", "note": "ignored"}));
    lines
}

fn write_jsonl(path: &Path, records: &[Value]) {
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Pixels of the 2x2 panel grid of curves.png under the title: (coloured, dark) counts per panel,
/// row-major. Coloured = clearly saturated (data lines, markers); dark = text, axes.
fn panel_pixels(img: &image::RgbImage) -> [(usize, usize); 4] {
    let (w, h) = img.dimensions();
    let top = 60; // below the title
    let mut out = [(0, 0); 4];
    for (x, y, p) in img.enumerate_pixels() {
        if y < top {
            continue;
        }
        let panel = (if y < top + (h - top) / 2 { 0 } else { 2 }) + usize::from(x >= w / 2);
        let [r, g, b] = p.0;
        let (hi, lo) = (r.max(g).max(b), r.min(g).min(b));
        if hi - lo > 80 {
            out[panel].0 += 1;
        }
        if hi < 150 {
            out[panel].1 += 1;
        }
    }
    out
}

fn decode(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

#[test]
fn curves_of_a_full_run_fill_all_four_panels() {
    let dir = test_dir("full");
    let metrics = dir.join("metrics.jsonl");
    write_jsonl(&metrics, &synthetic_run());
    let records = read_metrics(&metrics).unwrap();
    assert_eq!(records.len(), 8 * 12 + 1);
    let out = dir.join("curves.png");
    plot_curves(&records, "spcl_uda  market -> duke", &out).unwrap();

    let img = decode(&out);
    assert_eq!(img.dimensions(), (1600, 1000));
    let first = *img.get_pixel(0, 0);
    assert!(img.pixels().any(|p| *p != first), "a single flat colour");
    for (i, (coloured, dark)) in panel_pixels(&img).iter().enumerate() {
        assert!(
            *coloured > 500,
            "panel {i}: only {coloured} coloured pixels"
        );
        assert!(
            *dark > 500,
            "panel {i}: only {dark} dark (text/axis) pixels"
        );
    }
    // The best mAP (epoch 6, the one before the drop) is circled in the marker red.
    let red = img
        .enumerate_pixels()
        .filter(|(x, y, p)| *x < 800 && *y > 530 && p.0 == [214, 39, 40])
        .count();
    assert!(red > 30, "best-mAP marker: {red} red pixels");
    done(&dir);
}

#[test]
fn empty_and_partial_runs_render_notes_instead_of_empty_frames() {
    let dir = test_dir("partial");
    let empty = dir.join("empty.png");
    plot_curves(&[], "empty", &empty).unwrap();
    let img = decode(&empty);
    assert_eq!(img.dimensions(), (1600, 1000));
    for (i, (coloured, dark)) in panel_pixels(&img).iter().enumerate() {
        assert_eq!(*coloured, 0, "panel {i} of an empty run draws data");
        assert!(
            *dark > 100,
            "panel {i} of an empty run has no frame/caption"
        );
    }

    // Steps only (source pre-training): loss and lr drawn, eval and relabel panels are notes.
    let steps: Vec<Value> = synthetic_run()
        .into_iter()
        .filter(|r| r["kind"] == "step")
        .collect();
    let partial = dir.join("steps_only.png");
    plot_curves(&steps, "source pre-training", &partial).unwrap();
    let counts = panel_pixels(&decode(&partial));
    assert!(counts[0].0 > 500 && counts[1].0 > 500, "{counts:?}");
    assert_eq!((counts[2].0, counts[3].0), (0, 0), "{counts:?}");

    // Null and absent fields are skipped: a single eval with only mAP still plots.
    let sparse = vec![
        json!({"kind": "eval", "epoch": 0, "mAP": 0.3, "rank1": null}),
        json!({"kind": "step", "step": 3, "loss": null, "lr": 1e-3}),
        json!({"kind": "relabel", "epoch": 0, "clusters": 12}),
    ];
    let sparse_out = dir.join("sparse.png");
    plot_curves(&sparse, "sparse", &sparse_out).unwrap();
    let counts = panel_pixels(&decode(&sparse_out));
    assert_eq!(counts[0].0, 0, "no loss logged: {counts:?}");
    assert!(
        counts[1].0 > 0 && counts[2].0 > 0 && counts[3].0 > 0,
        "{counts:?}"
    );
    done(&dir);
}

#[test]
fn a_bad_line_is_an_error_naming_file_and_line() {
    let dir = test_dir("bad");
    let path = dir.join("metrics.jsonl");
    std::fs::write(
        &path,
        "{\"kind\":\"step\",\"step\":0,\"loss\":1.0}\n\n{\"kind\":\"step\",\"step\":1,\"loss\n",
    )
    .unwrap();
    match read_metrics(&path) {
        Err(PlotError::Parse { line, .. }) => assert_eq!(line, 3),
        other => panic!("expected a parse error, got {other:?}"),
    }
    let message = read_metrics(&path).unwrap_err().to_string();
    assert!(
        message.contains(&format!("{}:3:", path.display())),
        "{message}"
    );

    std::fs::write(&path, "{\"kind\":\"eval\"}\n[1, 2]\n").unwrap();
    assert!(matches!(
        read_metrics(&path),
        Err(PlotError::Parse { line: 2, .. })
    ));

    let missing = dir.join("absent.jsonl");
    let err = read_metrics(&missing).unwrap_err();
    assert!(matches!(err, PlotError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.jsonl"), "{err}");
    done(&dir);
}

#[test]
fn wrong_types_and_percentages_are_errors_naming_the_record() {
    let dir = test_dir("types");
    let out = dir.join("curves.png");
    let percent = [json!({"kind": "eval", "epoch": 0, "mAP": 45.2})];
    let err = plot_curves(&percent, "t", &out).unwrap_err().to_string();
    assert!(err.contains("record 0") && err.contains("mAP"), "{err}");
    let text = [
        json!({"kind": "step", "step": 0, "loss": 1.0}),
        json!({"kind": "step", "step": 1, "terms": {"ce": "high"}}),
    ];
    let err = plot_curves(&text, "t", &out).unwrap_err().to_string();
    assert!(
        err.contains("record 1") && err.contains("terms.ce"),
        "{err}"
    );
    assert!(!out.exists(), "nothing is written on an input error");

    let err = plot_curves(&[], "t", &dir.join("no/such/dir/curves.png")).unwrap_err();
    assert!(matches!(err, PlotError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("no/such/dir/curves.png"), "{err}");
    done(&dir);
}

#[test]
fn comparison_draws_one_line_per_method_and_the_baseline() {
    let dir = test_dir("compare");
    let curve = |start: f64, gain: f64| -> Vec<(usize, f64)> {
        (0..20)
            .map(|e| (e, start + gain * (1.0 - (-(e as f64) / 5.0).exp())))
            .collect()
    };
    let runs = vec![
        ("MMT".to_string(), curve(0.30, 0.35)),
        ("SpCL".to_string(), curve(0.32, 0.40)),
        ("Cluster Contrast".to_string(), curve(0.33, 0.45)),
    ];
    let out = dir.join("comparison.png");
    plot_comparison(&runs, Some(("direct transfer".into(), 0.282)), &out).unwrap();
    let img = decode(&out);
    assert_eq!(img.dimensions(), (1200, 800));
    for [r, g, b] in [[31u8, 119, 180], [255, 127, 14], [44, 160, 44]] {
        let n = img.pixels().filter(|p| p.0 == [r, g, b]).count();
        assert!(n > 300, "method colour {:?}: {n} pixels", [r, g, b]);
    }

    let empty = dir.join("empty.png");
    plot_comparison(&[], None, &empty).unwrap();
    let img = decode(&empty);
    assert!(
        img.pixels().all(|p| {
            let [r, g, b] = p.0;
            r.max(g).max(b) - r.min(g).min(b) < 20
        }),
        "an empty comparison draws no coloured series"
    );

    let err = plot_comparison(&[("SpCL".into(), vec![(3, 72.5)])], None, &out).unwrap_err();
    assert!(err.to_string().contains("SpCL") && err.to_string().contains("epoch 3"));
    let err = plot_comparison(&[], Some(("direct".into(), f64::NAN)), &out).unwrap_err();
    assert!(err.to_string().contains("direct"), "{err}");
    done(&dir);
}
