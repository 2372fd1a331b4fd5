//! The training loop: data, noise and timesteps on the CPU, each step one
//! GPU submission, a loss log, sample grids and checkpoints along the way.
//! Reports through events so a progress bar or a window can follow it and
//! cancel between steps.

use super::checkpoint::{self, Snapshot, TrainState};
use super::data::Dataset;
use super::plan::{StepSettings, TrainPlan};
use super::schedule::{CosineSchedule, EmaSchedule};
use crate::diffusion::{DdpmScheduler, Flow, NoiseStreams, Sampler};
use crate::gpu::Gpu;
use crate::image_io;
use crate::kernels::optim::AdamW;
use crate::model::{ForwardPlan, SchedulerConfig, UNetConfig, folder, unet::build_graph};
use crate::rng::Rng;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Where the starting weights come from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// Fine-tune a diffusers UNet2DModel folder.
    Init { dir: PathBuf, variant: Option<String> },
    /// Fresh weights for this architecture.
    Config(Box<UNetConfig>),
    /// Continue a Petal checkpoint exactly.
    Resume(PathBuf),
}

/// What a run found when it started ([`TrainEvent::Started`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunStarted {
    /// Usable training images.
    pub images: usize,
    /// Files in the data folder that could not be used, and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// The optimizer step the run ends at (the cosine schedule's end).
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    /// The checkpoint step a resumed run continues from.
    pub resumed_from: Option<u64>,
    pub parameters: usize,
    /// GPU memory the run holds (weights, gradients, AdamW moments, EMA,
    /// activations), in bytes.
    pub gpu_bytes: u64,
}

impl ModelSource {
    /// Fresh weights of a built-in architecture: tiny, small or cifar10-32
    /// ([`UNetConfig::builtin`]). Errors name the choices.
    pub fn builtin(name: &str) -> Result<ModelSource> {
        match UNetConfig::builtin(name) {
            Some(c) => Ok(ModelSource::Config(Box::new(c))),
            None => bail!("no built-in architecture {name:?} (tiny, small, cifar10-32)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub source: ModelSource,
    pub epochs: u64,
    pub max_steps: Option<u64>,
    pub batch: u32,
    pub lr: f64,
    pub warmup: u64,
    pub checkpoint_every: u64,
    pub keep_last: Option<usize>,
    pub seed: u64,
    pub adamw: AdamW,
    pub max_grad_norm: f64,
    pub ema: Option<EmaSchedule>,
    /// Write a sample grid every this many steps (0: only at the end).
    pub sample_every: u64,
    pub sample_batch: u32,
    pub sample_steps: u32,
    pub sample_seed: u64,
}

impl TrainOptions {
    /// The recipe of the seed model (diffusers' train_unconditional).
    pub fn new(data: PathBuf, out: PathBuf, source: ModelSource) -> TrainOptions {
        TrainOptions {
            data,
            out,
            source,
            epochs: 100,
            max_steps: None,
            batch: 64,
            lr: 1e-4,
            warmup: 500,
            checkpoint_every: 1000,
            keep_last: None,
            seed: 0,
            adamw: AdamW { beta1: 0.95, beta2: 0.999, eps: 1e-8, weight_decay: 1e-6 },
            max_grad_norm: 1.0,
            ema: Some(EmaSchedule::default()),
            sample_every: 1000,
            sample_batch: 16,
            sample_steps: 50,
            sample_seed: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepLog {
    /// Optimizer steps done, this one included.
    pub step: u64,
    pub total: u64,
    pub epoch: u64,
    pub loss: f32,
    pub lr: f64,
    pub grad_norm: f32,
    pub seconds: f64,
}

/// What the run reports. Events own their data, so a worker thread can send
/// them over a channel as they are.
#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// Data and model are ready; the first step is next.
    Started(RunStarted),
    /// Something the user should know that does not stop the run.
    Warning(String),
    Step(StepLog),
    /// A checkpoint folder was written (after `step` steps).
    Checkpoint { step: u64, path: PathBuf },
    /// A preview grid was sampled with the EMA weights from the fixed sample seed.
    Samples {
        step: u64,
        /// The PNG grid written into the run folder.
        path: PathBuf,
        /// The images, (batch, channels, height, width) in [-1, 1].
        images: Vec<f32>,
        batch: u32,
        channels: u32,
        height: u32,
        width: u32,
    },
}

/// What the caller asks of the run after an event; the run acts on it
/// before the next step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainControl {
    /// Stop after writing a checkpoint of the current step.
    pub stop: bool,
    /// Sample a preview grid now.
    pub sample_now: bool,
    /// Write a checkpoint now.
    pub checkpoint_now: bool,
}

impl TrainControl {
    pub const CONTINUE: TrainControl = TrainControl { stop: false, sample_now: false, checkpoint_now: false };

    fn merge(self, o: TrainControl) -> TrainControl {
        TrainControl {
            stop: self.stop || o.stop,
            sample_now: self.sample_now || o.sample_now,
            checkpoint_now: self.checkpoint_now || o.checkpoint_now,
        }
    }
}

pub struct TrainSummary {
    pub steps_done: u64,
    pub last_checkpoint: Option<PathBuf>,
    pub cancelled: bool,
}

/// The images, noise and timesteps of optimizer step `step` (0-based):
/// the data order comes from (seed, epoch), everything else from (seed, step),
/// so a resumed run draws exactly what an uninterrupted one would.
pub struct Batch {
    pub x0: Vec<f32>,
    pub noise: Vec<f32>,
    pub timesteps: Vec<u32>,
}

pub fn make_batch(data: &Dataset, seed: u64, step: u64, steps_per_epoch: u64, batch: u32, num_train_timesteps: u32) -> Batch {
    let epoch = step / steps_per_epoch;
    let i = (step % steps_per_epoch) as usize;
    let mut order: Vec<usize> = (0..data.len).collect();
    Rng::stream(seed.wrapping_add(epoch), "data order").shuffle(&mut order);
    let b = batch as usize;
    let mut rng = Rng::stream(seed.wrapping_add(step.wrapping_mul(0x9E37_79B9)), "step");
    let mut x0 = Vec::with_capacity(b * data.image(0).len());
    for &idx in &order[i * b..(i + 1) * b] {
        data.push_image(idx, rng.uniform() < 0.5, &mut x0);
    }
    let timesteps = (0..b).map(|_| rng.below(num_train_timesteps as u64) as u32).collect();
    let noise = rng.normal_vec(x0.len());
    Batch { x0, noise, timesteps }
}

/// AdamW's first and second moments, one vector per parameter tensor.
type Moments = (Vec<Vec<f32>>, Vec<Vec<f32>>);

struct Start {
    config: UNetConfig,
    scheduler: SchedulerConfig,
    weights: Vec<Vec<f32>>,
    ema: Option<Vec<Vec<f32>>>,
    m: Option<Moments>,
    state: Option<TrainState>,
}

fn starting_point(opts: &TrainOptions) -> Result<Start> {
    Ok(match &opts.source {
        ModelSource::Init { dir, variant } => {
            let m = folder::load(dir, variant.as_deref())?;
            let ema = opts.ema.map(|_| m.weights.clone());
            Start { config: m.config, scheduler: m.scheduler, weights: m.weights, ema, m: None, state: None }
        }
        ModelSource::Config(config) => {
            config.validate()?;
            let graph = build_graph(config);
            let w = super::init::init_weights(&graph, opts.seed);
            let ema = opts.ema.map(|_| w.clone());
            Start { config: (**config).clone(), scheduler: SchedulerConfig::default(), weights: w, ema, m: None, state: None }
        }
        ModelSource::Resume(dir) => {
            let c = checkpoint::load(dir)?;
            Start { config: c.config, scheduler: c.scheduler, weights: c.weights, ema: c.ema, m: Some((c.m, c.v)), state: Some(c.state) }
        }
    })
}

/// The loss log: `loss.csv` in the run folder. On resume, rows after the
/// checkpoint's step are dropped so the curve continues exactly.
fn open_log(run: &Path, resume_step: Option<u64>) -> Result<std::fs::File> {
    let path = run.join("loss.csv");
    let header = "step,epoch,loss,lr,grad_norm,seconds\n";
    let mut kept = String::from(header);
    if let Some(step) = resume_step
        && let Ok(text) = std::fs::read_to_string(&path)
    {
        for line in text.lines().skip(1) {
            match line.split(',').next().and_then(|s| s.parse::<u64>().ok()) {
                Some(s) if s <= step => {
                    kept.push_str(line);
                    kept.push('\n');
                }
                _ => {}
            }
        }
    }
    std::fs::write(&path, kept).with_context(|| format!("writing {}", path.display()))?;
    std::fs::OpenOptions::new().append(true).open(&path).with_context(|| format!("opening {}", path.display()))
}

/// Trains as `opts` says, reporting each step to `on_event`, whose answer
/// can stop the run (after a checkpoint), or ask for a preview or a
/// checkpoint now. A loss that is not finite stops the run with an error;
/// the checkpoints already written are kept.
pub fn train(gpu: Arc<Gpu>, opts: &TrainOptions, mut on_event: impl FnMut(TrainEvent) -> TrainControl) -> Result<TrainSummary> {
    let start = starting_point(opts)?;
    let (config, sched_cfg) = (start.config.clone(), start.scheduler.clone());
    let graph = build_graph(&config);
    let (h, w) = config.sample_hw();
    if config.in_channels != 3 || config.out_channels != 3 {
        bail!("training needs an RGB model (in_channels and out_channels 3)");
    }
    // Settings: a resumed run keeps those it was started with.
    let (seed, batch, lr, warmup, adamw, max_grad_norm, ema_sched) = match &start.state {
        Some(s) => (s.seed, s.batch, s.lr, s.warmup, s.adamw, s.max_grad_norm, s.ema),
        None => (opts.seed, opts.batch, opts.lr, opts.warmup, opts.adamw, opts.max_grad_norm, opts.ema),
    };
    let resumed = super::validate::check_run(&gpu, opts, &config, &sched_cfg, &graph, start.state.as_ref())?;
    let data = Dataset::load(&opts.data, h, w)?;
    if data.len < batch as usize {
        bail!("{}: {} usable images, fewer than one batch of {batch}", opts.data.display(), data.len);
    }
    let steps_per_epoch = (data.len / batch as usize) as u64;
    let total = match &start.state {
        Some(s) => {
            if s.images != data.len {
                on_event(TrainEvent::Warning(format!(
                    "the checkpoint was trained on {} images, {} has {}; the run will not continue exactly",
                    s.images,
                    opts.data.display(),
                    data.len
                )));
            }
            let r = resumed.as_ref().expect("checked on resume");
            if let Some(note) = &r.note {
                on_event(TrainEvent::Warning(note.clone()));
            }
            r.total_steps
        }
        None => {
            let t = opts.epochs * steps_per_epoch;
            opts.max_steps.map_or(t, |m| m.min(t))
        }
    };
    let first_step = start.state.as_ref().map_or(0, |s| s.step);
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;

    let schedule = CosineSchedule { lr, warmup, total };
    let scheduler = DdpmScheduler::new(&sched_cfg)?;
    let plan = TrainPlan::new(gpu.clone(), &graph, &config, batch, &start.weights, start.ema.as_deref())?;
    if let Some((m, v)) = &start.m {
        plan.m.upload(&gpu, m);
        plan.v.upload(&gpu, v);
    }
    on_event(TrainEvent::Started(RunStarted {
        images: data.len,
        skipped: data.skipped.clone(),
        total_steps: total,
        steps_per_epoch,
        resumed_from: start.state.as_ref().map(|s| s.step),
        parameters: graph.num_parameters(),
        gpu_bytes: plan.memory_bytes(),
    }));
    let mut log = open_log(&opts.out, start.state.as_ref().map(|s| s.step))?;
    let state_at = |step: u64| TrainState {
        step,
        total_steps: total,
        steps_per_epoch,
        seed,
        batch,
        lr,
        warmup,
        adamw,
        max_grad_norm,
        ema: ema_sched,
        data: opts.data.clone(),
        images: data.len,
        petal_version: env!("CARGO_PKG_VERSION").into(),
    };
    let save = |step: u64| -> Result<PathBuf> {
        let dest = opts.out.join(format!("checkpoint-{step}"));
        let weights = plan.params.download(&gpu)?;
        let ema = plan.ema.as_ref().map(|e| e.download(&gpu)).transpose()?;
        let (m, v) = (plan.m.download(&gpu)?, plan.v.download(&gpu)?);
        let state = state_at(step);
        let snap = Snapshot { config: &config, scheduler: &sched_cfg, graph: &graph, weights: &weights, ema: ema.as_deref(), m: &m, v: &v, state: &state };
        checkpoint::save(&dest, &snap)?;
        if let Some(k) = opts.keep_last {
            checkpoint::prune(&opts.out, k.max(1))?;
        }
        Ok(dest)
    };
    let mut sampler: Option<Sampler> = None;
    let mut write_samples = |step: u64| -> Result<(PathBuf, Vec<f32>)> {
        if sampler.is_none() {
            let store = plan.ema.as_ref().unwrap_or(&plan.params);
            let fp = ForwardPlan::build(&gpu, &graph, &config, store, opts.sample_batch, false)?;
            sampler = Some(Sampler::with_plan(&gpu, fp, &sched_cfg, opts.sample_steps)?);
        }
        let s = sampler.as_mut().unwrap();
        let mut noise = NoiseStreams::new(opts.sample_seed, 0, opts.sample_batch as usize, (3 * h * w) as usize);
        let x_t = noise.next_batch();
        let x0 = s.run(&gpu, &x_t, false, |_, _| noise.next_batch(), |_, _| Flow::Continue)?.expect("not cancelled");
        let path = opts.out.join("samples").join(format!("step-{step:06}.png"));
        let img = image_io::grid(&x0, opts.sample_batch as usize, 3, h as usize, w as usize, Default::default());
        image_io::save_png(&img, &path)?;
        Ok((path, x0))
    };

    let mut last_checkpoint: Option<(u64, PathBuf)> = None;
    let t0 = Instant::now();
    for step in first_step..total {
        let b = make_batch(&data, seed, step, steps_per_epoch, batch, sched_cfg.num_train_timesteps);
        let ts_f: Vec<f32> = b.timesteps.iter().map(|&t| t as f32).collect();
        let noisy = scheduler.add_noise(&b.x0, &b.noise, &b.timesteps);
        let settings = StepSettings {
            lr: schedule.lr_at(step),
            step: step + 1,
            adamw,
            max_grad_norm: max_grad_norm as f32,
            ema_decay: ema_sched.map_or(0.0, |e| e.decay(step + 1)),
        };
        let stats = plan.step(&noisy, &b.noise, &ts_f, &settings)?;
        if !stats.loss.is_finite() {
            bail!("the loss became {} at step {}; the last good checkpoint is kept", stats.loss, step + 1);
        }
        let done = step + 1;
        let entry = StepLog {
            step: done,
            total,
            epoch: step / steps_per_epoch,
            loss: stats.loss,
            lr: settings.lr,
            grad_norm: stats.grad_norm,
            seconds: t0.elapsed().as_secs_f64(),
        };
        writeln!(log, "{},{},{},{:e},{},{:.3}", done, entry.epoch, stats.loss, settings.lr, stats.grad_norm, entry.seconds)
            .with_context(|| format!("writing {}", opts.out.join("loss.csv").display()))?;
        let mut control = on_event(TrainEvent::Step(entry));
        let scheduled_checkpoint = opts.checkpoint_every > 0 && done % opts.checkpoint_every == 0 || done == total;
        if scheduled_checkpoint || control.checkpoint_now {
            let p = save(done)?;
            control = control.merge(on_event(TrainEvent::Checkpoint { step: done, path: p.clone() }));
            last_checkpoint = Some((done, p));
        }
        if opts.sample_every > 0 && done % opts.sample_every == 0 || done == total || control.sample_now {
            let (path, images) = write_samples(done)?;
            let (batch, channels) = (opts.sample_batch, 3);
            let ev = TrainEvent::Samples { step: done, path, images, batch, channels, height: h, width: w };
            control = control.merge(on_event(ev));
        }
        if control.stop {
            // Stopping never loses steps: the current state is saved first.
            if last_checkpoint.as_ref().is_none_or(|(s, _)| *s != done) {
                let p = save(done)?;
                on_event(TrainEvent::Checkpoint { step: done, path: p.clone() });
                last_checkpoint = Some((done, p));
            }
            return Ok(TrainSummary { steps_done: done, last_checkpoint: last_checkpoint.map(|c| c.1), cancelled: true });
        }
    }
    Ok(TrainSummary { steps_done: total, last_checkpoint: last_checkpoint.map(|c| c.1), cancelled: false })
}
