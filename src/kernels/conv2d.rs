//! 2-D convolution as implicit GEMM, with the UNet's epilogues fused in:
//! bias, the per-image time-embedding add, the residual add and the output
//! scale, plus nearest 2x upsampling of the input (Upsample2D).
//!
//! Three kernels compute exactly this (all tested against
//! `reference::conv2d`); [`kernel_for`] picks one per adapter family:
//! - CPU family (lavapipe): `conv2d_forward_subgroup.wgsl`, lanes over output
//!   channels, a pixel block shared by the subgroup, fully unrolled code
//!   generated here (`subgroup_key`). Needs subgroups of exactly 8 lanes.
//! - GPU family: `conv2d_forward_tiled.wgsl`, 64 x 64 workgroup-memory tiles;
//!   where a convolution has too few tiles to fill a GPU (small batches and
//!   images), the same kernel with its K loop split over workgroups, then
//!   `conv2d_split_sum.wgsl` ([`tiled_split_for`]).
//! - Fallback (no fitting subgroups): `conv2d_forward.wgsl`, the generic kernel.
//!
//! Measured with `cargo bench --bench conv -- --cpu-time` on the 2-core
//! machine (lavapipe, Mesa 22.3.6), GFLOP/s, generic -> CPU family: 3x3 at
//! 16x16 and 32x32 0.5 -> 26-29; upsampling 3x3 0.5 -> 40-46; 1x1 0.3-0.5 ->
//! 12-13; 8x8 and 4x4 3x3 at batch 16 -> 22-26 (at batch 1 these are bound by
//! loading the weights: 7-19).

use crate::gpu::{Dispatch, Dtype, Gpu, KernelFamily, PipelineKey, TensorView};
use anyhow::{Result, ensure};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dShape {
    pub batch: u32,
    pub cin: u32,
    /// Input height and width, before any upsampling.
    pub h: u32,
    pub w: u32,
    pub cout: u32,
    pub ksize: u32,
    pub stride: u32,
    /// Zero padding: top, left, bottom, right.
    pub pad: [u32; 4],
    /// Read the input as if nearest-upsampled 2x.
    pub upsample: bool,
}

impl Conv2dShape {
    /// A k x k convolution with stride 1 and "same" padding.
    pub fn same(batch: u32, cin: u32, h: u32, w: u32, cout: u32, ksize: u32) -> Conv2dShape {
        let p = ksize / 2;
        Conv2dShape { batch, cin, h, w, cout, ksize, stride: 1, pad: [p; 4], upsample: false }
    }

    /// Input size after the optional upsampling.
    pub fn in_hw(&self) -> (u32, u32) {
        let s = self.upsample as u32;
        (self.h << s, self.w << s)
    }

    /// Output height and width.
    pub fn out_hw(&self) -> (u32, u32) {
        let (hi, wi) = self.in_hw();
        let ho = (hi + self.pad[0] + self.pad[2] - self.ksize) / self.stride + 1;
        let wo = (wi + self.pad[1] + self.pad[3] - self.ksize) / self.stride + 1;
        (ho, wo)
    }

    pub fn in_len(&self) -> usize {
        (self.batch * self.cin * self.h * self.w) as usize
    }

    pub fn out_len(&self) -> usize {
        let (ho, wo) = self.out_hw();
        (self.batch * self.cout * ho * wo) as usize
    }

    pub fn weight_len(&self) -> usize {
        (self.cout * self.cin * self.ksize * self.ksize) as usize
    }

    /// Multiply-adds of one forward pass.
    pub fn macs(&self) -> u64 {
        self.out_len() as u64 * (self.cin * self.ksize * self.ksize) as u64
    }
}

/// What is added to the convolution before it is stored:
/// y (+)= (conv + bias + temb[b, temb_offset + co] + residual) / out_div.
#[derive(Clone, Copy, Default)]
pub struct Conv2dEpilogue<'a> {
    pub bias: Option<&'a TensorView>,
    /// (temb (B, stride), stride, offset)
    pub temb: Option<(&'a TensorView, u32, u32)>,
    pub residual: Option<&'a TensorView>,
    /// 1 unless the block has an output_scale_factor.
    pub out_div: f32,
    /// Add to y instead of writing it (the input gradient, computed as a
    /// forward convolution by [`super::conv2d_backward_input`], summed into
    /// a gradient other readers also feed).
    pub accumulate: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    ksize: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    upsample: u32,
    temb_stride: u32,
    temb_offset: u32,
    flags: u32,
    out_div: f32,
}

/// Which kernel computes a convolution. All variants compute the same thing
/// (same epilogue, padding, stride and upsampling) and are tested against the
/// same CPU reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conv2dKernel {
    /// conv2d_forward.wgsl: 8 channels x 4 pixels per invocation, any shape,
    /// any adapter. The fallback.
    Generic,
    /// conv2d_forward_subgroup.wgsl, for software adapters (the CPU family).
    Subgroup(SubgroupTile),
    /// conv2d_forward_tiled.wgsl, workgroup-memory tiles for hardware GPUs.
    Tiled,
    /// The tiled kernel with its K loop (cin x k x k) cut into this many
    /// parts, one workgroup each, whose partial tiles conv2d_split_sum.wgsl
    /// adds up with the epilogue: two dispatches and
    /// [`Conv2dKernel::scratch_len`] values of scratch.
    TiledSplit(u32),
}

/// The block one subgroup of the CPU-family kernel computes: each of its 8
/// lanes holds `tm` output channels (co0 + lane + 8 i) for the same `nb`
/// images x `ph` x `pw` output pixels. Its accumulators, `tm * nb * ph * pw`
/// per lane, are unrolled into the shader, so the block size trades load
/// reuse against code size (and pipeline build time).
///
/// With `winograd` (3x3, stride 1, no upsampling, even `ph` and `pw`:
/// [`winograd_fits`]) each 2x2 output tile takes the Winograd F(2x2, 3x3)
/// form (16 multiplies and 28 adds per input channel and output channel
/// instead of 36 multiply-adds); the block and its accumulators are the same.
///
/// With `groups_inner` the grid walks every channel group of a block before
/// the next block (grid x = channel groups, y = blocks), so that the block's
/// input window stays in the core's cache while each group reads it; else
/// every block of one channel group first (x = blocks, y = groups), which
/// keeps the group's weights there instead ([`groups_inner_pays`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubgroupTile {
    /// Lanes a workgroup (one subgroup): 8, or 16 where the adapter's
    /// subgroups hold 16 ([`super::conv_lanes`]).
    pub lanes: u32,
    pub tm: u32,
    pub nb: u32,
    pub ph: u32,
    pub pw: u32,
    pub winograd: bool,
    pub groups_inner: bool,
}

impl SubgroupTile {
    /// A block computed directly (no Winograd form), blocks walked first.
    pub const fn new(tm: u32, nb: u32, ph: u32, pw: u32) -> SubgroupTile {
        SubgroupTile { lanes: 8, tm, nb, ph, pw, winograd: false, groups_inner: false }
    }

    /// The same block on workgroups of `lanes` lanes (8 or 16).
    pub const fn with_lanes(self, lanes: u32) -> SubgroupTile {
        SubgroupTile { lanes, ..self }
    }

    /// The same block in the Winograd form (valid where [`winograd_fits`]).
    pub const fn in_winograd_form(self) -> SubgroupTile {
        SubgroupTile { winograd: true, ..self }
    }

    /// The same block with the grid walking a block's channel groups first.
    pub const fn with_groups_inner(self) -> SubgroupTile {
        SubgroupTile { groups_inner: true, ..self }
    }

    pub fn accumulators(&self) -> u32 {
        self.tm * self.nb * self.ph * self.pw
    }

    /// Groups of `lanes` x `tm` output channels (one workgroup each per
    /// block) for a layer of `cout` channels.
    pub fn channel_groups(&self, cout: u32) -> u32 {
        cout.div_ceil(self.lanes * self.tm)
    }
}

impl Conv2dKernel {
    /// "generic", "tiled", "tiled-split4" (4 parts), "sg4x1x16x16" (tm x nb
    /// x ph x pw), "sgw4x1x8x16" (the same in Winograd form), either with a
    /// "g" after it ("sgw4x1x8x16g": channel groups inner), for the
    /// benchmark.
    pub fn parse(s: &str) -> Option<Conv2dKernel> {
        match s {
            "generic" => return Some(Conv2dKernel::Generic),
            "tiled" => return Some(Conv2dKernel::Tiled),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("tiled-split") {
            return n.parse().ok().filter(|&n| n > 1).map(Conv2dKernel::TiledSplit);
        }
        let rest = s.strip_prefix("sg")?;
        let (winograd, rest) = match rest.strip_prefix('w') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (lanes, rest) = match rest.strip_suffix("l16") {
            Some(r) => (16, r),
            None => (8, rest),
        };
        let (groups_inner, rest) = match rest.strip_suffix('g') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let d: Vec<u32> = rest.split('x').map(|v| v.parse().ok()).collect::<Option<_>>()?;
        match d[..] {
            [tm, nb, ph, pw] if tm * nb * ph * pw > 0 => {
                Some(Conv2dKernel::Subgroup(SubgroupTile { lanes, tm, nb, ph, pw, winograd, groups_inner }))
            }
            _ => None,
        }
    }

    /// f32 values of scratch this kernel needs for `s` (the split tiled
    /// kernel's partial tiles: parts x cout x batch x ho x wo), 0 for none.
    pub fn scratch_len(&self, s: &Conv2dShape) -> usize {
        match self {
            Conv2dKernel::TiledSplit(n) => *n as usize * s.out_len(),
            _ => 0,
        }
    }

    pub fn name(&self) -> String {
        match self {
            Conv2dKernel::Generic => "generic".into(),
            Conv2dKernel::Tiled => "tiled".into(),
            Conv2dKernel::TiledSplit(n) => format!("tiled-split{n}"),
            Conv2dKernel::Subgroup(t) => {
                let (w, g) = (if t.winograd { "w" } else { "" }, if t.groups_inner { "g" } else { "" });
                let l = if t.lanes == 8 { String::new() } else { format!("l{}", t.lanes) };
                format!("sg{w}{}x{}x{}x{}{g}{l}", t.tm, t.nb, t.ph, t.pw)
            }
        }
    }
}


/// The fastest kernel of `family` for `s` on this adapter.
pub fn kernel_for(gpu: &Gpu, family: KernelFamily, s: &Conv2dShape) -> Conv2dKernel {
    match family {
        KernelFamily::Cpu if super::subgroups_of_8(gpu) => Conv2dKernel::Subgroup(subgroup_tile_for(s, super::conv_lanes(gpu))),
        KernelFamily::Cpu => Conv2dKernel::Generic,
        KernelFamily::Gpu => match tiled_split_for(s) {
            1 => Conv2dKernel::Tiled,
            n => Conv2dKernel::TiledSplit(n),
        },
    }
}

/// Workgroups the GPU family's split conv aims for: about one per streaming
/// multiprocessor of a large GPU (an H200 has 132), a few per SM of a laptop's.
const TILED_SPLIT_TARGET: u32 = 128;

/// K steps (of 16) each part of a split keeps at least, so that the partial
/// tiles' extra traffic stays small against the work.
const TILED_SPLIT_MIN_STEPS: u32 = 8;

/// Parts to cut the tiled kernel's K loop into for `s` (1: no split). A
/// workgroup runs its K steps one after another, each a load of both tiles
/// and two barriers, so a convolution with few 64 x 64 output tiles runs
/// for the length of its K loop whatever the GPU: at batch 1 cifar10-32's
/// 8x8 and 4x4 layers make 4 workgroups of 144-288 steps. Splitting K gives
/// enough workgroups to fill the GPU (about 128), each with at
/// least 8 steps, at most 16 parts (or
/// PETAL_CONV_SPLIT_MAX: 1 turns splitting off, for tools/bench/gpu.sh's
/// comparison); a power of 2, so that few pipelines are built. Training
/// batches rarely split (cifar10-32 at batch 64: only the 4x4 layers, 2 ways).
pub fn tiled_split_for(s: &Conv2dShape) -> u32 {
    let max = std::env::var("PETAL_CONV_SPLIT_MAX").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(16);
    tiled_split_within(s, max)
}

/// [`tiled_split_for`] with at most `max` parts (clamped to 1..=64).
pub fn tiled_split_within(s: &Conv2dShape, max: u32) -> u32 {
    let max = max.clamp(1, 64);
    let (ho, wo) = s.out_hw();
    let tiles = (s.batch * ho * wo).div_ceil(TILED_BN) * s.cout.div_ceil(TILED_BM);
    let steps = (s.cin * s.ksize * s.ksize).div_ceil(16);
    let mut n = 1;
    while n * 2 <= max && tiles * n * 2 <= TILED_SPLIT_TARGET && steps / (n * 2) >= TILED_SPLIT_MIN_STEPS {
        n *= 2;
    }
    n
}

/// Accumulators per lane of a CPU-family 3x3 conv block (tm x pixels); 1x1
/// blocks and narrow layers keep 256 ([`SUBGROUP_ACCUMULATORS_SMALL`]). On lavapipe (LLVM 15, 2
/// cores) 512 runs the 3x3 convolutions of cifar10-32 at batch 16 8-12%
/// faster than 256 (`cargo bench --bench conv -- k3 --cpu-time`: 32x32
/// 128->128 64-67 -> 71-73 GFLOP/s, 16x16 256->256 67-68 -> 73-75) and 1024
/// no faster than 512. LLVM's build time grows faster than the block, though:
/// with Mesa's shader cache off, cifar10-32's first batch-1 pass (its
/// pipelines built and run once) takes 53 s at 512 against 26 s at 256 (Mesa
/// keeps built pipelines on disk, so later runs start at once); see
/// [`NARROW_COUT`] for the layers where that does not pay. Measured in
/// BENCHMARKS.md.
pub const SUBGROUP_ACCUMULATORS: u32 = 512;

/// Accumulators per lane of a CPU-family 1x1 conv block, and of every block
/// of a narrow layer (cout <= [`NARROW_COUT`]): for 1x1, 4 channels x 64
/// pixels measured best (BENCHMARKS.md, "Every load four values wide").
pub const SUBGROUP_ACCUMULATORS_SMALL: u32 = 256;

/// Output channels up to which a 3x3 convolution is narrow (the small
/// model's 32-64): its blocks keep [`SUBGROUP_ACCUMULATORS_SMALL`]. With 512
/// its convolutions ran about as fast over a forward pass (`benches/conv.rs
/// --config small --batch 16 --cpu-time`: 32x32 and 16x16 shapes 7-15%
/// slower, 8x8 and 4x4 ones 2-17% faster), and the small model's first
/// batch-16 pass, Mesa's shader cache off, took 118 s against 36 s.
pub const NARROW_COUT: u32 = 64;

/// The CPU-family block for a shape. What it balances (per input channel,
/// per subgroup): loading 9 tm weights per lane and the window of the pixel
/// block (each load a loop over the 8 lanes) against 9 tm x block vector
/// multiply-adds; so blocks want many pixels (weights are reused by every
/// pixel) and many channels (inputs by every channel), up to
/// [`SUBGROUP_ACCUMULATORS`] per lane, past which pipeline build time grows
/// faster than the reuse pays. See benches/conv.rs.
pub fn subgroup_tile_for(s: &Conv2dShape, lanes: u32) -> SubgroupTile {
    let (ho, wo) = s.out_hw();
    // With upsampling, blocks start on even output rows and columns so that
    // the window's source rows and columns are known at compile time.
    let even = |v: u32| if s.upsample { v.next_multiple_of(2) } else { v };
    // (budget, block rows, block columns, pixels wanted), measured with
    // benches/conv.rs at batch 16 (BENCHMARKS.md):
    // - 1x1 reuses an input value only across channels: 4 channels x 64
    //   pixels (8 x 32, 16 x 16 and 32 x 8 no better).
    // - An upsampled 3x3 convolution reads a window of half the block's
    //   side, so the budget goes to pixels: 2 channels x 16x16 (109 GFLOP/s
    //   against 103-106 for 1 x 16x16).
    // - Stride 2 reads a window twice the block's side: 8 channels x 8x8
    //   outputs (+6-10% over 4 x 8x16).
    // - Other 3x3: 4 channels x 8x16 (73-77 GFLOP/s; 2 x 16x16 and 4 x 2
    //   images of 8x8 within 3% of it, 8 x 8x8 68-70).
    // - Narrow layers ([`NARROW_COUT`]): the small budget, as 4 channels x
    //   8x8 or 1 x 16x16 upsampled.
    let narrow = s.cout <= NARROW_COUT;
    let wide_budget = if narrow { SUBGROUP_ACCUMULATORS_SMALL } else { SUBGROUP_ACCUMULATORS };
    let (budget, ph_max, pw_max, pixels_wanted) = match (s.ksize, s.upsample, s.stride) {
        (1, _, _) => (SUBGROUP_ACCUMULATORS_SMALL, 8, 8, 64),
        (_, true, _) => (wide_budget, 16, 16, 256),
        // 16 lanes hold a narrow layer's channels two a lane, so the whole
        // budget goes to 16x16 pixels: 2 channels x 16x16 ran 10-40% faster
        // than 2 x 8x16 or 4 x 8x8 on the small model's 16x16 and 32x32 3x3
        // layers (`benches/conv.rs " k3" --config small --batch 64`,
        // BENCHMARKS.md); 8x8 images keep 4 x 8x8. Up to 96 channels (the
        // input gradients of the small model's 96-channel layers, run as
        // 32->96 and 64->96 convolutions): 1.15-1.3x faster than 4 x 8x16
        // (`--op dx ... --variants cpu,fsgw2x1x16x16l16`, three runs); at 128
        // 4 x 8x16 stays ahead.
        (_, _, 1) if s.cout <= 96 && lanes == 16 && ho >= 16 && wo >= 16 && s.cout >= 16 => (SUBGROUP_ACCUMULATORS, 16, 16, 256),
        _ if narrow => (SUBGROUP_ACCUMULATORS_SMALL, 8, 8, 64),
        (_, _, 2) => (SUBGROUP_ACCUMULATORS, 8, 8, 64),
        _ => (SUBGROUP_ACCUMULATORS, 8, 16, 128),
    };
    let ph = even(ho.min(ph_max));
    let pw = even(wo.min(pw_max));
    // Small images: several in a block (blocks of 4 x 8 images of 4x4, 2 of
    // 8x8 at batch 16), so each weight is loaded once for more pixels.
    let nb = (pixels_wanted / (ph * pw)).clamp(1, s.batch.max(1)).min(16);
    let pixels = nb * ph * pw;
    let tm = (budget / pixels).clamp(1, 16).min(s.cout.div_ceil(lanes));
    let mut t = SubgroupTile::new(tm, nb, ph, pw).with_lanes(lanes);
    // Few channels for the lanes (16 lanes over 32 channels: 2 a lane):
    // the budget the channels leave goes to wider, then taller blocks.
    while lanes > 8 && t.accumulators() * 2 <= budget && (t.pw < wo || t.ph < ho) {
        if t.pw < wo && (t.pw <= t.ph || t.ph >= ho) {
            t.pw = even((t.pw * 2).min(wo));
        } else {
            t.ph = even((t.ph * 2).min(ho));
        }
    }
    // Wide windows (stride 2) generate more code per accumulator: shrink
    // until the shader fits.
    while subgroup_key(s, &t, false).is_err() {
        let before = t;
        if t.tm > 1 {
            t.tm = t.tm.div_ceil(2);
        } else if t.nb > 1 {
            t.nb = t.nb.div_ceil(2);
        } else if t.ph >= t.pw {
            t.ph = even(t.ph.div_ceil(2));
        } else {
            t.pw = even(t.pw.div_ceil(2));
        }
        if t == before {
            break;
        }
    }
    // The Winograd form wherever it applies: 1.2-1.4x the direct form's
    // speed on the UNet's 3x3 convolutions (benches/conv.rs, BENCHMARKS.md).
    // PETAL_WINOGRAD=0 keeps the direct form (super::winograd_enabled).
    let w = t.in_winograd_form();
    let t = if super::winograd_enabled() && winograd_fits(s, &w) && subgroup_key(s, &w, false).is_ok() { w } else { t };
    if groups_inner_pays(s, &t) { t.with_groups_inner() } else { t }
}

/// Whether block `t` should walk a block's channel groups first
/// ([`SubgroupTile::groups_inner`]): where there are at least 4 groups of
/// 8 `tm` output channels and a block is smaller than an output image.
/// Measured with benches/conv.rs on lavapipe (BENCHMARKS.md): cifar10-32's
/// 3x3 layers at 16x16 and 32x32 ran 1.0-1.35x faster at batch 16 (two
/// runs) and its attention's q, k, v projection 1.3-1.8x; blocks of whole
/// images (8x8 and 4x4 layers), whose windows are contiguous planes, were
/// level or 5-20% slower, and with 1 or 2 groups there is little window to
/// share. Blocks first re-reads each window once per group, groups first
/// each group's weights once per block; a window's rows are short runs far
/// apart, which the prefetcher serves worse than a lane's run of weights.
pub fn groups_inner_pays(s: &Conv2dShape, t: &SubgroupTile) -> bool {
    let (ho, wo) = s.out_hw();
    t.channel_groups(s.cout) >= GROUPS_INNER_MIN && t.ph * t.pw < ho * wo
}

/// Channel groups from which [`groups_inner_pays`].
const GROUPS_INNER_MIN: u32 = 4;

/// Whether block `t` can take the Winograd F(2x2, 3x3) form for `s`: a 3x3
/// kernel at stride 1 without upsampling, and blocks of whole 2x2 tiles
/// (even `ph` and `pw`; padding and image edges are the direct form's, read
/// as zeros and guarded at the store).
pub fn winograd_fits(s: &Conv2dShape, t: &SubgroupTile) -> bool {
    s.ksize == 3 && s.stride == 1 && !s.upsample && t.ph.is_multiple_of(2) && t.pw.is_multiple_of(2)
}

/// y (B, cout, ho, wo) = conv(x (B, cin, h, w), w (cout, cin, k, k)) + epilogue.
/// y is written (=), or accumulated with the epilogue's `accumulate`. The
/// kernel is the best of the adapter's family. w may be stored as f32, f16 or
/// int8 with cout scales ([`Dtype`]); the kernel reads it through that
/// format's snippet and computes in f32. One dispatch, or two where the GPU
/// family splits the reduction ([`tiled_split_for`]): then `scratch` must
/// hold [`conv2d_forward_scratch_len`] f32 values (overwritten) and share no
/// buffer with the operands. Errors: operands whose sizes do not match `s`,
/// missing or too small scratch, an activation type the kernels do not take,
/// a kernel the adapter cannot build.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward(
    gpu: &Gpu,
    label: &str,
    y: &TensorView,
    x: &TensorView,
    w: &TensorView,
    s: &Conv2dShape,
    epi: &Conv2dEpilogue,
    scratch: Option<&TensorView>,
) -> Result<Vec<Dispatch>> {
    conv2d_forward_with(gpu, kernel_for(gpu, gpu.family, s), label, y, x, w, s, epi, scratch)
}

/// Scratch (f32 elements) [`conv2d_forward`] needs for `s` on this adapter;
/// 0 means none (pass `None`).
pub fn conv2d_forward_scratch_len(gpu: &Gpu, s: &Conv2dShape) -> usize {
    kernel_for(gpu, gpu.family, s).scratch_len(s)
}

/// [`conv2d_forward`] with the kernel chosen by the caller (tests, benchmark).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_with(
    gpu: &Gpu,
    kernel: Conv2dKernel,
    label: &str,
    y: &TensorView,
    x: &TensorView,
    w: &TensorView,
    s: &Conv2dShape,
    epi: &Conv2dEpilogue,
    scratch: Option<&TensorView>,
) -> Result<Vec<Dispatch>> {
    let (ho, wo) = s.out_hw();
    ensure!(x.len == s.in_len(), "{label}: input has {} values, shape wants {}", x.len, s.in_len());
    ensure!(y.len == s.out_len(), "{label}: output has {} values, shape wants {}", y.len, s.out_len());
    ensure!(w.len == s.weight_len(), "{label}: weight has {} values, shape wants {}", w.len, s.weight_len());
    if let Dtype::I8 { rows } = w.dtype {
        ensure!(rows == s.cout, "{label}: int8 weight has {rows} scales for {} output channels", s.cout);
    }
    if let Some(r) = epi.residual {
        ensure!(r.len == y.len, "{label}: residual does not match the output");
    }
    if let Some(b) = epi.bias {
        ensure!(b.len >= s.cout as usize, "{label}: bias has {} values for {} channels", b.len, s.cout);
    }
    if let Some((t, stride, offset)) = epi.temb {
        // The kernels read temb[b * stride + offset + co] for every image b
        // and channel co (they run without runtime bounds checks).
        let end = (s.batch as usize - 1) * stride as usize + offset as usize + s.cout as usize;
        ensure!(s.batch > 0 && t.len >= end, "{label}: time embedding has {} values, the epilogue reads {end}", t.len);
    }
    let flags = epi.bias.is_some() as u32
        | (epi.temb.is_some() as u32) << 1
        | (epi.residual.is_some() as u32) << 2
        | (epi.accumulate as u32) << 3;
    let params = Params {
        batch: s.batch,
        cin: s.cin,
        h: s.h,
        w: s.w,
        cout: s.cout,
        ho,
        wo,
        ksize: s.ksize,
        stride: s.stride,
        pad_top: s.pad[0],
        pad_left: s.pad[1],
        upsample: s.upsample as u32,
        temb_stride: epi.temb.map_or(0, |t| t.1),
        temb_offset: epi.temb.map_or(0, |t| t.2),
        flags,
        out_div: if epi.out_div == 0.0 { 1.0 } else { epi.out_div },
    };
    let dummy = &gpu.dummy;
    let bias = epi.bias.unwrap_or(dummy);
    let temb = epi.temb.map_or(dummy, |t| t.0);
    let residual = epi.residual.unwrap_or(dummy);
    let buffers = [x, w, bias, temb, residual, y];
    ensure!(temb.dtype == Dtype::F32, "{label}: the time embedding must be f32");
    // The element types of the activations (f32, or f16 where the adapter has SHADER_F16).
    // y and the residual are bound as vec4s where the subgroup kernel stores
    // four pixels at a time (its EPI_V); the others store one.
    let acts_x = |key: PipelineKey, x_t: &'static str, four: bool| -> Result<PipelineKey> {
        Ok(key
            .define("X_T", x_t)
            .define("R_T", super::elem(super::act_type(label, "residual", residual)?, four))
            .define("Y_T", super::elem(super::act_type(label, "output", y)?, four)))
    };
    let acts = |key: PipelineKey| -> Result<PipelineKey> {
        acts_x(key.define("EPI_V", "f32"), super::act_type(label, "input", x)?, false)
    };
    match kernel {
        Conv2dKernel::Generic => {
            let tm = 8;
            let key = acts(crate::shaders::key("conv2d_forward").define("TM", tm).define("WEIGHTS", w.dtype.name()))?;
            let blocks = s.batch * (ho * wo).div_ceil(4);
            Ok(vec![gpu.dispatch(label, &key, &params, &buffers, [blocks.div_ceil(64), s.cout.div_ceil(tm), 1])?])
        }
        Conv2dKernel::Subgroup(t) => {
            super::ensure_lanes(gpu, label, t.lanes)?;
            // The tile was sized with the scalar window; should the vec4 one
            // not fit the source limit, the scalar one does.
            let mut vec4 = x.dtype == Dtype::F32 && window_vec4(s, &t);
            let key = match subgroup_key(s, &t, vec4) {
                Ok(key) => key,
                Err(_) if vec4 => {
                    vec4 = false;
                    subgroup_key(s, &t, false).map_err(|e| anyhow::anyhow!("{label}: {e}"))?
                }
                Err(e) => return Err(anyhow::anyhow!("{label}: {e}")),
            };
            // x is bound as array<vec4<f32>> when the window is read in groups of 4.
            let x_t = if vec4 { "vec4<f32>" } else { super::act_type(label, "input", x)? };
            let (w, weights) = super::conv_weights(w, s.ksize == 3 || s.ksize == 4 || ci_step(s) == 4);
            let key = acts_x(key.define("WEIGHTS", weights), x_t, stores_vec4(s, &t))?;
            let (block_axis, group_axis) = if t.groups_inner { ("y", "x") } else { ("x", "y") };
            let key = key.define("BLOCK_AXIS", block_axis).define("GROUP_AXIS", group_axis);
            let blocks = s.batch.div_ceil(t.nb) * ho.div_ceil(t.ph) * wo.div_ceil(t.pw);
            let groups = t.channel_groups(s.cout);
            let grid = if t.groups_inner { [groups, blocks, 1] } else { [blocks, groups, 1] };
            let buffers = [x, &w, bias, temb, residual, y];
            Ok(vec![gpu.dispatch(label, &key, &params, &buffers, grid)?])
        }
        Conv2dKernel::Tiled | Conv2dKernel::TiledSplit(_) => {
            let parts = if let Conv2dKernel::TiledSplit(n) = kernel { n } else { 1 };
            ensure!(parts >= 1, "{label}: a split into {parts} parts");
            let key = acts(
                crate::shaders::key("conv2d_forward_tiled")
                    .define("K", s.ksize)
                    .define("WEIGHTS", w.dtype.name())
                    .define("SPLIT", parts),
            )?;
            let n = s.batch * ho * wo;
            let grid = [n.div_ceil(TILED_BN), s.cout.div_ceil(TILED_BM), parts];
            if parts == 1 {
                let key = key.define("PARTIAL", "fn put_partial(i: u32, v: f32) {}");
                return Ok(vec![gpu.dispatch(label, &key, &params, &buffers, grid)?]);
            }
            // Partial tiles into scratch, then their sum with the epilogue.
            let need = kernel.scratch_len(s);
            let sc = scratch.ok_or_else(|| anyhow::anyhow!("{label}: needs {need} values of scratch"))?;
            ensure!(sc.dtype == Dtype::F32, "{label}: scratch is {}, the partial sums need f32", sc.dtype.name());
            ensure!(sc.len >= need, "{label}: scratch has {} values, needs {need}", sc.len);
            for (what, t) in [("input", x), ("weight", w), ("output", y), ("residual", residual), ("bias", bias), ("time embedding", temb)] {
                ensure!(!sc.same_buffer(t), "{label}: scratch must not share the {what}'s buffer");
            }
            let partial = sc.clone_with_len(need);
            let key = key.define(
                "PARTIAL",
                "@group(0) @binding(7) var<storage, read_write> partial: array<f32>;\n\
                 fn put_partial(i: u32, v: f32) { partial[i] = v; }",
            );
            let mut buffers = buffers.to_vec();
            buffers.push(&partial);
            let parts_dispatch = gpu.dispatch(label, &key, &params, &buffers, grid)?;
            let key = crate::shaders::key("conv2d_split_sum")
                .define("SPLIT", parts)
                .define("EPI_V", "f32")
                .define("R_T", super::act_type(label, "residual", residual)?)
                .define("Y_T", super::act_type(label, "output", y)?);
            let sum = gpu.dispatch_bindings(
                label,
                &key,
                &params,
                &[(1, &partial), (3, bias), (4, temb), (5, residual), (6, y)],
                crate::gpu::grid_1d((s.out_len() as u32).div_ceil(256)),
            )?;
            Ok(vec![parts_dispatch, sum])
        }
    }
}

/// Output channels and pixels per workgroup of conv2d_forward_tiled.wgsl.
const TILED_BM: u32 = 64;
const TILED_BN: u32 = 64;

/// How the subgroup kernel's window units are laid out: one value a unit,
/// or with `vec4` groups of 4 columns (column cs is component (cshift + cs)
/// % 4 of group (cshift + cs) / 4); `ncs` window columns, `ngs` groups a row.
struct WindowGroups {
    lanes: u32,
    vec4: bool,
    ncs: u32,
    ngs: u32,
    cshift: u32,
}

/// The LOAD lines of the window's units for one input channel: lane l's
/// units `v{i}{suffix}` (i < q) at channel offset `xo` (a WGSL expression).
fn window_loads(q: u32, vec4: bool, suffix: &str, xo: &str) -> String {
    use std::fmt::Write;
    let mut load = String::new();
    for i in 0..q {
        if vec4 {
            let _ = writeln!(load, "        let v{i}{suffix} = select(vec4<f32>(), x[eo{i} + ({xo}) / 4u], ok{i});");
        } else {
            let _ = writeln!(load, "        let v{i}{suffix} = select(0.0, f32(x[eo{i} + {xo}]), ok{i});");
        }
    }
    load
}

/// The WGSL expression of window value (row, column cs), row = n nrs + rs,
/// from the units `v*{suffix}` that [`window_loads`] loaded, on every lane.
fn window_value(g: &WindowGroups, row: u32, cs: u32, suffix: &str) -> String {
    if g.vec4 {
        let u = row * g.ngs + (g.cshift + cs) / 4;
        let c = ["x", "y", "z", "w"][((g.cshift + cs) % 4) as usize];
        format!("subgroupBroadcast(v{}{suffix}.{c}, {}u)", u / g.lanes, u % g.lanes)
    } else {
        let e = row * g.ncs + cs;
        format!("subgroupBroadcast(v{}{suffix}, {}u)", e / g.lanes, e % g.lanes)
    }
}

/// Input channels per step of the subgroup kernel: 4 for a plain 1x1
/// convolution (stride 1, no padding or upsampling) over a multiple of 4
/// input channels, whose weights are then read 4 channels a load (`w_at4`):
/// its pixels reuse a weight too few times to pay for a load each. Else 1.
pub(crate) fn ci_step(s: &Conv2dShape) -> u32 {
    let plain_1x1 = s.ksize == 1 && s.stride == 1 && !s.upsample && s.pad == [0; 4];
    if plain_1x1 && s.cin.is_multiple_of(4) { 4 } else { 1 }
}

/// The LOAD and MAC sections of the subgroup kernel for [`ci_step`] 4: each
/// step loads the window of 4 input channels and each lane's weights for
/// them (one `w_at4` per output channel), then, pixel by pixel, hands the 4
/// window values to every lane and adds the 4 products to each of the
/// pixel's tm accumulators.
fn sections_1x1_by4(t: &SubgroupTile, g: &WindowGroups, q: u32) -> (String, String) {
    use std::fmt::Write;
    let acc = |i: u32, n: u32, py: u32, px: u32| ((i * t.nb + n) * t.ph + py) * t.pw + px;
    let mut load = String::new();
    for u in 0..4 {
        load += &window_loads(q, g.vec4, &format!("_{u}"), &format!("xo + {u}u * plane"));
    }
    for i in 0..t.tm {
        let _ = writeln!(load, "        let m{i} = w_at4(wr{i} + wo_);");
    }
    let mut mac = String::new();
    // 1x1, stride 1, no padding: window row py, column px is output pixel
    // (py, px) of image n.
    for n in 0..t.nb {
        for py in 0..t.ph {
            for px in 0..t.pw {
                mac.push_str("        {\n");
                for u in 0..4 {
                    let v = window_value(g, n * t.ph + py, px, &format!("_{u}"));
                    let _ = writeln!(mac, "        let x{u} = {v};");
                }
                for i in 0..t.tm {
                    let _ = writeln!(mac, "  a{} += m{i}.x * x0 + m{i}.y * x1 + m{i}.z * x2 + m{i}.w * x3;", acc(i, n, py, px));
                }
                mac.push_str("        }\n");
            }
        }
    }
    (load, mac)
}

/// The Winograd F(2x2, 3x3) form of the MAC section (Lavin and Gray,
/// "Fast Algorithms for Convolutional Neural Networks", 2016), with the
/// sums kept in the spatial domain: per input channel, each lane turns its
/// 3x3 weights g of channel i into U = G g G^T (4x4, in LOAD), every 2x2
/// output tile's 4x4 input patch d into V = B^T d B (shared by the lane's
/// tm channels), and adds A^T (U * V) A to the tile's 4 accumulators: 16
/// multiplies and 28 adds for 4 outputs, against 36 multiply-adds. For 3x3,
/// stride 1, no upsampling, even blocks.
fn winograd_sections(t: &SubgroupTile, nrs: u32, ncs: u32) -> (String, String) {
    use std::fmt::Write;
    let acc = |i: u32, n: u32, py: u32, px: u32| ((i * t.nb + n) * t.ph + py) * t.pw + px;
    let mut load = String::new();
    for i in 0..t.tm {
        let g = |r: u32, c: u32| format!("w{}", i * 9 + r * 3 + c);
        // q = G g (4x3), then U = q G^T (4x4).
        for c in 0..3 {
            let _ = writeln!(load, "        let q{i}_0{c} = {};", g(0, c));
            let _ = writeln!(load, "        let q{i}_1{c} = 0.5 * ({} + {} + {});", g(0, c), g(1, c), g(2, c));
            let _ = writeln!(load, "        let q{i}_2{c} = 0.5 * ({} - {} + {});", g(0, c), g(1, c), g(2, c));
            let _ = writeln!(load, "        let q{i}_3{c} = {};", g(2, c));
        }
        for r in 0..4 {
            let _ = writeln!(load, "        let z{i}_{r}0 = q{i}_{r}0;");
            let _ = writeln!(load, "        let z{i}_{r}1 = 0.5 * (q{i}_{r}0 + q{i}_{r}1 + q{i}_{r}2);");
            let _ = writeln!(load, "        let z{i}_{r}2 = 0.5 * (q{i}_{r}0 - q{i}_{r}1 + q{i}_{r}2);");
            let _ = writeln!(load, "        let z{i}_{r}3 = q{i}_{r}2;");
        }
    }
    let mut mac = String::new();
    for n in 0..t.nb {
        for ty in 0..t.ph / 2 {
            for tx in 0..t.pw / 2 {
                let d = |r: u32, c: u32| format!("x{}", (n * nrs + 2 * ty + r) * ncs + 2 * tx + c);
                mac.push_str("        {
");
                // b = B^T d, V = b B.
                for c in 0..4 {
                    let _ = writeln!(mac, "        let b0{c} = {} - {};", d(0, c), d(2, c));
                    let _ = writeln!(mac, "        let b1{c} = {} + {};", d(1, c), d(2, c));
                    let _ = writeln!(mac, "        let b2{c} = {} - {};", d(2, c), d(1, c));
                    let _ = writeln!(mac, "        let b3{c} = {} - {};", d(1, c), d(3, c));
                }
                for r in 0..4 {
                    let _ = writeln!(mac, "        let v{r}0 = b{r}0 - b{r}2;");
                    let _ = writeln!(mac, "        let v{r}1 = b{r}1 + b{r}2;");
                    let _ = writeln!(mac, "        let v{r}2 = b{r}2 - b{r}1;");
                    let _ = writeln!(mac, "        let v{r}3 = b{r}1 - b{r}3;");
                }
                for i in 0..t.tm {
                    // m = U * V; s = A^T m (2x4); y = s A (2x2).
                    for c in 0..4 {
                        let m = |r: u32| format!("z{i}_{r}{c} * v{r}{c}");
                        let _ = writeln!(mac, "        let s{i}_0{c} = {} + {} + {};", m(0), m(1), m(2));
                        let _ = writeln!(mac, "        let s{i}_1{c} = {} - {} - {};", m(1), m(2), m(3));
                    }
                    for r in 0..2 {
                        let (py, px) = (2 * ty + r, 2 * tx);
                        let _ = writeln!(mac, "  a{} += s{i}_{r}0 + s{i}_{r}1 + s{i}_{r}2;", acc(i, n, py, px));
                        let _ = writeln!(mac, "  a{} += s{i}_{r}1 - s{i}_{r}2 - s{i}_{r}3;", acc(i, n, py, px + 1));
                    }
                }
                mac.push_str("        }
");
            }
        }
    }
    (load, mac)
}

/// floor(a / 2^up) for possibly negative a.
fn floor_shr(a: i32, up: u32) -> i32 {
    a >> up
}

/// Whether the subgroup kernel can read the input window of block `t` as
/// aligned `vec4<f32>` groups of four columns: every image row starts on a
/// multiple of 4 (w % 4 == 0), and every block's first window column has the
/// same remainder mod 4 (one block column, or blocks 4k source columns
/// apart), so that which group and component holds a window column is known
/// when the shader is generated. A group then lies wholly inside or wholly
/// outside the image. On lavapipe a storage load costs a loop over the 8
/// lanes whatever its width, so a vec4 load brings 4 values for about 1.4x
/// the price of one (examples measured: 0.8 ns per value against 2.3 ns).
fn window_vec4(s: &Conv2dShape, t: &SubgroupTile) -> bool {
    let (_, wo) = s.out_hw();
    let block_cols = (t.pw * s.stride) >> s.upsample as u32;
    s.w.is_multiple_of(4) && (wo <= t.pw || (block_cols.is_multiple_of(4) && (t.pw * s.stride).is_multiple_of(1 << s.upsample as u32)))
}

/// The pipeline key of the subgroup kernel for shape `s` and block `t`: the
/// shader's constants plus its unrolled sections, generated here (see the
/// comment at the top of conv2d_forward_subgroup.wgsl for why unrolled).
/// With `vec4` ([`window_vec4`]) the window is loaded four columns at a time
/// and x is bound as `array<vec4<f32>>`.
fn subgroup_key(s: &Conv2dShape, t: &SubgroupTile, vec4: bool) -> Result<PipelineKey> {
    use std::fmt::Write;
    let (k, st, up) = (s.ksize, s.stride, s.upsample as u32);
    ensure!(t.tm * t.nb * t.ph * t.pw > 0, "empty block {t:?}");
    ensure!(t.accumulators() <= 4096, "block {t:?} is too large to unroll");
    // Merged taps are named by bit masks of a u64 (upsampling).
    ensure!(s.ksize <= 8, "a {0}x{0} kernel is larger than the subgroup kernel's 8x8", s.ksize);
    // Blocks start at multiples of ph and pw; with upsampling the window's
    // source rows are then known at compile time only if oy0 * stride is even.
    ensure!(up == 0 || ((t.ph * st).is_multiple_of(2) && (t.pw * st).is_multiple_of(2)), "upsampling needs even blocks, got {t:?}");
    let (pt, pl) = (s.pad[0] as i32, s.pad[1] as i32);
    // Upsampled window row a (0 .. (ph-1) s + k) of the block reads source
    // row r0 + rmap[a], r0 = ((oy0 s) >> up) + floor(-pt / 2^up).
    let map = |pad: i32, n: u32| -> Vec<u32> {
        (0..n as i32).map(|a| (floor_shr(a - pad, up) - floor_shr(-pad, up)) as u32).collect()
    };
    let rmap = map(pt, (t.ph - 1) * st + k);
    let cmap = map(pl, (t.pw - 1) * st + k);
    let (nrs, ncs) = (rmap.last().unwrap() + 1, cmap.last().unwrap() + 1);
    // The window's columns in groups of 4: column cs is component
    // (cshift + cs) % 4 of group (cshift + cs) / 4, cshift = c0 mod 4.
    let cshift = floor_shr(-pl, up).rem_euclid(4) as u32;
    let (unit_cols, ngs) = if vec4 { (4, (cshift + ncs).div_ceil(4)) } else { (1, ncs) };
    let elems = t.nb * nrs * ngs;
    ensure!(t.lanes == 8 || t.lanes == 16, "blocks of {} lanes (8 or 16)", t.lanes);
    let l = t.lanes;
    let q = elems.div_ceil(l);
    let kk = k * k;

    // Names are short on purpose: a source over 256 KiB breaks pipeline
    // creation in debug builds (the SPIR-V OpSource instruction overflows).
    // Accumulator a{j}: j = ((i nb + n) ph + py) pw + px. Window value x{e}:
    // e = (n nrs + rs) ncs + cs. Weight w{i kk + tap}.
    let mut setup = String::new();
    // Unit e (a value, or with vec4 a group of 4 columns) of the window.
    let (col0, div) = if vec4 { (format!("c0 - {cshift}"), " / 4u") } else { ("c0".to_string(), "") };
    for i in 0..q {
        let _ = writeln!(
            setup,
            "    let e{i} = min(lane + {}u, {}u);
    let en{i} = e{i} / {}u;
    let er{i} = r0 + i32((e{i} / {ngs}u) % {nrs}u);
    let ec{i} = {col0} + {unit_cols} * i32(e{i} % {ngs}u);
    let ok{i} = er{i} >= 0 && er{i} < hs && ec{i} >= 0 && ec{i} < ws && b0 + en{i} < p.batch;
    let eo{i} = ((min(b0 + en{i}, p.batch - 1u) * p.cin) * plane + u32(clamp(er{i}, 0, hs - 1)) * p.w + u32(clamp(ec{i}, 0, ws - 1))){div};",
            l * i,
            elems - 1,
            nrs * ngs
        );
    }
    let mut rows = String::new();
    for i in 0..t.tm {
        let _ = writeln!(rows, "    let wr{i} = min(co0 + lane + {}u, p.cout - 1u) * p.cin * KK;", l * i);
    }
    let acc = |i: u32, n: u32, py: u32, px: u32| ((i * t.nb + n) * t.ph + py) * t.pw + px;
    let mut decl = String::new();
    for j in 0..t.accumulators() {
        let _ = write!(decl, " var a{j} = 0.0;{}", if j % 8 == 7 { "\n" } else { "" });
    }
    // A plain 1x1 convolution takes 4 input channels a step (ci_step).
    let step = ci_step(s);
    let g = WindowGroups { lanes: l, vec4, ncs, ngs, cshift };
    ensure!(!t.winograd || winograd_fits(s, t), "block {t:?} cannot take the Winograd form for {s:?}");
    let (load, mac) = if step == 4 {
        sections_1x1_by4(t, &g, q)
    } else {
        let mut load = window_loads(q, vec4, "", "xo");
        for i in 0..t.tm {
            if kk == 9 {
                // One call per 3x3 window: packed formats need fewer loads.
                let _ = writeln!(load, "        let m{i} = w_at9(wr{i} + wo_);");
                for tap in 0..kk {
                    let _ = writeln!(load, "        let w{} = m{i}[{}][{}];", i * kk + tap, tap / 3, tap % 3);
                }
            } else if kk % 4 == 0 {
                // 4x4 (an upsampled conv's input gradient): a channel's rows
                // of taps start on whole vec4s, read 4 taps a call.
                for r in 0..kk / 4 {
                    let _ = writeln!(load, "        let m{i}_{r} = w_at4(wr{i} + wo_ + {}u);", 4 * r);
                    for (c, comp) in ["x", "y", "z", "w"].iter().enumerate() {
                        let _ = writeln!(load, "        let w{} = m{i}_{r}.{comp};", i * kk + 4 * r + c as u32);
                    }
                }
            } else {
                for tap in 0..kk {
                    let _ = writeln!(load, "        let w{} = w_at(wr{i} + wo_ + {tap}u);", i * kk + tap);
                }
            }
        }
        // Hand each window value the block uses to every lane.
        let mut used = std::collections::BTreeSet::new();
        for py in 0..t.ph {
            for px in 0..t.pw {
                for ky in 0..k {
                    for kx in 0..k {
                        used.insert((rmap[(py * st + ky) as usize], cmap[(px * st + kx) as usize]));
                    }
                }
            }
        }
        let mut mac = String::new();
        for n in 0..t.nb {
            for &(rs, cs) in &used {
                let e = (n * nrs + rs) * ncs + cs;
                let v = window_value(&g, n * nrs + rs, cs, "");
                let _ = writeln!(mac, "        let x{e} = {v};");
            }
        }
        if t.winograd {
            // 2x2 output tiles in the Winograd form (winograd_sections).
            let (uload, wmac) = winograd_sections(t, nrs, ncs);
            load.push_str(&uload);
            mac.push_str(&wmac);
        } else {
            // With upsampling, taps of one window often read the same source
            // value (nearest 2x repeats each source row and column): for a 3x3
            // kernel an output reads 4 distinct values, through 1, 2 or 4 taps
            // each. Such taps' weights are added once per input channel (u{i}m{taps
            // as a bit mask}), and each output takes 4 multiply-adds instead of
            // 9. Without upsampling every tap reads its own value and the code
            // is as before.
            let mut sums = std::collections::BTreeMap::new();
            let mut terms = String::new();
            for i in 0..t.tm {
                for n in 0..t.nb {
                    for py in 0..t.ph {
                        for px in 0..t.pw {
                            // (window value, its taps) in the order the taps first read it.
                            let mut reads: Vec<(u32, Vec<u32>)> = Vec::new();
                            for ky in 0..k {
                                for kx in 0..k {
                                    let rs = rmap[(py * st + ky) as usize];
                                    let cs = cmap[(px * st + kx) as usize];
                                    let e = (n * nrs + rs) * ncs + cs;
                                    match reads.iter_mut().find(|(v, _)| *v == e) {
                                        Some((_, taps)) => taps.push(ky * k + kx),
                                        None => reads.push((e, vec![ky * k + kx])),
                                    }
                                }
                            }
                            let _ = write!(terms, "  a{} +=", acc(i, n, py, px));
                            for (j, (e, taps)) in reads.iter().enumerate() {
                                let w = if let [tap] = taps[..] {
                                    format!("w{}", i * kk + tap)
                                } else {
                                    let mask: u64 = taps.iter().map(|t| 1u64 << t).sum();
                                    let sum: Vec<String> = taps.iter().map(|t| format!("w{}", i * kk + t)).collect();
                                    sums.insert((i, mask), sum.join(" + "));
                                    format!("u{i}m{mask}")
                                };
                                let _ = write!(terms, "{} {w}*x{e}", if j > 0 { " +" } else { "" });
                            }
                            terms.push_str(";\n");
                        }
                    }
                }
            }
            for ((i, mask), sum) in &sums {
                let _ = writeln!(mac, "        let u{i}m{mask} = {sum};");
            }
            mac.push_str(&terms);
        }
        (load, mac)
    };
    let mut store = String::new();
    let four = stores_vec4(s, t);
    for i in 0..t.tm {
        let _ = writeln!(
            store,
            "    if (co0 + lane + {}u < p.cout) {{\n        let co = co0 + lane + {}u;\n        let sc = w_scale(co, p.cout * p.cin * KK);",
            l * i,
            l * i
        );
        for n in 0..t.nb {
            let _ = writeln!(
                store,
                "        if (b0 + {n}u < p.batch) {{\n        let add = channel_add(co, b0 + {n}u);\n        let ob = ((b0 + {n}u) * p.cout + co) * hw;"
            );
            for py in 0..t.ph {
                if four {
                    for px in (0..t.pw).step_by(4) {
                        let a: Vec<String> = (px..px + 4).map(|x| format!("a{}", acc(i, n, py, x))).collect();
                        let _ = writeln!(
                            store,
                            "  put(ob, oy0 + {py}u, ox0 + {px}u, vec4<f32>({}) * sc + add);",
                            a.join(", ")
                        );
                    }
                } else {
                    for px in 0..t.pw {
                        let _ = writeln!(store, "  put(ob, oy0 + {py}u, ox0 + {px}u, a{} * sc + add);", acc(i, n, py, px));
                    }
                }
            }
            store.push_str("        }\n");
        }
        store.push_str("    }\n");
    }
    let total = setup.len() + rows.len() + decl.len() + load.len() + mac.len() + store.len();
    ensure!(total < 220_000, "block {t:?} generates {total} bytes of WGSL, too many for one shader");
    Ok(crate::shaders::key("conv2d_forward_subgroup")
        .define("TM", t.tm)
        .define("LANES", l)
        .define("NB", t.nb)
        .define("PH", t.ph)
        .define("PW", t.pw)
        .define("KK", kk)
        .define("CI_STEP", step)
        .define("S", st)
        .define("UP", up)
        .define("R0OFF", floor_shr(-pt, up))
        .define("C0OFF", floor_shr(-pl, up))
        .define("SETUP", setup)
        .define("WEIGHT_ROWS", rows)
        .define("ACC_DECL", decl)
        .define("LOAD", load)
        .define("MAC", mac)
        .define("STORE", store)
        .define("EPI_V", if four { "vec4<f32>" } else { "f32" })
        .define("EPI_W", if four { 4 } else { 1 }))
}

/// Whether the subgroup kernel stores (and reads the residual) four pixels
/// of a row at a time: where rows are whole vec4s (wo % 4 == 0) and blocks
/// start on them (pw % 4 == 0). On lavapipe every store is a loop over the
/// lanes whatever its width, and for a narrow layer (32 input channels) the
/// stores of a block cost about a third of its multiply-adds.
fn stores_vec4(s: &Conv2dShape, t: &SubgroupTile) -> bool {
    let (_, wo) = s.out_hw();
    wo.is_multiple_of(4) && t.pw.is_multiple_of(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(tm: u32, nb: u32, ph: u32, pw: u32) -> SubgroupTile {
        SubgroupTile::new(tm, nb, ph, pw)
    }

    #[test]
    fn blocks_by_kind_of_convolution() {
        let same = Conv2dShape::same;
        let wtile = |tm, nb, ph, pw| tile(tm, nb, ph, pw).in_winograd_form();
        let up = |batch, hw| Conv2dShape { upsample: true, ..same(batch, 256, hw, hw, 256, 3) };
        // Upsampled 3x3: the budget goes to pixels (the window is half the
        // block's side), 16x16 or several 8x8 images, 2 channels. A block
        // smaller than the image with 4 or more channel groups walks the
        // groups first (here 16 groups of 16 channels, 32x32 outputs).
        assert_eq!(subgroup_tile_for(&up(16, 16), 8), tile(2, 1, 16, 16).with_groups_inner());
        assert_eq!(subgroup_tile_for(&up(1, 8), 8), tile(2, 1, 16, 16));
        assert_eq!(subgroup_tile_for(&up(16, 4), 8), tile(2, 4, 8, 8));
        assert_eq!(subgroup_tile_for(&up(1, 4), 8), tile(8, 1, 8, 8));
        // Plain 3x3: 4 channels x 8x16 pixels, or several small images, in
        // the Winograd form (3x3, stride 1, even blocks), as below.
        assert_eq!(subgroup_tile_for(&same(16, 256, 16, 16, 256, 3), 8), wtile(4, 1, 8, 16).with_groups_inner());
        assert_eq!(subgroup_tile_for(&same(16, 256, 8, 8, 256, 3), 8), wtile(4, 2, 8, 8));
        assert_eq!(subgroup_tile_for(&same(16, 256, 4, 4, 256, 3), 8), wtile(4, 8, 4, 4));
        // Batch 1, 4x4: 16 channels x 16 pixels (the channel cap).
        assert_eq!(subgroup_tile_for(&same(1, 256, 4, 4, 256, 3), 8), wtile(16, 1, 4, 4));
        // Stride 2: 8 channels x 8x8 outputs.
        assert_eq!(subgroup_tile_for(&Conv2dShape { stride: 2, ..same(16, 128, 32, 32, 128, 3) }, 8), tile(8, 1, 8, 8));
        // Narrow layers (the small model's, cout <= 64): 256 accumulators,
        // 4 channels x 8x8, several 4x4 images, 1 x 16x16 upsampled.
        assert_eq!(subgroup_tile_for(&same(16, 32, 32, 32, 32, 3), 8), wtile(4, 1, 8, 8));
        assert_eq!(subgroup_tile_for(&same(16, 128, 16, 16, 64, 3), 8), wtile(4, 1, 8, 8));
        assert_eq!(subgroup_tile_for(&same(16, 64, 4, 4, 64, 3), 8), wtile(4, 4, 4, 4));
        assert_eq!(subgroup_tile_for(&Conv2dShape { stride: 2, ..same(16, 32, 32, 32, 32, 3) }, 8), tile(4, 1, 8, 8));
        let up_narrow = |batch, hw| Conv2dShape { upsample: true, ..same(batch, 64, hw, hw, 64, 3) };
        assert_eq!(subgroup_tile_for(&up_narrow(16, 8), 8), tile(1, 1, 16, 16));
        assert_eq!(subgroup_tile_for(&up_narrow(16, 4), 8), tile(1, 4, 8, 8));
        // No more channel groups than the layer has (conv_out, 3 channels).
        assert_eq!(subgroup_tile_for(&same(16, 128, 32, 32, 3, 3), 8), wtile(1, 1, 8, 8));
        // 3 groups of 32: blocks first.
        assert_eq!(subgroup_tile_for(&same(16, 128, 32, 32, 72, 3), 8), wtile(4, 1, 8, 16));
        assert_eq!(subgroup_tile_for(&same(16, 128, 32, 32, 128, 3), 8), wtile(4, 1, 8, 16).with_groups_inner());
        // 1x1: 4 channels x 64 pixels (256 accumulators).
        assert_eq!(subgroup_tile_for(&same(16, 256, 16, 16, 512, 1), 8), tile(4, 1, 8, 8).with_groups_inner());
        assert_eq!(subgroup_tile_for(&same(16, 256, 8, 8, 512, 1), 8), tile(4, 1, 8, 8));
        // 16 lanes (lavapipe at 512 bits): the same channels a lane where
        // the layer has them; narrow 3x3 layers 2 a lane over 16x16, and
        // other narrow blocks (stride 2) widened to the budget.
        assert_eq!(subgroup_tile_for(&same(16, 256, 16, 16, 256, 3), 16), wtile(4, 1, 8, 16).with_lanes(16).with_groups_inner());
        assert_eq!(subgroup_tile_for(&same(16, 32, 32, 32, 32, 3), 16), wtile(2, 1, 16, 16).with_lanes(16));
        assert_eq!(subgroup_tile_for(&same(16, 128, 16, 16, 64, 3), 16), wtile(2, 1, 16, 16).with_lanes(16));
        assert_eq!(subgroup_tile_for(&Conv2dShape { stride: 2, ..same(16, 32, 32, 32, 32, 3) }, 16), tile(2, 1, 8, 16).with_lanes(16));
        assert_eq!(subgroup_tile_for(&same(16, 64, 4, 4, 64, 3), 16), wtile(4, 4, 4, 4).with_lanes(16));
    }

    #[test]
    fn split_k_for_few_tiles_only() {
        let same = Conv2dShape::same;
        // cifar10-32 at batch 1: 4 tiles of 144-288 steps (8x8, 4x4) and 16
        // of 144 (16x16) split 16 and 8 ways; 32x32 at 128 channels (32
        // tiles of 72 steps) 4 ways.
        assert_eq!(tiled_split_within(&same(1, 256, 4, 4, 256, 3), 16), 16);
        assert_eq!(tiled_split_within(&same(1, 512, 8, 8, 256, 3), 16), 16);
        assert_eq!(tiled_split_within(&same(1, 256, 16, 16, 256, 3), 16), 8);
        assert_eq!(tiled_split_within(&same(1, 128, 32, 32, 128, 3), 16), 4);
        // Parts keep at least 8 steps: conv_in (2 steps) and a short 1x1.
        assert_eq!(tiled_split_within(&same(1, 3, 32, 32, 128, 3), 16), 1);
        assert_eq!(tiled_split_within(&same(1, 256, 4, 4, 256, 1), 16), 2);
        // Training batches fill the GPU almost without.
        assert_eq!(tiled_split_within(&same(64, 128, 32, 32, 128, 3), 16), 1);
        assert_eq!(tiled_split_within(&same(64, 256, 4, 4, 256, 3), 16), 2);
        assert_eq!(tiled_split_within(&same(16, 256, 16, 16, 256, 3), 16), 1);
        // PETAL_CONV_SPLIT_MAX=1: never.
        assert_eq!(tiled_split_within(&same(1, 256, 4, 4, 256, 3), 1), 1);
    }

    #[test]
    fn vec4_windows_only_where_groups_line_up() {
        let same = Conv2dShape::same;
        // Rows of 4k columns, blocks 4k columns apart, or a single block column.
        assert!(window_vec4(&same(2, 5, 6, 12, 7, 3), &tile(1, 1, 3, 4)));
        assert!(window_vec4(&same(1, 8, 32, 32, 8, 3), &tile(1, 1, 16, 16)));
        assert!(window_vec4(&same(1, 8, 4, 4, 8, 3), &tile(1, 4, 4, 4)));
        // Stride 2: 2 output columns a block are 4 input columns.
        assert!(window_vec4(&Conv2dShape { stride: 2, ..same(1, 3, 8, 16, 5, 3) }, &tile(1, 2, 2, 2)));
        // Upsampled: 8 output columns are 4 source columns; 4 are only 2.
        let up = Conv2dShape { upsample: true, ..same(2, 3, 4, 8, 6, 3) };
        assert!(window_vec4(&up, &tile(1, 1, 2, 8)));
        assert!(!window_vec4(&up, &tile(1, 1, 2, 4)));
        // Rows not a multiple of 4, or blocks 2 or 6 columns apart.
        assert!(!window_vec4(&same(1, 3, 8, 7, 5, 3), &tile(1, 1, 4, 4)));
        assert!(!window_vec4(&same(1, 3, 8, 12, 5, 3), &tile(1, 1, 4, 6)));
        assert!(!window_vec4(&same(1, 3, 8, 8, 5, 3), &tile(1, 1, 4, 2)));
    }
}
