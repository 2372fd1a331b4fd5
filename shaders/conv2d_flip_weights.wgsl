// conv2d_flip_weights: wt (cin, cout, K, K) = w (cout, cin, K, K) with the
// two channel axes swapped and every K x K kernel turned 180 degrees:
//   wt[ci, co, ky, kx] = w[co, ci, K-1-ky, K-1-kx]
// (a kernel's flattened taps in reverse order). For stride 1 without
// upsampling, the input gradient of y = conv(x, w) is the plain convolution
// of dy with wt and padding K-1-pad on each side, which
// conv2d_backward_input then runs through the forward kernel.
// One invocation per (ci, co) kernel, written in wt's order.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    cout: u32, cin: u32, kk: u32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> wt: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.cin * p.cout) {
        return;
    }
    let ci = i / p.cout;
    let co = i % p.cout;
    let src = (co * p.cin + ci) * p.kk;
    let dst = i * p.kk;
    for (var t = 0u; t < p.kk; t++) {
        wt[dst + t] = w[src + p.kk - 1u - t];
    }
}
