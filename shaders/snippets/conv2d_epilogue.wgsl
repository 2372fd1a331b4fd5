// The conv2d forward's parameters, epilogue operands and epilogue, shared by
// its three variants (conv2d_forward.wgsl, conv2d_forward_subgroup.wgsl,
// conv2d_forward_tiled.wgsl; Rust side: Conv2dParams and Conv2dEpilogue in
// src/kernels/conv2d.rs):
//   y (+)= (conv(x, w) * w_scale + bias + temb + residual) / out_div
// bias (cout), temb (B, temb_stride) read at [b, temb_offset + co]
// (ResnetBlock2D's time_emb_proj), residual and y (B, cout, ho, wo); flags
// say which of bias, temb and residual are there, and whether y is
// accumulated into (+=, ACCUMULATE: the input gradient run as a forward
// convolution) rather than written. The including kernel binds
// x (1) and wt (2).

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, ksize: u32,
    stride: u32, pad_top: u32, pad_left: u32, upsample: u32,
    temb_stride: u32, temb_offset: u32, flags: u32, out_div: f32,
}

const HAS_BIAS: u32 = 1u;
const HAS_TEMB: u32 = 2u;
const HAS_RESIDUAL: u32 = 4u;
const ACCUMULATE: u32 = 8u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> temb: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<{{R_T}}>;
@group(0) @binding(6) var<storage, read_write> y: array<{{Y_T}}>;

// bias[co] + temb[b, temb_offset + co], the per-channel part of the epilogue.
fn channel_add(co: u32, b: u32) -> f32 {
    var add = 0.0;
    if ((p.flags & HAS_BIAS) != 0u) {
        add += bias[co];
    }
    if ((p.flags & HAS_TEMB) != 0u) {
        add += temb[b * p.temb_stride + p.temb_offset + co];
    }
    return add;
}

// Stores output element o: y[o] (+)= (v + residual[o]) / out_div, where v is
// the scaled sum plus channel_add. An element is one value (EPI_V = f32), or
// with EPI_V = vec4<f32> four consecutive pixels of one channel (y and
// residual then bound as vec4s: R_T, Y_T vec4<f32> or vec4<f16>).
fn finish(o: u32, v: {{EPI_V}}) {
    var r = v;
    if ((p.flags & HAS_RESIDUAL) != 0u) {
        r += {{EPI_V}}(residual[o]);
    }
    r /= p.out_div;
    if ((p.flags & ACCUMULATE) != 0u) {
        r += {{EPI_V}}(y[o]);
    }
    y[o] = {{Y_T}}(r);
}
