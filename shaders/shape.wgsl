// Strided copy: the one kernel behind permute, slice, concat, pad and broadcast_to.
//
// For every coordinate c of the copied shape (collapsed to at most 8 dims):
//   out[out_offset + sum(c_d * out_strides_d)] = x[in_offset + sum(c_d * in_strides_d)]
// Works on 32-bit words, so it moves f32 and i32 tensors alike.
//
// The innermost dim (`inner` elements, strides inner_in / inner_out) is cut into `chunks` runs of
// ROW elements, and each invocation copies one run: its coordinate in the outer dims (shape,
// in_strides, out_strides: `rank` of them, at most 7, the innermost outer dim last) is divided
// out once per run, not once per element. ROW (override, `Gpu::run_length`) is 1 on GPUs
// (neighbouring invocations copy neighbouring elements) and 16 on CPU adapters, where every
// element's divisions are per-lane scalar code.
// Bindings: 0 params, 1 x (u32 words), 2 out (u32 words). Workgroup 256, 2-D folded grid, one
// invocation per run (`n` runs in all).

override ROW: u32 = 1u;

struct Params {
    n: u32,
    rank: u32,
    in_offset: u32,
    out_offset: u32,
    shape: array<vec4<u32>, 2>,
    in_strides: array<vec4<u32>, 2>,
    out_strides: array<vec4<u32>, 2>,
    inner: u32,
    inner_in: u32,
    inner_out: u32,
    chunks: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

// Peels dim d (counted from the last) off `rem`, adding its coordinate times the input and
// output strides. Every vector index is a constant: lavapipe turns dynamically indexed uniform
// reads into slow per-lane loads, so the dim loop is written out rather than looped.
fn peel(rem: ptr<function, u32>, off: ptr<function, vec2<u32>>, size: u32, s_in: u32, s_out: u32) {
    let c = *rem % size;
    *rem = *rem / size;
    *off = *off + c * vec2<u32>(s_in, s_out);
}

@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (t >= p.n) { return; }
    let j = (t % p.chunks) * ROW;
    var rem = t / p.chunks;
    var off = vec2<u32>(p.in_offset, p.out_offset) + j * vec2<u32>(p.inner_in, p.inner_out);
    let r = p.rank;
    let s0 = p.shape[0]; let s1 = p.shape[1];
    let i0 = p.in_strides[0]; let i1 = p.in_strides[1];
    let o0 = p.out_strides[0]; let o1 = p.out_strides[1];
    if (r > 6u) { peel(&rem, &off, s1.z, i1.z, o1.z); }
    if (r > 5u) { peel(&rem, &off, s1.y, i1.y, o1.y); }
    if (r > 4u) { peel(&rem, &off, s1.x, i1.x, o1.x); }
    if (r > 3u) { peel(&rem, &off, s0.w, i0.w, o0.w); }
    if (r > 2u) { peel(&rem, &off, s0.z, i0.z, o0.z); }
    if (r > 1u) { peel(&rem, &off, s0.y, i0.y, o0.y); }
    if (r > 0u) { peel(&rem, &off, s0.x, i0.x, o0.x); }
    let count = min(ROW, p.inner - j);
    for (var e = 0u; e < count; e = e + 1u) {
        out[off.y + e * p.inner_out] = x[off.x + e * p.inner_in];
    }
}
