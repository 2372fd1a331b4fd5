// store_row of matmul_subgroup.wgsl as aligned vec4s (c bound as
// array<vec4<f32>>): with B read along n (matmul_b_vec4.wgsl), a lane's
// columns come four in a row, n0 + 4 LANES c + 4 l .. + 3; the Rust wrapper checks
// that C's columns are contiguous and its offset and other strides multiples
// of 4 (n is, for B along n), so each group is wholly inside or outside C.
fn store_row(crow: u32, n0: u32, lane: u32, v: array<f32, TN>) {
    for (var g = 0u; g < TN / 4u; g++) {
        let n = b_col(4u * g, n0, lane);
        if (n < p.n) {
            let o = (crow + n) / 4u;
            var r = p.alpha * vec4<f32>(v[4u * g], v[4u * g + 1u], v[4u * g + 2u], v[4u * g + 3u]);
            if (p.accumulate != 0u) {
                r += c[o];
            }
            c[o] = r;
        }
    }
}
