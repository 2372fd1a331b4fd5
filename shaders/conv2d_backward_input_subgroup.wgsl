// conv2d_backward_input, CPU-family variant (software adapters: lavapipe).
// dx (B, cin, h, w) (+)= d/dx of y = conv(x, w) / out_div, given
// dy (B, cout, ho, wo) and w (cout, cin, k, k). dx is written (=), or
// accumulated (+=) when accumulate = 1.
//
// The transposed convolution is recast, per spatial dimension, as a plain
// correlation of dy, so the kernel has the forward's shape (implicit GEMM,
// M = cin, N = dx pixels, K = cout * T * T). A dx row index i = u*PH + phase
// reads dy rows u*SD + offset[phase] + t for t < T, with an effective weight
// that is a sum of NA x NA kernel taps:
//   MODE 0, stride 1:   T = k,         SD = 1, PH = 1, tap ky = k-1-t
//   MODE 1, upsampled:  T = k+1,       SD = 2, PH = 1, taps ky = k-1-t and k-t
//                       (each dx pixel collects its 4 nearest-upsampled
//                       positions; their kernels overlap into one (k+1)^2 one)
//   MODE 2, stride 2:   T = ceil(k/2), SD = 1, PH = 2, tap ky = f + 2(T-1-t)
//                       where f = (phase + pad) % 2 (only taps of one parity
//                       reach a dx pixel; the dispatch's z is the phase pair)
// Out-of-range dy positions and taps read as zero, which covers any padding.
//
// Lavapipe shape (as conv2d_forward_subgroup.wgsl): one workgroup = one
// subgroup of 8 lanes; each lane keeps TM input channels x TN consecutive dx
// sub-pixels of a row; per output channel the TM x T x T effective weights are
// loaded TM/8 per lane and handed to the others with subgroupBroadcast.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

// Needs wgpu::Features::SUBGROUP. No `enable subgroups;`: this naga rejects
// the directive and takes the subgroup builtins without it.

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, sub_h: u32,
    sub_w: u32, accumulate: u32, inv_div: f32, _pad0: u32,
    cy0: i32, cy1: i32, cx0: i32, cx1: i32,
    fy0: u32, fy1: u32, fx0: u32, fx1: u32,
}

const MODE: u32 = {{MODE}}u;
const K: u32 = {{K}}u;
const T: u32 = {{T}}u;        // effective taps per dimension
const SD: u32 = {{SD}}u;      // dy step per dx sub-pixel
const PH: u32 = {{PH}}u;      // phases per dimension
const NA: u32 = {{NA}}u;      // kernel taps folded into one effective tap
const TM: u32 = {{TM}}u;      // input channels per workgroup, a multiple of 8
const TN: u32 = {{TN}}u;      // dx sub-pixels per lane, consecutive in a row
const KK: u32 = K * K;
const MI: u32 = TM / 8u;
const NCOL: u32 = (TN - 1u) * SD + T;

@group(0) @binding(0) var<uniform> p: Params;
// dy as f32, or as vec4<f32> where each lane's row segment is read in aligned
// groups of 4 columns (DY_ROW below, from src/kernels/conv2d_backward.rs).
@group(0) @binding(1) var<storage, read> dy: array<{{DY_T}}>;
@group(0) @binding(2) var<storage, read> wt: array<WWord>;
// w_at, and w_at9 (a channel's 3x3 taps: from 3 vec4 loads with f32v4).
// #include "snippets/weights_{{WEIGHTS}}.wgsl"
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

// broadcast8, dot8: one lane's value handed to all 8.
// #include "snippets/broadcast8.wgsl"

// The kernel index of fold a of effective tap t (MODE 0 and 1), which may
// be out of range (a tap that does not reach this dx pixel).
fn ktap(t: u32, a: u32) -> i32 {
    return i32(K) - 1 - i32(t) + i32(a);
}

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let py = wid.z / PH;
    let px = wid.z % PH;
    let segs_per_row = (p.sub_w + TN - 1u) / TN;
    let nseg = p.batch * p.sub_h * segs_per_row;
    let seg_raw = wid.x * 8u + lane;
    let seg = min(seg_raw, nseg - 1u);
    let v0 = (seg % segs_per_row) * TN;
    let row = seg / segs_per_row;
    let u = row % p.sub_h;
    let b = row / p.sub_h;
    let ci0 = wid.y * TM;

    let cy = select(p.cy0, p.cy1, py == 1u);
    let cx = select(p.cx0, p.cx1, px == 1u);
    let fy = select(p.fy0, p.fy1, py == 1u);
    let fx = select(p.fx0, p.fx1, px == 1u);
    let oy0 = i32(u * SD) + cy;
    let ox0 = i32(v0 * SD) + cx;

    var ycol: array<u32, NCOL>;
    var ycol_ok: array<bool, NCOL>;
    for (var t = 0u; t < NCOL; t++) {
        let ox = ox0 + i32(t);
        ycol_ok[t] = ox >= 0 && ox < i32(p.wo);
        ycol[t] = u32(clamp(ox, 0, i32(p.wo) - 1));
    }
    // This lane loads the kernel slices of input channels ci0 + lane + 8 i.
    var wrow: array<u32, MI>;
    for (var i = 0u; i < MI; i++) {
        wrow[i] = min(ci0 + lane + 8u * i, p.cin - 1u) * KK;
    }

    var acc: array<array<f32, TN>, TM>;
    for (var m = 0u; m < TM; m++) {
        for (var j = 0u; j < TN; j++) {
            acc[m][j] = 0.0;
        }
    }

    let plane = p.ho * p.wo;
    for (var co = 0u; co < p.cout; co++) {
        // The effective weights of this lane's MI input channels. Every loop
        // below indexes a private array by its own counter over the array's
        // whole length: that is what makes Mesa's NIR unroll it (and keep the
        // arrays in registers) however large the body.
        var wl: array<array<array<f32, T>, T>, MI>;
        let wco = co * p.cin * KK;
        for (var i = 0u; i < MI; i++) {
            let base = wco + wrow[i];
            if (MODE == 2u) {
                // Only the taps of this phase's parity: T x T loads.
                for (var ty = 0u; ty < T; ty++) {
                    for (var tx = 0u; tx < T; tx++) {
                        let ky = fy + 2u * (T - 1u - ty);
                        let kx = fx + 2u * (T - 1u - tx);
                        let v = w_at(base + min(ky, K - 1u) * K + min(kx, K - 1u));
                        wl[i][ty][tx] = select(0.0, v, ky < K && kx < K);
                    }
                }
            } else {
                // All K x K taps once, then (MODE 1) the sums of NA x NA of
                // them, at indices known once unrolled.
                var wk: array<array<f32, K>, K>;
                if (K == 3u) {
                    let m = w_at9(base);
                    for (var ky = 0u; ky < K; ky++) {
                        for (var kx = 0u; kx < K; kx++) {
                            wk[ky][kx] = m[ky % 3u][kx % 3u];
                        }
                    }
                } else {
                    for (var ky = 0u; ky < K; ky++) {
                        for (var kx = 0u; kx < K; kx++) {
                            wk[ky][kx] = w_at(base + ky * K + kx);
                        }
                    }
                }
                for (var ty = 0u; ty < T; ty++) {
                    for (var tx = 0u; tx < T; tx++) {
                        var e = 0.0;
                        for (var a = 0u; a < NA; a++) {
                            for (var c = 0u; c < NA; c++) {
                                let ky = ktap(ty, a);
                                let kx = ktap(tx, c);
                                let ok = ky >= 0 && ky < i32(K) && kx >= 0 && kx < i32(K);
                                e += select(0.0, wk[clamp(ky, 0, i32(K) - 1)][clamp(kx, 0, i32(K) - 1)], ok);
                            }
                        }
                        wl[i][ty][tx] = e;
                    }
                }
            }
        }
        let ybase = (b * p.cout + co) * plane;
        for (var ty = 0u; ty < T; ty++) {
            let oy = oy0 + i32(ty);
            let row_ok = oy >= 0 && oy < i32(p.ho);
            let yrow = ybase + u32(clamp(oy, 0, i32(p.ho) - 1)) * p.wo;
            // yr[t]: dy at column ox0 + t of this row, 0 outside dy.
            var yr: array<f32, NCOL>;
{{DY_ROW}}
            for (var tx = 0u; tx < T; tx++) {
                for (var i = 0u; i < MI; i++) {
                    let w = broadcast8(wl[i][ty][tx]);
                    for (var j = 0u; j < TN; j++) {
                        let yv = yr[j * SD + tx];
                        for (var l = 0u; l < 8u; l++) {
                            acc[8u * i + l][j] += w[l] * yv;
                        }
                    }
                }
            }
        }
    }

    let iy = u * PH + py;
    if (seg_raw >= nseg || iy >= p.h) {
        return;
    }
    for (var m = 0u; m < TM; m++) {
        // acc[8 i + l] holds input channel ci0 + l + 8 i, as loaded above.
        let ci = ci0 + m;
        if (ci >= p.cin) {
            break;
        }
        let obase = ((b * p.cin + ci) * p.h + iy) * p.w;
        for (var j = 0u; j < TN; j++) {
            let ix = (v0 + j) * PH + px;
            if (v0 + j >= p.sub_w || ix >= p.w) {
                break;
            }
            var v = acc[m][j] * p.inv_div;
            if (p.accumulate != 0u) {
                v += dx[obase + ix];
            }
            dx[obase + ix] = v;
        }
    }
}
