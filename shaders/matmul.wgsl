// Batched matmul: C[b] = op(A[b]) * op(B[b]), op = optional transpose (TRANS_A / TRANS_B overrides).
// A is [M,K] (or [K,M] when TRANS_A), B is [K,N] (or [N,K] when TRANS_B), C is [M,N], all row-major;
// batch strides of 0 broadcast a 2-D operand over the batch.
//
// Kernels (src/ops/matmul.rs picks one per adapter; UNREID_MATMUL forces it):
// - matmul_tiled: workgroup-memory tiles with barriers, for real GPUs.
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


// matmul_tiled: the workgroup (TILE_N/4) x (TILE_M/ROWS) owns a TILE_M x TILE_N tile of C; each step
// stages a TILE_M x TILE_K slice of op(A) and a TILE_K x TILE_N slice of op(B) in workgroup memory
// (zero past the edges, transposes resolved while staging), then each invocation accumulates ROWS
// rows x 4 columns of C in registers. Tile sizes are overrides (defaults 64x64x16, 4x4 per
// invocation; src/ops/matmul.rs takes 32x32x16 for products too small to fill the device); TILE_M * TILE_K and TILE_K * TILE_N must fit the staging arrays (TILE_MAX floats),
// ROWS <= 8, and the workgroup needs (TILE_N/4) * (TILE_M/ROWS) <= 256 invocations.
// Dispatch: (ceil(N/TILE_N), ceil(M/TILE_M), batch * splits). Bindings: 0 params, 1 a, 2 b, 3 c.
override TILE_M: u32 = 64u;
override TILE_N: u32 = 64u;
override TILE_K: u32 = 16u;
override ROWS: u32 = 4u;
const TILE_MAX: u32 = 2048u;
var<workgroup> a_tile: array<f32, TILE_MAX>; // [TILE_K][TILE_M]
var<workgroup> b_tile: array<f32, TILE_MAX>; // [TILE_K][TILE_N]

@compute @workgroup_size(TILE_N / 4u, TILE_M / ROWS, 1)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let threads = (TILE_N / 4u) * (TILE_M / ROWS);
    let me = lid.y * (TILE_N / 4u) + lid.x;
    let row0 = wid.y * TILE_M;
    let col0 = wid.x * TILE_N;
    let range = k_range(wid.z);
    let a_base = range.x * p.a_stride;
    let b_base = range.x * p.b_stride;
    var acc: array<vec4<f32>, 8>;
    for (var k0 = range.y; k0 < range.z; k0 = k0 + TILE_K) {
        for (var e = me; e < TILE_M * TILE_K; e = e + threads) {
            // Consecutive invocations take consecutive addresses of A's storage.
            var r: u32; var kk: u32;
            if (TRANS_A) { r = e % TILE_M; kk = e / TILE_M; } else { kk = e % TILE_K; r = e / TILE_K; }
            var v = 0.0;
            if (k0 + kk < range.z) { v = load_a(a_base, row0 + r, k0 + kk); }
            a_tile[kk * TILE_M + r] = v;
        }
        for (var e = me; e < TILE_K * TILE_N; e = e + threads) {
            var kk: u32; var j: u32;
            if (TRANS_B) { kk = e % TILE_K; j = e / TILE_K; } else { j = e % TILE_N; kk = e / TILE_N; }
            var v = 0.0;
            if (k0 + kk < range.z) { v = load_b(b_base, k0 + kk, col0 + j); }
            b_tile[kk * TILE_N + j] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk = kk + 1u) {
            let j = kk * TILE_N + lid.x * 4u;
            let bv = vec4(b_tile[j], b_tile[j + 1u], b_tile[j + 2u], b_tile[j + 3u]);
            for (var i = 0u; i < ROWS; i = i + 1u) {
                acc[i] = fma(vec4(a_tile[kk * TILE_M + lid.y * ROWS + i]), bv, acc[i]);
            }
        }
        workgroupBarrier();
    }
    let c_base = wid.z * p.c_stride;
    let col = col0 + lid.x * 4u;
    for (var i = 0u; i < ROWS; i = i + 1u) {
        let row = row0 + lid.y * ROWS + i;
        if (row < p.m) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                if (col + j < p.n) { c[c_base + row * p.n + col + j] = acc[i][j]; }
            }
        }
    }
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
