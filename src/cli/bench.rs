//! `unreid bench`: training-step images/s, per-phase times, conv/matmul GFLOP/s and peak memory
//! as one JSON table (see `crate::bench`). Without `--arch` it runs every case of the default
//! table; with it, the one case the flags describe.

use std::path::PathBuf;

use crate::bench::{self, BenchOptions, Mode, ModelCase};
use crate::{Device, DeviceChoice};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Backend or adapter-name substring (default: UNREID_ADAPTER, else the best).
    #[arg(long)]
    pub adapter: Option<String>,
    /// One model case: its backbone (default: the whole default table).
    #[arg(long, value_parser = ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])]
    pub arch: Option<String>,
    #[arg(long, default_value_t = 32, requires = "arch", value_parser = super::args::positive())]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128, requires = "arch", value_parser = super::args::positive())]
    pub height: usize,
    #[arg(long, default_value_t = 64, requires = "arch", value_parser = super::args::positive())]
    pub width: usize,
    /// Stride of ResNet's last stage (default: 1 for resnet50, 2 otherwise, as the PyTorch yardstick).
    #[arg(long, requires = "arch")]
    pub last_stride: Option<usize>,
    /// Time training steps or inference.
    #[arg(long, value_enum, default_value = "train")]
    pub mode: Mode,
    /// Untimed steps before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Timed steps (the table gives their median).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub steps: u64,
    /// Skip the single-kernel conv2d and matmul cases.
    #[arg(long, conflicts_with = "kernels_only")]
    pub no_kernels: bool,
    /// Only the single-kernel conv2d and matmul cases (no model case).
    #[arg(long, conflicts_with = "arch")]
    pub kernels_only: bool,
    /// A matmul kernel case `MxKxN` ([M, K] x [K, N]), instead of the default 1024x1024x1024 and
    /// 2048x2048x512; repeat the flag for several (e.g. `--matmul 4096x4096x4096` on a real GPU).
    #[arg(long, value_parser = parse_matmul_dims, conflicts_with = "no_kernels")]
    pub matmul: Vec<(usize, usize, usize)>,
    /// Also write the table to this JSON file (atomically).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Instead of the table, profile the runtime: host µs per dispatch (10,000 tiny dispatches),
    /// then one training step of the --arch case (default resnet18 b8 3x128x64): dispatches,
    /// submissions, host waits, bind groups, µs per dispatch, and per-kernel GPU time from
    /// timestamp queries where the adapter has them (the report says which it has).
    #[arg(long, conflicts_with = "kernels_only")]
    pub profile: bool,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(json) = &args.json {
        super::args::check_output("--json", json)?;
    }
    let device = Device::choose(args.device, args.adapter.as_deref())?;
    let mut cases = match &args.arch {
        Some(arch) => {
            let mut case =
                ModelCase::new(arch, args.batch_size, args.height, args.width, args.mode);
            if let Some(s) = args.last_stride {
                case.last_stride = s;
            }
            vec![case]
        }
        None if args.kernels_only => Vec::new(),
        None => bench::default_cases(),
    };
    if args.profile {
        if args.arch.is_none() {
            cases = vec![ModelCase::new("resnet18", 8, 128, 64, Mode::Train)];
        }
        // At least two warm-up steps: the first makes the optimiser's moments, which take pool
        // buffers the second step's forward then has to create anew; the third step is steady.
        let report = bench::profile(&device, &cases, args.warmup.max(2), 10_000)?;
        let text = serde_json::to_string_pretty(&report)?;
        println!("{text}");
        if let Some(path) = &args.json {
            crate::io::write_atomic(path, text.as_bytes())
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        }
        return Ok(());
    }
    let opts = BenchOptions {
        warmup: args.warmup,
        steps: args.steps as usize,
        kernels: !args.no_kernels,
        matmuls: if args.matmul.is_empty() {
            bench::DEFAULT_MATMULS.to_vec()
        } else {
            args.matmul.clone()
        },
    };
    let table = bench::run(&device, &cases, &opts);
    let text = serde_json::to_string_pretty(&table)?;
    println!("{text}");
    if let Some(path) = &args.json {
        crate::io::write_atomic(path, text.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// `MxKxN` with three positive integers, e.g. `4096x4096x4096`.
fn parse_matmul_dims(text: &str) -> Result<(usize, usize, usize), String> {
    let dims: Vec<&str> = text.split('x').collect();
    let bad = || {
        format!("expected MxKxN with three positive integers (e.g. 4096x4096x4096), got {text:?}")
    };
    let [m, k, n] = dims.as_slice() else {
        return Err(bad());
    };
    let parse = |d: &str| d.parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(bad);
    Ok((parse(m)?, parse(k)?, parse(n)?))
}
