//! What the window remembers between launches (eframe storage, serde).

use crate::model::Precision;
use crate::worker::SchedulerChoice;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How each image of the grid is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    /// The noisy x_t and the predicted clean x_0 side by side.
    Both,
    /// Only x_t.
    Noisy,
    /// Only the prediction of x_0.
    Predicted,
}

/// Where a training run starts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StartChoice {
    /// The model open in Generate (the bundled flowers by default).
    CurrentModel,
    /// Another diffusers model folder.
    Folder(PathBuf),
    /// Fresh weights of a built-in architecture.
    Fresh(String),
    /// Continue a checkpoint exactly.
    Resume(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateSettings {
    pub count: u32,
    pub steps: u32,
    pub seed: u64,
    pub scheduler: SchedulerChoice,
    pub view: View,
    /// Each 32x32 image is drawn this many times larger (nearest neighbour).
    pub zoom: u32,
    /// Exported images are upscaled by this (1, 4 or 8).
    pub export_scale: u32,
    /// The weights' precision on the GPU; None: as the file stores them.
    pub precision: Option<Precision>,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        GenerateSettings { count: 16, steps: 50, seed: 0, scheduler: SchedulerChoice::Ddpm, view: View::Both, zoom: 3, export_scale: 4, precision: None }
    }
}

/// The seed's recipe (diffusers' train_unconditional), every number editable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub start: StartChoice,
    pub epochs: u64,
    /// 0: as many steps as the epochs make.
    pub max_steps: u64,
    pub batch: u32,
    pub lr: f64,
    pub warmup: u64,
    pub checkpoint_every: u64,
    pub sample_every: u64,
    pub seed: u64,
    pub log_scale: bool,
}

impl Default for TrainSettings {
    fn default() -> Self {
        TrainSettings {
            data: None,
            out: None,
            start: StartChoice::CurrentModel,
            epochs: 100,
            max_steps: 0,
            batch: 64,
            lr: 1e-4,
            warmup: 500,
            checkpoint_every: 1000,
            sample_every: 250,
            seed: 0,
            log_scale: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The model folder opened last.
    pub last_model: Option<PathBuf>,
    pub generate: GenerateSettings,
    pub train: TrainSettings,
}
