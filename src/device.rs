//! Where tensors live: a wgpu adapter, or the CPU reference (f32, or f64 for gradient checks).

use std::sync::{Arc, Mutex};

use crate::gpu::{Gpu, GpuOptions};
use crate::Result;

#[derive(Clone)]
pub enum Device {
    /// Every op runs its WGSL kernel on this adapter.
    Gpu(Arc<Gpu>),
    /// Every op runs its `src/cpu` reference in f32 (rayon).
    Cpu,
    /// The same references in f64: the ground truth of numeric gradient checks.
    CpuF64,
}

/// Which device `--device` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// A real GPU when one exists, else the CPU device (with a one-line notice).
    Auto,
    /// wgpu, even on a CPU adapter such as lavapipe; an error when there is no adapter.
    Gpu,
    /// The CPU reference device.
    Cpu,
}

impl Device {
    /// Opens the chosen adapter (see `GpuOptions`).
    pub fn gpu_with(options: &GpuOptions) -> Result<Device> {
        Ok(Device::Gpu(Gpu::new(options)?))
    }

    /// The default adapter, opened once per process and shared (tests and the CLI use this).
    pub fn gpu() -> Result<Device> {
        static SHARED: Mutex<Option<Arc<Gpu>>> = Mutex::new(None);
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if shared.is_none() {
            *shared = Some(Gpu::new(&GpuOptions::default())?);
        }
        Ok(Device::Gpu(shared.as_ref().unwrap().clone()))
    }

    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// Resolves `--device`: `auto` takes a real GPU if there is one, otherwise the CPU device.
    pub fn choose(choice: DeviceChoice, adapter: Option<&str>) -> Result<Device> {
        let options = GpuOptions {
            adapter: adapter.map(str::to_string),
            ..Default::default()
        };
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Gpu => Device::gpu_with(&options),
            DeviceChoice::Auto => match Gpu::new(&options) {
                Ok(gpu) if !gpu.summary().is_cpu() => Ok(Device::Gpu(gpu)),
                Ok(gpu) => {
                    eprintln!(
                        "note: the only adapter is a CPU emulation ({}); using the faster CPU device \
                         (--device gpu forces it)",
                        gpu.summary().name
                    );
                    Ok(Device::Cpu)
                }
                Err(e) => {
                    eprintln!("note: no GPU adapter ({e}); using the CPU device");
                    Ok(Device::Cpu)
                }
            },
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Device::Gpu(_))
    }

    pub fn as_gpu(&self) -> Option<&Arc<Gpu>> {
        match self {
            Device::Gpu(g) => Some(g),
            _ => None,
        }
    }

    pub fn same_as(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Gpu(a), Device::Gpu(b)) => Arc::ptr_eq(a, b),
            (Device::Cpu, Device::Cpu) | (Device::CpuF64, Device::CpuF64) => true,
            _ => false,
        }
    }

    /// Waits for all recorded GPU work (a no-op on the CPU).
    pub fn sync(&self) -> Result<()> {
        if let Device::Gpu(g) = self {
            g.sync()?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Gpu(g) => write!(f, "gpu:{}", g.summary().name),
            Device::Cpu => write!(f, "cpu"),
            Device::CpuF64 => write!(f, "cpu-f64"),
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}
