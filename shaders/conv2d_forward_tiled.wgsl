// conv2d_forward, GPU-family variant for hardware GPUs. The same op and
// epilogue as conv2d_forward.wgsl: y = (conv(x, w) + bias + temb + residual)
// / out_div, x read through zero padding, stride and optional nearest 2x
// upsampling, w (cout, cin, k, k) in torch's layout, y written (=).
//
// Classic workgroup-memory tiled implicit GEMM: M = cout, N = batch*ho*wo,
// K = cin*k*k. A workgroup of 16 x 16 invocations computes a BM x BN = 64 x 64
// tile of y; per K step of BK = 16 it stages 64 x 16 weights and the 16 x 64
// im2col block of x (gathered on the fly, nothing materialised) in workgroup
// memory, then each invocation accumulates 4 channels x 4 pixels in
// registers. Pixels are strided by 16 within the tile (n = tx + 16 j) so that
// neighbouring invocations load and store neighbouring pixels (coalesced).
// Portable WGSL: no subgroups, 8 KiB of workgroup memory. w may be stored as
// f32, f16 or int8 (shaders/snippets/weights_*.wgsl); arithmetic is f32.
//
// Split K (SPLIT > 1): when a convolution has too few tiles to fill the GPU
// (batch 1, 8x8 and 4x4 images: 4 workgroups running 144-288 K steps each,
// one after another), the dispatch's z cuts the K loop into SPLIT parts.
// Each part writes its scaled partial tile, without the epilogue, to
// partial (SPLIT, cout, batch*ho*wo) in f32, and conv2d_split_sum.wgsl adds
// the parts up and applies the epilogue. The Rust wrapper picks SPLIT
// (tiled_split_for in src/kernels/conv2d.rs).
// petal:trusted (indices are clamped or guarded by sizes its Rust wrapper checks; loops are finite)

// Params p, the epilogue operands (bias, temb, residual, y), channel_add and finish.
// #include "snippets/conv2d_epilogue.wgsl"

const K: u32 = {{K}}u;  // kernel size (a constant so that k -> (ci, ky, kx) divides by constants)
const KK: u32 = K * K;
const SPLIT: u32 = {{SPLIT}}u; // parts of the K loop, one per workgroup z

// put_partial(i, v): partial[i] = v with SPLIT > 1; nothing (and no binding)
// without.
{{PARTIAL}}

@group(0) @binding(1) var<storage, read> x: array<{{X_T}}>;
@group(0) @binding(2) var<storage, read> wt: array<WWord>;

// w_at, w_scale: wt in its stored format (f32, f16 or int8).
// #include "snippets/weights_{{WEIGHTS}}.wgsl"

// BM, BN, BK, tile_multiply, and the staged blocks: As the weights (4
// output channels per vec4), Bs the im2col block of x.
// #include "snippets/tile64.wgsl"

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let hw = p.ho * p.wo;
    let n_total = p.batch * hw;
    let k_total = p.cin * KK;
    let n0 = wid.x * BN;
    let co0 = wid.y * BM;
    let up = p.upsample;
    let hin = i32(p.h << up);
    let win = i32(p.w << up);
    let plane = p.h * p.w;

    // The pixel this invocation gathers for Bs (column t % 64, rows
    // t / 64 + 4 r), fixed for the whole K loop.
    let bn = t % BN;
    let n_load = n0 + bn;
    let n_ok = n_load < n_total;
    let nl = min(n_load, n_total - 1u);
    let b_load = nl / hw;
    let pix = nl % hw;
    let iy0 = i32((pix / p.wo) * p.stride) - i32(p.pad_top);
    let ix0 = i32((pix % p.wo) * p.stride) - i32(p.pad_left);
    let xbase = b_load * p.cin * plane;

    // The weights this invocation loads for As: channel co0 + t / 4, four
    // consecutive k.
    let am = t / 4u;
    let ak = (t % 4u) * 4u;
    let a_co = co0 + am;

    var acc: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j++) {
        acc[j] = vec4<f32>(0.0);
    }
    // This workgroup's part of the K loop: whole BK steps, so that only the
    // last part can end inside a step (checked against k_total below).
    let steps = (k_total + BK - 1u) / BK;
    let per_part = (steps + SPLIT - 1u) / SPLIT;
    let k_begin = wid.z * per_part * BK;
    let k_end = min(k_total, k_begin + per_part * BK);
    for (var k0 = k_begin; k0 < k_end; k0 += BK) {
        var av: array<f32, 4>;
        for (var c = 0u; c < 4u; c++) {
            let k = k0 + ak + c;
            let ok = a_co < p.cout && k < k_total;
            av[c] = select(0.0, w_at(min(a_co, p.cout - 1u) * k_total + min(k, k_total - 1u)), ok);
        }
        for (var c = 0u; c < 4u; c++) {
            // As[k][m] with m = am: component am % 4 of vec4 am / 4.
            As[(ak + c) * (BM / 4u) + am / 4u][am % 4u] = av[c];
        }
        for (var r = 0u; r < 4u; r++) {
            let kr = t / BN + 4u * r;
            let k = k0 + kr;
            let ci = k / KK;
            let tap = k % KK;
            let iy = iy0 + i32(tap / K);
            let ix = ix0 + i32(tap % K);
            let inside = n_ok && k < k_total && iy >= 0 && ix >= 0 && iy < hin && ix < win;
            let sy = u32(clamp(iy, 0, hin - 1)) >> up;
            let sx = u32(clamp(ix, 0, win - 1)) >> up;
            let idx = xbase + min(ci, p.cin - 1u) * plane + sy * p.w + sx;
            Bs[kr * BN + bn] = select(0.0, f32(x[idx]), inside);
        }
        tile_multiply(&acc, lid);
    }

    for (var j = 0u; j < 4u; j++) {
        let n = n0 + lid.x + 16u * j;
        if (n >= n_total) {
            continue;
        }
        let b = n / hw;
        let pn = n % hw;
        for (var i = 0u; i < 4u; i++) {
            let co = co0 + lid.y * 4u + i;
            if (co >= p.cout) {
                continue;
            }
            let v = acc[j][i] * w_scale(co, p.cout * k_total);
            if (SPLIT == 1u) {
                finish((b * p.cout + co) * hw + pn, v + channel_add(co, b));
            } else {
                put_partial((wid.z * p.cout + co) * n_total + n, v);
            }
        }
    }
}
