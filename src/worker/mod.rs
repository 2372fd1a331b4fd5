//! The background thread that owns the GPU, the model, the sampler and the
//! trainer. The window sends [`Command`]s and receives [`Event`]s; after each
//! event the worker calls the `notify` hook (the window's
//! `ctx.request_repaint()`), so the window wakes up for it.
//!
//! One GPU, one thread: a generation and a training run never overlap. While
//! a run is going, the worker looks at its commands between steps (cancel,
//! pause, stop, sample now, checkpoint now) and answers others with an error
//! that says why they have to wait.

pub mod protocol;

pub use protocol::{Activity, CompareEntry, Command, Event, GenerateRequest, ModelInfo, SchedulerChoice, StepFrame};

use crate::diffusion::{Flow, NoiseStreams, Sampler};
use crate::export::Image8;
use crate::gpu::{Gpu, GpuOptions};
use crate::model::{Precision, SchedulerConfig, UNet};
use crate::train::{TrainControl, TrainEvent, TrainOptions};
use anyhow::{Context, Result, bail};
use crossbeam_channel::{Receiver, Sender};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The window's end of the worker: send commands, drain events. Dropping it
/// shuts the worker down (a training run is stopped with a checkpoint) and
/// waits for it.
pub struct WorkerHandle {
    pub commands: Sender<Command>,
    pub events: Receiver<Event>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Sends a command; a worker that has ended is reported as an error event
    /// on the next drain rather than a panic.
    pub fn send(&self, c: Command) {
        let _ = self.commands.send(c);
    }

    /// Whether the thread has ended (it only ends on Shutdown or a panic).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts the worker thread. It opens the GPU first and reports the adapter
/// (or the error) as its first event.
pub fn spawn(gpu: GpuOptions, notify: impl Fn() + Send + 'static) -> WorkerHandle {
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
    let thread = std::thread::Builder::new()
        .name("petal-worker".into())
        .spawn(move || {
            let mut w = Worker {
                commands: cmd_rx,
                events: ev_tx,
                notify: Box::new(notify),
                options: gpu,
                gpu: None,
                model: None,
                sampler: None,
                last_model: None,
            };
            w.run();
        })
        .expect("spawning the worker thread");
    WorkerHandle { commands: cmd_tx, events: ev_rx, thread: Some(thread) }
}

struct Loaded {
    unet: UNet,
    scheduler: SchedulerConfig,
    /// The folder it came from (a comparison reloads it at each precision).
    dir: std::path::PathBuf,
}

/// A sampler kept between generations of the same shape (its buffers and
/// bind groups are the expensive part).
struct CachedSampler {
    batch: u32,
    steps: u32,
    scheduler: SchedulerChoice,
    sampler: Sampler,
}

struct Worker {
    commands: Receiver<Command>,
    events: Sender<Event>,
    notify: Box<dyn Fn() + Send>,
    /// How to open the GPU (again, after a lost device).
    options: GpuOptions,
    gpu: Option<Arc<Gpu>>,
    model: Option<Loaded>,
    sampler: Option<CachedSampler>,
    /// The model folder and precision loaded last, reloaded after the GPU is reopened.
    last_model: Option<(std::path::PathBuf, Option<Precision>)>,
}

/// What a command that arrives mid-run means for the run.
enum MidRun {
    Nothing,
    Cancel,
    Shutdown,
}

impl Worker {
    fn send(&self, e: Event) {
        let _ = self.events.send(e);
        (self.notify)();
    }

    fn run(&mut self) {
        match Gpu::new(&self.options) {
            Ok(g) => {
                self.send(Event::Adapter(g.describe()));
                self.gpu = Some(g);
            }
            Err(e) => self.send(Event::Failed { activity: Activity::OpeningGpu, message: format!("{e:#}") }),
        }
        while let Ok(cmd) = self.commands.recv() {
            let (activity, result) = match cmd {
                Command::Shutdown => return,
                Command::LoadModel { dir, precision } => (Activity::LoadingModel, self.load_model(&dir, precision).map(|_| MidRun::Nothing)),
                Command::Generate(req) => (Activity::Generating, self.generate(&req)),
                Command::Compare(req) => (Activity::Comparing, self.compare(&req)),
                Command::ScanData(dir) => (Activity::ScanningData, self.scan_data(&dir).map(|_| MidRun::Nothing)),
                Command::StartTraining(req) => (Activity::Training, self.train(&req)),
                Command::SimulateDeviceLoss => {
                    if let Some(g) = &self.gpu {
                        g.destroy();
                    }
                    continue;
                }
                // Run controls with no run going: nothing to do.
                Command::Cancel | Command::Pause | Command::Resume | Command::Stop | Command::SampleNow | Command::CheckpointNow => {
                    continue;
                }
            };
            match result {
                Ok(MidRun::Shutdown) => return,
                Ok(_) => {}
                Err(e) => {
                    let mut message = format!("{e:#}");
                    if let Some(Err(lost)) = self.gpu.as_ref().map(|g| g.check()) {
                        // Everything on the old device is gone: drop it, reopen
                        // at the next command and reload the model then. The
                        // error it surfaced as (a failed binding, a failed
                        // wait) says less than the loss itself.
                        self.sampler = None;
                        self.model = None;
                        self.gpu = None;
                        message = format!(
                            "{lost} while {}; Petal reopens the GPU and reloads the model for the next command (checkpoints already written are on disk)",
                            activity.describe()
                        );
                    }
                    self.send(Event::Failed { activity, message });
                }
            }
        }
    }

    /// The open GPU; after a lost device, a newly opened one (with the
    /// model that was loaded loaded again).
    fn gpu(&mut self) -> Result<Arc<Gpu>> {
        if let Some(g) = &self.gpu {
            return Ok(g.clone());
        }
        let g = Gpu::new(&self.options)
            .context("no GPU could be opened; restart Petal once a Vulkan, Metal or DX12 driver is installed")?;
        self.send(Event::Adapter(g.describe()));
        self.gpu = Some(g.clone());
        if self.model.is_none()
            && let Some((dir, precision)) = self.last_model.clone()
        {
            self.load_model(&dir, precision)?;
        }
        Ok(g)
    }

    fn load_model(&mut self, dir: &Path, precision: Option<Precision>) -> Result<()> {
        let gpu = self.gpu()?;
        // The old model's sampler goes first (it holds the activations); the
        // old model stays open until the new one has loaded, so a folder
        // that fails to load leaves the window's model as it was.
        self.sampler = None;
        let m = crate::model::load_unet(gpu.clone(), dir, None, precision)?;
        let (height, width) = m.unet.config.sample_hw();
        let name = std::fs::canonicalize(dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        let info = ModelInfo {
            name,
            dir: dir.to_path_buf(),
            parameters: m.unet.graph.num_parameters(),
            precision: m.precision,
            stored: m.stored,
            weights_file: m.weights_file.clone(),
            file_bytes: m.file_bytes,
            gpu_bytes: m.gpu_bytes,
            precision_note: m.precision.describe(&gpu),
            channels: m.unet.config.in_channels,
            height,
            width,
            num_train_timesteps: m.scheduler.num_train_timesteps,
        };
        self.model = Some(Loaded { unet: m.unet, scheduler: m.scheduler, dir: dir.to_path_buf() });
        self.last_model = Some((dir.to_path_buf(), precision));
        self.send(Event::ModelLoaded(info));
        Ok(())
    }

    /// Checks a generation request against the open model.
    fn check_request<'m>(model: Option<&'m Loaded>, req: &GenerateRequest) -> Result<&'m Loaded> {
        let Some(model) = model else { bail!("no model is loaded: open a model folder first") };
        if req.count == 0 || req.count > 64 {
            bail!("images: {} is outside 1..=64", req.count);
        }
        let train_steps = model.scheduler.num_train_timesteps;
        if req.steps == 0 || req.steps > train_steps {
            bail!("steps: {} is outside 1..={train_steps} (the model's num_train_timesteps)", req.steps);
        }
        Ok(model)
    }

    /// The open model's folder at FP32, FP16 and INT8 in turn, each sampling
    /// `req` from the same noise (the noise streams are per image, so every
    /// run sees the same numbers). Only the last step is read back, so the
    /// ms per step are the plain sampling speed. The open model stays loaded.
    fn compare(&mut self, req: &GenerateRequest) -> Result<MidRun> {
        let gpu = self.gpu()?;
        let dir = Self::check_request(self.model.as_ref(), req)?.dir.clone();
        // The cached sampler holds activations the comparison's three need.
        self.sampler = None;
        let precisions = Precision::ALL.to_vec();
        self.send(Event::CompareStarted { request: req.clone(), precisions: precisions.clone() });
        let mut reference: Option<Vec<crate::export::Image8>> = None;
        for p in precisions {
            let m = crate::model::load_unet(gpu.clone(), &dir, None, Some(p)).with_context(|| format!("loading the {p} weights"))?;
            let cfg = &m.unet.config;
            let (c, (h, w)) = (cfg.out_channels as usize, cfg.sample_hw());
            let (h, w) = (h as usize, w as usize);
            let mut sampler = Sampler::with_kind(&m.unet, &m.scheduler, req.scheduler.kind(), req.count, req.steps)
                .with_context(|| format!("preparing {} images of {}x{} at {p}", req.count, h, w))?;
            let mut noise = NoiseStreams::new(req.seed, 0, req.count as usize, cfg.in_channels as usize * h * w);
            let x_t = noise.next_batch();
            let mut outcome = MidRun::Nothing;
            let mut step_times = Vec::new();
            let mut last = Instant::now();
            let out = sampler.run(&gpu, &x_t, false, |_, _| noise.next_batch(), |info, _| {
                step_times.push(last.elapsed().as_secs_f64() * 1e3);
                last = Instant::now();
                self.send(Event::CompareStep { precision: p, step: info.index + 1, num_steps: info.num_steps });
                outcome = self.poll_mid_run("comparing", |_| false);
                match outcome {
                    MidRun::Nothing => Flow::Continue,
                    _ => Flow::Cancel,
                }
            })?;
            let Some(x) = out else {
                self.send(Event::CompareDone { cancelled: true });
                return Ok(outcome);
            };
            // The first step builds pipelines on a cold start; leave it out when there are more.
            let timed = if step_times.len() > 1 { &step_times[1..] } else { &step_times[..] };
            let millis_per_step = timed.iter().sum::<f64>() / timed.len().max(1) as f64;
            let images = crate::export::Image8::from_batch(&x, req.count as usize, c, h, w);
            let mean_abs_diff = reference.as_ref().filter(|_| p != Precision::Fp32).map(|r| crate::export::mean_abs_diff(r, &images));
            if p == Precision::Fp32 {
                reference = Some(images.clone());
            }
            self.send(Event::CompareResult(CompareEntry {
                precision: p,
                images,
                millis_per_step,
                gpu_bytes: m.gpu_bytes,
                file_bytes: m.precision_file_bytes,
                converted: m.stored != p,
                mean_abs_diff,
            }));
        }
        self.send(Event::CompareDone { cancelled: false });
        Ok(MidRun::Nothing)
    }

    /// Looks at the commands that came in during a run. Run controls are
    /// answered by `on_control`; anything else is refused with the reason.
    fn poll_mid_run(&self, busy: &str, mut on_control: impl FnMut(&Command) -> bool) -> MidRun {
        while let Ok(c) = self.commands.try_recv() {
            match c {
                Command::Shutdown => return MidRun::Shutdown,
                Command::Cancel if busy != "training" => return MidRun::Cancel,
                c if on_control(&c) => {}
                Command::Cancel | Command::Pause | Command::Resume | Command::Stop | Command::SampleNow | Command::CheckpointNow => {}
                other => self.send(Event::Refused(format!(
                    "{}: wait until {busy} ends ({})",
                    command_name(&other),
                    if busy == "training" { "Pause keeps the model in memory; Stop writes a checkpoint" } else { "Cancel stops it" }
                ))),
            }
        }
        MidRun::Nothing
    }

    fn generate(&mut self, req: &GenerateRequest) -> Result<MidRun> {
        let gpu = self.gpu()?;
        let model = Self::check_request(self.model.as_ref(), req)?;
        let cfg = &model.unet.config;
        let (c, (h, w)) = (cfg.out_channels as usize, cfg.sample_hw());
        let (h, w) = (h as usize, w as usize);
        let reuse = self.sampler.as_ref().is_some_and(|s| s.batch == req.count && s.steps == req.steps && s.scheduler == req.scheduler);
        if !reuse {
            self.sampler = None; // free the old buffers first
            let sampler = Sampler::with_kind(&model.unet, &model.scheduler, req.scheduler.kind(), req.count, req.steps)
                .with_context(|| format!("preparing {} images of {}x{}", req.count, h, w))?;
            self.sampler = Some(CachedSampler { batch: req.count, steps: req.steps, scheduler: req.scheduler, sampler });
        }
        self.send(Event::GenerationStarted(req.clone()));
        let per_image = cfg.in_channels as usize * h * w;
        let mut noise = NoiseStreams::new(req.seed, 0, req.count as usize, per_image);
        let x_t = noise.next_batch();
        let started = Instant::now();
        let mut last = Instant::now();
        let mut reached = 0;
        let mut outcome = MidRun::Nothing;
        let mut sampler = self.sampler.take().expect("sampler prepared above");
        let batch = req.count as usize;
        let result = sampler.sampler.run(&gpu, &x_t, true, |_, _| noise.next_batch(), |info, frame| {
            let f = frame.expect("frames asked for");
            let millis = last.elapsed().as_secs_f64() * 1e3;
            last = Instant::now();
            reached = info.index + 1;
            self.send(Event::Step(StepFrame {
                index: info.index,
                num_steps: info.num_steps,
                timestep: info.timestep,
                x: Image8::from_batch(&f.x, batch, c, h, w),
                pred_x0: Image8::from_batch(&f.pred_x0, batch, c, h, w),
                millis,
            }));
            outcome = self.poll_mid_run("generating", |_| false);
            match outcome {
                MidRun::Nothing => Flow::Continue,
                _ => Flow::Cancel,
            }
        });
        self.sampler = Some(sampler);
        let done = result?;
        let interrupted_at = if done.is_none() { Some(reached) } else { None };
        self.send(Event::GenerationDone { interrupted_at, seconds: started.elapsed().as_secs_f64() });
        Ok(outcome)
    }

    fn scan_data(&mut self, dir: &Path) -> Result<()> {
        // The count the run will see: images decoded at the size it trains on.
        let (h, w) = self.model.as_ref().map_or((32, 32), |m| m.unet.config.sample_hw());
        let data = crate::train::data::Dataset::load(dir, h, w)?;
        self.send(Event::DataScanned { dir: dir.to_path_buf(), images: data.len, skipped: data.skipped });
        Ok(())
    }

    fn train(&mut self, opts: &TrainOptions) -> Result<MidRun> {
        let gpu = self.gpu()?;
        // Generation's sampler would hold GPU memory the run may need.
        self.sampler = None;
        let mut outcome = MidRun::Nothing;
        // Kept across events: a pause lasts until Resume or Stop, also
        // through a "sample now" done while paused.
        let mut paused = false;
        let summary = crate::train::train(gpu, opts, |ev| {
            let mut control = TrainControl::CONTINUE;
            match ev {
                TrainEvent::Started(s) => self.send(Event::TrainStarted(s)),
                TrainEvent::Warning(w) => self.send(Event::Warning(w)),
                TrainEvent::Step(s) => self.send(Event::TrainStep(s)),
                TrainEvent::Checkpoint { step, path } => self.send(Event::Checkpoint { step, path }),
                TrainEvent::Samples { step, images, batch, channels, height, width, .. } => {
                    let images = Image8::from_batch(&images, batch as usize, channels as usize, height as usize, width as usize);
                    self.send(Event::TrainPreview { step, images });
                }
            }
            loop {
                let mid = self.poll_mid_run("training", |c| {
                    match c {
                        Command::Pause if !paused => {
                            paused = true;
                            self.send(Event::TrainPaused(true));
                        }
                        Command::Resume if paused => {
                            paused = false;
                            self.send(Event::TrainPaused(false));
                        }
                        Command::Stop => {
                            control.stop = true;
                            paused = false;
                        }
                        Command::SampleNow => control.sample_now = true,
                        Command::CheckpointNow => control.checkpoint_now = true,
                        _ => return false,
                    }
                    true
                });
                if let MidRun::Shutdown = mid {
                    outcome = MidRun::Shutdown;
                    control.stop = true;
                    paused = false;
                }
                if !paused {
                    break;
                }
                // Paused: sleep until the next command rather than spin.
                match self.commands.recv() {
                    Ok(Command::Resume) => {
                        paused = false;
                        self.send(Event::TrainPaused(false));
                        break;
                    }
                    Ok(Command::Stop) => {
                        control.stop = true;
                        self.send(Event::TrainPaused(false));
                        break;
                    }
                    Ok(Command::Shutdown) | Err(_) => {
                        outcome = MidRun::Shutdown;
                        control.stop = true;
                        break;
                    }
                    Ok(Command::SampleNow) => control.sample_now = true,
                    Ok(Command::CheckpointNow) => control.checkpoint_now = true,
                    Ok(Command::Pause | Command::Cancel) => {}
                    Ok(other) => self.send(Event::Refused(format!(
                        "{}: wait until training ends (it is paused; Resume or Stop)",
                        command_name(&other)
                    ))),
                }
                if control.sample_now || control.checkpoint_now {
                    // Do what was asked now; the next event comes back to the pause.
                    break;
                }
            }
            control
        })?;
        self.send(Event::TrainDone { steps_done: summary.steps_done, last_checkpoint: summary.last_checkpoint, stopped: summary.cancelled });
        Ok(outcome)
    }
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::LoadModel { .. } => "opening a model",
        Command::Generate(_) => "generating",
        Command::Compare(_) => "comparing precisions",
        Command::Cancel => "cancel",
        Command::ScanData(_) => "scanning a data folder",
        Command::StartTraining(_) => "starting training",
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::Stop => "stop",
        Command::SampleNow => "sample now",
        Command::CheckpointNow => "checkpoint now",
        Command::Shutdown => "shutdown",
        Command::SimulateDeviceLoss => "simulate a device loss",
    }
}
