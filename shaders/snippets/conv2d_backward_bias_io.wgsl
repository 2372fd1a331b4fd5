// The conv bias gradient's parameters and operands, shared by its two
// variants (conv2d_backward_bias.wgsl, the workgroup kernel; and
// conv2d_backward_bias_subgroup.wgsl, the CPU family's where the batch fills
// the lanes; Rust side: BiasParams in src/kernels/conv2d_backward.rs). The
// including kernel includes snippets/elements.wgsl first (V: dy holds VW
// pixels an element).

struct Params {
    batch: u32, cout: u32, hw: u32, has_temb: u32,
    temb_stride: u32, temb_offset: u32, inv_div: f32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<V>;
@group(0) @binding(2) var<storage, read_write> db: array<f32>;
@group(0) @binding(3) var<storage, read_write> dtemb: array<f32>;
