// conv2d_backward_weight, GPU-family variant for hardware GPUs. The same op as
// conv2d_backward_weight.wgsl:
// dw[co, ci, ky, kx] = inv_div * sum over b, oy, ox of
//     dy[b, co, oy, ox] * x_logical[b, ci, oy*S + ky - pad_top, ox*S + kx - pad_left]
// (zero outside the input; upsample = 1 reads x nearest-upsampled 2x).
//
// The forward's workgroup-memory tiled GEMM (conv2d_forward_tiled.wgsl) turned
// around: M = cout, N = cin*k*k, and the reduction runs over the
// batch*ho*wo output pixels. A workgroup of 16 x 16 invocations computes a
// BM x BN = 64 x 64 tile of dw; per step of BK = 16 pixels it stages the
// 64 x 16 block of dy and the 16 x 64 im2col block of x in workgroup memory,
// then each invocation accumulates 4 channels x 4 columns in registers. The
// dispatch's z cuts the reduction into chunks of segs_per_chunk steps, each
// written (=) to its own copy of dw in `out` (dw itself when there is one
// chunk), summed afterwards by sum_rows.
// petal:trusted (indices are clamped or guarded by sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, upsample: u32,
    pad_top: u32, pad_left: u32, nsegs: u32, segs_per_chunk: u32,
    inv_div: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const K: u32 = {{K}}u;
const S: u32 = {{S}}u;
const KK: u32 = K * K;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// BM, BN, BK, tile_multiply, and the staged blocks: As dy (4 output
// channels per vec4), Bs the im2col block of x.
// #include "snippets/tile64.wgsl"

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let hw = p.ho * p.wo;
    let p_total = p.batch * hw;
    let n_total = p.cin * KK;
    let n0 = wid.x * BN;
    let co0 = wid.y * BM;
    let up = p.upsample;
    let hin = i32(p.h << up);
    let win = i32(p.w << up);
    let plane = p.h * p.w;

    // dy loads: pixel t % 16 of the step, channels co0 + t / 16 + 16 r
    // (neighbouring invocations read neighbouring pixels).
    let ak = t % BK;
    let am = t / BK;
    // x loads: column n (fixed: input channel and tap), pixels t / 64 + 4 r.
    let bn = t % BN;
    let n_load = n0 + bn;
    let n_ok = n_load < n_total;
    let nl = min(n_load, n_total - 1u);
    let ci = nl / KK;
    let tap = nl % KK;
    let ky = i32(tap / K) - i32(p.pad_top);
    let kx = i32(tap % K) - i32(p.pad_left);

    var acc: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j++) {
        acc[j] = vec4<f32>(0.0);
    }
    let s_begin = wid.z * p.segs_per_chunk;
    let s_end = min(s_begin + p.segs_per_chunk, p.nsegs);
    for (var sg = s_begin; sg < s_end; sg++) {
        let r0 = sg * BK;
        {
            let r = r0 + ak;
            let r_ok = r < p_total;
            let rl = min(r, p_total - 1u);
            let b = rl / hw;
            let pix = rl % hw;
            for (var i = 0u; i < 4u; i++) {
                let m = am + 16u * i;
                let co = co0 + m;
                let v = select(0.0, dy[(b * p.cout + min(co, p.cout - 1u)) * hw + pix], r_ok && co < p.cout);
                As[ak * (BM / 4u) + m / 4u][m % 4u] = v;
            }
        }
        for (var i = 0u; i < 4u; i++) {
            let kr = t / BN + 4u * i;
            let r = r0 + kr;
            let rl = min(r, p_total - 1u);
            let b = rl / hw;
            let pix = rl % hw;
            let iy = i32((pix / p.wo) * S) + ky;
            let ix = i32((pix % p.wo) * S) + kx;
            let inside = n_ok && r < p_total && iy >= 0 && ix >= 0 && iy < hin && ix < win;
            let sy = u32(clamp(iy, 0, hin - 1)) >> up;
            let sx = u32(clamp(ix, 0, win - 1)) >> up;
            Bs[kr * BN + bn] = select(0.0, x[(b * p.cin + ci) * plane + sy * p.w + sx], inside);
        }
        tile_multiply(&acc, lid);
    }

    let obase = wid.z * p.cout * n_total;
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + lid.x + 16u * j;
        if (n >= n_total) {
            continue;
        }
        for (var i = 0u; i < 4u; i++) {
            let co = co0 + lid.y * 4u + i;
            if (co >= p.cout) {
                continue;
            }
            out[obase + co * n_total + n] = acc[j][i] * p.inv_div;
        }
    }
}
