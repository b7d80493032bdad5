//! `unreid cluster`: pseudo labels from a features file (DBSCAN on Jaccard / Euclidean / cosine
//! distances, or k-means), written as JSON.

use crate::cluster::{self, Backend, Features, JaccardParams, KmeansParams, PlainDistance};
use crate::features::FeatureSet;
use crate::io::write_atomic;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    Dbscan,
    Kmeans,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distance {
    /// k-reciprocal Jaccard distance (SpCL / Cluster Contrast), DBSCAN only.
    Jaccard,
    Euclidean,
    /// 1 - cosine similarity (for k-means: rows are L2-normalised first).
    Cosine,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Features file (safetensors with a `features` [N, D] f32 tensor).
    #[arg(long)]
    pub features: PathBuf,
    #[arg(long, value_enum, default_value_t = Algo::Dbscan)]
    pub algo: Algo,
    /// Distance; default jaccard for dbscan, euclidean for kmeans.
    #[arg(long, value_enum)]
    pub distance: Option<Distance>,
    /// Jaccard: kNN list length (self included).
    #[arg(long, default_value_t = 30)]
    pub k1: usize,
    /// Jaccard: neighbours averaged by query expansion (self included).
    #[arg(long, default_value_t = 6)]
    pub k2: usize,
    /// DBSCAN neighbourhood radius (inclusive).
    #[arg(long, default_value_t = 0.6)]
    pub eps: f32,
    /// DBSCAN: neighbours (the point itself included) that make a core point.
    #[arg(long, default_value_t = 4)]
    pub min_samples: usize,
    /// SpCL self-paced mode: also cluster at eps -/+ this gap (tight / loose) from the same graph
    /// and write the reliability-filtered labels as `self_paced_labels`.
    #[arg(long)]
    pub eps_gap: Option<f32>,
    /// k-means: number of clusters.
    #[arg(long, default_value_t = 500)]
    pub k: usize,
    /// k-means: maximum Lloyd iterations.
    #[arg(long, default_value_t = 300)]
    pub max_iter: usize,
    /// k-means: seed of the k-means++ initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where the kNN / radius-graph distance tiles run: `auto` uses a real GPU when there is one
    /// and the CPU GEMM path otherwise (also when the only adapter is a CPU emulation).
    #[arg(long, value_enum, default_value_t = crate::DeviceChoice::Auto)]
    pub device: crate::DeviceChoice,
    /// Adapter name substring or backend (vulkan, metal, dx12, gl) for --device gpu/auto.
    #[arg(long, env = "UNREID_ADAPTER")]
    pub adapter: Option<String>,
    /// Where to write the labels JSON.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ClusterArgs) -> anyhow::Result<()> {
    let total = Instant::now();
    let mut seconds: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut stage = |name: &'static str, start: Instant| {
        seconds.insert(name, start.elapsed().as_secs_f64());
    };
    let distance = args.distance.unwrap_or(match args.algo {
        Algo::Dbscan => Distance::Jaccard,
        Algo::Kmeans => Distance::Euclidean,
    });
    if args.algo == Algo::Kmeans && distance == Distance::Jaccard {
        bail!("--distance jaccard is not defined for --algo kmeans (use euclidean or cosine)");
    }
    if args.algo == Algo::Dbscan && !(args.eps.is_finite() && args.eps >= 0.0) {
        bail!("--eps {} must be a finite non-negative number", args.eps);
    }

    let t = Instant::now();
    let mut set = FeatureSet::load(&args.features)?;
    stage("load", t);
    if set.num == 0 {
        bail!("{} holds no feature rows", args.features.display());
    }
    if args.algo == Algo::Kmeans && distance == Distance::Cosine {
        let dim = set.dim;
        for row in set.features.chunks_mut(dim) {
            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
    }
    let x = Features::new(&set.features, set.num, set.dim)
        .with_context(|| format!("in {}", args.features.display()))?;
    let backend = Backend::from_device(
        &crate::Device::choose(args.device, args.adapter.as_deref()).context("--device")?,
    );

    let mut extra = serde_json::Map::new();
    let (labels, num_clusters, num_outliers) = match args.algo {
        Algo::Kmeans => {
            let t = Instant::now();
            let params = KmeansParams {
                k: args.k,
                max_iter: args.max_iter,
                tol: 1e-4,
                seed: args.seed,
            };
            let r = cluster::kmeans(backend, x, params).context("--k")?;
            stage("kmeans", t);
            extra.insert("inertia".into(), r.inertia.into());
            extra.insert("iterations".into(), r.iterations.into());
            let used = {
                let mut seen = vec![false; args.k];
                r.labels.iter().for_each(|&l| seen[l as usize] = true);
                seen.iter().filter(|&&s| s).count()
            };
            (r.labels, used, 0)
        }
        Algo::Dbscan => {
            let gap = args.eps_gap.unwrap_or(0.0);
            if !(gap.is_finite() && gap >= 0.0 && gap <= args.eps) {
                bail!("--eps-gap {gap} must lie in [0, --eps]");
            }
            let eps_max = args.eps + gap;
            let graph = match distance {
                Distance::Jaccard => {
                    if args.k1 > set.num {
                        bail!("--k1 {} exceeds the {} feature rows", args.k1, set.num);
                    }
                    let t = Instant::now();
                    let nb = cluster::knn(backend, x, args.k1)?;
                    stage("knn", t);
                    let t = Instant::now();
                    let g = cluster::jaccard_graph(
                        x,
                        &nb,
                        JaccardParams {
                            k1: args.k1,
                            k2: args.k2,
                        },
                        eps_max.min(1.0),
                    )
                    .context("--k1 / --k2")?;
                    stage("jaccard", t);
                    g
                }
                Distance::Euclidean | Distance::Cosine => {
                    let kind = if distance == Distance::Euclidean {
                        PlainDistance::Euclidean
                    } else {
                        PlainDistance::Cosine
                    };
                    let t = Instant::now();
                    let g = cluster::radius_graph(backend, x, kind, eps_max)?;
                    stage("radius_graph", t);
                    g
                }
            };
            extra.insert("graph_edges".into(), (graph.num_edges() / 2).into());
            let t = Instant::now();
            let eps_list = if args.eps_gap.is_some() {
                vec![args.eps - gap, args.eps, args.eps + gap]
            } else {
                vec![args.eps]
            };
            let mut runs = cluster::dbscan_many(&graph, &eps_list, args.min_samples)?;
            stage("dbscan", t);
            let normal = if runs.len() == 3 {
                runs.swap_remove(1)
            } else {
                runs.swap_remove(0)
            };
            if runs.len() == 2 {
                let t = Instant::now();
                let sp = cluster::self_paced_labels(
                    &normal.labels,
                    &runs[0].labels,
                    &runs[1].labels,
                    None,
                )?;
                stage("self_paced", t);
                extra.insert(
                    "labels_tight".into(),
                    serde_json::to_value(&runs[0].labels)?,
                );
                extra.insert(
                    "labels_loose".into(),
                    serde_json::to_value(&runs[1].labels)?,
                );
                extra.insert(
                    "self_paced_labels".into(),
                    serde_json::to_value(&sp.labels)?,
                );
                extra.insert("indep_threshold".into(), (sp.indep_threshold as f64).into());
            }
            (normal.labels, normal.num_clusters, normal.num_outliers)
        }
    };

    seconds.insert("total", total.elapsed().as_secs_f64());
    let mut out = serde_json::Map::new();
    out.insert("labels".into(), serde_json::to_value(&labels)?);
    out.insert("num_clusters".into(), num_clusters.into());
    out.insert("num_outliers".into(), num_outliers.into());
    out.insert("seconds".into(), serde_json::to_value(&seconds)?);
    out.insert(
        "algo".into(),
        format!("{:?}", args.algo).to_lowercase().into(),
    );
    out.insert(
        "distance".into(),
        format!("{distance:?}").to_lowercase().into(),
    );
    out.extend(extra);
    let json = serde_json::to_vec(&serde_json::Value::Object(out))?;
    write_atomic(&args.out, &json)
        .with_context(|| format!("writing --out {}", args.out.display()))?;

    let stages: Vec<String> = seconds
        .iter()
        .filter(|(k, _)| **k != "total")
        .map(|(k, v)| format!("{k} {v:.2}s"))
        .collect();
    println!(
        "{} points -> {num_clusters} clusters, {num_outliers} outliers ({:?}/{:?}) in {:.2}s [{}] -> {}",
        set.num,
        args.algo,
        distance,
        seconds["total"],
        stages.join(", "),
        args.out.display()
    );
    Ok(())
}
