//! `petal`: the command line. Without a subcommand it opens the window;
//! `sample` and `parity` are headless.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use petal::diffusion::{Flow, Sampler};
use petal::gpu::{Gpu, GpuOptions, KernelFamily};
use petal::image_io::{self, GridOptions};
use petal::model::UNet;
use petal::model::weights::{read_safetensors, safetensors_bytes, StoreDtype};
use petal::rng::Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "petal", version, about = "Watch and train a DDPM flower model on your own GPU")]
struct Cli {
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone)]
struct GpuArgs {
    /// Use the GPU adapter whose name contains this text.
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Kernel family: auto (by adapter kind), cpu (software renderers) or gpu.
    #[arg(long, global = true, default_value = "auto")]
    kernels: String,
}

#[derive(Subcommand)]
enum Command {
    /// Generate images from a diffusers model folder (headless).
    Sample(SampleArgs),
    /// Check Petal against diffusers' outputs.
    #[command(subcommand)]
    Parity(ParityCommand),
}

#[derive(Args)]
struct SampleArgs {
    /// A diffusers model folder (pipeline layout with unet/ and scheduler/, or a flat UNet folder).
    #[arg(long)]
    model: PathBuf,
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
    /// Upscale each tile by this integer factor.
    #[arg(long, default_value_t = 1)]
    scale: u32,
    /// Pixels between tiles.
    #[arg(long, default_value_t = 0)]
    gap: u32,
    /// Weights variant, e.g. fp16 for diffusion_pytorch_model.fp16.safetensors.
    #[arg(long)]
    variant: Option<String>,
}

#[derive(Subcommand)]
enum ParityCommand {
    /// Read `sample` and `timesteps` from INPUTS, write the UNet's `output` to OUT.
    Forward(ParityArgs),
    /// Run the scheduler loop with the noises in INPUTS (ddpm50.safetensors
    /// format), write `eps.i`, `x.i` and `image` to OUT.
    Sample(ParityArgs),
}

#[derive(Args)]
struct ParityArgs {
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    inputs: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    variant: Option<String>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("petal: error: {e:#}");
        std::process::exit(1);
    }
}

fn open_gpu(args: &GpuArgs) -> Result<Arc<Gpu>> {
    let family = match args.kernels.as_str() {
        "auto" => None,
        "cpu" => Some(KernelFamily::Cpu),
        "gpu" => Some(KernelFamily::Gpu),
        other => bail!("--kernels {other}: expected auto, cpu or gpu"),
    };
    Gpu::new(&GpuOptions { adapter: args.adapter.clone(), family })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => {
            bail!("the window is not built yet; try `petal sample --help`")
        }
        Some(Command::Sample(a)) => sample(&cli.gpu, a),
        Some(Command::Parity(ParityCommand::Forward(a))) => parity_forward(&cli.gpu, a),
        Some(Command::Parity(ParityCommand::Sample(a))) => parity_sample(&cli.gpu, a),
    }
}

fn sample(gpu_args: &GpuArgs, a: SampleArgs) -> Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let gpu = open_gpu(gpu_args)?;
    eprintln!("adapter: {}", gpu.describe());
    let (unet, sched) = UNet::load(gpu.clone(), &a.model, a.variant.as_deref())?;
    let (h, w) = unet.config.sample_hw();
    let c = unet.config.in_channels as usize;
    let mut sampler = Sampler::new(&unet, &sched, a.batch, a.steps)?;
    let n = (a.batch * unet.config.in_channels * h * w) as usize;
    let mut rng = Rng::new(a.seed);
    let x_t = rng.normal_vec(n);
    let bar = indicatif::ProgressBar::new(a.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} steps, t={msg} [{elapsed_precise}<{eta_precise}]")
            .expect("template"),
    );
    let grid_opts = GridOptions { scale: a.scale, gap: a.gap };
    let (b, hh, ww) = (a.batch as usize, h as usize, w as usize);
    let mut frame_err = None;
    let started = std::time::Instant::now();
    let out = sampler.run(&unet, &x_t, a.frames.is_some(), |_, _| rng.normal_vec(n), |info, frame| {
        bar.set_message(info.timestep.to_string());
        bar.inc(1);
        if let (Some(dir), Some(f)) = (&a.frames, frame) {
            let write = |name: String, data: &[f32]| {
                image_io::save_png(&image_io::grid(data, b, c, hh, ww, grid_opts), &dir.join(name))
            };
            let r = write(format!("step{:04}_x.png", info.index), &f.x)
                .and_then(|_| write(format!("step{:04}_x0.png", info.index), &f.pred_x0));
            if let Err(e) = r {
                frame_err = Some(e);
                return Flow::Cancel;
            }
        }
        Flow::Continue
    })?;
    bar.finish();
    if let Some(e) = frame_err {
        return Err(e);
    }
    let x0 = out.expect("not cancelled");
    image_io::save_png(&image_io::grid(&x0, b, c, hh, ww, grid_opts), &a.out)?;
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
fn take(tensors: &mut std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>, file: &Path, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    tensors.remove(name).with_context(|| format!("{}: no tensor {name}", file.display()))
}

fn write_tensors(path: &Path, tensors: &[(String, Vec<usize>, &[f32])]) -> Result<()> {
    let bytes = safetensors_bytes(tensors, StoreDtype::F32)?;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn parity_forward(gpu_args: &GpuArgs, a: ParityArgs) -> Result<()> {
    let gpu = open_gpu(gpu_args)?;
    let (unet, _) = UNet::load(gpu.clone(), &a.model, a.variant.as_deref())?;
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

fn parity_sample(gpu_args: &GpuArgs, a: ParityArgs) -> Result<()> {
    let gpu = open_gpu(gpu_args)?;
    let (unet, sched) = UNet::load(gpu.clone(), &a.model, a.variant.as_deref())?;
    let mut t = read_safetensors(&a.inputs)?;
    let (shape, x_t) = take(&mut t, &a.inputs, "x_T")?;
    let (_, timesteps) = take(&mut t, &a.inputs, "timesteps")?;
    let batch = shape[0] as u32;
    let mut sampler = Sampler::new(&unet, &sched, batch, timesteps.len() as u32)?;
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
        &unet,
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
        out.push((format!("eps.{i}"), shape.clone(), e));
        out.push((format!("x.{i}"), shape.clone(), x));
    }
    out.push(("image".into(), shape.clone(), &image));
    write_tensors(&a.out, &out)
}
