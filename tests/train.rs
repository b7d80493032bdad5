//! The training loop end to end with `source` pre-training on a tiny synthetic two-domain set
//! (CPU device; the kernels themselves are tested on the GPU elsewhere): finite, falling losses
//! and a logged target mAP; exact resume; the non-finite-loss stop; checkpoints that load in
//! `extract` and reproduce the evaluated mAP; presets that parse; run directories that are never
//! silently reused.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use unreid::data::synth::{write_benchmark, SynthConfig};
use unreid::train::config::resolve;
use unreid::train::run_dir::{RunDir, RunMode};
use unreid::train::{method_defaults, train, EvalData, RunConfig, TrainError, TrainOptions};
use unreid::Device;

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("unreid-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// One tiny benchmark per test binary: 16 ids per domain (8 train), 6 cameras.
fn data() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = temp("data");
        let cfg = SynthConfig {
            ids: 16,
            height: 64,
            width: 32,
            images_per_id: (6, 8),
            ..SynthConfig::default()
        };
        write_benchmark(&cfg, &dir, false, &|| {}).unwrap();
        dir
    })
}

fn config(sets: &[&str]) -> RunConfig {
    let mut all: Vec<String> = vec![
        format!(
            "data.source={:?}",
            data().join("source").display().to_string()
        ),
        format!(
            "data.target={:?}",
            data().join("target").display().to_string()
        ),
        "model.arch=\"resnet18\"".into(),
        "train.epochs=2".into(),
        "train.iters=6".into(),
        "train.batch_size=16".into(),
        "train.num_instances=4".into(),
        "train.height=32".into(),
        "train.width=16".into(),
        "train.warmup_epochs=0".into(),
        "train.milestones=[]".into(),
        "train.eval_every=1".into(),
        "train.log_every=3".into(),
        "train.lr=0.001".into(),
    ];
    all.extend(sets.iter().map(|s| s.to_string()));
    resolve(
        &method_defaults("source").unwrap(),
        None,
        &toml::Table::new(),
        &all,
    )
    .unwrap()
}

fn options(out: &Path, mode: RunMode, max: Option<usize>) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        mode,
        device: Device::Cpu,
        max_epochs_this_run: max,
    }
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The records without the wall-clock fields (and the per-stage `timing` records, which are
/// nothing else), for comparing two runs.
fn deterministic(mut recs: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    recs.retain(|r| r["kind"] != "timing");
    for r in &mut recs {
        if let Some(o) = r.as_object_mut() {
            o.remove("images_per_s");
            o.remove("seconds");
        }
    }
    recs
}

#[test]
fn source_training_logs_finite_falling_losses_and_target_map() {
    let out = temp("source");
    let summary = train(config(&[]), options(&out, RunMode::New, None)).unwrap();
    assert!(summary.finished && summary.epochs_done == 2);
    let recs = records(&out);
    let kind = |k: &'static str| recs.iter().filter(move |r| r["kind"] == k);
    assert_eq!(kind("relabel").count(), 2);
    let steps: Vec<f64> = kind("step").map(|r| r["loss"].as_f64().unwrap()).collect();
    assert_eq!(steps.len(), 4, "log_every 3 over 2 x 6 iterations");
    for r in kind("step") {
        for term in ["ce", "triplet"] {
            let v = r["terms"][term].as_f64().unwrap();
            assert!(v.is_finite(), "{term} = {v}");
        }
    }
    assert!(steps[3] < steps[0], "training loss should fall: {steps:?}");
    let evals: Vec<f64> = kind("eval").map(|r| r["mAP"].as_f64().unwrap()).collect();
    assert_eq!(evals.len(), 2);
    assert!(
        evals.iter().all(|m| (0.0..=1.0).contains(m) && *m > 0.0),
        "{evals:?}"
    );
    for f in [
        "config.toml",
        "train.log",
        "summary.json",
        "checkpoints/last.safetensors",
        "checkpoints/best.safetensors",
        "checkpoints/state.safetensors",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let log = std::fs::read_to_string(out.join("train.log")).unwrap();
    assert!(
        log.contains("Rank-1") && log.contains("best mAP so far"),
        "{log}"
    );
    // The saved config is the resolved one and parses back to the same configuration.
    let saved = RunConfig::from_toml(
        &std::fs::read_to_string(out.join("config.toml")).unwrap(),
        "config.toml",
    )
    .unwrap();
    assert_eq!(saved, config(&[]));

    // best.safetensors loads as `extract` loads it and reproduces the best evaluated mAP.
    let (net, layout, _) = unreid::nn::reid_net_from_weights(
        &Device::Cpu,
        "resnet18",
        1,
        &out.join("checkpoints/best.safetensors"),
        false,
    )
    .unwrap();
    assert!(layout.neck);
    let target = unreid::data::datasets::load(&unreid::data::DatasetSpec::new(
        data().join("target"),
        unreid::data::Layout::Auto,
    ))
    .unwrap();
    let eval = EvalData {
        name: "target".into(),
        query: target.query.clone(),
        gallery: target.gallery.clone(),
    };
    let r =
        unreid::train::evaluate_model(&net, 0, &eval, &Device::Cpu, (32, 16), 64, "check").unwrap();
    let best = summary.best_map.unwrap();
    assert!(
        (r.map - best).abs() < 1e-6,
        "reloaded {} vs logged best {best}",
        r.map
    );
}

#[test]
fn a_resumed_run_ends_exactly_where_an_uninterrupted_one_does() {
    let whole = temp("whole");
    train(config(&[]), options(&whole, RunMode::New, None)).unwrap();
    let broken = temp("broken");
    let first = train(config(&[]), options(&broken, RunMode::New, Some(1))).unwrap();
    assert!(!first.finished && first.epochs_done == 1);
    // What a killed run leaves after its checkpoint is dropped on resume.
    std::fs::OpenOptions::new()
        .append(true)
        .open(broken.join("metrics.jsonl"))
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, b"{\"kind\":\"step\",\"epoch\":1,\"loss\":99}\n")
        })
        .unwrap();
    let second = train(config(&[]), options(&broken, RunMode::Resume, None)).unwrap();
    assert!(second.finished);
    assert_eq!(
        deterministic(records(&broken)),
        deterministic(records(&whole))
    );
    // Resuming with another configuration is refused.
    let err = train(
        config(&["train.lr=0.01"]),
        options(&broken, RunMode::Resume, None),
    )
    .unwrap_err();
    assert!(err.to_string().contains("differs"), "{err}");
    let _ = std::fs::remove_dir_all(&whole);
    let _ = std::fs::remove_dir_all(&broken);
}

#[test]
fn a_non_finite_loss_stops_the_run_naming_the_term_and_step() {
    let out = temp("nan");
    let err = train(
        config(&["train.lr=1e30"]),
        options(&out, RunMode::New, None),
    )
    .unwrap_err();
    match &err {
        TrainError::NonFinite {
            term, epoch, step, ..
        } => {
            assert!(["ce", "triplet"].contains(&term.as_str()));
            assert_eq!(*epoch, 0);
            assert!(*step >= 1, "the first step's loss is finite");
        }
        other => panic!("expected a non-finite loss error, got {other}"),
    }
    assert!(err.to_string().contains("epoch 0"), "{err}");
    // The configuration and metrics written so far are intact, and no checkpoint claims the epoch.
    assert!(out.join("config.toml").is_file());
    assert!(!out.join("checkpoints/state.safetensors").exists());
    // The lock is released: the folder is refused only because it holds a run.
    let again = train(config(&[]), options(&out, RunMode::New, None)).unwrap_err();
    assert!(again.to_string().contains("already holds a run"), "{again}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn run_directories_are_locked_and_never_silently_reused() {
    let out = temp("lock");
    let held = RunDir::open(&out, RunMode::New).unwrap();
    let err = RunDir::open(&out, RunMode::New).err().unwrap();
    assert!(
        err.to_string().contains("in use by another unreid process"),
        "{err}"
    );
    drop(held);
    let resume = RunDir::open(&out, RunMode::Resume).err().unwrap();
    assert!(
        resume.to_string().contains("no checkpoint to resume"),
        "{resume}"
    );
}

#[test]
fn presets_parse_and_resolve_to_the_method_defaults() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let table = unreid::train::config::read_toml_file(&path).unwrap();
        let method = table["method"].as_str().unwrap().to_string();
        let defaults = method_defaults(&method).unwrap();
        let cfg = resolve(&defaults, Some(&table), &toml::Table::new(), &[])
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Round trip: the resolved config written and read back is the same configuration.
        let again = RunConfig::from_toml(&cfg.to_toml().unwrap(), "round trip").unwrap();
        assert_eq!(again, cfg, "{}", path.display());
        if path.file_name().unwrap() == "source.toml" {
            let mut want = defaults.clone();
            want.data = cfg.data.clone();
            assert_eq!(
                cfg, want,
                "configs/source.toml holds the published defaults"
            );
        }
        seen += 1;
    }
    assert!(seen >= 1);
    // Unknown keys are errors naming them.
    let bad = resolve(
        &method_defaults("source").unwrap(),
        None,
        &toml::Table::new(),
        &["train.lrr=1".into()],
    );
    assert!(bad.unwrap_err().to_string().contains("lrr"));
    let bad = resolve(
        &method_defaults("source").unwrap(),
        None,
        &toml::Table::new(),
        &["spcl.tau=1".into()],
    );
    assert!(bad.unwrap_err().to_string().contains("spcl"));
}

#[test]
fn every_method_has_a_nonempty_default_section_and_a_scalar_section_is_refused() {
    for &method in unreid::train::METHODS {
        let defaults = method_defaults(method).unwrap();
        assert_eq!(defaults.method, method);
        // The section holds the published values (never an empty table standing in for them).
        assert!(
            !defaults.section().is_empty(),
            "{method}: the default [{method}] section is empty"
        );
        assert_eq!(defaults.sections.len(), 1, "{method}: one section");
    }
    let err = RunConfig::with_section("x", Default::default(), Default::default(), &3u32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[x]") && err.contains("not a table"), "{err}");
}
