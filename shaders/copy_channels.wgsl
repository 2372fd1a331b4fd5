// copy_channels: dst[b, c_offset + c, :] = src[b, c, :] for c < c_src, the
// channel concatenation of the UNet's skip connections (torch.cat(dim=1)).
// src is (B, c_src, hw), dst (B, c_dst, hw). One invocation per element;
// dst is written (=).

struct Params {
    batch: u32, c_src: u32, hw: u32, c_dst: u32,
    c_offset: u32, _pad0: u32, _pad1: u32, _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    let per_image = p.c_src * p.hw;
    if (i >= p.batch * per_image) {
        return;
    }
    let b = i / per_image;
    let r = i % per_image;
    dst[b * p.c_dst * p.hw + p.c_offset * p.hw + r] = src[i];
}
