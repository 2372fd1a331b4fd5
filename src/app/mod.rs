//! The window (eframe/egui). UI only: it records no GPU work; the worker
//! thread ([`crate::worker`]) owns the device, the model, the sampler and
//! the trainer.

use crate::gpu::GpuOptions;
use anyhow::Result;
use std::path::PathBuf;

/// How the window was asked to open.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    /// Open on this model folder instead of the bundled or last-used one.
    pub model: Option<PathBuf>,
    pub gpu: GpuOptions,
}

/// Opens the window and runs until it is closed.
pub fn run(_launch: Launch) -> Result<()> {
    anyhow::bail!("the window is not built yet; try `petal sample --help`")
}
