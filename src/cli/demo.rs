//! `unreid demo`: the whole pipeline on the built-in synthetic benchmark (see `crate::demo`).

use std::path::PathBuf;

use anyhow::Context;

use crate::demo::{run_demo, DemoOptions, ALL_METHODS, DEFAULT_METHODS};
use crate::{Device, DeviceChoice};

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where the benchmark, every run and the summary go (re-running resumes what is unfinished).
    #[arg(long, default_value = "demo")]
    pub out: PathBuf,
    /// Short schedules and source + SpCL only (a few minutes on a laptop CPU).
    #[arg(long)]
    pub quick: bool,
    /// Comma-separated methods, or `all` (default: spcl,mmt,cluster-contrast; with --quick: spcl).
    #[arg(long, value_delimiter = ',')]
    pub methods: Vec<String>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Backend or adapter-name substring.
    #[arg(long, env = "UNREID_ADAPTER")]
    pub adapter: Option<String>,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let methods: Vec<String> = if args.methods.iter().any(|m| m == "all") {
        ALL_METHODS.iter().map(|s| s.to_string()).collect()
    } else if args.methods.is_empty() {
        if args.quick {
            vec!["spcl".into()]
        } else {
            DEFAULT_METHODS.iter().map(|s| s.to_string()).collect()
        }
    } else {
        args.methods.clone()
    };
    let device = Device::choose(args.device, args.adapter.as_deref()).context("--device")?;
    println!(
        "unreid demo: device {device}, output {}",
        args.out.display()
    );
    run_demo(&DemoOptions {
        out: args.out,
        quick: args.quick,
        methods,
        device,
    })?;
    Ok(())
}
