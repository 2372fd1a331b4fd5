// conv2d_backward_bias, CPU-family variant (software adapters: lavapipe). The
// same op as conv2d_backward_bias.wgsl: for dy (B, cout, hw),
//   db[co] = inv_div * sum over b and pixels of dy[b, co, :]               (=)
//   dtemb[b * temb_stride + temb_offset + co] = inv_div * sum_p dy[b, co, p] (=)
// (the second only when has_temb = 1). One workgroup = one subgroup of LANES
// lanes per output channel: lane l sums the whole planes of images l,
// l + LANES, ... (each image's sum is one lane's, so dtemb needs no
// reduction), and the lanes' totals meet in subgroupAdd: no workgroup
// memory and no barriers, which cost a coroutine switch per subgroup on
// llvmpipe. For batch >= LANES (the wrapper checks), so every lane has an
// image.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

// V, VW, hsum: dy holds VW pixels an element.
// #include "snippets/elements.wgsl"

// Params p and the operands dy, db, dtemb.
// #include "snippets/conv2d_backward_bias_io.wgsl"

@compute @workgroup_size({{LANES}})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
    let co = wid.x;
    let len = p.hw / VW;
    var total = 0.0;
    for (var b = lane; b < p.batch; b += {{LANES}}u) {
        let base = (b * p.cout + co) * len;
        var s = 0.0;
        for (var i = 0u; i < len; i++) {
            s += hsum(dy[base + i]);
        }
        s *= p.inv_div;
        if (p.has_temb != 0u) {
            dtemb[b * p.temb_stride + p.temb_offset + co] = s;
        }
        total += s;
    }
    let t = subgroupAdd(total);
    if (lane == 0u) {
        db[co] = t;
    }
}
