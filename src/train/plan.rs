//! A training step recorded for one batch size: the forward pass, the loss,
//! the backward pass (the forward op list walked in reverse), the gradient
//! norm and clipping, AdamW and the EMA, all in one submission. Each op's
//! backward dispatches come from [`crate::model::record`], beside its forward.
//!
//! Activation gradients live in buffers reused by liveness: a tensor's
//! gradient exists from the backward of its last reader to the backward of
//! its writer. The first contribution to a gradient (in backward order) is
//! written (=), later ones are accumulated (+=), so nothing is zeroed.

use crate::gpu::{Dispatch, Gpu, TensorView};
use crate::kernels::optim;
use crate::model::graph::{Graph, Tid};
use crate::model::{ForwardPlan, ParamStore, UNetConfig, record};
use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Loss and gradient norm of a step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    pub loss: f32,
    /// The global L2 norm of the gradients, before clipping.
    pub grad_norm: f32,
}

/// The optimizer settings of a step.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings {
    pub lr: f64,
    /// 1-based optimizer step (AdamW's bias correction).
    pub step: u64,
    pub adamw: optim::AdamW,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f32,
    /// EMA decay of this step (ignored without EMA).
    pub ema_decay: f64,
}

pub struct TrainPlan {
    pub gpu: Arc<Gpu>,
    pub batch: u32,
    pub forward: ForwardPlan,
    pub params: ParamStore,
    pub grads: ParamStore,
    pub m: ParamStore,
    pub v: ParamStore,
    pub ema: Option<ParamStore>,
    /// The noise the model should predict (B, C, H, W).
    pub target: TensorView,
    loss: TensorView,
    norm: TensorView,
    dispatches: Vec<Dispatch>,
    /// Indices into `dispatches` whose parameters change every step.
    adamw_at: Vec<usize>,
    ema_at: Vec<usize>,
    pub act_grad_bytes: u64,
    other_bytes: u64,
}

/// Assigns gradient buffers by liveness: buffers of equal size are reused
/// once the gradient they held has been consumed.
struct GradAlloc<'a> {
    gpu: &'a Gpu,
    free: HashMap<usize, Vec<TensorView>>,
    bytes: u64,
}

impl GradAlloc<'_> {
    fn take(&mut self, len: usize) -> TensorView {
        if let Some(v) = self.free.get_mut(&len).and_then(|l| l.pop()) {
            return v;
        }
        self.bytes += len as u64 * 4;
        TensorView::whole(self.gpu.storage_buffer("activation gradient", len as u64 * 4))
    }

    fn give(&mut self, v: TensorView) {
        self.free.entry(v.len).or_default().push(v);
    }
}

impl TrainPlan {
    /// Refuses, before any buffer is made, a batch with a tensor (activation,
    /// gradient or scratch) over the adapter's largest storage binding,
    /// naming the largest batch that fits.
    pub fn check_batch(gpu: &Gpu, graph: &Graph, batch: u32) -> Result<()> {
        crate::model::plan::check_batch(graph, &gpu.limits, batch, |b| scratch_bytes(gpu, graph, b))
    }

    /// The largest training batch this adapter can hold (see [`TrainPlan::check_batch`]).
    pub fn max_batch(gpu: &Gpu, graph: &Graph) -> u32 {
        crate::model::plan::largest_batch(graph, &gpu.limits, &|b| scratch_bytes(gpu, graph, b))
    }

    /// `weights` are the starting parameters; `ema` the EMA's, if one is kept.
    pub fn new(gpu: Arc<Gpu>, graph: &Graph, config: &UNetConfig, batch: u32, weights: &[Vec<f32>], ema: Option<&[Vec<f32>]>) -> Result<TrainPlan> {
        if config.dropout != 0.0 {
            bail!("training with dropout {} is not supported (Petal trains with dropout 0)", config.dropout);
        }
        crate::model::ParamStore::check_fits(graph, &gpu.limits)?;
        Self::check_batch(&gpu, graph, batch)?;
        let params = ParamStore::new(&gpu, graph, "parameters");
        params.upload(&gpu, weights);
        let grads = ParamStore::new(&gpu, graph, "gradients");
        let m = ParamStore::new(&gpu, graph, "adam m");
        let v = ParamStore::new(&gpu, graph, "adam v");
        let ema = ema.map(|w| {
            let s = ParamStore::new(&gpu, graph, "ema");
            s.upload(&gpu, w);
            s
        });
        let forward = ForwardPlan::build(&gpu, graph, config, &params, batch, true)?;
        let out = forward.output().clone();
        let target = TensorView::whole(gpu.storage_buffer("target noise", out.bytes()));
        let loss_partials = TensorView::whole(gpu.storage_buffer("loss partials", optim::mse_loss_partials(out.len) as u64 * 4));
        let loss = TensorView::whole(gpu.storage_buffer("loss", 16));
        let norm = TensorView::whole(gpu.storage_buffer("grad norm", 16));

        let mut dispatches = forward.dispatches.clone();
        // The loss and its gradient, which seeds the backward pass.
        let mut alloc = GradAlloc { gpu: &gpu, free: HashMap::new(), bytes: 0 };
        let mut act_grads: Vec<Option<TensorView>> = vec![None; graph.tensors.len()];
        let dout = alloc.take(out.len);
        dispatches.push(optim::mse_loss(&gpu, &dout, &loss_partials, &out, &target)?);
        dispatches.push(optim::reduce_mean(&gpu, &loss, &loss_partials, optim::mse_loss_partials(out.len), out.len as f32)?);
        act_grads[graph.output] = Some(dout);

        // Which tensors need gradients: everything but the inputs.
        let no_grad: HashSet<Tid> = [graph.sample, graph.t_sin].into();
        let mut written: HashSet<(Tid, u32)> = HashSet::new();
        let scratch = Scratch::new(&gpu, graph, batch);
        for op in graph.ops.iter().rev() {
            // Gradients born here: inputs seen for the first time in reverse.
            for (t, _) in op.inputs() {
                if !no_grad.contains(&t) && act_grads[t].is_none() {
                    act_grads[t] = Some(alloc.take(forward.views[t].len));
                }
            }
            let y = op.output();
            let dy = act_grads[y].clone().with_context(|| format!("no gradient reaches {}", graph.tensors[y].name))?;
            let mut acc = |t: Tid, off: u32| !written.insert((t, off));
            let ctx = record::BackwardCtx {
                gpu: &gpu,
                t: &forward.views,
                params: &params,
                grads: &grads,
                act_grads: &act_grads,
                batch,
                no_grad: &no_grad,
                group_norm_scratch: &scratch.group_norm,
                conv_weight_scratch: &scratch.conv_weight,
            };
            let ds = record::backward(&ctx, op, &dy, &mut acc)
                .with_context(|| format!("recording the backward of {}", crate::model::plan::op_label(graph, op)))?;
            dispatches.extend(ds);
            // The output's gradient is consumed: its buffer can be reused.
            alloc.give(act_grads[y].take().unwrap());
        }

        // Global gradient norm and clipping factor, then AdamW and EMA per slab.
        let slabs = grads.arena.slabs();
        let total_partials: usize = slabs.iter().map(|s| optim::sum_squares_partials(s.len)).sum();
        let norm_partials = TensorView::whole(gpu.storage_buffer("norm partials", total_partials.max(1) as u64 * 4));
        let mut at = 0;
        for s in &slabs {
            dispatches.push(optim::sum_squares(&gpu, &norm_partials, at, s)?);
            at += optim::sum_squares_partials(s.len);
        }
        dispatches.push(optim::grad_norm_clip(&gpu, &norm, &norm_partials, total_partials, 1.0)?);
        let (ps, ms, vs) = (params.arena.slabs(), m.arena.slabs(), v.arena.slabs());
        let mut adamw_at = Vec::new();
        for i in 0..slabs.len() {
            adamw_at.push(dispatches.len());
            dispatches.push(optim::adamw(&gpu, &ps[i], &ms[i], &vs[i], &slabs[i], &norm)?);
        }
        let mut ema_at = Vec::new();
        if let Some(e) = &ema {
            for (es, p) in e.arena.slabs().iter().zip(&ps) {
                ema_at.push(dispatches.len());
                dispatches.push(optim::ema(&gpu, es, p)?);
            }
        }
        // Everything else this plan allocated: the target, loss and norm
        // buffers, the shared scratch, one small uniform per dispatch.
        let other_bytes = [&target, &loss_partials, &loss, &norm, &norm_partials, &scratch.group_norm, &scratch.conv_weight]
            .iter()
            .map(|v| v.bytes())
            .sum::<u64>()
            + dispatches.len() as u64 * 256;
        Ok(TrainPlan {
            act_grad_bytes: alloc.bytes,
            other_bytes,
            gpu,
            batch,
            forward,
            params,
            grads,
            m,
            v,
            ema,
            target,
            loss,
            norm,
            dispatches,
            adamw_at,
            ema_at,
        })
    }

    /// Runs one training step: the batch's noisy images, the noise they hold
    /// and their timesteps in, loss and gradient norm out.
    pub fn step(&self, noisy: &[f32], noise: &[f32], timesteps: &[f32], s: &StepSettings) -> Result<StepStats> {
        let gpu = &self.gpu;
        gpu.write_f32(self.forward.sample(), noisy);
        gpu.write_f32(&self.target, noise);
        self.forward.set_timesteps(gpu, timesteps);
        // The clipping threshold lives in the reduce dispatch's parameters.
        let norm_dispatch = &self.dispatches[self.adamw_at[0] - 1];
        optim::set_grad_norm_clip(gpu, norm_dispatch, total_partials(&self.grads), s.max_grad_norm);
        for (&i, slab) in self.adamw_at.iter().zip(self.params.arena.slabs()) {
            optim::set_params(gpu, &self.dispatches[i], &s.adamw.step_params(s.lr, s.step, slab.len));
        }
        for (&i, slab) in self.ema_at.iter().zip(self.params.arena.slabs()) {
            let p = optim::EmaParams { n: slab.len as u32, _pad: [0; 2], one_minus_decay: (1.0 - s.ema_decay) as f32 };
            optim::set_params(gpu, &self.dispatches[i], &p);
        }
        let refs: Vec<&Dispatch> = self.dispatches.iter().collect();
        gpu.run(&refs);
        let v = gpu.read_many(&[&self.loss, &self.norm])?;
        Ok(StepStats { loss: v[0][0], grad_norm: v[1][0] })
    }

    /// Bytes of GPU memory the plan holds: parameters, gradients, moments,
    /// EMA, activations and their gradients.
    /// Every dispatch of one step, in order (for per-kernel profiling; the
    /// optimizer's parameters are whatever the last `step` wrote).
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Bytes of GPU buffers this plan holds: parameters, gradients, AdamW's
    /// two moments, the EMA, activations (with the forward plan's inputs),
    /// activation gradients, scratch, loss and uniforms. (Uniform buffers are
    /// counted at a generous 256 bytes each.)
    pub fn memory_bytes(&self) -> u64 {
        let p = self.params.arena.bytes();
        p * (4 + self.ema.is_some() as u64) + self.forward.activation_bytes() + self.act_grad_bytes + self.other_bytes
    }
}

fn total_partials(grads: &ParamStore) -> usize {
    grads.arena.slabs().iter().map(|s| optim::sum_squares_partials(s.len)).sum()
}

/// Scratch buffers shared by backward kernels (they run one after another).
struct Scratch {
    group_norm: TensorView,
    conv_weight: TensorView,
}

fn scratch_bytes(gpu: &Gpu, graph: &Graph, batch: u32) -> u64 {
    let (gn, cw) = scratch_lens(gpu, graph, batch);
    gn.max(cw) as u64 * 4
}

/// Elements of the two scratch buffers of a batch: (group norm, conv weight
/// gradient), each the largest any op needs.
fn scratch_lens(gpu: &Gpu, graph: &Graph, batch: u32) -> (usize, usize) {
    graph.ops.iter().fold((1, 1), |(gn, cw), op| {
        let (g, c) = record::backward_scratch_lens(gpu, op, batch);
        (gn.max(g), cw.max(c))
    })
}

impl Scratch {
    fn new(gpu: &Gpu, graph: &Graph, batch: u32) -> Scratch {
        let (gn, cw) = scratch_lens(gpu, graph, batch);
        let buf = |label, n: usize| TensorView::whole(gpu.storage_buffer(label, n as u64 * 4));
        Scratch { group_norm: buf("group norm scratch", gn), conv_weight: buf("conv weight-gradient scratch", cw) }
    }
}
