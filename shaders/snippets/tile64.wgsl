// The 64 x 64 workgroup-memory tile of the *_tiled.wgsl implicit GEMMs: a
// workgroup of 16 x 16 invocations computes BM x BN = 64 x 64 outputs, each
// invocation 4 rows (m = 4 lid.y + i) x 4 columns (n = lid.x + 16 j, so that
// neighbouring invocations touch neighbouring columns). Per K step of BK the
// kernel stages As[k][m / 4] (the M operand, 4 consecutive m per vec4) and
// Bs[k][n] (the N operand), then calls tile_multiply.
const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> As: array<vec4<f32>, 256>; // BK * BM / 4
var<workgroup> Bs: array<f32, 1024>;      // BK * BN

// acc[j][i] += sum over the staged k of As[k][m] * Bs[k][n], between the
// barriers that make the staged block visible and free it for the next step.
fn tile_multiply(acc: ptr<function, array<vec4<f32>, 4>>, lid: vec3<u32>) {
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
        let a = As[kk * (BM / 4u) + lid.y];
        for (var j = 0u; j < 4u; j++) {
            (*acc)[j] += a * Bs[kk * BN + lid.x + 16u * j];
        }
    }
    workgroupBarrier();
}
