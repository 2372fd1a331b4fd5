// The second pass of a split-K conv2d forward (conv2d_forward_tiled.wgsl
// with SPLIT > 1): y (+)= (sum over the SPLIT parts of partial + bias + temb
// + residual) / out_div, the conv forward's epilogue. partial is (SPLIT,
// cout, batch*ho*wo) in f32, each part already scaled by w_scale; y is
// (batch, cout, ho, wo). One invocation per output element; the Rust wrapper
// (conv2d_forward_with in src/kernels/conv2d.rs) binds partial as binding 1,
// where the forward kernels bind x.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

// Params p, the epilogue operands (bias, temb, residual, y), channel_add and finish.
// #include "snippets/conv2d_epilogue.wgsl"

const SPLIT: u32 = {{SPLIT}}u;

@group(0) @binding(1) var<storage, read> partial: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let hw = p.ho * p.wo;
    let n_total = p.batch * hw;
    let o = gid.x + gid.y * nwg.x * 256u;
    if (o >= n_total * p.cout) {
        return;
    }
    // o indexes y (b, co, pixel); partial is (part, co, n) with n = b hw + pixel.
    let b = o / (p.cout * hw);
    let co = (o / hw) % p.cout;
    let n = b * hw + o % hw;
    var v = 0.0;
    for (var z = 0u; z < SPLIT; z++) {
        v += partial[(z * p.cout + co) * n_total + n];
    }
    finish(o, v + channel_add(co, b));
}
