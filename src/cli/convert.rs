//! `unreid convert IN OUT.safetensors`: a PyTorch checkpoint (or any weights file unreid reads)
//! to an unreid safetensors file with mapped names and provenance metadata, so it loads anywhere
//! without the PyTorch reader (`nn::weights::convert`).

use std::path::PathBuf;

use crate::nn::weights::convert;

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Input weights: .pth / .pt / .pth.tar (PyTorch zip or legacy format) or safetensors,
    /// detected by content.
    pub input: PathBuf,
    /// Output safetensors file (written atomically).
    pub output: PathBuf,
    /// Replace OUTPUT if it exists.
    #[arg(long)]
    pub overwrite: bool,
}

pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    super::args::check_output("OUTPUT", &args.output)?;
    let ckpt = convert(&args.input, &args.output, args.overwrite)?;
    eprintln!("read {}: {}", args.input.display(), ckpt.describe());
    for note in &ckpt.layout.notes {
        eprintln!("warning: {note}");
    }
    if !ckpt.extras.is_empty() {
        let extras: Vec<String> = ckpt
            .extras
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        eprintln!(
            "other entries (kept in the metadata): {}",
            extras.join(", ")
        );
    }
    let bn = match ckpt.domains() {
        1 => "plain BN".to_string(),
        d => format!("{d} domain-specific BN sets"),
    };
    println!(
        "wrote {} tensors ({}, {bn}) to {}",
        ckpt.tensors.len(),
        ckpt.arch()
            .unwrap_or_else(|| "architecture not recognised".into()),
        args.output.display()
    );
    Ok(())
}
