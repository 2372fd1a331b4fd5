//! `petal bench`: measurements, not tests. Times the UNet forward pass, the
//! sampling loop and the training step on the adapter in use, with random
//! weights of a built-in or given architecture, and prints JSON.

use anyhow::Result;
use petal::diffusion::{Flow, Sampler};
use petal::gpu::{Dispatch, Gpu};
use petal::model::{ForwardPlan, SchedulerConfig, UNet, UNetConfig, unet::build_graph};
use petal::rng::Rng;
use petal::train::{StepSettings, TrainPlan};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub struct BenchOptions {
    pub config: UNetConfig,
    pub config_name: String,
    pub forward_batches: Vec<u32>,
    pub sample_batches: Vec<u32>,
    pub train_batches: Vec<u32>,
    pub steps: u32,
    pub repeats: usize,
    /// Timed runs of each sampling loop (after a 1-step warm-up loop).
    pub sample_repeats: usize,
    pub profile: bool,
    /// Weights precision of the forward and sampling figures (training is f32).
    pub precision: petal::model::Precision,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time<F: FnMut() -> Result<()>>(repeats: usize, mut f: F) -> Result<(f64, f64)> {
    f()?; // warm-up: pipelines, first-touch of buffers
    let mut times = Vec::new();
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok((median(times), min))
}

/// Seconds per op kind in one forward pass, each dispatch submitted and
/// waited for on its own (so the sum exceeds a real pass).
fn profile(gpu: &Gpu, dispatches: &[Dispatch]) -> Result<BTreeMap<String, f64>> {
    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for d in dispatches {
        let one: [&Dispatch; 1] = [d];
        gpu.run(&one);
        gpu.wait()?;
        let t = Instant::now();
        gpu.run(&one);
        gpu.wait()?;
        *by_kind.entry(d.label.clone()).or_default() += t.elapsed().as_secs_f64();
    }
    Ok(by_kind)
}

/// Floating-point operations (2 per multiply-add) of the profiled op kinds
/// whose arithmetic is known from the graph, for `batch` images: the
/// convolutions and attention products, forward and backward. The keys are
/// the dispatch labels of src/model/record.rs; the conv
/// input gradient skips convolutions of the model input (conv_in), which
/// needs none.
fn flops_by_kind(graph: &petal::model::graph::Graph, batch: u32) -> BTreeMap<&'static str, f64> {
    use petal::model::graph::Op;
    let mut f: BTreeMap<&'static str, f64> = BTreeMap::new();
    for op in &graph.ops {
        match op {
            Op::Conv2d { x, shape, .. } => {
                let flop = 2.0 * petal::kernels::Conv2dShape { batch, ..*shape }.macs() as f64;
                *f.entry("conv2d").or_default() += flop;
                *f.entry("conv_backward_weight").or_default() += flop;
                if *x != graph.sample {
                    *f.entry("conv_backward_input").or_default() += flop;
                }
            }
            Op::Matmul { desc, .. } => {
                let flop = 2.0 * batch as f64 * desc.macs_per_outer() as f64;
                for kind in ["matmul", "matmul_backward_a", "matmul_backward_b"] {
                    *f.entry(kind).or_default() += flop;
                }
            }
            _ => {}
        }
    }
    f
}

/// Prints a profile (seconds per op kind) with GFLOP/s where the arithmetic
/// is known, and returns the GFLOP/s for the JSON.
fn report_profile(p: &BTreeMap<String, f64>, flops: &BTreeMap<&'static str, f64>) -> BTreeMap<String, f64> {
    let mut gflops = BTreeMap::new();
    for (k, v) in p {
        match flops.get(k.as_str()) {
            Some(f) if *v > 0.0 => {
                let g = f / v / 1e9;
                eprintln!("{k:>40}: {v:.4} s  {g:8.1} GFLOP/s");
                gflops.insert(k.clone(), g);
            }
            _ => eprintln!("{k:>40}: {v:.4} s"),
        }
    }
    gflops
}

pub fn run(gpu: Arc<Gpu>, o: &BenchOptions) -> Result<serde_json::Value> {
    let graph = build_graph(&o.config);
    let weights = petal::train::init::init_weights(&graph, 0);
    // The random weights in the precision asked for, as `petal quantize` would store them.
    let stored = vec![petal::model::precision::Stored::F32; weights.len()];
    let host = petal::model::precision::convert(&graph, &weights, &stored, o.precision);
    let unet = UNet::from_host(gpu.clone(), o.config.clone(), &host, o.precision)?;
    eprintln!("weights: {} on the GPU; {}", unet.params.gpu_bytes(), o.precision.describe(&gpu));
    let (h, w) = o.config.sample_hw();
    let per_image = (o.config.in_channels * h * w) as usize;
    let mut out = serde_json::json!({
        "adapter": gpu.describe(),
        "config": o.config_name,
        "parameters": graph.num_parameters(),
        "gflop_per_image_forward": 2.0 * graph.macs_per_image() as f64 / 1e9,
        "precision": o.precision.name(),
        "activations": unet.activations.name(),
        "weights_gpu_bytes": unet.params.gpu_bytes(),
        "weights_file_bytes": petal::model::precision::weights_bytes(&graph, &host)?.len(),
    });
    for &b in &o.forward_batches {
        let plan = ForwardPlan::new(&unet, b)?;
        let x = Rng::new(1).normal_vec(per_image * b as usize);
        let ts = vec![500.0; b as usize];
        let (med, min) = time(o.repeats, || plan.forward(&gpu, &x, &ts).map(|_| ()))?;
        eprintln!("forward batch {b}: {med:.4} s (min {min:.4})");
        out[format!("forward_b{b}_s")] = med.into();
        out[format!("forward_b{b}_activation_mib")] = (plan.activation_bytes() as f64 / (1u64 << 20) as f64).into();
        if o.profile {
            let p = profile(&gpu, &plan.dispatches)?;
            let g = report_profile(&p, &flops_by_kind(&graph, b));
            out[format!("forward_b{b}_profile_s")] = serde_json::to_value(p)?;
            out[format!("forward_b{b}_profile_gflops")] = serde_json::to_value(g)?;
        }
    }
    let sched = SchedulerConfig::default();
    for &b in &o.sample_batches {
        let n = per_image * b as usize;
        let mut rng = Rng::new(2);
        let x = rng.normal_vec(n);
        // Warm-up as PyTorch's bench does it: one step at this batch size
        // (pipelines, first touch of buffers), not a whole loop.
        Sampler::new(&unet, &sched, b, 1)?.run(&gpu, &x, false, |_, _| rng.normal_vec(n), |_, _| Flow::Continue)?;
        let mut sampler = Sampler::new(&unet, &sched, b, o.steps)?;
        let mut times = Vec::new();
        let mut live = Vec::new();
        let (c, hh, ww) = (o.config.out_channels as usize, h as usize, w as usize);
        for _ in 0..o.sample_repeats.max(1) {
            let t = Instant::now();
            sampler.run(&gpu, &x, false, |_, _| rng.normal_vec(n), |_, _| Flow::Continue)?;
            times.push(t.elapsed().as_secs_f64());
            // The window's live view: every step read back in its own
            // submission and turned into 8-bit images, as the worker sends them.
            let t = Instant::now();
            sampler.run(&gpu, &x, true, |_, _| rng.normal_vec(n), |_, f| {
                let f = f.expect("frames asked for");
                std::hint::black_box((
                    petal::export::Image8::from_batch(&f.x, b as usize, c, hh, ww),
                    petal::export::Image8::from_batch(&f.pred_x0, b as usize, c, hh, ww),
                ));
                Flow::Continue
            })?;
            live.push(t.elapsed().as_secs_f64());
        }
        let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
        let med = median(times);
        let live_med = median(live);
        eprintln!(
            "sample {} steps batch {b}: {med:.3} s (min {min:.3}); with the live view (every step read back and converted): {live_med:.3} s, {:.3}x",
            o.steps,
            live_med / med
        );
        out[format!("sample{}_b{b}_s", o.steps)] = med.into();
        out[format!("sample{}_b{b}_live_view_s", o.steps)] = live_med.into();
    }
    for &b in &o.train_batches {
        let plan = TrainPlan::new(gpu.clone(), &graph, &o.config, b, &weights, Some(&weights))?;
        if o.repeats == 0 {
            // --repeats 0: the plan's memory only, no timing.
            let mib = plan.memory_bytes() as f64 / (1u64 << 20) as f64;
            eprintln!("train step batch {b}: GPU memory {mib:.0} MiB (not timed)");
            out[format!("train_b{b}_gpu_mib")] = mib.into();
            continue;
        }
        let n = per_image * b as usize;
        let mut rng = Rng::new(3);
        let (x, noise) = (rng.normal_vec(n), rng.normal_vec(n));
        let ts: Vec<f32> = (0..b).map(|i| (i * 37 % 1000) as f32).collect();
        let mut step = 0;
        let (med, min) = time(o.repeats, || {
            step += 1;
            let s = StepSettings {
                lr: 1e-4,
                step,
                adamw: petal::kernels::optim::AdamW { beta1: 0.95, beta2: 0.999, eps: 1e-8, weight_decay: 1e-6 },
                max_grad_norm: 1.0,
                ema_decay: 0.99,
            };
            plan.step(&x, &noise, &ts, &s).map(|_| ())
        })?;
        let mib = plan.memory_bytes() as f64 / (1u64 << 20) as f64;
        eprintln!("train step batch {b}: {med:.3} s (min {min:.3}); GPU memory {mib:.0} MiB");
        out[format!("train_b{b}_s")] = med.into();
        out[format!("train_b{b}_gpu_mib")] = mib.into();
        if o.profile {
            let p = profile(&gpu, plan.dispatches())?;
            let g = report_profile(&p, &flops_by_kind(&graph, b));
            out[format!("train_b{b}_profile_s")] = serde_json::to_value(p)?;
            out[format!("train_b{b}_profile_gflops")] = serde_json::to_value(g)?;
        }
    }
    Ok(out)
}
