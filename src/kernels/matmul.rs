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
    /// matmul_subgroup.wgsl: tm rows x `lanes` tn columns per subgroup of
    /// `lanes` lanes (8, or 16 where the subgroups hold 16:
    /// [`super::conv_lanes`]), for software adapters (CPU family).
    Subgroup { tm: u32, tn: u32, lanes: u32 },
}

/// The kernel for this adapter and shape. On lavapipe the subgroup kernel
/// runs attention's matmuls ~10-20x faster than the generic one (and
/// reads vec4s where strides allow, `vec4_axis`).
pub fn kernel_for(gpu: &Gpu, d: &MatmulDesc) -> MatmulKernel {
    if !super::cpu_subgroup_kernels(gpu) {
        return MatmulKernel::Generic;
    }
    subgroup_block(d, super::conv_lanes(gpu))
}

/// The subgroup kernel's block for `d` on `lanes` lanes (what [`kernel_for`]
/// picks on an adapter with those lanes; benches/matmul.rs compares them).
pub fn subgroup_block(d: &MatmulDesc, lanes: u32) -> MatmulKernel {
    // Up to 32 rows x 64 columns: 256 accumulators per lane, as many as the
    // 1x1 conv kernels use (SUBGROUP_ACCUMULATORS_SMALL). Measured on cifar10-32's
    // attention at batch 16 (q^T k and v p^T, 256 positions x 256 channels,
    // vec4 loads), GFLOP/s: 16 x 32 columns 26, 16 x 64 30, 32 x 32 33,
    // 16 x 128 34, 32 x 64 38; 64 x 32 0.3 (Mesa stops unrolling the tile
    // loops and the arrays go to memory). Small operands get smaller blocks
    // rather than blocks of clamped duplicates. At 16 lanes (512-bit
    // lavapipe) the same blocks ran 1.7-1.8x as fast as at 8 on the
    // attention products of a training step (benches/matmul.rs cpu against
    // cpu-l8, BENCHMARKS.md).
    let tm = match d.m {
        0..=4 => 4,
        5..=8 => 8,
        9..=16 => 16,
        _ => 32,
    };
    // At 16 lanes the same columns a workgroup, half as many a lane.
    let tn = match d.n.div_ceil(lanes / 8) {
        0..=8 => 1,
        9..=16 => 2,
        17..=32 => 4,
        _ => 8,
    };
    MatmulKernel::Subgroup { tm, tn, lanes }
}

/// Whether the subgroup kernel can read operand `o` of `t` ((rows, cols) of
/// each matrix) as aligned vec4 groups along its unit stride: Some(true)
/// along columns (col_stride 1), Some(false) along rows (row_stride 1),
/// None for one value per load. Needs f32 values, the offset and every other
/// stride a multiple of 4, and the unit-stride extent too, so that every
/// group lies wholly inside or wholly outside the matrix (the last group then
/// ends on the operand's last element, inside the bound view). On lavapipe a load costs
/// about the same whatever its width (conv2d_forward_subgroup.wgsl).
fn vec4_axis(o: &Operand, dtype: crate::gpu::Dtype, rows: u32, cols: u32) -> Option<bool> {
    let along_cols = match (o.row_stride, o.col_stride) {
        (_, 1) => true,
        (1, _) => false,
        _ => return None,
    };
    let (other, extent) = if along_cols { (o.row_stride, cols) } else { (o.col_stride, rows) };
    let aligned = [o.offset, o.outer_stride, o.inner_stride, other, extent].iter().all(|v| v % 4 == 0);
    (dtype == crate::gpu::Dtype::F32 && aligned).then_some(along_cols)
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
        MatmulKernel::Subgroup { tm, tn, lanes } => {
            ensure!(tm > 0 && tn > 0, "{label}: empty matmul block");
            super::ensure_lanes(gpu, label, lanes)?;
            let mut key = crate::shaders::key("matmul_subgroup").define("TM", tm).define("TN", tn).define("LANES", lanes);
            // A (m, k): vec4s along k (its columns) or along m (rows), each
            // load of all lanes covering lanes / 2 whole rows of the block.
            // B (k, n): along k (rows) or n (columns).
            let a_vec4 = vec4_axis(&d.a, a.dtype, d.m, d.k).filter(|_| tm % (lanes / 2) == 0);
            let b_vec4 = vec4_axis(&d.b, b.dtype, d.k, d.n).filter(|&cols| !cols || tn % 4 == 0);
            key = match a_vec4 {
                Some(along_k) => key.define("A_LOADS", "vec4").define("A_ALONG_K", along_k).define("A_T", "vec4<f32>"),
                None => key.define("A_LOADS", "scalar").define("A_T", super::act_type(label, "A", a)?),
            };
            key = match b_vec4 {
                Some(along_n) => key.define("B_LOADS", "vec4").define("B_ALONG_K", !along_n).define("B_T", "vec4<f32>"),
                None => key.define("B_LOADS", "scalar").define("B_T", super::act_type(label, "B", b)?),
            };
            // C as vec4s where a lane's columns come four in a row (B along
            // n) and C's rows line up the same way.
            let c_vec4 = b_vec4 == Some(true) && vec4_axis(&d.c, c.dtype, d.m, d.n) == Some(true);
            key = if c_vec4 {
                key.define("C_STORES", "vec4").define("C_T", "vec4<f32>")
            } else {
                key.define("C_STORES", "scalar").define("C_T", super::act_type(label, "C", c)?)
            };
            (key, [d.n.div_ceil(lanes * tn), d.m.div_ceil(tm), d.outer * d.inner])
        }
    };
    let key = match kernel {
        MatmulKernel::Generic => key
            .define("A_T", super::act_type(label, "A", a)?)
            .define("B_T", super::act_type(label, "B", b)?)
            .define("C_T", super::act_type(label, "C", c)?),
        MatmulKernel::Subgroup { .. } => key,
    };
    gpu.dispatch(label, &key, &params, &[a, b, c], grid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Dtype;

    fn op(offset: u32, outer_stride: u32, inner_stride: u32, row_stride: u32, col_stride: u32) -> Operand {
        Operand { offset, outer_stride, inner_stride, row_stride, col_stride }
    }

    #[test]
    fn vec4_loads_follow_the_unit_stride_where_groups_line_up() {
        let f32s = Dtype::F32;
        // Attention per image (c = 64, hw = 256): q^T k reads q along m, k along n.
        let (c, hw) = (64, 256);
        assert_eq!(vec4_axis(&op(0, 3 * c * hw, c * hw, 1, hw), f32s, hw, c), Some(false));
        assert_eq!(vec4_axis(&op(c * hw, 3 * c * hw, c * hw, hw, 1), f32s, c, hw), Some(true));
        // An odd offset, an odd other stride or extent, no unit stride, f16: one value a load.
        assert_eq!(vec4_axis(&op(5, 0, 0, 1, hw), f32s, hw, c), None);
        assert_eq!(vec4_axis(&op(0, 0, 0, 1, 6), f32s, 8, 8), None);
        assert_eq!(vec4_axis(&op(0, 0, 0, 8, 1), f32s, 8, 6), None);
        assert_eq!(vec4_axis(&op(0, 0, 0, 8, 2), f32s, 8, 8), None);
        assert_eq!(vec4_axis(&op(0, 0, 0, 8, 1), Dtype::F16, 8, 8), None);
    }
}
