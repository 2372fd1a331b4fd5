// conv2d_backward_input, GPU-family variant for hardware GPUs. The same op as
// conv2d_backward_input.wgsl:
// dx[b, ci, iy, ix] (+)= inv_div * sum over co, ky, kx and the logical input
//     positions (ly, lx) of (iy, ix) of dy[b, co, oy, ox] * w[co, ci, ky, kx]
// where oy * S = ly + pad_top - ky and ox * S = lx + pad_left - kx (taps that
// land between strided outputs or outside dy contribute nothing); the logical
// positions of a stored pixel are (iy, ix) itself, or with UP = 1 the four
// pixels of its nearest-2x upsampled block.
//
// The forward's workgroup-memory tiled GEMM (conv2d_forward_tiled.wgsl) with
// the roles of x and dy swapped: M = cin, N = batch*h*w dx pixels,
// K = cout*k*k. A workgroup of 16 x 16 invocations computes a BM x BN =
// 64 x 64 tile of dx; per K step of BK = 16 it stages 64 x 16 weights and the
// 16 x 64 block of dy each dx pixel reads (gathered on the fly) in workgroup
// memory, then each invocation accumulates 4 channels x 4 pixels in
// registers. With stride 2 three K entries in four gather zeros: the price of
// one kernel for every stride (only the downsampling convs pay it).
// petal:trusted (indices are clamped or guarded by sizes its Rust wrapper checks; loops are finite)

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, accumulate: u32,
    pad_top: u32, pad_left: u32, inv_div: f32, _pad0: u32,
}

const K: u32 = {{K}}u;
const S: u32 = {{S}}u;
const UP: u32 = {{UP}}u;  // 1: the forward read x nearest-upsampled 2x
const KK: u32 = K * K;
const NL: u32 = 1u << UP;  // logical positions per stored row / column

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

// BM, BN, BK, tile_multiply, and the staged blocks: As the weights (4 input
// channels per vec4), Bs the gathered dy block.
// #include "snippets/tile64.wgsl"

// dy at output coordinate t = l + pad - k along one dimension: the output
// index, or -1 when t falls between strided outputs or outside 0..n.
fn out_index(t: i32, n: u32) -> i32 {
    if (t < 0 || (t % i32(S)) != 0 || t / i32(S) >= i32(n)) {
        return -1;
    }
    return t / i32(S);
}

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let hw = p.h * p.w;
    let n_total = p.batch * hw;
    let k_total = p.cout * KK;
    let n0 = wid.x * BN;
    let ci0 = wid.y * BM;
    let oplane = p.ho * p.wo;

    // The dx pixel this invocation gathers dy for (column t % 64, rows
    // t / 64 + 4 r), fixed for the whole K loop.
    let bn = t % BN;
    let n_load = n0 + bn;
    let n_ok = n_load < n_total;
    let nl = min(n_load, n_total - 1u);
    let b_load = nl / hw;
    let pix = nl % hw;
    let ly0 = i32((pix / p.w) << UP) + i32(p.pad_top);
    let lx0 = i32((pix % p.w) << UP) + i32(p.pad_left);
    let ybase = b_load * p.cout * oplane;

    // The weights this invocation loads for As: input channel ci0 + t / 4,
    // four consecutive k = co * KK + tap.
    let am = t / 4u;
    let ak = (t % 4u) * 4u;
    let a_ci = ci0 + am;

    var acc: array<vec4<f32>, 4>;
    for (var j = 0u; j < 4u; j++) {
        acc[j] = vec4<f32>(0.0);
    }
    for (var k0 = 0u; k0 < k_total; k0 += BK) {
        var av: array<f32, 4>;
        for (var c = 0u; c < 4u; c++) {
            let k = k0 + ak + c;
            let ok = a_ci < p.cin && k < k_total;
            let kl = min(k, k_total - 1u);
            let co = kl / KK;
            let tap = kl % KK;
            av[c] = select(0.0, wt[(co * p.cin + min(a_ci, p.cin - 1u)) * KK + tap], ok);
        }
        for (var c = 0u; c < 4u; c++) {
            As[(ak + c) * (BM / 4u) + am / 4u][am % 4u] = av[c];
        }
        for (var r = 0u; r < 4u; r++) {
            let kr = t / BN + 4u * r;
            let k = k0 + kr;
            let kl = min(k, k_total - 1u);
            let co = kl / KK;
            let tap = kl % KK;
            let ty = ly0 - i32(tap / K);
            let tx = lx0 - i32(tap % K);
            let cbase = ybase + co * oplane;
            var v = 0.0;
            for (var a = 0u; a < NL; a++) {
                let oy = out_index(ty + i32(a), p.ho);
                for (var c = 0u; c < NL; c++) {
                    let ox = out_index(tx + i32(c), p.wo);
                    let inside = oy >= 0 && ox >= 0;
                    let idx = cbase + u32(max(oy, 0)) * p.wo + u32(max(ox, 0));
                    v += select(0.0, dy[idx], inside);
                }
            }
            Bs[kr * BN + bn] = select(0.0, v, n_ok && k < k_total);
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
            let ci = ci0 + lid.y * 4u + i;
            if (ci >= p.cin) {
                continue;
            }
            let o = (b * p.cin + ci) * hw + pn;
            var v = acc[j][i] * p.inv_div;
            if (p.accumulate != 0u) {
                v += dx[o];
            }
            dx[o] = v;
        }
    }
}
