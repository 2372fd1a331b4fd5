// reduce_sum: one workgroup sums partials (n) and writes (=) results:
//   mode 0 (loss):      out[0] = sum / divisor
//   mode 1 (grad clip): out[0] = norm = sqrt(sum),
//                       out[1] = min(1, max_norm / (norm + 1e-6)), the factor
//                       torch.nn.utils.clip_grad_norm_ scales gradients by
//                       (1 when max_norm <= 0: no clipping).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    n: u32, mode: u32, divisor: f32, max_norm: f32,
}

const WG: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        s += partials[i];
    }
    acc[lid] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) {
            acc[lid] += acc[lid + k];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let total = acc[0];
        if (p.mode == 0u) {
            out[0] = total / p.divisor;
        } else {
            let norm = sqrt(total);
            out[0] = norm;
            if (p.max_norm > 0.0) {
                out[1] = min(1.0, p.max_norm / (norm + 1e-6));
            } else {
                out[1] = 1.0;
            }
        }
    }
}
