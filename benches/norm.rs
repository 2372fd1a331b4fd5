//! Times the memory-bound kernels of a UNet pass on its own shapes: group
//! norm forward and backward (with and without the fused SiLU, as the graph
//! uses them) and the conv bias gradient, and prints each shape's time and
//! effective bandwidth (bytes the op must move at least / time).
//!
//!     cargo bench --bench norm [-- FILTER] [--batch 16,64] [--runs 5] [--ms 200]
//!                               [--cpu-time] [--config small|cifar10-32]
//!                               [--op gn|gn-backward|bias]
//!
//! FILTER keeps shapes whose name contains it. Each timed run is one
//! submission of N back-to-back dispatches of the op (N sized from a warm-up
//! so that a run takes about --ms), then `gpu.wait()`; the median of --runs
//! runs is reported. `--cpu-time` divides the CPU time the process used (all
//! threads) by the number of cores instead of taking wall time: steadier on
//! a shared machine (benches/conv.rs says more).

mod common;
use common::cpu_seconds;
use petal::gpu::{Gpu, GpuOptions, TensorView};
use petal::kernels::{Conv2dShape, conv2d_backward_bias, group_norm_backward, group_norm_backward_scratch_len, group_norm_forward};
use petal::model::graph::Op;
use petal::model::{UNetConfig, unet};
use petal::rng::Rng;
use std::collections::BTreeMap;
use std::time::Instant;

struct Args {
    filter: Option<String>,
    batches: Vec<u32>,
    runs: usize,
    ms: f64,
    cpu_time: bool,
    config: String,
    op: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        filter: None,
        batches: vec![16, 64],
        runs: 5,
        ms: 200.0,
        cpu_time: false,
        config: "small".into(),
        op: "gn".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
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

/// One shape of the op: (name, channels, hw, groups, silu, calls per pass).
type Shape = (String, u32, u32, u32, bool, usize);

/// The distinct group norms (`gn`, `gn-backward`) or convolution outputs
/// (`bias`) of one UNet forward, largest first, with how often each occurs.
fn shapes(config: &str, op: &str) -> Vec<Shape> {
    let cfg = UNetConfig::builtin(config).unwrap_or_else(|| panic!("--config {config}: not a built-in architecture"));
    let graph = unet::build_graph(&cfg);
    let mut seen: BTreeMap<String, Shape> = BTreeMap::new();
    for op_ in &graph.ops {
        let (name, c, hw, g, silu) = match (op, op_) {
            ("bias", Op::Conv2d { shape, .. }) => {
                let (ho, wo) = shape.out_hw();
                (format!("{ho}x{wo} {}", shape.cout), shape.cout, ho * wo, 1, false)
            }
            (_, Op::GroupNorm { channels, hw, groups, silu, .. }) if op != "bias" => {
                let side = (*hw as f64).sqrt() as u32;
                (format!("{side}x{side} {channels}/{groups}{}", if *silu { " silu" } else { "" }), *channels, *hw, *groups, *silu)
            }
            _ => continue,
        };
        seen.entry(name.clone()).or_insert((name, c, hw, g, silu, 0)).5 += 1;
    }
    let mut v: Vec<Shape> = seen.into_values().collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.1 * s.2));
    v
}

fn main() -> anyhow::Result<()> {
    // As `petal` does: 512-bit lavapipe on CPUs where it pays (PETAL_WIDE_VECTORS=1: any with AVX-512).
    // SAFETY: no other thread exists yet, and no GPU instance.
    unsafe { petal::gpu::prefer_wide_vectors() };
    let args = parse_args();
    anyhow::ensure!(["gn", "gn-backward", "bias"].contains(&args.op.as_str()), "--op {}: gn, gn-backward or bias", args.op);
    let gpu = Gpu::new(&GpuOptions::default())?;
    println!("{}", gpu.describe());
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average: {}", l.trim());
    }
    let cores = std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64);
    if args.cpu_time {
        println!("timing: CPU time / {cores} cores");
    }
    for &batch in &args.batches {
        println!("\nbatch {batch}, op {}: median of {} runs; calls = uses per UNet forward", args.op, args.runs);
        println!("{:<22} {:>5} {:>10} {:>8}", "shape", "calls", "us", "GB/s");
        let mut total = 0.0;
        for (name, c, hw, g, silu, calls) in shapes(&args.config, &args.op) {
            if args.filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let n = (batch * c * hw) as usize;
            let mut rng = Rng::new(1);
            let mut up = |n: usize| TensorView::whole(gpu.upload_f32("bench", &rng.normal_vec(n)));
            let x = up(n);
            let dy = up(n);
            let gamma = up(c as usize);
            let beta = up(c as usize);
            let y = TensorView::whole(gpu.storage_buffer("y", n as u64 * 4));
            let stats = TensorView::whole(gpu.storage_buffer("stats", (batch * g * 2) as u64 * 4));
            let (dispatches, bytes) = match args.op.as_str() {
                // Reads x (stats), reads it again and writes y.
                "gn" => (vec![group_norm_forward(&gpu, "bench", &y, &stats, &x, &gamma, &beta, batch, c, hw, g, 1e-6, silu)?], 3 * n),
                "gn-backward" => {
                    gpu.run(&[&group_norm_forward(&gpu, "bench", &y, &stats, &x, &gamma, &beta, batch, c, hw, g, 1e-6, silu)?]);
                    let dgamma = TensorView::whole(gpu.storage_buffer("dgamma", c as u64 * 4));
                    let dbeta = TensorView::whole(gpu.storage_buffer("dbeta", c as u64 * 4));
                    let scratch = TensorView::whole(gpu.storage_buffer("scratch", group_norm_backward_scratch_len(batch, c) as u64 * 4));
                    let d = group_norm_backward(&gpu, "bench", &y, &dgamma, &dbeta, &scratch, &dy, &x, &stats, &gamma, &beta, batch, c, hw, g, silu, false)?;
                    // Reads x and dy, and again, and writes dx.
                    (d, 5 * n)
                }
                _ => {
                    let s = Conv2dShape { batch, cin: 1, h: 1, w: hw, cout: c, ksize: 1, stride: 1, pad: [0; 4], upsample: false };
                    let db = TensorView::whole(gpu.storage_buffer("db", c as u64 * 4));
                    (vec![conv2d_backward_bias(&gpu, "bench", &db, None, &dy, &s, 1.0)?], n)
                }
            };
            let d: Vec<_> = dispatches.iter().collect();
            gpu.run(&d);
            gpu.wait()?;
            let (t0, c0) = (Instant::now(), cpu_seconds());
            gpu.run(&d);
            gpu.wait()?;
            let one = if args.cpu_time { (cpu_seconds() - c0) / cores } else { t0.elapsed().as_secs_f64() };
            let reps = ((args.ms / 1e3 / one.max(1e-6)) as usize).clamp(1, 5000);
            let list: Vec<_> = std::iter::repeat_n(d.iter().copied(), reps).flatten().collect();
            let mut times = Vec::new();
            for _ in 0..args.runs {
                let (t0, c0) = (Instant::now(), cpu_seconds());
                gpu.run(&list);
                gpu.wait()?;
                let t = if args.cpu_time { (cpu_seconds() - c0) / cores } else { t0.elapsed().as_secs_f64() };
                times.push(t / reps as f64);
            }
            times.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let t = times[times.len() / 2];
            total += t * calls as f64;
            println!("{name:<22} {calls:>5} {:>10.1} {:>8.2}", t * 1e6, (bytes * 4) as f64 / t / 1e9);
        }
        println!("total per UNet forward (x calls): {:.2} ms", total * 1e3);
    }
    Ok(())
}
