// Batched matmul for CPU adapters (lavapipe): C[b] = op(A[b]) * op(B[b]), the layouts of matmul.wgsl
// (A [M,K] or [K,M] when TRANS_A, B [K,N] or [N,K] when TRANS_B, C [M,N], row-major, batch stride
// 0 = broadcast), read through vec4 bindings: the contiguous axis of each stored operand is padded
// to a multiple of 4 (row strides a_ld, b_ld in vec4s), and K to 4*kq with zeros (src/ops/matmul.rs).
//
// Why this shape: lavapipe runs 8 invocations as the 8 lanes of one AVX2 vector, and every storage
// load is a per-lane loop (about as dear as 20 FMAs per element), while registers and
// subgroupBroadcast (one lane's value splatted to all 8) are nearly free. So one workgroup = one
// subgroup of 8 lanes owns a (8*ROW_GROUPS) x 32 tile of C: lane l keeps 4 columns (one vec4) of
// every tile row in registers; per 4 steps of k each lane makes 4 vec4 loads of B (its own columns)
// and one vec4 load of A per row group, and the 8 lanes' A values reach everyone by broadcast.
// That is 32*ROW_GROUPS FMAs (vec4) per load instead of about 2 for a plain 4x4 block.
// No workgroup memory, no barriers; rows and columns past the edge are clamped on load (their
// results are computed and dropped), so the k loop has no bounds tests.
//
// Needs subgroups of at least 8 lanes (src/ops/matmul.rs uses matmul.wgsl's matmul_reg otherwise).
// ROW_GROUPS (1..8, override): rows of C per workgroup / 8. The row groups are written out and
// switched by the constant, since lavapipe does not unroll a loop over them (measured 3.5x slower).
//
// Split-K, as matmul.wgsl's kernels: with p.kcq > 0 the kq blocks of 4 k steps are cut into
// splits = ceil(kq / kcq) chunks of kcq blocks; grid z runs over batch * splits, workgroup
// z = b * splits + s sums the blocks [s * kcq, min(kq, (s + 1) * kcq)) of product b and writes
// its partial product to C[b * splits + s] (c_stride = M * N); matmul.wgsl's `splitk_sum` adds
// the partials. p.kcq = 0: one chunk, z = batch.
//
// Dispatch: (ceil(N/32), ceil(M/(8*ROW_GROUPS)), batch * splits). Workgroup 8x1x1.
// Bindings: 0 params, 1 a (vec4), 2 b (vec4), 3 c.

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override ROW_GROUPS: u32 = 6u;

// kq: K / 4 after padding; strides in floats; a_ld, b_ld: row strides of the stored operands in vec4s;
// kcq: the split-K chunk in blocks of 4 k steps (0: no split).
struct Params { m: u32, n: u32, kq: u32, batch: u32, a_stride: u32, b_stride: u32, c_stride: u32, a_ld: u32, b_ld: u32, kcq: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// The 8 rows of one row group over 4 steps of k, from the vec4 `av` each lane loaded
// (see a_index): row i is vec4(A[i, k0], A[i, k0+1], A[i, k0+2], A[i, k0+3]).
fn rows_of(av: vec4<f32>) -> array<vec4<f32>, 8> {
    if (TRANS_A) {
        // Lane l holds A^T[k0 + l/2, 4*(l%2) .. +4]: row i's k-th value sits in lane 2k + i/4.
        return array<vec4<f32>, 8>(
            vec4(subgroupBroadcast(av.x, 0u), subgroupBroadcast(av.x, 2u), subgroupBroadcast(av.x, 4u), subgroupBroadcast(av.x, 6u)),
            vec4(subgroupBroadcast(av.y, 0u), subgroupBroadcast(av.y, 2u), subgroupBroadcast(av.y, 4u), subgroupBroadcast(av.y, 6u)),
            vec4(subgroupBroadcast(av.z, 0u), subgroupBroadcast(av.z, 2u), subgroupBroadcast(av.z, 4u), subgroupBroadcast(av.z, 6u)),
            vec4(subgroupBroadcast(av.w, 0u), subgroupBroadcast(av.w, 2u), subgroupBroadcast(av.w, 4u), subgroupBroadcast(av.w, 6u)),
            vec4(subgroupBroadcast(av.x, 1u), subgroupBroadcast(av.x, 3u), subgroupBroadcast(av.x, 5u), subgroupBroadcast(av.x, 7u)),
            vec4(subgroupBroadcast(av.y, 1u), subgroupBroadcast(av.y, 3u), subgroupBroadcast(av.y, 5u), subgroupBroadcast(av.y, 7u)),
            vec4(subgroupBroadcast(av.z, 1u), subgroupBroadcast(av.z, 3u), subgroupBroadcast(av.z, 5u), subgroupBroadcast(av.z, 7u)),
            vec4(subgroupBroadcast(av.w, 1u), subgroupBroadcast(av.w, 3u), subgroupBroadcast(av.w, 5u), subgroupBroadcast(av.w, 7u))
        );
    }
    return array<vec4<f32>, 8>(
        subgroupBroadcast(av, 0u),
        subgroupBroadcast(av, 1u),
        subgroupBroadcast(av, 2u),
        subgroupBroadcast(av, 3u),
        subgroupBroadcast(av, 4u),
        subgroupBroadcast(av, 5u),
        subgroupBroadcast(av, 6u),
        subgroupBroadcast(av, 7u)
    );
}

// acc[i] += rows[i] (as a 1x4 row over k) * the 4x4 block of B (b0..b3 = its k rows).
fn rank4(acc: ptr<function, array<vec4<f32>, 8>>, av: vec4<f32>, b0: vec4<f32>, b1: vec4<f32>, b2: vec4<f32>, b3: vec4<f32>) {
    let r = rows_of(av);
    (*acc)[0] = fma(vec4(r[0].w), b3, fma(vec4(r[0].z), b2, fma(vec4(r[0].y), b1, fma(vec4(r[0].x), b0, (*acc)[0]))));
    (*acc)[1] = fma(vec4(r[1].w), b3, fma(vec4(r[1].z), b2, fma(vec4(r[1].y), b1, fma(vec4(r[1].x), b0, (*acc)[1]))));
    (*acc)[2] = fma(vec4(r[2].w), b3, fma(vec4(r[2].z), b2, fma(vec4(r[2].y), b1, fma(vec4(r[2].x), b0, (*acc)[2]))));
    (*acc)[3] = fma(vec4(r[3].w), b3, fma(vec4(r[3].z), b2, fma(vec4(r[3].y), b1, fma(vec4(r[3].x), b0, (*acc)[3]))));
    (*acc)[4] = fma(vec4(r[4].w), b3, fma(vec4(r[4].z), b2, fma(vec4(r[4].y), b1, fma(vec4(r[4].x), b0, (*acc)[4]))));
    (*acc)[5] = fma(vec4(r[5].w), b3, fma(vec4(r[5].z), b2, fma(vec4(r[5].y), b1, fma(vec4(r[5].x), b0, (*acc)[5]))));
    (*acc)[6] = fma(vec4(r[6].w), b3, fma(vec4(r[6].z), b2, fma(vec4(r[6].y), b1, fma(vec4(r[6].x), b0, (*acc)[6]))));
    (*acc)[7] = fma(vec4(r[7].w), b3, fma(vec4(r[7].z), b2, fma(vec4(r[7].y), b1, fma(vec4(r[7].x), b0, (*acc)[7]))));
}

// Index (in vec4s) of what lane l loads for row group g at k block kb.
fn a_index(base: u32, row0: u32, l: u32, kb: u32) -> u32 {
    if (TRANS_A) {
        return base + (kb * 4u + l / 2u) * p.a_ld + min(row0 / 4u + l % 2u, p.a_ld - 1u);
    }
    return base + min(row0 + l, p.m - 1u) * p.a_ld + kb;
}

fn store_rows(acc: ptr<function, array<vec4<f32>, 8>>, c_base: u32, row0: u32, col: u32) {
    for (var i = 0u; i < 8u; i = i + 1u) {
        let row = row0 + i;
        if (row < p.m) {
            let o = c_base + row * p.n + col;
            let v = (*acc)[i];
            if (col < p.n) { c[o] = v.x; }
            if (col + 1u < p.n) { c[o + 1u] = v.y; }
            if (col + 2u < p.n) { c[o + 2u] = v.z; }
            if (col + 3u < p.n) { c[o + 3u] = v.w; }
        }
    }
}

@compute @workgroup_size(8, 1, 1)
fn matmul_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) l: u32) {
    // The product and the k blocks of grid slice z (see Split-K above).
    var prod = wid.z;
    var kb0 = 0u;
    var kb1 = p.kq;
    if (p.kcq > 0u) {
        let splits = (p.kq + p.kcq - 1u) / p.kcq;
        prod = wid.z / splits;
        kb0 = (wid.z % splits) * p.kcq;
        kb1 = min(p.kq, kb0 + p.kcq);
    }
    let row0 = wid.y * 8u * ROW_GROUPS;
    let a_base = prod * p.a_stride / 4u;
    let b_base = prod * p.b_stride / 4u;
    // This lane's 4 columns; past the edge, load the last ones (results dropped at the store).
    let col = (wid.x * 8u + l) * 4u;
    var acc0: array<vec4<f32>, 8>;
    var acc1: array<vec4<f32>, 8>;
    var acc2: array<vec4<f32>, 8>;
    var acc3: array<vec4<f32>, 8>;
    var acc4: array<vec4<f32>, 8>;
    var acc5: array<vec4<f32>, 8>;
    var acc6: array<vec4<f32>, 8>;
    var acc7: array<vec4<f32>, 8>;
    for (var kb = kb0; kb < kb1; kb = kb + 1u) {
        var b0: vec4<f32>;
        var b1: vec4<f32>;
        var b2: vec4<f32>;
        var b3: vec4<f32>;
        if (TRANS_B) {
            // B^T rows are columns of B: load 4 columns' k blocks, transpose in registers.
            let t0 = b[b_base + min(col, p.n - 1u) * p.b_ld + kb];
            let t1 = b[b_base + min(col + 1u, p.n - 1u) * p.b_ld + kb];
            let t2 = b[b_base + min(col + 2u, p.n - 1u) * p.b_ld + kb];
            let t3 = b[b_base + min(col + 3u, p.n - 1u) * p.b_ld + kb];
            b0 = vec4(t0.x, t1.x, t2.x, t3.x);
            b1 = vec4(t0.y, t1.y, t2.y, t3.y);
            b2 = vec4(t0.z, t1.z, t2.z, t3.z);
            b3 = vec4(t0.w, t1.w, t2.w, t3.w);
        } else {
            let nq = p.b_ld;
            let cq = b_base + min(col / 4u, nq - 1u);
            b0 = b[cq + (kb * 4u) * nq];
            b1 = b[cq + (kb * 4u + 1u) * nq];
            b2 = b[cq + (kb * 4u + 2u) * nq];
            b3 = b[cq + (kb * 4u + 3u) * nq];
        }
        if (ROW_GROUPS > 0u) { rank4(&acc0, a[a_index(a_base, row0 + 0u, l, kb)], b0, b1, b2, b3); }
        if (ROW_GROUPS > 1u) { rank4(&acc1, a[a_index(a_base, row0 + 8u, l, kb)], b0, b1, b2, b3); }
        if (ROW_GROUPS > 2u) { rank4(&acc2, a[a_index(a_base, row0 + 16u, l, kb)], b0, b1, b2, b3); }
        if (ROW_GROUPS > 3u) { rank4(&acc3, a[a_index(a_base, row0 + 24u, l, kb)], b0, b1, b2, b3); }
        if (ROW_GROUPS > 4u) { rank4(&acc4, a[a_index(a_base, row0 + 32u, l, kb)], b0, b1, b2, b3); }
        if (ROW_GROUPS > 5u) { rank4(&acc5, a[a_index(a_base, row0 + 40u, l, kb)], b0, b1, b2, b3); }
        if (ROW_GROUPS > 6u) { rank4(&acc6, a[a_index(a_base, row0 + 48u, l, kb)], b0, b1, b2, b3); }
        if (ROW_GROUPS > 7u) { rank4(&acc7, a[a_index(a_base, row0 + 56u, l, kb)], b0, b1, b2, b3); }
    }
    let c_base = wid.z * p.c_stride;
    if (ROW_GROUPS > 0u) { store_rows(&acc0, c_base, row0 + 0u, col); }
    if (ROW_GROUPS > 1u) { store_rows(&acc1, c_base, row0 + 8u, col); }
    if (ROW_GROUPS > 2u) { store_rows(&acc2, c_base, row0 + 16u, col); }
    if (ROW_GROUPS > 3u) { store_rows(&acc3, c_base, row0 + 24u, col); }
    if (ROW_GROUPS > 4u) { store_rows(&acc4, c_base, row0 + 32u, col); }
    if (ROW_GROUPS > 5u) { store_rows(&acc5, c_base, row0 + 40u, col); }
    if (ROW_GROUPS > 6u) { store_rows(&acc6, c_base, row0 + 48u, col); }
    if (ROW_GROUPS > 7u) { store_rows(&acc7, c_base, row0 + 56u, col); }
}
