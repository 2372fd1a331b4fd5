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

// The sum over lanes l of d[l] * u[l], in lane order: with d = broadcast8(v),
// lane-summed products of the 8 lanes' v with this lane's u.
fn dot8(d: array<f32, 8>, u: array<f32, 8>) -> f32 {
    return d[0] * u[0] + d[1] * u[1] + d[2] * u[2] + d[3] * u[3]
        + d[4] * u[4] + d[5] * u[5] + d[6] * u[6] + d[7] * u[7];
}
