// group_norm_forward: y = (x - mean) * rstd * gamma[c] + beta[c], then
// optionally SiLU, over groups of C/G channels of one image (torch.nn.GroupNorm,
// biased variance). x and y are (B, C, HW); gamma and beta (C);
// stats (B, G, 2) receives (mean, rstd) for the backward pass.
// One workgroup per (image, group); two passes over the group (mean, then
// the variance around it) for accuracy. y and stats are written (=).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, channels: u32, hw: u32, groups: u32,
    eps: f32, silu: u32, _pad0: u32, _pad1: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<{{Y_T}}>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

var<workgroup> partial: array<f32, WG>;

fn workgroup_sum(v: f32, lid: u32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            partial[lid] += partial[lid + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let bg = wid.x;
    let b = bg / p.groups;
    let g = bg % p.groups;
    let cpg = p.channels / p.groups;
    let n = cpg * p.hw;
    let base = (b * p.channels + g * cpg) * p.hw;

    var s = 0.0;
    for (var i = lid; i < n; i += WG) {
        s += f32(x[base + i]);
    }
    let mean = workgroup_sum(s, lid) / f32(n);
    var s2 = 0.0;
    for (var i = lid; i < n; i += WG) {
        let d = f32(x[base + i]) - mean;
        s2 += d * d;
    }
    let var_ = workgroup_sum(s2, lid) / f32(n);
    let rstd = 1.0 / sqrt(var_ + p.eps);
    if (lid == 0u) {
        stats[bg * 2u] = mean;
        stats[bg * 2u + 1u] = rstd;
    }
    for (var i = lid; i < n; i += WG) {
        let c = g * cpg + i / p.hw;
        var v = (f32(x[base + i]) - mean) * rstd * gamma[c] + beta[c];
        if (p.silu != 0u) {
            v = v / (1.0 + exp(-v));
        }
        y[base + i] = {{Y_T}}(v);
    }
}
