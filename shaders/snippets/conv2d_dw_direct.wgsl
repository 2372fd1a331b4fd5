// The direct form of conv2d_backward_weight_subgroup.wgsl: a step is one
// output row segment, and each lane keeps the K x K taps of each of its
// TM x TC channel pairs.
const ROWS: u32 = 1u;
const AA: u32 = K * K;

fn taps(a: array<f32, AA>) -> array<f32, KK> {
    return a;
}

// Adds the segment's products: tap (ky, kx) of lane l's pixel reads x at
// column l * S + kx of row ky.
fn accumulate(
    acc: ptr<function, array<array<array<f32, AA>, TC>, TM>>,
    xr: ptr<function, array<array<array<f32, NCOL>, NR>, TC>>,
    dl: array<DyLane, ROWS>,
) {
    for (var m = 0u; m < TM; m++) {
        let d = dy_bcast(dl[0], m);
        for (var c = 0u; c < TC; c++) {
            for (var ky = 0u; ky < K; ky++) {
                for (var kx = 0u; kx < K; kx++) {
                    var u: array<f32, 8>;
                    for (var l = 0u; l < 8u; l++) {
                        u[l] = (*xr)[c][ky][l * S + kx];
                    }
                    (*acc)[m][c][ky * K + kx] += dot8(d, u);
                }
            }
        }
    }
}
