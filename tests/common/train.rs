//! End-to-end training helpers shared by tests/train_*.rs: one tiny synthetic two-domain
//! benchmark per test binary, a run on `Device::Cpu`, and readers for metrics.jsonl.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use unreid::data::datasets::{load, DatasetSpec, Layout};
use unreid::data::synth::{write_benchmark, SynthConfig};
use unreid::nn::ReidNet;
use unreid::train::run_dir::RunMode;
use unreid::train::{evaluate_model, train, EvalData, RunConfig, TrainOptions, TrainSummary};
use unreid::Device;

/// The benchmark root (`source/`, `target/`), written once per test binary.
pub fn benchmark() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("unreid-train-bench-{}", std::process::id()));
        let cfg = SynthConfig {
            seed: 7,
            ids: 16,
            cameras: 3,
            height: 64,
            width: 32,
            images_per_id: (7, 8),
            jpeg_quality: 90,
        };
        write_benchmark(&cfg, &dir, true, &|| {}).expect("synthetic benchmark");
        dir
    })
}

/// A fresh run directory under the temp folder.
pub fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("unreid-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

pub fn run(cfg: &RunConfig, out: &Path, mode: RunMode, max: Option<usize>) -> TrainSummary {
    train(
        cfg.clone(),
        TrainOptions {
            out: out.to_path_buf(),
            mode,
            device: Device::Cpu,
            max_epochs_this_run: max,
        },
    )
    .expect("training run")
}

/// metrics.jsonl records of `kind`.
pub fn records(out: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
        .filter(|r| r["kind"] == kind)
        .collect()
}

/// Target mAP of the starting model (random initialisation with the run's seed, as the run's
/// `initial_model` builds it without weights).
pub fn starting_map(cfg: &RunConfig) -> f64 {
    let root = cfg.data.target.as_ref().expect("a target");
    let ds = load(&DatasetSpec::new(root, Layout::Auto)).expect("target dataset");
    let net = ReidNet::new(
        &Device::Cpu,
        &cfg.model.reid(None, cfg.train.seed).expect("model config"),
    )
    .expect("model");
    let data = EvalData {
        name: "target".into(),
        query: ds.query.clone(),
        gallery: ds.gallery.clone(),
    };
    let t = &cfg.train;
    evaluate_model(
        &net,
        0,
        &data,
        &Device::Cpu,
        (t.height, t.width),
        t.eval_batch_size,
        "start",
    )
    .expect("evaluation")
    .map
}

/// Loss values and mAPs of a run, for comparing an interrupted run with an unbroken one.
pub fn trace(out: &Path) -> (Vec<f64>, Vec<f64>) {
    let losses = records(out, "step")
        .iter()
        .map(|r| r["loss"].as_f64().expect("loss"))
        .collect();
    let maps = records(out, "eval")
        .iter()
        .map(|r| r["mAP"].as_f64().expect("mAP"))
        .collect();
    (losses, maps)
}
