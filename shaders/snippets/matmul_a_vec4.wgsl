// The A tile of matmul_subgroup.wgsl read as vec4<f32> along A's unit
// stride: TM / (LANES / 2) loads a lane per 8 k instead of TM (on lavapipe a
// load costs about the same whatever its width); the Rust wrapper checks TM
// is a multiple of LANES / 2. a is bound as array<vec4<f32>>; its
// Rust wrapper checks that every other stride and offset is a multiple of 4
// and that the unit-stride extent (k along k, m along m) is too, so a group
// of 4 lies wholly inside or wholly outside A. Lane l's load s
// (s < TM / (LANES / 2)):
//   along k (A_ALONG_K, a_sk == 1): row m0 + (LANES / 2) s + l / 2, columns
//     k0 + 4 (l % 2) .. + 3: a row's 8 columns come from lanes 2h, 2h + 1;
//   along m (a_sm == 1): rows m0 + (LANES / 2) s + 4 (l / 8) .. + 3 at
//     column k0 + l % 8 (lanes 8-15, on 16, take the second 4 rows).
const A_ALONG_K: bool = {{A_ALONG_K}};
const A_ROWS: u32 = LANES / 2u; // rows one load of all lanes covers

fn a_tile(abase: u32, m0: u32, k0: u32, lane: u32) -> array<array<f32, 8>, TM> {
    var t: array<array<f32, 8>, TM>;
    for (var s = 0u; s < TM / A_ROWS; s++) {
        if (A_ALONG_K) {
            let row = min(m0 + A_ROWS * s + lane / 2u, p.m - 1u);
            let kg = k0 + 4u * (lane % 2u);
            let v = select(vec4<f32>(), a[(abase + row * p.a_sm + min(kg, p.k - 4u)) / 4u], kg < p.k);
            for (var h = 0u; h < A_ROWS; h++) {
                t[A_ROWS * s + h] = broadcast_pair(v, h);
            }
        } else {
            let kl = k0 + lane % 8u;
            let row = min(m0 + A_ROWS * s + 4u * (lane / 8u), p.m - 4u);
            let v = select(vec4<f32>(), a[(abase + row + min(kl, p.k - 1u) * p.a_sk) / 4u], kl < p.k);
            for (var q = 0u; q < 4u; q++) {
                t[A_ROWS * s + q] = broadcast8(v[q]);
                if (A_ROWS == 8u) {
                    t[A_ROWS * s + 4u + q] = broadcast8_hi(v[q]);
                }
            }
        }
    }
    return t;
}
