// Batched matmul: C[b] = op(A[b]) * op(B[b]), op = optional transpose (TRANS_A / TRANS_B overrides).
// A is [M,K] (or [K,M] when TRANS_A), B is [K,N] (or [N,K] when TRANS_B), C is [M,N], all row-major;
// batch strides of 0 broadcast a 2-D operand over the batch.
//
// Kernels (src/ops/matmul.rs picks one per adapter; UNREID_MATMUL forces it):
// - matmul_tiled: 8x8 outputs per invocation from workgroup-memory tiles, for real GPUs.
// - matmul_reg: a 4x4 block per invocation, no workgroup memory, any shape and layout; on CPU
//   adapters the fallback for shapes matmul_subgroup.wgsl (the fast lavapipe kernel) cannot take.
//
// Split-K (matmul_reg and matmul_tiled; matmul_subgroup.wgsl's matmul_sg the same way): with p.kc > 0 the reduction is cut into
// splits = ceil(K / kc) chunks of kc; grid z runs over batch * splits, workgroup z = b * splits + s
// sums k in [s * kc, min(K, (s + 1) * kc)) and writes its partial product to C[b * splits + s]
// (c_stride = M * N), and `splitk_sum` adds the partials. p.kc = 0: one chunk, z = batch.
//
// matmul_reg: workgroup 8x8 invocations = a 32x32 tile of C.
// Dispatch: (ceil(N/32), ceil(M/32), batch * splits). Bindings: 0 params, 1 a, 2 b, 3 c.

override TRANS_A: bool = false;
override TRANS_B: bool = false;

struct Params { m: u32, n: u32, k: u32, batch: u32, a_stride: u32, b_stride: u32, c_stride: u32, kc: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn load_a(base: u32, row: u32, kk: u32) -> f32 {
    if (row >= p.m) { return 0.0; }
    if (TRANS_A) { return a[base + kk * p.m + row]; }
    return a[base + row * p.k + kk];
}

fn load_b(base: u32, kk: u32, col: u32) -> f32 {
    if (col >= p.n) { return 0.0; }
    if (TRANS_B) { return b[base + col * p.k + kk]; }
    return b[base + kk * p.n + col];
}

// The product index and k range of grid slice z (see Split-K above): (batch, k_begin, k_end).
fn k_range(z: u32) -> vec3<u32> {
    if (p.kc == 0u) { return vec3(z, 0u, p.k); }
    let splits = (p.k + p.kc - 1u) / p.kc;
    let s = z % splits;
    return vec3(z / splits, s * p.kc, min(p.k, (s + 1u) * p.kc));
}

@compute @workgroup_size(8, 8, 1)
fn matmul_reg(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 4u;
    let col0 = gid.x * 4u;
    let range = k_range(gid.z);
    if (row0 >= p.m || col0 >= p.n) { return; }
    let a_base = range.x * p.a_stride;
    let b_base = range.x * p.b_stride;
    var acc: array<vec4<f32>, 4>;
    for (var kk = range.y; kk < range.z; kk = kk + 1u) {
        let bv = vec4<f32>(load_b(b_base, kk, col0), load_b(b_base, kk, col0 + 1u),
                           load_b(b_base, kk, col0 + 2u), load_b(b_base, kk, col0 + 3u));
        acc[0] = acc[0] + load_a(a_base, row0, kk) * bv;
        acc[1] = acc[1] + load_a(a_base, row0 + 1u, kk) * bv;
        acc[2] = acc[2] + load_a(a_base, row0 + 2u, kk) * bv;
        acc[3] = acc[3] + load_a(a_base, row0 + 3u, kk) * bv;
    }
    let c_base = gid.z * p.c_stride;
    for (var r = 0u; r < 4u; r = r + 1u) {
        let row = row0 + r;
        if (row < p.m) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                if (col0 + j < p.n) { c[c_base + row * p.n + col0 + j] = acc[r][j]; }
            }
        }
    }
}


// matmul_tiled: register-blocked tiles in workgroup memory, for real GPUs. A workgroup of
// SIDE x SIDE invocations owns a square tile of C of 8 * SIDE rows and columns; invocation
// (tx, ty) accumulates 8 x 8 outputs in registers: rows h * 4 * SIDE + ty * 4 + i and columns
// g * 4 * SIDE + tx * 4 + j (h, g < 2, i, j < 4), so the vec4 reads of one k step in a subgroup
// are either one broadcast or consecutive vec4s (no bank conflicts), and each k step does 64
// multiply-adds for 4 workgroup-memory reads. Each pass stages SIDE steps of the reduction,
// columns of op(A) and rows of op(B) as [k][m] and [k][n] vec4 arrays (zero past the edges,
// transposes resolved while staging): 8 values of each per invocation, whose loads for the next
// pass are issued before this pass is multiplied (the global-memory latency hides behind the
// arithmetic). Everything an invocation keeps (16 vec4 accumulators, 2 x 8 staged values) is
// spelled out by hand, not indexed by loop counters: a driver that does not unroll such loops
// keeps indexed arrays in local memory (measured on an H200 through Vulkan, issue 16, 4096^3:
// 2.0 TFLOP/s with loop-indexed accumulators, 7.4 with them written out, up to 23 with the staged
// values too). SIDE: 16 (128x128 tiles, 256 invocations), 8 or 4 for products too small to fill
// the device.
// Dispatch: (ceil(N / (8 SIDE)), ceil(M / (8 SIDE)), batch * splits). Bindings: 0 params, 1 a,
// 2 b, 3 c.
override SIDE: u32 = 16u;
const TILE_VECS: u32 = 512u; // SIDE x 2 SIDE vec4s at SIDE = 16
var<workgroup> a_tile: array<vec4<f32>, TILE_VECS>; // [SIDE][2 SIDE]: k, rows / 4
var<workgroup> b_tile: array<vec4<f32>, TILE_VECS>; // [SIDE][2 SIDE]: k, columns / 4

// Staging element e (< 8 SIDE^2) of a pass's A slice: (row, k) in the tile. Consecutive e take
// consecutive addresses of A's storage.
fn a_slot(e: u32) -> vec2<u32> {
    if (TRANS_A) { return vec2(e % (8u * SIDE), e / (8u * SIDE)); }
    return vec2(e / SIDE, e % SIDE);
}

// Staging element e of a pass's B slice: (k, column) in the tile.
fn b_slot(e: u32) -> vec2<u32> {
    if (TRANS_B) { return vec2(e % SIDE, e / SIDE); }
    return vec2(e / (8u * SIDE), e % (8u * SIDE));
}

// op(A)'s staging element e of the pass starting at k0: zero past the end of the k range.
fn stage_a(e: u32, base: u32, row0: u32, k0: u32, k_end: u32) -> f32 {
    let s = a_slot(e);
    if (k0 + s.y >= k_end) { return 0.0; }
    return load_a(base, row0 + s.x, k0 + s.y);
}

fn stage_b(e: u32, base: u32, col0: u32, k0: u32, k_end: u32) -> f32 {
    let s = b_slot(e);
    if (k0 + s.x >= k_end) { return 0.0; }
    return load_b(base, k0 + s.x, col0 + s.y);
}

// The position of vec4 q (rows or columns 4q .. 4q + 3) in row k of a staging tile: q XOR (k mod
// 8). Staging writes of one subgroup that run down k (non-transposed A, transposed B: 16 values
// of k for 2 rows) would otherwise all fall into 2 of the 32 banks (16-way conflicts); swizzled,
// into 16 (2-way). The XOR keeps q within its aligned group of 8, so the compute loop's
// reads stay consecutive vec4s or a broadcast. Measured on an H200 (issue 16): ResNet-50 b64 step
// 544 -> 580 images/s.
fn swizzle(k: u32, q: u32) -> u32 {
    return q ^ (k & 7u);
}

fn put_a(e: u32, v: f32) {
    let s = a_slot(e);
    a_tile[s.y * 2u * SIDE + swizzle(s.y, s.x / 4u)][s.x % 4u] = v;
}

fn put_b(e: u32, v: f32) {
    let s = b_slot(e);
    b_tile[s.x * 2u * SIDE + swizzle(s.x, s.y / 4u)][s.y % 4u] = v;
}

// One invocation's share of a pass's staging: elements me + i * SIDE^2 (i < 8) of op(A)'s slice
// (a0, a1) and of op(B)'s (b0, b1).
struct Staged { a0: vec4<f32>, a1: vec4<f32>, b0: vec4<f32>, b1: vec4<f32> }

// Loads this invocation's share of the pass starting at k0 (`stage_a` / `stage_b`).
fn stage(me: u32, ab: u32, bb: u32, row0: u32, col0: u32, k0: u32, k_end: u32) -> Staged {
    let t = SIDE * SIDE;
    return Staged(
        vec4(stage_a(me, ab, row0, k0, k_end), stage_a(me + t, ab, row0, k0, k_end),
             stage_a(me + 2u * t, ab, row0, k0, k_end), stage_a(me + 3u * t, ab, row0, k0, k_end)),
        vec4(stage_a(me + 4u * t, ab, row0, k0, k_end), stage_a(me + 5u * t, ab, row0, k0, k_end),
             stage_a(me + 6u * t, ab, row0, k0, k_end), stage_a(me + 7u * t, ab, row0, k0, k_end)),
        vec4(stage_b(me, bb, col0, k0, k_end), stage_b(me + t, bb, col0, k0, k_end),
             stage_b(me + 2u * t, bb, col0, k0, k_end), stage_b(me + 3u * t, bb, col0, k0, k_end)),
        vec4(stage_b(me + 4u * t, bb, col0, k0, k_end), stage_b(me + 5u * t, bb, col0, k0, k_end),
             stage_b(me + 6u * t, bb, col0, k0, k_end), stage_b(me + 7u * t, bb, col0, k0, k_end)),
    );
}

// Writes this invocation's share into the staging tiles (`put_a` / `put_b`).
fn put(me: u32, s: Staged) {
    let t = SIDE * SIDE;
    put_a(me, s.a0.x); put_a(me + t, s.a0.y);
    put_a(me + 2u * t, s.a0.z); put_a(me + 3u * t, s.a0.w);
    put_a(me + 4u * t, s.a1.x); put_a(me + 5u * t, s.a1.y);
    put_a(me + 6u * t, s.a1.z); put_a(me + 7u * t, s.a1.w);
    put_b(me, s.b0.x); put_b(me + t, s.b0.y);
    put_b(me + 2u * t, s.b0.z); put_b(me + 3u * t, s.b0.w);
    put_b(me + 4u * t, s.b1.x); put_b(me + 5u * t, s.b1.y);
    put_b(me + 6u * t, s.b1.z); put_b(me + 7u * t, s.b1.w);
}

// One row of outputs: columns col .. col + 3 from v0, col + 4 SIDE .. col + 4 SIDE + 3 from v1.
fn store_row(c_base: u32, row: u32, col: u32, v0: vec4<f32>, v1: vec4<f32>) {
    if (row >= p.m) { return; }
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (col + j < p.n) { c[c_base + row * p.n + col + j] = v0[j]; }
        if (col + 4u * SIDE + j < p.n) { c[c_base + row * p.n + col + 4u * SIDE + j] = v1[j]; }
    }
}

@compute @workgroup_size(SIDE, SIDE, 1)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let me = lid.y * SIDE + lid.x;
    let row0 = wid.y * 8u * SIDE;
    let col0 = wid.x * 8u * SIDE;
    let range = k_range(wid.z);
    let ab = range.x * p.a_stride;
    let bb = range.x * p.b_stride;
    let k_end = range.z;
    var staged = stage(me, ab, bb, row0, col0, range.y, k_end);
    var c00 = vec4(0.0); var c01 = vec4(0.0);
    var c10 = vec4(0.0); var c11 = vec4(0.0);
    var c20 = vec4(0.0); var c21 = vec4(0.0);
    var c30 = vec4(0.0); var c31 = vec4(0.0);
    var c40 = vec4(0.0); var c41 = vec4(0.0);
    var c50 = vec4(0.0); var c51 = vec4(0.0);
    var c60 = vec4(0.0); var c61 = vec4(0.0);
    var c70 = vec4(0.0); var c71 = vec4(0.0);
    for (var k0 = range.y; k0 < k_end; k0 = k0 + SIDE) {
        put(me, staged);
        workgroupBarrier();
        // The next pass's loads, in flight while this one is multiplied.
        let k1 = k0 + SIDE;
        if (k1 < k_end) { staged = stage(me, ab, bb, row0, col0, k1, k_end); }
        for (var kk = 0u; kk < SIDE; kk = kk + 1u) {
            let row = kk * 2u * SIDE;
            let a0 = a_tile[row + swizzle(kk, lid.y)];
            let a1 = a_tile[row + swizzle(kk, SIDE + lid.y)];
            let b0 = b_tile[row + swizzle(kk, lid.x)];
            let b1 = b_tile[row + swizzle(kk, SIDE + lid.x)];
            c00 = fma(vec4(a0.x), b0, c00); c01 = fma(vec4(a0.x), b1, c01);
            c10 = fma(vec4(a0.y), b0, c10); c11 = fma(vec4(a0.y), b1, c11);
            c20 = fma(vec4(a0.z), b0, c20); c21 = fma(vec4(a0.z), b1, c21);
            c30 = fma(vec4(a0.w), b0, c30); c31 = fma(vec4(a0.w), b1, c31);
            c40 = fma(vec4(a1.x), b0, c40); c41 = fma(vec4(a1.x), b1, c41);
            c50 = fma(vec4(a1.y), b0, c50); c51 = fma(vec4(a1.y), b1, c51);
            c60 = fma(vec4(a1.z), b0, c60); c61 = fma(vec4(a1.z), b1, c61);
            c70 = fma(vec4(a1.w), b0, c70); c71 = fma(vec4(a1.w), b1, c71);
        }
        workgroupBarrier();
    }
    let c_base = wid.z * p.c_stride;
    let col = col0 + lid.x * 4u;
    store_row(c_base, row0 + lid.y * 4u + 0u, col, c00, c01);
    store_row(c_base, row0 + lid.y * 4u + 1u, col, c10, c11);
    store_row(c_base, row0 + lid.y * 4u + 2u, col, c20, c21);
    store_row(c_base, row0 + lid.y * 4u + 3u, col, c30, c31);
    store_row(c_base, row0 + 4u * SIDE + lid.y * 4u + 0u, col, c40, c41);
    store_row(c_base, row0 + 4u * SIDE + lid.y * 4u + 1u, col, c50, c51);
    store_row(c_base, row0 + 4u * SIDE + lid.y * 4u + 2u, col, c60, c61);
    store_row(c_base, row0 + 4u * SIDE + lid.y * 4u + 3u, col, c70, c71);
}

// pad: copies X [batch, R, C] into zeros [batch, R_OUT, C_OUT] (R_OUT >= R, C_OUT >= C), so that
// matmul_sg can read operands as whole vec4 rows. Params fields reused: m = R, n = C, k = R_OUT,
// a_stride = C_OUT. Bindings: 0 params, 1 x (as a), 2 x again (unused; keeps the layout of the
// matmul kernels), 3 out (as c). Workgroup 64, each invocation 4 columns of one row.
// Dispatch: (ceil(C_OUT/256), R_OUT, batch).
@compute @workgroup_size(64, 1, 1)
fn pad(@builtin(global_invocation_id) gid: vec3<u32>) {
    _ = b[0];
    let c_out = p.a_stride;
    let row = gid.y;
    let col0 = gid.x * 4u;
    let o = (gid.z * p.k + row) * c_out + col0;
    let i = (gid.z * p.m + row) * p.n + col0;
    for (var j = 0u; j < 4u; j = j + 1u) {
        if (col0 + j < c_out) {
            var v = 0.0;
            if (row < p.m && col0 + j < p.n) { v = a[i + j]; }
            c[o + j] = v;
        }
    }
}

// splitk_sum: C[b, i] = sum over s < splits of P[(b * splits + s) * MN + i], the partial products of
// a split-K matmul_reg / matmul_tiled / matmul_sg (matmul_subgroup.wgsl), added in split order. Params fields reused: m = MN (elements
// of one product), n = splits, batch. Bindings: 0 params, 1 partials (as a), 2 partials again
// (unused; keeps the layout of the matmul kernels), 3 out (as c). Dispatch: grid_1d(batch * MN, 256).
@compute @workgroup_size(256, 1, 1)
fn splitk_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    _ = b[0];
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.m * p.batch) { return; }
    let base = (i / p.m) * p.n * p.m + i % p.m;
    var acc = 0.0;
    for (var s = 0u; s < p.n; s = s + 1u) { acc = acc + a[base + s * p.m]; }
    c[i] = acc;
}
