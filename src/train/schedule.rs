//! The learning-rate schedule and the EMA decay, as diffusers'
//! train_unconditional computes them.

/// diffusers' get_cosine_schedule_with_warmup (num_cycles 0.5): a linear
/// ramp over `warmup` steps, then half a cosine down to 0 at `total`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineSchedule {
    pub lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl CosineSchedule {
    /// The learning rate of optimizer step `step` (0-based; the scheduler is
    /// stepped after the optimizer, so step 0 runs at lr * lambda(0)).
    pub fn lr_at(&self, step: u64) -> f64 {
        self.lr * self.lambda(step)
    }

    fn lambda(&self, step: u64) -> f64 {
        if step < self.warmup {
            return step as f64 / self.warmup.max(1) as f64;
        }
        let progress = (step - self.warmup) as f64 / (self.total.saturating_sub(self.warmup)).max(1) as f64;
        (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
    }
}

/// diffusers' EMAModel with use_ema_warmup: decay = 1 - (1 + step/inv_gamma)^-power,
/// at most max_decay, 0 for the first step.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EmaSchedule {
    pub inv_gamma: f64,
    pub power: f64,
    pub max_decay: f64,
}

impl Default for EmaSchedule {
    fn default() -> Self {
        EmaSchedule { inv_gamma: 1.0, power: 0.75, max_decay: 0.9999 }
    }
}

impl EmaSchedule {
    /// The decay of the EMA update after optimizer step number
    /// `optimization_step` (1-based, as EMAModel counts).
    pub fn decay(&self, optimization_step: u64) -> f64 {
        let step = optimization_step.saturating_sub(1);
        if step == 0 {
            return 0.0;
        }
        let d = 1.0 - (1.0 + step as f64 / self.inv_gamma).powf(-self.power);
        d.clamp(0.0, self.max_decay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_with_warmup() {
        let s = CosineSchedule { lr: 1e-4, warmup: 500, total: 10_500 };
        assert_eq!(s.lr_at(0), 0.0);
        assert!((s.lr_at(250) - 0.5e-4).abs() < 1e-12);
        assert!((s.lr_at(500) - 1e-4).abs() < 1e-12);
        assert!((s.lr_at(5500) - 0.5e-4).abs() < 1e-12);
        assert!(s.lr_at(10_500).abs() < 1e-12);
        let no_warmup = CosineSchedule { lr: 1e-4, warmup: 0, total: 100 };
        assert_eq!(no_warmup.lr_at(0), 1e-4);
    }

    #[test]
    fn ema_decay_warms_up() {
        let e = EmaSchedule::default();
        assert_eq!(e.decay(1), 0.0);
        // step 2 -> 1 - 2^-0.75
        assert!((e.decay(2) - (1.0 - 2f64.powf(-0.75))).abs() < 1e-12);
        assert!(e.decay(10_000) > 0.99 && e.decay(10_000) < 0.9999);
        assert_eq!(e.decay(1_000_000_000), 0.9999);
    }
}
