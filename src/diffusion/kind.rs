//! Which scheduler a [`crate::diffusion::Sampler`] steps with: DDPM (as
//! `DDPMPipeline`) or DDIM with eta (as `DDIMPipeline`, with
//! `DDIMScheduler.from_config` of the model's DDPM scheduler config). Both
//! run through the same `ddpm_step` kernel; only the per-step scalars differ.

use super::ddim::DdimScheduler;
use super::scheduler::DdpmScheduler;
use crate::kernels::DdpmStepParams;
use crate::model::SchedulerConfig;
use anyhow::{Result, bail};

/// The sampling scheduler, chosen when a sampler is built.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum SchedulerKind {
    /// diffusers' DDPMScheduler (DDPMPipeline's).
    #[default]
    Ddpm,
    /// diffusers' DDIMScheduler with this eta in [0, 1] (0: deterministic).
    Ddim { eta: f32 },
}

impl SchedulerKind {
    /// From a name as the CLI takes it: `ddpm` (eta must then be 0) or `ddim`.
    /// Errors name the flag: an unknown name, eta outside [0, 1], or an eta
    /// given with ddpm.
    pub fn parse(name: &str, eta: f32) -> Result<SchedulerKind> {
        match name {
            "ddpm" if eta == 0.0 => Ok(SchedulerKind::Ddpm),
            "ddpm" => bail!("--eta {eta} applies to --scheduler ddim only (DDPM's noise is fixed)"),
            "ddim" if (0.0..=1.0).contains(&eta) => Ok(SchedulerKind::Ddim { eta }),
            "ddim" => bail!("--eta must be between 0 and 1, not {eta}"),
            other => bail!("--scheduler {other}: expected ddpm or ddim"),
        }
    }

    /// "DDPM" or "DDIM eta=0.5", for logs and image metadata.
    pub fn describe(&self) -> String {
        match self {
            SchedulerKind::Ddpm => "DDPM".into(),
            SchedulerKind::Ddim { eta } => format!("DDIM eta={eta}"),
        }
    }
}

// One per sampler, never in a collection: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Inner {
    Ddpm(DdpmScheduler),
    Ddim(DdimScheduler),
}

/// A DDPM or DDIM scheduler with its inference timesteps set: what a
/// sampler steps through, one `ddpm_step` per timestep.
#[derive(Clone, Debug)]
pub struct Scheduler {
    /// The inference timesteps, first to last (as the scheduler set them).
    pub timesteps: Vec<u32>,
    pub kind: SchedulerKind,
    inner: Inner,
}

impl Scheduler {
    /// `kind` built from the model's scheduler config, set to `steps` steps.
    /// Errors: an unsupported config, a bad eta, steps outside
    /// 1..=num_train_timesteps.
    pub fn new(kind: SchedulerKind, config: &SchedulerConfig, steps: u32) -> Result<Scheduler> {
        let inner = match kind {
            SchedulerKind::Ddpm => {
                let mut s = DdpmScheduler::new(config)?;
                s.set_timesteps(steps)?;
                Inner::Ddpm(s)
            }
            SchedulerKind::Ddim { eta } => {
                let mut s = DdimScheduler::new(config, eta)?;
                s.set_timesteps(steps)?;
                Inner::Ddim(s)
            }
        };
        let timesteps = match &inner {
            Inner::Ddpm(s) => s.timesteps.clone(),
            Inner::Ddim(s) => s.timesteps.clone(),
        };
        Ok(Scheduler { timesteps, kind, inner })
    }

    /// The scalars of step(t) for the `ddpm_step` kernel (n left 0).
    pub fn step_params(&self, t: u32) -> DdpmStepParams {
        match &self.inner {
            Inner::Ddpm(s) => s.step_params(t),
            Inner::Ddim(s) => s.step_params(t),
        }
    }

    /// step() on the CPU: (prev_sample, pred_original_sample).
    pub fn step_cpu(&self, model_output: &[f32], t: u32, sample: &[f32], noise: &[f32]) -> (Vec<f32>, Vec<f32>) {
        match &self.inner {
            Inner::Ddpm(s) => s.step_cpu(model_output, t, sample, noise),
            Inner::Ddim(s) => s.step_cpu(model_output, t, sample, noise),
        }
    }

    /// The DDPM scheduler, when this is one.
    pub fn ddpm(&self) -> Option<&DdpmScheduler> {
        match &self.inner {
            Inner::Ddpm(s) => Some(s),
            Inner::Ddim(_) => None,
        }
    }

    /// The DDIM scheduler, when this is one.
    pub fn ddim(&self) -> Option<&DdimScheduler> {
        match &self.inner {
            Inner::Ddim(s) => Some(s),
            Inner::Ddpm(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_and_eta() {
        assert_eq!(SchedulerKind::parse("ddpm", 0.0).unwrap(), SchedulerKind::Ddpm);
        assert_eq!(SchedulerKind::parse("ddim", 0.5).unwrap(), SchedulerKind::Ddim { eta: 0.5 });
        let e = SchedulerKind::parse("ddim", 2.0).unwrap_err().to_string();
        assert!(e.contains("--eta"), "{e}");
        let e = SchedulerKind::parse("euler", 0.0).unwrap_err().to_string();
        assert!(e.contains("--scheduler euler"), "{e}");
        assert!(SchedulerKind::parse("ddpm", 0.3).is_err());
    }

    #[test]
    fn both_kinds_share_timesteps_and_differ_in_scalars() {
        let cfg = SchedulerConfig::default();
        let a = Scheduler::new(SchedulerKind::Ddpm, &cfg, 20).unwrap();
        let b = Scheduler::new(SchedulerKind::Ddim { eta: 0.0 }, &cfg, 20).unwrap();
        assert_eq!(a.timesteps, b.timesteps);
        let (pa, pb) = (a.step_params(a.timesteps[3]), b.step_params(b.timesteps[3]));
        assert_eq!((pa.c_eps, pb.c_xt, pb.sigma), (0.0, 0.0, 0.0));
        assert!(pa.c_xt > 0.0 && pb.c_eps > 0.0);
        assert!(a.ddpm().is_some() && b.ddim().is_some());
    }
}
