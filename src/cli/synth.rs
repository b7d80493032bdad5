//! `unreid synth`: writes the built-in synthetic two-domain benchmark.

use crate::data::synth::{write_benchmark, SynthConfig};
use crate::eval::hardness::measure_hardness;
use crate::io::shown;
use crate::progress::Progress;
use anyhow::Context;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Output folder; the domains go to OUT/source and OUT/target (Market-1501 layout each).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Identities per domain (half train, half test).
    #[arg(long, default_value_t = 128, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(4..=9999))]
    pub ids: usize,
    /// Cameras per domain (Market names have one camera digit).
    #[arg(long, default_value_t = 6, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=9))]
    pub cameras: usize,
    /// Image size as HxW.
    #[arg(long, default_value = "128x64", value_parser = parse_size)]
    pub size: (usize, usize),
    /// Fewest and most images per identity, as MIN-MAX.
    #[arg(long, default_value = "8-12", value_parser = parse_range)]
    pub images_per_id: (usize, usize),
    /// Replace the benchmark in a non-empty OUT (OUT/source, OUT/target, OUT/synth.json).
    #[arg(long, alias = "force")]
    pub overwrite: bool,
    /// Also measure how hard the benchmark is (colour-histogram retrieval within and across domains).
    #[arg(long)]
    pub stats: bool,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("--size {s:?}: expected HxW, e.g. 128x64"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("--size {s:?}: {v:?} is not a number"))
    };
    Ok((num(h)?, num(w)?))
}

fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("--images-per-id {s:?}: expected MIN-MAX, e.g. 8-12"))?;
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("--images-per-id {s:?}: {v:?} is not a number"))
    };
    Ok((num(a)?, num(b)?))
}

impl Args {
    pub fn config(&self) -> SynthConfig {
        SynthConfig {
            seed: self.seed,
            ids: self.ids,
            cameras: self.cameras,
            height: self.size.0,
            width: self.size.1,
            images_per_id: self.images_per_id,
            ..SynthConfig::default()
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = args.config();
    cfg.validate()?;
    let expected = crate::data::synth::planned_images(&cfg);
    let bar = Mutex::new(Progress::new("rendering", expected as u64, "images"));
    let start = std::time::Instant::now();
    let written = write_benchmark(&cfg, &args.out, args.overwrite, &|| {
        bar.lock().unwrap_or_else(|p| p.into_inner()).inc(1)
    })
    .with_context(|| format!("writing the synthetic benchmark to {}", shown(&args.out)))?;
    bar.into_inner().unwrap_or_else(|p| p.into_inner()).finish();
    println!(
        "wrote {written} images ({} ids per domain, {} cameras, {}x{}) to {} in {:.1} s",
        cfg.ids,
        cfg.cameras,
        cfg.height,
        cfg.width,
        shown(&args.out),
        start.elapsed().as_secs_f64()
    );
    for domain in crate::data::synth::Domain::BOTH {
        let spec = crate::data::DatasetSpec::new(
            args.out.join(domain.dir_name()),
            crate::data::Layout::Market1501,
        );
        let ds = crate::data::datasets::load(&spec)?;
        print!("{}", ds.summary_table());
    }
    if args.stats {
        let r = measure_hardness(&cfg)?;
        let pct =
            |(m, r1): (f64, f64)| format!("mAP {:5.1}%  rank-1 {:5.1}%", 100.0 * m, 100.0 * r1);
        println!("colour-histogram retrieval (a training-free hardness probe):");
        println!("  source, raw histograms          {}", pct(r.source));
        println!("  target, raw histograms          {}", pct(r.target));
        println!(
            "  source, metric learned on source {}",
            pct(r.source_with_source_metric)
        );
        println!(
            "  target, metric learned on source {}",
            pct(r.target_with_source_metric)
        );
        println!(
            "  target, metric learned on target {}",
            pct(r.target_with_target_metric)
        );
        println!(
            "  domain told apart by nearest centroid: {:.1}% of test images",
            100.0 * r.domain_accuracy
        );
    }
    Ok(())
}
