// softmax_forward: y (rows, n) = softmax of each row of x (rows, n), in f32
// with the row maximum subtracted (torch's softmax; diffusers upcasts the
// attention softmax to f32, which we always are). One invocation per row;
// y is written (=) and kept for the backward pass.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    rows: u32, n: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.n;
    var mx = -3.402823e38;
    for (var j = 0u; j < p.n; j++) {
        mx = max(mx, x[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < p.n; j++) {
        let e = exp(x[base + j] - mx);
        y[base + j] = e;
        sum += e;
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < p.n; j++) {
        y[base + j] = y[base + j] * inv;
    }
}
