//! The backward pass of [`conv2d_forward`](super::conv2d_forward):
//! y = (conv(x, w) + bias + temb[b, temb_offset + co] + residual) / out_div.
//!
//! | gradient | kernel | = or += |
//! | --- | --- | --- |
//! | dx (B, cin, h, w) | [`conv2d_backward_input`] | either (`accumulate`) |
//! | dw (cout, cin, k, k) | [`conv2d_backward_weight`] | = |
//! | db (cout), dtemb slice | [`conv2d_backward_bias`] | = |
//! | d residual = dy / out_div | [`scale_add`](super::scale_add) | either |
//!
//! Both convolution gradients are implicit GEMMs like the forward, with the
//! same three kernel shapes: a register-blocked fallback for any adapter, for
//! software adapters with subgroups of 8 lanes or more (lavapipe) a variant
//! that shares one operand across the subgroup with `subgroupBroadcast` (the
//! weight gradient's on 16 lanes where the subgroups hold them:
//! [`WeightGradLayout::lanes`]), and for
//! hardware GPUs 64 x 64 workgroup-memory tiles (`*_tiled.wgsl`). On
//! software adapters the input gradient of a stride-1 convolution is instead
//! the forward kernel run over dy with flipped weights, and that of an
//! Upsample2D conv the forward kernel at stride 2 with merged 4x4 weights
//! ([`InputGradLayout`], [`gradient_forward_shape`]).

use super::conv2d::{Conv2dEpilogue, Conv2dKernel, Conv2dShape};
use crate::gpu::{Dispatch, Dtype, Gpu, KernelFamily, PipelineKey, TensorView, grid_1d};
use anyhow::{Context, Result, ensure};

/// Which kernel computes a convolution gradient (both gradients have both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Conv2dBackwardKernel {
    /// Register-blocked, no workgroup memory, no subgroups. Any adapter.
    Generic,
    /// Workgroups of one subgroup (8 lanes, or 16 for the weight gradient
    /// where [`super::conv_lanes`] says so) sharing one operand by
    /// subgroupBroadcast.
    Subgroup,
    /// Workgroup-memory tiles of 64 x 64 (conv2d_backward_input_tiled.wgsl,
    /// conv2d_backward_weight_tiled.wgsl), for hardware GPUs.
    Tiled,
}

/// The kernel used for this adapter: the subgroup one on the CPU family when
/// the adapter has 8-lane subgroups, the tiled one on the GPU family, else
/// the generic one.
pub fn backward_kernel_for(gpu: &Gpu) -> Conv2dBackwardKernel {
    match gpu.family {
        KernelFamily::Cpu if super::subgroups_of_8(gpu) => Conv2dBackwardKernel::Subgroup,
        KernelFamily::Cpu => Conv2dBackwardKernel::Generic,
        KernelFamily::Gpu => Conv2dBackwardKernel::Tiled,
    }
}

fn check_shape(label: &str, s: &Conv2dShape) -> Result<()> {
    ensure!(s.stride == 1 || s.stride == 2, "{label}: stride {} is not 1 or 2", s.stride);
    ensure!(!(s.upsample && s.stride != 1), "{label}: upsampling with stride 2 is not supported");
    ensure!(s.ksize >= 1 && s.ksize <= 7, "{label}: kernel size {}", s.ksize);
    let (hi, wi) = s.in_hw();
    ensure!(
        hi + s.pad[0] + s.pad[2] >= s.ksize && wi + s.pad[1] + s.pad[3] >= s.ksize,
        "{label}: kernel larger than the padded input"
    );
    Ok(())
}

fn inv_div(out_div: f32) -> f32 {
    if out_div == 0.0 { 1.0 } else { 1.0 / out_div }
}

// ---------------------------------------------------------------------------
// dx

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct InputParams {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    sub_h: u32,
    sub_w: u32,
    accumulate: u32,
    inv_div: f32,
    _pad0: u32,
    cy0: i32,
    cy1: i32,
    cx0: i32,
    cx1: i32,
    fy0: u32,
    fy1: u32,
    fx0: u32,
    fx1: u32,
}

/// Uniforms of conv2d_backward_input_tiled.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct TiledInputParams {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    accumulate: u32,
    pad_top: u32,
    pad_left: u32,
    inv_div: f32,
    _pad0: u32,
}

/// How the transposed convolution of one spatial dimension is recast as a
/// plain correlation of dy (see conv2d_backward_input.wgsl): dx index
/// i = u * phases + phase reads dy at u * dy_step + offset[phase] + t for
/// t < taps.
struct DimPlan {
    /// 0: stride 1, 1: upsampled input (stride 1), 2: stride 2.
    mode: u32,
    taps: u32,
    dy_step: u32,
    phases: u32,
    /// Kernel taps folded into one effective tap (2 when upsampled).
    fold: u32,
    offset: [i32; 2],
    /// Kernel-index parity of each phase (stride 2 only).
    parity: [u32; 2],
}

fn dim_plan(s: &Conv2dShape, pad: u32) -> DimPlan {
    let (k, p) = (s.ksize as i32, pad as i32);
    if s.upsample {
        // logical l = 2i + a (a in 0..2) = oy + P - ky; t = a - ky + k - 1.
        DimPlan { mode: 1, taps: s.ksize + 1, dy_step: 2, phases: 1, fold: 2, offset: [p - k + 1; 2], parity: [0; 2] }
    } else if s.stride == 1 {
        // i = oy + P - ky; t = k - 1 - ky.
        DimPlan { mode: 0, taps: s.ksize, dy_step: 1, phases: 1, fold: 1, offset: [p - k + 1; 2], parity: [0; 2] }
    } else {
        // i = 2 oy + ky - P: for i = 2u + phase, ky has the parity of
        // phase + P and oy = (i + P - ky) / 2.
        let t = s.ksize.div_ceil(2) as i32;
        let off = |ph: i32| (ph + p).div_euclid(2) - (t - 1);
        DimPlan {
            mode: 2,
            taps: t as u32,
            dy_step: 1,
            phases: 2,
            fold: 1,
            offset: [off(0), off(1)],
            parity: [(pad % 2), ((1 + pad) % 2)],
        }
    }
}

/// Scratch (f32 elements) [`conv2d_backward_input`] needs for `s` on this
/// adapter (the flipped weights, when dx runs as a forward convolution); 0
/// means none (pass `None`).
pub fn conv2d_backward_input_scratch_len(gpu: &Gpu, s: &Conv2dShape) -> usize {
    InputGradLayout::new(backward_kernel_for(gpu), s, super::conv_lanes(gpu)).scratch_len(s)
}

/// dx (B, cin, h, w) (+)= d/dx of y = conv(x, w) / out_div, given
/// dy (B, cout, ho, wo) and w (cout, cin, k, k). Every forward case: any
/// k <= 7, stride 1 or 2, asymmetric padding, nearest-2x upsampled input (each
/// dx element then sums the gradient of its 4 logical positions).
/// Written (=), or accumulated (+=) when `accumulate`; dx must not alias dy.
/// `scratch` must hold [`conv2d_backward_input_scratch_len`] values when that
/// is not 0; it is overwritten. One dispatch, or two (flipped weights, then
/// the forward kernel).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input(
    gpu: &Gpu,
    label: &str,
    dx: &TensorView,
    dy: &TensorView,
    w: &TensorView,
    scratch: Option<&TensorView>,
    s: &Conv2dShape,
    out_div: f32,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    let layout = InputGradLayout::new(backward_kernel_for(gpu), s, super::conv_lanes(gpu));
    conv2d_backward_input_with(gpu, &layout, label, dx, dy, w, scratch, s, out_div, accumulate)
}

/// How one dx dispatch is blocked: each invocation (one lane of a subgroup
/// for the subgroup kernel) keeps `tm` input channels x `tn` consecutive dx
/// pixels of a row (of one phase, for stride 2); the tiled kernel's
/// workgroup computes `tm` x `tn` = 64 x 64 (input channels x pixels).
/// With `forward`, none of that: dx is the forward convolution `forward` of
/// dy with the flipped or merged weights ([`gradient_forward_shape`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputGradLayout {
    pub kernel: Conv2dBackwardKernel,
    /// Input channels per invocation (subgroup kernel: per workgroup, a
    /// multiple of 8).
    pub tm: u32,
    pub tn: u32,
    /// `Some(k)`: dx = conv(dy, flipped w) by the forward kernel `k`, the
    /// weights first flipped (or, for an upsampled 3x3, merged into a 4x4
    /// stride-2 kernel) into scratch (conv2d_flip_weights.wgsl). Only where
    /// [`gradient_forward_shape`] exists (stride 1, or Upsample2D's conv).
    pub forward: Option<Conv2dKernel>,
}

impl InputGradLayout {
    /// The blocking measured fastest for `s`; `lanes` is the forward
    /// kernel's ([`super::conv_lanes`]) where dx runs as one.
    pub fn new(kernel: Conv2dBackwardKernel, s: &Conv2dShape, lanes: u32) -> InputGradLayout {
        match kernel {
            Conv2dBackwardKernel::Generic => InputGradLayout { kernel, tm: 8, tn: 4, forward: None },
            // A 64 x 64 tile of dx (input channels x pixels) per workgroup.
            Conv2dBackwardKernel::Tiled => InputGradLayout { kernel, tm: TILED_BM, tn: TILED_BN, forward: None },
            Conv2dBackwardKernel::Subgroup => {
                // 32 input channels x 16 pixels per lane measured best on
                // lavapipe (with 64 channels Mesa stops unrolling the loops);
                // a narrow layer (conv_in's gradient, 3 channels) wastes less
                // with 8.
                let sub_w = if s.stride == 2 { s.w.div_ceil(2) } else { s.w };
                let tm = if s.cin <= 8 { 8 } else { 32 };
                let tn = if sub_w >= 16 && !s.upsample {
                    16
                } else if sub_w > 4 {
                    8
                } else {
                    4
                };
                // A stride-1 3x3 gradient runs faster as the forward
                // kernel's 2-D pixel blocks (lavapipe, batch 16: 63-65 against
                // 34-41 GFLOP/s, BENCHMARKS.md), and so does a 1x1 one
                // (`benches/conv.rs " k1" --op dx --variants cpu,cpu-forward`:
                // 1.24x less time per step for the small model at batch 64,
                // 1.13x for cifar10-32's at batch 16; all but one shape faster,
                // its q, k, v projection 6% slower).
                // An upsampled 3x3's gradient is a 4x4 convolution at stride
                // 2 of dy with merged weights (upsampled_gradient_shape):
                // 2.25x fewer multiply-adds than this kernel's phases do.
                let forward = flipped_shape(s)
                    .filter(|_| s.ksize == 3 || s.ksize == 1)
                    .or_else(|| upsampled_gradient_shape(s))
                    .map(|f| Conv2dKernel::Subgroup(super::conv2d::subgroup_tile_for(&f, lanes)));
                InputGradLayout { kernel, tm, tn, forward }
            }
        }
    }

    /// Scratch (f32 elements) this layout needs for `s`: the flipped or
    /// merged weights of [`gradient_forward_shape`] (rounded up to whole
    /// vec4s, which the forward kernel may read) with `forward`, else 0.
    pub fn scratch_len(&self, s: &Conv2dShape) -> usize {
        match (self.forward, gradient_forward_shape(s)) {
            (Some(_), Some(f)) => f.weight_len().next_multiple_of(4),
            _ => 0,
        }
    }
}

/// The forward convolution whose output is the input gradient of `s`:
/// dy (B, cout, ho, wo) in, dx (B, cin, h, w) out, with the weights
/// flipped to (cin, cout, k, k) and padding k-1-pad on each side. Exists for
/// stride 1 without upsampling and padding below k on every side.
pub fn flipped_shape(s: &Conv2dShape) -> Option<Conv2dShape> {
    let k = s.ksize;
    if s.stride != 1 || s.upsample || k == 0 || s.pad.iter().any(|&p| p >= k) {
        return None;
    }
    let (ho, wo) = s.out_hw();
    Some(Conv2dShape {
        batch: s.batch,
        cin: s.cout,
        h: ho,
        w: wo,
        cout: s.cin,
        ksize: k,
        stride: 1,
        pad: s.pad.map(|p| k - 1 - p),
        upsample: false,
    })
}

/// The forward convolution whose output is the input gradient of an
/// Upsample2D conv `s` (3x3, padding 1, stride 1, over a nearest-2x-upsampled
/// input): dy (B, cout, 2h, 2w) in, dx (B, cin, h, w) out, through 4x4
/// weights merged by [`conv2d_merge_upsampled_weights`] (cin, cout, 4, 4)
/// at stride 2 with padding 1 on each side (conv2d_flip_weights.wgsl,
/// MODE 1, derives it). 16 multiply-adds a dx value instead of the 36 of
/// the 4 upsampled pixels it feeds. None for any other shape.
pub fn upsampled_gradient_shape(s: &Conv2dShape) -> Option<Conv2dShape> {
    if !s.upsample || s.stride != 1 || s.ksize != 3 || s.pad != [1; 4] {
        return None;
    }
    let (ho, wo) = s.out_hw();
    Some(Conv2dShape { batch: s.batch, cin: s.cout, h: ho, w: wo, cout: s.cin, ksize: 4, stride: 2, pad: [1; 4], upsample: false })
}

/// The forward convolution that computes the input gradient of `s`, where
/// there is one: [`flipped_shape`] (stride 1, no upsampling) or
/// [`upsampled_gradient_shape`] (Upsample2D's conv).
pub fn gradient_forward_shape(s: &Conv2dShape) -> Option<Conv2dShape> {
    flipped_shape(s).or_else(|| upsampled_gradient_shape(s))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FlipParams {
    cout: u32,
    cin: u32,
    kk: u32,
    _pad0: u32,
}

/// wt (cin, cout, k, k) = w (cout, cin, k, k) with the channel axes swapped
/// and each kernel turned 180 degrees (conv2d_flip_weights.wgsl). wt must
/// not alias w. Errors: sizes that do not match `s`.
pub fn conv2d_flip_weights(gpu: &Gpu, label: &str, wt: &TensorView, w: &TensorView, s: &Conv2dShape) -> Result<Dispatch> {
    ensure!(w.len == s.weight_len(), "{label}: w has {} values, shape wants {}", w.len, s.weight_len());
    ensure!(wt.len == s.weight_len(), "{label}: wt has {} values, shape wants {}", wt.len, s.weight_len());
    ensure!(w.dtype == Dtype::F32, "{label}: training needs f32 weights, not {}", w.dtype.name());
    let params = FlipParams { cout: s.cout, cin: s.cin, kk: s.ksize * s.ksize, _pad0: 0 };
    let key = crate::shaders::key("conv2d_flip_weights").define("MODE", 0);
    gpu.dispatch(label, &key, &params, &[w, wt], grid_1d((s.cin * s.cout).div_ceil(256)))
}

/// wt (cin, cout, 4, 4): the 3x3 weights w (cout, cin, 3, 3) of an
/// Upsample2D conv `s` merged into the stride-2 kernel of its input gradient
/// ([`upsampled_gradient_shape`]; conv2d_flip_weights.wgsl, MODE 1). wt must
/// not alias w. Errors: a shape without that gradient, sizes that do not
/// match `s`.
pub fn conv2d_merge_upsampled_weights(gpu: &Gpu, label: &str, wt: &TensorView, w: &TensorView, s: &Conv2dShape) -> Result<Dispatch> {
    let g = upsampled_gradient_shape(s).with_context(|| format!("{label}: {s:?} is not a 3x3 conv over a 2x upsampled input"))?;
    ensure!(w.len == s.weight_len(), "{label}: w has {} values, shape wants {}", w.len, s.weight_len());
    ensure!(wt.len == g.weight_len(), "{label}: wt has {} values, the merged kernel wants {}", wt.len, g.weight_len());
    ensure!(w.dtype == Dtype::F32, "{label}: training needs f32 weights, not {}", w.dtype.name());
    let params = FlipParams { cout: s.cout, cin: s.cin, kk: 9, _pad0: 0 };
    let key = crate::shaders::key("conv2d_flip_weights").define("MODE", 1);
    gpu.dispatch(label, &key, &params, &[w, wt], grid_1d((s.cin * s.cout).div_ceil(256)))
}

/// [`conv2d_backward_input`] with the layout chosen by the caller.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_input_with(
    gpu: &Gpu,
    layout: &InputGradLayout,
    label: &str,
    dx: &TensorView,
    dy: &TensorView,
    w: &TensorView,
    scratch: Option<&TensorView>,
    s: &Conv2dShape,
    out_div: f32,
    accumulate: bool,
) -> Result<Vec<Dispatch>> {
    check_shape(label, s)?;
    ensure!(dx.len == s.in_len(), "{label}: dx has {} values, shape wants {}", dx.len, s.in_len());
    ensure!(dy.len == s.out_len(), "{label}: dy has {} values, shape wants {}", dy.len, s.out_len());
    ensure!(w.len == s.weight_len(), "{label}: w has {} values, shape wants {}", w.len, s.weight_len());
    ensure!(w.dtype == crate::gpu::Dtype::F32, "{label}: training needs f32 weights, not {}", w.dtype.name());
    if let Some(kernel) = layout.forward {
        let fs = gradient_forward_shape(s).with_context(|| format!("{label}: {s:?} has no forward convolution for its gradient"))?;
        let need = layout.scratch_len(s);
        let scratch = scratch.with_context(|| format!("{label}: the flipped weights need {need} values of scratch"))?;
        ensure!(scratch.len >= need, "{label}: scratch has {} values, needs {need}", scratch.len);
        let wt = scratch.clone_with_len(fs.weight_len());
        let epi = Conv2dEpilogue { out_div, accumulate, ..Default::default() };
        // The subgroup kernel, which needs no scratch of its own.
        let mut v = vec![if s.upsample {
            conv2d_merge_upsampled_weights(gpu, label, &wt, w, s)?
        } else {
            conv2d_flip_weights(gpu, label, &wt, w, s)?
        }];
        v.extend(super::conv2d::conv2d_forward_with(gpu, kernel, label, dx, dy, &wt, &fs, &epi, None)?);
        return Ok(v);
    }
    let (ho, wo) = s.out_hw();
    if layout.kernel == Conv2dBackwardKernel::Tiled {
        ensure!(
            (layout.tm, layout.tn) == (TILED_BM, TILED_BN),
            "{label}: the tiled kernel computes {TILED_BM} x {TILED_BN} tiles, not {layout:?}"
        );
        let params = TiledInputParams {
            batch: s.batch,
            cin: s.cin,
            h: s.h,
            w: s.w,
            cout: s.cout,
            ho,
            wo,
            accumulate: accumulate as u32,
            pad_top: s.pad[0],
            pad_left: s.pad[1],
            inv_div: inv_div(out_div),
            _pad0: 0,
        };
        let key = crate::shaders::key("conv2d_backward_input_tiled")
            .define("K", s.ksize)
            .define("S", s.stride)
            .define("UP", s.upsample as u32);
        let grid = [(s.batch * s.h * s.w).div_ceil(TILED_BN), s.cin.div_ceil(TILED_BM), 1];
        return Ok(vec![gpu.dispatch(label, &key, &params, &[dy, w, dx], grid)?]);
    }
    let py = dim_plan(s, s.pad[0]);
    let px = dim_plan(s, s.pad[1]);
    let (sub_h, sub_w) = (s.h.div_ceil(py.phases), s.w.div_ceil(px.phases));
    let params = InputParams {
        batch: s.batch,
        cin: s.cin,
        h: s.h,
        w: s.w,
        cout: s.cout,
        ho,
        wo,
        sub_h,
        sub_w,
        accumulate: accumulate as u32,
        inv_div: inv_div(out_div),
        _pad0: 0,
        cy0: py.offset[0],
        cy1: py.offset[1],
        cx0: px.offset[0],
        cx1: px.offset[1],
        fy0: py.parity[0],
        fy1: py.parity[1],
        fx0: px.parity[0],
        fx1: px.parity[1],
    };
    let phases = py.phases * px.phases;
    let buffers = [dy, w, dx];
    let key = |shader: &'static str, tm: u32, tn: u32| {
        crate::shaders::key(shader)
            .define("MODE", py.mode)
            .define("K", s.ksize)
            .define("T", py.taps)
            .define("SD", py.dy_step)
            .define("PH", py.phases)
            .define("NA", py.fold)
            .define("TM", tm)
            .define("TN", tn)
    };
    let (tm, tn) = (layout.tm, layout.tn);
    ensure!(tm > 0 && tn > 0, "{label}: empty layout {layout:?}");
    let segs = s.batch * sub_h * sub_w.div_ceil(tn);
    match layout.kernel {
        Conv2dBackwardKernel::Generic => {
            let grid = [segs.div_ceil(64), s.cin.div_ceil(tm), phases];
            Ok(vec![gpu.dispatch(label, &key("conv2d_backward_input", tm, tn), &params, &buffers, grid)?])
        }
        Conv2dBackwardKernel::Tiled => unreachable!("returned above"),
        Conv2dBackwardKernel::Subgroup => {
            ensure!(super::subgroups_of_8(gpu), "{label}: the subgroup kernel needs subgroups of 8 lanes");
            ensure!(tm % 8 == 0, "{label}: {layout:?}: tm must be a multiple of 8");
            let grid = [segs.div_ceil(8), s.cin.div_ceil(tm), phases];
            // Whole 3x3 windows are read (w_at9) for stride 1 and upsampling;
            // stride 2 reads single taps of one parity.
            let (w, weights) = super::conv_weights(w, s.ksize == 3 && py.mode != 2 && px.mode != 2);
            let key = dy_row(key("conv2d_backward_input_subgroup", tm, tn).define("WEIGHTS", weights), s, &px, tn);
            Ok(vec![gpu.dispatch(label, &key, &params, &[dy, &w, dx], grid)?])
        }
    }
}

/// The subgroup dx kernel's read of a lane's dy row segment (NCOL = (tn - 1)
/// SD + T columns from ox0): scalar loads, or, where every segment starts at
/// the same column mod 4 (stride 1 or upsampled, tn % 4 == 0) and dy rows
/// are whole vec4s (wo % 4 == 0), aligned vec4 groups, a third of the loads
/// (on lavapipe a load costs a loop over the lanes whatever its width).
fn dy_row(key: PipelineKey, s: &Conv2dShape, px: &DimPlan, tn: u32) -> PipelineKey {
    let (_, wo) = s.out_hw();
    if px.mode == 2 || !wo.is_multiple_of(4) || !tn.is_multiple_of(4) {
        return key.define("DY_T", "f32").define(
            "DY_ROW",
            "            for (var t = 0u; t < NCOL; t++) {
                yr[t] = select(0.0, dy[yrow + ycol[t]], row_ok && ycol_ok[t]);
            }",
        );
    }
    // ox0 = v0 SD + cx with v0 a multiple of tn: ox0 = cx (mod 4).
    let shift = px.offset[0].rem_euclid(4) as u32;
    let ncol = (tn - 1) * px.dy_step + px.taps;
    let groups = (shift + ncol).div_ceil(4);
    key.define("DY_T", "vec4<f32>").define(
        "DY_ROW",
        format!(
            "            var yg: array<vec4<f32>, {groups}>;
            for (var g = 0u; g < {groups}u; g++) {{
                let c = ox0 - {shift} + 4 * i32(g);
                let ok = row_ok && c >= 0 && c < i32(p.wo);
                yg[g] = select(vec4<f32>(), dy[(yrow + u32(clamp(c, 0, i32(p.wo) - 4))) / 4u], ok);
            }}
            for (var t = 0u; t < NCOL; t++) {{
                yr[t] = yg[(t + {shift}u) / 4u][(t + {shift}u) % 4u];
            }}"
        ),
    )
}

// ---------------------------------------------------------------------------
// dw

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct WeightParams {
    batch: u32,
    cin: u32,
    h: u32,
    w: u32,
    cout: u32,
    ho: u32,
    wo: u32,
    upsample: u32,
    pad_top: u32,
    pad_left: u32,
    nsegs: u32,
    segs_per_chunk: u32,
    inv_div: f32,
    _pad: [u32; 3],
}

/// How one dw dispatch is laid out: the blocking, and how many chunks the
/// reduction over batch x output pixels is cut into. Each chunk writes its own
/// copy of dw into scratch and a second dispatch sums them (WGSL has no float
/// atomics); with one chunk the kernel writes dw directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightGradLayout {
    pub kernel: Conv2dBackwardKernel,
    /// Output channels per invocation (subgroup kernel: per workgroup).
    pub tm: u32,
    /// Input channels per lane (subgroup kernel; 1 for the generic one).
    pub tc: u32,
    /// Chunks asked for (fewer are used when the reduction is shorter).
    pub chunks: u32,
    /// Subgroup kernel only: take 2x2 tiles of dy in the Winograd F(3x3, 2x2)
    /// form (snippets/conv2d_dw_winograd.wgsl); needs [`dw_winograd_fits`].
    pub winograd: bool,
    /// Subgroup kernel only: lanes of its workgroup, 8 or 16 (the adapter's
    /// [`super::conv_lanes`]); each workgroup covers `lanes * tc` input
    /// channels.
    pub lanes: u32,
}

/// `tc` input channels a lane, capped by what `lanes` lanes fill of `s`'s
/// input channels (at least 1).
fn lane_channels(tc: u32, s: &Conv2dShape, lanes: u32) -> u32 {
    tc.min(s.cin.div_ceil(lanes)).max(1)
}

/// Input channels a lane of the Winograd weight gradient's 8-lane blocks
/// where the layer has 32 or more: 4 on AMD CPUs and on upsampled inputs, 2
/// otherwise (hardware GPUs do not run this kernel). Measured by
/// `benches/conv.rs --op dw` at batch 64: on an AMD EPYC (Zen 5) 32 x 4 ran
/// 1.07-1.5x the direct form's speed and ahead of 32 x 2; on an Intel Xeon
/// (Ice Lake-SP) 32 x 4 ran at 0.4-0.6x the speed of 32 x 2 on the
/// non-upsampled 3x3 layers of both architectures (cifar10-32's 3x3 weight
/// gradients 1.68x less time with 32 x 2, the small model's 1.4-1.6x), and
/// 1.07-1.16x faster on cifar10-32's upsampled ones (BENCHMARKS.md, "The
/// weight gradient's Winograd blocking by CPU").
fn winograd_lane_channels(gpu: &Gpu, s: &Conv2dShape) -> u32 {
    match gpu.host {
        Some(cpu) if cpu.vendor == crate::gpu::CpuVendor::Amd => 4,
        _ if s.upsample => 4,
        _ => 2,
    }
}

/// Whether the subgroup dw kernel can take `s` in the Winograd form: a 3x3
/// kernel at stride 1 (upsampled or not) and an even number of output rows,
/// which its steps take two at a time.
pub fn dw_winograd_fits(s: &Conv2dShape) -> bool {
    s.ksize == 3 && s.stride == 1 && s.out_hw().0.is_multiple_of(2)
}

impl WeightGradLayout {
    /// The blocking measured fastest for `s`, and enough chunks to keep this
    /// adapter busy.
    pub fn new(gpu: &Gpu, kernel: Conv2dBackwardKernel, s: &Conv2dShape) -> WeightGradLayout {
        Self::new_for_lanes(gpu, kernel, s, Self::adapter_lanes(gpu, kernel))
    }

    /// The lanes the subgroup kernel runs on this adapter
    /// ([`super::conv_lanes`]; 8 for the other kernels, which ignore it).
    fn adapter_lanes(gpu: &Gpu, kernel: Conv2dBackwardKernel) -> u32 {
        if kernel == Conv2dBackwardKernel::Subgroup { super::conv_lanes(gpu) } else { 8 }
    }

    /// [`Self::new`]'s choice for the subgroup kernel on `lanes` lanes (8 or
    /// 16) rather than the adapter's: benches/conv.rs compares them.
    pub fn new_for_lanes(gpu: &Gpu, kernel: Conv2dBackwardKernel, s: &Conv2dShape, lanes: u32) -> WeightGradLayout {
        let direct = Self::direct_for_lanes(gpu, kernel, s, lanes);
        // The Winograd form where it applies and the workgroup has 32 output
        // channels (cout > 8) to share its transforms (with conv_out's 3,
        // the transforms cost more than they save), with 4 input channels a
        // lane (2 on non-AMD CPUs off upsampled inputs) where there are 32 to
        // fill the workgroup (winograd_lane_channels). Measured on lavapipe (Zen 5)
        // at b64 (benches/conv.rs --op dw, BENCHMARKS.md): the 3x3
        // stride-1 layers at 8x8 and up 1.2-1.5x the direct form's speed
        // with 32 x 4 on cifar10-32, 1.07-1.3x on the small model's narrower
        // ones, less with 32 x 2; conv_out's 8 x 2 at 0.6x.
        // PETAL_WINOGRAD=0 keeps the direct form (super::winograd_enabled).
        if direct.kernel == Conv2dBackwardKernel::Subgroup && direct.tm == 32 && dw_winograd_fits(s) && super::winograd_enabled() {
            // Each lane transforms dy for all 32 output channels, shared by
            // its tc input channels: where the adapter has 16 lanes, this
            // form still runs 8 lanes x 4 on AMD (1.05-1.2x the speed of 16 x 2 on
            // cifar10-32's layers at b64, about even to 1.2x on the small
            // model's; 16 x 4 ran slower still, its sums twice the bytes),
            // except on upsampled inputs, whose scalar loads favour 16 x 2
            // (1.5-2x; benches/conv.rs --op dw, BENCHMARKS.md).
            let (lanes, tc) = match lanes {
                16 if s.upsample => (16, 2),
                _ if s.cin >= 32 => (8, winograd_lane_channels(gpu, s)),
                _ => (lanes, direct.tc),
            };
            WeightGradLayout { tc: lane_channels(tc, s, lanes), lanes, ..direct }.in_winograd_form(gpu, s)
        } else {
            direct
        }
    }

    /// The blocking measured fastest for `s` in the direct form (what
    /// [`Self::new`] picks with `PETAL_WINOGRAD=0`).
    pub fn new_direct(gpu: &Gpu, kernel: Conv2dBackwardKernel, s: &Conv2dShape) -> WeightGradLayout {
        Self::direct_for_lanes(gpu, kernel, s, Self::adapter_lanes(gpu, kernel))
    }

    fn direct_for_lanes(gpu: &Gpu, kernel: Conv2dBackwardKernel, s: &Conv2dShape, lanes: u32) -> WeightGradLayout {
        // The subgroup kernel keeps K - S input rows between steps.
        let kernel = if s.ksize < s.stride { Conv2dBackwardKernel::Generic } else { kernel };
        let (tm, tc) = match kernel {
            Conv2dBackwardKernel::Generic => (8, 1),
            // A 64 x 64 tile of dw per workgroup.
            Conv2dBackwardKernel::Tiled => (TILED_BM, 1),
            // Measured on lavapipe: 32 output channels x 2 input channels x
            // 9 taps per lane (8 input channels for 1x1).
            Conv2dBackwardKernel::Subgroup => {
                (if s.cout <= 8 { 8 } else { 32 }, lane_channels(if s.ksize == 1 { 8 } else { 2 }, s, lanes))
            }
        };
        Self::on_lanes(gpu, kernel, s, tm, tc, lanes)
    }

    /// This layout with the subgroup kernel's Winograd form, its chunks
    /// recounted for the adapter (a step takes two output rows; a `chunks`
    /// set by hand is replaced). The caller checks
    /// [`dw_winograd_fits`]; [`conv2d_backward_weight_with`] refuses the rest.
    pub fn in_winograd_form(self, gpu: &Gpu, s: &Conv2dShape) -> WeightGradLayout {
        let mut l = WeightGradLayout { winograd: true, ..self };
        l.fill_chunks(gpu, s);
        l
    }

    /// A layout with the blocking given (`tm` output channels a workgroup,
    /// `tc` input channels a lane for the subgroup kernel, on the adapter's
    /// lanes), and enough chunks to keep this adapter busy, in the direct
    /// form. For benches/conv.rs; [`Self::new`] picks.
    pub fn with_blocking(gpu: &Gpu, kernel: Conv2dBackwardKernel, s: &Conv2dShape, tm: u32, tc: u32) -> WeightGradLayout {
        Self::on_lanes(gpu, kernel, s, tm, tc, Self::adapter_lanes(gpu, kernel))
    }

    fn on_lanes(gpu: &Gpu, kernel: Conv2dBackwardKernel, s: &Conv2dShape, tm: u32, tc: u32, lanes: u32) -> WeightGradLayout {
        let mut l = WeightGradLayout { kernel, tm, tc, chunks: 1, winograd: false, lanes };
        l.fill_chunks(gpu, s);
        l
    }

    /// This layout on workgroups of `lanes` lanes (8 or 16; subgroup kernel),
    /// its chunks recounted.
    pub fn with_lanes(self, gpu: &Gpu, s: &Conv2dShape, lanes: u32) -> WeightGradLayout {
        let mut l = WeightGradLayout { lanes, ..self };
        l.fill_chunks(gpu, s);
        l
    }

    fn fill_chunks(&mut self, gpu: &Gpu, s: &Conv2dShape) {
        // Enough workgroups to fill the adapter, but every chunk at least
        // min_segs long and at most max_chunks copies of dw.
        let (target, min_segs, max_chunks) = match gpu.info.device_type {
            wgpu::DeviceType::Cpu => (32u32, 64u32, 16u32),
            _ => (1024, 32, 64),
        };
        let [gx, gy] = self.grid_xy(s);
        self.chunks = target.div_ceil(gx * gy).min(self.nsegs(s).div_ceil(min_segs)).clamp(1, max_chunks);
    }

    /// Output pixels per reduction step: a row segment.
    fn seg(&self) -> u32 {
        match self.kernel {
            Conv2dBackwardKernel::Generic => 4,
            Conv2dBackwardKernel::Subgroup => 8,
            Conv2dBackwardKernel::Tiled => TILED_BK,
        }
    }

    /// Output rows a reduction step takes (2 in the Winograd form).
    fn rows(&self) -> u32 {
        if self.winograd { 2 } else { 1 }
    }

    /// Row segments (of `rows` rows) the reduction runs over.
    pub fn nsegs(&self, s: &Conv2dShape) -> u32 {
        let (ho, wo) = s.out_hw();
        match self.kernel {
            // Steps of 16 pixels over all batch x ho x wo output pixels.
            Conv2dBackwardKernel::Tiled => (s.batch * ho * wo).div_ceil(self.seg()),
            _ => s.batch * ho.div_ceil(self.rows()) * wo.div_ceil(self.seg()),
        }
    }

    fn segs_per_chunk(&self, s: &Conv2dShape) -> u32 {
        self.nsegs(s).div_ceil(self.chunks.max(1))
    }

    /// Chunks actually used.
    pub fn chunks_used(&self, s: &Conv2dShape) -> u32 {
        self.nsegs(s).div_ceil(self.segs_per_chunk(s))
    }

    /// Workgroups of one chunk.
    fn grid_xy(&self, s: &Conv2dShape) -> [u32; 2] {
        match self.kernel {
            Conv2dBackwardKernel::Generic => [(s.cin * s.cout.div_ceil(self.tm)).div_ceil(64), 1],
            Conv2dBackwardKernel::Subgroup => [s.cin.div_ceil(self.lanes * self.tc), s.cout.div_ceil(self.tm)],
            Conv2dBackwardKernel::Tiled => [(s.cin * s.ksize * s.ksize).div_ceil(TILED_BN), s.cout.div_ceil(TILED_BM)],
        }
    }

    /// f32 elements of scratch this layout needs (0: it writes dw directly).
    pub fn scratch_len(&self, s: &Conv2dShape) -> usize {
        let chunks = self.chunks_used(s);
        if chunks > 1 { chunks as usize * s.weight_len() } else { 0 }
    }
}

/// Output channels, dw columns (cin x k x k) and output pixels per step of
/// conv2d_backward_weight_tiled.wgsl.
const TILED_BM: u32 = 64;
const TILED_BN: u32 = 64;
const TILED_BK: u32 = 16;

/// Scratch (f32 elements) [`conv2d_backward_weight`] needs for `s` on this
/// adapter; 0 means none (pass `None`).
pub fn conv2d_backward_weight_scratch_len(gpu: &Gpu, s: &Conv2dShape) -> usize {
    WeightGradLayout::new(gpu, backward_kernel_for(gpu), s).scratch_len(s)
}

/// dw (cout, cin, k, k) = sum over batch and output pixels of dy / out_div
/// times the input value each tap read (x (B, cin, h, w), dy (B, cout, ho, wo),
/// any forward case). Written (=). `scratch` must hold
/// [`conv2d_backward_weight_scratch_len`] values when that is not 0; it is
/// overwritten. One dispatch, or two (partial sums, then their sum).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight(
    gpu: &Gpu,
    label: &str,
    dw: &TensorView,
    scratch: Option<&TensorView>,
    dy: &TensorView,
    x: &TensorView,
    s: &Conv2dShape,
    out_div: f32,
) -> Result<Vec<Dispatch>> {
    let layout = WeightGradLayout::new(gpu, backward_kernel_for(gpu), s);
    conv2d_backward_weight_with(gpu, &layout, label, dw, scratch, dy, x, s, out_div)
}

/// [`conv2d_backward_weight`] with the layout chosen by the caller.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_weight_with(
    gpu: &Gpu,
    layout: &WeightGradLayout,
    label: &str,
    dw: &TensorView,
    scratch: Option<&TensorView>,
    dy: &TensorView,
    x: &TensorView,
    s: &Conv2dShape,
    out_div: f32,
) -> Result<Vec<Dispatch>> {
    check_shape(label, s)?;
    ensure!(x.len == s.in_len(), "{label}: x has {} values, shape wants {}", x.len, s.in_len());
    ensure!(dy.len == s.out_len(), "{label}: dy has {} values, shape wants {}", dy.len, s.out_len());
    ensure!(dw.len == s.weight_len(), "{label}: dw has {} values, shape wants {}", dw.len, s.weight_len());
    let (ho, wo) = s.out_hw();
    let l = layout;
    ensure!(l.tm > 0 && l.tc > 0, "{label}: empty layout {l:?}");
    ensure!(l.kernel == Conv2dBackwardKernel::Subgroup || l.tc == 1, "{label}: the generic kernel takes tc = 1");
    ensure!(
        !l.winograd || (l.kernel == Conv2dBackwardKernel::Subgroup && dw_winograd_fits(s)),
        "{label}: the Winograd form needs the subgroup kernel, a 3x3 kernel at stride 1 and an even number of output rows"
    );
    let chunks = l.chunks_used(s);
    let params = WeightParams {
        batch: s.batch,
        cin: s.cin,
        h: s.h,
        w: s.w,
        cout: s.cout,
        ho,
        wo,
        upsample: s.upsample as u32,
        pad_top: s.pad[0],
        pad_left: s.pad[1],
        nsegs: l.nsegs(s),
        segs_per_chunk: l.segs_per_chunk(s),
        inv_div: inv_div(out_div),
        _pad: [0; 3],
    };
    let need = l.scratch_len(s);
    let out = if need > 0 {
        let sc = scratch.ok_or_else(|| anyhow::anyhow!("{label}: needs {need} values of scratch"))?;
        ensure!(sc.len >= need, "{label}: scratch has {} values, needs {need}", sc.len);
        ensure!(!sc.same_buffer(dw), "{label}: scratch must not share dw's buffer");
        sc.clone_with_len(need)
    } else {
        dw.clone()
    };
    let [gx, gy] = l.grid_xy(s);
    let grid = [gx, gy, chunks];
    let key = match l.kernel {
        Conv2dBackwardKernel::Generic => crate::shaders::key("conv2d_backward_weight")
            .define("K", s.ksize)
            .define("S", s.stride)
            .define("TM", l.tm)
            .define("TN", l.seg()),
        Conv2dBackwardKernel::Tiled => {
            ensure!(l.tm == TILED_BM, "{label}: the tiled kernel computes {TILED_BM} output channels per workgroup");
            crate::shaders::key("conv2d_backward_weight_tiled").define("K", s.ksize).define("S", s.stride)
        }
        Conv2dBackwardKernel::Subgroup => {
            super::ensure_lanes(gpu, label, l.lanes)?;
            ensure!(s.ksize >= s.stride, "{label}: the subgroup kernel needs a kernel at least as large as the stride");
            // 64 output channels a workgroup gave wrong sums on lavapipe
            // (benches/conv.rs --op dw dw64x4, dw64x8, 2026-12-02; cause not
            // found), so the kernel refuses them rather than run them.
            ensure!(l.tm <= 32, "{label}: the subgroup kernel takes at most 32 output channels a workgroup, not {}", l.tm);
            let key = crate::shaders::key("conv2d_backward_weight_subgroup")
                .define("K", s.ksize)
                .define("S", s.stride)
                .define("TM", l.tm)
                .define("TC", l.tc)
                .define("LANES", l.lanes)
                .define("FORM", if l.winograd { "winograd" } else { "direct" });
            // Four values a load where rows come in whole, aligned vec4s
            // (the snippets conv2d_dw_{x,dy}_vec4.wgsl say why and how).
            let key = if !s.upsample && s.w.is_multiple_of(4) && x.dtype == Dtype::F32 {
                let cshift = (-(s.pad[1] as i64)).rem_euclid(4);
                key.define("X_LOADS", "vec4").define("X_T", "vec4<f32>").define("CSHIFT", cshift)
            } else {
                key.define("X_LOADS", "scalar").define("X_T", "f32")
            };
            if wo.is_multiple_of(4) && l.tm.is_multiple_of(l.lanes / 2) && dy.dtype == Dtype::F32 {
                key.define("DY_LOADS", "vec4").define("DY_T", "vec4<f32>")
            } else {
                key.define("DY_LOADS", "scalar").define("DY_T", "f32")
            }
        }
    };
    let mut v = vec![gpu.dispatch(label, &key, &params, &[dy, x, &out], grid)?];
    if need > 0 {
        v.push(sum_rows(gpu, label, dw, &out, chunks, s.weight_len() as u32, 0, s.weight_len() as u32, 1.0)?);
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// db, dtemb

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BiasParams {
    batch: u32,
    cout: u32,
    hw: u32,
    has_temb: u32,
    temb_stride: u32,
    temb_offset: u32,
    inv_div: f32,
    _pad: u32,
}

/// db (cout) = sum over b and pixels of dy (B, cout, ho, wo) / out_div, and,
/// when `dtemb` = (dtemb (B, stride), stride, offset) is given,
/// dtemb[b * stride + offset + co] = sum over pixels of dy[b, co] / out_div
/// (the forward epilogue's time-embedding add; each conv owns its slice).
/// Both written (=). One dispatch, no scratch: on software adapters, where
/// the batch fills a subgroup's lanes, a subgroup per channel and a lane per
/// image without barriers (conv2d_backward_bias_subgroup.wgsl; 2-3x the
/// workgroup kernel's speed, `benches/norm.rs --op bias`).
pub fn conv2d_backward_bias(
    gpu: &Gpu,
    label: &str,
    db: &TensorView,
    dtemb: Option<(&TensorView, u32, u32)>,
    dy: &TensorView,
    s: &Conv2dShape,
    out_div: f32,
) -> Result<Dispatch> {
    let (ho, wo) = s.out_hw();
    ensure!(dy.len == s.out_len(), "{label}: dy has {} values, shape wants {}", dy.len, s.out_len());
    ensure!(db.len == s.cout as usize, "{label}: db has {} values, wants {}", db.len, s.cout);
    if let Some((t, stride, off)) = dtemb {
        ensure!(off + s.cout <= stride, "{label}: dtemb slice {off}+{} outside stride {stride}", s.cout);
        ensure!(t.len >= (s.batch * stride) as usize, "{label}: dtemb has {} values, wants B x {stride}", t.len);
    }
    let params = BiasParams {
        batch: s.batch,
        cout: s.cout,
        hw: ho * wo,
        has_temb: dtemb.is_some() as u32,
        temb_stride: dtemb.map_or(0, |t| t.1),
        temb_offset: dtemb.map_or(0, |t| t.2),
        inv_div: inv_div(out_div),
        _pad: 0,
    };
    let t = dtemb.map_or(&gpu.dummy, |t| t.0);
    // Four pixels a load where every image's channel comes in whole vec4s.
    let four = (ho * wo).is_multiple_of(4);
    // Software adapters: a subgroup per channel and a lane per image, where
    // the batch fills the lanes (conv2d_backward_bias_subgroup.wgsl).
    let lanes = super::conv_lanes(gpu);
    let key = if super::cpu_subgroup_kernels(gpu) && s.batch >= lanes {
        crate::shaders::key("conv2d_backward_bias_subgroup").define("LANES", lanes)
    } else {
        crate::shaders::key("conv2d_backward_bias")
    };
    gpu.dispatch(label, &super::elements(key, four), &params, &[dy, db, t], [s.cout, 1, 1])
}

// ---------------------------------------------------------------------------
// Shared small kernel

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SumRowsParams {
    rows: u32,
    n: u32,
    row_stride: u32,
    offset: u32,
    scale: f32,
    _pad: [u32; 3],
}

/// out (n) = scale * sum over r < rows of src[r * row_stride + offset + i]:
/// the second pass of a reduction done in partial sums. Written (=).
#[allow(clippy::too_many_arguments)]
pub fn sum_rows(
    gpu: &Gpu,
    label: &str,
    out: &TensorView,
    src: &TensorView,
    rows: u32,
    n: u32,
    offset: u32,
    row_stride: u32,
    scale: f32,
) -> Result<Dispatch> {
    ensure!(out.len == n as usize, "{label}: sum_rows output has {} values, wants {n}", out.len);
    ensure!(
        rows == 0 || ((rows - 1) as usize * row_stride as usize + offset as usize + n as usize) <= src.len,
        "{label}: sum_rows reads outside its source"
    );
    let params = SumRowsParams { rows, n, row_stride, offset, scale, _pad: [0; 3] };
    gpu.dispatch(label, &crate::shaders::key("sum_rows"), &params, &[src, out], grid_1d(n.div_ceil(256)))
}
