//! Bad input as users meet it (issue 11), through the `petal` binary: each
//! kind ends in the same result as diffusers or in one error line naming the
//! file, key or flag and the cause, with exit code 1; never a panic, a hang,
//! a silently wrong result or data dropped without a word. Inputs are made
//! here, from tests/fixtures/mini and the flower photos.

mod common;
use common::*;
use petal::model::weights::{StoreDtype, read_safetensors, safetensors_bytes};
use petal::model::{SchedulerConfig, UNetConfig, unet::build_graph};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn petal_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_petal"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running petal")
}

fn petal(args: &[&str]) -> Output {
    petal_env(args, &[])
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = petal(args);
    assert!(o.status.success(), "petal {args:?} failed:\n{}", stderr(&o));
    stderr(&o)
}

/// Runs petal expecting failure; returns its one error line.
fn fails_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let o = petal_env(args, env);
    let err = stderr(&o);
    assert!(!o.status.success(), "petal {args:?} succeeded:\n{err}");
    assert_eq!(o.status.code(), Some(1), "petal {args:?} exit code; stderr:\n{err}");
    assert!(!err.contains("panicked"), "petal {args:?} panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("petal: error:")).collect();
    assert_eq!(lines.len(), 1, "petal {args:?}: expected one error line, got:\n{err}");
    lines[0].to_string()
}

fn fails(args: &[&str]) -> String {
    fails_env(args, &[])
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn mini() -> PathBuf {
    repo().join("tests/fixtures/mini")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

/// A copy of mini with only the model files (no fixtures).
fn mini_copy(dst: &Path) -> PathBuf {
    copy_dir(&mini().join("unet"), &dst.join("unet"));
    copy_dir(&mini().join("scheduler"), &dst.join("scheduler"));
    std::fs::copy(mini().join("model_index.json"), dst.join("model_index.json")).unwrap();
    dst.to_path_buf()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn mini_weights() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut t: Vec<_> = read_safetensors(&mini().join("unet/diffusion_pytorch_model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, (shape, v))| (k, shape, v))
        .collect();
    t.sort_by(|a, b| a.0.cmp(&b.0));
    t
}

fn write_weights(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) {
    let named: Vec<(String, Vec<usize>, &[f32])> = tensors.iter().map(|(k, s, v)| (k.clone(), s.clone(), &v[..])).collect();
    std::fs::write(path, safetensors_bytes(&named, StoreDtype::F32).unwrap()).unwrap();
}

/// A small UNet2DModel (8x8 images, channels 8 and 16, attention at 4x4).
fn small_config(in_channels: u32, out_channels: u32) -> UNetConfig {
    let mut c = UNetConfig::builtin("tiny").unwrap();
    c.sample_size = Some(petal::model::config::SampleSize::Square(8));
    c.in_channels = in_channels;
    c.out_channels = out_channels;
    c.block_out_channels = vec![8, 16];
    c.down_block_types = vec!["DownBlock2D".into(), "AttnDownBlock2D".into()];
    c.up_block_types = vec!["AttnUpBlock2D".into(), "UpBlock2D".into()];
    c.norm_num_groups = 4;
    c.layers_per_block = 1;
    c
}

/// A model folder with fresh weights (PyTorch's initialisation, seeded).
fn make_model(dir: &Path, config: &UNetConfig, sched: &SchedulerConfig) -> PathBuf {
    let graph = build_graph(config);
    let w = petal::train::init::init_weights(&graph, 1);
    petal::train::checkpoint::write_pipeline(dir, config, sched, &graph, &w, StoreDtype::F32).unwrap();
    dir.to_path_buf()
}

/// `n` of the flower photos in a folder of their own.
fn flowers(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut all: Vec<PathBuf> = std::fs::read_dir(repo().join("tests/data/flowers"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    all.sort();
    for p in &all[..n] {
        std::fs::copy(p, dir.join(p.file_name().unwrap())).unwrap();
    }
    dir.to_path_buf()
}

/// The flags of a quick training run: 8x8 model, batch 2, a 1-step preview.
const QUICK: [&str; 10] = ["--batch", "2", "--sample-steps", "1", "--sample-batch", "1", "--warmup", "0", "--checkpoint-every", "0"];

fn small_config_file(dir: &Path) -> PathBuf {
    let p = dir.join("small.json");
    std::fs::write(&p, small_config(3, 3).to_json()).unwrap();
    p
}

// 1. Weights of a dtype Petal does not read, or with NaNs, never reach a kernel.
#[test]
fn weights_of_another_dtype_or_with_nans_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = mini_copy(&dir.path().join("m"));
    let out = dir.path().join("x.png");
    let file = model.join("unet/diffusion_pytorch_model.safetensors");
    // conv_in.bias as I64 with the same shape (the case that hung).
    let t = mini_weights();
    let bytes: Vec<Vec<u8>> = t
        .iter()
        .map(|(k, _, v)| {
            if k == "conv_in.bias" {
                v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect()
            } else {
                bytemuck::cast_slice(v).to_vec()
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = t
        .iter()
        .zip(&bytes)
        .map(|((k, shape, _), b)| {
            let dtype = if k == "conv_in.bias" { safetensors::Dtype::I64 } else { safetensors::Dtype::F32 };
            (k.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), b).unwrap())
        })
        .collect();
    std::fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();
    let e = fails(&["sample", "--model", s(&model), "--steps", "2", "--out", s(&out)]);
    assert!(e.contains("diffusion_pytorch_model.safetensors") && e.contains("conv_in.bias") && e.contains("I64"), "{e}");
    // A NaN in a weight.
    let mut t = mini_weights();
    t.iter_mut().find(|x| x.0 == "mid_block.resnets.0.conv1.weight").unwrap().2[5] = f32::NAN;
    write_weights(&file, &t);
    let e = fails(&["sample", "--model", s(&model), "--steps", "2", "--out", s(&out)]);
    assert!(e.contains("mid_block.resnets.0.conv1.weight") && e.contains("non-finite"), "{e}");
    // Weights so large the values overflow f32: no black image written without a word.
    let mut t = mini_weights();
    for x in t.iter_mut().filter(|x| x.0 == "conv_in.bias" || x.0 == "conv_out.bias") {
        x.2.iter_mut().for_each(|v| *v = 3e38);
    }
    write_weights(&file, &t);
    let sched = model.join("scheduler/scheduler_config.json");
    let sched_text = std::fs::read_to_string(&sched).unwrap();
    edit_json(&sched, |v| v["clip_sample"] = false.into());
    let e = fails(&["sample", "--model", s(&model), "--steps", "2", "--out", s(&out)]);
    assert!(e.contains("non-finite") && !out.exists(), "{e}");
    std::fs::write(&sched, sched_text).unwrap();
    // A scheduler whose betas make NaNs.
    write_weights(&file, &mini_weights());
    edit_json(&model.join("scheduler/scheduler_config.json"), |v| v["beta_end"] = 1.5.into());
    let e = fails(&["sample", "--model", s(&model), "--steps", "2", "--out", s(&out)]);
    assert!(e.contains("scheduler_config.json") && e.contains("beta_end"), "{e}");
}

/// Bytes of the largest per-image tensor of a graph.
fn largest_tensor_bytes(config: &UNetConfig) -> u64 {
    build_graph(config).tensors.iter().map(|t| t.per_image as u64 * 4).max().unwrap()
}

fn limits(bytes: u64) -> wgpu::Limits {
    wgpu::Limits { max_storage_buffer_binding_size: bytes, max_buffer_size: bytes, ..wgpu::Limits::default() }
}

// 2. A batch larger than the adapter holds runs in chunks, or names the largest batch.
#[test]
fn batches_larger_than_the_adapter_run_in_chunks_or_name_the_largest_that_fits() {
    // The arithmetic, on lavapipe's limits (128 MiB bindings): the largest
    // batch of the cifar10-32 architecture, and a plan one over it refused.
    let cifar = UNetConfig::builtin("cifar10-32").unwrap();
    let g = build_graph(&cifar);
    let lavapipe = limits(128 << 20);
    let max = petal::model::ForwardPlan::max_batch(&g, &lavapipe);
    assert_eq!(max as u64, (128u64 << 20) / largest_tensor_bytes(&cifar));
    eprintln!("cifar10-32 on 128 MiB bindings: largest sampling batch {max}");
    let e = petal::model::plan::check_batch(&g, &lavapipe, max + 1, |_| 0).unwrap_err().to_string();
    assert!(e.contains(&format!("largest batch that fits is {max}")), "{e}");
    petal::model::plan::check_batch(&g, &lavapipe, max, |_| 0).unwrap();

    // The CLI on an adapter whose bindings hold 2 images of mini.
    let cfg = UNetConfig::from_file(&mini().join("unet/config.json")).unwrap();
    let per_image = largest_tensor_bytes(&cfg);
    let binding = ((5 * per_image / 2) / 256 * 256).max(4096);
    let chunk = binding / per_image;
    assert!((1..5).contains(&chunk), "binding {binding} holds {chunk} images");
    let binding_s = binding.to_string();
    let env = [(petal::gpu::MAX_BINDING_ENV, binding_s.as_str())];
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    let args = |batch: &str, out: &Path| -> Vec<String> {
        ["sample", "--model", s(&mini()), "--steps", "2", "--seed", "3", "--batch", batch, "--out", s(out)]
            .map(String::from)
            .to_vec()
    };
    let run = |a: &[String]| petal_env(&refs(a), &env);
    let o = run(&args("5", &a));
    assert!(o.status.success(), "{}", stderr(&o));
    let chunks = 5u64.div_ceil(chunk);
    assert!(stderr(&o).contains(&format!("sampling {chunks} chunks of at most {chunk} images")), "{}", stderr(&o));
    let img = image::open(&a).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (3 * 16, 2 * 16), "5 tiles, 3 per row");
    // Each image keeps its own noise stream: the chunks make the images of one pass.
    let o = petal(&refs(&args("5", &b)));
    assert!(o.status.success() && !stderr(&o).contains("chunks"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "chunked and one-pass grids differ");
    // Frames need the whole batch in one pass.
    let mut f = args("5", &a);
    f.extend(["--frames".into(), s(&dir.path().join("frames")).into()]);
    let e = fails_env(&f.iter().map(|s| s.as_str()).collect::<Vec<_>>(), &env);
    assert!(e.contains("--frames") && e.contains(&format!("--batch {chunk}")), "{e}");
    // Training cannot chunk: the flag, and the largest batch that fits.
    let cfg_file = small_config_file(dir.path());
    let small = small_config(3, 3);
    let train_bytes = largest_tensor_bytes(&small);
    let binding = (3 * train_bytes).max(4096) / 256 * 256;
    let e = fails_env(
        &["train", "--config", s(&cfg_file), "--data", s(&dir.path().join("none")), "--out", s(&dir.path().join("run")), "--batch", "5000", "--sample-batch", "1"],
        &[(petal::gpu::MAX_BINDING_ENV, binding.to_string().as_str())],
    );
    assert!(e.contains("--batch 5000") && e.contains("largest batch that fits is"), "{e}");
    assert!(!dir.path().join("run").exists(), "nothing written");
    let e = fails_env(&["sample", "--model", s(&mini()), "--out", s(&a)], &[(petal::gpu::MAX_BINDING_ENV, "12")]);
    assert!(e.contains(petal::gpu::MAX_BINDING_ENV), "{e}");
}

// 3 and 4. Broken files are named; no file or folder is read twice; hidden ones are skipped.
#[cfg(unix)]
#[test]
fn truncated_photos_are_named_and_each_file_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = flowers(&dir.path().join("data"), 3);
    let first = std::fs::read_dir(&data).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&first).unwrap();
    std::fs::write(data.join("cut.jpg"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::create_dir_all(data.join(".ipynb_checkpoints")).unwrap();
    std::fs::copy(&first, data.join(".ipynb_checkpoints/copy-checkpoint.jpg")).unwrap();
    std::os::unix::fs::symlink(&data, data.join("loop")).unwrap();
    let cfg = small_config_file(dir.path());
    let run = dir.path().join("run");
    let mut args = vec!["train", "--config", s(&cfg), "--data", s(&data), "--out", s(&run), "--max-steps", "1"];
    args.extend(QUICK);
    let err = ok(&args);
    assert!(err.contains("cut.jpg") && err.contains("truncated JPEG"), "{err}");
    assert!(err.contains("3 images,"), "3 distinct photos: {err}");
    assert!(!err.contains("checkpoint.jpg"), "{err}");
}

// 5. Every setting is checked before the first step, naming the flag used.
#[test]
fn settings_that_cannot_work_fail_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let model = mini_copy(&dir.path().join("m"));
    edit_json(&model.join("scheduler/scheduler_config.json"), |v| v["num_train_timesteps"] = 20.into());
    let data = flowers(&dir.path().join("data"), 2);
    let run = dir.path().join("run");
    let base = ["train", "--init", s(&model), "--data", s(&data), "--out", s(&run)];
    let e = fails(&[&base[..], &["--max-steps", "2", "--batch", "2"]].concat());
    assert!(e.contains("--sample-steps 50") && e.contains("between 1 and 20"), "{e}");
    assert!(!run.exists(), "no checkpoint, no folder");
    let ok_rest = ["--sample-steps", "10", "--max-steps", "2", "--batch", "2"];
    for (bad, flag) in [
        (&["--sample-batch", "0"][..], "--sample-batch"),
        (&["--keep-last", "0"], "--keep-last"),
        (&["--lr", "0"], "--lr"),
        (&["--lr", "NaN"], "--lr"),
        (&["--adam-beta1", "1"], "--adam-beta1"),
        (&["--adam-epsilon", "0"], "--adam-epsilon"),
        (&["--max-grad-norm=-1"], "--max-grad-norm"),
        (&["--epochs", "0"], "--epochs"),
    ] {
        let e = fails(&[&base[..], bad, &ok_rest].concat());
        assert!(e.contains(flag), "{bad:?}: {e}");
        assert!(!run.exists(), "{bad:?}: nothing written");
    }
    for (bad, flag) in [(["--max-steps", "0", "--batch", "2"], "--max-steps"), (["--max-steps", "2", "--batch", "0"], "--batch")] {
        let e = fails(&[&base[..], &bad, &["--sample-steps", "10"]].concat());
        assert!(e.contains(flag), "{bad:?}: {e}");
    }
    // And a file where the run folder should be.
    std::fs::write(&run, b"").unwrap();
    assert!(fails(&[&base[..], &ok_rest].concat()).contains("--out"));
    // The sample command names its own flag.
    let e = fails(&["sample", "--model", s(&model), "--steps", "50", "--out", s(&dir.path().join("x.png"))]);
    assert!(e.contains("--steps 50") && e.contains("between 1 and 20"), "{e}");
}

// 6. On --resume, --max-steps takes effect (the schedule is extended) or is refused.
#[test]
fn resume_honours_max_steps_or_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = flowers(&dir.path().join("data"), 2);
    let cfg = small_config_file(dir.path());
    let run = dir.path().join("run");
    let mut args = vec!["train", "--config", s(&cfg), "--data", s(&data), "--out", s(&run), "--max-steps", "2"];
    args.extend(QUICK);
    ok(&args);
    let ck2 = run.join("checkpoint-2");
    let resume = |extra: &[&str]| -> Vec<String> {
        ["train", "--resume", s(&ck2), "--data", s(&data), "--out", s(&run), "--sample-steps", "1", "--sample-batch", "1"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    // Finished, and no new end: refused.
    let e = fails(&refs(&resume(&[])));
    assert!(e.contains("step 2 of 2") && e.contains("--max-steps"), "{e}");
    let e = fails(&refs(&resume(&["--max-steps", "2"])));
    assert!(e.contains("--max-steps 2") && e.contains("already at step 2"), "{e}");
    // Settings fixed by the checkpoint are refused by the argument parser.
    let o = petal(&refs(&resume(&["--max-steps", "3", "--lr", "1"])));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--lr") && stderr(&o).contains("--resume"), "{}", stderr(&o));
    // Extended to 3 steps: it trains step 3 and says how the lr continues.
    let err = ok(&refs(&resume(&["--max-steps", "3"])));
    assert!(err.contains("--max-steps 3") && err.contains("cosine") && err.contains("lr continues"), "{err}");
    assert!(run.join("checkpoint-3").is_dir(), "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint-3/training_state/state.json")).unwrap()).unwrap();
    assert_eq!((state["step"].as_u64(), state["total_steps"].as_u64()), (Some(3), Some(3)));
    let log = std::fs::read_to_string(run.join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 4, "header and steps 1-3:\n{log}");

    // Also: a checkpoint with zero-byte files, each named.
    for file in ["training_state/state.json", "unet/config.json", "scheduler/scheduler_config.json", "unet/diffusion_pytorch_model.safetensors", "training_state/optimizer.safetensors", "training_state/unet.safetensors"] {
        let broken = dir.path().join("broken");
        let _ = std::fs::remove_dir_all(&broken);
        copy_dir(&run.join("checkpoint-3"), &broken);
        std::fs::write(broken.join(file), b"").unwrap();
        let e = fails(&["train", "--resume", s(&broken), "--data", s(&data), "--out", s(&run), "--max-steps", "4"]);
        let name = Path::new(file).file_name().unwrap().to_str().unwrap();
        assert!(e.contains(name), "{file}: {e}");
    }
}

// 7. Config keys: honoured, refused by name, or (when diffusers ignores them) ignored.
#[test]
fn config_keys_are_honoured_refused_by_name_or_ignored_as_diffusers_does() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let sample = |m: &Path| vec!["sample".to_string(), "--model".into(), s(m).into(), "--steps".into(), "2".into(), "--out".into(), s(&out).into()];
    let run = |a: Vec<String>| petal(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let fail = |a: Vec<String>| fails(&a.iter().map(|s| s.as_str()).collect::<Vec<_>>());

    // mid_block_type null: no mid block; the weights have none.
    let nomid = mini_copy(&dir.path().join("nomid"));
    edit_json(&nomid.join("unet/config.json"), |v| v["mid_block_type"] = serde_json::Value::Null);
    let mut t = mini_weights();
    t.retain(|x| !x.0.starts_with("mid_block."));
    write_weights(&nomid.join("unet/diffusion_pytorch_model.safetensors"), &t);
    let o = run(sample(&nomid));
    assert!(o.status.success(), "{}", stderr(&o));
    // add_attention false: the mid block without its attention.
    let noattn = mini_copy(&dir.path().join("noattn"));
    edit_json(&noattn.join("unet/config.json"), |v| v["add_attention"] = false.into());
    let mut t = mini_weights();
    t.retain(|x| !x.0.starts_with("mid_block.attentions."));
    write_weights(&noattn.join("unet/diffusion_pytorch_model.safetensors"), &t);
    let o = run(sample(&noattn));
    assert!(o.status.success(), "{}", stderr(&o));
    // A mid block type diffusers' UNet2DModel does not build.
    edit_json(&noattn.join("unet/config.json"), |v| v["mid_block_type"] = "UNetMidBlock2DCrossAttn".into());
    let e = fail(sample(&noattn));
    assert!(e.contains("config.json") && e.contains("mid_block_type") && e.contains("UNetMidBlock2DCrossAttn"), "{e}");

    // Bookkeeping and deprecated keys load silently; unknown ones with a note.
    let m = mini_copy(&dir.path().join("keys"));
    edit_json(&m.join("unet/config.json"), |v| {
        v["_name_or_path"] = "google/ddpm-cifar10-32".into();
        v["_use_default_values"] = serde_json::json!(["dropout"]);
    });
    edit_json(&m.join("scheduler/scheduler_config.json"), |v| v["tensor_format"] = "pt".into());
    let o = run(sample(&m));
    assert!(o.status.success() && !stderr(&o).contains("note:"), "{}", stderr(&o));
    edit_json(&m.join("unet/config.json"), |v| v["use_linear_projection"] = true.into());
    let o = run(sample(&m));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("note:") && stderr(&o).contains("use_linear_projection"), "{}", stderr(&o));

    // A string where a number belongs, and an unknown beta_schedule.
    let m = mini_copy(&dir.path().join("types"));
    edit_json(&m.join("unet/config.json"), |v| v["norm_num_groups"] = "4".into());
    let e = fail(sample(&m));
    assert!(e.contains("config.json") && e.contains("norm_num_groups") && e.contains("string"), "{e}");
    let m = mini_copy(&dir.path().join("beta"));
    edit_json(&m.join("scheduler/scheduler_config.json"), |v| v["beta_schedule"] = "exponential".into());
    let e = fail(sample(&m));
    assert!(e.contains("scheduler_config.json") && e.contains("beta_schedule") && e.contains("exponential"), "{e}");
    // A model folder that is a file, for every command that takes one.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let e = fail(sample(&file));
    assert!(e.contains("not a folder"), "{e}");
    let e = fails(&["train", "--init", s(&file), "--data", s(&dir.path().join("d")), "--out", s(&dir.path().join("r"))]);
    assert!(e.contains("not a folder"), "{e}");
    let e = fails(&["train", "--resume", s(&file), "--data", s(&dir.path().join("d")), "--out", s(&dir.path().join("r"))]);
    assert!(e.contains("not a folder"), "{e}");
    let e = fails(&["train", "--config", "tiny", "--data", s(&file), "--out", s(&dir.path().join("r")), "--sample-steps", "2"]);
    assert!(e.contains("not a folder"), "{e}");
}

// 8. 1, 3 and 4 channels are written as grey, RGB and RGBA; others refused.
#[test]
fn grey_rgb_and_rgba_models_write_their_own_png_mode() {
    let dir = tempfile::tempdir().unwrap();
    let sched = SchedulerConfig::default();
    for (c, color) in [(1, image::ColorType::L8), (3, image::ColorType::Rgb8), (4, image::ColorType::Rgba8)] {
        let model = make_model(&dir.path().join(format!("c{c}")), &small_config(c, c), &sched);
        let out = dir.path().join(format!("c{c}.png"));
        ok(&["sample", "--model", s(&model), "--steps", "2", "--batch", "2", "--out", s(&out)]);
        let img = image::open(&out).unwrap();
        assert_eq!(img.color(), color, "{c} channels");
        assert_eq!((img.width(), img.height()), (16, 8));
        if c == 4 {
            // The fourth channel is the model's, not a constant.
            let alpha: std::collections::HashSet<u8> = img.to_rgba8().pixels().map(|p| p.0[3]).collect();
            assert!(alpha.len() > 1, "alpha is {alpha:?}");
        }
    }
    let model = make_model(&dir.path().join("c2"), &small_config(2, 2), &sched);
    let e = fails(&["sample", "--model", s(&model), "--steps", "2", "--out", s(&dir.path().join("c2.png"))]);
    assert!(e.contains("2 channels") && e.contains("c2"), "{e}");
    assert!(!dir.path().join("c2.png").exists());
}

// 9. A learned-variance model (out_channels 2C) samples with variance_type learned_range.
#[test]
fn learned_range_models_sample_and_mismatched_channels_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let learned: SchedulerConfig = serde_json::from_str(r#"{"variance_type": "learned_range"}"#).unwrap();
    let model = make_model(&dir.path().join("learned"), &small_config(3, 6), &learned);
    let out = dir.path().join("l.png");
    ok(&["sample", "--model", s(&model), "--steps", "3", "--batch", "2", "--out", s(&out)]);
    assert_eq!(image::open(&out).unwrap().color(), image::ColorType::Rgb8);
    // The same weights with a fixed variance: refused, naming config.json.
    let fixed = make_model(&dir.path().join("fixed"), &small_config(3, 6), &SchedulerConfig::default());
    let e = fails(&["sample", "--model", s(&fixed), "--steps", "3", "--out", s(&out)]);
    assert!(e.contains("config.json") && e.contains("out_channels 6 differs from in_channels 3") && e.contains("learned_range"), "{e}");
    let e = fails(&["train", "--init", s(&model), "--data", s(&dir.path().join("d")), "--out", s(&dir.path().join("r"))]);
    assert!(e.contains("RGB model"), "{e}");
}

/// The GPU step with the learned-variance layout against the CPU scheduler.
#[test]
fn learned_range_step_kernel_matches_the_cpu_scheduler() {
    use petal::diffusion::DdpmScheduler;
    use petal::kernels;
    let gpu = gpu(petal::gpu::KernelFamily::Cpu);
    let mut s = DdpmScheduler::new(&serde_json::from_str(r#"{"variance_type": "learned_range"}"#).unwrap()).unwrap();
    s.set_timesteps(50).unwrap();
    let (batch, per_image) = (3usize, 77usize);
    let n = batch * per_image;
    for &t in &[980u32, 500, 20, 0] {
        let (xt, noise) = (randn(70, n, 1.0), randn(72, n, 1.0));
        // (B, 2, C*H*W): the prediction, then the variance in [-1, 1].
        let out: Vec<f32> = randn(71, 2 * n, 1.0)
            .chunks(per_image)
            .enumerate()
            .flat_map(|(i, c)| c.iter().map(move |&v| if i % 2 == 1 { v.tanh() } else { v }).collect::<Vec<_>>())
            .collect();
        let (x, o, nz, x0) = (upload(&gpu, &xt), upload(&gpu, &out), upload(&gpu, &noise), zeros(&gpu, n));
        let d = kernels::scheduler::ddpm_step_batched(&gpu, batch as u32, &x, &x0, &o, &nz).unwrap();
        let mut p = s.step_params(t);
        p.n = n as u32;
        kernels::scheduler::set_ddpm_step(&gpu, &d, &p);
        gpu.run(&[&d]);
        let (want_prev, want_x0) = s.step_cpu_batched(batch, &out, t, &xt, &noise);
        assert_close("learned prev", &gpu.read_f32(&x).unwrap(), &want_prev, 1e-6, 1e-6);
        assert_close("learned x0", &gpu.read_f32(&x0).unwrap(), &want_x0, 1e-6, 1e-6);
        if t > 0 {
            // The variance moves the result: frac 0 and frac 1 differ.
            let (lo, hi) = s.log_variance_range(t);
            assert!(hi > lo, "t={t}: {lo} {hi}");
        }
    }
    // A model output of neither size is an error, not a kernel reading past its end.
    let (x, o, nz, x0) = (zeros(&gpu, 6), zeros(&gpu, 9), zeros(&gpu, 6), zeros(&gpu, 6));
    assert!(kernels::scheduler::ddpm_step_batched(&gpu, 2, &x, &x0, &o, &nz).is_err());
}

// 10. Sharded weights read through their index, or an error naming it.
#[test]
fn sharded_weights_sample_as_the_single_file_does() {
    let dir = tempfile::tempdir().unwrap();
    let model = mini_copy(&dir.path().join("sharded"));
    let unet = model.join("unet");
    std::fs::remove_file(unet.join("diffusion_pytorch_model.safetensors")).unwrap();
    let t = mini_weights();
    let (a, b) = t.split_at(t.len() / 2);
    let names = ["diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model-00002-of-00002.safetensors"];
    write_weights(&unet.join(names[0]), a);
    write_weights(&unet.join(names[1]), b);
    let map: serde_json::Map<String, serde_json::Value> = a
        .iter()
        .map(|x| (x.0.clone(), names[0].into()))
        .chain(b.iter().map(|x| (x.0.clone(), names[1].into())))
        .collect();
    let index = unet.join("diffusion_pytorch_model.safetensors.index.json");
    std::fs::write(&index, serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map}).to_string()).unwrap();
    let (x, y) = (dir.path().join("sharded.png"), dir.path().join("single.png"));
    ok(&["sample", "--model", s(&model), "--steps", "2", "--batch", "2", "--out", s(&x)]);
    ok(&["sample", "--model", s(&mini()), "--steps", "2", "--batch", "2", "--out", s(&y)]);
    assert_eq!(std::fs::read(&x).unwrap(), std::fs::read(&y).unwrap());
    std::fs::remove_file(unet.join(names[1])).unwrap();
    let e = fails(&["sample", "--model", s(&model), "--steps", "2", "--out", s(&x)]);
    assert!(e.contains("diffusion_pytorch_model.safetensors.index.json") && e.contains(names[1]) && e.contains("missing"), "{e}");
}

/// Worst |a - b| of two tensors of the same length.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

// 7 and 9 against diffusers: fixtures written by tools/fixtures/make_fixtures.py
// (mini-nomid, mini-noattn, learned-range) with diffusers 0.42.1.
#[test]
fn no_mid_block_no_mid_attention_and_learned_range_match_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = repo().join("tests/fixtures");
    for name in ["mini-nomid", "mini-noattn", "learned-range"] {
        let model = fixtures.join(name);
        let inputs = model.join("forward.safetensors");
        let out = dir.path().join(format!("{name}-forward.safetensors"));
        ok(&["parity", "forward", "--model", s(&model), "--inputs", s(&inputs), "--out", s(&out)]);
        let (got, want) = (read_safetensors(&out).unwrap(), read_safetensors(&inputs).unwrap());
        assert_eq!(got["output"].0, want["output"].0, "{name}: output shape");
        let d = max_diff(&got["output"].1, &want["output"].1);
        eprintln!("{name}: forward max diff {d:e}");
        assert!(d <= 1e-3, "{name}: forward differs from diffusers by {d}");
    }
    // learned_range: the whole 10-step DDPMPipeline loop with diffusers' noises.
    let model = fixtures.join("learned-range");
    let inputs = model.join("ddpm10.safetensors");
    let out = dir.path().join("learned-ddpm10.safetensors");
    ok(&["parity", "sample", "--model", s(&model), "--inputs", s(&inputs), "--out", s(&out)]);
    let (got, want) = (read_safetensors(&out).unwrap(), read_safetensors(&inputs).unwrap());
    let mut worst = 0f32;
    for i in 0..10 {
        for k in [format!("eps.{i}"), format!("x.{i}")] {
            assert_eq!(got[&k].0, want[&k].0, "{k}: shape");
            let d = max_diff(&got[&k].1, &want[&k].1);
            assert!(d <= 1e-3, "learned-range {k} differs from diffusers by {d}");
            worst = worst.max(d);
        }
    }
    let d = max_diff(&got["image"].1, &want["image"].1);
    eprintln!("learned-range: 10 steps, worst eps/x diff {worst:e}, image {d:e}");
    assert!(d <= 1e-3, "image differs by {d}");
}
