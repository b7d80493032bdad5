//! The `unreid` command line: one module per subcommand, each with a clap `Args` struct and a `run`.

use clap::{Parser, Subcommand};

pub mod check_data;
pub mod info;
pub mod synth;

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
    /// Write the built-in synthetic two-domain benchmark (Market-1501 layout per domain).
    Synth(synth::Args),
    /// Scan a dataset: print its summary table and list every unreadable or truncated image.
    CheckData(check_data::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info(args) => info::run(args),
        Command::Synth(args) => synth::run(args),
        Command::CheckData(args) => check_data::run(args),
    }
}
