//! Adapter discovery and choice: discrete > integrated > virtual > CPU, or what the user names.

use super::GpuError;

/// What a user needs to know about one adapter (`unreid info`).
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
}

impl AdapterSummary {
    pub(crate) fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        AdapterSummary {
            name: info.name,
            backend: info.backend,
            device_type: info.device_type,
            driver: info.driver,
            driver_info: info.driver_info,
        }
    }

    /// True for adapters that run on the host CPU (lavapipe, WARP, SwiftShader).
    pub fn is_cpu(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}

impl std::fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:?}, {:?}, driver {} {})",
            self.name, self.backend, self.device_type, self.driver, self.driver_info
        )
    }
}

/// Lower is better: discrete > integrated > virtual > CPU > other.
fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// GL exposes the same hardware with fewer features; prefer the native APIs.
fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

pub(crate) fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu can see, in preference order.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let instance = instance();
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    sort_adapters(&mut adapters);
    adapters.iter().map(AdapterSummary::of).collect()
}

fn sort_adapters(adapters: &mut [wgpu::Adapter]) {
    adapters.sort_by_key(|a| {
        let info = a.get_info();
        (type_rank(info.device_type), backend_rank(info.backend))
    });
}

/// Does `wanted` (a backend name or a name substring, case-insensitive) describe this adapter?
fn matches(wanted: &str, info: &wgpu::AdapterInfo) -> bool {
    let wanted = wanted.to_ascii_lowercase();
    let backend = match info.backend {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        _ => "noop",
    };
    wanted == backend || info.name.to_ascii_lowercase().contains(&wanted)
}

/// Picks the adapter: `wanted` (from `--adapter`) first, then `UNREID_ADAPTER`, else the best one.
pub(crate) fn choose(
    instance: &wgpu::Instance,
    wanted: Option<&str>,
) -> Result<wgpu::Adapter, GpuError> {
    let mut adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    // wgpu's no-op backend is not a device anyone can compute on.
    adapters.retain(|a| a.get_info().backend != wgpu::Backend::Noop);
    if adapters.is_empty() {
        return Err(GpuError::NoAdapter {
            detail: "wgpu enumerated no Vulkan, Metal, DX12 or GL adapter".into(),
        });
    }
    sort_adapters(&mut adapters);
    let env_choice = std::env::var("UNREID_ADAPTER")
        .ok()
        .filter(|s| !s.is_empty());
    let (wanted, source_of_choice) = match (wanted, env_choice) {
        (Some(w), _) => (Some(w.to_string()), "--adapter"),
        (None, Some(e)) => (Some(e), "UNREID_ADAPTER"),
        (None, None) => (None, ""),
    };
    match wanted {
        None => Ok(adapters.swap_remove(0)),
        Some(w) => match adapters.iter().position(|a| matches(&w, &a.get_info())) {
            Some(i) => Ok(adapters.swap_remove(i)),
            None => Err(GpuError::AdapterNotFound {
                wanted: w,
                source_of_choice: source_of_choice.into(),
                available: adapters
                    .iter()
                    .map(|a| AdapterSummary::of(a).to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        },
    }
}
