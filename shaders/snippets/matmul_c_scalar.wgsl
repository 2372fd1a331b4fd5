// store_row of matmul_subgroup.wgsl, one value a store: row crow (its offset
// in c) of this lane's block, v[j] at column b_col(j).
fn store_row(crow: u32, n0: u32, lane: u32, v: array<f32, TN>) {
    for (var j = 0u; j < TN; j++) {
        let n = b_col(j, n0, lane);
        if (n < p.n) {
            let o = crow + n * p.c_sn;
            var r = p.alpha * v[j];
            if (p.accumulate != 0u) {
                r += f32(c[o]);
            }
            c[o] = {{C_T}}(r);
        }
    }
}
