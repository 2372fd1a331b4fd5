// sum_squares: partials[offset + g] (=) = sum of x^2 over the g-th chunk of
// x (n), one workgroup per chunk of CHUNK values. The global gradient norm
// is the root of the sum of all partials (reduce_sum).
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

struct Params {
    n: u32, offset: u32, _pad0: u32, _pad1: u32,
}

const WG: u32 = 256u;
const CHUNK: u32 = 4096u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;

var<workgroup> acc: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>) {
    let group = wid.x + wid.y * nwg.x;
    let start = group * CHUNK;
    var s = 0.0;
    for (var i = start + lid; i < min(start + CHUNK, p.n); i += WG) {
        let v = x[i];
        s += v * v;
    }
    acc[lid] = s;
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k >>= 1u) {
        if (lid < k) {
            acc[lid] += acc[lid + k];
        }
        workgroupBarrier();
    }
    // A 2-D grid may round the group count up: only groups with data write.
    if (lid == 0u && start < p.n) {
        partials[p.offset + group] = acc[0];
    }
}
