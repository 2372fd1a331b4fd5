// mse_loss: the loss of training, mean((out - target)^2), and its gradient.
// dout (n) is written (=): 2 * (out - target) / n. partials (one per
// workgroup) receive the workgroup's sum of squared differences; reduce_sum
// turns them into the loss.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    n: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read> target_: array<f32>;
@group(0) @binding(3) var<storage, read_write> dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let group = wid.x + wid.y * nwg.x;
    let i = group * WG + lid;
    var sq = 0.0;
    if (i < p.n) {
        let d = out[i] - target_[i];
        dout[i] = 2.0 * d / f32(p.n);
        sq = d * d;
    }
    acc[lid] = sq;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            acc[lid] += acc[lid + s];
        }
        workgroupBarrier();
    }
    // A 2-D grid may round the group count up: only groups with data write.
    if (lid == 0u && group * WG < p.n) {
        partials[group] = acc[0];
    }
}
