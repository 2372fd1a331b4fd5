//! A forward pass recorded for one batch size: activation buffers, bind
//! groups and dispatches made once, replayed every denoising step.

use super::graph::{Graph, Op, Tid};
use super::{ParamStore, UNet, UNetConfig};
use crate::diffusion::timestep_embedding;
use crate::gpu::{Arena, Dispatch, Dtype, Gpu, TensorView};
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
    /// Its activations are `unet.activations` where [`f16_safe`] allows.
    pub fn new(unet: &UNet, batch: u32) -> Result<ForwardPlan> {
        Self::build_with(&unet.gpu, &unet.graph, &unet.config, &unet.params, batch, false, unet.activations)
    }

    /// A plan over any parameter store of the graph's layout (the training
    /// weights, or their moving average). `keep_all` keeps every activation
    /// for a backward pass instead of reusing buffers.
    ///
    /// Errors (before any buffer is made) when a tensor of this batch would be
    /// larger than the adapter's largest storage binding, naming the tensor
    /// and the largest batch that fits (see [`ForwardPlan::max_batch`]).
    /// Every activation is f32 (training, and its previews).
    pub fn build(gpu: &Gpu, g: &Graph, config: &UNetConfig, params: &ParamStore, batch: u32, keep_all: bool) -> Result<ForwardPlan> {
        Self::build_with(gpu, g, config, params, batch, keep_all, Dtype::F32)
    }

    /// [`ForwardPlan::build`] with the activations that [`f16_safe`] allows
    /// stored as `activations` (F32 or F16; F16 needs SHADER_F16).
    #[allow(clippy::too_many_arguments)]
    pub fn build_with(
        gpu: &Gpu,
        g: &Graph,
        config: &UNetConfig,
        params: &ParamStore,
        batch: u32,
        keep_all: bool,
        activations: Dtype,
    ) -> Result<ForwardPlan> {
        check_batch(g, &gpu.limits, batch, |_| 0)?;
        anyhow::ensure!(
            matches!(activations, Dtype::F32 | Dtype::F16),
            "activations can be f32 or f16, not {}",
            activations.name()
        );
        let mut acts = Arena::separate("activations", &gpu.limits);
        let len = |t: Tid| g.tensors[t].per_image * batch as usize;
        let safe = f16_safe(g);
        let dtype = |t: Tid| if safe[t] { activations } else { Dtype::F32 };
        // Same-sized buffers of the same type are interchangeable.
        let size = |t: Tid| (len(t), dtype(t));
        let new_slot = |acts: &mut Arena, t: Tid| acts.alloc_bytes(dtype(t).bytes(len(t)));
        let slots: Vec<_> = if keep_all {
            (0..g.tensors.len()).map(|t| new_slot(&mut acts, t)).collect()
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
                slots[t] = Some(new_slot(&mut acts, t));
            }
            let mut free: std::collections::HashMap<(usize, Dtype), Vec<crate::gpu::Slot>> = Default::default();
            for (i, op) in g.ops.iter().enumerate() {
                let mut written = vec![op.output()];
                if let Op::GroupNorm { stats, .. } = op {
                    written.push(*stats);
                }
                for &t in &written {
                    if slots[t].is_none() {
                        let reused = free.get_mut(&size(t)).and_then(|v| v.pop());
                        slots[t] = Some(reused.unwrap_or_else(|| new_slot(&mut acts, t)));
                    }
                }
                // Freed only after this op's outputs are placed, so an op never
                // writes the buffer it reads.
                let dead = op.inputs().into_iter().map(|(t, _)| t).chain(written.iter().copied());
                for t in dead.collect::<std::collections::BTreeSet<_>>() {
                    if !pinned.contains(&t) && last_read[t].is_none_or(|l| l <= i)
                        && let Some(s) = slots[t]
                    {
                        free.entry(size(t)).or_default().push(s);
                    }
                }
            }
            slots.into_iter().map(|s| s.expect("every tensor placed")).collect()
        };
        // One scratch for the ops that need one (split convolutions' partial
        // sums), shared: the ops run one after another.
        let scratch_len = g.ops.iter().map(|op| super::record::forward_scratch_len(gpu, op, batch)).max().unwrap_or(0);
        let scratch_slot = (scratch_len > 0).then(|| acts.alloc(scratch_len));
        acts.build(&gpu.device);
        let views: Vec<TensorView> =
            slots.into_iter().enumerate().map(|(t, s)| acts.view_typed(s, 0, len(t), dtype(t))).collect();
        let scratch = scratch_slot.map_or_else(|| gpu.dummy.clone(), |s| acts.view(s));
        let mut dispatches = Vec::new();
        for op in &g.ops {
            dispatches.extend(
                super::record::forward(gpu, op, &views, params, batch, &scratch)
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

    /// The largest batch whose every activation fits one storage binding of
    /// a device with these limits (each tensor is bound whole), at least 0.
    pub fn max_batch(g: &Graph, limits: &wgpu::Limits) -> u32 {
        largest_batch(g, limits, &|_| 0)
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

/// Which tensors of a forward pass may be stored in f16 when the activations
/// are f16 (issue 10: "keep activations in f16 where that is safe and
/// accumulate sums, group norm statistics and the attention softmax in f32"):
/// the feature maps between ops (conv, group norm, concatenation and
/// attention outputs, q, k and v), which every kernel widens to f32 to
/// compute on. Kept f32: the sample x_t and the timestep input and the model
/// output (the scheduler's step reads and writes them), the timestep MLP
/// (`time_embedding`, `time_emb_proj`), group norm statistics, and the
/// attention scores and probabilities (softmax in f32: attention with f16
/// scores is a known source of NaN images elsewhere).
pub fn f16_safe(g: &Graph) -> Vec<bool> {
    let mut ok = vec![true; g.tensors.len()];
    for t in [g.sample, g.t_sin, g.output] {
        ok[t] = false;
    }
    for op in &g.ops {
        match op {
            Op::Linear { y, .. } => ok[*y] = false,
            Op::GroupNorm { stats, .. } => ok[*stats] = false,
            Op::Softmax { y, x, .. } => {
                ok[*x] = false;
                ok[*y] = false;
            }
            Op::Conv2d { .. } | Op::Matmul { .. } | Op::Concat { .. } => {}
        }
    }
    ok
}

/// The largest tensor of a batch: (bytes, name). `extra(batch)` adds
/// buffers that are not graph tensors (a training plan's scratch), as
/// (bytes) compared on their own.
fn largest_tensor(g: &Graph, batch: u32, extra: &dyn Fn(u32) -> u64) -> (u64, String) {
    let (bytes, name) = g
        .tensors
        .iter()
        .map(|t| (t.per_image as u64 * batch as u64 * 4, t.name.as_str()))
        .max_by_key(|&(b, _)| b)
        .unwrap_or((0, "none"));
    let e = extra(batch);
    if e > bytes { (e, "scratch".into()) } else { (bytes, name.to_string()) }
}

/// The largest batch (up to u32::MAX / 2) for which every tensor fits.
pub(crate) fn largest_batch(g: &Graph, limits: &wgpu::Limits, extra: &dyn Fn(u32) -> u64) -> u32 {
    let max = crate::gpu::max_tensor_bytes(limits);
    let fits = |b: u32| largest_tensor(g, b, extra).0 <= max;
    let (mut lo, mut hi) = (0u32, 1u32);
    while fits(hi) && hi < u32::MAX / 2 {
        lo = hi;
        hi *= 2;
    }
    // fits(lo), !fits(hi) (or hi at the cap)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) { lo = mid } else { hi = mid }
    }
    lo
}

/// Refuses a batch whose largest tensor (graph tensors, and `extra(batch)`
/// bytes of buffers outside the graph) is over the largest storage binding
/// of a device with these limits, naming the tensor, its size, the limit and
/// the largest batch that fits. Callers add the flag the batch came from.
pub fn check_batch(g: &Graph, limits: &wgpu::Limits, batch: u32, extra: impl Fn(u32) -> u64) -> Result<()> {
    let max = crate::gpu::max_tensor_bytes(limits);
    let (bytes, name) = largest_tensor(g, batch, &extra);
    if bytes > max {
        let fits = largest_batch(g, limits, &extra);
        anyhow::bail!(
            "a batch of {batch} does not fit this adapter: {name} would take {:.1} MiB, over its largest storage binding of {:.1} MiB; \
             the largest batch that fits is {fits}",
            bytes as f64 / (1 << 20) as f64,
            max as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}

pub fn op_label(g: &Graph, op: &Op) -> String {
    g.tensors[op.output()].name.clone()
}
