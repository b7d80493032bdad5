//! `unreid demo` end to end at the test size (same code path as `--quick`, smaller benchmark and
//! schedules): every method row is present and finite; the summary files are written; a second run
//! in the same folder reuses the finished runs and gives the same table. (Whether each method beats
//! direct transfer is measured on the quick and default benchmarks, not at this size, where two
//! epochs of a dozen steps decide nothing.)

use unreid::demo::{run_demo, DemoOptions, DemoProfile, DEFAULT_METHODS};
use unreid::Device;

#[test]
fn demo_adapts_beyond_direct_transfer_and_resumes() {
    let out = std::env::temp_dir().join(format!("unreid-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let methods: Vec<String> = DEFAULT_METHODS
        .iter()
        .filter(|m| unreid::train::METHODS.contains(m))
        .map(|m| m.to_string())
        .collect();
    let opts = DemoOptions {
        out: out.clone(),
        profile: DemoProfile::Tiny,
        methods: methods.clone(),
        device: Device::Cpu,
    };
    let summary = run_demo(&opts).unwrap();
    let base = summary.direct_transfer.map;
    assert!(base.is_finite() && base > 0.0, "direct transfer mAP {base}");
    assert_eq!(summary.methods.len(), methods.len());
    for (row, name) in summary.methods.iter().zip(&methods) {
        assert_eq!(&row.method, name);
        assert!(
            row.map.is_finite() && row.map > 0.0 && row.rank1.is_finite(),
            "{name}: {row:?}"
        );
        assert!((row.gain - 100.0 * (row.map - base)).abs() < 1e-9);
        assert!(row.run_dir.join("checkpoints/best.safetensors").is_file());
        // Every adaptation method extracts and clusters: its stage times are there, inside the
        // relabelling time.
        let st = &row.stage_seconds;
        for k in ["relabel", "extract", "cluster", "iterations", "eval"] {
            assert!(
                st.get(k).is_some_and(|v| v.is_finite() && *v >= 0.0),
                "{name}: {st:?}"
            );
        }
        assert!(
            st["extract"] + st["cluster"] <= st["relabel"],
            "{name}: {st:?}"
        );
        assert!(st["iterations"] > 0.0, "{name}: {st:?}");
    }
    assert!(summary.direct_transfer.stage_seconds["iterations"] > 0.0);
    for f in [
        "summary.md",
        "summary.json",
        "comparison.png",
        "runs/source/curves.png",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    // Ranked lists of the same target queries before and after adaptation.
    let listing = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(out.join("ranked_lists").join(dir))
            .unwrap_or_else(|e| panic!("ranked_lists/{dir}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing("direct_transfer");
    assert_eq!(before.len(), 4, "{before:?}");
    assert!(before.iter().all(|n| n.ends_with(".png")));
    for name in &methods {
        assert_eq!(listing(name), before, "{name}: not the same queries");
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("direct transfer")
            && md.contains("target mAP")
            && md.contains("of it: extract"),
        "{md}"
    );

    // Re-running resumes: every run is finished, so the same table comes back without training.
    let again = run_demo(&opts).unwrap();
    // (Values come back through metrics.jsonl: JSON keeps f64 to the last unit or so.)
    let same = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
    assert!(same(again.direct_transfer.map, base));
    for (a, b) in again.methods.iter().zip(&summary.methods) {
        assert!(same(a.map, b.map), "{}: {} vs {}", a.method, a.map, b.map);
    }
    let _ = std::fs::remove_dir_all(&out);
}
