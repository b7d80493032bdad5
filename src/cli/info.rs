//! `unreid info`: every adapter wgpu sees, the one unreid picks, and its key limits.

use crate::gpu::{list_adapters, Gpu, GpuOptions};

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Backend (vulkan, metal, dx12, gl) or adapter-name substring; default: UNREID_ADAPTER, else the best.
    #[arg(long)]
    pub adapter: Option<String>,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let adapters = list_adapters();
    println!("adapters ({}):", adapters.len());
    for a in &adapters {
        println!("  {a}");
    }
    let gpu = Gpu::new(&GpuOptions {
        adapter: args.adapter,
        ..Default::default()
    })?;
    let l = gpu.limits();
    println!("chosen: {}", gpu.summary());
    println!("limits:");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "  max_buffer_size                      {:.0} MiB",
        mib(l.max_buffer_size)
    );
    println!(
        "  max_storage_buffer_binding_size      {:.0} MiB",
        mib(l.max_storage_buffer_binding_size)
    );
    println!(
        "  max_storage_buffers_per_shader_stage {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_storage_size   {} KiB",
        l.max_compute_workgroup_storage_size / 1024
    );
    println!(
        "  max_compute_invocations_per_workgroup {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroup_size           {} x {} x {}",
        l.max_compute_workgroup_size_x,
        l.max_compute_workgroup_size_y,
        l.max_compute_workgroup_size_z
    );
    println!(
        "  max_compute_workgroups_per_dimension {}",
        l.max_compute_workgroups_per_dimension
    );
    Ok(())
}
