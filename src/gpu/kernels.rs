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

    pub(crate) fn cache_key(&self) -> (String, Vec<u64>) {
        let mut key = format!("{}:{}", self.shader, self.entry);
        let mut values = Vec::with_capacity(self.constants.len());
        for (name, value) in &self.constants {
            key.push(':');
            key.push_str(name);
            values.push(value.to_bits());
        }
        (key, values)
    }
}
