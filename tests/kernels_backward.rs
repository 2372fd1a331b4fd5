//! Every backward kernel against its plain-loop reference (src/reference/
//! backward.rs) on small random shapes with odd sizes, for both kernel
//! families (the CPU family runs the subgroup variants on lavapipe, the GPU
//! family the workgroup-tiled conv gradients and the generic others), with the output pre-filled to check = against
//! +=; and the references against central finite differences of the forward
//! references, for L = sum(y * r).
//!
//! `cargo test --test kernels_backward -- --ignored --nocapture` times the
//! convolution gradients on the cifar10-32 shapes (PETAL_BENCH_BATCH,
//! PETAL_BENCH_FILTER, PETAL_BENCH_GENERIC=0 to skip the generic kernels,
//! PETAL_BENCH_DW_TM / PETAL_BENCH_DW_TC to override the weight gradient's blocking,
//! PETAL_BENCH_DX_FORWARD=0 to time the subgroup dx kernel where the flipped
//! forward convolution would run).

mod common;
use common::*;
use petal::gpu::{Dispatch, Gpu, TensorView};
use petal::kernels::conv2d::{Conv2dKernel, SubgroupTile};
use petal::kernels::conv2d_backward::{Conv2dBackwardKernel, InputGradLayout, WeightGradLayout, backward_kernel_for};
use petal::kernels::{self, ChannelSlice, Conv2dShape, conv2d_backward};
use petal::reference::{self, backward as rb};

fn run(gpu: &Gpu, d: &[Dispatch]) {
    let refs: Vec<&Dispatch> = d.iter().collect();
    gpu.run(&refs);
}

fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

#[allow(clippy::too_many_arguments)]
fn shape(batch: u32, cin: u32, h: u32, w: u32, cout: u32, k: u32, stride: u32, pad: [u32; 4], upsample: bool) -> Conv2dShape {
    Conv2dShape { batch, cin, h, w, cout, ksize: k, stride, pad, upsample }
}

/// Every forward case, with odd sizes that fill no tile, chosen so that
/// few kernel variants need compiling (a cold Mesa shader cache compiles each
/// subgroup variant for seconds).
/// (shape, out_div, whether to run the blocking production picks; the
/// others run the subgroup kernels with the smallest blocking, which compiles
/// in a fraction of the time and goes through the same code).
fn conv_cases() -> Vec<(Conv2dShape, f32, bool)> {
    vec![
        // 3x3 same, odd sizes everywhere; conv_in's few input channels.
        (Conv2dShape::same(2, 3, 7, 5, 5, 3), 1.0, false),
        // Ragged in channels (tiles of 8 and 32) and in pixels (rows of 16).
        (Conv2dShape::same(2, 40, 5, 20, 37, 3), 1.5, true),
        (Conv2dShape::same(2, 20, 5, 11, 13, 3), 1.5, false),
        // conv_out shaped: few output channels.
        (Conv2dShape::same(1, 17, 6, 17, 3, 3), 1.0, false),
        // 1x1 (shortcut, attention projections); the second with
        // production's layout, whose dx runs as the forward kernel.
        (Conv2dShape::same(3, 13, 5, 9, 9, 1), 2.0, false),
        (Conv2dShape::same(2, 33, 4, 10, 20, 1), 1.0, true),
        // Downsample2D with padding 0: pad right and bottom only, stride 2.
        (shape(2, 6, 8, 10, 6, 3, 2, [0, 0, 1, 1], false), 1.0, false),
        // Downsample2D with padding 1, odd input.
        (shape(2, 5, 7, 9, 4, 3, 2, [1; 4], false), 1.0, false),
        // Odd input with asymmetric padding, more channels.
        (shape(1, 11, 9, 11, 10, 3, 2, [0, 0, 1, 1], false), 1.0, false),
        // 3x3 at stride 1 with an even number of output rows, which the CPU
        // family's dw kernel takes in the Winograd form: ragged channels
        // with the 32 x 4 blocking of production, through one-value and
        // vec4 loads; rows of 4k columns (vec4 loads); no padding.
        (Conv2dShape::same(2, 37, 6, 11, 35, 3), 1.5, true),
        (Conv2dShape::same(2, 37, 6, 12, 35, 3), 1.0, true),
        (Conv2dShape::same(2, 6, 6, 8, 7, 3), 1.0, false),
        (shape(2, 5, 6, 9, 6, 3, 1, [0; 4], false), 1.0, false),
        // Upsample2D: nearest 2x fused into the input.
        (shape(2, 7, 3, 5, 6, 3, 1, [1; 4], true), 1.0, false),
        (shape(1, 12, 4, 7, 10, 3, 1, [1; 4], true), 1.0, false),
        // dy rows of whole vec4s (wo % 4 == 0), read by the CPU family in
        // aligned groups: left padding (segments start at column -1), none
        // (1x1), and upsampled.
        (Conv2dShape::same(2, 6, 5, 8, 7, 3), 1.0, false),
        (Conv2dShape::same(2, 5, 3, 12, 6, 1), 1.0, false),
        (shape(2, 5, 3, 6, 6, 3, 1, [1; 4], true), 1.0, false),
        // Stride 2 over rows of whole vec4s (x read in groups): no left
        // padding and 6 output columns; padding 1 and 8 (dy in groups too).
        (shape(2, 6, 8, 12, 6, 3, 2, [0, 0, 1, 1], false), 1.0, false),
        (shape(2, 5, 6, 16, 7, 3, 2, [1; 4], false), 1.0, true),
    ]
}

fn input_layout(gpu: &Gpu, s: &Conv2dShape, production: bool) -> InputGradLayout {
    let kernel = backward_kernel_for(gpu);
    match kernel {
        Conv2dBackwardKernel::Subgroup if !production => InputGradLayout { kernel, tm: 8, tn: 4, forward: None },
        _ => InputGradLayout::new(kernel, s, petal::kernels::conv_lanes(gpu)),
    }
}

fn weight_layout(gpu: &Gpu, s: &Conv2dShape, production: bool) -> WeightGradLayout {
    let mut l = WeightGradLayout::new(gpu, backward_kernel_for(gpu), s);
    if l.kernel == Conv2dBackwardKernel::Subgroup && !production {
        (l.tm, l.tc) = (8, 1);
    }
    l
}

/// The layouts a dx case runs: the adapter's (or the smallest subgroup
/// blocking) and the production one, and where the gradient is a forward
/// convolution (flipped, or the merged stride-2 one of an upsampled conv),
/// that through the generic forward kernel and through the family's own (a
/// small subgroup block, or the tiled kernel).
fn input_layouts(gpu: &Gpu, family: petal::gpu::KernelFamily, s: &Conv2dShape, production: bool) -> Vec<InputGradLayout> {
    let base = input_layout(gpu, s, production);
    let mut out = vec![base];
    // The production choice too, where the case runs a smaller blocking.
    let chosen = input_layout(gpu, s, true);
    if chosen != base {
        out.push(chosen);
    }
    if let Some(fwd) = conv2d_backward::gradient_forward_shape(s) {
        let own = match family {
            petal::gpu::KernelFamily::Cpu if petal::kernels::subgroups_of_8(gpu) => {
                Conv2dKernel::Subgroup(SubgroupTile::new(1, 1, 4, 4))
            }
            petal::gpu::KernelFamily::Cpu => Conv2dKernel::Generic,
            petal::gpu::KernelFamily::Gpu => Conv2dKernel::Tiled,
        };
        let mut kernels = vec![Conv2dKernel::Generic, own];
        // The Winograd form, where that convolution is a 3x3 at stride 1.
        let wino = SubgroupTile::new(2, 1, 4, 4).in_winograd_form();
        if matches!(own, Conv2dKernel::Subgroup(_)) && petal::kernels::conv2d::winograd_fits(&fwd, &wino) {
            kernels.push(Conv2dKernel::Subgroup(wino));
        }
        for k in kernels {
            let l = InputGradLayout { forward: Some(k), ..base };
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

#[test]
fn conv2d_backward_input_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        for (case, (s, out_div, production)) in conv_cases().into_iter().enumerate() {
            let seed = 100 + case as u64 * 10;
            let dy = randn(seed, s.out_len(), 1.0);
            let w = randn(seed + 1, s.weight_len(), 0.3);
            let prior = randn(seed + 2, s.in_len(), 1.0);
            let want = rb::conv2d_backward_input(&dy, &w, &s, out_div);
            let (dyv, wv) = (upload(&gpu, &dy), upload(&gpu, &w));
            for layout in input_layouts(&gpu, family, &s, production) {
                let need = layout.scratch_len(&s);
                // Scratch holds garbage first: the flip must overwrite it.
                let scratch = (need > 0).then(|| upload(&gpu, &randn(seed + 3, need + 5, 1.0)));
                for accumulate in [false, true] {
                    let dx = upload(&gpu, &prior);
                    let d = conv2d_backward::conv2d_backward_input_with(
                        &gpu,
                        &layout,
                        "dx",
                        &dx,
                        &dyv,
                        &wv,
                        scratch.as_ref(),
                        &s,
                        out_div,
                        accumulate,
                    )
                    .unwrap();
                    run(&gpu, &d);
                    let want = if accumulate { add(&prior, &want) } else { want.clone() };
                    let what = format!("conv dx {s:?} acc={accumulate} ({family:?}, {layout:?})");
                    assert_close(&what, &gpu.read_f32(&dx).unwrap(), &want, 1e-4, 1e-4);
                }
            }
        }
    }
}

#[test]
fn conv2d_flip_weights_matches_reference() {
    let gpu = gpu(FAMILIES[0]);
    for (cout, cin, k) in [(3u32, 5u32, 3u32), (7, 2, 1), (4, 6, 5), (300, 1, 3)] {
        let s = Conv2dShape::same(1, cin, 4, 4, cout, k);
        let w = randn(k as u64 + cin as u64, s.weight_len(), 1.0);
        let wt = zeros(&gpu, s.weight_len());
        let d = conv2d_backward::conv2d_flip_weights(&gpu, "flip", &wt, &upload(&gpu, &w), &s).unwrap();
        run(&gpu, &[d]);
        let (cin, cout, k) = (cin as usize, cout as usize, k as usize);
        let mut want = vec![0.0; w.len()];
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        want[((ci * cout + co) * k + ky) * k + kx] = w[((co * cin + ci) * k + (k - 1 - ky)) * k + (k - 1 - kx)];
                    }
                }
            }
        }
        assert_eq!(gpu.read_f32(&wt).unwrap(), want, "flip cout {cout} cin {cin} k {k}");
    }
}

/// The merged 4x4 kernel of an upsampled 3x3 conv's input gradient, against
/// the sum written out from its definition, and the dx it gives against the
/// reference (conv2d_backward_input_matches_reference runs it in the UNet's
/// layouts).
#[test]
fn conv2d_merge_upsampled_weights_matches_reference() {
    let gpu = gpu(FAMILIES[0]);
    for (cout, cin) in [(3u32, 5u32), (300, 1), (2, 7)] {
        let s = Conv2dShape { upsample: true, ..Conv2dShape::same(1, cin, 3, 4, cout, 3) };
        let g = conv2d_backward::upsampled_gradient_shape(&s).unwrap();
        assert_eq!((g.cin, g.cout, g.h, g.w, g.ksize, g.stride, g.out_hw()), (cout, cin, 6, 8, 4, 2, (3, 4)));
        let w = randn(cout as u64 * 7 + cin as u64, s.weight_len(), 1.0);
        let wt = zeros(&gpu, g.weight_len());
        let d = conv2d_backward::conv2d_merge_upsampled_weights(&gpu, "merge", &wt, &upload(&gpu, &w), &s).unwrap();
        run(&gpu, &[d]);
        let (cin, cout) = (cin as usize, cout as usize);
        // Tap ky of a source row reaches gradient tap u where u + ky is 2 or 3.
        let taps = |u: usize| -> Vec<usize> { (0..3).filter(|k| u + k == 2 || u + k == 3).collect() };
        let mut want = vec![0.0f32; g.weight_len()];
        for co in 0..cout {
            for ci in 0..cin {
                for u in 0..4 {
                    for v in 0..4 {
                        let mut acc = 0.0;
                        for ky in taps(u) {
                            for kx in taps(v) {
                                acc += w[((co * cin + ci) * 3 + ky) * 3 + kx];
                            }
                        }
                        want[((ci * cout + co) * 4 + u) * 4 + v] = acc;
                    }
                }
            }
        }
        assert_close(&format!("merge cout {cout} cin {cin}"), &gpu.read_f32(&wt).unwrap(), &want, 1e-6, 1e-6);
    }
    // Only Upsample2D's conv has this gradient.
    let plain = Conv2dShape::same(1, 2, 3, 4, 5, 3);
    assert!(conv2d_backward::upsampled_gradient_shape(&plain).is_none());
    assert!(conv2d_backward::upsampled_gradient_shape(&Conv2dShape { upsample: true, ksize: 1, pad: [0; 4], ..plain }).is_none());
    let wt = zeros(&gpu, 2 * 5 * 16);
    assert!(conv2d_backward::conv2d_merge_upsampled_weights(&gpu, "merge", &wt, &zeros(&gpu, plain.weight_len()), &plain).is_err());
}

#[test]
fn conv2d_backward_input_wants_its_scratch() {
    let gpu = gpu(FAMILIES[0]);
    let s = Conv2dShape::same(2, 4, 6, 6, 4, 3);
    let layout = InputGradLayout { forward: Some(Conv2dKernel::Generic), ..input_layout(&gpu, &s, false) };
    let (dy, w, dx) = (zeros(&gpu, s.out_len()), zeros(&gpu, s.weight_len()), zeros(&gpu, s.in_len()));
    let call = |scratch: Option<&TensorView>, s: &Conv2dShape| {
        conv2d_backward::conv2d_backward_input_with(&gpu, &layout, "dx", &dx, &dy, &w, scratch, s, 1.0, false)
    };
    assert!(call(None, &s).is_err());
    let short = zeros(&gpu, layout.scratch_len(&s) - 1);
    assert!(call(Some(&short), &s).is_err());
    let enough = zeros(&gpu, layout.scratch_len(&s));
    assert!(call(Some(&enough), &s).is_ok());
    // No flipped forward convolution exists for stride 2.
    let mut s2 = s;
    s2.stride = 2;
    assert!(conv2d_backward::flipped_shape(&s2).is_none());
    let (dy2, dx2) = (zeros(&gpu, s2.out_len()), zeros(&gpu, s2.in_len()));
    let r = conv2d_backward::conv2d_backward_input_with(&gpu, &layout, "dx", &dx2, &dy2, &w, Some(&enough), &s2, 1.0, false);
    assert!(r.is_err());
    // The public entry point sizes scratch itself.
    let need = kernels::conv2d_backward_input_scratch_len(&gpu, &s);
    let sc = zeros(&gpu, need.max(1));
    assert!(kernels::conv2d_backward_input(&gpu, "dx", &dx, &dy, &w, Some(&sc), &s, 1.0, false).is_ok());
}

#[test]
fn conv2d_backward_weight_matches_reference() {
    let mut ran_16_lanes = 0;
    for family in FAMILIES {
        let gpu = gpu(family);
        // The subgroup kernel's lanes on this adapter (16 at 512-bit
        // lavapipe: conv2d_backward_weight_16_lanes_match_reference).
        let lanes = petal::kernels::conv_lanes(&gpu);
        if let (Ok(want), petal::gpu::KernelFamily::Cpu) = (std::env::var("PETAL_TEST_EXPECT_LANES"), family) {
            assert_eq!(lanes.to_string(), want, "the adapter's conv lanes ({})", gpu.describe());
        }
        for (case, (s, out_div, production)) in conv_cases().into_iter().enumerate() {
            let seed = 200 + case as u64 * 10;
            let dy = randn(seed, s.out_len(), 1.0);
            let x = randn(seed + 1, s.in_len(), 1.0);
            let want = rb::conv2d_backward_weight(&dy, &x, &s, out_div);
            let (dyv, xv) = (upload(&gpu, &dy), upload(&gpu, &x));
            // The adapter's layout, then the reduction cut into short chunks
            // (summed by a second dispatch through scratch); where the
            // subgroup kernel can take the Winograd form, both forms.
            let auto = weight_layout(&gpu, &s, production);
            let mut layouts = vec![auto];
            if auto.kernel == Conv2dBackwardKernel::Subgroup {
                if conv2d_backward::dw_winograd_fits(&s) {
                    layouts.push(WeightGradLayout { winograd: !auto.winograd, ..auto });
                }
                // Channels a workgroup not a multiple of the lanes' dy
                // loads (12 output channels: scalar dy loads on 16 lanes,
                // vec4 on 8 where rows allow) and 3 input channels a lane.
                if !production {
                    layouts.push(WeightGradLayout { tm: 12, tc: 3, lanes, ..auto });
                }
                // 16-lane adapters run both widths (8-lane blocks in 16-lane
                // subgroups, the upper lanes idle).
                if lanes == 16 {
                    layouts.push(auto.with_lanes(&gpu, &s, if auto.lanes == 16 { 8 } else { 16 }));
                }
            }
            // Chunks of two steps: most start inside a column of steps (the
            // Winograd form's columns have ho / 2 of them).
            for l in layouts.clone() {
                layouts.push(WeightGradLayout { chunks: l.nsegs(&s).div_ceil(2), ..l });
            }
            for layout in layouts {
                let dw = upload(&gpu, &randn(seed + 2, s.weight_len(), 1.0));
                let need = layout.scratch_len(&s);
                let scratch = (need > 0).then(|| upload(&gpu, &randn(seed + 3, need + 5, 1.0)));
                let d = conv2d_backward::conv2d_backward_weight_with(
                    &gpu,
                    &layout,
                    "dw",
                    &dw,
                    scratch.as_ref(),
                    &dyv,
                    &xv,
                    &s,
                    out_div,
                )
                .unwrap();
                run(&gpu, &d);
                let what = format!("conv dw {s:?} ({family:?}, {layout:?})");
                assert_close(&what, &gpu.read_f32(&dw).unwrap(), &want, 1e-4, 1e-4);
                ran_16_lanes += usize::from(layout.kernel == Conv2dBackwardKernel::Subgroup && layout.lanes == 16);
            }
        }
    }
    if std::env::var_os("PETAL_TEST_EXPECT_LANES").is_some() {
        assert!(ran_16_lanes > 0, "no 16-lane layout ran");
    }
}

/// The weight gradient's 16-lane blocks (lavapipe at 512-bit vectors, which
/// `petal`'s headless commands ask for on CPUs where they pay:
/// `petal::gpu::prefer_wide_vectors`), and the input gradient's 16-lane
/// forward blocks, and the bias gradient's 16-lane subgroups:
/// [`conv2d_backward_weight_matches_reference`],
/// [`conv2d_backward_input_matches_reference`] and
/// [`conv2d_backward_bias_matches_reference`] run again in a child process
/// with `LP_NATIVE_VECTOR_WIDTH=512`, which Mesa reads when the driver loads;
/// the weight gradient's test checks it got 16 lanes. Skipped where the
/// adapter is not lavapipe or the CPU lacks AVX-512.
#[test]
fn conv2d_backward_16_lanes_match_reference() {
    rerun_at_16_lanes(&[
        "conv2d_backward_weight_matches_reference",
        "conv2d_backward_input_matches_reference",
        "conv2d_backward_bias_matches_reference",
    ]);
}

#[test]
fn conv2d_backward_weight_wants_its_scratch() {
    let gpu = gpu(FAMILIES[0]);
    let s = Conv2dShape::same(2, 4, 6, 6, 4, 3);
    let mut layout = weight_layout(&gpu, &s, false);
    layout.chunks = layout.nsegs(&s).div_ceil(2);
    let (dy, x, dw) = (zeros(&gpu, s.out_len()), zeros(&gpu, s.in_len()), zeros(&gpu, s.weight_len()));
    assert!(conv2d_backward::conv2d_backward_weight_with(&gpu, &layout, "dw", &dw, None, &dy, &x, &s, 1.0).is_err());
    let short = zeros(&gpu, layout.scratch_len(&s) - 1);
    assert!(conv2d_backward::conv2d_backward_weight_with(&gpu, &layout, "dw", &dw, Some(&short), &dy, &x, &s, 1.0).is_err());
    // Blockings the subgroup kernel does not take are refused, not run.
    if layout.kernel == Conv2dBackwardKernel::Subgroup {
        let big = WeightGradLayout { tm: 64, chunks: 1, ..layout };
        let err = conv2d_backward::conv2d_backward_weight_with(&gpu, &big, "dw", &dw, None, &dy, &x, &s, 1.0).err().expect("64 output channels refused");
        assert!(format!("{err:#}").contains("at most 32 output channels"), "{err:#}");
        // The Winograd form steps two output rows: an odd count is refused.
        let odd = Conv2dShape::same(1, 4, 5, 6, 4, 3);
        assert!(!conv2d_backward::dw_winograd_fits(&odd));
        let wino = WeightGradLayout { winograd: true, chunks: 1, ..weight_layout(&gpu, &odd, false) };
        let (dy2, x2, dw2) = (zeros(&gpu, odd.out_len()), zeros(&gpu, odd.in_len()), zeros(&gpu, odd.weight_len()));
        let err = conv2d_backward::conv2d_backward_weight_with(&gpu, &wino, "dw", &dw2, None, &dy2, &x2, &odd, 1.0).err().expect("odd rows refused");
        assert!(format!("{err:#}").contains("even number of output rows"), "{err:#}");
    }
    // The public entry point sizes scratch itself.
    let need = kernels::conv2d_backward_weight_scratch_len(&gpu, &s);
    let sc = zeros(&gpu, need.max(1));
    assert!(kernels::conv2d_backward_weight(&gpu, "dw", &dw, Some(&sc), &dy, &x, &s, 1.0).is_ok());
}

#[test]
fn conv2d_backward_bias_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        // Fewer images than invocations (pixels split), exactly 64, and more
        // than 64 (several rounds); the CPU family's subgroup kernel takes
        // the batches of 8 or 16 and up (a lane per image: 16, exactly the
        // lanes, and 70, uneven).
        // The last four read dy as vec4s (hw a multiple of 4).
        let cases = [(1u32, 5u32, 7u32, 3u32), (3, 9, 5, 5), (64, 3, 2, 3), (70, 4, 3, 1), (2, 6, 4, 8), (64, 3, 4, 4), (70, 2, 2, 2), (16, 5, 3, 4)];
        for (case, &(b, cout, h, w)) in cases.iter().enumerate() {
            let s = Conv2dShape::same(b, 2, h, w, cout, 3);
            let out_div = 1.25;
            let dy = randn(300 + case as u64, s.out_len(), 1.0);
            let (want_db, want_dt) = rb::conv2d_backward_bias(&dy, &s, out_div);
            let dyv = upload(&gpu, &dy);
            let (stride, off) = (cout + 7, 4);
            let prior_t = randn(310, (b * stride) as usize, 1.0);
            for with_temb in [false, true] {
                let db = upload(&gpu, &randn(311, cout as usize, 1.0));
                let dt = upload(&gpu, &prior_t);
                let dtemb = with_temb.then_some((&dt, stride, off));
                let d = kernels::conv2d_backward_bias(&gpu, "db", &db, dtemb, &dyv, &s, out_div).unwrap();
                run(&gpu, &[d]);
                assert_close(&format!("conv db b={b} ({family:?})"), &gpu.read_f32(&db).unwrap(), &want_db, 1e-5, 1e-5);
                let mut want_t = prior_t.clone();
                if with_temb {
                    for bi in 0..b as usize {
                        for co in 0..cout as usize {
                            want_t[bi * stride as usize + off as usize + co] = want_dt[bi * cout as usize + co];
                        }
                    }
                }
                assert_close(&format!("conv dtemb b={b} ({family:?})"), &gpu.read_f32(&dt).unwrap(), &want_t, 1e-5, 1e-5);
            }
        }
    }
}

#[test]
fn scale_add_writes_and_accumulates() {
    for family in FAMILIES {
        let gpu = gpu(family);
        // 1000 values as vec4s, 1001 one at a time.
        for (n, accumulate) in [(1000, false), (1000, true), (1001, false), (1001, true)] {
        let src = randn(400, n, 1.0);
        let prior = randn(401, n, 1.0);
        {
            let dst = upload(&gpu, &prior);
            let d = kernels::scale_add(&gpu, "scale_add", &dst, &upload(&gpu, &src), 1.0 / 1.5, accumulate).unwrap();
            run(&gpu, &[d]);
            let want: Vec<f32> =
                src.iter().zip(&prior).map(|(s, p)| s / 1.5 + if accumulate { *p } else { 0.0 }).collect();
            assert_close("scale_add", &gpu.read_f32(&dst).unwrap(), &want, 1e-6, 1e-6);
        }
        }
    }
}

#[test]
fn group_norm_backward_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        for (case, &(b, c, hw, groups, silu)) in [
            (2usize, 12usize, 35usize, 3usize, true),
            (1, 8, 1, 8, false),
            (3, 32, 300, 8, true),
            (2, 6, 1030, 2, false),
            (3, 40, 9, 4, true), // 10 channels per group: workgroups of 60
            (2, 16, 64, 4, true), // pixels as vec4s, as the next two
            (3, 8, 4, 2, false),
            // The GPU family's workgroup per (image, group): 24 channels a
            // group (8 invocations each, 192 of 256 busy), 1 channel a group
            // (all 256 on one), and 256 channels a group (one each).
            (2, 48, 20, 2, true),
            (1, 5, 1000, 5, false),
            (2, 256, 12, 1, true),
        ]
        .iter()
        .enumerate()
        {
            let seed = 500 + case as u64 * 10;
            let x: Vec<f32> = randn(seed, b * c * hw, 2.0).iter().map(|v| v + 3.0).collect();
            let gamma: Vec<f32> = randn(seed + 1, c, 0.5).iter().map(|v| v + 1.0).collect();
            let beta = randn(seed + 2, c, 0.5);
            let dy = randn(seed + 3, x.len(), 1.0);
            let (_, stats) = reference::group_norm(&x, &gamma, &beta, b, c, hw, groups, 1e-6, silu);
            let (want_dx, want_dg, want_db) = rb::group_norm_backward(&dy, &x, &stats, &gamma, &beta, b, c, hw, groups, silu);
            let prior = randn(seed + 4, x.len(), 1.0);
            let (xv, gv, bv, sv, dyv) =
                (upload(&gpu, &x), upload(&gpu, &gamma), upload(&gpu, &beta), upload(&gpu, &stats), upload(&gpu, &dy));
            for accumulate in [false, true] {
                let dx = upload(&gpu, &prior);
                let dg = upload(&gpu, &randn(seed + 5, c, 1.0));
                let db = upload(&gpu, &randn(seed + 6, c, 1.0));
                let need = kernels::group_norm_backward_scratch_len(b as u32, c as u32);
                let scratch = upload(&gpu, &randn(seed + 7, need + 3, 1.0));
                let d = kernels::group_norm_backward(
                    &gpu, "gn_back", &dx, &dg, &db, &scratch, &dyv, &xv, &sv, &gv, &bv, b as u32, c as u32, hw as u32,
                    groups as u32, silu, accumulate,
                )
                .unwrap();
                run(&gpu, &d);
                let what = format!("group_norm_backward b={b} c={c} hw={hw} g={groups} silu={silu} acc={accumulate}");
                let want = if accumulate { add(&prior, &want_dx) } else { want_dx.clone() };
                assert_close(&format!("{what} dx"), &gpu.read_f32(&dx).unwrap(), &want, 1e-4, 1e-4);
                assert_close(&format!("{what} dgamma"), &gpu.read_f32(&dg).unwrap(), &want_dg, 1e-4, 1e-4);
                assert_close(&format!("{what} dbeta"), &gpu.read_f32(&db).unwrap(), &want_db, 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn linear_backward_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        for (case, &(b, inf, outf, silu)) in
            [(1usize, 16usize, 64usize, false), (3, 37, 5, true), (64, 128, 515, true), (5, 9, 23, false)].iter().enumerate()
        {
            let seed = 600 + case as u64 * 10;
            let x = randn(seed, b * inf, 1.0);
            let w = randn(seed + 1, inf * outf, 0.2);
            let dy = randn(seed + 2, b * outf, 1.0);
            let (want_dx, want_dw, want_db) = rb::linear_backward(&dy, &x, &w, b, inf, outf, silu);
            let prior = randn(seed + 3, b * inf, 1.0);
            let (xv, wv, dyv) = (upload(&gpu, &x), upload(&gpu, &w), upload(&gpu, &dy));
            // dw and db side by side in one buffer, as in the gradient slab.
            let align = (gpu.limits.min_storage_buffer_offset_alignment as usize / 4).max(4);
            let db_at = (inf * outf).next_multiple_of(align);
            let slab = upload(&gpu, &randn(seed + 4, db_at + outf, 1.0));
            let (dw, db) = (slab.slice(0, inf * outf), slab.slice(db_at, outf));
            for (with_dx, accumulate) in [(false, false), (true, false), (true, true)] {
                let dx = upload(&gpu, &prior);
                let d = kernels::linear_backward(
                    &gpu,
                    "linear_back",
                    with_dx.then_some(&dx),
                    &dw,
                    &db,
                    &dyv,
                    &xv,
                    &wv,
                    b as u32,
                    inf as u32,
                    outf as u32,
                    silu,
                    accumulate,
                )
                .unwrap();
                run(&gpu, &d);
                let what = format!("linear_backward b={b} in={inf} out={outf} silu={silu} acc={accumulate}");
                let want = match (with_dx, accumulate) {
                    (false, _) => prior.clone(),
                    (true, false) => want_dx.clone(),
                    (true, true) => add(&prior, &want_dx),
                };
                assert_close(&format!("{what} dx"), &gpu.read_f32(&dx).unwrap(), &want, 1e-4, 1e-4);
                assert_close(&format!("{what} dw"), &gpu.read_f32(&dw).unwrap(), &want_dw, 1e-4, 1e-4);
                assert_close(&format!("{what} db"), &gpu.read_f32(&db).unwrap(), &want_db, 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn softmax_backward_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        // Rows of 19 one value at a time, of 20 as vec4s.
        for (rows, n) in [(37u32, 19u32), (37, 20)] {
        let mut y = randn(700, (rows * n) as usize, 3.0);
        reference::softmax(&mut y, n as usize);
        let dy = randn(701, y.len(), 1.0);
        let dx = upload(&gpu, &randn(702, y.len(), 1.0));
        let d = kernels::softmax_backward(&gpu, "softmax_back", &dx, &upload(&gpu, &dy), &upload(&gpu, &y), rows, n).unwrap();
        run(&gpu, &[d]);
        assert_close("softmax_backward", &gpu.read_f32(&dx).unwrap(), &rb::softmax_backward(&dy, &y, n as usize), 1e-6, 1e-5);
        }
    }
}

#[test]
fn copy_channel_slice_concatenates_and_splits() {
    for family in FAMILIES {
        let gpu = gpu(family);
        // 7 pixels one value at a time, 8 as vec4s.
        for hw in [7usize, 8] {
        let (b, ca, cb) = (3usize, 5usize, 2usize);
        let c = ca + cb;
        // Forward: y = cat(a, bb) through the old entry point and the new one.
        let a = randn(800, b * ca * hw, 1.0);
        let bb = randn(801, b * cb * hw, 1.0);
        let y = upload(&gpu, &randn(802, b * c * hw, 1.0));
        let d1 = kernels::copy_channels(&gpu, "cat", &y, &upload(&gpu, &a), b as u32, ca as u32, hw as u32, c as u32, 0).unwrap();
        let d2 = kernels::copy_channel_slice(
            &gpu,
            "cat",
            &y,
            ChannelSlice { total: c as u32, offset: ca as u32 },
            &upload(&gpu, &bb),
            ChannelSlice { total: cb as u32, offset: 0 },
            b as u32,
            cb as u32,
            hw as u32,
            false,
        )
        .unwrap();
        run(&gpu, &[d1, d2]);
        let mut want = vec![0f32; b * c * hw];
        reference::copy_channels(&mut want, &a, b, ca, hw, c, 0);
        reference::copy_channels(&mut want, &bb, b, cb, hw, c, ca);
        assert_eq!(gpu.read_f32(&y).unwrap(), want);

        // Backward: split dy into da (written) and dbb (accumulated).
        let dy = randn(803, b * c * hw, 1.0);
        let dyv = upload(&gpu, &dy);
        let prior_a = randn(804, a.len(), 1.0);
        let prior_b = randn(805, bb.len(), 1.0);
        let (da, dbb) = (upload(&gpu, &prior_a), upload(&gpu, &prior_b));
        let whole = |total: usize| ChannelSlice { total: total as u32, offset: 0 };
        let sa = ChannelSlice { total: c as u32, offset: 0 };
        let sb = ChannelSlice { total: c as u32, offset: ca as u32 };
        let d1 = kernels::copy_channel_slice(&gpu, "split", &da, whole(ca), &dyv, sa, b as u32, ca as u32, hw as u32, false).unwrap();
        let d2 = kernels::copy_channel_slice(&gpu, "split", &dbb, whole(cb), &dyv, sb, b as u32, cb as u32, hw as u32, true).unwrap();
        run(&gpu, &[d1, d2]);
        let mut want_a = prior_a.clone();
        rb::copy_channel_slice(&mut want_a, ca, 0, &dy, c, 0, b, ca, hw, false);
        let mut want_b = prior_b.clone();
        rb::copy_channel_slice(&mut want_b, cb, 0, &dy, c, ca, b, cb, hw, true);
        assert_eq!(gpu.read_f32(&da).unwrap(), want_a);
        assert_close("split accumulate", &gpu.read_f32(&dbb).unwrap(), &want_b, 0.0, 1e-7);
        // A middle slice into a middle slice.
        let dst = upload(&gpu, &prior_a);
        let d = kernels::copy_channel_slice(
            &gpu,
            "mid",
            &dst,
            ChannelSlice { total: ca as u32, offset: 1 },
            &dyv,
            ChannelSlice { total: c as u32, offset: 2 },
            b as u32,
            3,
            hw as u32,
            true,
        )
        .unwrap();
        run(&gpu, &[d]);
        let mut want = prior_a.clone();
        rb::copy_channel_slice(&mut want, ca, 1, &dy, c, 2, b, 3, hw, true);
        assert_close("middle slice", &gpu.read_f32(&dst).unwrap(), &want, 0.0, 1e-7);
        assert!(
            kernels::copy_channel_slice(&gpu, "bad", &dst, whole(ca), &dyv, sb, b as u32, ca as u32, hw as u32, false).is_err()
        );
        }
    }
}

// ---------------------------------------------------------------------------
// The references against finite differences of the forward references.

/// Central differences of `loss` at up to `count` elements of `v` spread
/// over it, against `analytic`: relative L2 error below 1e-2.
fn fd_check(what: &str, analytic: &[f32], v: &mut [f32], count: usize, loss: &dyn Fn(&[f32]) -> f64) {
    let h = 1e-2f32;
    let step = (v.len() / count).max(1);
    let (mut num, mut den) = (0f64, 0f64);
    let mut worst = (0usize, 0f64, 0f64);
    for i in (0..v.len()).step_by(step).take(count) {
        let orig = v[i];
        v[i] = orig + h;
        let lp = loss(v);
        v[i] = orig - h;
        let lm = loss(v);
        v[i] = orig;
        let fd = (lp - lm) / (2.0 * h as f64);
        let an = analytic[i] as f64;
        num += (fd - an).powi(2);
        den += fd.powi(2);
        if (fd - an).abs() > (worst.1 - worst.2).abs() {
            worst = (i, fd, an);
        }
    }
    let rel = (num / den.max(1e-30)).sqrt();
    assert!(rel < 1e-2, "{what}: finite-difference relative error {rel:e} (worst at {}: fd {} analytic {})", worst.0, worst.1, worst.2);
}

fn dot(y: &[f32], r: &[f32]) -> f64 {
    y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
}

fn conv_fd(s: Conv2dShape, seed: u64) {
    let out_div = 1.5;
    let mut x = randn(seed, s.in_len(), 1.0);
    let mut w = randn(seed + 1, s.weight_len(), 0.3);
    let mut bias = randn(seed + 2, s.cout as usize, 0.5);
    let stride = s.cout + 3;
    let mut temb = randn(seed + 3, (s.batch * stride) as usize, 0.5);
    let mut res = randn(seed + 4, s.out_len(), 1.0);
    let r = randn(seed + 5, s.out_len(), 1.0);
    let fwd = |x: &[f32], w: &[f32], b: &[f32], t: &[f32], res: &[f32]| {
        dot(&reference::conv2d(x, w, Some(b), Some((t, stride as usize, 2)), Some(res), out_div, &s), &r)
    };
    // dy = r for L = sum(y * r).
    let name = format!("{s:?}");
    let dx = rb::conv2d_backward_input(&r, &w, &s, out_div);
    fd_check(&format!("conv dx {name}"), &dx, &mut x.clone(), 60, &|v| fwd(v, &w, &bias, &temb, &res));
    let dw = rb::conv2d_backward_weight(&r, &x, &s, out_div);
    fd_check(&format!("conv dw {name}"), &dw, &mut w.clone(), 60, &|v| fwd(&x, v, &bias, &temb, &res));
    let (db, dt) = rb::conv2d_backward_bias(&r, &s, out_div);
    fd_check(&format!("conv db {name}"), &db, &mut bias, 60, &|v| fwd(&x, &w, v, &temb, &res));
    let mut dtemb = vec![0f32; temb.len()];
    for b in 0..s.batch as usize {
        for co in 0..s.cout as usize {
            dtemb[b * stride as usize + 2 + co] = dt[b * s.cout as usize + co];
        }
    }
    fd_check(&format!("conv dtemb {name}"), &dtemb, &mut temb, 60, &|v| fwd(&x, &w, &bias, v, &res));
    let dres: Vec<f32> = r.iter().map(|v| v / out_div).collect();
    fd_check(&format!("conv dresidual {name}"), &dres, &mut res, 30, &|v| fwd(&x, &w, &bias, &temb, v));
    x[0] += 0.0;
    w[0] += 0.0;
}

#[test]
fn conv2d_backward_reference_matches_finite_differences() {
    // Downsample2D with padding 0 on an odd input.
    conv_fd(shape(2, 3, 7, 5, 4, 3, 2, [0, 0, 1, 1], false), 900);
    // Upsample2D.
    conv_fd(shape(2, 3, 3, 4, 4, 3, 1, [1; 4], true), 910);
    // Plain 3x3 same.
    conv_fd(Conv2dShape::same(1, 3, 5, 4, 2, 3), 920);
}

#[test]
fn group_norm_backward_reference_matches_finite_differences() {
    let (b, c, hw, groups, eps) = (2usize, 6usize, 5usize, 3usize, 1e-5f32);
    let mut x: Vec<f32> = randn(930, b * c * hw, 1.5).iter().map(|v| v + 0.5).collect();
    let mut gamma: Vec<f32> = randn(931, c, 0.5).iter().map(|v| v + 1.0).collect();
    let mut beta = randn(932, c, 0.5);
    let r = randn(933, x.len(), 1.0);
    for silu in [true, false] {
        let fwd = |x: &[f32], g: &[f32], bt: &[f32]| dot(&reference::group_norm(x, g, bt, b, c, hw, groups, eps, silu).0, &r);
        let (_, stats) = reference::group_norm(&x, &gamma, &beta, b, c, hw, groups, eps, silu);
        let (dx, dg, db) = rb::group_norm_backward(&r, &x, &stats, &gamma, &beta, b, c, hw, groups, silu);
        let (g0, b0, x0) = (gamma.clone(), beta.clone(), x.clone());
        fd_check(&format!("group_norm dx silu={silu}"), &dx, &mut x, 60, &|v| fwd(v, &g0, &b0));
        fd_check(&format!("group_norm dgamma silu={silu}"), &dg, &mut gamma, 60, &|v| fwd(&x0, v, &b0));
        fd_check(&format!("group_norm dbeta silu={silu}"), &db, &mut beta, 60, &|v| fwd(&x0, &g0, v));
    }
}

#[test]
fn linear_backward_reference_matches_finite_differences() {
    let (b, inf, outf) = (3usize, 7usize, 5usize);
    let mut x = randn(940, b * inf, 1.0);
    let mut w = randn(941, inf * outf, 0.4);
    let mut bias = randn(942, outf, 0.4);
    let r = randn(943, b * outf, 1.0);
    for silu in [true, false] {
        let fwd = |x: &[f32], w: &[f32], bs: &[f32]| dot(&reference::linear(x, w, bs, b, inf, outf, silu), &r);
        let (dx, dw, db) = rb::linear_backward(&r, &x, &w, b, inf, outf, silu);
        let (x0, w0, b0) = (x.clone(), w.clone(), bias.clone());
        fd_check(&format!("linear dx silu={silu}"), &dx, &mut x, 60, &|v| fwd(v, &w0, &b0));
        fd_check(&format!("linear dw silu={silu}"), &dw, &mut w, 60, &|v| fwd(&x0, v, &b0));
        fd_check(&format!("linear db silu={silu}"), &db, &mut bias, 60, &|v| fwd(&x0, &w0, v));
    }
}

#[test]
fn softmax_backward_reference_matches_finite_differences() {
    let (rows, n) = (4usize, 9usize);
    let mut x = randn(950, rows * n, 2.0);
    let r = randn(951, rows * n, 1.0);
    let fwd = |x: &[f32]| {
        let mut y = x.to_vec();
        reference::softmax(&mut y, n);
        dot(&y, &r)
    };
    let mut y = x.clone();
    reference::softmax(&mut y, n);
    let dx = rb::softmax_backward(&r, &y, n);
    fd_check("softmax dx", &dx, &mut x, 36, &fwd);
}

// ---------------------------------------------------------------------------
// Timing (ignored by default).

fn time_dispatches(gpu: &Gpu, d: &[Dispatch], flop: f64) -> f64 {
    run(gpu, d);
    gpu.wait().unwrap();
    let t0 = std::time::Instant::now();
    run(gpu, d);
    gpu.wait().unwrap();
    let one = t0.elapsed().as_secs_f64();
    let reps = ((0.3 / one) as usize).clamp(1, 50);
    let refs: Vec<&Dispatch> = (0..reps).flat_map(|_| d.iter()).collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        gpu.run(&refs);
        gpu.wait().unwrap();
        best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
    }
    flop / best / 1e9
}

/// GFLOP/s of both convolution gradients on cifar10-32 shapes at batch 16,
/// for each kernel variant this adapter runs.
#[test]
#[ignore]
fn bench_conv_backward() {
    let gpu = gpu(petal::gpu::KernelFamily::Cpu);
    println!("{}", gpu.describe());
    let batch: u32 =
        std::env::var("PETAL_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let filter = std::env::var("PETAL_BENCH_FILTER").ok();
    let cases = [
        ("32x32 128->128 k3", Conv2dShape::same(batch, 128, 32, 32, 128, 3)),
        ("16x16 256->256 k3", Conv2dShape::same(batch, 256, 16, 16, 256, 3)),
        ("8x8 256->256 k3", Conv2dShape::same(batch, 256, 8, 8, 256, 3)),
        ("32x32 384->128 k1", Conv2dShape::same(batch, 384, 32, 32, 128, 1)),
        ("32x32 128 down", shape(batch, 128, 32, 32, 128, 3, 2, [1; 4], false)),
        ("16x16 256 up", shape(batch, 256, 16, 16, 256, 3, 1, [1; 4], true)),
        ("32x32 128->3 k3", Conv2dShape::same(batch, 128, 32, 32, 3, 3)),
        ("32x32 3->128 k3", Conv2dShape::same(batch, 3, 32, 32, 128, 3)),
        // The small model's narrow layers.
        ("32x32 32->32 k3", Conv2dShape::same(batch, 32, 32, 32, 32, 3)),
        ("16x16 64->64 k3", Conv2dShape::same(batch, 64, 16, 16, 64, 3)),
        ("8x8 64->64 k3", Conv2dShape::same(batch, 64, 8, 8, 64, 3)),
        ("16x16 128->64 k3", Conv2dShape::same(batch, 128, 16, 16, 64, 3)),
    ];
    // PETAL_BENCH_DX_TM / PETAL_BENCH_DX_TN override the subgroup kernel's
    // input-gradient blocking (input channels per workgroup, pixels per lane).
    let env_u32 = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    let (dx_tm, dx_tn) = (env_u32("PETAL_BENCH_DX_TM"), env_u32("PETAL_BENCH_DX_TN"));
    let dx_forward = env_u32("PETAL_BENCH_DX_FORWARD") != Some(0);
    // PETAL_BENCH_DW_TM / PETAL_BENCH_DW_TC: the subgroup weight gradient's
    // output channels per workgroup and input channels per lane.
    let (dw_tm, dw_tc) = (env_u32("PETAL_BENCH_DW_TM"), env_u32("PETAL_BENCH_DW_TC"));
    // PETAL_BENCH_GENERIC=0 skips the (slow, on lavapipe) generic kernels.
    let mut kernels_run = Vec::new();
    if std::env::var("PETAL_BENCH_GENERIC").map_or(true, |v| v != "0") {
        kernels_run.push(Conv2dBackwardKernel::Generic);
    }
    if petal::kernels::subgroups_of_8(&gpu) {
        kernels_run.push(Conv2dBackwardKernel::Subgroup);
    }
    println!("batch {batch}, GFLOP/s (best of 3), dx and dw per kernel {kernels_run:?}");
    for (name, s) in cases {
        if filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let flop = 2.0 * s.macs() as f64;
        let dy = upload(&gpu, &randn(1, s.out_len(), 1.0));
        let x = upload(&gpu, &randn(2, s.in_len(), 1.0));
        let w = upload(&gpu, &randn(3, s.weight_len(), 0.05));
        let dx = zeros(&gpu, s.in_len());
        let dw = zeros(&gpu, s.weight_len());
        print!("{name:<22} {:>7.0} MFLOP", flop / 1e6);
        // The variants must agree (the first, generic, is the baseline).
        let mut first: Option<(Vec<f32>, Vec<f32>)> = None;
        for &k in &kernels_run {
            let mut dx_layout = InputGradLayout::new(k, &s, petal::kernels::conv_lanes(&gpu));
            if k == Conv2dBackwardKernel::Subgroup {
                dx_layout.tm = dx_tm.unwrap_or(dx_layout.tm);
                dx_layout.tn = dx_tn.unwrap_or(dx_layout.tn);
                if !dx_forward {
                    dx_layout.forward = None;
                }
            }
            let need = dx_layout.scratch_len(&s);
            let dx_scratch: Option<TensorView> = (need > 0).then(|| zeros(&gpu, need));
            let d = conv2d_backward::conv2d_backward_input_with(
                &gpu,
                &dx_layout,
                "dx",
                &dx,
                &dy,
                &w,
                dx_scratch.as_ref(),
                &s,
                1.0,
                false,
            )
            .unwrap();
            let gx = time_dispatches(&gpu, &d, flop);
            let mut layout = WeightGradLayout::new(&gpu, k, &s);
            if k == Conv2dBackwardKernel::Subgroup {
                layout.tm = dw_tm.unwrap_or(layout.tm);
                layout.tc = dw_tc.unwrap_or(layout.tc);
            }
            let need = layout.scratch_len(&s);
            let scratch: Option<TensorView> = (need > 0).then(|| zeros(&gpu, need));
            let d = conv2d_backward::conv2d_backward_weight_with(&gpu, &layout, "dw", &dw, scratch.as_ref(), &dy, &x, &s, 1.0)
                .unwrap();
            let gw = time_dispatches(&gpu, &d, flop);
            let got = (gpu.read_f32(&dx).unwrap(), gpu.read_f32(&dw).unwrap());
            let agree = match &first {
                None => {
                    first = Some(got);
                    ""
                }
                Some((fx, fw)) => {
                    if rel_l2(&got.0, fx) < 1e-5 && rel_l2(&got.1, fw) < 1e-5 { "" } else { " DISAGREES" }
                }
            };
            let dx_how = match dx_layout.forward {
                Some(f) => format!("forward {}", f.name()),
                None => format!("tm {} tn {}", dx_layout.tm, dx_layout.tn),
            };
            print!("   {k:?}: dx {gx:6.1} ({dx_how}) dw {gw:6.1} (chunks {}){agree}", layout.chunks_used(&s));
        }
        println!();
    }
}
