//! `unreid evaluate`: mAP, mINP and CMC Rank-1/5/10 of query features against gallery features
//! (Market-1501 protocol), optionally k-reciprocal re-ranked, with optional ranked-list pictures.
//!
//! Order of work: every argument and output is checked first; then the metrics are computed,
//! printed and written to --json; the pictures (an optional output) come last and a failing
//! picture never loses the metrics.

use super::args::{check_output, open_device, positive, unit_f32};
use crate::cluster::{Backend, Features};
use crate::eval::visualize::{draw_ranked_lists, pick_queries, RankSide};
use crate::eval::{metrics, EvalResult, RerankParams, Reranker};
use crate::features::FeatureSet;
use crate::io::{shown, write_atomic};
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
    /// Re-ranking: k-reciprocal list length.
    #[arg(long, default_value_t = 20, value_parser = positive())]
    pub k1: usize,
    /// Re-ranking: query-expansion neighbours.
    #[arg(long, default_value_t = 6, value_parser = positive())]
    pub k2: usize,
    /// Re-ranking: weight of the original distance, in [0, 1].
    #[arg(long, default_value_t = 0.3, value_parser = unit_f32)]
    pub lambda: f32,
    /// Length of the CMC curve written to --json (at least 10).
    #[arg(long, default_value_t = 50, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(10..))]
    pub max_rank: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write ranked-list PNGs (query + top 10) for a few queries into this folder.
    #[arg(long)]
    pub visualize: Option<PathBuf>,
    /// Folder that relative image paths in the features files are resolved against (default:
    /// the dataset root recorded in the features file, else the current folder).
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
    #[arg(long, default_value_t = 8, value_parser = positive())]
    pub num_visualize: usize,
    /// With --visualize: draw the queries with the lowest AP first (the worst failures).
    #[arg(long, requires = "visualize")]
    pub sort_by_ap: bool,
}

fn labels<'a>(set: &'a FeatureSet, path: &Path) -> anyhow::Result<(&'a [i64], &'a [i64])> {
    let pids = set.pids.as_deref().with_context(|| {
        format!(
            "{} has no `pids` tensor; evaluation needs identities",
            shown(path)
        )
    })?;
    let camids = set.camids.as_deref().with_context(|| {
        format!(
            "{} has no `camids` tensor; evaluation needs cameras",
            shown(path)
        )
    })?;
    Ok((pids, camids))
}

/// Counts rows whose pid or camid is -1 (unknown): they are never silently evaluated.
fn warn_unknown(set: &FeatureSet, path: &Path, what: &str) {
    let (Some(pids), Some(camids)) = (&set.pids, &set.camids) else {
        return;
    };
    let unknown: Vec<usize> = (0..set.num)
        .filter(|&i| pids[i] < 0 || camids[i] < 0)
        .collect();
    if let Some(&first) = unknown.first() {
        let example = set
            .paths
            .get(first)
            .map_or(format!("row {first}"), |p| p.clone());
        eprintln!(
            "warning: {} of {} {what} rows in {} have an unknown pid or camid (-1), e.g. {example}; \
             {}",
            unknown.len(),
            set.num,
            shown(path),
            if what == "query" {
                "those queries are skipped"
            } else {
                "those gallery images are ignored as junk"
            }
        );
    }
}

pub fn run(args: EvaluateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    // Outputs first: a typo in --json or --visualize must not cost the evaluation.
    if let Some(path) = &args.json {
        check_output("--json", path)?;
    }
    if let Some(dir) = &args.visualize {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--visualize: creating folder {}", shown(dir)))?;
    }
    let query = FeatureSet::load(&args.query)?;
    let gallery = FeatureSet::load(&args.gallery)?;
    if query.dim != gallery.dim {
        bail!(
            "{} has {}-d features but {} has {}-d",
            shown(&args.query),
            query.dim,
            shown(&args.gallery),
            gallery.dim
        );
    }
    for (set, path) in [(&query, &args.query), (&gallery, &args.gallery)] {
        if set.num == 0 {
            bail!("{} holds no feature rows", shown(path));
        }
        if args.visualize.is_some() && set.paths.is_empty() {
            bail!(
                "{} has no image paths (metadata key `paths`); --visualize needs them",
                shown(path)
            );
        }
    }
    let (qpids, qcams) = labels(&query, &args.query)?;
    let (gpids, gcams) = labels(&gallery, &args.gallery)?;
    warn_unknown(&query, &args.query, "query");
    warn_unknown(&gallery, &args.gallery, "gallery");
    let qx = Features::new(&query.features, query.num, query.dim)
        .with_context(|| format!("in {}", shown(&args.query)))?;
    let gx = Features::new(&gallery.features, gallery.num, gallery.dim)
        .with_context(|| format!("in {}", shown(&args.gallery)))?;
    let load_s = start.elapsed().as_secs_f64();
    let backend = Backend::from_device(&open_device(args.device, args.adapter.as_deref())?);

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
    let result = metrics::evaluate_with((qpids, qcams), (gpids, gcams), args.max_rank, rows)?;
    let eval_s = t.elapsed().as_secs_f64();
    print_table(&result, gallery.num, args.rerank);

    let json = |pictures: &[String], picture_errors: &[String]| {
        serde_json::json!({
            "mAP": result.map,
            "mINP": result.minp,
            "rank1": result.rank(1),
            "rank5": result.rank(5),
            "rank10": result.rank(10),
            "cmc": result.cmc,
            "num_queries": result.num_queries,
            "num_gallery": gallery.num,
            "num_valid_queries": result.num_valid_queries,
            "num_skipped_queries": result.num_skipped_queries,
            "skipped": result.skipped,
            "rerank": args.rerank,
            "pictures": pictures,
            "picture_errors": picture_errors,
            "seconds": { "load": load_s, "rerank_prepare": rerank_s, "evaluate": eval_s, "total": start.elapsed().as_secs_f64() },
        })
    };
    let write_json = |value: serde_json::Value| -> anyhow::Result<()> {
        if let Some(path) = &args.json {
            write_atomic(path, &serde_json::to_vec_pretty(&value)?)
                .with_context(|| format!("writing --json {}", shown(path)))?;
            println!("wrote {}", shown(path));
        }
        Ok(())
    };
    // The main output is on disk before any picture is drawn.
    write_json(json(&[], &[]))?;

    let Some(dir) = &args.visualize else {
        return Ok(());
    };
    let t = Instant::now();
    let (pictures, errors) = visualize(&args, dir, &query, &gallery, &result, &rows);
    println!(
        "wrote {} ranked lists to {} in {:.1}s",
        pictures.len(),
        shown(dir),
        t.elapsed().as_secs_f64()
    );
    write_json(json(&pictures, &errors))?;
    if let Some(first) = errors.first() {
        bail!(
            "{} of {} ranked-list pictures failed (the metrics{} were written); first: {first}",
            errors.len(),
            errors.len() + pictures.len(),
            if args.json.is_some() {
                " and --json"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v))
}

/// The table re-ID toolboxes print: mAP, mINP, Rank-1/5/10, and the query counts.
fn print_table(result: &EvalResult, num_gallery: usize, reranked: bool) {
    println!(
        "{} queries x {num_gallery} gallery{}: {} valid, {} skipped",
        result.num_queries,
        if reranked { " (re-ranked)" } else { "" },
        result.num_valid_queries,
        result.num_skipped_queries,
    );
    if result.num_skipped_queries > 0 {
        println!("  skipped: {}", result.skipped);
    }
    println!("  ----------------------------------------------------");
    println!("  mAP      mINP     Rank-1   Rank-5   Rank-10");
    println!(
        "  {:<8} {:<8} {:<8} {:<8} {:<8}",
        pct(Some(result.map)),
        pct(Some(result.minp)),
        pct(result.rank(1)),
        pct(result.rank(5)),
        pct(result.rank(10))
    );
    println!("  ----------------------------------------------------");
}

fn resolve(root: Option<&Path>, p: &str) -> PathBuf {
    match root {
        Some(r) if Path::new(p).is_relative() => r.join(p),
        _ => PathBuf::from(p),
    }
}

/// Draws the ranked lists; returns the files written and one message per failed picture.
fn visualize(
    args: &EvaluateArgs,
    dir: &Path,
    query: &FeatureSet,
    gallery: &FeatureSet,
    result: &EvalResult,
    rows: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
) -> (Vec<String>, Vec<String>) {
    let (Some(qpids), Some(qcams), Some(gpids), Some(gcams)) = (
        query.pids.as_deref(),
        query.camids.as_deref(),
        gallery.pids.as_deref(),
        gallery.camids.as_deref(),
    ) else {
        return (Vec::new(), vec!["features without pids/camids".into()]);
    };
    // --images, else the dataset root each features file records, else the current folder.
    let qroot = args.images.as_deref().or(query.image_root());
    let groot = args.images.as_deref().or(gallery.image_root());
    let qpaths: Vec<PathBuf> = query.paths.iter().map(|p| resolve(qroot, p)).collect();
    let gpaths: Vec<PathBuf> = gallery.paths.iter().map(|p| resolve(groot, p)).collect();
    let picks = pick_queries(result, args.num_visualize, args.sort_by_ap);
    let (written, errors) = draw_ranked_lists(
        &picks,
        &RankSide {
            paths: &qpaths,
            pids: qpids,
            camids: qcams,
        },
        &RankSide {
            paths: &gpaths,
            pids: gpids,
            camids: gcams,
        },
        result,
        rows,
        dir,
    );
    (
        written.iter().map(|p| p.display().to_string()).collect(),
        errors,
    )
}
