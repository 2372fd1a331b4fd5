//! Group normalisation (torch.nn.GroupNorm) with an optional fused SiLU.

use crate::gpu::{Dispatch, Gpu, TensorView};
use anyhow::{Result, ensure};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    channels: u32,
    hw: u32,
    groups: u32,
    eps: f32,
    silu: u32,
    _pad: [u32; 2],
}

/// y (B, C, HW) = [silu](group_norm(x (B, C, HW)) * gamma (C) + beta (C));
/// stats (B, G, 2) = (mean, rstd). Both written (=).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward(
    gpu: &Gpu,
    label: &str,
    y: &TensorView,
    stats: &TensorView,
    x: &TensorView,
    gamma: &TensorView,
    beta: &TensorView,
    batch: u32,
    channels: u32,
    hw: u32,
    groups: u32,
    eps: f32,
    silu: bool,
) -> Result<Dispatch> {
    let n = (batch * channels * hw) as usize;
    ensure!(channels.is_multiple_of(groups), "{label}: {channels} channels do not split into {groups} groups");
    ensure!(x.len == n && y.len == n, "{label}: tensor sizes do not match (B, C, HW)");
    ensure!(gamma.len == channels as usize && beta.len == channels as usize, "{label}: affine size");
    ensure!(stats.len == (batch * groups * 2) as usize, "{label}: stats size");
    let params = Params { batch, channels, hw, groups, eps, silu: silu as u32, _pad: [0; 2] };
    // The CPU family's variant wants the same 8-lane subgroups as the other
    // subgroup kernels (measured 2-3x faster on lavapipe).
    let subgroup = super::cpu_subgroup_kernels(gpu);
    ensure!(stats.dtype == crate::gpu::Dtype::F32, "{label}: statistics must be f32");
    let (x_t, y_t) = (super::act_type(label, "input", x)?, super::act_type(label, "output", y)?);
    let key = if subgroup {
        // Four pixels an element where every channel's pixels come in whole vec4s.
        let four = hw.is_multiple_of(4);
        super::elements(crate::shaders::key("group_norm_forward_subgroup"), four)
            .define("X_T", super::elem(x_t, four))
            .define("Y_T", super::elem(y_t, four))
    } else {
        crate::shaders::key("group_norm_forward").define("X_T", x_t).define("Y_T", y_t)
    };
    gpu.dispatch(label, &key, &params, &[x, gamma, beta, y, stats], [batch * groups, 1, 1])
}
