//! The GPU runtime: one `Gpu` per opened adapter.
//!
//! Ops never submit. Dispatches are recorded into one shared compute pass of one shared command
//! encoder (copies and clears end the pass and go into the same encoder, in stream order), and
//! the stream goes out in slices: a `queue.submit` every [`SUBMIT_SLICE`] dispatches, so the device
//! starts on the first part of a step while the host records the rest, and at every sync point (a
//! read-back or `sync()`).
//!
//! Recording is cheap because nothing is built per dispatch: pipelines are found by a hash of the
//! kernel (no string formatting), their bind-group layouts are reflected from the WGSL with naga
//! once per kernel, and bind groups are cached by (pipeline, buffer ids): the parameter block is
//! bound with a dynamic offset into a per-submission uniform arena, and the pool hands back the
//! same buffers every step, so a training step's bind groups are built once.
//!
//! A shared pass only rejects a command after the fact, for the whole encoder, which would spoil
//! a submission that other threads sharing the device (the tests of one binary) have commands in.
//! So everything a pass could reject is checked before recording: on the host (workgroup counts,
//! the number of buffers the entry point binds, buffers from another device, buffers smaller than
//! the shader's type, one buffer bound writable and in another binding of the same dispatch), and
//! in the caller's own thread-local error scope whenever something new is created (a pipeline, a
//! bind group not cached yet). An invalid dispatch is therefore that caller's `Err` and never
//! enters the stream.

mod adapter;
mod error;
pub mod kernels;
mod layout;
mod pool;

pub use adapter::{list_adapters, AdapterSummary};
pub use error::GpuError;
pub use kernels::{Kernel, SHADERS};

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use layout::{EntryLayout, Reflection};
use pool::{size_class, BufferPool};

/// Dispatches recorded before the stream is submitted. Small enough that the device starts early
/// in a step, large enough that the cost of a submission (tens of µs) is spread thin.
pub const SUBMIT_SLICE: usize = 128;
/// Each dispatch's parameters occupy one slot of the uniform arena (the alignment uniform offsets need).
const PARAM_SLOT: usize = 256;
/// Largest parameter block one dispatch may pass.
pub const MAX_PARAM_BYTES: usize = PARAM_SLOT;
/// Bind groups of dispatches with more buffers than this are not cached (none of ours has; the
/// most is multi-tensor Adam's 28).
const MAX_CACHED_BINDINGS: usize = 28;
/// Bind groups kept per cache generation; the older generation is dropped when the newer fills.
const BIND_GROUP_GENERATION: usize = 4096;

/// How to open the GPU.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Backend name (`vulkan`, `metal`, `dx12`, `gl`) or adapter-name substring; else `UNREID_ADAPTER`, else best.
    pub adapter: Option<String>,
    /// Fill every newly handed-out buffer with NaN, so a kernel that skips an element is caught by tests.
    pub poison: bool,
    /// Lowers the binding limit the runtime enforces (bytes, see [`Gpu::max_binding_bytes`]) below
    /// the adapter's own, so tests exercise the ops' splitting on small tensors and a big adapter
    /// can rehearse a small one's limits. None: the environment variable
    /// `UNREID_MAX_BINDING_BYTES` (a byte count), else the adapter's limit. A value above the
    /// adapter's limit changes nothing; 0 or an unparsable value is an error.
    pub max_binding_bytes: Option<u64>,
    /// Caps the limits the device is requested with: each is the adapter's or this one's,
    /// whichever is worse (`wgpu::Limits::or_worse_values_from`). wgpu validates every pipeline
    /// against the requested limits, so a large adapter can rehearse a small one: with
    /// `Some(wgpu::Limits::default())`, WebGPU's baseline (8 storage buffers per shader stage,
    /// 16 KiB of workgroup storage, 256 invocations per workgroup, 128 MiB bindings, as browsers
    /// and many mobile adapters give), every kernel the ops pick must fit that adapter. The ops
    /// read the capped limits ([`Gpu::limits`]) to choose their kernels. None: the adapter's own.
    pub limits_cap: Option<wgpu::Limits>,
    /// Which kind of adapter the ops shape their kernels for (workgroup sizes, elements per
    /// invocation; see [`Gpu::cpu_shapes`]). `ByAdapter` (the default): by the adapter's type.
    /// Tests open lavapipe with `Gpu` so CI also runs the shapes real GPUs get.
    pub kernel_shapes: KernelShapes,
}

/// The kernel shapes the ops choose ([`GpuOptions::kernel_shapes`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelShapes {
    /// CPU-adapter shapes on CPU adapters (lavapipe, WARP, SwiftShader), GPU shapes elsewhere.
    #[default]
    ByAdapter,
    /// The shapes for GPUs, whatever the adapter.
    Gpu,
    /// The shapes for CPU adapters, whatever the adapter.
    CpuAdapter,
}

/// Counters the runtime keeps (cumulative since the device opened); tests and `unreid bench
/// --profile` read them to check batching, pooling and the cost of recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GpuStats {
    /// `queue.submit` calls.
    pub submissions: u64,
    /// Kernel dispatches recorded.
    pub dispatches: u64,
    pub pipelines_compiled: u64,
    pub buffers_created: u64,
    pub pool_hits: u64,
    /// Buffers copied back to the host.
    pub readbacks: u64,
    /// Times the host waited for the device (syncs and read-backs).
    pub host_waits: u64,
    /// Bind groups built (a dispatch whose bind group was cached builds none).
    pub bind_groups_created: u64,
    /// Dispatches whose bind group came from the cache.
    pub bind_group_hits: u64,
    /// Host time spent inside `dispatch` recording (nanoseconds), not counting the slice
    /// submissions it triggers: the CPU cost of recording.
    pub record_ns: u64,
    /// Host time spent in `queue.submit` and encoding the stream (nanoseconds). On some drivers
    /// (lavapipe) a submission also waits for earlier work, so this can include device time.
    pub submit_ns: u64,
}

impl GpuStats {
    /// The counts of `self` since `earlier` (field by field).
    pub fn since(&self, earlier: &GpuStats) -> GpuStats {
        GpuStats {
            submissions: self.submissions - earlier.submissions,
            dispatches: self.dispatches - earlier.dispatches,
            pipelines_compiled: self.pipelines_compiled - earlier.pipelines_compiled,
            buffers_created: self.buffers_created - earlier.buffers_created,
            pool_hits: self.pool_hits - earlier.pool_hits,
            readbacks: self.readbacks - earlier.readbacks,
            host_waits: self.host_waits - earlier.host_waits,
            bind_groups_created: self.bind_groups_created - earlier.bind_groups_created,
            bind_group_hits: self.bind_group_hits - earlier.bind_group_hits,
            record_ns: self.record_ns - earlier.record_ns,
            submit_ns: self.submit_ns - earlier.submit_ns,
        }
    }

    /// Host microseconds of recording per dispatch (0 when nothing was dispatched).
    pub fn record_us_per_dispatch(&self) -> f64 {
        if self.dispatches == 0 {
            0.0
        } else {
            self.record_ns as f64 / 1e3 / self.dispatches as f64
        }
    }
}

#[derive(Default)]
struct Counters {
    submissions: AtomicU64,
    dispatches: AtomicU64,
    pipelines_compiled: AtomicU64,
    buffers_created: AtomicU64,
    pool_hits: AtomicU64,
    readbacks: AtomicU64,
    host_waits: AtomicU64,
    bind_groups_created: AtomicU64,
    bind_group_hits: AtomicU64,
    record_ns: AtomicU64,
    submit_ns: AtomicU64,
}

/// Which timestamp queries the device has (`unreid bench --profile` says which it used).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampSupport {
    /// No `TIMESTAMP_QUERY`: no GPU times.
    None,
    /// `TIMESTAMP_QUERY` only (pass boundaries): not enough to time single kernels.
    PassBoundaries,
    /// `TIMESTAMP_QUERY_INSIDE_PASSES`: every dispatch is timed.
    InsidePasses,
}

/// GPU time of one kernel (shader:entry, all its pipeline-constant variants together), summed
/// over the dispatches recorded while profiling.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub dispatches: u64,
    /// Sum of (end - start) timestamps around each dispatch, in milliseconds.
    pub gpu_ms: f64,
}

/// A multiply-rotate hash for the small fixed keys of the caches (ids, not attacker input).
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(v as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A compiled kernel with its reflected layout.
struct Pipeline {
    id: u32,
    kernel: Kernel,
    /// `shader:entry`, for errors and the profile.
    name: Arc<str>,
    pipeline: wgpu::ComputePipeline,
    bind_layout: wgpu::BindGroupLayout,
    layout: EntryLayout,
}

#[derive(Default)]
struct PipelineCache {
    by_hash: FastMap<u64, Vec<Arc<Pipeline>>>,
    count: u32,
}

/// A shader module with its naga reflection.
struct Shader {
    module: wgpu::ShaderModule,
    reflection: Reflection,
}

/// Key of a cached bind group: the pipeline and the ids of the buffers in binding order (the
/// unused tail of `ids` is zero).
#[derive(Clone, Copy, PartialEq, Eq)]
struct BindKey {
    pipeline: u32,
    len: u8,
    ids: [u64; MAX_CACHED_BINDINGS],
}

impl Hash for BindKey {
    /// The pipeline and the ids in use only (most dispatches bind 2-4 of the 28 slots).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(((self.pipeline as u64) << 8) | self.len as u64);
        for &id in &self.ids[..self.len as usize] {
            state.write_u64(id);
        }
    }
}

/// Bind groups by key, in two generations: lookups promote from the older one, and when the newer
/// one fills, the older is dropped (so the cache stays bounded when shapes keep changing, and
/// entries of buffers the pool freed disappear).
#[derive(Default)]
struct BindGroupCache {
    current: FastMap<BindKey, wgpu::BindGroup>,
    previous: FastMap<BindKey, wgpu::BindGroup>,
}

impl BindGroupCache {
    fn get(&mut self, key: &BindKey) -> Option<wgpu::BindGroup> {
        if let Some(bg) = self.current.get(key) {
            return Some(bg.clone());
        }
        let bg = self.previous.remove(key)?;
        self.insert(*key, bg.clone());
        Some(bg)
    }

    fn insert(&mut self, key: BindKey, bg: wgpu::BindGroup) {
        if self.current.len() >= BIND_GROUP_GENERATION {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, bg);
    }

    fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }
}

/// Timestamp queries around every dispatch of the current slice.
struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Kernel name of each dispatch of the slice, in order (queries 2i and 2i+1).
    slice: Vec<Arc<str>>,
    totals: HashMap<Arc<str>, (u64, f64)>,
    period_ns: f64,
}

/// Commands recorded since the last submission.
struct Stream {
    /// The open compute pass of `encoder` (declared first: it must end before the encoder goes).
    pass: Option<wgpu::ComputePass<'static>>,
    /// Pipeline last set on `pass`.
    pass_pipeline: Option<u32>,
    encoder: Option<wgpu::CommandEncoder>,
    params: Vec<u8>,
    dispatches: usize,
    bind_groups: BindGroupCache,
    profiler: Option<Profiler>,
}

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    limits: wgpu::Limits,
    features: wgpu::Features,
    /// Smallest subgroup size, when the device was opened with subgroup operations.
    subgroup_min_size: Option<u32>,
    shaders: Mutex<HashMap<&'static str, Arc<Shader>>>,
    pipelines: Mutex<PipelineCache>,
    pool: BufferPool,
    stream: Mutex<Stream>,
    param_arena: wgpu::Buffer,
    counters: Counters,
    /// Errors wgpu reports asynchronously; surfaced as `Err` at the next sync point.
    async_errors: Arc<Mutex<Vec<String>>>,
    lost: Arc<Mutex<Option<String>>>,
    poison: AtomicBool,
    /// The effective binding limit: the adapter's, or lower (`GpuOptions::max_binding_bytes`).
    binding_limit: u64,
    /// Kernels shaped for a CPU adapter ([`Gpu::cpu_shapes`]).
    cpu_shapes: bool,
}

/// The binding-limit override: `GpuOptions::max_binding_bytes`, else `UNREID_MAX_BINDING_BYTES`.
fn binding_override(options: &GpuOptions) -> Result<Option<u64>, GpuError> {
    const VAR: &str = "UNREID_MAX_BINDING_BYTES";
    let (value, from) = match options.max_binding_bytes {
        Some(v) => (Some(v), "GpuOptions::max_binding_bytes"),
        None => match std::env::var(VAR) {
            Ok(text) => (
                Some(text.trim().parse::<u64>().map_err(|e| {
                    GpuError::InvalidOption(format!("{VAR}={text:?} is not a byte count: {e}"))
                })?),
                VAR,
            ),
            Err(_) => (None, VAR),
        },
    };
    match value {
        Some(0) => Err(GpuError::InvalidOption(format!(
            "{from} must be a positive byte count, got 0"
        ))),
        v => Ok(v),
    }
}

/// A pooled storage buffer; returns to its pool when dropped.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    /// Unique for the life of the underlying buffer (bind groups are cached by it).
    id: u64,
    class: u64,
    gpu: Arc<Gpu>,
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }
    pub fn capacity(&self) -> u64 {
        self.class
    }
    /// Unique in the process for the life of the underlying buffer (bind groups are cached by it).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.gpu.pool.give(self.class, self.id, buffer);
        }
    }
}

impl std::fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuBuffer({} bytes on {})",
            self.class, self.gpu.summary.name
        )
    }
}

/// A binding of a kernel: a whole buffer.
pub type Binding<'a> = &'a GpuBuffer;

impl Gpu {
    /// Opens the chosen adapter with its own limits (not wgpu's conservative defaults), or
    /// those capped by `options.limits_cap`.
    pub fn new(options: &GpuOptions) -> Result<Arc<Gpu>, GpuError> {
        let lowered = binding_override(options)?;
        let instance = adapter::instance();
        let adapter = adapter::choose(&instance, options.adapter.as_deref())?;
        let summary = AdapterSummary::of(&adapter);
        let limits = match &options.limits_cap {
            Some(cap) => adapter.limits().or_worse_values_from(cap),
            None => adapter.limits(),
        };
        let subgroup_min_size = adapter
            .features()
            .contains(wgpu::Features::SUBGROUP)
            .then(|| adapter.get_info().subgroup_min_size);
        // Subgroup operations where the adapter has them (matmul's CPU-adapter kernel uses them),
        // and timestamp queries for `unreid bench --profile`.
        let features = adapter.features()
            & (wgpu::Features::SUBGROUP
                | wgpu::Features::TIMESTAMP_QUERY
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
                | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("unreid"),
            required_features: features,
            required_limits: limits.clone(),
            memory_hints: wgpu::MemoryHints::Performance,
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice {
            adapter: summary.name.clone(),
            message: e.to_string(),
        })?;

        let async_errors = Arc::new(Mutex::new(Vec::new()));
        let sink = async_errors.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap().push(e.to_string());
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            *lost_sink.lock().unwrap() = Some(format!("{reason:?}: {message}"));
        });

        let own = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let binding_limit = lowered.map_or(own, |l| l.min(own));
        let cpu_shapes = match options.kernel_shapes {
            KernelShapes::ByAdapter => summary.is_cpu(),
            KernelShapes::Gpu => false,
            KernelShapes::CpuAdapter => true,
        };
        let param_arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unreid params"),
            size: (SUBMIT_SLICE * PARAM_SLOT) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Arc::new(Gpu {
            device,
            queue,
            summary,
            limits,
            features,
            subgroup_min_size,
            shaders: Mutex::default(),
            pipelines: Mutex::default(),
            pool: BufferPool::default(),
            stream: Mutex::new(Stream {
                pass: None,
                pass_pipeline: None,
                encoder: None,
                params: Vec::with_capacity(SUBMIT_SLICE * PARAM_SLOT),
                dispatches: 0,
                bind_groups: BindGroupCache::default(),
                profiler: None,
            }),
            param_arena,
            counters: Counters::default(),
            async_errors,
            lost,
            poison: AtomicBool::new(options.poison),
            binding_limit,
            cpu_shapes,
        }))
    }

    pub fn summary(&self) -> &AdapterSummary {
        &self.summary
    }

    /// The limits the device was opened with (the adapter's, or capped: `GpuOptions::limits_cap`).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Smallest subgroup size when subgroup operations are enabled (shaders may use them), else None.
    pub fn subgroup_min_size(&self) -> Option<u32> {
        self.subgroup_min_size
    }

    /// Whether the ops shape their kernels for a CPU adapter: there every workgroup runs as
    /// SIMD batches of one core's vector width, each storage access and integer division is a
    /// per-lane scalar loop, and barriers switch between the batches, so kernels there take
    /// narrow workgroups and more elements per invocation. By the adapter's type unless
    /// [`GpuOptions::kernel_shapes`] says otherwise. Also what picks the matmul kernel
    /// (`ops::matmul::GemmTarget`) and per-tensor Adam (`optim::MultiTensor::Auto`).
    pub fn cpu_shapes(&self) -> bool {
        self.cpu_shapes
    }

    /// Elements one invocation of an elementwise or copy kernel takes in a row (strided copies'
    /// innermost runs, batch norm's per-plane runs): 1 on GPUs, where neighbouring invocations
    /// take neighbouring elements; 16 with [`Gpu::cpu_shapes`], where the index arithmetic each
    /// invocation divides out (per-lane scalar code there) then serves 16 elements (lavapipe's
    /// ResNet-18 b8 step: strided copies 104-121 -> 21 ms, issue 14).
    pub fn run_length(&self) -> u32 {
        if self.cpu_shapes {
            16
        } else {
            1
        }
    }

    /// Invocations per workgroup for kernels that reduce through workgroup memory and barriers
    /// (batch-norm statistics and gradient sums, the grouped convolution's weight gradient): 256
    /// on GPUs, 8 with [`Gpu::cpu_shapes`]. A CPU adapter runs a workgroup as SIMD batches of its
    /// vector width (8 lanes on lavapipe's 256-bit build) and switches between them at every
    /// barrier, so there one batch per workgroup keeps the barriers free: lavapipe's ResNet-18
    /// b8 step spent 157 ms in `bn_stats_running` with 256, 13 ms with 8 (issue 14).
    pub fn reduction_workgroup(&self) -> u32 {
        if self.cpu_shapes {
            8
        } else {
            256
        }
    }

    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    pub fn stats(&self) -> GpuStats {
        let c = &self.counters;
        GpuStats {
            submissions: c.submissions.load(Ordering::Relaxed),
            dispatches: c.dispatches.load(Ordering::Relaxed),
            pipelines_compiled: c.pipelines_compiled.load(Ordering::Relaxed),
            buffers_created: c.buffers_created.load(Ordering::Relaxed),
            pool_hits: c.pool_hits.load(Ordering::Relaxed),
            readbacks: c.readbacks.load(Ordering::Relaxed),
            host_waits: c.host_waits.load(Ordering::Relaxed),
            bind_groups_created: c.bind_groups_created.load(Ordering::Relaxed),
            bind_group_hits: c.bind_group_hits.load(Ordering::Relaxed),
            record_ns: c.record_ns.load(Ordering::Relaxed),
            submit_ns: c.submit_ns.load(Ordering::Relaxed),
        }
    }

    /// Bytes held in the pool, free for reuse.
    pub fn pooled_bytes(&self) -> u64 {
        self.pool.cached_bytes()
    }

    /// Largest single storage buffer a kernel may bind (bytes): the adapter's
    /// `max_storage_buffer_binding_size` (and `max_buffer_size`), or the lower override of
    /// `GpuOptions::max_binding_bytes` / `UNREID_MAX_BINDING_BYTES`. Ops size their chunks from it.
    pub fn max_binding_bytes(&self) -> u64 {
        self.binding_limit
    }

    /// A storage buffer of at least `bytes` bytes from the pool. Its contents are undefined (NaN
    /// when poisoning); the caller's kernel writes it.
    pub fn alloc(self: &Arc<Self>, bytes: u64, what: &str) -> Result<GpuBuffer, GpuError> {
        let limit = self.max_binding_bytes();
        if bytes > limit {
            return Err(GpuError::BufferTooLarge {
                what: what.to_string(),
                bytes,
                limit,
            });
        }
        let class = size_class(bytes).min(limit.max(bytes));
        let (id, buffer) = match self.pool.take(class) {
            Some(b) => {
                self.counters.pool_hits.fetch_add(1, Ordering::Relaxed);
                b
            }
            None => (pool::new_id(), self.create_storage(class, what)?),
        };
        let out = GpuBuffer {
            buffer: Some(buffer),
            id,
            class,
            gpu: self.clone(),
        };
        if self.poison.load(Ordering::Relaxed) {
            self.fill_u32(&out, 0x7fc0_0000)?; // a quiet NaN in every word
        }
        Ok(out)
    }

    fn create_storage(&self, class: u64, what: &str) -> Result<wgpu::Buffer, GpuError> {
        let make = || {
            let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
            let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: class,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            match pollster::block_on(scope.pop()) {
                None => Some(buffer),
                Some(_) => None,
            }
        };
        let buffer = match make() {
            Some(b) => b,
            None => {
                // Free what the pool holds (and the cached bind groups that keep those buffers
                // alive) and try once more before giving up.
                self.pool.clear();
                self.stream.lock().unwrap().bind_groups.clear();
                self.sync()?;
                make().ok_or_else(|| GpuError::OutOfMemory {
                    bytes: class,
                    what: what.to_string(),
                })?
            }
        };
        self.counters
            .buffers_created
            .fetch_add(1, Ordering::Relaxed);
        Ok(buffer)
    }

    /// A buffer holding `bytes`, written in stream order (so it cannot overtake pending kernels
    /// that still read a pooled buffer's previous contents).
    pub fn upload(self: &Arc<Self>, bytes: &[u8], what: &str) -> Result<GpuBuffer, GpuError> {
        let out = self.alloc(bytes.len() as u64, what)?;
        if bytes.is_empty() {
            return Ok(out);
        }
        let padded = bytes.len().div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unreid upload"),
            size: padded as u64,
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        {
            let mut view = staging
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| GpuError::Validation(format!("mapping the upload buffer: {e}")))?;
            if bytes.len() == padded {
                view.copy_from_slice(bytes);
            } else {
                let mut tail = bytes.to_vec();
                tail.resize(padded, 0);
                view.copy_from_slice(&tail);
            }
        }
        staging.unmap();
        let mut stream = self.stream.lock().unwrap();
        let encoder = self.encoder(&mut stream);
        encoder.copy_buffer_to_buffer(&staging, 0, out.raw(), 0, padded as u64);
        Ok(out)
    }

    /// Copies the first `bytes` of `src` into `dst`, in stream order (after every command recorded
    /// so far, before every later one). `bytes` is rounded up to a whole word; both buffers must
    /// hold that much (an error otherwise, nothing recorded).
    pub fn copy(&self, src: &GpuBuffer, dst: &GpuBuffer, bytes: u64) -> Result<(), GpuError> {
        let padded = bytes.div_ceil(4) * 4;
        if padded > src.capacity() || padded > dst.capacity() {
            return Err(GpuError::Validation(format!(
                "copy of {padded} bytes between buffers of {} and {} bytes",
                src.capacity(),
                dst.capacity()
            )));
        }
        if !std::ptr::eq(Arc::as_ptr(&src.gpu), self) || !std::ptr::eq(Arc::as_ptr(&dst.gpu), self)
        {
            return Err(GpuError::Validation(
                "copy between buffers of another device".into(),
            ));
        }
        if padded == 0 {
            return Ok(());
        }
        let mut stream = self.stream.lock().unwrap();
        self.encoder(&mut stream)
            .copy_buffer_to_buffer(src.raw(), 0, dst.raw(), 0, padded);
        Ok(())
    }

    /// Fills the whole buffer with one 32-bit pattern (zeros, ones, NaN poison), in stream order.
    pub fn fill_u32(self: &Arc<Self>, buffer: &GpuBuffer, pattern: u32) -> Result<(), GpuError> {
        let words = (buffer.capacity() / 4) as u32;
        if pattern == 0 {
            let mut stream = self.stream.lock().unwrap();
            self.encoder(&mut stream)
                .clear_buffer(buffer.raw(), 0, None);
            return Ok(());
        }
        let kernel = Kernel::new("elementwise", "fill");
        self.dispatch(
            &kernel,
            bytemuck::cast_slice(&[words, pattern]),
            &[buffer],
            grid_1d(words, 256),
        )
    }

    /// Records one dispatch of `kernel`. Binding 0 is the uniform `params`; bindings 1.. are
    /// `buffers` in order. Nothing is submitted here unless the slice is full.
    ///
    /// Errors (and nothing recorded) when the grid exceeds the adapter, when `buffers` do not
    /// match what the entry point binds, come from another device, or alias a writable binding,
    /// or when wgpu rejects the pipeline or a new bind group.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[Binding<'_>],
        workgroups: [u32; 3],
    ) -> Result<(), GpuError> {
        let started = Instant::now();
        assert!(
            params.len() <= PARAM_SLOT,
            "kernel params exceed one arena slot"
        );
        if workgroups.contains(&0) {
            return Ok(());
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(GpuError::Validation(format!(
                "{}:{} asks for {workgroups:?} workgroups; the adapter allows {max} per dimension",
                kernel.shader, kernel.entry
            )));
        }
        let pipe = self.pipeline(kernel)?;
        self.check_bindings(&pipe, buffers)?;
        let key = (buffers.len() <= MAX_CACHED_BINDINGS).then(|| {
            let mut ids = [0u64; MAX_CACHED_BINDINGS];
            for (slot, b) in ids.iter_mut().zip(buffers) {
                *slot = b.id;
            }
            BindKey {
                pipeline: pipe.id,
                len: buffers.len() as u8,
                ids,
            }
        });

        let mut guard = self.stream.lock().unwrap();
        let stream = &mut *guard;
        let cached = key.as_ref().and_then(|k| stream.bind_groups.get(k));
        let bind_group = match cached {
            Some(bg) => {
                self.counters
                    .bind_group_hits
                    .fetch_add(1, Ordering::Relaxed);
                bg
            }
            None => {
                let bg = self.create_bind_group(&pipe, buffers, workgroups)?;
                if let Some(k) = key {
                    stream.bind_groups.insert(k, bg.clone());
                }
                bg
            }
        };

        let slot = stream.dispatches;
        let offset = slot * PARAM_SLOT;
        stream.params.extend_from_slice(params);
        stream.params.resize(offset + PARAM_SLOT, 0);
        if stream.pass.is_none() {
            let encoder = stream
                .encoder
                .get_or_insert_with(|| self.device.create_command_encoder(&Default::default()));
            stream.pass = Some(
                encoder
                    .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                    .forget_lifetime(),
            );
            stream.pass_pipeline = None;
        }
        let pass = stream.pass.as_mut().expect("pass opened above");
        if stream.pass_pipeline != Some(pipe.id) {
            pass.set_pipeline(&pipe.pipeline);
            stream.pass_pipeline = Some(pipe.id);
        }
        pass.set_bind_group(0, &bind_group, &[offset as u32]);
        match &mut stream.profiler {
            Some(prof) => {
                let q = 2 * slot as u32;
                pass.write_timestamp(&prof.queries, q);
                pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
                pass.write_timestamp(&prof.queries, q + 1);
                prof.slice.push(pipe.name.clone());
            }
            None => pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]),
        }
        stream.dispatches += 1;
        self.counters.dispatches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .record_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if stream.dispatches >= SUBMIT_SLICE {
            self.submit(stream)?;
        }
        Ok(())
    }

    /// What a compute pass would reject about these bindings, checked on the host.
    fn check_bindings(&self, pipe: &Pipeline, buffers: &[Binding<'_>]) -> Result<(), GpuError> {
        let fail = |why: String| Err(GpuError::Validation(format!("{}: {why}", pipe.name)));
        let storage = &pipe.layout.storage;
        if buffers.len() != storage.len() {
            return fail(format!(
                "binds {} storage buffers, {} given",
                storage.len(),
                buffers.len()
            ));
        }
        let limit = self.limits.max_storage_buffer_binding_size;
        for (i, (b, s)) in buffers.iter().zip(storage).enumerate() {
            if !std::ptr::eq(Arc::as_ptr(&b.gpu), self) {
                return fail(format!("buffer {} belongs to another device", i + 1));
            }
            if b.class < s.min_bytes || b.class > limit {
                return fail(format!(
                    "binding {} is {} bytes; the shader needs at least {} and the adapter allows {limit}",
                    i + 1,
                    b.class,
                    s.min_bytes
                ));
            }
            for (j, (c, t)) in buffers.iter().zip(storage).enumerate().skip(i + 1) {
                if b.id == c.id && (s.writable || t.writable) {
                    return fail(format!(
                        "one buffer is bound at {} and {}, and one of them is writable",
                        i + 1,
                        j + 1
                    ));
                }
            }
        }
        Ok(())
    }

    /// A bind group for `buffers`, built in this thread's own error scope.
    fn create_bind_group(
        &self,
        pipe: &Pipeline,
        buffers: &[Binding<'_>],
        workgroups: [u32; 3],
    ) -> Result<wgpu::BindGroup, GpuError> {
        let mut entries = Vec::with_capacity(buffers.len() + 1);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.param_arena,
                offset: 0,
                size: wgpu::BufferSize::new(PARAM_SLOT as u64),
            }),
        });
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.raw().as_entire_binding(),
            });
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.bind_layout,
            entries: &entries,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Validation(format!(
                "{} with {} buffers and {workgroups:?} workgroups was rejected: {e}",
                pipe.name,
                buffers.len()
            )));
        }
        self.counters
            .bind_groups_created
            .fetch_add(1, Ordering::Relaxed);
        Ok(bind_group)
    }

    /// The stream's encoder, with the compute pass ended (for copies and clears).
    fn encoder<'s>(&self, stream: &'s mut Stream) -> &'s mut wgpu::CommandEncoder {
        stream.pass = None;
        stream
            .encoder
            .get_or_insert_with(|| self.device.create_command_encoder(&Default::default()))
    }

    fn submit(&self, stream: &mut Stream) -> Result<(), GpuError> {
        let started = Instant::now();
        stream.pass = None;
        let Some(mut encoder) = stream.encoder.take() else {
            return Ok(());
        };
        let timed = match &stream.profiler {
            Some(prof) if !prof.slice.is_empty() => {
                let n = prof.slice.len() as u32;
                encoder.resolve_query_set(&prof.queries, 0..2 * n, &prof.resolve, 0);
                let bytes = 2 * n as u64 * wgpu::QUERY_SIZE as u64;
                encoder.copy_buffer_to_buffer(&prof.resolve, 0, &prof.readback, 0, bytes);
                Some(bytes)
            }
            _ => None,
        };
        if !stream.params.is_empty() {
            self.queue
                .write_buffer(&self.param_arena, 0, &stream.params);
        }
        self.queue.submit([encoder.finish()]);
        stream.params.clear();
        stream.dispatches = 0;
        self.counters.submissions.fetch_add(1, Ordering::Relaxed);
        self.counters
            .submit_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        if let (Some(bytes), Some(prof)) = (timed, stream.profiler.as_mut()) {
            self.collect_timestamps(prof, bytes)?;
        }
        Ok(())
    }

    /// Waits for the slice just submitted and adds its dispatch times to the profile.
    fn collect_timestamps(&self, prof: &mut Profiler, bytes: u64) -> Result<(), GpuError> {
        let slice = prof.readback.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        {
            let view = slice
                .get_mapped_range()
                .map_err(|e| GpuError::Readback(e.to_string()))?;
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            for (i, name) in prof.slice.drain(..).enumerate() {
                let (start, end) = (ticks[2 * i], ticks[2 * i + 1]);
                let entry = prof.totals.entry(name).or_insert((0, 0.0));
                entry.0 += 1;
                entry.1 += end.saturating_sub(start) as f64 * prof.period_ns;
            }
        }
        prof.readback.unmap();
        Ok(())
    }

    /// Which timestamp queries this device has.
    pub fn timestamp_support(&self) -> TimestampSupport {
        if self
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
        {
            TimestampSupport::InsidePasses
        } else if self.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            TimestampSupport::PassBoundaries
        } else {
            TimestampSupport::None
        }
    }

    /// Starts timing every dispatch with timestamp queries (until [`Gpu::stop_profiling`]).
    /// Each slice is then waited for at its submission, so a profiled run is slower than a plain
    /// one; its per-kernel times are what the device spent on each kernel. Errors when the
    /// device has no `TIMESTAMP_QUERY_INSIDE_PASSES`.
    pub fn start_profiling(&self) -> Result<(), GpuError> {
        if self.timestamp_support() != TimestampSupport::InsidePasses {
            return Err(GpuError::Unsupported(format!(
                "{} has no timestamp queries inside compute passes (TIMESTAMP_QUERY_INSIDE_PASSES)",
                self.summary.name
            )));
        }
        let mut stream = self.stream.lock().unwrap();
        self.submit(&mut stream)?;
        let count = 2 * SUBMIT_SLICE as u32;
        let bytes = count as u64 * wgpu::QUERY_SIZE as u64;
        let buffer = |label, usage| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        stream.profiler = Some(Profiler {
            queries: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("unreid profile"),
                ty: wgpu::QueryType::Timestamp,
                count,
            }),
            resolve: buffer(
                "unreid profile resolve",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            readback: buffer(
                "unreid profile readback",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            slice: Vec::with_capacity(SUBMIT_SLICE),
            totals: HashMap::new(),
            period_ns: self.queue.get_timestamp_period() as f64,
        });
        Ok(())
    }

    /// Ends profiling (submitting and timing what is pending) and returns the GPU time per
    /// kernel, longest first. Empty when profiling was not on.
    pub fn stop_profiling(&self) -> Result<Vec<KernelTime>, GpuError> {
        let mut stream = self.stream.lock().unwrap();
        self.submit(&mut stream)?;
        let Some(prof) = stream.profiler.take() else {
            return Ok(Vec::new());
        };
        let mut out: Vec<KernelTime> = prof
            .totals
            .into_iter()
            .map(|(name, (dispatches, ns))| KernelTime {
                kernel: name.to_string(),
                dispatches,
                gpu_ms: ns / 1e6,
            })
            .collect();
        out.sort_by(|a, b| b.gpu_ms.total_cmp(&a.gpu_ms));
        Ok(out)
    }

    /// Submits everything pending without waiting.
    pub fn flush(&self) -> Result<(), GpuError> {
        let mut stream = self.stream.lock().unwrap();
        self.submit(&mut stream)
    }

    /// Waits for everything submitted (a host wait).
    fn wait(&self) -> Result<(), GpuError> {
        self.counters.host_waits.fetch_add(1, Ordering::Relaxed);
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        Ok(())
    }

    /// Submits everything pending, waits for the device, and reports any error it raised meanwhile.
    pub fn sync(&self) -> Result<(), GpuError> {
        self.flush()?;
        self.wait()?;
        self.check_errors()
    }

    fn check_errors(&self) -> Result<(), GpuError> {
        if let Some(lost) = self.lost.lock().unwrap().clone() {
            return Err(GpuError::DeviceLost(lost));
        }
        let mut errors = self.async_errors.lock().unwrap();
        if errors.is_empty() {
            Ok(())
        } else {
            let all = errors.drain(..).collect::<Vec<_>>().join("; ");
            Err(GpuError::Validation(all))
        }
    }

    /// Copies the first `bytes` of `buffer` to the host (a sync point).
    pub fn read(&self, buffer: &GpuBuffer, bytes: u64) -> Result<Vec<u8>, GpuError> {
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let padded = bytes.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unreid readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut stream = self.stream.lock().unwrap();
            let encoder = self.encoder(&mut stream);
            encoder.copy_buffer_to_buffer(buffer.raw(), 0, &staging, 0, padded);
            self.submit(&mut stream)?;
        }
        self.counters.readbacks.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        self.check_errors()?;
        rx.recv()
            .map_err(|e| GpuError::Readback(e.to_string()))?
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let view = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Readback(e.to_string()))?;
        let mut out = view[..bytes as usize].to_vec();
        out.truncate(bytes as usize);
        Ok(out)
    }

    /// The compiled pipeline of `kernel` (found by hash; compiled, with its layout reflected,
    /// on first use).
    fn pipeline(&self, kernel: &Kernel) -> Result<Arc<Pipeline>, GpuError> {
        let hash = kernel.key_hash();
        if let Some(list) = self.pipelines.lock().unwrap().by_hash.get(&hash) {
            if let Some(p) = list.iter().find(|p| p.kernel.same_pipeline(kernel)) {
                return Ok(p.clone());
            }
        }
        let shader_err = |message: String| GpuError::Shader {
            shader: kernel.shader.to_string(),
            entry: kernel.entry.to_string(),
            message,
        };
        let shader = self.shader(kernel.shader).map_err(shader_err)?;
        let layout = shader
            .reflection
            .entry_layout(kernel.entry)
            .map_err(shader_err)?;
        if layout.params_bytes > PARAM_SLOT as u64 {
            return Err(shader_err(format!(
                "its params struct ({} bytes) exceeds one {PARAM_SLOT}-byte arena slot",
                layout.params_bytes
            )));
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(kernel.entry),
                entries: &layout.wgpu_entries(PARAM_SLOT as u64),
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(kernel.entry),
                bind_group_layouts: &[Some(&bind_layout)],
                immediate_size: 0,
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: Some(&pipeline_layout),
                module: &shader.module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: kernel.constants(),
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(shader_err(e.to_string()));
        }
        self.counters
            .pipelines_compiled
            .fetch_add(1, Ordering::Relaxed);
        let mut cache = self.pipelines.lock().unwrap();
        let list = cache.by_hash.entry(hash).or_default();
        // Another thread may have compiled the same kernel meanwhile: keep one.
        if let Some(p) = list.iter().find(|p| p.kernel.same_pipeline(kernel)) {
            return Ok(p.clone());
        }
        let id = cache.count;
        cache.count += 1;
        let p = Arc::new(Pipeline {
            id,
            kernel: kernel.clone(),
            name: format!("{}:{}", kernel.shader, kernel.entry).into(),
            pipeline,
            bind_layout,
            layout,
        });
        cache.by_hash.entry(hash).or_default().push(p.clone());
        Ok(p)
    }

    /// The shader module (compiled by wgpu and reflected by naga once per shader file).
    fn shader(&self, name: &'static str) -> Result<Arc<Shader>, String> {
        let mut shaders = self.shaders.lock().unwrap();
        if let Some(s) = shaders.get(name) {
            return Ok(s.clone());
        }
        let source = kernels::source(name).ok_or("no such shader in shaders/")?;
        let reflection = Reflection::new(source)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(e.to_string());
        }
        let shader = Arc::new(Shader { module, reflection });
        shaders.insert(name, shader.clone());
        Ok(shader)
    }
}

/// Workgroup counts covering `n` invocations of a 1-D kernel with `wg` threads per group, folded
/// into two dimensions when one would exceed the 65,535-per-dimension minimum. Kernels rebuild the
/// linear index as `(wid.y * num_workgroups.x + wid.x) * wg + lid.x` and bounds-check it.
pub fn grid_1d(n: u32, wg: u32) -> [u32; 3] {
    let groups = n.div_ceil(wg).max(1);
    if groups <= 65_535 {
        [groups, 1, 1]
    } else {
        let y = groups.div_ceil(65_535);
        [groups.div_ceil(y), y, 1]
    }
}
