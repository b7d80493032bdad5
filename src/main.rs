use clap::Parser;

fn main() {
    // Rust ignores SIGPIPE, so `unreid ... | head` would panic in println! ("failed printing to
    // stdout: Broken pipe"). Restore the default: a closed stdout ends the process quietly, as it
    // does for every other command-line tool. Output files are written atomically, so nothing
    // half-written is left behind.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = unreid::cli::Cli::parse();
    if let Err(err) = unreid::cli::run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
