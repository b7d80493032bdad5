//! Evaluation during training: features of the target's query and gallery splits with the test
//! transform, then mAP and CMC under the Market-1501 protocol (shared/ALGORITHMS.md section 9).

use std::path::PathBuf;

use super::TrainError;
use crate::cluster::{Backend, Features};
use crate::data::ReidItem;
use crate::eval::metrics::{distance_rows, evaluate_with};
use crate::eval::visualize::{draw_ranked_lists, pick_queries, RankSide};
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

/// The features of `data`'s query and gallery splits by `net` (BN domain `domain`, test
/// transform; [items, dim] row-major each) with their person and camera ids.
struct SplitFeatures {
    query: Vec<f32>,
    gallery: Vec<f32>,
    dim: usize,
    query_ids: (Vec<i64>, Vec<i64>),
    gallery_ids: (Vec<i64>, Vec<i64>),
}

impl SplitFeatures {
    fn extract(
        net: &ReidNet,
        domain: usize,
        data: &EvalData,
        device: &Device,
        size: (usize, usize),
        batch_size: usize,
        label: &str,
    ) -> Result<SplitFeatures, TrainError> {
        let features = |items: &[ReidItem], split: &str| -> Result<Vec<f32>, TrainError> {
            let paths: Vec<PathBuf> = items.iter().map(|i| i.path.clone()).collect();
            let opts = ExtractOptions {
                height: size.0,
                width: size.1,
                batch_size,
                domain,
                progress: Some(format!("{label} {} {split}", data.name)),
                output: crate::nn::ExtractOutput::Retrieval,
            };
            Ok(extract_features(net, &paths, device, &opts)?)
        };
        let ids = |items: &[ReidItem]| -> (Vec<i64>, Vec<i64>) {
            (
                items.iter().map(|i| i.raw_pid as i64).collect(),
                items.iter().map(|i| i.camid as i64).collect(),
            )
        };
        Ok(SplitFeatures {
            query: features(&data.query, "query")?,
            gallery: features(&data.gallery, "gallery")?,
            dim: net.feature_dim(),
            query_ids: ids(&data.query),
            gallery_ids: ids(&data.gallery),
        })
    }
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
    let f = SplitFeatures::extract(net, domain, data, device, size, batch_size, label)?;
    let ((qp, qc), (gp, gc)) = (&f.query_ids, &f.gallery_ids);
    let query = LabeledFeatures::new(Features::new(&f.query, qp.len(), f.dim)?, qp, qc)?;
    let gallery = LabeledFeatures::new(Features::new(&f.gallery, gp.len(), f.dim)?, gp, gc)?;
    let result = evaluate(Backend::from_device(device), query, gallery, 10)?;
    if result.num_valid_queries == 0 {
        return Err(TrainError::Method(format!(
            "evaluation on {}: none of the {} queries has a true match in another camera of the gallery",
            data.name, result.num_queries
        )));
    }
    Ok(result)
}

/// Ranked-list pictures (`eval::visualize`) of `count` queries of `data`, spread evenly over the
/// query set so the same queries are drawn for every model of the same data (before / after
/// adaptation), by `net` with BN domain `domain`; written to `dir` (created). Returns the
/// evaluation the pictures come from, the files written, and one message per picture that failed.
#[allow(clippy::too_many_arguments)]
pub fn ranked_list_pictures(
    net: &ReidNet,
    domain: usize,
    data: &EvalData,
    device: &Device,
    size: (usize, usize),
    batch_size: usize,
    count: usize,
    dir: &std::path::Path,
) -> Result<(EvalResult, Vec<PathBuf>, Vec<String>), TrainError> {
    let f = SplitFeatures::extract(net, domain, data, device, size, batch_size, "pictures")?;
    let ((qp, qc), (gp, gc)) = (&f.query_ids, &f.gallery_ids);
    let qx = Features::new(&f.query, qp.len(), f.dim)?;
    let gx = Features::new(&f.gallery, gp.len(), f.dim)?;
    let norms = gx.squared_norms();
    let rows = |q0: usize, n: usize, out: &mut [f32]| distance_rows(qx, gx, &norms, q0, n, out);
    let result = evaluate_with((qp, qc), (gp, gc), 10, rows)?;
    std::fs::create_dir_all(dir).map_err(|e| TrainError::Io {
        path: dir.to_path_buf(),
        message: format!("creating the pictures folder: {e}"),
    })?;
    let qpaths: Vec<PathBuf> = data.query.iter().map(|i| i.path.clone()).collect();
    let gpaths: Vec<PathBuf> = data.gallery.iter().map(|i| i.path.clone()).collect();
    let (written, errors) = draw_ranked_lists(
        &pick_queries(&result, count, false),
        &RankSide {
            paths: &qpaths,
            pids: qp,
            camids: qc,
        },
        &RankSide {
            paths: &gpaths,
            pids: gp,
            camids: gc,
        },
        &result,
        &rows,
        dir,
    );
    Ok((result, written, errors))
}

/// A model checkpoint a run wrote (`checkpoints/best.safetensors` or `last.safetensors`) on
/// `device`, shaped by the run configuration in its metadata, with the BN domain the run
/// evaluated it with. Errors name the file: not a unreid run checkpoint, an unreadable
/// configuration, or a DSBN model whose evaluation domain is not recorded.
pub fn load_run_model(
    device: &Device,
    path: &std::path::Path,
) -> Result<(ReidNet, usize), TrainError> {
    let err = |message: String| TrainError::Io {
        path: path.to_path_buf(),
        message,
    };
    let meta = crate::nn::weights::read_metadata(path).map_err(|e| err(e.to_string()))?;
    let config = meta.get("config").ok_or_else(|| {
        err("no run configuration in its metadata: not a checkpoint of `unreid train`".into())
    })?;
    let config = super::RunConfig::from_toml(config, &format!("{} (metadata)", path.display()))?;
    let (net, _, _) = crate::nn::extract::reid_net_from_weights(
        device,
        &config.model.arch,
        config.model.last_stride,
        path,
        false,
    )?;
    let domain = match meta.get(super::run_loop::EVAL_DOMAIN_KEY) {
        Some(d) => d
            .parse::<usize>()
            .ok()
            .filter(|&d| d < net.domains())
            .ok_or_else(|| {
                err(format!(
                    "eval_domain {d:?} is not one of its {} BN domains",
                    net.domains()
                ))
            })?,
        None if net.domains() == 1 => 0,
        None => {
            return Err(err(format!(
                "a model with {} BN domains whose evaluation domain is not recorded",
                net.domains()
            )))
        }
    };
    Ok((net, domain))
}
