//! The WGSL sources, compiled into the binary, and the handle ops use to name a kernel.

/// Every shader file in `shaders/`, by name. A test checks this list against the folder.
pub const SHADERS: &[(&str, &str)] = &[
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "matmul_subgroup",
        include_str!("../../shaders/matmul_subgroup.wgsl"),
    ),
    ("shape", include_str!("../../shaders/shape.wgsl")),
    ("index", include_str!("../../shaders/index.wgsl")),
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    ("batchnorm", include_str!("../../shaders/batchnorm.wgsl")),
    ("pool", include_str!("../../shaders/pool.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
    ("losses", include_str!("../../shaders/losses.wgsl")),
    ("memory", include_str!("../../shaders/memory.wgsl")),
    ("topk", include_str!("../../shaders/topk.wgsl")),
];

pub(crate) fn source(shader: &str) -> Option<&'static str> {
    SHADERS
        .iter()
        .find(|(name, _)| *name == shader)
        .map(|(_, src)| *src)
}

/// One compute pipeline: a shader file, an entry point and its pipeline-overridable constants.
/// Pipelines are compiled once per distinct `Kernel` and cached.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub shader: &'static str,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, f64)>,
}

impl Kernel {
    pub fn new(shader: &'static str, entry: &'static str) -> Self {
        Kernel {
            shader,
            entry,
            constants: Vec::new(),
        }
    }

    pub fn with(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        self.constants.push((name, value.into()));
        self
    }

    /// A hash of everything that tells two pipelines apart (shader, entry, constants by bit
    /// pattern), computed without allocating: the pipeline cache is probed on every dispatch.
    pub(crate) fn key_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.shader.hash(&mut h);
        self.entry.hash(&mut h);
        for (name, value) in &self.constants {
            name.hash(&mut h);
            value.to_bits().hash(&mut h);
        }
        h.finish()
    }

    /// Same pipeline: equal names and constants bit for bit (so -0.0 and NaN constants are exact).
    pub(crate) fn same_pipeline(&self, other: &Kernel) -> bool {
        self.shader == other.shader
            && self.entry == other.entry
            && self.constants.len() == other.constants.len()
            && self
                .constants
                .iter()
                .zip(&other.constants)
                .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits())
    }
}
