//! Each op of the graph recorded as GPU dispatches, its forward and its
//! backward side by side (as llm.c pairs `*_forward` with `*_backward`).
//!
//! [`forward`] gives the dispatches of one op's forward pass for a batch
//! ([`super::ForwardPlan`] records the whole list in order); [`backward`]
//! gives those of its backward pass ([`crate::train::TrainPlan`] walks the
//! list in reverse), reading the tensors the forward read and writing the
//! gradients of its inputs and parameters. Which kernel variant runs is not
//! decided here: the `crate::kernels` wrappers take it from the device's
//! policy, made once when it opened.

use super::ParamStore;
use super::graph::{Op, Tid};
use crate::gpu::{Dispatch, Gpu, TensorView};
use crate::kernels::{self, ChannelSlice, Conv2dEpilogue, Conv2dShape, MatmulDesc, Operand};
use anyhow::{Context, Result, bail};
use std::collections::HashSet;

/// The dispatches of one op's forward pass. `t` holds a view of every graph
/// tensor (for this batch), `p` the parameters, `scratch` (f32) at least
/// [`forward_scratch_len`] values, shared by every op (they run one after
/// another).
///
/// Errors: the kernel wrappers' (a tensor too small for its shape, a shape
/// the adapter cannot run).
pub fn forward(gpu: &Gpu, op: &Op, t: &[TensorView], p: &ParamStore, batch: u32, scratch: &TensorView) -> Result<Vec<Dispatch>> {
    match op {
        Op::Linear { .. } => linear_forward(gpu, op, t, p, batch),
        Op::Conv2d { .. } => conv2d_forward(gpu, op, t, p, batch, scratch),
        Op::GroupNorm { .. } => group_norm_forward(gpu, op, t, p, batch),
        Op::Matmul { .. } => matmul_forward(gpu, op, t, batch),
        Op::Softmax { .. } => softmax_forward(gpu, op, t, batch),
        Op::Concat { .. } => concat_forward(gpu, op, t, batch),
    }
}

/// Elements of the f32 scratch an op's forward needs at this batch (a
/// split convolution's partial sums; 0 for most).
pub fn forward_scratch_len(gpu: &Gpu, op: &Op, batch: u32) -> usize {
    match op {
        Op::Conv2d { shape, .. } => kernels::conv2d_forward_scratch_len(gpu, &Conv2dShape { batch, ..*shape }),
        _ => 0,
    }
}

/// What an op's backward reads and writes besides its output gradient.
pub struct BackwardCtx<'a> {
    pub gpu: &'a Gpu,
    /// The forward pass's tensors (every activation kept).
    pub t: &'a [TensorView],
    pub params: &'a ParamStore,
    /// Parameter gradients, in the parameters' layout (written, not accumulated:
    /// every parameter has one reader).
    pub grads: &'a ParamStore,
    /// The gradient buffer of each tensor that has one now.
    pub act_grads: &'a [Option<TensorView>],
    pub batch: u32,
    /// Tensors that get no gradient (the inputs x_t and the timestep embedding).
    pub no_grad: &'a HashSet<Tid>,
    /// Scratch of [`backward_scratch_lens`]' sizes, shared by every op (they
    /// run one after another).
    pub group_norm_scratch: &'a TensorView,
    pub conv_weight_scratch: &'a TensorView,
}

impl BackwardCtx<'_> {
    fn grad(&self, t: Tid) -> Option<&TensorView> {
        if self.no_grad.contains(&t) { None } else { self.act_grads[t].as_ref() }
    }
}

/// The dispatches of one op's backward pass, given `dy`, its output's
/// gradient. `acc(t, offset)` says whether a contribution to that gradient
/// region accumulates (true: an earlier op in backward order wrote it) or
/// writes.
///
/// Errors: a gradient that should exist does not (a graph the planner did not
/// make), and the kernel wrappers' errors.
pub fn backward(c: &BackwardCtx, op: &Op, dy: &TensorView, acc: &mut dyn FnMut(Tid, u32) -> bool) -> Result<Vec<Dispatch>> {
    match op {
        Op::Linear { .. } => linear_backward(c, op, dy, acc),
        Op::Conv2d { .. } => conv2d_backward(c, op, dy, acc),
        Op::GroupNorm { .. } => group_norm_backward(c, op, dy, acc),
        Op::Matmul { .. } => matmul_backward(c, op, dy, acc),
        Op::Softmax { .. } => softmax_backward(c, op, dy, acc),
        Op::Concat { .. } => concat_backward(c, op, dy, acc),
    }
}

/// Elements of the scratch an op's backward needs at this batch:
/// (group norm partial sums, conv weight-gradient partials or flipped
/// weights).
pub fn backward_scratch_lens(gpu: &Gpu, op: &Op, batch: u32) -> (usize, usize) {
    match op {
        Op::GroupNorm { channels, .. } => (kernels::group_norm_backward_scratch_len(batch, *channels), 0),
        Op::Conv2d { shape, .. } => {
            // One scratch serves the weight gradient's partials and then the
            // input gradient's flipped weights (their dispatches run in turn).
            let s = Conv2dShape { batch, ..*shape };
            (0, kernels::conv2d_backward_weight_scratch_len(gpu, &s).max(kernels::conv2d_backward_input_scratch_len(gpu, &s)))
        }
        _ => (0, 0),
    }
}

// Linear: y (B, out) = w . act(x) + b ------------------------------------

fn linear_forward(gpu: &Gpu, op: &Op, t: &[TensorView], p: &ParamStore, batch: u32) -> Result<Vec<Dispatch>> {
    let Op::Linear { y, x, w, b, in_features, out_features, silu_input } = op else { unreachable!() };
    Ok(vec![kernels::linear_forward(
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
    )?])
}

fn linear_backward(c: &BackwardCtx, op: &Op, dy: &TensorView, acc: &mut dyn FnMut(Tid, u32) -> bool) -> Result<Vec<Dispatch>> {
    let Op::Linear { x, w, b, in_features, out_features, silu_input, .. } = op else { unreachable!() };
    let dx = c.grad(*x);
    let accumulate = dx.is_some() && acc(*x, 0);
    kernels::linear_backward(
        c.gpu,
        "linear_backward",
        dx,
        &c.grads.span(w),
        &c.grads.span(b),
        dy,
        &c.t[*x],
        &c.params.span(w),
        c.batch,
        *in_features,
        *out_features,
        *silu_input,
        accumulate,
    )
}

// Conv2d: y = (conv(x, w) + b + temb + residual) / out_div -----------------

fn conv2d_forward(gpu: &Gpu, op: &Op, t: &[TensorView], p: &ParamStore, batch: u32, scratch: &TensorView) -> Result<Vec<Dispatch>> {
    let Op::Conv2d { y, x, w, b, shape, temb, residual, out_div } = op else { unreachable!() };
    let s = Conv2dShape { batch, ..*shape };
    let bias = p.span(b);
    let epi = Conv2dEpilogue {
        bias: Some(&bias),
        temb: temb.map(|(tt, stride, off)| (&t[tt], stride, off)),
        residual: residual.map(|r| &t[r]),
        out_div: *out_div,
        accumulate: false,
    };
    // Only a split convolution reads the scratch (the plan sized it for those).
    kernels::conv2d_forward(gpu, "conv2d", &t[*y], &t[*x], &p.span(w), &s, &epi, Some(scratch))
}

/// The bias and time-embedding gradients (one kernel), the residual's, the
/// weight gradient and the input gradient.
fn conv2d_backward(c: &BackwardCtx, op: &Op, dy: &TensorView, acc: &mut dyn FnMut(Tid, u32) -> bool) -> Result<Vec<Dispatch>> {
    let Op::Conv2d { x, w, b, shape, temb, residual, out_div, .. } = op else { unreachable!() };
    let (gpu, g) = (c.gpu, c.grads);
    let s = Conv2dShape { batch: c.batch, ..*shape };
    let mut out = Vec::new();
    let dtemb = match temb {
        Some((tt, stride, off)) => {
            if acc(*tt, *off) {
                bail!("a time-embedding slice has two readers");
            }
            Some((c.grad(*tt).context("time embedding gradient")?, *stride, *off))
        }
        None => None,
    };
    out.push(kernels::conv2d_backward_bias(gpu, "conv_backward_bias", &g.span(b), dtemb, dy, &s, *out_div)?);
    if let Some(r) = residual
        && let Some(dr) = c.grad(*r)
    {
        let a = acc(*r, 0);
        out.push(kernels::scale_add(gpu, "residual_backward", dr, dy, 1.0 / *out_div, a)?);
    }
    let scratch = (kernels::conv2d_backward_weight_scratch_len(gpu, &s) > 0).then_some(c.conv_weight_scratch);
    out.extend(kernels::conv2d_backward_weight(gpu, "conv_backward_weight", &g.span(w), scratch, dy, &c.t[*x], &s, *out_div)?);
    if let Some(dx) = c.grad(*x) {
        let a = acc(*x, 0);
        let scratch = (kernels::conv2d_backward_input_scratch_len(gpu, &s) > 0).then_some(c.conv_weight_scratch);
        out.extend(kernels::conv2d_backward_input(
            gpu,
            "conv_backward_input",
            dx,
            dy,
            &c.params.span(w),
            scratch,
            &s,
            *out_div,
            a,
        )?);
    }
    Ok(out)
}

// GroupNorm: y = [silu](group_norm(x) * gamma + beta) -----------------------

fn group_norm_forward(gpu: &Gpu, op: &Op, t: &[TensorView], p: &ParamStore, batch: u32) -> Result<Vec<Dispatch>> {
    let Op::GroupNorm { y, stats, x, gamma, beta, channels, hw, groups, eps, silu } = op else { unreachable!() };
    Ok(vec![kernels::group_norm_forward(
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
    )?])
}

fn group_norm_backward(c: &BackwardCtx, op: &Op, dy: &TensorView, acc: &mut dyn FnMut(Tid, u32) -> bool) -> Result<Vec<Dispatch>> {
    let Op::GroupNorm { stats, x, gamma, beta, channels, hw, groups, silu, .. } = op else { unreachable!() };
    let dx = c.grad(*x).context("group norm input gradient")?;
    let a = acc(*x, 0);
    let (g, p) = (c.grads, c.params);
    kernels::group_norm_backward(
        c.gpu,
        "group_norm_backward",
        dx,
        &g.views[*gamma],
        &g.views[*beta],
        c.group_norm_scratch,
        dy,
        &c.t[*x],
        &c.t[*stats],
        &p.views[*gamma],
        &p.views[*beta],
        c.batch,
        *channels,
        *hw,
        *groups,
        *silu,
        a,
    )
}

// Matmul: c = alpha a . b per image and head ------------------------------

fn matmul_forward(gpu: &Gpu, op: &Op, t: &[TensorView], batch: u32) -> Result<Vec<Dispatch>> {
    let Op::Matmul { c, a, b, desc } = op else { unreachable!() };
    let d = MatmulDesc { outer: batch, ..*desc };
    Ok(vec![kernels::matmul(gpu, "matmul", &t[*c], &t[*a], &t[*b], &d)?])
}

/// dA (m, k) = alpha dC B^T and dB (k, n) = alpha A^T dC, both with the
/// forward's matmul kernel over transposed operand strides.
fn matmul_backward(c: &BackwardCtx, op: &Op, dy: &TensorView, acc: &mut dyn FnMut(Tid, u32) -> bool) -> Result<Vec<Dispatch>> {
    let Op::Matmul { a, b, desc, .. } = op else { unreachable!() };
    let (gpu, t) = (c.gpu, c.t);
    let d = MatmulDesc { outer: c.batch, ..*desc };
    let transpose = |o: &Operand| Operand { row_stride: o.col_stride, col_stride: o.row_stride, ..*o };
    let mut out = Vec::new();
    if let Some(da) = c.grad(*a) {
        let accumulate = acc(*a, desc.a.offset);
        let dd = MatmulDesc { m: d.m, n: d.k, k: d.n, a: d.c, b: transpose(&d.b), c: d.a, accumulate, ..d };
        out.push(kernels::matmul(gpu, "matmul_backward_a", da, dy, &t[*b], &dd)?);
    }
    if let Some(db) = c.grad(*b) {
        let accumulate = acc(*b, desc.b.offset);
        let dd = MatmulDesc { m: d.k, n: d.n, k: d.m, a: transpose(&d.a), b: d.c, c: d.b, accumulate, ..d };
        out.push(kernels::matmul(gpu, "matmul_backward_b", db, &t[*a], dy, &dd)?);
    }
    Ok(out)
}

// Softmax over each row of n -----------------------------------------------

fn softmax_forward(gpu: &Gpu, op: &Op, t: &[TensorView], batch: u32) -> Result<Vec<Dispatch>> {
    let Op::Softmax { y, x, rows, n } = op else { unreachable!() };
    Ok(vec![kernels::softmax_forward(gpu, "softmax", &t[*y], &t[*x], rows * batch, *n)?])
}

fn softmax_backward(c: &BackwardCtx, op: &Op, dy: &TensorView, acc: &mut dyn FnMut(Tid, u32) -> bool) -> Result<Vec<Dispatch>> {
    let Op::Softmax { y, x, rows, n } = op else { unreachable!() };
    let dx = c.grad(*x).context("softmax input gradient")?;
    if acc(*x, 0) {
        bail!("softmax scores have two readers");
    }
    Ok(vec![kernels::softmax_backward(c.gpu, "softmax_backward", dx, dy, &c.t[*y], rows * c.batch, *n)?])
}

// Concat along channels ----------------------------------------------------

fn concat_forward(gpu: &Gpu, op: &Op, t: &[TensorView], batch: u32) -> Result<Vec<Dispatch>> {
    let Op::Concat { y, a, b, ca, cb, hw } = op else { unreachable!() };
    let c = ca + cb;
    Ok(vec![
        kernels::copy_channels(gpu, "concat", &t[*y], &t[*a], batch, *ca, *hw, c, 0)?,
        kernels::copy_channels(gpu, "concat", &t[*y], &t[*b], batch, *cb, *hw, c, *ca)?,
    ])
}

/// Each input's gradient is its channel slice of dy.
fn concat_backward(c: &BackwardCtx, op: &Op, dy: &TensorView, acc: &mut dyn FnMut(Tid, u32) -> bool) -> Result<Vec<Dispatch>> {
    let Op::Concat { a, b, ca, cb, hw, .. } = op else { unreachable!() };
    let total = ca + cb;
    let mut out = Vec::new();
    for (src, ch, off) in [(*a, *ca, 0), (*b, *cb, *ca)] {
        if let Some(d) = c.grad(src) {
            let accumulate = acc(src, 0);
            let (dst_slice, src_slice) = (ChannelSlice { total: ch, offset: 0 }, ChannelSlice { total, offset: off });
            out.push(kernels::copy_channel_slice(c.gpu, "concat_backward", d, dst_slice, dy, src_slice, c.batch, ch, *hw, accumulate)?);
        }
    }
    Ok(out)
}
