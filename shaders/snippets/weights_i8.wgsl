// Weights stored as symmetric int8 with one f32 scale per row (output
// channel): four values per u32 (element 4i in the lowest byte), then the
// rows' scales as f32 bits from word ceil(len / 4) on. The kernel declares
//   @group(0) @binding(N) var<storage, read> wt: array<WWord>;
// accumulates w_at(i) * x (the integer value as f32) and multiplies each
// row's sum by w_scale(row, len) once, before the epilogue.
alias WWord = u32;

// Byte k (0..3) of a word, sign-extended.
fn w_byte(word: u32, k: u32) -> f32 {
    return f32(extractBits(bitcast<i32>(word), k * 8u, 8u));
}

fn w_at(i: u32) -> f32 {
    return w_byte(wt[i >> 2u], i & 3u);
}

// Elements i .. i + 4 (i a multiple of 4): one word.
fn w_at4(i: u32) -> vec4<f32> {
    let word = wt[i >> 2u];
    return vec4<f32>(w_byte(word, 0u), w_byte(word, 1u), w_byte(word, 2u), w_byte(word, 3u));
}

fn w_scale(row: u32, len: u32) -> f32 {
    return bitcast<f32>(wt[(len + 3u) / 4u + row]);
}

// Elements s .. s + 8 from 3 packed loads instead of 9: the 12 bytes of
// words s / 4 .. s / 4 + 2 hold them, shifted by s % 4 bytes.
fn w_at9(s: u32) -> mat3x3<f32> {
    let b = s >> 2u;
    let sh = (s & 3u) * 8u;
    let a0 = wt[b];
    let a1 = wt[b + 1u];
    let a2 = wt[b + 2u];
    // The 9 bytes from byte s % 4 on, as words u0, u1 and the low byte of u2
    // (shifts by 32 are undefined in WGSL, hence the select).
    let u0 = select((a0 >> sh) | (a1 << (32u - sh)), a0, sh == 0u);
    let u1 = select((a1 >> sh) | (a2 << (32u - sh)), a1, sh == 0u);
    let u2 = a2 >> sh;
    return mat3x3<f32>(
        w_byte(u0, 0u), w_byte(u0, 1u), w_byte(u0, 2u),
        w_byte(u0, 3u), w_byte(u1, 0u), w_byte(u1, 1u),
        w_byte(u1, 2u), w_byte(u1, 3u), w_byte(u2, 0u),
    );
}
