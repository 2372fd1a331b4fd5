//! Checkpoints: diffusers pipeline folders (DDPMPipeline.from_pretrained loads
//! them as they are) plus what resuming needs, written to a temporary name
//! and renamed into place so that a crash or a full disk never leaves a
//! broken newest checkpoint.

use crate::kernels::optim::AdamW;
use crate::model::graph::Graph;
use crate::model::weights::{StoreDtype, load_params, safetensors_bytes};
use crate::model::{SchedulerConfig, UNetConfig};
use crate::train::schedule::EmaSchedule;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const MODEL_INDEX: &str = r#"{
  "_class_name": "DDPMPipeline",
  "_diffusers_version": "0.42.1",
  "scheduler": [
    "diffusers",
    "DDPMScheduler"
  ],
  "unet": [
    "diffusers",
    "UNet2DModel"
  ]
}
"#;

/// Everything about a run that resuming it needs besides the tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: u64,
    pub total_steps: u64,
    pub steps_per_epoch: u64,
    pub seed: u64,
    pub batch: u32,
    pub lr: f64,
    pub warmup: u64,
    pub adamw: AdamW,
    pub max_grad_norm: f64,
    pub ema: Option<EmaSchedule>,
    pub data: PathBuf,
    pub images: usize,
    pub petal_version: String,
}

/// A loaded checkpoint.
pub struct Checkpoint {
    pub dir: PathBuf,
    pub config: UNetConfig,
    pub scheduler: SchedulerConfig,
    /// The optimizer's weights.
    pub weights: Vec<Vec<f32>>,
    pub ema: Option<Vec<Vec<f32>>>,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
    pub state: TrainState,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    f.sync_all().with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn named<'a>(graph: &Graph, prefix: &str, data: &'a [Vec<f32>]) -> Vec<(String, Vec<usize>, &'a [f32])> {
    graph.params.iter().zip(data).map(|(p, d)| (format!("{prefix}{}", p.name), p.shape.clone(), &d[..])).collect()
}

/// Writes a diffusers pipeline folder (model_index.json, unet/, scheduler/)
/// into `dir`, which must exist.
pub fn write_pipeline(dir: &Path, config: &UNetConfig, sched: &SchedulerConfig, graph: &Graph, weights: &[Vec<f32>], dtype: StoreDtype) -> Result<()> {
    std::fs::create_dir_all(dir.join("unet")).with_context(|| format!("creating {}", dir.join("unet").display()))?;
    std::fs::create_dir_all(dir.join("scheduler")).with_context(|| format!("creating {}", dir.join("scheduler").display()))?;
    write_file(&dir.join("model_index.json"), MODEL_INDEX.as_bytes())?;
    write_file(&dir.join("unet/config.json"), config.to_json().as_bytes())?;
    write_file(&dir.join("scheduler/scheduler_config.json"), sched.to_json().as_bytes())?;
    let name = match dtype {
        StoreDtype::F32 => "diffusion_pytorch_model.safetensors",
        StoreDtype::F16 => "diffusion_pytorch_model.fp16.safetensors",
    };
    let bytes = safetensors_bytes(&named(graph, "", weights), dtype)?;
    write_file(&dir.join("unet").join(name), &bytes)
}

/// Builds a folder under a temporary name beside `dest` and renames it into
/// place; on any error the temporary folder is removed and `dest` (if it
/// existed) is left as it was.
pub fn write_dir_atomically(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dest.file_name().context("destination has no name")?.to_string_lossy().into_owned();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if dest.exists() {
        std::fs::rename(dest, &old).with_context(|| format!("moving aside {}", dest.display()))?;
    }
    if let Err(e) = std::fs::rename(&tmp, dest) {
        if old.exists() {
            let _ = std::fs::rename(&old, dest);
        }
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()));
    }
    let _ = std::fs::remove_dir_all(&old);
    if let Ok(d) = std::fs::File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The tensors and state of a run at a step.
pub struct Snapshot<'a> {
    pub config: &'a UNetConfig,
    pub scheduler: &'a SchedulerConfig,
    pub graph: &'a Graph,
    pub weights: &'a [Vec<f32>],
    pub ema: Option<&'a [Vec<f32>]>,
    pub m: &'a [Vec<f32>],
    pub v: &'a [Vec<f32>],
    pub state: &'a TrainState,
}

/// Writes `dest` as a checkpoint: unet/ holds the weights to sample from
/// (the EMA when there is one), training_state/ the rest.
pub fn save(dest: &Path, s: &Snapshot) -> Result<()> {
    write_dir_atomically(dest, |dir| {
        write_pipeline(dir, s.config, s.scheduler, s.graph, s.ema.unwrap_or(s.weights), StoreDtype::F32)?;
        let ts = dir.join("training_state");
        std::fs::create_dir_all(&ts).with_context(|| format!("creating {}", ts.display()))?;
        if s.ema.is_some() {
            write_file(&ts.join("unet.safetensors"), &safetensors_bytes(&named(s.graph, "", s.weights), StoreDtype::F32)?)?;
        }
        let mut opt = named(s.graph, "exp_avg.", s.m);
        opt.extend(named(s.graph, "exp_avg_sq.", s.v));
        write_file(&ts.join("optimizer.safetensors"), &safetensors_bytes(&opt, StoreDtype::F32)?)?;
        write_file(&ts.join("state.json"), serde_json::to_string_pretty(s.state)?.as_bytes())
    })
}

/// Reads a checkpoint written by [`save`].
pub fn load(dir: &Path) -> Result<Checkpoint> {
    let ts = dir.join("training_state");
    if dir.exists() && !dir.is_dir() {
        bail!("{}: not a folder (give a checkpoint-<step> folder)", dir.display());
    }
    if !dir.is_dir() {
        bail!("{}: no such checkpoint folder", dir.display());
    }
    if !ts.join("state.json").is_file() {
        bail!("{}: not a Petal checkpoint (no training_state/state.json)", dir.display());
    }
    let text = std::fs::read_to_string(ts.join("state.json")).with_context(|| format!("reading {}", ts.join("state.json").display()))?;
    let state: TrainState = serde_json::from_str(&text).with_context(|| format!("{}: not a valid training state", ts.join("state.json").display()))?;
    let config = UNetConfig::from_file(&dir.join("unet/config.json"))?;
    let scheduler = SchedulerConfig::from_file(&dir.join("scheduler/scheduler_config.json"))?;
    let graph = crate::model::unet::build_graph(&config);
    let unet_file = dir.join("unet/diffusion_pytorch_model.safetensors");
    let sampling = load_params(&unet_file, &graph)?;
    let (weights, ema) = if state.ema.is_some() {
        (load_params(&ts.join("unet.safetensors"), &graph)?, Some(sampling))
    } else {
        (sampling, None)
    };
    let opt_file = ts.join("optimizer.safetensors");
    let mut opt = crate::model::weights::read_weights(&opt_file)?;
    let mut take = |prefix: &str| -> Result<Vec<Vec<f32>>> {
        graph
            .params
            .iter()
            .map(|p| {
                let name = format!("{prefix}{}", p.name);
                let (shape, data) = opt.remove(&name).with_context(|| format!("{}: tensor {name} is missing", opt_file.display()))?;
                if shape != p.shape {
                    bail!("{}: tensor {name} has shape {shape:?}, expected {:?}", opt_file.display(), p.shape);
                }
                Ok(data)
            })
            .collect()
    };
    let m = take("exp_avg.")?;
    let v = take("exp_avg_sq.")?;
    Ok(Checkpoint { dir: dir.to_path_buf(), config, scheduler, weights, ema, m, v, state })
}

/// checkpoint-<step> folders in a run folder, oldest first.
pub fn list(run: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(run)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().is_dir().then_some((step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// Removes all but the newest `keep` checkpoints.
pub fn prune(run: &Path, keep: usize) -> Result<()> {
    let all = list(run);
    if all.len() > keep {
        for (_, p) in &all[..all.len() - keep] {
            std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}
