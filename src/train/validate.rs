//! Every setting of a training run checked against the model, its scheduler
//! and the adapter before the first step, so that a run never dies after
//! work was done (a checkpoint saved, then a preview refused). Errors name
//! the `petal train` flag the setting comes from.

use super::checkpoint::TrainState;
use super::plan::TrainPlan;
use super::schedule::CosineSchedule;
use super::trainer::TrainOptions;
use crate::diffusion::DdpmScheduler;
use crate::gpu::Gpu;
use crate::model::graph::Graph;
use crate::model::{SchedulerConfig, UNetConfig};

use anyhow::{Context, Result, bail};

/// What the checks decided for a resumed run.
#[derive(Clone, Debug, PartialEq)]
pub struct Resumed {
    /// The step the run now ends at: the checkpoint's, or `--max-steps`.
    pub total_steps: u64,
    /// How the run continues, when `--max-steps` changed its end: the
    /// cosine schedule is recomputed to end there, so the learning rate
    /// continues on the new curve (this note says from which value).
    pub note: Option<String>,
}

/// Checks `opts` against the model (`config`, `sched`, `graph`), the adapter
/// and, on resume, the checkpoint's `state`, before any data is read or
/// buffer made. On resume the batch, seed, learning rate, warm-up, AdamW,
/// clipping and EMA settings are the checkpoint's (the CLI refuses those
/// flags with `--resume`); `--max-steps` extends or shortens the run.
///
/// Errors (one line, naming the flag): a count that must be positive and is
/// 0 (`--batch`, `--epochs`, `--max-steps`, `--sample-batch`, `--keep-last`);
/// a non-finite or out-of-range rate (`--lr`, `--adam-beta1`, `--adam-beta2`,
/// `--adam-epsilon`, `--adam-weight-decay`, `--max-grad-norm`);
/// `--sample-steps` the scheduler cannot take; a `--batch` or
/// `--sample-batch` larger than the adapter holds (naming the largest that
/// fits); `--out` a file; `--max-steps` not past the checkpoint's step, or a
/// finished checkpoint resumed without a new `--max-steps`.
pub fn check_run(
    gpu: &Gpu,
    opts: &TrainOptions,
    _config: &UNetConfig,
    sched: &SchedulerConfig,
    graph: &Graph,
    state: Option<&TrainState>,
) -> Result<Option<Resumed>> {
    if opts.out.exists() && !opts.out.is_dir() {
        bail!("--out {}: not a folder", opts.out.display());
    }
    crate::model::ParamStore::check_fits(graph, &gpu.limits)?;
    let positive = |flag: &str, v: u64| -> Result<()> {
        if v == 0 {
            bail!("{flag} must be at least 1");
        }
        Ok(())
    };
    if let Some(m) = opts.max_steps {
        positive("--max-steps", m)?;
    }
    positive("--sample-batch", opts.sample_batch as u64)?;
    if let Some(k) = opts.keep_last {
        positive("--keep-last", k as u64)?;
    }
    let resumed = match state {
        Some(s) => Some(check_resume(gpu, opts, graph, s)?),
        None => {
            positive("--batch", opts.batch as u64)?;
            positive("--epochs", opts.epochs)?;
            let in_range = |flag: &str, v: f64, lo: f64, hi: f64, lo_open: bool| -> Result<()> {
                let ok = v.is_finite() && (if lo_open { v > lo } else { v >= lo }) && v < hi;
                if !ok {
                    bail!("{flag} {v}: must lie in {}{lo}, {hi})", if lo_open { "(" } else { "[" });
                }
                Ok(())
            };
            in_range("--lr", opts.lr, 0.0, f64::INFINITY, true)?;
            in_range("--adam-beta1", opts.adamw.beta1, 0.0, 1.0, false)?;
            in_range("--adam-beta2", opts.adamw.beta2, 0.0, 1.0, false)?;
            in_range("--adam-epsilon", opts.adamw.eps, 0.0, f64::INFINITY, true)?;
            in_range("--adam-weight-decay", opts.adamw.weight_decay, 0.0, f64::INFINITY, false)?;
            in_range("--max-grad-norm", opts.max_grad_norm, 0.0, f64::INFINITY, false)?;
            TrainPlan::check_batch(gpu, graph, opts.batch).with_context(|| format!("--batch {}", opts.batch))?;
            None
        }
    };
    // The preview sampler's steps and batch, named as the flags the user passes.
    let mut scheduler = DdpmScheduler::new(sched)?;
    scheduler.set_timesteps(opts.sample_steps).with_context(|| format!("--sample-steps {}", opts.sample_steps))?;
    crate::model::plan::check_batch(graph, &gpu.limits, opts.sample_batch, |_| 0)
        .with_context(|| format!("--sample-batch {}", opts.sample_batch))?;
    Ok(resumed)
}

/// The end of a resumed run: the checkpoint's, or `--max-steps` past its step.
fn check_resume(gpu: &Gpu, opts: &TrainOptions, graph: &Graph, s: &TrainState) -> Result<Resumed> {
    // The checkpoint's batch must still fit this adapter.
    TrainPlan::check_batch(gpu, graph, s.batch)
        .with_context(|| format!("the checkpoint's batch {} (fixed by the checkpoint)", s.batch))?;
    match opts.max_steps {
        None if s.step >= s.total_steps => bail!(
            "the checkpoint is at step {} of {}: the run is finished; pass --max-steps N (N > {}) to train on",
            s.step,
            s.total_steps,
            s.step
        ),
        None => Ok(Resumed { total_steps: s.total_steps, note: None }),
        Some(m) if m <= s.step => {
            bail!("--max-steps {m}: the checkpoint is already at step {}; give a larger --max-steps to train on", s.step)
        }
        Some(m) if m == s.total_steps => Ok(Resumed { total_steps: m, note: None }),
        Some(m) => {
            let old = CosineSchedule { lr: s.lr, warmup: s.warmup, total: s.total_steps };
            let new = CosineSchedule { total: m, ..old };
            let note = format!(
                "--max-steps {m}: the run now ends at step {m} instead of {}; the cosine learning-rate schedule is recomputed \
                 to end there, so the lr continues from {:.3e} at step {} (the old schedule gave {:.3e}) down to 0 at step {m}",
                s.total_steps,
                new.lr_at(s.step),
                s.step,
                old.lr_at(s.step)
            );
            Ok(Resumed { total_steps: m, note: Some(note) })
        }
    }
}
