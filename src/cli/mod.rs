//! The `unreid` command line: one module per subcommand, each with a clap `Args` struct and a `run`.

use clap::{Parser, Subcommand};

pub mod args;
pub mod bench;
pub mod check_data;
pub mod cluster;
pub mod convert;
pub mod demo;
pub mod evaluate;
pub mod extract;
pub mod info;
pub mod synth;
pub mod train;

#[derive(Parser, Debug)]
#[command(
    name = "unreid",
    version,
    about = "Unsupervised and domain-adaptive person re-ID on any GPU"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Training-step images/s, per-phase times, conv/matmul GFLOP/s and peak memory as one JSON table.
    Bench(bench::BenchArgs),
    /// The whole pipeline on the built-in synthetic benchmark: pre-train, adapt, compare (no download).
    Demo(demo::DemoArgs),
    /// Cluster a features file into pseudo labels (DBSCAN on Jaccard/Euclidean/cosine, or k-means).
    Cluster(cluster::ClusterArgs),
    /// Convert a PyTorch checkpoint (.pth/.pt/.pth.tar: torchvision, SpCL, MMT, Cluster Contrast,
    /// fast-reid) to unreid safetensors, without Python and without running the pickle.
    Convert(convert::ConvertArgs),
    /// mAP and CMC of query features against gallery features (Market-1501 protocol).
    Evaluate(evaluate::EvaluateArgs),
    /// List GPU adapters, the one chosen, and its limits.
    Info(info::InfoArgs),
    /// L2-normalised re-ID features of a folder of images (or a dataset split) as safetensors.
    Extract(Box<extract::ExtractArgs>),
    /// Write the built-in synthetic two-domain benchmark (Market-1501 layout per domain).
    Synth(synth::Args),
    /// Scan a dataset: print its summary table and list every unreadable or truncated image.
    CheckData(check_data::Args),
    /// Train a re-ID model (source pre-training; the adaptation methods) into a run directory.
    Train(Box<train::TrainArgs>),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Info(args) => info::run(args),
        Command::Extract(args) => extract::run(*args),
        Command::Synth(args) => synth::run(args),
        Command::CheckData(args) => check_data::run(args),
        Command::Train(args) => train::run(*args),
    }
}
