// In-place memory-bank updates, one workgroup (256) per distinct memory row touched by the batch.
// The batch samples of row u, in batch order, are samples[starts[u] .. starts[u+1]]; the row is rows[u].
// MODE (override):
//   0 momentum: for each sample in order, m = mu*m + (1-mu)*f, then m /= ||m||   (SpCL, CC "mean")
//   1 hard:     the sample with the lowest cosine to m updates it once, then m /= ||m||   (CC "hard")
//   2 mean EMA: m = (1-mu)*m + mu*mean(f) with no normalisation   (ProDA prototypes; mu is the step)
// Rows are distinct across workgroups, so no two workgroups touch the same memory. Within a row,
// invocation `lid` only ever touches elements lid, lid+256, ...: storage needs no barrier, only
// the shared reduction scratch does.
// Bindings: 0 params, 1 memory (read_write, [N, dim]), 2 features ([B, dim]), 3 starts (i32),
// 4 samples (i32), 5 rows (i32). Dispatch: one workgroup per distinct row (2-D folded).

override MODE: u32 = 0u;

struct Params { dim: u32, groups: u32, momentum: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> memory: array<f32>;
@group(0) @binding(2) var<storage, read> features: array<f32>;
@group(0) @binding(3) var<storage, read> starts: array<i32>;
@group(0) @binding(4) var<storage, read> samples: array<i32>;
@group(0) @binding(5) var<storage, read> rows: array<i32>;

var<workgroup> scratch: array<f32, 256>;

// Sum of `v` over the workgroup, returned to every invocation.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) { scratch[lid] = scratch[lid] + scratch[lid + s]; }
        workgroupBarrier();
    }
    let total = scratch[0];
    workgroupBarrier();
    return total;
}

fn normalise_row(lid: u32, base: u32) {
    var sq = 0.0;
    for (var d = lid; d < p.dim; d = d + 256u) { sq = sq + memory[base + d] * memory[base + d]; }
    let inv = 1.0 / max(sqrt(workgroup_sum(lid, sq)), 1e-12);
    for (var d = lid; d < p.dim; d = d + 256u) { memory[base + d] = memory[base + d] * inv; }
    workgroupBarrier();
}

fn blend(lid: u32, base: u32, sample: u32, keep: f32) {
    let fbase = sample * p.dim;
    for (var d = lid; d < p.dim; d = d + 256u) {
        memory[base + d] = keep * memory[base + d] + (1.0 - keep) * features[fbase + d];
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn update_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid3: vec3<u32>) {
    let u = wid.y * nwg.x + wid.x;
    if (u >= p.groups) { return; } // uniform per workgroup, so barriers below stay uniform
    let lid = lid3.x;
    let base = u32(rows[u]) * p.dim;
    let first = u32(starts[u]);
    let last = u32(starts[u + 1u]);
    if (MODE == 0u) {
        for (var k = first; k < last; k = k + 1u) {
            blend(lid, base, u32(samples[k]), p.momentum);
            normalise_row(lid, base);
        }
    } else if (MODE == 1u) {
        var best = 3.402823e38;
        var best_sample = u32(samples[first]);
        for (var k = first; k < last; k = k + 1u) {
            let s = u32(samples[k]);
            var dot = 0.0;
            for (var d = lid; d < p.dim; d = d + 256u) { dot = dot + memory[base + d] * features[s * p.dim + d]; }
            let cosine = workgroup_sum(lid, dot);
            if (cosine < best) { best = cosine; best_sample = s; }
        }
        blend(lid, base, best_sample, p.momentum);
        normalise_row(lid, base);
    } else {
        let count = f32(last - first);
        for (var d = lid; d < p.dim; d = d + 256u) {
            var mean = 0.0;
            for (var k = first; k < last; k = k + 1u) { mean = mean + features[u32(samples[k]) * p.dim + d]; }
            memory[base + d] = (1.0 - p.momentum) * memory[base + d] + p.momentum * mean / count;
        }
    }
}
