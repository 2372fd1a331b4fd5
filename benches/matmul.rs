//! Times the matmul kernels on the attention products of a built-in
//! architecture's UNet (q^T k, v p^T) and on their two gradients (the
//! backward pass's `matmul_backward_a` and `matmul_backward_b`, the same
//! products over transposed strides, src/model/record.rs), and prints GFLOP/s.
//!
//!     cargo bench --bench matmul [-- FILTER] [--variants cpu,generic,sg32x8,...]
//!                                 [--batch 16,64] [--runs 5] [--ms 300] [--cpu-time]
//!                                 [--config cifar10-32|small]
//!
//! Variants (default cpu,generic): `cpu` (what `matmul::kernel_for` picks for
//! the shape on this adapter), `cpu-l8` (its block for 8 lanes), `generic` (matmul.wgsl) or `sgTMxTN` (the
//! subgroup kernel with TM rows and LANES TN columns a workgroup, on the
//! adapter's lanes; `sgTMxTNl8` on 8). FILTER keeps the
//! products whose name contains it. Each timed run is one submission of N
//! back-to-back dispatches (N sized so that a run takes about --ms), then
//! `gpu.wait()`; the median of --runs runs is reported. `--cpu-time` divides
//! the process's CPU time (all threads) by the number of cores instead of
//! using wall time, which is steadier on a shared machine (benches/conv.rs).

mod common;
use common::cpu_seconds;
use petal::gpu::{Gpu, GpuOptions, TensorView};
use petal::kernels::matmul::{MatmulDesc, MatmulKernel, Operand, kernel_for, matmul_with};
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
}

fn parse_args() -> Args {
    let mut a = Args {
        filter: None,
        variants: vec!["cpu".into(), "generic".into()],
        batches: vec![16, 64],
        runs: 5,
        ms: 300.0,
        cpu_time: false,
        config: "cifar10-32".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--variants" => a.variants = val(&arg).split(',').map(String::from).collect(),
            "--batch" => a.batches = val(&arg).split(',').map(|v| v.parse().expect("--batch")).collect(),
            "--runs" => a.runs = val(&arg).parse().expect("--runs"),
            "--ms" => a.ms = val(&arg).parse().expect("--ms"),
            "--cpu-time" => a.cpu_time = true,
            "--config" => a.config = val(&arg),
            s if s.starts_with("--") => panic!("unknown option {s}"),
            s => a.filter = Some(s.to_string()),
        }
    }
    a
}

/// The matmuls of one training step of `config`'s UNet at batch 1, named by
/// shape and role, with how many times a step runs each: the forward product
/// and its two gradients as src/model/record.rs builds them.
fn unet_matmuls(config: &str) -> Vec<(String, MatmulDesc, usize)> {
    let cfg = UNetConfig::builtin(config).unwrap_or_else(|| panic!("--config {config}: not a built-in architecture"));
    let graph = unet::build_graph(&cfg);
    let transpose = |o: &Operand| Operand { row_stride: o.col_stride, col_stride: o.row_stride, ..*o };
    let mut seen: BTreeMap<String, (MatmulDesc, usize)> = BTreeMap::new();
    for op in &graph.ops {
        if let Op::Matmul { desc, .. } = op {
            let d = MatmulDesc { outer: 1, ..*desc };
            let da = MatmulDesc { m: d.m, n: d.k, k: d.n, a: d.c, b: transpose(&d.b), c: d.a, ..d };
            let db = MatmulDesc { m: d.k, n: d.n, k: d.m, a: transpose(&d.a), b: d.c, c: d.b, ..d };
            // q^T k carries the 1/sqrt(d) scale; v p^T none.
            let role = if desc.alpha != 1.0 { "qk" } else { "vp" };
            for (kind, dd) in [("fwd", d), ("dA", da), ("dB", db)] {
                let name = format!("{role} {kind} {}x{}x{} h{}", dd.m, dd.n, dd.k, dd.inner);
                seen.entry(name).or_insert((dd, 0)).1 += 1;
            }
        }
    }
    seen.into_iter().map(|(n, (d, c))| (n, d, c)).collect()
}

/// Values an operand's buffer needs: its largest index + 1.
fn extent(o: &Operand, outer: u32, inner: u32, rows: u32, cols: u32) -> usize {
    (o.offset as u64
        + (outer as u64 - 1) * o.outer_stride as u64
        + (inner as u64 - 1) * o.inner_stride as u64
        + (rows as u64 - 1) * o.row_stride as u64
        + (cols as u64 - 1) * o.col_stride as u64
        + 1) as usize
}

fn variant(name: &str, gpu: &Gpu, d: &MatmulDesc) -> Option<MatmulKernel> {
    match name {
        "cpu" => Some(kernel_for(gpu, d)),
        // The CPU family's block for 8 lanes (where the adapter runs 16).
        "cpu-l8" => Some(petal::kernels::matmul::subgroup_block(d, 8)),
        "generic" => Some(MatmulKernel::Generic),
        s => {
            // sgTMxTN on the adapter's lanes; sgTMxTNl8 / sgTMxTNl16 on those.
            let s = s.strip_prefix("sg")?;
            let (s, lanes) = match s.split_once('l') {
                Some((s, l)) => (s, l.parse().ok()?),
                None => (s, petal::kernels::conv_lanes(gpu)),
            };
            let (tm, tn) = s.split_once('x')?;
            Some(MatmulKernel::Subgroup { tm: tm.parse().ok()?, tn: tn.parse().ok()?, lanes })
        }
    }
}

fn main() -> anyhow::Result<()> {
    // As `petal` does: 512-bit lavapipe (16-lane convs) on CPUs where it pays,
    // on any with AVX-512 at PETAL_WIDE_VECTORS=1 (gpu::wide_vectors_pay).
    // SAFETY: no other thread exists yet, and no GPU instance.
    unsafe { petal::gpu::prefer_wide_vectors() };
    let args = parse_args();
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
    for &batch in &args.batches {
        println!("\nbatch {batch}: GFLOP/s (median of {} runs); calls = uses per training step", args.runs);
        print!("{:<28} {:>5} {:>8}", "product (m x n x k, heads)", "calls", "MFLOP");
        for v in &args.variants {
            print!(" {v:>10}");
        }
        println!();
        for (name, d1, calls) in unet_matmuls(&args.config) {
            if args.filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
                continue;
            }
            let d = MatmulDesc { outer: batch, ..d1 };
            let mut rng = Rng::new(1);
            let mut up = |n: usize| TensorView::whole(gpu.upload_f32("bench", &rng.normal_vec(n)));
            let a = up(extent(&d.a, d.outer, d.inner, d.m, d.k));
            let b = up(extent(&d.b, d.outer, d.inner, d.k, d.n));
            let c = TensorView::whole(gpu.storage_buffer("c", extent(&d.c, d.outer, d.inner, d.m, d.n) as u64 * 4));
            let flop = 2.0 * d.macs_per_outer() as f64 * batch as f64;
            print!("{name:<28} {calls:>5} {:>8.1}", flop / 1e6);
            let mut picked = Vec::new();
            let mut reference: Option<Vec<f32>> = None;
            for vname in &args.variants {
                let Some(k) = variant(vname, &gpu, &d) else {
                    print!(" {:>10}", "-");
                    continue;
                };
                if vname == "cpu" {
                    picked.push(format!("cpu={k:?}"));
                }
                let disp = match matmul_with(&gpu, k, "bench", &c, &a, &b, &d) {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("{k:?}: {e:#}");
                        print!(" {:>10}", "error");
                        continue;
                    }
                };
                let one: [&_; 1] = [&disp];
                gpu.run(&one);
                let out = gpu.read_f32(&c)?;
                let agree = match &reference {
                    None => {
                        reference = Some(out);
                        true
                    }
                    Some(r) => {
                        let scale = r.iter().fold(0f32, |m, v| m.max(v.abs()));
                        r.iter().zip(&out).all(|(x, y)| (x - y).abs() <= 1e-4 * scale.max(1.0))
                    }
                };
                let t0 = Instant::now();
                gpu.run(&one);
                gpu.wait()?;
                let n = ((args.ms / 1e3 / t0.elapsed().as_secs_f64().max(1e-6)) as usize).clamp(1, 2000);
                let list: Vec<_> = std::iter::repeat_n(&disp, n).collect();
                let mut times = Vec::new();
                for _ in 0..args.runs {
                    let (t0, c0) = (Instant::now(), cpu_seconds());
                    gpu.run(&list);
                    gpu.wait()?;
                    let t = if args.cpu_time { (cpu_seconds() - c0) / cores } else { t0.elapsed().as_secs_f64() };
                    times.push(t / n as f64);
                }
                times.sort_by(|x, y| x.partial_cmp(y).unwrap());
                let t = times[times.len() / 2];
                *totals.entry((batch, vname.clone())).or_default() += t * calls as f64;
                print!(" {:>9.1}{}", flop / t / 1e9, if agree { " " } else { "!" });
            }
            println!("  {}", picked.join(" "));
        }
    }
    println!("\nmatmul time per training step (sum over the products run, x calls), ms:");
    for ((batch, v), t) in &totals {
        println!("  batch {batch:>2} {v:>10}: {:>9.2}", t * 1e3);
    }
    println!("(a '!' marks a variant whose output differs from the first variant's)");
    Ok(())
}
