//! Shared by the criterion benches: environment knobs, the devices to time, a timing loop.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use unreid::Device;

/// `name` from the environment as a number, else `default` (bench sizes; not user input).
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The GPU adapter (unless UNREID_BENCH_GPU=0) and the CPU device (unless UNREID_BENCH_CPU=0).
pub fn devices() -> Vec<(String, Device)> {
    let mut out = Vec::new();
    if env_usize("UNREID_BENCH_GPU", 1) != 0 {
        match Device::gpu() {
            Ok(g) => out.push((format!("gpu ({})", g.as_gpu().unwrap().summary().name), g)),
            Err(e) => eprintln!("no GPU adapter: {e}"),
        }
    }
    if env_usize("UNREID_BENCH_CPU", 1) != 0 {
        out.push(("cpu".into(), Device::Cpu));
    }
    out
}

/// Runs `f` (which must sync) `iters` times; the total wall time.
pub fn timed(iters: u64, f: &mut dyn FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed()
}
