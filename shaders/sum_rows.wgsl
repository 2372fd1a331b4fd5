// sum_rows: out[i] = scale * sum over r < rows of src[r * row_stride + offset + i]
// for i < n: the second pass of a reduction done in partial sums (conv
// weight-gradient chunks, group-norm per-image channel sums). out is (n),
// written (=). One invocation per output.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    rows: u32, n: u32, row_stride: u32, offset: u32,
    scale: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        s += src[r * p.row_stride + p.offset + i];
    }
    out[i] = s * p.scale;
}
