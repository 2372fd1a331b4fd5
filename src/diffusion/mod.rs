//! Schedulers (DDPM, DDIM) and the sampling loop.

pub mod ddim;
pub mod kind;
pub mod noise;
pub mod sampler;
pub mod scheduler;

pub use ddim::DdimScheduler;
pub use kind::{Scheduler, SchedulerKind};
pub use noise::NoiseStreams;
pub use sampler::{Flow, Frame, Sampler, StepInfo};
pub use scheduler::{DdpmScheduler, timestep_embedding};
