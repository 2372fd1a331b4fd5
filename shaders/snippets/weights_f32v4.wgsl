// Weights stored as f32 (the training format), read as vec4<f32>: the CPU
// family's conv kernel takes a channel's 3x3 taps from 3 vec4 loads instead
// of 9 scalar ones. On lavapipe a storage load is a loop over the 8 lanes
// whatever its width (see conv2d_forward_subgroup.wgsl), so this saves most
// of the weight loads' time. The kernel declares
//   @group(0) @binding(N) var<storage, read> wt: array<WWord>;
// bound over the weight rounded up to whole vec4s (its Rust wrapper checks
// the buffer has them), and reads element i as w_at(i) * w_scale(row, len).
alias WWord = vec4<f32>;

fn w_at(i: u32) -> f32 {
    return wt[i >> 2u][i & 3u];
}

// Elements i .. i + 4 (i a multiple of 4): one load.
fn w_at4(i: u32) -> vec4<f32> {
    return wt[i >> 2u];
}

fn w_scale(row: u32, len: u32) -> f32 {
    return 1.0;
}

// Elements s .. s + 8, row-major: m[t / 3][t % 3] = w_at(s + t). They lie in
// the vec4s b, b + 1, b + 2 (b = s / 4) at offset r = s % 4, whatever r is;
// the shift by r is two steps of selects (by 2, then by 1).
fn w_at9(s: u32) -> mat3x3<f32> {
    let b = s >> 2u;
    let a0 = wt[b];
    let a1 = wt[b + 1u];
    let a2 = wt[b + 2u];
    let two = (s & 2u) != 0u;
    let one = (s & 1u) != 0u;
    let lo = select(a0, vec4<f32>(a0.zw, a1.xy), two);
    let mid = select(a1, vec4<f32>(a1.zw, a2.xy), two);
    let hi = select(a2.xy, a2.zw, two);
    let g0 = select(lo, vec4<f32>(lo.yzw, mid.x), one);
    let g1 = select(mid, vec4<f32>(mid.yzw, hi.x), one);
    let g2 = select(hi.x, hi.y, one);
    return mat3x3<f32>(g0.x, g0.y, g0.z, g0.w, g1.x, g1.y, g1.z, g1.w, g2);
}
