//! The WGSL sources, compiled into the binary, and their templating.
//!
//! A shader names its variant knobs as `{{NAME}}`; [`PipelineKey::define`]
//! supplies the values. Every placeholder must be given a value.

use crate::gpu::PipelineKey;
use anyhow::{Result, anyhow};

macro_rules! shaders {
    ($($name:literal),* $(,)?) => {
        /// (name, source) of every shader in `shaders/`.
        pub const ALL: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../shaders/", $name, ".wgsl")))),*
        ];
    };
}

shaders!(
    "conv2d_forward",
    "conv2d_forward_subgroup",
    "conv2d_forward_tiled",
    "group_norm_forward",
    "group_norm_forward_subgroup",
    "linear_forward",
    "matmul",
    "matmul_subgroup",
    "softmax_forward",
    "copy_channels",
    "ddpm_step",
    "mse_loss",
    "sum_squares",
    "reduce_sum",
    "adamw",
    "ema",
    "conv2d_backward_input",
    "conv2d_backward_input_subgroup",
    "conv2d_backward_weight",
    "conv2d_backward_weight_subgroup",
    "conv2d_backward_bias",
    "sum_rows",
    "scale_add",
    "group_norm_backward",
    "linear_backward_weight",
    "linear_backward_input",
    "softmax_backward",
    "linear_backward_input_subgroup",
    "linear_backward_weight_subgroup",
);

pub fn source(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The WGSL for `key`, with its placeholders filled in.
pub fn render(key: &PipelineKey, features: wgpu::Features) -> Result<String> {
    let src = source(key.shader).ok_or_else(|| anyhow!("no shader named {}", key.shader))?;
    let mut out = src.to_string();
    for (name, value) in &key.defines {
        let pat = format!("{{{{{name}}}}}");
        if !out.contains(&pat) {
            return Err(anyhow!("shader {} has no placeholder {pat}", key.shader));
        }
        out = out.replace(&pat, value);
    }
    if let Some(start) = out.find("{{") {
        let end = out[start..].find("}}").map_or(out.len(), |e| start + e + 2);
        return Err(anyhow!("shader {}: no value for {}", key.shader, &out[start..end]));
    }
    if out.contains("subgroupBroadcast") && !features.contains(wgpu::Features::SUBGROUP) {
        return Err(anyhow!("shader {} needs subgroups, which this adapter lacks", key.shader));
    }
    Ok(out)
}
