//! The DDPM sampling loop on the GPU. Each denoising step is one submission:
//! the UNet forward pass and the scheduler update recorded together; only
//! the timestep embedding, the step's noise and its scalars are written
//! before it, and nothing is read back unless frames are asked for.

use super::scheduler::DdpmScheduler;
use crate::gpu::{Dispatch, Gpu, TensorView};
use crate::kernels::{self, DdpmStepParams};
use crate::model::{ForwardPlan, SchedulerConfig, UNet};
use anyhow::Result;

/// Where a step is in the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepInfo {
    /// 0-based step index.
    pub index: usize,
    pub num_steps: usize,
    /// The timestep this step denoised from.
    pub timestep: u32,
}

/// The whole batch after one step, each (B, C, H, W) in [-1, 1] scale.
#[derive(Clone, Debug)]
pub struct Frame {
    /// x_{t-1}, the scheduler's prev_sample.
    pub x: Vec<f32>,
    /// The predicted clean image x_0.
    pub pred_x0: Vec<f32>,
    /// The model output at this step (epsilon for epsilon models).
    pub model_output: Vec<f32>,
}

/// What the step callback wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Cancel,
}

pub struct Sampler {
    pub plan: ForwardPlan,
    pub scheduler: DdpmScheduler,
    step: Dispatch,
    noise: TensorView,
    pred_x0: TensorView,
}

impl Sampler {
    /// Buffers and dispatches for sampling `batch` images with `steps` steps.
    pub fn new(unet: &UNet, sched: &SchedulerConfig, batch: u32, steps: u32) -> Result<Sampler> {
        Self::with_plan(&unet.gpu, ForwardPlan::new(unet, batch)?, sched, steps)
    }

    /// A sampler around a forward plan (of any weights, the EMA's say).
    pub fn with_plan(gpu: &Gpu, plan: ForwardPlan, sched: &SchedulerConfig, steps: u32) -> Result<Sampler> {
        let mut scheduler = DdpmScheduler::new(sched)?;
        scheduler.set_timesteps(steps)?;
        let n = plan.sample().len;
        let noise = TensorView::whole(gpu.storage_buffer("noise", n as u64 * 4));
        let pred_x0 = TensorView::whole(gpu.storage_buffer("pred_x0", n as u64 * 4));
        let step = kernels::ddpm_step(gpu, plan.sample(), &pred_x0, plan.output(), &noise)?;
        Ok(Sampler { plan, scheduler, step, noise, pred_x0 })
    }

    pub fn batch(&self) -> u32 {
        self.plan.batch
    }

    /// Runs the loop from x_T. `noise(index, timestep)` gives the variance
    /// noise of a step (called only where the scheduler adds noise, t > 0).
    /// `on_step` sees every step, with a frame of the whole batch when
    /// `frames` is set, and may cancel between steps. Returns the final
    /// x_0 (B, C, H, W), or None when cancelled.
    pub fn run(
        &mut self,
        gpu: &Gpu,
        x_t: &[f32],
        frames: bool,
        mut noise: impl FnMut(usize, u32) -> Vec<f32>,
        mut on_step: impl FnMut(StepInfo, Option<Frame>) -> Flow,
    ) -> Result<Option<Vec<f32>>> {
        let n = self.plan.sample().len;
        gpu.write_f32(self.plan.sample(), x_t);
        let timesteps = self.scheduler.timesteps.clone();
        let num_steps = timesteps.len();
        for (index, &t) in timesteps.iter().enumerate() {
            let mut params: DdpmStepParams = self.scheduler.step_params(t);
            params.n = n as u32;
            if params.sigma != 0.0 {
                gpu.write_f32(&self.noise, &noise(index, t));
            }
            kernels::scheduler::set_ddpm_step(gpu, &self.step, &params);
            self.plan.set_timesteps(gpu, &vec![t as f32; self.plan.batch as usize]);
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                self.plan.record(&mut pass);
                self.step.record(&mut pass);
            }
            gpu.queue.submit([enc.finish()]);
            let frame = if frames {
                let mut v = gpu.read_many(&[self.plan.sample(), &self.pred_x0, self.plan.output()])?;
                let model_output = v.pop().unwrap();
                let pred_x0 = v.pop().unwrap();
                let x = v.pop().unwrap();
                Some(Frame { x, pred_x0, model_output })
            } else {
                gpu.wait()?;
                None
            };
            if on_step(StepInfo { index, num_steps, timestep: t }, frame) == Flow::Cancel {
                return Ok(None);
            }
        }
        Ok(Some(gpu.read_f32(self.plan.sample())?))
    }
}
