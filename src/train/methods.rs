//! The registry of training methods: each method's published defaults and its constructor.
//! Adding a method = one file in `src/train/` + one line in each match below + a preset in
//! `configs/`.

use std::path::Path;

use super::{
    cluster_contrast, ise, mmt, proda, source, spcl, Method, RunConfig, Session, TrainError,
};
use crate::nn::weights::{load_weights, ClassifierPolicy, LoadOptions, LoadReport};
use crate::nn::{Module, ReidNet};

/// Every method `--method` accepts.
pub const METHODS: &[&str] = &["source", "spcl", "mmt", "cluster-contrast", "ise", "proda"];

/// The run configuration of `method` with every default at its published value.
pub fn method_defaults(method: &str) -> Result<RunConfig, TrainError> {
    match method {
        "source" => source::defaults(),
        "spcl" => spcl::defaults(),
        "mmt" => mmt::defaults(),
        "proda" => proda::defaults(),
        "cluster-contrast" => cluster_contrast::defaults(),
        "ise" => ise::defaults(),
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
        "spcl" => Ok(Box::new(spcl::SpclMethod::build(session)?)),
        "mmt" => Ok(Box::new(mmt::MmtMethod::build(session)?)),
        "proda" => Ok(Box::new(proda::ProdaMethod::build(session)?)),
        "cluster-contrast" => Ok(Box::new(cluster_contrast::ClusterContrastMethod::build(
            session,
        )?)),
        "ise" => Ok(Box::new(ise::build(session)?)),
        other => Err(TrainError::Config(format!(
            "unknown method {other:?} (one of: {})",
            METHODS.join(", ")
        ))),
    }
}

/// Loads a checkpoint of any format `nn::weights` reads; missing backbone tensors are an error
/// (the loader's default), a missing re-ID head (BN neck, classifier) is new.
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
    let report = load_weights(net, path, &opts).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        message: format!("{what}: {e}"),
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
