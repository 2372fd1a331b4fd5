// conv2d_backward_input, generic variant (any adapter).
// dx (B, cin, h, w) (+)= d/dx of y = conv(x, w) / out_div, given
// dy (B, cout, ho, wo) and w (cout, cin, k, k). dx is written (=), or
// accumulated (+=) when accumulate = 1.
//
// Same recasting as conv2d_backward_input_subgroup.wgsl (see there): a dx row
// index i = u*PH + phase reads dy rows u*SD + offset[phase] + t, t < T, with an
// effective weight summed from NA x NA kernel taps; MODE 0 stride 1, MODE 1
// upsampled input, MODE 2 stride 2 (z of the dispatch = phase pair).
// Each invocation keeps TM input channels x TN consecutive dx sub-pixels of a
// row in registers and loads its own weights.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, sub_h: u32,
    sub_w: u32, accumulate: u32, inv_div: f32, _pad0: u32,
    cy0: i32, cy1: i32, cx0: i32, cx1: i32,
    fy0: u32, fy1: u32, fx0: u32, fx1: u32,
}

const MODE: u32 = {{MODE}}u;
const K: u32 = {{K}}u;
const T: u32 = {{T}}u;
const SD: u32 = {{SD}}u;
const PH: u32 = {{PH}}u;
const NA: u32 = {{NA}}u;
const TM: u32 = {{TM}}u;
const TN: u32 = {{TN}}u;
const KK: u32 = K * K;
const NCOL: u32 = (TN - 1u) * SD + T;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

fn ktap(t: u32, a: u32, f: u32) -> i32 {
    if (MODE == 2u) {
        return i32(f + 2u * (T - 1u - t));
    }
    return i32(K) - 1 - i32(t) + i32(a);
}

fn weff(base: u32, ty: u32, tx: u32, fy: u32, fx: u32) -> f32 {
    var s = 0.0;
    for (var a = 0u; a < NA; a++) {
        let ky = ktap(ty, a, fy);
        for (var c = 0u; c < NA; c++) {
            let kx = ktap(tx, c, fx);
            let ok = ky >= 0 && ky < i32(K) && kx >= 0 && kx < i32(K);
            let idx = base + u32(clamp(ky, 0, i32(K) - 1)) * K + u32(clamp(kx, 0, i32(K) - 1));
            s += select(0.0, wt[idx], ok);
        }
    }
    return s;
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let py = wid.z / PH;
    let px = wid.z % PH;
    let segs_per_row = (p.sub_w + TN - 1u) / TN;
    let nseg = p.batch * p.sub_h * segs_per_row;
    if (gid.x >= nseg) {
        return;
    }
    let v0 = (gid.x % segs_per_row) * TN;
    let row = gid.x / segs_per_row;
    let u = row % p.sub_h;
    let b = row / p.sub_h;
    let ci0 = gid.y * TM;
    let iy = u * PH + py;
    if (iy >= p.h) {
        return;
    }

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

    var acc: array<array<f32, TN>, TM>;
    for (var m = 0u; m < TM; m++) {
        for (var j = 0u; j < TN; j++) {
            acc[m][j] = 0.0;
        }
    }
    let plane = p.ho * p.wo;
    for (var co = 0u; co < p.cout; co++) {
        let ybase = (b * p.cout + co) * plane;
        for (var ty = 0u; ty < T; ty++) {
            let oy = oy0 + i32(ty);
            let row_ok = oy >= 0 && oy < i32(p.ho);
            let yrow = ybase + u32(clamp(oy, 0, i32(p.ho) - 1)) * p.wo;
            var yr: array<f32, NCOL>;
            for (var t = 0u; t < NCOL; t++) {
                yr[t] = select(0.0, dy[yrow + ycol[t]], row_ok && ycol_ok[t]);
            }
            for (var tx = 0u; tx < T; tx++) {
                for (var m = 0u; m < TM; m++) {
                    let ci = min(ci0 + m, p.cin - 1u);
                    let wv = weff((co * p.cin + ci) * KK, ty, tx, fy, fx);
                    for (var j = 0u; j < TN; j++) {
                        acc[m][j] += wv * yr[j * SD + tx];
                    }
                }
            }
        }
    }

    for (var m = 0u; m < TM; m++) {
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
