//! The backward ops as plain loops on the CPU: the definition each backward
//! kernel is tested against (and which the tests check against finite
//! differences of the forward references). Sums are taken in f64 so the
//! reference is the more exact side. Outputs are returned fresh; the caller
//! adds them when the kernel under test accumulates.

use super::silu;
use crate::kernels::Conv2dShape;

fn sigmoid(v: f64) -> f64 {
    1.0 / (1.0 + (-v).exp())
}

/// d silu(v) / dv.
pub fn silu_grad(v: f32) -> f32 {
    let s = sigmoid(v as f64);
    (s * (1.0 + v as f64 * (1.0 - s))) as f32
}

/// Calls f(b, co, oy, ox, ci, ky, kx, y index, x index) for every product
/// the forward convolution sums (taps on padding skipped; x index is that of
/// the stored, not upsampled, input).
fn for_each_tap(s: &Conv2dShape, mut f: impl FnMut(usize, usize, usize, usize, usize)) {
    let (ho, wo) = s.out_hw();
    let (hi, wi) = s.in_hw();
    let (b_, cin, cout, k) = (s.batch as usize, s.cin as usize, s.cout as usize, s.ksize as usize);
    let (h, wd, ho, wo) = (s.h as usize, s.w as usize, ho as usize, wo as usize);
    let up = s.upsample as usize;
    for b in 0..b_ {
        for co in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let yi = ((b * cout + co) * ho + oy) * wo + ox;
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s.stride as usize + ky) as isize - s.pad[0] as isize;
                                let ix = (ox * s.stride as usize + kx) as isize - s.pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= hi as isize || ix >= wi as isize {
                                    continue;
                                }
                                let (sy, sx) = ((iy as usize) >> up, (ix as usize) >> up);
                                let wi_ = ((co * cin + ci) * k + ky) * k + kx;
                                let xi = ((b * cin + ci) * h + sy) * wd + sx;
                                f(yi, wi_, xi, b, co);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dx (B, cin, h, w) of y = conv(x, w) / out_div, given dy (B, cout, ho, wo).
pub fn conv2d_backward_input(dy: &[f32], w: &[f32], s: &Conv2dShape, out_div: f32) -> Vec<f32> {
    let mut dx = vec![0f64; s.in_len()];
    for_each_tap(s, |yi, wi, xi, _, _| dx[xi] += w[wi] as f64 * dy[yi] as f64);
    dx.iter().map(|&v| (v / out_div as f64) as f32).collect()
}

/// dw (cout, cin, k, k) of y = conv(x, w) / out_div, given dy.
pub fn conv2d_backward_weight(dy: &[f32], x: &[f32], s: &Conv2dShape, out_div: f32) -> Vec<f32> {
    let mut dw = vec![0f64; s.weight_len()];
    for_each_tap(s, |yi, wi, xi, _, _| dw[wi] += x[xi] as f64 * dy[yi] as f64);
    dw.iter().map(|&v| (v / out_div as f64) as f32).collect()
}

/// (db (cout), dtemb (B, cout)) of y = (conv + bias + temb[b, co]) / out_div:
/// db sums dy / out_div over images and pixels, dtemb over pixels.
pub fn conv2d_backward_bias(dy: &[f32], s: &Conv2dShape, out_div: f32) -> (Vec<f32>, Vec<f32>) {
    let (ho, wo) = s.out_hw();
    let (b_, cout, hw) = (s.batch as usize, s.cout as usize, (ho * wo) as usize);
    let mut dtemb = vec![0f32; b_ * cout];
    let mut db = vec![0f64; cout];
    for b in 0..b_ {
        for co in 0..cout {
            let base = (b * cout + co) * hw;
            let t = dy[base..base + hw].iter().map(|&v| v as f64).sum::<f64>() / out_div as f64;
            dtemb[b * cout + co] = t as f32;
            db[co] += t;
        }
    }
    (db.iter().map(|&v| v as f32).collect(), dtemb)
}

/// (dx, dgamma, dbeta) of GroupNorm with affine and optional SiLU, given dy
/// and the forward's stats (B, G, 2) = (mean, rstd).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    dy: &[f32],
    x: &[f32],
    stats: &[f32],
    gamma: &[f32],
    beta: &[f32],
    batch: usize,
    channels: usize,
    hw: usize,
    groups: usize,
    silu_out: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let cpg = channels / groups;
    let n = cpg * hw;
    let mut dx = vec![0f32; x.len()];
    let mut dgamma = vec![0f64; channels];
    let mut dbeta = vec![0f64; channels];
    for b in 0..batch {
        for g in 0..groups {
            let (mean, rstd) = (stats[(b * groups + g) * 2] as f64, stats[(b * groups + g) * 2 + 1] as f64);
            let base = (b * channels + g * cpg) * hw;
            // dn = dz * gamma, with dz the gradient before the SiLU.
            let mut dn = vec![0f64; n];
            let mut nn = vec![0f64; n];
            for i in 0..n {
                let c = g * cpg + i / hw;
                let nv = (x[base + i] as f64 - mean) * rstd;
                let z = nv * gamma[c] as f64 + beta[c] as f64;
                let mut dz = dy[base + i] as f64;
                if silu_out {
                    let s = sigmoid(z);
                    dz *= s * (1.0 + z * (1.0 - s));
                }
                dgamma[c] += dz * nv;
                dbeta[c] += dz;
                dn[i] = dz * gamma[c] as f64;
                nn[i] = nv;
            }
            let mean_dn = dn.iter().sum::<f64>() / n as f64;
            let mean_dnn = dn.iter().zip(&nn).map(|(a, b)| a * b).sum::<f64>() / n as f64;
            for i in 0..n {
                dx[base + i] = (rstd * (dn[i] - mean_dn - nn[i] * mean_dnn)) as f32;
            }
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (dx, f(dgamma), f(dbeta))
}

/// (dx (B, in), dw (out, in), db (out)) of y = w . act(x) + b, given dy (B, out).
pub fn linear_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    batch: usize,
    inf: usize,
    outf: usize,
    silu_in: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let act = |v: f32| if silu_in { silu(v) } else { v };
    let mut dx = vec![0f32; batch * inf];
    let mut dw = vec![0f32; outf * inf];
    let mut db = vec![0f32; outf];
    for o in 0..outf {
        db[o] = (0..batch).map(|b| dy[b * outf + o] as f64).sum::<f64>() as f32;
        for i in 0..inf {
            dw[o * inf + i] = (0..batch).map(|b| dy[b * outf + o] as f64 * act(x[b * inf + i]) as f64).sum::<f64>() as f32;
        }
    }
    for b in 0..batch {
        for i in 0..inf {
            let g = (0..outf).map(|o| w[o * inf + i] as f64 * dy[b * outf + o] as f64).sum::<f64>();
            let v = x[b * inf + i];
            dx[b * inf + i] = (g * if silu_in { silu_grad(v) as f64 } else { 1.0 }) as f32;
        }
    }
    (dx, dw, db)
}

/// dx (rows, n) of y = softmax(x) per row, given dy and y.
pub fn softmax_backward(dy: &[f32], y: &[f32], n: usize) -> Vec<f32> {
    let mut dx = vec![0f32; y.len()];
    for ((dxr, dyr), yr) in dx.chunks_mut(n).zip(dy.chunks(n)).zip(y.chunks(n)) {
        let s = dyr.iter().zip(yr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
        for j in 0..n {
            dxr[j] = (yr[j] as f64 * (dyr[j] as f64 - s)) as f32;
        }
    }
    dx
}

/// dst[b, dst_off + c, :] (+)= src[b, src_off + c, :] for c < channels;
/// src (B, src_total, hw), dst (B, dst_total, hw).
#[allow(clippy::too_many_arguments)]
pub fn copy_channel_slice(
    dst: &mut [f32],
    dst_total: usize,
    dst_off: usize,
    src: &[f32],
    src_total: usize,
    src_off: usize,
    batch: usize,
    channels: usize,
    hw: usize,
    accumulate: bool,
) {
    for b in 0..batch {
        for i in 0..channels * hw {
            let s = src[(b * src_total + src_off) * hw + i];
            let d = &mut dst[(b * dst_total + dst_off) * hw + i];
            *d = if accumulate { *d + s } else { s };
        }
    }
}
