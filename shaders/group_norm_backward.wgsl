// group_norm_backward: for y = [silu](z), z = n * gamma[c] + beta[c],
// n = (x - mean) * rstd over groups of C/G channels of one image, with
// stats (B, G, 2) = (mean, rstd) saved by group_norm_forward:
//   dz = dy * silu'(z) (z recomputed from x and stats) or dy without SiLU,
//   dx (+)= rstd * (dz*gamma - mean_g(dz*gamma) - n * mean_g(dz*gamma*n))
//     (written (=), or accumulated (+=) when accumulate = 1),
//   partial (B, 2, C): [b, 0, c] = sum_p dz*n, [b, 1, c] = sum_p dz (=),
// which sum_rows then adds over the batch into dgamma and dbeta.
// x, dy and dx are (B, C, hw); gamma and beta (C).
//
// One invocation per (image, channel), looping over its pixels (no barriers
// inside; lavapipe turns workgroup memory and barriers into slow loops), four
// at a time as vec4s when hw is a multiple of 4 (V; on lavapipe a load or
// store costs a loop over the lanes whatever its width). A
// workgroup holds whole groups (WG is a multiple of C/G), so the group means
// come from workgroup memory after one barrier.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

const WG: u32 = {{WG}}u;
// V, VW, hsum: x, dy and dx hold VW pixels an element.
// #include "snippets/elements.wgsl"

// Params p, the operands (dy, x, stats, gamma, beta, dx, partial) and dz_of.
// #include "snippets/group_norm_backward_io.wgsl"

var<workgroup> sh_dn: array<f32, WG>;
var<workgroup> sh_dnn: array<f32, WG>;

@compute @workgroup_size(WG)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let pair_raw = (wid.x + wid.y * nwg.x) * WG + lid;
    let npairs = p.batch * p.channels;
    let live = pair_raw < npairs;
    let pair = min(pair_raw, npairs - 1u);
    let b = pair / p.channels;
    let c = pair % p.channels;
    let cpg = p.channels / p.groups;
    let bg = b * p.groups + c / cpg;
    let mean = stats[bg * 2u];
    let rstd = stats[bg * 2u + 1u];
    let g = gamma[c];
    let bt = beta[c];
    let len = p.hw / VW;
    let base = pair * len;

    var s_dz = 0.0;
    var s_dzn = 0.0;
    for (var i = 0u; i < len; i++) {
        let n = (x[base + i] - mean) * rstd;
        let dz = dz_of(dy[base + i], n * g + bt);
        s_dz += hsum(dz);
        s_dzn += hsum(dz * n);
    }
    if (live) {
        partial[b * 2u * p.channels + c] = s_dzn;
        partial[b * 2u * p.channels + p.channels + c] = s_dz;
    }
    sh_dn[lid] = s_dz * g;
    sh_dnn[lid] = s_dzn * g;
    workgroupBarrier();
    if (!live) {
        return;
    }
    let first = lid - lid % cpg;
    var sum_dn = 0.0;
    var sum_dnn = 0.0;
    for (var q = 0u; q < cpg; q++) {
        sum_dn += sh_dn[first + q];
        sum_dnn += sh_dnn[first + q];
    }
    let inv_n = 1.0 / f32(cpg * p.hw);
    let mean_dn = sum_dn * inv_n;
    let mean_dnn = sum_dnn * inv_n;
    for (var i = 0u; i < len; i++) {
        let n = (x[base + i] - mean) * rstd;
        let dz = dz_of(dy[base + i], n * g + bt);
        var v = rstd * (dz * g - mean_dn - n * mean_dnn);
        if (p.accumulate != 0u) {
            v += dx[base + i];
        }
        dx[base + i] = v;
    }
}
