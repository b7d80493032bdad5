// Batched matmul: C[b] = op(A[b]) * op(B[b]), op = optional transpose (TRANS_A / TRANS_B overrides).
// A is [M,K] (or [K,M] when TRANS_A), B is [K,N] (or [N,K] when TRANS_B), C is [M,N], all row-major;
// batch strides of 0 broadcast a 2-D operand over the batch.
//
// matmul_reg: each invocation computes a 4x4 block of C in registers with no workgroup memory
// (CPU adapters such as lavapipe run a workgroup as SIMD loops on one core: barriers are dear,
// registers cheap). Workgroup 8x8 invocations = a 32x32 tile of C.
// Dispatch: (ceil(N/32), ceil(M/32), batch). Bindings: 0 params, 1 a, 2 b, 3 c.

override TRANS_A: bool = false;
override TRANS_B: bool = false;

struct Params { m: u32, n: u32, k: u32, batch: u32, a_stride: u32, b_stride: u32, c_stride: u32, _pad: u32 }
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

@compute @workgroup_size(8, 8, 1)
fn matmul_reg(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 4u;
    let col0 = gid.x * 4u;
    let batch = gid.z;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let a_base = batch * p.a_stride;
    let b_base = batch * p.b_stride;
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let bv = vec4<f32>(load_b(b_base, kk, col0), load_b(b_base, kk, col0 + 1u),
                           load_b(b_base, kk, col0 + 2u), load_b(b_base, kk, col0 + 3u));
        acc[0] = acc[0] + load_a(a_base, row0, kk) * bv;
        acc[1] = acc[1] + load_a(a_base, row0 + 1u, kk) * bv;
        acc[2] = acc[2] + load_a(a_base, row0 + 2u, kk) * bv;
        acc[3] = acc[3] + load_a(a_base, row0 + 3u, kk) * bv;
    }
    let c_base = batch * p.c_stride;
    for (var r = 0u; r < 4u; r = r + 1u) {
        let row = row0 + r;
        if (row < p.m) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                if (col0 + j < p.n) { c[c_base + row * p.n + col0 + j] = acc[r][j]; }
            }
        }
    }
}
