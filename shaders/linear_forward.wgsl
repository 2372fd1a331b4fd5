// linear_forward: y[b, o] = sum_i w[o, i] * act(x[b, i]) + bias[o], where
// act is SiLU when silu_input = 1 (the time embedding MLP and every
// ResnetBlock2D's time_emb_proj take silu(temb)) and identity otherwise.
// x is (B, in), w (out, in) as torch.nn.Linear stores it, y (B, out).
// One invocation per output; y is written (=). w may be stored as f32, f16
// or int8 (shaders/snippets/weights_*.wgsl); arithmetic is f32. Where `in`
// is a multiple of 4, x and w are read four values at a time (V =
// vec4<f32>, w_at4; on lavapipe a load costs a loop over the lanes whatever
// its width).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, in_features: u32, out_features: u32, silu_input: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// V, VW, hsum: x holds VW values an element.
// #include "snippets/elements.wgsl"

@group(0) @binding(1) var<storage, read> x: array<V>;
@group(0) @binding(2) var<storage, read> wt: array<WWord>;

// w_at, w_scale: the weight in its stored format (f32, f16 or int8).
// #include "snippets/weights_{{WEIGHTS}}.wgsl"
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let o = gid.x;
    let b = gid.y;
    if (o >= p.out_features || b >= p.batch) {
        return;
    }
    let len = p.in_features / VW;
    var acc = 0.0;
    for (var i = 0u; i < len; i++) {
        var v = x[b * len + i];
        if (p.silu_input != 0u) {
            v = v / (1.0 + exp(-v));
        }
        acc += hsum({{W_AT}}(o * p.in_features + VW * i) * v);
    }
    y[b * p.out_features + o] = acc * w_scale(o, p.out_features * p.in_features) + bias[o];
}
