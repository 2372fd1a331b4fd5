// The A tile of matmul_subgroup.wgsl read as vec4<f32> along A's unit
// stride: TM / 4 loads a lane per 8 k instead of TM (on lavapipe a load costs
// about the same whatever its width). a is bound as array<vec4<f32>>; its
// Rust wrapper checks that every other stride and offset is a multiple of 4
// and that the unit-stride extent (k along k, m along m) is too, so a group
// of 4 lies wholly inside or wholly outside A. Lane l's load s (s < TM / 4):
//   along k (A_ALONG_K, a_sk == 1): row m0 + 4 s + l / 2, columns
//     k0 + 4 (l % 2) .. + 3: a row's 8 columns come from lanes 2h, 2h + 1;
//   along m (a_sm == 1): rows m0 + 4 s .. + 3 at column k0 + l.
const A_ALONG_K: bool = {{A_ALONG_K}};

// A(m0 + i, k0 + r) for i < TM, r < 8, the same on every lane, as
// matmul_a_scalar.wgsl's a_tile.
fn a_tile(abase: u32, m0: u32, k0: u32, lane: u32) -> array<array<f32, 8>, TM> {
    var t: array<array<f32, 8>, TM>;
    for (var s = 0u; s < TM / 4u; s++) {
        if (A_ALONG_K) {
            let row = min(m0 + 4u * s + lane / 2u, p.m - 1u);
            let kg = k0 + 4u * (lane % 2u);
            let v = select(vec4<f32>(), a[(abase + row * p.a_sm + min(kg, p.k - 4u)) / 4u], kg < p.k);
            for (var h = 0u; h < 4u; h++) {
                t[4u * s + h] = broadcast_pair(v, h);
            }
        } else {
            let kl = k0 + lane;
            let row = min(m0 + 4u * s, p.m - 4u);
            let v = select(vec4<f32>(), a[(abase + row + min(kl, p.k - 1u) * p.a_sk) / 4u], kl < p.k);
            for (var q = 0u; q < 4u; q++) {
                t[4u * s + q] = broadcast8(v[q]);
            }
        }
    }
    return t;
}
