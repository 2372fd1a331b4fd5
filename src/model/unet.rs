//! Builds the op list of diffusers' UNet2DModel from its config. The steps
//! follow `UNet2DModel.forward` and the blocks it is made of (ResnetBlock2D,
//! Attention with `_from_deprecated_attn_block`, Downsample2D, Upsample2D);
//! names are the state-dict names, so loading a checkpoint needs no table.

use super::config::UNetConfig;
use super::graph::{Graph, Op, Pid, Tid};
use crate::kernels::{Conv2dShape, MatmulDesc, Operand};

/// Feature map shape without the batch: (channels, height, width).
#[derive(Clone, Copy, Debug)]
struct Fm {
    t: Tid,
    c: u32,
    h: u32,
    w: u32,
}

struct Builder<'a> {
    cfg: &'a UNetConfig,
    g: Graph,
    /// All time_emb_proj outputs side by side: (B, sum of their widths).
    temb_proj: Tid,
    temb_proj_width: u32,
    /// (weight, bias) of every time_emb_proj, in op order.
    temb_proj_params: Vec<(Pid, Pid)>,
}

impl Builder<'_> {
    fn single(&mut self, name: String, shape: &[usize]) -> Pid {
        let p = self.g.param(name, shape);
        self.g.group(vec![p]);
        p
    }

    fn fm(&mut self, name: String, c: u32, h: u32, w: u32) -> Fm {
        let t = self.g.tensor(name, (c * h * w) as usize);
        Fm { t, c, h, w }
    }

    /// torch.nn.Conv2d with bias, registered as `{prefix}.weight`/`.bias`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        prefix: &str,
        x: Fm,
        cout: u32,
        ksize: u32,
        stride: u32,
        pad: [u32; 4],
        upsample: bool,
        temb: Option<(Tid, u32, u32)>,
        residual: Option<Tid>,
        out_div: f32,
    ) -> Fm {
        let k = ksize as usize;
        let w = self.single(format!("{prefix}.weight"), &[cout as usize, x.c as usize, k, k]);
        let b = self.single(format!("{prefix}.bias"), &[cout as usize]);
        let shape = Conv2dShape { batch: 0, cin: x.c, h: x.h, w: x.w, cout, ksize, stride, pad, upsample };
        let (ho, wo) = shape.out_hw();
        let y = self.fm(prefix.to_string(), cout, ho, wo);
        self.g.ops.push(Op::Conv2d { y: y.t, x: x.t, w: vec![w], b: vec![b], shape, temb, residual, out_div });
        y
    }

    fn conv3(&mut self, prefix: &str, x: Fm, cout: u32) -> Fm {
        self.conv(prefix, x, cout, 3, 1, [1; 4], false, None, None, 1.0)
    }

    fn group_norm(&mut self, prefix: &str, x: Fm, groups: u32, silu: bool) -> Fm {
        let gamma = self.single(format!("{prefix}.weight"), &[x.c as usize]);
        let beta = self.single(format!("{prefix}.bias"), &[x.c as usize]);
        let y = self.fm(prefix.to_string(), x.c, x.h, x.w);
        let stats = self.g.tensor(format!("{prefix}.stats"), (groups * 2) as usize);
        self.g.ops.push(Op::GroupNorm {
            y: y.t,
            stats,
            x: x.t,
            gamma,
            beta,
            channels: x.c,
            hw: x.h * x.w,
            groups,
            eps: self.cfg.norm_eps,
            silu,
        });
        y
    }

    /// ResnetBlock2D (time_embedding_norm "default", pre-norm):
    /// 1. h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))
    /// 2. h = conv2(silu(norm2(h)))          (dropout is the identity)
    /// 3. out = (shortcut(x) + h) / output_scale_factor, shortcut a 1x1 conv
    ///    when the channel count changes.
    fn resnet(&mut self, prefix: &str, x: Fm, cout: u32, out_div: f32) -> Fm {
        let groups = self.cfg.norm_num_groups;
        let h = self.group_norm(&format!("{prefix}.norm1"), x, groups, true);
        // time_emb_proj is evaluated for all resnets at once (see finish()).
        let tw = self.g.param(format!("{prefix}.time_emb_proj.weight"), &[cout as usize, self.cfg.time_embed_dim() as usize]);
        let tb = self.g.param(format!("{prefix}.time_emb_proj.bias"), &[cout as usize]);
        self.temb_proj_params.push((tw, tb));
        let temb = Some((self.temb_proj, 0, self.temb_proj_width));
        self.temb_proj_width += cout;
        let h = self.conv(&format!("{prefix}.conv1"), h, cout, 3, 1, [1; 4], false, temb, None, 1.0);
        let h = self.group_norm(&format!("{prefix}.norm2"), h, groups, true);
        let shortcut = if x.c != cout {
            self.conv(&format!("{prefix}.conv_shortcut"), x, cout, 1, 1, [0; 4], false, None, None, 1.0)
        } else {
            x
        };
        self.conv(&format!("{prefix}.conv2"), h, cout, 3, 1, [1; 4], false, None, Some(shortcut.t), out_div)
    }

    /// Attention over the h*w positions (AttnProcessor2_0 on a deprecated
    /// attention block):
    /// 1. n = group_norm(x)
    /// 2. q, k, v = to_q(n), to_k(n), to_v(n), one 1x1 convolution with the
    ///    three weights stacked; channel c is head c / d, dimension c % d
    /// 3. p = softmax(q^T k / sqrt(d)) per head
    /// 4. o = v p^T
    /// 5. out = (to_out.0(o) + x) / rescale_output_factor
    fn attention(&mut self, prefix: &str, x: Fm, groups: u32, out_div: f32) -> Fm {
        let c = x.c;
        let d = self.cfg.attention_head_dim.unwrap_or(c);
        let heads = c / d;
        let hw = x.h * x.w;
        let n = self.group_norm(&format!("{prefix}.group_norm"), x, groups, false);

        let (cu, ku) = (c as usize, c as usize);
        let ws: Vec<Pid> =
            ["to_q", "to_k", "to_v"].iter().map(|m| self.g.param(format!("{prefix}.{m}.weight"), &[cu, ku])).collect();
        let bs: Vec<Pid> = ["to_q", "to_k", "to_v"].iter().map(|m| self.g.param(format!("{prefix}.{m}.bias"), &[cu])).collect();
        self.g.group(ws.clone());
        self.g.group(bs.clone());
        let shape = Conv2dShape { batch: 0, cin: c, h: x.h, w: x.w, cout: 3 * c, ksize: 1, stride: 1, pad: [0; 4], upsample: false };
        let qkv = self.g.tensor(format!("{prefix}.qkv"), (3 * c * hw) as usize);
        self.g.ops.push(Op::Conv2d { y: qkv, x: n.t, w: ws, b: bs, shape, temb: None, residual: None, out_div: 1.0 });

        // qkv per image is (3, heads, d, hw); scores per image (heads, hw, hw).
        let scores = self.g.tensor(format!("{prefix}.scores"), (heads * hw * hw) as usize);
        let (img, head) = (3 * c * hw, d * hw);
        self.g.ops.push(Op::Matmul {
            c: scores,
            a: qkv,
            b: qkv,
            desc: MatmulDesc {
                m: hw,
                n: hw,
                k: d,
                outer: 0,
                inner: heads,
                // A(i, e) = q[e, i]
                a: Operand { offset: 0, outer_stride: img, inner_stride: head, row_stride: 1, col_stride: hw },
                // B(e, j) = k[e, j]
                b: Operand { offset: c * hw, outer_stride: img, inner_stride: head, row_stride: hw, col_stride: 1 },
                c: Operand { offset: 0, outer_stride: heads * hw * hw, inner_stride: hw * hw, row_stride: hw, col_stride: 1 },
                alpha: 1.0 / (d as f32).sqrt(),
                accumulate: false,
            },
        });
        let probs = self.g.tensor(format!("{prefix}.probs"), (heads * hw * hw) as usize);
        self.g.ops.push(Op::Softmax { y: probs, x: scores, rows: heads * hw, n: hw });
        let o = self.fm(format!("{prefix}.attn"), c, x.h, x.w);
        self.g.ops.push(Op::Matmul {
            c: o.t,
            a: qkv,
            b: probs,
            desc: MatmulDesc {
                m: d,
                n: hw,
                k: hw,
                outer: 0,
                inner: heads,
                // A(e, j) = v[e, j]
                a: Operand { offset: 2 * c * hw, outer_stride: img, inner_stride: head, row_stride: hw, col_stride: 1 },
                // B(j, i) = p[i, j]
                b: Operand { offset: 0, outer_stride: heads * hw * hw, inner_stride: hw * hw, row_stride: 1, col_stride: hw },
                c: Operand { offset: 0, outer_stride: c * hw, inner_stride: head, row_stride: hw, col_stride: 1 },
                alpha: 1.0,
                accumulate: false,
            },
        });
        // to_out.0 is a torch.nn.Linear: its weight is (C, C), not (C, C, 1, 1).
        let w = self.single(format!("{prefix}.to_out.0.weight"), &[cu, cu]);
        let b = self.single(format!("{prefix}.to_out.0.bias"), &[cu]);
        let shape = Conv2dShape { cout: c, ..shape };
        let y = self.fm(format!("{prefix}.to_out.0"), c, x.h, x.w);
        self.g.ops.push(Op::Conv2d { y: y.t, x: o.t, w: vec![w], b: vec![b], shape, temb: None, residual: Some(x.t), out_div });
        y
    }

    fn concat(&mut self, name: String, a: Fm, b: Fm) -> Fm {
        let y = self.fm(name, a.c + b.c, a.h, a.w);
        self.g.ops.push(Op::Concat { y: y.t, a: a.t, b: b.t, ca: a.c, cb: b.c, hw: a.h * a.w });
        y
    }
}

/// The op list of a UNet2DModel with this (validated) config.
pub fn build_graph(cfg: &UNetConfig) -> Graph {
    let c0 = cfg.block_out_channels[0];
    let ted = cfg.time_embed_dim();
    let (h, w) = cfg.sample_hw();
    let mut g = Graph::default();
    let sample = g.tensor("sample", (cfg.in_channels * h * w) as usize);
    let t_sin = g.tensor("time_proj", c0 as usize);
    let temb = g.tensor("time_embedding", ted as usize);
    // Sized in finish(), once every resnet has claimed its slice.
    let temb_proj = g.tensor("time_emb_proj", 0);
    let mut b = Builder { cfg, g, temb_proj, temb_proj_width: 0, temb_proj_params: Vec::new() };
    b.g.sample = sample;
    b.g.t_sin = t_sin;

    // 1. time: sinusoidal projection (on the CPU), then linear_1, SiLU, linear_2.
    let l1w = b.single("time_embedding.linear_1.weight".into(), &[ted as usize, c0 as usize]);
    let l1b = b.single("time_embedding.linear_1.bias".into(), &[ted as usize]);
    let l2w = b.single("time_embedding.linear_2.weight".into(), &[ted as usize, ted as usize]);
    let l2b = b.single("time_embedding.linear_2.bias".into(), &[ted as usize]);
    let t1 = b.g.tensor("time_embedding.linear_1", ted as usize);
    b.g.ops.push(Op::Linear { y: t1, x: t_sin, w: vec![l1w], b: vec![l1b], in_features: c0, out_features: ted, silu_input: false });
    b.g.ops.push(Op::Linear { y: temb, x: t1, w: vec![l2w], b: vec![l2b], in_features: ted, out_features: ted, silu_input: true });
    // Every time_emb_proj(silu(temb)), as one stacked linear.
    let temb_op = b.g.ops.len();
    b.g.ops.push(Op::Linear { y: temb_proj, x: temb, w: vec![], b: vec![], in_features: ted, out_features: 0, silu_input: true });

    // 2. pre-process
    let x = Fm { t: sample, c: cfg.in_channels, h, w };
    let mut x = b.conv3("conv_in", x, c0);

    // 3. down
    let mut skips = vec![x];
    let n = cfg.block_out_channels.len();
    for (i, ty) in cfg.down_block_types.iter().enumerate() {
        let cout = cfg.block_out_channels[i];
        for j in 0..cfg.layers_per_block {
            x = b.resnet(&format!("down_blocks.{i}.resnets.{j}"), x, cout, 1.0);
            if ty == "AttnDownBlock2D" {
                x = b.attention(&format!("down_blocks.{i}.attentions.{j}"), x, cfg.norm_num_groups, 1.0);
            }
            skips.push(x);
        }
        if i + 1 < n {
            // Downsample2D: with padding 0, pad right and bottom by one first.
            let pad = if cfg.downsample_padding == 0 { [0, 0, 1, 1] } else { [1; 4] };
            x = b.conv(&format!("down_blocks.{i}.downsamplers.0.conv"), x, cout, 3, 2, pad, false, None, None, 1.0);
            skips.push(x);
        }
    }

    // 4. mid (UNetMidBlock2D: resnet, attention unless add_attention is
    //    false, resnet); none at all when mid_block_type is null.
    if cfg.has_mid_block() {
        let s = cfg.mid_block_scale_factor;
        let cmid = cfg.block_out_channels[n - 1];
        x = b.resnet("mid_block.resnets.0", x, cmid, s);
        if cfg.has_mid_attention() {
            let groups = cfg.attn_norm_num_groups.unwrap_or(cfg.norm_num_groups);
            x = b.attention("mid_block.attentions.0", x, groups, s);
        }
        x = b.resnet("mid_block.resnets.1", x, cmid, s);
    }

    // 5. up
    for (i, ty) in cfg.up_block_types.iter().enumerate() {
        let cout = cfg.block_out_channels[n - 1 - i];
        for j in 0..=cfg.layers_per_block {
            let skip = skips.pop().expect("a skip per up-block resnet");
            x = b.concat(format!("up_blocks.{i}.cat.{j}"), x, skip);
            x = b.resnet(&format!("up_blocks.{i}.resnets.{j}"), x, cout, 1.0);
            if ty == "AttnUpBlock2D" {
                x = b.attention(&format!("up_blocks.{i}.attentions.{j}"), x, cfg.norm_num_groups, 1.0);
            }
        }
        if i + 1 < n {
            // Upsample2D: nearest 2x, then a 3x3 convolution (fused).
            x = b.conv(&format!("up_blocks.{i}.upsamplers.0.conv"), x, cout, 3, 1, [1; 4], true, None, None, 1.0);
        }
    }

    // 6. post-process
    let x = b.group_norm("conv_norm_out", x, cfg.norm_num_groups, true);
    let out = b.conv3("conv_out", x, cfg.out_channels);
    b.g.output = out.t;

    // The stacked time_emb_proj, now that its width is known.
    let (ws, bs): (Vec<Pid>, Vec<Pid>) = b.temb_proj_params.iter().cloned().unzip();
    b.g.group(ws.clone());
    b.g.group(bs.clone());
    let width = b.temb_proj_width;
    b.g.tensors[temb_proj].per_image = width as usize;
    b.g.ops[temb_op] = Op::Linear { y: temb_proj, x: temb, w: ws, b: bs, in_features: ted, out_features: width, silu_input: true };
    // Re-point every conv1 at the stride of the stacked tensor.
    for op in &mut b.g.ops {
        if let Op::Conv2d { temb: Some((t, stride, _)), .. } = op
            && *t == temb_proj
        {
            *stride = width;
        }
    }
    b.g
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cifar10_32_has_the_seed_models_size() {
        let cfg = UNetConfig::builtin("cifar10-32").unwrap();
        let g = build_graph(&cfg);
        // google/ddpm-cifar10-32 has 35,746,307 parameters.
        assert_eq!(g.num_parameters(), 35_746_307);
        assert_eq!(g.params.len(), g.groups.iter().map(|v| v.len()).sum::<usize>());
        // 12.4 GFLOP per image forward (2 flops per multiply-add), as measured for PyTorch.
        let gflop = 2.0 * g.macs_per_image() as f64 / 1e9;
        assert!((gflop - 12.4).abs() < 0.3, "{gflop}");
    }
}
