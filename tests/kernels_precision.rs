//! The weight-reading kernels (conv2d forward: generic, tiled and every
//! subgroup block; linear forward) with f16 and int8 weights against the
//! plain-f32 reference run on the same weights widened (int8 dequantized),
//! for both kernel families. Odd lengths put weights at every position in
//! their 32-bit word (the packed loads' edge cases).

mod common;
use common::*;
use petal::gpu::{Dtype, Gpu, KernelFamily, TensorView};
use petal::kernels::conv2d::{Conv2dKernel, SubgroupTile, kernel_for};
use petal::kernels::{self, Conv2dEpilogue, Conv2dShape};
use petal::model::precision::{HostTensor, encode_group, quantize_rows};
use petal::reference;

#[derive(Clone, Copy, Debug)]
enum Format {
    F16,
    I8,
}

const FORMATS: [Format; 2] = [Format::F16, Format::I8];

/// `w` (rows, len / rows) on the GPU in `format`, and the values the kernel
/// should see (f16-rounded, or int8-dequantized).
fn weight(gpu: &Gpu, w: &[f32], rows: usize, format: Format) -> (TensorView, Vec<f32>) {
    let (host, dtype) = match format {
        Format::F16 => (HostTensor::F16(w.iter().map(|&v| half::f16::from_f32(v)).collect()), Dtype::F16),
        Format::I8 => {
            let (q, scale) = quantize_rows(w, rows);
            (HostTensor::I8 { q, scale }, Dtype::I8 { rows: rows as u32 })
        }
    };
    let bytes = encode_group(&[0], std::slice::from_ref(&host), dtype);
    (gpu.upload_typed("weight", w.len(), dtype, &bytes), host.widen())
}

fn conv_case(gpu: &Gpu, kernel: Conv2dKernel, format: Format, s: Conv2dShape, seed: u64) {
    let x = randn(seed, s.in_len(), 1.0);
    let w = randn(seed + 1, s.weight_len(), 0.3);
    let b = randn(seed + 2, s.cout as usize, 0.5);
    let temb_stride = s.cout + 5;
    let t = randn(seed + 3, (s.batch * temb_stride) as usize, 0.5);
    let r = randn(seed + 4, s.out_len(), 1.0);
    let (wv, w_seen) = weight(gpu, &w, s.cout as usize, format);
    let (xv, bv, tv, rv) = (upload(gpu, &x), upload(gpu, &b), upload(gpu, &t), upload(gpu, &r));
    let y = zeros(gpu, s.out_len());
    let epi = Conv2dEpilogue { bias: Some(&bv), temb: Some((&tv, temb_stride, 3)), residual: Some(&rv), out_div: 1.5, accumulate: false };
    run_conv_forward(gpu, kernel, &y, &xv, &wv, &s, &epi);
    let got = gpu.read_f32(&y).unwrap();
    let want = reference::conv2d(&x, &w_seen, Some(&b), Some((&t, temb_stride as usize, 3)), Some(&r), 1.5, &s);
    assert_close(&format!("conv {s:?} ({}, {format:?})", kernel.name()), &got, &want, 1e-4, 1e-5);
}

/// The shapes of tests/kernels.rs' conv test: odd sizes, 1x1, stride 2 with
/// both paddings, upsampling, cin of 3 (conv_in) and cout of 3 (conv_out).
fn shapes() -> Vec<Conv2dShape> {
    let same = Conv2dShape::same;
    let strided = |s: Conv2dShape, pad: [u32; 4]| Conv2dShape { stride: 2, pad, ..s };
    let upsampled = |s: Conv2dShape| Conv2dShape { upsample: true, ..s };
    vec![
        same(2, 3, 7, 5, 5, 3),
        same(2, 20, 9, 11, 37, 3),
        same(3, 13, 5, 3, 9, 1),
        strided(same(2, 6, 8, 8, 6, 3), [0, 0, 1, 1]),
        strided(same(2, 5, 7, 9, 4, 3), [1, 1, 1, 1]),
        upsampled(same(2, 7, 3, 5, 6, 3)),
        same(17, 8, 4, 4, 12, 3),
        same(2, 40, 6, 6, 70, 1),
        // 1x1 over 4k channels and rows of 4k pixels: 4 channels a step, vec4 window.
        same(2, 8, 4, 8, 12, 1),
        same(2, 16, 9, 7, 3, 3),
        same(1, 5, 3, 3, 7, 3),
    ]
}

#[test]
fn conv2d_forward_with_packed_weights_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        for format in FORMATS {
            for (i, s) in shapes().into_iter().enumerate() {
                conv_case(&gpu, kernel_for(&gpu, family, &s), format, s, 200 + 10 * i as u64);
                // The generic kernel too (adapters without fitting subgroups).
                conv_case(&gpu, Conv2dKernel::Generic, format, s, 300 + 10 * i as u64);
            }
        }
    }
}

#[test]
fn conv2d_forward_subgroup_blocks_with_packed_weights_match_reference() {
    let gpu = gpu(KernelFamily::Cpu);
    if !kernels::subgroups_of_8(&gpu) {
        eprintln!("skipped: the subgroup kernel needs subgroups of 8 lanes");
        return;
    }
    let tile = |tm, nb, ph, pw| Conv2dKernel::Subgroup(SubgroupTile::new(tm, nb, ph, pw));
    let same = Conv2dShape::same;
    let strided = |s: Conv2dShape, pad: [u32; 4]| Conv2dShape { stride: 2, pad, ..s };
    let mut n = 400;
    for format in FORMATS {
        for k in [tile(1, 1, 4, 4), tile(2, 1, 3, 5), tile(3, 2, 2, 4)] {
            for s in [same(1, 5, 7, 9, 13, 3), same(5, 7, 5, 3, 8, 1), strided(same(3, 4, 9, 10, 9, 3), [0, 0, 1, 1])] {
                n += 5;
                conv_case(&gpu, k, format, s, n);
            }
        }
        let k = tile(1, 1, 4, 4);
        n += 5;
        conv_case(&gpu, k, format, Conv2dShape { upsample: true, ..same(2, 5, 3, 5, 10, 3) }, n);
        // The Winograd form transforms each lane's weights after reading
        // them in their format (and scales the sums at the store).
        let w = Conv2dKernel::Subgroup(SubgroupTile::new(2, 1, 2, 4).in_winograd_form());
        n += 5;
        conv_case(&gpu, w, format, same(2, 5, 7, 9, 13, 3), n);
    }
}

#[test]
fn linear_forward_with_packed_weights_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        for format in FORMATS {
            for &(b, inf, outf, silu) in &[(1usize, 16usize, 64usize, false), (3, 37, 5, true), (16, 128, 130, true)] {
                let x = randn(30, b * inf, 1.0);
                let w = randn(31, inf * outf, 0.2);
                let bias = randn(32, outf, 0.2);
                let (wv, w_seen) = weight(&gpu, &w, outf, format);
                let y = zeros(&gpu, b * outf);
                let d = kernels::linear_forward(
                    &gpu,
                    "linear",
                    &y,
                    &upload(&gpu, &x),
                    &wv,
                    &upload(&gpu, &bias),
                    b as u32,
                    inf as u32,
                    outf as u32,
                    silu,
                )
                .unwrap();
                gpu.run(&[&d]);
                let want = reference::linear(&x, &w_seen, &bias, b, inf, outf, silu);
                assert_close(&format!("linear {b}x{inf}->{outf} ({format:?})"), &gpu.read_f32(&y).unwrap(), &want, 1e-4, 1e-5);
            }
        }
    }
}

/// Packed views come back widened and dequantized, and the training kernels
/// refuse packed weights with an error rather than reading them wrongly.
#[test]
fn packed_views_read_back_and_backward_refuses_them() {
    let gpu = gpu(KernelFamily::Cpu);
    let w = randn(7, 5 * 9, 0.5);
    for format in FORMATS {
        let (wv, seen) = weight(&gpu, &w, 5, format);
        assert_eq!(gpu.read_f32(&wv).unwrap(), seen);
        let s = Conv2dShape::same(1, 1, 4, 4, 5, 3);
        let (dx, dy) = (zeros(&gpu, s.in_len()), zeros(&gpu, s.out_len()));
        let err = kernels::conv2d_backward_input(&gpu, "conv_backward_input", &dx, &dy, &wv, None, &s, 1.0, false).err().unwrap();
        assert!(err.to_string().contains("training needs f32 weights"), "{err}");
    }
}
