// conv2d_forward, CPU-family variant (software adapters: lavapipe/llvmpipe).
// Same op and epilogue as conv2d_forward.wgsl:
// y = (conv(x, w) + bias + temb + residual) / out_div, as implicit GEMM with
// M = cout, N = batch*ho*wo, K = cin*k*k.
//
// Why this shape: llvmpipe runs a subgroup of 8 invocations as one 8-wide
// SIMD vector, but turns every storage load into a scalar loop over the lanes,
// so what pays is arithmetic per load. Each lane keeps TM x TN accumulators
// (TM output channels x TN consecutive output pixels of one row), loads each
// input value once per input channel and reuses it for every tap that reads
// it, and the TM x k x k weights of an input channel are loaded TM/8 per lane
// and handed to the other lanes with subgroupBroadcast (a register shuffle).
//
// One workgroup = one subgroup of 8 lanes (the adapter's subgroup size must be
// 8); it covers TM output channels x 8 row segments of TN pixels. Segments run
// over (b, oy, ox) in order, so a workgroup may straddle rows and images.
// Needs wo % TN == 0.

// No `enable subgroups;`: naga 30 rejects the directive; the SUBGROUP feature suffices.

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, ksize: u32,
    stride: u32, pad_top: u32, pad_left: u32, upsample: u32,
    temb_stride: u32, temb_offset: u32, flags: u32, out_div: f32,
}

const HAS_BIAS: u32 = 1u;
const HAS_TEMB: u32 = 2u;
const HAS_RESIDUAL: u32 = 4u;

const TM: u32 = {{TM}}u;      // output channels per workgroup, a multiple of 8
const TN: u32 = {{TN}}u;      // output pixels per lane, consecutive in a row
const K: u32 = {{K}}u;        // kernel size
const S: u32 = {{STRIDE}}u;   // stride
const KK: u32 = K * K;
const MI: u32 = TM / 8u;      // weight rows each lane loads
const NCOL: u32 = (TN - 1u) * S + K; // input columns a lane's segment reads

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> temb: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(8)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let segs_per_row = p.wo / TN;
    let nseg = p.batch * p.ho * segs_per_row;
    let seg_raw = wid.x * 8u + lane;
    let seg = min(seg_raw, nseg - 1u);
    let ox0 = (seg % segs_per_row) * TN;
    let row = seg / segs_per_row;
    let oy = row % p.ho;
    let b = row / p.ho;
    let co0 = wid.y * TM;

    let up = p.upsample;
    let hin = i32(p.h << up);
    let win = i32(p.w << up);
    let iy0 = i32(oy * S) - i32(p.pad_top);
    let ix0 = i32(ox0 * S) - i32(p.pad_left);

    // Where each column of the window lives, and whether it is padding.
    var xcol: array<u32, NCOL>;
    var xcol_ok: array<bool, NCOL>;
    for (var t = 0u; t < NCOL; t++) {
        let ix = ix0 + i32(t);
        xcol_ok[t] = ix >= 0 && ix < win;
        xcol[t] = u32(clamp(ix, 0, win - 1)) >> up;
    }
    // The weight rows this lane loads: co0 + lane + 8 i (clamped at cout).
    var wrow: array<u32, MI>;
    for (var i = 0u; i < MI; i++) {
        wrow[i] = min(co0 + lane + 8u * i, p.cout - 1u) * p.cin * KK;
    }

    var acc: array<array<f32, TN>, TM>;
    for (var m = 0u; m < TM; m++) {
        for (var j = 0u; j < TN; j++) {
            acc[m][j] = 0.0;
        }
    }

    let plane = p.h * p.w;
    for (var ci = 0u; ci < p.cin; ci++) {
        var wl: array<array<f32, KK>, MI>;
        for (var i = 0u; i < MI; i++) {
            for (var t = 0u; t < KK; t++) {
                wl[i][t] = wt[wrow[i] + ci * KK + t];
            }
        }
        let xbase = (b * p.cin + ci) * plane;
        for (var ky = 0u; ky < K; ky++) {
            let iy = iy0 + i32(ky);
            let row_ok = iy >= 0 && iy < hin;
            let xrow = xbase + (u32(clamp(iy, 0, hin - 1)) >> up) * p.w;
            var xr: array<f32, NCOL>;
            for (var t = 0u; t < NCOL; t++) {
                xr[t] = select(0.0, x[xrow + xcol[t]], row_ok && xcol_ok[t]);
            }
            for (var kx = 0u; kx < K; kx++) {
                for (var i = 0u; i < MI; i++) {
                    let v = wl[i][ky * K + kx];
                    let w0 = subgroupBroadcast(v, 0u);
                    let w1 = subgroupBroadcast(v, 1u);
                    let w2 = subgroupBroadcast(v, 2u);
                    let w3 = subgroupBroadcast(v, 3u);
                    let w4 = subgroupBroadcast(v, 4u);
                    let w5 = subgroupBroadcast(v, 5u);
                    let w6 = subgroupBroadcast(v, 6u);
                    let w7 = subgroupBroadcast(v, 7u);
                    for (var j = 0u; j < TN; j++) {
                        let xv = xr[j * S + kx];
                        acc[8u * i + 0u][j] += w0 * xv;
                        acc[8u * i + 1u][j] += w1 * xv;
                        acc[8u * i + 2u][j] += w2 * xv;
                        acc[8u * i + 3u][j] += w3 * xv;
                        acc[8u * i + 4u][j] += w4 * xv;
                        acc[8u * i + 5u][j] += w5 * xv;
                        acc[8u * i + 6u][j] += w6 * xv;
                        acc[8u * i + 7u][j] += w7 * xv;
                    }
                }
            }
        }
    }

    if (seg_raw >= nseg) {
        return;
    }
    let hw = p.ho * p.wo;
    let obase = oy * p.wo + ox0;
    for (var m = 0u; m < TM; m++) {
        // acc[8 i + l] holds channel co0 + l + 8 i, as loaded above.
        let co = co0 + m;
        if (co >= p.cout) {
            break;
        }
        var add = 0.0;
        if ((p.flags & HAS_BIAS) != 0u) {
            add += bias[co];
        }
        if ((p.flags & HAS_TEMB) != 0u) {
            add += temb[b * p.temb_stride + p.temb_offset + co];
        }
        let o = (b * p.cout + co) * hw + obase;
        for (var j = 0u; j < TN; j++) {
            var v = acc[m][j] + add;
            if ((p.flags & HAS_RESIDUAL) != 0u) {
                v += residual[o + j];
            }
            y[o + j] = v / p.out_div;
        }
    }
}
