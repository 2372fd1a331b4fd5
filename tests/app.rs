//! The window, driven through egui_kittest with the real worker thread on
//! the real adapter (lavapipe in CI) and the tiny `mini` fixture model.
//! Widgets are found by their labels, as a person finds them.

use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use petal::app::{Launch, PetalApp, Settings, StartChoice};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn settings(count: u32, steps: u32) -> Settings {
    let mut s = Settings::default();
    s.generate.count = count;
    s.generate.steps = steps;
    s.generate.seed = 3;
    s
}

fn harness(settings: Settings, model: Option<PathBuf>) -> Harness<'static, PetalApp> {
    Harness::builder().with_size(egui::vec2(1280.0, 860.0)).build_ui_state(
        |ui, app: &mut PetalApp| {
            let ctx = ui.ctx().clone();
            app.logic(&ctx);
            app.ui(ui);
        },
        {
            let ctx = egui::Context::default();
            PetalApp::new(&ctx, settings, Launch { model, ..Default::default() })
        },
    )
}

/// Steps the window until `done` holds (the worker runs on its own thread).
fn run_until(h: &mut Harness<'static, PetalApp>, what: &str, secs: u64, done: impl Fn(&PetalApp) -> bool) {
    let start = Instant::now();
    loop {
        h.step();
        if done(h.state()) {
            return;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            panic!("timed out waiting for {what}; errors shown: {:?}", h.state().errors);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn generate_fills_the_grid_step_by_step_replays_and_exports() {
    let mut h = harness(settings(4, 8), Some(fixture("mini")));
    run_until(&mut h, "the model", 120, |a| a.model.is_some() && a.adapter.is_some());
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    h.get_by_label("mini");
    h.get_by_label_contains("parameters");
    h.get_by_label("Generate images").click();
    run_until(&mut h, "the generation", 300, |a| !a.generation.running && a.generation.frames.len() == 8);
    // Every step arrived as its own frame, in order, each with the whole batch.
    let g = &h.state().generation;
    let seen: Vec<usize> = g.frames.iter().map(|f| f.index).collect();
    assert_eq!(seen, (0..8).collect::<Vec<_>>());
    assert!(g.frames.iter().all(|f| f.x.len() == 4 && f.pred_x0.len() == 4 && f.num_steps == 8));
    assert_eq!(g.interrupted_at, None);
    // The noise is still visible at the first step and gone at the last.
    assert_ne!(g.frames[0].x[0], g.frames[7].x[0]);
    assert_eq!(g.frames[7].x[0], g.frames[7].pred_x0[0], "at t = 0 the sample is the prediction");
    h.run_steps(2);
    h.get_by_label_contains("Step 8/8");

    // The replay slider shows an earlier step.
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "step").set_value_accesskit(3.0);
    h.run_steps(2);
    assert_eq!(h.state().generation.shown_step(), Some(2));
    h.get_by_label("Follow newest").click();
    h.run_steps(2);
    assert_eq!(h.state().generation.shown_step(), Some(7));

    // Select images (click, Ctrl-click) and export them; the PNG records the settings.
    let dir = tempfile::tempdir().unwrap();
    h.get_by_label("Select image 1").click();
    h.run_steps(2);
    h.get_by_label("Select image 3").click_modifiers(egui::Modifiers::COMMAND);
    h.run_steps(2);
    assert_eq!(h.state().generation.selected.iter().copied().collect::<Vec<_>>(), vec![1, 3]);
    h.get_by_label("Export 2 selected…");
    h.get_by_label("Image 1"); // the large view of the clicked image
    let written = h.state().generation.export_selected(&dir.path().join("flower.png"), petal::app::View::Both, 4).unwrap();
    assert_eq!(written, vec![dir.path().join("flower-1.png"), dir.path().join("flower-3.png")]);
    let text = petal::export::read_parameters(&written[0]).unwrap().expect("a parameters chunk");
    assert!(text.starts_with("Steps: 8, Sampler: DDPM, Seed: 3, Image: 1, Model: mini"), "{text}");
    let png = image::open(&written[0]).unwrap();
    assert_eq!(png.width(), 4 * h.state().model.as_ref().unwrap().width);
    // The image alone, regenerated in a batch of 1 from the same seed and index, is the same image.
    let exported = h.state().generation.frames[7].x[1].clone();
    h.state_mut().settings.generate.count = 1;
    h.state_mut().settings.generate.seed = 4; // seed 3 + index 1 = seed 4 + index 0
    h.get_by_label("Generate images").click();
    run_until(&mut h, "the single image", 300, |a| !a.generation.running && a.generation.frames.len() == 8);
    let alone = &h.state().generation.frames[7].x[0];
    let max_diff = exported.data.iter().zip(&alone.data).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(max_diff <= 1, "image 1 of seed 3 differs from image 0 of seed 4 by {max_diff}/255");
    let grid = dir.path().join("grid.png");
    h.state().generation.export_grid(&grid, petal::app::View::Both, 1).unwrap();
    assert!(petal::export::read_parameters(&grid).unwrap().unwrap().contains("Images: 1"));
}

#[test]
fn ddim_runs_in_the_window_and_its_settings_are_recorded() {
    let mut s = settings(2, 5);
    s.generate.scheduler = petal::worker::SchedulerChoice::Ddim { eta: 0.0 };
    let mut h = harness(s, Some(fixture("mini")));
    run_until(&mut h, "the model", 120, |a| a.model.is_some());
    h.get_by_label("eta");
    h.get_by_label("Generate images").click();
    run_until(&mut h, "DDIM", 300, |a| !a.generation.running && a.generation.frames.len() == 5);
    let g = &h.state().generation;
    assert_eq!(g.frames[4].x, g.frames[4].pred_x0, "DDIM's last step lands on its x_0 prediction");
    let text = g.provenance(Some(0)).unwrap().parameters();
    assert!(text.starts_with("Steps: 5, Sampler: DDIM, Eta: 0, Seed: 3"), "{text}");
}

#[test]
fn cancel_keeps_the_steps_reached() {
    let mut h = harness(settings(2, 400), Some(fixture("mini")));
    run_until(&mut h, "the model", 120, |a| a.model.is_some());
    h.get_by_label("Generate images").click();
    run_until(&mut h, "a few steps", 300, |a| a.generation.frames.len() >= 3);
    h.key_press(egui::Key::Escape);
    run_until(&mut h, "the cancel", 120, |a| !a.generation.running);
    let g = &h.state().generation;
    let k = g.interrupted_at.expect("marked as interrupted");
    assert!((3..400).contains(&k), "interrupted at {k}");
    assert_eq!(g.frames.len(), k, "every step reached is kept");
    h.run_steps(2);
    h.get_by_label_contains(&format!("interrupted at step {k}"));
    let dir = tempfile::tempdir().unwrap();
    h.state_mut().generation.click(0, egui::Modifiers::NONE);
    let p = &h.state().generation.export_selected(&dir.path().join("a.png"), petal::app::View::Both, 1).unwrap()[0];
    let text = petal::export::read_parameters(p).unwrap().unwrap();
    assert!(text.contains(&format!("Interrupted at step: {k}")), "{text}");
}

#[test]
fn a_bad_model_folder_is_an_error_in_the_window_and_the_app_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(settings(1, 2), Some(dir.path().join("nowhere")));
    run_until(&mut h, "the error", 120, |a| !a.errors.is_empty());
    assert!(h.state().errors[0].contains("no such model folder"), "{:?}", h.state().errors);
    h.run_steps(2);
    h.get_by_label_contains("no such model folder");
    // A corrupt weights file names the file.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(bad.join("unet")).unwrap();
    std::fs::copy(fixture("mini/unet/config.json"), bad.join("unet/config.json")).unwrap();
    std::fs::write(bad.join("unet/diffusion_pytorch_model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{}").unwrap();
    h.state_mut().open_model(bad);
    run_until(&mut h, "the second error", 120, |a| a.errors.len() == 2);
    assert!(h.state().errors[1].contains("diffusion_pytorch_model.safetensors"), "{:?}", h.state().errors);
    // Dismiss both, then a good model still opens and generates.
    h.run_steps(2);
    for _ in 0..4 {
        if let Some(b) = h.query_all_by_label("Dismiss").next() {
            b.click();
        }
        h.run_steps(2);
    }
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    h.state_mut().open_model(fixture("mini"));
    run_until(&mut h, "the good model", 120, |a| a.model.is_some());
    h.get_by_label("Generate images").click();
    run_until(&mut h, "a generation", 300, |a| !a.generation.running && a.generation.frames.len() == 2);
}

#[test]
fn train_tab_starts_pauses_resumes_and_stops_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(1, 2);
    s.train.data = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flowers"));
    s.train.out = Some(dir.path().join("run"));
    s.train.start = StartChoice::CurrentModel;
    s.train.batch = 4;
    s.train.max_steps = 10_000;
    s.train.warmup = 2;
    s.train.checkpoint_every = 0;
    s.train.sample_every = 0;
    let mut h = harness(s, Some(fixture("mini")));
    run_until(&mut h, "the model", 120, |a| a.model.is_some());
    h.get_by_label("Train").click();
    h.run_steps(2);
    h.get_by_label("Start training").click();
    run_until(&mut h, "the first steps", 300, |a| a.training.log.len() >= 2);
    assert_eq!(h.state().training.images, 24);
    // Generation waits while training runs, and says why.
    h.get_by_label("Generate").click();
    h.run_steps(2);
    assert!(h.query_by_label_contains("Training is using the GPU").is_some());
    h.get_by_label("Train").click();
    h.run_steps(2);

    h.get_by_label("Pause").click();
    run_until(&mut h, "the pause", 120, |a| a.training.paused);
    let at = h.state().training.log.len();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(700) {
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(h.state().training.log.len() <= at + 1, "steps went on while paused");
    h.get_by_label("Sample now").click();
    run_until(&mut h, "the preview", 300, |a| a.training.preview.is_some());
    assert!(h.state().training.paused, "sampling keeps the pause");
    h.get_by_label("Resume").click();
    run_until(&mut h, "more steps", 300, |a| !a.training.paused && a.training.log.len() >= at + 2);
    h.get_by_label("Stop").click();
    run_until(&mut h, "the stop", 300, |a| !a.training.is_running());
    let tv = &h.state().training;
    let (step, path) = tv.checkpoints.last().cloned().expect("a checkpoint on stop");
    assert_eq!(step, tv.log.last().unwrap().step);
    assert!(path.join("unet/diffusion_pytorch_model.safetensors").is_file());
    assert!(path.join("training_state").is_dir());
    h.run_steps(2);
    h.get_by_label_contains("Stopped after step");
    // The checkpoint opens in Generate.
    h.get_by_label("Open in Generate").click();
    run_until(&mut h, "the checkpoint as a model", 120, |a| a.model.as_ref().is_some_and(|m| m.dir == path));
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
}

#[test]
fn precision_choice_reloads_and_compare_shows_all_three() {
    let mut h = harness(settings(2, 4), Some(fixture("mini")));
    run_until(&mut h, "the model", 120, |a| a.model.is_some());
    assert_eq!(h.state().model.as_ref().unwrap().precision, petal::model::Precision::Fp32);
    // Choosing INT8 reloads the open model with int8 weights on the GPU.
    h.get_by_label("As stored (FP32)");
    h.get_by_label("INT8").click();
    h.run_steps(2);
    run_until(&mut h, "the int8 reload", 120, |a| a.loading.is_none() && a.model.as_ref().is_some_and(|m| m.precision == petal::model::Precision::Int8));
    let int8_gpu = h.state().model.as_ref().unwrap().gpu_bytes;
    h.get_by_label_contains("int8 (stored fp32, converted on load)");

    // The comparison runs the same seed in all three and shows each one's figures.
    h.get_by_label("Compare FP32, FP16, INT8").click();
    run_until(&mut h, "the comparison", 300, |a| !a.comparison.running && a.comparison.entries.len() == 3);
    h.run_steps(2);
    h.get_by_label("Compare precisions");
    let c = &h.state().comparison;
    let by = |p| &c.entries.iter().find(|(e, _)| e.precision == p).unwrap().0;
    let (f32e, f16e, i8e) = (by(petal::model::Precision::Fp32), by(petal::model::Precision::Fp16), by(petal::model::Precision::Int8));
    assert!(f32e.mean_abs_diff.is_none() && !f32e.converted);
    assert!(f16e.converted && i8e.converted, "mini stores fp32");
    assert_eq!(i8e.gpu_bytes, int8_gpu, "the comparison's INT8 is the same load as the window's");
    assert!(f16e.file_bytes * 100 <= f32e.file_bytes * 55, "fp16 file {} of fp32 {}", f16e.file_bytes, f32e.file_bytes);
    assert!(i8e.file_bytes < f16e.file_bytes && i8e.gpu_bytes < f16e.gpu_bytes && f16e.gpu_bytes < f32e.gpu_bytes);
    let (d16, d8) = (f16e.mean_abs_diff.unwrap(), i8e.mean_abs_diff.unwrap());
    assert!(d16 < 1.0, "fp16 images differ from fp32 by {d16}/255 on average");
    assert!(d8 < 8.0, "int8 images differ from fp32 by {d8}/255 on average");
    assert!(f32e.images.len() == 2 && f32e.millis_per_step > 0.0);
    assert_eq!(h.query_all_by_label_contains("mean difference from FP32").count(), 2, "FP16's and INT8's captions");
    eprintln!("fp16 {d16:.3}/255, int8 {d8:.3}/255 from fp32; files {} {} {} bytes", f32e.file_bytes, f16e.file_bytes, i8e.file_bytes);
    // The open model is still the INT8 one.
    assert_eq!(h.state().model.as_ref().unwrap().precision, petal::model::Precision::Int8);
}

/// A lost device (destroyed here as a driver reset would) is an error in the
/// window naming it; the app goes on, and the next Generate reopens the GPU,
/// reloads the model and runs.
#[test]
fn a_lost_device_is_reported_and_the_next_run_reopens_it() {
    let mut h = harness(settings(2, 3), Some(fixture("mini")));
    run_until(&mut h, "the model", 120, |a| a.model.is_some());
    h.state().send(petal::worker::Command::SimulateDeviceLoss);
    h.get_by_label("Generate images").click();
    run_until(&mut h, "the error", 120, |a| !a.errors.is_empty() && !a.generation.running);
    let e = h.state().errors.join(" | ");
    assert!(e.contains("lost"), "{e}");
    h.run_steps(2);
    h.get_by_label_contains("the GPU device was lost");
    h.get_by_label("Dismiss").click();
    h.run_steps(2);
    h.get_by_label("Generate images").click();
    run_until(&mut h, "the run on the reopened GPU", 300, |a| !a.generation.running && a.generation.frames.len() == 3);
    assert!(h.state().errors.is_empty(), "{:?}", h.state().errors);
    assert_eq!(h.state().model.as_ref().unwrap().name, "mini");
}

#[test]
fn a_data_folder_without_images_is_an_error_not_ready() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("notes.txt"), "not an image").unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(1, 2);
    s.train.data = Some(data.path().to_path_buf());
    s.train.out = Some(out.path().join("run"));
    s.train.start = StartChoice::Fresh("tiny".into());
    let mut h = harness(s, Some(fixture("mini")));
    run_until(&mut h, "the scan", 120, |a| !a.training.scanning && (a.training.scan.is_some() || a.training.scan_error.is_some()));
    let e = h.state().training.scan_error.clone().expect("the scan fails");
    assert!(e.contains(&data.path().display().to_string()), "{e}");
    assert!(h.state().errors.iter().any(|x| x == &e), "also in the status bar: {:?}", h.state().errors);
    h.get_by_label("Train").click();
    h.run_steps(2);
    assert!(h.query_by_label_contains("Ready").is_none(), "a failed scan is not ready");
    assert!(h.query_all_by_label_contains("could not be read").count() >= 1, "the idle line says why Start is off");
    h.get_by_label(&e); // under the folder, in the settings
    // A good folder scanned next clears both (what choosing one does).
    h.state_mut().training.scanning = true;
    h.state().send(petal::worker::Command::ScanData(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/flowers")));
    run_until(&mut h, "the second scan", 120, |a| a.training.scan.is_some());
    assert_eq!(h.state().training.scan.as_ref().unwrap().1, 24);
    assert!(h.state().training.scan_error.is_none() && h.state().errors.is_empty(), "{:?}", h.state().errors);
}

#[test]
fn without_a_file_dialog_saves_go_to_the_export_folder_and_say_so() {
    let exports = tempfile::tempdir().unwrap();
    // SAFETY: no other test of this binary reads these two variables (only
    // the file-dialog code does, and only the buttons pressed here reach it),
    // and setting them races with no reader of the environment in libc.
    unsafe {
        std::env::set_var("PETAL_NO_FILE_DIALOG", "1");
        std::env::set_var("PETAL_EXPORT_DIR", exports.path());
    }
    let mut h = harness(settings(2, 2), Some(fixture("mini")));
    run_until(&mut h, "the model", 120, |a| a.model.is_some());
    h.get_by_label("Generate images").click();
    run_until(&mut h, "the generation", 300, |a| !a.generation.running && a.generation.frames.len() == 2);
    for name in ["petal-seed3-grid.png", "petal-seed3-grid-2.png"] {
        h.get_by_label("Export grid…").click();
        h.run_steps(2);
        let path = exports.path().join(name);
        assert!(image::open(&path).is_ok(), "{} written", path.display());
        let said = h.state().warnings.last().cloned().unwrap_or_default();
        assert!(said.contains("no file dialog") && said.contains(&path.display().to_string()), "{said}");
    }
    // Choosing a folder to read cannot fall back: it says what to do instead.
    h.get_by_label("Train").click();
    h.run_steps(2);
    h.get_all_by_label("Choose…").next().unwrap().click();
    h.run_steps(2);
    let e = h.state().errors.last().cloned().unwrap_or_default();
    assert!(e.starts_with("Data folder: this desktop has no file dialog") && e.contains("petal train --data"), "{e}");
}
