//! Petal: a DDPM flower model (diffusers' UNet2DModel and DDPMScheduler) on
//! any Vulkan, Metal or DX12 GPU through hand-written WGSL compute shaders.
//!
//! Data flows one way: weights and images in, through the GPU, frames and
//! checkpoints out. [`gpu`] owns the device; [`kernels`] records ops;
//! [`reference`] defines them on the CPU; [`model`] turns a diffusers config
//! into an op list; [`diffusion`] samples; [`train`] trains; [`eval`]
//! measures sample quality. [`worker`] is the thread that owns all of that
//! for the window, [`app`].

pub mod app;
pub mod diffusion;
pub mod eval;
pub mod export;
pub mod gpu;
pub mod image_io;
pub mod kernels;
pub mod model;
pub mod reference;
pub mod rng;
pub mod shaders;
pub mod train;
pub mod worker;
