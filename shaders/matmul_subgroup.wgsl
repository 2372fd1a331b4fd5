// matmul, CPU-family variant (software adapters: lavapipe). Same op as
// matmul.wgsl: C[z] = alpha * A[z] B[z], written (=), or accumulated (+=)
// when accumulate = 1; batched and strided the same way.
//
// One workgroup = one subgroup of 8 lanes computing a TM x 8*TN block of C:
// lane l owns the columns n0 + l + 8c (c < TN) for the TM rows m0 .. m0+TM.
// The reduction runs 8 k at a time: lane l loads A[m, k0 + l] for its TM rows
// and hands them to the others with subgroupBroadcast (a register shuffle),
// and loads its own 8 x TN values of B. Per 8 k a lane loads TM + 8 TN values
// for 8 TM TN multiply-adds (lavapipe pays per loaded value).
// Needs wgpu::Features::SUBGROUP (no `enable subgroups;`, which this naga
// rejects) and subgroups of exactly 8 lanes, one per workgroup.
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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<{{A_T}}>;
@group(0) @binding(2) var<storage, read> bm: array<{{B_T}}>;
@group(0) @binding(3) var<storage, read_write> c: array<{{C_T}}>;

// broadcast8, dot8: one lane's value handed to all 8.
// #include "snippets/broadcast8.wgsl"

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let n0 = wid.x * 8u * TN;
    let m0 = wid.y * TM;
    let z = wid.z;
    let outer = z / p.inner_count;
    let inner = z % p.inner_count;
    let abase = p.a_off + outer * p.a_so + inner * p.a_si;
    let bbase = p.b_off + outer * p.b_so + inner * p.b_si;
    let cbase = p.c_off + outer * p.c_so + inner * p.c_si;

    // Clamped row and column offsets: out-of-range rows and columns compute
    // a duplicate that is never stored.
    var arow: array<u32, TM>;
    for (var i = 0u; i < TM; i++) {
        arow[i] = abase + min(m0 + i, p.m - 1u) * p.a_sm;
    }
    var bcol: array<u32, TN>;
    for (var j = 0u; j < TN; j++) {
        bcol[j] = bbase + min(n0 + lane + 8u * j, p.n - 1u) * p.b_sn;
    }
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
        let k_ok = k0 + lane < p.k;
        let kl = min(k0 + lane, p.k - 1u) * p.a_sk;
        var al: array<f32, TM>;
        for (var i = 0u; i < TM; i++) {
            al[i] = select(0.0, f32(a[arow[i] + kl]), k_ok);
        }
        // Rows k0 .. k0 + 8 of B at this lane's columns (zero past the end).
        var bv: array<array<f32, 8>, TN>;
        for (var r = 0u; r < 8u; r++) {
            let kr = min(k0 + r, p.k - 1u) * p.b_sk;
            for (var j = 0u; j < TN; j++) {
                bv[j][r] = select(0.0, f32(bm[bcol[j] + kr]), k0 + r < p.k);
            }
        }
        for (var i = 0u; i < TM; i++) {
            let d = broadcast8(al[i]);
            for (var j = 0u; j < TN; j++) {
                acc[i][j] += dot8(d, bv[j]);
            }
        }
    }
    for (var i = 0u; i < TM; i++) {
        if (m0 + i >= p.m) {
            break;
        }
        for (var j = 0u; j < TN; j++) {
            let n = n0 + lane + 8u * j;
            if (n < p.n) {
                let o = cbase + (m0 + i) * p.c_sm + n * p.c_sn;
                var v = p.alpha * acc[i][j];
                if (p.accumulate != 0u) {
                    v += f32(c[o]);
                }
                c[o] = {{C_T}}(v);
            }
        }
    }
}
