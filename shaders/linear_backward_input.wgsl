// linear_backward_input: for y (B, out) = w (out, in) . act(x (B, in)) + bias,
// act = SiLU when silu_input = 1:
//   dx[b, i] (+)= act'(x[b, i]) * sum_o w[o, i] * dy[b, o]
// written (=), or accumulated (+=) when accumulate = 1. A GEMM with a long
// reduction over the outputs (all time_emb_projs stacked: thousands). Each
// invocation keeps TB images x TI inputs in registers.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, in_features: u32, out_features: u32, silu_input: u32,
    accumulate: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const TB: u32 = 4u;
const TI: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let iblocks = (p.in_features + TI - 1u) / TI;
    let bblocks = (p.batch + TB - 1u) / TB;
    if (idx >= iblocks * bblocks) {
        return;
    }
    let i0 = (idx % iblocks) * TI;
    let b0 = (idx / iblocks) * TB;
    var acc: array<array<f32, TI>, TB>;
    for (var a = 0u; a < TB; a++) {
        for (var c = 0u; c < TI; c++) {
            acc[a][c] = 0.0;
        }
    }
    for (var o = 0u; o < p.out_features; o++) {
        var wv: array<f32, TI>;
        for (var c = 0u; c < TI; c++) {
            wv[c] = w[o * p.in_features + min(i0 + c, p.in_features - 1u)];
        }
        for (var a = 0u; a < TB; a++) {
            let d = dy[min(b0 + a, p.batch - 1u) * p.out_features + o];
            for (var c = 0u; c < TI; c++) {
                acc[a][c] += d * wv[c];
            }
        }
    }
    for (var a = 0u; a < TB; a++) {
        let b = b0 + a;
        if (b >= p.batch) {
            break;
        }
        for (var c = 0u; c < TI; c++) {
            let i = i0 + c;
            if (i >= p.in_features) {
                break;
            }
            let k = b * p.in_features + i;
            var g = acc[a][c];
            if (p.silu_input != 0u) {
                let v = x[k];
                let s = 1.0 / (1.0 + exp(-v));
                g *= s * (1.0 + v * (1.0 - s));
            }
            if (p.accumulate != 0u) {
                g += dx[k];
            }
            dx[k] = g;
        }
    }
}
