//! Schedulers and the sampling loop.

pub mod noise;
pub mod sampler;
pub mod scheduler;

pub use noise::NoiseStreams;
pub use sampler::{Flow, Frame, Sampler, StepInfo};
pub use scheduler::{DdpmScheduler, timestep_embedding};
