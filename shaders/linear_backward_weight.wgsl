// linear_backward_weight: for y (B, out) = w (out, in) . act(x (B, in)) + bias,
// act = SiLU when silu_input = 1:
//   dw[o, i] = sum_b dy[b, o] * act(x[b, i])   (=)
//   db[o]    = sum_b dy[b, o]                  (=)
// A GEMM with a short reduction (the batch). Each invocation keeps a block of
// TO outputs x TI inputs in registers; the invocations of the first input
// block also sum db from the dy values they load anyway.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, in_features: u32, out_features: u32, silu_input: u32,
}

const TO: u32 = 16u;
const TI: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;
@group(0) @binding(4) var<storage, read_write> db: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let idx = gid.x + gid.y * nwg.x * 64u;
    let iblocks = (p.in_features + TI - 1u) / TI;
    let oblocks = (p.out_features + TO - 1u) / TO;
    if (idx >= iblocks * oblocks) {
        return;
    }
    let i0 = (idx % iblocks) * TI;
    let o0 = (idx / iblocks) * TO;
    var acc: array<array<f32, TI>, TO>;
    var acc_b: array<f32, TO>;
    for (var a = 0u; a < TO; a++) {
        acc_b[a] = 0.0;
        for (var c = 0u; c < TI; c++) {
            acc[a][c] = 0.0;
        }
    }
    for (var b = 0u; b < p.batch; b++) {
        var xv: array<f32, TI>;
        for (var c = 0u; c < TI; c++) {
            let v = x[b * p.in_features + min(i0 + c, p.in_features - 1u)];
            xv[c] = select(v, v / (1.0 + exp(-v)), p.silu_input != 0u);
        }
        for (var a = 0u; a < TO; a++) {
            let d = dy[b * p.out_features + min(o0 + a, p.out_features - 1u)];
            acc_b[a] += d;
            for (var c = 0u; c < TI; c++) {
                acc[a][c] += d * xv[c];
            }
        }
    }
    for (var a = 0u; a < TO; a++) {
        let o = o0 + a;
        if (o >= p.out_features) {
            break;
        }
        if (i0 == 0u) {
            db[o] = acc_b[a];
        }
        for (var c = 0u; c < TI; c++) {
            let i = i0 + c;
            if (i >= p.in_features) {
                break;
            }
            dw[o * p.in_features + i] = acc[a][c];
        }
    }
}
