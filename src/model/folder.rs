//! Where the parts of a diffusers model folder are: the pipeline layout that
//! `save_pretrained` writes (model_index.json, unet/, scheduler/) or the flat
//! layout of hub UNet checkpoints (config.json and weights side by side).

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct ModelFolder {
    pub unet_config: PathBuf,
    /// The safetensors file, or the `.safetensors.index.json` of a sharded
    /// checkpoint (read by [`super::weights::read_weights`]).
    pub weights: PathBuf,
    /// None when the folder has no scheduler config (diffusers' defaults apply).
    pub scheduler_config: Option<PathBuf>,
}

/// Finds a model's files. `variant` picks `diffusion_pytorch_model.<variant>.safetensors`;
/// without one, the plain file is preferred, then the fp16 file, then the
/// int8 file that `petal quantize` writes.
pub fn resolve(dir: &Path, variant: Option<&str>) -> Result<ModelFolder> {
    if !dir.exists() {
        bail!("{}: no such model folder", dir.display());
    }
    if !dir.is_dir() {
        bail!("{}: not a folder (give the folder that holds config.json or unet/)", dir.display());
    }
    let (unet_dir, scheduler) = if dir.join("unet").join("config.json").is_file() {
        (dir.join("unet"), dir.join("scheduler").join("scheduler_config.json"))
    } else if dir.join("config.json").is_file() {
        (dir.to_path_buf(), dir.join("scheduler_config.json"))
    } else {
        bail!(
            "{}: not a diffusers model folder (expected unet/config.json or config.json)",
            dir.display()
        );
    };
    let names: Vec<String> = match variant {
        Some(v) => vec![format!("diffusion_pytorch_model.{v}.safetensors")],
        None => vec![
            "diffusion_pytorch_model.safetensors".into(),
            "diffusion_pytorch_model.fp16.safetensors".into(),
            "diffusion_pytorch_model.int8.safetensors".into(),
        ],
    };
    // A single file first, then the index of a sharded checkpoint
    // (`save_pretrained(max_shard_size=...)`: NAME.index.json beside its shards).
    let weights = names
        .iter()
        .map(|n| unet_dir.join(n))
        .find(|p| p.is_file())
        .or_else(|| names.iter().map(|n| unet_dir.join(format!("{n}.index.json"))).find(|p| p.is_file()));
    let Some(weights) = weights else {
        let bin = unet_dir.join("diffusion_pytorch_model.bin");
        if bin.is_file() || unet_dir.join("diffusion_pytorch_model.bin.index.json").is_file() {
            bail!(
                "{}: Petal reads safetensors only; convert it once with diffusers: \
                 UNet2DModel.from_pretrained(folder).save_pretrained(folder)",
                bin.display()
            );
        }
        bail!("{}: no weights file {} (nor a sharded {}.index.json)", unet_dir.display(), names.join(" or "), names[0]);
    };
    Ok(ModelFolder {
        unet_config: unet_dir.join("config.json"),
        weights,
        scheduler_config: scheduler.is_file().then_some(scheduler),
    })
}

/// The flower model Petal ships (`assets/flowers`, a diffusers pipeline
/// folder), when this build has one: beside the executable first (an
/// installed copy), then in the source tree it was built from. The window
/// opens on it and `petal sample` uses it when no `--model` is given.
pub fn bundled() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        candidates.push(dir.join("assets/flowers"));
    }
    candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/flowers"));
    candidates.into_iter().find(|p| p.join("model_index.json").is_file() || p.join("unet/config.json").is_file())
}

/// A diffusers model folder read from disk: what the CLI, the window and the
/// trainer all start from.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// The folder's name, for display ("ddpm-cifar10-32").
    pub name: String,
    pub files: ModelFolder,
    pub config: super::UNetConfig,
    /// diffusers' DDPMScheduler defaults when the folder has no scheduler config.
    pub scheduler: super::SchedulerConfig,
    /// Every parameter in graph order (`unet::build_graph(&config)`), widened to f32
    /// (int8 ones dequantized).
    pub weights: Vec<Vec<f32>>,
    /// How the file stored each parameter (graph order), for converting to a
    /// precision without loss (see [`super::precision`]).
    pub stored: Vec<super::precision::Stored>,
}

/// Reads a model folder (either layout, see [`resolve`]): config.json, the
/// scheduler config and the weights. Errors name the file and the problem.
pub fn load(dir: &Path, variant: Option<&str>) -> Result<LoadedModel> {
    let files = resolve(dir, variant)?;
    let config = super::UNetConfig::from_file(&files.unet_config)?;
    let scheduler = match &files.scheduler_config {
        Some(p) => super::SchedulerConfig::from_file(p)?,
        None => super::SchedulerConfig::default(),
    };
    super::config::check_pair(&config, &files.unet_config, &scheduler)?;
    let graph = super::unet::build_graph(&config);
    let (weights, stored) = super::precision::read_weights(&files.weights, &graph)?;
    let name = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    Ok(LoadedModel { name, files, config, scheduler, weights, stored })
}
