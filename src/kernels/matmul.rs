//! Batched, strided matrix products: attention scores and outputs, and later
//! their gradients. Any transpose is a choice of strides.

use crate::gpu::{Dispatch, Gpu, TensorView};
use anyhow::{Result, ensure};

/// Where a matrix of a batch lives: element (r, c) of batch z = outer *
/// inner_count + inner is at `offset + outer*outer_stride + inner*inner_stride
/// + r*row_stride + c*col_stride`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Operand {
    pub offset: u32,
    pub outer_stride: u32,
    pub inner_stride: u32,
    pub row_stride: u32,
    pub col_stride: u32,
}

impl Operand {
    /// The largest index this operand reaches (for bounds checks).
    fn max_index(&self, outer: u32, inner: u32, rows: u32, cols: u32) -> u64 {
        self.offset as u64
            + (outer as u64 - 1) * self.outer_stride as u64
            + (inner as u64 - 1) * self.inner_stride as u64
            + (rows as u64 - 1) * self.row_stride as u64
            + (cols as u64 - 1) * self.col_stride as u64
    }
}

/// C (m, n) = alpha * A (m, k) . B (k, n) [+ C], for `outer * inner` matrices.
#[derive(Clone, Copy, Debug)]
pub struct MatmulDesc {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub outer: u32,
    pub inner: u32,
    pub a: Operand,
    pub b: Operand,
    pub c: Operand,
    pub alpha: f32,
    /// Add to C instead of overwriting it.
    pub accumulate: bool,
}

impl MatmulDesc {
    /// Multiply-adds of the `inner` products of one `outer` index (m x n x k
    /// each): per image, where `outer` is the batch (the UNet's attention).
    pub fn macs_per_outer(&self) -> u64 {
        self.m as u64 * self.n as u64 * self.k as u64 * self.inner as u64
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    inner_count: u32,
    a: [u32; 4],
    b: [u32; 4],
    c: [u32; 4],
    a_off: u32,
    b_off: u32,
    c_off: u32,
    batch: u32,
    alpha: f32,
    accumulate: u32,
    _pad: [u32; 2],
}

/// Which kernel computes a matmul. Both compute the same thing and are tested
/// against `reference::matmul`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// matmul.wgsl: 4 x 4 per invocation, any adapter.
    Generic,
    /// matmul_subgroup.wgsl: tm rows x 8 tn columns per subgroup of 8 lanes,
    /// for software adapters (CPU family) with 8-lane subgroups.
    Subgroup { tm: u32, tn: u32 },
}

/// The kernel for this adapter and shape. On lavapipe the subgroup kernel
/// runs attention's matmuls ~10-20x faster than the generic one.
pub fn kernel_for(gpu: &Gpu, d: &MatmulDesc) -> MatmulKernel {
    if !super::cpu_subgroup_kernels(gpu) {
        return MatmulKernel::Generic;
    }
    // Up to 16 rows x 32 columns: 64 accumulators per lane, few enough for
    // the driver to keep in registers; small operands get smaller blocks
    // rather than blocks of clamped duplicates.
    let tm = match d.m {
        0..=4 => 4,
        5..=8 => 8,
        _ => 16,
    };
    let tn = match d.n {
        0..=8 => 1,
        9..=16 => 2,
        _ => 4,
    };
    MatmulKernel::Subgroup { tm, tn }
}

/// c = alpha * a . b (written, or accumulated when `d.accumulate`), with the
/// adapter's kernel.
pub fn matmul(
    gpu: &Gpu,
    label: &str,
    c: &TensorView,
    a: &TensorView,
    b: &TensorView,
    d: &MatmulDesc,
) -> Result<Dispatch> {
    matmul_with(gpu, kernel_for(gpu, d), label, c, a, b, d)
}

/// `matmul` with an explicit kernel (tests, benchmarks).
pub fn matmul_with(
    gpu: &Gpu,
    kernel: MatmulKernel,
    label: &str,
    c: &TensorView,
    a: &TensorView,
    b: &TensorView,
    d: &MatmulDesc,
) -> Result<Dispatch> {
    ensure!(d.m > 0 && d.n > 0 && d.k > 0 && d.outer > 0 && d.inner > 0, "{label}: empty matmul");
    ensure!((d.a.max_index(d.outer, d.inner, d.m, d.k) as usize) < a.len, "{label}: A out of range");
    ensure!((d.b.max_index(d.outer, d.inner, d.k, d.n) as usize) < b.len, "{label}: B out of range");
    ensure!((d.c.max_index(d.outer, d.inner, d.m, d.n) as usize) < c.len, "{label}: C out of range");
    let strides = |o: &Operand| [o.outer_stride, o.inner_stride, o.row_stride, o.col_stride];
    let params = Params {
        m: d.m,
        n: d.n,
        k: d.k,
        inner_count: d.inner,
        a: strides(&d.a),
        b: strides(&d.b),
        c: strides(&d.c),
        a_off: d.a.offset,
        b_off: d.b.offset,
        c_off: d.c.offset,
        batch: d.outer * d.inner,
        alpha: d.alpha,
        accumulate: d.accumulate as u32,
        _pad: [0; 2],
    };
    let (key, grid) = match kernel {
        MatmulKernel::Generic => (crate::shaders::key("matmul"), [d.n.div_ceil(32), d.m.div_ceil(32), d.outer * d.inner]),
        MatmulKernel::Subgroup { tm, tn } => {
            ensure!(tm > 0 && tn > 0, "{label}: empty matmul block");
            let key = crate::shaders::key("matmul_subgroup").define("TM", tm).define("TN", tn);
            (key, [d.n.div_ceil(8 * tn), d.m.div_ceil(tm), d.outer * d.inner])
        }
    };
    let key = key
        .define("A_T", super::act_type(label, "A", a)?)
        .define("B_T", super::act_type(label, "B", b)?)
        .define("C_T", super::act_type(label, "C", c)?);
    gpu.dispatch(label, &key, &params, &[a, b, c], grid)
}
