//! Training against diffusers (one step's loss, every gradient and the AdamW
//! update), and the training loop as a user runs it: the loss falls on real
//! flowers, checkpoints load back identically, a resumed run continues the
//! same curve, and bad input is an error that loses nothing.

mod common;
use common::*;
use petal::diffusion::DdpmScheduler;
use petal::gpu::KernelFamily;
use petal::kernels::optim::AdamW;
use petal::model::weights::read_safetensors;
use petal::model::{ForwardPlan, UNet, UNetConfig, folder, unet::build_graph, weights::load_params};
use petal::train::{ModelSource, StepSettings, TrainControl, TrainEvent, TrainOptions, TrainPlan, checkpoint};
use std::path::{Path, PathBuf};

/// One step of the fixture's training step, checked as the reference README
/// says: loss, every gradient within 1e-3 relative L2, every parameter change
/// within 1e-2 relative L2.
fn train_step_case(dir: &Path) {
    let gpu = gpu(KernelFamily::Cpu);
    let files = folder::resolve(dir, None).unwrap();
    let config = UNetConfig::from_file(&files.unet_config).unwrap();
    let sched = petal::model::SchedulerConfig::from_file(files.scheduler_config.as_ref().unwrap()).unwrap();
    let graph = build_graph(&config);
    let weights = load_params(&files.weights, &graph).unwrap();
    let t = read_safetensors(&dir.join("train.safetensors")).unwrap();
    let (x0, noise, ts) = (&t["x0"].1, &t["noise"].1, &t["timesteps"].1);
    let batch = ts.len() as u32;
    let tsu: Vec<u32> = ts.iter().map(|&v| v as u32).collect();
    let noisy = DdpmScheduler::new(&sched).unwrap().add_noise(x0, noise, &tsu);
    assert_close("noisy", &noisy, &t["noisy"].1, 1e-6, 1e-6);
    let plan = TrainPlan::new(gpu.clone(), &graph, &config, batch, &weights, None).unwrap();
    let s = StepSettings {
        lr: 1e-4,
        step: 1,
        adamw: AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 },
        max_grad_norm: 0.0,
        ema_decay: 0.0,
    };
    let stats = plan.step(&noisy, noise, ts, &s).unwrap();
    let want_loss = t["loss"].1[0];
    assert!((stats.loss - want_loss).abs() <= 1e-5 * want_loss.abs().max(1.0), "loss {} vs {want_loss}", stats.loss);
    let grads = plan.grads.download(&gpu).unwrap();
    let after = plan.params.download(&gpu).unwrap();
    let (mut worst_g, mut worst_u) = (0f64, 0f64);
    for (i, p) in graph.params.iter().enumerate() {
        let want = &t[&format!("grad.{}", p.name)].1;
        let norm = l2(want);
        if norm < 1e-6 {
            // The true gradient is zero (to_k.bias: softmax ignores a constant
            // added to every score of a query); the fixture holds rounding
            // noise of ~1e-9, which no relative check can match.
            let diff: Vec<f32> = grads[i].iter().zip(want).map(|(a, b)| a - b).collect();
            assert!(l2(&diff) < 1e-6, "{}: grad.{} should be ~0, differs by {:e}", dir.display(), p.name, l2(&diff));
            continue;
        }
        let g = rel_l2(&grads[i], want);
        assert!(g < 1e-3, "{}: grad.{} relative error {g:e}", dir.display(), p.name);
        worst_g = worst_g.max(g);
        let want_after = &t[&format!("after_adamw.{}", p.name)].1;
        let got_delta: Vec<f32> = after[i].iter().zip(&weights[i]).map(|(a, w)| a - w).collect();
        let want_delta: Vec<f32> = want_after.iter().zip(&weights[i]).map(|(a, w)| a - w).collect();
        let u = rel_l2(&got_delta, &want_delta);
        assert!(u < 1e-2, "{}: after_adamw.{} relative error of the update {u:e}", dir.display(), p.name);
        worst_u = worst_u.max(u);
    }
    eprintln!("{}: loss {} (diffusers {want_loss}), worst grad {worst_g:e}, worst update {worst_u:e}", dir.display(), stats.loss);
}

fn l2(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt()
}

#[test]
fn train_step_matches_own_fixtures() {
    train_step_case(&repo().join("tests/fixtures/mini"));
    train_step_case(&repo().join("tests/fixtures/multihead"));
}

#[test]
fn train_step_matches_shared_reference() {
    let Some(shared) = shared_reference() else {
        eprintln!("../shared/reference not present; skipped");
        return;
    };
    train_step_case(&shared.join("tiny"));
}

fn flowers() -> PathBuf {
    repo().join("tests/data/flowers")
}

/// A small model at 16x16 that trains in seconds on lavapipe.
fn small_config() -> UNetConfig {
    let mut c = UNetConfig::from_file(&repo().join("tests/fixtures/mini/unet/config.json")).unwrap();
    c.block_out_channels = vec![16, 32, 32, 32];
    c
}

fn options(out: &Path, steps: u64) -> TrainOptions {
    let mut o = TrainOptions::new(flowers(), out.to_path_buf(), ModelSource::Config(Box::new(small_config())));
    o.batch = 8;
    o.max_steps = Some(steps);
    o.lr = 2e-3;
    o.warmup = 5;
    o.checkpoint_every = 0;
    o.sample_every = 0;
    o.sample_batch = 4;
    o.sample_steps = 5;
    o.seed = 11;
    o
}

fn losses(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(5).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn loss_falls_on_flowers_and_checkpoint_loads_back() {
    let gpu = gpu(KernelFamily::Cpu);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = options(&run, 60);
    let summary = petal::train::train(gpu.clone(), &o, |_| TrainControl::CONTINUE).unwrap();
    assert_eq!(summary.steps_done, 60);
    let l: Vec<f32> = losses(&run).iter().map(|r| r.split(',').nth(2).unwrap().parse().unwrap()).collect();
    assert_eq!(l.len(), 60);
    let first: f32 = l[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = l[50..].iter().sum::<f32>() / 10.0;
    eprintln!("loss: first 10 steps {first:.4}, last 10 {last:.4}");
    assert!(last < 0.7 * first, "loss did not fall: {first} -> {last}");
    assert!(run.join("samples/step-000060.png").is_file());

    // The final checkpoint is a diffusers folder that Petal loads back with
    // the same weights: same output as the plan's own EMA weights.
    let ck = run.join("checkpoint-60");
    let c = checkpoint::load(&ck).unwrap();
    assert_eq!(c.state.step, 60);
    let (unet, _) = UNet::load(gpu.clone(), &ck, None).unwrap();
    assert_eq!(unet.weights().unwrap(), *c.ema.as_ref().unwrap());
    let plan = ForwardPlan::new(&unet, 2).unwrap();
    let x = randn(5, 2 * 3 * 16 * 16, 1.0);
    let a = plan.forward(&gpu, &x, &[10.0, 900.0]).unwrap();
    let unet2 = UNet::new(gpu.clone(), c.config.clone(), c.ema.as_ref().unwrap()).unwrap();
    let b = ForwardPlan::new(&unet2, 2).unwrap().forward(&gpu, &x, &[10.0, 900.0]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn resume_continues_the_same_loss_curve() {
    let gpu = gpu(KernelFamily::Cpu);
    let dir = tempfile::tempdir().unwrap();
    let (whole, part) = (dir.path().join("whole"), dir.path().join("part"));
    let mut o = options(&whole, 8);
    o.checkpoint_every = 4;
    petal::train::train(gpu.clone(), &o, |_| TrainControl::CONTINUE).unwrap();
    // The same run, cancelled after step 5 (its checkpoint is at 4) ...
    let mut o2 = options(&part, 8);
    o2.checkpoint_every = 4;
    let s = petal::train::train(gpu.clone(), &o2, |ev| match ev {
        TrainEvent::Step(s) if s.step == 5 => TrainControl { stop: true, ..TrainControl::CONTINUE },
        _ => TrainControl::CONTINUE,
    })
    .unwrap();
    assert!(s.cancelled);
    assert_eq!(losses(&part).len(), 5);
    // Stopping writes a checkpoint of the step reached first.
    assert_eq!(s.last_checkpoint.as_deref(), Some(part.join("checkpoint-5").as_path()));
    assert_eq!(checkpoint::load(&part.join("checkpoint-5")).unwrap().state.step, 5);
    // ... and resumed from checkpoint-4: the log is cut back to step 4 and
    // continues exactly as the uninterrupted run did.
    let mut o3 = options(&part, 8);
    o3.source = ModelSource::Resume(part.join("checkpoint-4"));
    o3.checkpoint_every = 4;
    let mut resumed_from = None;
    petal::train::train(gpu.clone(), &o3, |ev| {
        if let TrainEvent::Started(petal::train::RunStarted { resumed_from: r, .. }) = ev {
            resumed_from = r;
        }
        TrainControl::CONTINUE
    })
    .unwrap();
    assert_eq!(resumed_from, Some(4));
    assert_eq!(losses(&part), losses(&whole));
    let a = checkpoint::load(&whole.join("checkpoint-8")).unwrap();
    let b = checkpoint::load(&part.join("checkpoint-8")).unwrap();
    assert_eq!(a.weights, b.weights);
    assert_eq!(a.m, b.m);
}

#[test]
fn bad_training_input_is_an_error_and_loses_nothing() {
    let gpu = gpu(KernelFamily::Cpu);
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let err = |o: &TrainOptions| format!("{:#}", petal::train::train(gpu.clone(), o, |_| TrainControl::CONTINUE).err().expect("should fail"));

    let mut o = options(&run, 2);
    o.data = dir.path().join("nowhere");
    assert!(err(&o).contains("no such data folder"));

    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("broken.jpg"), b"not a jpeg").unwrap();
    o.data = empty.clone();
    let e = err(&o);
    assert!(e.contains("no usable images") && e.contains("1 failed to decode"), "{e}");

    let mut o = options(&run, 2);
    o.source = ModelSource::Resume(flowers());
    assert!(err(&o).contains("not a Petal checkpoint"));

    // A file that does not decode is skipped with a warning naming it.
    let mixed = dir.path().join("mixed");
    std::fs::create_dir_all(mixed.join("sub")).unwrap();
    for (i, e) in std::fs::read_dir(flowers()).unwrap().take(9).enumerate() {
        let e = e.unwrap();
        std::fs::copy(e.path(), mixed.join("sub").join(format!("{i}.jpg"))).unwrap();
    }
    std::fs::write(mixed.join("truncated.png"), [0x89, b'P', b'N', b'G']).unwrap();
    let mut o = options(&run, 2);
    o.data = mixed;
    o.checkpoint_every = 1;
    let mut skipped = Vec::new();
    petal::train::train(gpu.clone(), &o, |ev| {
        if let TrainEvent::Started(petal::train::RunStarted { skipped: s, .. }) = ev {
            skipped = s.iter().map(|(p, _)| p.clone()).collect();
        }
        TrainControl::CONTINUE
    })
    .unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].ends_with("truncated.png"));

    // A full disk while writing a checkpoint: the error names the file, the
    // previous checkpoint is untouched and no temporary folder is left.
    let ck = run.join("checkpoint-2");
    let before = std::fs::read(ck.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    if Path::new("/dev/full").exists() {
        let e = checkpoint::write_dir_atomically(&ck, |tmp| {
            std::fs::write(tmp.join("a"), b"partial").unwrap();
            let mut f = std::fs::File::create("/dev/full").unwrap();
            use std::io::Write;
            f.write_all(&vec![0u8; 1 << 16]).and_then(|_| f.sync_all()).map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.join("unet").display()))
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("No space left"), "{e:#}");
    }
    assert_eq!(std::fs::read(ck.join("unet/diffusion_pytorch_model.safetensors")).unwrap(), before);
    let leftovers: Vec<_> = std::fs::read_dir(&run).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with('.')).collect();
    assert!(leftovers.is_empty(), "temporary folders left behind");
    checkpoint::load(&ck).unwrap();
}
