//! `petal quantize`: writes a model folder converted to FP16 or INT8 (or back
//! to FP32), which `petal sample` and the window open like any other.

use anyhow::Result;
use clap::Args;
use petal::model::precision::{Precision, quantize_folder};
use std::path::PathBuf;

#[derive(Args)]
pub struct QuantizeArgs {
    /// The diffusers model folder to convert (either layout).
    #[arg(long)]
    model: PathBuf,
    /// fp16 (diffusion_pytorch_model.fp16.safetensors), int8
    /// (diffusion_pytorch_model.int8.safetensors: per-channel int8 weights
    /// plus f32 scales) or fp32.
    #[arg(long)]
    precision: String,
    /// The folder to write (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// Weights variant of the source folder, e.g. fp16.
    #[arg(long)]
    variant: Option<String>,
    /// Skip the check of the written model's UNet output against the
    /// source's at FP32 (it needs a GPU adapter, lavapipe will do).
    #[arg(long)]
    no_check: bool,
}

pub fn run(gpu_args: &super::GpuArgs, a: QuantizeArgs) -> Result<()> {
    let precision = Precision::parse(&a.precision)?;
    let r = quantize_folder(&a.model, a.variant.as_deref(), precision, &a.out)?;
    eprintln!(
        "wrote {} ({:.2} MB, {:.1}% of the source's {:.2} MB)",
        r.weights_file.display(),
        r.file_bytes as f64 / 1e6,
        100.0 * r.file_bytes as f64 / r.source_bytes.max(1) as f64,
        r.source_bytes as f64 / 1e6
    );
    if a.no_check {
        return Ok(());
    }
    // What the conversion cost: the written folder's output against the
    // source's at FP32, on the same random image at each timestep.
    let gpu = super::open_gpu(gpu_args)?;
    let fp32 = petal::model::load_unet(gpu.clone(), &a.model, a.variant.as_deref(), Some(Precision::Fp32))?;
    let out = petal::model::load_unet(gpu.clone(), &a.out, None, None)?;
    let ts = petal::model::precision::CHECK_TIMESTEPS;
    let errs = petal::model::precision::output_error(&gpu, &fp32.unet, &out.unet, &ts)?;
    let list: Vec<String> = ts.iter().zip(&errs).map(|(t, e)| format!("t={t}: {:.3}%", e * 100.0)).collect();
    let worst = errs.iter().copied().fold(0.0, f64::max);
    eprintln!("UNet output vs the source at fp32, relative L2: {} (worst {:.3}%)", list.join(", "), worst * 100.0);
    Ok(())
}

/// `petal sample`'s model: the folder at `--precision` (default: as stored),
/// with a line saying which weights path runs and what they take.
pub fn load_for_sampling(
    gpu: &std::sync::Arc<petal::gpu::Gpu>,
    dir: &std::path::Path,
    variant: Option<&str>,
    precision: Option<&str>,
) -> Result<(petal::model::UNet, petal::model::SchedulerConfig)> {
    let precision = precision.map(Precision::parse).transpose()?;
    let m = petal::model::load_unet(gpu.clone(), dir, variant, precision)?;
    eprintln!(
        "weights: {} ({:.2} MB file, {:.2} MB on the GPU); {}",
        m.weights_file.display(),
        m.file_bytes as f64 / 1e6,
        m.gpu_bytes as f64 / 1e6,
        m.precision.describe(gpu)
    );
    Ok((m.unet, m.scheduler))
}
