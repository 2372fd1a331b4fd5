//! The DDPM and DDIM update of a whole batch, on the GPU.

use crate::gpu::{Dispatch, Gpu, TensorView, grid_1d};
use anyhow::{Result, ensure};

/// The per-step scalars of DDPMScheduler.step (or DDIMScheduler.step),
/// computed on the CPU by [`crate::diffusion::DdpmScheduler::step_params`]
/// (or [`crate::diffusion::DdimScheduler::step_params`]):
/// x_prev = c_x0 * x0 + c_xt * x_t + c_eps * eps + sigma * noise.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct DdpmStepParams {
    pub n: u32,
    /// 0 epsilon, 1 sample, 2 v_prediction.
    pub prediction: u32,
    pub clip: u32,
    pub _pad0: u32,
    pub sqrt_alpha_prod: f32,
    pub sqrt_beta_prod: f32,
    pub c_x0: f32,
    pub c_xt: f32,
    /// The noise scale; with a learned variance, 1 where the step adds noise
    /// (t > 0) and 0 where it does not, each element's own scale coming from
    /// `min_log`, `max_log` and the model's predicted variance.
    pub sigma: f32,
    pub clip_range: f32,
    /// variance_type "learned_range": log of the posterior variance (clamped
    /// at 1e-20) and log beta_t, between which the prediction interpolates.
    pub min_log: f32,
    pub max_log: f32,
    /// The coefficient of the model's epsilon (DDIM's "direction pointing to
    /// x_t"); 0 for DDPM. eps is the model output for epsilon prediction and
    /// is derived from it as diffusers' DDIMScheduler does for sample and
    /// v prediction.
    pub c_eps: f32,
    pub _pad1: [f32; 3],
}

/// How model_output is laid out; fixed when the step is recorded, after the
/// per-step [`DdpmStepParams`] in the same uniform buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct DdpmLayout {
    /// Values per image of x (C*H*W); model_output per image is (2, C*H*W)
    /// when `learned` is 1: epsilon (or x0, v) first, then the variance.
    per_image: u32,
    learned: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
struct DdpmUniform {
    step: DdpmStepParams,
    layout: DdpmLayout,
}

/// x (n) = x_{t-1} from x_t, model_output and noise; pred_x0 (n) = x0.
/// One kernel for DDPM and DDIM steps: the parameters decide.
/// Both written (=). Rewrite the parameters each step with [`set_ddpm_step`].
/// model_output has x's size (see [`ddpm_step_batched`] for the learned-variance layout).
pub fn ddpm_step(
    gpu: &Gpu,
    x: &TensorView,
    pred_x0: &TensorView,
    model_output: &TensorView,
    noise: &TensorView,
) -> Result<Dispatch> {
    ensure!(model_output.len == x.len, "ddpm_step: sizes differ");
    ddpm_step_batched(gpu, 1, x, pred_x0, model_output, noise)
}

/// [`ddpm_step`] for a batch of `batch` images: x, pred_x0 and noise are
/// (B, C, H, W); model_output is (B, C, H, W), or (B, 2C, H, W) for
/// variance_type "learned_range" (diffusers splits it into the prediction
/// and predicted_variance along channels).
pub fn ddpm_step_batched(
    gpu: &Gpu,
    batch: u32,
    x: &TensorView,
    pred_x0: &TensorView,
    model_output: &TensorView,
    noise: &TensorView,
) -> Result<Dispatch> {
    let n = x.len;
    ensure!(batch > 0 && n.is_multiple_of(batch as usize), "ddpm_step: {n} values are not {batch} images");
    ensure!(pred_x0.len == n && noise.len == n, "ddpm_step: sizes differ");
    let learned = model_output.len == 2 * n;
    ensure!(
        model_output.len == n || learned,
        "ddpm_step: the model output has {} values for {n} in the sample (expected the same, or twice for a learned variance)",
        model_output.len
    );
    let uniform = DdpmUniform {
        step: DdpmStepParams { n: n as u32, ..Default::default() },
        layout: DdpmLayout { per_image: (n / batch as usize) as u32, learned: learned as u32, _pad: [0; 2] },
    };
    let key = crate::shaders::key("ddpm_step");
    gpu.dispatch("ddpm_step", &key, &uniform, &[model_output, noise, x, pred_x0], grid_1d((n as u32).div_ceil(256)))
}

/// Sets the scalars of a recorded [`ddpm_step`] for the next submission
/// (the layout written when it was recorded stays).
pub fn set_ddpm_step(gpu: &Gpu, d: &Dispatch, params: &DdpmStepParams) {
    let buf = d.uniform.as_ref().expect("ddpm_step dispatch has a uniform");
    gpu.queue.write_buffer(buf, 0, bytemuck::bytes_of(params));
}
