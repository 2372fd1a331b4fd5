//! The backward pass of [`group_norm_forward`](super::group_norm_forward).

use super::conv2d_backward::sum_rows;
use crate::gpu::{Dispatch, Gpu, TensorView, grid_1d};
use anyhow::{Result, ensure};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    channels: u32,
    hw: u32,
    groups: u32,
    silu: u32,
    accumulate: u32,
    _pad: [u32; 2],
}

/// Scratch (f32 elements) [`group_norm_backward`] needs: per-image channel
/// sums (B, 2, C).
pub fn group_norm_backward_scratch_len(batch: u32, channels: u32) -> usize {
    2 * (batch * channels) as usize
}

/// For y (B, C, HW) = [silu](n * gamma + beta), n = (x - mean) * rstd, with
/// stats (B, G, 2) = (mean, rstd) from the forward:
/// dx (B, C, HW) (+)= dL/dx (written, or accumulated when `accumulate`),
/// dgamma (C) = dL/dgamma and dbeta (C) = dL/dbeta (both written), given
/// dy (B, C, HW). `scratch` holds [`group_norm_backward_scratch_len`] values
/// and is overwritten. Three dispatches: dx with per-image channel sums, then
/// the sums over the batch. The first is group_norm_backward.wgsl (an
/// invocation per image and channel) on the CPU family, and
/// group_norm_backward_workgroup.wgsl (a workgroup per image and group) on
/// the GPU family.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    gpu: &Gpu,
    label: &str,
    dx: &TensorView,
    dgamma: &TensorView,
    dbeta: &TensorView,
    scratch: &TensorView,
    dy: &TensorView,
    x: &TensorView,
    stats: &TensorView,
    gamma: &TensorView,
    beta: &TensorView,
    batch: u32,
    channels: u32,
    hw: u32,
    groups: u32,
    silu: bool,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    let n = (batch * channels * hw) as usize;
    ensure!(groups > 0 && channels.is_multiple_of(groups), "{label}: {channels} channels do not split into {groups} groups");
    let cpg = channels / groups;
    ensure!(cpg <= 256, "{label}: {cpg} channels per group (at most 256)");
    ensure!(dx.len == n && dy.len == n && x.len == n, "{label}: tensor sizes do not match (B, C, HW)");
    ensure!(gamma.len == channels as usize && beta.len == channels as usize, "{label}: affine size");
    ensure!(dgamma.len == channels as usize && dbeta.len == channels as usize, "{label}: affine gradient size");
    ensure!(stats.len == (batch * groups * 2) as usize, "{label}: stats size");
    let need = group_norm_backward_scratch_len(batch, channels);
    ensure!(scratch.len >= need, "{label}: scratch has {} values, needs {need}", scratch.len);
    let scratch = scratch.clone_with_len(need);
    let params = Params { batch, channels, hw, groups, silu: silu as u32, accumulate: accumulate as u32, _pad: [0; 2] };
    let buffers = [dy, x, stats, gamma, beta, dx, &scratch];
    // Four pixels a load where a channel's pixels come in whole vec4s.
    let four = hw.is_multiple_of(4);
    let main = if gpu.family == crate::gpu::KernelFamily::Gpu {
        // Hardware GPUs: a workgroup per (image, group), the largest power
        // of 2 of invocations per channel that fits 256
        // (group_norm_backward_workgroup.wgsl says why).
        let tpc = 1u32 << (256 / cpg).ilog2();
        let key = super::elements(crate::shaders::key("group_norm_backward_workgroup").define("TPC", tpc), four);
        gpu.dispatch(label, &key, &params, &buffers, grid_1d(batch * groups))?
    } else {
        // A workgroup holds whole groups: about 64 (image, channel) pairs.
        let wg = cpg * (64 / cpg).max(1);
        let key = super::elements(crate::shaders::key("group_norm_backward").define("WG", wg), four);
        gpu.dispatch(label, &key, &params, &buffers, grid_1d((batch * channels).div_ceil(wg)))?
    };
    Ok(vec![
        main,
        sum_rows(gpu, label, dgamma, &scratch, batch, channels, 0, 2 * channels, 1.0)?,
        sum_rows(gpu, label, dbeta, &scratch, batch, channels, channels, 2 * channels, 1.0)?,
    ])
}
