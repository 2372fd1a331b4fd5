//! The DDPM and DDIM update of a whole batch, on the GPU.

use crate::gpu::{Dispatch, Gpu, PipelineKey, TensorView, grid_1d};
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
    pub sigma: f32,
    pub clip_range: f32,
    /// The coefficient of the model's epsilon (DDIM's "direction pointing to
    /// x_t"); 0 for DDPM. eps is the model output for epsilon prediction and
    /// is derived from it as diffusers' DDIMScheduler does for sample and
    /// v prediction.
    pub c_eps: f32,
    pub _pad1: f32,
}

/// x (n) = x_{t-1} from x_t, model_output and noise; pred_x0 (n) = x0.
/// One kernel for DDPM and DDIM steps: the parameters decide.
/// Both written (=). Rewrite the parameters each step with [`set_ddpm_step`].
pub fn ddpm_step(
    gpu: &Gpu,
    x: &TensorView,
    pred_x0: &TensorView,
    model_output: &TensorView,
    noise: &TensorView,
) -> Result<Dispatch> {
    let n = x.len;
    ensure!(pred_x0.len == n && model_output.len == n && noise.len == n, "ddpm_step: sizes differ");
    let params = DdpmStepParams { n: n as u32, ..Default::default() };
    let key = PipelineKey::new("ddpm_step");
    gpu.dispatch("ddpm_step", &key, &params, &[model_output, noise, x, pred_x0], grid_1d((n as u32).div_ceil(256)))
}

/// Sets the scalars of a recorded [`ddpm_step`] for the next submission.
pub fn set_ddpm_step(gpu: &Gpu, d: &Dispatch, params: &DdpmStepParams) {
    let buf = d.uniform.as_ref().expect("ddpm_step dispatch has a uniform");
    gpu.queue.write_buffer(buf, 0, bytemuck::bytes_of(params));
}
