//! Evaluation during training: features of the target's query and gallery splits with the test
//! transform, then mAP and CMC under the Market-1501 protocol (shared/ALGORITHMS.md section 9).

use std::path::PathBuf;

use super::TrainError;
use crate::cluster::{Backend, Features};
use crate::data::ReidItem;
use crate::eval::{evaluate, EvalResult, LabeledFeatures};
use crate::nn::{extract_features, ExtractOptions, ReidNet};
use crate::Device;

/// The query and gallery splits a run evaluates on.
#[derive(Clone, Debug)]
pub struct EvalData {
    /// What is evaluated ("target", or "source" when a run has no target).
    pub name: String,
    pub query: Vec<ReidItem>,
    pub gallery: Vec<ReidItem>,
}

/// mAP and CMC of `net` (BN domain `domain`) on `data`. Zero valid queries is an error, never a
/// 0% result.
pub fn evaluate_model(
    net: &ReidNet,
    domain: usize,
    data: &EvalData,
    device: &Device,
    size: (usize, usize),
    batch_size: usize,
    label: &str,
) -> Result<EvalResult, TrainError> {
    let features = |items: &[ReidItem], split: &str| -> Result<Vec<f32>, TrainError> {
        let paths: Vec<PathBuf> = items.iter().map(|i| i.path.clone()).collect();
        let opts = ExtractOptions {
            height: size.0,
            width: size.1,
            batch_size,
            domain,
            progress: Some(format!("{label} {} {split}", data.name)),
        };
        Ok(extract_features(net, &paths, device, &opts)?)
    };
    let q = features(&data.query, "query")?;
    let g = features(&data.gallery, "gallery")?;
    let dim = net.feature_dim();
    let ids = |items: &[ReidItem]| -> (Vec<i64>, Vec<i64>) {
        (
            items.iter().map(|i| i.raw_pid as i64).collect(),
            items.iter().map(|i| i.camid as i64).collect(),
        )
    };
    let (qp, qc) = ids(&data.query);
    let (gp, gc) = ids(&data.gallery);
    let query = LabeledFeatures::new(Features::new(&q, data.query.len(), dim)?, &qp, &qc)?;
    let gallery = LabeledFeatures::new(Features::new(&g, data.gallery.len(), dim)?, &gp, &gc)?;
    let result = evaluate(Backend::from_device(device), query, gallery, 10)?;
    if result.num_valid_queries == 0 {
        return Err(TrainError::Method(format!(
            "evaluation on {}: none of the {} queries has a true match in another camera of the gallery",
            data.name, result.num_queries
        )));
    }
    Ok(result)
}
