//! `unreid check-data`: scans a dataset, prints its summary table and reports every unreadable image.

use super::args::DatasetArgs;
use crate::data::datasets::load;
use crate::data::decode::decode_rgb;
use crate::progress::Progress;
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Dataset root folder.
    pub dir: PathBuf,
    #[command(flatten)]
    pub dataset: DatasetArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dataset = load(&args.dataset.spec(&args.dir))?;
    print!("{}", dataset.summary_table());
    let items: Vec<_> = dataset.all_items().collect();
    let bar = Mutex::new(Progress::new("decoding", items.len() as u64, "images"));
    let mut bad: Vec<String> = items
        .par_iter()
        .filter_map(|item| {
            let result = decode_rgb(&item.path);
            bar.lock().unwrap_or_else(|p| p.into_inner()).inc(1);
            result.err().map(|e| e.to_string())
        })
        .collect();
    bar.into_inner().unwrap_or_else(|p| p.into_inner()).finish();
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
