// The B tile of matmul_subgroup.wgsl read as vec4<f32> along B's unit
// stride: 8 TN / 4 loads a lane per 8 k instead of 8 TN. bm is bound as
// array<vec4<f32>>; its Rust wrapper checks the other strides, the offsets
// and the unit-stride extent (k along k, n along n) are multiples of 4, and
// along n that TN is.
//   along k (B_ALONG_K, b_sk == 1): lane l owns columns n0 + l + LANES j,
//     as in matmul_b_scalar.wgsl, and loads each one's 8 rows as 2 vec4s;
//   along n (b_sn == 1): lane l owns columns n0 + 4 LANES c + 4 l .. + 3
//     (j = 4 c + q), one vec4 per row and 4 columns.
const B_ALONG_K: bool = {{B_ALONG_K}};

fn b_col(j: u32, n0: u32, lane: u32) -> u32 {
    if (B_ALONG_K) {
        return n0 + lane + LANES * j;
    }
    return n0 + 4u * LANES * (j / 4u) + 4u * lane + j % 4u;
}

// B(k0 + r, b_col(j)) for j < TN, r < 8, on this lane, as
// matmul_b_scalar.wgsl's b_tile (columns past n: a duplicate group).
fn b_tile(bbase: u32, n0: u32, k0: u32, lane: u32) -> array<array<f32, 8>, TN> {
    var t: array<array<f32, 8>, TN>;
    if (B_ALONG_K) {
        for (var j = 0u; j < TN; j++) {
            let col = bbase + min(b_col(j, n0, lane), p.n - 1u) * p.b_sn;
            for (var g = 0u; g < 2u; g++) {
                let kg = k0 + 4u * g;
                let v = select(vec4<f32>(), bm[(col + min(kg, p.k - 4u)) / 4u], kg < p.k);
                for (var q = 0u; q < 4u; q++) {
                    t[j][4u * g + q] = v[q];
                }
            }
        }
    } else {
        for (var r = 0u; r < 8u; r++) {
            let row = bbase + min(k0 + r, p.k - 1u) * p.b_sk;
            for (var c = 0u; c < TN / 4u; c++) {
                let col = min(b_col(4u * c, n0, lane), p.n - 4u);
                let v = select(vec4<f32>(), bm[(row + col) / 4u], k0 + r < p.k);
                for (var q = 0u; q < 4u; q++) {
                    t[4u * c + q][r] = v[q];
                }
            }
        }
    }
    return t;
}
