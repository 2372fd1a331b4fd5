// conv2d_backward_bias: for dy (B, cout, hw),
//   db[co] = inv_div * sum over b and pixels of dy[b, co, :]               (=)
//   dtemb[b * temb_stride + temb_offset + co] = inv_div * sum_p dy[b, co, p] (=)
// (the second only when has_temb = 1: the forward epilogue's time-embedding
// add). One workgroup per output channel; its 64 invocations split the images
// and, when there are fewer than 64 images, the pixels of each image too.
// Where hw is a multiple of 4, dy is read four pixels at a time (V =
// vec4<f32>; on lavapipe a load costs a loop over the lanes whatever its
// width).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

const WG: u32 = 64u;
// V, VW, hsum: dy holds VW pixels an element.
// #include "snippets/elements.wgsl"

// Params p and the operands dy, db, dtemb.
// #include "snippets/conv2d_backward_bias_io.wgsl"

var<workgroup> partial: array<f32, WG>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let co = wid.x;
    // parts invocations per image, images_at_once images per round.
    let parts = max(1u, WG / p.batch);
    let images_at_once = WG / parts;
    let part = lid % parts;
    var total = 0.0;
    for (var b0 = 0u; b0 < p.batch; b0 += images_at_once) {
        let b = b0 + lid / parts;
        var s = 0.0;
        if (b < p.batch && lid < images_at_once * parts) {
            let len = p.hw / VW;
            let base = (b * p.cout + co) * len;
            for (var i = part; i < len; i += parts) {
                s += hsum(dy[base + i]);
            }
        }
        partial[lid] = s;
        workgroupBarrier();
        if (part == 0u && b < p.batch && lid < images_at_once * parts) {
            var t = 0.0;
            for (var q = 0u; q < parts; q++) {
                t += partial[lid + q];
            }
            t *= p.inv_div;
            if (p.has_temb != 0u) {
                dtemb[b * p.temb_stride + p.temb_offset + co] = t;
            }
            total += t;
        }
        workgroupBarrier();
    }
    partial[lid] = total;
    workgroupBarrier();
    if (lid == 0u) {
        var t = 0.0;
        for (var q = 0u; q < WG; q++) {
            t += partial[q];
        }
        db[co] = t;
    }
}
