//! Where the parts of a diffusers model folder are: the pipeline layout that
//! `save_pretrained` writes (model_index.json, unet/, scheduler/) or the flat
//! layout of hub UNet checkpoints (config.json and weights side by side).

use anyhow::{Result, bail};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct ModelFolder {
    pub unet_config: PathBuf,
    pub weights: PathBuf,
    /// None when the folder has no scheduler config (diffusers' defaults apply).
    pub scheduler_config: Option<PathBuf>,
}

/// Finds a model's files. `variant` picks `diffusion_pytorch_model.<variant>.safetensors`;
/// without one, the plain file is preferred and an fp16 file is used when it
/// is the only one.
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
        None => vec!["diffusion_pytorch_model.safetensors".into(), "diffusion_pytorch_model.fp16.safetensors".into()],
    };
    let weights = names.iter().map(|n| unet_dir.join(n)).find(|p| p.is_file());
    let Some(weights) = weights else {
        let bin = unet_dir.join("diffusion_pytorch_model.bin");
        if bin.is_file() {
            bail!(
                "{}: Petal reads safetensors only; convert it once with diffusers: \
                 UNet2DModel.from_pretrained(folder).save_pretrained(folder)",
                bin.display()
            );
        }
        bail!("{}: no weights file {}", unet_dir.display(), names.join(" or "));
    };
    Ok(ModelFolder {
        unet_config: unet_dir.join("config.json"),
        weights,
        scheduler_config: scheduler.is_file().then_some(scheduler),
    })
}
