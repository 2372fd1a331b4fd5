//! Fully connected layers (the time-embedding MLP and time_emb_proj).

use crate::gpu::{Dispatch, Dtype, Gpu, TensorView, grid_1d};
use anyhow::{Result, ensure};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    batch: u32,
    in_features: u32,
    out_features: u32,
    silu_input: u32,
}

/// y (B, out) = w (out, in) . act(x (B, in)) + bias (out), act = SiLU when
/// `silu_input`. y is written (=). w may be stored as f32, f16 or int8 with
/// `out` scales ([`Dtype`]), widened in the kernel.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward(
    gpu: &Gpu,
    label: &str,
    y: &TensorView,
    x: &TensorView,
    w: &TensorView,
    bias: &TensorView,
    batch: u32,
    in_features: u32,
    out_features: u32,
    silu_input: bool,
) -> Result<Dispatch> {
    ensure!(x.len == (batch * in_features) as usize, "{label}: input size");
    ensure!(y.len == (batch * out_features) as usize, "{label}: output size");
    ensure!(w.len == (in_features * out_features) as usize, "{label}: weight size");
    ensure!(bias.len == out_features as usize, "{label}: bias size");
    if let Dtype::I8 { rows } = w.dtype {
        ensure!(rows == out_features, "{label}: int8 weight has {rows} scales for {out_features} outputs");
    }
    let params = Params { batch, in_features, out_features, silu_input: silu_input as u32 };
    // Four inputs a load where rows are whole vec4s: f32 weights then bound
    // as vec4s (weights_f32v4.wgsl), packed ones read a group with w_at4.
    let four = in_features.is_multiple_of(4);
    let (w, weights) = match w.rounded_up(4).filter(|_| four) {
        Some(w4) => (w4, "f32v4"),
        None => (w.clone(), w.dtype.name()),
    };
    let key = super::elements(crate::shaders::key("linear_forward"), four)
        .define("WEIGHTS", weights)
        .define("W_AT", if four { "w_at4" } else { "w_at" });
    gpu.dispatch(label, &key, &params, &[x, &w, bias, y], [out_features.div_ceil(64), batch, 1])
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct InputParams {
    batch: u32,
    in_features: u32,
    out_features: u32,
    silu_input: u32,
    accumulate: u32,
    _pad: [u32; 3],
}

/// The backward pass of [`linear_forward`], y (B, out) = w (out, in) .
/// act(x (B, in)) + bias, given dy (B, out):
/// dw (out, in) = sum_b dy[b, o] act(x[b, i]) and db (out) = sum_b dy[b, o]
/// (both written, =); when `dx` is given, dx (B, in) (+)= act'(x) * w^T dy
/// (written, or accumulated when `accumulate_dx`). One or two dispatches.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    gpu: &Gpu,
    label: &str,
    dx: Option<&TensorView>,
    dw: &TensorView,
    db: &TensorView,
    dy: &TensorView,
    x: &TensorView,
    w: &TensorView,
    batch: u32,
    in_features: u32,
    out_features: u32,
    silu_input: bool,
    accumulate_dx: bool,
) -> Result<Vec<Dispatch>> {
    ensure!(x.len == (batch * in_features) as usize, "{label}: input size");
    ensure!(dy.len == (batch * out_features) as usize, "{label}: output gradient size");
    ensure!(w.len == (in_features * out_features) as usize && dw.len == w.len, "{label}: weight size");
    ensure!(db.len == out_features as usize, "{label}: bias gradient size");
    ensure!(w.dtype == Dtype::F32, "{label}: training needs f32 weights, not {}", w.dtype.name());
    let params = Params { batch, in_features, out_features, silu_input: silu_input as u32 };
    let subgroup = super::cpu_subgroup_kernels(gpu);
    let mut v = vec![if subgroup {
        // 32 outputs x 8 x 4 inputs per subgroup of 8 lanes.
        let (to8, ti) = (4, 4);
        let key = crate::shaders::key("linear_backward_weight_subgroup").define("TO8", to8).define("TI", ti);
        let blocks = in_features.div_ceil(8 * ti) * out_features.div_ceil(8 * to8);
        gpu.dispatch(label, &key, &params, &[dy, x, dw, db], grid_1d(blocks))?
    } else {
        let blocks = in_features.div_ceil(8) * out_features.div_ceil(16);
        let key = crate::shaders::key("linear_backward_weight");
        gpu.dispatch(label, &key, &params, &[dy, x, dw, db], grid_1d(blocks.div_ceil(64)))?
    }];
    if let Some(dx) = dx {
        ensure!(dx.len == x.len, "{label}: input gradient size");
        let params = InputParams {
            batch,
            in_features,
            out_features,
            silu_input: silu_input as u32,
            accumulate: accumulate_dx as u32,
            _pad: [0; 3],
        };
        let buffers = [dy, x, w, dx];
        v.push(if subgroup {
            // Up to 16 images x 8 x 4 inputs per subgroup: each weight loaded
            // feeds one sum per image.
            let tb = [4, 8, 16].into_iter().find(|&t| t >= batch).unwrap_or(16);
            let ti = 4;
            let key = crate::shaders::key("linear_backward_input_subgroup").define("TB", tb).define("TI", ti);
            gpu.dispatch(label, &key, &params, &buffers, [in_features.div_ceil(8 * ti), batch.div_ceil(tb), 1])?
        } else {
            let blocks = in_features.div_ceil(8) * batch.div_ceil(4);
            let key = crate::shaders::key("linear_backward_input");
            gpu.dispatch(label, &key, &params, &buffers, grid_1d(blocks.div_ceil(64)))?
        });
    }
    Ok(v)
}
