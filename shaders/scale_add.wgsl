// scale_add: dst (n) (+)= scale * src (n); written (=), or accumulated (+=)
// when accumulate = 1. The residual gradient of the conv epilogue
// (d residual = dy / out_div) and any other scaled gradient copy.
// One invocation per element: VW values (elements.wgsl), four where n is a
// multiple of 4.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    n: u32, accumulate: u32, scale: f32, _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// V, VW: src and dst hold VW values an element.
// #include "snippets/elements.wgsl"

@group(0) @binding(1) var<storage, read> src: array<V>;
@group(0) @binding(2) var<storage, read_write> dst: array<V>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n / VW) {
        return;
    }
    var v = p.scale * src[i];
    if (p.accumulate != 0u) {
        v += dst[i];
    }
    dst[i] = v;
}
