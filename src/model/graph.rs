//! The UNet as an ordered list of ops over named tensors and parameters.
//!
//! The list is independent of the batch size: tensors record their size per
//! image and a plan instantiates them for a batch. The forward pass runs the
//! list in order; the backward pass walks it in reverse, each op's backward
//! reading the tensors its forward read. Parameters are named as in the
//! diffusers state dict and grouped so that tensors an op uses together
//! (to_q, to_k and to_v; every time_emb_proj) sit back to back in memory.

use crate::kernels::{Conv2dShape, MatmulDesc};

pub type Tid = usize;
pub type Pid = usize;

#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// Elements per image.
    pub per_image: usize,
}

#[derive(Clone, Debug)]
pub struct ParamInfo {
    /// The diffusers state-dict name, e.g. `down_blocks.1.attentions.0.to_q.weight`.
    pub name: String,
    pub shape: Vec<usize>,
}

impl ParamInfo {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    /// y (B, out) = w . act(x) + b, where w and b may be several parameters
    /// stacked along `out`.
    Linear { y: Tid, x: Tid, w: Vec<Pid>, b: Vec<Pid>, in_features: u32, out_features: u32, silu_input: bool },
    /// y = (conv(x, w) + b + temb + residual) / out_div; shape.batch is 0
    /// until planned; w and b may be stacked along cout.
    Conv2d {
        y: Tid,
        x: Tid,
        w: Vec<Pid>,
        b: Vec<Pid>,
        shape: Conv2dShape,
        /// (temb tensor, its per-image stride, offset of this conv's slice)
        temb: Option<(Tid, u32, u32)>,
        residual: Option<Tid>,
        out_div: f32,
    },
    /// y = [silu](group_norm(x) * gamma + beta); stats = (mean, rstd).
    GroupNorm { y: Tid, stats: Tid, x: Tid, gamma: Pid, beta: Pid, channels: u32, hw: u32, groups: u32, eps: f32, silu: bool },
    /// c = alpha * a . b per image and head; desc.outer is the batch, set when planned.
    Matmul { c: Tid, a: Tid, b: Tid, desc: MatmulDesc },
    /// y = softmax of each length-n row of x; `rows` per image.
    Softmax { y: Tid, x: Tid, rows: u32, n: u32 },
    /// y (B, ca + cb, hw) = cat(a (B, ca, hw), b (B, cb, hw)) along channels.
    Concat { y: Tid, a: Tid, b: Tid, ca: u32, cb: u32, hw: u32 },
}

impl Op {
    /// The tensor the op writes.
    pub fn output(&self) -> Tid {
        match self {
            Op::Linear { y, .. } | Op::Conv2d { y, .. } | Op::GroupNorm { y, .. } | Op::Softmax { y, .. } | Op::Concat { y, .. } => *y,
            Op::Matmul { c, .. } => *c,
        }
    }

    /// The regions of tensors the op reads, as (tensor, element offset per
    /// image): whole tensors at offset 0, matmul operands at theirs. Each is
    /// a gradient the op's backward contributes to.
    pub fn inputs(&self) -> Vec<(Tid, u32)> {
        match self {
            Op::Linear { x, .. } | Op::GroupNorm { x, .. } | Op::Softmax { x, .. } => vec![(*x, 0)],
            Op::Conv2d { x, temb, residual, .. } => {
                let mut v = vec![(*x, 0)];
                if let Some((t, _, off)) = temb {
                    v.push((*t, *off));
                }
                if let Some(r) = residual {
                    v.push((*r, 0));
                }
                v
            }
            Op::Matmul { a, b, desc, .. } => vec![(*a, desc.a.offset), (*b, desc.b.offset)],
            Op::Concat { a, b, .. } => vec![(*a, 0), (*b, 0)],
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub ops: Vec<Op>,
    pub tensors: Vec<TensorInfo>,
    pub params: Vec<ParamInfo>,
    /// Every parameter in exactly one group; a group is allocated contiguously.
    pub groups: Vec<Vec<Pid>>,
    /// The noisy sample (B, in_channels, H, W).
    pub sample: Tid,
    /// The sinusoidal timestep embedding (B, block_out_channels[0]), computed
    /// on the CPU each step.
    pub t_sin: Tid,
    /// The model output (B, out_channels, H, W).
    pub output: Tid,
}

impl Graph {
    pub fn tensor(&mut self, name: impl Into<String>, per_image: usize) -> Tid {
        self.tensors.push(TensorInfo { name: name.into(), per_image });
        self.tensors.len() - 1
    }

    pub fn param(&mut self, name: impl Into<String>, shape: &[usize]) -> Pid {
        self.params.push(ParamInfo { name: name.into(), shape: shape.to_vec() });
        self.params.len() - 1
    }

    /// Declares parameters allocated back to back, in this order.
    pub fn group(&mut self, members: Vec<Pid>) {
        self.groups.push(members);
    }

    pub fn param_id(&self, name: &str) -> Option<Pid> {
        self.params.iter().position(|p| p.name == name)
    }

    pub fn num_parameters(&self) -> usize {
        self.params.iter().map(|p| p.len()).sum()
    }

    /// Multiply-adds of one forward pass per image (convolutions, linears and
    /// attention products).
    pub fn macs_per_image(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Conv2d { shape, .. } => Conv2dShape { batch: 1, ..*shape }.macs(),
                Op::Linear { in_features, out_features, .. } => *in_features as u64 * *out_features as u64,
                Op::Matmul { desc, .. } => desc.macs_per_outer(),
                _ => 0,
            })
            .sum()
    }
}
