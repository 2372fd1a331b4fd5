//! The loss, the global gradient norm and clipping, AdamW and the EMA of the
//! weights: the kernels of a training step after the backward pass.

use crate::gpu::{Dispatch, Gpu, TensorView, grid_1d};
use anyhow::{Result, ensure};

const WG: u32 = 256;
/// Values per workgroup of sum_squares (shaders/sum_squares.wgsl).
pub const SUM_SQUARES_CHUNK: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct NParams {
    n: u32,
    offset: u32,
    _pad: [u32; 2],
}

/// Workgroups (and so partial sums) of mse_loss over n values.
pub fn mse_loss_partials(n: usize) -> usize {
    n.div_ceil(WG as usize)
}

/// dout (n) (=) = 2 (out - target) / n; partials (mse_loss_partials(n)) (=)
/// = per-workgroup sums of (out - target)^2.
pub fn mse_loss(gpu: &Gpu, dout: &TensorView, partials: &TensorView, out: &TensorView, target: &TensorView) -> Result<Dispatch> {
    let n = out.len;
    ensure!(target.len == n && dout.len == n, "mse_loss: sizes differ");
    ensure!(partials.len >= mse_loss_partials(n), "mse_loss: too few partials");
    let params = NParams { n: n as u32, offset: 0, _pad: [0; 2] };
    gpu.dispatch("mse_loss", &crate::shaders::key("mse_loss"), &params, &[out, target, dout, partials], grid_1d(mse_loss_partials(n) as u32))
}

/// Partial sums of squares of x: one per SUM_SQUARES_CHUNK values.
pub fn sum_squares_partials(n: usize) -> usize {
    n.div_ceil(SUM_SQUARES_CHUNK)
}

/// partials[offset ..] (=) = sums of x^2 per chunk of x.
pub fn sum_squares(gpu: &Gpu, partials: &TensorView, offset: usize, x: &TensorView) -> Result<Dispatch> {
    let groups = sum_squares_partials(x.len);
    ensure!(offset + groups <= partials.len, "sum_squares: too few partials");
    let params = NParams { n: x.len as u32, offset: offset as u32, _pad: [0; 2] };
    gpu.dispatch("sum_squares", &crate::shaders::key("sum_squares"), &params, &[x, partials], grid_1d(groups as u32))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    n: u32,
    mode: u32,
    divisor: f32,
    max_norm: f32,
}

/// out[0] (=) = sum(partials) / divisor.
pub fn reduce_mean(gpu: &Gpu, out: &TensorView, partials: &TensorView, n: usize, divisor: f32) -> Result<Dispatch> {
    ensure!(partials.len >= n && out.len >= 1, "reduce_mean: sizes");
    let params = ReduceParams { n: n as u32, mode: 0, divisor, max_norm: 0.0 };
    gpu.dispatch("reduce_mean", &crate::shaders::key("reduce_sum"), &params, &[partials, out], [1, 1, 1])
}

/// out[0] (=) = sqrt(sum(partials)), the gradient norm; out[1] (=) = the
/// clipping factor min(1, max_norm / (norm + 1e-6)), or 1 when max_norm <= 0.
pub fn grad_norm_clip(gpu: &Gpu, out: &TensorView, partials: &TensorView, n: usize, max_norm: f32) -> Result<Dispatch> {
    ensure!(partials.len >= n && out.len >= 2, "grad_norm_clip: sizes");
    let params = ReduceParams { n: n as u32, mode: 1, divisor: 1.0, max_norm };
    gpu.dispatch("grad_norm_clip", &crate::shaders::key("reduce_sum"), &params, &[partials, out], [1, 1, 1])
}

/// Sets the clipping threshold of a recorded [`grad_norm_clip`].
pub fn set_grad_norm_clip(gpu: &Gpu, d: &Dispatch, n: usize, max_norm: f32) {
    set_params(gpu, d, &ReduceParams { n: n as u32, mode: 1, divisor: 1.0, max_norm });
}

/// The per-step scalars of AdamW, from [`AdamW::step_params`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AdamWParams {
    pub n: u32,
    pub _pad: [u32; 3],
    pub decay_factor: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    pub step_size: f32,
    pub bias_correction2_sqrt: f32,
    pub eps: f32,
    pub _pad1: f32,
}

/// AdamW's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamW {
    /// The scalars of step number `step` (1-based) at learning rate `lr`,
    /// computed in f64 as torch's Python code does, then rounded.
    pub fn step_params(&self, lr: f64, step: u64, n: usize) -> AdamWParams {
        let bias_correction1 = 1.0 - self.beta1.powi(step as i32);
        let bias_correction2 = 1.0 - self.beta2.powi(step as i32);
        AdamWParams {
            n: n as u32,
            _pad: [0; 3],
            decay_factor: (1.0 - lr * self.weight_decay) as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            step_size: (lr / bias_correction1) as f32,
            bias_correction2_sqrt: bias_correction2.sqrt() as f32,
            eps: self.eps as f32,
            _pad1: 0.0,
        }
    }
}

/// param, m, v (n) updated in place by one AdamW step on grad * clip[1].
/// Set the scalars before each submission with [`set_params`].
pub fn adamw(gpu: &Gpu, param: &TensorView, m: &TensorView, v: &TensorView, grad: &TensorView, clip: &TensorView) -> Result<Dispatch> {
    let n = param.len;
    ensure!(m.len == n && v.len == n && grad.len == n, "adamw: sizes differ");
    let params = AdamWParams { n: n as u32, ..Default::default() };
    gpu.dispatch("adamw", &crate::shaders::key("adamw"), &params, &[grad, clip, param, m, v], grid_1d((n as u32).div_ceil(WG)))
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct EmaParams {
    pub n: u32,
    pub _pad: [u32; 2],
    pub one_minus_decay: f32,
}

/// ema (n) (in place) = ema - (1 - decay) (ema - param).
pub fn ema(gpu: &Gpu, ema: &TensorView, param: &TensorView) -> Result<Dispatch> {
    let n = param.len;
    ensure!(ema.len == n, "ema: sizes differ");
    let params = EmaParams { n: n as u32, ..Default::default() };
    gpu.dispatch("ema", &crate::shaders::key("ema"), &params, &[param, ema], grid_1d((n as u32).div_ceil(WG)))
}

/// Rewrites a recorded dispatch's parameter block for the next submission.
pub fn set_params<P: bytemuck::Pod>(gpu: &Gpu, d: &Dispatch, params: &P) {
    let buf = d.uniform.as_ref().expect("dispatch has a uniform");
    gpu.queue.write_buffer(buf, 0, bytemuck::bytes_of(params));
}
