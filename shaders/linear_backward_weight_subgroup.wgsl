// linear_backward_weight, CPU-family variant (software adapters: lavapipe).
// For y (B, out) = w (out, in) . act(x (B, in)) + bias, act = SiLU when
// silu_input = 1:
//   dw[o, i] = sum_b dy[b, o] * act(x[b, i])   (=)
//   db[o]    = sum_b dy[b, o]                  (=)
//
// One workgroup = one subgroup of 8 lanes covering TO outputs x 8*TI inputs;
// lane l owns inputs i0 + l + 8c (c < TI). For each image, lane l loads dy of
// outputs o0 + 8k + l (k < TO/8) and hands them to the others with
// subgroupBroadcast; it also keeps their db sums, which the workgroups of the
// first input block write. Needs wgpu::Features::SUBGROUP (no
// `enable subgroups;`, which this naga rejects).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, in_features: u32, out_features: u32, silu_input: u32,
}

const TO8: u32 = {{TO8}}u;    // outputs per workgroup / 8
const TI: u32 = {{TI}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;
@group(0) @binding(4) var<storage, read_write> db: array<f32>;

// broadcast8, dot8: one lane's value handed to all 8.
// #include "snippets/broadcast8.wgsl"

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let iblocks = (p.in_features + 8u * TI - 1u) / (8u * TI);
    let blk = wid.x + wid.y * nwg.x;
    let i0 = (blk % iblocks) * 8u * TI;
    let o0 = (blk / iblocks) * 8u * TO8;
    if (o0 >= p.out_features) {
        return;
    }
    var icol: array<u32, TI>;
    for (var c = 0u; c < TI; c++) {
        icol[c] = min(i0 + lane + 8u * c, p.in_features - 1u);
    }
    var ocol: array<u32, TO8>;
    var o_ok: array<bool, TO8>;
    for (var k = 0u; k < TO8; k++) {
        o_ok[k] = o0 + 8u * k + lane < p.out_features;
        ocol[k] = min(o0 + 8u * k + lane, p.out_features - 1u);
    }
    // acc[k][j][c]: output o0 + 8k + j, input icol[c]. Every loop indexes a
    // private array by its own counter over the whole length, which is what
    // makes Mesa unroll it and keep the arrays in registers.
    var acc: array<array<array<f32, TI>, 8>, TO8>;
    var acc_b: array<f32, TO8>;
    for (var k = 0u; k < TO8; k++) {
        acc_b[k] = 0.0;
        for (var j = 0u; j < 8u; j++) {
            for (var c = 0u; c < TI; c++) {
                acc[k][j][c] = 0.0;
            }
        }
    }
    for (var b = 0u; b < p.batch; b++) {
        var xv: array<f32, TI>;
        for (var c = 0u; c < TI; c++) {
            let v = x[b * p.in_features + icol[c]];
            xv[c] = select(v, v / (1.0 + exp(-v)), p.silu_input != 0u);
        }
        for (var k = 0u; k < TO8; k++) {
            let v = select(0.0, dy[b * p.out_features + ocol[k]], o_ok[k]);
            acc_b[k] += v;
            let d = broadcast8(v);
            for (var c = 0u; c < TI; c++) {
                for (var j = 0u; j < 8u; j++) {
                    acc[k][j][c] += d[j] * xv[c];
                }
            }
        }
    }
    for (var k = 0u; k < TO8; k++) {
        for (var j = 0u; j < 8u; j++) {
            let o = o0 + 8u * k + j;
            if (o >= p.out_features) {
                break;
            }
            for (var c = 0u; c < TI; c++) {
                let i = i0 + lane + 8u * c;
                if (i >= p.in_features) {
                    break;
                }
                dw[o * p.in_features + i] = acc[k][j][c];
            }
        }
        if (i0 == 0u && o_ok[k]) {
            db[ocol[k]] = acc_b[k];
        }
    }
}
