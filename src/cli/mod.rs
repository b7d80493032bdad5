//! The `unreid` command line: one module per subcommand, each with a clap `Args` struct and a `run`.

use clap::{Parser, Subcommand};

pub mod extract;
pub mod info;

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
    /// List GPU adapters, the one chosen, and its limits.
    Info(info::InfoArgs),
    /// L2-normalised re-ID features of a folder of images (or a dataset split) as safetensors.
    Extract(Box<extract::ExtractArgs>),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info(args) => info::run(args),
        Command::Extract(args) => extract::run(*args),
    }
}
