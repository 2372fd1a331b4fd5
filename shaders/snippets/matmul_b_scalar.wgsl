// The B tile of matmul_subgroup.wgsl, one value per load: lane l owns the
// columns n0 + l + LANES j (j < TN) and loads its own 8 rows of each.

fn b_col(j: u32, n0: u32, lane: u32) -> u32 {
    return n0 + lane + LANES * j;
}

// B(k0 + r, b_col(j)) for j < TN, r < 8, on this lane: columns past n repeat
// column n - 1 (never stored), rows past k read 0.
fn b_tile(bbase: u32, n0: u32, k0: u32, lane: u32) -> array<array<f32, 8>, TN> {
    var t: array<array<f32, 8>, TN>;
    for (var r = 0u; r < 8u; r++) {
        let kr = min(k0 + r, p.k - 1u) * p.b_sk;
        for (var j = 0u; j < TN; j++) {
            let col = min(b_col(j, n0, lane), p.n - 1u) * p.b_sn;
            t[j][r] = select(0.0, f32(bm[bbase + col + kr]), k0 + r < p.k);
        }
    }
    return t;
}
