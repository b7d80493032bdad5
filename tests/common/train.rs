//! End-to-end training helpers shared by tests/train_*.rs: one tiny synthetic two-domain
//! benchmark per test binary, a run on `Device::Cpu`, a source-trained starting checkpoint, and
//! readers for metrics.jsonl. Each test binary uses a subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use unreid::data::datasets::{load, DatasetSpec, Layout};
use unreid::data::synth::{write_benchmark, SynthConfig};
use unreid::nn::ReidNet;
use unreid::train::run_dir::RunMode;
use unreid::train::{
    evaluate_model, method_defaults, train, EvalData, RunConfig, TrainOptions, TrainSummary,
};
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

/// A one-epoch `source` run (ResNet-18 at 32x16) on a small benchmark of its own, the starting
/// point of the methods that adapt a source model (MMT, ProDA).
pub struct SourceFixture {
    /// The temp folder: `data/{source,target}`, `source-run/`, and room for the tests' runs.
    pub root: PathBuf,
    /// The source run's best checkpoint.
    pub source_ckpt: PathBuf,
    /// Direct transfer: the source model's target mAP.
    pub direct_map: f64,
}

/// The [`SourceFixture`], made once per test binary under a temp folder named after `name`.
pub fn source_fixture(name: &str) -> &'static SourceFixture {
    static F: OnceLock<SourceFixture> = OnceLock::new();
    F.get_or_init(|| {
        let root =
            std::env::temp_dir().join(format!("unreid-test-train-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let data = root.join("data");
        let cfg = SynthConfig {
            seed: 11,
            ids: 16,
            cameras: 2,
            height: 64,
            width: 32,
            images_per_id: (6, 8),
            ..SynthConfig::default()
        };
        write_benchmark(&cfg, &data, false, &|| {}).unwrap();
        let mut c = method_defaults("source").unwrap();
        c.data.source = Some(data.join("source"));
        c.data.target = Some(data.join("target"));
        c.model.arch = "resnet18".into();
        c.train.epochs = 1;
        c.train.iters = 16;
        c.train.batch_size = 16;
        c.train.num_instances = 4;
        c.train.bn_group = 16;
        c.train.warmup_epochs = 0;
        c.train.milestones = vec![];
        c.train.height = 32;
        c.train.width = 16;
        c.train.eval_every = 1;
        c.train.seed = 3;
        let run_out = root.join("source-run");
        let s = run(&c, &run_out, RunMode::New, None);
        // Only best.safetensors is used: keep the temp folder small.
        let _ = std::fs::remove_file(run_out.join("checkpoints/state.safetensors"));
        SourceFixture {
            root,
            source_ckpt: run_out.join("checkpoints/best.safetensors"),
            direct_map: s.best_map.unwrap(),
        }
    })
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
