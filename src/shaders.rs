//! The WGSL sources, compiled into the binary, and their templating.
//!
//! A shader names its variant knobs as `{{NAME}}`; [`PipelineKey::define`]
//! supplies the values. Every placeholder must be given a value.
//!
//! A line `// #include "snippets/NAME.wgsl"` is replaced by that snippet
//! (placeholders are filled first, so the name may hold one: the kernels that
//! read weights say `// #include "snippets/weights_{{WEIGHTS}}.wgsl"` and their
//! wrapper defines WEIGHTS from the weight tensor's [`Dtype`](crate::gpu::Dtype)).
//! Each weight format is thus read by one snippet shared by every kernel.
//! A snippet's own placeholders are filled from the same values. Snippets:
//! the weight formats, `tile64` (the GPU family's 64x64 workgroup tile),
//! `broadcast8` (the CPU family's 8-lane broadcast), `conv2d_epilogue` (the
//! conv forward's bias, time embedding, residual and output scale).
//! `PETAL_DUMP_SHADERS=DIR` writes every rendered kernel whole
//! ([`crate::gpu::PipelineCache`]).
//!
//! Activation tensors name their element type with a placeholder ending in
//! `_T` (`array<{{X_T}}>`, read as `f32(x[i])`, written as `y[o] = {{Y_T}}(v)`),
//! filled by [`crate::kernels::act_type`] from the tensor's [`Dtype`](crate::gpu::Dtype):
//! `f32`, or `f16` where the adapter offers `SHADER_F16`. When any of them is
//! `f16` the rendered source starts with `enable f16;`; arithmetic stays f32.

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
    "conv2d_split_sum",
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
    "conv2d_backward_input_tiled",
    "conv2d_flip_weights",
    "conv2d_backward_weight",
    "conv2d_backward_weight_subgroup",
    "conv2d_backward_weight_tiled",
    "conv2d_backward_bias",
    "conv2d_backward_bias_subgroup",
    "sum_rows",
    "scale_add",
    "group_norm_backward",
    "group_norm_backward_workgroup",
    "linear_backward_weight",
    "linear_backward_input",
    "softmax_backward",
    "linear_backward_input_subgroup",
    "linear_backward_weight_subgroup",
);

/// (path, source) of every snippet in `shaders/snippets/`.
pub const SNIPPETS: &[(&str, &str)] = &[
    ("snippets/weights_f32.wgsl", include_str!("../shaders/snippets/weights_f32.wgsl")),
    ("snippets/weights_f32v4.wgsl", include_str!("../shaders/snippets/weights_f32v4.wgsl")),
    ("snippets/weights_f16.wgsl", include_str!("../shaders/snippets/weights_f16.wgsl")),
    ("snippets/weights_i8.wgsl", include_str!("../shaders/snippets/weights_i8.wgsl")),
    ("snippets/tile64.wgsl", include_str!("../shaders/snippets/tile64.wgsl")),
    ("snippets/broadcast8.wgsl", include_str!("../shaders/snippets/broadcast8.wgsl")),
    ("snippets/conv2d_epilogue.wgsl", include_str!("../shaders/snippets/conv2d_epilogue.wgsl")),
    ("snippets/conv2d_dw_direct.wgsl", include_str!("../shaders/snippets/conv2d_dw_direct.wgsl")),
    ("snippets/conv2d_dw_winograd.wgsl", include_str!("../shaders/snippets/conv2d_dw_winograd.wgsl")),
    ("snippets/conv2d_dw_x_scalar.wgsl", include_str!("../shaders/snippets/conv2d_dw_x_scalar.wgsl")),
    ("snippets/conv2d_dw_x_vec4.wgsl", include_str!("../shaders/snippets/conv2d_dw_x_vec4.wgsl")),
    ("snippets/conv2d_dw_dy_scalar.wgsl", include_str!("../shaders/snippets/conv2d_dw_dy_scalar.wgsl")),
    ("snippets/conv2d_dw_dy_vec4.wgsl", include_str!("../shaders/snippets/conv2d_dw_dy_vec4.wgsl")),
    ("snippets/elements.wgsl", include_str!("../shaders/snippets/elements.wgsl")),
    ("snippets/group_norm_backward_io.wgsl", include_str!("../shaders/snippets/group_norm_backward_io.wgsl")),
    ("snippets/conv2d_backward_bias_io.wgsl", include_str!("../shaders/snippets/conv2d_backward_bias_io.wgsl")),
    ("snippets/matmul_a_scalar.wgsl", include_str!("../shaders/snippets/matmul_a_scalar.wgsl")),
    ("snippets/matmul_a_vec4.wgsl", include_str!("../shaders/snippets/matmul_a_vec4.wgsl")),
    ("snippets/matmul_b_scalar.wgsl", include_str!("../shaders/snippets/matmul_b_scalar.wgsl")),
    ("snippets/matmul_b_vec4.wgsl", include_str!("../shaders/snippets/matmul_b_vec4.wgsl")),
    ("snippets/matmul_c_scalar.wgsl", include_str!("../shaders/snippets/matmul_c_scalar.wgsl")),
    ("snippets/matmul_c_vec4.wgsl", include_str!("../shaders/snippets/matmul_c_vec4.wgsl")),
];

pub fn source(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// Replaces every `// #include "PATH"` line by the snippet at PATH.
fn expand_includes(shader: &str, src: &str) -> Result<String> {
    let mut out = String::with_capacity(src.len());
    for line in src.lines() {
        match line.trim().strip_prefix("// #include ") {
            Some(rest) => {
                let path = rest.trim().trim_matches('"');
                let snippet = SNIPPETS
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, s)| *s)
                    .ok_or_else(|| anyhow!("shader {shader}: no snippet {path}"))?;
                out.push_str(snippet);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    Ok(out)
}

/// The WGSL for `key`, with its placeholders filled in.
/// The pipeline key of shader `name` (a file of `shaders/`), rendered by [`render`].
pub fn key(name: &'static str) -> PipelineKey {
    PipelineKey::new(name, render)
}

pub fn render(key: &PipelineKey, features: wgpu::Features) -> Result<String> {
    let src = source(key.shader).ok_or_else(|| anyhow!("no shader named {}", key.shader))?;
    // Placeholders are filled, snippets included, and the snippets'
    // placeholders filled from the same values.
    let mut used = vec![false; key.defines.len()];
    let mut fill = |out: &mut String| {
        for (i, (name, value)) in key.defines.iter().enumerate() {
            let pat = format!("{{{{{name}}}}}");
            if out.contains(&pat) {
                used[i] = true;
                *out = out.replace(&pat, value);
            }
        }
    };
    let mut out = src.to_string();
    fill(&mut out);
    if out.contains("// #include ") {
        out = expand_includes(key.shader, &out)?;
        fill(&mut out);
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(anyhow!("shader {} has no placeholder {{{{{}}}}}", key.shader, key.defines[i].0));
    }
    if key.defines.iter().any(|(name, value)| name.ends_with("_T") && (value == "f16" || value.contains("<f16>"))) {
        if !features.contains(wgpu::Features::SHADER_F16) {
            return Err(anyhow!("shader {} keeps activations in f16, which needs SHADER_F16; this adapter lacks it", key.shader));
        }
        out.insert_str(0, "enable f16;\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_take_the_snippet_of_the_weight_format() {
        for format in ["f32", "f16", "i8"] {
            let key = crate::kernels::elements(crate::shaders::key("linear_forward"), false)
                .define("WEIGHTS", format)
                .define("W_AT", "w_at");
            let src = render(&key, wgpu::Features::empty()).unwrap();
            assert!(!src.contains("#include"), "{format}: include left in place");
            let marker = if format == "f32" { "alias WWord = f32;" } else { "alias WWord = u32;" };
            assert!(src.contains(marker) && src.contains("fn w_at("), "{format}");
        }
        let key = crate::kernels::elements(crate::shaders::key("linear_forward"), false)
            .define("WEIGHTS", "q4")
            .define("W_AT", "w_at");
        let err = render(&key, wgpu::Features::empty()).unwrap_err();
        assert!(err.to_string().contains("no snippet snippets/weights_q4.wgsl"), "{err}");
    }

    #[test]
    fn subgroup_kernels_include_the_broadcast_snippet() {
        let keys = [
            key("matmul_subgroup")
                .define("TM", 4)
                .define("TN", 2)
                .define("LANES", 8)
                .define("A_LOADS", "scalar")
                .define("B_LOADS", "scalar")
                .define("C_STORES", "scalar")
                .define("A_T", "f32")
                .define("B_T", "f32")
                .define("C_T", "f32"),
            key("linear_backward_input_subgroup").define("TB", 4).define("TI", 2),
            key("linear_backward_weight_subgroup").define("TO8", 2).define("TI", 2),
        ];
        let snippet = SNIPPETS.iter().find(|(p, _)| *p == "snippets/broadcast8.wgsl").unwrap().1;
        let in_snippet = snippet.matches("subgroupBroadcast(").count();
        for k in keys {
            let src = render(&k, wgpu::Features::SUBGROUP).unwrap();
            assert!(src.contains("fn broadcast8(") && src.contains("fn dot8(") && !src.contains("#include"), "{}", k.shader);
            assert_eq!(src.matches("subgroupBroadcast(").count(), in_snippet, "{}: broadcasts only in the snippet", k.shader);
            let err = render(&k, wgpu::Features::empty()).unwrap_err().to_string();
            assert!(err.contains("needs subgroups"), "{err}");
        }
    }

    #[test]
    fn snippet_placeholders_are_filled_and_unused_values_refused() {
        let conv = |shader| {
            key(shader).define("WEIGHTS", "f32").define("X_T", "f32").define("R_T", "f32").define("Y_T", "f16").define("EPI_V", "f32")
        };
        let tiled = |split, partial| conv("conv2d_forward_tiled").define("K", 3).define("SPLIT", split).define("PARTIAL", partial);
        let split_sum = key("conv2d_split_sum").define("SPLIT", 4).define("R_T", "f32").define("Y_T", "f16").define("EPI_V", "f32");
        for k in [
            conv("conv2d_forward").define("TM", 4),
            tiled(1, "fn put_partial(i: u32, v: f32) {}"),
            tiled(4, "@group(0) @binding(7) var<storage, read_write> partial: array<f32>;\nfn put_partial(i: u32, v: f32) { partial[i] = v; }"),
            split_sum,
        ] {
            let src = render(&k, wgpu::Features::SHADER_F16).unwrap();
            // y and finish() are declared by the epilogue snippet, with Y_T filled in.
            assert!(src.contains("var<storage, read_write> y: array<f16>;") && src.contains("fn finish(o: u32, v: f32)") && src.contains("y[o] = f16(r);"), "{}", k.shader);
            assert_eq!(src.matches("struct Params").count(), 1, "{}", k.shader);
        }
        let err = render(&conv("conv2d_forward").define("TM", 4).define("NOPE", 1), wgpu::Features::SHADER_F16).unwrap_err();
        assert!(err.to_string().contains("has no placeholder {{NOPE}}"), "{err}");
    }

    #[test]
    fn f16_activations_enable_f16_and_need_the_feature() {
        let copy = |four| crate::kernels::elements(crate::shaders::key("copy_channels"), four);
        let key = copy(false).define("X_T", "f16").define("Y_T", "f32");
        let src = render(&key, wgpu::Features::SHADER_F16).unwrap();
        assert!(src.starts_with("enable f16;\n") && src.contains("array<f16>"), "{src}");
        let err = render(&key, wgpu::Features::empty()).unwrap_err().to_string();
        assert!(err.contains("needs SHADER_F16"), "{err}");
        // Also at four values an element.
        let key = copy(true).define("X_T", "vec4<f16>").define("Y_T", "vec4<f32>");
        let src = render(&key, wgpu::Features::SHADER_F16).unwrap();
        assert!(src.starts_with("enable f16;\n") && src.contains("array<vec4<f16>>"), "{src}");
        // f16 weights are packed words: no `enable f16;`.
        let key = crate::kernels::elements(crate::shaders::key("linear_forward"), true)
            .define("WEIGHTS", "f16")
            .define("W_AT", "w_at4");
        assert!(!render(&key, wgpu::Features::empty()).unwrap().contains("enable f16"));
        let key = copy(true).define("X_T", "vec4<f32>").define("Y_T", "vec4<f32>");
        assert!(!render(&key, wgpu::Features::SHADER_F16).unwrap().contains("enable f16"));
    }
}
