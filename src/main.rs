use clap::Parser;

fn main() {
    let cli = unreid::cli::Cli::parse();
    if let Err(err) = unreid::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
