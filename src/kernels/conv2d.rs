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

/// y (B, cout, ho, wo) = conv(x (B, cin, h, w), w (cout, cin, k, k)) + epilogue.
/// y is written (=).
pub fn conv2d_forward(
    gpu: &Gpu,
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
    // Both kernel families share the register-blocked kernel for now.
    let tm = match gpu.family {
        KernelFamily::Cpu | KernelFamily::Gpu => 8,
    };
    let key = PipelineKey::new("conv2d_forward").define("TM", tm);
    let blocks = s.batch * (ho * wo).div_ceil(4);
    gpu.dispatch(
        label,
        &key,
        &params,
        &[x, w, bias, temb, residual, y],
        [blocks.div_ceil(64), s.cout.div_ceil(tm), 1],
    )
}
