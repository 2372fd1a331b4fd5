// The A tile of matmul_subgroup.wgsl, one value per load: lane l loads
// A[m0 + i, k0 + l] for its TM rows and hands it to the others.

// A(m0 + i, k0 + r) for i < TM, r < 8, the same on every lane: rows past m
// repeat row m - 1 (never stored), columns past k read 0.
fn a_tile(abase: u32, m0: u32, k0: u32, lane: u32) -> array<array<f32, 8>, TM> {
    let k_ok = k0 + lane < p.k;
    let kl = min(k0 + lane, p.k - 1u) * p.a_sk;
    var t: array<array<f32, 8>, TM>;
    for (var i = 0u; i < TM; i++) {
        let v = select(0.0, f32(a[abase + min(m0 + i, p.m - 1u) * p.a_sm + kl]), k_ok);
        t[i] = broadcast8(v);
    }
    return t;
}
