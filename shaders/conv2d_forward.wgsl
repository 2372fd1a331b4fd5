// conv2d_forward: y = (conv(x, w) + bias + temb + residual) / out_div
// as implicit GEMM: M = cout, N = batch*ho*wo, K = cin*k*k.
//
// x is (B, cin, h, w); with upsample = 1 it is read as if nearest-upsampled
// to (2h, 2w) first (diffusers' Upsample2D), so the 4x larger tensor never
// exists. w is (cout, cin, k, k); bias (cout); temb (B, temb_stride), added
// at [b, temb_offset + co] (ResnetBlock2D's time_emb_proj); residual and y are
// (B, cout, ho, wo). Padding may be asymmetric (Downsample2D pads right and
// bottom only when downsample_padding = 0).
//
// Generic variant: each invocation computes TM output channels x 4
// consecutive output pixels of one image, accumulating in registers.
// y is written (=), never accumulated. w may be stored as f32, f16 or int8
// (see shaders/snippets/weights_*.wgsl); arithmetic is f32.
// petal:trusted (indices are clamped or guarded by sizes its Rust wrapper checks; loops are finite)

// Params p, the epilogue operands (bias, temb, residual, y), channel_add and finish.
// #include "snippets/conv2d_epilogue.wgsl"
const TM: u32 = {{TM}}u;

// w_at, w_scale: wt in its stored format (f32, f16 or int8).
// #include "snippets/weights_{{WEIGHTS}}.wgsl"

@group(0) @binding(1) var<storage, read> x: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> wt: array<WWord>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let hw = p.ho * p.wo;
    let blocks_per_img = (hw + 3u) / 4u;
    if (gid.x >= p.batch * blocks_per_img) {
        return;
    }
    let b = gid.x / blocks_per_img;
    let p0 = (gid.x % blocks_per_img) * 4u;
    let co0 = gid.y * TM;

    // The logical input size, after the optional upsampling.
    let up = p.upsample;
    let hin = p.h << up;
    let win = p.w << up;

    var oy: vec4<i32>;
    var ox: vec4<i32>;
    var live: vec4<bool>;
    for (var j = 0u; j < 4u; j++) {
        let pix = min(p0 + j, hw - 1u);
        live[j] = p0 + j < hw;
        oy[j] = i32((pix / p.wo) * p.stride) - i32(p.pad_top);
        ox[j] = i32((pix % p.wo) * p.stride) - i32(p.pad_left);
    }

    var acc: array<vec4<f32>, TM>;
    for (var t = 0u; t < TM; t++) {
        acc[t] = vec4<f32>(0.0);
    }
    let kk = p.ksize * p.ksize;
    let wrow = p.cin * kk;
    for (var ci = 0u; ci < p.cin; ci++) {
        let xbase = (b * p.cin + ci) * p.h * p.w;
        for (var ky = 0u; ky < p.ksize; ky++) {
            for (var kx = 0u; kx < p.ksize; kx++) {
                var xv = vec4<f32>(0.0);
                for (var j = 0u; j < 4u; j++) {
                    let iy = oy[j] + i32(ky);
                    let ix = ox[j] + i32(kx);
                    let inside = iy >= 0 && ix >= 0 && iy < i32(hin) && ix < i32(win);
                    let sy = u32(max(iy, 0)) >> up;
                    let sx = u32(max(ix, 0)) >> up;
                    let idx = xbase + min(sy, p.h - 1u) * p.w + min(sx, p.w - 1u);
                    xv[j] = select(0.0, f32(x[idx]), inside);
                }
                let k = ci * kk + ky * p.ksize + kx;
                for (var t = 0u; t < TM; t++) {
                    let co = min(co0 + t, p.cout - 1u);
                    acc[t] += w_at(co * wrow + k) * xv;
                }
            }
        }
    }

    for (var t = 0u; t < TM; t++) {
        let co = co0 + t;
        if (co >= p.cout) {
            break;
        }
        let scale = w_scale(co, p.cout * wrow);
        let add = channel_add(co, b);
        for (var j = 0u; j < 4u; j++) {
            if (!live[j]) {
                continue;
            }
            finish((b * p.cout + co) * hw + p0 + j, acc[t][j] * scale + add);
        }
    }
}
