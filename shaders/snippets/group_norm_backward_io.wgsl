// The group norm backward's parameters, operands and dL/dz, shared by its two
// variants (group_norm_backward.wgsl, the CPU family's; and
// group_norm_backward_workgroup.wgsl, the GPU family's; Rust side: Params in
// src/kernels/group_norm_backward.rs). The including kernel includes
// snippets/elements.wgsl first (V: x, dy and dx hold VW pixels an element).

struct Params {
    batch: u32, channels: u32, hw: u32, groups: u32,
    silu: u32, accumulate: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<V>;
@group(0) @binding(2) var<storage, read> x: array<V>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<V>;
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;

// dL/dz from dL/dy at z.
fn dz_of(d: V, z: V) -> V {
    if (p.silu == 0u) {
        return d;
    }
    let s = 1.0 / (1.0 + exp(-z));
    return d * s * (1.0 + z * (1.0 - s));
}
