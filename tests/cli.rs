//! The `petal` binary as a user runs it: sampling is reproducible, grids and
//! frames are laid out as documented, the parity command works, and bad
//! input gives a one-line error naming the problem, never a panic.

mod common;
use common::*;
use petal::model::weights::{StoreDtype, read_safetensors, safetensors_bytes};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn petal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_petal")).args(args).output().expect("running petal")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs petal expecting failure; returns its error line.
fn fails(args: &[&str]) -> String {
    let o = petal(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "petal {args:?} succeeded");
    assert_eq!(o.status.code(), Some(1), "petal {args:?} exit code; stderr:\n{err}");
    assert!(!err.contains("panicked"), "petal {args:?} panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("petal: error:")).collect();
    assert_eq!(lines.len(), 1, "petal {args:?}: expected one error line, got:\n{err}");
    lines[0].to_string()
}

fn mini() -> PathBuf {
    repo().join("tests/fixtures/mini")
}

/// A copy of a model folder to break.
fn copy_model(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_model(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), &to).unwrap();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn sample_is_reproducible_and_laid_out_as_a_grid() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("a.png"), dir.path().join("b.png"), dir.path().join("c.png"));
    let frames = dir.path().join("frames");
    let model = mini();
    let base = ["sample", "--model", s(&model), "--steps", "4", "--batch", "3"];
    let o = petal(&[&base[..], &["--seed", "7", "--out", s(&a), "--frames", s(&frames)]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("adapter: "), "prints the adapter");
    let o = petal(&[&base[..], &["--seed", "7", "--out", s(&b)]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = petal(&[&base[..], &["--seed", "8", "--out", s(&c), "--scale", "2", "--gap", "1"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let (ba, bb, bc) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), std::fs::read(&c).unwrap());
    assert_eq!(ba, bb, "same seed, same bytes");
    // 3 tiles of 16x16, 2 per row.
    let img = image::load_from_memory(&ba).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (32, 32));
    let img_c = image::load_from_memory(&bc).unwrap().to_rgb8();
    assert_eq!(img_c.dimensions(), (2 * 32 + 1, 2 * 32 + 1));
    // Different seed, different images (compare the unscaled first tile).
    let coords: Vec<(u32, u32)> = (0..16).flat_map(|y| (0..16).map(move |x| (x, y))).collect();
    let tile_a: Vec<u8> = coords.iter().flat_map(|&(x, y)| img.get_pixel(x, y).0).collect();
    let tile_c: Vec<u8> = coords.iter().flat_map(|&(x, y)| img_c.get_pixel(2 * x, 2 * y).0).collect();
    assert_ne!(tile_a, tile_c);
    // Every step as x_t and predicted x_0; the last x_t is the result.
    let mut names: Vec<String> =
        std::fs::read_dir(&frames).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(std::fs::read(frames.join("step0003_x.png")).unwrap(), ba);
}

#[test]
fn parity_forward_command_reproduces_diffusers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let inputs = mini().join("forward.safetensors");
    let o = petal(&["parity", "forward", "--model", s(&mini()), "--inputs", s(&inputs), "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = read_safetensors(&out).unwrap();
    let want = read_safetensors(&inputs).unwrap();
    assert_close("parity forward", &got["output"].1, &want["output"].1, 1e-3, 0.0);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let sample = |model: &Path| fails(&["sample", "--model", s(model), "--steps", "2", "--out", s(&out)]);

    let missing = dir.path().join("no-such-model");
    let e = sample(&missing);
    assert!(e.contains("no-such-model") && e.contains("no such model folder"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(sample(&empty).contains("not a diffusers model folder"));

    let model = dir.path().join("model");
    copy_model(&mini(), &model);
    let weights = model.join("unet/diffusion_pytorch_model.safetensors");
    let good = std::fs::read(&weights).unwrap();

    std::fs::write(&weights, &good[..good.len() / 2]).unwrap();
    let e = sample(&model);
    assert!(e.contains("diffusion_pytorch_model.safetensors") && e.contains("not a valid safetensors"), "{e}");

    std::fs::write(&weights, b"this is not a safetensors file at all").unwrap();
    assert!(sample(&model).contains("not a valid safetensors"));

    // A tensor missing, and one of the wrong shape.
    let tensors = read_safetensors(&mini().join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    let mut named: Vec<(String, Vec<usize>, &[f32])> =
        tensors.iter().map(|(k, (shape, v))| (k.clone(), shape.clone(), &v[..])).collect();
    named.retain(|t| t.0 != "mid_block.resnets.1.conv2.weight");
    std::fs::write(&weights, safetensors_bytes(&named, StoreDtype::F32).unwrap()).unwrap();
    let e = sample(&model);
    assert!(e.contains("mid_block.resnets.1.conv2.weight") && e.contains("missing"), "{e}");

    let mut named: Vec<(String, Vec<usize>, &[f32])> =
        tensors.iter().map(|(k, (shape, v))| (k.clone(), shape.clone(), &v[..])).collect();
    for t in &mut named {
        if t.0 == "conv_in.weight" {
            t.1 = vec![t.1[0], t.1[1] * t.1[2], 1, t.1[3]];
        }
    }
    std::fs::write(&weights, safetensors_bytes(&named, StoreDtype::F32).unwrap()).unwrap();
    let e = sample(&model);
    assert!(e.contains("conv_in.weight") && e.contains("shape"), "{e}");
    std::fs::write(&weights, &good).unwrap();

    // A config that does not match the weights, and an unknown block type.
    let config = model.join("unet/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"layers_per_block\": 2", "\"layers_per_block\": 1")).unwrap();
    let e = sample(&model);
    assert!(e.contains("does config.json belong to these weights"), "{e}");
    std::fs::write(&config, text.replace("\"AttnDownBlock2D\"", "\"CrossAttnDownBlock2D\"")).unwrap();
    let e = sample(&model);
    assert!(e.contains("config.json") && e.contains("CrossAttnDownBlock2D"), "{e}");
    std::fs::write(&config, "{ not json").unwrap();
    assert!(sample(&model).contains("config.json"));
    std::fs::write(&config, &text).unwrap();

    // Bad arguments.
    let e = fails(&["sample", "--model", s(&model), "--steps", "0", "--out", s(&out)]);
    assert!(e.contains("--steps"), "{e}");
    let e = fails(&["sample", "--model", s(&model), "--steps", "2000", "--out", s(&out)]);
    assert!(e.contains("--steps"), "{e}");
    let e = fails(&["parity", "forward", "--model", s(&model), "--inputs", s(&dir.path().join("none.safetensors")), "--out", s(&out)]);
    assert!(e.contains("none.safetensors"), "{e}");
    // And the repaired model works again.
    let o = petal(&["sample", "--model", s(&model), "--steps", "2", "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn sample_and_parity_take_the_ddim_scheduler() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (dir.path().join("ddpm.png"), dir.path().join("ddim.png"), dir.path().join("ddim-again.png"));
    let model = mini();
    let base = ["sample", "--model", s(&model), "--steps", "5", "--batch", "2", "--seed", "3"];
    let o = petal(&[&base[..], &["--out", s(&a)]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    for out in [&b, &c] {
        let o = petal(&[&base[..], &["--scheduler", "ddim", "--eta", "0.3", "--out", s(out)]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (ba, bb, bc) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), std::fs::read(&c).unwrap());
    assert_eq!(bb, bc, "DDIM with a seed is reproducible");
    assert_ne!(ba, bb, "DDIM is not DDPM");

    let e = fails(&[&base[..], &["--scheduler", "euler", "--out", s(&b)]].concat());
    assert!(e.contains("--scheduler euler"), "{e}");
    let e = fails(&[&base[..], &["--scheduler", "ddim", "--eta", "1.5", "--out", s(&b)]].concat());
    assert!(e.contains("--eta"), "{e}");
    let e = fails(&[&base[..], &["--eta", "0.5", "--out", s(&b)]].concat());
    assert!(e.contains("--eta") && e.contains("ddim"), "{e}");

    // parity sample --scheduler ddim reproduces diffusers' DDIMPipeline.
    let inputs = mini().join("ddim10_eta0.5.safetensors");
    let out = dir.path().join("ours.safetensors");
    let args = ["parity", "sample", "--model", s(&model), "--inputs", s(&inputs), "--out", s(&out)];
    let o = petal(&[&args[..], &["--scheduler", "ddim", "--eta", "0.5"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let (got, want) = (read_safetensors(&out).unwrap(), read_safetensors(&inputs).unwrap());
    for i in 0..10 {
        assert_close(&format!("parity ddim x.{i}"), &got[&format!("x.{i}")].1, &want[&format!("x.{i}")].1, 1e-3, 0.0);
    }
    assert_close("parity ddim image", &got["image"].1, &want["image"].1, 1e-3, 0.0);
}

#[test]
fn eval_reports_swd_and_nearest_images() {
    let dir = tempfile::tempdir().unwrap();
    let flowers = repo().join("tests/data/flowers");
    let (report, pairs) = (dir.path().join("report.json"), dir.path().join("pairs.png"));
    // The photos against themselves: SWD 0 and every nearest distance 0;
    // the blurred baseline is far.
    let o = petal(&["eval", "--real", s(&flowers), "--generated", s(&flowers), "--out", s(&report), "--pairs", s(&pairs), "--blur-baseline"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["real"]["images"], 24);
    assert_eq!(r["swd_x1e3"]["avg"].as_f64().unwrap(), 0.0, "{r}");
    assert_eq!(r["nearest_real"]["mean_rms"].as_f64().unwrap(), 0.0);
    for level in ["32", "16", "8", "avg"] {
        assert!(r["swd_x1e3_real_vs_blurred"][level].as_f64().unwrap() > 1.0, "{r}");
    }
    let img = image::open(&pairs).unwrap();
    assert_eq!((img.width(), img.height()), (2 * 128 + 2, 8 * 130 - 2));

    // A grid of 3 flowers, as `petal sample --out` lays it out (2 per row,
    // one white slot): 3 generated images, each nearest its own photo.
    let real = petal::eval::load_real(&flowers, 32).unwrap().0;
    let x: Vec<f32> = real.pixels[..3 * 3 * 32 * 32].iter().map(|v| v * 2.0 - 1.0).collect();
    let grid = dir.path().join("grid.png");
    petal::image_io::save_png(&petal::image_io::grid(&x, 3, 3, 32, 32, Default::default()), &grid).unwrap();
    let o = petal(&["eval", "--real", s(&flowers), "--generated", s(&grid), "--out", s(&report)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["generated"]["images"], 3);
    assert!(r["nearest_real"]["mean_rms"].as_f64().unwrap() < 1e-3, "{r}");
    assert!(r["swd_x1e3"]["avg"].as_f64().unwrap() > 0.0, "{r}");

    // One-line errors.
    let missing = dir.path().join("no-such-folder");
    let e = fails(&["eval", "--real", s(&missing), "--generated", s(&grid)]);
    assert!(e.contains("--real") && e.contains("no-such-folder"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = fails(&["eval", "--real", s(&flowers), "--generated", s(&empty)]);
    assert!(e.contains("--generated") && e.contains("no usable images"), "{e}");
    let e = fails(&["eval", "--real", s(&flowers), "--generated", s(&missing)]);
    assert!(e.contains("no such folder or grid PNG"), "{e}");
    let e = fails(&["eval", "--real", s(&flowers), "--generated", s(&grid), "--tile", "24"]);
    assert!(e.contains("--tile"), "{e}");
    let e = fails(&["eval", "--real", s(&flowers), "--generated", s(&grid), "--tile", "36"]);
    assert!(e.contains("grid.png") && e.contains("36 px tiles"), "{e}");
}

/// `petal quantize` says what the conversion cost: the written model's UNet
/// output against the source's at FP32, per timestep, within issue 10's bounds.
#[test]
fn quantize_reports_the_output_error_against_fp32() {
    let tmp = tempfile::tempdir().unwrap();
    for (p, bound) in [("fp16", 1.0), ("int8", 5.0)] {
        let out = tmp.path().join(p);
        let o = petal(&["quantize", "--model", s(&mini()), "--precision", p, "--out", s(&out)]);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        let line = err.lines().find(|l| l.starts_with("UNet output vs the source at fp32")).unwrap_or_else(|| panic!("no error line: {err}"));
        assert_eq!(line.matches("t=").count(), 6, "{line}");
        let worst: f64 = line.rsplit("worst ").next().unwrap().trim_end_matches("%)").parse().unwrap();
        assert!(worst > 0.0 && worst < bound, "{p}: worst {worst}% (bound {bound}%)");
    }
}

/// The flower model Petal ships: a diffusers pipeline folder in assets/ with
/// FP16 and INT8 weights, under 20 MB in all, that `petal sample` uses when
/// no --model is given, at each precision (reading the INT8 file itself).
#[test]
fn the_bundled_flower_model_samples_without_a_model_flag() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/flowers");
    for f in ["model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "README.md"] {
        assert!(dir.join(f).is_file(), "assets/flowers/{f} is missing");
    }
    let total: u64 = std::fs::read_dir(dir.join("unet")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert!(total < 20_000_000, "the bundled weights take {total} bytes");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("grid.png");
    let o = petal(&["sample", "--batch", "2", "--steps", "3", "--out", s(&out)]);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("diffusion_pytorch_model.fp16.safetensors"), "not the fp16 file: {err}");
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (64, 32));
    // INT8 reads the shipped int8 file itself (sampling with it is tested on
    // the fixtures; one more set of pipelines here would only cost CI time).
    let gpu = gpu(petal::gpu::KernelFamily::Cpu);
    let m = petal::model::load_unet(gpu, &dir, None, Some(petal::model::Precision::Int8)).unwrap();
    assert!(m.weights_file.ends_with("diffusion_pytorch_model.int8.safetensors"), "{}", m.weights_file.display());
    assert_eq!(m.stored, petal::model::Precision::Int8);
    assert!(m.file_bytes * 100 <= total * 40, "int8 {} of {} bytes in unet/", m.file_bytes, total);
}

/// `--strip`: for each image a row of x_t and a row of the predicted x_0,
/// every --strip-every steps and at the last one; the last column's x_t is
/// the final image.
#[test]
fn sample_writes_a_strip_of_the_denoising() {
    let tmp = tempfile::tempdir().unwrap();
    let (grid, strip) = (tmp.path().join("grid.png"), tmp.path().join("strip.png"));
    let o = petal(&["sample", "--model", s(&mini()), "--batch", "2", "--steps", "7", "--seed", "5", "--out", s(&grid), "--strip", s(&strip), "--strip-every", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let strip = image::open(&strip).unwrap().to_rgb8();
    let grid = image::open(&grid).unwrap().to_rgb8();
    let t = grid.height(); // the model's size: two tiles side by side
    assert_eq!(strip.dimensions(), (3 * t, 4 * t), "steps 3, 6 and 7; x_t and x_0 rows for 2 images");
    for i in 0..2u32 {
        for y in 0..t {
            for x in 0..t {
                assert_eq!(strip.get_pixel(2 * t + x, 2 * t * i + y), grid.get_pixel(t * i + x, y), "image {i} at ({x}, {y})");
            }
        }
    }
}
