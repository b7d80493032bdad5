// 2-D convolution, NCHW, weights [Cout, Cin/groups, KH, KW]. Two paths:
//
// groups == 1: im2col + the tiled matmul (src/ops/matmul.rs), chunked over the batch so one column
// buffer stays under the adapter's binding limit. Columns are laid out [K, chunk * P] with
// K = Cin*KH*KW (row k = (ci, ki, kj)) and P = Ho*Wo (column = image-in-chunk * P + output pixel),
// so the forward is one GEMM W[Cout,K] x cols[K, chunk*P] and dW is one GEMM dY x cols^T.
// col2im is the adjoint of im2col written as a gather over kernel taps: deterministic, no atomics.
//
// groups > 1 (depthwise included): direct kernels for the forward, dX (gather) and dW (one
// workgroup per weight element, tree-reduced).
//
// All entry points share one parameter block (see `Geom` in src/ops/conv2d.rs); 1-D grids are
// folded into 2-D (index = (wid.y * nwg.x + wid.x) * WG + lid.x) and bounds-checked.

struct Geom {
    n: u32, c: u32, h: u32, w: u32,
    cout: u32, kh: u32, kw: u32, groups: u32,
    sh: u32, sw: u32, ph: u32, pw: u32,
    dh: u32, dw: u32, ho: u32, wo: u32,
    // First image of this chunk, images in the chunk.
    n0: u32, chunk: u32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> g: Geom;

const WG: u32 = 256u;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// ---------------------------------------------------------------------------------------------
// im2col: bindings 1 x (whole batch), 2 cols [K, chunk*P]. Grid (min(ceil(chunk*P / PIX_WG),
// 65535), min(ceil(K / K_PER), 65535), 1): invocation x is one column (image in chunk, output
// pixel), workgroup y a block of K_PER rows k = (ci, ki, kj) (grid-stride loops over columns and
// blocks, so any size fits the grid limits). A column's (n, oy, ox) is divided out once for its
// K_PER rows, and the block's first (ci, ki, kj) once, the next rows' by counting: the old
// one-invocation-per-element kernel spent most of its time in five integer divisions per element.
// PIX_WG (also col2im's) and K_PER are set by src/ops/conv2d.rs, which sizes the grids by them.
override PIX_WG: u32 = 128u;
override K_PER: u32 = 4u;
@group(0) @binding(1) var<storage, read> ic_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> ic_cols: array<f32>;

@compute @workgroup_size(PIX_WG)
fn im2col(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let p = g.ho * g.wo;
    let cols = g.chunk * p;
    let kk = g.kh * g.kw;
    let rows = g.c * kk;
    for (var col = wid.x * PIX_WG + lid.x; col < cols; col = col + nwg.x * PIX_WG) {
        let pix = col % p;
        let plane0 = (g.n0 + col / p) * g.c;
        let y0 = i32((pix / g.wo) * g.sh) - i32(g.ph);
        let x0 = i32((pix % g.wo) * g.sw) - i32(g.pw);
        for (var blk = wid.y; blk * K_PER < rows; blk = blk + nwg.y) {
            let k0 = blk * K_PER;
            let tap0 = k0 % kk;
            var ci = k0 / kk;
            var ki = tap0 / g.kw;
            var kj = tap0 % g.kw;
            for (var k = k0; k < min(rows, k0 + K_PER); k = k + 1u) {
                let iy = y0 + i32(ki * g.dh);
                let ix = x0 + i32(kj * g.dw);
                var v = 0.0;
                if (iy >= 0 && iy < i32(g.h) && ix >= 0 && ix < i32(g.w)) {
                    v = ic_x[(plane0 + ci) * g.h * g.w + u32(iy) * g.w + u32(ix)];
                }
                ic_cols[k * cols + col] = v;
                kj = kj + 1u;
                if (kj == g.kw) {
                    kj = 0u;
                    ki = ki + 1u;
                    if (ki == g.kh) {
                        ki = 0u;
                        ci = ci + 1u;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// col2im: bindings 1 dcols [K, chunk*P], 2 dx [chunk, C, H, W]. Grid (min(ceil(chunk*H*W /
// PIX_WG), 65535), min(ceil(C / C_PER), 65535), 1): invocation x is one (image, input pixel),
// workgroup y a block of C_PER channels (grid-stride loops over both), so a pixel's divisions are
// shared by C_PER channels; each dx element sums every (tap, output pixel) whose window reads it,
// taps in (ki, kj) order. C_PER is set by src/ops/conv2d.rs, which sizes the grid by it.
// STRIDE (col2im and conv_direct_dx): the stride of both dims when they are equal, which makes
// it a constant the shader compiler folds into `tap_output` (stride 1, most convolutions: no
// divisibility test or division per tap; 2: a mask and a shift); 0: each dim's from the params.
override STRIDE: u32 = 0u;
override C_PER: u32 = 1u;
@group(0) @binding(1) var<storage, read> ci_cols: array<f32>;
@group(0) @binding(2) var<storage, read_write> ci_dx: array<f32>;

// The output coordinate whose window puts tap offset `off` (input coordinate + padding - tap *
// dilation) on this input coordinate, or -1 when none does.
fn tap_output(off: i32, stride: u32, size: u32) -> i32 {
    if (off < 0) { return -1; }
    let s = select(stride, STRIDE, STRIDE > 0u);
    let o = u32(off);
    if (o % s != 0u || o / s >= size) { return -1; }
    return i32(o / s);
}

@compute @workgroup_size(PIX_WG)
fn col2im(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let hw = g.h * g.w;
    let p = g.ho * g.wo;
    let cols = g.chunk * p;
    for (var t = wid.x * PIX_WG + lid.x; t < g.chunk * hw; t = t + nwg.x * PIX_WG) {
        let n = t / hw;
        let pix = t % hw;
        let iy = pix / g.w;
        let ix = pix % g.w;
        for (var blk = wid.y; blk * C_PER < g.c; blk = blk + nwg.y) {
            for (var ci = blk * C_PER; ci < min(g.c, (blk + 1u) * C_PER); ci = ci + 1u) {
                var acc = 0.0;
                for (var ki = 0u; ki < g.kh; ki = ki + 1u) {
                    let oy = tap_output(i32(iy + g.ph) - i32(ki * g.dh), g.sh, g.ho);
                    if (oy < 0) { continue; }
                    for (var kj = 0u; kj < g.kw; kj = kj + 1u) {
                        let ox = tap_output(i32(ix + g.pw) - i32(kj * g.dw), g.sw, g.wo);
                        if (ox < 0) { continue; }
                        let k = (ci * g.kh + ki) * g.kw + kj;
                        acc = acc + ci_cols[k * cols + n * p + u32(oy) * g.wo + u32(ox)];
                    }
                }
                ci_dx[(n * g.c + ci) * hw + pix] = acc;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// conv_direct and conv_direct_dx give each invocation a run of RUN consecutive pixels of one
// output plane (RUN = `Gpu::run_length`: 1 on GPUs, 16 on CPU adapters, where the plane's and
// pixel's divisions are per-lane scalar code); src/ops/conv2d.rs sizes the grid, one invocation
// per run. Each pixel's sum is the same as with RUN = 1.
override RUN: u32 = 1u;

// Run t of `planes` planes of `size` pixels each: (plane, first pixel, end) within the plane;
// first = end past the last run.
fn plane_run(t: u32, planes: u32, size: u32) -> vec3<u32> {
    let runs = (size + RUN - 1u) / RUN;
    let plane = t / runs;
    if (plane >= planes) { return vec3<u32>(0u, 0u, 0u); }
    let lo = (t % runs) * RUN;
    return vec3<u32>(plane, lo, min(lo + RUN, size));
}

// ---------------------------------------------------------------------------------------------
// conv_direct (grouped forward): bindings 1 x, 2 weight, 3 out [N, Cout, Ho, Wo].
@group(0) @binding(1) var<storage, read> df_x: array<f32>;
@group(0) @binding(2) var<storage, read> df_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> df_out: array<f32>;

@compute @workgroup_size(256)
fn conv_direct(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let p = g.ho * g.wo;
    let r = plane_run(linear_id(wid, nwg, lid), g.n * g.cout, p);
    if (r.y >= r.z) { return; }
    let n = r.x / g.cout;
    let co = r.x % g.cout;
    var oy = r.y / g.wo;
    var ox = r.y % g.wo;
    let cin_g = g.c / g.groups;
    let cout_g = g.cout / g.groups;
    let c0 = (co / cout_g) * cin_g;
    for (var pix = r.y; pix < r.z; pix = pix + 1u) {
        var acc = 0.0;
        for (var cg = 0u; cg < cin_g; cg = cg + 1u) {
            let xbase = (n * g.c + c0 + cg) * g.h * g.w;
            let wbase = (co * cin_g + cg) * g.kh * g.kw;
            for (var ki = 0u; ki < g.kh; ki = ki + 1u) {
                let iy = i32(oy * g.sh + ki * g.dh) - i32(g.ph);
                if (iy < 0 || iy >= i32(g.h)) { continue; }
                for (var kj = 0u; kj < g.kw; kj = kj + 1u) {
                    let ix = i32(ox * g.sw + kj * g.dw) - i32(g.pw);
                    if (ix < 0 || ix >= i32(g.w)) { continue; }
                    acc = acc
                        + df_x[xbase + u32(iy) * g.w + u32(ix)] * df_w[wbase + ki * g.kw + kj];
                }
            }
        }
        df_out[r.x * p + pix] = acc;
        ox = ox + 1u;
        if (ox == g.wo) {
            ox = 0u;
            oy = oy + 1u;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// conv_direct_dx (grouped input gradient, a gather): bindings 1 dy, 2 weight, 3 dx [N, C, H, W].
// Output coordinates by col2im's `tap_output` (a constant STRIDE: no division per tap).
@group(0) @binding(1) var<storage, read> dx_dy: array<f32>;
@group(0) @binding(2) var<storage, read> dx_w: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx_out: array<f32>;

@compute @workgroup_size(256)
fn conv_direct_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let hw = g.h * g.w;
    let r = plane_run(linear_id(wid, nwg, lid), g.n * g.c, hw);
    if (r.y >= r.z) { return; }
    let n = r.x / g.c;
    let ci = r.x % g.c;
    var iy = r.y / g.w;
    var ix = r.y % g.w;
    let cin_g = g.c / g.groups;
    let cout_g = g.cout / g.groups;
    let grp = ci / cin_g;
    let cg = ci % cin_g;
    let p = g.ho * g.wo;
    for (var pix = r.y; pix < r.z; pix = pix + 1u) {
        var acc = 0.0;
        for (var ki = 0u; ki < g.kh; ki = ki + 1u) {
            let oy = tap_output(i32(iy + g.ph) - i32(ki * g.dh), g.sh, g.ho);
            if (oy < 0) { continue; }
            for (var kj = 0u; kj < g.kw; kj = kj + 1u) {
                let ox = tap_output(i32(ix + g.pw) - i32(kj * g.dw), g.sw, g.wo);
                if (ox < 0) { continue; }
                for (var oc = 0u; oc < cout_g; oc = oc + 1u) {
                    let co = grp * cout_g + oc;
                    acc = acc + dx_dy[(n * g.cout + co) * p + u32(oy) * g.wo + u32(ox)]
                        * dx_w[((co * cin_g + cg) * g.kh + ki) * g.kw + kj];
                }
            }
        }
        dx_out[r.x * hw + pix] = acc;
        ix = ix + 1u;
        if (ix == g.w) {
            ix = 0u;
            iy = iy + 1u;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// conv_direct_dw (grouped weight gradient): bindings 1 dy, 2 x, 3 dw [Cout, Cin/groups, KH, KW].
// One workgroup of DW_WG per weight element (2-D folded); threads stride over N*Ho*Wo, then a
// tree. DW_WG (a power of two up to 256) is `Gpu::reduction_workgroup`: 256 on GPUs, 8 on CPU
// adapters, where a wider workgroup's barriers switch between its SIMD batches (lavapipe,
// MobileNetV2 b8 step: 806 ms in this kernel at 256).
override DW_WG: u32 = 256u;
@group(0) @binding(1) var<storage, read> dw_dy: array<f32>;
@group(0) @binding(2) var<storage, read> dw_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw_out: array<f32>;
var<workgroup> dw_scratch: array<f32, 256>;

@compute @workgroup_size(DW_WG)
fn conv_direct_dw(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let e = wid.y * nwg.x + wid.x;
    let cin_g = g.c / g.groups;
    let cout_g = g.cout / g.groups;
    let total = g.cout * cin_g * g.kh * g.kw;
    let valid = e < total;
    let co = e / (cin_g * g.kh * g.kw);
    let cg = (e / (g.kh * g.kw)) % cin_g;
    let ki = (e / g.kw) % g.kh;
    let kj = e % g.kw;
    let ci = (co / cout_g) * cin_g + cg;
    let p = g.ho * g.wo;
    var acc = 0.0;
    if (valid) {
        for (var i = lid.x; i < g.n * p; i = i + DW_WG) {
            let n = i / p;
            let oy = (i % p) / g.wo;
            let ox = i % g.wo;
            let iy = i32(oy * g.sh + ki * g.dh) - i32(g.ph);
            let ix = i32(ox * g.sw + kj * g.dw) - i32(g.pw);
            if (iy >= 0 && iy < i32(g.h) && ix >= 0 && ix < i32(g.w)) {
                acc = acc + dw_dy[(n * g.cout + co) * p + oy * g.wo + ox]
                    * dw_x[((n * g.c + ci) * g.h + u32(iy)) * g.w + u32(ix)];
            }
        }
    }
    dw_scratch[lid.x] = acc;
    workgroupBarrier();
    for (var s = DW_WG / 2u; s > 0u; s = s >> 1u) {
        if (lid.x < s) { dw_scratch[lid.x] = dw_scratch[lid.x] + dw_scratch[lid.x + s]; }
        workgroupBarrier();
    }
    if (valid && lid.x == 0u) { dw_out[e] = dw_scratch[0]; }
}
