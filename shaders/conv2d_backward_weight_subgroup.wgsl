// conv2d_backward_weight, CPU-family variant (software adapters: lavapipe).
// dw[co, ci, ky, kx] = inv_div * sum over b, oy, ox of
//     dy[b, co, oy, ox] * x_logical[b, ci, oy*S + ky - pad_top, ox*S + kx - pad_left]
// (zero outside the input; with upsample = 1, x_logical is x nearest-upsampled
// 2x). x is (B, cin, h, w), dy (B, cout, ho, wo), dw (cout, cin, K, K).
// A GEMM with M = cout, N = cin*K*K and a long reduction over B*ho*wo.
//
// The reduction runs over row segments of 8 output pixels (ROWS rows of
// them in one step, reading NR = (ROWS - 1) S + K input rows), ordered down
// the columns (step = ((b * segs_per_row + column) * ho / ROWS + oy / ROWS)),
// so that consecutive steps share KEEP = K - S input rows, which stay in
// registers: each step loads only ROWS S new rows. The dispatch's z cuts the
// steps (nsegs of them) into chunks of segs_per_chunk, each written (=) to
// its own copy of dw in `out` (out is dw itself when there is one chunk),
// which a sum_rows dispatch adds up.
//
// Lavapipe shape: one workgroup = one subgroup of LANES lanes (8, or 16 at
// lavapipe's 512-bit vectors: kernels::conv_lanes) covering TM output
// channels x LANES*TC input channels; lane l owns input channels
// ci0 + l + LANES c (c < TC) and keeps TM x TC x AA sums. For each segment,
// the lanes load dy of its 8 pixels for the TM channels (lane l pixel l % 8;
// with 16 lanes, lanes 0-7 and 8-15 take alternate channels) and hand it to
// the others with subgroupBroadcast; each lane loads its own input rows once
// and reuses every value for all the taps that read it. At 16 lanes each
// multiply-add does twice the work of the 8-lane kernel's, for the same
// number of loads a lane.
//
// FORM (snippets/conv2d_dw_{direct,winograd}.wgsl) says how a step adds to
// the sums: `direct` steps one output row (ROWS = 1) and keeps K x K sums per
// channel pair; `winograd` (3x3 at stride 1, even ho) steps two rows and
// takes each 2x2 tile of dy in the Winograd F(3x3, 2x2) form, keeping the
// 4 x 4 transformed sums, turned into the 3 x 3 taps once at the end.
// petal:trusted (indices stay in bounds for sizes its Rust wrapper checks; loops are finite)

// Needs wgpu::Features::SUBGROUP. No `enable subgroups;`: this naga rejects
// the directive and takes the subgroup builtins without it.

struct Params {
    batch: u32, cin: u32, h: u32, w: u32,
    cout: u32, ho: u32, wo: u32, upsample: u32,
    pad_top: u32, pad_left: u32, nsegs: u32, segs_per_chunk: u32,
    inv_div: f32, _pad0: u32, _pad1: u32, _pad2: u32,
}

const K: u32 = {{K}}u;
const S: u32 = {{S}}u;
const TM: u32 = {{TM}}u;      // output channels per workgroup
const TC: u32 = {{TC}}u;      // input channels per lane
const LANES: u32 = {{LANES}}u; // lanes of the workgroup (one subgroup)
const KK: u32 = K * K;
const NCOL: u32 = 7u * S + K; // input columns a segment of 8 pixels reads

// ROWS (output rows a step), AA (sums kept per output and input channel),
// taps (those sums as the K x K taps) and the step's accumulation (below).
// #include "snippets/conv2d_dw_{{FORM}}.wgsl"
const NR: u32 = (ROWS - 1u) * S + K; // input rows a step reads
const KEEP: u32 = NR - ROWS * S;     // of which the next step reads again (K - S)

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> dy: array<{{DY_T}}>;
@group(0) @binding(2) var<storage, read> x: array<{{X_T}}>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// broadcast8, dot8: one lane's value handed to all 8 (broadcast8_hi: from
// lanes 8-15).
// #include "snippets/broadcast8.wgsl"

// load_row: one logical input row under an 8-pixel segment (x_scalar: one
// value a load; x_vec4: aligned vec4s, for rows of 4k columns without
// upsampling). dy_load, dy_bcast: dy of the segment's 8 pixels for the TM
// output channels (dy_scalar: lane l loads pixel l; dy_vec4: two vec4s a
// channel, for rows of 4k pixels). On lavapipe a load costs a loop over the
// lanes whatever its width, so the vec4 variants save most of the loads.
// #include "snippets/conv2d_dw_x_{{X_LOADS}}.wgsl"
// #include "snippets/conv2d_dw_dy_{{DY_LOADS}}.wgsl"

@compute @workgroup_size({{LANES}})
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(subgroup_invocation_id) lane: u32,
) {
    let ci0 = wid.x * LANES * TC;
    let co0 = wid.y * TM;
    let chunk = wid.z;
    var cis: array<u32, TC>;
    for (var c = 0u; c < TC; c++) {
        cis[c] = min(ci0 + lane + LANES * c, p.cin - 1u);
    }
    let plane_in = p.h * p.w;
    let plane_out = p.ho * p.wo;
    let segs_per_row = (p.wo + 7u) / 8u;
    let steps_per_col = p.ho / ROWS; // the Rust wrapper checks ho % ROWS == 0

    // Every loop indexes a private array by its own counter over the whole
    // length: that is what makes Mesa's NIR unroll it and keep the arrays in
    // registers.
    var acc: array<array<array<f32, AA>, TC>, TM>;
    for (var m = 0u; m < TM; m++) {
        for (var c = 0u; c < TC; c++) {
            for (var i = 0u; i < AA; i++) {
                acc[m][c][i] = 0.0;
            }
        }
    }

    let s_begin = chunk * p.segs_per_chunk;
    let s_end = min(s_begin + p.segs_per_chunk, p.nsegs);
    var xr: array<array<array<f32, NCOL>, NR>, TC>;
    var sg = s_begin;
    while (sg < s_end) {
        // A run down one column of segments, to the column's or chunk's end.
        let col = sg / steps_per_col;
        let run_end = min(s_end, (col + 1u) * steps_per_col);
        let ox0 = (col % segs_per_row) * 8u;
        let b = col / segs_per_row;
        let ix0 = i32(ox0 * S) - i32(p.pad_left);
        var xb: array<u32, TC>;
        for (var c = 0u; c < TC; c++) {
            xb[c] = (b * p.cin + cis[c]) * plane_in;
        }
        // The rows the first step shares with a previous one.
        let iy_first = i32((sg % steps_per_col) * ROWS * S) - i32(p.pad_top);
        for (var c = 0u; c < TC; c++) {
            for (var ky = 0u; ky < KEEP; ky++) {
                xr[c][ky] = load_row(xb[c], iy_first + i32(ky), ix0);
            }
        }
        for (; sg < run_end; sg++) {
            let oy = (sg % steps_per_col) * ROWS;
            let iy0 = i32(oy * S) - i32(p.pad_top);
            for (var c = 0u; c < TC; c++) {
                for (var ky = KEEP; ky < NR; ky++) {
                    xr[c][ky] = load_row(xb[c], iy0 + i32(ky), ix0);
                }
            }
            // dy of the segment's ROWS rows for the TM output channels, this
            // lane's share.
            var dl: array<DyLane, ROWS>;
            for (var r = 0u; r < ROWS; r++) {
                dl[r] = dy_load(b * p.cout * plane_out + (oy + r) * p.wo, co0, ox0, lane);
            }
            accumulate(&acc, &xr, dl);
            // The next step's first KEEP rows are this step's last.
            for (var c = 0u; c < TC; c++) {
                for (var ky = 0u; ky < KEEP; ky++) {
                    xr[c][ky] = xr[c][ky + ROWS * S];
                }
            }
        }
    }

    let wlen = p.cout * p.cin * KK;
    let obase = chunk * wlen;
    for (var m = 0u; m < TM; m++) {
        let co = co0 + m;
        if (co >= p.cout) {
            break;
        }
        for (var c = 0u; c < TC; c++) {
            let ci = ci0 + lane + LANES * c;
            if (ci >= p.cin) {
                break;
            }
            let o = obase + (co * p.cin + ci) * KK;
            let w = taps(acc[m][c]);
            for (var i = 0u; i < KK; i++) {
                out[o + i] = w[i] * p.inv_div;
            }
        }
    }
}
