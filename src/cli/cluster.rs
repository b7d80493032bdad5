//! `unreid cluster`: pseudo labels from a features file (DBSCAN on Jaccard / Euclidean / cosine
//! distances, or k-means), written as JSON.

use super::args::{check_output, non_negative_f32, open_device, positive};
use crate::cluster::{
    label_quality, pseudo_labels, Backend, ClusterAlgo as Algo, ClusterConfig,
    ClusterDistance as Distance, Features, LabelQuality,
};
use crate::features::FeatureSet;
use crate::io::{shown, write_atomic};
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
    #[arg(long, default_value_t = 30, value_parser = positive())]
    pub k1: usize,
    /// Jaccard: neighbours averaged by query expansion (self included).
    #[arg(long, default_value_t = 6, value_parser = positive())]
    pub k2: usize,
    /// DBSCAN neighbourhood radius (inclusive).
    #[arg(long, default_value_t = 0.6, value_parser = non_negative_f32)]
    pub eps: f32,
    /// DBSCAN: neighbours (the point itself included) that make a core point.
    #[arg(long, default_value_t = 4, value_parser = positive())]
    pub min_samples: usize,
    /// SpCL self-paced mode: also cluster at eps -/+ this gap (tight / loose) from the same graph
    /// and write the reliability-filtered labels as `self_paced_labels`.
    #[arg(long, value_parser = non_negative_f32)]
    pub eps_gap: Option<f32>,
    /// k-means: number of clusters.
    #[arg(long, default_value_t = 500, value_parser = positive())]
    pub k: usize,
    /// k-means: maximum Lloyd iterations.
    #[arg(long, default_value_t = 300, value_parser = positive())]
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
        // The CLI clusters at --eps; MMT's automatic eps is a training setting.
        eps_from: crate::cluster::EpsFrom::Fixed,
        rho: ClusterConfig::default().rho,
        k: args.k,
        max_iter: args.max_iter,
        seed: args.seed,
    };
    // Settings that contradict each other fail before the file is read.
    if args.algo == Algo::Kmeans && distance == Distance::Jaccard {
        bail!("--distance jaccard is not defined for --algo kmeans (use euclidean or cosine)");
    }
    check_output("--out", &args.out)?;

    let t = Instant::now();
    let set = FeatureSet::load(&args.features)?;
    let load_seconds = t.elapsed().as_secs_f64();
    if set.num == 0 {
        bail!("{} holds no feature rows", shown(&args.features));
    }
    let x = Features::new(&set.features, set.num, set.dim)
        .with_context(|| format!("in {}", shown(&args.features)))?;
    let backend = Backend::from_device(&open_device(args.device, args.adapter.as_deref())?);
    let flag_hint = match args.algo {
        Algo::Kmeans => "--k",
        Algo::Dbscan => "--eps / --eps-gap / --k1 / --k2 / --min-samples",
    };
    let result = pseudo_labels(backend, x, &cfg, None, None).context(flag_hint)?;

    let quality = quality_against_ids(&set, &result.labels)?;

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
    if let Some((q, scored)) = &quality {
        out.insert("quality".into(), serde_json::to_value(q)?);
        out.insert("quality_images".into(), (*scored).into());
    }
    if !set.paths.is_empty() {
        out.insert("paths".into(), serde_json::to_value(&set.paths)?);
        if let Some(root) = set.image_root() {
            out.insert("root".into(), root.display().to_string().into());
        }
    }
    if let Some(eps) = result.eps {
        out.insert("eps".into(), (eps as f64).into());
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
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    println!(
        "{} -> {}, {} ({} on {} distance) in {:.2}s [{}]",
        plural(set.num, "point"),
        plural(result.num_clusters, "cluster"),
        plural(result.num_outliers, "outlier"),
        args.algo,
        distance,
        seconds["total"],
        stages.join(", "),
    );
    if let Some((q, scored)) = &quality {
        println!(
            "against the ground-truth ids of {scored} images: NMI {:.4}  ARI {:.4}  pairwise \
             precision {:.4}  recall {:.4}  F {:.4}",
            q.nmi, q.ari, q.pairwise_precision, q.pairwise_recall, q.pairwise_f
        );
    }
    println!("wrote {}", shown(&args.out));
    Ok(())
}

/// NMI / ARI / pairwise precision-recall of the clustering against the features' ground-truth
/// ids, over the rows whose id is known (pid >= 0); None when the file has no ids at all.
fn quality_against_ids(
    set: &FeatureSet,
    labels: &[i64],
) -> anyhow::Result<Option<(LabelQuality, usize)>> {
    let Some(pids) = &set.pids else {
        return Ok(None);
    };
    let known: Vec<usize> = (0..set.num).filter(|&i| pids[i] >= 0).collect();
    if known.len() < set.num {
        eprintln!(
            "note: {} of {} rows have an unknown id (pid -1){}; the label quality is measured on the other {}",
            set.num - known.len(),
            set.num,
            (0..set.num)
                .find(|&i| pids[i] < 0)
                .and_then(|i| set.paths.get(i))
                .map(|p| format!(", e.g. {p}"))
                .unwrap_or_default(),
            known.len()
        );
    }
    if known.is_empty() {
        return Ok(None);
    }
    let clusters: Vec<i64> = known.iter().map(|&i| labels[i]).collect();
    let truth: Vec<i64> = known.iter().map(|&i| pids[i]).collect();
    Ok(Some((label_quality(&clusters, &truth)?, known.len())))
}
