//! `unreid check-data`: scans a dataset, prints its summary table and reports every unreadable image.

use crate::data::datasets::{load, DatasetSpec, Layout, ListFiles};
use crate::data::decode::decode_rgb;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Dataset root folder.
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    pub layout: Layout,
    /// Train list of the generic layout (`relative/path pid camid` per line, paths relative to DIR).
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Query list of the generic layout.
    #[arg(long)]
    pub query_list: Option<PathBuf>,
    /// Gallery list of the generic layout.
    #[arg(long)]
    pub gallery_list: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let spec = DatasetSpec {
        root: args.dir.clone(),
        layout: args.layout,
        lists: ListFiles {
            train: args.list,
            query: args.query_list,
            gallery: args.gallery_list,
        },
        domain: 0,
    };
    let dataset = load(&spec)?;
    print!("{}", dataset.summary_table());
    let items: Vec<_> = dataset.all_items().collect();
    let bar = ProgressBar::new(items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("decoding [{bar:40}] {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut bad: Vec<String> = items
        .par_iter()
        .filter_map(|item| {
            let result = decode_rgb(&item.path);
            bar.inc(1);
            result.err().map(|e| e.to_string())
        })
        .collect();
    bar.finish_and_clear();
    bad.sort();
    for message in &bad {
        println!("{message}");
    }
    if bad.is_empty() {
        println!("all {} images decode", items.len());
        Ok(())
    } else {
        anyhow::bail!(
            "{} of {} images are unreadable or truncated (listed above)",
            bad.len(),
            items.len()
        )
    }
}
