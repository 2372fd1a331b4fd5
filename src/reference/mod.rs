//! The forward ops as plain f32 loops on the CPU: the definition each GPU
//! kernel is tested against. Written for clarity, not speed; shapes as in
//! the kernels (NCHW, torch weight layouts).

pub mod backward;

use crate::kernels::Conv2dShape;

pub fn silu(v: f32) -> f32 {
    v / (1.0 + (-v).exp())
}

/// y = (conv(x, w) + bias + temb[b, temb_off + co] + residual) / out_div.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    temb: Option<(&[f32], usize, usize)>,
    residual: Option<&[f32]>,
    out_div: f32,
    s: &Conv2dShape,
) -> Vec<f32> {
    let (ho, wo) = s.out_hw();
    let (hi, wi) = s.in_hw();
    let (b_, cin, cout, k) = (s.batch as usize, s.cin as usize, s.cout as usize, s.ksize as usize);
    let (h, wd, ho, wo) = (s.h as usize, s.w as usize, ho as usize, wo as usize);
    let up = s.upsample as usize;
    let mut y = vec![0f32; b_ * cout * ho * wo];
    for b in 0..b_ {
        for co in 0..cout {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0f32;
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s.stride as usize + ky) as isize - s.pad[0] as isize;
                                let ix = (ox * s.stride as usize + kx) as isize - s.pad[1] as isize;
                                if iy < 0 || ix < 0 || iy >= hi as isize || ix >= wi as isize {
                                    continue;
                                }
                                let (sy, sx) = ((iy as usize) >> up, (ix as usize) >> up);
                                acc += w[((co * cin + ci) * k + ky) * k + kx]
                                    * x[((b * cin + ci) * h + sy) * wd + sx];
                            }
                        }
                    }
                    if let Some(bias) = bias {
                        acc += bias[co];
                    }
                    if let Some((t, stride, off)) = temb {
                        acc += t[b * stride + off + co];
                    }
                    let o = ((b * cout + co) * ho + oy) * wo + ox;
                    if let Some(r) = residual {
                        acc += r[o];
                    }
                    y[o] = acc / out_div;
                }
            }
        }
    }
    y
}

/// GroupNorm over (B, C, HW) with affine and optional SiLU; returns (y, stats)
/// with stats (B, G, 2) = (mean, rstd).
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    batch: usize,
    channels: usize,
    hw: usize,
    groups: usize,
    eps: f32,
    silu_out: bool,
) -> (Vec<f32>, Vec<f32>) {
    let cpg = channels / groups;
    let n = cpg * hw;
    let mut y = vec![0f32; x.len()];
    let mut stats = vec![0f32; batch * groups * 2];
    for b in 0..batch {
        for g in 0..groups {
            let base = (b * channels + g * cpg) * hw;
            let xs = &x[base..base + n];
            // Accumulate in f64 so the reference is the more exact side.
            let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            stats[(b * groups + g) * 2] = mean as f32;
            stats[(b * groups + g) * 2 + 1] = rstd as f32;
            for i in 0..n {
                let c = g * cpg + i / hw;
                let mut v = ((xs[i] as f64 - mean) * rstd) as f32 * gamma[c] + beta[c];
                if silu_out {
                    v = silu(v);
                }
                y[base + i] = v;
            }
        }
    }
    (y, stats)
}

/// y (B, out) = w (out, in) . act(x (B, in)) + bias.
pub fn linear(x: &[f32], w: &[f32], bias: &[f32], batch: usize, inf: usize, outf: usize, silu_in: bool) -> Vec<f32> {
    let mut y = vec![0f32; batch * outf];
    for b in 0..batch {
        for o in 0..outf {
            let mut acc = 0f32;
            for i in 0..inf {
                let v = x[b * inf + i];
                acc += w[o * inf + i] * if silu_in { silu(v) } else { v };
            }
            y[b * outf + o] = acc + bias[o];
        }
    }
    y
}

/// C = alpha * A B [+ C] per the strided description.
pub fn matmul(c: &mut [f32], a: &[f32], b: &[f32], d: &crate::kernels::MatmulDesc) {
    let idx = |o: &crate::kernels::Operand, outer: u32, inner: u32, r: u32, col: u32| {
        (o.offset + outer * o.outer_stride + inner * o.inner_stride + r * o.row_stride + col * o.col_stride)
            as usize
    };
    for outer in 0..d.outer {
        for inner in 0..d.inner {
            for m in 0..d.m {
                for n in 0..d.n {
                    let mut acc = 0f32;
                    for k in 0..d.k {
                        acc += a[idx(&d.a, outer, inner, m, k)] * b[idx(&d.b, outer, inner, k, n)];
                    }
                    let o = idx(&d.c, outer, inner, m, n);
                    c[o] = d.alpha * acc + if d.accumulate { c[o] } else { 0.0 };
                }
            }
        }
    }
}

/// Softmax of each row of x (rows, n), in place.
pub fn softmax(x: &mut [f32], n: usize) {
    for row in x.chunks_mut(n) {
        let mx = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for v in row.iter_mut() {
            *v = (*v - mx).exp();
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    }
}

/// dst[b, off.., :] = src (B, c_src, hw).
pub fn copy_channels(dst: &mut [f32], src: &[f32], batch: usize, c_src: usize, hw: usize, c_dst: usize, off: usize) {
    for b in 0..batch {
        let s = &src[b * c_src * hw..(b + 1) * c_src * hw];
        dst[(b * c_dst + off) * hw..(b * c_dst + off + c_src) * hw].copy_from_slice(s);
    }
}
