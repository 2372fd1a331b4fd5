//! The whole UNet and sampling loop against diffusers: the project's own
//! fixtures (tests/fixtures, always) and ../shared/reference when present.
//! Tolerances are those of the reference README: forward output and every
//! eps.i within 1e-3 absolute.

mod common;
use common::*;
use petal::diffusion::{Flow, Sampler};
use petal::gpu::KernelFamily;
use petal::model::weights::read_safetensors;
use petal::model::{ForwardPlan, UNet};
use std::path::{Path, PathBuf};

const TOL: f32 = 1e-3;

fn forward_case(dir: &Path, variant: Option<&str>, family: KernelFamily) {
    let gpu = gpu(family);
    let (unet, _) = UNet::load(gpu.clone(), dir, variant).unwrap();
    let t = read_safetensors(&dir.join("forward.safetensors")).unwrap();
    let (sample, timesteps, want) = (&t["sample"].1, &t["timesteps"].1, &t["output"].1);
    let plan = ForwardPlan::new(&unet, timesteps.len() as u32).unwrap();
    let got = plan.forward(&gpu, sample, timesteps).unwrap();
    assert_close(&format!("{} forward ({family:?})", dir.display()), &got, want, TOL, 0.0);
    // Not trivially small: the fixture's output carries signal.
    assert!(want.iter().any(|v| v.abs() > 0.1));
}

fn sample_case(dir: &Path, file: &str) {
    let gpu = gpu(KernelFamily::Cpu);
    let (unet, sched) = UNet::load(gpu.clone(), dir, None).unwrap();
    let t = read_safetensors(&dir.join(file)).unwrap();
    let steps = t["timesteps"].1.len();
    let mut sampler = Sampler::new(&unet, &sched, 1, steps as u32).unwrap();
    let ours: Vec<f32> = sampler.scheduler.timesteps.iter().map(|&v| v as f32).collect();
    assert_eq!(ours, t["timesteps"].1, "timesteps");
    let mut worst_eps = 0f32;
    let image = sampler
        .run(
            &gpu,
            &t["x_T"].1,
            true,
            |i, _| t[&format!("noise.{i}")].1.clone(),
            |info, frame| {
                let f = frame.unwrap();
                let i = info.index;
                let (eps, x) = (&t[&format!("eps.{i}")].1, &t[&format!("x.{i}")].1);
                assert_close(&format!("{} eps.{i}", dir.display()), &f.model_output, eps, TOL, 0.0);
                assert_close(&format!("{} x.{i}", dir.display()), &f.x, x, TOL, 0.0);
                worst_eps = f.model_output.iter().zip(eps).fold(worst_eps, |m, (a, b)| m.max((a - b).abs()));
                Flow::Continue
            },
        )
        .unwrap()
        .unwrap();
    let image: Vec<f32> = image.iter().map(|&v| petal::image_io::to_unit(v)).collect();
    assert_close(&format!("{} image", dir.display()), &image, &t["image"].1, TOL, 0.0);
    eprintln!("{}: {steps} steps, worst eps diff {worst_eps:e}", dir.display());
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

#[test]
fn forward_matches_own_fixtures() {
    for family in FAMILIES {
        forward_case(&fixtures().join("mini"), None, family);
        forward_case(&fixtures().join("mini-old-attn-names"), None, family);
        forward_case(&fixtures().join("mini-fp16"), Some("fp16"), family);
        forward_case(&fixtures().join("multihead"), None, family);
    }
}

#[test]
fn fp16_only_folder_loads_without_naming_the_variant() {
    forward_case(&fixtures().join("mini-fp16"), None, KernelFamily::Cpu);
}

#[test]
fn sampling_matches_own_fixtures() {
    sample_case(&fixtures().join("mini"), "ddpm50.safetensors");
    sample_case(&fixtures().join("multihead"), "ddpm20.safetensors");
}

#[test]
fn forward_matches_shared_reference() {
    let Some(shared) = shared_reference() else {
        eprintln!("../shared/reference not present; skipped");
        return;
    };
    for family in FAMILIES {
        forward_case(&shared.join("tiny"), None, family);
        forward_case(&shared.join("tiny-old-attn-names"), None, family);
        forward_case(&shared.join("tiny-fp16"), Some("fp16"), family);
    }
}

#[test]
fn sampling_matches_shared_reference() {
    let Some(shared) = shared_reference() else {
        eprintln!("../shared/reference not present; skipped");
        return;
    };
    sample_case(&shared.join("tiny"), "ddpm50.safetensors");
}
