// linear_backward_input, CPU-family variant (software adapters: lavapipe).
// For y (B, out) = w (out, in) . act(x (B, in)) + bias, act = SiLU when
// silu_input = 1:
//   dx[b, i] (+)= act'(x[b, i]) * sum_o w[o, i] * dy[b, o]
// written (=), or accumulated (+=) when accumulate = 1.
//
// One workgroup = one subgroup of 8 lanes covering TB images x 8*TI inputs;
// lane l owns inputs i0 + l + 8c (c < TI). The reduction runs over the
// outputs 8 at a time: lane l loads dy of output o0 + l for the TB images and
// hands it to the others with subgroupBroadcast, and loads its own 8 x TI
// weights. (Lavapipe pays per loaded value, so each one feeds TB or TI sums.)
// Needs wgpu::Features::SUBGROUP (no `enable subgroups;`, which this naga
// rejects).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, in_features: u32, out_features: u32, silu_input: u32,
    accumulate: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const TB: u32 = {{TB}}u;
const TI: u32 = {{TI}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;

// broadcast8, dot8: one lane's value handed to all 8.
// #include "snippets/broadcast8.wgsl"

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let i0 = wid.x * 8u * TI;
    let b0 = wid.y * TB;
    var icol: array<u32, TI>;
    for (var c = 0u; c < TI; c++) {
        icol[c] = min(i0 + lane + 8u * c, p.in_features - 1u);
    }
    var brow: array<u32, TB>;
    for (var b = 0u; b < TB; b++) {
        brow[b] = min(b0 + b, p.batch - 1u) * p.out_features;
    }
    // Every loop indexes a private array by its own counter over the whole
    // length, which is what makes Mesa unroll it and keep the arrays in
    // registers.
    var acc: array<array<f32, TI>, TB>;
    for (var b = 0u; b < TB; b++) {
        for (var c = 0u; c < TI; c++) {
            acc[b][c] = 0.0;
        }
    }
    for (var o0 = 0u; o0 < p.out_features; o0 += 8u) {
        let o_ok = o0 + lane < p.out_features;
        let ol = min(o0 + lane, p.out_features - 1u);
        var dyl: array<f32, TB>;
        for (var b = 0u; b < TB; b++) {
            dyl[b] = select(0.0, dy[brow[b] + ol], o_ok);
        }
        // Rows o0 .. o0 + 8 of w at this lane's inputs (zero past the end).
        var wv: array<array<f32, 8>, TI>;
        for (var j = 0u; j < 8u; j++) {
            let o = min(o0 + j, p.out_features - 1u);
            for (var c = 0u; c < TI; c++) {
                wv[c][j] = select(0.0, w[o * p.in_features + icol[c]], o0 + j < p.out_features);
            }
        }
        for (var b = 0u; b < TB; b++) {
            let d = broadcast8(dyl[b]);
            for (var c = 0u; c < TI; c++) {
                acc[b][c] += dot8(d, wv[c]);
            }
        }
    }
    for (var b = 0u; b < TB; b++) {
        if (b0 + b >= p.batch) {
            break;
        }
        for (var c = 0u; c < TI; c++) {
            let i = i0 + lane + 8u * c;
            if (i >= p.in_features) {
                break;
            }
            let k = (b0 + b) * p.in_features + i;
            var g = acc[b][c];
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
