// conv2d_backward_weight, generic variant (any adapter).
// dw[co, ci, ky, kx] = inv_div * sum over b, oy, ox of
//     dy[b, co, oy, ox] * x_logical[b, ci, oy*S + ky - pad_top, ox*S + kx - pad_left]
// (zero outside the input; upsample = 1 reads x nearest-upsampled 2x).
// x is (B, cin, h, w), dy (B, cout, ho, wo), dw (cout, cin, K, K).
//
// The reduction runs over row segments of TN output pixels; the dispatch's z
// cuts it into chunks of segs_per_chunk segments, each written (=) to its own
// copy of dw in `out` (dw itself when there is one chunk), summed afterwards
// by sum_rows. Each invocation keeps TM output channels x K x K taps of one
// input channel in registers.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, upsample: u32,
    pad_top: u32, pad_left: u32, nsegs: u32, segs_per_chunk: u32,
    inv_div: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const K: u32 = {{K}}u;
const S: u32 = {{S}}u;
const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const KK: u32 = K * K;
const NCOL: u32 = (TN - 1u) * S + K;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let co_blocks = (p.cout + TM - 1u) / TM;
    if (gid.x >= p.cin * co_blocks) {
        return;
    }
    let ci = gid.x % p.cin;
    let co0 = (gid.x / p.cin) * TM;
    let chunk = gid.z;
    let up = p.upsample;
    let hin = i32(p.h << up);
    let win = i32(p.w << up);
    let plane_in = p.h * p.w;
    let plane_out = p.ho * p.wo;
    let segs_per_row = (p.wo + TN - 1u) / TN;

    var acc: array<array<f32, KK>, TM>;
    for (var m = 0u; m < TM; m++) {
        for (var t = 0u; t < KK; t++) {
            acc[m][t] = 0.0;
        }
    }
    let s_begin = chunk * p.segs_per_chunk;
    let s_end = min(s_begin + p.segs_per_chunk, p.nsegs);
    for (var sg = s_begin; sg < s_end; sg++) {
        let ox0 = (sg % segs_per_row) * TN;
        let r = sg / segs_per_row;
        let oy = r % p.ho;
        let b = r / p.ho;
        let iy0 = i32(oy * S) - i32(p.pad_top);
        let ix0 = i32(ox0 * S) - i32(p.pad_left);
        let xb = (b * p.cin + ci) * plane_in;
        var xr: array<array<f32, NCOL>, K>;
        for (var ky = 0u; ky < K; ky++) {
            let iy = iy0 + i32(ky);
            let row_ok = iy >= 0 && iy < hin;
            let xrow = xb + (u32(clamp(iy, 0, hin - 1)) >> up) * p.w;
            for (var t = 0u; t < NCOL; t++) {
                let ix = ix0 + i32(t);
                let ok = row_ok && ix >= 0 && ix < win;
                xr[ky][t] = select(0.0, x[xrow + (u32(clamp(ix, 0, win - 1)) >> up)], ok);
            }
        }
        let ybase = b * p.cout * plane_out + oy * p.wo;
        for (var m = 0u; m < TM; m++) {
            let co = min(co0 + m, p.cout - 1u);
            var d: array<f32, TN>;
            for (var j = 0u; j < TN; j++) {
                let ox = ox0 + j;
                d[j] = select(0.0, dy[ybase + co * plane_out + min(ox, p.wo - 1u)], ox < p.wo);
            }
            for (var ky = 0u; ky < K; ky++) {
                for (var kx = 0u; kx < K; kx++) {
                    var s = 0.0;
                    for (var j = 0u; j < TN; j++) {
                        s += d[j] * xr[ky][j * S + kx];
                    }
                    acc[m][ky * K + kx] += s;
                }
            }
        }
    }

    let obase = chunk * p.cout * p.cin * KK;
    for (var m = 0u; m < TM; m++) {
        let co = co0 + m;
        if (co >= p.cout) {
            break;
        }
        let o = obase + (co * p.cin + ci) * KK;
        for (var t = 0u; t < KK; t++) {
            out[o + t] = acc[m][t] * p.inv_div;
        }
    }
}
