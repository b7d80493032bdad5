//! `unreid cluster`: pseudo labels from a features file (DBSCAN on Jaccard / Euclidean / cosine
//! distances, or k-means), written as JSON.

use crate::cluster::{
    pseudo_labels, Backend, ClusterAlgo as Algo, ClusterConfig, ClusterDistance as Distance,
    Features,
};
use crate::features::FeatureSet;
use crate::io::write_atomic;
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

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
    let distance = args.distance.unwrap_or(match args.algo {
        Algo::Dbscan => Distance::Jaccard,
        Algo::Kmeans => Distance::Euclidean,
    });
    let cfg = ClusterConfig {
        algo: args.algo,
        distance,
        k1: args.k1,
        k2: args.k2,
        eps: args.eps,
        min_samples: args.min_samples,
        eps_gap: args.eps_gap,
        rho: None,
        k: args.k,
        max_iter: args.max_iter,
        seed: args.seed,
    };
    // Settings that contradict each other fail before the file is read.
    if args.algo == Algo::Kmeans && distance == Distance::Jaccard {
        bail!("--distance jaccard is not defined for --algo kmeans (use euclidean or cosine)");
    }
    if args.algo == Algo::Dbscan && !(args.eps.is_finite() && args.eps >= 0.0) {
        bail!("--eps {} must be a finite non-negative number", args.eps);
    }

    let t = Instant::now();
    let set = FeatureSet::load(&args.features)?;
    let load_seconds = t.elapsed().as_secs_f64();
    if set.num == 0 {
        bail!("{} holds no feature rows", args.features.display());
    }
    let x = Features::new(&set.features, set.num, set.dim)
        .with_context(|| format!("in {}", args.features.display()))?;
    let backend = Backend::from_device(
        &crate::Device::choose(args.device, args.adapter.as_deref()).context("--device")?,
    );
    let flag_hint = match args.algo {
        Algo::Kmeans => "--k",
        Algo::Dbscan => "--eps / --eps-gap / --k1 / --k2 / --min-samples",
    };
    let result = pseudo_labels(backend, x, &cfg, None, None).context(flag_hint)?;

    let mut seconds: BTreeMap<String, f64> = result.seconds.clone();
    seconds.insert("load".into(), load_seconds);
    seconds.insert("total".into(), total.elapsed().as_secs_f64());
    let mut out = serde_json::Map::new();
    out.insert("labels".into(), serde_json::to_value(&result.labels)?);
    out.insert("num_clusters".into(), result.num_clusters.into());
    out.insert("num_outliers".into(), result.num_outliers.into());
    out.insert("seconds".into(), serde_json::to_value(&seconds)?);
    out.insert("algo".into(), args.algo.to_string().into());
    out.insert("distance".into(), distance.to_string().into());
    if let Some(inertia) = result.kmeans_inertia {
        out.insert("inertia".into(), inertia.into());
    }
    if let Some(iterations) = result.kmeans_iterations {
        out.insert("iterations".into(), iterations.into());
    }
    if let Some(edges) = result.graph_edges {
        out.insert("graph_edges".into(), edges.into());
    }
    if let (Some(tight), Some(loose), Some(sp)) = (&result.tight, &result.loose, &result.self_paced)
    {
        out.insert("labels_tight".into(), serde_json::to_value(tight)?);
        out.insert("labels_loose".into(), serde_json::to_value(loose)?);
        out.insert(
            "self_paced_labels".into(),
            serde_json::to_value(&sp.labels)?,
        );
        out.insert("indep_threshold".into(), (sp.indep_threshold as f64).into());
    }
    let json = serde_json::to_vec(&serde_json::Value::Object(out))?;
    write_atomic(&args.out, &json)
        .with_context(|| format!("writing --out {}", args.out.display()))?;

    let stages: Vec<String> = seconds
        .iter()
        .filter(|(k, _)| *k != "total")
        .map(|(k, v)| format!("{k} {v:.2}s"))
        .collect();
    println!(
        "{} points -> {} clusters, {} outliers ({:?}/{:?}) in {:.2}s [{}] -> {}",
        set.num,
        result.num_clusters,
        result.num_outliers,
        args.algo,
        distance,
        seconds["total"],
        stages.join(", "),
        args.out.display()
    );
    Ok(())
}
