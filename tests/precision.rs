//! FP16 and INT8 weights against FP32: the UNet output against diffusers'
//! fp32 fixtures (relative L2 error within 1% for fp16, 5% for int8), over
//! timesteps 1..999; `petal quantize` then reload gives identical outputs;
//! file sizes; and every inconsistent int8 file refused with a one-line
//! error naming file and tensor.

mod common;
use common::*;
use petal::gpu::KernelFamily;
use petal::model::precision::{self, HostTensor, Precision, Stored};
use petal::model::weights::read_safetensors;
use petal::model::{ForwardPlan, load_unet};
use safetensors::{Dtype as StDtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const BOUND: [(Precision, f64); 2] = [(Precision::Fp16, 0.01), (Precision::Int8, 0.05)];

fn fixture_dirs() -> Vec<PathBuf> {
    let mut v = vec![repo().join("tests/fixtures/mini"), repo().join("tests/fixtures/multihead")];
    if let Some(shared) = shared_reference() {
        v.push(shared.join("tiny"));
    }
    v
}

fn forward(dir: &Path, precision: Option<Precision>, family: KernelFamily, sample: &[f32], timesteps: &[f32]) -> Vec<f32> {
    let gpu = gpu(family);
    let m = load_unet(gpu.clone(), dir, None, precision).unwrap();
    let plan = ForwardPlan::new(&m.unet, timesteps.len() as u32).unwrap();
    plan.forward(&gpu, sample, timesteps).unwrap()
}

/// Against diffusers' own fp32 output on the fixture's inputs.
#[test]
fn fp16_and_int8_forward_within_bounds_of_diffusers_fp32() {
    for family in FAMILIES {
        for dir in fixture_dirs() {
            let t = read_safetensors(&dir.join("forward.safetensors")).unwrap();
            let (sample, timesteps, want) = (&t["sample"].1, &t["timesteps"].1, &t["output"].1);
            for (p, bound) in BOUND {
                let got = forward(&dir, Some(p), family, sample, timesteps);
                let e = rel_l2(&got, want);
                eprintln!("{} {p} ({family:?}): rel L2 vs diffusers fp32 {e:.2e}", dir.display());
                assert!(e <= bound, "{} {p} ({family:?}): rel L2 {e} > {bound}", dir.display());
            }
        }
    }
}

/// Timesteps 1..999, one image each, against Petal's fp32 (which matches
/// diffusers within 1e-3, tests/parity.rs).
#[test]
fn errors_stay_within_bounds_from_timestep_1_to_999() {
    let timesteps = [1.0, 50.0, 250.0, 500.0, 750.0, 999.0];
    for dir in fixture_dirs() {
        let t = read_safetensors(&dir.join("forward.safetensors")).unwrap();
        let per_image = t["sample"].1.len() / t["timesteps"].1.len();
        let sample = randn(11, per_image * timesteps.len(), 1.0);
        let want = forward(&dir, Some(Precision::Fp32), KernelFamily::Cpu, &sample, &timesteps);
        for (p, bound) in BOUND {
            let got = forward(&dir, Some(p), KernelFamily::Cpu, &sample, &timesteps);
            let errs: Vec<f64> = got.chunks(per_image).zip(want.chunks(per_image)).map(|(g, w)| rel_l2(g, w)).collect();
            eprintln!("{} {p}: rel L2 per timestep {timesteps:?}: {errs:.5?}", dir.display());
            for (ts, e) in timesteps.iter().zip(&errs) {
                assert!(*e <= bound, "{} {p} at t={ts}: rel L2 {e} > {bound}", dir.display());
            }
        }
    }
}

/// `petal quantize` -> load gives exactly the outputs of converting on load,
/// the folder opens at its precision without being told, and the files have
/// the sizes the formats promise.
#[test]
fn quantize_then_reload_gives_identical_outputs() {
    let src = repo().join("tests/fixtures/mini");
    let t = read_safetensors(&src.join("forward.safetensors")).unwrap();
    let (sample, timesteps) = (&t["sample"].1, &t["timesteps"].1);
    let fp32_bytes = std::fs::metadata(src.join("unet/diffusion_pytorch_model.safetensors")).unwrap().len();
    let tmp = tempfile::tempdir().unwrap();
    for p in [Precision::Fp16, Precision::Int8] {
        let out = tmp.path().join(p.name());
        let r = precision::quantize_folder(&src, None, p, &out).unwrap();
        assert_eq!(r.weights_file, out.join("unet").join(p.weights_file()));
        assert!(out.join("model_index.json").is_file() && out.join("scheduler/scheduler_config.json").is_file());
        let ratio = r.file_bytes as f64 / fp32_bytes as f64;
        eprintln!("mini {p}: {} bytes, {:.1}% of fp32", r.file_bytes, 100.0 * ratio);
        if p == Precision::Fp16 {
            assert!(ratio <= 0.55, "{ratio}");
        }
        let gpu = gpu(KernelFamily::Cpu);
        let reloaded = load_unet(gpu.clone(), &out, None, None).unwrap();
        assert_eq!(reloaded.precision, p, "the folder opens at its own precision");
        let on_load = forward(&src, Some(p), KernelFamily::Cpu, sample, timesteps);
        let from_disk = forward(&out, None, KernelFamily::Cpu, sample, timesteps);
        assert_eq!(on_load, from_disk, "{p}: quantized folder and conversion on load differ");
        // Loading the int8 folder as int8 keeps its values exactly: quantizing it again is the same file.
        let again = tmp.path().join(format!("{}-again", p.name()));
        let r2 = precision::quantize_folder(&out, None, p, &again).unwrap();
        // Same content: every tensor's dtype, shape and bytes, and the metadata (its
        // JSON order follows a HashMap, so the raw header bytes may differ).
        let (a, b) = (std::fs::read(&r.weights_file).unwrap(), std::fs::read(&r2.weights_file).unwrap());
        let (sa, sb) = (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
        let (ma, mb) = (safetensors::SafeTensors::read_metadata(&a).unwrap().1, safetensors::SafeTensors::read_metadata(&b).unwrap().1);
        assert_eq!(ma.metadata(), mb.metadata());
        let mut names = sa.names();
        names.sort();
        let mut names_b = sb.names();
        names_b.sort();
        assert_eq!(names, names_b);
        for n in names {
            let (ta, tb) = (sa.tensor(n).unwrap(), sb.tensor(n).unwrap());
            assert_eq!((ta.dtype(), ta.shape(), ta.data()), (tb.dtype(), tb.shape(), tb.data()), "{n}");
        }
        // And fp32 forced on the quantized folder runs its widened values.
        let forced = load_unet(gpu.clone(), &out, None, Some(Precision::Fp32)).unwrap();
        assert_eq!(forced.precision, Precision::Fp32);
        assert!(forced.gpu_bytes > reloaded.gpu_bytes);
    }
    // An existing, non-empty folder is not overwritten.
    let err = precision::quantize_folder(&src, None, Precision::Int8, &tmp.path().join("fp16")).unwrap_err();
    assert!(format!("{err:#}").contains("not an empty folder"), "{err:#}");
}

/// The file-size targets for the google/ddpm-cifar10-32 architecture:
/// FP16 at most 55% of FP32, INT8 at most 30%; and the GPU bytes of the weights.
#[test]
fn cifar10_32_file_sizes_meet_the_targets() {
    let cfg = petal::model::UNetConfig::builtin("cifar10-32").unwrap();
    let graph = petal::model::unet::build_graph(&cfg);
    let weights = petal::train::init::init_weights(&graph, 0);
    let stored = vec![Stored::F32; weights.len()];
    let size = |p| precision::weights_bytes(&graph, &precision::convert(&graph, &weights, &stored, p)).unwrap().len() as f64;
    let fp32 = size(Precision::Fp32);
    let (fp16, int8) = (size(Precision::Fp16) / fp32, size(Precision::Int8) / fp32);
    eprintln!("cifar10-32: fp32 {fp32} bytes, fp16 {:.1}%, int8 {:.1}%", 100.0 * fp16, 100.0 * int8);
    assert!(fp16 <= 0.55 && int8 <= 0.30, "fp16 {fp16}, int8 {int8}");
}

// --- corrupt and inconsistent int8 files -----------------------------------

/// A tensor as (dtype, shape, bytes).
type Raw = (StDtype, Vec<usize>, Vec<u8>);

/// The int8 file of the mini model as editable tensors and metadata.
fn int8_tensors() -> (HashMap<String, Raw>, HashMap<String, String>) {
    let src = repo().join("tests/fixtures/mini");
    let m = petal::model::folder::load(&src, None).unwrap();
    let graph = petal::model::unet::build_graph(&m.config);
    let host = precision::convert(&graph, &m.weights, &m.stored, Precision::Int8);
    assert!(host.iter().any(|h| matches!(h, HostTensor::I8 { .. })));
    let bytes = precision::weights_bytes(&graph, &host).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.tensors().into_iter().map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec()))).collect();
    (tensors, meta.metadata().clone().unwrap())
}

/// A model folder with mini's config and these tensors as its int8 file;
/// returns the error of loading it (to one line, as the CLI prints it).
fn load_error(tensors: &HashMap<String, Raw>, meta: &HashMap<String, String>) -> (String, PathBuf) {
    let tmp = tempfile::tempdir().unwrap().keep();
    std::fs::create_dir_all(tmp.join("unet")).unwrap();
    std::fs::copy(repo().join("tests/fixtures/mini/unet/config.json"), tmp.join("unet/config.json")).unwrap();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let file = tmp.join("unet").join(Precision::Int8.weights_file());
    std::fs::write(&file, safetensors::serialize(views, Some(meta.clone())).unwrap()).unwrap();
    let err = load_unet(gpu(KernelFamily::Cpu), &tmp, None, None).err().expect("the file is refused");
    let line = format!("{err:#}");
    assert!(!line.contains('\n'), "one line: {line}");
    (line, file)
}

fn assert_refused(tensors: &HashMap<String, Raw>, meta: &HashMap<String, String>, tensor: &str, why: &str) {
    let (line, file) = load_error(tensors, meta);
    eprintln!("{line}");
    assert!(line.contains(&file.display().to_string()), "names the file: {line}");
    assert!(line.contains(tensor), "names {tensor}: {line}");
    assert!(line.contains(why), "says {why:?}: {line}");
}

const CONV1: &str = "down_blocks.0.resnets.0.conv1.weight";

#[test]
fn int8_file_without_a_scale_is_refused() {
    let (mut t, meta) = int8_tensors();
    t.remove(&format!("{CONV1}_scale")).unwrap();
    assert_refused(&t, &meta, CONV1, "has no scale tensor");
}

#[test]
fn int8_scale_of_the_wrong_length_is_refused() {
    let (mut t, meta) = int8_tensors();
    let s = t.get_mut(&format!("{CONV1}_scale")).unwrap();
    s.1 = vec![s.1[0] - 1];
    s.2.truncate(s.2.len() - 4);
    assert_refused(&t, &meta, &format!("{CONV1}_scale"), "one scale per output channel");
}

#[test]
fn int8_scale_that_is_not_positive_is_refused() {
    let (mut t, meta) = int8_tensors();
    let s = t.get_mut(&format!("{CONV1}_scale")).unwrap();
    s.2[4..8].copy_from_slice(&(-0.5f32).to_le_bytes());
    assert_refused(&t, &meta, &format!("{CONV1}_scale"), "positive and finite");
}

#[test]
fn int8_tensor_where_no_scale_is_expected_is_refused() {
    let (mut t, meta) = int8_tensors();
    // conv_in stays float in Petal's int8 format.
    let (_, shape, data) = t.remove("conv_in.weight").unwrap();
    let values: Vec<f32> = data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect();
    let (q, scale) = precision::quantize_rows(&values, shape[0]);
    t.insert("conv_in.weight".into(), (StDtype::I8, shape, q.iter().map(|&v| v as u8).collect()));
    t.insert("conv_in.weight_scale".into(), (StDtype::F32, vec![scale.len()], bytemuck::cast_slice(&scale).to_vec()));
    assert_refused(&t, &meta, "conv_in.weight", "no scale is expected");
    // A bias as int8, without a scale.
    let (mut t, meta) = int8_tensors();
    let b = t.get_mut("conv_out.bias").unwrap();
    *b = (StDtype::I8, b.1.clone(), vec![1; b.1[0]]);
    assert_refused(&t, &meta, "conv_out.bias", "no scale is expected");
}

#[test]
fn scale_without_an_int8_tensor_is_refused() {
    let (mut t, meta) = int8_tensors();
    t.insert("conv_in.weight_scale".into(), (StDtype::F32, vec![1], 1f32.to_le_bytes().to_vec()));
    assert_refused(&t, &meta, "conv_in.weight_scale", "belongs to no int8 tensor");
}

#[test]
fn metadata_contradicting_the_tensors_is_refused() {
    // int8 tensors, but no metadata entry.
    let (t, mut meta) = int8_tensors();
    meta.remove(precision::QUANTIZATION_KEY);
    let (line, _) = load_error(&t, &meta);
    assert!(line.contains("is int8, but __metadata__ has no petal_quantization entry"), "{line}");
    // A format Petal does not know.
    let (t, mut meta) = int8_tensors();
    meta.insert(precision::QUANTIZATION_KEY.into(), "int4-groupwise".into());
    let (line, _) = load_error(&t, &meta);
    assert!(line.contains("int4-groupwise") && line.contains("not a format Petal reads"), "{line}");
    // The metadata says int8, but every tensor is float.
    let (mut t, meta) = int8_tensors();
    let int8: Vec<String> = t.iter().filter(|(_, v)| v.0 == StDtype::I8).map(|(n, _)| n.clone()).collect();
    for n in int8 {
        let (_, shape, data) = t.remove(&n).unwrap();
        t.remove(&format!("{n}_scale"));
        let f: Vec<u8> = data.iter().flat_map(|&b| half::f16::from_f32(b as i8 as f32 * 0.01).to_le_bytes()).collect();
        t.insert(n, (StDtype::F16, shape, f));
    }
    let (line, _) = load_error(&t, &meta);
    assert!(line.contains("no tensor is int8"), "{line}");
}

/// The CLI: `petal quantize` then `petal sample` on its folder, and a
/// refused file as one line on stderr with exit status 1.
#[test]
fn cli_quantizes_samples_and_reports_a_corrupt_file_in_one_line() {
    let exe = env!("CARGO_BIN_EXE_petal");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("int8");
    let o = std::process::Command::new(exe)
        .args(["quantize", "--model", "tests/fixtures/mini", "--precision", "int8", "--out"])
        .arg(&out)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let png = tmp.path().join("grid.png");
    let o = std::process::Command::new(exe)
        .args(["sample", "--steps", "2", "--batch", "2", "--model"])
        .arg(&out)
        .arg("--out")
        .arg(&png)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("int8: int8 conv/linear weights"), "says which path runs: {stderr}");
    assert!(png.is_file());
    // Remove one scale: a one-line error naming the file and tensor.
    let (mut t, meta) = int8_tensors();
    t.remove(&format!("{CONV1}_scale")).unwrap();
    let (_, file) = load_error(&t, &meta);
    let dir = file.parent().unwrap().parent().unwrap();
    let o = std::process::Command::new(exe).args(["sample", "--out"]).arg(&png).arg("--model").arg(dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(last.starts_with("petal: error: ") && last.contains(CONV1) && last.contains(&file.display().to_string()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The f16-activation path (issue 10): FP16 and INT8 weights run with f16
/// feature maps on a hardware-GPU kernel family that offers SHADER_F16
/// (forced on lavapipe here with the `gpu` family), FP32 never does, nor the
/// software-renderer family by default. With f16 activations (each family's
/// kernels) the activations take less memory and the output stays within
/// 1% of the same weights run with f32 activations.
#[test]
fn f16_activations_where_the_adapter_has_shader_f16() {
    use petal::gpu::Dtype;
    let dir = repo().join("tests/fixtures/mini");
    let t = read_safetensors(&dir.join("forward.safetensors")).unwrap();
    let (sample, timesteps) = (&t["sample"].1, &t["timesteps"].1);
    let batch = timesteps.len() as u32;
    for family in FAMILIES {
        let gpu = gpu(family);
        let has_f16 = gpu.features.contains(wgpu::Features::SHADER_F16);
        let fp32 = load_unet(gpu.clone(), &dir, None, Some(Precision::Fp32)).unwrap();
        assert_eq!(fp32.unet.activations, Dtype::F32, "--precision fp32 forces f32 activations");
        for p in [Precision::Fp16, Precision::Int8] {
            let m = load_unet(gpu.clone(), &dir, None, Some(p)).unwrap();
            let default = if has_f16 && family == KernelFamily::Gpu { Dtype::F16 } else { Dtype::F32 };
            if std::env::var_os("PETAL_ACTIVATIONS").is_none() {
                assert_eq!(m.unet.activations, default, "{p} ({family:?}): SHADER_F16 {has_f16}");
                let said = p.describe(&gpu);
                assert!(said.contains(if default == Dtype::F16 { "f16 activations" } else { "f32 activations" }), "{said}");
            }
            if !has_f16 {
                eprintln!("skipped: {} has no SHADER_F16", gpu.describe());
                continue;
            }
            let u = &m.unet;
            let half = ForwardPlan::build_with(&gpu, &u.graph, &u.config, &u.params, batch, false, Dtype::F16).unwrap();
            let full = ForwardPlan::build_with(&gpu, &u.graph, &u.config, &u.params, batch, false, Dtype::F32).unwrap();
            assert!(
                half.activation_bytes() < full.activation_bytes() * 3 / 4,
                "{p}: f16 activations take {} bytes against {} in f32",
                half.activation_bytes(),
                full.activation_bytes()
            );
            assert!(half.views.iter().any(|v| v.dtype == Dtype::F16));
            assert_eq!(half.output().dtype, Dtype::F32, "the scheduler reads an f32 model output");
            let got = half.forward(&gpu, sample, timesteps).unwrap();
            let f32_acts = full.forward(&gpu, sample, timesteps).unwrap();
            let e = rel_l2(&got, &f32_acts);
            let want = &t["output"].1;
            let e_diffusers = rel_l2(&got, want);
            eprintln!(
                "{p} ({family:?}): f16 against f32 activations rel L2 {e:.2e}, against diffusers fp32 {e_diffusers:.2e}; activation bytes {} vs {}",
                half.activation_bytes(),
                full.activation_bytes()
            );
            assert!(e > 0.0 && e < 0.01, "{p}: rel L2 {e} between f16 and f32 activations");
            let bound = BOUND.iter().find(|(q, _)| *q == p).unwrap().1;
            assert!(e_diffusers <= bound, "{p} with f16 activations: rel L2 {e_diffusers} against diffusers > {bound}");
        }
    }
}
