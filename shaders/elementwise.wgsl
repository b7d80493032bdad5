// Elementwise kernels: unary maps, broadcasting binary ops, where, and buffer fill.
//
// Every entry point: binding 0 = uniform Params, workgroup size 256, a 1-D index folded into a
// 2-D grid (linear = (wid.y * num_workgroups.x + wid.x) * 256 + lid.x), bounds-checked against n.
// The op is a pipeline-overridable constant, so each op compiles to its own branch-free pipeline.

override OP: u32 = 0u;

fn linear_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// ---------------------------------------------------------------------------------------------
// fill: bindings 1 = out (u32 words). Params: n words, the 32-bit pattern.
struct FillParams { n: u32, pattern: u32 }
@group(0) @binding(0) var<uniform> fill_p: FillParams;
@group(0) @binding(1) var<storage, read_write> fill_out: array<u32>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i < fill_p.n) { fill_out[i] = fill_p.pattern; }
}

// ---------------------------------------------------------------------------------------------
// unary: bindings 1 = x, 2 = out. Params: n, alpha, beta (scalar operands: clamp bounds, exponent...).
// OP codes match `UnaryOp` in src/ops/elementwise.rs.
struct UnaryParams { n: u32, alpha: f32, beta: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> un_p: UnaryParams;
@group(0) @binding(1) var<storage, read> un_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> un_out: array<f32>;

fn stable_sigmoid(x: f32) -> f32 {
    if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); }
    let e = exp(x);
    return e / (1.0 + e);
}

// x^a for any sign of x when a is an integer (WGSL's pow is undefined for x < 0).
fn signed_pow(x: f32, a: f32) -> f32 {
    if (x >= 0.0) { return pow(x, a); }
    let m = pow(-x, a);
    if (a == round(a) && (i32(a) & 1) == 1) { return -m; }
    if (a == round(a)) { return m; }
    return bitcast<f32>(0x7fc00000u); // NaN, as in IEEE pow
}

fn apply_unary(x: f32) -> f32 {
    let a = un_p.alpha;
    let b = un_p.beta;
    switch OP {
        case 0u: { return -x; }
        case 1u: { return exp(x); }
        case 2u: { return log(x); }
        case 3u: { return sqrt(x); }
        case 4u: { return abs(x); }
        case 5u: { return max(x, 0.0); }
        case 6u: { return min(max(x, 0.0), 6.0); }
        case 7u: { return stable_sigmoid(x); }
        case 8u: { return min(max(x, a), b); }
        case 9u: { return signed_pow(x, a); }
        case 10u: { return x + a; }
        case 11u: { return x * a; }
        case 12u: { return sign(x); }
        case 13u: { return 1.0 / x; }
        case 14u: { return x * x; }
        case 15u: { return select(0.0, 1.0, x > a); }
        case 16u: { return select(0.0, 1.0, x < a); }
        default: { return x; }
    }
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i < un_p.n) { un_out[i] = apply_unary(un_x[i]); }
}

// ---------------------------------------------------------------------------------------------
// Broadcasting: the output shape (collapsed to at most 8 dims) and each operand's element strides
// into it (0 along broadcast dims). Dims are packed 4 to a vec4 to satisfy uniform layout rules.
struct BcastParams {
    n: u32,
    rank: u32,
    _p0: u32,
    _p1: u32,
    shape: array<vec4<u32>, 2>,
    a_strides: array<vec4<u32>, 2>,
    b_strides: array<vec4<u32>, 2>,
    c_strides: array<vec4<u32>, 2>,
}
@group(0) @binding(0) var<uniform> bc_p: BcastParams;

// Peels dim d (counted from the last) off `rem`, adding its coordinate times each operand's
// stride. Every vector index is a constant: lavapipe turns dynamically indexed uniform reads into
// slow per-lane loads, so the dim loop is written out rather than looped.
fn peel(rem: ptr<function, u32>, off: ptr<function, vec3<u32>>, size: u32, sa: u32, sb: u32, sc: u32) {
    let c = *rem % size;
    *rem = *rem / size;
    *off = *off + c * vec3<u32>(sa, sb, sc);
}

// Element offsets of output index i in operands a, b, c.
fn offsets(i: u32) -> vec3<u32> {
    var rem = i;
    var off = vec3<u32>(0u, 0u, 0u);
    let r = bc_p.rank;
    let s0 = bc_p.shape[0]; let s1 = bc_p.shape[1];
    let a0 = bc_p.a_strides[0]; let a1 = bc_p.a_strides[1];
    let b0 = bc_p.b_strides[0]; let b1 = bc_p.b_strides[1];
    let c0 = bc_p.c_strides[0]; let c1 = bc_p.c_strides[1];
    if (r > 7u) { peel(&rem, &off, s1.w, a1.w, b1.w, c1.w); }
    if (r > 6u) { peel(&rem, &off, s1.z, a1.z, b1.z, c1.z); }
    if (r > 5u) { peel(&rem, &off, s1.y, a1.y, b1.y, c1.y); }
    if (r > 4u) { peel(&rem, &off, s1.x, a1.x, b1.x, c1.x); }
    if (r > 3u) { peel(&rem, &off, s0.w, a0.w, b0.w, c0.w); }
    if (r > 2u) { peel(&rem, &off, s0.z, a0.z, b0.z, c0.z); }
    if (r > 1u) { peel(&rem, &off, s0.y, a0.y, b0.y, c0.y); }
    if (r > 0u) { peel(&rem, &off, s0.x, a0.x, b0.x, c0.x); }
    return off;
}

// binary: bindings 1 = a, 2 = b, 3 = out. OP codes match `BinaryOp`.
@group(0) @binding(1) var<storage, read> bin_a: array<f32>;
@group(0) @binding(2) var<storage, read> bin_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> bin_out: array<f32>;

fn apply_binary(a: f32, b: f32) -> f32 {
    switch OP {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return signed_pow(a, b); }
        case 5u: { return max(a, b); }
        case 6u: { return min(a, b); }
        case 7u: { return select(0.0, 1.0, a == b); }
        case 8u: { return select(0.0, 1.0, a != b); }
        case 9u: { return select(0.0, 1.0, a < b); }
        case 10u: { return select(0.0, 1.0, a <= b); }
        case 11u: { return select(0.0, 1.0, a > b); }
        case 12u: { return select(0.0, 1.0, a >= b); }
        default: { return a; }
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= bc_p.n) { return; }
    let off = offsets(i);
    bin_out[i] = apply_binary(bin_a[off.x], bin_b[off.y]);
}

// binary_same: both operands have the output's shape; no index arithmetic.
@compute @workgroup_size(256)
fn binary_same(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i < bc_p.n) { bin_out[i] = apply_binary(bin_a[i], bin_b[i]); }
}

// where_select: bindings 1 = cond (nonzero = take a), 2 = a, 3 = b, 4 = out.
@group(0) @binding(1) var<storage, read> wh_cond: array<f32>;
@group(0) @binding(2) var<storage, read> wh_a: array<f32>;
@group(0) @binding(3) var<storage, read> wh_b: array<f32>;
@group(0) @binding(4) var<storage, read_write> wh_out: array<f32>;

@compute @workgroup_size(256)
fn where_select(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= bc_p.n) { return; }
    let off = offsets(i);
    wh_out[i] = select(wh_b[off.z], wh_a[off.y], wh_cond[off.x] != 0.0);
}

// ---------------------------------------------------------------------------------------------
// relu_backward: bindings 1 = g, 2 = x, 3 = dx (all n). dx = g where 0 < x (and x < 6 when
// OP = 1, ReLU6), else 0: ReLU's gradient in one pass (not a mask and a multiply). Params: n.
struct ReluBwdParams { n: u32 }
@group(0) @binding(0) var<uniform> rb_p: ReluBwdParams;
@group(0) @binding(1) var<storage, read> rb_g: array<f32>;
@group(0) @binding(2) var<storage, read> rb_x: array<f32>;
@group(0) @binding(3) var<storage, read_write> rb_dx: array<f32>;

@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear_index(wid, nwg, lid);
    if (i >= rb_p.n) { return; }
    let x = rb_x[i];
    let pass_through = x > 0.0 && (OP == 0u || x < 6.0);
    rb_dx[i] = select(0.0, rb_g[i], pass_through);
}
