//! Batched matmul with either operand transposed, and its backward rule.

use std::sync::Arc;

use crate::autograd::record;
pub use crate::cpu::matmul::gemm_into;
pub use crate::cpu::matmul::MatmulDims;
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, GpuBuffer, Kernel};
use crate::ops::{alloc_f32, host_float2, same_device, Params};
use crate::tensor::{DType, Data};
use crate::{cpu, Device, Tensor};

/// Which matmul kernel runs on a GPU device.
///
/// `Auto` picks by adapter type: on CPU adapters (lavapipe) `Subgroup` (or `Reg` where the adapter
/// has no subgroups of >= 8 lanes), on real GPUs `Tiled`. The environment variable
/// `UNREID_MATMUL=sg|reg|tiled` overrides the pick for the whole process, and
/// [`with_matmul_kernel`] for one thread (the tests use it to run every kernel on lavapipe);
/// `UNREID_TILED=16|8|4` fixes `matmul_tiled`'s tile ([`TILED_SIDES`]) for every product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    Auto,
    /// `matmul_sg` (shaders/matmul_subgroup.wgsl), for CPU adapters: (8*ROW_GROUPS) x 32 register
    /// tiles shared through subgroup broadcasts, vec4 loads, no workgroup memory or barriers.
    /// Operands whose rows are not whole vec4s are zero-padded first. Falls back to `Reg` without
    /// subgroups of >= 8 lanes.
    Subgroup,
    /// `matmul_reg`: a 4x4 register block per invocation, any adapter, any shape.
    Reg,
    /// `matmul_tiled`: 8x8 outputs per invocation from workgroup-memory tiles of up to 128x128
    /// (shaders/matmul.wgsl), for discrete and integrated GPUs.
    Tiled,
}

thread_local! {
    static FORCED: std::cell::Cell<MatmulKernel> = const { std::cell::Cell::new(MatmulKernel::Auto) };
    static FORCED_SPLIT: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    static FORCED_UNITS: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    static FORCED_SIDE: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    static PRODUCT_LOG: std::cell::RefCell<Option<Vec<MatmulDims>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` and returns, with its result, the sizes of every GPU product it launched on this
/// thread, in order (what a dry run's list of products, e.g. `ops::conv2d::gemms`, is checked
/// against). Nested calls see only their own products.
pub fn log_products<R>(f: impl FnOnce() -> R) -> (R, Vec<MatmulDims>) {
    let before = PRODUCT_LOG.with(|l| l.replace(Some(Vec::new())));
    struct Restore(Option<Option<Vec<MatmulDims>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            // Only when `f` unwinds: otherwise the log was restored below.
            if let Some(before) = self.0.take() {
                PRODUCT_LOG.with(|l| l.replace(before));
            }
        }
    }
    let mut restore = Restore(Some(before));
    let out = f();
    let logged = PRODUCT_LOG.with(|l| l.replace(restore.0.take().expect("restored once")));
    (out, logged.unwrap_or_default())
}

/// Runs `f` with every GPU product on this thread (any kernel: `matmul_sg`, `matmul_tiled`,
/// `matmul_reg`) split into `splits` chunks of the reduction (fewer when K is shorter; 1 never
/// splits), instead of the automatic choice ([`split_k`]). The tests use it to run split-K on
/// lavapipe.
pub fn with_split_k<R>(splits: usize, f: impl FnOnce() -> R) -> R {
    with_cell(&FORCED_SPLIT, Some(splits.max(1)), f)
}

/// Runs `f` with every matmul on this thread (forward and backward) using `kernel`.
pub fn with_matmul_kernel<R>(kernel: MatmulKernel, f: impl FnOnce() -> R) -> R {
    with_cell(&FORCED, kernel, f)
}

/// Runs `f` with every `matmul_tiled` product on this thread in tiles of `side` (one of
/// [`TILED_SIDES`]) instead of [`launch_plan`]'s choice: the tests use it to run every tiling at
/// every shape.
///
/// # Panics
/// When `side` is not one of [`TILED_SIDES`] (the shader's staging arrays and swizzle fit those).
pub fn with_tiled_side<R>(side: usize, f: impl FnOnce() -> R) -> R {
    assert!(
        TILED_SIDES.contains(&side),
        "matmul_tiled side {side}: expected one of {TILED_SIDES:?}"
    );
    with_cell(&FORCED_SIDE, Some(side), f)
}

/// Runs `f` with every GPU product on this thread planned for an adapter of `units` compute units
/// (at least 1) instead of [`compute_units`]' guess: the tests use it to run on lavapipe the
/// splits and tiles that [`launch_plan`] gives a GPU of 132 SMs.
pub fn with_compute_units<R>(units: usize, f: impl FnOnce() -> R) -> R {
    with_cell(&FORCED_UNITS, Some(units.max(1)), f)
}

/// Runs `f` with the thread-local `cell` set to `value`, restored afterwards (also when `f`
/// unwinds).
fn with_cell<T: Copy + 'static, R>(
    cell: &'static std::thread::LocalKey<std::cell::Cell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: Copy + 'static>(&'static std::thread::LocalKey<std::cell::Cell<T>>, T);
    impl<T: Copy + 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            self.0.with(|c| c.set(self.1));
        }
    }
    let _restore = Restore(cell, cell.with(|c| c.replace(value)));
    f()
}

/// What the choice of a matmul launch (kernel, grid, split) depends on: read from an opened
/// adapter ([`GemmTarget::of`]), or described by hand for a dry run of a device that is not here
/// ([`launch_plan`] on a 132-SM GPU's numbers, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTarget {
    /// Kernels shaped for an adapter that runs on the host CPU (lavapipe; `Gpu::cpu_shapes`):
    /// `Auto` picks the subgroup kernel.
    pub cpu_adapter: bool,
    /// Subgroup operations with subgroups of at least 8 lanes (what `matmul_sg` needs).
    pub subgroups: bool,
    /// Compute units the split aims to fill ([`compute_units`]).
    pub compute_units: usize,
    /// `max_compute_workgroups_per_dimension`.
    pub max_workgroups: usize,
    /// The binding limit in bytes (`Gpu::max_binding_bytes`).
    pub max_binding_bytes: u64,
}

impl GemmTarget {
    /// The target of an opened adapter.
    pub fn of(gpu: &Gpu) -> GemmTarget {
        GemmTarget {
            cpu_adapter: gpu.cpu_shapes(),
            subgroups: gpu.subgroup_min_size().is_some_and(|s| s >= 8),
            compute_units: compute_units(gpu),
            max_workgroups: gpu.limits().max_compute_workgroups_per_dimension as usize,
            max_binding_bytes: gpu.max_binding_bytes(),
        }
    }
}

/// The process-wide overrides, read once (every product consults them, and reading the
/// environment, or the host's threads from cgroup files, costs more than recording a dispatch).
struct EnvChoice {
    /// `UNREID_MATMUL=sg|reg|tiled`.
    kernel: Option<MatmulKernel>,
    /// `UNREID_SPLIT_K` (a positive count).
    split: Option<usize>,
    /// `UNREID_COMPUTE_UNITS` (a positive count).
    units: Option<usize>,
    /// `UNREID_TILED=16|8|4`: one `matmul_tiled` SIDE for every product (for tuning on a new
    /// adapter).
    tiled_side: Option<usize>,
    /// The host's threads (what a CPU adapter's compute units are taken to be).
    host_threads: usize,
}

fn env() -> &'static EnvChoice {
    static ENV: std::sync::OnceLock<EnvChoice> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        // A set variable whose value cannot be used is named on stderr, never dropped silently
        // (these are read lazily inside the first product, where no error can be returned).
        fn parsed<T>(var: &str, expected: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
            let text = std::env::var(var).ok()?;
            let value = parse(text.trim());
            if value.is_none() {
                eprintln!("warning: {var}={text:?} ignored: expected {expected}");
            }
            value
        }
        let count = |var: &str| {
            parsed(var, "a positive integer", |v| {
                v.parse::<usize>().ok().filter(|&n| n > 0)
            })
        };
        EnvChoice {
            kernel: parsed("UNREID_MATMUL", "sg, reg or tiled", |v| match v {
                "sg" => Some(MatmulKernel::Subgroup),
                "reg" => Some(MatmulKernel::Reg),
                "tiled" => Some(MatmulKernel::Tiled),
                _ => None,
            }),
            split: count("UNREID_SPLIT_K"),
            units: count("UNREID_COMPUTE_UNITS"),
            tiled_side: parsed("UNREID_TILED", "16, 8 or 4", |v| {
                v.parse().ok().filter(|s| TILED_SIDES.contains(s))
            }),
            host_threads: std::thread::available_parallelism().map_or(4, |n| n.get()),
        }
    })
}

/// The kernel family for one product (never `Auto`).
fn family(t: &GemmTarget, d: &MatmulDims) -> MatmulKernel {
    let wanted = match FORCED.with(|k| k.get()) {
        MatmulKernel::Auto => match env().kernel {
            Some(k) => k,
            None if t.cpu_adapter => MatmulKernel::Subgroup,
            None => MatmulKernel::Tiled,
        },
        forced => forced,
    };
    match wanted {
        MatmulKernel::Subgroup if !t.subgroups || d.k == 0 || !pad_fits(t, d) => MatmulKernel::Reg,
        other => other,
    }
}

/// Rows of C per `matmul_sg` workgroup / 8 (its ROW_GROUPS). 6 measured best at 1024 on lavapipe
/// (4: -10%, 8: -5%, 2: -35%); each row group is 8 vec4 accumulators per lane.
const SG_ROW_GROUPS: usize = 6;

/// ROW_GROUPS for `m` rows: 6, unless another value from 4 to 8 computes at least m/16 fewer
/// dropped rows (64 rows take one tile of 64, not two of 48); small `m` takes just enough groups.
fn sg_row_groups(m: usize) -> usize {
    if m <= 32 {
        return m.div_ceil(8).max(1);
    }
    let padded = |rg: usize| m.div_ceil(8 * rg) * 8 * rg;
    let mut best = SG_ROW_GROUPS;
    for rg in [5, 7, 8, 4] {
        if padded(rg) + m / 16 <= padded(best) {
            best = rg;
        }
    }
    best
}

/// `matmul_reg` covers a 32x32 tile of C per workgroup.
const REG_TILE: usize = 32;

/// `matmul_tiled`'s tilings (its `SIDE`: a workgroup of SIDE x SIDE invocations of 8x8 outputs,
/// so square tiles of 8 * SIDE), largest first: [`launch_plan`] takes the first that launches two
/// workgroups per compute unit (with the reduction split where that helps). 128x128 tiles for big
/// products; 64x64 and 32x32 ones for products too small to fill the device with larger tiles.
pub const TILED_SIDES: [usize; 3] = [16, 8, 4];
/// `matmul_sg`'s row groups for the small tile: 32 rows x 32 columns.
const SG_SMALL_ROW_GROUPS: usize = 4;

/// A kernel with its constants, the grid of one split (x, y, batch) and the granule of a split
/// chunk along K.
type Tiling = (Kernel, [u32; 3], usize);

/// One tiling of a product: the kernel with its constants, the grid of one split (x, y, batch)
/// and the granule of a split chunk along K. `size`: 0 for the family's default tile, larger for
/// smaller tiles (`matmul_tiled`: [`TILED_SIDES`]; `matmul_sg`: 32 rows from 1 on; `matmul_reg`
/// has only 32x32); `None` past the family's last.
fn tiling(family: MatmulKernel, d: &MatmulDims, size: usize) -> Option<Tiling> {
    let batch = d.batch as u32;
    let trans = |k: Kernel| {
        k.with("TRANS_A", d.trans_a as u32)
            .with("TRANS_B", d.trans_b as u32)
    };
    match family {
        MatmulKernel::Tiled => {
            let side = match FORCED_SIDE.with(|s| s.get()).or(env().tiled_side) {
                Some(forced) if size == 0 => forced,
                Some(_) => return None,
                None => *TILED_SIDES.get(size)?,
            };
            let kernel = trans(Kernel::new("matmul", "matmul_tiled")).with("SIDE", side as u32);
            let tile = 8 * side;
            let groups = [d.n.div_ceil(tile) as u32, d.m.div_ceil(tile) as u32, batch];
            Some((kernel, groups, 1))
        }
        MatmulKernel::Subgroup if size <= 1 => {
            let mut rg = sg_row_groups(d.m);
            if size == 1 {
                rg = rg.min(SG_SMALL_ROW_GROUPS);
            }
            let kernel =
                trans(Kernel::new("matmul_subgroup", "matmul_sg")).with("ROW_GROUPS", rg as u32);
            let rows = 8 * rg;
            let groups = [d.n.div_ceil(32) as u32, d.m.div_ceil(rows) as u32, batch];
            Some((kernel, groups, 4))
        }
        MatmulKernel::Subgroup => None,
        _ if size == 0 => {
            let kernel = trans(Kernel::new("matmul", "matmul_reg"));
            let groups = [
                d.n.div_ceil(REG_TILE) as u32,
                d.m.div_ceil(REG_TILE) as u32,
                batch,
            ];
            Some((kernel, groups, 1))
        }
        _ => None,
    }
}

/// How one product is launched: the kernel, the grid of one split (x, y, batch) and the split of
/// the reduction. The launch runs `groups[0] * groups[1] * groups[2] * splits` workgroups of the
/// kernel (grid z = batch * splits), then one `splitk_sum` when `splits > 1`.
#[derive(Clone, Debug)]
pub struct GemmLaunch {
    pub family: MatmulKernel,
    pub kernel: Kernel,
    pub groups: [u32; 3],
    /// Chunks of the reduction (1: not split).
    pub splits: usize,
    /// Length of each chunk along K (the last may be shorter; 0 when not split). A multiple of 4
    /// for `matmul_sg`, whose k loop takes 4 steps at a time.
    pub chunk: usize,
}

impl GemmLaunch {
    /// Workgroups of the product kernel (all splits together).
    pub fn workgroups(&self) -> u64 {
        self.groups.iter().map(|&g| g as u64).product::<u64>() * self.splits as u64
    }
}

/// The launch of a product of sizes `d` on `target` under the current kernel choice
/// ([`with_matmul_kernel`], `UNREID_MATMUL`) and split choice ([`with_split_k`],
/// `UNREID_SPLIT_K`, else [`split_k`]). What [`Tensor::matmul_t`] runs on a GPU device, and what a
/// dry run for another device counts.
///
/// The tile is the family's largest (128x128 for `matmul_tiled`, (8 x ROW_GROUPS) x 32 for
/// `matmul_sg`) unless that cannot launch two workgroups per compute unit even with the automatic
/// split of the reduction (chunks of at least [`MIN_SPLIT_K`]): then the next smaller tile that
/// can, else the one with the most output tiles (issue 16: the head's products, e.g. 64 x 2048 x
/// 751, take 96 workgroups in 64x64 tiles and 288 in 32x32 ones on 132 compute units). Smaller
/// tiles do not change the sums each output takes (the same k order), only how outputs are
/// grouped.
pub fn launch_plan(target: &GemmTarget, d: &MatmulDims) -> GemmLaunch {
    let family = family(target, d);
    let mut filling = None;
    let mut most_tiles: Option<(u64, Tiling)> = None;
    for size in 0.. {
        let Some(tiles) = tiling(family, d, size) else {
            break;
        };
        let (splits, _) = auto_split(target, d, tiles.1, tiles.2);
        let output_tiles = tiles.1[0] as u64 * tiles.1[1] as u64;
        if output_tiles * tiles.1[2] as u64 * splits as u64 >= 2 * target.compute_units as u64 {
            filling = Some(tiles);
            break;
        }
        if most_tiles
            .as_ref()
            .is_none_or(|(most, _)| output_tiles > *most)
        {
            most_tiles = Some((output_tiles, tiles));
        }
    }
    let (kernel, groups, granule) = filling
        .or(most_tiles.map(|(_, tiles)| tiles))
        .expect("every family has a default tile");
    let (splits, chunk) = split_plan(target, d, groups, granule);
    GemmLaunch {
        family,
        kernel,
        groups,
        splits,
        chunk,
    }
}

/// Shortest chunk of K a split-K workgroup sums when the split is chosen automatically.
const MIN_SPLIT_K: usize = 256;
/// Largest partial-product buffer an automatic split may allocate (bytes).
const MAX_SPLIT_BYTES: u64 = 256 << 20;

/// A guess at the adapter's compute units (wgpu does not report them): the host's threads on CPU
/// adapters, 128 on discrete GPUs (an A100 has 108 SMs, an H100 132, an RTX 4090 128), 16 on
/// integrated and other GPUs. [`with_compute_units`], else `UNREID_COMPUTE_UNITS`, overrides the
/// guess.
pub fn compute_units(gpu: &Gpu) -> usize {
    if let Some(n) = FORCED_UNITS.with(|u| u.get()).or(env().units) {
        return n;
    }
    match gpu.summary().device_type {
        wgpu::DeviceType::Cpu => env().host_threads,
        wgpu::DeviceType::DiscreteGpu => 128,
        _ => 16,
    }
}

/// How many chunks to split a product's reduction into so that it launches at least two
/// workgroups per compute unit: `tiles` output tiles per product x `batch` products fill
/// `units` compute units already -> 1; otherwise enough chunks to reach 2 x `units` workgroups,
/// each chunk at least [`MIN_SPLIT_K`] long, the partials at most `max_partial_elems` floats
/// (`m * n * batch` each split) and the grid's z (`batch * splits`) at most `max_z`.
pub fn split_k(
    d: &MatmulDims,
    tiles: usize,
    units: usize,
    max_partial_elems: usize,
    max_z: usize,
) -> usize {
    let groups = tiles * d.batch;
    let target = 2 * units;
    if groups >= target || d.k < 2 * MIN_SPLIT_K {
        return 1;
    }
    let per_split = (d.m * d.n * d.batch).max(1);
    target
        .div_ceil(groups.max(1))
        .min(d.k / MIN_SPLIT_K)
        .min(max_partial_elems / per_split)
        .min(max_z / d.batch.max(1))
        .max(1)
}

/// The split for one launch of `groups` workgroups: forced by [`with_split_k`] or
/// `UNREID_SPLIT_K`, else [`split_k`]; then the chunk length (rounded up to a multiple of
/// `granule`), so that (chunk, splits) with splits = ceil(K / chunk) is what the shader
/// recomputes. (1, 0) when the product is not split.
fn split_plan(t: &GemmTarget, d: &MatmulDims, groups: [u32; 3], granule: usize) -> (usize, usize) {
    let forced = FORCED_SPLIT.with(|k| k.get()).or(env().split);
    match forced {
        Some(n) => {
            let n = n
                .min(t.max_workgroups / d.batch.max(1))
                .min(t.max_binding_bytes as usize / 4 / (d.m * d.n * d.batch).max(1));
            chunked(d, n, granule)
        }
        None => auto_split(t, d, groups, granule),
    }
}

/// The automatic split ([`split_k`]) of a launch of `groups` workgroups, as (splits, chunk)
/// (see [`split_plan`]).
fn auto_split(t: &GemmTarget, d: &MatmulDims, groups: [u32; 3], granule: usize) -> (usize, usize) {
    let max_elems = (t.max_binding_bytes.min(MAX_SPLIT_BYTES) / 4) as usize;
    let tiles = (groups[0] * groups[1]) as usize;
    let wanted = split_k(d, tiles, t.compute_units, max_elems, t.max_workgroups);
    chunked(d, wanted, granule)
}

/// `wanted` chunks of K as (splits, chunk): the chunk rounded up to a multiple of `granule`,
/// splits = ceil(K / chunk) (what the shader recomputes); (1, 0) when not split.
fn chunked(d: &MatmulDims, wanted: usize, granule: usize) -> (usize, usize) {
    let wanted = wanted.clamp(1, d.k.max(1));
    if wanted == 1 {
        return (1, 0);
    }
    let chunk = d.k.div_ceil(wanted).next_multiple_of(granule);
    match d.k.div_ceil(chunk) {
        1 => (1, 0),
        splits => (splits, chunk),
    }
}

/// The parameter block of `matmul_tiled` / `matmul_reg` (shaders/matmul.wgsl's `Params`): sizes,
/// batch strides (0 broadcasts a 2-D operand), C's stride, and the split-K chunk (0: no split).
fn reg_params(d: &MatmulDims, chunk: usize) -> Params {
    Params::new()
        .usize(d.m)
        .usize(d.n)
        .usize(d.k)
        .usize(d.batch)
        .usize(if d.a_batched { d.m * d.k } else { 0 })
        .usize(if d.b_batched { d.k * d.n } else { 0 })
        .usize(d.m * d.n)
        .usize(chunk)
}

/// Records one product as `plan` says: the kernel on operand buffers `a`, `b` with the
/// parameter block `params(chunk)` straight into `out`, or, split, with the reduction cut into
/// `splits` chunks (workgroup z = product * splits + chunk index), each writing a partial [M, N]
/// product, then `splitk_sum` adding the partials into `out` in chunk order.
fn launch_split_k(
    gpu: &Arc<Gpu>,
    plan: &GemmLaunch,
    params: impl Fn(usize) -> Params,
    (a, b): (&GpuBuffer, &GpuBuffer),
    d: &MatmulDims,
    out: &GpuBuffer,
) -> Result<()> {
    let groups = plan.groups;
    if plan.splits <= 1 {
        gpu.dispatch(&plan.kernel, params(0).bytes(), &[a, b, out], groups)?;
        return Ok(());
    }
    let (mn, splits) = (d.m * d.n, plan.splits);
    let partials = alloc_f32(gpu, d.batch * splits * mn, "matmul split-K partials")?;
    gpu.dispatch(
        &plan.kernel,
        params(plan.chunk).bytes(),
        &[a, b, &partials],
        [groups[0], groups[1], (d.batch * splits) as u32],
    )?;
    let sum = Params::new()
        .usize(mn)
        .usize(splits)
        .usize(0)
        .usize(d.batch)
        .usize(0)
        .usize(0)
        .usize(0)
        .usize(0);
    gpu.dispatch(
        &Kernel::new("matmul", "splitk_sum"),
        sum.bytes(),
        &[&partials, &partials, out],
        crate::gpu::grid_1d((d.batch * mn) as u32, 256),
    )?;
    Ok(())
}

/// The entry point a product of these sizes runs on `gpu` under the current kernel choice.
pub fn matmul_entry(gpu: &Gpu, d: &MatmulDims) -> &'static str {
    launch_plan(&GemmTarget::of(gpu), d).kernel.entry
}

/// `t` ([.., R, C] on `gpu`) copied into zeros of shape [.., rows, cols] (`t` itself if equal).
fn zero_pad(gpu: &Arc<Gpu>, t: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    let r = t.rank();
    let (have_rows, have_cols) = (t.shape()[r - 2], t.shape()[r - 1]);
    if (have_rows, have_cols) == (rows, cols) {
        return Ok(t.clone());
    }
    let batch: usize = t.shape()[..r - 2].iter().product();
    let out = alloc_f32(gpu, batch * rows * cols, "matmul operand padding")?;
    let params = Params::new()
        .usize(have_rows)
        .usize(have_cols)
        .usize(rows)
        .usize(batch)
        .usize(cols)
        .u32(0)
        .u32(0)
        .u32(0);
    let x = t.gpu_buffer().unwrap();
    gpu.dispatch(
        &Kernel::new("matmul", "pad"),
        params.bytes(),
        &[x, x, &out],
        [cols.div_ceil(256) as u32, rows as u32, batch as u32],
    )?;
    let mut shape = t.shape()[..r - 2].to_vec();
    shape.extend([rows, cols]);
    Ok(Tensor::from_parts(
        shape,
        DType::F32,
        t.device().clone(),
        Data::Gpu(out.into()),
    ))
}

/// Whether `zero_pad`'s grid (rows in y, batch in z) fits the adapter for every operand, and
/// every zero-padded operand fits one binding (`Gpu::max_binding_bytes`); else `matmul_reg`
/// runs on the operands as they are, so padding never makes a product that fits fail.
fn pad_fits(t: &GemmTarget, d: &MatmulDims) -> bool {
    let max = t.max_workgroups;
    let rows = d.m.max(d.n).max(d.k.next_multiple_of(4));
    let (m4, k4, n4) = (
        d.m.next_multiple_of(4),
        d.k.next_multiple_of(4),
        d.n.next_multiple_of(4),
    );
    let a_bytes = 4 * (if d.a_batched { d.batch } else { 1 } * m4 * k4) as u64;
    let b_bytes = 4 * (if d.b_batched { d.batch } else { 1 } * k4 * n4) as u64;
    let limit = t.max_binding_bytes;
    rows <= max && d.batch <= max && a_bytes <= limit && b_bytes <= limit
}

/// Records `op(a) op(b)` into `out` as [`launch_plan`] says for `gpu`.
///
/// `matmul_sg` loads vec4s along the contiguous axis of each operand and its k loop takes 4 steps
/// at a time, so for it operands whose contiguous axis or K is not a multiple of 4 are first
/// copied with zeros appended (the zeros add nothing to C; padded rows and columns of C are never
/// stored). The copy (matmul.wgsl's `pad`) is O(size of the operand), small next to the product
/// (`Tensor::concat` with zeros cost 30x the product itself at 64x2048 x 2048x751).
fn launch(gpu: &Arc<Gpu>, a: &Tensor, b: &Tensor, d: &MatmulDims, out: &GpuBuffer) -> Result<()> {
    PRODUCT_LOG.with(|l| {
        if let Some(log) = l.borrow_mut().as_mut() {
            log.push(*d);
        }
    });
    let plan = launch_plan(&GemmTarget::of(gpu), d);
    if plan.family != MatmulKernel::Subgroup {
        let buffers = (a.gpu_buffer().unwrap(), b.gpu_buffer().unwrap());
        return launch_split_k(gpu, &plan, |chunk| reg_params(d, chunk), buffers, d, out);
    }
    let (m4, k4, n4) = (
        d.m.next_multiple_of(4),
        d.k.next_multiple_of(4),
        d.n.next_multiple_of(4),
    );
    let a = if d.trans_a {
        zero_pad(gpu, a, k4, m4)?
    } else {
        zero_pad(gpu, a, d.m, k4)?
    };
    let b = if d.trans_b {
        zero_pad(gpu, b, d.n, k4)?
    } else {
        zero_pad(gpu, b, k4, n4)?
    };
    // Row strides of the stored (padded) operands, in vec4s.
    let a_ld = if d.trans_a { m4 } else { k4 } / 4;
    let b_ld = if d.trans_b { k4 } else { n4 } / 4;
    let a_rows = if d.trans_a { k4 } else { d.m };
    let b_rows = if d.trans_b { d.n } else { k4 };
    // matmul_subgroup.wgsl's Params; its split chunk counts vec4 steps of k.
    let params = |chunk: usize| {
        Params::new()
            .usize(d.m)
            .usize(d.n)
            .usize(k4 / 4)
            .usize(d.batch)
            .usize(if d.a_batched { a_rows * a_ld * 4 } else { 0 })
            .usize(if d.b_batched { b_rows * b_ld * 4 } else { 0 })
            .usize(d.m * d.n)
            .usize(a_ld)
            .usize(b_ld)
            .usize(chunk / 4)
    };
    let buffers = (a.gpu_buffer().unwrap(), b.gpu_buffer().unwrap());
    launch_split_k(gpu, &plan, params, buffers, d, out)
}

fn dims(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<(MatmulDims, Vec<usize>)> {
    if a.rank() < 2 || b.rank() < 2 {
        return shape_err(
            "matmul",
            format!("needs matrices, got {:?} and {:?}", a.shape(), b.shape()),
        );
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (a_rows, a_cols) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (b_rows, b_cols) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    let (m, k) = if trans_a {
        (a_cols, a_rows)
    } else {
        (a_rows, a_cols)
    };
    let (k2, n) = if trans_b {
        (b_cols, b_rows)
    } else {
        (b_rows, b_cols)
    };
    let (a_batch, b_batch) = (&a.shape()[..ra - 2], &b.shape()[..rb - 2]);
    if k != k2 {
        return shape_err(
            "matmul",
            format!(
                "inner sizes differ: {:?}{} x {:?}{}",
                a.shape(),
                if trans_a { "^T" } else { "" },
                b.shape(),
                if trans_b { "^T" } else { "" }
            ),
        );
    }
    let batch_shape = match (a_batch.is_empty(), b_batch.is_empty()) {
        (_, true) => a_batch.to_vec(),
        (true, false) => b_batch.to_vec(),
        _ if a_batch == b_batch => a_batch.to_vec(),
        _ => {
            return shape_err(
                "matmul",
                format!("batch dims {a_batch:?} and {b_batch:?} differ"),
            )
        }
    };
    let mut out_shape = batch_shape.clone();
    out_shape.extend([m, n]);
    let d = MatmulDims {
        batch: batch_shape.iter().product(),
        m,
        k,
        n,
        trans_a,
        trans_b,
        a_batched: !a_batch.is_empty(),
        b_batched: !b_batch.is_empty(),
    };
    Ok((d, out_shape))
}

fn matmul_raw(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    same_device("matmul", &[a, b])?;
    a.expect_dtype("matmul", DType::F32)?;
    b.expect_dtype("matmul", DType::F32)?;
    let (d, out_shape) = dims(a, b, trans_a, trans_b)?;
    let data = match a.device() {
        Device::Gpu(g) => {
            let out = alloc_f32(g, d.batch * d.m * d.n, "matmul output")?;
            launch(g, a, b, &d, &out)?;
            Data::Gpu(out.into())
        }
        _ => host_float2!(a, b, |x, y| cpu::matmul::matmul(x, y, d)),
    };
    Ok(Tensor::from_parts(
        out_shape,
        DType::F32,
        a.device().clone(),
        data,
    ))
}

impl Tensor {
    /// Matrix product over the last two dims, batched over the leading ones (equal, or one side 2-D).
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.matmul_t(other, false, false)
    }

    /// `op(self) * op(other)` where op transposes the last two dims when asked (no copy is made).
    pub fn matmul_t(&self, other: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        let out = matmul_raw(self, other, trans_a, trans_b)?;
        let (a, b) = (self.clone(), other.clone());
        Ok(record(out, "matmul", &[self, other], move |g, needs| {
            // With C = op(A) op(B): d op(A) = dC op(B)^T and d op(B) = op(A)^T dC.
            let ga = needs[0]
                .then(|| {
                    if trans_a {
                        b.matmul_t(g, trans_b, true)
                    } else {
                        g.matmul_t(&b, false, !trans_b)
                    }
                })
                .transpose()?;
            let gb = needs[1]
                .then(|| {
                    if trans_b {
                        g.matmul_t(&a, true, trans_a)
                    } else {
                        a.matmul_t(g, !trans_a, false)
                    }
                })
                .transpose()?;
            Ok(vec![
                ga.map(|t| t.sum_to_shape(a.shape())).transpose()?,
                gb.map(|t| t.sum_to_shape(b.shape())).transpose()?,
            ])
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::sg_row_groups;

    #[test]
    fn row_groups_fit_the_rows() {
        assert_eq!(sg_row_groups(1), 1);
        assert_eq!(sg_row_groups(20), 3);
        assert_eq!(sg_row_groups(64), 8);
        assert_eq!(sg_row_groups(100), 7);
        assert_eq!(sg_row_groups(1024), 6);
        assert_eq!(sg_row_groups(2048), 6);
    }
}
