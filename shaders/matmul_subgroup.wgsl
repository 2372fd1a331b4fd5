// matmul, CPU-family variant (software adapters: lavapipe). Same op as
// matmul.wgsl: C[z] = alpha * A[z] B[z], written (=), or accumulated (+=)
// when accumulate = 1; batched and strided the same way.
//
// One workgroup = one subgroup of LANES lanes (8, or 16 at lavapipe's
// 512-bit vectors: kernels::conv_lanes) computing a TM x LANES*TN block of
// C: each lane owns TN columns (b_col) for the TM rows m0 .. m0+TM. The
// reduction runs 8 k at a time: the lanes load the TM x 8 tile of A between
// them and hand it to each other with subgroupBroadcast (a register shuffle),
// and each lane loads its own 8 x TN values of B, then does 8 TM TN
// multiply-adds (at 16 lanes each one twice the work, for the same loads a
// lane). On lavapipe a load costs a loop over the 8 lanes, about the
// same whatever its width, so where an operand has a unit stride and aligned
// offsets the tiles are read (and C written) as vec4s (the *_vec4 snippets;
// Rust chooses, matmul.rs) and otherwise one value at a time (*_scalar).
// Needs wgpu::Features::SUBGROUP (no `enable subgroups;`, which this naga
// rejects) and subgroups of at least LANES lanes, one per workgroup.
// petal:trusted (indices are clamped into the ranges its Rust wrapper checks; loops are finite)

struct Params {
    m: u32, n: u32, k: u32, inner_count: u32,
    a_so: u32, a_si: u32, a_sm: u32, a_sk: u32,
    b_so: u32, b_si: u32, b_sk: u32, b_sn: u32,
    c_so: u32, c_si: u32, c_sm: u32, c_sn: u32,
    a_off: u32, b_off: u32, c_off: u32, batch: u32,
    alpha: f32, accumulate: u32, _pad0: u32, _pad1: u32,
}

const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const LANES: u32 = {{LANES}}u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<{{A_T}}>;
@group(0) @binding(2) var<storage, read> bm: array<{{B_T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{C_T}}>;

// broadcast8, broadcast8_hi, dot8, broadcast_pair: one lane's value handed
// to all (8 values at a time).
// #include "snippets/broadcast8.wgsl"

// a_tile: the TM x 8 tile of A at (m0, k0) on every lane.
// #include "snippets/matmul_a_{{A_LOADS}}.wgsl"

// b_col, b_tile: this lane's TN columns and their 8 x TN tile of B.
// #include "snippets/matmul_b_{{B_LOADS}}.wgsl"

// store_row: one row of this lane's block into C.
// #include "snippets/matmul_c_{{C_STORES}}.wgsl"

@compute @workgroup_size({{LANES}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let n0 = wid.x * LANES * TN;
    let m0 = wid.y * TM;
    let z = wid.z;
    let outer = z / p.inner_count;
    let inner = z % p.inner_count;
    let abase = p.a_off + outer * p.a_so + inner * p.a_si;
    let bbase = p.b_off + outer * p.b_so + inner * p.b_si;
    let cbase = p.c_off + outer * p.c_so + inner * p.c_si;

    // Every loop indexes a private array by its own counter over the whole
    // length, which is what makes Mesa unroll it and keep the arrays in
    // registers.
    var acc: array<array<f32, TN>, TM>;
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            acc[i][j] = 0.0;
        }
    }
    for (var k0 = 0u; k0 < p.k; k0 += 8u) {
        let at = a_tile(abase, m0, k0, lane);
        let bt = b_tile(bbase, n0, k0, lane);
        for (var i = 0u; i < TM; i++) {
            for (var j = 0u; j < TN; j++) {
                acc[i][j] += dot8(at[i], bt[j]);
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        if (m0 + i >= p.m) {
            break;
        }
        store_row(cbase + (m0 + i) * p.c_sm, n0, lane, acc[i]);
    }
}
