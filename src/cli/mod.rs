//! The headless subcommands: `sample`, `train`, `parity`, `bench`, `eval`. None of
//! them touches windowing; `src/main.rs` opens the window when no subcommand
//! is given.

mod bench;
mod eval;
mod quantize;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use petal::diffusion::{Flow, NoiseStreams, Sampler, SchedulerKind};
use petal::gpu::{Gpu, GpuOptions, KernelFamily};
use petal::image_io::{self, GridOptions};
use petal::model::UNet;
use petal::model::weights::{StoreDtype, read_safetensors, safetensors_bytes};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `petal [--model DIR]` opens the window; `petal <command>` runs headless.
#[derive(Parser)]
#[command(name = "petal", version, about = "Watch and train a DDPM flower model on your own GPU")]
pub struct Cli {
    #[command(flatten)]
    pub gpu: GpuArgs,
    /// Open the window on this diffusers model folder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Clone)]
pub struct GpuArgs {
    /// Use the GPU adapter whose name contains this text.
    #[arg(long, global = true)]
    pub adapter: Option<String>,
    /// Kernel family: auto (by adapter kind), cpu (software renderers) or gpu.
    #[arg(long, global = true, default_value = "auto")]
    pub kernels: String,
}

#[derive(Subcommand)]
pub enum Command {
    /// Generate images from a diffusers model folder (headless).
    Sample(SampleArgs),
    /// Train or fine-tune a UNet on a folder of images (headless).
    Train(TrainArgs),
    /// Check Petal against diffusers' outputs.
    #[command(subcommand)]
    Parity(ParityCommand),
    /// Time the forward pass, sampling and training on this adapter (random weights).
    Bench(BenchArgs),
    /// Measure sample quality against real images: SWD and nearest real images (CPU only).
    Eval(eval::EvalArgs),
    /// Write a model folder with its weights in FP16 or INT8 (or FP32).
    Quantize(quantize::QuantizeArgs),
}

#[derive(Args)]
pub struct BenchArgs {
    /// Architecture: tiny, small, cifar10-32, or a config.json path.
    #[arg(long, default_value = "cifar10-32")]
    config: String,
    /// Batch sizes for one forward pass (comma-separated; empty for none).
    #[arg(long, default_value = "1,16")]
    forward_batches: String,
    /// Batch sizes for a whole sampling loop (comma-separated; empty for none).
    #[arg(long, default_value = "1,16")]
    sample_batches: String,
    /// Batch sizes for one training step (comma-separated; empty for none).
    #[arg(long, default_value = "")]
    train_batches: String,
    /// Denoising steps of each timed sampling loop.
    #[arg(long, default_value_t = 50)]
    steps: u32,
    /// Timed runs of each forward pass and training step (after a warm-up);
    /// 0 reports the training plan's memory without timing it.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Timed runs of each sampling loop (after a 1-step warm-up).
    #[arg(long, default_value_t = 2)]
    sample_repeats: usize,
    /// Also time each op kind of the forward pass and training step.
    #[arg(long)]
    profile: bool,
    /// Write the figures as JSON here (they are printed either way).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Weights precision for the forward and sampling figures: fp32, fp16 or int8.
    #[arg(long, default_value = "fp32")]
    precision: String,
}

#[derive(Args)]
pub struct TrainArgs {
    /// A folder of training images (searched recursively: JPEG, PNG, WebP).
    #[arg(long)]
    data: PathBuf,
    /// The run folder: checkpoints, samples and loss.csv go here.
    #[arg(long)]
    out: PathBuf,
    /// Fine-tune this diffusers UNet2DModel folder.
    #[arg(long, conflicts_with_all = ["config", "resume"])]
    init: Option<PathBuf>,
    /// Start from fresh weights: tiny, small, cifar10-32, or a config.json path.
    #[arg(long, conflicts_with = "resume")]
    config: Option<String>,
    /// Continue a checkpoint folder of an earlier run exactly. Its batch,
    /// seed, learning rate, warm-up, AdamW, clipping and EMA settings are
    /// fixed by the checkpoint (those flags are refused with --resume);
    /// --max-steps extends or shortens the run (the cosine schedule is
    /// recomputed to end there); sampling and checkpoint flags apply.
    #[arg(long)]
    resume: Option<PathBuf>,
    #[arg(long, conflicts_with = "resume", default_value_t = 100)]
    epochs: u64,
    /// Stop after this many optimizer steps (the cosine schedule ends there).
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long, conflicts_with = "resume", default_value_t = 64)]
    batch: u32,
    #[arg(long, conflicts_with = "resume", default_value_t = 1e-4)]
    lr: f64,
    /// Linear warm-up steps of the learning rate.
    #[arg(long, conflicts_with = "resume", default_value_t = 500)]
    warmup: u64,
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// Keep only the newest N checkpoints.
    #[arg(long)]
    keep_last: Option<usize>,
    #[arg(long, conflicts_with = "resume", default_value_t = 0)]
    seed: u64,
    /// Write a sample grid (EMA weights, fixed seed) every N steps.
    #[arg(long, default_value_t = 1000)]
    sample_every: u64,
    #[arg(long, default_value_t = 16)]
    sample_batch: u32,
    #[arg(long, default_value_t = 50)]
    sample_steps: u32,
    #[arg(long, conflicts_with = "resume", default_value_t = 0.95)]
    adam_beta1: f64,
    #[arg(long, conflicts_with = "resume", default_value_t = 0.999)]
    adam_beta2: f64,
    #[arg(long, conflicts_with = "resume", default_value_t = 1e-6)]
    adam_weight_decay: f64,
    #[arg(long, conflicts_with = "resume", default_value_t = 1e-8)]
    adam_epsilon: f64,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, conflicts_with = "resume", default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Do not keep an exponential moving average of the weights.
    #[arg(long, conflicts_with = "resume")]
    no_ema: bool,
    #[arg(long, conflicts_with = "resume")]
    variant: Option<String>,
}

#[derive(Args)]
pub struct SampleArgs {
    /// A diffusers model folder (pipeline layout with unet/ and scheduler/,
    /// or a flat UNet folder). Default: the bundled flower model (assets/flowers).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Denoising steps.
    #[arg(long, default_value_t = 50)]
    steps: u32,
    /// Images to make at once.
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Seed of Petal's random generator: the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the PNG grid of the batch.
    #[arg(long)]
    out: PathBuf,
    /// Also write every step (x_t and predicted x_0) as PNGs into this folder.
    #[arg(long)]
    frames: Option<PathBuf>,
    /// Also write a strip of the denoising as one PNG: for each image of the
    /// batch a row of x_t and, below it, a row of the predicted x_0, after
    /// every --strip-every steps and at the last step (upscaled by --scale).
    #[arg(long)]
    strip: Option<PathBuf>,
    /// Steps between the strip's columns.
    #[arg(long, default_value_t = 5)]
    strip_every: u32,
    /// Upscale each tile by this integer factor.
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// Pixels between tiles.
    #[arg(long, default_value_t = 0)]
    gap: u32,
    /// Weights variant, e.g. fp16 for diffusion_pytorch_model.fp16.safetensors.
    #[arg(long)]
    variant: Option<String>,
    /// Weights on the GPU: fp32, fp16 or int8, converted on load (default:
    /// as the weights file stores them).
    #[arg(long)]
    precision: Option<String>,
    #[command(flatten)]
    scheduler: SchedulerArgs,
}

/// `--scheduler ddpm|ddim` and `--eta`, for `sample` and `parity sample`.
#[derive(Args)]
pub struct SchedulerArgs {
    /// ddpm (DDPMPipeline) or ddim (DDIMPipeline: DDIMScheduler from the model's scheduler config).
    #[arg(long, default_value = "ddpm")]
    scheduler: String,
    /// DDIM's noise weight, 0 (deterministic) to 1.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    eta: f32,
}

impl SchedulerArgs {
    pub fn kind(&self) -> Result<SchedulerKind> {
        SchedulerKind::parse(&self.scheduler, self.eta)
    }
}

/// `parity sample`: the fixture and model, and the scheduler the fixture used.
#[derive(Args)]
pub struct ParitySampleArgs {
    #[command(flatten)]
    files: ParityArgs,
    #[command(flatten)]
    scheduler: SchedulerArgs,
}

#[derive(Subcommand)]
pub enum ParityCommand {
    /// Read `sample` and `timesteps` from INPUTS, write the UNet's `output` to OUT.
    Forward(ParityArgs),
    /// Run the scheduler loop with the noises in INPUTS (ddpm50.safetensors
    /// format; `--scheduler ddim --eta E` for the ddim fixtures), write
    /// `eps.i`, `x.i` and `image` to OUT.
    Sample(ParitySampleArgs),
    /// One training step on `x0`, `noise`, `timesteps` from INPUTS
    /// (train.safetensors format): write `loss`, `grad.<param>` and
    /// `after_adamw.<param>` (AdamW lr 1e-4, betas (0.9, 0.999), eps 1e-8,
    /// weight decay 1e-2, no clipping, no warm-up).
    TrainStep(ParityArgs),
}

#[derive(Args)]
pub struct ParityArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    inputs: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    variant: Option<String>,
}

impl GpuArgs {
    /// The options these flags ask for.
    pub fn options(&self) -> Result<GpuOptions> {
        let family = match self.kernels.as_str() {
            "auto" => None,
            "cpu" => Some(KernelFamily::Cpu),
            "gpu" => Some(KernelFamily::Gpu),
            other => bail!("--kernels {other}: expected auto, cpu or gpu"),
        };
        Ok(GpuOptions { adapter: self.adapter.clone(), family })
    }
}

fn open_gpu(args: &GpuArgs) -> Result<Arc<Gpu>> {
    Gpu::new(&args.options()?)
}

/// Runs one headless subcommand.
pub fn run(gpu: &GpuArgs, command: Command) -> Result<()> {
    match command {
        Command::Sample(a) => sample(gpu, a),
        Command::Parity(ParityCommand::Forward(a)) => parity_forward(gpu, a),
        Command::Parity(ParityCommand::Sample(a)) => parity_sample(gpu, a),
        Command::Parity(ParityCommand::TrainStep(a)) => parity_train_step(gpu, a),
        Command::Train(a) => train(gpu, a),
        Command::Bench(a) => bench_cmd(gpu, a),
        Command::Eval(a) => eval::run(a),
        Command::Quantize(a) => quantize::run(gpu, a),
    }
}

fn sample(gpu_args: &GpuArgs, a: SampleArgs) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let kind = a.scheduler.kind()?;
    let model = match &a.model {
        Some(m) => m.clone(),
        None => petal::model::folder::bundled()
            .context("no --model given, and this build has no bundled flower model (assets/flowers next to the executable or in the source tree)")?,
    };
    let gpu = open_gpu(gpu_args)?;
    eprintln!("adapter: {}", gpu.describe());
    let (unet, sched) = quantize::load_for_sampling(&gpu, &model, a.variant.as_deref(), a.precision.as_deref())?;
    let (h, w) = unet.config.sample_hw();
    let c = unet.config.in_channels as usize;
    image_io::check_channels(unet.config.in_channels).with_context(|| format!("{}", model.display()))?;
    petal::diffusion::DdpmScheduler::new(&sched)?.set_timesteps(a.steps).with_context(|| format!("--steps {}", a.steps))?;
    // A batch larger than one pass can hold runs as several passes (chunks);
    // image i draws from its own noise stream, so the images are the same.
    let chunk = a.batch.min(petal::model::ForwardPlan::max_batch(&unet.graph, &gpu.limits));
    if chunk == 0 {
        petal::model::plan::check_batch(&unet.graph, &gpu.limits, 1, |_| 0)?;
        bail!("one image of this model does not fit this adapter");
    }
    let chunks = a.batch.div_ceil(chunk);
    if chunks > 1 {
        if a.frames.is_some() || a.strip.is_some() {
            bail!("--frames and --strip need the whole batch in one pass: this adapter holds at most {chunk} images at once; use --batch {chunk} or less");
        }
        eprintln!(
            "--batch {} does not fit this adapter in one pass: sampling {chunks} chunks of at most {chunk} images (the same images as one pass)",
            a.batch
        );
    }
    let per_image = c * (h * w) as usize;
    let bar = indicatif::ProgressBar::new(a.steps as u64 * chunks as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps, t={msg} [{elapsed_precise}<{eta_precise}]")
            .expect("template"),
    );
    let grid_opts = GridOptions { scale: a.scale, gap: a.gap };
    let (hh, ww) = (h as usize, w as usize);
    let mut frame_err = None;
    // The strip's columns: (x_t, predicted x_0) of every image at each chosen step.
    let mut strip_columns: Vec<(Vec<petal::export::Image8>, Vec<petal::export::Image8>)> = Vec::new();
    let started = std::time::Instant::now();
    let mut images = Vec::with_capacity(a.batch as usize * per_image);
    let mut sampler: Option<Sampler> = None;
    for k in 0..chunks {
        let this = chunk.min(a.batch - k * chunk);
        if sampler.as_ref().is_none_or(|s| s.batch() != this) {
            sampler = Some(Sampler::with_kind(&unet, &sched, kind, this, a.steps)?);
        }
        let sampler = sampler.as_mut().expect("made above");
        let b = this as usize;
        // Each image has its own noise stream: image i of seed s is the same in any batch.
        let mut streams = NoiseStreams::new(a.seed, (k * chunk) as u64, b, per_image);
        let x_t = streams.next_batch();
        let want_frames = a.frames.is_some() || a.strip.is_some();
        let out = sampler.run(&gpu, &x_t, want_frames, |_, _| streams.next_batch(), |info, frame| {
            bar.set_message(info.timestep.to_string());
            bar.inc(1);
            if let (Some(_), Some(f)) = (&a.strip, &frame)
                && ((info.index + 1) % a.strip_every.max(1) as usize == 0 || info.index + 1 == info.num_steps)
            {
                strip_columns.push((
                    petal::export::Image8::from_batch(&f.x, b, c, hh, ww),
                    petal::export::Image8::from_batch(&f.pred_x0, b, c, hh, ww),
                ));
            }
            if let (Some(dir), Some(f)) = (&a.frames, frame) {
                let write = |name: String, data: &[f32]| image_io::save_grid(data, b, c, hh, ww, grid_opts, &dir.join(name));
                let r = write(format!("step{:04}_x.png", info.index), &f.x)
                    .and_then(|_| write(format!("step{:04}_x0.png", info.index), &f.pred_x0));
                if let Err(e) = r {
                    frame_err = Some(e);
                    return Flow::Cancel;
                }
            }
            Flow::Continue
        })?;
        if let Some(e) = frame_err.take() {
            return Err(e);
        }
        images.extend(out.expect("not cancelled"));
    }
    bar.finish();
    // NaN or infinity would be written as black pixels: say so instead.
    if let Some(i) = images.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: image {} of the batch came out non-finite (NaN or infinity): the model's values overflow f32; no image written",
            model.display(),
            i / per_image
        );
    }
    image_io::save_grid(&images, a.batch as usize, c, hh, ww, grid_opts, &a.out)?;
    if let Some(path) = &a.strip {
        // Row 2i: image i's x_t; row 2i + 1: its predicted x_0.
        let mut tiles = Vec::new();
        for i in 0..a.batch as usize {
            tiles.extend(strip_columns.iter().map(|(x, _)| x[i].upscale(a.scale.max(1))));
            tiles.extend(strip_columns.iter().map(|(_, x0)| x0[i].upscale(a.scale.max(1))));
        }
        let strip = petal::export::Image8::tiled(&tiles, strip_columns.len(), a.gap)?;
        petal::export::save_png(path, &strip, 1, None)?;
        eprintln!("wrote {} ({} steps shown)", path.display(), strip_columns.len());
    }
    eprintln!(
        "wrote {} ({} image{}, {} steps, {:.2} s)",
        a.out.display(),
        a.batch,
        if a.batch == 1 { "" } else { "s" },
        a.steps,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A tensor from a fixture file, with the file named in the error.
fn take(tensors: &mut petal::model::weights::Tensors, file: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    tensors.remove(name).with_context(|| format!("{}: no tensor {name}", file.display()))
}

fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
    let bytes = safetensors_bytes(tensors, StoreDtype::F32)?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// The adapter and precision a parity run measures, on stderr: FP16 or INT8
/// weights on the `gpu` kernel family run f16 activations where the adapter
/// has SHADER_F16 ([`petal::model::Precision::activations`]), which move
/// outputs by more than diffusers' 1e-3 fixture tolerance (README, *Parity*);
/// `PETAL_ACTIVATIONS=f32` checks the f32 path.
fn parity_says_what_runs(gpu: &Gpu, unet: &UNet) {
    eprintln!("adapter: {}", gpu.describe());
    eprintln!("weights: {}", unet.precision.describe(gpu));
}

fn parity_forward(gpu_args: &GpuArgs, a: ParityArgs) -> Result<()> {
    let gpu = open_gpu(gpu_args)?;
    let (unet, _) = UNet::load(gpu.clone(), &a.model, a.variant.as_deref())?;
    parity_says_what_runs(&gpu, &unet);
    let mut t = read_safetensors(&a.inputs)?;
    let (shape, sample) = take(&mut t, &a.inputs, "sample")?;
    let (_, timesteps) = take(&mut t, &a.inputs, "timesteps")?;
    let (h, w) = unet.config.sample_hw();
    let want = [timesteps.len(), unet.config.in_channels as usize, h as usize, w as usize];
    if shape != want {
        bail!("{}: sample has shape {shape:?}, the model takes {want:?}", a.inputs.display());
    }
    let plan = petal::model::ForwardPlan::new(&unet, timesteps.len() as u32)?;
    let out = plan.forward(&gpu, &sample, &timesteps)?;
    let oshape = vec![timesteps.len(), unet.config.out_channels as usize, h as usize, w as usize];
    write_tensors(&a.out, &[("output".into(), oshape, &out)])
}

fn parity_sample(gpu_args: &GpuArgs, args: ParitySampleArgs) -> Result<()> {
    let (a, kind) = (args.files, args.scheduler.kind()?);
    let gpu = open_gpu(gpu_args)?;
    let (unet, sched) = UNet::load(gpu.clone(), &a.model, a.variant.as_deref())?;
    parity_says_what_runs(&gpu, &unet);
    let mut t = read_safetensors(&a.inputs)?;
    let (shape, x_t) = take(&mut t, &a.inputs, "x_T")?;
    let (_, timesteps) = take(&mut t, &a.inputs, "timesteps")?;
    let (h, w) = unet.config.sample_hw();
    if shape.len() != 4 || shape[0] == 0 || shape[1..] != [unet.config.in_channels as usize, h as usize, w as usize] {
        bail!("{}: x_T has shape {shape:?}, the model takes (B, {}, {h}, {w})", a.inputs.display(), unet.config.in_channels);
    }
    // The model output: (B, 2C, H, W) for a learned variance.
    let eps_shape = vec![shape[0], unet.config.out_channels as usize, shape[2], shape[3]];
    let batch = shape[0] as u32;
    let mut sampler = Sampler::with_kind(&unet, &sched, kind, batch, timesteps.len() as u32)?;
    let ours: Vec<f32> = sampler.scheduler.timesteps.iter().map(|&v| v as f32).collect();
    if ours != timesteps {
        bail!("{}: timesteps {:?} differ from the scheduler's {:?}", a.inputs.display(), timesteps, ours);
    }
    let mut noises = Vec::new();
    for i in 0..timesteps.len() {
        noises.push(t.remove(&format!("noise.{i}")).map(|v| v.1));
    }
    let mut missing = None;
    let mut eps = Vec::new();
    let mut xs = Vec::new();
    let image = sampler.run(
        &gpu,
        &x_t,
        true,
        |i, _| match &noises[i] {
            Some(v) => v.clone(),
            None => {
                missing = Some(i);
                vec![0.0; x_t.len()]
            }
        },
        |_, frame| {
            let f = frame.expect("frames asked for");
            eps.push(f.model_output);
            xs.push(f.x);
            Flow::Continue
        },
    )?;
    if let Some(i) = missing {
        bail!("{}: no tensor noise.{i}", a.inputs.display());
    }
    let image: Vec<f32> = image.expect("not cancelled").iter().map(|&v| image_io::to_unit(v)).collect();
    let mut out: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for (i, (e, x)) in eps.iter().zip(&xs).enumerate() {
        out.push((format!("eps.{i}"), eps_shape.clone(), e));
        out.push((format!("x.{i}"), shape.clone(), x));
    }
    out.push(("image".into(), shape.clone(), &image));
    write_tensors(&a.out, &out)
}

fn parity_train_step(gpu_args: &GpuArgs, a: ParityArgs) -> Result<()> {
    use petal::kernels::optim::AdamW;
    use petal::train::{StepSettings, TrainPlan};
    let gpu = open_gpu(gpu_args)?;
    let m = petal::model::folder::load(&a.model, a.variant.as_deref())?;
    let (config, sched_cfg, weights) = (m.config, m.scheduler, m.weights);
    let graph = petal::model::unet::build_graph(&config);
    let mut t = read_safetensors(&a.inputs)?;
    let (shape, x0) = take(&mut t, &a.inputs, "x0")?;
    let (_, noise) = take(&mut t, &a.inputs, "noise")?;
    let (_, timesteps) = take(&mut t, &a.inputs, "timesteps")?;
    let batch = shape[0];
    if timesteps.len() != batch || noise.len() != x0.len() {
        bail!("{}: x0, noise and timesteps do not agree in batch size", a.inputs.display());
    }
    let scheduler = petal::diffusion::DdpmScheduler::new(&sched_cfg)?;
    let ts: Vec<u32> = timesteps.iter().map(|&v| v as u32).collect();
    let noisy = scheduler.add_noise(&x0, &noise, &ts);
    let plan = TrainPlan::new(gpu.clone(), &graph, &config, batch as u32, &weights, None)?;
    let settings = StepSettings {
        lr: 1e-4,
        step: 1,
        adamw: AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 },
        max_grad_norm: 0.0,
        ema_decay: 0.0,
    };
    let stats = plan.step(&noisy, &noise, &timesteps, &settings)?;
    let grads = plan.grads.download(&gpu)?;
    let after = plan.params.download(&gpu)?;
    let loss = [stats.loss];
    let mut out: Vec<(String, Vec<usize>, &[f32])> = vec![("loss".into(), vec![1], &loss[..])];
    for (p, (g, w)) in graph.params.iter().zip(grads.iter().zip(&after)) {
        out.push((format!("grad.{}", p.name), p.shape.clone(), g));
        out.push((format!("after_adamw.{}", p.name), p.shape.clone(), w));
    }
    write_tensors(&a.out, &out)
}

fn train(gpu_args: &GpuArgs, a: TrainArgs) -> Result<()> {
    use petal::kernels::optim::AdamW;
    use petal::train::{ModelSource, TrainControl, TrainEvent, TrainOptions};
    let source = match (&a.init, &a.config, &a.resume) {
        (Some(dir), _, _) => ModelSource::Init { dir: dir.clone(), variant: a.variant.clone() },
        (_, _, Some(dir)) => ModelSource::Resume(dir.clone()),
        (_, Some(name), _) => match ModelSource::builtin(name) {
            Ok(s) => s,
            Err(_) => ModelSource::Config(Box::new(petal::model::UNetConfig::from_file(Path::new(name)).with_context(|| {
                format!("--config {name}: not a built-in config (tiny, small, cifar10-32) nor a readable config.json")
            })?)),
        },
        (None, None, None) => bail!("say where the weights start: --init DIR, --config NAME or --resume CHECKPOINT"),
    };
    let gpu = open_gpu(gpu_args)?;
    eprintln!("adapter: {}", gpu.describe());
    let mut opts = TrainOptions::new(a.data.clone(), a.out.clone(), source);
    opts.epochs = a.epochs;
    opts.max_steps = a.max_steps;
    opts.batch = a.batch;
    opts.lr = a.lr;
    opts.warmup = a.warmup;
    opts.checkpoint_every = a.checkpoint_every;
    opts.keep_last = a.keep_last;
    opts.seed = a.seed;
    opts.adamw = AdamW { beta1: a.adam_beta1, beta2: a.adam_beta2, eps: a.adam_epsilon, weight_decay: a.adam_weight_decay };
    opts.max_grad_norm = a.max_grad_norm;
    if a.no_ema {
        opts.ema = None;
    }
    opts.sample_every = a.sample_every;
    opts.sample_batch = a.sample_batch;
    opts.sample_steps = a.sample_steps;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]").expect("template"),
    );
    // Steps/s counts only this process's steps (a resumed run starts past 0).
    let mut first_step = 0u64;
    // Without a terminal the bar is hidden: print a line now and then instead.
    let mut last_line = std::time::Instant::now();
    let summary = petal::train::train(gpu, &opts, |ev| {
        match ev {
            TrainEvent::Started(petal::train::RunStarted { images, skipped, total_steps, steps_per_epoch, resumed_from, parameters, gpu_bytes }) => {
                for (p, why) in &skipped {
                    say(&bar, format!("warning: skipped {}: {why}", p.display()));
                }
                say(&bar, format!(
                    "{images} images, {steps_per_epoch} steps per epoch, {total_steps} steps; {:.2}M parameters; {:.0} MiB on the GPU",
                    parameters as f64 / 1e6,
                    gpu_bytes as f64 / (1 << 20) as f64
                ));
                if let Some(s) = resumed_from {
                    say(&bar, format!("resuming from step {s}"));
                }
                bar.set_length(total_steps);
                first_step = resumed_from.unwrap_or(0);
                bar.set_position(first_step);
            }
            TrainEvent::Step(s) => {
                bar.set_position(s.step);
                let rate = s.step.saturating_sub(first_step) as f64 / s.seconds.max(1e-9);
                let msg = format!("epoch {} loss {:.4} lr {:.2e} {:.2} steps/s", s.epoch, s.loss, s.lr, rate);
                if bar.is_hidden() && (last_line.elapsed().as_secs() >= 30 || s.step == bar.length().unwrap_or(0)) {
                    eprintln!("step {}/{}: {msg}", s.step, bar.length().unwrap_or(0));
                    last_line = std::time::Instant::now();
                }
                bar.set_message(msg);
            }
            TrainEvent::Warning(w) => say(&bar, format!("warning: {w}")),
            TrainEvent::Checkpoint { path, .. } => say(&bar, format!("saved {}", path.display())),
            TrainEvent::Samples { path, .. } => say(&bar, format!("samples {}", path.display())),
        }
        TrainControl::CONTINUE
    })?;
    bar.finish();
    if let Some(p) = summary.last_checkpoint {
        eprintln!("done: {} steps; last checkpoint {}", summary.steps_done, p.display());
    }
    Ok(())
}

/// A line above the progress bar, or on stderr when the bar is hidden (no
/// terminal), so that logs keep it.
fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// "1,16" -> [1, 16]; "" -> [].
fn batches(list: &str) -> Result<Vec<u32>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<u32>() {
            Ok(b) if b > 0 => Ok(b),
            _ => bail!("{s:?} is not a batch size"),
        })
        .collect()
}

fn bench_cmd(gpu_args: &GpuArgs, a: BenchArgs) -> Result<()> {
    let config = match petal::model::UNetConfig::builtin(&a.config) {
        Some(c) => c,
        None => petal::model::UNetConfig::from_file(Path::new(&a.config))?,
    };
    let gpu = open_gpu(gpu_args)?;
    eprintln!("adapter: {}", gpu.describe());
    let opts = bench::BenchOptions {
        config,
        config_name: a.config.clone(),
        forward_batches: batches(&a.forward_batches)?,
        sample_batches: batches(&a.sample_batches)?,
        train_batches: batches(&a.train_batches)?,
        steps: a.steps,
        repeats: a.repeats,
        sample_repeats: a.sample_repeats,
        profile: a.profile,
        precision: petal::model::Precision::parse(&a.precision)?,
    };
    let figures = bench::run(gpu, &opts)?;
    let text = serde_json::to_string_pretty(&figures)?;
    println!("{text}");
    if let Some(p) = a.out {
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}
