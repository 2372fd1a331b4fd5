// The A tile of matmul_subgroup.wgsl, one value per load: lane l loads
// A[m0 + i, k0 + l % 8] for its rows and hands it to the others. On 8 lanes
// a lane loads all TM rows; on 16, lanes 0-7 load rows m0 + 2j and lanes
// 8-15 rows m0 + 2j + 1 (broadcast8_hi).
const A_SRC: u32 = LANES / 8u; // lanes holding each k (1 or 2)

// A(m0 + i, k0 + r) for i < TM, r < 8, the same on every lane: rows past m
// repeat row m - 1 (never stored), columns past k read 0.
fn a_tile(abase: u32, m0: u32, k0: u32, lane: u32) -> array<array<f32, 8>, TM> {
    let kq = k0 + lane % 8u;
    let k_ok = kq < p.k;
    let kl = min(kq, p.k - 1u) * p.a_sk;
    var t: array<array<f32, 8>, TM>;
    for (var j = 0u; j < (TM + A_SRC - 1u) / A_SRC; j++) {
        let row = min(m0 + A_SRC * j + lane / 8u, p.m - 1u);
        let v = select(0.0, f32(a[abase + row * p.a_sm + kl]), k_ok);
        t[A_SRC * j] = broadcast8(v);
        if (A_SRC == 2u && 2u * j + 1u < TM) {
            t[2u * j + 1u] = broadcast8_hi(v);
        }
    }
    return t;
}
