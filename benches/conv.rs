//! Times every conv2d_forward kernel variant on the convolutions of
//! google/ddpm-cifar10-32 and prints GFLOP/s, the generic kernel first as the
//! baseline.
//!
//!     cargo bench --bench conv [-- FILTER] [--variants generic,cpu,gpu]
//!                               [--batch 1,16] [--runs 5] [--ms 300]
//!
//! FILTER keeps shapes whose name contains it. Each timed run is one
//! submission of N back-to-back dispatches of the same convolution (N sized
//! from a warm-up so that a run takes about --ms), followed by `gpu.wait()`;
//! the median of --runs runs is reported. On a 2-core machine the numbers move
//! with other load: check `uptime` and repeat.

use petal::gpu::{Gpu, GpuOptions, TensorView};
use petal::kernels::conv2d::{Conv2dKernel, conv2d_forward_with, kernel_for};
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
}

fn parse_args() -> Args {
    let mut a = Args {
        filter: None,
        variants: vec!["generic".into(), "cpu".into(), "gpu".into()],
        batches: vec![1, 16],
        runs: 5,
        ms: 300.0,
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
            s if s.starts_with("--") => panic!("unknown option {s}"),
            s => a.filter = Some(s.to_string()),
        }
    }
    a
}

/// Every distinct convolution of the cifar10-32 UNet at batch 1, with how
/// many times one forward pass runs it and whether it has a residual.
fn unet_convs() -> Vec<(String, Conv2dShape, bool, usize)> {
    let cfg = UNetConfig::builtin("cifar10-32").unwrap();
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
        other => Conv2dKernel::parse(other)?,
    };
    // A family that falls back to the generic kernel would only repeat it.
    if name != "generic" && k == Conv2dKernel::Generic {
        return None;
    }
    Some(k)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args();
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("{}", gpu.describe());
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", l.trim());
    }
    let mut totals: BTreeMap<(u32, String), f64> = BTreeMap::new();
    for &batch in &args.batches {
        println!("\nbatch {batch}: GFLOP/s (median of {} runs); calls = uses per UNet forward", args.runs);
        print!("{:<26} {:>5} {:>8}", "shape", "calls", "MFLOP");
        for v in &args.variants {
            print!(" {v:>12}");
        }
        println!();
        for (name, s1, has_residual, calls) in unet_convs() {
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
            let b = up(s.cout as usize, 0.1);
            let r = up(s.out_len(), 1.0);
            let y = TensorView::whole(gpu.storage_buffer("y", s.out_len() as u64 * 4));
            let epi = Conv2dEpilogue {
                bias: Some(&b),
                temb: None,
                residual: has_residual.then_some(&r),
                out_div: 1.0,
            };
            let flop = 2.0 * s.macs() as f64;
            print!("{name:<26} {calls:>5} {:>8.1}", flop / 1e6);
            let mut reference: Option<Vec<f32>> = None;
            for vname in &args.variants {
                let Some(k) = variant(vname, &gpu, &s) else {
                    print!(" {:>12}", "-");
                    continue;
                };
                let d = conv2d_forward_with(&gpu, k, "bench", &y, &x, &w, &s, &epi)?;
                // Warm-up (pipeline build, first touch), and a check that the
                // variants agree.
                gpu.run(&[&d]);
                let out = gpu.read_f32(&y)?;
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
                let t0 = Instant::now();
                gpu.run(&[&d]);
                gpu.wait()?;
                let one = t0.elapsed().as_secs_f64();
                let n = ((args.ms / 1e3 / one.max(1e-6)) as usize).clamp(1, 2000);
                let list: Vec<_> = std::iter::repeat_n(&d, n).collect();
                let mut times = Vec::new();
                for _ in 0..args.runs {
                    let t0 = Instant::now();
                    gpu.run(&list);
                    gpu.wait()?;
                    times.push(t0.elapsed().as_secs_f64() / n as f64);
                }
                times.sort_by(|a, b| a.partial_cmp(b).unwrap());
                let t = times[times.len() / 2];
                *totals.entry((batch, vname.clone())).or_default() += t * calls as f64;
                print!(" {:>11.1}{}", flop / t / 1e9, if agree { " " } else { "!" });
            }
            println!();
        }
    }
    println!("\nconvolution time per UNet forward (sum over the shapes run, x calls), ms:");
    for ((batch, v), t) in &totals {
        println!("  batch {batch:>2} {v:>12}: {:>9.2}", t * 1e3);
    }
    println!("(a '!' marks a variant whose output differs from the first variant's)");
    Ok(())
}
