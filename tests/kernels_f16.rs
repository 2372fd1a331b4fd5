//! The kernels of a sampling forward pass with f16 activations (issue 10:
//! "keep activations in f16 where that is safe"): conv2d (generic, tiled and
//! subgroup blocks), group norm, matmul and the channel copy, each reading
//! and writing f16 feature maps and computing in f32, against the plain-f32
//! reference run on the same inputs rounded to f16. Runs where the adapter
//! offers SHADER_F16 (lavapipe does); elsewhere each test says so and passes.

mod common;
use common::*;
use petal::gpu::{Dtype, Gpu, KernelFamily, TensorView};
use petal::kernels::conv2d::{Conv2dKernel, SubgroupTile, kernel_for};
use petal::kernels::matmul::{MatmulKernel, kernel_for as matmul_kernel_for, matmul_with};
use petal::kernels::{self, Conv2dEpilogue, Conv2dShape, MatmulDesc, Operand};
use petal::reference;

fn has_f16(gpu: &Gpu) -> bool {
    let ok = gpu.features.contains(wgpu::Features::SHADER_F16);
    if !ok {
        eprintln!("skipped: {} has no SHADER_F16", gpu.describe());
    }
    ok
}

fn round16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
}

/// `v` on the GPU as f16 (the values the kernel sees: `round16(v)`).
fn upload16(gpu: &Gpu, v: &[f32]) -> TensorView {
    let bytes: Vec<u8> = v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
    let mut padded = bytes;
    padded.resize(Dtype::F16.bytes(v.len()) as usize, 0);
    gpu.upload_typed("f16 activation", v.len(), Dtype::F16, &padded)
}

fn zeros16(gpu: &Gpu, n: usize) -> TensorView {
    upload16(gpu, &vec![0.0; n])
}

/// f16 output against the f32 reference: the output's own rounding (2^-11
/// relative) plus f32 summation order.
fn assert_close16(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-3 * w.abs() + 2e-4 * scale + 1e-6;
        assert!((g - w).abs() <= tol, "{what}: element {i}: got {g}, want {w} (tol {tol:e})");
    }
    assert_eq!(got.len(), want.len(), "{what}: length");
}

fn conv_case(gpu: &Gpu, kernel: Conv2dKernel, s: Conv2dShape, seed: u64) {
    let x = round16(&randn(seed, s.in_len(), 1.0));
    let w = randn(seed + 1, s.weight_len(), 0.3);
    let b = randn(seed + 2, s.cout as usize, 0.5);
    let temb_stride = s.cout + 5;
    let t = randn(seed + 3, (s.batch * temb_stride) as usize, 0.5);
    let r = round16(&randn(seed + 4, s.out_len(), 1.0));
    let (xv, wv, bv, tv, rv) = (upload16(gpu, &x), upload(gpu, &w), upload(gpu, &b), upload(gpu, &t), upload16(gpu, &r));
    let y = zeros16(gpu, s.out_len());
    let epi = Conv2dEpilogue { bias: Some(&bv), temb: Some((&tv, temb_stride, 3)), residual: Some(&rv), out_div: 1.5, accumulate: false };
    run_conv_forward(gpu, kernel, &y, &xv, &wv, &s, &epi);
    let got = gpu.read_f32(&y).unwrap();
    let want = reference::conv2d(&x, &w, Some(&b), Some((&t, temb_stride as usize, 3)), Some(&r), 1.5, &s);
    assert_close16(&format!("conv {s:?} ({})", kernel.name()), &got, &want);
}

#[test]
fn conv2d_forward_with_f16_activations_matches_reference() {
    let same = Conv2dShape::same;
    let shapes = [
        same(2, 3, 7, 5, 5, 3),
        same(2, 20, 9, 11, 37, 3),
        same(3, 13, 5, 3, 9, 1),
        Conv2dShape { stride: 2, pad: [0, 0, 1, 1], ..same(2, 6, 8, 8, 6, 3) },
        Conv2dShape { upsample: true, ..same(2, 7, 3, 5, 6, 3) },
        same(1, 5, 3, 3, 7, 3),
    ];
    for family in FAMILIES {
        let gpu = gpu(family);
        if !has_f16(&gpu) {
            return;
        }
        for (i, s) in shapes.iter().enumerate() {
            let chosen = kernel_for(&gpu, family, s);
            let mut kernels = vec![chosen, Conv2dKernel::Generic];
            if family == KernelFamily::Gpu {
                kernels.push(Conv2dKernel::Tiled);
            }
            if kernels::subgroups_of_8(&gpu) && family == KernelFamily::Cpu {
                kernels.push(Conv2dKernel::Subgroup(SubgroupTile::new(1, 1, 2, 4)));
                let wino = SubgroupTile::new(1, 1, 2, 4).in_winograd_form();
                if kernels::conv2d::winograd_fits(s, &wino) {
                    kernels.push(Conv2dKernel::Subgroup(wino));
                }
            }
            kernels.dedup();
            for k in kernels {
                conv_case(&gpu, k, *s, 40 + i as u64);
            }
        }
    }
}

/// The bundled model's widest layers with the kernel each would get.
#[test]
fn conv2d_forward_f16_at_model_sizes() {
    let gpu = gpu(KernelFamily::Cpu);
    if !has_f16(&gpu) {
        return;
    }
    for (i, s) in [Conv2dShape::same(2, 64, 16, 16, 64, 3), Conv2dShape::same(2, 32, 32, 32, 32, 3)].into_iter().enumerate() {
        let k = kernel_for(&gpu, KernelFamily::Cpu, &s);
        let t = std::time::Instant::now();
        conv_case(&gpu, k, s, 90 + i as u64);
        eprintln!("{} {s:?}: {:?}", k.name(), t.elapsed());
    }
}

#[test]
fn group_norm_forward_with_f16_activations_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        if !has_f16(&gpu) {
            return;
        }
        for (case, &(b, c, hw, groups, silu)) in [(2usize, 12usize, 35usize, 3usize, true), (3, 32, 300, 8, true), (2, 6, 1030, 2, false)]
            .iter()
            .enumerate()
        {
            // An offset mean: the statistics are accumulated in f32.
            let x = round16(&randn(10 + case as u64, b * c * hw, 2.0).iter().map(|v| v + 3.0).collect::<Vec<_>>());
            let gamma: Vec<f32> = randn(20, c, 0.5).iter().map(|v| v + 1.0).collect();
            let beta = randn(21, c, 0.5);
            let (xv, gv, bv) = (upload16(&gpu, &x), upload(&gpu, &gamma), upload(&gpu, &beta));
            let y = zeros16(&gpu, x.len());
            let stats = zeros(&gpu, b * groups * 2);
            let d = kernels::group_norm_forward(&gpu, "gn", &y, &stats, &xv, &gv, &bv, b as u32, c as u32, hw as u32, groups as u32, 1e-6, silu)
                .unwrap();
            gpu.run(&[&d]);
            let (want_y, want_s) = reference::group_norm(&x, &gamma, &beta, b, c, hw, groups, 1e-6, silu);
            assert_close16("group_norm y", &gpu.read_f32(&y).unwrap(), &want_y);
            assert_close("group_norm stats (f32)", &gpu.read_f32(&stats).unwrap(), &want_s, 1e-4, 1e-5);
        }
    }
}

/// Attention's two products as the forward pass stores them: scores (f32) =
/// q^T k from f16 q and k; out (f16) = v p^T from f16 v and f32 probabilities.
fn matmul_case(gpu: &Gpu, kernel: MatmulKernel, (outer, inner, m, n, k): (u32, u32, u32, u32, u32), f16_b: bool, f16_c: bool, seed: u64) {
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
        accumulate: false,
    };
    let a = round16(&randn(seed, (outer * inner * m * k + 5) as usize, 1.0));
    let b = randn(seed + 1, (outer * inner * k * n) as usize, 1.0);
    let b = if f16_b { round16(&b) } else { b };
    let c_len = (outer * inner * m * n) as usize;
    let av = upload16(gpu, &a);
    let bv = if f16_b { upload16(gpu, &b) } else { upload(gpu, &b) };
    let cv = if f16_c { zeros16(gpu, c_len) } else { zeros(gpu, c_len) };
    let disp = matmul_with(gpu, kernel, "mm", &cv, &av, &bv, &d).unwrap();
    gpu.run(&[&disp]);
    let mut want = vec![0.0; c_len];
    reference::matmul(&mut want, &a, &b, &d);
    let what = format!("matmul {kernel:?} {:?} b f16 {f16_b} c f16 {f16_c}", (outer, inner, m, n, k));
    let got = gpu.read_f32(&cv).unwrap();
    if f16_c { assert_close16(&what, &got, &want) } else { assert_close(&what, &got, &want, 1e-4, 1e-5) }
}

#[test]
fn matmul_with_f16_operands_matches_reference() {
    for family in FAMILIES {
        let gpu = gpu(family);
        if !has_f16(&gpu) {
            return;
        }
        let mut seed = 300;
        for shape in [(2, 3, 13, 9, 7), (1, 2, 33, 70, 19), (1, 1, 3, 5, 1)] {
            let d = MatmulDesc { m: shape.2, n: shape.3, k: shape.4, outer: shape.0, inner: shape.1, ..dummy_desc() };
            let mut kernels = vec![matmul_kernel_for(&gpu, &d), MatmulKernel::Generic];
            if family == KernelFamily::Cpu && kernels::subgroups_of_8(&gpu) {
                kernels.push(MatmulKernel::Subgroup { tm: 8, tn: 2, lanes: 8 });
            }
            kernels.dedup();
            for k in kernels {
                for (f16_b, f16_c) in [(true, false), (false, true)] {
                    seed += 3;
                    matmul_case(&gpu, k, shape, f16_b, f16_c, seed);
                }
            }
        }
    }
}

fn dummy_desc() -> MatmulDesc {
    MatmulDesc { m: 1, n: 1, k: 1, outer: 1, inner: 1, a: Operand::default(), b: Operand::default(), c: Operand::default(), alpha: 1.0, accumulate: false }
}

#[test]
fn concatenation_with_f16_activations_is_exact() {
    let gpu = gpu(KernelFamily::Cpu);
    if !has_f16(&gpu) {
        return;
    }
    let (b, ca, cb, hw) = (2usize, 3usize, 5usize, 7usize);
    let a = round16(&randn(1, b * ca * hw, 1.0));
    let bb = round16(&randn(2, b * cb * hw, 1.0));
    let y = zeros16(&gpu, b * (ca + cb) * hw);
    let (av, bv) = (upload16(&gpu, &a), upload16(&gpu, &bb));
    let d1 = kernels::copy_channels(&gpu, "concat", &y, &av, b as u32, ca as u32, hw as u32, (ca + cb) as u32, 0).unwrap();
    let d2 = kernels::copy_channels(&gpu, "concat", &y, &bv, b as u32, cb as u32, hw as u32, (ca + cb) as u32, ca as u32).unwrap();
    gpu.run(&[&d1, &d2]);
    let mut want = vec![0.0; y.len];
    reference::copy_channels(&mut want, &a, b, ca, hw, ca + cb, 0);
    reference::copy_channels(&mut want, &bb, b, cb, hw, ca + cb, ca);
    assert_eq!(gpu.read_f32(&y).unwrap(), want, "f16 values copied exactly");
}

/// A packed weight format is refused as an activation, with the operand named.
#[test]
fn activations_must_be_f32_or_f16() {
    let gpu = gpu(KernelFamily::Cpu);
    let x = gpu.upload_typed("int8", 8, Dtype::I8 { rows: 2 }, &[0u8; 16]);
    let y = zeros(&gpu, 8);
    let err = match kernels::copy_channels(&gpu, "concat", &y, &x, 1, 2, 4, 2, 0) {
        Ok(_) => panic!("an int8 activation was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("concat: source is stored as i8"), "{err}");
}
