//! One file per op family: the wrappers that turn an op's tensors and shape
//! into a recorded [`Dispatch`](crate::gpu::Dispatch). Shapes are in the
//! argument names and comments, outputs come first (llm.c's convention).
//! Each kernel has a plain-f32 twin in [`crate::reference`] and a test.

pub mod conv2d;
pub mod elementwise;
pub mod group_norm;
pub mod linear;
pub mod matmul;
pub mod scheduler;

pub use conv2d::{Conv2dEpilogue, Conv2dShape, conv2d_forward};
pub use elementwise::{copy_channels, softmax_forward};
pub use group_norm::group_norm_forward;
pub use linear::linear_forward;
pub use matmul::{MatmulDesc, Operand, matmul};
pub use scheduler::{DdpmStepParams, ddpm_step};
