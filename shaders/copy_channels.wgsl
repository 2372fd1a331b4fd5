// copy_channels: a channel-slice copy between (B, C, hw) tensors,
//   dst[b, dst_offset + c, :] (+)= src[b, src_offset + c, :] for c < channels,
// src is (B, src_channels, hw), dst (B, dst_channels, hw). dst is written (=),
// or accumulated (+=) when accumulate = 1. Forward: the channel concatenation
// of the UNet's skip connections (torch.cat(dim=1)); backward: splitting the
// concatenation's gradient into its inputs' gradients.
// One invocation per copied element: VW values (elements.wgsl), four where
// hw is a multiple of 4.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, channels: u32, hw: u32, src_channels: u32,
    src_offset: u32, dst_channels: u32, dst_offset: u32, accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// V, VW: src and dst hold VW values an element, each in its own type (X_T,
// Y_T: f32 or f16, scalars or vec4s).
// #include "snippets/elements.wgsl"

@group(0) @binding(1) var<storage, read> src: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read_write> dst: array<{{Y_T}}>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let hwv = p.hw / VW;
    let per_image = p.channels * hwv;
    if (i >= p.batch * per_image) {
        return;
    }
    let b = i / per_image;
    let r = i % per_image;
    let s = (b * p.src_channels + p.src_offset) * hwv + r;
    let d = (b * p.dst_channels + p.dst_offset) * hwv + r;
    var v = V(src[s]);
    if (p.accumulate != 0u) {
        v += V(dst[d]);
    }
    dst[d] = {{Y_T}}(v);
}
