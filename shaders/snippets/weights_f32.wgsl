// Weights stored as f32 (the training format). Included by every kernel that
// reads conv or linear weights; the kernel declares
//   @group(0) @binding(N) var<storage, read> wt: array<WWord>;
// and reads element i of a (rows, len / rows) weight as w_at(i) * w_scale(row, len).
alias WWord = f32;

// Element i, before its row's scale.
fn w_at(i: u32) -> f32 {
    return wt[i];
}

// Elements i .. i + 4 (i a multiple of 4), before their row's scale.
fn w_at4(i: u32) -> vec4<f32> {
    return vec4<f32>(wt[i], wt[i + 1u], wt[i + 2u], wt[i + 3u]);
}

// The scale of row `row` of a weight of `len` elements: 1 for float formats.
fn w_scale(row: u32, len: u32) -> f32 {
    return 1.0;
}

// The 9 consecutive elements s .. s + 8 (one output channel's 3x3 taps for
// one input channel), row-major in the matrix: m[t / 3][t % 3] = w_at(s + t).
fn w_at9(s: u32) -> mat3x3<f32> {
    return mat3x3<f32>(
        wt[s], wt[s + 1u], wt[s + 2u],
        wt[s + 3u], wt[s + 4u], wt[s + 5u],
        wt[s + 6u], wt[s + 7u], wt[s + 8u],
    );
}
