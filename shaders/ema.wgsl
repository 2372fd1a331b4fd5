// ema: the exponential moving average of the weights, as diffusers' EMAModel
// steps it: ema = ema - (1 - decay) * (ema - param). ema is updated in place.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    n: u32, _pad0: u32, _pad1: u32, one_minus_decay: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> param: array<f32>;
@group(0) @binding(2) var<storage, read_write> ema: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    ema[i] = ema[i] - p.one_minus_decay * (ema[i] - param[i]);
}
