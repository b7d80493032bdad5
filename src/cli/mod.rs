//! The `unreid` command line: one module per subcommand, each with a clap `Args` struct and a `run`.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "unreid", version, about = "Unsupervised and domain-adaptive person re-ID on any GPU")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {}
}
