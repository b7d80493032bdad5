//! `unreid evaluate`: mAP and CMC rank-1/5/10 of query features against gallery features
//! (Market-1501 protocol), optionally k-reciprocal re-ranked, with optional ranked-list pictures.

use crate::cluster::{Backend, Features};
use crate::eval::visualize::{draw_ranked_list, RankedList};
use crate::eval::{metrics, top_ranked, RerankParams, Reranker};
use crate::features::FeatureSet;
use crate::io::write_atomic;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct EvaluateArgs {
    /// Query features file (`features`, `pids`, `camids`).
    #[arg(long)]
    pub query: PathBuf,
    /// Gallery features file (`features`, `pids`, `camids`).
    #[arg(long)]
    pub gallery: PathBuf,
    /// Apply k-reciprocal re-ranking.
    #[arg(long)]
    pub rerank: bool,
    #[arg(long, default_value_t = 20)]
    pub k1: usize,
    #[arg(long, default_value_t = 6)]
    pub k2: usize,
    #[arg(long, default_value_t = 0.3)]
    pub lambda: f32,
    /// Length of the CMC curve written to --json.
    #[arg(long, default_value_t = 50)]
    pub max_rank: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write ranked-list PNGs (query + top 10) for a few queries into this folder.
    #[arg(long)]
    pub visualize: Option<PathBuf>,
    /// Folder that relative image paths in the features files are resolved against.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Where query-gallery distances are computed: `auto` takes a real GPU when there is one and
    /// the CPU GEMM path otherwise (also when the only adapter is a CPU emulation).
    #[arg(long, value_enum, default_value_t = crate::DeviceChoice::Auto)]
    pub device: crate::DeviceChoice,
    /// Adapter name substring or backend (vulkan, metal, dx12, gl) for --device gpu/auto.
    #[arg(long, env = "UNREID_ADAPTER")]
    pub adapter: Option<String>,
    /// How many queries to draw with --visualize (spread evenly over the query set).
    #[arg(long, default_value_t = 8)]
    pub num_visualize: usize,
}

fn labels<'a>(set: &'a FeatureSet, path: &Path) -> anyhow::Result<(&'a [i64], &'a [i64])> {
    let pids = set.pids.as_deref().with_context(|| {
        format!(
            "{} has no `pids` tensor; evaluation needs identities",
            path.display()
        )
    })?;
    let camids = set.camids.as_deref().with_context(|| {
        format!(
            "{} has no `camids` tensor; evaluation needs cameras",
            path.display()
        )
    })?;
    Ok((pids, camids))
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let query = FeatureSet::load(&args.query)?;
    let gallery = FeatureSet::load(&args.gallery)?;
    if query.dim != gallery.dim {
        bail!(
            "{} has {}-d features but {} has {}-d",
            args.query.display(),
            query.dim,
            args.gallery.display(),
            gallery.dim
        );
    }
    if query.num == 0 || gallery.num == 0 {
        bail!(
            "empty query ({}) or gallery ({}) features",
            query.num,
            gallery.num
        );
    }
    let (qpids, qcams) = labels(&query, &args.query)?;
    let (gpids, gcams) = labels(&gallery, &args.gallery)?;
    let qx = Features::new(&query.features, query.num, query.dim)
        .with_context(|| format!("in {}", args.query.display()))?;
    let gx = Features::new(&gallery.features, gallery.num, gallery.dim)
        .with_context(|| format!("in {}", args.gallery.display()))?;
    let load_s = start.elapsed().as_secs_f64();
    let backend = Backend::from_device(
        &crate::Device::choose(args.device, args.adapter.as_deref()).context("--device")?,
    );
    let max_rank = args.max_rank.max(10);

    let t = Instant::now();
    let reranker = if args.rerank {
        let params = RerankParams {
            k1: args.k1,
            k2: args.k2,
            lambda: args.lambda,
        };
        Some(Reranker::new(backend, qx, gx, params).context("--k1 / --k2 / --lambda")?)
    } else {
        None
    };
    let rerank_s = t.elapsed().as_secs_f64();
    let gallery_norms = gx.squared_norms();
    let rows = |q0: usize, count: usize, out: &mut [f32]| match &reranker {
        Some(r) => r.rows(q0, count, out),
        None => metrics::distance_rows(qx, gx, &gallery_norms, q0, count, out),
    };
    let t = Instant::now();
    let result = metrics::evaluate_with((qpids, qcams), (gpids, gcams), max_rank, rows);
    let eval_s = t.elapsed().as_secs_f64();

    println!(
        "{} queries x {} gallery{}: {} valid, {} skipped (no true match in another camera)",
        result.num_queries,
        gallery.num,
        if args.rerank { " (re-ranked)" } else { "" },
        result.num_valid_queries,
        result.num_skipped_queries
    );
    println!(
        "mAP: {:.1}%  Rank-1: {:.1}%  Rank-5: {:.1}%  Rank-10: {:.1}%",
        100.0 * result.map,
        100.0 * result.rank(1),
        100.0 * result.rank(5),
        100.0 * result.rank(10)
    );

    let mut pictures = Vec::new();
    if let Some(dir) = &args.visualize {
        let t = Instant::now();
        pictures = visualize(&args, dir, &query, &gallery, &rows)?;
        println!(
            "wrote {} ranked lists to {} in {:.1}s",
            pictures.len(),
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }

    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "mAP": result.map,
            "rank1": result.rank(1),
            "rank5": result.rank(5),
            "rank10": result.rank(10),
            "cmc": result.cmc,
            "num_queries": result.num_queries,
            "num_gallery": gallery.num,
            "num_valid_queries": result.num_valid_queries,
            "num_skipped_queries": result.num_skipped_queries,
            "rerank": args.rerank,
            "pictures": pictures,
            "seconds": { "load": load_s, "rerank_prepare": rerank_s, "evaluate": eval_s, "total": start.elapsed().as_secs_f64() },
        });
        write_atomic(path, &serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing --json {}", path.display()))?;
    }
    Ok(())
}

fn resolve(root: Option<&Path>, p: &str) -> PathBuf {
    match root {
        Some(r) if Path::new(p).is_relative() => r.join(p),
        _ => PathBuf::from(p),
    }
}

fn visualize(
    args: &EvaluateArgs,
    dir: &Path,
    query: &FeatureSet,
    gallery: &FeatureSet,
    rows: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) -> anyhow::Result<Vec<String>> {
    for (set, path) in [(query, &args.query), (gallery, &args.gallery)] {
        if set.paths.is_empty() {
            bail!(
                "{} has no image paths (metadata key `paths`); --visualize needs them",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating --visualize folder {}", dir.display()))?;
    let (qpids, qcams) = labels(query, &args.query)?;
    let (gpids, gcams) = labels(gallery, &args.gallery)?;
    let count = args.num_visualize.min(query.num);
    let mut written = Vec::new();
    let mut dist = vec![0f32; gallery.num];
    for s in 0..count {
        let q = s * query.num / count.max(1);
        rows(q, 1, &mut dist);
        let ranked = top_ranked(&dist, qpids[q], qcams[q], gpids, gcams, 10);
        let list = RankedList {
            query_index: q,
            query_image: resolve(args.images.as_deref(), &query.paths[q]),
            gallery: ranked
                .iter()
                .map(|&(j, m)| (resolve(args.images.as_deref(), &gallery.paths[j]), m))
                .collect(),
        };
        let out = dir.join(format!("query_{q:05}.png"));
        draw_ranked_list(&list, &out)?;
        written.push(out.display().to_string());
    }
    Ok(written)
}
