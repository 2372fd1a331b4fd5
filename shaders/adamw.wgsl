// adamw: one torch.optim.AdamW step (decoupled weight decay, bias
// correction; the single-tensor algorithm) over a slab of parameters, with
// the gradients first scaled by the clipping factor clip[1] (reduce_sum).
//   p = p * (1 - lr * wd)
//   m = lerp(m, g, 1 - beta1);  v = v * beta2 + (1 - beta2) g^2
//   p = p - step_size * m / (sqrt(v) / sqrt(bias_correction2) + eps)
// param, m and v are updated in place; grad is read.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    n: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    decay_factor: f32, one_minus_beta1: f32, beta2: f32, one_minus_beta2: f32,
    step_size: f32, bias_correction2_sqrt: f32, eps: f32, _pad3: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read> clip: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<f32>;
@group(0) @binding(4) var<storage, read_write> m: array<f32>;
@group(0) @binding(5) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let g = grad[i] * clip[1];
    let w = param[i] * p.decay_factor;
    let mi = m[i] + p.one_minus_beta1 * (g - m[i]);
    let vi = v[i] * p.beta2 + p.one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    let denom = sqrt(vi) / p.bias_correction2_sqrt + p.eps;
    param[i] = w - p.step_size * (mi / denom);
}
