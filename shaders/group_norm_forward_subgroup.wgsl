// group_norm_forward, CPU-family variant (software adapters: lavapipe). The
// same op as group_norm_forward.wgsl: y = (x - mean) * rstd * gamma[c] +
// beta[c], then optionally SiLU, over groups of C/G channels of one image;
// stats (B, G, 2) receives (mean, rstd). y and stats are written (=).
// One workgroup = one subgroup of 8 lanes per (image, group): sums reduce with
// subgroupAdd (no workgroup memory, no barriers, which cost a coroutine
// switch per subgroup on llvmpipe), and the loops walk channel by channel so
// that no element needs an integer division. Two passes, as the generic one.
// Where hw is a multiple of 4, x and y are read and written four pixels at a
// time (V = vec4<f32>; on lavapipe a load costs a loop over the lanes
// whatever its width).
// Needs wgpu::Features::SUBGROUP with subgroups of exactly 8 lanes.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, channels: u32, hw: u32, groups: u32,
    eps: f32, silu: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// V, VW, hsum: x and y hold VW pixels an element, each in its own type
// (X_T, Y_T: f32 or f16, scalars or vec4s).
// #include "snippets/elements.wgsl"

@group(0) @binding(1) var<storage, read> x: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<{{Y_T}}>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let bg = wid.x;
    let b = bg / p.groups;
    let g = bg % p.groups;
    let cpg = p.channels / p.groups;
    let n = cpg * p.hw;
    let hwv = p.hw / VW;
    let base = (b * p.channels + g * cpg) * hwv;

    var s = 0.0;
    for (var i = lane; i < cpg * hwv; i += 8u) {
        s += hsum(V(x[base + i]));
    }
    let mean = subgroupAdd(s) / f32(n);
    var s2 = 0.0;
    for (var i = lane; i < cpg * hwv; i += 8u) {
        let d = V(x[base + i]) - mean;
        s2 += hsum(d * d);
    }
    let var_ = subgroupAdd(s2) / f32(n);
    let rstd = 1.0 / sqrt(var_ + p.eps);
    if (lane == 0u) {
        stats[bg * 2u] = mean;
        stats[bg * 2u + 1u] = rstd;
    }
    for (var cc = 0u; cc < cpg; cc++) {
        let c = g * cpg + cc;
        let scale = rstd * gamma[c];
        let shift = beta[c];
        let row = base + cc * hwv;
        for (var i = lane; i < hwv; i += 8u) {
            var v = (V(x[row + i]) - mean) * scale + shift;
            if (p.silu != 0u) {
                v = v / (1.0 + exp(-v));
            }
            y[row + i] = {{Y_T}}(v);
        }
    }
}
