//! Times every conv2d_forward kernel variant on the convolutions of
//! google/ddpm-cifar10-32 (or another built-in architecture, `--config small`)
//! and prints GFLOP/s, the generic kernel first as the baseline.
//!
//!     cargo bench --bench conv [-- FILTER] [--variants generic,cpu,gpu,sg4x1x16x16,...]
//!                               [--batch 1,16] [--runs 5] [--ms 300] [--cpu-time]
//!                               [--config cifar10-32|small]
//!
//! Variants (default generic,cpu): `generic` (the fallback kernel), `cpu` and
//! `gpu` (what each kernel family picks for the shape), `cpu-direct` (the
//! CPU family's block without the Winograd form), `cpu-blocks-first` (the
//! CPU family's block with the grid's blocks walked before its channel
//! groups), or an explicit kernel
//! (`Conv2dKernel::parse`: `tiled`, `tiled-splitN`, `sgTMxNBxPHxPW`, `sgw...`
//! for the Winograd form, `...g` for channel groups first). FILTER keeps shapes whose
//! name contains it; names give the input size, so `16x16 256->256 k3up`
//! writes 32x32. Each timed run is one submission of N back-to-back dispatches
//! of the same convolution (N sized from a warm-up so that a run takes about
//! --ms), followed by `gpu.wait()`; the median of --runs runs is reported.
//!
//! `--op dx` times the input gradient (conv2d_backward_input) instead:
//! variants `generic`, `cpu` and `gpu` (the family's layout; where it runs
//! the forward kernel over dy, the label names that kernel), and
//! `cpu-blocks-first` (the CPU family's, its forward kernel's grid walking
//! blocks before channel groups; only where dx runs as a forward kernel),
//! `cpu-forward` (every stride-1 gradient, 1x1 too, as the forward kernel),
//! `f` and a forward kernel's name (`fsgw2x1x16x16l16`: dx as that kernel
//! over dy, where the gradient is a forward convolution), or `dxTMxTN` (the
//! subgroup dx kernel with that blocking).
//!
//! `--op dw` times the weight gradient (conv2d_backward_weight) of the same
//! shapes instead: variants `generic`, `cpu` and `gpu` (the family's kernel
//! and blocking), `cpu-l8` (the CPU family's choice for 8 lanes, where the
//! adapter runs 16), `cpu-direct` (the CPU family's blocking without the
//! Winograd form), or `dwTMxTC` / `dwwTMxTC` (the subgroup kernel, TM output
//! channels a workgroup, TC input channels a lane; direct / Winograd form;
//! on the adapter's lanes, or 8 with the suffix `l8`, e.g. `dww32x4l8`).
//!
//! On a software adapter the numbers move with other load on the machine
//! (check `uptime`). `--cpu-time` divides by the CPU time this process used
//! (all threads, from /proc/self/task/*/schedstat on Linux) over the number of
//! cores instead of by wall time: about what the kernel does on an idle
//! machine, and much steadier while someone else is compiling.

mod common;
use common::cpu_seconds;
use petal::gpu::{Gpu, GpuOptions, TensorView};
use petal::kernels::conv2d::{Conv2dKernel, conv2d_forward_with, kernel_for};
use petal::kernels::conv2d_backward::{
    self, Conv2dBackwardKernel, InputGradLayout, WeightGradLayout, conv2d_backward_input_with, conv2d_backward_weight_with,
};
use petal::kernels::{Conv2dEpilogue, Conv2dShape};
use petal::model::graph::Op;
use petal::model::{UNetConfig, unet};
use petal::rng::Rng;
use std::collections::BTreeMap;
use std::time::Instant;

struct Args {
    filter: Option<String>,
    variants: Vec<String>,
    batches: Vec<u32>,
    runs: usize,
    ms: f64,
    cpu_time: bool,
    config: String,
    /// `forward` or `dw`.
    op: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        filter: None,
        variants: vec!["generic".into(), "cpu".into()],
        batches: vec![1, 16],
        runs: 5,
        ms: 300.0,
        cpu_time: false,
        config: "cifar10-32".into(),
        op: "forward".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--variants" | "--family" => a.variants = val(&arg).split(',').map(String::from).collect(),
            "--batch" => a.batches = val(&arg).split(',').map(|v| v.parse().expect("--batch")).collect(),
            "--runs" => a.runs = val(&arg).parse().expect("--runs"),
            "--ms" => a.ms = val(&arg).parse().expect("--ms"),
            "--cpu-time" => a.cpu_time = true,
            "--config" => a.config = val(&arg),
            "--op" => a.op = val(&arg),
            s if s.starts_with("--") => panic!("unknown option {s}"),
            s => a.filter = Some(s.to_string()),
        }
    }
    a
}

/// Every distinct convolution of the built-in architecture `config`'s UNet at
/// batch 1, with how many times one forward pass runs it and whether it has a
/// residual.
fn unet_convs(config: &str) -> Vec<(String, Conv2dShape, bool, usize)> {
    let cfg = UNetConfig::builtin(config).unwrap_or_else(|| panic!("--config {config}: not a built-in architecture"));
    let graph = unet::build_graph(&cfg);
    let mut seen: BTreeMap<String, (Conv2dShape, bool, usize)> = BTreeMap::new();
    for op in &graph.ops {
        if let Op::Conv2d { shape, residual, .. } = op {
            let s = Conv2dShape { batch: 1, ..*shape };
            let kind = if s.upsample {
                "up"
            } else if s.stride == 2 {
                "down"
            } else {
                ""
            };
            let name = format!("{}x{} {}->{} k{}{}", s.h, s.w, s.cin, s.cout, s.ksize, kind);
            seen.entry(name).or_insert((s, residual.is_some(), 0)).2 += 1;
        }
    }
    let mut v: Vec<_> = seen.into_iter().map(|(n, (s, r, c))| (n, s, r, c)).collect();
    v.sort_by_key(|(_, s, _, _)| std::cmp::Reverse(s.macs()));
    v
}

fn variant(name: &str, gpu: &Gpu, s: &Conv2dShape) -> Option<Conv2dKernel> {
    let k = match name {
        "generic" => Conv2dKernel::Generic,
        "cpu" => kernel_for(gpu, petal::gpu::KernelFamily::Cpu, s),
        "gpu" => kernel_for(gpu, petal::gpu::KernelFamily::Gpu, s),
        // The CPU family's block computed directly, never in Winograd form.
        "cpu-direct" => match kernel_for(gpu, petal::gpu::KernelFamily::Cpu, s) {
            Conv2dKernel::Subgroup(t) => Conv2dKernel::Subgroup(petal::kernels::conv2d::SubgroupTile { winograd: false, ..t }),
            k => k,
        },
        // The CPU family's block with the grid's blocks walked first.
        "cpu-blocks-first" => match kernel_for(gpu, petal::gpu::KernelFamily::Cpu, s) {
            Conv2dKernel::Subgroup(t) => Conv2dKernel::Subgroup(petal::kernels::conv2d::SubgroupTile { groups_inner: false, ..t }),
            k => k,
        },
        other => Conv2dKernel::parse(other)?,
    };
    // A family that falls back to the generic kernel would only repeat it.
    if name != "generic" && k == Conv2dKernel::Generic {
        return None;
    }
    Some(k)
}

/// The weight-gradient layout a `--op dw` variant names.
fn dw_variant(name: &str, gpu: &Gpu, s: &Conv2dShape) -> Option<WeightGradLayout> {
    match name {
        "generic" => Some(WeightGradLayout::new(gpu, Conv2dBackwardKernel::Generic, s)),
        // The CPU family's kernel on an adapter with 8-lane subgroups.
        "cpu" => Some(WeightGradLayout::new(gpu, Conv2dBackwardKernel::Subgroup, s)),
        "gpu" => Some(WeightGradLayout::new(gpu, Conv2dBackwardKernel::Tiled, s)),
        // The CPU family's choice for 8 lanes (where the adapter runs 16).
        "cpu-l8" => Some(WeightGradLayout::new_for_lanes(gpu, Conv2dBackwardKernel::Subgroup, s, 8)),
        // The CPU family's blocking without the Winograd form.
        "cpu-direct" => Some(WeightGradLayout::new_direct(gpu, Conv2dBackwardKernel::Subgroup, s)),
        other => {
            // dwTMxTC: the direct form; dwwTMxTC: the Winograd form (where
            // it applies; the direct form elsewhere).
            let (wino, rest) = match other.strip_prefix("dww") {
                Some(rest) => (true, rest),
                None => (false, other.strip_prefix("dw")?),
            };
            let (rest, lanes) = match rest.strip_suffix("l8") {
                Some(rest) => (rest, Some(8)),
                None => (rest, None),
            };
            let (tm, tc) = rest.split_once('x')?;
            let mut l = WeightGradLayout::with_blocking(gpu, Conv2dBackwardKernel::Subgroup, s, tm.parse().ok()?, tc.parse().ok()?);
            if let Some(lanes) = lanes {
                l = l.with_lanes(gpu, s, lanes);
            }
            Some(if wino && conv2d_backward::dw_winograd_fits(s) { l.in_winograd_form(gpu, s) } else { l })
        }
    }
}

/// The input-gradient layout a `--op dx` variant names.
fn dx_variant(gpu: &Gpu, name: &str, s: &Conv2dShape) -> Option<InputGradLayout> {
    let lanes = petal::kernels::conv_lanes(gpu);
    match name {
        "generic" => Some(InputGradLayout::new(Conv2dBackwardKernel::Generic, s, lanes)),
        "cpu" => Some(InputGradLayout::new(Conv2dBackwardKernel::Subgroup, s, lanes)),
        "gpu" => Some(InputGradLayout::new(Conv2dBackwardKernel::Tiled, s, lanes)),
        // The CPU family's layout with its forward kernel's grid walking
        // blocks first (where dx runs as a forward convolution).
        "cpu-blocks-first" => {
            let l = InputGradLayout::new(Conv2dBackwardKernel::Subgroup, s, lanes);
            match l.forward {
                Some(Conv2dKernel::Subgroup(t)) => Some(InputGradLayout {
                    forward: Some(Conv2dKernel::Subgroup(petal::kernels::conv2d::SubgroupTile { groups_inner: false, ..t })),
                    ..l
                }),
                _ => None,
            }
        }
        // The CPU family's layout, with every stride-1 gradient (1x1 ones
        // too) run as the forward kernel over dy.
        "cpu-forward" => {
            let f = conv2d_backward::flipped_shape(s)?;
            let t = petal::kernels::conv2d::subgroup_tile_for(&f, lanes);
            Some(InputGradLayout { forward: Some(Conv2dKernel::Subgroup(t)), ..InputGradLayout::new(Conv2dBackwardKernel::Subgroup, s, lanes) })
        }
        // dxTMxTN: the subgroup dx kernel with that blocking (no forward kernel).
        other if other.starts_with("dx") => {
            let (tm, tn) = other[2..].split_once('x')?;
            Some(InputGradLayout { kernel: Conv2dBackwardKernel::Subgroup, tm: tm.parse().ok()?, tn: tn.parse().ok()?, forward: None })
        }
        // f<kernel>: dx as that forward kernel over dy (where the gradient
        // is a forward convolution), e.g. fsgw2x1x16x16l16.
        other => {
            let k = Conv2dKernel::parse(other.strip_prefix('f')?)?;
            conv2d_backward::gradient_forward_shape(s)?;
            Some(InputGradLayout { forward: Some(k), ..InputGradLayout::new(Conv2dBackwardKernel::Subgroup, s, lanes) })
        }
    }
}

fn main() -> anyhow::Result<()> {
    // As `petal` does: 512-bit lavapipe (16-lane convs) on CPUs where it pays,
    // on any with AVX-512 at PETAL_WIDE_VECTORS=1 (gpu::wide_vectors_pay).
    // SAFETY: no other thread exists yet, and no GPU instance.
    unsafe { petal::gpu::prefer_wide_vectors() };
    let args = parse_args();
    anyhow::ensure!(["forward", "dw", "dx"].contains(&args.op.as_str()), "--op {}: forward, dw or dx", args.op);
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("{}", gpu.describe());
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", l.trim());
    }
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    if args.cpu_time {
        println!("timing: CPU time / {cores} cores");
    }
    let mut totals: BTreeMap<(u32, String), f64> = BTreeMap::new();
    // Building a dispatch compiles its pipeline the first time a shader
    // variant is seen (the unrolled CPU-family kernels take seconds).
    let mut builds: BTreeMap<String, f64> = BTreeMap::new();
    for &batch in &args.batches {
        println!("\nbatch {batch}: GFLOP/s (median of {} runs); calls = uses per UNet forward", args.runs);
        print!("{:<26} {:>5} {:>8}", "shape", "calls", "MFLOP");
        for v in &args.variants {
            print!(" {v:>12}");
        }
        println!();
        for (name, s1, has_residual, calls) in unet_convs(&args.config) {
            if args.filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let s = Conv2dShape { batch, ..s1 };
            let mut rng = Rng::new(1);
            let mut up = |n: usize, scale: f32| {
                let v: Vec<f32> = rng.normal_vec(n).into_iter().map(|v| v * scale).collect();
                TensorView::whole(gpu.upload_f32("bench", &v))
            };
            let x = up(s.in_len(), 1.0);
            let w = up(s.weight_len(), 0.05);
            let dy = up(if args.op == "forward" { 1 } else { s.out_len() }, 1.0);
            let dx = TensorView::whole(gpu.storage_buffer("dx", s.in_len() as u64 * 4));
            let b = up(s.cout as usize, 0.1);
            let r = up(s.out_len(), 1.0);
            let y = TensorView::whole(gpu.storage_buffer("y", s.out_len() as u64 * 4));
            let epi = Conv2dEpilogue {
                bias: Some(&b),
                temb: None,
                residual: has_residual.then_some(&r),
                out_div: 1.0,
                accumulate: false,
            };
            let flop = 2.0 * s.macs() as f64;
            print!("{name:<26} {calls:>5} {:>8.1}", flop / 1e6);
            let mut picked = Vec::new();
            let mut reference: Option<Vec<f32>> = None;
            // What is read back and compared: y, dw or dx.
            let out = match args.op.as_str() {
                "dw" => &w,
                "dx" => &dx,
                _ => &y,
            };
            for vname in &args.variants {
                let t_build = Instant::now();
                let built = if args.op == "dx" {
                    let Some(l) = dx_variant(&gpu, vname, &s) else {
                        print!(" {:>12}", "-");
                        continue;
                    };
                    if vname == "cpu" || vname == "gpu" {
                        let how = match l.forward {
                            Some(k) => format!("forward {}", k.name()),
                            None => format!("{}x{}", l.tm, l.tn),
                        };
                        picked.push(format!("{vname}={:?} {how}", l.kernel));
                    }
                    let need = l.scratch_len(&s);
                    let scratch = (need > 0).then(|| TensorView::whole(gpu.storage_buffer("scratch", need as u64 * 4)));
                    conv2d_backward_input_with(&gpu, &l, "bench", &dx, &dy, &w, scratch.as_ref(), &s, 1.0, false)
                        .map_err(|e| (format!("{l:?}"), e))
                } else if args.op == "dw" {
                    let Some(l) = dw_variant(vname, &gpu, &s) else {
                        print!(" {:>12}", "-");
                        continue;
                    };
                    if vname == "cpu" || vname == "gpu" {
                        let form = if l.winograd { " winograd" } else { "" };
                        let lanes = if l.kernel == Conv2dBackwardKernel::Subgroup { format!(" l{}", l.lanes) } else { String::new() };
                        picked.push(format!("{vname}={:?} {}x{}{lanes}{form} /{}", l.kernel, l.tm, l.tc, l.chunks_used(&s)));
                    }
                    let need = l.scratch_len(&s);
                    let scratch = (need > 0).then(|| TensorView::whole(gpu.storage_buffer("scratch", need as u64 * 4)));
                    conv2d_backward_weight_with(&gpu, &l, "bench", &w, scratch.as_ref(), &dy, &x, &s, 1.0)
                        .map_err(|e| (format!("{l:?}"), e))
                } else {
                    let Some(k) = variant(vname, &gpu, &s) else {
                        print!(" {:>12}", "-");
                        continue;
                    };
                    if vname == "cpu" || vname == "gpu" {
                        picked.push(format!("{vname}={}", k.name()));
                    }
                    // The split tiled kernel's partial sums.
                    let need = k.scratch_len(&s);
                    let scratch = (need > 0).then(|| TensorView::whole(gpu.storage_buffer("scratch", need as u64 * 4)));
                    conv2d_forward_with(&gpu, k, "bench", &y, &x, &w, &s, &epi, scratch.as_ref()).map_err(|e| (k.name(), e))
                };
                let d = match built {
                    Ok(d) => d,
                    Err((name, e)) => {
                        eprintln!("{name}: {e:#}");
                        print!(" {:>12}", "error");
                        continue;
                    }
                };
                *builds.entry(vname.clone()).or_default() += t_build.elapsed().as_secs_f64();
                // Warm-up (first touch), and a check that the
                // variants agree.
                let d: Vec<_> = d.iter().collect();
                gpu.run(&d);
                let out = gpu.read_f32(out)?;
                let agree = match &reference {
                    None => {
                        reference = Some(out);
                        true
                    }
                    Some(r) => {
                        let scale = r.iter().fold(0f32, |m, v| m.max(v.abs()));
                        r.iter().zip(&out).all(|(a, b)| (a - b).abs() <= 1e-4 * scale.max(1.0))
                    }
                };
                let (t0, c0) = (Instant::now(), cpu_seconds());
                gpu.run(&d);
                gpu.wait()?;
                let one = t0.elapsed().as_secs_f64();
                let one_cpu = (cpu_seconds() - c0) / cores;
                let n = ((args.ms / 1e3 / one.max(1e-6)) as usize).clamp(1, 2000);
                let list: Vec<_> = std::iter::repeat_n(d.iter().copied(), n).flatten().collect();
                // A variant slower than 2 --ms per dispatch (the generic
                // kernel at batch 16) gets one more run, not --runs.
                let slow = one > 2.0 * args.ms / 1e3;
                let mut times = if slow { vec![if args.cpu_time { one_cpu } else { one }] } else { Vec::new() };
                for _ in 0..if slow { 1 } else { args.runs } {
                    let (t0, c0) = (Instant::now(), cpu_seconds());
                    gpu.run(&list);
                    gpu.wait()?;
                    let t = if args.cpu_time { (cpu_seconds() - c0) / cores } else { t0.elapsed().as_secs_f64() };
                    times.push(t / n as f64);
                }
                times.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let t = if slow { times[0] } else { times[times.len() / 2] };
                *totals.entry((batch, vname.clone())).or_default() += t * calls as f64;
                print!(" {:>11.1}{}", flop / t / 1e9, if agree { " " } else { "!" });
            }
            println!("  {}", picked.join(" "));
        }
    }
    println!("\nconvolution time per UNet forward (sum over the shapes run, x calls), ms:");
    for ((batch, v), t) in &totals {
        println!("  batch {batch:>2} {v:>12}: {:>9.2}", t * 1e3);
    }
    println!("building the dispatches (pipeline compiles included), s:");
    for (v, t) in &builds {
        println!("  {v:>12}: {t:>7.1}");
    }
    println!("(a '!' marks a variant whose output differs from the first variant's)");
    Ok(())
}
