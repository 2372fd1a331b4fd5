// The Winograd form of conv2d_backward_weight_subgroup.wgsl, for 3x3 kernels
// at stride 1 (K = 3, S = 1) and an even number of output rows. A step is
// two output rows of 8 pixels: four 2x2 tiles g of dy, each reading a 4x4
// patch d of x (rows 0..3 of the step, columns 2t..2t+3 for tile t). Their
// 3x3 contribution to dw is the correlation of d with g, which Winograd's
// F(3x3, 2x2) (Lavin & Gray 2016, the transpose of F(2x2, 3x3)) writes as
//     G^T [ (A g A^T) * (B^T d B) ] G,   * elementwise on 4x4,
//     B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
//     A = [1 0; 1 1; 1 -1; 0 -1],  G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1].
// G^T . G is linear, so each lane sums the 4x4 products over all tiles and
// applies it once, at the end (taps): 16 multiply-adds per tile and channel
// pair instead of 36, plus the transforms, shared by the TM or TC channels
// they serve.
const ROWS: u32 = 2u;
const AA: u32 = 16u;

// G^T m G, m the 4x4 sums (row-major), as the 3x3 taps.
fn taps(m: array<f32, AA>) -> array<f32, KK> {
    var r: array<f32, 12>;
    for (var j = 0u; j < 4u; j++) {
        let h = 0.5 * (m[4u + j] + m[8u + j]);
        r[j] = m[j] + h;
        r[4u + j] = 0.5 * (m[4u + j] - m[8u + j]);
        r[8u + j] = h + m[12u + j];
    }
    var w: array<f32, KK>;
    for (var i = 0u; i < 3u; i++) {
        let h = 0.5 * (r[4u * i + 1u] + r[4u * i + 2u]);
        w[3u * i] = r[4u * i] + h;
        w[3u * i + 1u] = 0.5 * (r[4u * i + 1u] - r[4u * i + 2u]);
        w[3u * i + 2u] = h + r[4u * i + 3u];
    }
    return w;
}

fn accumulate(
    acc: ptr<function, array<array<array<f32, AA>, TC>, TM>>,
    xr: ptr<function, array<array<array<f32, NCOL>, NR>, TC>>,
    dl: array<DyLane, ROWS>,
) {
    // B^T d B of each of this lane's input channels and tiles.
    var v: array<array<array<f32, AA>, 4>, TC>;
    for (var c = 0u; c < TC; c++) {
        for (var t = 0u; t < 4u; t++) {
            var bd: array<f32, AA>;
            for (var j = 0u; j < 4u; j++) {
                let d0 = (*xr)[c][0][2u * t + j];
                let d1 = (*xr)[c][1][2u * t + j];
                let d2 = (*xr)[c][2][2u * t + j];
                let d3 = (*xr)[c][3][2u * t + j];
                bd[j] = d0 - d2;
                bd[4u + j] = d1 + d2;
                bd[8u + j] = d2 - d1;
                bd[12u + j] = d1 - d3;
            }
            for (var i = 0u; i < 4u; i++) {
                v[c][t][4u * i] = bd[4u * i] - bd[4u * i + 2u];
                v[c][t][4u * i + 1u] = bd[4u * i + 1u] + bd[4u * i + 2u];
                v[c][t][4u * i + 2u] = bd[4u * i + 2u] - bd[4u * i + 1u];
                v[c][t][4u * i + 3u] = bd[4u * i + 1u] - bd[4u * i + 3u];
            }
        }
    }
    for (var m = 0u; m < TM; m++) {
        // dy of output channel co0 + m: rows 0 and 1 of the step's 8 pixels.
        let e0 = dy_bcast(dl[0], m);
        let e1 = dy_bcast(dl[1], m);
        // A g A^T of each tile (the same on every lane).
        var ga: array<array<f32, AA>, 4>;
        for (var t = 0u; t < 4u; t++) {
            // A g: rows g0, g0 + g1, g0 - g1, -g1 of g's columns.
            var ag: array<f32, 8>;
            ag[0] = e0[2u * t];
            ag[1] = e0[2u * t + 1u];
            ag[2] = e0[2u * t] + e1[2u * t];
            ag[3] = e0[2u * t + 1u] + e1[2u * t + 1u];
            ag[4] = e0[2u * t] - e1[2u * t];
            ag[5] = e0[2u * t + 1u] - e1[2u * t + 1u];
            ag[6] = -e1[2u * t];
            ag[7] = -e1[2u * t + 1u];
            // (A g) A^T: each row (a, b) becomes a, a + b, a - b, -b.
            for (var i = 0u; i < 4u; i++) {
                let a = ag[2u * i];
                let b = ag[2u * i + 1u];
                ga[t][4u * i] = a;
                ga[t][4u * i + 1u] = a + b;
                ga[t][4u * i + 2u] = a - b;
                ga[t][4u * i + 3u] = -b;
            }
        }
        for (var c = 0u; c < TC; c++) {
            for (var i = 0u; i < AA; i++) {
                (*acc)[m][c][i] += ga[0][i] * v[c][0][i] + ga[1][i] * v[c][1][i]
                    + ga[2][i] * v[c][2][i] + ga[3][i] * v[c][3][i];
            }
        }
    }
}
