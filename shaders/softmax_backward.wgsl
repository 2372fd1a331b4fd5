// softmax_backward: for y = softmax of each row of x (rows, n),
//   dx[r, j] = y[r, j] * (dy[r, j] - sum_k dy[r, k] * y[r, k]).
// dx, dy and y are (rows, n); dx is written (=). One invocation per row;
// rows of a multiple of 4 are read and written as vec4s (elements.wgsl).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    rows: u32, n: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// V, VW, hsum: dy, y and dx hold VW values an element.
// #include "snippets/elements.wgsl"

@group(0) @binding(1) var<storage, read> dy: array<V>;
@group(0) @binding(2) var<storage, read> y: array<V>;
@group(0) @binding(3) var<storage, read_write> dx: array<V>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let row = gid.x + gid.y * nwg.x * 64u;
    if (row >= p.rows) {
        return;
    }
    let len = p.n / VW;
    let base = row * len;
    var s = 0.0;
    for (var j = 0u; j < len; j++) {
        s += hsum(dy[base + j] * y[base + j]);
    }
    for (var j = 0u; j < len; j++) {
        dx[base + j] = y[base + j] * (dy[base + j] - s);
    }
}
