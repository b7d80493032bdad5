//! The GPU runtime: one `Gpu` per opened adapter.
//!
//! Ops never submit. Each dispatch is recorded into its own small command buffer, validated on
//! the spot (inside a thread-local error scope) and queued; the queue goes out in one
//! `queue.submit` at a sync point (a read-back, `sync()`, or when the dispatch budget or the
//! parameter arena fills). Because an invalid dispatch is rejected where it is recorded, its
//! error reaches the caller that made it, and it never joins (and spoils) a submission that other
//! threads sharing the device (the tests of one binary) have commands in. Small per-dispatch parameters are packed into one uniform arena per submission,
//! written with a single `write_buffer` just before the submit.

mod adapter;
mod error;
pub mod kernels;
mod pool;

pub use adapter::{list_adapters, AdapterSummary};
pub use error::GpuError;
pub use kernels::{Kernel, SHADERS};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pool::{size_class, BufferPool};

/// Dispatches recorded before a submission is forced. Large enough that a training step goes out
/// in a few submissions, small enough that the GPU starts working while the host records more.
const DISPATCH_BUDGET: usize = 1024;
/// Each dispatch's parameters occupy one slot of the uniform arena (the alignment uniform offsets need).
const PARAM_SLOT: usize = 256;
/// Largest parameter block one dispatch may pass.
pub const MAX_PARAM_BYTES: usize = PARAM_SLOT;

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
}

/// Counters the runtime keeps; tests read them to check batching and pooling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuStats {
    pub submissions: u64,
    pub dispatches: u64,
    pub pipelines_compiled: u64,
    pub buffers_created: u64,
    pub pool_hits: u64,
    pub readbacks: u64,
}

#[derive(Default)]
struct Counters {
    submissions: AtomicU64,
    dispatches: AtomicU64,
    pipelines_compiled: AtomicU64,
    buffers_created: AtomicU64,
    pool_hits: AtomicU64,
    readbacks: AtomicU64,
}

/// Commands recorded since the last submission: validated command buffers in stream order, then
/// an open encoder for copies and clears recorded after the last of them.
struct Stream {
    finished: Vec<wgpu::CommandBuffer>,
    encoder: Option<wgpu::CommandEncoder>,
    params: Vec<u8>,
    dispatches: usize,
}

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    summary: AdapterSummary,
    limits: wgpu::Limits,
    /// Smallest subgroup size, when the device was opened with subgroup operations.
    subgroup_min_size: Option<u32>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<(String, Vec<u64>), wgpu::ComputePipeline>>,
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
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            self.gpu.pool.give(self.class, buffer);
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
    /// Opens the chosen adapter with its own limits (not wgpu's conservative defaults).
    pub fn new(options: &GpuOptions) -> Result<Arc<Gpu>, GpuError> {
        let lowered = binding_override(options)?;
        let instance = adapter::instance();
        let adapter = adapter::choose(&instance, options.adapter.as_deref())?;
        let summary = AdapterSummary::of(&adapter);
        let limits = adapter.limits();
        let subgroup_min_size = adapter
            .features()
            .contains(wgpu::Features::SUBGROUP)
            .then(|| adapter.get_info().subgroup_min_size);
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("unreid"),
            // Subgroup operations where the adapter has them (matmul's CPU-adapter kernel uses them).
            required_features: adapter.features() & wgpu::Features::SUBGROUP,
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
        let param_arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unreid params"),
            size: (DISPATCH_BUDGET * PARAM_SLOT) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Arc::new(Gpu {
            device,
            queue,
            summary,
            limits,
            subgroup_min_size,
            modules: Mutex::default(),
            pipelines: Mutex::default(),
            pool: BufferPool::default(),
            stream: Mutex::new(Stream {
                finished: Vec::new(),
                encoder: None,
                params: Vec::new(),
                dispatches: 0,
            }),
            param_arena,
            counters: Counters::default(),
            async_errors,
            lost,
            poison: AtomicBool::new(options.poison),
            binding_limit,
        }))
    }

    pub fn summary(&self) -> &AdapterSummary {
        &self.summary
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Smallest subgroup size when subgroup operations are enabled (shaders may use them), else None.
    pub fn subgroup_min_size(&self) -> Option<u32> {
        self.subgroup_min_size
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
        let buffer = match self.pool.take(class) {
            Some(b) => {
                self.counters.pool_hits.fetch_add(1, Ordering::Relaxed);
                b
            }
            None => self.create_storage(class, what)?,
        };
        let out = GpuBuffer {
            buffer: Some(buffer),
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
                // Free what the pool holds and try once more before giving up.
                self.pool.clear();
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
    /// `buffers` in order. Nothing is submitted here.
    pub fn dispatch(
        &self,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[Binding<'_>],
        workgroups: [u32; 3],
    ) -> Result<(), GpuError> {
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
        let pipeline = self.pipeline(kernel)?;
        let mut stream = self.stream.lock().unwrap();
        if stream.dispatches >= DISPATCH_BUDGET {
            self.submit(&mut stream);
        }
        let offset = stream.params.len();
        stream.params.extend_from_slice(params);
        stream.params.resize(offset + PARAM_SLOT, 0);

        let mut entries = Vec::with_capacity(buffers.len() + 1);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.param_arena,
                offset: offset as u64,
                size: wgpu::BufferSize::new(PARAM_SLOT as u64),
            }),
        });
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.raw().as_entire_binding(),
            });
        }
        // Bind group, pass and encoder are validated here, in this thread's own error scope, so
        // a rejected dispatch is this caller's error and never enters the shared stream.
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        let commands = encoder.finish();
        if let Some(e) = pollster::block_on(scope.pop()) {
            stream.params.truncate(offset);
            return Err(GpuError::Validation(format!(
                "{}:{} with {} buffers and {workgroups:?} workgroups was rejected: {e}",
                kernel.shader,
                kernel.entry,
                buffers.len()
            )));
        }
        // Copies recorded before this dispatch go first.
        if let Some(open) = stream.encoder.take() {
            stream.finished.push(open.finish());
        }
        stream.finished.push(commands);
        stream.dispatches += 1;
        self.counters.dispatches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn encoder<'s>(&self, stream: &'s mut Stream) -> &'s mut wgpu::CommandEncoder {
        stream
            .encoder
            .get_or_insert_with(|| self.device.create_command_encoder(&Default::default()))
    }

    fn submit(&self, stream: &mut Stream) {
        if let Some(open) = stream.encoder.take() {
            stream.finished.push(open.finish());
        }
        if stream.finished.is_empty() {
            return;
        }
        if !stream.params.is_empty() {
            self.queue
                .write_buffer(&self.param_arena, 0, &stream.params);
        }
        self.queue.submit(stream.finished.drain(..));
        stream.params.clear();
        stream.dispatches = 0;
        self.counters.submissions.fetch_add(1, Ordering::Relaxed);
    }

    /// Submits everything pending without waiting.
    pub fn flush(&self) {
        let mut stream = self.stream.lock().unwrap();
        self.submit(&mut stream);
    }

    /// Submits everything pending, waits for the device, and reports any error it raised meanwhile.
    pub fn sync(&self) -> Result<(), GpuError> {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
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
            self.submit(&mut stream);
        }
        self.counters.readbacks.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
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

    fn pipeline(&self, kernel: &Kernel) -> Result<wgpu::ComputePipeline, GpuError> {
        let key = kernel.cache_key();
        if let Some(p) = self.pipelines.lock().unwrap().get(&key) {
            return Ok(p.clone());
        }
        let shader_err = |message: String| GpuError::Shader {
            shader: kernel.shader.to_string(),
            entry: kernel.entry.to_string(),
            message,
        };
        let module = {
            let mut modules = self.modules.lock().unwrap();
            match modules.get(kernel.shader) {
                Some(m) => m.clone(),
                None => {
                    let source = kernels::source(kernel.shader)
                        .ok_or_else(|| shader_err("no such shader in shaders/".into()))?;
                    let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
                    let m = self
                        .device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(kernel.shader),
                            source: wgpu::ShaderSource::Wgsl(source.into()),
                        });
                    if let Some(e) = pollster::block_on(scope.pop()) {
                        return Err(shader_err(e.to_string()));
                    }
                    modules.insert(kernel.shader, m.clone());
                    m
                }
            }
        };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(kernel.entry),
                layout: None,
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &kernel.constants,
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
        self.pipelines.lock().unwrap().insert(key, pipeline.clone());
        Ok(pipeline)
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
