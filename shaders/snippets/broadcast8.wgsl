// The 8-lane broadcast of the subgroup kernels (*_subgroup.wgsl; why that
// shape pays on llvmpipe: conv2d_forward_subgroup.wgsl). A subgroup of 8
// invocations runs as one 8-wide SIMD vector, so handing a value from one
// lane to the others is a register shuffle, no memory.

// broadcast8(v)[l] is lane l's v, on every lane. Index the result with
// constants or in loops over 0..8 (which Mesa unrolls): llvmpipe keeps
// constant-indexed private arrays in registers.
fn broadcast8(v: f32) -> array<f32, 8> {
    return array<f32, 8>(
        subgroupBroadcast(v, 0u), subgroupBroadcast(v, 1u),
        subgroupBroadcast(v, 2u), subgroupBroadcast(v, 3u),
        subgroupBroadcast(v, 4u), subgroupBroadcast(v, 5u),
        subgroupBroadcast(v, 6u), subgroupBroadcast(v, 7u),
    );
}

// broadcast8_hi(v)[l] is lane 8 + l's v, on every lane: the upper half of a
// 16-lane subgroup (kernels that run 8-lane blocks in both halves).
fn broadcast8_hi(v: f32) -> array<f32, 8> {
    return array<f32, 8>(
        subgroupBroadcast(v, 8u), subgroupBroadcast(v, 9u),
        subgroupBroadcast(v, 10u), subgroupBroadcast(v, 11u),
        subgroupBroadcast(v, 12u), subgroupBroadcast(v, 13u),
        subgroupBroadcast(v, 14u), subgroupBroadcast(v, 15u),
    );
}

// The sum over lanes l of d[l] * u[l], in lane order: with d = broadcast8(v),
// lane-summed products of the 8 lanes' v with this lane's u.
fn dot8(d: array<f32, 8>, u: array<f32, 8>) -> f32 {
    return d[0] * u[0] + d[1] * u[1] + d[2] * u[2] + d[3] * u[3]
        + d[4] * u[4] + d[5] * u[5] + d[6] * u[6] + d[7] * u[7];
}

// The vec4s v of lanes 2h and 2h + 1 as 8 values (lane 2h's x, y, z, w,
// then lane 2h + 1's), on every lane; h < 4 on 8 lanes, h < 8 on 16. Call it
// with h known when the shader is compiled (a constant, or a counter of a
// loop Mesa unrolls), so that the switch folds away.
fn broadcast_pair(v: vec4<f32>, h: u32) -> array<f32, 8> {
    var lo: vec4<f32>;
    var hi: vec4<f32>;
    switch h {
        case 0u: {
            lo = subgroupBroadcast(v, 0u);
            hi = subgroupBroadcast(v, 1u);
        }
        case 1u: {
            lo = subgroupBroadcast(v, 2u);
            hi = subgroupBroadcast(v, 3u);
        }
        case 2u: {
            lo = subgroupBroadcast(v, 4u);
            hi = subgroupBroadcast(v, 5u);
        }
        case 3u: {
            lo = subgroupBroadcast(v, 6u);
            hi = subgroupBroadcast(v, 7u);
        }
        case 4u: {
            lo = subgroupBroadcast(v, 8u);
            hi = subgroupBroadcast(v, 9u);
        }
        case 5u: {
            lo = subgroupBroadcast(v, 10u);
            hi = subgroupBroadcast(v, 11u);
        }
        case 6u: {
            lo = subgroupBroadcast(v, 12u);
            hi = subgroupBroadcast(v, 13u);
        }
        default: {
            lo = subgroupBroadcast(v, 14u);
            hi = subgroupBroadcast(v, 15u);
        }
    }
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}
