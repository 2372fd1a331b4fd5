// softmax_forward: y (rows, n) = softmax of each row of x (rows, n), in f32
// with the row maximum subtracted (torch's softmax; diffusers upcasts the
// attention softmax to f32, which we always are). One invocation per row;
// y is written (=) and kept for the backward pass. Rows of a multiple of 4
// are read and written as vec4s (elements.wgsl).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    rows: u32, n: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// V, VW, hsum, hmax: x and y hold VW values an element.
// #include "snippets/elements.wgsl"

@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read_write> y: array<V>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.rows) {
        return;
    }
    let len = p.n / VW;
    let base = row * len;
    var mxv = V(-3.402823e38);
    for (var j = 0u; j < len; j++) {
        mxv = max(mxv, x[base + j]);
    }
    let mx = hmax(mxv);
    var sum = 0.0;
    for (var j = 0u; j < len; j++) {
        let e = exp(x[base + j] - mx);
        y[base + j] = e;
        sum += hsum(e);
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < len; j++) {
        y[base + j] = y[base + j] * inv;
    }
}
