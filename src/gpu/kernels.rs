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

/// Most pipeline-overridable constants one kernel may set.
const MAX_CONSTANTS: usize = 8;

/// One compute pipeline: a shader file, an entry point and its pipeline-overridable constants.
/// Pipelines are compiled once per distinct `Kernel` and cached. Every dispatch builds one, so it
/// allocates nothing: the constants live inline, and the hash the pipeline cache is probed with
/// is kept up to date as they are added.
#[derive(Clone)]
pub struct Kernel {
    pub shader: &'static str,
    pub entry: &'static str,
    constants: [(&'static str, f64); MAX_CONSTANTS],
    len: usize,
    hash: u64,
}

/// One step of the key hash: a multiply-rotate mix (the runtime's caches take ids and names of
/// our own kernels, not attacker input).
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// `s` mixed into `h`, eight bytes at a time, then its length.
fn mix_str(mut h: u64, s: &str) -> u64 {
    let mut chunks = s.as_bytes().chunks_exact(8);
    for c in &mut chunks {
        h = mix(h, u64::from_le_bytes(c.try_into().expect("8 bytes")));
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(mix(h, u64::from_le_bytes(tail)), s.len() as u64)
}

impl Kernel {
    pub fn new(shader: &'static str, entry: &'static str) -> Self {
        Kernel {
            shader,
            entry,
            constants: [("", 0.0); MAX_CONSTANTS],
            len: 0,
            hash: mix_str(mix_str(0, shader), entry),
        }
    }

    /// Sets the pipeline-overridable constant `name`. Panics past 8 constants (a fixed property
    /// of the calling op, not of its input).
    pub fn with(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        assert!(
            self.len < MAX_CONSTANTS,
            "{}:{} sets more than {MAX_CONSTANTS} pipeline constants",
            self.shader,
            self.entry
        );
        let value = value.into();
        self.constants[self.len] = (name, value);
        self.len += 1;
        self.hash = mix(mix_str(self.hash, name), value.to_bits());
        self
    }

    /// The pipeline-overridable constants, in the order they were set.
    pub fn constants(&self) -> &[(&'static str, f64)] {
        &self.constants[..self.len]
    }

    /// A hash of everything that tells two pipelines apart (shader, entry, constants by bit
    /// pattern), kept as the kernel is built: the pipeline cache is probed on every dispatch.
    pub(crate) fn key_hash(&self) -> u64 {
        self.hash
    }

    /// Same pipeline: equal names and constants bit for bit (so -0.0 and NaN constants are exact).
    pub(crate) fn same_pipeline(&self, other: &Kernel) -> bool {
        self.shader == other.shader
            && self.entry == other.entry
            && self.len == other.len
            && self
                .constants()
                .iter()
                .zip(other.constants())
                .all(|(a, b)| a.0 == b.0 && a.1.to_bits() == b.1.to_bits())
    }
}

impl PartialEq for Kernel {
    fn eq(&self, other: &Kernel) -> bool {
        self.shader == other.shader
            && self.entry == other.entry
            && self.constants() == other.constants()
    }
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kernel")
            .field("shader", &self.shader)
            .field("entry", &self.entry)
            .field("constants", &self.constants())
            .finish()
    }
}
