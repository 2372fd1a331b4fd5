//! One file per op family: the wrappers that turn an op's tensors and shape
//! into a recorded [`Dispatch`](crate::gpu::Dispatch). Shapes are in the
//! argument names and comments, outputs come first (llm.c's convention).
//! Each kernel has a plain-f32 twin in [`crate::reference`] and a test.

pub mod conv2d;
pub mod conv2d_backward;
pub mod elementwise;
pub mod group_norm;
pub mod group_norm_backward;
pub mod linear;
pub mod matmul;
pub mod optim;
pub mod scheduler;

pub use conv2d::{Conv2dEpilogue, Conv2dShape, conv2d_forward, conv2d_forward_scratch_len};
pub use conv2d_backward::{
    conv2d_backward_bias, conv2d_backward_input, conv2d_backward_input_scratch_len, conv2d_backward_weight,
    conv2d_backward_weight_scratch_len, sum_rows,
};
pub use elementwise::{ChannelSlice, copy_channel_slice, copy_channels, scale_add, softmax_backward, softmax_forward};
pub use group_norm::group_norm_forward;
pub use group_norm_backward::{group_norm_backward, group_norm_backward_scratch_len};
pub use linear::{linear_backward, linear_forward};
pub use matmul::{MatmulDesc, Operand, matmul};
pub use scheduler::{DdpmStepParams, ddpm_step};

/// The WGSL element type of an activation tensor, for a shader's `{{..._T}}`
/// placeholder: "f32", or "f16" (natively, `enable f16;`, on adapters with
/// `SHADER_F16`). Activations are never stored in a packed weight format;
/// `what` names the operand in the error.
pub fn act_type(label: &str, what: &str, t: &crate::gpu::TensorView) -> anyhow::Result<&'static str> {
    match t.dtype {
        crate::gpu::Dtype::F32 => Ok("f32"),
        crate::gpu::Dtype::F16 => Ok("f16"),
        other => anyhow::bail!("{label}: {what} is stored as {}, which activations cannot be", other.name()),
    }
}

/// The view of a conv weight `w` (cout, cin, 3, 3) that a CPU-family kernel
/// binds, and the weights snippet that reads it (`{{WEIGHTS}}`): f32 weights
/// as vec4 (`weights_f32v4.wgsl`: a channel's 9 taps from 3 loads) when
/// `taps3x3` (the kernel reads whole 3x3 windows with `w_at9`, or a 1x1's
/// 4 channels with `w_at4`) and the buffer
/// holds the weight rounded up to whole vec4s; otherwise `w` as stored. Made
/// once per dispatch, when a plan is recorded.
pub fn conv_weights(w: &crate::gpu::TensorView, taps3x3: bool) -> (crate::gpu::TensorView, &'static str) {
    match w.rounded_up(4).filter(|_| taps3x3) {
        Some(w4) => (w4, "f32v4"),
        None => (w.clone(), w.dtype.name()),
    }
}

/// `key` with the element width of a memory-bound kernel
/// (`snippets/elements.wgsl`): four values an element (`vec4<f32>`) when
/// `four`, else one. Callers pass `four` only where every row the kernel
/// walks (a channel's pixels, a softmax row) and every offset into them is a
/// multiple of 4, and bind their tensors as arrays of elements; `elem` gives
/// an activation type ("f32", "f16") at that width.
pub fn elements(key: crate::gpu::PipelineKey, four: bool) -> crate::gpu::PipelineKey {
    if four {
        key.define("V", "vec4<f32>")
            .define("VW", 4)
            .define("HSUM", "(v.x + v.y) + (v.z + v.w)")
            .define("HMAX", "max(max(v.x, v.y), max(v.z, v.w))")
    } else {
        key.define("V", "f32").define("VW", 1).define("HSUM", "v").define("HMAX", "v")
    }
}

/// The element type of an activation of type `t` ("f32", "f16") at the
/// width [`elements`] chose.
pub fn elem(t: &str, four: bool) -> String {
    if four { format!("vec4<{t}>") } else { t.to_string() }
}

/// Whether a workgroup of 8 invocations is one subgroup on this adapter
/// (subgroups of 8 lanes or more), which every 8-lane `*_subgroup.wgsl`
/// kernel assumes (one subgroup per workgroup, values handed across lanes
/// 0-7 with subgroupBroadcast). lavapipe's subgroups are 8 lanes at its
/// default 256-bit vectors and 16 at `LP_NATIVE_VECTOR_WIDTH=512`; a
/// workgroup of 8 then fills half a subgroup, the other lanes inactive.
pub fn subgroups_of_8(gpu: &crate::gpu::Gpu) -> bool {
    subgroups_hold(gpu, 8)
}

/// Whether a workgroup of `lanes` invocations is one subgroup: the adapter
/// has subgroups and its smallest subgroup has at least `lanes` lanes.
pub fn subgroups_hold(gpu: &crate::gpu::Gpu, lanes: u32) -> bool {
    gpu.has_subgroups() && gpu.info.subgroup_min_size >= lanes
}

/// Checks that a subgroup kernel's workgroup of `lanes` lanes (8 or 16) is
/// one subgroup on this adapter ([`subgroups_hold`]); the error names
/// `label`.
pub fn ensure_lanes(gpu: &crate::gpu::Gpu, label: &str, lanes: u32) -> anyhow::Result<()> {
    anyhow::ensure!(lanes == 8 || lanes == 16, "{label}: the subgroup kernel runs 8 or 16 lanes, not {lanes}");
    anyhow::ensure!(
        subgroups_hold(gpu, lanes),
        "{label}: the subgroup kernel's {lanes} lanes need subgroups of at least that many"
    );
    Ok(())
}

/// Lanes per workgroup of the CPU family's conv forward kernel (and of the
/// input gradients it computes), weight-gradient and matmul kernels, chosen
/// once per adapter here: 16 where the
/// software adapter's subgroups hold 16 (lavapipe with 512-bit vectors, which
/// `petal`'s headless commands ask for on CPUs where they pay:
/// [`crate::gpu::prefer_wide_vectors`]),
/// else 8. A 16-lane subgroup is one 512-bit vector: each multiply-add
/// instruction does twice the work, while a load still costs one pass over
/// the lanes per value (BENCHMARKS.md, "16-lane convolutions"). The other
/// subgroup kernels (linear, group norm) keep 8 lanes.
pub fn conv_lanes(gpu: &crate::gpu::Gpu) -> u32 {
    if gpu.family == crate::gpu::KernelFamily::Cpu && subgroups_hold(gpu, 16) { 16 } else { 8 }
}

/// Whether the CPU family's kernels may take the Winograd form (the conv
/// forward's F(2x2, 3x3) and the weight gradient's F(3x3, 2x2)):
/// `PETAL_WINOGRAD=0` keeps the direct forms, for whole-pass comparisons.
pub fn winograd_enabled() -> bool {
    std::env::var("PETAL_WINOGRAD").as_deref() != Ok("0")
}

/// Whether this adapter uses the CPU family's subgroup kernels (software
/// adapters such as lavapipe whose subgroups hold 8 lanes).
pub fn cpu_subgroup_kernels(gpu: &crate::gpu::Gpu) -> bool {
    gpu.family == crate::gpu::KernelFamily::Cpu && subgroups_of_8(gpu)
}
