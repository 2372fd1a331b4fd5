//! What the window and the worker say to each other. Every message is an
//! owned, `Send` value with no wgpu or egui types in it, so it crosses a
//! crossbeam channel as it is.

use crate::export::Image8;
use crate::model::Precision;
use crate::train::{RunStarted, StepLog, TrainOptions};
use std::path::PathBuf;

/// The scheduler a generation runs.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SchedulerChoice {
    /// DDPMScheduler, as the model's DDPMPipeline samples.
    Ddpm,
    /// DDIMScheduler on the same DDPM-trained weights (as DDIMPipeline),
    /// with eta in [0, 1]: 0 is deterministic, 1 adds DDPM-like noise.
    Ddim { eta: f32 },
}

impl SchedulerChoice {
    pub fn name(self) -> &'static str {
        match self {
            SchedulerChoice::Ddpm => "DDPM",
            SchedulerChoice::Ddim { .. } => "DDIM",
        }
    }

    /// eta, for DDIM.
    pub fn eta(self) -> Option<f32> {
        match self {
            SchedulerChoice::Ddpm => None,
            SchedulerChoice::Ddim { eta } => Some(eta),
        }
    }

    /// The engine's scheduler choice.
    pub fn kind(self) -> crate::diffusion::SchedulerKind {
        match self {
            SchedulerChoice::Ddpm => crate::diffusion::SchedulerKind::Ddpm,
            SchedulerChoice::Ddim { eta } => crate::diffusion::SchedulerKind::Ddim { eta },
        }
    }
}

/// One batch to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateRequest {
    /// Images in the batch (1..=64).
    pub count: u32,
    /// Denoising steps (1..=num_train_timesteps).
    pub steps: u32,
    /// Image `i` draws its noise from (seed + i): the same image in any batch.
    pub seed: u64,
    pub scheduler: SchedulerChoice,
}

/// From the window to the worker.
#[derive(Clone, Debug)]
pub enum Command {
    /// Load a diffusers model folder for generation, with its weights at
    /// `precision` on the GPU (None: as the file stores them).
    LoadModel { dir: PathBuf, precision: Option<Precision> },
    Generate(GenerateRequest),
    /// Run the same request (same seed, same noise) with the open model's
    /// weights in FP32, FP16 and INT8, one after the other, and report each
    /// one's final images, speed and sizes. Cancel stops it between steps.
    Compare(GenerateRequest),
    /// Stop a generation between steps, keeping the steps reached.
    Cancel,
    /// Count the usable images of a data folder (and say which are skipped).
    ScanData(PathBuf),
    /// Train as the options say (the window fills them from its settings,
    /// as `petal train` does from its flags).
    StartTraining(Box<TrainOptions>),
    /// Hold the run between steps; the model stays in memory.
    Pause,
    Resume,
    /// Write a checkpoint, then end the run.
    Stop,
    SampleNow,
    CheckpointNow,
    /// End the thread; a training run is stopped with a checkpoint first.
    Shutdown,
    /// Destroy the GPU device as a driver reset would (for tests of the
    /// lost-device path: the next command fails, the one after reopens it).
    #[doc(hidden)]
    SimulateDeviceLoss,
}

/// A model the worker holds, as the window shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub dir: PathBuf,
    pub parameters: usize,
    /// The precision the weights run at on the GPU.
    pub precision: Precision,
    /// The precision the weights file stores.
    pub stored: Precision,
    /// The weights file read, its size, and the bytes the weights take on the GPU.
    pub weights_file: PathBuf,
    pub file_bytes: u64,
    pub gpu_bytes: u64,
    /// What runs, in words ([`Precision::describe`]).
    pub precision_note: String,
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    pub num_train_timesteps: u32,
}

/// One denoising step of the whole batch, as 8-bit images.
#[derive(Clone, Debug)]
pub struct StepFrame {
    /// 0-based step index.
    pub index: usize,
    pub num_steps: usize,
    /// The timestep this step denoised from.
    pub timestep: u32,
    /// x_{t-1}, the scheduler's prev_sample, one image per batch entry.
    pub x: Vec<Image8>,
    /// The model's prediction of the clean image (pred_original_sample).
    pub pred_x0: Vec<Image8>,
    /// Wall time of this step, as the worker saw it.
    pub millis: f64,
}

/// From the worker to the window.
#[derive(Clone, Debug)]
pub enum Event {
    /// The GPU is open: "llvmpipe (Vulkan, software renderer on the CPU, cpu kernels)".
    Adapter(String),
    ModelLoaded(ModelInfo),
    GenerationStarted(GenerateRequest),
    Step(StepFrame),
    /// The batch is done, or was cancelled after `interrupted_at` steps.
    GenerationDone { interrupted_at: Option<usize>, seconds: f64 },
    DataScanned { dir: PathBuf, images: usize, skipped: Vec<(PathBuf, String)> },
    /// A comparison began: its request, and the precisions it will run in order.
    CompareStarted { request: GenerateRequest, precisions: Vec<Precision> },
    /// A comparison's run at `precision` finished denoising step `step` (1-based) of `num_steps`.
    CompareStep { precision: Precision, step: usize, num_steps: usize },
    /// One precision of a comparison is done.
    CompareResult(CompareEntry),
    /// The comparison ended (`cancelled`: Cancel stopped it early).
    CompareDone { cancelled: bool },
    TrainStarted(RunStarted),
    TrainStep(StepLog),
    TrainPreview { step: u64, images: Vec<Image8> },
    Checkpoint { step: u64, path: PathBuf },
    TrainPaused(bool),
    /// The run ended: finished, or stopped by the user (`stopped`).
    TrainDone { steps_done: u64, last_checkpoint: Option<PathBuf>, stopped: bool },
    /// Worth saying, not an error (a skipped image, a resume mismatch).
    Warning(String),
    /// A command that has to wait (say, Generate while training runs), and why.
    /// Nothing changed.
    Refused(String),
    /// What failed, in one readable line that names the file or the limit.
    Failed { activity: Activity, message: String },
}

/// One precision's run in a comparison ([`Command::Compare`]).
#[derive(Clone, Debug)]
pub struct CompareEntry {
    pub precision: Precision,
    /// The final images (x_0 after the last step), one per batch entry.
    pub images: Vec<Image8>,
    /// Mean wall time per denoising step, in milliseconds (every step's image
    /// read back only at the end).
    pub millis_per_step: f64,
    /// The weights on the GPU, in bytes.
    pub gpu_bytes: u64,
    /// The size of this precision's weights file, in bytes (of the file read
    /// when the folder has one in this precision; else what `petal quantize`
    /// would write).
    pub file_bytes: u64,
    /// Whether the weights were converted on load rather than read as stored.
    pub converted: bool,
    /// Mean absolute difference from the FP32 run's images, on 0-255 (None
    /// for FP32 itself, or when FP32 did not run first).
    pub mean_abs_diff: Option<f64>,
}

/// What the worker was doing when something failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    OpeningGpu,
    LoadingModel,
    Generating,
    ScanningData,
    Training,
    Comparing,
}

impl Activity {
    /// "generating", "training", ...
    pub fn describe(self) -> &'static str {
        match self {
            Activity::OpeningGpu => "opening the GPU",
            Activity::LoadingModel => "loading a model",
            Activity::Generating => "generating",
            Activity::ScanningData => "scanning a data folder",
            Activity::Training => "training",
            Activity::Comparing => "comparing precisions",
        }
    }
}
