//! Shared test helpers: one GPU per kernel family per test binary, random
//! data, and comparisons that print the worst difference.
#![allow(dead_code)]

use petal::gpu::{Gpu, GpuOptions, KernelFamily, TensorView};
use petal::rng::Rng;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// The GPU (lavapipe in CI) with the given kernel family.
pub fn gpu(family: KernelFamily) -> Arc<Gpu> {
    static CPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    let cell = match family {
        KernelFamily::Cpu => &CPU,
        KernelFamily::Gpu => &GPU,
    };
    cell.get_or_init(|| {
        Gpu::new(&GpuOptions { adapter: None, family: Some(family) }).expect("a GPU adapter (install mesa-vulkan-drivers)")
    })
    .clone()
}

pub const FAMILIES: [KernelFamily; 2] = [KernelFamily::Cpu, KernelFamily::Gpu];

/// The lanes to test the subgroup kernels at on this adapter: 8, and 16 where
/// `petal::kernels::conv_lanes` runs 16. Checks `PETAL_TEST_EXPECT_LANES`
/// ([`rerun_at_16_lanes`]) against the adapter's.
pub fn subgroup_lanes(gpu: &Gpu) -> Vec<u32> {
    let lanes = petal::kernels::conv_lanes(gpu);
    if let Ok(want) = std::env::var("PETAL_TEST_EXPECT_LANES") {
        assert_eq!(lanes.to_string(), want, "the adapter's lanes ({})", gpu.describe());
    }
    if lanes == 16 { vec![8, 16] } else { vec![8] }
}

/// Runs `tests` of this test binary again in a child process with
/// `LP_NATIVE_VECTOR_WIDTH=512` (which Mesa reads when the driver loads:
/// lavapipe's 16-lane subgroups, what `petal`'s headless commands ask for on
/// CPUs where they pay, `petal::gpu::prefer_wide_vectors`) and
/// `PETAL_TEST_EXPECT_LANES=16` (for them to check the lanes they got), and
/// asserts they passed. Skipped (false) where the adapter is not lavapipe, the
/// CPU lacks AVX-512 or this process already runs at a set width.
pub fn rerun_at_16_lanes(tests: &[&str]) -> bool {
    let gpu = gpu(KernelFamily::Cpu);
    #[cfg(target_arch = "x86_64")]
    let wide = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    if !gpu.info.name.contains("llvmpipe") || !wide || std::env::var_os("LP_NATIVE_VECTOR_WIDTH").is_some() {
        eprintln!("skipped: needs lavapipe at its default width on a CPU with AVX-512");
        return false;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--exact")
        .args(tests)
        .arg("--nocapture")
        .env("LP_NATIVE_VECTOR_WIDTH", "512")
        .env("PETAL_TEST_EXPECT_LANES", "16")
        .output()
        .expect("running this test binary again");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let passed = format!("{} passed", tests.len());
    assert!(out.status.success() && text.contains(&passed), "the 16-lane run of {tests:?} failed:\n{text}");
    true
}

pub fn randn(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    Rng::new(seed).normal_vec(n).into_iter().map(|v| v * scale).collect()
}

pub fn upload(gpu: &Gpu, data: &[f32]) -> TensorView {
    TensorView::whole(gpu.upload_f32("test", data))
}

pub fn zeros(gpu: &Gpu, n: usize) -> TensorView {
    let v = TensorView::whole(gpu.storage_buffer("test", n as u64 * 4));
    gpu.write_f32(&v, &vec![0.0; n]);
    v
}

/// Max |got - want| <= atol + rtol * max|want|, reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d.is_nan() || d > worst {
            worst = d;
            at = i;
        }
    }
    let tol = atol + rtol * scale;
    assert!(
        worst <= tol,
        "{what}: max diff {worst:e} at {at} (got {}, want {}) > tol {tol:e}",
        got[at],
        want[at]
    );
}

/// Relative L2 error ||got - want|| / ||want||.
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(g, w)| ((g - w) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|&w| (w as f64).powi(2)).sum();
    (num / den.max(1e-300)).sqrt()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// ../shared/reference beside the checkout, when it is there.
pub fn shared_reference() -> Option<PathBuf> {
    let p = repo().join("..").join("shared").join("reference");
    p.is_dir().then_some(p)
}

/// Records and runs one conv2d forward with `kernel`, giving it the scratch
/// it asks for (the split tiled kernel's partial sums), and waits for it.
#[allow(dead_code)]
pub fn run_conv_forward(
    gpu: &Gpu,
    kernel: petal::kernels::conv2d::Conv2dKernel,
    y: &TensorView,
    x: &TensorView,
    w: &TensorView,
    s: &petal::kernels::Conv2dShape,
    epi: &petal::kernels::Conv2dEpilogue,
) {
    let need = kernel.scratch_len(s);
    let scratch = (need > 0).then(|| zeros(gpu, need));
    let d = petal::kernels::conv2d::conv2d_forward_with(gpu, kernel, "conv", y, x, w, s, epi, scratch.as_ref()).unwrap();
    gpu.run(&d.iter().collect::<Vec<_>>());
    gpu.wait().unwrap();
}
