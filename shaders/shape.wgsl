// Strided copy: the one kernel behind permute, slice, concat, pad and broadcast_to.
//
// For every coordinate c of `shape` (collapsed to at most 8 dims):
//   out[out_offset + sum(c_d * out_strides_d)] = x[in_offset + sum(c_d * in_strides_d)]
// Works on 32-bit words, so it moves f32 and i32 tensors alike.
// Bindings: 0 params, 1 x (u32 words), 2 out (u32 words). Workgroup 256, 2-D folded grid.

struct Params {
    n: u32,
    rank: u32,
    in_offset: u32,
    out_offset: u32,
    shape: array<vec4<u32>, 2>,
    in_strides: array<vec4<u32>, 2>,
    out_strides: array<vec4<u32>, 2>,
}
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn dim_of(v: array<vec4<u32>, 2>, d: u32) -> u32 {
    return v[d / 4u][d % 4u];
}

@compute @workgroup_size(256)
fn strided_copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    var rem = i;
    var src = p.in_offset;
    var dst = p.out_offset;
    for (var k = 0u; k < p.rank; k = k + 1u) {
        let d = p.rank - 1u - k;
        let size = dim_of(p.shape, d);
        let c = rem % size;
        rem = rem / size;
        src = src + c * dim_of(p.in_strides, d);
        dst = dst + c * dim_of(p.out_strides, d);
    }
    out[dst] = x[src];
}
