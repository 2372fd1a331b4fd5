//! Small memory-bound kernels: softmax rows, channel concatenation.

use crate::gpu::{Dispatch, Gpu, PipelineKey, TensorView, grid_1d};
use anyhow::{Result, ensure};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    rows: u32,
    n: u32,
    _pad: [u32; 2],
}

/// y (rows, n) = softmax over each row of x (rows, n). y is written (=).
pub fn softmax_forward(gpu: &Gpu, label: &str, y: &TensorView, x: &TensorView, rows: u32, n: u32) -> Result<Dispatch> {
    ensure!(x.len == (rows * n) as usize && y.len == x.len, "{label}: softmax size");
    let params = SoftmaxParams { rows, n, _pad: [0; 2] };
    let key = PipelineKey::new("softmax_forward");
    gpu.dispatch(label, &key, &params, &[x, y], grid_1d(rows.div_ceil(64)))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    batch: u32,
    c_src: u32,
    hw: u32,
    c_dst: u32,
    c_offset: u32,
    _pad: [u32; 3],
}

/// dst[b, c_offset .. c_offset + c_src, :] = src (B, c_src, hw); dst is
/// (B, c_dst, hw). Written (=).
#[allow(clippy::too_many_arguments)]
pub fn copy_channels(
    gpu: &Gpu,
    label: &str,
    dst: &TensorView,
    src: &TensorView,
    batch: u32,
    c_src: u32,
    hw: u32,
    c_dst: u32,
    c_offset: u32,
) -> Result<Dispatch> {
    ensure!(src.len == (batch * c_src * hw) as usize, "{label}: source size");
    ensure!(dst.len == (batch * c_dst * hw) as usize, "{label}: destination size");
    ensure!(c_offset + c_src <= c_dst, "{label}: channels out of range");
    let params = CopyParams { batch, c_src, hw, c_dst, c_offset, _pad: [0; 3] };
    let key = PipelineKey::new("copy_channels");
    gpu.dispatch(label, &key, &params, &[src, dst], grid_1d((src.len as u32).div_ceil(256)))
}
