//! DDIMScheduler (diffusers' `scheduling_ddim.py`, Song et al. 2020), run on
//! DDPM-trained weights as `DDIMPipeline` runs it:
//! `DDIMScheduler.from_config(ddpm_scheduler.config)`, `eta` in [0, 1],
//! `use_clipped_model_output=False`. The schedule (betas, alphas_cumprod) and
//! the inference timesteps are DDPMScheduler's, so they come from
//! [`DdpmScheduler`]; each step's scalars are computed in f32 as diffusers'
//! tensor arithmetic computes them, and the step itself runs through the same
//! `ddpm_step` kernel as DDPM (with `c_xt = 0` and the epsilon coefficient
//! `c_eps` set).

use super::scheduler::DdpmScheduler;
use crate::kernels::DdpmStepParams;
use crate::model::SchedulerConfig;
use anyhow::{Result, bail};

#[derive(Clone, Debug)]
pub struct DdimScheduler {
    pub config: SchedulerConfig,
    /// f32, bit-identical to diffusers' (the same as DDPMScheduler's).
    pub alphas_cumprod: Vec<f32>,
    /// alpha_prod of the step after the last: 1 when `set_alpha_to_one`
    /// (diffusers' default, and what a DDPM config gives), else
    /// alphas_cumprod[0].
    pub final_alpha_cumprod: f32,
    /// The weight of the noise, 0 (deterministic DDIM) to 1 (DDPM's
    /// posterior variance): sigma_t = eta * sqrt(variance), formula (16).
    pub eta: f32,
    /// Set by [`DdimScheduler::set_timesteps`], as DDPMScheduler spaces them.
    pub timesteps: Vec<u32>,
    /// The schedule and the timestep spacing are DDPMScheduler's.
    spacing: DdpmScheduler,
    num_inference_steps: Option<u32>,
}

impl DdimScheduler {
    /// The scheduler `DDIMScheduler.from_config(config)` builds, stepping with
    /// `eta`. Errors: eta outside [0, 1] (or not finite), or a config Petal
    /// does not run (see [`SchedulerConfig::validate`]).
    pub fn new(config: &SchedulerConfig, eta: f32) -> Result<DdimScheduler> {
        if !(0.0..=1.0).contains(&eta) {
            bail!("DDIM eta must be between 0 and 1, not {eta}");
        }
        let spacing = DdpmScheduler::new(config)?;
        let alphas_cumprod = spacing.alphas_cumprod.clone();
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) { 1.0 } else { alphas_cumprod[0] };
        Ok(DdimScheduler {
            config: config.clone(),
            alphas_cumprod,
            final_alpha_cumprod,
            eta,
            timesteps: Vec::new(),
            spacing,
            num_inference_steps: None,
        })
    }

    /// The inference timesteps: DDIMScheduler.set_timesteps spaces them as
    /// DDPMScheduler does (leading, trailing, linspace; steps_offset).
    /// Errors: 0 steps or more than num_train_timesteps.
    pub fn set_timesteps(&mut self, num_inference_steps: u32) -> Result<()> {
        self.spacing.set_timesteps(num_inference_steps)?;
        self.timesteps = self.spacing.timesteps.clone();
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    /// DDIMScheduler.step's prev_timestep: t - num_train_timesteps //
    /// num_inference_steps. Unlike DDPMScheduler this is not the next entry
    /// of `timesteps` (they differ for trailing and linspace spacing), and
    /// it is negative after the last step. Before set_timesteps: t - 1.
    pub fn previous_timestep(&self, t: u32) -> i64 {
        let n = self.num_inference_steps.unwrap_or(self.config.num_train_timesteps);
        t as i64 - (self.config.num_train_timesteps / n) as i64
    }

    fn alpha_prod_prev(&self, t: u32) -> f32 {
        let prev = self.previous_timestep(t);
        if prev >= 0 { self.alphas_cumprod[prev as usize] } else { self.final_alpha_cumprod }
    }

    /// DDIMScheduler._get_variance(t, prev_t), in f32:
    /// (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev).
    pub fn variance(&self, t: u32) -> f32 {
        let alpha_prod_t = self.alphas_cumprod[t as usize];
        let alpha_prod_t_prev = self.alpha_prod_prev(t);
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev)
    }

    /// The standard deviation of the noise added at step t:
    /// std_dev_t = eta * sqrt(variance). diffusers draws noise whenever
    /// eta > 0 (even where this is 0, after the last step); Petal asks for
    /// noise only where this is non-zero.
    pub fn noise_std(&self, t: u32) -> f32 {
        self.eta * self.variance(t).sqrt()
    }

    /// The scalars of step(t) for the `ddpm_step` kernel (n left 0 for the
    /// caller): c_x0 = sqrt(a_prev), c_xt = 0, c_eps = sqrt(1 - a_prev -
    /// std_dev_t^2) (steps 5-7 of DDIMScheduler.step), sigma = std_dev_t.
    pub fn step_params(&self, t: u32) -> DdpmStepParams {
        let alpha_prod_t = self.alphas_cumprod[t as usize];
        let alpha_prod_t_prev = self.alpha_prod_prev(t);
        let std_dev_t = self.noise_std(t);
        DdpmStepParams {
            c_x0: alpha_prod_t_prev.sqrt(),
            sigma: if self.eta > 0.0 { std_dev_t } else { 0.0 },
            c_eps: (1.0 - alpha_prod_t_prev - std_dev_t * std_dev_t).sqrt(),
            ..super::scheduler::base_step_params(&self.config, alpha_prod_t)
        }
    }

    /// DDIMScheduler.step on the CPU (use_clipped_model_output False), with
    /// `noise` as its variance noise: returns (prev_sample,
    /// pred_original_sample). The reference for the GPU kernel; all slices
    /// have the same length.
    pub fn step_cpu(&self, model_output: &[f32], t: u32, sample: &[f32], noise: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let p = self.step_params(t);
        let mut prev = Vec::with_capacity(sample.len());
        let mut x0s = Vec::with_capacity(sample.len());
        for i in 0..sample.len() {
            let (xt, out) = (sample[i], model_output[i]);
            // 3. pred_original_sample and pred_epsilon, as diffusers derives them.
            let (mut x0, eps) = match p.prediction {
                0 => ((xt - p.sqrt_beta_prod * out) / p.sqrt_alpha_prod, out),
                1 => (out, (xt - p.sqrt_alpha_prod * out) / p.sqrt_beta_prod),
                _ => (p.sqrt_alpha_prod * xt - p.sqrt_beta_prod * out, p.sqrt_alpha_prod * out + p.sqrt_beta_prod * xt),
            };
            // 4. clip x0 (epsilon stays the unclipped model's).
            if p.clip != 0 {
                x0 = x0.clamp(-p.clip_range, p.clip_range);
            }
            // 6.-7. sqrt(a_prev) x0 + direction pointing to x_t, then the noise.
            let mut v = p.c_x0 * x0 + p.c_eps * eps;
            if p.sigma != 0.0 {
                v += p.sigma * noise[i];
            }
            prev.push(v);
            x0s.push(x0);
        }
        (prev, x0s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> SchedulerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn refuses_eta_outside_zero_one() {
        assert!(DdimScheduler::new(&cfg("{}"), -0.1).is_err());
        assert!(DdimScheduler::new(&cfg("{}"), 1.5).is_err());
        assert!(DdimScheduler::new(&cfg("{}"), f32::NAN).is_err());
        assert!(DdimScheduler::new(&cfg("{}"), 1.0).is_ok());
    }

    #[test]
    fn previous_timestep_is_t_minus_ratio_not_the_next_timestep() {
        let mut s = DdimScheduler::new(&cfg(r#"{"timestep_spacing": "trailing"}"#), 0.0).unwrap();
        s.set_timesteps(7).unwrap();
        assert_eq!(s.timesteps, vec![999, 856, 713, 570, 428, 285, 142]);
        // 1000 // 7 = 142: 999 -> 857 (not 856), 142 -> 0.
        assert_eq!(s.previous_timestep(999), 857);
        assert_eq!(s.previous_timestep(142), 0);
        let mut s = DdimScheduler::new(&cfg("{}"), 0.0).unwrap();
        s.set_timesteps(50).unwrap();
        assert_eq!(s.previous_timestep(0), -20);
    }

    #[test]
    fn eta_zero_adds_no_noise_and_last_step_returns_x0() {
        let mut s = DdimScheduler::new(&cfg("{}"), 0.0).unwrap();
        s.set_timesteps(50).unwrap();
        for &t in &s.timesteps {
            assert_eq!(s.step_params(t).sigma, 0.0, "t={t}");
        }
        // After the last step alpha_prod_prev is 1: prev = x0 exactly.
        let p = s.step_params(0);
        assert_eq!((p.c_x0, p.c_eps, p.c_xt), (1.0, 0.0, 0.0));
        let (prev, x0) = s.step_cpu(&[0.1, -0.2], 0, &[0.5, 0.3], &[9.0, 9.0]);
        assert_eq!(prev, x0);
        // set_alpha_to_one false: the last step goes to alphas_cumprod[0].
        let mut s = DdimScheduler::new(&cfg(r#"{"set_alpha_to_one": false}"#), 0.0).unwrap();
        s.set_timesteps(50).unwrap();
        assert_eq!(s.step_params(0).c_x0, s.alphas_cumprod[0].sqrt());
    }

    #[test]
    fn eta_one_has_ddpm_posterior_variance_and_mean() {
        // With leading spacing t - 1000 // n is the next timestep, so DDIM with
        // eta 1 is DDPM with fixed_small variance (the paper's eq. 16).
        let c = cfg(r#"{"clip_sample": false}"#);
        let mut ddim = DdimScheduler::new(&c, 1.0).unwrap();
        let mut ddpm = DdpmScheduler::new(&c).unwrap();
        ddim.set_timesteps(50).unwrap();
        ddpm.set_timesteps(50).unwrap();
        let (out, xt, noise) = ([0.3f32, -1.2, 0.7], [1.1f32, -0.4, 0.05], [0.5f32, -2.0, 1.0]);
        for &t in &ddim.timesteps {
            assert_eq!(ddim.step_params(t).sigma, ddpm.noise_std(t), "t={t}");
            let (a, _) = ddim.step_cpu(&out, t, &xt, &noise);
            let (b, _) = ddpm.step_cpu(&out, t, &xt, &noise);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-5, "t={t}: ddim {x} ddpm {y}");
            }
        }
    }

    #[test]
    fn eta_zero_step_is_the_ddim_formula() {
        // x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps, eq. 12 with sigma 0,
        // checked in f64 from alphas_cumprod.
        let c = cfg(r#"{"clip_sample": false}"#);
        let mut s = DdimScheduler::new(&c, 0.0).unwrap();
        s.set_timesteps(10).unwrap();
        let (t, eps, xt) = (500u32, 0.3f32, -0.8f32);
        let a_t = s.alphas_cumprod[500] as f64;
        let a_prev = s.alphas_cumprod[400] as f64;
        let x0 = (xt as f64 - (1.0 - a_t).sqrt() * eps as f64) / a_t.sqrt();
        let want = a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps as f64;
        let (prev, _) = s.step_cpu(&[eps], t, &[xt], &[0.0]);
        assert!((prev[0] as f64 - want).abs() < 1e-5, "{} vs {want}", prev[0]);
    }
}
