//! The registry of training methods: each method's published defaults and its constructor.
//! Adding a method = one file in `src/train/` + one line in each match below + a preset in
//! `configs/`.

use std::path::Path;

use super::{source, Method, RunConfig, Session, TrainError};
use crate::nn::weights::{load_safetensors, ClassifierPolicy, LoadOptions, LoadReport};
use crate::nn::{Module, ReidNet};

/// Every method `--method` accepts.
pub const METHODS: &[&str] = &["source"];

/// The run configuration of `method` with every default at its published value.
pub fn method_defaults(method: &str) -> Result<RunConfig, TrainError> {
    match method {
        "source" => Ok(source::defaults()),
        other => Err(TrainError::Config(format!(
            "unknown method {other:?} (one of: {})",
            METHODS.join(", ")
        ))),
    }
}

/// Builds the method the session's configuration names.
pub fn build_method(session: &Session) -> Result<Box<dyn Method>, TrainError> {
    match session.config.method.as_str() {
        "source" => Ok(Box::new(source::SourceMethod::build(session)?)),
        other => Err(TrainError::Config(format!(
            "unknown method {other:?} (one of: {})",
            METHODS.join(", ")
        ))),
    }
}

/// Names a model may lack in a backbone checkpoint (the re-ID head is new).
fn is_head(name: &str) -> bool {
    name.starts_with("feat_bn.") || name.starts_with("classifier.") || name == "gem.p"
}

fn load_into(
    net: &ReidNet,
    path: &Path,
    what: &str,
    classifier: ClassifierPolicy,
) -> Result<LoadReport, TrainError> {
    let opts = LoadOptions {
        classifier,
        ..Default::default()
    };
    let report = load_safetensors(net, path, &opts).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })?;
    if report.loaded.is_empty() {
        return Err(TrainError::Io {
            path: path.to_path_buf(),
            message: format!(
                "{what}: holds none of the {} parameters (wrong model.arch?)",
                net.config().arch
            ),
        });
    }
    let missing: Vec<&String> = report.missing.iter().filter(|n| !is_head(n)).collect();
    if !missing.is_empty() {
        return Err(TrainError::Io {
            path: path.to_path_buf(),
            message: format!(
                "{what}: {} backbone tensors are missing, e.g. {} (a truncated file, or another architecture than model.arch = {})",
                missing.len(),
                missing[..missing.len().min(5)]
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                net.config().arch
            ),
        });
    }
    Ok(report)
}

/// The starting model of a method: `model.*` settings with `classes` classifier rows, ImageNet
/// backbone weights from `model.weights`, then the checkpoint `init` (a previous run; its
/// classifier is re-initialised when its size differs). Says what it loaded.
pub fn initial_model(
    session: &Session,
    classes: Option<usize>,
    seed: u64,
    init: Option<&Path>,
) -> Result<ReidNet, TrainError> {
    let model = &session.config.model;
    let net = ReidNet::new(&session.device, &model.reid(classes, seed)?)?;
    if let Some(w) = &model.weights {
        let r = load_into(&net, w, "model.weights", ClassifierPolicy::Reinit)?;
        session.say(format!(
            "model: {} tensors of {} from {}",
            r.loaded.len(),
            model.arch,
            w.display()
        ));
    }
    if let Some(init) = init {
        let r = load_into(&net, init, "model.init", ClassifierPolicy::Reinit)?;
        session.say(format!(
            "model: {} tensors from checkpoint {}{}",
            r.loaded.len(),
            init.display(),
            if r.skipped.is_empty() {
                String::new()
            } else {
                format!(" (new classifier: {})", r.skipped.join(", "))
            }
        ));
    }
    if model.weights.is_none() && init.is_none() {
        session.say(format!(
            "model: {} from random initialisation (no model.weights / model.init)",
            model.arch
        ));
    }
    Ok(net)
}

/// Every trainable parameter of `net` under `prefix` (`net1.`), for the optimiser.
pub fn prefixed<'a>(prefix: &str, net: &'a ReidNet) -> Vec<(String, &'a crate::nn::Param)> {
    net.trainable()
        .into_iter()
        .map(|(n, p)| (format!("{prefix}{n}"), p))
        .collect()
}
