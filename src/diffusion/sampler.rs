//! The DDPM / DDIM sampling loop on the GPU. Each denoising step is one submission:
//! the UNet forward pass and the scheduler update recorded together; only
//! the timestep embedding, the step's noise and its scalars are written
//! before it, and nothing is read back unless frames are asked for.

use super::kind::{Scheduler, SchedulerKind};
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
    pub scheduler: Scheduler,
    step: Dispatch,
    noise: TensorView,
    pred_x0: TensorView,
    /// Two reused readback buffers, each (x, pred_x0, model_output) of one
    /// step: step k's frame is copied in its own submission and read while
    /// step k+1 runs.
    staging: [wgpu::Buffer; 2],
}

/// A step whose frame is being copied back.
struct PendingFrame {
    info: StepInfo,
    slot: usize,
    submission: wgpu::SubmissionIndex,
    mapped: crossbeam_channel::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

impl Sampler {
    /// Buffers and dispatches for sampling `batch` images with `steps` DDPM steps.
    pub fn new(unet: &UNet, sched: &SchedulerConfig, batch: u32, steps: u32) -> Result<Sampler> {
        Self::with_kind(unet, sched, SchedulerKind::Ddpm, batch, steps)
    }

    /// As [`Sampler::new`], stepping with `kind` (DDPM, or DDIM with eta built
    /// from the same scheduler config, as DDIMPipeline does).
    pub fn with_kind(unet: &UNet, sched: &SchedulerConfig, kind: SchedulerKind, batch: u32, steps: u32) -> Result<Sampler> {
        Self::with_plan_kind(&unet.gpu, ForwardPlan::new(unet, batch)?, sched, kind, steps)
    }

    /// A DDPM sampler around a forward plan (of any weights, the EMA's say).
    pub fn with_plan(gpu: &Gpu, plan: ForwardPlan, sched: &SchedulerConfig, steps: u32) -> Result<Sampler> {
        Self::with_plan_kind(gpu, plan, sched, SchedulerKind::Ddpm, steps)
    }

    /// A sampler around a forward plan, stepping with `kind`.
    pub fn with_plan_kind(gpu: &Gpu, plan: ForwardPlan, sched: &SchedulerConfig, kind: SchedulerKind, steps: u32) -> Result<Sampler> {
        let scheduler = Scheduler::new(kind, sched, steps)?;
        let n = plan.sample().len;
        let noise = TensorView::whole(gpu.storage_buffer("noise", n as u64 * 4));
        let pred_x0 = TensorView::whole(gpu.storage_buffer("pred_x0", n as u64 * 4));
        let step = kernels::scheduler::ddpm_step_batched(gpu, plan.batch, plan.sample(), &pred_x0, plan.output(), &noise)?;
        let staging = std::array::from_fn(|_| {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("frame readback"),
                // x, pred_x0 (n each) and the model output (n, or 2n for a learned variance)
                size: (2 * n + plan.output().len) as u64 * 4,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        Ok(Sampler { plan, scheduler, step, noise, pred_x0, staging })
    }

    pub fn batch(&self) -> u32 {
        self.plan.batch
    }

    /// Runs the loop from x_T. `noise(index, timestep)` gives the variance
    /// noise of a step (called only where the scheduler adds noise, t > 0).
    /// `on_step` sees every step, with a frame of the whole batch when
    /// `frames` is set, and may cancel between steps. Returns the final
    /// x_0 (B, C, H, W), or None when cancelled.
    ///
    /// With frames, each step's submission also copies x, pred_x0 and the
    /// model output into a reused staging buffer; step k's frame is mapped
    /// and handed to `on_step` after step k+1 has been submitted, so the GPU
    /// works on the next step while the caller shows this one.
    pub fn run(
        &mut self,
        gpu: &Gpu,
        x_t: &[f32],
        frames: bool,
        mut noise: impl FnMut(usize, u32) -> Vec<f32>,
        mut on_step: impl FnMut(StepInfo, Option<Frame>) -> Flow,
    ) -> Result<Option<Vec<f32>>> {
        let n = self.plan.sample().len;
        let bytes = n as u64 * 4;
        gpu.write_f32(self.plan.sample(), x_t);
        let timesteps = self.scheduler.timesteps.clone();
        let num_steps = timesteps.len();
        let mut pending: Option<PendingFrame> = None;
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
            let slot = index % 2;
            if frames {
                let dst = &self.staging[slot];
                for (k, v) in [self.plan.sample(), &self.pred_x0, self.plan.output()].into_iter().enumerate() {
                    enc.copy_buffer_to_buffer(v.buffer(), v.offset, dst, k as u64 * bytes, v.bytes());
                }
            }
            let submission = gpu.queue.submit([enc.finish()]);
            let info = StepInfo { index, num_steps, timestep: t };
            if !frames {
                gpu.wait()?;
                if on_step(info, None) == Flow::Cancel {
                    return Ok(None);
                }
                continue;
            }
            let (tx, mapped) = crossbeam_channel::bounded(1);
            self.staging[slot].slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            let this = PendingFrame { info, slot, submission, mapped };
            if let Some(prev) = pending.replace(this) {
                let frame = self.take_frame(gpu, prev.slot, prev.submission, &prev.mapped, n)?;
                if on_step(prev.info, Some(frame)) == Flow::Cancel {
                    self.drain(gpu, pending.take())?;
                    return Ok(None);
                }
            }
        }
        if let Some(last) = pending.take() {
            let frame = self.take_frame(gpu, last.slot, last.submission, &last.mapped, n)?;
            let x = frame.x.clone();
            if on_step(last.info, Some(frame)) == Flow::Cancel {
                return Ok(None);
            }
            return Ok(Some(x));
        }
        Ok(Some(gpu.read_f32(self.plan.sample())?))
    }

    /// Waits for a step's copy, reads its frame and unmaps the buffer.
    fn take_frame(
        &self,
        gpu: &Gpu,
        slot: usize,
        submission: wgpu::SubmissionIndex,
        mapped: &crossbeam_channel::Receiver<Result<(), wgpu::BufferAsyncError>>,
        n: usize,
    ) -> Result<Frame> {
        gpu.check()?;
        let polled = gpu.device.poll(wgpu::PollType::Wait { submission_index: Some(submission), timeout: None });
        gpu.check()?;
        polled.map_err(|e| anyhow::anyhow!("waiting for the GPU: {e}"))?;
        mapped
            .recv()
            .map_err(|_| anyhow::anyhow!("GPU readback was dropped"))?
            .map_err(|e| anyhow::anyhow!("GPU readback failed: {e}"))?;
        let buf = &self.staging[slot];
        let frame = {
            let data = buf.slice(..).get_mapped_range().map_err(|e| anyhow::anyhow!("GPU readback failed: {e:?}"))?;
            let all: &[f32] = bytemuck::cast_slice(&data);
            Frame { x: all[..n].to_vec(), pred_x0: all[n..2 * n].to_vec(), model_output: all[2 * n..].to_vec() }
        };
        buf.unmap();
        Ok(frame)
    }

    /// Finishes a step submitted but not shown (after a cancel), leaving the
    /// staging buffers unmapped for the next run.
    fn drain(&self, gpu: &Gpu, pending: Option<PendingFrame>) -> Result<()> {
        if let Some(p) = pending {
            let n = self.plan.sample().len;
            self.take_frame(gpu, p.slot, p.submission, &p.mapped, n)?;
        }
        Ok(())
    }
}
