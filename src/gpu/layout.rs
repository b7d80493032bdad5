//! Bind-group layouts reflected from the WGSL with naga, once per kernel.
//!
//! The runtime binds every kernel the same way: binding 0 is the uniform parameter block (one
//! slot of the per-submission arena, selected by a dynamic offset so that a bind group can be
//! reused from one dispatch to the next), bindings 1..=n are whole storage buffers. wgpu's
//! automatic layouts cannot express the dynamic offset, so the layout is built here from what
//! the entry point actually uses (naga's `ModuleInfo`, the same analysis wgpu's automatic layout
//! uses). Knowing which storage bindings are writable also lets the runtime refuse, on the host,
//! a dispatch that binds one buffer both writable and in another binding (which the compute pass
//! would reject after the fact, spoiling the shared command stream).

use std::num::NonZeroU64;

/// One storage binding of an entry point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StorageBinding {
    /// `var<storage, read_write>`.
    pub writable: bool,
    /// The smallest buffer the shader's type accepts (bytes; one element of a runtime array).
    pub min_bytes: u64,
}

/// What one compute entry point binds in group 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EntryLayout {
    /// Size of the uniform parameter struct at binding 0 (bytes).
    pub params_bytes: u64,
    /// Bindings 1..=n in order.
    pub storage: Vec<StorageBinding>,
}

/// A shader parsed and validated by naga, for reflection.
pub(crate) struct Reflection {
    module: naga::Module,
    info: naga::valid::ModuleInfo,
}

impl Reflection {
    pub(crate) fn new(source: &str) -> Result<Reflection, String> {
        let module = naga::front::wgsl::parse_str(source).map_err(|e| e.emit_to_string(source))?;
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .map_err(|e| e.emit_to_string(source))?;
        Ok(Reflection { module, info })
    }

    /// The group-0 bindings `entry` uses. Errors when the entry does not exist or binds something
    /// the runtime cannot supply (another group, a texture, a missing uniform at binding 0, a gap).
    pub(crate) fn entry_layout(&self, entry: &str) -> Result<EntryLayout, String> {
        let index = self
            .module
            .entry_points
            .iter()
            .position(|ep| ep.name == entry && ep.stage == naga::ShaderStage::Compute)
            .ok_or_else(|| format!("no compute entry point {entry:?}"))?;
        let uses = self.info.get_entry_point(index);
        let mut found = Vec::new();
        for (handle, var) in self.module.global_variables.iter() {
            if uses[handle].is_empty() {
                continue;
            }
            let Some(binding) = &var.binding else {
                continue; // workgroup / private memory
            };
            let name = var.name.as_deref().unwrap_or("?");
            if binding.group != 0 {
                return Err(format!(
                    "{name} is in group {}; only group 0 is bound",
                    binding.group
                ));
            }
            let bytes = self.module.types[var.ty]
                .inner
                .try_size(self.module.to_ctx())
                .ok_or_else(|| format!("{name} has no fixed minimum size"))?
                as u64;
            let kind = match var.space {
                naga::AddressSpace::Uniform => None,
                naga::AddressSpace::Storage { access } => {
                    Some(access.contains(naga::StorageAccess::STORE))
                }
                other => return Err(format!("{name} is bound in address space {other:?}")),
            };
            found.push((binding.binding, kind, bytes.max(4), name.to_string()));
        }
        found.sort_by_key(|f| f.0);
        let mut params_bytes = None;
        let mut storage = Vec::new();
        for (binding, kind, bytes, name) in found {
            match (binding, kind) {
                (0, None) => params_bytes = Some(bytes),
                (b, Some(writable)) if b as usize == storage.len() + 1 => {
                    storage.push(StorageBinding {
                        writable,
                        min_bytes: bytes,
                    })
                }
                _ => {
                    return Err(format!(
                    "binding {binding} ({name}) does not fit the runtime's layout: 0 the uniform \
                         params, 1..=n storage buffers without gaps"
                ))
                }
            }
        }
        let params_bytes =
            params_bytes.ok_or("binding 0 (the uniform params) is not used by the entry point")?;
        Ok(EntryLayout {
            params_bytes,
            storage,
        })
    }
}

impl EntryLayout {
    /// The wgpu layout entries: binding 0 a uniform with a dynamic offset, then the storage buffers.
    pub(crate) fn wgpu_entries(&self, param_slot: u64) -> Vec<wgpu::BindGroupLayoutEntry> {
        let buffer = |binding, ty, dynamic, min: u64| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: dynamic,
                min_binding_size: NonZeroU64::new(min),
            },
            count: None,
        };
        let mut entries = vec![buffer(
            0,
            wgpu::BufferBindingType::Uniform,
            true,
            self.params_bytes.min(param_slot),
        )];
        for (i, s) in self.storage.iter().enumerate() {
            entries.push(buffer(
                i as u32 + 1,
                wgpu::BufferBindingType::Storage {
                    read_only: !s.writable,
                },
                false,
                s.min_bytes,
            ));
        }
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "
struct P { n: u32, m: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<f32>>;
var<workgroup> tile: array<f32, 64>;
@compute @workgroup_size(64) fn both(@builtin(global_invocation_id) g: vec3<u32>) {
    tile[g.x % 64u] = x[g.x];
    if (g.x < p.n) { y[g.x] = vec4(tile[0]); }
}
@compute @workgroup_size(64) fn only_x(@builtin(global_invocation_id) g: vec3<u32>) {
    _ = x[g.x + p.m];
}
@compute @workgroup_size(64) fn gap(@builtin(global_invocation_id) g: vec3<u32>) {
    y[g.x] = vec4(f32(p.n));
}
";

    #[test]
    fn layouts_follow_what_each_entry_uses() {
        let r = Reflection::new(SRC).unwrap();
        let both = r.entry_layout("both").unwrap();
        assert_eq!(both.params_bytes, 8);
        assert_eq!(
            both.storage,
            vec![
                StorageBinding {
                    writable: false,
                    min_bytes: 4
                },
                StorageBinding {
                    writable: true,
                    min_bytes: 16
                }
            ]
        );
        assert_eq!(r.entry_layout("only_x").unwrap().storage.len(), 1);
        let gap = r.entry_layout("gap").unwrap_err();
        assert!(gap.contains("binding 2"), "{gap}");
        assert!(r.entry_layout("nope").unwrap_err().contains("nope"));
    }

    #[test]
    fn every_shipped_entry_point_has_a_runtime_layout() {
        for (name, src) in super::super::SHADERS {
            let r = Reflection::new(src).unwrap_or_else(|e| panic!("{name}: {e}"));
            for ep in &r.module.entry_points {
                r.entry_layout(&ep.name)
                    .unwrap_or_else(|e| panic!("{name}:{}: {e}", ep.name));
            }
        }
    }
}
