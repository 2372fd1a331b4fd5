//! DDPMScheduler, computed as diffusers computes it: the schedules in f32
//! (torch.linspace, torch.cumprod), the inference timesteps as numpy makes
//! them, and each step's scalars in f32 tensor arithmetic, so that Petal's
//! trajectories match diffusers' to rounding.

use crate::kernels::DdpmStepParams;
use crate::model::SchedulerConfig;
use anyhow::{Result, bail};

/// What every scheduler's step kernel parameters share: the prediction type,
/// clipping, and sqrt(alpha_prod_t), sqrt(1 - alpha_prod_t) (the
/// pred_original_sample formula of step 2 of DDPMScheduler.step and
/// DDIMScheduler.step); the step's own coefficients are left 0.
pub(super) fn base_step_params(config: &SchedulerConfig, alpha_prod_t: f32) -> DdpmStepParams {
    DdpmStepParams {
        n: 0,
        prediction: config.prediction_code(),
        clip: config.clip_sample as u32,
        _pad0: 0,
        sqrt_alpha_prod: alpha_prod_t.sqrt(),
        sqrt_beta_prod: (1.0 - alpha_prod_t).sqrt(),
        c_x0: 0.0,
        c_xt: 0.0,
        sigma: 0.0,
        clip_range: config.clip_sample_range,
        min_log: 0.0,
        max_log: 0.0,
        c_eps: 0.0,
        _pad1: [0.0; 3],
    }
}

#[derive(Clone, Debug)]
pub struct DdpmScheduler {
    pub config: SchedulerConfig,
    pub betas: Vec<f32>,
    pub alphas_cumprod: Vec<f32>,
    /// Set by [`DdpmScheduler::set_timesteps`].
    pub timesteps: Vec<u32>,
    num_inference_steps: Option<u32>,
}

/// torch.linspace(start, end, steps, dtype=float32) as its CPU kernel computes
/// it: the first half counts up from start, the second half down from end,
/// each value one fused multiply-add.
fn torch_linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - i - 1) as f32, end)
            }
        })
        .collect()
}

/// diffusers' betas_for_alpha_bar with the cosine transform (squaredcos_cap_v2),
/// in f64 as Python computes it, then rounded to f32.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0).cos().powi(2);
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

impl DdpmScheduler {
    pub fn new(config: &SchedulerConfig) -> Result<DdpmScheduler> {
        config.validate()?;
        let n = config.num_train_timesteps as usize;
        let betas = if let Some(b) = &config.trained_betas {
            b.clone()
        } else {
            match config.beta_schedule.as_str() {
                "linear" => torch_linspace_f32(config.beta_start as f32, config.beta_end as f32, n),
                "scaled_linear" => torch_linspace_f32(
                    config.beta_start.sqrt() as f32,
                    config.beta_end.sqrt() as f32,
                    n,
                )
                .into_iter()
                .map(|b| b * b)
                .collect(),
                "squaredcos_cap_v2" => cosine_betas(n),
                other => bail!("unsupported beta_schedule {other:?}"),
            }
        };
        // torch.cumprod on the CPU accumulates in f64 and rounds each output.
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut acc = 1f64;
        for &b in &betas {
            acc *= (1.0 - b) as f64;
            alphas_cumprod.push(acc as f32);
        }
        Ok(DdpmScheduler {
            config: config.clone(),
            betas,
            alphas_cumprod,
            timesteps: Vec::new(),
            num_inference_steps: None,
        })
    }

    /// The inference timesteps, as diffusers' set_timesteps makes them.
    pub fn set_timesteps(&mut self, num_inference_steps: u32) -> Result<()> {
        let t_train = self.config.num_train_timesteps;
        if num_inference_steps == 0 || num_inference_steps > t_train {
            bail!(
                "the number of inference steps must be between 1 and {t_train} (num_train_timesteps of the scheduler config), \
                 not {num_inference_steps}"
            );
        }
        let n = num_inference_steps as usize;
        let ts: Vec<i64> = match self.config.timestep_spacing.as_str() {
            "linspace" => {
                // np.linspace(0, T - 1, n).round()[::-1]
                let stop = (t_train - 1) as f64;
                let step = if n > 1 { stop / (n - 1) as f64 } else { 0.0 };
                let mut v: Vec<i64> = (0..n)
                    .map(|i| if i == n - 1 && n > 1 { stop } else { i as f64 * step })
                    .map(|x| x.round_ties_even() as i64)
                    .collect();
                v.reverse();
                v
            }
            "leading" => {
                let ratio = (t_train / num_inference_steps) as i64;
                (0..n as i64).rev().map(|i| i * ratio + self.config.steps_offset as i64).collect()
            }
            "trailing" => {
                // np.round(np.arange(T, 0, -T / n)) - 1
                let ratio = t_train as f64 / n as f64;
                let count = (t_train as f64 / ratio).ceil() as usize;
                (0..count).map(|i| (t_train as f64 - i as f64 * ratio).round_ties_even() as i64 - 1).collect()
            }
            other => bail!("unsupported timestep_spacing {other:?}"),
        };
        if ts.iter().any(|&t| t < 0 || t >= t_train as i64) {
            bail!("timestep_spacing {:?} with steps_offset {} gives timesteps outside 0..{t_train}", self.config.timestep_spacing, self.config.steps_offset);
        }
        self.timesteps = ts.into_iter().map(|t| t as u32).collect();
        self.num_inference_steps = Some(num_inference_steps);
        Ok(())
    }

    /// diffusers' previous_timestep: the next entry of the inference
    /// timesteps, or -1 after the last (t - 1 before set_timesteps).
    pub fn previous_timestep(&self, t: u32) -> i64 {
        if self.num_inference_steps.is_none() {
            return t as i64 - 1;
        }
        match self.timesteps.iter().position(|&v| v == t) {
            Some(i) if i + 1 < self.timesteps.len() => self.timesteps[i + 1] as i64,
            Some(_) => -1,
            None => t as i64 - 1,
        }
    }

    fn alpha_prod_prev(&self, t: u32) -> f32 {
        let prev = self.previous_timestep(t);
        if prev >= 0 { self.alphas_cumprod[prev as usize] } else { 1.0 }
    }

    /// The standard deviation of the noise added at step t (0 at t = 0; 1 for
    /// "learned_range", whose scale the model predicts per element).
    pub fn noise_std(&self, t: u32) -> f32 {
        if t == 0 {
            return 0.0;
        }
        let alpha_prod_t = self.alphas_cumprod[t as usize];
        let alpha_prod_t_prev = self.alpha_prod_prev(t);
        let current_beta_t = 1.0 - alpha_prod_t / alpha_prod_t_prev;
        let variance = (1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t;
        let variance = variance.max(1e-20);
        match self.config.variance_type.as_str() {
            "fixed_large" => current_beta_t.sqrt(),
            // Each element's scale comes from the model (see step_params).
            "learned_range" => 1.0,
            _ => variance.sqrt(),
        }
    }

    /// The scalars of step(t) for the GPU kernel (n left 0 for the caller).
    pub fn step_params(&self, t: u32) -> DdpmStepParams {
        let alpha_prod_t = self.alphas_cumprod[t as usize];
        let alpha_prod_t_prev = self.alpha_prod_prev(t);
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let current_alpha_t = alpha_prod_t / alpha_prod_t_prev;
        let current_beta_t = 1.0 - current_alpha_t;
        let (min_log, max_log) = if self.learned_variance() { self.log_variance_range(t) } else { (0.0, 0.0) };
        DdpmStepParams {
            c_x0: alpha_prod_t_prev.sqrt() * current_beta_t / beta_prod_t,
            c_xt: current_alpha_t.sqrt() * beta_prod_t_prev / beta_prod_t,
            sigma: self.noise_std(t),
            min_log,
            max_log,
            ..base_step_params(&self.config, alpha_prod_t)
        }
    }

    /// Whether the model predicts its variance (variance_type "learned_range";
    /// its output is then (B, 2C, H, W)).
    pub fn learned_variance(&self) -> bool {
        self.config.variance_type == "learned_range"
    }

    /// The log variances that "learned_range" interpolates between at step t:
    /// (log of the posterior variance clamped at 1e-20, log beta_t), in f32
    /// as diffusers' _get_variance computes them.
    pub fn log_variance_range(&self, t: u32) -> (f32, f32) {
        let alpha_prod_t = self.alphas_cumprod[t as usize];
        let alpha_prod_t_prev = self.alpha_prod_prev(t);
        let current_beta_t = 1.0 - alpha_prod_t / alpha_prod_t_prev;
        let variance = ((1.0 - alpha_prod_t_prev) / (1.0 - alpha_prod_t) * current_beta_t).max(1e-20);
        (variance.ln(), current_beta_t.ln())
    }

    /// step() on the CPU: returns (prev_sample, pred_original_sample). The
    /// reference for the GPU kernel. For "learned_range", model_output is
    /// (B, 2C, H, W) for a sample of (B, C, H, W): set `batch` (else 1 will do).
    pub fn step_cpu(&self, model_output: &[f32], t: u32, sample: &[f32], noise: &[f32]) -> (Vec<f32>, Vec<f32>) {
        self.step_cpu_batched(1, model_output, t, sample, noise)
    }

    /// [`DdpmScheduler::step_cpu`] for a batch of `batch` images.
    pub fn step_cpu_batched(&self, batch: usize, model_output: &[f32], t: u32, sample: &[f32], noise: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let p = self.step_params(t);
        let per_image = sample.len() / batch;
        let learned = model_output.len() == 2 * sample.len();
        let mut prev = Vec::with_capacity(sample.len());
        let mut x0s = Vec::with_capacity(sample.len());
        for i in 0..sample.len() {
            let at = if learned { (i / per_image) * 2 * per_image + i % per_image } else { i };
            let (xt, out) = (sample[i], model_output[at]);
            let sigma = if learned {
                let frac = (model_output[at + per_image] + 1.0) / 2.0;
                p.sigma * (0.5 * (frac * p.max_log + (1.0 - frac) * p.min_log)).exp()
            } else {
                p.sigma
            };
            let mut x0 = match p.prediction {
                0 => (xt - p.sqrt_beta_prod * out) / p.sqrt_alpha_prod,
                1 => out,
                _ => p.sqrt_alpha_prod * xt - p.sqrt_beta_prod * out,
            };
            if p.clip != 0 {
                x0 = x0.clamp(-p.clip_range, p.clip_range);
            }
            let v = p.c_x0 * x0 + p.c_xt * xt;
            prev.push(v + sigma * noise[i]);
            x0s.push(x0);
        }
        (prev, x0s)
    }

    /// add_noise: sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, per
    /// image of `per_image` values.
    pub fn add_noise(&self, x0: &[f32], noise: &[f32], timesteps: &[u32]) -> Vec<f32> {
        let per_image = x0.len() / timesteps.len();
        x0.iter()
            .zip(noise)
            .enumerate()
            .map(|(i, (&x, &e))| {
                let a = self.alphas_cumprod[timesteps[i / per_image] as usize];
                a.sqrt() * x + (1.0 - a).sqrt() * e
            })
            .collect()
    }
}

/// diffusers' get_timestep_embedding for one batch: (B, dim), computed in
/// f32 as torch does (sin and cos through f64, then rounded).
pub fn timestep_embedding(timesteps: &[f32], dim: usize, flip_sin_to_cos: bool, freq_shift: f32) -> Vec<f32> {
    let half = dim / 2;
    let log_max = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> =
        (0..half).map(|i| ((log_max * i as f32) / (half as f32 - freq_shift)).exp()).collect();
    let mut out = vec![0f32; timesteps.len() * dim];
    for (b, &t) in timesteps.iter().enumerate() {
        let row = &mut out[b * dim..(b + 1) * dim];
        for (i, &f) in freqs.iter().enumerate() {
            let arg = (t * f) as f64;
            let (s, c) = (arg.sin() as f32, arg.cos() as f32);
            if flip_sin_to_cos {
                row[i] = c;
                row[half + i] = s;
            } else {
                row[i] = s;
                row[half + i] = c;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(json: &str) -> DdpmScheduler {
        DdpmScheduler::new(&serde_json::from_str(json).unwrap()).unwrap()
    }

    #[test]
    fn leading_spacing_matches_diffusers() {
        let mut s = sched("{}");
        s.set_timesteps(50).unwrap();
        assert_eq!(s.timesteps.len(), 50);
        assert_eq!(s.timesteps[0], 980);
        assert_eq!(s.timesteps[49], 0);
        assert_eq!(s.previous_timestep(20), 0);
        assert_eq!(s.previous_timestep(0), -1);
    }

    #[test]
    fn trailing_and_linspace_spacing() {
        let mut s = sched(r#"{"timestep_spacing": "trailing"}"#);
        s.set_timesteps(7).unwrap();
        // np.round(np.arange(1000, 0, -1000/7)).astype(int) - 1
        assert_eq!(s.timesteps, vec![999, 856, 713, 570, 428, 285, 142]);
        let mut s = sched(r#"{"timestep_spacing": "linspace"}"#);
        s.set_timesteps(4).unwrap();
        // np.linspace(0, 999, 4).round()[::-1] = 999, 666, 333, 0
        assert_eq!(s.timesteps, vec![999, 666, 333, 0]);
    }

    #[test]
    fn last_step_adds_no_noise_and_recovers_x0() {
        let mut s = sched("{}");
        s.set_timesteps(50).unwrap();
        assert_eq!(s.noise_std(0), 0.0);
        let (prev, x0) = s.step_cpu(&[0.1, -0.2], 0, &[0.5, 0.3], &[9.0, 9.0]);
        // At t = 0 the previous alpha product is 1, so prev = x0.
        assert!((prev[0] - x0[0]).abs() < 1e-6 && (prev[1] - x0[1]).abs() < 1e-6);
    }

    #[test]
    fn refuses_too_many_steps() {
        let mut s = sched("{}");
        assert!(s.set_timesteps(1001).is_err());
        assert!(s.set_timesteps(0).is_err());
    }
}
