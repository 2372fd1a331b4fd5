//! Small memory-bound kernels: softmax rows and their gradient, channel
//! slices (concatenation and its gradient), scaled adds.

use crate::gpu::{Dispatch, Gpu, TensorView, grid_1d};
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
    let key = super::elements(crate::shaders::key("softmax_forward"), n.is_multiple_of(4));
    gpu.dispatch(label, &key, &params, &[x, y], grid_1d(rows.div_ceil(64)))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxBackwardParams {
    rows: u32,
    n: u32,
    _pad: [u32; 2],
}

/// The backward pass of [`softmax_forward`]: dx (rows, n) = y * (dy - sum_j
/// dy_j y_j) per row, given dy and the forward's output y (rows, n). dx is
/// written (=).
pub fn softmax_backward(
    gpu: &Gpu,
    label: &str,
    dx: &TensorView,
    dy: &TensorView,
    y: &TensorView,
    rows: u32,
    n: u32,
) -> Result<Dispatch> {
    let len = (rows * n) as usize;
    ensure!(dx.len == len && dy.len == len && y.len == len, "{label}: softmax gradient size");
    let params = SoftmaxBackwardParams { rows, n, _pad: [0; 2] };
    let key = super::elements(crate::shaders::key("softmax_backward"), n.is_multiple_of(4));
    gpu.dispatch(label, &key, &params, &[dy, y, dx], grid_1d(rows.div_ceil(64)))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ScaleAddParams {
    n: u32,
    accumulate: u32,
    scale: f32,
    _pad: u32,
}

/// dst (n) (+)= scale * src (n): written (=), or accumulated (+=) when
/// `accumulate`. The conv epilogue's residual gradient is
/// `scale_add(d_residual, dy, 1 / out_div, ..)`. dst must not alias src.
pub fn scale_add(gpu: &Gpu, label: &str, dst: &TensorView, src: &TensorView, scale: f32, accumulate: bool) -> Result<Dispatch> {
    ensure!(dst.len == src.len, "{label}: scale_add sizes differ ({} and {})", dst.len, src.len);
    let n = dst.len as u32;
    let params = ScaleAddParams { n, accumulate: accumulate as u32, scale, _pad: 0 };
    let four = n.is_multiple_of(4);
    let key = super::elements(crate::shaders::key("scale_add"), four);
    gpu.dispatch(label, &key, &params, &[src, dst], grid_1d((n / if four { 4 } else { 1 }).div_ceil(256)))
}

/// Where a channel slice lives: `channels` channels starting at `offset` of a
/// (B, total, hw) tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelSlice {
    pub total: u32,
    pub offset: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    batch: u32,
    channels: u32,
    hw: u32,
    src_channels: u32,
    src_offset: u32,
    dst_channels: u32,
    dst_offset: u32,
    accumulate: u32,
}

/// dst[b, d.offset + c, :] (+)= src[b, s.offset + c, :] for c < channels, with
/// src (B, s.total, hw) and dst (B, d.total, hw). Written (=), or accumulated
/// (+=) when `accumulate`. The forward of a channel concatenation copies each
/// input into its slice; its backward copies (or adds) each slice of dy into
/// that input's gradient. dst must not alias src.
#[allow(clippy::too_many_arguments)]
pub fn copy_channel_slice(
    gpu: &Gpu,
    label: &str,
    dst: &TensorView,
    d: ChannelSlice,
    src: &TensorView,
    s: ChannelSlice,
    batch: u32,
    channels: u32,
    hw: u32,
    accumulate: bool,
) -> Result<Dispatch> {
    ensure!(src.len == (batch * s.total * hw) as usize, "{label}: source size");
    ensure!(dst.len == (batch * d.total * hw) as usize, "{label}: destination size");
    ensure!(s.offset + channels <= s.total, "{label}: source channels out of range");
    ensure!(d.offset + channels <= d.total, "{label}: destination channels out of range");
    let params = CopyParams {
        batch,
        channels,
        hw,
        src_channels: s.total,
        src_offset: s.offset,
        dst_channels: d.total,
        dst_offset: d.offset,
        accumulate: accumulate as u32,
    };
    // Four values an element where every channel's pixels come in whole vec4s.
    let four = hw.is_multiple_of(4);
    let key = super::elements(crate::shaders::key("copy_channels"), four)
        .define("X_T", super::elem(super::act_type(label, "source", src)?, four))
        .define("Y_T", super::elem(super::act_type(label, "destination", dst)?, four));
    let elements = batch * channels * hw / if four { 4 } else { 1 };
    gpu.dispatch(label, &key, &params, &[src, dst], grid_1d(elements.div_ceil(256)))
}

/// dst[b, c_offset .. c_offset + c_src, :] = src (B, c_src, hw); dst is
/// (B, c_dst, hw). Written (=). The concatenation's forward, as
/// [`copy_channel_slice`] with the whole of src.
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
    copy_channel_slice(
        gpu,
        label,
        dst,
        ChannelSlice { total: c_dst, offset: c_offset },
        src,
        ChannelSlice { total: c_src, offset: 0 },
        batch,
        c_src,
        hw,
        false,
    )
}
