//! The one training loop every method runs on (shared/DESIGN.md, "Training"): per epoch,
//! relabel -> `iters` steps of (PK batches of every stream -> named loss terms -> finite check ->
//! backward -> Adam) -> evaluation -> checkpoints, metrics and plots. A run killed at any point
//! resumes from its last epoch checkpoint and ends exactly where an uninterrupted run would: the
//! sampler and augmentation are keyed by (seed, epoch, ...), and every model, the optimiser and the
//! method's state are restored by name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::evaluate::{evaluate_model, EvalData};
use super::run_dir::{RunDir, RunMode};
use super::{build_method, Method, RunConfig, Session, TrainBatch, TrainError};
use crate::data::datasets::{load, DatasetSpec};
use crate::data::loader::{HostBatch, Loader, LoaderConfig, LoaderStats};
use crate::data::{AugmentConfig, PkSampler};
use crate::eval::EvalResult;
use crate::nn::{Ctx, Module, ReidNet};
use crate::optim::{Adam, Optimizer};
use crate::progress::Progress;
use crate::{Device, Tensor};

/// How to run (everything that is not the method's configuration).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub out: PathBuf,
    pub mode: RunMode,
    pub device: Device,
    /// Stop cleanly after this many epochs in this process (a time-boxed session); `--resume`
    /// continues from there.
    pub max_epochs_this_run: Option<usize>,
}

/// What a finished (or cleanly stopped) run reports.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrainSummary {
    pub method: String,
    pub run_dir: PathBuf,
    pub epochs_done: usize,
    pub finished: bool,
    /// Best target mAP (fraction) and the epoch (0-based) it was reached.
    pub best_map: Option<f64>,
    pub best_epoch: Option<usize>,
    /// The last evaluation: mAP and Rank-1/5/10 (fractions) of the last evaluated epoch's better
    /// model when several were evaluated (the model `last.safetensors` holds).
    pub last_eval: Option<EvalSummary>,
    pub wall_seconds: f64,
    /// Seconds per stage over every epoch of the run (earlier processes of a resumed run
    /// included): `relabel` (all of it), within it `extract` and `cluster` (as the method reports
    /// them through `Session::timed`), `iterations` (the training steps), `eval`, `checkpoint`
    /// (checkpoints, metrics and plots). Summed from the `"kind":"timing"` records.
    pub stage_seconds: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalSummary {
    pub epoch: usize,
    pub model: String,
    #[serde(rename = "mAP")]
    pub map: f64,
    pub rank1: f64,
    pub rank5: f64,
    pub rank10: f64,
}

impl EvalSummary {
    /// `evaluate_model` asks for 10 CMC ranks, so Rank-1/5/10 are always there (NaN never shows).
    fn new(epoch: usize, model: &str, r: &EvalResult) -> EvalSummary {
        EvalSummary {
            epoch,
            model: model.to_string(),
            map: r.map,
            rank1: r.rank(1).unwrap_or(f64::NAN),
            rank5: r.rank(5).unwrap_or(f64::NAN),
            rank10: r.rank(10).unwrap_or(f64::NAN),
        }
    }
}

/// The summary of the last evaluated epoch in metrics.jsonl `records`: its better model when
/// several were evaluated (MMT's two mean nets), the first of equals, as the loop chooses it.
fn last_evaluation(records: &[serde_json::Value]) -> Option<EvalSummary> {
    let evals: Vec<EvalSummary> = records
        .iter()
        .filter(|r| r["kind"] == "eval")
        .filter_map(|r| {
            Some(EvalSummary {
                epoch: r["epoch"].as_u64()? as usize,
                model: r["model"].as_str()?.to_string(),
                map: r["mAP"].as_f64()?,
                rank1: r["rank1"].as_f64()?,
                rank5: r["rank5"].as_f64()?,
                rank10: r["rank10"].as_f64()?,
            })
        })
        .collect();
    let last = evals.last()?.epoch;
    evals
        .into_iter()
        .filter(|e| e.epoch == last)
        .reduce(|a, b| if b.map > a.map { b } else { a })
}

/// Seconds per stage summed over the `"kind":"timing"` records of a run's metrics.jsonl (every
/// numeric field but `epoch`, `step` and `seconds_per_step`).
pub fn stage_totals(records: &[serde_json::Value]) -> BTreeMap<String, f64> {
    let mut totals = BTreeMap::new();
    for r in records.iter().filter(|r| r["kind"] == "timing") {
        let Some(fields) = r.as_object() else {
            continue;
        };
        for (k, v) in fields {
            if matches!(k.as_str(), "kind" | "epoch" | "step" | "seconds_per_step") {
                continue;
            }
            if let Some(s) = v.as_f64() {
                *totals.entry(k.clone()).or_insert(0.0) += s;
            }
        }
    }
    totals
}

fn load_dataset(
    spec: Option<DatasetSpec>,
) -> Result<Option<Arc<crate::data::ReidDataset>>, TrainError> {
    Ok(match spec {
        Some(spec) => Some(Arc::new(load(&spec)?)),
        None => None,
    })
}

/// Consecutive BN groups of `bn_group` images per stream (the last group of a stream may be
/// smaller); 0 = one group per stream.
fn bn_parts(ranges: &[(usize, std::ops::Range<usize>)], bn_group: usize) -> Vec<(usize, usize)> {
    let mut parts = Vec::new();
    for (domain, r) in ranges {
        let n = r.len();
        let g = if bn_group == 0 { n.max(1) } else { bn_group };
        let mut start = 0;
        while start < n {
            let c = g.min(n - start);
            parts.push((*domain, c));
            start += c;
        }
    }
    parts
}

/// Concatenates the streams' host batches into one device batch.
fn device_batch(
    host: &[HostBatch],
    domains: &[usize],
    bn_group: usize,
    device: &Device,
    (epoch, iter, step, seed): (usize, usize, u64, u64),
) -> Result<TrainBatch, TrainError> {
    let n: usize = host.iter().map(|b| b.len()).sum();
    let [_, c, h, w] = host[0].shape;
    let mut images = Vec::with_capacity(n * c * h * w);
    let mut second: Option<Vec<f32>> = host
        .iter()
        .any(|b| b.second_view.is_some())
        .then(|| Vec::with_capacity(n * c * h * w));
    let mut labels = Vec::with_capacity(n);
    let mut indices = Vec::with_capacity(n);
    let mut ranges = Vec::new();
    let mut domain_ranges = Vec::new();
    for (b, &d) in host.iter().zip(domains) {
        let start = labels.len();
        images.extend_from_slice(&b.images);
        if let Some(s) = second.as_mut() {
            // A stream without a second view repeats its first (only MMT asks, for every stream).
            s.extend_from_slice(b.second_view.as_deref().unwrap_or(&b.images));
        }
        labels.extend_from_slice(&b.pids);
        indices.extend_from_slice(&b.indices);
        ranges.push(start..labels.len());
        domain_ranges.push((d, start..labels.len()));
    }
    let shape = [n, c, h, w];
    let ctx = Ctx::train()
        .parts(&bn_parts(&domain_ranges, bn_group))
        .seed(crate::random::key(&[seed, step, 0xd50b]));
    Ok(TrainBatch {
        images: Tensor::from_slice(&images, &shape, device)?,
        second_view: second
            .map(|s| Tensor::from_slice(&s, &shape, device))
            .transpose()?,
        labels,
        indices,
        ranges,
        ctx,
        epoch,
        iter,
        step,
    })
}

/// Every model's tensors under `model.{name}.`, the optimiser's under `optim.`, the method's
/// under `method.`.
fn state_tensors(
    method: &dyn Method,
    opt: &dyn Optimizer,
) -> Result<(Vec<(String, Tensor)>, serde_json::Value), TrainError> {
    let mut out = Vec::new();
    for (name, net) in method.models() {
        for (p, param) in net.named() {
            out.push((format!("model.{name}.{p}"), param.get()));
        }
    }
    for (k, t) in opt.state_tensors() {
        out.push((format!("optim.{k}"), t));
    }
    let (tensors, meta) = method.state()?;
    for (k, t) in tensors {
        out.push((format!("method.{k}"), t));
    }
    Ok((out, meta))
}

fn restore_models(
    method: &dyn Method,
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<(), TrainError> {
    for (name, net) in method.models() {
        for (p, param) in net.named() {
            let key = format!("model.{name}.{p}");
            let t = tensors.get(&key).ok_or_else(|| TrainError::Io {
                path: path.to_path_buf(),
                message: format!("the checkpoint lacks {key}"),
            })?;
            // Classifiers are re-sized by relabelling; any other shape change is a different model.
            if t.shape() != param.shape() && !p.starts_with("classifier.") {
                return Err(TrainError::Io {
                    path: path.to_path_buf(),
                    message: format!(
                        "{key} is {:?} in the checkpoint but {:?} in the model",
                        t.shape(),
                        param.shape()
                    ),
                });
            }
            param.set(t.clone());
        }
    }
    Ok(())
}

fn sub_map(tensors: &BTreeMap<String, Tensor>, prefix: &str) -> BTreeMap<String, Tensor> {
    tensors
        .iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|s| (s.to_string(), t.clone())))
        .collect()
}

/// Writes a model checkpoint that `unreid extract` loads; its metadata names the BN domain the
/// run evaluates with (`eval_domain`: the target's set in a DSBN model).
fn export_model(
    net: &ReidNet,
    domain: usize,
    path: &Path,
    config_toml: &str,
    epoch: usize,
    method: &str,
    map: Option<f64>,
) -> Result<(), TrainError> {
    let tensors: Vec<(String, Tensor)> =
        net.named().into_iter().map(|(n, p)| (n, p.get())).collect();
    let mut meta = HashMap::new();
    meta.insert("format".into(), "unreid-reidnet".into());
    meta.insert("method".into(), method.to_string());
    meta.insert("arch".into(), net.config().arch.clone());
    meta.insert("epoch".into(), epoch.to_string());
    meta.insert(EVAL_DOMAIN_KEY.into(), domain.to_string());
    meta.insert("config".into(), config_toml.to_string());
    if let Some(m) = map {
        meta.insert("target_mAP".into(), format!("{m:.6}"));
    }
    RunDir::save_checkpoint(path, &tensors, meta)
}

/// Checkpoint metadata key: the BN domain a model checkpoint is evaluated with.
pub const EVAL_DOMAIN_KEY: &str = "eval_domain";

fn flush_session_log(session: &Session, dir: &mut RunDir) {
    let lines: Vec<String> = session
        .log
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    for line in lines {
        dir.say(&line);
    }
}

fn eval_table_header() -> String {
    format!(
        "| {:>5} | {:<8} | {:>6} | {:>6} | {:>6} | {:>7} |",
        "epoch", "model", "mAP", "Rank-1", "Rank-5", "Rank-10"
    )
}

/// Runs (or resumes) a training run into `opts.out`.
/// On a GPU device, checks before any long work that every model's activations at the training
/// and evaluation batch sizes fit one storage binding (`nn::ReidNet::check_binding_limit`), so an
/// adapter with a small limit (lavapipe: 128 MiB) fails now, naming the layer and the largest
/// batch that fits, instead of in the middle of the first step.
fn check_binding_limit(
    method: &dyn Method,
    t: &super::config::ScheduleConfig,
    device: &Device,
) -> Result<(), TrainError> {
    let Device::Gpu(gpu) = device else {
        return Ok(());
    };
    let limit = gpu.max_binding_bytes();
    for (name, net) in method.models() {
        let per_forward = method.images_per_forward(t.batch_size);
        for (key, batch) in [
            ("train.batch_size", per_forward),
            ("train.eval_batch_size", t.eval_batch_size),
        ] {
            net.check_binding_limit(batch, t.height, t.width, limit)
                .map_err(|e| {
                    let what = if key == "train.batch_size" && batch != t.batch_size {
                        format!(
                            "{key} = {} ({batch} images per forward pass, the streams of a step joined)",
                            t.batch_size
                        )
                    } else {
                        format!("{key} = {batch}")
                    };
                    TrainError::Config(format!("{what} for model {name}: {e}"))
                })?;
        }
    }
    Ok(())
}

pub fn train(config: RunConfig, opts: TrainOptions) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let cfg = config;
    cfg.train.validate()?;
    let t = cfg.train.clone();
    let mut dir = RunDir::open(&opts.out, opts.mode)?;
    let config_toml = cfg.to_toml()?;

    // Data, before any long work: a missing folder fails now.
    let source = load_dataset(cfg.data.source_spec()?)?;
    let target = load_dataset(cfg.data.target_spec()?)?;
    let eval_set = match (&target, &source) {
        (Some(d), _) => EvalData {
            name: "target".into(),
            query: d.query.clone(),
            gallery: d.gallery.clone(),
        },
        (None, Some(d)) => EvalData {
            name: "source".into(),
            query: d.query.clone(),
            gallery: d.gallery.clone(),
        },
        (None, None) => {
            return Err(TrainError::Config(
                "no data: give data.source (--source DIR) and/or data.target (--target DIR)".into(),
            ))
        }
    };
    if eval_set.query.is_empty() || eval_set.gallery.is_empty() {
        return Err(TrainError::Config(format!(
            "the {} dataset has {} query and {} gallery images: evaluation needs both",
            eval_set.name,
            eval_set.query.len(),
            eval_set.gallery.len()
        )));
    }
    let session = Session::new(
        opts.device.clone(),
        cfg.clone(),
        source.clone(),
        target.clone(),
    );
    let mut method = build_method(&session)?;
    check_binding_limit(method.as_ref(), &t, &opts.device)?;
    let mut opt = Adam::new(t.lr, t.weight_decay);

    let mut start_epoch = 0usize;
    let mut best: Option<(f64, usize)> = None;
    let mut last_eval: Option<EvalSummary> = None;
    let mut earlier_seconds = 0.0f64;
    if opts.mode == RunMode::Resume {
        let path = dir.state_path();
        let (tensors, meta) = RunDir::load_checkpoint(&path, &opts.device)?;
        let get = |k: &str| -> Result<&String, TrainError> {
            meta.get(k).ok_or_else(|| TrainError::Io {
                path: path.clone(),
                message: format!("the checkpoint's metadata lacks {k:?}"),
            })
        };
        let saved: RunConfig = RunConfig::from_toml(get("config")?, "the checkpoint's config")?;
        if saved != cfg {
            return Err(TrainError::Config(format!(
                "the configuration differs from the one {} was trained with; resume with the run's own config.toml",
                dir.path.display()
            )));
        }
        restore_models(method.as_ref(), &tensors, &path)?;
        opt.load_state(&sub_map(&tensors, "optim."))?;
        let method_meta: serde_json::Value =
            serde_json::from_str(get("method_state")?).map_err(|e| TrainError::Io {
                path: path.clone(),
                message: format!("method_state: {e}"),
            })?;
        method.load_state(&sub_map(&tensors, "method."), &method_meta)?;
        start_epoch = get("epochs_done")?.parse().map_err(|_| TrainError::Io {
            path: path.clone(),
            message: "epochs_done is not a number".into(),
        })?;
        if let (Some(m), Some(e)) = (meta.get("best_map"), meta.get("best_epoch")) {
            if let (Ok(m), Ok(e)) = (m.parse::<f64>(), e.parse::<usize>()) {
                best = Some((m, e));
            }
        }
        dir.truncate_records(start_epoch)?;
        // Wall time spent by the earlier processes of this run.
        earlier_seconds = std::fs::read_to_string(dir.file(RunDir::SUMMARY))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["wall_seconds"].as_f64())
            .unwrap_or(0.0);
        // The last evaluation before the checkpoint (a finished run resumed has nothing left to do).
        last_eval = last_evaluation(&dir.records()?);
        dir.say(&format!(
            "resuming {} from the end of epoch {start_epoch} ({})",
            dir.path.display(),
            path.display()
        ));
    } else {
        dir.write_text(RunDir::CONFIG, &config_toml)?;
    }
    dir.say(&format!(
        "unreid train: method {}, {} {}x{}, device {}, run directory {}",
        cfg.method,
        cfg.model.arch,
        t.height,
        t.width,
        opts.device,
        dir.path.display()
    ));
    for (name, ds) in [("source", &source), ("target", &target)] {
        if let Some(ds) = ds {
            dir.say(&format!("{name}: {}", ds.summary_table().trim_end()));
        }
    }
    flush_session_log(&session, &mut dir);

    let stats = Arc::new(LoaderStats::default());
    let mut epochs_done = start_epoch;
    for epoch in start_epoch..t.epochs {
        if let Some(max) = opts.max_epochs_this_run {
            if epoch >= start_epoch + max {
                break;
            }
        }
        let relabel_start = Instant::now();
        session.take_stage_seconds();
        let plan = method.relabel(&session, epoch)?;
        let relabel_seconds = relabel_start.elapsed().as_secs_f64();
        let mut timing = json!({"kind": "timing", "epoch": epoch, "relabel": relabel_seconds});
        for (stage, seconds) in session.take_stage_seconds() {
            timing[stage] = json!(seconds);
        }
        flush_session_log(&session, &mut dir);
        if plan.streams.is_empty() {
            return Err(TrainError::Method(format!(
                "{}: the epoch-{epoch} plan has no batch stream",
                cfg.method
            )));
        }
        if plan.reset_optimizer {
            opt.reset_state();
        }
        let global0 = (epoch * t.iters) as u64;
        timing["step"] = json!(global0);
        let mut relabel = json!({"kind": "relabel", "epoch": epoch, "step": global0,
            "seconds": relabel_seconds});
        for (k, v) in &plan.record {
            relabel[k] = v.clone();
        }
        dir.record(&relabel)?;
        let lr = t.lr_at(epoch);
        opt.set_lr(lr);

        // One background loader per stream; each stream's sampling and augmentation are keyed by
        // (seed, stream, epoch), so a resumed epoch sees the very same batches.
        let mut loaders = Vec::with_capacity(plan.streams.len());
        for (s_idx, stream) in plan.streams.iter().enumerate() {
            let sampler = PkSampler::from_items(&stream.items, stream.num_instances)?;
            let mut lc = LoaderConfig::new(
                AugmentConfig::train(t.height, t.width),
                crate::random::key(&[t.seed, s_idx as u64, 0x57e4]),
            );
            lc.two_views = stream.two_views;
            loaders.push(Loader::pk_epoch(
                Arc::clone(&stream.items),
                &sampler,
                epoch as u64,
                t.iters,
                stream.batch_size,
                lc,
                None,
                Arc::clone(&stats),
            )?);
        }
        let domains: Vec<usize> = plan.streams.iter().map(|s| s.domain).collect();
        let mut progress = Progress::new(
            format!("epoch {}/{}", epoch + 1, t.epochs),
            t.iters as u64,
            "iters",
        )
        .with_line_every(t.log_every as u64);
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let mut counted = 0usize;
        let mut images_seen = 0usize;
        let mut window_start = Instant::now();
        let iterations_start = Instant::now();
        let skipped_before = stats.skipped();
        for iter in 0..t.iters {
            let step = global0 + iter as u64;
            let mut host = Vec::with_capacity(loaders.len());
            for (l, stream) in loaders.iter_mut().zip(&plan.streams) {
                host.push(l.next().ok_or_else(|| {
                    TrainError::Method(format!(
                        "the {} loader ended before iteration {iter} of epoch {epoch}",
                        stream.name
                    ))
                })?);
            }
            if host.iter().any(|b| b.is_empty()) {
                dir.say(&format!(
                    "warning: epoch {epoch} iteration {iter}: a batch lost every image (unreadable files); step skipped"
                ));
                progress.inc(1);
                continue;
            }
            let batch = device_batch(
                &host,
                &domains,
                t.bn_group,
                &opts.device,
                (epoch, iter, step, t.seed),
            )?;
            images_seen += batch.labels.len();
            let terms = method.losses(&session, &batch)?;
            if terms.is_empty() {
                return Err(TrainError::Method(format!(
                    "{}: no loss terms at epoch {epoch} step {step}",
                    cfg.method
                )));
            }
            let mut total: Option<Tensor> = None;
            let mut values = Vec::with_capacity(terms.len());
            for (name, term) in &terms {
                let v = term.item()?;
                if !v.is_finite() {
                    return Err(TrainError::NonFinite {
                        term: name.clone(),
                        value: v,
                        epoch,
                        iter,
                        step,
                    });
                }
                values.push((name.clone(), v));
                total = Some(match total {
                    None => term.clone(),
                    Some(acc) => acc.add(term)?,
                });
            }
            let total = total.expect("terms is not empty");
            total.backward()?;
            opt.step(&method.trainable())?;
            method.after_step(&session, &batch)?;
            let loss: f64 = values.iter().map(|(_, v)| *v as f64).sum();
            *sums.entry("loss".into()).or_default() += loss;
            for (name, v) in &values {
                *sums.entry(name.clone()).or_default() += *v as f64;
            }
            counted += 1;
            if counted == t.log_every || iter + 1 == t.iters {
                let ips = images_seen as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
                let mean = |k: &str| sums.get(k).copied().unwrap_or(0.0) / counted as f64;
                let term_map: serde_json::Map<String, serde_json::Value> = values
                    .iter()
                    .map(|(n, _)| (n.clone(), json!(mean(n))))
                    .collect();
                let rec = json!({"kind": "step", "epoch": epoch, "step": step, "iter": iter,
                    "lr": lr, "loss": mean("loss"), "terms": term_map, "images_per_s": ips});
                dir.record(&rec)?;
                let msg = format!(
                    "loss {:.4} ({}) lr {:.2e} {:.1} img/s",
                    mean("loss"),
                    values
                        .iter()
                        .map(|(n, _)| format!("{n} {:.4}", mean(n)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    lr,
                    ips
                );
                progress.set_message(msg.clone());
                dir.log_only(&format!(
                    "epoch {} iter {}/{}: {msg}",
                    epoch + 1,
                    iter + 1,
                    t.iters
                ));
                sums.clear();
                counted = 0;
                images_seen = 0;
                window_start = Instant::now();
            }
            progress.inc(1);
        }
        progress.finish();
        drop(loaders);
        let iterations_seconds = iterations_start.elapsed().as_secs_f64();
        timing["iterations"] = json!(iterations_seconds);
        timing["seconds_per_step"] = json!(iterations_seconds / t.iters.max(1) as f64);
        let skipped = stats.skipped() - skipped_before;
        if skipped > 0 {
            let bad = stats.bad_files();
            dir.say(&format!(
                "warning: {skipped} unreadable images were left out of epoch {epoch}'s batches; {} distinct files: {}{}",
                bad.len(),
                bad.iter()
                    .take(10)
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                if bad.len() > 10 { ", ..." } else { "" }
            ));
        }
        flush_session_log(&session, &mut dir);

        // Evaluation and checkpoints.
        let mut epoch_best: Option<(String, f64)> = None;
        let eval_start = Instant::now();
        if t.evaluates_after(epoch) {
            let mut rows = Vec::new();
            for (name, net, domain) in method.eval_models() {
                let r = evaluate_model(
                    net,
                    domain,
                    &eval_set,
                    &opts.device,
                    (t.height, t.width),
                    t.eval_batch_size,
                    &format!("eval {name}"),
                )?;
                rows.push(format!(
                    "| {:>5} | {:<8} | {:>5.1}% | {:>5.1}% | {:>5.1}% | {:>6.1}% |",
                    epoch + 1,
                    name,
                    100.0 * r.map,
                    100.0 * r.rank(1).unwrap_or(f64::NAN),
                    100.0 * r.rank(5).unwrap_or(f64::NAN),
                    100.0 * r.rank(10).unwrap_or(f64::NAN)
                ));
                let improved = best.is_none_or(|(b, _)| r.map > b);
                if improved {
                    best = Some((r.map, epoch));
                    export_model(
                        net,
                        domain,
                        &dir.best_path(),
                        &config_toml,
                        epoch,
                        &cfg.method,
                        Some(r.map),
                    )?;
                }
                if epoch_best.as_ref().is_none_or(|(_, m)| r.map > *m) {
                    epoch_best = Some((name.clone(), r.map));
                }
                dir.record(&json!({"kind": "eval", "epoch": epoch, "step": global0 + t.iters as u64,
                    "model": name, "on": eval_set.name, "mAP": r.map, "rank1": r.rank(1).unwrap_or(f64::NAN), "rank5": r.rank(5).unwrap_or(f64::NAN),
                    "rank10": r.rank(10).unwrap_or(f64::NAN), "valid_queries": r.num_valid_queries,
                    "best_mAP": best.map(|b| b.0)}))?;
                // The epoch's summary is its better model (the one last.safetensors holds).
                let this = EvalSummary::new(epoch, &name, &r);
                if last_eval
                    .as_ref()
                    .is_none_or(|l| l.epoch != epoch || this.map > l.map)
                {
                    last_eval = Some(this);
                }
            }
            dir.say(&format!(
                "evaluation on the {} (query {} / gallery {}):",
                eval_set.name,
                eval_set.query.len(),
                eval_set.gallery.len()
            ));
            dir.say(&eval_table_header());
            for r in rows {
                dir.say(&r);
            }
            if let Some((b, e)) = best {
                dir.say(&format!(
                    "best mAP so far: {:.1}% (epoch {})",
                    100.0 * b,
                    e + 1
                ));
            }
        }
        timing["eval"] = json!(eval_start.elapsed().as_secs_f64());
        let checkpoint_start = Instant::now();
        // last.safetensors: the evaluated model (the better one when several were evaluated).
        let models = method.eval_models();
        let last = epoch_best
            .as_ref()
            .and_then(|(n, _)| models.iter().find(|m| &m.0 == n))
            .unwrap_or(&models[0]);
        export_model(
            last.1,
            last.2,
            &dir.last_path(),
            &config_toml,
            epoch,
            &cfg.method,
            epoch_best.as_ref().map(|b| b.1),
        )?;
        epochs_done = epoch + 1;
        let (tensors, method_meta) = state_tensors(method.as_ref(), &opt)?;
        let mut meta = HashMap::new();
        meta.insert("format".into(), "unreid-train-state".into());
        meta.insert("config".into(), config_toml.clone());
        meta.insert("epochs_done".into(), epochs_done.to_string());
        meta.insert("method_state".into(), method_meta.to_string());
        if let Some((m, e)) = best {
            meta.insert("best_map".into(), format!("{m:.17}"));
            meta.insert("best_epoch".into(), e.to_string());
        }
        RunDir::save_checkpoint(&dir.state_path(), &tensors, meta)?;
        // The plot is an optional output: a failure is reported, never fatal.
        let title = format!(
            "{} ({}), {}",
            cfg.method,
            cfg.model.arch,
            dir.path.display()
        );
        if let Err(e) = dir.records().map_err(|e| e.to_string()).and_then(|r| {
            super::plots::plot_curves(&r, &title, &dir.file(RunDir::CURVES))
                .map_err(|e| e.to_string())
        }) {
            dir.say(&format!("warning: curves.png not updated: {e}"));
        }
        timing["checkpoint"] = json!(checkpoint_start.elapsed().as_secs_f64());
        dir.record(&timing)?;
    }

    let finished = epochs_done == t.epochs;
    let stage_seconds = stage_totals(&dir.records()?);
    let summary = TrainSummary {
        method: cfg.method.clone(),
        run_dir: dir.path.clone(),
        epochs_done,
        finished,
        best_map: best.map(|b| b.0),
        best_epoch: best.map(|b| b.1),
        last_eval,
        wall_seconds: earlier_seconds + started.elapsed().as_secs_f64(),
        stage_seconds,
    };
    let text =
        serde_json::to_string_pretty(&summary).map_err(|e| TrainError::Method(e.to_string()))?;
    dir.write_text(RunDir::SUMMARY, &(text + "\n"))?;
    if finished {
        dir.say(&format!(
            "done: {} epochs in {:.0}s; best {} mAP {} ; checkpoints in {}",
            epochs_done,
            summary.wall_seconds,
            eval_set.name,
            summary
                .best_map
                .map_or("-".into(), |m| format!("{:.1}%", 100.0 * m)),
            dir.path.join("checkpoints").display()
        ));
    } else {
        dir.say(&format!(
            "stopped after epoch {epochs_done} of {}; continue with --resume {}",
            t.epochs,
            dir.path.display()
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(epoch: usize, model: &str, map: f64) -> serde_json::Value {
        json!({"kind": "eval", "epoch": epoch, "model": model, "mAP": map,
            "rank1": map + 0.1, "rank5": 0.9, "rank10": 0.95})
    }

    #[test]
    fn the_last_evaluation_is_the_better_model_of_the_last_evaluated_epoch() {
        let records = vec![
            eval(1, "mean1", 0.50),
            eval(1, "mean2", 0.60),
            json!({"kind": "step", "epoch": 2}),
            eval(3, "mean1", 0.41),
            eval(3, "mean2", 0.39),
            json!({"kind": "relabel", "epoch": 4}),
        ];
        let e = last_evaluation(&records).unwrap();
        // Epoch 3, not epoch 1's higher 0.60; mean1, not the last one listed.
        assert_eq!((e.epoch, e.model.as_str(), e.map), (3, "mean1", 0.41));
        assert!((e.rank1 - 0.51).abs() < 1e-12);
        // Equal mAPs: the first, as the loop keeps it.
        let tie = [eval(0, "a", 0.3), eval(0, "b", 0.3)];
        assert_eq!(last_evaluation(&tie).unwrap().model, "a");
        assert!(last_evaluation(&[json!({"kind": "step"})]).is_none());
    }
}
