//! Every forward kernel against its plain-f32 reference, on small random
//! shapes with odd sizes that do not fill a workgroup, for both kernel
//! families.

mod common;
use common::*;
use petal::gpu::{Dispatch, Gpu};
use petal::kernels::{self, Conv2dEpilogue, Conv2dShape, MatmulDesc, Operand};
use petal::reference;

fn run(gpu: &Gpu, d: &[&Dispatch]) {
    gpu.run(d);
}

/// A convolution with the kernel the adapter's family picks for its shape.
fn conv_case(gpu: &Gpu, s: Conv2dShape, bias: bool, temb: bool, residual: bool, out_div: f32, seed: u64) {
    let kernel = kernels::conv2d::kernel_for(gpu, gpu.family, &s);
    conv_case_with(gpu, kernel, s, bias, temb, residual, out_div, seed);
}

/// conv_case with an explicit kernel variant (to reach every edge of a tiling).
#[allow(clippy::too_many_arguments)]
fn conv_case_with(
    gpu: &Gpu,
    kernel: kernels::conv2d::Conv2dKernel,
    s: Conv2dShape,
    bias: bool,
    temb: bool,
    residual: bool,
    out_div: f32,
    seed: u64,
) {
    let x = randn(seed, s.in_len(), 1.0);
    let w = randn(seed + 1, s.weight_len(), 0.3);
    let b = randn(seed + 2, s.cout as usize, 0.5);
    let temb_stride = s.cout + 5;
    let t = randn(seed + 3, (s.batch * temb_stride) as usize, 0.5);
    let r = randn(seed + 4, s.out_len(), 1.0);
    let (xv, wv, bv, tv, rv) = (upload(gpu, &x), upload(gpu, &w), upload(gpu, &b), upload(gpu, &t), upload(gpu, &r));
    let want = reference::conv2d(
        &x,
        &w,
        bias.then_some(&b[..]),
        temb.then_some((&t[..], temb_stride as usize, 3)),
        residual.then_some(&r[..]),
        out_div,
        &s,
    );
    // Written, then added to what y holds (the epilogue's accumulate).
    let prior = randn(seed + 5, s.out_len(), 1.0);
    for accumulate in [false, true] {
        let y = upload(gpu, &prior);
        let epi = Conv2dEpilogue {
            bias: bias.then_some(&bv),
            temb: temb.then_some((&tv, temb_stride, 3)),
            residual: residual.then_some(&rv),
            out_div,
            accumulate,
        };
        run_conv_forward(gpu, kernel, &y, &xv, &wv, &s, &epi);
        let got = gpu.read_f32(&y).unwrap();
        let want: Vec<f32> =
            if accumulate { want.iter().zip(&prior).map(|(a, b)| a + b).collect() } else { want.clone() };
        assert_close(&format!("conv {s:?} ({}) accumulate={accumulate}", kernel.name()), &got, &want, 1e-4, 1e-5);
    }
}

#[test]
fn conv2d_forward_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        let g = &*gpu;
        // 3x3 same, odd sizes everywhere.
        conv_case(g, Conv2dShape::same(2, 3, 7, 5, 5, 3), true, false, false, 1.0, 1);
        // Wide enough to fill tiles in both dimensions, plus a ragged edge.
        conv_case(g, Conv2dShape::same(2, 20, 9, 11, 37, 3), true, true, true, 1.5, 2);
        conv_case(g, Conv2dShape::same(1, 64, 16, 16, 64, 3), true, true, true, 1.0, 3);
        // 1x1 (shortcut, attention projections).
        conv_case(g, Conv2dShape::same(3, 13, 5, 3, 9, 1), true, false, true, 1.0, 4);
        // Downsample2D with padding 0: pad right and bottom only, stride 2.
        let mut s = Conv2dShape::same(2, 6, 8, 8, 6, 3);
        s.stride = 2;
        s.pad = [0, 0, 1, 1];
        conv_case(g, s, true, false, false, 1.0, 5);
        // Downsample2D with padding 1, odd input.
        let mut s = Conv2dShape::same(2, 5, 7, 9, 4, 3);
        s.stride = 2;
        conv_case(g, s, true, false, false, 1.0, 6);
        // Upsample2D: nearest 2x fused into the input.
        let mut s = Conv2dShape::same(2, 7, 3, 5, 6, 3);
        s.upsample = true;
        conv_case(g, s, true, false, false, 1.0, 7);
        // No bias at all.
        conv_case(g, Conv2dShape::same(1, 4, 4, 4, 3, 3), false, false, false, 1.0, 8);
        // The UNet's own kinds of convolution, small: cout not a multiple of
        // the channel tile, pixels not a multiple of the pixel tile, batch > 1.
        conv_case(g, Conv2dShape::same(3, 24, 12, 20, 40, 3), true, true, true, 2.0, 9);
        conv_case(g, Conv2dShape::same(17, 8, 4, 4, 12, 3), true, true, true, 1.0, 10);
        conv_case(g, Conv2dShape::same(2, 40, 6, 6, 70, 1), true, false, true, 1.0, 11);
        conv_case(g, Conv2dShape::same(1, 3, 9, 9, 16, 3), true, false, false, 1.0, 12);
        conv_case(g, Conv2dShape::same(2, 16, 9, 7, 3, 3), true, false, false, 1.0, 13);
        for (i, pad) in [[0, 0, 1, 1], [1, 1, 1, 1]].into_iter().enumerate() {
            let mut s = Conv2dShape::same(3, 10, 10, 14, 9, 3);
            s.stride = 2;
            s.pad = pad;
            conv_case(g, s, true, false, false, 1.0, 14 + i as u64);
        }
        let mut s = Conv2dShape::same(3, 9, 5, 7, 11, 3);
        s.upsample = true;
        conv_case(g, s, true, true, true, 1.0, 16);
    }
}

/// The 16-lane conv forward and matmul kernels (lavapipe at 512-bit
/// vectors, what `petal` asks for on CPUs where they pay:
/// `petal::gpu::prefer_wide_vectors`): this test binary's subgroup block
/// tests, run again in a child process with `LP_NATIVE_VECTOR_WIDTH=512`,
/// which Mesa reads when the driver loads (common::rerun_at_16_lanes).
/// Skipped where the adapter is not lavapipe or the CPU lacks AVX-512.
#[test]
fn subgroup_kernels_16_lanes_match_reference() {
    rerun_at_16_lanes(&[
        "conv2d_forward_subgroup_blocks_match_reference",
        "matmul_subgroup_blocks_match_reference",
        "matmul_subgroup_vec4_loads_match_reference",
    ]);
}

/// Every edge of the CPU-family (subgroup) kernel's block, on explicit blocks:
/// channels per lane not dividing cout, blocks overhanging the image on the
/// right and bottom, several images per block with the last block partly past
/// the batch, 1x1, stride 2 with both paddings, upsampling with odd sizes.
#[test]
fn conv2d_forward_subgroup_blocks_match_reference() {
    use kernels::conv2d::{Conv2dKernel, SubgroupTile};
    let gpu = gpu(petal::gpu::KernelFamily::Cpu);
    if !kernels::subgroups_of_8(&gpu) {
        eprintln!("skipped: the subgroup kernel needs subgroups of 8 lanes");
        return;
    }
    let g = &*gpu;
    // Blocks of the lanes this adapter's conv kernel uses: 8 on lavapipe's
    // default, 16 under LP_NATIVE_VECTOR_WIDTH=512
    // (conv2d_forward_16_lanes_match_reference runs this test so).
    let lanes = kernels::conv_lanes(g);
    if let Ok(want) = std::env::var("PETAL_TEST_EXPECT_LANES") {
        assert_eq!(lanes.to_string(), want, "the adapter's conv lanes ({})", g.describe());
    }
    let tile = |tm, nb, ph, pw| Conv2dKernel::Subgroup(SubgroupTile::new(tm, nb, ph, pw).with_lanes(lanes));
    let mut n = 100;
    let mut case = |k: Conv2dKernel, s: Conv2dShape| {
        n += 5;
        conv_case_with(g, k, s, true, true, true, 1.5, n);
    };
    let same = Conv2dShape::same;
    let strided = |s: Conv2dShape, pad: [u32; 4]| Conv2dShape { stride: 2, pad, ..s };
    let upsampled = |s: Conv2dShape| Conv2dShape { upsample: true, ..s };
    for k in [tile(1, 1, 4, 4), tile(2, 1, 3, 5), tile(3, 2, 2, 4), tile(2, 3, 4, 2)] {
        case(k, same(1, 5, 7, 9, 13, 3));
        case(k, same(4, 6, 4, 4, 17, 3));
        case(k, same(5, 7, 5, 3, 8, 1));
        case(k, strided(same(3, 4, 9, 10, 9, 3), [0, 0, 1, 1]));
        case(k, strided(same(3, 4, 8, 7, 9, 3), [1, 1, 1, 1]));
    }
    for k in [tile(1, 1, 4, 4), tile(2, 1, 2, 6), tile(1, 3, 4, 2)] {
        case(k, upsampled(same(2, 5, 3, 5, 10, 3)));
        case(k, upsampled(same(4, 3, 2, 2, 9, 3)));
    }
    // Windows read as vec4 groups of four columns (w % 4 == 0, blocks 4k
    // source columns apart): several block columns, padding on the left
    // (groups straddling column 0) or none, stride 2 and upsampling.
    case(tile(1, 1, 3, 4), same(2, 5, 6, 12, 7, 3));
    case(tile(2, 1, 2, 4), same(1, 4, 5, 8, 9, 1));
    case(tile(1, 2, 2, 2), strided(same(3, 3, 8, 16, 5, 3), [1, 1, 1, 1]));
    case(tile(1, 2, 2, 2), strided(same(3, 3, 8, 16, 5, 3), [0, 0, 1, 1]));
    case(tile(1, 1, 2, 8), upsampled(same(2, 3, 4, 8, 6, 3)));
    case(tile(2, 1, 4, 8), upsampled(same(1, 3, 3, 12, 6, 3)));
    // Stores of four pixels (wo and pw multiples of 4): the last block
    // column half outside y (12 columns, blocks of 8), ragged rows, several
    // images a block; and a 1x1 stride-2 output of 4 columns.
    case(tile(2, 1, 3, 8), same(2, 5, 7, 12, 9, 3));
    case(tile(1, 2, 2, 4), same(3, 4, 3, 8, 6, 3));
    case(tile(1, 1, 2, 4), strided(same(2, 4, 6, 8, 5, 1), [0; 4]));
    // The Winograd form (2x2 output tiles, 3x3 at stride 1): blocks
    // overhanging odd images on the right and bottom, channels per lane not
    // dividing cout, several images a block past the batch's end, windows
    // and stores four columns wide, padding 0 (a 3x3 "valid" convolution).
    let wtile = |tm, nb, ph, pw| Conv2dKernel::Subgroup(SubgroupTile::new(tm, nb, ph, pw).with_lanes(lanes).in_winograd_form());
    for k in [wtile(1, 1, 4, 4), wtile(2, 1, 2, 6), wtile(3, 2, 2, 4), wtile(2, 3, 4, 2)] {
        case(k, same(1, 5, 7, 9, 13, 3));
        case(k, same(4, 6, 4, 4, 17, 3));
        case(k, same(3, 3, 5, 3, 8, 3));
    }
    case(wtile(2, 1, 4, 8), same(2, 5, 7, 12, 9, 3));
    case(wtile(1, 2, 2, 4), same(3, 4, 3, 8, 6, 3));
    case(wtile(1, 1, 2, 2), Conv2dShape { pad: [0; 4], ..same(2, 3, 6, 7, 5, 3) });
    // The grid walking a block's channel groups first (x = groups, y =
    // blocks): several groups with the last one ragged, blocks overhanging
    // the image, several images a block, both forms, 1x1 and upsampled.
    let groups_inner = |t: SubgroupTile| Conv2dKernel::Subgroup(t.with_lanes(lanes).with_groups_inner());
    case(groups_inner(SubgroupTile::new(1, 1, 4, 4)), same(2, 5, 7, 9, 29, 3));
    case(groups_inner(SubgroupTile::new(2, 1, 2, 6).in_winograd_form()), same(3, 4, 6, 9, 37, 3));
    case(groups_inner(SubgroupTile::new(1, 2, 4, 4)), same(3, 8, 8, 8, 20, 1));
    case(groups_inner(SubgroupTile::new(1, 1, 4, 8)), upsampled(same(2, 3, 3, 8, 33, 3)));
    // The blocks the CPU family picks for the UNet's shapes (shrunk in cin).
    for &(b, cin, hw, cout, k, up, down) in &[
        (1u32, 6u32, 32u32, 10u32, 3u32, false, false),
        (2, 5, 16, 24, 3, false, false),
        (3, 4, 8, 20, 3, true, false),
        (16, 3, 4, 12, 3, false, false),
        (2, 6, 16, 9, 1, false, false),
        (2, 4, 32, 8, 3, false, true),
        // 20 columns: a second 16-column block ragged (4 columns inside y).
        (1, 3, 20, 9, 3, false, false),
        (2, 3, 8, 12, 3, false, false),
        // 4 groups of 32 channels on 16x16 (2 of 64 with 16 lanes):
        // channel groups first with 8 lanes.
        (1, 8, 16, 100, 1, false, false),
        // 16 lanes over 32 channels: 2 a lane, the block widened.
        (2, 4, 32, 32, 3, false, false),
    ] {
        let mut s = same(b, cin, hw, hw, cout, k);
        s.upsample = up;
        if down {
            s = strided(s, [0, 0, 1, 1]);
        }
        let t = kernels::conv2d::subgroup_tile_for(&s, lanes);
        assert_eq!(t.lanes, lanes);
        if lanes == 8 {
            assert_eq!(t.groups_inner, cout == 100, "{s:?}: {t:?}");
        }
        case(Conv2dKernel::Subgroup(t), s);
    }
}

/// The GPU family's tiled kernel with its K loop split over workgroups
/// (conv2d_forward_tiled.wgsl with SPLIT > 1, then conv2d_split_sum.wgsl):
/// parts that do not divide the K steps, more parts than steps (empty parts
/// write zeros), K not a multiple of the step, every epilogue operand,
/// written and accumulated, stride 2, upsampling and 1x1. Runs on any
/// adapter (the kernel is portable WGSL).
#[test]
fn conv2d_forward_split_k_matches_reference() {
    use kernels::conv2d::Conv2dKernel;
    let gpu = gpu(petal::gpu::KernelFamily::Gpu);
    let g = &*gpu;
    let same = Conv2dShape::same;
    let mut seed = 500;
    let mut case = |parts: u32, s: Conv2dShape, bias: bool, temb: bool, residual: bool, out_div: f32| {
        seed += 10;
        conv_case_with(g, Conv2dKernel::TiledSplit(parts), s, bias, temb, residual, out_div, seed);
    };
    // K = 40 x 9 = 360: 23 steps of 16, the last one partial.
    case(2, same(1, 40, 4, 4, 24, 3), true, true, true, 1.5);
    case(3, same(1, 40, 4, 4, 24, 3), true, false, false, 1.0);
    case(16, same(2, 40, 8, 8, 70, 3), true, true, true, 1.0);
    // K = 27 (conv_in): 2 steps for 4 parts, two of them empty.
    case(4, same(1, 3, 9, 9, 16, 3), true, false, false, 1.0);
    // 1x1, stride 2 with both paddings, upsampling.
    case(4, same(1, 64, 5, 3, 9, 1), true, false, true, 1.0);
    for pad in [[0, 0, 1, 1], [1, 1, 1, 1]] {
        case(2, Conv2dShape { stride: 2, pad, ..same(2, 20, 10, 14, 9, 3) }, true, false, false, 1.0);
    }
    case(8, Conv2dShape { upsample: true, ..same(1, 30, 3, 5, 11, 3) }, true, true, true, 2.0);
    // What the GPU family picks for batch-1 UNet shapes (shrunk in channels
    // where the split does not depend on them): split, with every operand.
    for s in [same(1, 64, 4, 4, 64, 3), same(1, 128, 8, 8, 40, 3)] {
        let k = kernels::conv2d::kernel_for(g, petal::gpu::KernelFamily::Gpu, &s);
        assert!(matches!(k, Conv2dKernel::TiledSplit(_)), "{s:?}: {}", k.name());
        seed += 10;
        conv_case_with(g, k, s, true, true, true, 1.0, seed);
    }
}

#[test]
fn group_norm_forward_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        for (case, &(b, c, hw, groups, silu)) in
            [(2usize, 12usize, 35usize, 3usize, true), (1, 8, 1, 8, false), (3, 32, 300, 8, true), (2, 6, 1030, 2, false), (2, 16, 16, 4, true), (1, 8, 4, 2, false)]
                .iter()
                .enumerate()
        {
            let x: Vec<f32> = randn(10 + case as u64, b * c * hw, 2.0).iter().map(|v| v + 3.0).collect();
            let gamma = randn(20, c, 0.5).iter().map(|v| v + 1.0).collect::<Vec<_>>();
            let beta = randn(21, c, 0.5);
            let (xv, gv, bv) = (upload(&gpu, &x), upload(&gpu, &gamma), upload(&gpu, &beta));
            let y = zeros(&gpu, x.len());
            let stats = zeros(&gpu, b * groups * 2);
            let d = kernels::group_norm_forward(
                &gpu, "gn", &y, &stats, &xv, &gv, &bv, b as u32, c as u32, hw as u32, groups as u32, 1e-6, silu,
            )
            .unwrap();
            run(&gpu, &[&d]);
            let (want_y, want_s) = reference::group_norm(&x, &gamma, &beta, b, c, hw, groups, 1e-6, silu);
            assert_close("group_norm y", &gpu.read_f32(&y).unwrap(), &want_y, 1e-4, 1e-5);
            assert_close("group_norm stats", &gpu.read_f32(&stats).unwrap(), &want_s, 1e-4, 1e-5);
        }
    }
}

#[test]
fn linear_forward_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        for &(b, inf, outf, silu) in &[(1usize, 16usize, 64usize, false), (3, 37, 5, true), (64, 128, 512, true)] {
            let x = randn(30, b * inf, 1.0);
            let w = randn(31, inf * outf, 0.2);
            let bias = randn(32, outf, 0.2);
            let y = zeros(&gpu, b * outf);
            let d = kernels::linear_forward(
                &gpu,
                "linear",
                &y,
                &upload(&gpu, &x),
                &upload(&gpu, &w),
                &upload(&gpu, &bias),
                b as u32,
                inf as u32,
                outf as u32,
                silu,
            )
            .unwrap();
            run(&gpu, &[&d]);
            let want = reference::linear(&x, &w, &bias, b, inf, outf, silu);
            assert_close("linear", &gpu.read_f32(&y).unwrap(), &want, 1e-4, 1e-5);
        }
    }
}

fn matmul_case(gpu: &Gpu, kernel: Option<kernels::matmul::MatmulKernel>, (outer, inner, m, n, k): (u32, u32, u32, u32, u32), accumulate: bool, seed: u64) {
    // Attention-shaped: images x heads, A transposed, C interleaved by head.
    let a_len = (outer * inner * m * k + 5) as usize;
    let b_len = (outer * inner * k * n) as usize;
    let c_len = (outer * inner * m * n) as usize;
    let d = MatmulDesc {
        m,
        n,
        k,
        outer,
        inner,
        a: Operand { offset: 5, outer_stride: inner * m * k, inner_stride: m * k, row_stride: 1, col_stride: m },
        b: Operand { offset: 0, outer_stride: inner * k * n, inner_stride: k * n, row_stride: n, col_stride: 1 },
        c: Operand { offset: 0, outer_stride: inner * m * n, inner_stride: 1, row_stride: inner * n, col_stride: inner },
        alpha: 0.7,
        accumulate,
    };
    let a = randn(seed, a_len, 1.0);
    let b = randn(seed + 1, b_len, 1.0);
    let c0 = randn(seed + 2, c_len, 1.0);
    let cv = upload(gpu, &c0);
    let (av, bv) = (upload(gpu, &a), upload(gpu, &b));
    let disp = match kernel {
        Some(kern) => kernels::matmul::matmul_with(gpu, kern, "mm", &cv, &av, &bv, &d),
        None => kernels::matmul(gpu, "mm", &cv, &av, &bv, &d),
    }
    .unwrap();
    run(gpu, &[&disp]);
    let mut want = if accumulate { c0.clone() } else { vec![0.0; c_len] };
    reference::matmul(&mut want, &a, &b, &d);
    let what = format!("matmul {:?} {:?}", kernel.unwrap_or(kernels::matmul::kernel_for(gpu, &d)), (outer, inner, m, n, k));
    assert_close(&what, &gpu.read_f32(&cv).unwrap(), &want, 1e-4, 1e-5);
}

#[test]
fn matmul_matches_reference_with_strides_and_accumulation() {
    for family in FAMILIES {
        let gpu = gpu(family);
        matmul_case(&gpu, None, (2, 3, 13, 9, 7), true, 40);
        matmul_case(&gpu, None, (1, 1, 40, 37, 21), false, 43);
        matmul_case(&gpu, None, (3, 1, 4, 3, 2), true, 46);
    }
}

/// Every edge of the subgroup kernel's block: rows and columns not filling
/// it, k not a multiple of 8, k < 8, each block size it picks.
#[test]
fn matmul_subgroup_blocks_match_reference() {
    use kernels::matmul::MatmulKernel;
    let gpu = gpu(petal::gpu::KernelFamily::Cpu);
    if !kernels::subgroups_of_8(&gpu) {
        eprintln!("skipped: the subgroup kernel needs subgroups of 8 lanes");
        return;
    }
    let mut seed = 100;
    // 8 lanes, and 16 where the adapter's subgroups hold them (odd blocks
    // then leave the last row pair half used).
    for lanes in subgroup_lanes(&gpu) {
        for (tm, tn) in [(4, 1), (8, 2), (16, 4), (16, 1), (32, 8), (3, 2), (12, 3)] {
            for shape in [(2, 3, 13, 9, 7), (1, 2, 33, 70, 19), (2, 1, 16, 32, 64), (1, 1, 3, 5, 1)] {
                seed += 3;
                matmul_case(&gpu, Some(MatmulKernel::Subgroup { tm, tn, lanes }), shape, seed % 2 == 0, seed);
            }
        }
    }
}

/// The subgroup kernel's vec4 loads (matmul.rs `vec4_axis`): A along k or m,
/// B along k or n, each with aligned offsets and strides; m and n not filling
/// the block, k a multiple of 4 but not of 8, k = 4, accumulation. The
/// attention layouts (q^T k, v p^T and their gradients) are among these.
#[test]
fn matmul_subgroup_vec4_loads_match_reference() {
    use kernels::matmul::MatmulKernel;
    let gpu = gpu(petal::gpu::KernelFamily::Cpu);
    if !kernels::subgroups_of_8(&gpu) {
        eprintln!("skipped: the subgroup kernel needs subgroups of 8 lanes");
        return;
    }
    // Operand (rows, cols) stored row-major (col stride 1) or transposed,
    // after an offset of 4 and with padded matrices (stride a multiple of 4).
    let operand = |rows: u32, cols: u32, unit_cols: bool, count: u32| -> (Operand, usize) {
        let (rs, cs) = if unit_cols { (cols, 1) } else { (1, rows) };
        let size = (rows * cols).next_multiple_of(4) + 4;
        let o = Operand { offset: 4, outer_stride: size * count, inner_stride: size, row_stride: rs, col_stride: cs };
        (o, (4 + size * count * 2) as usize)
    };
    let mut seed = 500;
    for (lanes, (tm, tn)) in subgroup_lanes(&gpu).into_iter().flat_map(|l| [(32, 8), (16, 4), (8, 4), (4, 1), (16, 2)].map(|b| (l, b))) {
        for (m, n, k) in [(20, 36, 12), (16, 64, 24), (4, 8, 4), (12, 40, 36)] {
            for (a_k, b_n) in [(false, true), (true, false), (true, true), (false, false)] {
                seed += 1;
                let (outer, inner) = (2, 2);
                let (ao, a_len) = operand(m, k, a_k, inner);
                let (bo, b_len) = operand(k, n, b_n, inner);
                let c_len = (outer * inner * m * n) as usize;
                let d = MatmulDesc {
                    m,
                    n,
                    k,
                    outer,
                    inner,
                    a: ao,
                    b: bo,
                    c: Operand { offset: 0, outer_stride: inner * m * n, inner_stride: m * n, row_stride: n, col_stride: 1 },
                    alpha: 0.7,
                    accumulate: seed % 2 == 0,
                };
                let (a, b, c0) = (randn(seed, a_len, 1.0), randn(seed + 1, b_len, 1.0), randn(seed + 2, c_len, 1.0));
                let (av, bv, cv) = (upload(&gpu, &a), upload(&gpu, &b), upload(&gpu, &c0));
                let kernel = MatmulKernel::Subgroup { tm, tn, lanes };
                let disp = kernels::matmul::matmul_with(&gpu, kernel, "mm", &cv, &av, &bv, &d).unwrap();
                run(&gpu, &[&disp]);
                let mut want = if d.accumulate { c0.clone() } else { vec![0.0; c_len] };
                reference::matmul(&mut want, &a, &b, &d);
                let what = format!("matmul {kernel:?} m {m} n {n} k {k}, A along k {a_k}, B along n {b_n}");
                assert_close(&what, &gpu.read_f32(&cv).unwrap(), &want, 1e-4, 1e-5);
            }
        }
    }
}

#[test]
fn softmax_and_concat_match_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        // Rows of 19 one value at a time, of 20 as vec4s; 7 and 8 pixels.
        for (rows, n, hw) in [(37u32, 19u32, 7usize), (37, 20, 8)] {
        let x = randn(50, (rows * n) as usize, 4.0);
        let y = zeros(&gpu, x.len());
        let d = kernels::softmax_forward(&gpu, "softmax", &y, &upload(&gpu, &x), rows, n).unwrap();
        run(&gpu, &[&d]);
        let mut want = x.clone();
        reference::softmax(&mut want, n as usize);
        assert_close("softmax", &gpu.read_f32(&y).unwrap(), &want, 1e-6, 1e-5);

        let (b, ca, cb) = (3usize, 5usize, 2usize);
        let a = randn(51, b * ca * hw, 1.0);
        let bb = randn(52, b * cb * hw, 1.0);
        let y = zeros(&gpu, b * (ca + cb) * hw);
        let c = (ca + cb) as u32;
        let d1 = kernels::copy_channels(&gpu, "cat", &y, &upload(&gpu, &a), b as u32, ca as u32, hw as u32, c, 0).unwrap();
        let d2 =
            kernels::copy_channels(&gpu, "cat", &y, &upload(&gpu, &bb), b as u32, cb as u32, hw as u32, c, ca as u32).unwrap();
        run(&gpu, &[&d1, &d2]);
        let mut want = vec![0f32; y.len];
        reference::copy_channels(&mut want, &a, b, ca, hw, ca + cb, 0);
        reference::copy_channels(&mut want, &bb, b, cb, hw, ca + cb, ca);
        assert_eq!(gpu.read_f32(&y).unwrap(), want);
        }
    }
}

#[test]
fn ddpm_step_matches_cpu_scheduler() {
    use petal::diffusion::DdpmScheduler;
    let gpu = gpu(petal::gpu::KernelFamily::Cpu);
    for json in [r#"{}"#, r#"{"prediction_type": "v_prediction", "clip_sample": false}"#, r#"{"prediction_type": "sample", "variance_type": "fixed_large"}"#] {
        let mut s = DdpmScheduler::new(&serde_json::from_str(json).unwrap()).unwrap();
        s.set_timesteps(50).unwrap();
        let n = 301;
        for &t in &[980u32, 500, 20, 0] {
            let (xt, eps, noise) = (randn(60, n, 1.0), randn(61, n, 1.0), randn(62, n, 1.0));
            let (x, out, nz, x0) = (upload(&gpu, &xt), upload(&gpu, &eps), upload(&gpu, &noise), zeros(&gpu, n));
            let d = kernels::ddpm_step(&gpu, &x, &x0, &out, &nz).unwrap();
            let mut p = s.step_params(t);
            p.n = n as u32;
            kernels::scheduler::set_ddpm_step(&gpu, &d, &p);
            run(&gpu, &[&d]);
            let (want_prev, want_x0) = s.step_cpu(&eps, t, &xt, &noise);
            assert_close("ddpm prev", &gpu.read_f32(&x).unwrap(), &want_prev, 1e-6, 1e-6);
            assert_close("ddpm x0", &gpu.read_f32(&x0).unwrap(), &want_x0, 1e-6, 1e-6);
        }
    }
}

#[test]
fn ddim_step_matches_cpu_scheduler() {
    // The same kernel with DDIM's scalars (c_xt 0, c_eps set), every prediction type.
    use petal::diffusion::DdimScheduler;
    let gpu = gpu(petal::gpu::KernelFamily::Cpu);
    for (json, eta) in [
        (r#"{}"#, 0.0),
        (r#"{"prediction_type": "v_prediction", "clip_sample": false}"#, 1.0),
        (r#"{"prediction_type": "sample", "timestep_spacing": "trailing"}"#, 0.5),
    ] {
        let mut s = DdimScheduler::new(&serde_json::from_str(json).unwrap(), eta).unwrap();
        s.set_timesteps(7).unwrap();
        let n = 301;
        for &t in &s.timesteps.clone() {
            let (xt, eps, noise) = (randn(70, n, 1.0), randn(71, n, 1.0), randn(72, n, 1.0));
            let (x, out, nz, x0) = (upload(&gpu, &xt), upload(&gpu, &eps), upload(&gpu, &noise), zeros(&gpu, n));
            let d = kernels::ddpm_step(&gpu, &x, &x0, &out, &nz).unwrap();
            let mut p = s.step_params(t);
            p.n = n as u32;
            kernels::scheduler::set_ddpm_step(&gpu, &d, &p);
            run(&gpu, &[&d]);
            let (want_prev, want_x0) = s.step_cpu(&eps, t, &xt, &noise);
            assert_close(&format!("ddim {json} t={t} prev"), &gpu.read_f32(&x).unwrap(), &want_prev, 1e-6, 1e-6);
            assert_close(&format!("ddim {json} t={t} x0"), &gpu.read_f32(&x0).unwrap(), &want_x0, 1e-6, 1e-6);
        }
    }
}
