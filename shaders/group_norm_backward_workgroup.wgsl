// group_norm_backward, GPU-family variant: the same op as
// group_norm_backward.wgsl (dz = dy [* silu'(z)], dx (+)= rstd * (dz*gamma -
// mean_g(dz*gamma) - n * mean_g(dz*gamma*n)), partial (B, 2, C) =
// (sum_p dz*n, sum_p dz) per image and channel, which sum_rows adds over the
// batch), laid out for hardware GPUs.
//
// One workgroup of 256 invocations per (image, group), where the CPU
// family's kernel gives one invocation a whole channel and loops over its
// pixels: on a GPU that is a few hundred long serial loops, bound by load
// latency at any batch (the H200 profile had group_norm_backward at 19 ms of
// a batch-16 training step and 23 ms at batch 64). Here TPC invocations share
// a channel (TPC a power of 2 with cpg * TPC <= 256), stride over its
// pixels together (neighbouring invocations, neighbouring pixels), and add
// their sums in workgroup memory; the group's two means come from the
// channel sums after one more barrier.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

const WG: u32 = 256u;
const TPC: u32 = {{TPC}}u; // invocations per channel
// V, VW, hsum: x, dy and dx hold VW pixels an element.
// #include "snippets/elements.wgsl"

// Params p, the operands (dy, x, stats, gamma, beta, dx, partial) and dz_of.
// #include "snippets/group_norm_backward_io.wgsl"

var<workgroup> sh_dz: array<f32, WG>;
var<workgroup> sh_dzn: array<f32, WG>;
var<workgroup> sh_means: vec2<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    // Workgroups past the last (image, group) of a 2-D grid have no work
    // (the whole workgroup, so the barriers below stay uniform).
    let bg = wid.x + wid.y * nwg.x;
    if (bg >= p.batch * p.groups) {
        return;
    }
    let b = bg / p.groups;
    let g = bg % p.groups;
    let cpg = p.channels / p.groups;
    let mean = stats[bg * 2u];
    let rstd = stats[bg * 2u + 1u];
    // This invocation's channel (of the group) and its place among the TPC
    // that share it.
    let ci = lid / TPC;
    let q = lid % TPC;
    let busy = ci < cpg;
    let c = g * cpg + min(ci, cpg - 1u);
    let gm = gamma[c];
    let bt = beta[c];
    let len = p.hw / VW;
    let base = (b * p.channels + c) * len;

    var s_dz = 0.0;
    var s_dzn = 0.0;
    if (busy) {
        for (var i = q; i < len; i += TPC) {
            let n = (x[base + i] - mean) * rstd;
            let dz = dz_of(dy[base + i], n * gm + bt);
            s_dz += hsum(dz);
            s_dzn += hsum(dz * n);
        }
    }
    sh_dz[lid] = s_dz;
    sh_dzn[lid] = s_dzn;
    workgroupBarrier();
    for (var s = TPC / 2u; s > 0u; s >>= 1u) {
        if (q < s) {
            sh_dz[lid] += sh_dz[lid + s];
            sh_dzn[lid] += sh_dzn[lid + s];
        }
        workgroupBarrier();
    }
    // sh_*[ci * TPC] now hold channel ci's sums.
    if (busy && q == 0u) {
        partial[b * 2u * p.channels + c] = sh_dzn[lid];
        partial[b * 2u * p.channels + p.channels + c] = sh_dz[lid];
    }
    if (lid == 0u) {
        var sum_dn = 0.0;
        var sum_dnn = 0.0;
        for (var k = 0u; k < cpg; k++) {
            let gk = gamma[g * cpg + k];
            sum_dn += sh_dz[k * TPC] * gk;
            sum_dnn += sh_dzn[k * TPC] * gk;
        }
        let inv_n = 1.0 / f32(cpg * p.hw);
        sh_means = vec2<f32>(sum_dn, sum_dnn) * inv_n;
    }
    workgroupBarrier();
    let means = sh_means;
    if (!busy) {
        return;
    }
    for (var i = q; i < len; i += TPC) {
        let n = (x[base + i] - mean) * rstd;
        let dz = dz_of(dy[base + i], n * gm + bt);
        var v = rstd * (dz * gm - means.x - n * means.y);
        if (p.accumulate != 0u) {
            v += dx[base + i];
        }
        dx[base + i] = v;
    }
}
