// conv2d_flip_weights (MODE 0): wt (cin, cout, K, K) = w (cout, cin, K, K) with the
// two channel axes swapped and every K x K kernel turned 180 degrees:
//   wt[ci, co, ky, kx] = w[co, ci, K-1-ky, K-1-kx]
// (a kernel's flattened taps in reverse order). For stride 1 without
// upsampling, the input gradient of y = conv(x, w) is the plain convolution
// of dy with wt and padding K-1-pad on each side, which
// conv2d_backward_input then runs through the forward kernel.
//
// MODE 1 instead merges the weights of a 3x3 convolution (padding 1) over a
// nearest-2x-upsampled input (Upsample2D's conv) into the 4x4 kernel of its
// input gradient, a stride-2 convolution of dy with padding 1:
//   dx[i] = sum over u < 4 of W'[u] dy[2i - 1 + u], W' = (w2, w1 + w2, w0 + w1, w0)
// along each axis (source row i of x feeds output rows 2i - 1 + u through
// the taps ky with u + ky = 2 or 3), so
//   wt[ci, co, u, v] = sum of w[co, ci, ky, kx] over u + ky, v + kx in {2, 3}
// with wt (cin, cout, 4, 4): 16 multiply-adds a pixel instead of 4 x 9.
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
    if ({{MODE}}u == 1u) {
        // p.kk is 9 here (the wrapper checks): 3x3 taps in, 4x4 out.
        for (var u = 0u; u < 4u; u++) {
            for (var v = 0u; v < 4u; v++) {
                var acc = 0.0;
                for (var ky = 0u; ky < 3u; ky++) {
                    for (var kx = 0u; kx < 3u; kx++) {
                        if ((u + ky == 2u || u + ky == 3u) && (v + kx == 2u || v + kx == 3u)) {
                            acc += w[src + ky * 3u + kx];
                        }
                    }
                }
                wt[i * 16u + u * 4u + v] = acc;
            }
        }
        return;
    }
    let dst = i * p.kk;
    for (var t = 0u; t < p.kk; t++) {
        wt[dst + t] = w[src + p.kk - 1u - t];
    }
}
