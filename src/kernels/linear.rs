//! Fully connected layers (the time-embedding MLP and time_emb_proj).

use crate::gpu::{Dispatch, Gpu, PipelineKey, TensorView};
use anyhow::{Result, ensure};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    in_features: u32,
    out_features: u32,
    silu_input: u32,
}

/// y (B, out) = w (out, in) . act(x (B, in)) + bias (out), act = SiLU when
/// `silu_input`. y is written (=).
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    gpu: &Gpu,
    label: &str,
    y: &TensorView,
    x: &TensorView,
    w: &TensorView,
    bias: &TensorView,
    batch: u32,
    in_features: u32,
    out_features: u32,
    silu_input: bool,
) -> Result<Dispatch> {
    ensure!(x.len == (batch * in_features) as usize, "{label}: input size");
    ensure!(y.len == (batch * out_features) as usize, "{label}: output size");
    ensure!(w.len == (in_features * out_features) as usize, "{label}: weight size");
    ensure!(bias.len == out_features as usize, "{label}: bias size");
    let params = Params { batch, in_features, out_features, silu_input: silu_input as u32 };
    let key = PipelineKey::new("linear_forward");
    gpu.dispatch(label, &key, &params, &[x, w, bias, y], [out_features.div_ceil(64), batch, 1])
}
