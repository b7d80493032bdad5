//! How hard is a generated synthetic benchmark? Colour-histogram retrieval (`data::hardness`) scored by
//! the one Market-protocol mAP / CMC of this crate (`eval::metrics::evaluate`), within each domain, across
//! domains with a diagonal metric learned on either one, and how well the two domains are told apart.
//!
//! Lives in `eval` (not `data`) because it measures retrieval: `data` sits below `eval` in the layering.

use crate::cluster::{Backend, Features};
use crate::data::hardness::{fisher_weights, histogram_feature, weighted};
use crate::data::synth::{
    generate, plan_domain, Domain, SynthConfig, SynthError, SynthImage, SynthSplit,
};
use crate::eval::metrics::{evaluate, EvalResult, LabeledFeatures};
use crate::eval::EvalError;
use rayon::prelude::*;

/// Why the hardness probe failed.
#[derive(Debug, thiserror::Error)]
pub enum HardnessError {
    /// Generating or decoding the benchmark failed.
    #[error(transparent)]
    Synth(#[from] SynthError),
    /// The features could not be scored (shape or non-finite values).
    #[error("hardness probe: {0}")]
    Eval(#[from] EvalError),
}

/// Market-protocol mAP / CMC (squared Euclidean distance, same pid and camera removed) of the rows
/// `query` against the rows `gallery` of `features`, labelled by `plans` (pid, camid).
fn market_retrieval(
    features: &[Vec<f32>],
    plans: &[SynthImage],
    query: &[usize],
    gallery: &[usize],
) -> Result<EvalResult, EvalError> {
    let dim = features.first().map_or(0, |f| f.len());
    let gather = |idx: &[usize]| -> (Vec<f32>, Vec<i64>, Vec<i64>) {
        let data = idx
            .iter()
            .flat_map(|&i| features[i].iter().copied())
            .collect();
        let pids = idx.iter().map(|&i| plans[i].pid as i64).collect();
        let cams = idx.iter().map(|&i| plans[i].camid as i64).collect();
        (data, pids, cams)
    };
    let (qx, qp, qc) = gather(query);
    let (gx, gp, gc) = gather(gallery);
    let q = LabeledFeatures::new(Features::new(&qx, query.len(), dim)?, &qp, &qc)?;
    let g = LabeledFeatures::new(Features::new(&gx, gallery.len(), dim)?, &gp, &gc)?;
    evaluate(Backend::Cpu, q, g, 1)
}

/// Hardness figures of a generated benchmark (colour-histogram proxy, see `data::hardness`).
#[derive(Clone, Debug, PartialEq)]
pub struct HardnessReport {
    /// (mAP, rank-1) of raw histograms, query vs gallery, within each domain.
    pub source: (f64, f64),
    pub target: (f64, f64),
    /// Target retrieval with a diagonal metric learned on source train (transfer) vs on target train (oracle).
    pub target_with_source_metric: (f64, f64),
    pub target_with_target_metric: (f64, f64),
    /// Source retrieval with the metric learned on source train.
    pub source_with_source_metric: (f64, f64),
    /// Nearest-domain-centroid accuracy of test images (0.5 = indistinguishable domains).
    pub domain_accuracy: f64,
}

/// Generates the benchmark in memory (JPEG round trip included, as a model would see it) and measures it.
pub fn measure_hardness(cfg: &SynthConfig) -> Result<HardnessReport, HardnessError> {
    let files = generate(cfg, &|| {})?;
    let plans: Vec<SynthImage> = Domain::BOTH
        .iter()
        .flat_map(|&d| plan_domain(cfg, d))
        .collect();
    let features: Vec<Vec<f32>> = files
        .par_iter()
        .map(|(path, bytes)| {
            crate::data::decode::decode_rgb_bytes(bytes, path)
                .map(|img| histogram_feature(&img))
                .map_err(|e| SynthError::Encode(e.to_string()))
        })
        .collect::<Result<_, SynthError>>()?;
    let select = |domain: Domain, split: SynthSplit| -> Vec<usize> {
        (0..plans.len())
            .filter(|&i| plans[i].domain == domain && plans[i].split == split && plans[i].pid >= 0)
            .collect()
    };
    let retrieval = |domain: Domain, feats: &[Vec<f32>]| -> Result<(f64, f64), HardnessError> {
        let (query, gallery) = (
            select(domain, SynthSplit::Query),
            select(domain, SynthSplit::Gallery),
        );
        let r = market_retrieval(feats, &plans, &query, &gallery)?;
        // evaluate() ranks at least one position, so Rank-1 always exists.
        Ok((r.map, r.rank(1).unwrap_or(f64::NAN)))
    };
    let learn = |domain: Domain| {
        let idx = select(domain, SynthSplit::Train);
        let feats: Vec<&[f32]> = idx.iter().map(|&i| features[i].as_slice()).collect();
        let pids: Vec<i32> = idx.iter().map(|&i| plans[i].pid).collect();
        fisher_weights(&feats, &pids)
    };
    let reweigh =
        |w: &[f32]| -> Vec<Vec<f32>> { features.iter().map(|f| weighted(f, w)).collect() };
    let (w_src, w_tgt) = (learn(Domain::Source), learn(Domain::Target));
    let (f_src, f_tgt) = (reweigh(&w_src), reweigh(&w_tgt));

    // Domain separability: distance to each domain's train centroid.
    let centroid = |domain: Domain| {
        let idx = select(domain, SynthSplit::Train);
        let mut c = vec![0f32; features[0].len()];
        for &i in &idx {
            c.iter_mut()
                .zip(&features[i])
                .for_each(|(a, b)| *a += b / idx.len() as f32);
        }
        c
    };
    let (c_src, c_tgt) = (centroid(Domain::Source), centroid(Domain::Target));
    let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let test: Vec<usize> = (0..plans.len())
        .filter(|&i| plans[i].split != SynthSplit::Train)
        .collect();
    let correct = test
        .iter()
        .filter(|&&i| {
            let closer_to_source = dist(&features[i], &c_src) < dist(&features[i], &c_tgt);
            closer_to_source == (plans[i].domain == Domain::Source)
        })
        .count();
    Ok(HardnessReport {
        source: retrieval(Domain::Source, &features)?,
        target: retrieval(Domain::Target, &features)?,
        target_with_source_metric: retrieval(Domain::Target, &f_src)?,
        target_with_target_metric: retrieval(Domain::Target, &f_tgt)?,
        source_with_source_metric: retrieval(Domain::Source, &f_src)?,
        domain_accuracy: correct as f64 / test.len().max(1) as f64,
    })
}
