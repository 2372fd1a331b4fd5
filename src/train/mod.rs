//! Training on the GPU: the backward pass, AdamW, the EMA of the weights,
//! the data pipeline, the learning-rate schedule and checkpoints.

pub mod checkpoint;
pub mod data;
pub mod init;
pub mod plan;
pub mod schedule;
pub mod trainer;
pub mod validate;

pub use plan::{StepSettings, StepStats, TrainPlan};
pub use trainer::{ModelSource, RunStarted, StepLog, TrainControl, TrainEvent, TrainOptions, TrainSummary, train};
