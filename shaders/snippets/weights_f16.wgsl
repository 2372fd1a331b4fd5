// Weights stored as IEEE half floats, two per u32 (element 2i in the low
// half), widened to f32 here; all arithmetic stays f32. Needs no SHADER_F16:
// unpack2x16float is core WGSL. The kernel declares
//   @group(0) @binding(N) var<storage, read> wt: array<WWord>;
// and reads element i of a (rows, len / rows) weight as w_at(i) * w_scale(row, len).
alias WWord = u32;

fn w_at(i: u32) -> f32 {
    let v = unpack2x16float(wt[i >> 1u]);
    return select(v.x, v.y, (i & 1u) == 1u);
}

// Elements i .. i + 4 (i a multiple of 4): two words.
fn w_at4(i: u32) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(wt[i >> 1u]), unpack2x16float(wt[(i >> 1u) + 1u]));
}

fn w_scale(row: u32, len: u32) -> f32 {
    return 1.0;
}

// Elements s .. s + 8 from 5 packed loads instead of 9: whatever the parity
// of s, they lie in the 10 halves of words s / 2 .. s / 2 + 4.
fn w_at9(s: u32) -> mat3x3<f32> {
    let b = s >> 1u;
    let h0 = unpack2x16float(wt[b]);
    let h1 = unpack2x16float(wt[b + 1u]);
    let h2 = unpack2x16float(wt[b + 2u]);
    let h3 = unpack2x16float(wt[b + 3u]);
    let h4 = unpack2x16float(wt[b + 4u]);
    let even = mat3x3<f32>(h0.x, h0.y, h1.x, h1.y, h2.x, h2.y, h3.x, h3.y, h4.x);
    let odd = mat3x3<f32>(h0.y, h1.x, h1.y, h2.x, h2.y, h3.x, h3.y, h4.x, h4.y);
    if ((s & 1u) == 0u) {
        return even;
    }
    return odd;
}
