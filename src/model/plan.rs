//! A forward pass recorded for one batch size: activation buffers, bind
//! groups and dispatches made once, replayed every denoising step.

use super::graph::{Graph, Op, Tid};
use super::{ParamStore, UNet, UNetConfig};
use crate::diffusion::timestep_embedding;
use crate::gpu::{Arena, Dispatch, Gpu, TensorView};
use crate::kernels::{self, Conv2dEpilogue, Conv2dShape, MatmulDesc};
use anyhow::{Context, Result};

pub struct ForwardPlan {
    pub batch: u32,
    pub acts: Arena,
    /// One view per graph tensor.
    pub views: Vec<TensorView>,
    pub dispatches: Vec<Dispatch>,
    sample: Tid,
    t_sin: Tid,
    output: Tid,
    t_sin_dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f32,
}

impl ForwardPlan {
    /// An inference plan: activation buffers are reused once no later op
    /// reads them.
    pub fn new(unet: &UNet, batch: u32) -> Result<ForwardPlan> {
        Self::build(&unet.gpu, &unet.graph, &unet.config, &unet.params, batch, false)
    }

    /// A plan over any parameter store of the graph's layout (the training
    /// weights, or their moving average). `keep_all` keeps every activation
    /// for a backward pass instead of reusing buffers.
    pub fn build(gpu: &Gpu, g: &Graph, config: &UNetConfig, params: &ParamStore, batch: u32, keep_all: bool) -> Result<ForwardPlan> {
        let mut acts = Arena::separate("activations", &gpu.limits);
        let len = |t: Tid| g.tensors[t].per_image * batch as usize;
        let slots: Vec<_> = if keep_all {
            (0..g.tensors.len()).map(|t| acts.alloc(len(t))).collect()
        } else {
            // Liveness: a tensor's buffer is free after the last op that
            // reads it. The inputs and the output stay (the sampler reads and
            // writes them between passes).
            let mut last_read = vec![None; g.tensors.len()];
            for (i, op) in g.ops.iter().enumerate() {
                for (t, _) in op.inputs() {
                    last_read[t] = Some(i);
                }
            }
            let pinned = [g.sample, g.t_sin, g.output];
            let mut slots = vec![None; g.tensors.len()];
            for t in pinned {
                slots[t] = Some(acts.alloc(len(t)));
            }
            let mut free: std::collections::HashMap<usize, Vec<crate::gpu::Slot>> = Default::default();
            for (i, op) in g.ops.iter().enumerate() {
                let mut written = vec![op.output()];
                if let Op::GroupNorm { stats, .. } = op {
                    written.push(*stats);
                }
                for &t in &written {
                    if slots[t].is_none() {
                        let reused = free.get_mut(&len(t)).and_then(|v| v.pop());
                        slots[t] = Some(reused.unwrap_or_else(|| acts.alloc(len(t))));
                    }
                }
                // Freed only after this op's outputs are placed, so an op never
                // writes the buffer it reads.
                let dead = op.inputs().into_iter().map(|(t, _)| t).chain(written.iter().copied());
                for t in dead.collect::<std::collections::BTreeSet<_>>() {
                    if !pinned.contains(&t) && last_read[t].is_none_or(|l| l <= i) {
                        if let Some(s) = slots[t] {
                            free.entry(len(t)).or_default().push(s);
                        }
                    }
                }
            }
            slots.into_iter().map(|s| s.expect("every tensor placed")).collect()
        };
        acts.build(&gpu.device);
        let views: Vec<TensorView> = slots.into_iter().map(|s| acts.view(s)).collect();
        let mut dispatches = Vec::new();
        for op in &g.ops {
            dispatches.extend(
                op_forward(gpu, op, &views, params, batch)
                    .with_context(|| format!("recording {}", op_label(g, op)))?,
            );
        }
        Ok(ForwardPlan {
            batch,
            acts,
            views,
            dispatches,
            sample: g.sample,
            t_sin: g.t_sin,
            output: g.output,
            t_sin_dim: g.tensors[g.t_sin].per_image,
            flip_sin_to_cos: config.flip_sin_to_cos,
            freq_shift: config.freq_shift as f32,
        })
    }

    /// The input x_t (B, in_channels, H, W).
    pub fn sample(&self) -> &TensorView {
        &self.views[self.sample]
    }

    /// The model output (B, out_channels, H, W).
    pub fn output(&self) -> &TensorView {
        &self.views[self.output]
    }

    /// Writes the sinusoidal embedding of these timesteps (one per image)
    /// for the next submission.
    pub fn set_timesteps(&self, gpu: &Gpu, timesteps: &[f32]) {
        assert_eq!(timesteps.len(), self.batch as usize);
        let emb = timestep_embedding(timesteps, self.t_sin_dim, self.flip_sin_to_cos, self.freq_shift);
        gpu.write_f32(&self.views[self.t_sin], &emb);
    }

    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.record(pass);
        }
    }

    /// Runs one forward pass on `sample` at `timesteps` and reads the output
    /// back (for tests and the parity command).
    pub fn forward(&self, gpu: &Gpu, sample: &[f32], timesteps: &[f32]) -> Result<Vec<f32>> {
        gpu.write_f32(self.sample(), sample);
        self.set_timesteps(gpu, timesteps);
        let refs: Vec<&Dispatch> = self.dispatches.iter().collect();
        gpu.run(&refs);
        gpu.read_f32(self.output())
    }

    /// Bytes of activation memory.
    pub fn activation_bytes(&self) -> u64 {
        self.acts.bytes()
    }
}

pub fn op_label(g: &Graph, op: &Op) -> String {
    let y = match op {
        Op::Linear { y, .. } | Op::Conv2d { y, .. } | Op::GroupNorm { y, .. } | Op::Softmax { y, .. } | Op::Concat { y, .. } => *y,
        Op::Matmul { c, .. } => *c,
    };
    g.tensors[y].name.clone()
}

/// The dispatches of one op's forward pass.
fn op_forward(gpu: &Gpu, op: &Op, t: &[TensorView], p: &ParamStore, batch: u32) -> Result<Vec<Dispatch>> {
    Ok(match op {
        Op::Linear { y, x, w, b, in_features, out_features, silu_input } => {
            vec![kernels::linear_forward(
                gpu,
                "linear",
                &t[*y],
                &t[*x],
                &p.span(w),
                &p.span(b),
                batch,
                *in_features,
                *out_features,
                *silu_input,
            )?]
        }
        Op::Conv2d { y, x, w, b, shape, temb, residual, out_div } => {
            let s = Conv2dShape { batch, ..*shape };
            let bias = p.span(b);
            let epi = Conv2dEpilogue {
                bias: Some(&bias),
                temb: temb.map(|(tt, stride, off)| (&t[tt], stride, off)),
                residual: residual.map(|r| &t[r]),
                out_div: *out_div,
            };
            vec![kernels::conv2d_forward(gpu, "conv2d", &t[*y], &t[*x], &p.span(w), &s, &epi)?]
        }
        Op::GroupNorm { y, stats, x, gamma, beta, channels, hw, groups, eps, silu } => {
            vec![kernels::group_norm_forward(
                gpu,
                "group_norm",
                &t[*y],
                &t[*stats],
                &t[*x],
                &p.views[*gamma],
                &p.views[*beta],
                batch,
                *channels,
                *hw,
                *groups,
                *eps,
                *silu,
            )?]
        }
        Op::Matmul { c, a, b, desc } => {
            let d = MatmulDesc { outer: batch, ..*desc };
            vec![kernels::matmul(gpu, "matmul", &t[*c], &t[*a], &t[*b], &d)?]
        }
        Op::Softmax { y, x, rows, n } => vec![kernels::softmax_forward(gpu, "softmax", &t[*y], &t[*x], rows * batch, *n)?],
        Op::Concat { y, a, b, ca, cb, hw } => {
            let c = ca + cb;
            vec![
                kernels::copy_channels(gpu, "concat", &t[*y], &t[*a], batch, *ca, *hw, c, 0)?,
                kernels::copy_channels(gpu, "concat", &t[*y], &t[*b], batch, *cb, *hw, c, *ca)?,
            ]
        }
    })
}
