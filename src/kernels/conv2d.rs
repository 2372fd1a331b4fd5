//! 2-D convolution as implicit GEMM, with the UNet's epilogues fused in:
//! bias, the per-image time-embedding add, the residual add and the output
//! scale, plus nearest 2x upsampling of the input (Upsample2D).

use crate::gpu::{Dispatch, Gpu, KernelFamily, PipelineKey, TensorView};
use anyhow::{Result, ensure};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dShape {
    pub batch: u32,
    pub cin: u32,
    /// Input height and width, before any upsampling.
    pub h: u32,
    pub w: u32,
    pub cout: u32,
    pub ksize: u32,
    pub stride: u32,
    /// Zero padding: top, left, bottom, right.
    pub pad: [u32; 4],
    /// Read the input as if nearest-upsampled 2x.
    pub upsample: bool,
}

impl Conv2dShape {
    /// A k x k convolution with stride 1 and "same" padding.
    pub fn same(batch: u32, cin: u32, h: u32, w: u32, cout: u32, ksize: u32) -> Conv2dShape {
        let p = ksize / 2;
        Conv2dShape { batch, cin, h, w, cout, ksize, stride: 1, pad: [p; 4], upsample: false }
    }

    /// Input size after the optional upsampling.
    pub fn in_hw(&self) -> (u32, u32) {
        let s = self.upsample as u32;
        (self.h << s, self.w << s)
    }

    /// Output height and width.
    pub fn out_hw(&self) -> (u32, u32) {
        let (hi, wi) = self.in_hw();
        let ho = (hi + self.pad[0] + self.pad[2] - self.ksize) / self.stride + 1;
        let wo = (wi + self.pad[1] + self.pad[3] - self.ksize) / self.stride + 1;
        (ho, wo)
    }

    pub fn in_len(&self) -> usize {
        (self.batch * self.cin * self.h * self.w) as usize
    }

    pub fn out_len(&self) -> usize {
        let (ho, wo) = self.out_hw();
        (self.batch * self.cout * ho * wo) as usize
    }

    pub fn weight_len(&self) -> usize {
        (self.cout * self.cin * self.ksize * self.ksize) as usize
    }

    /// Multiply-adds of one forward pass.
    pub fn macs(&self) -> u64 {
        self.out_len() as u64 * (self.cin * self.ksize * self.ksize) as u64
    }
}

/// What is added to the convolution before it is stored:
/// y = (conv + bias + temb[b, temb_offset + co] + residual) / out_div.
#[derive(Clone, Copy, Default)]
pub struct Conv2dEpilogue<'a> {
    pub bias: Option<&'a TensorView>,
    /// (temb (B, stride), stride, offset)
    pub temb: Option<(&'a TensorView, u32, u32)>,
    pub residual: Option<&'a TensorView>,
    /// 1 unless the block has an output_scale_factor.
    pub out_div: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    ksize: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    upsample: u32,
    temb_stride: u32,
    temb_offset: u32,
    flags: u32,
    out_div: f32,
}

/// Which kernel computes a convolution. All variants compute the same thing
/// (same epilogue, padding, stride and upsampling) and are tested against the
/// same CPU reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conv2dKernel {
    /// conv2d_forward.wgsl: TM channels x 4 pixels per invocation, any shape,
    /// any adapter. The fallback.
    Generic,
    /// conv2d_forward_subgroup.wgsl, for software adapters: tm channels per
    /// subgroup of 8 lanes, tn pixels of a row per lane, weights shared with
    /// subgroupBroadcast.
    Subgroup { tm: u32, tn: u32 },
}

impl Conv2dKernel {
    /// "generic", "sg32x8" (for the benchmark).
    pub fn parse(s: &str) -> Option<Conv2dKernel> {
        if s == "generic" {
            return Some(Conv2dKernel::Generic);
        }
        let dims = |t: &str| -> Option<(u32, u32)> {
            let (a, b) = t.split_once('x')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        if let Some(t) = s.strip_prefix("sg") {
            let (tm, tn) = dims(t)?;
            return Some(Conv2dKernel::Subgroup { tm, tn });
        }
        None
    }
}

/// Whether the subgroup kernel can run on this adapter: it hands weights
/// across exactly 8 lanes.
fn subgroup_kernel_fits(gpu: &Gpu) -> bool {
    gpu.has_subgroups() && gpu.info.subgroup_min_size == 8 && gpu.info.subgroup_max_size == 8
}

/// The fastest kernel of `family` for `s` on this adapter.
pub fn kernel_for(gpu: &Gpu, family: KernelFamily, s: &Conv2dShape) -> Conv2dKernel {
    let (_, wo) = s.out_hw();
    match family {
        KernelFamily::Cpu => {
            if !subgroup_kernel_fits(gpu) || !matches!(s.ksize, 1 | 3) {
                return Conv2dKernel::Generic;
            }
            let tn = [8, 4, 2, 1].into_iter().find(|&t| wo % t == 0).unwrap();
            Conv2dKernel::Subgroup { tm: 32, tn }
        }
        KernelFamily::Gpu => Conv2dKernel::Generic,
    }
}

/// y (B, cout, ho, wo) = conv(x (B, cin, h, w), w (cout, cin, k, k)) + epilogue.
/// y is written (=). The kernel is the best of the adapter's family.
pub fn conv2d_forward(
    gpu: &Gpu,
    label: &str,
    y: &TensorView,
    x: &TensorView,
    w: &TensorView,
    s: &Conv2dShape,
    epi: &Conv2dEpilogue,
) -> Result<Dispatch> {
    conv2d_forward_with(gpu, kernel_for(gpu, gpu.family, s), label, y, x, w, s, epi)
}

/// [`conv2d_forward`] with the kernel chosen by the caller (tests, benchmark).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_with(
    gpu: &Gpu,
    kernel: Conv2dKernel,
    label: &str,
    y: &TensorView,
    x: &TensorView,
    w: &TensorView,
    s: &Conv2dShape,
    epi: &Conv2dEpilogue,
) -> Result<Dispatch> {
    let (ho, wo) = s.out_hw();
    ensure!(x.len == s.in_len(), "{label}: input has {} values, shape wants {}", x.len, s.in_len());
    ensure!(y.len == s.out_len(), "{label}: output has {} values, shape wants {}", y.len, s.out_len());
    ensure!(w.len == s.weight_len(), "{label}: weight has {} values, shape wants {}", w.len, s.weight_len());
    if let Some(r) = epi.residual {
        ensure!(r.len == y.len, "{label}: residual does not match the output");
    }
    let flags = epi.bias.is_some() as u32
        | (epi.temb.is_some() as u32) << 1
        | (epi.residual.is_some() as u32) << 2;
    let params = Params {
        batch: s.batch,
        cin: s.cin,
        h: s.h,
        w: s.w,
        cout: s.cout,
        ho,
        wo,
        ksize: s.ksize,
        stride: s.stride,
        pad_top: s.pad[0],
        pad_left: s.pad[1],
        upsample: s.upsample as u32,
        temb_stride: epi.temb.map_or(0, |t| t.1),
        temb_offset: epi.temb.map_or(0, |t| t.2),
        flags,
        out_div: if epi.out_div == 0.0 { 1.0 } else { epi.out_div },
    };
    let dummy = &gpu.dummy;
    let bias = epi.bias.unwrap_or(dummy);
    let temb = epi.temb.map_or(dummy, |t| t.0);
    let residual = epi.residual.unwrap_or(dummy);
    let buffers = [x, w, bias, temb, residual, y];
    match kernel {
        Conv2dKernel::Generic => {
            let tm = 8;
            let key = PipelineKey::new("conv2d_forward").define("TM", tm);
            let blocks = s.batch * (ho * wo).div_ceil(4);
            gpu.dispatch(label, &key, &params, &buffers, [blocks.div_ceil(64), s.cout.div_ceil(tm), 1])
        }
        Conv2dKernel::Subgroup { tm, tn } => {
            ensure!(subgroup_kernel_fits(gpu), "{label}: the subgroup kernel needs subgroups of 8 lanes");
            ensure!(tm % 8 == 0 && tn > 0 && wo % tn == 0, "{label}: {kernel:?} does not fit {s:?}");
            let key = PipelineKey::new("conv2d_forward_subgroup")
                .define("TM", tm)
                .define("TN", tn)
                .define("K", s.ksize)
                .define("STRIDE", s.stride);
            let segs = s.batch * ho * (wo / tn);
            gpu.dispatch(label, &key, &params, &buffers, [segs.div_ceil(8), s.cout.div_ceil(tm), 1])
        }
    }
}
